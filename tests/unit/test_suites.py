"""The Great Expectations suites cover the contract: every required column is checked."""

from __future__ import annotations

import json

from phm.contract import TABLES
from phm.validation import load_suite, suite_path


def test_every_required_column_has_a_not_null_expectation_and_every_typed_column_a_parse_check():
    for name, table in TABLES.items():
        body = json.loads(suite_path(name).read_text())
        not_null = {e["kwargs"]["column"] for e in body["expectations"]
                    if e["type"] == "expect_column_values_to_not_be_null"}
        reasons = " | ".join(e["meta"]["reason"] for e in body["expectations"])
        for column in table.columns:
            if not column.nullable:
                assert column.name in not_null, (name, column.name)
            elif column.type != "string":
                assert f"{column.name} is not" in reasons, (name, column.name)
        assert all(e["meta"].get("reason") for e in body["expectations"])


def test_suites_load_into_great_expectations_without_losing_any_expectation():
    for name in TABLES:
        body = json.loads(suite_path(name).read_text())
        assert len(load_suite(name).expectations) == len(body["expectations"])


def test_the_practices_suite_checks_each_code_that_names_files_with_the_contracts_pattern():
    """pcn_code names list files and icb_code MLflow names and keys: the suite must quarantine a
    value outside the contract's pattern (one definition: phm.contract.CODE_PATTERNS)."""
    from phm.contract import CODE_PATTERNS

    queries = [e["kwargs"].get("unexpected_rows_query", "")
               for e in json.loads(suite_path("practices").read_text())["expectations"]]
    for column, pattern in CODE_PATTERNS.items():
        escaped = pattern.replace("{", "{{").replace("}", "}}")
        assert any(f"regexp_full_match({column}, '{escaped}')" in q for q in queries), column


def test_each_rule_becomes_the_condition_great_expectations_checks_and_an_unknown_one_is_refused():
    """The rules are computed once per row by phm (phm/validation.py); GX validates the results.
    A row-level query is checked on the row itself, any other by its rows; a missing value breaks
    only a not-null rule; a rule phm cannot translate stops the ingest instead of passing."""
    import pytest

    from phm.exceptions import ValidationError
    from phm.validation import rule_condition

    assert rule_condition("patients", {"type": "unexpected_rows_expectation", "kwargs": {
        "unexpected_rows_query": "select source_row from {batch} where date_of_birth < date '1900-01-01'"}}) == (
        "(date_of_birth < date '1900-01-01')", [])
    windowed = "select source_row from (select source_row from {batch}) where source_row > 1"
    assert rule_condition("patients", {"type": "unexpected_rows_expectation", "kwargs": {
        "unexpected_rows_query": windowed}})[0] == (
        "(source_row in (select source_row from (select source_row from "
        "(select * from staging.stg_patients) as subselect) where source_row > 1))")
    assert rule_condition("patients", {"type": "expect_column_values_to_be_in_set", "kwargs": {
        "column": "sex", "value_set": ["male"]}}) == (
        '("sex" is not null and not list_contains(?, "sex"))', [["male"]])
    for kind, kwargs in (("expect_column_values_to_match_regex", {"column": "sex", "regex": "m"}),
                         ("expect_column_values_to_not_be_null", {"column": "sex", "mostly": 0.9})):
        with pytest.raises(ValidationError, match="not a rule phm can evaluate"):
            rule_condition("patients", {"type": kind, "kwargs": kwargs})
