"""Score every patient in ``marts.mart_patient_features`` with QRISK3 and QDiabetes.

Writes ``marts.patient_scores``: one row per registered patient, the 10-year risks (null where a
score does not apply) and notes saying which inputs were defaulted or clamped, so a list can
show that a score rests on missing data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl

from models.scores import qdiabetes, qrisk3
from phm.db import connect
from phm.disclosure import show, summary_lines

# mart column -> ClinRisk argument name
QRISK3_INPUTS = {
    "age_years": "age", "bmi": "bmi", "cholesterol_ratio": "rati", "sbp_mmhg": "sbp",
    "sbp_sd_5y": "sbps5", "townsend_score": "town", "qrisk3_ethrisk": "ethrisk", "smoke_cat": "smoke_cat",
    "atrial_fibrillation": "b_AF", "on_atypical_antipsychotics": "b_atypicalantipsy",
    "on_corticosteroids": "b_corticosteroids", "erectile_dysfunction": "b_impotence2",
    "migraine": "b_migraine", "rheumatoid_arthritis": "b_ra", "ckd_3_5": "b_renal",
    "severe_mental_illness": "b_semi", "sle": "b_sle", "treated_hypertension": "b_treatedhyp",
    "type1_diabetes": "b_type1", "type2_diabetes": "b_type2", "family_history_cvd": "fh_cvd",
}
QDIABETES_INPUTS = {
    "age_years": "age", "bmi": "bmi", "townsend_score": "town", "qrisk3_ethrisk": "ethrisk",
    "smoke_cat": "smoke_cat", "on_atypical_antipsychotics": "b_atypicalantipsy",
    "on_corticosteroids": "b_corticosteroids", "cvd": "b_cvd", "gestational_diabetes": "b_gestdiab",
    "learning_disability": "b_learning", "severe_mental_illness": "b_manicschiz", "pcos": "b_pos",
    "on_statins": "b_statin", "treated_hypertension": "b_treatedhyp",
    "family_history_diabetes": "fh_diab", "fasting_glucose_mmol_l": "fbs", "hba1c_mmol_mol": "hba1c",
}


def _inputs(features: pl.DataFrame, mapping: dict[str, str]) -> pl.DataFrame:
    return features.select(
        pl.col("sex").replace_strict({"female": "F", "male": "M"}, default=None).alias("sex"),
        *[pl.col(source).cast(pl.Float64).alias(target) for source, target in mapping.items()])


def score_features(features: pl.DataFrame) -> pl.DataFrame:
    """QRISK3 and QDiabetes for each row of the feature mart."""
    q3 = qrisk3(_inputs(features, QRISK3_INPUTS))
    qd = qdiabetes(_inputs(features, QDIABETES_INPUTS))
    # Scores are not for people who already have the outcome.
    q3_ok, qd_ok = features["cvd"].not_(), ~(features["type1_diabetes"] | features["type2_diabetes"])
    return pl.DataFrame({
        "patient_id": features["patient_id"],
        "qrisk3_10y_pct": pl.select(pl.when(q3_ok).then(q3["risk_10y_pct"])).to_series(),
        "qrisk3_notes": pl.select(pl.when(q3_ok).then(q3["score_notes"])
                                  .otherwise(pl.lit("not applicable: existing CVD"))).to_series(),
        "qdiabetes_10y_pct": pl.select(pl.when(qd_ok).then(qd["risk_10y_pct"])).to_series(),
        "qdiabetes_model": qd["qdiabetes_model"],
        "qdiabetes_notes": pl.select(pl.when(qd_ok).then(qd["score_notes"])
                                     .otherwise(pl.lit("not applicable: existing diabetes"))).to_series(),
    })


def score_inputs_frame(inputs, comparator: str, rows=None):
    """A validated score's 10-year risk (%) for rows of a model-input frame (pandas, the mart's
    column names, ``sex_male`` for sex: models.train.model_inputs), as ``score_features`` gives
    it for the same values: the trained models' offset recomputed on filled readings
    (models.impute). ``rows``: positions of the rows to score (None: all)."""
    import numpy as np

    def column(name: str) -> np.ndarray:
        values = inputs[name].to_numpy(dtype=float)
        return values if rows is None else values[rows]

    n = len(inputs) if rows is None else len(rows)
    columns = dict.fromkeys([*QRISK3_INPUTS, *QDIABETES_INPUTS, "cvd", "type1_diabetes", "type2_diabetes"])
    frame = pl.DataFrame({c: column(c) if c in inputs.columns else np.full(n, np.nan) for c in columns})
    frame = frame.with_columns(
        pl.Series("sex", np.where(column("sex_male") > 0.5, "male", "female")),
        *[(pl.col(c).fill_nan(0) > 0).alias(c) for c in ("cvd", "type1_diabetes", "type2_diabetes")],
        pl.lit(None, dtype=pl.Int64).alias("patient_id"))
    # only the score asked for (score_features computes both), with score_features' rule for
    # who it does not apply to
    if comparator == "qrisk3_10y_pct":
        risk, applies = qrisk3(_inputs(frame, QRISK3_INPUTS))["risk_10y_pct"], ~frame["cvd"]
    else:
        risk = qdiabetes(_inputs(frame, QDIABETES_INPUTS))["risk_10y_pct"]
        applies = ~(frame["type1_diabetes"] | frame["type2_diabetes"])
    return pl.select(pl.when(applies).then(risk)).to_series().cast(pl.Float64).fill_null(np.nan).to_numpy()


def score_patients(con: duckdb.DuckDBPyConnection) -> int:
    """Create ``marts.patient_scores`` from ``marts.mart_patient_features``; return its rows."""
    # only the columns the scores read: the mart has some 70
    columns = ["patient_id", "sex", "cvd", "type1_diabetes", "type2_diabetes",
               *dict.fromkeys([*QRISK3_INPUTS, *QDIABETES_INPUTS])]
    features = con.execute(f"select {', '.join(columns)} from marts.mart_patient_features").pl()  # noqa: S608 - ours
    scores = score_features(features)
    con.register("patient_scores_frame", scores.to_arrow())
    try:
        con.execute("create or replace table marts.patient_scores as select * from patient_scores_frame")
    finally:
        con.unregister("patient_scores_frame")
    return scores.height


@dataclass
class ScoreRun:
    """The validated scores stage: ``marts.patient_scores`` made, and what it holds (suppressed)."""
    patients: int
    seconds: float
    summary: dict[str, str] = field(default_factory=dict)  # label -> suppressed count, as text

    def summary_lines(self) -> list[str]:
        return summary_lines(f"validated scores, QRISK3 and QDiabetes ({self.seconds:.1f} s):", self.summary)


def run_scores(db_path: Path, progress=None) -> ScoreRun:
    """Score every patient of the feature mart in ``db_path`` (phm features first)."""
    con = connect(db_path)
    try:
        started = time.perf_counter()
        if progress:
            progress("scoring QRISK3 and QDiabetes")
        run = ScoreRun(score_patients(con), 0.0)
        run.seconds = time.perf_counter() - started
        run.summary = {label: show(count) for label, count in con.execute("""
            select 'QRISK3 scored (25-84, no CVD)', count(qrisk3_10y_pct) from marts.patient_scores
            union all select 'QRISK3 >= 10% (NICE threshold for statin discussion)', count(*) filter (where qrisk3_10y_pct >= 10) from marts.patient_scores
            union all select 'QRISK3 resting on a defaulted input', count(*) filter (where qrisk3_notes like '%defaulted%') from marts.patient_scores
            union all select 'QDiabetes scored (25-84, no diabetes)', count(qdiabetes_10y_pct) from marts.patient_scores
        """).fetchall()}
    finally:
        con.close()
    return run
