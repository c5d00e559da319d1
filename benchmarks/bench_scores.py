"""Benchmark: QRISK3-2017 and QDiabetes-2018 on 1M patients (prints figures, writes JSON).

    uv run --group bench python benchmarks/bench_scores.py [--patients 1000000]

Targets (issue 3): each score for 1M patients in at most 1 second on 2 cores. Also times the
PyPI package cvd-risk (per patient, on a sample) for a speed ratio only: its results do not
match ClinRisk's published vectors.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import time
import warnings
from pathlib import Path

import numpy as np
import polars as pl

from models.scores import qdiabetes, qrisk3

ROOT = Path(__file__).resolve().parents[1]


def inputs(n: int, seed: int = 1) -> pl.DataFrame:
    """Plausible inputs in ClinRisk's names: a mix of everything, some values missing."""
    rng = np.random.default_rng(seed)
    binary = lambda p: (rng.uniform(size=n) < p).astype(np.int8)  # noqa: E731
    frame = pl.DataFrame({
        "sex": rng.choice(["F", "M"], n), "age": rng.integers(25, 85, n),
        "bmi": rng.normal(27, 5, n), "rati": rng.normal(4, 1, n), "sbp": rng.normal(130, 18, n),
        "sbps5": rng.gamma(4, 2.5, n), "town": rng.normal(0, 3, n),
        "ethrisk": rng.integers(1, 10, n), "smoke_cat": rng.integers(0, 5, n),
        "b_AF": binary(0.03), "b_atypicalantipsy": binary(0.01), "b_corticosteroids": binary(0.02),
        "b_impotence2": binary(0.03), "b_migraine": binary(0.08), "b_ra": binary(0.01),
        "b_renal": binary(0.03), "b_semi": binary(0.01), "b_sle": binary(0.002),
        "b_treatedhyp": binary(0.15), "b_type1": binary(0.005), "b_type2": binary(0.06),
        "fh_cvd": binary(0.12), "b_cvd": binary(0.04), "b_gestdiab": binary(0.01),
        "b_learning": binary(0.005), "b_manicschiz": binary(0.01), "b_pos": binary(0.02),
        "b_statin": binary(0.15), "fh_diab": binary(0.15),
        "fbs": np.where(rng.uniform(size=n) < 0.1, rng.normal(5.2, 0.5, n), np.nan),
        "hba1c": np.where(rng.uniform(size=n) < 0.3, rng.normal(38, 4, n), np.nan),
    })
    bmi_missing = pl.Series(rng.uniform(size=n) < 0.1)
    return frame.with_columns(pl.when(bmi_missing).then(None).otherwise(pl.col("bmi")).alias("bmi"),
                              pl.col("fbs", "hba1c").fill_nan(None))


def best_of(fn, frame: pl.DataFrame, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(frame)
        times.append(time.perf_counter() - start)
    return min(times)


def cvd_risk_seconds_per_patient(frame: pl.DataFrame, sample: int) -> float | None:
    try:
        from cvd_risk.core.validation import PatientData
        from cvd_risk.models.qrisk3 import QRISK3
    except ImportError:
        return None
    # it warns about every patient; silence it so its time is computation, not printing
    logging.getLogger("cvd_risk").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    model = QRISK3()
    rows = frame.head(sample).to_dicts()
    patients = [PatientData(age=int(r["age"]), sex="female" if r["sex"] == "F" else "male",
                            systolic_bp=float(min(max(r["sbp"], 60), 240)), total_cholesterol=5.0,
                            hdl_cholesterol=1.3, smoking=r["smoke_cat"] > 1, bmi=25.0) for r in rows]
    start = time.perf_counter()
    for patient in patients:
        model.calculate(patient)
    return (time.perf_counter() - start) / len(patients)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=2_000, help="patients for cvd-risk")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scores.json")
    args = parser.parse_args()
    frame = inputs(args.patients)
    q3 = best_of(qrisk3, frame)
    qd = best_of(qdiabetes, frame)
    print(f"QRISK3-2017   {args.patients:,} patients: {q3:.3f} s (target <= 1 s)")
    print(f"QDiabetes-2018 {args.patients:,} patients: {qd:.3f} s (target <= 1 s)")
    per_patient = cvd_risk_seconds_per_patient(frame, args.sample)
    ratio = None
    if per_patient is None:
        print("cvd-risk not installed (uv run --group bench ...): no comparison")
    else:
        ratio = per_patient * args.patients / q3
        print(f"cvd-risk QRISK3, per patient on {args.sample:,}: {per_patient * 1e6:.1f} us/patient, "
              f"{per_patient * args.patients:.0f} s for {args.patients:,} extrapolated: ours is {ratio:,.0f}x faster "
              "(speed only: cvd-risk does not reproduce the published vectors)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
    print(f"peak memory {peak:.2f} GB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "scores", "patients": args.patients, "qrisk3_seconds": q3, "qdiabetes_seconds": qd,
        "cvd_risk_seconds_per_patient": per_patient, "speed_ratio_vs_cvd_risk": ratio,
        "peak_rss_gb": peak, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
