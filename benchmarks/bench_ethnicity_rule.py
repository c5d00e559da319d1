"""Benchmark: the rule for conflicting ethnicity codes against the generator's truth (prints figures, writes JSON).

    uv run python benchmarks/bench_ethnicity_rule.py [--patients 20000] [--seeds 1 2 3] [--repeat-codes 1.0]

For each seed and both ethnicity profiles, a synthetic extract with ``ethnicity_repeat_codes``
(further codes of each patient's usual recorded category, as real records repeat it) is read by
``sql/intermediate/int_patient_ethnicity.sql``; the share of patients with a stated category whose
letter and broad group are the true ones is given per true broad group for the rule in use (most
frequent stated category, then latest) and the latest-code rule it replaced, pooled over seeds.
docs/features.md quotes the table; tests/integration/test_ethnicity_rule_truth.py asserts it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import polars as pl

from features.ethnicity_truth import pooled, rule_accuracy
from phm.synth import SynthConfig, generate

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--repeat-codes", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ethnicity_rule.json")
    args = parser.parse_args()
    results = {}
    pl.Config.set_tbl_cols(20)
    pl.Config.set_tbl_width_chars(200)
    for profile in ("england", "diverse_urban"):
        tables = []
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as folder:
                generate(SynthConfig(patients=args.patients, seed=seed, profile=profile,
                                     ethnicity_repeat_codes=args.repeat_codes), Path(folder))
                tables.append(rule_accuracy(Path(folder)))
        table = pooled(tables)
        print(f"\n{profile}: {args.patients:,} patients x seeds {args.seeds}, ethnicity_repeat_codes {args.repeat_codes}")
        print(table.with_columns(pl.col(pl.Float64).round(4)))
        results[profile] = table.to_dicts()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"settings": vars(args) | {"out": str(args.out)}, "results": results}, indent=2) + "\n")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
