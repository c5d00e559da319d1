"""Build features and scores for an ingested database, and summarise them safely."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from features.build import build
from models.score_patients import score_patients
from phm.disclosure import show
from phm.exceptions import ConfigError, DatabaseError
from phm.ingest import check_database_name


@dataclass
class FeatureRun:
    index_date: dt.date
    tables: list[str]
    seconds: float
    summary: dict[str, str] = field(default_factory=dict)  # label -> suppressed count, as text

    def summary_lines(self) -> list[str]:
        lines = [f"features and scores at index date {self.index_date} ({self.seconds:.1f} s):"]
        lines += [f"  {label:<58}{value:>14}" for label, value in self.summary.items()]
        lines.append("  (counts: 1-7 suppressed, others rounded to 5)")
        return lines


def extract_date(con: duckdb.DuckDBPyConnection) -> dt.date:
    try:
        return con.execute("select extract_date from ingest.run_parameters").fetchone()[0]
    except duckdb.CatalogException:
        raise ConfigError("the database has no ingested extract: run phm ingest first") from None


def connect(db_path: Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open an ingested database, with errors a user can act on."""
    check_database_name(db_path)
    if not Path(db_path).is_file():
        raise ConfigError(f"--db {db_path}: no such database (run phm ingest first)")
    try:
        return duckdb.connect(str(db_path), read_only=read_only)
    except duckdb.IOException as exc:
        raise DatabaseError(f"cannot open database {db_path}: {str(exc).splitlines()[0]}") from None


def run_features(db_path: Path, index_date: dt.date | None = None, progress=None) -> FeatureRun:
    """Build every feature layer and ``marts.patient_scores`` in ``db_path``."""
    con = connect(db_path)
    try:
        started = time.perf_counter()
        index_date = index_date or extract_date(con)
        if index_date > extract_date(con):
            raise ConfigError(f"--index-date {index_date} is after the extract date {extract_date(con)}")
        tables = build(con, index_date, progress=progress)
        if progress:
            progress("scoring QRISK3 and QDiabetes")
        score_patients(con)
        tables.append("marts.patient_scores")
        run = FeatureRun(index_date, tables, time.perf_counter() - started)
        run.summary = summarise(con)
    finally:
        con.close()
    return run


def summarise(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    counts = dict(con.execute("""
        select 'patients registered and alive at the index date', count(*) from marts.mart_patient_features
        union all select 'QRISK3 scored (25-84, no CVD)', count(qrisk3_10y_pct) from marts.patient_scores
        union all select 'QRISK3 >= 10% (NICE threshold for statin discussion)', count(*) filter (where qrisk3_10y_pct >= 10) from marts.patient_scores
        union all select 'QRISK3 resting on a defaulted input', count(*) filter (where qrisk3_notes like '%defaulted%') from marts.patient_scores
        union all select 'QDiabetes scored (25-84, no diabetes)', count(qdiabetes_10y_pct) from marts.patient_scores
        union all select 'hypertension: ' || finding, count(*) from marts.mart_hypertension_case_finding
            where finding is not null group by finding
    """).fetchall())
    return {label: show(count) for label, count in counts.items()}
