"""Spec tests for the ingest faults an attacker or an unlucky operator met (issue 16): ids that
are not plain whole numbers, Excel's scientific notation, duplicated patients that disagree,
tables quarantined whole, future end dates, unknown files, row numbers, and counts that leave
the process suppressed."""

from __future__ import annotations

import json

import duckdb
import polars as pl
import pytest

from phm.exceptions import ConfigError, ExtractError
from phm.ingest import IngestSettings, ingest, settings_from
from tests.extracts import BASE, with_rows, write_extract
from tests.spec.test_ingest_rules import quarantined, run

NOT_WHOLE = "patient_id is missing or is not a whole number"


@pytest.mark.parametrize("written", ["0x24C", "5.88e2", "007", " 12", "1.0", "+5", "12abc"])
def test_an_id_that_is_not_a_plain_whole_number_is_quarantined_never_coerced(tmp_path, written):
    report, db = run(tmp_path, with_rows("patients", [written, "female", "1990-01-01", ""]))
    assert quarantined(db) == [("patients", 5, NOT_WHOLE)]
    with duckdb.connect(str(db), read_only=True) as con:
        ids = [r[0] for r in con.execute("select patient_id from main.patients order by 1").fetchall()]
    assert ids == [1, 2, 3, 4]


def test_an_event_whose_patient_id_is_a_decimal_is_quarantined_not_attached_to_patient_1(tmp_path):
    _, db = run(tmp_path, with_rows("clinical_events", ["1.4", "2025-01-01", "271649006", "120"]))
    assert quarantined(db) == [("clinical_events", 8, NOT_WHOLE)]


def test_parquet_float_ids_are_not_rounded_into_other_patients(tmp_path):
    extract = write_extract(tmp_path / "extract")
    events = pl.read_csv(extract / "clinical_events.csv", infer_schema_length=0)
    (extract / "clinical_events.csv").unlink()
    ids = [1.0, 1.4, 2.0, 2.0, 3.0, 84064.5, 4.0]
    events.with_columns(pl.Series("patient_id", ids)).write_parquet(extract / "clinical_events.parquet")
    report = ingest(extract, tmp_path / "phm.duckdb", settings=IngestSettings(max_quarantined_share=1.0))
    assert report.tables["clinical_events"].quarantine_reasons == {NOT_WHOLE: 7}


def test_ids_in_excels_scientific_notation_stop_the_ingest_naming_file_row_and_column(tmp_path):
    rows = [BASE["patients"][0]] + [[f"8.3000{i}E+11", *r[1:]] for i, r in enumerate(BASE["patients"][1:])]
    extract = write_extract(tmp_path / "extract", {"patients": rows})
    with pytest.raises(ExtractError) as caught:
        ingest(extract, tmp_path / "phm.duckdb")
    text = str(caught.value)
    assert "patients.csv" in text and "row 1" in text and "column 'patient_id'" in text
    assert "scientific notation" in text
    assert "8.3000" not in text  # the value itself is never echoed


def test_a_patient_given_twice_with_different_values_is_quarantined_whole(tmp_path):
    """Patient 1 appears again with another date of birth, after their 2020 event would fall:
    both copies go, and so does every other row of theirs, each with the reason; no event is
    judged against the rejected copy's birth date."""
    report, db = run(tmp_path, with_rows("patients", ["1", "female", "2021-01-01", ""]))
    rows = quarantined(db)
    patients = [r for r in rows if r[0] == "patients"]
    assert [r[1] for r in patients] == [1, 5]
    assert all("rows that disagree" in r[2] for r in patients)
    events = [r for r in rows if r[0] == "clinical_events"]
    assert [r[1] for r in events] == [1, 2, 3]
    assert all("its patients row was quarantined" in r[2] for r in events)
    assert not any("before the patient's date of birth" in r[2] for r in rows)
    assert report.tables["practice_registrations"].rows_quarantined == 1


def test_an_identical_copy_of_a_patient_keeps_the_first_and_nothing_else(tmp_path):
    _, db = run(tmp_path, with_rows("patients", BASE["patients"][2]))
    assert quarantined(db) == [("patients", 5, "duplicate patient_id, identical to an earlier row "
                                             "(the first copy is kept)")]


def test_a_table_quarantined_whole_stops_the_ingest_naming_table_and_rule(tmp_path):
    rows = [BASE["patients"][0]] + [[r[0], r[1], "01/05/1960", r[3]] for r in BASE["patients"][1:]]
    extract = write_extract(tmp_path / "extract", {"patients": rows})
    db = tmp_path / "phm.duckdb"
    with pytest.raises(ExtractError) as caught:
        ingest(extract, db)
    text = str(caught.value)
    assert "patients.csv" in text and "100% of the patients table's rows" in text
    assert "date_of_birth is missing or is not an ISO date" in text
    assert "ingest.max_quarantined_share (50%)" in text
    with duckdb.connect(str(db), read_only=True) as con:  # the analyst can read what happened
        assert con.execute("select count(*) from ingest.quarantine where table_name = 'patients'").fetchone()[0] == 4


def test_the_quarantine_limit_is_configuration_checked_by_key(tmp_path):
    rows = [BASE["patients"][0], BASE["patients"][1], ["2", "male", "bad", ""], *BASE["patients"][3:]]
    extract = write_extract(tmp_path / "extract", {"patients": rows})
    ingest(extract, tmp_path / "a.duckdb")  # 1 of 4 quarantined: under the default 50%
    with pytest.raises(ExtractError, match="patients table"):
        ingest(extract, tmp_path / "b.duckdb", settings=IngestSettings(max_quarantined_share=0.2))
    assert settings_from({"max_quarantined_share": 0.1}).max_quarantined_share == 0.1
    for bad in ({"max_quarantined_share": 2}, {"max_quarantined_share": "half"}, {"limit": 0.5}):
        with pytest.raises(ConfigError, match="ingest."):
            settings_from(bad)


def test_an_end_date_after_the_extract_date_reads_as_current_with_a_note(tmp_path):
    tables = {**with_rows("practice_registrations", ["4", "2018-01-01", "9999-12-31", "101"]),
              **with_rows("addresses", ["2", "2010-01-01", "2027-01-01", "E01000123", "1200", ""])}
    report, db = run(tmp_path, tables)
    assert quarantined(db) == []
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("select count(*) from main.practice_registrations where end_date is null "
                           "and patient_id = 4").fetchone()[0] == 2
    assert any("registrations end after the extract date: read as current" in n for n in report.notes)
    assert any("address periods end after the extract date" in n for n in report.notes)


def test_files_that_are_no_contract_table_are_named(tmp_path):
    extract = write_extract(tmp_path / "extract")
    (extract / "ons_deaths.csv").write_text("patient_id,date\n1,2020-01-01\n")
    (extract / "truth").mkdir()
    report = ingest(extract, tmp_path / "phm.duckdb")
    assert "not in the contract, so not read: ons_deaths.csv, truth/" in report.notes


def test_row_numbers_are_data_rows_in_errors_as_in_quarantine(tmp_path):
    """A bad byte in data row 5 (file line 6) is 'row 5' in the error, as quarantine would say."""
    extract = write_extract(tmp_path / "extract")
    path = extract / "patients.csv"
    path.write_bytes(path.read_bytes() + b"5,female,1990-01-01,\xff\xfe\n")
    with pytest.raises(ExtractError) as caught:
        ingest(extract, tmp_path / "phm.duckdb")
    assert "row 5:" in str(caught.value) and "Line" not in str(caught.value)


def test_counts_that_leave_the_process_are_suppressed(tmp_path):
    """Logs and the JSON report: 1-7 withheld, others rounded to 5; the database keeps exact."""
    report, db = run(tmp_path, with_rows("practice_registrations", ["1", "2009-06-01", "2011-01-01", "202"]))
    text = "\n".join(report.summary_lines() + report.notes)
    assert "[suppressed] patients have overlapping registrations" in text
    assert "1 patients" not in text
    body = json.loads(report.to_json())
    assert body["tables"]["patients"]["rows_read"] is None  # 4 patients: withheld
    assert body["tables"]["clinical_events"]["rows_read"] is None  # 7 rows
    with duckdb.connect(str(db), read_only=True) as con:
        exact = json.loads(con.execute("select report_json from ingest.runs").fetchone()[0])
    assert exact["tables"]["patients"]["rows_read"] == 4
    assert exact["tables"]["clinical_events"]["rows_read"] == 7


def test_nothing_under_the_docs_folder_keeps_a_rejected_value(tmp_path):
    """Great Expectations stores each validation result with the values that broke a rule; an
    NHS-number-shaped value put in 'sex' was copied there. Quarantine has the rows; the stored
    results and the Data Docs keep counts and rule names only."""
    extract = write_extract(tmp_path / "extract", with_rows("patients", ["5", "9434765919", "1990-01-01", ""]))
    docs = tmp_path / "docs"
    report = ingest(extract, tmp_path / "phm.duckdb", docs_dir=docs)
    assert report.tables["patients"].rows_quarantined == 1
    written = [p for p in docs.rglob("*") if p.is_file()]
    assert any("validations" in p.parts for p in written)  # the results are there, scrubbed
    assert not [p for p in written if b"9434765919" in p.read_bytes()]
    # ... and its counts suppressed: the one row that broke a rule is a count of 1-7
    observed = [r["result"].get("observed_value") for p in written if "validations" in p.parts and p.suffix == ".json"
                for r in json.loads(p.read_text())["results"]]
    assert observed and None in observed and all(v is None or v == 0 or v % 5 == 0 for v in observed), observed
    assert (docs / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html").is_file()  # rendered


def test_every_file_a_phm_command_writes_is_owner_only(tmp_path):
    import stat

    from cli.main import main

    extract = write_extract(tmp_path / "extract")
    db = tmp_path / "out" / "phm.duckdb"
    assert main(["ingest", "--extract", str(extract), "--db", str(db), "--docs", str(tmp_path / "out")]) == 0
    written = [p for p in (tmp_path / "out").rglob("*")]
    assert db in written and db.with_suffix(".ingest.json") in written
    loose = [str(p) for p in written if stat.S_IMODE(p.stat().st_mode) & 0o077]
    assert loose == []
