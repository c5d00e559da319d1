"""Benchmark: what hypertension's training events are, and what they do to each group's O/E (prints a table, writes JSON)

    uv run python benchmarks/bench_htn_label_mix.py --patients 300000 [--seed 42] [--profile england]
    uv run python benchmarks/bench_htn_label_mix.py --extract EXTRACT --db phm.duckdb   # reuse both

Why it exists (issue 22; docs/models.md, "Why hypertension's training O/E sits below 1"): with no
bias planted, the hypertension models' training events for Black patients came out below what
the model with the published effect expected (O/E 0.92 at 1M patients), and the group update
moved the published effect down. The label is a *recorded* new diagnosis in the horizon, and
some of those diagnoses are hypertension that was already present at T0 and found later (the
generator's diagnosis gap; real practices have one too). The published effect (REGARDS, whose
participants were hypertension-free by measurement at baseline) describes new hypertension only.

For a synthetic extract (no bias knob set) this prints, per broad group (as the models read it,
the ethnicity known at the extract date):
- the patients at risk in training and their recorded new diagnoses, split by the truth into
  hypertension truly present at T0 and found later, and new hypertension;
- each hypertension model's training O, E and O/E against the published effect (what the group
  update reads, ``group_observed_expected_``), with a 95% interval, and its update d;
- the same after taking out of the at-risk set the patients in whom the truth says hypertension was
  already present at T0 (a diagnostic only: a real record cannot tell them apart);
- the same after taking out those whose record at T0 shows a sign of hypertension (the latest
  reading at or above 140/90, or an antihypertensive): a candidate remedy a real record allows.
Plain functions: no Prefect, no MLflow. Results in
benchmarks/results/htn-label-mix-<patients>-<seed>-<profile>.json (aggregates of hundreds of
patients or more; no patient-level value).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import tempfile
import time
from pathlib import Path

import polars as pl

from models.train import OUTCOME_BY_SHORT, TrainingConfig, train_all
from models.training_data import TrainingData, training_data
from phm.ingest import ingest
from phm.synth import SynthConfig, generate

ROOT = Path(__file__).resolve().parents[1]
HYPERTENSION = OUTCOME_BY_SHORT["hypertension"]
GROUPS = ("White", "Asian", "Black", "Mixed", "Other")


def label_mix(frame: pl.DataFrame, truth: pl.DataFrame) -> list[dict]:
    """Per broad group: patients at risk of hypertension in training, their recorded new diagnoses,
    and how many of those the truth says were hypertension already present at T0."""
    at_risk = frame.filter(HYPERTENSION.eligible(frame)).join(
        truth.select("patient_id", "hypertension_true_past_index"), on="patient_id", how="left")
    present = pl.col("hypertension_true_past_index").fill_null(False)
    table = at_risk.group_by("ethnicity_group").agg(
        at_risk=pl.len(),
        present_at_t0=present.sum(),
        events=pl.col("hypertension_event").sum(),
        events_present_at_t0=(pl.col("hypertension_event") & present).sum(),
    ).filter(pl.col("ethnicity_group").is_in(GROUPS))
    rows = []
    for r in table.iter_rows(named=True):
        r["share_of_events_present_at_t0"] = r["events_present_at_t0"] / r["events"] if r["events"] else None
        rows.append(r)
    return sorted(rows, key=lambda r: GROUPS.index(r["ethnicity_group"]))


def training_observed_expected(frame: pl.DataFrame, index_date, horizon_years: int) -> dict:
    """Hypertension alone, trained as the pipeline trains it: per model kind, each group's O and E
    (the model with the published effects, before the group's update) and the update d."""
    started = time.perf_counter()
    result = train_all(TrainingData(index_date, horizon_years, frame), TrainingConfig(),
                       outcomes=[HYPERTENSION])
    kinds = {}
    for model in result.outcomes[0].models:
        estimator = model.estimator
        figures = getattr(estimator, "group_observed_expected_", None)
        if not figures:
            continue
        kinds[f"{model.kind} ({model.variant})"] = {
            group: {"observed": o, "expected": e, "o_e": o / e if e else None,
                    # 95% interval of O/E with E taken as known (Poisson O, log scale)
                    "o_e_low": o / e * math.exp(-1.96 / math.sqrt(o)) if o and e else None,
                    "o_e_high": o / e * math.exp(1.96 / math.sqrt(o)) if o and e else None,
                    "update": estimator.group_update_.get(group)}
            for group, (o, e) in figures.items() if group in GROUPS}
    return {"seconds": round(time.perf_counter() - started, 1),
            "candidate": f"{result.outcomes[0].candidate.kind} ({result.outcomes[0].candidate.variant})",
            "kinds": kinds}


def without_present_at_t0(frame: pl.DataFrame, truth: pl.DataFrame) -> pl.DataFrame:
    """The frame without the patients at risk of hypertension in whom the truth says it was already
    present at T0 (they leave every outcome's rows: only hypertension is trained on it)."""
    marked = frame.with_columns(at_risk=HYPERTENSION.eligible(frame)).join(
        truth.select("patient_id", "hypertension_true_past_index"), on="patient_id", how="left")
    present = pl.col("hypertension_true_past_index").fill_null(False)
    return marked.filter(~(present & pl.col("at_risk"))).drop("at_risk", "hypertension_true_past_index").sort("patient_id")


def without_a_sign_at_t0(frame: pl.DataFrame) -> pl.DataFrame:
    """The frame without the patients at risk of hypertension whose record at T0 shows a sign of it:
    the latest reading (5 years) at or above NICE NG136's clinic threshold of 140/90, or an
    antihypertensive issued. What a real record can do (REGARDS defined hypertension-free by
    measurement and medication at baseline); a candidate remedy, measured here, not the pipeline's."""
    sign = ((pl.col("sbp_mmhg") >= 140) | (pl.col("dbp_mmhg") >= 90)).fill_null(False) | pl.col(
        "on_antihypertensives").fill_null(False)
    return frame.with_columns(at_risk=HYPERTENSION.eligible(frame)).filter(
        ~(sign & pl.col("at_risk"))).drop("at_risk")


def fmt(value, spec=".3f"):
    return "-" if value is None else format(value, spec)


def print_fits(title: str, fits: dict) -> None:
    print(f"\n{title} ({fits['seconds']} s; candidate {fits['candidate']})")
    print(f"  {'model':<34} {'group':<6} {'O':>8} {'E':>9} {'O/E':>6} {'95% interval':>14} {'update d':>9}")
    for kind, groups in fits["kinds"].items():
        for group in GROUPS:
            g = groups.get(group)
            if g:
                print(f"  {kind:<34} {group:<6} {g['observed']:>8.0f} {g['expected']:>9.1f} {fmt(g['o_e']):>6} "
                      f"{fmt(g['o_e_low'], '.2f'):>6}-{fmt(g['o_e_high'], '.2f'):<6} {fmt(g['update'], '+.3f'):>9}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=300_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--profile", default="england")
    parser.add_argument("--extract", type=Path, help="an extract the generator wrote (with truth/); default: generate one")
    parser.add_argument("--db", type=Path, help="that extract already ingested (default: ingest it)")
    parser.add_argument("--work", type=Path, help="folder for the extract and database (default: a temporary one)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        extract = args.extract or work / "extract"
        if args.extract is None:
            print(f"generating {args.patients:,} patients, seed {args.seed}, {args.profile} ...", flush=True)
            generate(SynthConfig(patients=args.patients, seed=args.seed, profile=args.profile), extract)
        meta = json.loads((extract / "extract.json").read_text()) if (extract / "extract.json").exists() else {}
        db = args.db or work / "phm.duckdb"
        if args.db is None:
            print("ingesting ...", flush=True)
            ingest(extract, db)
        print("building the training data ...", flush=True)
        data = training_data(db)
        truth = pl.read_parquet(extract / "truth" / "patients.parquet")
        mix = label_mix(data.frame, truth)
        print("\nhypertension in training: recorded new diagnoses, and those the truth says were present at T0")
        print(f"  {'group':<6} {'at risk':>9} {'present at T0':>14} {'events':>7} {'of which present at T0':>23} {'share':>6}")
        for r in mix:
            print(f"  {r['ethnicity_group']:<6} {r['at_risk']:>9,} {r['present_at_t0']:>14,} {r['events']:>7,} "
                  f"{r['events_present_at_t0']:>23,} {fmt(r['share_of_events_present_at_t0'], '.2f'):>6}")
        as_pipeline = training_observed_expected(data.frame, data.index_date, data.horizon_years)
        print_fits("training O/E against the published effects, as the pipeline trains", as_pipeline)
        diagnostic = training_observed_expected(without_present_at_t0(data.frame, truth), data.index_date,
                                                data.horizon_years)
        print_fits("the same without the patients in whom hypertension was already present at T0 (truth)", diagnostic)
        no_sign = without_a_sign_at_t0(data.frame)
        remedy = training_observed_expected(no_sign, data.index_date, data.horizon_years)
        remedy["label_mix"] = label_mix(no_sign, truth)
        print_fits("the same without the patients whose record at T0 shows a sign of hypertension "
                   "(reading >= 140/90 or an antihypertensive)", remedy)
        print("  share of events present at T0 then: " + ", ".join(
            f"{r['ethnicity_group']} {fmt(r['share_of_events_present_at_t0'], '.2f')} ({r['at_risk']:,} at risk)"
            for r in remedy["label_mix"]))

    seconds = round(time.perf_counter() - started, 1)
    source = re.search(r"seed (\d+), (\d+) patients, profile (\w+)", meta.get("source", ""))
    seed, patients, profile = (int(source[1]), int(source[2]), source[3]) if source else (args.seed, args.patients, args.profile)
    out = args.out or ROOT / "benchmarks" / "results" / f"htn-label-mix-{patients}-{seed}-{profile}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"patients": patients, "seed": seed, "profile": profile,
                               "extract": meta, "label_mix": mix, "as_pipeline": as_pipeline,
                               "without_present_at_t0": diagnostic,
                               "without_a_sign_at_t0": remedy, "seconds": seconds}, indent=2, default=str))
    print(f"\n{seconds} s; wrote {out}")


if __name__ == "__main__":
    main()
