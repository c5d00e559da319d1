"""The published ranking against the synthetic truth, by true ethnic group (synthetic data only).

Used by benchmarks/bench_equity.py (the equity table in docs/benchmarks.md); the truth tests
use models/fairness/truth.py. The pipeline never reads truth/; these functions join
its outputs to truth/ afterwards, so every claim about equity is checked against the answer key.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from features.build import build
from models.fairness.truth import true_need_now
from models.hazard import kaplan_meier_risk
from models.score_patients import score_features
from models.train import model_inputs, predict_risk
from phm.db import connect, extract_date
from phm.ethnicity import BROAD_GROUPS, NHS_ETHNIC_CATEGORIES

TRUTH_NAME = {"cvd": "cvd", "t2d": "t2d", "hypertension": "htn"}
COMPARATOR_LABEL = {"qrisk3_10y_pct": "QRISK3", "qdiabetes_10y_pct": "QDiabetes"}


def true_groups(truth: pl.DataFrame) -> pl.DataFrame:
    broad = {c: group for c, (_, group) in NHS_ETHNIC_CATEGORIES.items()}
    return truth.with_columns(pl.col("ethnicity_true").replace_strict(broad).alias("true_group"))


def features_at_extract(db: Path) -> pl.DataFrame:
    con = connect(db)
    try:
        con.execute("begin transaction")
        build(con, extract_date(con))
        return con.execute("select * from marts.mart_patient_features").pl()
    finally:
        con.execute("rollback")
        con.close()


def equity_table(features: pl.DataFrame, truth: pl.DataFrame, result) -> list[dict]:
    """Per outcome and true broad group: mean truth, comparator and model risk, and their ratios to White."""
    scores = score_features(features).select("patient_id", *COMPARATOR_LABEL)
    features = features.join(scores, on="patient_id")
    rows = []
    for outcome_result in result.outcomes:
        outcome = outcome_result.outcome
        candidate = outcome_result.candidate
        eligible = features.filter(outcome.eligible(features))
        risk = predict_risk(candidate.estimator, model_inputs(eligible, candidate.variant))
        # the truth's need now: the 10-year risk, or 1 where T2D or hypertension is present undiagnosed
        joined = eligible.with_columns(pl.Series("model", risk)).join(
            truth.with_columns(true_need_now(outcome.short).alias("true_need")), on="patient_id")
        comparator = pl.col(outcome.comparator) if outcome.comparator else pl.lit(None, dtype=pl.Float64)
        means = {r["true_group"]: r for r in joined.group_by("true_group").agg(
            pl.len().alias("patients"), pl.col("true_need").mean().alias("truth"),
            comparator.mean().alias("comparator"), pl.col("model").mean().alias("model")).iter_rows(named=True)}
        white = means["White"]
        for group in BROAD_GROUPS:
            m = means.get(group)
            if m is None:
                continue

            def ratio(key, m=m, white=white):
                return m[key] / white[key] if m[key] is not None and white[key] else None

            truth_ratio, model_ratio = ratio("truth"), ratio("model")
            rows.append({
                "outcome": outcome.short, "group": group, "patients": m["patients"],
                "model": f"{candidate.kind} ({candidate.variant})",
                "comparator": COMPARATOR_LABEL.get(outcome.comparator),
                "truth_ratio": truth_ratio, "comparator_ratio": ratio("comparator"), "model_ratio": model_ratio,
                "tracks": model_ratio / truth_ratio if truth_ratio else None,
                "comparator_tracks": ratio("comparator") / truth_ratio if truth_ratio and ratio("comparator") else None,
            })
    return rows


def not_stated_shift(features: pl.DataFrame, truth: pl.DataFrame, result) -> list[dict]:
    """How much a patient's published risk moves if they had declined to state their ethnicity:
    per true group, among patients with a recorded broad group, the risk recomputed as 'not
    stated' (the validated score's inputs too) over the risk as recorded. The truth does not
    move, so any shift is error."""
    from phm.ethnicity import NOT_STATED, QRISK3_ETHRISK

    recorded = features.filter(pl.col("ethnicity_group").is_in(list(BROAD_GROUPS)))
    declined = recorded.with_columns(pl.lit(NOT_STATED).alias("ethnicity_category"),
                                     pl.lit("Not stated").alias("ethnicity_group"),
                                     pl.lit(QRISK3_ETHRISK[NOT_STATED]).cast(recorded.schema["qrisk3_ethrisk"])
                                     .alias("qrisk3_ethrisk"))
    rows = []
    for outcome_result in result.outcomes:
        outcome, candidate = outcome_result.outcome, outcome_result.candidate
        eligible = outcome.eligible(recorded)
        as_recorded = predict_risk(candidate.estimator, model_inputs(recorded.filter(eligible), candidate.variant))
        as_declined = predict_risk(candidate.estimator, model_inputs(declined.filter(eligible), candidate.variant))
        shift = recorded.filter(eligible).select("patient_id").with_columns(
            pl.Series("shift", as_declined / as_recorded)).join(truth, on="patient_id")
        for r in shift.group_by("true_group").agg(
                pl.len().alias("patients"), pl.col("shift").mean().alias("mean"),
                pl.col("shift").quantile(0.05).alias("p5"), pl.col("shift").quantile(0.95).alias("p95")
                ).sort("true_group").iter_rows(named=True):
            rows.append({"outcome": outcome.short, "group": r["true_group"], "patients": r["patients"],
                         "mean_ratio": r["mean"], "p5": r["p5"], "p95": r["p95"]})
    return rows


def validation_calibration(truth: pl.DataFrame, result) -> list[dict]:
    """Per outcome and true group on the validation practices: Kaplan-Meier observed risk over
    the horizon (censored at death or leaving), the model's mean risk, the true net risk."""
    rows = []
    horizon = result.config.horizon_years
    for outcome_result in result.outcomes:
        short = outcome_result.outcome.short
        frame = outcome_result.validation_frame.with_columns(
            pl.Series("model", outcome_result.candidate.predictions)).join(truth, on="patient_id")
        for group in BROAD_GROUPS:
            g = frame.filter(pl.col("true_group") == group)
            if g.is_empty():
                continue
            observed, se = kaplan_meier_risk(g["recorded_outcome"].to_numpy(), g["followup_years"].to_numpy(), horizon)
            rows.append({"outcome": short, "group": group, "patients": g.height,
                         "events": int(g["recorded_outcome"].sum()), "km_observed": observed, "km_se": se,
                         "model_mean": float(g["model"].mean()),
                         "true_net_risk": float(g[f"true_risk_{TRUTH_NAME[short]}_horizon"].mean())})
    return rows


def generator_check(truth: pl.DataFrame) -> list[dict]:
    rows = []
    for name in ("cvd", "t2d", "htn"):
        stated = pl.col(f"true_cuminc_{name}_horizon")
        for r in truth.group_by("true_group").agg(
                pl.col(f"{name}_event").sum().alias("observed"), stated.sum().alias("expected"),
                (stated * (1 - stated)).sum().alias("variance")).sort("true_group").iter_rows(named=True):
            rows.append({"outcome": name, "group": r["true_group"], "observed": r["observed"],
                         "expected": r["expected"], "z": (r["observed"] - r["expected"]) / np.sqrt(r["variance"])})
    return rows
