"""Measures of need for the label-choice check, and of measurement completeness.

Obermeyer et al. (Science 2019) found an algorithm that predicted cost, not health: at the same
score, Black patients were sicker. Our models predict a *recorded* outcome; where a group's
diagnoses are under-recorded, the model learns to under-rate it, and calibration against the
same recorded outcomes cannot see it. The check therefore compares the score with need measured
from readings, which do not depend on a diagnosis being coded.

Need is specific to the outcome, because a list for one outcome should follow the burden that
outreach for it addresses (a group with more hypertension but less smoking is not "sicker" for a
diabetes list). Each is a small count of findings on the latest readings in their windows
(docs/features.md); a missing reading counts as no finding:

- cvd: uncontrolled cardiovascular risk: blood pressure >= 140/90, HbA1c >= 48 mmol/mol,
  total/HDL cholesterol ratio >= 6, current smoker, atrial fibrillation, CKD stage 3-5 (0-6).
- t2d: hyperglycaemia and obesity: HbA1c >= 42 (non-diabetic hyperglycaemia), HbA1c >= 48
  (diabetes range), BMI >= 30 (0-3).
- hypertension: blood pressure stage of the latest reading: >= 140/90, >= 160/100 (0-2).

Measurement completeness: how many of blood pressure, BMI, cholesterol ratio and HbA1c have a
reading in their window (0-4); a group measured less often has scores that rest more on
defaulted inputs.
"""

from __future__ import annotations

import polars as pl

NEED_COLUMNS = ("sbp_mmhg", "dbp_mmhg", "hba1c_mmol_mol", "bmi", "cholesterol_ratio", "smoke_cat",
                "atrial_fibrillation", "ckd_3_5")
NEED_DESCRIPTIONS = {
    "cvd": "uncontrolled cardiovascular risk factors (BP >= 140/90, HbA1c >= 48, cholesterol ratio >= 6, "
           "current smoker, AF, CKD 3-5; 0-6)",
    "t2d": "hyperglycaemia and obesity (HbA1c >= 42, HbA1c >= 48, BMI >= 30; 0-3)",
    "hypertension": "blood pressure stage of the latest reading (>= 140/90, >= 160/100; 0-2)",
}
# need of at least this counts as high need (the list's share of high-need patients, descriptive)
HIGH_NEED_FROM = {"cvd": 2, "t2d": 1, "hypertension": 1}


def _finding(expr: pl.Expr) -> pl.Expr:
    return expr.fill_null(False).cast(pl.Int32)


def need(outcome: str) -> pl.Expr:
    bp_stage_1 = _finding((pl.col("sbp_mmhg") >= 140) | (pl.col("dbp_mmhg") >= 90))
    bp_stage_2 = _finding((pl.col("sbp_mmhg") >= 160) | (pl.col("dbp_mmhg") >= 100))
    hba1c = pl.col("hba1c_mmol_mol")
    if outcome == "cvd":
        expr = (bp_stage_1 + _finding(hba1c >= 48) + _finding(pl.col("cholesterol_ratio") >= 6)
                + _finding(pl.col("smoke_cat") >= 2) + _finding(pl.col("atrial_fibrillation"))
                + _finding(pl.col("ckd_3_5")))
    elif outcome == "t2d":
        expr = _finding(hba1c >= 42) + _finding(hba1c >= 48) + _finding(pl.col("bmi") >= 30)
    elif outcome == "hypertension":
        expr = bp_stage_1 + bp_stage_2
    else:
        raise ValueError(f"no need measure for outcome {outcome!r}")
    return expr.alias("need")


def measurements_recorded() -> pl.Expr:
    return (pl.col("sbp_mmhg").is_not_null().cast(pl.Int32) + pl.col("bmi").is_not_null().cast(pl.Int32)
            + pl.col("cholesterol_ratio").is_not_null().cast(pl.Int32)
            + pl.col("hba1c_mmol_mol").is_not_null().cast(pl.Int32)).alias("measurements_recorded")
