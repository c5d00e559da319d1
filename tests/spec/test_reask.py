"""The ethnicity re-ask worklist (sql/lists/ethnicity_reask.sql, phm/lists.py ``reask_worklist``)
on a hand-made database: who is on it and why, in what order, pseudonymous like the lists."""

from __future__ import annotations

import datetime as dt

import duckdb
import polars as pl

from phm.lists import (
    REASK_READ_AS_WHITE,
    REASK_REASONS,
    ListSettings,
    reask_summary,
    reask_worklist,
)
from phm.pseudonymise import practice_key, pseudonym

KEY = b"a test key for the re-ask worklist, 0123456789"
INDEX = dt.date(2026, 3, 31)
NOT_STATED = "92891000000104"

PATIENTS = [  # patient, age, category, conflicting codes, latest 'not stated' code
    (1, 50, "99", False, None),                       # nothing recorded
    (2, 60, "A", True, None),                         # codes of two categories
    (3, 40, "S", False, None),                        # only 'any other ethnic group'
    (4, 70, "Z", False, dt.date(2020, 1, 1)),         # not stated, 6 years ago: may be asked again
    (5, 70, "Z", False, dt.date(2025, 6, 1)),         # not stated last year: not asked again yet
    (6, 45, "A", False, None),                        # recorded: not on the worklist
    (7, 12, "99", False, None),                       # a child: the lists are for adults
    (8, 55, "99", False, None),                       # nothing recorded, and on this run's list
]


def database() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    for schema in ("features", "marts", "ref", "lists"):
        con.execute(f"create schema {schema}")
    con.execute("create table features.parameters as select ?::date as index_date", [INDEX])
    con.execute("create table marts.mart_patient_features (patient_id bigint, practice_pseudo_id bigint, "
                "pcn_code varchar, age_years integer, ethnicity_category varchar, ethnicity_has_conflicting_codes boolean)")
    con.executemany("insert into marts.mart_patient_features values (?, 10, 'U00001', ?, ?, ?)",
                    [(p, age, category, conflicting) for p, age, category, conflicting, _ in PATIENTS])
    con.execute("create table main.clinical_events (patient_id bigint, date date, snomedct_code varchar)")
    con.executemany("insert into main.clinical_events values (?, ?, ?)",
                    [(p, when, NOT_STATED) for p, *_, when in PATIENTS if when])
    con.execute("create table ref.codelist_codes as select 'ethnicity' as concept, ? as code, 'Z' as category",
                [NOT_STATED])
    con.execute("create table main.practices as select 10 as practice_pseudo_id, 'Z10001' as ods_code, "
                "'Synthetic Surgery' as practice_name")
    # QRISK3 was computed for patient 8; neither score for patient 1 (as for someone under 25 or with
    # CVD and diabetes already recorded), so no score read them as White
    con.execute("create table marts.patient_scores as select patient_id, "
                "case when patient_id = 8 then 12.5 end::double as qrisk3_10y_pct, "
                "null::double as qdiabetes_10y_pct from marts.mart_patient_features")
    return con


def test_the_worklist_names_why_and_puts_patients_on_targeting_list_first():
    con = database()
    own = {p: pseudonym(practice_key(KEY, "10"), p) for p, *_ in PATIENTS}
    on_list = pl.DataFrame({"pseudonym": [own[8]]})
    worklist = reask_worklist(con, ListSettings(reask_not_stated_days=3 * 365), KEY, on_list)
    assert worklist["pseudonym"].to_list() == [own[8], own[1], own[2], own[3], own[4]]
    reasons = dict(zip(worklist["pseudonym"], worklist["reask_reason"], strict=True))
    assert reasons[own[1]] == REASK_REASONS["no_ethnicity_recorded"] == "no ethnicity recorded"  # never scored
    assert reasons[own[8]] == REASK_READ_AS_WHITE == "no ethnicity recorded: the risk scores read it as White"
    assert reasons[own[2]] == REASK_REASONS["conflicting_codes"]
    assert reasons[own[3]] == REASK_REASONS["any_other_category"]
    assert reasons[own[4]] == REASK_REASONS["not_stated_long_ago"]
    assert worklist["on_targeting_list"].to_list() == [True, False, False, False, False]
    assert set(worklist["practice_ods_code"]) == {"Z10001"} and "patient_id" not in worklist.columns
    # a shorter window asks patient 5 again too; a longer one neither 4 nor 5
    assert len(reask_worklist(con, ListSettings(reask_not_stated_days=90), KEY, on_list)) == 6
    assert len(reask_worklist(con, ListSettings(reask_not_stated_days=10 * 365), KEY, on_list)) == 4


def test_the_summary_counts_the_worklist_by_reason_suppressed():
    worklist = pl.DataFrame({"reask_reason": [REASK_REASONS["no_ethnicity_recorded"]] * 6 + [REASK_READ_AS_WHITE] * 6 +
                             [REASK_REASONS["conflicting_codes"]] * 3,
                             "on_targeting_list": [True] * 9 + [False] * 6})
    rows = {r["value"]: (r["patients"], r["registered_adults"]) for r in reask_summary(worklist).iter_rows(named=True)}
    assert rows[REASK_REASONS["no_ethnicity_recorded"]] == (10, 10)  # 9 and 12 (scored or not), rounded to 5
    assert rows[REASK_REASONS["conflicting_codes"]] == (0, None)  # 3: suppressed
