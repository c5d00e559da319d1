"""Benchmark: does the published ranking rank ethnic groups as the truth does? (prints a table, writes JSON)

    uv run python benchmarks/bench_equity.py --patients 1000000 [--seed 1] [--profile england]
    uv run python benchmarks/bench_equity.py --published phm-demo     # a finished run's lists

With ``--published``, the ratios are of what ranked the run's lists (``marts.risk_scores``), and
the calibration by true group (Kaplan-Meier observed against the candidate and against
QRISK3/QDiabetes on the same validation patients) is printed as a table.

Generates a synthetic extract, ingests it, trains the models on its history (plain functions,
no Prefect, no MLflow), scores the patients eligible at the extract date with each outcome's
candidate, and compares, per outcome and broad group (the true group from truth/), the mean
risk as a ratio to White's:
- truth: the need at the extract date (``models/fairness/truth.py``, ``true_need_now``): the
  generator's true 10-year risk (``true_risk_<o>_10y_at_extract``), or 1 where type 2 diabetes or
  hypertension is present and undiagnosed (before 2026-12-02: the 10-year risk alone);
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
    TRUTH_NAME,
    equity_table,
    features_at_extract,
    generator_check,
    not_stated_shift,
    true_groups,
    validation_calibration,
)
from models.fairness.truth import true_need_now
from models.hazard import kaplan_meier_risk
from models.train import TrainingConfig, train_all
from models.training_data import training_data
from phm.ingest import ingest
from phm.synth import SynthConfig, generate

ROOT = Path(__file__).resolve().parents[1]


def fmt(value, spec=".2f"):
    return "-" if value is None else format(value, spec)


PUBLISHED = {  # outcome -> (the validated score, the published ranking's risk); the truth: true_need_now
    "cvd": ("qrisk3_10y_pct", "cvd_model_risk"),
    "t2d": ("qdiabetes_10y_pct", "t2d_model_risk"),
    "hypertension": (None, "hypertension_model_risk"),
}


def published_table(run: Path) -> list[dict]:
    """The same ratios for a finished pipeline run (``phm demo`` or ``phm run`` on a synthetic
    extract): the scores the lists were ranked by (``marts.risk_scores``: the champion models, as
    the gate let them), against the truth of ``<run>/extract/truth``."""
    import duckdb

    con = duckdb.connect(str(run / "phm.duckdb"), read_only=True)
    try:
        scores = con.execute("select * from marts.risk_scores").pl()
    finally:
        con.close()
    truth = true_groups(pl.read_parquet(run / "extract" / "truth" / "patients.parquet"))
    group = "true_group" if "true_group" in truth.columns else "group"
    joined = scores.join(truth, on="patient_id")
    rows = []
    for outcome, (standard, model) in PUBLISHED.items():
        scored = joined.filter(pl.col(model).is_not_null())
        means = scored.group_by(group).agg(
            pl.len().alias("n"), true_need_now(outcome).alias("truth").mean(), pl.col(model).mean().alias("model"),
            (pl.col(standard).mean() if standard else pl.lit(None, dtype=pl.Float64)).alias("standard"))
        white = means.filter(pl.col(group) == "White").row(0, named=True)
        for r in means.sort(group).iter_rows(named=True):
            if r[group] == "White":
                continue
            truth_ratio, model_ratio = r["truth"] / white["truth"], r["model"] / white["model"]
            rows.append({"outcome": outcome, "group": r[group], "patients": r["n"], "truth_ratio": truth_ratio,
                         "comparator_ratio": r["standard"] / white["standard"] if standard else None,
                         "model_ratio": model_ratio, "tracks": model_ratio / truth_ratio})
    return rows


def published_calibration(run: Path, horizon_years: float) -> list[dict]:
    """Per outcome and true group, on the validation practices of a finished run
    (``models.validation_predictions``: the candidate the gate judged, and the validated score on
    the same patients): Kaplan-Meier observed risk over the horizon (censored at death or
    leaving, Greenwood's standard error), each ranking's mean predicted risk and its ratio to the
    observed (1 = calibrated for the group), and the truth's net risk over the horizon. Also which
    ranking the run's list used (``marts.risk_scores``: the model, or the validated score under do
    no harm)."""
    import duckdb

    con = duckdb.connect(str(run / "phm.duckdb"), read_only=True)
    try:
        validation = con.execute("select patient_id, outcome, predicted_risk, comparator_risk, recorded_outcome, "
                                 "followup_years from models.validation_predictions where is_candidate").pl()
        ranked_by = dict(con.execute("select * from (select 'cvd', any_value(cvd_model_name) from marts.risk_scores) "
                                     "union all select 't2d', any_value(t2d_model_name) from marts.risk_scores "
                                     "union all select 'hypertension', any_value(hypertension_model_name) "
                                     "from marts.risk_scores").fetchall())
    finally:
        con.close()
    truth = true_groups(pl.read_parquet(run / "extract" / "truth" / "patients.parquet"))
    frame = validation.join(truth, on="patient_id")
    rows = []
    for outcome in PUBLISHED:
        for group in ("White", *[g for g in sorted(frame["true_group"].unique()) if g != "White"]):
            g = frame.filter((pl.col("outcome") == outcome) & (pl.col("true_group") == group))
            if g.is_empty():
                continue
            observed, se = kaplan_meier_risk(g["recorded_outcome"].to_numpy(), g["followup_years"].to_numpy(),
                                             horizon_years)
            model = float(g["predicted_risk"].mean())
            scored = g.filter(pl.col("comparator_risk").is_not_null() & pl.col("comparator_risk").is_not_nan())
            standard = float(scored["comparator_risk"].mean()) if scored.height else None
            rows.append({"outcome": outcome, "group": group, "patients": g.height,
                         "events": int(g["recorded_outcome"].sum()), "km_observed": observed, "km_se": se,
                         "model_mean": model, "model_over_observed": model / observed if observed else None,
                         "standard_patients": scored.height, "standard_mean": standard,
                         "standard_over_observed": standard / observed if standard is not None and observed else None,
                         "true_net_risk": float(g[f"true_risk_{TRUTH_NAME[outcome]}_horizon"].mean()),
                         "list_ranked_by": ranked_by.get(outcome)})
    return rows


def print_calibration(rows: list[dict]) -> None:
    print("\nvalidation practices, by true group: Kaplan-Meier observed risk over the horizon against each "
          "ranking's mean (over observed: 1 is calibrated)")
    print("\n| outcome | group | patients | events | Kaplan-Meier (se) | candidate | over observed | "
          "QRISK3 / QDiabetes | over observed | truth | list ranked by |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['outcome']} | {r['group']} | {r['patients']:,} | {r['events']:,} | "
              f"{r['km_observed']:.4f} ({r['km_se']:.4f}) | {r['model_mean']:.4f} | {fmt(r['model_over_observed'])} | "
              f"{fmt(r['standard_mean'], '.4f')} | {fmt(r['standard_over_observed'])} | {r['true_net_risk']:.4f} | "
              f"{r['list_ranked_by']} |")


def print_table(table: list[dict]) -> None:
    print(f"\n| outcome | group | patients | truth | {'/'.join(sorted(set(COMPARATOR_LABEL.values())))} | published model | tracks |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in table:
        print(f"| {r['outcome']} | {r['group']} | {r['patients']:,} | {fmt(r['truth_ratio'])} | "
              f"{fmt(r['comparator_ratio'])} | {fmt(r['model_ratio'])} | {fmt(r['tracks'])} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--published", type=Path, metavar="RUN",
                        help="only compare a finished run's published scores (e.g. phm-demo) with its truth")
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", default="england")
    parser.add_argument("--horizon", type=float, default=TrainingConfig().horizon_years,
                        help="with --published: the run's training horizon in years (default: the default's)")
    parser.add_argument("--work", type=Path, help="folder for the extract and database (default: a temporary one)")
    args = parser.parse_args()
    if args.published:
        table = published_table(args.published)
        print_table(table)
        calibration = published_calibration(args.published, args.horizon)
        print_calibration(calibration)
        out = ROOT / "benchmarks" / "results" / f"equity-published-{args.published.name}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps({"run": str(args.published), "equity": table,
                                   "validation_calibration": calibration}, indent=2) + "\n")
        print(f"wrote {out}")
        return
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
    print_table(table)
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
