"""Validate the staged tables in DuckDB against the rules in ``expectations/<table>.json``.

The suites are Great Expectations suites and stay the one definition of the rules. They are
evaluated in two steps, so each rule is computed once per row (issue 21):

1. ``evaluate_rules``: one SQL statement per table computes every rule's verdict for every row of
   ``staging.stg_<table>`` and keeps the rows that broke a rule in ``ingest.rule_breaks_<table>``
   (source_row, rule: the rule's position in the suite). Each GX expectation type becomes the
   SQL condition GX itself would check (not null, in set, between; an unexpected-rows query is
   its own condition).
2. Great Expectations validates those computed results: for each rule of the suite, an
   ``unexpected_rows_expectation`` over ``ingest.rule_breaks_<table>`` counts the rows that
   broke it. The stored results and the Data Docs say so (each expectation's description names
   the table of computed results and its ``meta.rule_type`` the suite's own expectation type).

Quarantine reads the rows that broke a rule from the same table and checks that it finds
exactly as many as Great Expectations counted.
"""

from __future__ import annotations

import gc
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from phm.collector import frozen_meanwhile
from phm.disclosure import suppress
from phm.exceptions import ValidationError

# GX phones home unless told not to; this must be set before great_expectations is imported.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

import great_expectations as gx  # noqa: E402
from great_expectations.core.expectation_suite import ExpectationSuite  # noqa: E402
from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: E402
from great_expectations.execution_engine import sqlalchemy_execution_engine as _gx_sql  # noqa: E402
from great_expectations.expectations.expectation_configuration import (  # noqa: E402
    ExpectationConfiguration,
)

EXPECTATIONS_DIR = Path(__file__).resolve().parent.parent / "expectations"
BATCH_SUBSTITUTE = "(select * from staging.stg_{table}) as subselect"


class _DuckDBDialect(str):
    """Marks DuckDB as a dialect whose connection GX must keep open between queries.

    Without it every expectation fails with IndexError (GX issues #10738, #11579): GX closes
    the pooled connection before reading rows, which DuckDB does not survive. GX gives SQLite
    the same treatment.
    """

    value = "duckdb"


if "duckdb" not in _gx_sql._PERSISTED_CONNECTION_DIALECTS:
    _gx_sql._PERSISTED_CONNECTION_DIALECTS = (
        *_gx_sql._PERSISTED_CONNECTION_DIALECTS, _DuckDBDialect("duckdb"))


RULE_BREAKS = "ingest.rule_breaks_{table}"


def _row_condition(table: str, query: str) -> str | None:
    """The condition of an unexpected-rows query of the form ``select source_row from {batch}
    where <condition>`` (checked on each row directly), else None."""
    batch = re.escape(BATCH_SUBSTITUTE.format(table=table))
    found = re.fullmatch(rf"\s*select\s+source_row\s+from\s+{batch}\s+where\s+(?P<condition>.+?)\s*;?\s*",
                         query, re.IGNORECASE | re.DOTALL)
    return found["condition"] if found else None


def rule_condition(table: str, entry: dict) -> tuple[str, list]:
    """One expectation of a suite as a SQL condition on a row of ``staging.stg_<table>`` (aliased
    ``subselect``, as Great Expectations names its batch): true when the row breaks it, with its
    bound parameters. A missing value breaks only a not-null rule, as in Great Expectations."""
    kind, kwargs = entry["type"], entry["kwargs"]
    allowed = {"expect_column_values_to_not_be_null": {"column"},
               "expect_column_values_to_be_in_set": {"column", "value_set"},
               "expect_column_values_to_be_between": {"column", "min_value", "max_value"},
               "unexpected_rows_expectation": {"unexpected_rows_query", "description"}}
    if kind not in allowed or set(kwargs) - allowed[kind]:
        raise ValidationError(f"{suite_path(table)}: {kind} with {sorted(kwargs)} is not a rule phm can "
                              "evaluate (known: not null, in set, between with min and max, unexpected rows)")
    if kind == "unexpected_rows_expectation":
        # GX fills {batch} with str.format semantics (literal braces doubled); so do we.
        query = kwargs["unexpected_rows_query"].format(batch=BATCH_SUBSTITUTE.format(table=table))
        condition = _row_condition(table, query)
        if condition is not None:
            return f"({condition})", []
        return f"(source_row in ({query.rstrip().rstrip(';')}))", []
    column = kwargs["column"]
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", column):
        raise ValidationError(f"{suite_path(table)}: column name {column!r} is not one of the contract's")
    if kind == "expect_column_values_to_not_be_null":
        return f'("{column}" is null)', []
    if kind == "expect_column_values_to_be_in_set":
        return f'("{column}" is not null and not list_contains(?, "{column}"))', [list(kwargs["value_set"])]
    return f'("{column}" is not null and ("{column}" < ? or "{column}" > ?))', [kwargs["min_value"], kwargs["max_value"]]


def evaluate_rules(con, table: str) -> list[int]:
    """Every rule of ``expectations/<table>.json`` on every row of ``staging.stg_<table>``, in one
    statement: the rows that broke one go to ``ingest.rule_breaks_<table>``; returns how many
    rows broke each rule (in suite order). A rule that cannot be evaluated is named."""
    import duckdb

    from phm.exceptions import DiskFull

    entries = json.loads(suite_path(table).read_text(encoding="utf-8"))["expectations"]
    conditions = [rule_condition(table, e) for e in entries]
    # every verdict once per row (a subquery's rule is one join), then the few rows that broke one
    flags = ", ".join(f"{sql} as broke_{k}" for k, (sql, _) in enumerate(conditions))
    verdicts = ", ".join(f"case when broke_{k} then {k} end" for k in range(len(conditions)))
    broke_any = " or ".join(f"broke_{k}" for k in range(len(conditions)))
    parameters = [p for _, params in conditions for p in params]
    con.execute("create schema if not exists ingest")
    try:
        con.execute(
            f"create or replace table {RULE_BREAKS.format(table=table)} as "  # noqa: S608 - names are ours
            f"select source_row, rule from (select source_row, unnest(list_filter([{verdicts}], "
            f"k -> k is not null)) as rule from (select source_row, {flags} from staging.stg_{table} as subselect) "
            f"where {broke_any}) order by rule, source_row",
            parameters)
    except duckdb.Error as exc:
        if (full := DiskFull.from_exception(exc)) is not None:
            raise full from None
        for entry, (sql, params) in zip(entries, conditions, strict=True):  # which rule?
            try:
                con.execute(f"select count(*) from staging.stg_{table} as subselect where {sql}",  # noqa: S608
                            params).fetchone()
            except duckdb.Error as rule_exc:
                reason = (entry.get("meta") or {}).get("reason") or entry["type"]
                raise ValidationError(f"expectation {entry['type']} on {table} ({reason}) could not be "
                                      f"evaluated: {str(rule_exc)[:300]}") from None
        raise
    counts = dict(con.execute(f"select rule, count(*) from {RULE_BREAKS.format(table=table)} "  # noqa: S608
                              "group by rule").fetchall())
    return [counts.get(k, 0) for k in range(len(entries))]


def results_suite(table: str, context) -> ExpectationSuite:
    """The suite Great Expectations runs: for each rule of ``expectations/<table>.json``, the rows
    of ``ingest.rule_breaks_<table>`` that broke it, with the rule's own reason and column."""
    body = json.loads(suite_path(table).read_text(encoding="utf-8"))
    suite = ExpectationSuite(name=body["name"], meta={
        **body.get("meta", {}),
        "evaluated": f"each rule of expectations/{table}.json is computed once per row of staging.stg_{table} "
                     f"by phm (phm/validation.py, one SQL statement); Great Expectations counts the rows "
                     f"that broke it in {RULE_BREAKS.format(table=table)}"})
    for k, entry in enumerate(body["expectations"]):
        meta = entry.get("meta", {})
        suite.add_expectation(ExpectationConfiguration(
            type="unexpected_rows_expectation",
            kwargs={"unexpected_rows_query": f"select source_row from {{batch}} where rule = {k}",  # noqa: S608 - k: a position
                    "description": f"{meta.get('reason') or entry['type']} (rule {k} of expectations/{table}.json, "
                                   f"{entry['type']}; computed once per row by phm)"},
            meta={**meta, "rule_type": entry["type"], "rule_kwargs": entry["kwargs"], "rule": k},
        ).to_domain_obj())
    if len(suite.expectations) != len(body["expectations"]):
        raise ValidationError(f"{suite_path(table)}: {len(body['expectations'])} expectations written but "
                              f"{len(suite.expectations)} loaded (duplicates?)")
    return suite


@dataclass(frozen=True)
class ExpectationOutcome:
    table: str
    expectation: str  # GX type, e.g. expect_column_values_to_not_be_null
    column: str | None
    reason: str
    success: bool
    unexpected_count: int
    rows_query: str | None  # selects source_row of every row that broke it (None if none did)


def suite_path(table: str) -> Path:
    return EXPECTATIONS_DIR / f"{table}.json"


def load_suite(table: str, context=None) -> ExpectationSuite:
    """The suite in ``expectations/<table>.json`` (GX needs a context to build one)."""
    if context is None:
        context = _context(None)
    body = json.loads(suite_path(table).read_text(encoding="utf-8"))
    suite = ExpectationSuite(name=body["name"], meta=body.get("meta", {}))
    for entry in body["expectations"]:
        config = ExpectationConfiguration(type=entry["type"], kwargs=entry["kwargs"],
                                          meta=entry.get("meta", {}))
        # add_expectation_configuration treats every unexpected_rows_expectation on a table
        # as the same one and keeps only the last; domain objects compare on all kwargs.
        suite.add_expectation(config.to_domain_obj())
    expected = len(body["expectations"])
    if len(suite.expectations) != expected:
        raise ValidationError(f"{suite_path(table)}: {expected} expectations written but "
                              f"{len(suite.expectations)} loaded (duplicates?)")
    return suite


def _context(docs_dir: Path | None):
    if docs_dir is None:
        context = gx.get_context(mode="ephemeral")
    else:
        context = gx.get_context(mode="file", project_root_dir=str(docs_dir))
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


_VALIDATION_LOCK = threading.Lock()


def validate_staged_tables(db_path: Path, tables: list[str], docs_dir: Path | None = None,
                           on_table=None) -> list[ExpectationOutcome]:
    """Validate ``staging.stg_<table>`` for each table; build Data Docs when ``docs_dir`` is set.

    The caller must have closed its own DuckDB connection: GX opens its own.
    """
    # Everything alive now is older than GX's engines, so it is frozen: the two collections and the
    # walk in _release_connections then look only at what validation made (0.38-0.41 s -> 0.01 s
    # per ingest of a small extract; the suite runs about 250). Freezing is process-wide, so one
    # validation at a time: another thread's freeze would hide this one's engines from its release.
    # (In the phm command's own process it stays frozen after: phm/collector.py.)
    with _VALIDATION_LOCK, frozen_meanwhile():
        return _validate(db_path, tables, docs_dir, on_table)


def _validate(db_path: Path, tables: list[str], docs_dir: Path | None, on_table) -> list[ExpectationOutcome]:
    from phm.db import connect

    counts = {}
    con = connect(db_path)
    try:
        for table in tables:
            if on_table:
                on_table(table)
            counts[table] = evaluate_rules(con, table)
    finally:
        con.close()
    if docs_dir is None:
        return _validate_without_docs(db_path, tables, counts)
    context = _context(docs_dir)
    datasource = context.data_sources.add_or_update_sql(
        name="phm_duckdb", connection_string=f"duckdb:///{Path(db_path).resolve()}")
    outcomes: list[ExpectationOutcome] = []
    try:
        for table in tables:
            asset_name = RULE_BREAKS.format(table=table).split(".")[1]
            try:
                asset = datasource.get_asset(asset_name)
            except LookupError:
                asset = datasource.add_table_asset(name=asset_name, table_name=asset_name,
                                                   schema_name="ingest")
            try:
                batch = asset.get_batch_definition("whole_table")
            except KeyError:
                batch = asset.add_batch_definition_whole_table("whole_table")
            suite = context.suites.add_or_update(results_suite(table, context))
            # not "ingest_<table>": a Data Docs folder made before issue 21 stores definitions by
            # that name on the staged tables' assets, which GX can no longer load
            definition = context.validation_definitions.add_or_update(
                gx.ValidationDefinition(name=f"ingest_rule_results_{table}", data=batch, suite=suite))
            result = definition.run(result_format={"result_format": "BASIC", "partial_unexpected_count": 0})
            for r in result.results:
                outcomes.append(_outcome(table, r, counts[table]))
        if docs_dir is not None:
            _scrub_stored_results(context)
            context.build_data_docs()
    finally:
        _release_connections(db_path)
    return outcomes


# Without Data Docs nothing reads Great Expectations' stores back, and all it is given that depends on
# the data is the database file. So one ephemeral context per process keeps the datasource and each
# table's asset, batch definition and results suite, made the first time the table is validated
# (each of those adds saves the context's whole configuration as YAML, in memory too: about half of
# GX's time per ingest of a small extract, and the test suite makes about 70 such ingests per
# tier). Each validation re-points the datasource at its database and GX's Validator runs every
# expectation of each table's suite on the table's batch, as ValidationDefinition.run does, without
# its freshness check against the stores and without writing the result into a results store
# nobody reads. Runs that build Data Docs keep a file context of their own folder (above), so what
# they store and render is unchanged.
_WITHOUT_DOCS: dict = {}  # "context", "datasource", and per table (suite file text, batch definition, suite)


def _validate_without_docs(db_path: Path, tables: list[str], counts: dict[str, list[int]]) -> list[ExpectationOutcome]:
    from great_expectations.validator.v1_validator import Validator

    target = str(Path(db_path).resolve())
    if "context" not in _WITHOUT_DOCS:
        context = _context(None)
        _WITHOUT_DOCS["context"] = context
        _WITHOUT_DOCS["datasource"] = context.data_sources.add_or_update_sql(
            name="phm_duckdb", connection_string=f"duckdb:///{target}")
    datasource = _WITHOUT_DOCS["datasource"]
    datasource.connection_string = f"duckdb:///{target}"
    outcomes: list[ExpectationOutcome] = []
    try:
        for table in tables:
            batch, suite = _prepared_without_docs(table)
            # GX makes its engines from the connection string when it runs; never validate the
            # database of an earlier ingest
            engine = batch.data_asset.datasource.get_execution_engine().engine
            if engine.url.database != target:
                raise ValidationError(f"Great Expectations would validate {engine.url.database}, not {target}")
            result = Validator(batch_definition=batch, result_format={
                "result_format": "BASIC", "partial_unexpected_count": 0}).validate_expectation_suite(suite)
            for r in result.results:
                outcomes.append(_outcome(table, r, counts[table]))
    finally:
        _release_connections(db_path)
        # the next validation (maybe of the same file, rewritten) gets engines made for it
        datasource._execution_engine = None
        datasource._engine = None
    return outcomes


def _prepared_without_docs(table: str):
    """The table's batch definition and results suite in the process's context, made again only
    when its suite file changed."""
    suite_text = suite_path(table).read_text(encoding="utf-8")
    made = _WITHOUT_DOCS.get(table)
    if made is not None and made[0] == suite_text:
        return made[1], made[2]
    context, datasource = _WITHOUT_DOCS["context"], _WITHOUT_DOCS["datasource"]
    asset_name = RULE_BREAKS.format(table=table).split(".")[1]
    try:
        asset = datasource.get_asset(asset_name)
    except LookupError:
        asset = datasource.add_table_asset(name=asset_name, table_name=asset_name, schema_name="ingest")
    try:
        batch = asset.get_batch_definition("whole_table")
    except KeyError:
        batch = asset.add_batch_definition_whole_table("whole_table")
    suite = context.suites.add_or_update(results_suite(table, context))
    _WITHOUT_DOCS[table] = (suite_text, batch, suite)
    return batch, suite


# What GX keeps of the rows that broke a rule: their values (a rejected 'sex' holding an
# NHS-number-shaped value was copied there) and row positions. Quarantine has the rows; the
# stored results and the Data Docs keep counts and rule names only.
ROW_LEVEL_RESULT_KEYS = ("unexpected_list", "partial_unexpected_list", "partial_unexpected_counts",
                         "partial_unexpected_index_list", "unexpected_index_list", "details")


# Counts of rows a result keeps: suppressed as every count that leaves the pipeline (the Data Docs
# are a file outside the database: 3 rows breaking 'date of birth after the extract date' is a count
# of 1-7); the percentages beside them would give them back, and go.
COUNT_RESULT_KEYS = ("observed_value", "element_count", "unexpected_count", "missing_count")
PERCENT_RESULT_KEYS = ("unexpected_percent", "unexpected_percent_total", "unexpected_percent_nonmissing",
                       "missing_percent")


def _scrub_stored_results(context) -> None:
    """Rewrite every stored validation result without row-level values and with its counts
    suppressed, before the Data Docs are built from them (GX writes each result when it is run;
    the ingest's own outcomes were read from the results before)."""
    store = context.validation_results_store
    for key in store.list_keys():
        stored = store.get(key)
        for r in stored.results:
            result = r.result or {}
            for name in ROW_LEVEL_RESULT_KEYS + PERCENT_RESULT_KEYS:
                result.pop(name, None)
            for name in COUNT_RESULT_KEYS:
                value = result.get(name)
                if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                    result[name] = suppress(value)
        store.set(key, stored)


def _release_connections(db_path: Path) -> None:
    """Close every connection GX opened to ``db_path`` so the file can be opened again.

    GX keeps two SQLAlchemy engines (the datasource's and its execution engine's) and, because
    we ask it to, a persisted connection; ``SqlAlchemyExecutionEngine.close()`` leaves the
    latter open, and DuckDB then refuses our own connections to the file.
    """
    import sqlalchemy

    gc.collect()
    target = str(Path(db_path).resolve())
    for obj in gc.get_objects():
        if isinstance(obj, _gx_sql.SqlAlchemyExecutionEngine):
            if obj.engine is not None and obj.engine.url.database == target:
                if obj._connection is not None:
                    obj._connection.close()
                    obj._connection = None
        elif isinstance(obj, sqlalchemy.engine.Engine):
            if obj.url.drivername.startswith("duckdb") and obj.url.database == target:
                obj.dispose()
    gc.collect()


def _outcome(table: str, r, counts: list[int]) -> ExpectationOutcome:
    config = r.expectation_config
    meta = config.meta or {}
    reason = meta.get("reason") or meta.get("rule_type") or config.type
    if r.exception_info and r.exception_info.get("raised_exception"):
        raise ValidationError(
            f"expectation {meta.get('rule_type', config.type)} on {table} ({reason}) could not be evaluated: "
            f"{r.exception_info.get('exception_message', '')[:300]}")
    for info in (r.exception_info or {}).values():
        if isinstance(info, dict) and info.get("raised_exception"):
            raise ValidationError(
                f"expectation {meta.get('rule_type', config.type)} on {table} ({reason}) could not be evaluated: "
                f"{str(info.get('exception_message', ''))[:300]}")
    rule = int(meta["rule"])
    count = int((r.result or {}).get("observed_value") or 0)
    if count != counts[rule]:
        raise ValidationError(f"{table}: Great Expectations counted {count} rows breaking '{reason}' but "
                              f"phm's evaluation of the rule found {counts[rule]}")
    query = f"select source_row from {RULE_BREAKS.format(table=table)} where rule = {rule}"  # noqa: S608 - ours
    return ExpectationOutcome(table=table, expectation=meta.get("rule_type") or config.type,
                              column=meta.get("column") or (meta.get("rule_kwargs") or {}).get("column"),
                              reason=reason, success=bool(r.success), unexpected_count=count,
                              rows_query=query if count else None)
