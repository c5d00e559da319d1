"""Benchmark: does the published ranking rank ethnic groups as the truth does? (prints a table, writes JSON)

    uv run python benchmarks/bench_equity.py --patients 1000000 [--seed 1] [--profile england]

Generates a synthetic extract, ingests it, trains the models on its history (plain functions,
no Prefect, no MLflow), scores the patients eligible at the extract date with each outcome's
candidate, and compares, per outcome and broad group (the true group from truth/), the mean
risk as a ratio to White's:
- truth: the generator's true 10-year risk at the extract date (``true_risk_<o>_10y_at_extract``);
- QRISK3 (CVD) or QDiabetes (type 2 diabetes), 10-year;
- the published model (the candidate the gate would be asked about), over its horizon.
A ratio is scale-free, so the 10-year and 5-year risks compare. "tracks" is the model's ratio
over the true ratio (1 = ranks the group as the truth does; issue 22 asks for 0.75-1.25).
No bias knob is set. Also the generator's own check (events against the sum of its stated
cumulative incidences) and each group's calibration on the validation practices against
Kaplan-Meier observed risk. Results in benchmarks/results/equity-<patients>-<seed>-<profile>.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from features.build import build
from features.run import connect, extract_date
from models.hazard import kaplan_meier_risk
from models.score_patients import score_features
from models.train import TrainingConfig, model_inputs, predict_risk, train_all
from models.training_data import training_data
from phm.ethnicity import BROAD_GROUPS, NHS_ETHNIC_CATEGORIES
from phm.ingest import ingest
from phm.synth import SynthConfig, generate

ROOT = Path(__file__).resolve().parents[1]
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
        true_column = f"true_risk_{TRUTH_NAME[outcome.short]}_10y_at_extract"
        joined = eligible.with_columns(pl.Series("model", risk)).join(truth, on="patient_id")
        comparator = pl.col(outcome.comparator) if outcome.comparator else pl.lit(None, dtype=pl.Float64)
        means = {r["true_group"]: r for r in joined.group_by("true_group").agg(
            pl.len().alias("patients"), pl.col(true_column).mean().alias("truth"),
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


def fmt(value, spec=".2f"):
    return "-" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", default="england")
    parser.add_argument("--work", type=Path, help="folder for the extract and database (default: a temporary one)")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        extract, db = work / "extract", work / "phm.duckdb"
        print(f"generating {args.patients:,} patients (seed {args.seed}, {args.profile})", flush=True)
        generate(SynthConfig(patients=args.patients, seed=args.seed, profile=args.profile), extract)
        if db.exists():
            db.unlink()
        ingest(extract, db)
        truth = true_groups(pl.read_parquet(extract / "truth" / "patients.parquet"))
        print(f"training ({time.perf_counter() - started:.0f} s)", flush=True)
        result = train_all(training_data(db), TrainingConfig(seed=args.seed), progress=lambda m: print(m, flush=True))
        print(f"scoring at the extract date ({time.perf_counter() - started:.0f} s)", flush=True)
        table = equity_table(features_at_extract(db), truth, result)
        calibration = validation_calibration(truth, result)
        generator = generator_check(truth)
    seconds = time.perf_counter() - started
    print(f"\n| outcome | group | patients | truth | {'/'.join(sorted(set(COMPARATOR_LABEL.values())))} | published model | tracks |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in table:
        print(f"| {r['outcome']} | {r['group']} | {r['patients']:,} | {fmt(r['truth_ratio'])} | "
              f"{fmt(r['comparator_ratio'])} | {fmt(r['model_ratio'])} | {fmt(r['tracks'])} |")
    print("\nvalidation practices, by true group: Kaplan-Meier observed risk vs the model's mean risk")
    for r in calibration:
        print(f"  {r['outcome']:<13}{r['group']:<7} n={r['patients']:>8,} events={r['events']:>6,} "
              f"KM {r['km_observed']:.4f} (se {r['km_se']:.4f})  model {r['model_mean']:.4f}  true {r['true_net_risk']:.4f}")
    worst = max(abs(r["z"]) for r in generator)
    print(f"\ngenerator: largest |z| of events against stated cumulative incidence, per group and outcome: {worst:.2f}")
    print(f"total {seconds:.0f} s")
    out = ROOT / "benchmarks" / "results" / f"equity-{args.patients}-{args.seed}-{args.profile}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"patients": args.patients, "seed": args.seed, "profile": args.profile,
                               "seconds": seconds, "equity": table, "validation_calibration": calibration,
                               "generator": generator}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
