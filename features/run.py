"""Build the features of an ingested database for an index date, and summarise them safely.

(The validated scores on them, QRISK3 and QDiabetes, are the next stage: models/score_patients.py.)
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from features.build import build
from phm.db import connect, extract_date
from phm.disclosure import show, summary_lines
from phm.exceptions import ConfigError


@dataclass
class FeatureRun:
    index_date: dt.date
    tables: list[str]
    seconds: float
    summary: dict[str, str] = field(default_factory=dict)  # label -> suppressed count, as text

    def summary_lines(self) -> list[str]:
        return summary_lines(f"features at index date {self.index_date} ({self.seconds:.1f} s):", self.summary)


def run_features(db_path: Path, index_date: dt.date | None = None, progress=None) -> FeatureRun:
    """Build every feature layer in ``db_path``."""
    con = connect(db_path)
    try:
        started = time.perf_counter()
        index_date = index_date or extract_date(con)
        if index_date > extract_date(con):
            raise ConfigError(f"--index-date {index_date} is after the extract date {extract_date(con)}")
        tables = build(con, index_date, progress=progress)
        run = FeatureRun(index_date, tables, time.perf_counter() - started)
        run.summary = summarise(con)
    finally:
        con.close()
    return run


def summarise(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    counts = dict(con.execute("""
        select 'patients registered and alive at the index date', count(*) from marts.mart_patient_features
        union all select 'ethnicity from hospital records (the GP record states none)', count(*)
            from marts.mart_patient_features where ethnicity_source = 'hospital'
        union all select 'hypertension: ' || finding, count(*) from marts.mart_hypertension_case_finding
            where finding is not null group by finding
    """).fetchall())
    return {label: show(count) for label, count in counts.items()}
