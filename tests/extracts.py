"""Tiny hand-made extracts for spec tests: a valid base that each test changes one thing in."""

from __future__ import annotations

import csv
import json
from pathlib import Path

BASE = {
    "practices": [
        ["practice_pseudo_id", "pcn_code", "pcn_name", "icb_code"],
        ["101", "U00001", "North PCN", "QXX"],
        ["202", "U00002", "South PCN", "QXX"],
    ],
    "patients": [
        ["patient_id", "sex", "date_of_birth", "date_of_death"],
        ["1", "female", "1960-05-01", ""],
        ["2", "male", "1975-01-01", ""],
        ["3", "female", "1948-11-01", "2024-06-30"],
        ["4", "male", "2001-02-01", ""],
    ],
    "practice_registrations": [
        ["patient_id", "start_date", "end_date", "practice_pseudo_id"],
        ["1", "2010-01-01", "", "101"],
        ["2", "2015-06-01", "", "202"],
        ["3", "2000-01-01", "2024-06-30", "101"],
        ["4", "2019-09-01", "", "202"],
    ],
    "addresses": [
        ["patient_id", "start_date", "end_date", "lsoa_code", "imd_rounded", "townsend_score"],
        ["1", "2010-01-01", "", "E01000123", "1200", "4.5"],
        ["2", "2015-06-01", "", "E01020456", "25600", "-3.1"],
        ["3", "2000-01-01", "2024-06-30", "E01011111", "9800", ""],
        ["4", "2019-09-01", "", "", "", ""],
    ],
    "clinical_events": [
        ["patient_id", "date", "snomedct_code", "numeric_value"],
        ["1", "2025-03-01", "271649006", "148"],
        ["1", "2025-03-01", "271650006", "92"],
        ["1", "2020-01-10", "92461000000105", ""],
        ["2", "2024-11-20", "60621009", "31.2"],
        ["2", "2018-04-04", "38341003", ""],
        ["3", "2023-02-02", "999791000000106", "51"],
        ["4", "2022-07-07", "195967001", ""],
    ],
    "medications": [
        ["patient_id", "date", "dmd_code"],
        ["2", "2025-01-15", "319283006"],
        ["2", "2025-03-12", "319283006"],
        ["3", "2024-01-01", "320000009"],
    ],
}
METADATA = {"extract_date": "2026-03-31", "imd_version": "IMD2019", "source": "hand-made test"}


def write_extract(directory: Path, tables: dict | None = None, metadata: dict | None = None) -> Path:
    """Write BASE (with ``tables`` replacing whole tables) as CSV files plus extract.json."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, rows in {**BASE, **(tables or {})}.items():
        if rows is None:
            continue
        with open(directory / f"{name}.csv", "w", newline="", encoding="utf-8") as handle:
            csv.writer(handle, lineterminator="\n").writerows(rows)
    (directory / "extract.json").write_text(json.dumps(metadata or METADATA))
    return directory


def with_rows(table: str, *rows: list[str]) -> dict:
    """BASE's ``table`` with extra data rows appended."""
    return {table: BASE[table] + [list(r) for r in rows]}
