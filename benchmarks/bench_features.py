"""Benchmark: features, scores and case-finding for 1M patients (prints figures, writes JSON).

    uv run python benchmarks/bench_features.py [--db /tmp/phm-bench/phm.duckdb]

Needs a database ingested from a 1M-patient synthetic extract: benchmarks/bench_ingest.py leaves
one at /tmp/phm-bench/phm.duckdb. Targets (issue 3): features for 1M patients / ~50M events in
at most 60 s with peak memory at most 8 GB. Runs in one process; peak memory is its max RSS.

The floor, measured in the same run on the same database first: one DuckDB pass over the events,
the latest value of every code for every patient (``arg_max`` grouped by patient and code). Issue
21: features and scores within 2x of it. The JSON holds a digest of every feature and score table
(rows and the sum of their rows' hashes), so two versions can be checked to give the same tables.
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
    t = time.perf_counter()
    con.execute("create temp table floor_latest as select patient_id, snomedct_code, "
                "arg_max(numeric_value, date) as numeric_value, max(date) as date "
                "from main.clinical_events group by patient_id, snomedct_code")
    floor = time.perf_counter() - t
    con.execute("drop table floor_latest")
    stages = {}
    started = time.perf_counter()
    t = time.perf_counter()
    build(con, index_date, progress=lambda m: print(f"  {time.perf_counter() - started:6.1f} s  {m}", flush=True))
    stages["sql_features"] = time.perf_counter() - t
    t = time.perf_counter()
    scored = score_patients(con)
    stages["qrisk3_qdiabetes"] = time.perf_counter() - t
    total = time.perf_counter() - started
    tables = [f"{schema}.{name}" for schema, name in con.execute(
        "select schema_name, table_name from duckdb_tables() where schema_name in ('intermediate', 'marts') "
        "order by 1, 2").fetchall()]
    digest = {t: [str(v) for v in con.execute(f"select count(*), coalesce(sum(hash(x)), 0) "  # noqa: S608
                                               f"from {t} as x").fetchone()] for t in tables}
    con.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
    print(f"features + scores for {scored:,} registered patients from {events:,} events and "
          f"{medications:,} prescriptions: {total:.1f} s (SQL {stages['sql_features']:.1f} s, "
          f"scores {stages['qrisk3_qdiabetes']:.1f} s); target <= 60 s")
    print(f"floor (one arg_max pass over the events, same run): {floor:.1f} s; ratio {total / floor:.2f} "
          "(target <= 2)")
    print(f"peak memory {peak:.2f} GB (target <= 8 GB)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "features", "registered_patients": scored, "clinical_events": events,
        "medications": medications, "seconds": total, "stages": stages, "peak_rss_gb": peak,
        "floor_seconds": floor, "ratio_to_floor": total / floor, "digest": digest,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
