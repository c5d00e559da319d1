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

import polars as pl

from models.equity_truth import (
    COMPARATOR_LABEL,
    equity_table,
    features_at_extract,
    generator_check,
    not_stated_shift,
    true_groups,
    validation_calibration,
)
from models.train import TrainingConfig, train_all
from models.training_data import training_data
from phm.ingest import ingest
from phm.synth import SynthConfig, generate

ROOT = Path(__file__).resolve().parents[1]


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
        features = features_at_extract(db)
        table = equity_table(features, truth, result)
        shifts = not_stated_shift(features, truth, result)
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
    print("\nrisk as 'not stated' / risk as recorded, by true group (5th-95th percentile)")
    for r in shifts:
        print(f"  {r['outcome']:<13}{r['group']:<7} n={r['patients']:>8,} mean {r['mean_ratio']:.2f} "
              f"({r['p5']:.2f}-{r['p95']:.2f})")
    worst = max(abs(r["z"]) for r in generator)
    print(f"\ngenerator: largest |z| of events against stated cumulative incidence, per group and outcome: {worst:.2f}")
    print(f"total {seconds:.0f} s")
    out = ROOT / "benchmarks" / "results" / f"equity-{args.patients}-{args.seed}-{args.profile}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"patients": args.patients, "seed": args.seed, "profile": args.profile,
                               "seconds": seconds, "equity": table, "validation_calibration": calibration,
                               "not_stated_shift": shifts,
                               "generator": generator}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
