"""Re-identification at the practice, on the session's finished pipeline run (tests/shared_run.py:
12,000 synthetic patients in 3 PCNs, their published lists, and each practice's own lookup from
patient_id to a test NHS number in the extract's practice_side/, which the pipeline never reads).

Each practice, with the key the ICB writes it and its own lookup, recovers exactly the NHS numbers
of its listed patients, in the list's order; another practice's key and another ICB key recover
none; and nothing the ICB side wrote (lists, database, MLflow store and artifacts, audit, Data
Docs, Prefect's records, the terminal) holds any of the lookups' NHS numbers.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import duckdb
import polars as pl
import pytest

from cli.main import main
from phm.pseudonymise import practice_key, pseudonym
from phm.reidentify import read_list, read_lookup, read_practice_key, reidentify, write_practice_key
from tests.shared_run import KEY

pytestmark = pytest.mark.slow


def lookups(run) -> dict[str, pl.DataFrame]:
    """Each practice's own lookup, as the practice holds it (validated as phm reidentify reads it)."""
    return {p.parent.name: read_lookup(p) for p in sorted((run.extract / "practice_side").glob("*/patients.csv"))}


def list_files(run) -> list[Path]:
    """Every PCN's list and its ethnicity re-ask worklist: both are re-identified the same way."""
    from flows.publish import published_files

    return sorted([*published_files(run.lists).values(), *published_files(run.lists, "reask").values()])


def expected_nhs_numbers(run, rows: pl.DataFrame, practice: str) -> list[str | None]:
    """The oracle, from the ICB side: which patient each of the practice's rows is (the database's
    registered patients, pseudonymised with the practice's key), then that patient's NHS number
    in the practice's lookup."""
    con = duckdb.connect(str(run.db), read_only=True)
    try:
        ids = [str(i) for (i,) in con.execute("select patient_id from marts.mart_patient_features "
                                              "where practice_pseudo_id = ?", [int(practice)]).fetchall()]
    finally:
        con.close()
    key = practice_key(KEY.encode(), practice)
    patient_of = {pseudonym(key, i): i for i in ids}
    nhs_of = dict(lookups(run)[practice].iter_rows())
    own = rows.filter(pl.col("practice_pseudo_id") == practice)
    return [nhs_of.get(patient_of[p]) for p in own["pseudonym"].to_list()]


def test_each_practice_recovers_exactly_its_own_listed_patients_nhs_numbers(finished_run, tmp_path):
    practices_seen = 0
    for path in list_files(finished_run):
        rows = read_list(path)
        for practice in rows["practice_pseudo_id"].unique(maintain_order=True).to_list():
            key = read_practice_key(write_practice_key(KEY.encode(), practice, tmp_path / f"{path.stem}-{practice}.key"))
            result = reidentify(rows, practice, key, lookups(finished_run)[practice], str(path))
            expected = expected_nhs_numbers(finished_run, rows, practice)
            assert result.rows["nhs_number"].to_list() == expected  # the same patients, in the list's order
            # listed at the extract date, in the lookup of the same date: nobody missing
            assert result.not_found == 0 and result.found == result.listed > 0
            assert result.rows.drop("nhs_number").equals(rows.filter(pl.col("practice_pseudo_id") == practice))
            if path.with_suffix(".parquet").is_file():  # the same list as Parquet (reasons as lists) agrees
                assert read_list(path.with_suffix(".parquet")).equals(rows)
            practices_seen += 1
    assert practices_seen == 2 * len(lookups(finished_run)) >= 4  # every practice, in its list and its worklist


def test_another_practices_key_or_another_icb_key_recovers_none(finished_run):
    everyone = pl.concat(list(lookups(finished_run).values()))  # even with every practice's lookup
    other_icb = b"another-icb-key-nobody-used-for-these-lists"
    for path in list_files(finished_run):
        rows = read_list(path)
        practices = rows["practice_pseudo_id"].unique(maintain_order=True).to_list()
        for practice in practices:
            assert reidentify(rows, practice, practice_key(other_icb, practice), everyone).found == 0
            for other in set(lookups(finished_run)) - {practice}:
                assert reidentify(rows, practice, practice_key(KEY.encode(), other), everyone).found == 0


def test_the_commands_round_trip_on_a_published_list(finished_run, tmp_path, monkeypatch, capsys):
    path = list_files(finished_run)[0]
    practice = read_list(path)["practice_pseudo_id"][0]
    monkeypatch.setenv("PHM_PSEUDONYMISATION_KEY", KEY)
    assert main(["practice-key", "--practice", practice, "--out", str(tmp_path / "practice.key")]) == 0
    monkeypatch.delenv("PHM_PSEUDONYMISATION_KEY")  # the practice side has no ICB key
    lookup = finished_run.extract / "practice_side" / practice / "patients.csv"
    assert main(["reidentify", "--list", str(path), "--practice", practice, "--key-file", str(tmp_path / "practice.key"),
                 "--lookup", str(lookup), "--out", str(tmp_path / "out")]) == 0
    expected = [n for n in expected_nhs_numbers(finished_run, read_list(path), practice) if n]
    assert (tmp_path / "out" / f"practice_{practice}_nhs_numbers.txt").read_text().split() == expected
    out = capsys.readouterr().out
    assert f"{len(expected)} re-identified from the lookup, 0 not found in it" in out
    assert not any(n in out for n in expected)


NHS_NUMBER_TEXT = re.compile(rb"(?<![0-9])999[0-9]{7}(?![0-9])")


def file_texts(path: Path):
    data = path.read_bytes()
    yield data
    if zipfile.is_zipfile(path):  # MLflow's model archives and the workbooks
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                yield archive.read(member)


def test_nothing_written_on_the_icb_side_holds_an_nhs_number(finished_run):
    numbers = {n for frame in lookups(finished_run).values() for n in frame["nhs_number"].to_list()}
    assert len(numbers) > 10_000
    folder = finished_run.folder
    found, files = [], 0
    for root in (folder / "out", folder / "prefect-home", folder / "terminal.log"):
        for path in [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()):
            files += 1
            for text in file_texts(path):
                found += [f"{path}: an NHS number" for m in NHS_NUMBER_TEXT.findall(text) if m.decode() in numbers]
    assert files > 50 and found == [], found[:10]
    # and in the database, whatever the column's type or compression
    con = duckdb.connect(str(finished_run.db), read_only=True)
    try:
        con.register("nhs", pl.DataFrame({"n": sorted(numbers)}).with_columns(pl.col("n").cast(pl.Int64).alias("i")))
        columns = con.execute("select c.table_schema, c.table_name, c.column_name, c.data_type "
                              "from information_schema.columns c join information_schema.tables t "
                              "using (table_catalog, table_schema, table_name) "
                              "where t.table_type = 'BASE TABLE' and c.table_catalog = current_database()").fetchall()
        checked = 0
        for schema, table, column, kind in columns:
            source, value = f'"{schema}"."{table}"', f'"{column}"'
            if kind == "VARCHAR":  # a number standing alone anywhere in the text
                query = (f"select count(*) from (select unnest(regexp_extract_all({value}, "  # noqa: S608
                         f"'(?:^|[^0-9])(999[0-9]{{7}})(?:[^0-9]|$)', 1)) as n from {source}) "
                         "where n in (select n from nhs)")
            elif kind in ("BIGINT", "HUGEINT", "UBIGINT", "DOUBLE") or kind.startswith("DECIMAL"):
                query = f"select count(*) from {source} where try_cast({value} as bigint) in (select i from nhs)"  # noqa: S608
            else:
                continue
            assert con.execute(query).fetchone()[0] == 0, (schema, table, column)
            checked += 1
        assert checked > 100
    finally:
        con.close()
