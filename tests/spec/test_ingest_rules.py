"""Spec tests for ingest: one hand-made extract per rule, with the outcome each must have.

Row-level faults go to quarantine with the table, source row and reason; file-level faults stop
the ingest with one message naming the file (and column or row). Every case also checks that
rows read = rows loaded + rows quarantined.
"""

from __future__ import annotations

import gzip
import json

import duckdb
import pytest

from phm.exceptions import ExtractError
from phm.ingest import ingest
from tests.extracts import BASE, with_rows, write_extract


def run(tmp_path, tables=None, metadata=None):
    extract = write_extract(tmp_path / "extract", tables, metadata)
    db = tmp_path / "phm.duckdb"
    report = ingest(extract, db)
    for t in report.tables.values():
        assert t.rows_read == t.rows_loaded + t.rows_quarantined, t
    return report, db


def quarantined(db):
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("select table_name, source_row, reason from ingest.quarantine "
                           "order by table_name, source_row").fetchall()


def test_clean_hand_made_extract_loads_every_row(tmp_path):
    report, db = run(tmp_path)
    assert {t: r.rows_loaded for t, r in report.tables.items() if r.given} == {
        t: len(rows) - 1 for t, rows in BASE.items()}
    assert quarantined(db) == []
    with duckdb.connect(str(db), read_only=True) as con:
        types = dict(con.execute("select column_name, data_type from information_schema.columns "
                                 "where table_schema = 'main' and table_name = 'patients'").fetchall())
        assert types == {"patient_id": "BIGINT", "sex": "VARCHAR", "date_of_birth": "DATE",
                         "date_of_death": "DATE"}
        counts = con.execute("select table_name, rows_read, rows_loaded, rows_quarantined "
                             "from ingest.table_counts order by 1").fetchall()
        assert ("patients", 4, 4, 0) in counts
        # published by renaming the staged tables: main holds the contract's tables and nothing else
        from phm.contract import TABLES
        assert [t for (t,) in con.execute("select table_name from duckdb_tables() where schema_name = 'main' "
                                          "order by 1").fetchall()] == sorted(TABLES)


# (case, tables, expected quarantine rows (table, source_row, reason fragment))
ROW_CASES = [
    ("duplicate patient rows: the later copy is quarantined",
     with_rows("patients", ["2", "male", "1975-01-01", ""]),
     [("patients", 5, "duplicate patient_id")]),
    ("malformed SNOMED code",
     with_rows("clinical_events", ["1", "2025-01-01", "X12345", ""]),
     [("clinical_events", 8, "not a valid SNOMED CT code")]),
    ("event for a patient with no patient row",
     with_rows("clinical_events", ["99", "2025-01-01", "271649006", "120"]),
     [("clinical_events", 8, "not in the patients table")]),
    ("event after the extract date",
     with_rows("clinical_events", ["1", "2026-04-01", "271649006", "120"]),
     [("clinical_events", 8, "after the extract date")]),
    ("event before birth",
     with_rows("clinical_events", ["4", "1999-01-01", "271649006", "120"]),
     [("clinical_events", 8, "before the patient's date of birth")]),
    ("event after death",
     with_rows("clinical_events", ["3", "2025-01-01", "271649006", "120"]),
     [("clinical_events", 8, "after the patient's date of death")]),
    ("implausible systolic blood pressure",
     with_rows("clinical_events", ["1", "2025-01-01", "271649006", "900"]),
     [("clinical_events", 8, "outside the plausible range")]),
    ("date in another format",
     with_rows("clinical_events", ["1", "31/12/2020", "271649006", "120"]),
     [("clinical_events", 8, "date is missing or is not an ISO date")]),
    ("non-numeric measurement value",
     with_rows("clinical_events", ["1", "2025-01-01", "271649006", "high"]),
     [("clinical_events", 8, "numeric_value is not a number")]),
    ("unknown sex value",
     with_rows("patients", ["5", "F", "1990-01-01", ""]),
     [("patients", 5, "sex is not one of")]),
    ("registration with a practice not in practices",
     with_rows("practice_registrations", ["1", "2009-01-01", "2009-12-31", "999"]),
     [("practice_registrations", 5, "not in the practices table")]),
    ("registration ending before it starts",
     with_rows("practice_registrations", ["2", "2014-01-01", "2013-01-01", "101"]),
     [("practice_registrations", 5, "end_date is before start_date")]),
    ("invalid LSOA code",
     with_rows("addresses", ["1", "2000-01-01", "2009-12-31", "X99", "100", ""]),
     [("addresses", 5, "not an LSOA code")]),
    ("unicode in an id",
     with_rows("patients", ["p1\u00e9", "female", "1990-01-01", ""]),
     [("patients", 5, "patient_id is missing or is not a whole number")]),
    ("an id too large for a 64-bit integer",
     with_rows("patients", ["99999999999999999999999", "female", "1990-01-01", ""]),
     [("patients", 5, "patient_id is missing or is not a whole number")]),
    ("death before birth",
     with_rows("patients", ["5", "male", "1990-01-01", "1980-01-01"]),
     [("patients", 5, "date_of_death is before date_of_birth")]),
    ("a PCN code that climbs out of a folder (it would name a list file)",
     with_rows("practices", ["303", "../../pwned_pcn", "East PCN", "QXX"]),
     [("practices", 3, "pcn_code is not an ODS-style code")]),
    ("a PCN code that is an absolute path",
     with_rows("practices", ["303", "/tmp/pwned", "East PCN", "QXX"]),
     [("practices", 3, "pcn_code is not an ODS-style code")]),
    ("an ICB code with a path separator (it names MLflow models and keys)",
     with_rows("practices", ["303", "U00003", "East PCN", "Q/X"]),
     [("practices", 3, "icb_code is not an ODS-style code")]),
    ("medication with a malformed dm+d code",
     with_rows("medications", ["1", "2025-01-01", "0123"]),
     [("medications", 4, "not a valid dm+d code")]),
]


@pytest.mark.parametrize("case,tables,expected", ROW_CASES, ids=[c[0] for c in ROW_CASES])
def test_row_level_faults_go_to_quarantine_with_row_and_reason(tmp_path, case, tables, expected):
    report, db = run(tmp_path, tables)
    rows = quarantined(db)
    assert len(rows) == len(expected), rows
    for (table, row, reason), (qt, qrow, qreason) in zip(expected, rows, strict=True):
        assert (qt, qrow) == (table, row)
        assert reason in qreason
    assert report.tables[expected[0][0]].rows_quarantined == len(expected)


def test_rows_of_a_quarantined_patient_are_quarantined_too(tmp_path):
    tables = {"patients": [BASE["patients"][0], ["1", "female", "not-a-date", ""], *BASE["patients"][2:]]}
    report, db = run(tmp_path, tables)
    rows = quarantined(db)
    assert ("patients", 1, "date_of_birth is missing or is not an ISO date (YYYY-MM-DD)") in rows
    cascaded = [r for r in rows if r[0] == "clinical_events"]
    assert [r[1] for r in cascaded] == [1, 2, 3]
    assert all("its patients row was quarantined" in r[2] for r in cascaded)
    assert report.tables["practice_registrations"].rows_quarantined == 1


def test_codes_outside_the_codelists_and_overlapping_registrations_are_loaded_and_noted(tmp_path):
    tables = {**with_rows("clinical_events", ["2", "2025-01-01", "123456789", ""]),
              **with_rows("practice_registrations", ["1", "2009-06-01", "2011-01-01", "202"])}
    report, db = run(tmp_path, tables)
    assert quarantined(db) == []
    assert any("overlapping registrations" in n for n in report.notes)
    assert any("use codes in no project codelist" in n for n in report.notes)


def test_extra_columns_are_ignored_and_named(tmp_path):
    rows = [r + [v] for r, v in zip(BASE["practices"], ["comment", "a", "b"], strict=True)]
    report, _ = run(tmp_path, {"practices": rows})
    assert report.tables["practices"].ignored_columns == ["comment"]
    assert any("comment" in n for n in report.notes)


def test_ingesting_twice_gives_the_same_tables_not_duplicates(tmp_path):
    extract = write_extract(tmp_path / "extract", with_rows("patients", ["2", "male", "1975-01-01", ""]))
    db = tmp_path / "phm.duckdb"
    ingest(extract, db)
    with duckdb.connect(str(db), read_only=True) as con:
        first = {t: con.execute(f"select * from main.{t} order by all").fetchall() for t in BASE}
        first_q = con.execute("select * from ingest.quarantine order by all").fetchall()
    ingest(extract, db)
    with duckdb.connect(str(db), read_only=True) as con:
        assert {t: con.execute(f"select * from main.{t} order by all").fetchall() for t in BASE} == first
        assert con.execute("select * from ingest.quarantine order by all").fetchall() == first_q
        assert con.execute("select count(*) from ingest.runs").fetchone()[0] == 2


def test_parquet_and_gzipped_csv_extracts_load_the_same_rows(tmp_path):
    import polars as pl

    csv_dir = write_extract(tmp_path / "csv")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "extract.json").write_text((csv_dir / "extract.json").read_text())
    for name in BASE:
        source = csv_dir / f"{name}.csv"
        if name in ("patients", "clinical_events"):
            pl.read_csv(source, infer_schema_length=0).write_parquet(mixed / f"{name}.parquet")
        else:
            (mixed / f"{name}.csv.gz").write_bytes(gzip.compress(source.read_bytes()))
    a = ingest(csv_dir, tmp_path / "a.duckdb")
    b = ingest(mixed, tmp_path / "b.duckdb")
    assert {t: r.rows_loaded for t, r in a.tables.items()} == {t: r.rows_loaded for t, r in b.tables.items()}


# File-level faults: (case, how to break the extract, message fragment)
def _remove(name):
    return lambda d: (d / f"{name}.csv").unlink()


def _write(name, data: bytes):
    return lambda d: (d / f"{name}.csv").write_bytes(data)


def _csv(rows):
    return ("\n".join(",".join(r) for r in rows) + "\n").encode()


FILE_CASES = [
    ("missing table", _remove("medications"), "table 'medications' is missing"),
    ("missing column", _write("clinical_events", _csv([r[:3] for r in BASE["clinical_events"]])),
     "column 'numeric_value': required column is missing"),
    ("empty file", _write("patients", b""), "is empty"),
    ("header but no rows", _write("patients", _csv(BASE["patients"][:1])), "has a header but no rows"),
    ("non-UTF-8 bytes in a row", _write("patients", _csv(BASE["patients"]) + b"5,female,1990-01-01,\xff\xfe\n"),
     "malformed CSV"),
    ("header not UTF-8", _write("patients", b"patient_id,s\xe9x,date_of_birth,date_of_death\n1,female,1990-01-01,\n"),
     "header is not UTF-8"),
    ("wrong delimiter", _write("patients", _csv(BASE["patients"]).replace(b",", b";")),
     "delimited by something other than commas"),
    ("a row with too many fields", _write("patients", _csv(BASE["patients"]) + b"5,female,1990-01-01,,extra\n"),
     "malformed CSV"),
    ("truncated file (unterminated quote)", _write("patients", _csv(BASE["patients"]) + b'5,"fem'),
     "malformed CSV"),
    ("duplicated header", _write("patients", b"patient_id,sex,sex,date_of_birth,date_of_death\n1,female,female,1990-01-01,\n"),
     "column 'sex': column name appears twice"),
    ("missing extract.json", lambda d: (d / "extract.json").unlink(), "extract.json"),
    ("bad extract date", lambda d: (d / "extract.json").write_text(json.dumps({"extract_date": "31/03/2026", "imd_version": "IMD2019"})),
     "column 'extract_date': must be an ISO date"),
    ("unknown IMD version", lambda d: (d / "extract.json").write_text(json.dumps({"extract_date": "2026-03-31", "imd_version": "IMD2015"})),
     "column 'imd_version'"),
    ("table given twice", lambda d: (d / "patients.parquet").write_bytes(b"PAR1"), "given twice"),
    ("corrupt Parquet", lambda d: ((d / "patients.csv").unlink(), (d / "patients.parquet").write_bytes(b"PAR1 not really")),
     "not a readable Parquet file"),
    ("truncated gzip", lambda d: ((d / "medications.csv").unlink(), (d / "medications.csv.gz").write_bytes(gzip.compress(_csv(BASE["medications"]) * 50)[:40])),
     "medications.csv.gz"),
]


@pytest.mark.parametrize("case,break_it,message", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_file_level_faults_stop_with_one_message_naming_the_file(tmp_path, case, break_it, message):
    extract = write_extract(tmp_path / "extract")
    break_it(extract)
    with pytest.raises(ExtractError) as caught:
        ingest(extract, tmp_path / "phm.duckdb")
    text = str(caught.value)
    assert message in text
    assert "\n" not in text
    assert str(extract) in text or "extract.json" in text
    # the row itself is never echoed back (it could hold patient data)
    assert "1990-01-01" not in text and "Original Line" not in text
    if (tmp_path / "phm.duckdb").exists():  # nothing staged is left in main
        with duckdb.connect(str(tmp_path / "phm.duckdb"), read_only=True) as con:
            assert con.execute("select count(*) from duckdb_tables() where schema_name = 'main'").fetchone()[0] == 0


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_source_row_is_the_file_row_even_when_a_large_file_is_read_in_parallel(tmp_path, fmt):
    """Quarantine names rows by number, so numbering must follow the file, not thread order."""
    import polars as pl

    from phm.db import create as connect
    from phm.ingest import stage

    n = 400_000
    frame = pl.DataFrame({"patient_id": pl.int_range(n, eager=True) % 1000, "date": ["2020-01-01"] * n,
                          "snomedct_code": ["271649006"] * n,
                          "numeric_value": pl.int_range(1, n + 1, eager=True).cast(pl.Float64)})
    path = tmp_path / f"clinical_events.{fmt}"
    frame.write_csv(path) if fmt == "csv" else frame.write_parquet(path, row_group_size=20_000)
    con = connect(tmp_path / "order.duckdb")
    con.execute("set threads = 4")
    assert stage(con, path, "clinical_events") == n
    mismatched = con.execute("select count(*) from staging.stg_clinical_events "
                             "where source_row <> numeric_value").fetchone()[0]
    con.close()
    assert mismatched == 0


# practices with the optional columns ods_code and practice_name
IDENTIFIED = [["practice_pseudo_id", "pcn_code", "pcn_name", "icb_code", "ods_code", "practice_name"],
              ["101", "U00001", "North PCN", "QXX", "A12345", "Riverside Surgery"],
              ["202", "U00002", "South PCN", "QXX", "", ""]]

IDENTITY_CASES = [
    ("an ODS code of the wrong form", ["303", "U00003", "East PCN", "QXX", "A1234", "Hill Surgery"],
     "ods_code is not an ODS practice code"),
    ("an ODS code in lower case", ["303", "U00003", "East PCN", "QXX", "a12345", "Hill Surgery"],
     "ods_code is not an ODS practice code"),
    ("an ODS code that climbs out of a folder", ["303", "U00003", "East PCN", "QXX", "../A12345", "Hill Surgery"],
     "ods_code is not an ODS practice code"),
    ("a practice name a spreadsheet would run as a formula", ["303", "U00003", "East PCN", "QXX", "A54321",
                                                              "=HYPERLINK(\"http://x\")"],
     "practice_name begins with =, +, - or @"),
    ("a practice name with a control character", ["303", "U00003", "East PCN", "QXX", "A54321", "Hill\x07Surgery"],
     "holds a control character"),
]


@pytest.mark.parametrize("case,row,reason", IDENTITY_CASES, ids=[c[0] for c in IDENTITY_CASES])
def test_a_bad_practice_identity_is_quarantined_with_its_reason(tmp_path, case, row, reason):
    report, db = run(tmp_path, {"practices": [*IDENTIFIED, row]})
    rows = quarantined(db)
    assert len(rows) == 1 and rows[0][:2] == ("practices", 3) and reason in rows[0][2], rows


def test_the_practice_identity_columns_are_optional_and_loaded_where_given(tmp_path):
    _, db = run(tmp_path, {"practices": IDENTIFIED})
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("select practice_pseudo_id, ods_code, practice_name from main.practices "
                           "order by 1").fetchall() == [(101, "A12345", "Riverside Surgery"), (202, None, None)]
    without, db = run(tmp_path / "without")  # BASE: no ods_code or practice_name column
    assert without.tables["practices"].absent_optional_columns == ["ods_code", "practice_name"]
    assert without.tables["practices"].ignored_columns == []
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("select count(*) from main.practices where ods_code is null "
                           "and practice_name is null").fetchone()[0] == 2


HOSPITAL_HEADER = ["patient_id", "date", "ethnic_category"]


def test_an_extract_without_the_optional_hospital_ethnicity_table_loads_it_empty(tmp_path):
    report, db = run(tmp_path)
    hospital = report.tables["hospital_ethnicity"]
    assert not hospital.given and (hospital.rows_read, hospital.rows_loaded, hospital.rows_quarantined) == (0, 0, 0)
    assert "hospital_ethnicity: optional table not in the extract (loaded empty)" in report.notes
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("select count(*) from main.hospital_ethnicity").fetchone()[0] == 0


def test_hospital_ethnicity_rows_are_validated_and_bad_ones_quarantined_with_their_reason(tmp_path):
    rows = [
        ["1", "2020-05-01", "N"],           # 1 loaded
        ["2", "2021-01-01", " k "],         # 2 loaded as K (spaces and case as SUS sends them)
        ["1", "2022-01-01", "99"],          # 3 loaded (not known)
        ["2", "2019-01-01", "X"],           # 4 loaded (not known, older records)
        ["1", "2020-05-01", "Q"],           # 5 not an ETHNIC CATEGORY value
        ["2", "2020-05-01", ""],            # 6 missing
        ["99", "2020-05-01", "A"],          # 7 no such patient
        ["1", "2027-01-01", "A"],           # 8 after the extract date
        ["1", "01/02/2020", "A"],           # 9 not an ISO date
        ["1.0", "2020-05-01", "A"],         # 10 id not a whole number
        ["3", "2025-01-01", "A"],           # 11 after the patient's death (2024-06-30)
        *[["4", f"202{i}-01-01", "Z"] for i in range(4)],  # 12-15 loaded (more than half must load)
    ]
    report, db = run(tmp_path, {"hospital_ethnicity": [HOSPITAL_HEADER, *rows]})
    hospital = report.tables["hospital_ethnicity"]
    assert hospital.given and (hospital.rows_read, hospital.rows_loaded, hospital.rows_quarantined) == (15, 8, 7)
    got = [(row, reason) for table, row, reason in quarantined(db) if table == "hospital_ethnicity"]
    assert [row for row, _ in got] == [5, 6, 7, 8, 9, 10, 11]
    expected = ["not an NHS ETHNIC CATEGORY value", "ethnic_category is missing", "not in the patients table",
                "after the extract date", "not an ISO date", "not a whole number", "after the patient's date of death"]
    for (_, reason), fragment in zip(got, expected, strict=True):
        assert fragment in reason
    # patient 2 (K) has no GP ethnicity code; patient 1 (N) has one (BASE: 92461000000105); 4 only Z:
    # one patient to fill, a count of 1-7, so suppressed
    assert ("hospital_ethnicity: [suppressed] patients have a hospital-recorded ethnic category and none in "
            "their GP record: the features take it from there (never over a GP code)") in report.notes
    with duckdb.connect(str(db), read_only=True) as con:
        assert sorted(con.execute("select ethnic_category from main.hospital_ethnicity").fetchall()) == [
            ("99",), ("K",), ("N",), ("X",), ("Z",), ("Z",), ("Z",), ("Z",)]


def test_ingests_one_after_another_in_a_process_each_validate_their_own_database(tmp_path):
    # Without Data Docs a process keeps Great Expectations' context and re-points it at each
    # database (phm/validation.py): a validation must never see an earlier ingest's database,
    # whether the next one is another file or the same file rewritten.
    bad = write_extract(tmp_path / "bad", with_rows("patients", ["5", "F", "1990-01-01", ""]))
    good = write_extract(tmp_path / "good")
    first, second = tmp_path / "first" / "phm.duckdb", tmp_path / "second" / "phm.duckdb"
    assert ingest(bad, first).tables["patients"].rows_quarantined == 1
    assert ingest(good, second).tables["patients"].rows_quarantined == 0
    assert quarantined(second) == []
    assert ingest(bad, second).tables["patients"].rows_quarantined == 1  # the same file, now bad
    assert [row for table, row, _ in quarantined(second)] == [5]
    assert ingest(good, first).tables["patients"].rows_quarantined == 0
    assert quarantined(first) == []
    # a run with Data Docs between them makes its own file context, with a datasource of the same
    # name on its own database: the next ingest without Data Docs still validates its own
    third = tmp_path / "third" / "phm.duckdb"
    assert ingest(good, third, docs_dir=tmp_path / "third").tables["patients"].rows_quarantined == 0
    assert ingest(bad, first).tables["patients"].rows_quarantined == 1
    assert [row for table, row, _ in quarantined(first)] == [5]
