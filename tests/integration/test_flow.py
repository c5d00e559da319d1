"""The ingest flow under Prefect (no server: a test harness), on a synthetic extract."""

from __future__ import annotations

import json

import duckdb
import pytest

from flows.ingest import ingest_flow

pytestmark = pytest.mark.slow  # a Prefect test harness


def test_ingest_flow_loads_a_clean_synthetic_extract_without_quarantine(
        prefect_test_server, small_synthetic_extract, tmp_path):
    db = tmp_path / "phm.duckdb"
    report = ingest_flow(small_synthetic_extract, db, tmp_path)
    assert not report.tables["hospital_ethnicity"].given  # the optional table: not in this extract
    for table in (t for t in report.tables.values() if t.given):
        assert table.rows_read > 0
        assert table.rows_quarantined == 0, (table.table, table.quarantine_reasons)
        assert table.rows_loaded == table.rows_read
    assert report.data_docs and report.data_docs.endswith("index.html")
    with duckdb.connect(str(db), read_only=True) as con:
        stored = json.loads(con.execute("select report_json from ingest.runs").fetchone()[0])
        assert stored["tables"]["patients"]["rows_loaded"] == 3_000
        truth = small_synthetic_extract / "truth"
        assert truth.is_dir()
        tables = {r[0] for r in con.execute(
            "select table_schema || '.' || table_name from information_schema.tables").fetchall()}
        assert not any("truth" in t for t in tables)  # the pipeline never reads truth/
