"""Benchmark: features, scores and case-finding for 1M patients (prints figures, writes JSON).

    uv run python benchmarks/bench_features.py [--db /tmp/phm-bench/phm.duckdb]

Needs a database ingested from a 1M-patient synthetic extract: benchmarks/bench_ingest.py leaves
one at /tmp/phm-bench/phm.duckdb. Targets (issue 3): features for 1M patients / ~50M events in
at most 60 s with peak memory at most 8 GB. Runs in one process; peak memory is its max RSS.
"""

from __future__ import annotations

import json
import resource
import shutil
import time

import duckdb
from ingested import arguments  # benchmarks/ingested.py

from features.build import build
from models.score_patients import score_patients


def main() -> None:
    args = arguments(__doc__.splitlines()[0], "features.json")
    work = args.db.with_name("features-bench.duckdb")
    shutil.copy(args.db, work)  # leave the ingested database as it was
    con = duckdb.connect(str(work))
    events = con.execute("select count(*) from main.clinical_events").fetchone()[0]
    medications = con.execute("select count(*) from main.medications").fetchone()[0]
    index_date = con.execute("select extract_date from ingest.run_parameters").fetchone()[0]
    stages = {}
    started = time.perf_counter()
    t = time.perf_counter()
    build(con, index_date, progress=lambda m: print(f"  {time.perf_counter() - started:6.1f} s  {m}", flush=True))
    stages["sql_features"] = time.perf_counter() - t
    t = time.perf_counter()
    scored = score_patients(con)
    stages["qrisk3_qdiabetes"] = time.perf_counter() - t
    total = time.perf_counter() - started
    con.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
    print(f"features + scores for {scored:,} registered patients from {events:,} events and "
          f"{medications:,} prescriptions: {total:.1f} s (SQL {stages['sql_features']:.1f} s, "
          f"scores {stages['qrisk3_qdiabetes']:.1f} s); target <= 60 s")
    print(f"peak memory {peak:.2f} GB (target <= 8 GB)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "features", "registered_patients": scored, "clinical_events": events,
        "medications": medications, "seconds": total, "stages": stages, "peak_rss_gb": peak,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
