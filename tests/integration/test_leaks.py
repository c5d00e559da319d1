"""Leaks: run the demo's flow, then read everything it left outside the database for patients.

The session's finished run (tests/shared_run.py): the whole pipeline, as ``phm demo`` runs it
(with the synthetic truth measured in MLflow), on a synthetic extract whose patient ids are first
remapped to 12-digit numbers no other output could contain by chance (830,000,000,000 + 13 x id),
so any id that escapes is found; in a fresh process with its own PREFECT_HOME, so the Prefect
server's database (every Prefect log, run, state and event) is here to read. Then a scan of the
terminal output, the Prefect database, the
MLflow store (parameters, metrics, tags, and every artifact, zip members included: models,
reports, plots), the fairness report, the Great Expectations Data Docs, the lists, their
summaries and manifest. None may hold a patient id, a date of birth, an NHS-number-shaped value,
or the pseudonymisation key in any form; every count in a report, summary or manifest must be
suppressed (null, 0, or a multiple of 5 from 10).
"""

from __future__ import annotations

import base64
import json
import re
import sqlite3
import zipfile
from pathlib import Path

import polars as pl
import pytest

from tests.shared_run import KEY

pytestmark = pytest.mark.slow
NOT_SCANNED = {"phm.duckdb", "phm.duckdb.wal", ".phm-run.lock"}  # the data store itself holds patients


def texts(path: Path):
    """(where, text) for a file: sqlite databases row by row, zip archives member by member."""
    data = path.read_bytes()
    if data[:16] == b"SQLite format 3\x00":
        con = sqlite3.connect(path)
        try:
            for (table,) in con.execute("select name from sqlite_master where type = 'table'"):
                if table.startswith("block_"):  # Prefect's catalogue of block types, shipped with it
                    continue
                rows = con.execute(f'select * from "{table}"').fetchall()
                yield f"{path}:{table}", "\n".join(" | ".join(map(str, row)) for row in rows)
        finally:
            con.close()
    elif data[:4] == b"PAR1":  # Parquet: its values, not its compressed pages (which hide them and hold
        # byte tables that look like numbers)
        frame = pl.read_parquet(path)
        yield str(path), "\n".join(" | ".join(map(str, row)) for row in frame.iter_rows())
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                yield f"{path}!{member}", archive.read(member).decode("latin-1")
    else:
        yield str(path), data.decode("latin-1")


def nhs_number_shaped(digits: str) -> bool:
    if len(digits) != 10:
        return False
    total = sum(int(d) * w for d, w in zip(digits[:9], range(10, 1, -1), strict=True))
    check = 11 - total % 11
    return (0 if check == 11 else check) == int(digits[9]) and check != 10


def scanned(folder: Path):
    roots = [folder / "out", folder / "prefect-home", folder / "terminal.log"]
    for root in roots:
        for path in ([root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())):
            # a SQLite database's -wal/-shm files are read through the database itself
            if path.name not in NOT_SCANNED and not path.name.endswith(("-wal", "-shm", "-journal")):
                yield from texts(path)


def test_no_patient_id_date_of_birth_nhs_number_or_key_leaves_the_database(finished_run):
    folder, patients = finished_run.folder, pl.read_parquet(finished_run.extract / "patients.parquet")
    ids = set(patients["patient_id"].cast(pl.String).to_list())
    # the run's own dates (the index date, the capacity period's first and last days) are not births
    manifest = json.loads((finished_run.lists / "lists_manifest.json").read_text())
    run_dates = {manifest["index_date"], manifest["capacity"]["from"], manifest["capacity"]["to"]}
    births = set(patients["date_of_birth"].cast(pl.String).to_list()) - run_dates
    key_forms = {KEY, KEY.encode().hex(), base64.b64encode(KEY.encode()).decode()}
    found, files = [], 0
    for where, text in scanned(folder):
        files += 1
        for number in re.findall(r"(?<!\d)83\d{10}(?!\d)", text):
            if number in ids:
                found.append(f"{where}: patient id")
        # a date, not a timestamp (Prefect stores durations as times on 1970-01-01)
        for date in set(re.findall(r"(?<!\d)(?:19|20)\d\d-\d\d-\d\d(?![\dT]| \d\d:)", text)) & births:
            found.append(f"{where}: date of birth {date}")
        # standing alone: not inside a hex pseudonym or a UUID
        for digits in re.findall(r"(?<![0-9A-Za-z.-])(\d{3} ?\d{3} ?\d{4})(?![0-9A-Za-z.-])", text):
            plain = digits.replace(" ", "")
            # Unix times in seconds (2020-2030) are in Prefect's and Dask's records, not NHS numbers
            if nhs_number_shaped(plain) and not 1_577_836_800 <= int(plain) <= 1_893_456_000:
                found.append(f"{where}: NHS-number-shaped {digits}")
        for form in key_forms:
            if form in text:
                found.append(f"{where}: the pseudonymisation key")
    assert files > 50
    assert found == [], found[:20]


def _suppressed(value) -> bool:
    return value is None or (isinstance(value, int) and value % 5 == 0 and value not in (5,))


def test_every_count_that_leaves_the_pipeline_is_suppressed(finished_run):
    out = finished_run.out
    lists = (out / "lists").resolve()
    manifest = json.loads((lists / "lists_manifest.json").read_text())
    for pcn, counts in manifest["pcns"].items():
        assert all(_suppressed(v) for v in counts.values()), (pcn, counts)
    for summary in lists.glob("*_summary.csv"):
        frame = pl.read_csv(summary)
        for column in ("patients", "registered_adults"):
            assert all(_suppressed(v) for v in frame[column].to_list()), (summary.name, column)
    report = json.loads((out / "audit" / "fairness_audit.json").read_text())
    # the ethnicity data-quality report's figures per practice and PCN (docs/ethnicity.md)
    ethnicity = json.loads((out / "audit" / "ethnicity_quality.json").read_text())
    counts = []
    # not counts of people: settings, and the pooled recording check's degrees of freedom (outcomes pooled - 1)
    SETTINGS = {"version", "replicates", "seed", "min_patients", "min_events", "min_practices", "degrees_of_freedom"}

    def walk(node, key=None):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, k)
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif isinstance(node, int) and not isinstance(node, bool) and key not in SETTINGS:
            counts.append((key, node))
    walk(report)
    walk(ethnicity)
    assert len(counts) > 100
    assert all(_suppressed(v) for _, v in counts), [c for c in counts if not _suppressed(c[1])][:10]


def test_everything_the_run_writes_is_readable_by_its_owner_only(finished_run):
    out = finished_run.out
    checked = 0
    for path in [out, *out.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode & 0o777
        assert mode & 0o077 == 0, f"{path}: {oct(mode)}"
        checked += 1
    assert checked > 20 and (out / "phm.duckdb").is_file()
