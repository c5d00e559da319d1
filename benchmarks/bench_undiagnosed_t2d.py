"""How much of each group's prevalent type 2 diabetes the generator leaves undiagnosed, seed by seed.

The gate study's T2D misses at the same score (docs/fairness.md, "On ten more unseen seeds") sit
in small groups, where one to three patients with undiagnosed prevalent diabetes decide the
truth's statistic. This measures, on the generator's truth alone (no pipeline), the share of each
group's prevalent T2D (at the index date) still undiagnosed at the extract date, per seed and
pooled: the generator means it to be the same for every group with no bias planted, so a seed's
group ratio far from 1 is chance. ``--mark`` ranks given seeds by the group's ratio to White.

    uv run python benchmarks/bench_undiagnosed_t2d.py --seeds 40 --group Black --mark 17 22 28 33 39
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from phm.ethnicity import broad_group  # noqa: E402
from phm.synth import SynthConfig, generate  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "undiagnosed_t2d.json"
COLUMNS = ["ethnicity_true", "t2d_true_past_index", "t2d_diagnosed_past_index", "t2d_found_after_index"]


def undiagnosed_by_group(seed: int, patients: int, profile: str) -> dict[str, dict]:
    folder = Path(tempfile.mkdtemp(prefix="phm-undiagnosed-"))
    try:
        generate(SynthConfig(patients=patients, seed=seed, profile=profile), folder)
        truth = pl.read_parquet(folder / "truth" / "patients.parquet", columns=COLUMNS)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    prevalent = truth.filter(pl.col("t2d_true_past_index")).with_columns(
        pl.col("ethnicity_true").map_elements(broad_group, return_dtype=pl.String).alias("group"))
    # undiagnosed at the index date and not found during follow-up: undiagnosed at the extract date
    still_undiagnosed = ~pl.col("t2d_diagnosed_past_index") & ~pl.col("t2d_found_after_index")
    return {r["group"]: {"prevalent": r["prevalent"], "undiagnosed": r["undiagnosed"]}
            for r in prevalent.group_by("group").agg(pl.len().alias("prevalent"),
                                                     still_undiagnosed.sum().alias("undiagnosed")).iter_rows(named=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--patients", type=int, default=20_000)
    parser.add_argument("--profile", default="england")
    parser.add_argument("--group", default="Black")
    parser.add_argument("--mark", type=int, nargs="*", default=[], help="seeds to rank by the group's ratio to White")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    per_seed = {}
    print(f"{'seed':>4} {args.group + ' prevalent':>16} {'undiagnosed':>11} {'share':>6} {'White share':>11} {'ratio':>6}")
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        shares = undiagnosed_by_group(seed, args.patients, args.profile)
        group, white = shares.get(args.group), shares["White"]
        if not group or not group["prevalent"]:
            continue
        share, white_share = group["undiagnosed"] / group["prevalent"], white["undiagnosed"] / white["prevalent"]
        per_seed[seed] = {"group": group, "White": white, "ratio": share / white_share if white_share else None}
        print(f"{seed:>4} {group['prevalent']:>16} {group['undiagnosed']:>11} {share:>6.3f} {white_share:>11.3f} "
              f"{per_seed[seed]['ratio']:>6.2f}", flush=True)

    pooled = {name: {k: sum(s[name][k] for s in per_seed.values()) for k in ("prevalent", "undiagnosed")}
              for name in ("group", "White")}
    for name, label in (("group", args.group), ("White", "White")):
        p = pooled[name]
        print(f"pooled {label}: {p['undiagnosed']} of {p['prevalent']} undiagnosed ({p['undiagnosed'] / p['prevalent']:.3f})")
    ranked = sorted(per_seed, key=lambda s: -(per_seed[s]["ratio"] or 0))
    marks = {seed: ranked.index(seed) + 1 for seed in args.mark if seed in per_seed}
    if marks:
        print(f"rank of the marked seeds by the {args.group}/White ratio (1 = highest, of {len(ranked)}): {marks}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"profile": args.profile, "patients": args.patients, "group": args.group,
                                    "per_seed": per_seed, "pooled": pooled, "marked_ranks": marks}, indent=1))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
