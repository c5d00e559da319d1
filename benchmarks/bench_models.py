"""Benchmark: training the risk models on 1M patients, and scoring 1M patients (prints figures, writes JSON).

    uv run python benchmarks/bench_models.py [--db /tmp/phm-bench/phm.duckdb]

Needs a database ingested from a 1M-patient synthetic extract: benchmarks/bench_ingest.py
leaves one at /tmp/phm-bench/phm.duckdb (with the extract, and its truth/, beside it). Works on
a copy. Targets (issue 4): training at most 3 minutes per outcome on 2 cores; scoring 1M
patients at most 10 seconds; peak memory printed. Also prints the model-vs-QRISK3 and
model-vs-QDiabetes comparison on the validation practices, and each model against the
synthetic truth. MLflow is the embedded SQLite store beside the copy.
"""

from __future__ import annotations

import json
import logging
import resource
import shutil
import time

import numpy as np
import polars as pl
from ingested import arguments  # benchmarks/ingested.py

from features.build import build
from models.score_models import score_models
from models.score_patients import score_patients
from models.tracking import comparison_markdown, tracking_location, truth_metrics
from models.train import TrainingConfig
from models.training_run import run_training
from phm.db import connect, extract_date


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024


def main() -> None:
    args = arguments(__doc__.splitlines()[0], "models.json")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    folder = args.db.parent / "models-bench"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    work = folder / "phm.duckdb"
    shutil.copy(args.db, work)
    truth = args.db.parent / "extract" / "truth"

    def progress(message: str) -> None:
        print(f"  [{time.strftime('%H:%M:%S')}] {message}", flush=True)

    con = connect(work)
    build(con, extract_date(con))
    score_patients(con)
    con.close()

    started = time.perf_counter()
    run = run_training(work, TrainingConfig(), truth_dir=truth if truth.is_dir() else None, progress=progress)
    training_total = time.perf_counter() - started
    peak_after_training = peak_gb()
    per_outcome = {}
    shared = run.seconds["training data"] + run.seconds["MLflow and storing"]
    for outcome_result in run.result.outcomes:
        short = outcome_result.outcome.short
        per_outcome[short] = {
            "fit_and_validate_seconds": outcome_result.seconds,
            "with_shared_share_seconds": outcome_result.seconds + shared / len(run.result.outcomes),
            "training_patients": outcome_result.models[0].training_rows,
            "models": {f"{m.kind}/{m.variant}": m.fit_seconds for m in outcome_result.models},
        }

    location = tracking_location(folder)
    started = time.perf_counter()
    scoring = score_models(work, location)
    scoring_seconds = time.perf_counter() - started
    peak = peak_gb()

    print()
    print(f"training data (features at T0 + outcomes): {run.seconds['training data']:.1f} s")
    for short, figures in per_outcome.items():
        print(f"train {short:<13} {figures['fit_and_validate_seconds']:6.1f} s for 4 models on "
              f"{figures['training_patients']:,} patients; with its share of the data build and MLflow "
              f"{figures['with_shared_share_seconds']:6.1f} s (target <= 180 s per outcome)")
    print(f"MLflow logging of 12 models + storing validation predictions: {run.seconds['MLflow and storing']:.1f} s")
    print(f"training total {training_total:.1f} s; peak memory {peak_after_training:.2f} GB")
    print(f"scoring {scoring.patients:,} patients with 3 models + validated scores: {scoring_seconds:.1f} s "
          f"(target <= 10 s); peak memory {peak:.2f} GB")
    print()
    print(comparison_markdown(run.log.comparison))
    against_truth = []
    if truth.is_dir():
        true = pl.read_parquet(truth / "patients.parquet")
        print("Against the synthetic truth (validation practices; true events include unrecorded ones):")
        print(f"{'outcome':<14}{'predictor':<34}{'AUROC true events':>18}{'Spearman true risk':>20}{'pred/true risk':>16}")
        for outcome_result in run.result.outcomes:
            frame = outcome_result.validation_frame
            predictors = {f"{m.kind} ({m.variant})": (frame, m.predictions) for m in outcome_result.models}
            if "comparator_risk" in frame.columns:
                scored = frame.filter(pl.col("comparator_risk").is_not_nan())
                predictors["validated score (5y)"] = (scored, scored["comparator_risk"].to_numpy())
            for label, (rows, predicted) in predictors.items():
                figures = truth_metrics(rows, np.asarray(predicted), true, outcome_result.outcome)
                against_truth.append({"outcome": outcome_result.outcome.short, "predictor": label, **figures})
                print(f"{outcome_result.outcome.short:<14}{label:<34}{figures['truth_auroc_true_events']:>18.3f}"
                      f"{figures['truth_spearman_true_risk']:>20.3f}{figures['truth_predicted_over_true_risk']:>16.2f}")
        print()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "models", "registered_patients": scoring.patients,
        "training_seconds": run.seconds, "training_total_seconds": training_total, "per_outcome": per_outcome,
        "scoring_seconds": scoring_seconds, "peak_rss_gb": peak, "peak_rss_gb_training": peak_after_training,
        "comparison": run.log.comparison, "against_truth": against_truth, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
