"""Spec tests for the PCN lists on small hand-made tables: reasons, exclusions, order, capacity,
pseudonyms, summaries, configuration and the atomic publish."""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path

import duckdb
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.config import load_config
from flows.publish import publish, write_run_folder
from phm.exceptions import ConfigError, DatabaseError, ExtractError
from phm.lists import (
    ListRun,
    ListSettings,
    build_lists,
    exclusion,
    listed_before,
    order_and_cap,
    pcn_summary,
    per_patient,
    period_bounds,
    prepare,
    prepare_history,
    reasons,
    record_invitations,
    urgent_beyond_capacity,
)
from phm.pseudonymise import KEY_VARIABLE, icb_key, practice_key, pseudonym, pseudonymise
from tests.hypothesis_settings import examples

KEY = b"k" * 32
INDEX_DATE = dt.date(2026, 3, 31)
GOOD_KEY = "0f3a9c1e7b5d2f8a4c6e0b9d1f3a5c7e"  # 32 characters, 16 distinct


# --- reasons (sql/lists/list_reasons.sql) --------------------------------------------------------

def hand_made_database(patients: list[dict]) -> duckdb.DuckDBPyConnection:
    """The four marts the reasons read, with only the columns they use."""
    defaults = {"age_years": 60, "type1_diabetes": False, "type2_diabetes": False, "on_statins": False,
                "statin_exclusion": None, "nhs_health_check_5y": False, "ndh_coded": False,
                "gestational_diabetes": False, "hba1c_mmol_mol": None, "hba1c_date": INDEX_DATE,
                "fasting_glucose_mmol_l": None, "fasting_glucose_date": INDEX_DATE,
                "qrisk3_10y_pct": None, "qdiabetes_10y_pct": None, "finding": None, "finding_reason": None,
                "monitoring_12_months": False, "cvd_model_risk": None, "t2d_model_risk": None,
                "hypertension_model_risk": None}
    rows = pl.DataFrame([{**defaults, **p} for p in patients], schema_overrides={
        "statin_exclusion": pl.String, "hba1c_mmol_mol": pl.Float64, "fasting_glucose_mmol_l": pl.Float64,
        "qrisk3_10y_pct": pl.Float64, "qdiabetes_10y_pct": pl.Float64,
        "finding": pl.String, "finding_reason": pl.String, "cvd_model_risk": pl.Float64,
        "t2d_model_risk": pl.Float64, "hypertension_model_risk": pl.Float64})
    con = duckdb.connect()
    con.execute("create schema marts")
    con.execute("create schema features")
    con.execute("create table features.parameters as select ?::date as index_date", [INDEX_DATE])
    con.register("rows", rows.to_arrow())
    con.execute("create table marts.mart_patient_features as select patient_id, age_years, type1_diabetes, "
                "type2_diabetes, on_statins, statin_exclusion, nhs_health_check_5y, ndh_coded, gestational_diabetes, "
                "hba1c_mmol_mol, hba1c_date, fasting_glucose_mmol_l, fasting_glucose_date from rows")
    con.execute("create table marts.patient_scores as select patient_id, qrisk3_10y_pct, qdiabetes_10y_pct from rows")
    con.execute("create table marts.mart_hypertension_case_finding as select patient_id, finding, finding_reason, "
                "monitoring_12_months from rows")
    con.execute("create table marts.risk_scores as select patient_id, cvd_model_risk, t2d_model_risk, "
                "hypertension_model_risk, 5 as cvd_model_horizon_years, 5 as t2d_model_horizon_years, "
                "5 as hypertension_model_horizon_years, "
                + ", ".join(f"'phm-QXX-{o}' as {o}_model_name, '1' as {o}_model_version"
                            for o in ("cvd", "t2d", "hypertension")) + " from rows")
    return con


def codes(frame: pl.DataFrame, patient: int) -> set[tuple[str, int]]:
    return {(c, t) for c, t in frame.filter(pl.col("patient_id") == patient).select("reason_code", "tier").rows()}


# a patient for each blood pressure finding (patients 1-5), as the case-finding mart gives them
BP_FINDINGS = [
    {"patient_id": 1, "finding": "possible_undiagnosed_urgent", "finding_reason": "urgent text"},
    {"patient_id": 2, "finding": "possible_undiagnosed", "finding_reason": "two readings"},
    {"patient_id": 3, "finding": "above_target", "finding_reason": "above target"},
    {"patient_id": 4, "finding": "no_recent_reading", "finding_reason": "no reading"},
    {"patient_id": 5, "finding": "no_bp_in_5_years", "finding_reason": "none in 5 years"},
]


def test_each_reason_and_its_tier():
    con = hand_made_database([
        *BP_FINDINGS,
        {"patient_id": 6, "hba1c_mmol_mol": 48.0},
        {"patient_id": 7, "hba1c_mmol_mol": 47.9},
        {"patient_id": 8, "hba1c_mmol_mol": 41.9},
        {"patient_id": 9, "hba1c_mmol_mol": 60.0, "type2_diabetes": True},
        {"patient_id": 10, "qrisk3_10y_pct": 20.0},
        {"patient_id": 11, "qrisk3_10y_pct": 10.0},
        {"patient_id": 12, "qrisk3_10y_pct": 9.99},
        {"patient_id": 13, "qdiabetes_10y_pct": 10.0},
    ])
    found = reasons(con, ListSettings())
    assert codes(found, 1) == {("bp_urgent", 1)}
    assert codes(found, 2) == {("bp_possible_undiagnosed", 2)}
    assert codes(found, 3) == {("bp_above_target", 2)}
    assert codes(found, 4) == {("bp_no_recent_reading", 3)}
    assert codes(found, 5) == {("bp_none_in_5_years", 3)}
    assert codes(found, 6) == {("hba1c_diabetic_range", 1)}
    assert codes(found, 7) == {("ndh_ndpp", 2)}
    assert codes(found, 8) == codes(found, 9) == codes(found, 12) == set()
    assert codes(found, 10) == {("qrisk3_high", 2)}
    assert codes(found, 11) == {("qrisk3_raised", 3)}
    assert codes(found, 13) == {("qdiabetes_high", 3)}
    text = dict(found.select("patient_id", "reason").rows())
    assert text[2] == "two readings"  # case-finding's own plain-English reason
    assert text[6] == "latest HbA1c 48 mmol/mol (48 or over) and no diabetes diagnosis"


def test_thresholds_are_settings_and_a_statin_makes_the_lipid_reason_moot():
    con = hand_made_database([{"patient_id": 1, "qrisk3_10y_pct": 15.0},
                              {"patient_id": 2, "qrisk3_10y_pct": 25.0, "on_statins": True}])
    assert codes(reasons(con, ListSettings(qrisk3_threshold=16.0)), 1) == set()
    found = reasons(con, ListSettings())
    moot = found.filter(pl.col("patient_id") == 2)
    assert moot["excluded_by"].to_list() == ["already on a statin"]


def test_diabetes_prevention_glucose_and_gestational_diabetes():
    twelve_months_ago = dt.date(2025, 3, 31)
    con = hand_made_database([
        {"patient_id": 1, "hba1c_mmol_mol": 44.0, "hba1c_date": dt.date(2025, 4, 1)},      # in 12 months
        {"patient_id": 2, "hba1c_mmol_mol": 44.0, "hba1c_date": twelve_months_ago},        # 12 months ago: out
        {"patient_id": 3, "fasting_glucose_mmol_l": 5.5},
        {"patient_id": 4, "fasting_glucose_mmol_l": 6.9},
        {"patient_id": 5, "fasting_glucose_mmol_l": 5.4},
        {"patient_id": 6, "fasting_glucose_mmol_l": 7.0},
        {"patient_id": 7, "ndh_coded": True},
        {"patient_id": 8, "ndh_coded": True, "gestational_diabetes": True},
        {"patient_id": 9, "ndh_coded": True, "type2_diabetes": True},
        {"patient_id": 10, "fasting_glucose_mmol_l": 8.0, "type2_diabetes": True},
    ])
    found = reasons(con, ListSettings())
    assert codes(found, 1) == codes(found, 3) == codes(found, 4) == codes(found, 7) == {("ndh_ndpp", 2)}
    assert codes(found, 2) == codes(found, 5) == codes(found, 9) == codes(found, 10) == set()
    assert codes(found, 6) == {("glucose_diabetic_range", 1)}
    assert codes(found, 8) == {("ndh_ndpp", 1)}  # a history of gestational diabetes raises the priority
    text = dict(found.select("patient_id", "reason").rows())
    assert text[8] == "non-diabetic hyperglycaemia coded, history of gestational diabetes: non-diabetic hyperglycaemia"
    assert text[3] == "fasting glucose 5.5 mmol/L in the last 12 months (5.5-6.9): non-diabetic hyperglycaemia"


@pytest.mark.parametrize("patient,text", [
    ({"hba1c_mmol_mol": 47.6}, "HbA1c 47 mmol/mol in the last 12 months (42-47)"),
    ({"hba1c_mmol_mol": 42.0}, "HbA1c 42 mmol/mol in the last 12 months (42-47)"),
    ({"fasting_glucose_mmol_l": 6.96}, "fasting glucose 6.9 mmol/L in the last 12 months (5.5-6.9)"),
    ({"fasting_glucose_mmol_l": 6.3}, "fasting glucose 6.3 mmol/L in the last 12 months (5.5-6.9)"),
    ({"fasting_glucose_mmol_l": 6.0}, "fasting glucose 6.0 mmol/L in the last 12 months (5.5-6.9)"),
])
def test_a_pre_diabetes_reason_never_shows_a_value_in_the_diabetic_range(patient, text):
    """An HbA1c of 47.6 was written '48 mmol/mol ... (42-47)' and a glucose of 6.96 '7.0 mmol/L ...
    (5.5-6.9)': rounded into the diabetic range on a reason that says it is below it."""
    found = reasons(hand_made_database([{"patient_id": 1, **patient}]), ListSettings())
    assert found.select("reason_code", "reason").rows() == [("ndh_ndpp", f"{text}: non-diabetic hyperglycaemia")]


@pytest.mark.parametrize("patient,reason_code,set_aside", [
    ({"qrisk3_10y_pct": 25.0, "statin_exclusion": "declined"}, "qrisk3_high", "statin declined in the last 5 years"),
    ({"qrisk3_10y_pct": 12.0, "statin_exclusion": "not_indicated"}, "qrisk3_raised", "statin not indicated"),
    ({"qrisk3_10y_pct": 12.0, "statin_exclusion": "contraindicated"}, "qrisk3_raised", "statin contraindicated"),
    ({"qrisk3_10y_pct": 12.0, "statin_exclusion": "not_tolerated"}, "qrisk3_raised", "statin not tolerated"),
    ({"qrisk3_10y_pct": 12.0, "statin_exclusion": "allergic"}, "qrisk3_raised", "statin allergy"),
    ({"finding": "possible_undiagnosed", "finding_reason": "two", "monitoring_12_months": True},
     "bp_possible_undiagnosed", "ABPM or home blood pressure already done"),
    ({"finding": "no_bp_in_5_years", "finding_reason": "none", "nhs_health_check_5y": True},
     "bp_none_in_5_years", "NHS Health Check in the last 5 years"),
    ({"qdiabetes_10y_pct": 15.0, "nhs_health_check_5y": True}, "qdiabetes_high", "NHS Health Check in the last 5 years"),
    ({"finding": "confirmed_not_coded", "finding_reason": "abpm"}, "bp_confirmed_not_coded", None),
])
def test_what_practices_record_sets_a_reason_aside(patient, reason_code, set_aside):
    found = reasons(hand_made_database([{"patient_id": 1, **patient}]), ListSettings())
    assert found.select("reason_code", "excluded_by").rows() == [(reason_code, set_aside)]


def test_set_aside_reasons_are_shown_in_the_list_and_counted_in_the_summary():
    rows = reason_rows(
        (1, "qrisk3_high", 2, "cvd", "QRISK3 25%", "lipid review", "statin declined in the last 5 years"),
        (1, "bp_none_in_5_years", 3, "hypertension", "no BP", "blood pressure check", None),
        (2, "qrisk3_high", 2, "cvd", "QRISK3 25%", "lipid review", "statin allergy"))
    out = {r["patient_id"]: r for r in per_patient(rows).iter_rows(named=True)}
    assert out[1]["set_aside"] == ["statin declined in the last 5 years"] and out[1]["reasons"] == ["no BP"]
    assert out[2]["treatment_exclusion"] == "statin allergy"
    candidates = per_patient(rows).with_columns(
        pl.when(pl.col("treatment_exclusion").is_not_null()).then(pl.col("treatment_exclusion")).alias("exclusion"))
    summary = pcn_summary(pl.DataFrame({"ethnicity_group": ["White"] * 10, "imd_quintile": [1] * 10}),
                          pl.DataFrame({"tier": [3], "ethnicity_group": ["White"], "imd_quintile": [1]}), candidates)
    sections = {(r["section"], r["value"]) for r in summary.iter_rows(named=True)}
    assert ("excluded", "statin allergy") in sections
    assert {("reason set aside", "statin allergy"), ("reason set aside", "statin declined in the last 5 years")} <= sections


def test_a_models_top_share_is_a_reason_with_its_horizon():
    con = hand_made_database([{"patient_id": i, "cvd_model_risk": i / 100} for i in range(1, 21)])
    found = reasons(con, ListSettings(model_top_share=0.1)).filter(pl.col("reason_code") == "model_high_risk")
    assert sorted(found["patient_id"].to_list()) == [19, 20]
    assert dict(found.select("patient_id", "reason").rows())[19] == \
        "predicted risk of a CVD event in the next 5 years: 15-20% (model, top 10%)"


def test_a_statin_sets_the_cvd_models_reason_aside_as_it_does_the_lipid_reasons():
    """A statin user (or one who declined a statin) whose QRISK3 reason was set aside reached the
    list through the CVD model's top 10% ("cardiovascular risk review"): the same question again.
    The T2D and hypertension models' reasons are not about statins and stay."""
    con = hand_made_database([
        {"patient_id": i, "cvd_model_risk": i / 100, "hypertension_model_risk": i / 100,
         "qrisk3_10y_pct": 25.0 if i >= 19 else None, "on_statins": i == 20,
         "statin_exclusion": "declined" if i == 19 else None} for i in range(1, 21)])
    found = reasons(con, ListSettings(model_top_share=0.1))
    model = {(r["patient_id"], r["outcome"]): r["excluded_by"] for r in
             found.filter(pl.col("reason_code") == "model_high_risk").iter_rows(named=True)}
    assert model == {(20, "cvd"): "already on a statin", (19, "cvd"): "statin declined in the last 5 years",
                     (20, "hypertension"): None, (19, "hypertension"): None}
    assert dict(found.filter(pl.col("reason_code") == "qrisk3_high").select("patient_id", "excluded_by").rows()) == {
        19: "statin declined in the last 5 years", 20: "already on a statin"}
    listed = per_patient(found)
    assert listed.filter(pl.col("patient_id") == 20)["suggested_actions"].to_list() == [["blood pressure check"]]


def test_risks_in_reasons_are_bands_cut_at_every_threshold_never_the_exact_value():
    """Issue 16 item 14: an exact risk is nearly unique to a patient and linked lists made under
    two keys; a band is shared by many."""
    con = hand_made_database([
        {"patient_id": 1, "qrisk3_10y_pct": 10.0}, {"patient_id": 2, "qrisk3_10y_pct": 14.99},
        {"patient_id": 3, "qrisk3_10y_pct": 23.4}, {"patient_id": 4, "qrisk3_10y_pct": 61.2},
        {"patient_id": 5, "qdiabetes_10y_pct": 12.7}, {"patient_id": 6, "qrisk3_10y_pct": 12.7}])
    text = dict(reasons(con, ListSettings()).select("patient_id", "reason").rows())
    assert text[1] == "QRISK3 10-year risk 10-15% (10% or over)"
    assert text[2] == "QRISK3 10-year risk 10-15% (10% or over)"
    assert text[3] == "QRISK3 10-year risk 20-30% (20% or over)"
    assert text[4] == "QRISK3 10-year risk 50% or over (20% or over)"
    assert text[5] == "QDiabetes 10-year risk 10-15% (10% or over)"
    # a threshold of its own cuts the band, so a band never straddles what decides a reason
    text = dict(reasons(con, ListSettings(qrisk3_threshold=12.5)).select("patient_id", "reason").rows())
    assert text[6] == "QRISK3 10-year risk 12.5-15% (12.5% or over)"
    assert ListSettings(qrisk3_threshold=12.5).band_edges() == [0, 5, 10, 12.5, 15, 20, 30, 50]



@pytest.mark.parametrize(("pct", "band"), [
    (0.0, "0-5%"), (4.999, "0-5%"), (5.0, "5-10%"), (12.4999, "10-12.5%"), (12.5, "12.5-15%"),
    (49.99, "30-50%"), (50.0, "50% or over"), (100.0, "50% or over"), (float("nan"), "50% or over"),
    (-0.1, None), (None, None)])
def test_a_risk_is_written_as_the_band_from_the_last_edge_at_or_below_it(pct, band):
    """phm_risk_band reads each band's label from lists.parameters (made once per run): the same
    text as writing the two edges out for each risk, an edge itself in the band above it."""
    con = duckdb.connect()
    prepare(con, ListSettings(qrisk3_threshold=12.5))
    assert con.execute("select risk_band_labels from lists.parameters").fetchone()[0] == [
        "0-5%", "5-10%", "10-12.5%", "12.5-15%", "15-20%", "20-30%", "30-50%", "50% or over"]
    written = con.execute("select phm_risk_band(?::double, risk_band_edges, risk_band_labels) from lists.parameters",
                          [pct]).fetchone()[0]
    assert written == band


# --- per patient, order, capacity ---------------------------------------------------------------

def reason_rows(*rows) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=["patient_id", "reason_code", "tier", "outcome", "reason", "action",
                                      "excluded_by"], orient="row")


def test_per_patient_takes_the_best_tier_and_keeps_reasons_in_tier_order():
    rows = reason_rows(
        (1, "qrisk3_raised", 3, "cvd", "QRISK3 12%", "lipid review", None),
        (1, "bp_urgent", 1, "hypertension", "urgent BP", "urgent review", None),
        (2, "qrisk3_high", 2, "cvd", "QRISK3 25%", "lipid review", "already on a statin"),
        (3, "qrisk3_high", 2, "cvd", "QRISK3 25%", "lipid review", "already on a statin"),
        (3, "bp_none_in_5_years", 3, "hypertension", "no BP", "blood pressure check", None))
    out = {r["patient_id"]: r for r in per_patient(rows).iter_rows(named=True)}
    assert out[1]["tier"] == 1 and out[1]["reasons"] == ["urgent BP", "QRISK3 12%"]
    assert out[1]["suggested_actions"] == ["urgent review", "lipid review"]
    assert out[2]["treatment_exclusion"] == "already on a statin" and out[2]["tier"] is None
    assert out[3]["tier"] == 3 and out[3]["reasons"] == ["no BP"] and out[3]["treatment_exclusion"] is None


def candidates(n_per_practice=4) -> pl.DataFrame:
    rows = []
    for practice, pcn in (("P1", "N1"), ("P2", "N1"), ("P3", "N2")):
        for i in range(n_per_practice):
            rows.append({"patient_id": len(rows) + 1, "practice_pseudo_id": practice, "pcn_code": pcn,
                         "tier": 1 + i % 3, "core20": i == 0, "ethnicity_group": "Black" if i == 2 else "White",
                         "cvd_model_risk": 0.1 * (i + 1), "t2d_model_risk": None, "hypertension_model_risk": None})
    frame = pl.DataFrame(rows)
    return frame.with_columns(pseudonymise(frame, KEY))


def test_order_is_tier_then_risk_and_capacity_is_per_practice():
    ranked = order_and_cap(candidates(), ListSettings(capacity_per_practice=2))
    p1 = ranked.filter(pl.col("practice_pseudo_id") == "P1").sort("priority_rank")
    assert p1["priority_rank"].to_list() == [1, 2, 3, 4]
    assert p1["tier"].to_list() == [1, 1, 2, 3]
    assert p1["cvd_model_risk"].to_list()[:2] == [0.4, 0.1]  # same tier: higher relative risk first
    assert ranked.group_by("practice_pseudo_id").agg(pl.col("on_list").sum())["on_list"].to_list() == [2, 2, 2]


def test_within_a_band_the_order_is_keyed_so_another_key_gives_another_order():
    """Tier and band of relative risk order the list under any key; inside a band the order
    follows the pseudonym (an HMAC under the practice's key), so the rank links nothing."""
    rows = [{"patient_id": i, "practice_pseudo_id": "P1", "pcn_code": "N1", "tier": 1 + (i >= 30),
             "core20": False, "ethnicity_group": "White", "cvd_model_risk": 0.001 * i + 0.5 * (i in (10, 20)),
             "t2d_model_risk": None, "hypertension_model_risk": None} for i in range(1, 61)]
    frame = pl.DataFrame(rows)
    first, second = (order_and_cap(frame.with_columns(pseudonymise(frame, key)), ListSettings(capacity_per_practice=60))
                     .sort("priority_rank") for key in (KEY, b"another key, as long as it must be"))
    for ranked in (first, second):
        assert ranked["tier"].to_list() == sorted(ranked["tier"].to_list())
        assert set(ranked.filter(pl.col("tier") == 1)["patient_id"].to_list()[:2]) == {10, 20}  # top band first
    rank = {key: dict(r.select("patient_id", "priority_rank").rows()) for key, r in (("a", first), ("b", second))}
    # every risk differs, so ranking by exact risk gave every patient the same rank under both keys
    assert sum(rank["a"][i] != rank["b"][i] for i in range(1, 61)) > 40  # moved within their bands


def test_capacity_per_pcn_and_core20plus5_first_within_a_tier():
    ranked = order_and_cap(candidates(), ListSettings(capacity_per_practice=None, capacity_per_pcn=3))
    assert dict(ranked.group_by("pcn_code").agg(pl.col("on_list").sum()).iter_rows()) == {"N1": 3, "N2": 3}
    plain = order_and_cap(candidates(), ListSettings())
    core = order_and_cap(candidates(), ListSettings(prioritisation="core20plus5", plus_groups=("Black",)))

    def first_of_tier_1(frame):
        return frame.filter((pl.col("practice_pseudo_id") == "P1") & (pl.col("tier") == 1)).sort("priority_rank")
    assert first_of_tier_1(plain)["core20"].to_list() == [False, True]  # by risk: 0.4 before 0.1
    assert first_of_tier_1(core)["core20"].to_list() == [True, False]  # Core20 first within the tier
    rank = core.filter(pl.col("practice_pseudo_id") == "P1").sort("priority_rank")
    assert rank["tier"].to_list() == sorted(rank["tier"].to_list())  # prioritisation never crosses tiers


# --- pseudonyms -------------------------------------------------------------------------------

def test_pseudonyms_only_the_practice_can_recompute_and_other_keys_cannot_link():
    a = pseudonym(practice_key(KEY, "P1"), 12345)
    assert a == pseudonym(practice_key(KEY, "P1"), 12345) and len(a) == 20 and "12345" not in a
    assert a != pseudonym(practice_key(KEY, "P2"), 12345)  # another practice's key gives another id
    assert a != pseudonym(practice_key(b"z" * 32, "P1"), 12345)  # another ICB key: unlinkable
    frame = pl.DataFrame({"patient_id": [1, 2, 1], "practice_pseudo_id": ["P1", "P1", "P2"]})
    ids = pseudonymise(frame, KEY).to_list()
    assert len(set(ids)) == 3


def test_no_key_no_list():
    with pytest.raises(ConfigError, match=f"{KEY_VARIABLE} is not set"):
        icb_key({})
    with pytest.raises(ConfigError, match="too short"):
        icb_key({KEY_VARIABLE: "short"})
    assert icb_key({KEY_VARIABLE: GOOD_KEY}) == GOOD_KEY.encode()


@pytest.mark.parametrize("value,why", [
    (GOOD_KEY + "\n", "white space"), (" " + GOOD_KEY, "white space"), (" " * 32, "white space"),
    ("k" * 40, "distinct characters"), ("ab" * 20, "distinct characters"),
    ("0123456789abcdef\udcff" * 2, "not UTF-8"),  # how Python shows undecodable environment bytes
])
def test_a_weak_or_mangled_key_is_refused_naming_the_variable_not_the_key(value, why):
    with pytest.raises(ConfigError, match=why) as caught:
        icb_key({KEY_VARIABLE: value})
    assert KEY_VARIABLE in str(caught.value)
    assert not value.strip() or value.strip() not in str(caught.value)


# --- summaries, configuration, publishing ----------------------------------------------------------

def test_pcn_summary_is_suppressed():
    population = pl.DataFrame({"ethnicity_group": ["White"] * 40 + ["Black"] * 3, "imd_quintile": [1] * 43})
    on_list = pl.DataFrame({"tier": [1] * 12 + [2] * 2, "ethnicity_group": ["White"] * 12 + ["Black"] * 2,
                            "imd_quintile": [1] * 14})
    cands = pl.DataFrame({"exclusion": ["palliative care"] * 3 + [None] * 14})
    summary = {(r["section"], r["value"]): r for r in pcn_summary(population, on_list, cands).iter_rows(named=True)}
    assert summary[("total", "all")]["patients"] == 15 and summary[("total", "all")]["registered_adults"] == 45
    assert summary[("tier", "2")]["patients"] is None
    assert summary[("ethnic group", "Black")]["registered_adults"] is None
    assert summary[("excluded", "palliative care")]["patients"] is None


def test_lists_configuration_names_the_key(tmp_path):
    path = tmp_path / "phm.toml"
    path.write_text('[lists]\ncapacity_per_pcn = 500\nprioritisation = "core20plus5"\nplus_groups = ["Black"]\n')
    settings = load_config(path).lists
    assert settings.capacity_per_pcn == 500 and settings.capacity_per_practice is None
    assert settings.capacity_period == "month"  # the default: a weekly schedule shares a month's capacity
    path.write_text('[lists]\ncapacity_period = "week"\n')
    assert load_config(path).lists.capacity_period == "week"
    for text, message in {'[lists]\ncapacity_per_practice = "lots"\n': "lists.capacity_per_practice: must be an integer",
                          '[lists]\nprioritisation = "alphabetical"\n': "lists.prioritisation: one of",
                          '[lists]\nplus_groups = ["Martians"]\n': "lists.plus_groups: 'Martians'",
                          '[lists]\ncapacity_per_practice = 5\ncapacity_per_pcn = 5\n': "exactly one of",
                          '[lists]\nrisk_band_edges = [10, 5]\n': "lists.risk_band_edges: percentages",
                          '[lists]\nrisk_band_edges = "5"\n': "lists.risk_band_edges: a list",
                          '[lists]\ncapacity_period = "fortnight"\n':
                              "lists.capacity_period: one of month, week, not 'fortnight'$",
                          '[lists]\ncapacity_period = "run"\n': "not 'run' .*a weekly schedule invite a full capacity",
                          '[lists]\ncapacity_period = 7\n': "lists.capacity_period: must be text",
                          '[run]\nhorizon_years = 50\n': "run.horizon_years"}.items():
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_config(path)


def tiny_run(label: str) -> ListRun:
    lists = pl.DataFrame({"pcn_code": ["U00001", "U00002"], "pseudonym": [label + "a", label + "b"],
                          "practice_pseudo_id": [1, 2]})
    counts = pl.DataFrame({"pcn_code": ["U00001", "U00002"], "candidates": [1, 1]})
    summary = {p: pl.DataFrame({"section": ["total"], "patients": [1]}) for p in ("U00001", "U00002")}
    return ListRun(lists, counts, summary)


def test_publish_swaps_the_lists_in_one_step_and_a_failed_run_leaves_the_old_ones(tmp_path, monkeypatch):
    first = publish(write_run_folder(tiny_run("old"), tmp_path, {}), tmp_path)
    assert (first / "U00001.csv").read_text().splitlines()[1] == "olda,1"
    assert stat.S_IMODE(os.stat(first / "U00001.csv").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(first.resolve()).st_mode) == 0o700
    assert (first / "U00002.xlsx").is_file() and (first / "U00001_summary.csv").is_file()

    import flows.publish as publishing

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(publishing, "write_workbook", broken)
    with pytest.raises(OSError):
        write_run_folder(tiny_run("new"), tmp_path, {})
    assert (tmp_path / "lists" / "U00001.csv").read_text().splitlines()[1] == "olda,1"  # untouched
    monkeypatch.undo()

    second = publish(write_run_folder(tiny_run("new"), tmp_path, {}), tmp_path)
    assert (second / "U00001.csv").read_text().splitlines()[1] == "newa,1"
    third = publish(write_run_folder(tiny_run("3rd"), tmp_path, {}), tmp_path)
    kept = sorted(p.name for p in tmp_path.glob("lists-*"))
    assert len(kept) == 2 and third.resolve().name in kept  # the current and the one before


def test_file_names_carry_the_extract_date_and_the_manifest_names_each_pcns_files(tmp_path):
    from flows.publish import published_files

    folder = publish(write_run_folder(tiny_run("x"), tmp_path, {"extract_date": "2026-03-31"}), tmp_path)
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith("U00001")) == [
        "U00001_2026-03-31.csv", "U00001_2026-03-31.parquet", "U00001_2026-03-31.xlsx", "U00001_2026-03-31_summary.csv"]
    assert published_files(folder) == {"U00001": folder / "U00001_2026-03-31.csv", "U00002": folder / "U00002_2026-03-31.csv"}
    assert published_files(folder, "xlsx")["U00002"].is_file()
    with pytest.raises(ExtractError, match="YYYY-MM-DD"):  # a date from the data is checked before it names a file
        write_run_folder(tiny_run("x"), tmp_path / "other", {"extract_date": "../../2026"})


@pytest.mark.parametrize("pcn", ["../../pwned_pcn", "/tmp/pwned_pcn", "U0/../../x", "", "u00001"])
def test_a_pcn_code_that_is_not_ods_style_never_names_a_file(tmp_path, pcn):
    """Defence in depth behind ingest's check: publishing refuses before it writes anything."""
    run = tiny_run("x")
    run = ListRun(run.lists.with_columns(pl.lit(pcn).alias("pcn_code")).head(1),
                  pl.DataFrame({"pcn_code": ["U00001", pcn]}),
                  {"U00001": run.summary["U00001"], pcn: run.summary["U00002"]})
    out = tmp_path / "deep" / "out"
    with pytest.raises(ExtractError, match="pcn_code") as raised:
        write_run_folder(run, out, {})
    assert not pcn or pcn not in str(raised.value)  # the value from the extract is not echoed
    assert not out.exists()
    assert not any(tmp_path.iterdir())  # not even the output folder
    assert not any(Path("/tmp").glob("pwned_pcn*"))


def test_phm_run_without_the_key_stops_before_any_work(tmp_path, monkeypatch, capsys):
    from cli.main import main

    monkeypatch.delenv(KEY_VARIABLE, raising=False)
    (tmp_path / "extract").mkdir()
    assert main(["run", "--extract", str(tmp_path / "extract"), "--out", str(tmp_path / "out")]) == 2
    assert f"{KEY_VARIABLE} is not set" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_run_configuration_takes_dates_and_paths(tmp_path):
    path = tmp_path / "phm.toml"
    path.write_text('[run]\nicb = "QXX"\nindex_date = 2026-01-31\nextract = "/data/x"\nout = "/data/y"\n')
    run = load_config(path).run
    assert run.index_date.isoformat() == "2026-01-31" and str(run.extract) == "/data/x" and run.icb == "QXX"
    path.write_text('[run]\nindex_date = "yesterday"\n')
    with pytest.raises(ConfigError, match="run.index_date: must be a date"):
        load_config(path)


def test_an_icbs_own_key_wins_over_the_shared_one():
    shared, own = GOOD_KEY + "-shared", GOOD_KEY + "-own"
    assert icb_key({KEY_VARIABLE: shared, f"{KEY_VARIABLE}_QXX": own}, icb="QXX") == own.encode()
    assert icb_key({KEY_VARIABLE: shared, f"{KEY_VARIABLE}_QXX": own}, icb="QYY") == shared.encode()
    with pytest.raises(ConfigError, match=f"{KEY_VARIABLE}_QYY or {KEY_VARIABLE} is not set"):
        icb_key({f"{KEY_VARIABLE}_QXX": own}, icb="QYY")


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_pcns_list_file_holds_only_its_own_practices_patients(tmp_path_factory, data):
    """Random practice-to-PCN maps and patients: each PCN's published file names only its practices."""
    practices = data.draw(st.integers(1, 12))
    pcns = data.draw(st.integers(1, practices))
    pcn_of = {f"P{p}": f"U{data.draw(st.integers(0, pcns - 1)):05d}" for p in range(practices)}
    rows = []
    for practice, pcn in pcn_of.items():
        for _ in range(data.draw(st.integers(0, 6))):
            rows.append({"patient_id": len(rows) + 1, "practice_pseudo_id": practice, "pcn_code": pcn,
                         "tier": data.draw(st.integers(1, 3)), "core20": data.draw(st.booleans()),
                         "ethnicity_group": "White", "cvd_model_risk": data.draw(st.floats(0, 1)),
                         "t2d_model_risk": None, "hypertension_model_risk": None})
    if not rows:
        return
    frame = pl.DataFrame(rows)
    ranked = order_and_cap(frame.with_columns(pseudonymise(frame, KEY)),
                           ListSettings(capacity_per_practice=data.draw(st.integers(1, 5))))
    on_list = ranked.filter(pl.col("on_list"))
    listed_pcns = sorted(on_list["pcn_code"].unique().to_list())
    run = ListRun(on_list.select("pcn_code", "pseudonym", "practice_pseudo_id", "priority_rank"),
                  pl.DataFrame({"pcn_code": listed_pcns}),
                  {p: pl.DataFrame({"section": ["total"], "patients": [None]}) for p in listed_pcns})
    folder = write_run_folder(run, tmp_path_factory.mktemp("pcn"), {})
    seen = 0
    for pcn in listed_pcns:
        published = pl.read_csv(folder / f"{pcn}.csv", schema_overrides={"practice_pseudo_id": pl.String})
        assert {pcn_of[p] for p in published["practice_pseudo_id"].to_list()} == {pcn}
        seen += published.height
    assert seen == on_list.height


def test_phm_run_into_an_unusable_folder_names_it_before_any_work(tmp_path, monkeypatch, capsys):
    from cli.main import main

    monkeypatch.setenv(KEY_VARIABLE, GOOD_KEY)
    (tmp_path / "extract").mkdir()
    (tmp_path / "a-file").write_text("")
    assert main(["run", "--extract", str(tmp_path / "extract"), "--out", str(tmp_path / "a-file" / "out")]) == 2
    err = capsys.readouterr().err
    assert f"--out {tmp_path / 'a-file' / 'out'}: {tmp_path / 'a-file'} is not a folder" in err
    assert "Traceback" not in err and not (tmp_path / "a-file" / "out").exists()


# --- the safety net: urgent patients (phm/lists.py, URGENT_REASONS) ------------------------------

def test_a_patient_with_an_urgent_reason_is_marked_urgent():
    rows = reason_rows(
        (1, "bp_urgent", 1, "hypertension", "BP 184/122", "urgent blood pressure review", None),
        (2, "hba1c_diabetic_range", 1, "t2d", "HbA1c 51", "repeat HbA1c", None),
        (3, "ndh_ndpp", 1, "t2d", "NDH and gestational diabetes", "NHS DPP referral", None))
    urgent = dict(per_patient(rows).select("patient_id", "urgent").rows())
    assert urgent == {1: True, 2: True, 3: False}  # tier 1 is not urgent by itself


def test_urgent_patients_head_the_list_even_beyond_capacity_and_the_rest_fill_what_is_left():
    frame = candidates(n_per_practice=6).with_columns(  # in P1, patients 4, 5 and 6 (tiers 1, 2, 3) are urgent
        pl.col("patient_id").is_in([4, 5, 6]).alias("urgent"))
    ranked = order_and_cap(frame, ListSettings(capacity_per_practice=2))
    p1 = ranked.filter(pl.col("practice_pseudo_id") == "P1").sort("priority_rank")
    assert p1["patient_id"].to_list()[:3] == [4, 5, 6]  # urgent first, in tier order
    assert p1["on_list"].to_list() == [True, True, True, False, False, False]  # 3 urgent > capacity 2: only they
    roomier = order_and_cap(frame, ListSettings(capacity_per_practice=4)).filter(pl.col("practice_pseudo_id") == "P1")
    assert roomier.sort("priority_rank")["on_list"].to_list() == [True, True, True, True, False, False]
    others = ranked.filter(pl.col("practice_pseudo_id") != "P1")
    assert others.group_by("practice_pseudo_id").agg(pl.col("on_list").sum())["on_list"].to_list() == [2, 2]
    warnings = urgent_beyond_capacity(ranked, ListSettings(capacity_per_practice=2))
    assert warnings == ["PCN N1: practice P1 has more urgent patients ([suppressed]) than its capacity for the month "
                        "(2); all are listed, and no one else"]  # a count of 3 is suppressed
    assert urgent_beyond_capacity(ranked, ListSettings(capacity_per_practice=3)) == []


def test_urgent_patients_beyond_a_pcns_capacity_are_all_listed_and_warned_about_with_pcn_capacity():
    """With ``capacity_per_pcn`` the capacity unit is the PCN itself; the warning grouped by the
    PCN twice and the run crashed before any list was made."""
    frame = candidates(n_per_practice=6).with_columns(  # N1: P1's 4, 5, 6 and P2's 10, 11 are urgent
        pl.col("patient_id").is_in([4, 5, 6, 10, 11]).alias("urgent"))
    settings = ListSettings(capacity_per_practice=None, capacity_per_pcn=3)
    ranked = order_and_cap(frame, settings)
    listed = dict(ranked.group_by("pcn_code").agg(pl.col("on_list").sum()).iter_rows())
    assert listed == {"N1": 5, "N2": 3}  # all 5 urgent in N1, and no one else
    assert ranked.filter(pl.col("urgent"))["on_list"].all()
    assert urgent_beyond_capacity(ranked, settings) == [
        "PCN N1: the PCN has more urgent patients ([suppressed]) than its capacity for the month (3); "
        "all are listed, and no one else"]
    used = pl.DataFrame({"pcn_code": ["N2"], "listed_earlier": [10]})
    assert urgent_beyond_capacity(order_and_cap(frame, settings, used), settings, used)[0].startswith("PCN N1:")
    assert urgent_beyond_capacity(ranked, ListSettings(capacity_per_practice=None, capacity_per_pcn=5)) == []


def test_a_whole_list_is_built_with_pcn_capacity_when_urgent_patients_exceed_it():
    """build_lists end to end (one practice of 20, 4 of them urgent) with ``capacity_per_pcn = 3``:
    the run used to stop in the warning's group_by."""
    from tests.spec.test_do_no_harm import one_practice_database

    con = one_practice_database()
    con.execute("update marts.mart_hypertension_case_finding set finding = 'possible_undiagnosed_urgent', "
                "finding_reason = 'latest reading 184/122' where patient_id <= 4")
    con.execute("create table marts.risk_scores as select patient_id, null::double as cvd_model_risk, "
                "null::double as t2d_model_risk, null::double as hypertension_model_risk, "
                + ", ".join(f"null::integer as {o}_model_horizon_years, null::varchar as {o}_model_name, "
                            f"null::varchar as {o}_model_version" for o in ("cvd", "t2d", "hypertension"))
                + " from marts.mart_patient_features")
    run = build_lists(con, ListSettings(capacity_per_practice=None, capacity_per_pcn=3), KEY, INDEX_DATE)
    assert run.lists.height == 4 and run.lists["urgent"].all()
    assert run.warnings == ["PCN U00001: the PCN has more urgent patients ([suppressed]) than its capacity for the "
                            "month (3); all are listed, and no one else"]
    assert run.capacity["pcns"] == {"U00001": 3}


def test_the_recently_invited_rule_never_holds_back_an_urgent_patient():
    frame = pl.DataFrame({"palliative_care": [False, False, True], "care_home": [False] * 3,
                          "treatment_exclusion": [None, None, None], "recently_invited": [True, True, True],
                          "urgent": [True, False, True]}, schema_overrides={"treatment_exclusion": pl.String})
    assert frame.select(exclusion(ListSettings()))["exclusion"].to_list() == [
        None, "recently invited", "palliative care"]


# --- reasons and actions: one action per clinical area, separators unambiguous -------------------

def every_reason() -> pl.DataFrame:
    """Every reason the SQL can give, from a hand-made database with a patient for each (and the
    three models' top shares), as (reason_code, tier, outcome, reason, action) rows."""
    con = hand_made_database([
        *BP_FINDINGS,
        {"patient_id": 6, "finding": "confirmed_not_coded", "finding_reason": "ABPM 140/90"},
        {"patient_id": 7, "hba1c_mmol_mol": 50.0, "fasting_glucose_mmol_l": 7.5},
        {"patient_id": 8, "hba1c_mmol_mol": 44.0, "fasting_glucose_mmol_l": 6.0, "ndh_coded": True,
         "gestational_diabetes": True},
        {"patient_id": 9, "qrisk3_10y_pct": 25.0, "qdiabetes_10y_pct": 15.0},
        {"patient_id": 10, "qrisk3_10y_pct": 12.0},
        *({"patient_id": i, "cvd_model_risk": 0.5, "t2d_model_risk": 0.5, "hypertension_model_risk": 0.5}
          for i in (11, 12)),
        *({"patient_id": i, "cvd_model_risk": 0.01, "t2d_model_risk": 0.01, "hypertension_model_risk": 0.01}
          for i in range(13, 40)),
    ])
    found = reasons(con, ListSettings(model_top_share=0.1))
    return found.select("reason_code", "tier", "outcome", "reason", "action").unique(
        ["reason_code", "outcome"], keep="first", maintain_order=True)


EVERY_REASON = every_reason()


def test_every_reason_and_action_is_free_of_the_separator():
    from phm.lists import ACTION_PRECEDENCE, SEPARATOR

    assert EVERY_REASON.height == sum(len(codes) for codes in ACTION_PRECEDENCE.values())  # every one made
    for row in EVERY_REASON.iter_rows(named=True):
        assert SEPARATOR.strip() not in row["reason"] and SEPARATOR.strip() not in row["action"], row


@settings(max_examples=examples(200), deadline=None)
@given(picked=st.lists(st.integers(0, EVERY_REASON.height - 1), min_size=1, max_size=8, unique=True))
def test_a_patients_actions_are_one_per_clinical_area_and_split_back_into_their_reasons(picked):
    from phm.lists import ACTION_PRECEDENCE, SEPARATOR, for_people

    rows = EVERY_REASON[picked].with_columns(pl.lit(1).alias("patient_id"), pl.lit(None, pl.String).alias("excluded_by"))
    out = per_patient(rows.select("patient_id", "reason_code", "tier", "outcome", "reason", "action", "excluded_by"))
    actions = out["suggested_actions"][0].to_list()
    assert len(actions) == len(set(actions)) == rows["outcome"].n_unique()  # no repeats, one per area
    assert out["reasons"][0].to_list() == rows.sort("tier", "reason_code", "outcome")["reason"].to_list()
    joined = for_people(out).row(0, named=True)  # as a person reads them: split back, unambiguously
    assert joined["suggested_actions"].split(SEPARATOR) == actions
    assert joined["reasons"].split(SEPARATOR) == out["reasons"][0].to_list()
    for outcome, area in rows.group_by("outcome"):
        first = min(area.iter_rows(named=True), key=lambda r: ACTION_PRECEDENCE[outcome[0]].index(r["reason_code"]))
        assert first["action"] in actions  # the area's most pressing action, never a lesser one beside it


def test_possible_undiagnosed_diabetes_replaces_prevention_advice_and_one_cvd_review():
    rows = reason_rows(
        (1, "hba1c_diabetic_range", 1, "t2d", "HbA1c 50", "repeat HbA1c: possible undiagnosed diabetes", None),
        (1, "qdiabetes_high", 3, "t2d", "QDiabetes 15-20%", "HbA1c test and diabetes prevention advice", None),
        (1, "qrisk3_raised", 3, "cvd", "QRISK3 10-15%", "lipid review: discuss a statin (NICE NG238)", None),
        (1, "model_high_risk", 3, "cvd", "model, top 10%", "cardiovascular risk review", None))
    out = per_patient(rows).row(0, named=True)
    assert out["suggested_actions"] == ["repeat HbA1c: possible undiagnosed diabetes",
                                        "lipid review: discuss a statin (NICE NG238)"]


def test_an_urgent_patients_urgent_review_comes_before_any_measurement():
    from phm.lists import measure_first

    frame = pl.DataFrame({"to_measure": [["blood pressure"], ["blood pressure"]], "urgent": [True, False],
                          "suggested_actions": [["repeat HbA1c: possible undiagnosed diabetes"], ["lipid review"]]})
    actions = frame.select(measure_first(pl.col("urgent")))["suggested_actions"].to_list()
    assert actions == [["repeat HbA1c: possible undiagnosed diabetes",
                        "measure first: blood pressure (the risk scores took a default)"],
                       ["measure first: blood pressure (the risk scores took a default)", "lipid review"]]


def test_a_patient_whose_scores_rest_on_defaults_is_asked_to_measure_them_first():
    from phm.lists import SEPARATOR, measure_first

    frame = pl.DataFrame({"to_measure": [["cholesterol", "BMI"], None],
                          "suggested_actions": [["lipid review"], ["blood pressure check"]]})
    actions = frame.select(measure_first())["suggested_actions"].to_list()
    assert actions == [["measure first: cholesterol, BMI (the risk scores took a default)", "lipid review"],
                       ["blood pressure check"]]
    assert all(SEPARATOR not in a for a in actions[0])  # the joined cell still splits back


def test_a_patient_whose_scores_read_a_missing_ethnicity_as_white_is_asked_to_record_it():
    from phm.lists import measure_first, scores_assume_white, to_measure

    frame = pl.DataFrame({
        "ethnicity_group": ["Not known", "Not known", "Not stated", "Asian", "Not known"],
        "qrisk3_10y_band": ["10-15%", None, "10-15%", "10-15%", None],
        "qdiabetes_10y_band": [None, "5-10%", None, None, None],  # the last: no score read it (under 25)
        "qrisk3_notes": ["defaulted: rati", None, None, None, None],
        "qdiabetes_notes": [None, None, None, None, None],
        "suggested_actions": [["lipid review"], ["diabetes prevention"], ["lipid review"], ["lipid review"],
                              ["blood pressure check"]],
    })
    out = frame.with_columns(scores_assume_white()).with_columns(to_measure(pl.col("scores_assume_white"))) \
        .with_columns(measure_first())
    # 'Not stated' is the patient's answer: not asked again here; nor a patient no score read
    assert out["scores_assume_white"].to_list() == [True, True, False, False, False]
    assert out["to_measure"].to_list() == [["cholesterol", "ethnicity"], ["ethnicity"], None, None, None]
    assert out["suggested_actions"].to_list() == [
        ["record ethnicity (not known: the risk scores read it as White)",
         "measure first: cholesterol (the risk scores took a default)", "lipid review"],
        ["record ethnicity (not known: the risk scores read it as White)", "diabetes prevention"],
        ["lipid review"], ["lipid review"], ["blood pressure check"]]


def test_the_pcn_summary_counts_listed_patients_whose_scores_read_them_as_white_suppressed():
    from phm.lists import pcn_summary

    def summary(assumed: int) -> dict:
        on_list = pl.DataFrame({"tier": [1] * 30, "ethnicity_group": ["Not known"] * assumed + ["White"] * (30 - assumed),
                                "imd_quintile": [1] * 30, "scores_assume_white": [True] * assumed + [False] * (30 - assumed)})
        rows = pcn_summary(on_list.select("ethnicity_group", "imd_quintile"), on_list,
                           pl.DataFrame({"exclusion": [None] * 30}, schema={"exclusion": pl.String}))
        return {(r["section"], r["value"]): r["patients"] for r in rows.iter_rows(named=True)}

    label = ("ethnicity not known", "scores read the patient as White: record ethnicity")
    assert summary(12)[label] == 10  # rounded to 5
    assert summary(3)[label] is None  # 1-7 suppressed
    assert summary(0)[label] == 0


def test_to_measure_names_what_the_scores_defaulted_once_each_and_not_the_postcode():
    from phm.lists import to_measure

    frame = pl.DataFrame({
        "qrisk3_notes": ["defaulted: rati; defaulted: bmi; defaulted: sbps5", "clamped: bmi raised to 20", None,
                         "defaulted: town"],
        "qdiabetes_notes": ["defaulted: bmi; defaulted: smoke_cat", None, None, "defaulted: ethrisk"]})
    assert frame.select(to_measure())["to_measure"].to_list() == [
        ["blood pressure", "cholesterol", "BMI", "smoking status"], None, None, ["ethnicity"]]


def test_the_workbook_is_a_working_document_whose_read_me_says_what_the_manifest_says(tmp_path):
    from openpyxl import load_workbook

    from phm.lists import JOINED_WITH, list_columns
    from phm.workbook import COLUMN_MEANINGS, OUTCOMES, WORKFLOW

    columns = list_columns({"cvd": 5, "t2d": 5, "hypertension": 10})
    assert {"cvd_model_5y_band", "t2d_model_5y_band", "hypertension_model_10y_band"} <= set(columns)
    listed = set(JOINED_WITH)
    rows = pl.DataFrame([{c: None for c in columns} | {
        "pcn_code": "U00001", "pseudonym": f"p{i}", "practice_pseudo_id": 10 + i % 2, "priority_rank": i,
        "tier": 1, "reasons": ["a reason", "another"], "suggested_actions": ["an action"],
        "to_measure": ["cholesterol", "BMI"] if i == 1 else None} for i in range(1, 6)],
        schema_overrides={c: pl.List(pl.String) if c in listed else pl.String for c in columns
                          if c not in ("practice_pseudo_id", "priority_rank", "tier")})
    run = ListRun(rows.select("pcn_code", *columns), pl.DataFrame({"pcn_code": ["U00001"]}),
                  {"U00001": pl.DataFrame({"section": ["total"], "patients": [5]})})
    manifest = {"published_at": "2026-11-30T07:00:00+00:00", "index_date": "2026-03-31", "gate": "WARN",
                "gate_decision": {"cvd": {"gate": "WARN", "ranks_list": "model", "may_publish": True,
                                          "signoff": {"reviewer": "Dr A Reviewer", "reason": "small groups"}}},
                "capacity": {"period": "month", "from": "2026-03-01", "to": "2026-03-31", "capacity_per_practice": 60,
                             "capacity_per_pcn": None, "pcns": {"U00001": 120}}}
    folder = write_run_folder(run, tmp_path, manifest)
    # for software, the lists as lists; for people, joined by a separator no item contains
    stored = pl.read_parquet(folder / "U00001.parquet")
    assert all(stored.schema[c] == pl.List(pl.String) for c in listed)
    assert stored["reasons"][0].to_list() == ["a reason", "another"]
    published = pl.read_csv(folder / "U00001.csv")
    assert published["reasons"][0] == "a reason; another" and published["to_measure"].to_list()[:2] == [
        "cholesterol, BMI", None]
    book = load_workbook(folder / "U00001.xlsx")
    assert book.sheetnames == ["Read me", "list", "practice 10", "practice 11", "summary"]
    facts = {row[0]: row[1] for row in book["Read me"].iter_rows(values_only=True)}
    assert facts["list published"] == manifest["published_at"] and facts["data as at (index date)"] == "2026-03-31"
    assert facts["gate: cvd"] == "WARN, ranked by model; signed off by Dr A Reviewer: small groups"
    from phm.workbook import INTENDED_USE

    assert facts["what this list is"] == INTENDED_USE and "not a diagnosis" in INTENDED_USE  # HAZ-13
    assert facts["capacity"].startswith("60 patients a practice a month (2026-03-01 to 2026-03-31; this PCN: 120)")
    models = [c for c in columns if "_model_" in c]
    assert all(facts[c] == COLUMN_MEANINGS[c] for c in [*columns, *WORKFLOW] if c not in models)  # every column
    assert "over 5 years" in facts["cvd_model_5y_band"] and "over 10 years" in facts["hypertension_model_10y_band"]
    assert facts["horizons"] == ("QRISK3 and QDiabetes: 10 years; cvd model column: 5 years; t2d model column: "
                                 "5 years; hypertension model column: 10 years")
    for name, own in (("list", 5), ("practice 10", 2), ("practice 11", 3)):
        sheet = book[name]
        header = [c.value for c in sheet[1]]
        assert header == [*columns, *WORKFLOW] and sheet.max_row == own + 1
        assert sheet.freeze_panes == "B2" and sheet.auto_filter.ref.startswith("A1:")
        validations = {str(v.sqref).split(":")[0][:2]: v for v in sheet.data_validations.dataValidation}
        outcome = next(v for v in sheet.data_validations.dataValidation if v.type == "list")
        assert outcome.formula1 == '"' + ",".join(OUTCOMES) + '"' and validations
        reasons = header.index("reasons") + 1
        assert sheet.cell(2, reasons).alignment.wrap_text
    assert book["list"].cell(2, columns.index("reasons") + 1).value in ("a reason; another",)
    # rows are as tall as their wrapped text (60 characters a line in reasons): no reason spills over the next row
    from phm.workbook import LINE_HEIGHT, wrapped_lines

    assert wrapped_lines(pl.DataFrame({"reasons": ["x" * 58, "x" * 59, None], "notes": [None, None, "y" * 100]})) == \
        [1, 2, 3]
    assert book["list"].row_dimensions[2].height == LINE_HEIGHT
    assert [c.value for c in book["practice 11"]["A"][1:]] == ["p1", "p3", "p5"]


def test_the_summary_sheet_shows_suppressed_counts_as_suppressed_not_as_empty_cells(tmp_path):
    """Finding 3: the summary holds suppressed counts (null for 1-7), and the summary sheet showed
    a suppressed count as an empty cell, the same as a cell that counts nothing, while its Read
    me said "[suppressed]". The sheet now writes each count as phm.disclosure.show does."""
    from openpyxl import load_workbook

    from phm.lists import reask_summary, summary_for_people
    from phm.workbook import write_workbook

    population = pl.DataFrame({"ethnicity_group": ["White"] * 40 + ["Black"] * 3, "imd_quintile": [1] * 43})
    on_list = pl.DataFrame({"tier": [1] * 12 + [2] * 2, "ethnicity_group": ["White"] * 12 + ["Black"] * 2,
                            "imd_quintile": [1] * 14})
    cands = pl.DataFrame({"exclusion": ["palliative care"] * 3 + ["care home"] * 12 + [None] * 14})
    worklist = pl.DataFrame({"reask_reason": ["codes of more than one ethnic category"] * 3, "on_targeting_list": [False] * 3})
    summary = pl.concat([pcn_summary(population, on_list, cands, {
        "period": "month", "from": "2026-03-01", "capacity": 12, "over_capacity": 1234, "listed_earlier_in_period": 0}),
        reask_summary(worklist)])
    assert summary.columns == ["section", "value", "patients", "registered_adults"]
    shown = {(r["section"], r["value"]): (r["patients"], r["registered_adults"])
             for r in summary_for_people(summary).iter_rows(named=True)}
    assert shown[("total", "all")] == ("15", "45")
    assert shown[("ethnic group", "Black")] == ("[suppressed]", "[suppressed]")  # 2 of 3
    assert shown[("tier", "2")] == ("[suppressed]", None)  # no base: nothing to count
    assert shown[("excluded", "palliative care")] == ("[suppressed]", None)
    assert shown[("excluded", "care home")] == ("10", None)
    assert shown[("backlog", "over capacity: with a reason, eligible, waiting for a later month")] == ("1,235", None)
    assert shown[("capacity setting", "the month's from 2026-03-01: 12")] == (None, None)  # configuration
    assert shown[("capacity", "used by earlier lists of the month")] == ("0", None)
    assert shown[("ethnicity re-ask", "codes of more than one ethnic category")] == ("0", "[suppressed]")
    # the sheet as written
    rows = pl.DataFrame({"pseudonym": ["a" * 20], "practice_pseudo_id": [10], "reasons": ["r"]})
    write_workbook(tmp_path / "U00001.xlsx", "U00001", rows, summary, {})
    sheet = load_workbook(tmp_path / "U00001.xlsx")["summary"]
    cells = {(r[0], r[1]): r[2:] for r in sheet.iter_rows(min_row=2, values_only=True)}
    assert cells[("ethnic group", "Black")] == ("[suppressed]", "[suppressed]")
    assert cells[("capacity setting", "the month's from 2026-03-01: 12")] == (None, None)
    facts = {r[0]: r[1] for r in load_workbook(tmp_path / "U00001.xlsx")["Read me"].iter_rows(values_only=True)}
    assert "[suppressed]" in facts["summary sheet"] and "'patients'" in facts["summary sheet"]
    assert "ethnicity re-ask sheet" not in facts  # no worklist, no sheet to explain


def test_the_read_me_explains_the_ethnicity_re_ask_sheet_where_there_is_one(tmp_path):
    """Finding 4: the workbook had an "ethnicity re-ask" sheet that its Read me never mentioned."""
    from openpyxl import load_workbook

    from phm.lists import REASK_READ_AS_WHITE
    from phm.workbook import REASK, write_workbook

    rows = pl.DataFrame({"pseudonym": ["a" * 20], "practice_pseudo_id": [10], "reasons": ["r"]})
    reask = pl.DataFrame({"pseudonym": ["b" * 20], "practice_pseudo_id": [10], "practice_ods_code": ["Z10001"],
                          "practice_name": ["S"], "on_targeting_list": [False], "reask_reason": [REASK_READ_AS_WHITE]})
    write_workbook(tmp_path / "U00001.xlsx", "U00001", rows, pl.DataFrame({"section": ["total"]}), {}, reask)
    book = load_workbook(tmp_path / "U00001.xlsx")
    facts = {r[0]: r[1] for r in book["Read me"].iter_rows(values_only=True)}
    text = facts[f"{REASK} sheet"]
    for words in ("ask again", "not a list of people to invite", "asked_on", "answer_recorded", "voluntary",
                  "'not stated' is a valid answer", "_ethnicity_reask"):
        assert words in text, words
    assert [c.value for c in book[REASK][1]][:6] == ["pseudonym", "practice_pseudo_id", "practice_ods_code",
                                                     "practice_name", "on_targeting_list", "reask_reason"]


def test_a_warning_about_a_pcn_is_on_its_workbooks_read_me_in_red_not_only_on_the_terminal(tmp_path):
    """Urgent patients beyond capacity were warned about on the terminal and in the Prefect log
    only; the manifest now carries the run's warnings and each PCN's Read me shows its own first."""
    from openpyxl import load_workbook

    from phm.workbook import STALE_RED, read_me_rows, write_workbook

    warning = ("PCN U00001: practice 10 has more urgent patients ([suppressed]) than its capacity for the month (2); "
               "all are listed, and no one else")
    manifest = {"warnings": [warning, "PCN U00002: the PCN has more urgent patients (10) than its capacity ..."]}
    assert [r for r in read_me_rows("U00001", manifest, ["pseudonym"]) if r[0] == "WARNING"] == [("WARNING", warning)]
    assert not [r for r in read_me_rows("U00003", manifest, ["pseudonym"]) if r[0] == "WARNING"]
    rows = pl.DataFrame({"pseudonym": ["a" * 20], "practice_pseudo_id": [10], "reasons": ["r"]})
    write_workbook(tmp_path / "U00001.xlsx", "U00001", rows, pl.DataFrame({"section": ["total"]}), manifest)
    first = load_workbook(tmp_path / "U00001.xlsx")["Read me"][1]
    assert (first[0].value, first[1].value) == ("WARNING", warning)
    assert first[1].font.bold and first[1].font.color.rgb.endswith(STALE_RED)


# --- capacity per period, and the history it is counted from (lists.invitations) -----------------

@pytest.mark.parametrize("day,period,bounds", [
    ("2026-03-17", "month", ("2026-03-01", "2026-04-01")),
    ("2026-03-01", "month", ("2026-03-01", "2026-04-01")),
    ("2026-12-31", "month", ("2026-12-01", "2027-01-01")),
    ("2028-02-29", "month", ("2028-02-01", "2028-03-01")),
    ("2026-03-16", "week", ("2026-03-16", "2026-03-23")),  # a Monday starts its week
    ("2026-03-22", "week", ("2026-03-16", "2026-03-23")),  # a Sunday ends it
    ("2026-12-30", "week", ("2026-12-28", "2027-01-04")),  # a week across the new year is one week
])
def test_a_capacity_period_is_the_calendar_month_or_the_week_from_monday(day, period, bounds):
    assert period_bounds(dt.date.fromisoformat(day), period) == tuple(map(dt.date.fromisoformat, bounds))


def test_earlier_lists_of_the_period_leave_capacity_less_what_they_took():
    """P1 listed 3 of its 4 earlier this month: one place left. P2 listed more than its capacity
    (urgent patients): none left, never a negative. P3 listed none: all 4 places."""
    frame = candidates(n_per_practice=6).with_columns(pl.lit(False).alias("urgent"))
    used = pl.DataFrame({"practice_pseudo_id": ["P1", "P2"], "listed_earlier": [3, 9]})
    ranked = order_and_cap(frame, ListSettings(capacity_per_practice=4), used)
    listed = dict(ranked.group_by("practice_pseudo_id").agg(pl.col("on_list").sum()).iter_rows())
    assert listed == {"P1": 1, "P2": 0, "P3": 4}
    p1 = ranked.filter(pl.col("practice_pseudo_id") == "P1").sort("priority_rank")
    assert p1["on_list"].to_list() == [True] + [False] * 5  # the first in rank order


def test_urgent_patients_take_the_places_left_and_one_already_listed_this_period_takes_none():
    # P1: patients 1-6; 4 and 5 urgent; 5 was already listed this month (listed again, no new place)
    frame = candidates(n_per_practice=6).with_columns(
        pl.col("patient_id").is_in([4, 5]).alias("urgent"), (pl.col("patient_id") == 5).alias("listed_this_period"))
    settings = ListSettings(capacity_per_practice=4)
    used = pl.DataFrame({"practice_pseudo_id": ["P1"], "listed_earlier": [2]})
    p1 = order_and_cap(frame, settings, used).filter(pl.col("practice_pseudo_id") == "P1").sort("priority_rank")
    # 2 places left: urgent 4 takes one, urgent 5 none, the first non-urgent the other
    assert p1["patient_id"].to_list()[:2] == [4, 5]
    assert p1["on_list"].to_list() == [True, True, True, False, False, False]
    assert urgent_beyond_capacity(order_and_cap(frame, settings, used), settings, used) == []
    full = pl.DataFrame({"practice_pseudo_id": ["P1"], "listed_earlier": [40]})
    ranked = order_and_cap(frame, settings, full)
    assert ranked.filter(pl.col("practice_pseudo_id") == "P1").sort("priority_rank")["on_list"].to_list() == [
        True, True, False, False, False, False]  # the urgent patients only
    assert urgent_beyond_capacity(ranked, settings, full) == [
        "PCN N1: practice P1 has more urgent patients ([suppressed]) than its capacity for the month "
        "(4, of which 40 already used); all are listed, and no one else"]


def test_capacity_per_pcn_is_shared_by_its_practices_over_the_period():
    used = pl.DataFrame({"pcn_code": ["N1"], "listed_earlier": [2]})
    ranked = order_and_cap(candidates(), ListSettings(capacity_per_practice=None, capacity_per_pcn=3), used)
    assert dict(ranked.group_by("pcn_code").agg(pl.col("on_list").sum()).iter_rows()) == {"N1": 1, "N2": 3}


def history_database(rows: list[tuple], registered: dict[int, int]) -> duckdb.DuckDBPyConnection:
    """A database from before issue 18: lists.invitations (patient_id, list_date), and the
    features mart saying which practice each patient is registered with now."""
    con = duckdb.connect()
    con.execute("create schema lists")
    con.execute("create schema marts")
    con.execute("create table marts.mart_patient_features (patient_id bigint, practice_pseudo_id bigint, "
                "ethnicity_group varchar, imd_quintile integer)")
    con.executemany("insert into marts.mart_patient_features values (?, ?, 'Black', 2)", list(registered.items()))
    con.execute("create table lists.invitations (patient_id bigint, list_date date)")
    con.executemany("insert into lists.invitations values (?, ?::date)", rows)
    return con


def test_an_old_history_moves_to_pseudonyms_per_practice_and_an_unregistered_patients_rows_go():
    con = history_database([(1, "2026-03-02"), (2, "2026-03-02"), (1, "2026-02-02"), (99, "2026-03-02")],
                           {1: 10, 2: 11, 3: 10})
    notes = prepare_history(con, KEY)
    assert notes == ["lists.invitations moved to its pseudonymous shape: [suppressed] earlier listings carried "
                     "over, [suppressed] of patients no longer registered dropped"]
    rows = con.execute("select * from lists.invitations order by list_date, practice_pseudo_id").fetchall()
    p1, p2 = pseudonym(practice_key(KEY, "10"), 1), pseudonym(practice_key(KEY, "11"), 2)
    assert rows == [(10, p1, dt.date(2026, 2, 2), None, "Black", 2), (10, p1, dt.date(2026, 3, 2), None, "Black", 2),
                    (11, p2, dt.date(2026, 3, 2), None, "Black", 2)]
    assert "patient_id" not in {c for (c,) in con.execute("select column_name from information_schema.columns "
                                                           "where table_name = 'invitations'").fetchall()}
    assert prepare_history(con, KEY) == []  # once: the next run finds the current shape
    # issue 18's first shape, without the groups: they are added, unknown for the rows already there
    con.execute("alter table lists.invitations drop column ethnicity_group")
    con.execute("alter table lists.invitations drop column imd_quintile")
    assert prepare_history(con, KEY) == []
    assert con.execute("select count(*), count(ethnicity_group) from lists.invitations").fetchone() == (3, 0)
    con.execute("create or replace table lists.invitations (who varchar)")
    with pytest.raises(DatabaseError, match="lists.invitations: columns who are neither"):
        prepare_history(con, KEY)
    fresh = duckdb.connect()
    assert prepare_history(fresh, KEY) == []
    assert fresh.execute("select count(*) from lists.invitations").fetchone() == (0,)


def test_the_history_says_who_was_invited_recently_and_who_took_this_periods_capacity():
    con = duckdb.connect()
    prepare_history(con, KEY)
    con.executemany("insert into lists.invitations values (10, ?, ?::date, false, 'White', 3)", [
        ("own", "2026-03-17"),          # this index date's own list (a rerun): neither
        ("early", "2026-03-03"),        # this month, 14 days before: both
        ("february", "2026-02-20"),     # 25 days before, last month: recently invited only
        ("old", "2025-12-01"),          # 106 days before, last year: neither
        ("later", "2026-03-25"),        # later this month (a run out of date order): capacity only
    ])
    found = listed_before(con, dt.date(2026, 3, 17), ListSettings(recently_invited_days=90))
    got = {r["pseudonym"]: (r["recently_invited"], r["listed_this_period"]) for r in found.iter_rows(named=True)}
    assert got == {"early": (True, True), "february": (True, False), "later": (False, True)}
    weekly = listed_before(con, dt.date(2026, 3, 17), ListSettings(capacity_period="week", recently_invited_days=10))
    assert {r["pseudonym"]: (r["recently_invited"], r["listed_this_period"]) for r in weekly.iter_rows(named=True)} \
        == {}  # 03-03 is 14 days before (outside 10) and in an earlier week; 03-25 is next week


def test_recording_a_list_again_for_the_same_index_date_replaces_its_rows():
    con = duckdb.connect()
    prepare_history(con, KEY)

    def run_of(*names):
        return ListRun(pl.DataFrame(), pl.DataFrame(), invited=pl.DataFrame(
            {"practice_pseudo_id": [10] * len(names), "pseudonym": list(names), "urgent": [False] * len(names),
             "ethnicity_group": ["Asian"] * len(names), "imd_quintile": [1] * len(names)}))
    record_invitations(con, run_of("a", "b"), dt.date(2026, 3, 10))
    record_invitations(con, run_of("c", "d", "e"), dt.date(2026, 3, 17))
    record_invitations(con, run_of("c", "f"), dt.date(2026, 3, 17))  # the 17th's list, run again
    assert con.execute("select list_date, list(pseudonym order by pseudonym) from lists.invitations group by 1 "
                       "order by 1").fetchall() == [(dt.date(2026, 3, 10), ["a", "b"]), (dt.date(2026, 3, 17), ["c", "f"])]


def test_the_summary_shows_the_backlog_and_the_capacity_used_suppressed():
    population = pl.DataFrame({"ethnicity_group": ["White"] * 40, "imd_quintile": [1] * 40})
    on_list = pl.DataFrame({"tier": [1] * 10, "ethnicity_group": ["White"] * 10, "imd_quintile": [1] * 10})
    summary = pcn_summary(population, on_list, pl.DataFrame({"exclusion": [None] * 33}, schema={"exclusion": pl.String}),
                          {"period": "month", "from": "2026-03-01", "capacity": 12, "over_capacity": 23,
                           "listed_earlier_in_period": 3})
    rows = {(r["section"], r["value"]): r["patients"] for r in summary.iter_rows(named=True)}
    assert rows[("backlog", "over capacity: with a reason, eligible, waiting for a later month")] == 25
    assert rows[("capacity setting", "the month's from 2026-03-01: 12")] is None  # configuration, not a count
    assert rows[("capacity", "used by earlier lists of the month")] is None  # 3: suppressed


@settings(max_examples=examples(200), deadline=None)
@given(data=st.data())
def test_capacity_left_is_filled_in_rank_order_urgent_first_and_never_beyond_unless_urgent(data):
    """Random practices, earlier use of the period, urgent patients and patients listed earlier
    this period, against a plain count: the listed are a prefix of the rank order; every urgent
    patient is listed; new places taken = max(left, new urgent) where enough wait, never more."""
    rows = []
    capacity = data.draw(st.integers(1, 6))
    used = {}
    for practice in range(data.draw(st.integers(1, 4))):
        used[practice] = data.draw(st.integers(0, 8))
        for _ in range(data.draw(st.integers(0, 12))):
            rows.append({"patient_id": len(rows) + 1, "practice_pseudo_id": practice, "pcn_code": "N1",
                         "tier": data.draw(st.integers(1, 3)), "core20": False, "ethnicity_group": "White",
                         "cvd_model_risk": data.draw(st.floats(0, 1)), "t2d_model_risk": None,
                         "hypertension_model_risk": None, "urgent": data.draw(st.booleans()),
                         "listed_this_period": data.draw(st.booleans())})
    if not rows:
        return
    frame = pl.DataFrame(rows)
    ranked = order_and_cap(frame.with_columns(pseudonymise(frame, KEY)), ListSettings(capacity_per_practice=capacity),
                           pl.DataFrame({"practice_pseudo_id": list(used), "listed_earlier": list(used.values())}))
    for (practice,), group in ranked.group_by("practice_pseudo_id"):
        ordered = group.sort("priority_rank")
        on = ordered["on_list"].to_list()
        assert on == sorted(on, reverse=True)  # a prefix of the rank order
        assert ordered.filter(pl.col("urgent"))["on_list"].all()
        left = max(0, capacity - used[practice])
        new = ordered.filter(pl.col("on_list") & ~pl.col("listed_this_period"))
        new_urgent = new.filter(pl.col("urgent")).height
        waiting = ordered.filter(~pl.col("on_list"))
        assert new.height <= max(left, new_urgent)
        if waiting.height:  # someone waits: the places left were all taken
            assert new.height == max(left, new_urgent)


def test_a_practices_sheet_is_titled_by_its_ods_code_and_name_where_the_extract_gives_them():
    from phm.workbook import sheet_name

    assert sheet_name(62394, [], "Z10001", "Synthetic Riverside Surgery") == "Z10001 Synthetic Riverside Surg"
    assert sheet_name(62394, [], "Z10001", "St Mary's [Old] Surgery") == "Z10001 St Mary_s _Old_ Surgery"
    assert sheet_name(62394, [], "Z10001", None) == "Z10001"
    assert sheet_name(62394, [], None, "A name without a code") == "practice 62394"
    assert sheet_name(62394, ["Z10001"], "Z10001", None) == "Z10001 (2)"


def test_the_read_me_names_the_commands_that_re_identify_at_the_practice():
    from phm.workbook import read_me_rows

    facts = dict(read_me_rows("U00001", {}, ["pseudonym"]))
    assert "phm reidentify --list" in facts["re-identifying patients"]
    assert "phm practice-key" in facts["re-identifying patients"]


def test_a_workbook_whose_rows_are_written_as_xml_has_the_parts_openpyxl_writes(tmp_path):
    """The rows after the first written as XML (phm/workbook.py) make the same file as every cell
    through openpyxl, part by part (less the write time): text that needs escaping, empty cells,
    whole numbers, yes/no, a practice with one row; and text openpyxl treats specially (leading
    space, '=') sends that sheet wholly through openpyxl."""
    import zipfile

    from phm.lists import JOINED_WITH, for_people, list_columns
    from phm.workbook import write_workbook

    columns = list_columns({"cvd": 5, "t2d": 5, "hypertension": 10})
    texts = ["a & b < c > d \"quoted\" 'single'", "line\r\nbreak\ttab", "é – 😀 ✓", "", None]
    rows = pl.DataFrame([{c: None for c in columns} | {
        "pseudonym": f"p{i}", "practice_pseudo_id": 10 + (i > 1) + (i > 5), "priority_rank": i, "tier": i % 3 + 1,
        "urgent": i % 2 == 0, "age_band": texts[i % 5], "reasons": ["a reason", texts[(i + 1) % 5] or "x"],
        "suggested_actions": ["an action"] * (i % 3)} for i in range(1, 9)],
        schema_overrides={c: pl.List(pl.String) if c in JOINED_WITH else pl.String for c in columns
                          if c not in ("practice_pseudo_id", "priority_rank", "tier", "urgent")} | {"urgent": pl.Boolean})
    reask = pl.DataFrame({"pseudonym": [f"q{i}" for i in range(6)], "practice_pseudo_id": [10, 10, 11, 11, 12, 12],
                          "practice_name": ["A & B", None, "C", "D", "E", "F"], "on_targeting_list": [True, False] * 3,
                          "reask_reason": ["<why>", "", "because", None, "x", "y"]})
    summary = pl.DataFrame({"section": ["total"], "patients": [8]})
    people = for_people(rows)

    def parts(name, data, reask, **kwargs) -> dict[str, bytes]:
        write_workbook(tmp_path / name, "U00001", data, summary, {"published_at": "now"}, reask, **kwargs)
        with zipfile.ZipFile(tmp_path / name) as book:
            return {n: book.read(n) for n in book.namelist() if n != "docProps/core.xml"}

    nothing_wraps = people.drop("reasons", "suggested_actions", "set_aside", "to_measure")  # one height: row 2's
    for data, worklist in ((people, reask), (nothing_wraps, None),
                           (people.with_columns(pl.col("pseudonym").str.replace("p3", " p3")),
                            reask.with_columns(pl.col("reask_reason").str.replace("x", "=x1")))):
        through_openpyxl = parts("cells.xlsx", data, worklist, rows_as_xml=False)
        assert parts("rows.xlsx", data, worklist) == through_openpyxl
        assert b"&amp;" in through_openpyxl["xl/worksheets/sheet2.xml"]  # the list, with its escaped text


def test_exclusion_counts_columns_do_not_depend_on_the_order_reasons_appear():
    """The per-PCN exclusion counts (the manifest's) came out in the order group_by met the
    reasons, which changed from run to run of the same data."""
    from phm.lists import _counts
    rows = {"pcn_code": ["U1", "U1", "U2", "U2", "U2"],
            "exclusion": ["palliative_care", None, "declined_invitations", "palliative_care", None]}
    eligible = pl.DataFrame({"pcn_code": ["U1", "U2"], "on_list": [True, False]})
    forward = _counts(pl.DataFrame(rows), eligible)
    backward = _counts(pl.DataFrame({k: v[::-1] for k, v in rows.items()}), eligible)
    assert forward.columns == backward.columns
    reasons = [c for c in forward.columns if c in ("palliative_care", "declined_invitations")]
    assert reasons == ["declined_invitations", "palliative_care"]
    assert forward.equals(backward)
