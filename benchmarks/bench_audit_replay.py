"""Benchmark: the fairness audit and gate stage replayed on a finished run, with where its time goes
and a bit-level digest of its figures (prints figures, writes JSON).

    uv run python benchmarks/bench_audit_replay.py --run RUN_FOLDER --work DIR [--replays 1] [--config TOML]

RUN_FOLDER is a finished ``phm run``'s output folder (``phm.duckdb`` and ``mlflow/`` beside it,
e.g. one kept by ``bench_scale.py --keep``). Each replay copies the database and the MLflow store
into a fresh folder under DIR and runs ``phm audit --db`` on the copy in this process (the
candidate versions that run registered, one shard of the whole ICB), so the run folder is never
changed. Printed per replay: the audit's own seconds (``AuditRun.seconds``), the wall time of its
steps (scoring the list population, the six ``audit_score`` calls, the do-no-harm comparison in its
own thread, the report's JSON and HTML, MLflow), this process's CPU (user, system) and page faults,
and a digest of every ``audit_score`` result (both frames, floats by their bytes) and of the
do-no-harm comparison, as a sorted set (the comparison ends at a different point among the calls
from one replay to the next).

To compare two trees (a change against main), run it from each tree's root, alternately, on the
same run folder under the bench lock: the digests must be equal, and the audit's seconds compared
pair by pair. The steps are timed by wrapping the functions ``models/audit_run.py`` calls (they
have no timers of their own); the wrappers call them unchanged.

Measured on the slower 2-core machine (2026-12-01, docs/benchmarks.md): a 1M run's audit replays in
44-54 s, a 12,000-patient run's in 15-20 s; the spread between replays of the same tree is that wide.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import shutil
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def frames_digest(audit) -> str:
    """Every figure and group of one ``audit_score`` result, bit for bit (floats by their bytes):
    bench_audit.py's digest, so the two benchmarks' digests of one audit agree."""
    from bench_audit import digest  # this script's folder is on the path when it runs

    return "audit_score:" + digest(audit)


def standards_digest(comparisons: dict) -> str:
    """The do-no-harm comparison of every outcome: groups, counts and every figure as computed."""
    h = hashlib.sha256()
    for outcome, comparison in comparisons.items():
        h.update(repr((outcome, [(g.group, g.patients, g.events, g.judged, sorted(g.figures.items()), g.worse)
                                 for g in comparison.groups])).encode())
    return "do_no_harm:" + h.hexdigest()[:16]


def timed_steps():
    """Wraps the steps of ``run_audit`` (module attributes of models/audit_run.py) to time them
    and digest their results; returns the dicts they fill."""
    import models.audit_run as audit_run
    from models.fairness import _report

    steps: dict[str, float] = {}
    digests: list[str] = []

    def wrap(owner, name, digest=None):
        function = getattr(owner, name)

        def timed(*args, **kwargs):
            started = time.perf_counter()
            result = function(*args, **kwargs)
            steps[name] = steps.get(name, 0.0) + time.perf_counter() - started
            if digest is not None:
                digests.append(digest(result))
            return result

        setattr(owner, name, timed)

    wrap(audit_run, "audit_score", frames_digest)
    wrap(audit_run, "compare_with_standard", standards_digest)
    for name in ("read_population", "_list_population_cells", "judge_all", "log_audit", "write_ethnicity_report",
                 "log_ethnicity_dq"):
        wrap(audit_run, name)
    wrap(_report, "render_html")
    wrap(_report.AuditReport, "to_json")
    return steps, digests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished phm run's output folder")
    parser.add_argument("--work", type=Path, required=True, help="folder for the copies (each replay's is replaced)")
    parser.add_argument("--replays", type=int, default=1)
    parser.add_argument("--config", type=Path, help="phm.toml for the audit's settings (default: the defaults)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "audit_replay.json")
    args = parser.parse_args()
    from cli import main as cli
    from flows.config import RunConfig, load_config
    from models.tracking import tracking_location

    cli._quiet_mlflow()
    settings = load_config(args.config).audit if args.config else RunConfig().audit
    steps, digests = timed_steps()
    import models.audit_run as audit_run

    results = []
    for replay in range(1, args.replays + 1):
        folder = args.work / f"replay-{replay}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        shutil.copy(args.run / "phm.duckdb", folder / "phm.duckdb")
        shutil.copytree(args.run / "mlflow", folder / "mlflow")
        steps.clear()
        digests.clear()
        before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        run = audit_run.run_audit(folder / "phm.duckdb", settings, tracking_location(folder), folder / "audit", None)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
        result = {"replay": replay, "audit_seconds": round(run.seconds, 2), "wall_seconds": round(wall, 2),
                  "cpu_user_seconds": round(after.ru_utime - before.ru_utime, 2),
                  "cpu_system_seconds": round(after.ru_stime - before.ru_stime, 2),
                  "page_faults": after.ru_minflt - before.ru_minflt,
                  "steps_seconds": {name: round(seconds, 2) for name, seconds in steps.items()},
                  "digests": sorted(digests), "status": run.report.label()}
        results.append(result)
        print(f"replay {replay}: audit {result['audit_seconds']} s (CPU {result['cpu_user_seconds']} user + "
              f"{result['cpu_system_seconds']} system, {result['page_faults']:,} page faults); "
              + ", ".join(f"{k} {v}" for k, v in result["steps_seconds"].items()), flush=True)
        print(f"  digests: {' '.join(result['digests'])}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"run": str(args.run), "replays": results}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
