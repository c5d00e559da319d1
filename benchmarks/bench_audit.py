"""Benchmark: the full fairness audit of 1M scored patients with 1,000 bootstrap replicates,
against fairlearn's MetricFrame bootstrap on the same data (prints figures, writes JSON).

    uv run python benchmarks/bench_audit.py [--patients 1000000] [--replicates 1000]

The scored table is simulated (ethnic groups in England's 2021 census shares with 'Not stated'
and 'Not known', IMD quintile, sex, a calibrated risk, the outcome drawn from it, a need count,
the list as the top 10%), so the benchmark needs no database. "Full audit" is what
``phm audit --scores`` does: every grouping (ethnicity; IMD quintile; sex; ethnicity x IMD;
ethnicity x sex; ethnicity x IMD x sex) with every figure and interval, the gate, and the HTML
and JSON report. Target (issue 5): at most 30 s on 2 cores. fairlearn's MetricFrame with
n_boot refits every metric per replicate on 1M rows; it is timed on a few replicates (ethnicity
only, operating-point metrics only) and scaled to 1,000.

The figures are timed on one thread and on two (models/fairness/_audit.py ``BOOTSTRAP_THREADS``;
alternated, ``--pairs`` times, medians printed) and a digest of every figure and group (their
bits) is printed for each: the two must be equal, and equal to the digest of the code before an
optimisation on the same table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from models.fairness import AuditReport, AuditSettings, audit_score, ethnicity_quality, judge

ROOT = Path(__file__).resolve().parents[1]
GROUPS = {"White": 0.78, "Asian": 0.08, "Black": 0.035, "Mixed": 0.025, "Other": 0.02,
          "Not stated": 0.02, "Not known": 0.04}


def simulated(patients: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    group = rng.choice(np.array(list(GROUPS)), size=patients, p=np.array(list(GROUPS.values())))
    lp = rng.normal(-3.2, 1.1, patients)
    risk = 1 / (1 + np.exp(-lp))
    outcome = (rng.random(patients) < risk).astype(np.int8)
    score = np.clip(risk * np.exp(rng.normal(0, 0.1, patients)), 0, 1)
    threshold = float(np.quantile(score, 0.9))
    return pl.DataFrame({
        "group": group, "imd_quintile": rng.integers(1, 6, patients).astype(str),
        "sex": rng.choice(np.array(["female", "male"]), size=patients), "score": score, "outcome": outcome,
        "need": rng.poisson(0.5 + 4 * risk), "selected": score >= threshold})


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024


def digest(audit) -> str:
    """Every figure and group of the audit, bit for bit (floats by their bytes)."""
    h = hashlib.sha256()
    for frame in (audit.figures, audit.groups):
        for column in frame.columns:
            values = frame[column]
            h.update(column.encode())
            h.update(values.to_numpy().tobytes() if values.dtype == pl.Float64 else repr(values.to_list()).encode())
    return h.hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1_000_000)
    parser.add_argument("--replicates", type=int, default=1000)
    parser.add_argument("--fairlearn-replicates", type=int, default=3, help="0: no fairlearn comparison")
    parser.add_argument("--pairs", type=int, default=2, help="figures timed on one thread and on two, alternated")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "audit.json")
    args = parser.parse_args()
    table = simulated(args.patients)
    settings = AuditSettings(replicates=args.replicates)
    columns = ["group", "imd_quintile", "sex", "score", "selected"]
    threshold = float(table.filter(pl.col("selected"))["score"].min())

    from models.fairness import _audit

    default_threads = _audit.BOOTSTRAP_THREADS
    seconds: dict[int, list[float]] = {1: [], 2: []}
    digests: dict[int, set[str]] = {1: set(), 2: set()}
    for _ in range(args.pairs):
        for threads in (1, 2):
            _audit.BOOTSTRAP_THREADS = threads
            started = time.perf_counter()
            audit = audit_score("benchmark", table.select(*columns, "outcome"), table.select(*columns, "need"),
                                threshold, settings, high_need_from=2)
            seconds[threads].append(time.perf_counter() - started)
            digests[threads].add(digest(audit))
    _audit.BOOTSTRAP_THREADS = default_threads
    one, two = statistics.median(seconds[1]), statistics.median(seconds[2])
    same = len(digests[1] | digests[2]) == 1
    print(f"figures on one thread {', '.join(f'{x:.1f}' for x in seconds[1])} s (median {one:.1f}), on two "
          f"{', '.join(f'{x:.1f}' for x in seconds[2])} s (median {two:.1f}); figures' digest "
          f"{' / '.join(sorted(digests[1] | digests[2]))}: {'the same' if same else 'DIFFERENT'} on one and two threads")
    started = time.perf_counter()
    audit = audit_score("benchmark", table.select(*columns, "outcome"), table.select(*columns, "need"),
                        threshold, settings, high_need_from=2)
    figures_seconds = time.perf_counter() - started
    gate = judge(audit, settings, ethnicity_quality(table.select("group")).missing_share)
    with tempfile.TemporaryDirectory() as tmp:
        AuditReport("benchmark", settings, [audit], [gate], ethnicity_quality(table.select("group")), {},
                    {}).write(Path(tmp))
    total = time.perf_counter() - started
    groups = audit.groups.height
    print(f"audit of {args.patients:,} scored patients, {args.replicates:,} replicates, {groups} groups "
          f"over {len(audit.groupings('performance'))} groupings: figures {figures_seconds:.1f} s, with gate and report "
          f"{total:.1f} s (target <= 30 s); peak {peak_gb():.2f} GB")
    result = {"patients": args.patients, "replicates": args.replicates, "groups": groups,
              "audit_figures_seconds": round(figures_seconds, 2), "audit_total_seconds": round(total, 2),
              "bootstrap_threads": default_threads, "figures_seconds_one_thread": [round(x, 2) for x in seconds[1]],
              "figures_seconds_two_threads": [round(x, 2) for x in seconds[2]], "figures_digest": sorted(digests[1] | digests[2]),
              "same_figures_on_one_and_two_threads": same, "peak_gb": round(peak_gb(), 2)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.fairlearn_replicates <= 0:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
        return

    from fairlearn.metrics import (
        MetricFrame,
        false_negative_rate,
        selection_rate,
        true_positive_rate,
    )
    from sklearn.metrics import precision_score

    y, predicted = table["outcome"].to_numpy(), table["selected"].cast(pl.Int8).to_numpy()
    started = time.perf_counter()
    MetricFrame(metrics={"selection_rate": selection_rate, "sensitivity": true_positive_rate,
                         "false_negative_rate": false_negative_rate,
                         "ppv": lambda t, p: precision_score(t, p, zero_division=0)},
                y_true=y, y_pred=predicted, sensitive_features=table["group"].to_numpy(),
                n_boot=args.fairlearn_replicates, ci_quantiles=[0.025, 0.975], random_state=0)
    fairlearn_seconds = time.perf_counter() - started
    per_replicate = fairlearn_seconds / args.fairlearn_replicates
    scaled = per_replicate * args.replicates
    print(f"fairlearn MetricFrame, {args.fairlearn_replicates} replicates, ethnicity only, 4 operating-point "
          f"metrics: {fairlearn_seconds:.1f} s = {per_replicate:.2f} s per replicate -> {scaled:,.0f} s for "
          f"{args.replicates:,}; the full audit is {scaled / total:,.0f}x faster")
    result |= {"fairlearn_seconds_per_replicate": round(per_replicate, 3), "fairlearn_scaled_seconds": round(scaled, 1),
               "speedup_vs_fairlearn": round(scaled / total, 1)}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
