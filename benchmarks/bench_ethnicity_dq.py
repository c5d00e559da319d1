"""Benchmark: how often the ethnicity data-quality report flags the right practices (prints figures, writes JSON).

    uv run python benchmarks/bench_ethnicity_dq.py [--patients 20000] [--pcns 4] [--seeds 20]

For each scenario, each seed and both ethnicity profiles (england, diverse_urban), a synthetic
extract is generated with the per-practice knobs of the scenario, read by
``sql/intermediate/int_patient_ethnicity.sql`` (features/ethnicity_truth.py ``dq_frame``) and judged
by phm/ethnicity_dq.py with its defaults (Holm at 0.05 over practices x indicators, at least 5
practices). Counted against truth/planted.json: planted practices flagged (per knob), and
practices flagged that were not planted (false flags), with the runs that had any.

Scenarios (hospital records for half the patients unless said):
- ``clean``: no practice planted.
- ``planted``: Z10002 records no ethnicity for 35% (``ethnicity_unrecorded_practice``), Z10005
  misrecords 30% of categories (``ethnicity_misrecording_practice``).
- ``weaker``: 25% unrecorded and 15% misrecorded.
- ``faint``: 20% unrecorded (against 15% elsewhere) and 5% misrecorded: where detection fades.
- ``planted, no hospital records``: as ``planted`` without the second source.
docs/ethnicity.md quotes the table; tests/integration/test_ethnicity_dq_truth.py asserts it on 4 seeds.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

from features.ethnicity_benchmark import census_benchmark
from features.ethnicity_truth import dq_frame
from phm.ethnicity_dq import assess
from phm.synth import SynthConfig, generate

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = {
    "clean": ({}, {}, 0.5),
    "planted": ({"Z10002": 0.35}, {"Z10005": 0.30}, 0.5),
    "weaker": ({"Z10002": 0.25}, {"Z10005": 0.15}, 0.5),
    "faint": ({"Z10002": 0.20}, {"Z10005": 0.05}, 0.5),
    "planted, no hospital records": ({"Z10002": 0.35}, {"Z10005": 0.30}, 0.0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=20_000)
    parser.add_argument("--pcns", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ethnicity_dq.json")
    args = parser.parse_args()
    benchmark, source = census_benchmark()
    results = []
    started = time.perf_counter()
    print(f"{args.patients:,} patients, {args.pcns} PCNs, seeds 1-{args.seeds}, profiles england and diverse_urban")
    print(f"{'scenario':<30}{'profile':<15}{'runs':>5}{'unrecorded found':>18}{'misrecorded found':>19}"
          f"{'false flags':>13}{'runs with one':>15}")
    for scenario, (unrecorded, misrecorded, hospital) in SCENARIOS.items():
        for profile in ("england", "diverse_urban"):
            found = Counter()
            false_flags, runs_with_false, practices, reasons = 0, 0, 0, Counter()
            for seed in range(1, args.seeds + 1):
                with tempfile.TemporaryDirectory() as folder:
                    generate(SynthConfig(patients=args.patients, seed=seed, profile=profile, pcns=args.pcns,
                                         hospital_ethnicity=hospital, ethnicity_unrecorded_practice=unrecorded,
                                         ethnicity_misrecording_practice=misrecorded), Path(folder))
                    frame, labels = dq_frame(Path(folder))
                dq = assess(frame, benchmark, source, labels)
                practices += len(labels)
                flagged = {labels[u] for u in dq.flagged_units()}
                for j in dq.flags:
                    reasons[f"{'planted' if labels[j.unit] in {*unrecorded, *misrecorded} else 'not planted'}: "
                            f"{j.indicator}"] += 1
                found["unrecorded"] += bool(set(unrecorded) & flagged)
                found["misrecorded"] += bool(set(misrecorded) & flagged)
                wrong = flagged - set(unrecorded) - set(misrecorded)
                false_flags += len(wrong)
                runs_with_false += bool(wrong)
            row = {"scenario": scenario, "profile": profile, "runs": args.seeds, "practices": practices,
                   "unrecorded_found": found["unrecorded"] if unrecorded else None,
                   "misrecorded_found": found["misrecorded"] if misrecorded else None,
                   "false_flags": false_flags, "runs_with_a_false_flag": runs_with_false,
                   "flags_by_reason": dict(sorted(reasons.items()))}
            results.append(row)

            def share(k, row=row):
                return "-" if row[k] is None else f"{row[k]}/{args.seeds}"

            print(f"{scenario:<30}{profile:<15}{args.seeds:>5}{share('unrecorded_found'):>18}"
                  f"{share('misrecorded_found'):>19}{false_flags:>13}{runs_with_false:>15}")
    seconds = time.perf_counter() - started
    print(f"\n{seconds:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"settings": vars(args) | {"out": str(args.out)}, "benchmark": source,
                                    "seconds": round(seconds, 1), "results": results}, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
