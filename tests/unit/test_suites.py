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
