"""Measures of need for the label-choice check, and of measurement completeness.

Obermeyer et al. (Science 2019) found an algorithm that predicted cost, not health: at the same
score, Black patients were sicker. Our models predict a *recorded* outcome; where a group's
diagnoses are under-recorded, the model learns to under-rate it, and calibration against the
same recorded outcomes cannot see it. The check therefore compares the score with a measure of
need that does not depend on this extract's recorded outcomes.

A count of raw findings (high blood pressure, high HbA1c, obesity, smoking ...) is confounded:
groups differ in their mix of risk factors, and the count weighs each finding alike while risk
does not (in England, and in the synthetic population, Black patients have more hypertension and
less smoking at the same cardiovascular risk, so a count calls them "sicker at the same score"
with no recording bias at all). So where a validated score exists, need is that score as
published, with the ethnicity known at the extract date (``qrisk3_10y_pct`` and
``qdiabetes_10y_pct`` of marts.patient_scores, which come with the population): it turns the
readings, history, age, sex, deprivation and ethnicity into risk with weights fitted on national records (QResearch), not on this extract's recorded outcomes. A
model that learnt to under-rate a group from under-recorded outcomes (or from a few dozen
events) rates its patients below their clinical risk.

Why with the published ethnic effects (issue 22): with the ethnicity input set to White, the
check called a model that follows a group's real lower risk (QRISK3 gives Black patients about
0.7 times White's CVD hazard at the same readings) "sicker at the same score": the demo's
no-bias extract FAILed CVD for Black at 1.31. Outcomes recorded less often for a group, which a
model built on the published effects does not learn, are seen by the diagnosis-gap check
(_recording.py), not here. The check compares within score decile and age band
(_cells.age_band), in the upper half of the scores (_audit.LABEL_CHOICE_FROM_DECILE).

- cvd: QRISK3-2017 10-year risk, % (high need: >= 10%, NICE NG238's statin threshold);
- t2d: QDiabetes-2018 10-year risk, % (high need: >= 10%);
- hypertension: blood pressure stage of the latest reading: >= 140/90, >= 160/100 (0-2; high
  need: >= 1), as there is no validated score for it.

Measurement completeness: how many of blood pressure, BMI, cholesterol ratio and HbA1c have a
reading in their window (0-4); a group measured less often has scores that rest more on
defaulted inputs.
"""

from __future__ import annotations

import polars as pl

NEED_COLUMNS = ("sbp_mmhg", "dbp_mmhg", "qrisk3_10y_pct", "qdiabetes_10y_pct")
NEED_DESCRIPTIONS = {
    "cvd": "QRISK3-2017 10-year risk, %, as published (clinical risk by national weights, with the "
           "ethnicity known at the extract date; high need from 10%)",
    "t2d": "QDiabetes-2018 10-year risk, %, as published (clinical risk by national weights, with the "
           "ethnicity known at the extract date; high need from 10%)",
    "hypertension": "blood pressure stage of the latest reading (>= 140/90, >= 160/100; 0-2)",
}
# need of at least this counts as high need (the list's share of high-need patients, descriptive)
HIGH_NEED_FROM = {"cvd": 10.0, "t2d": 10.0, "hypertension": 1}


def _finding(expr: pl.Expr) -> pl.Expr:
    return expr.fill_null(False).cast(pl.Int32)


def need(outcome: str) -> pl.Expr:
    bp_stage_1 = _finding((pl.col("sbp_mmhg") >= 140) | (pl.col("dbp_mmhg") >= 90))
    bp_stage_2 = _finding((pl.col("sbp_mmhg") >= 160) | (pl.col("dbp_mmhg") >= 100))
    if outcome == "cvd":
        expr = pl.col("qrisk3_10y_pct").cast(pl.Float64)
    elif outcome == "t2d":
        expr = pl.col("qdiabetes_10y_pct").cast(pl.Float64)
    elif outcome == "hypertension":
        expr = bp_stage_1 + bp_stage_2
    else:
        raise ValueError(f"no need measure for outcome {outcome!r}")
    return expr.alias("need")


def measurements_recorded() -> pl.Expr:
    return (pl.col("sbp_mmhg").is_not_null().cast(pl.Int32) + pl.col("bmi").is_not_null().cast(pl.Int32)
            + pl.col("cholesterol_ratio").is_not_null().cast(pl.Int32)
            + pl.col("hba1c_mmol_mol").is_not_null().cast(pl.Int32)).alias("measurements_recorded")
