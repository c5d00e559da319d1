"""Spec tests for the run-time codelist coverage report (phm/codelist_coverage.py) on hand-made
tables: codes found and patients per concept, unknown codes by frequency, suppressed counts, and
the WARN for a concept that must appear and matches nobody."""

from __future__ import annotations

import datetime as dt
import json

import duckdb
import pytest

from phm.codelist_coverage import MIN_EXPECTED_PATIENTS, coverage_report, write_report
from phm.codelists import project_codelists

EXTRACT_DATE = dt.date(2026, 3, 31)
HYPERTENSION, ESSENTIAL_HYPERTENSION, SIMVASTATIN_40 = "38341003", "59621000", "320000009"
LOCAL_CODE, OTHER_LOCAL = "999000011000230102", "999000021000230108"  # not in any list


def database(adults: int, events=(), medications=()) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("create table main.patients (patient_id bigint, date_of_birth date, date_of_death date)")
    con.execute("insert into main.patients select range + 1, date '1960-01-01', null from range(?)", [adults])
    con.execute("insert into main.patients values (0, date '2015-01-01', null)")  # a child: not an adult
    con.execute("create table main.clinical_events (patient_id bigint, date date, snomedct_code varchar)")
    con.execute("create table main.medications (patient_id bigint, date date, dmd_code varchar)")
    for patient, code in events:
        con.execute("insert into main.clinical_events values (?, date '2025-01-01', ?)", [patient, code])
    for patient, code in medications:
        con.execute("insert into main.medications values (?, date '2025-01-01', ?)", [patient, code])
    return con


def by_concept(report):
    return {c.concept: c for c in report.concepts}


def test_codes_found_and_patients_per_concept_and_unknown_codes_by_frequency():
    events = ([(p, HYPERTENSION) for p in range(1, 11)] + [(11, ESSENTIAL_HYPERTENSION), (11, HYPERTENSION)]
              + [(p, LOCAL_CODE) for p in (1, 1, 2, 3)] + [(4, OTHER_LOCAL)])
    report = coverage_report(database(50, events, [(1, SIMVASTATIN_40)]), EXTRACT_DATE)
    concepts = by_concept(report)
    assert report.adults == 50
    assert (concepts["hypertension"].codes_found, concepts["hypertension"].patients) == (2, 11)
    assert (concepts["statins"].codes_found, concepts["statins"].patients) == (1, 1)
    assert concepts["chd"].patients == 0
    assert set(concepts) == set(project_codelists())
    assert [(u.code, u.records, u.patients) for u in report.unknown] == [(LOCAL_CODE, 4, 3), (OTHER_LOCAL, 1, 1)]
    assert report.unknown_distinct == {"clinical_events": 2, "medications": 0}
    body = report.to_dict()  # what leaves the pipeline: 1-7 suppressed, others rounded to 5
    hypertension = next(c for c in body["concepts"] if c["concept"] == "hypertension")
    assert hypertension["patients"] == 10 and body["adults"] == 50
    assert [(u["records"], u["patients"]) for u in body["unknown"]] == [(None, None), (None, None)]


def report_counts(report) -> tuple:
    return ([(c.concept, c.codes_found, c.patients) for c in report.concepts],
            [(u.table, u.code, u.records, u.patients) for u in report.unknown], report.unknown_distinct)


def test_patients_are_counted_the_same_with_bitmaps_and_with_count_distinct(monkeypatch):
    # ids 10**14 apart: bitmaps would span 1.1e15 bits per group, far past the limit, so that
    # extract is counted with count(distinct); ids 3 apart fit in bitmaps
    import phm.codelist_coverage as coverage

    def events_from(first: int, step: int = 3) -> list:
        ids = [first + step * k for k in range(12)]
        return ([(p, HYPERTENSION) for p in ids[:10]] + [(ids[10], ESSENTIAL_HYPERTENSION), (ids[10], HYPERTENSION)]
                + [(p, LOCAL_CODE) for p in (ids[0], ids[0], ids[1], ids[2])] + [(ids[11], OTHER_LOCAL)])

    def statements(step: int, limit: int) -> tuple:
        seen: list[str] = []
        con = database(50, events_from(1, step), [(1, SIMVASTATIN_40)])
        monkeypatch.setattr(coverage, "BITMAP_BITS_LIMIT", limit)
        original = duckdb.DuckDBPyConnection.execute

        class Recording:
            def __getattr__(self, name):
                return getattr(con, name)

            def execute(self, sql, parameters=None):
                seen.append(sql)
                return original(con, sql, parameters) if parameters is not None else original(con, sql)

        report = coverage_report(Recording(), EXTRACT_DATE)
        return report_counts(report), " ".join(seen)

    dense, dense_sql = statements(3, coverage.BITMAP_BITS_LIMIT)
    sparse, sparse_sql = statements(10 ** 14, coverage.BITMAP_BITS_LIMIT)
    forced, forced_sql = statements(3, 0)
    assert "bitstring_agg" in dense_sql and "count(distinct patient_id)" not in dense_sql
    assert "count(distinct patient_id) from (select e.patient_id, c.concept from main.clinical_events" in sparse_sql
    assert "count(distinct patient_id) from (select e.patient_id, e.snomedct_code" in sparse_sql  # the unknown codes
    assert "count(distinct patient_id)" in forced_sql and "bitstring_agg" not in forced_sql
    assert dense == forced
    hypertension = next(c for c in dense[0] if c[0] == "hypertension")
    assert hypertension[1:] == (2, 11) == next(c for c in sparse[0] if c[0] == "hypertension")[1:]
    assert [u[2:] for u in dense[1]] == [u[2:] for u in sparse[1]] == [(4, 3), (1, 1)]


def test_a_concept_that_must_appear_and_matches_nobody_is_a_warning_naming_it():
    prevalence = project_codelists()["hypertension"].expected_prevalence
    needed = int(MIN_EXPECTED_PATIENTS / prevalence)  # adults at which 20 are expected
    events = [(p, "271649006") for p in range(1, needed + 1)]  # systolic readings, no diagnosis
    report = coverage_report(database(needed, events), EXTRACT_DATE)
    named = " ".join(report.warnings)
    assert "no patient has a hypertension code" in named and "no patient has a statins code" in named
    assert "systolic_bp" not in named  # it matches everyone
    assert not coverage_report(database(needed - 1, events), EXTRACT_DATE).warnings_for("hypertension")


def test_the_report_page_and_json_carry_only_suppressed_counts(tmp_path):
    events = [(p, HYPERTENSION) for p in range(1, 4)] + [(1, LOCAL_CODE)]
    page = write_report(coverage_report(database(30, events), EXTRACT_DATE), tmp_path)
    body = json.loads((tmp_path / "codelist_coverage.json").read_text())
    assert next(c for c in body["concepts"] if c["concept"] == "hypertension")["patients"] is None
    text = page.read_text()
    assert LOCAL_CODE in text and "[suppressed]" in text and "Codelist coverage" in text


@pytest.mark.slow
def test_ingest_reports_coverage_and_the_synthetic_extract_warns_of_nothing(small_synthetic_extract, tmp_path):
    from phm.ingest import ingest

    report = ingest(small_synthetic_extract, tmp_path / "phm.duckdb")
    assert report.warnings == []
    assert report.codelist_coverage_report and (tmp_path / "codelist_coverage.html").exists()
    concepts = {c["concept"]: c for c in report.codelist_coverage["concepts"]}
    for concept in ("hypertension", "statins", "antihypertensives", "ethnicity", "systolic_bp", "diabetes"):
        assert concepts[concept]["patients"] and concepts[concept]["codes_found"] > 1, concept
    assert any(line.startswith("codelist coverage") for line in report.summary_lines())


def test_the_data_docs_index_links_to_the_page_once(tmp_path):
    from phm.codelist_coverage import link_from_data_docs

    index = tmp_path / "index.html"
    index.write_text("<html><body><div>GX</div></body></html>")
    page = write_report(coverage_report(database(10), EXTRACT_DATE), tmp_path)
    link_from_data_docs(index, page)
    link_from_data_docs(index, page)
    assert index.read_text().count('href="codelist_coverage.html"') == 1
