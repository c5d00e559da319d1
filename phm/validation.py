"""Run the Great Expectations suites in ``expectations/`` against the staged tables in DuckDB.

GX judges every expectation and counts the rows that break it; it returns only a sample of those
rows, so for each failed expectation we keep the SQL that selects *all* of them (GX's
``unexpected_index_query``, or our own ``unexpected_rows_query``) for the quarantine step, and
check that it finds exactly as many rows as GX counted.
"""

from __future__ import annotations

import gc
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

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
    with _VALIDATION_LOCK:
        gc.freeze()
        try:
            return _validate(db_path, tables, docs_dir, on_table)
        finally:
            gc.unfreeze()


def _validate(db_path: Path, tables: list[str], docs_dir: Path | None, on_table) -> list[ExpectationOutcome]:
    context = _context(docs_dir)
    datasource = context.data_sources.add_or_update_sql(
        name="phm_duckdb", connection_string=f"duckdb:///{Path(db_path).resolve()}")
    outcomes: list[ExpectationOutcome] = []
    try:
        for table in tables:
            if on_table:
                on_table(table)
            asset_name = f"stg_{table}"
            try:
                asset = datasource.get_asset(asset_name)
            except LookupError:
                asset = datasource.add_table_asset(name=asset_name, table_name=asset_name,
                                                   schema_name="staging")
            try:
                batch = asset.get_batch_definition("whole_table")
            except KeyError:
                batch = asset.add_batch_definition_whole_table("whole_table")
            suite = context.suites.add_or_update(load_suite(table, context))
            definition = context.validation_definitions.add_or_update(
                gx.ValidationDefinition(name=f"ingest_{table}", data=batch, suite=suite))
            result = definition.run(result_format={
                "result_format": "COMPLETE", "unexpected_index_column_names": ["source_row"],
                "partial_unexpected_count": 0})
            for r in result.results:
                outcomes.append(_outcome(table, r))
        if docs_dir is not None:
            _scrub_stored_results(context)
            context.build_data_docs()
    finally:
        _release_connections(db_path)
    return outcomes


# What GX keeps of the rows that broke a rule: their values (a rejected 'sex' holding an
# NHS-number-shaped value was copied there) and row positions. Quarantine has the rows; the
# stored results and the Data Docs keep counts and rule names only.
ROW_LEVEL_RESULT_KEYS = ("unexpected_list", "partial_unexpected_list", "partial_unexpected_counts",
                         "partial_unexpected_index_list", "unexpected_index_list", "details")


def _scrub_stored_results(context) -> None:
    """Rewrite every stored validation result without row-level values, before the Data Docs
    are built from them (GX writes each result when it is run)."""
    store = context.validation_results_store
    for key in store.list_keys():
        stored = store.get(key)
        for r in stored.results:
            for name in ROW_LEVEL_RESULT_KEYS:
                (r.result or {}).pop(name, None)
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


def _outcome(table: str, r) -> ExpectationOutcome:
    config = r.expectation_config
    meta = config.meta or {}
    reason = meta.get("reason") or config.type
    if r.exception_info and r.exception_info.get("raised_exception"):
        raise ValidationError(
            f"expectation {config.type} on {table} ({reason}) could not be evaluated: "
            f"{r.exception_info.get('exception_message', '')[:300]}")
    for info in (r.exception_info or {}).values():
        if isinstance(info, dict) and info.get("raised_exception"):
            raise ValidationError(
                f"expectation {config.type} on {table} ({reason}) could not be evaluated: "
                f"{str(info.get('exception_message', ''))[:300]}")
    result = r.result or {}
    if config.type == "unexpected_rows_expectation":
        count = int(result.get("observed_value") or 0)
        # GX fills {batch} with str.format semantics (literal braces doubled); so do we.
        query = config.kwargs["unexpected_rows_query"].format(
            batch=BATCH_SUBSTITUTE.format(table=table))
    else:
        count = int(result.get("unexpected_count") or 0)
        query = result.get("unexpected_index_query")
    return ExpectationOutcome(table=table, expectation=config.type,
                              column=meta.get("column") or config.kwargs.get("column"),
                              reason=reason, success=bool(r.success), unexpected_count=count,
                              rows_query=query if count else None)
