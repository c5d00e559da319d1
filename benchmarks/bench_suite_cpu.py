"""Where the test suite's CPU goes (issue 21: the suite under 10 minutes on 2 cores).

On a 2-core machine the suite is bound by CPU, not by how the tests are split between the two
pytest-xdist workers: the tests' durations sum to about twice the suite's wall time. So the figure
to cut is CPU, and a test's wall time does not show it: a test that waits for a server or a
``phm run`` subprocess shows their work as its own time. This runs the suite (or the tests named)
with the plugin tests/cpu_times.py and prints, per test module, its wall time and its CPU seconds
(the pytest process's threads and the child processes it reaped), then the phases that took most
CPU. Writes JSON (--out).

    uv run python benchmarks/bench_suite_cpu.py                     # the whole suite, as CI runs it
    uv run python benchmarks/bench_suite_cpu.py -- -m "not slow"    # pytest's arguments after --
    uv run python benchmarks/bench_suite_cpu.py --summarise 'folder/cpu-*.jsonl'

A child's CPU is counted when it is reaped: a server that a fixture starts is counted at the
teardown that stops it (the session's Prefect test harness at each worker's last test).
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def summarise(rows: list[dict], top: int = 15) -> dict:
    modules: dict[str, dict[str, float]] = defaultdict(lambda: {"wall": 0.0, "cpu": 0.0})
    for row in rows:
        module = modules[row["test"].split("::", 1)[0]]
        module["wall"] += row["wall"]
        module["cpu"] += row["own_cpu"] + row["children_cpu"]
    total_cpu = sum(m["cpu"] for m in modules.values())
    by_module = sorted(({"module": name, **figures} for name, figures in modules.items()), key=lambda m: -m["cpu"])
    phases = sorted(rows, key=lambda r: -(r["own_cpu"] + r["children_cpu"]))[:top]
    return {"phases": len(rows), "wall_sum": sum(r["wall"] for r in rows), "cpu_sum": total_cpu,
            "modules": by_module, "top_phases": phases}


def show(summary: dict, top_modules: int = 20) -> None:
    print(f"{summary['phases']} test phases: durations sum to {summary['wall_sum']:.0f} s, "
          f"CPU {summary['cpu_sum']:.0f} s")
    print(f"{'wall s':>8} {'CPU s':>8} {'share':>6}  module")
    for m in summary["modules"][:top_modules]:
        share = m["cpu"] / summary["cpu_sum"] if summary["cpu_sum"] else 0.0
        print(f"{m['wall']:8.1f} {m['cpu']:8.1f} {share:6.1%}  {m['module']}")
    print(f"\nthe {len(summary['top_phases'])} phases with most CPU (own: the pytest worker's threads; "
          "children: processes reaped in the phase)")
    print(f"{'wall s':>8} {'own s':>7} {'children s':>10}  phase  test")
    for r in summary["top_phases"]:
        print(f"{r['wall']:8.1f} {r['own_cpu']:7.1f} {r['children_cpu']:10.1f}  {r['phase']:8} {r['test']}")


def read_lines(pattern: str) -> list[dict]:
    files = sorted(glob.glob(pattern))
    if not files:
        raise SystemExit(f"no file matches {pattern!r}")
    return [json.loads(line) for path in files for line in Path(path).read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--summarise", metavar="GLOB", help="only summarise JSON lines written before")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "suite_cpu.json")
    parser.add_argument("pytest_args", nargs="*", help="pytest's arguments (after --)")
    args = parser.parse_args()
    if args.summarise:
        show(summarise(read_lines(args.summarise)))
        return

    folder = Path(tempfile.mkdtemp(prefix="phm-suite-cpu-"))
    prefix = folder / "cpu"
    env = {**os.environ, "PHM_TEST_CPU_OUT": str(prefix)}
    command = [sys.executable, "-m", "pytest", "-p", "tests.cpu_times", "-p", "no:cacheprovider", "-q",
               *args.pytest_args]
    print("running:", " ".join(command), flush=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    summary = summarise(read_lines(f"{prefix}-*.jsonl"))
    print()
    show(summary)
    cores = os.cpu_count() or 1
    print(f"\nthe suite: {wall:.0f} s wall, {cpu:.0f} s of CPU in its process tree "
          f"({cpu / wall / cores:.0%} of {cores} cores); pytest exit code {done.returncode}")
    commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                            text=True).stdout.strip()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "commit": commit,
                                    "cores": cores, "pytest_args": args.pytest_args, "exit_code": done.returncode,
                                    "wall": wall, "cpu": cpu, **summary}, indent=1))
    print(f"JSON: {args.out}")
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
