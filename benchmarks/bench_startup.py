"""`phm run`'s fixed start-up, two source trees side by side (issue 21): fresh-process runs on the
same extract, alternated between the trees, each timed from the process's start to its first
stage ("[1/7] ingest and validate", read as the line arrives) and to its end, with the CPU
seconds of the whole process tree (the command, Prefect's temporary server, publishing's
workers) and the machine's load. Checks that both trees published byte-identical list CSVs and
the same manifest (its publication time and MLflow run ids aside) and audit figures.

    uv run python benchmarks/bench_startup.py --trees /work/base /work/branch --runs 4 --patients 20000

Each tree needs its own .venv (``uv sync``). Prefect's home is one folder for every run, made
once by a run that is not counted ("existing": what a machine has after its first run); with
``--fresh-home`` each run gets a new one (what the first run on a machine, and every test's
pipeline run, pays for: the server's database migrations). Writes JSON (--out).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """[run]
stale_extract = "mark"

[[audit.signoff]]
reviewer = "benchmarks/bench_startup.py"
reason = "timing only: synthetic data, the lists are compared and discarded"
accepts = "FAIL"
"""
FIRST_STAGE = "[1/7] ingest and validate"
RUN_ID = re.compile(r"\b[0-9a-f]{32}\b")


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def commit(tree: Path) -> str:
    done = subprocess.run(["git", "-C", str(tree), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def run_once(tree: Path, extract: Path, out: Path, home: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    config = out.with_suffix(".toml")
    config.write_text(CONFIG)
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")}
    env.update(PHM_PSEUDONYMISATION_KEY="benchmark-key-" + "0" * 40, PREFECT_HOME=str(home),
               PREFECT_LOGGING_LEVEL="INFO")
    before_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    loads = [load()]
    started = time.perf_counter()
    first_stage = None
    with open(out.with_suffix(".log"), "w") as log:
        process = subprocess.Popen([str(tree / ".venv" / "bin" / "python"), "-m", "cli", "run", "--extract",
                                    str(extract), "--out", str(out), "--config", str(config)],
                                   cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in process.stdout:
            if first_stage is None and FIRST_STAGE in line:
                first_stage = time.perf_counter() - started
            log.write(line)
        code = process.wait()
    seconds = time.perf_counter() - started
    after_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    loads.append(load())
    if code != 0:
        raise SystemExit(f"phm run in {tree} failed ({code}): see {out.with_suffix('.log')}")
    cpu = (after_cpu.ru_utime - before_cpu.ru_utime) + (after_cpu.ru_stime - before_cpu.ru_stime)
    return {"start_up_s": round(first_stage, 2), "seconds": round(seconds, 2), "cpu_s": round(cpu, 2),
            "load_before_after": loads}


def published(out: Path) -> dict:
    """What must not change: the list CSVs' bytes, the manifest and the audit's figures, without
    the times they were written and MLflow's run ids (which differ from run to run)."""
    lists = out / "lists"
    manifest = json.loads((lists / "lists_manifest.json").read_text())
    manifest.pop("published_at")
    audit = json.loads(RUN_ID.sub("<run id>", (out / "audit" / "fairness_audit.json").read_text()))
    audit.pop("generated_at")
    return {"csv": {p.name: p.read_bytes() for p in sorted(lists.glob("*.csv"))},
            "manifest": json.loads(RUN_ID.sub("<run id>", json.dumps(manifest))), "audit": audit}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", type=Path, nargs=2, required=True, help="before and after: source trees with .venv")
    parser.add_argument("--runs", type=int, default=4, help="runs per tree, alternated (default 4)")
    parser.add_argument("--patients", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--fresh-home", action="store_true", help="a new PREFECT_HOME for every run")
    parser.add_argument("--work", type=Path, help="folder for the extract and runs (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "startup.json")
    args = parser.parse_args()
    trees = [t.resolve() for t in args.trees]
    results: dict[str, list[dict]] = {str(t): [] for t in trees}
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        extract = work / "extract"
        subprocess.run([str(trees[0] / ".venv" / "bin" / "python"), "-m", "cli", "synth", "--patients",
                        str(args.patients), "--seed", str(args.seed), "--out", str(extract)],
                       cwd=trees[0], check=True, capture_output=True)
        home = work / "prefect-home"
        if not args.fresh_home:  # not counted: makes the server's database
            run_once(trees[0], extract, work / "warm-up", home)
        outputs = {}
        for i in range(args.runs):
            for tree in trees if i % 2 == 0 else trees[::-1]:
                run_home = work / f"prefect-home-{len(outputs)}" if args.fresh_home else home
                out = work / f"run-{trees.index(tree)}-{i}"
                result = run_once(tree, extract, out, run_home)
                results[str(tree)].append(result)
                outputs.setdefault(str(tree), published(out))
                print(f"{tree.name:<20} run {i + 1}: start-up {result['start_up_s']:6.2f} s, whole run "
                      f"{result['seconds']:6.2f} s, CPU {result['cpu_s']:6.2f} s, load {result['load_before_after']}",
                      flush=True)
        before, after = (outputs[str(t)] for t in trees)
        same = {"list_csvs": before["csv"] == after["csv"], "manifest": before["manifest"] == after["manifest"],
                "audit": before["audit"] == after["audit"]}
    summary = {}
    for tree in trees:
        runs = results[str(tree)]
        summary[str(tree)] = {"commit": commit(tree), **{f"median_{k}": round(statistics.median(r[k] for r in runs), 2)
                                                         for k in ("start_up_s", "seconds", "cpu_s")}}
    print(f"\n{'tree':<20}{'commit':>14}{'start-up':>10}{'whole run':>11}{'CPU':>9}   (medians of {args.runs})")
    for tree in trees:
        s = summary[str(tree)]
        print(f"{tree.name:<20}{s['commit']:>14}{s['median_start_up_s']:>9.2f}s{s['median_seconds']:>10.2f}s"
              f"{s['median_cpu_s']:>8.2f}s")
    print(f"same published output: {same}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"patients": args.patients, "seed": args.seed, "fresh_home": args.fresh_home,
                                    "cpus": os.cpu_count(), "summary": summary, "runs": results, "same": same},
                                   indent=2) + "\n")
    if not all(same.values()):
        sys.exit("the trees published different output")


if __name__ == "__main__":
    main()
