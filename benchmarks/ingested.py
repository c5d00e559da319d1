"""The options of the benchmarks that start from the 1M-patient database bench_ingest.py leaves."""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def arguments(description: str, result_name: str, repeat: int | None = None) -> argparse.Namespace:
    """--db (the ingested database, which must exist), --out (the JSON of results) and, given a
    default ``repeat``, --repeat (how many times to measure)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--db", type=Path, default=Path("/tmp/phm-bench/phm.duckdb"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / result_name)
    if repeat is not None:
        parser.add_argument("--repeat", type=int, default=repeat)
    args = parser.parse_args()
    if not args.db.is_file():
        raise SystemExit(f"{args.db} not found: run benchmarks/bench_ingest.py --patients 1000000 first")
    return args
