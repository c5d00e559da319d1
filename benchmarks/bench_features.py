"""Benchmark: features, scores and case-finding for 1M patients (prints figures, writes JSON).

    uv run python benchmarks/bench_features.py [--db /tmp/phm-bench/phm.duckdb]

Needs a database ingested from a 1M-patient synthetic extract: benchmarks/bench_ingest.py leaves
one at /tmp/phm-bench/phm.duckdb. Targets (issue 3): features for 1M patients / ~50M events in
at most 60 s with peak memory at most 8 GB. Runs in one process; peak memory is its max RSS.

The floor, measured in the same run on the same database: one DuckDB pass over the events, the
latest value of every code for every patient (``arg_max`` grouped by patient and code). Issue 21:
features and scores within 2x of it. The floor and the features alternate (``--repeat`` times,
3 by default; the features each time into a fresh copy of the database) and the ratio is of the
medians, so a busy spell on a shared machine does not fall on one side only. The JSON holds a
digest of every feature and score table (rows and the sum of their rows' hashes), so two
versions can be checked to give the same tables; the runs must agree with each other.
"""

from __future__ import annotations

import json
import resource
import shutil
import statistics
import time
from pathlib import Path

import duckdb
from ingested import arguments  # benchmarks/ingested.py

from features.build import build
from models.score_patients import score_patients


def floor_seconds(con: duckdb.DuckDBPyConnection) -> tuple[float, float]:
    """One DuckDB pass over the events, the latest value of every code for every patient: wall
    and CPU seconds."""
    t, cpu = time.perf_counter(), time.process_time()
    con.execute("create temp table floor_latest as select patient_id, snomedct_code, "
                "arg_max(numeric_value, date) as numeric_value, max(date) as date "
                "from main.clinical_events group by patient_id, snomedct_code")
    seconds, cpu_seconds = time.perf_counter() - t, time.process_time() - cpu
    con.execute("drop table floor_latest")
    return seconds, cpu_seconds


def one_run(db: Path, work: Path, index_date, log) -> tuple[dict, int, dict]:
    """In a fresh copy of ``db``: the floor, then the features and scores as ``phm features`` makes
    them. Stage seconds (the floor's too), patients scored and every feature and score table's
    digest."""
    shutil.copy(db, work)  # leave the ingested database as it was
    work.with_name(work.name + ".wal").unlink(missing_ok=True)
    con = duckdb.connect(str(work))
    try:
        stages = dict(zip(("floor", "floor_cpu"), floor_seconds(con), strict=True))
        started, cpu = time.perf_counter(), time.process_time()
        build(con, index_date, progress=lambda m: log(f"  {time.perf_counter() - started:6.1f} s  {m}"))
        stages["sql_features"] = time.perf_counter() - started
        t = time.perf_counter()
        scored = score_patients(con)
        stages["qrisk3_qdiabetes"] = time.perf_counter() - t
        stages["total"] = time.perf_counter() - started
        stages["total_cpu"] = time.process_time() - cpu
        tables = [f"{schema}.{name}" for schema, name in con.execute(
            "select schema_name, table_name from duckdb_tables() where schema_name in ('intermediate', 'marts') "
            "order by 1, 2").fetchall()]
        digest = {t: [str(v) for v in con.execute(f"select count(*), coalesce(sum(hash(x)), 0) "  # noqa: S608
                                                   f"from {t} as x").fetchone()] for t in tables}
    finally:
        con.close()
    return stages, scored, digest


def main() -> None:
    args = arguments(__doc__.splitlines()[0], "features.json", repeat=3)
    work = args.db.with_name("features-bench.duckdb")
    with duckdb.connect(str(args.db), read_only=True) as con:
        events = con.execute("select count(*) from main.clinical_events").fetchone()[0]
        medications = con.execute("select count(*) from main.medications").fetchone()[0]
        index_date = con.execute("select extract_date from ingest.run_parameters").fetchone()[0]
    runs, digests = [], []
    for run in range(args.repeat):
        # floor and features alternate, so a busy spell on a shared machine does not fall on one only
        stages, scored, digest = one_run(args.db, work, index_date,
                                         log=(lambda m: print(m, flush=True)) if run == 0 else (lambda m: None))
        runs.append(stages)
        digests.append(digest)
        print(f"run {run + 1}/{args.repeat}: floor {stages['floor']:.2f} s, features {stages['sql_features']:.2f} s, "
              f"scores {stages['qrisk3_qdiabetes']:.2f} s, ratio {stages['total'] / stages['floor']:.2f}", flush=True)
    if any(d != digests[0] for d in digests):
        raise SystemExit("two runs of the features on one database gave different tables")
    stages = {k: statistics.median(r[k] for r in runs) for k in ("sql_features", "qrisk3_qdiabetes")}
    total = statistics.median(r["total"] for r in runs)
    floor = statistics.median(r["floor"] for r in runs)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
    print(f"features + scores for {scored:,} registered patients from {events:,} events and "
          f"{medications:,} prescriptions, median of {args.repeat}: {total:.1f} s "
          f"(SQL {stages['sql_features']:.1f} s, scores {stages['qrisk3_qdiabetes']:.1f} s); target <= 60 s")
    print(f"floor (one arg_max pass over the events, before each run), median: {floor:.2f} s; "
          f"ratio of the medians {total / floor:.2f} (target <= 2); runs: "
          + ", ".join(f"{r['total'] / r['floor']:.2f}" for r in runs))
    cpu_ratio = statistics.median(r["total_cpu"] for r in runs) / statistics.median(r["floor_cpu"] for r in runs)
    print(f"CPU seconds (all threads; less moved by other work on a shared machine): ratio of the medians "
          f"{cpu_ratio:.2f}; runs: " + ", ".join(f"{r['total_cpu'] / r['floor_cpu']:.2f}" for r in runs))
    print(f"peak memory {peak:.2f} GB (target <= 8 GB)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "features", "registered_patients": scored, "clinical_events": events,
        "medications": medications, "seconds": total, "stages": stages, "peak_rss_gb": peak,
        "floor_seconds": floor, "ratio_to_floor": total / floor, "cpu_ratio_to_floor": cpu_ratio,
        "repeats": args.repeat,
        "runs": runs,
        "digest": digests[0], "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
