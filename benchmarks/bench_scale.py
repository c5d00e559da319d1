"""Benchmark: `phm run` end to end at 250k, 500k and 1M patients, and one process vs Dask.

    uv run python benchmarks/bench_scale.py [--sizes 250000 500000 1000000] [--dask-at 1000000]

For each size a synthetic extract is generated (seed 42, one PCN per 40,000 patients; not timed),
then `phm run` runs in a fresh process into a new output folder, as an ICS unit runs it. A
sampler reads the memory (RSS) of the whole process tree (the run, Prefect's temporary server,
Dask workers) every 0.2 s; each stage's wall time and peak memory come from the stage lines in
the run's log. Also, at ``--dask-at``, the same extract with ``--executor dask`` on a
LocalCluster (2 workers, one thread each; the shards scattered to them through Dask), and a check
that its lists are byte-identical to the one-process run's. Prints a table, the fixed and per-million costs (a
least-squares line through the sizes, for the whole run and each stage) and writes JSON.

The lists must not change with an optimisation: the SHA-256 of every published list file (each
PCN's CSV, summary and re-ask CSV byte for byte; its Parquet by schema and rows; the workbook by
its cells, less the Read me's publication time) is compared with a reference recorded by an earlier run on the same seed
(``--lists-reference``, default benchmarks/results/scale_lists.json: recorded when missing or with
``--record-lists``, checked otherwise); a difference ends the benchmark with an error naming the
files (after the figures are printed and written). Record the reference on the commit before the
change, then run the changed code.

Targets (issue 7): 4x the patients costs at most 4.4x the time; 1M patients end to end within 5
minutes and 12 GB on 2 cores. Issue 21: 1M patients within 60 s and 4 GB.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
STAGE_LINE = re.compile(r"^(\d\d:\d\d:\d\d\.\d+) \| INFO .* - \[(\d)/7\] (.+)$")
FINISHED = re.compile(r"^(\d\d:\d\d:\d\d\.\d+) \| INFO .*Flow run '[^']+' - Finished in state Completed")


class TreeMemory(threading.Thread):
    """(time, bytes, CPU seconds) samples of a process and all its children. The CPU is each
    live process's own and that of the children it has reaped (the kernel adds a child's CPU to
    its parent's when the parent waits for it), so a finished child is counted once, by its
    parent; kept as a running maximum, since a child that has exited but is not yet reaped is
    briefly in neither.

    A child between its fork and its exec (a worker process being spawned: multiprocessing and
    subprocess fork with vfork) runs in its parent's memory and reports its parent's resident set
    as its own: counted, it doubled the 1M run's peak for one sample (5.42 GB against 3.3 GB,
    while publishing's two workers started). Its memory is not counted until it has exec'd (its
    command line is then its own); its CPU is."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.root, self.samples, self.stop = psutil.Process(pid), [], threading.Event()

    def run(self) -> None:
        cpu = 0.0
        while not self.stop.is_set():
            total, now = 0, 0.0
            try:
                processes = [self.root, *self.root.children(recursive=True)]
                commands = {}
                for p in processes:
                    try:
                        commands[p.pid] = p.cmdline()
                    except psutil.Error:
                        pass
                for p in processes:
                    try:
                        if p is self.root or commands.get(p.pid) is None or commands[p.pid] != commands.get(p.ppid()):
                            total += p.memory_info().rss
                        times = p.cpu_times()
                        now += times.user + times.system + times.children_user + times.children_system
                    except psutil.Error:
                        pass
            except psutil.Error:
                break
            cpu = max(cpu, now)
            self.samples.append((time.time(), total, cpu))
            time.sleep(0.2)

    def cpu_at(self, moment: float) -> float:
        """The tree's CPU seconds at the last sample before ``moment``."""
        before = [c for t, _, c in self.samples if t <= moment]
        return before[-1] if before else 0.0


def _clock(text: str, day: dt.date) -> float:
    return dt.datetime.combine(day, dt.time.fromisoformat(text)).astimezone().timestamp()


# The benchmark times the whole flow, so the gate must let it through to the lists: a named
# sign-off, recorded in MLflow, the report and the manifest like any other. The gate's findings are still
# computed in full and printed by the run (the audit's cost is the same either way).
# Synthetic extracts are dated 2026-03-31: published marked as stale rather than refused (phm/freshness.py)
STALE_MARKED = '[run]\nstale_extract = "mark"\n'
TIMING_ONLY = """
[[audit.signoff]]
reviewer = "benchmarks/bench_scale.py"
reason = "timing only: synthetic data, the lists are discarded"
accepts = "FAIL"
"""


def list_hashes(out: Path) -> dict[str, str]:
    """SHA-256 of each published list file, by name (lists_manifest.json is left out: it holds
    the publication time and the audit's MLflow run id). CSV files by their bytes. A Parquet file
    by its schema and rows (its bytes also record how the frame happened to be chunked). A
    workbook by its cells, sheet by sheet, less the Read me's "list published" time (the .xlsx
    file itself carries its write time)."""
    import polars as pl

    folder = out / "lists"
    hashes = {}
    for path in sorted(folder.iterdir()):
        if path.name == "lists_manifest.json":
            continue
        digest = hashlib.sha256()
        if path.suffix == ".xlsx":
            from openpyxl import load_workbook

            book = load_workbook(path, read_only=True)
            for sheet in book.worksheets:
                digest.update(f"\x1e{sheet.title}".encode())
                for row in sheet.iter_rows(values_only=True):
                    if not (sheet.title == "Read me" and row and row[0] == "list published"):
                        digest.update(repr(row).encode())
            book.close()
        elif path.suffix == ".parquet":
            frame = pl.read_parquet(path)
            digest.update(repr(frame.schema).encode())
            digest.update(frame.hash_rows(seed=0).to_numpy().tobytes())
        else:
            digest.update(path.read_bytes())
        hashes[path.name] = digest.hexdigest()
    return hashes


def check_lists(reference: dict, size: int, hashes: dict[str, str], what: str) -> str:
    """Compare with the reference's lists for ``size``; record them when it has none. Returns
    what to print: recorded, identical, or which files differ."""
    recorded = reference["sizes"].setdefault(str(size), hashes)
    if recorded is hashes:
        return f"lists recorded as the reference ({len(hashes)} files)"
    differ = sorted(n for n in recorded.keys() | hashes.keys() if recorded.get(n) != hashes.get(n))
    if differ:
        return (f"LISTS DIFFER from the reference recorded at {reference['commit']} ({what}): "
                f"{len(differ)} of {len(recorded)} files: {', '.join(differ[:6])}{' ...' if len(differ) > 6 else ''}")
    return f"lists byte-identical to the reference recorded at {reference['commit']} ({len(hashes)} files)"


def linear_costs(points: dict[int, float]) -> tuple[float, float] | None:
    """(fixed seconds, seconds per million patients): least squares through (patients, seconds)."""
    if len(points) < 2:
        return None
    sizes = sorted(points)
    x = [s / 1e6 for s in sizes]
    y = [points[s] for s in sizes]
    mx, my = sum(x) / len(x), sum(y) / len(y)
    slope = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True)) / sum((a - mx) ** 2 for a in x)
    return my - slope * mx, slope


def commit() -> str:
    done = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def run_once(extract: Path, out: Path, executor: str) -> dict:
    env = {**os.environ, "PHM_PSEUDONYMISATION_KEY": "benchmark-key-" + "0" * 40, "PREFECT_LOGGING_LEVEL": "INFO"}
    config = out.with_suffix(".toml")
    config.write_text(STALE_MARKED + TIMING_ONLY)
    command = [sys.executable, "-m", "cli", "run", "--extract", str(extract), "--out", str(out),
               "--config", str(config)]
    if executor == "dask":
        command += ["--executor", "dask", "--workers", "2"]
    started = time.time()
    log = out.with_suffix(".log")
    with open(log, "w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
        sampler = TreeMemory(process.pid)
        sampler.start()
        code = process.wait()
        sampler.stop.set()
        sampler.join()
    seconds = time.time() - started
    text = log.read_text()
    if code != 0:
        raise SystemExit(f"phm run failed ({code}): {text[-3000:]}")
    day = dt.date.today()
    marks = [(_clock(m.group(1), day), m.group(3)) for m in map(STAGE_LINE.match, text.splitlines()) if m]
    end = [_clock(m.group(1), day) for m in map(FINISHED.match, text.splitlines()) if m]
    marks.append((end[-1] if end else time.time(), "end"))
    stages = {}
    for (start, name), (stop, _) in zip(marks, marks[1:], strict=False):
        peak = max((b for t, b, _ in sampler.samples if start <= t < stop), default=0)
        cpu = sampler.cpu_at(stop) - sampler.cpu_at(start)
        stages[name] = {"seconds": round(stop - start, 1), "peak_gb": round(peak / 2**30, 2),
                        "cpu_s": round(cpu, 1), "cores_busy": round(cpu / max(stop - start, 1e-9), 2)}
    gate = [line.strip() for line in text.splitlines() if line.startswith("fairness audit:")]
    return {"executor": executor, "seconds": round(seconds, 1), "gate": gate[0] if gate else None,
            "peak_gb": round(max(b for _, b, _ in sampler.samples) / 2**30, 2),
            "cpu_s": round(sampler.samples[-1][2], 1) if sampler.samples else None,
            "before_first_stage_s": round(marks[0][0] - started, 1) if marks else None, "stages": stages}


def same_lists(one: Path, other: Path) -> bool:
    """Whether two runs published the same CSV files (lists, summaries, worklists), byte for byte."""
    files = sorted(p.name for p in (one / "lists").iterdir() if p.suffix == ".csv")
    return bool(files) and files == sorted(p.name for p in (other / "lists").iterdir() if p.suffix == ".csv") and \
        all((one / "lists" / name).read_bytes() == (other / "lists" / name).read_bytes() for name in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[250_000, 500_000, 1_000_000])
    parser.add_argument("--dask-at", type=int, default=1_000_000, help="size to also run on Dask (0: none)")
    parser.add_argument("--work", type=Path, help="folder for extracts and runs (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scale.json")
    parser.add_argument("--lists-reference", type=Path, default=ROOT / "benchmarks" / "results" / "scale_lists.json",
                        help="hashes of a reference run's lists: checked when the file has the size, else recorded")
    parser.add_argument("--record-lists", action="store_true", help="record this run's lists as the reference")
    parser.add_argument("--keep", action="store_true", help="keep each run's output folder (database, lists, audit, "
                        "MLflow) in --work, to compare with another tree's; default: removed")
    parser.add_argument("--extracts", type=Path, help="keep the generated extracts here and reuse them in later runs "
                        "(default: generated in the work folder and removed)")
    args = parser.parse_args()
    fresh = args.record_lists or not args.lists_reference.is_file()
    reference = ({"commit": commit(), "seed": 42, "sizes": {}} if fresh
                 else json.loads(args.lists_reference.read_text()))
    from phm.synth import SynthConfig, generate

    results = []
    if args.keep and args.work is None:
        parser.error("--keep needs --work")
    folder = contextlib.nullcontext(tempfile.mkdtemp(dir=args.work)) if args.keep else \
        tempfile.TemporaryDirectory(dir=args.work)
    with folder as tmp:
        for size in args.sizes:
            extract = (args.extracts or Path(tmp)) / f"extract-{size}"
            if not (extract / "extract.json").is_file():
                generate(SynthConfig(patients=size, seed=42), extract)
            executors = ["local", "dask"] if size == args.dask_at else ["local"]
            for executor in executors:
                out = Path(tmp) / f"run-{size}-{executor}"
                result = {"patients": size, **run_once(extract, out, executor)}
                result["list_hashes"] = list_hashes(out)
                result["lists"] = check_lists(reference, size, result["list_hashes"], f"{size:,} patients, {executor}")
                results.append(result)
                print(f"{size:>9,} patients, {executor:<5}: {result['seconds']:>6.1f} s, peak {result['peak_gb']:.2f} GB "
                      f"(start-up {result['before_first_stage_s']} s; CPU {result['cpu_s']} s); {result['gate']}", flush=True)
                for name, stage in result["stages"].items():
                    print(f"      {name:<34}{stage['seconds']:>7.1f} s {stage['peak_gb']:>6.2f} GB  CPU {stage['cpu_s']:>6.1f} s "
                          f"({stage['cores_busy']:.2f} cores busy)", flush=True)
                print(f"      {result['lists']}", flush=True)
                if result["lists"].startswith("lists recorded"):  # kept at once: a later failure leaves it
                    args.lists_reference.parent.mkdir(parents=True, exist_ok=True)
                    args.lists_reference.write_text(json.dumps(reference, indent=2) + "\n")
            if len(executors) == 2:  # the acceptance check of scale-out: Dask's lists are one process's
                result["lists_identical_to_local"] = same_lists(*(Path(tmp) / f"run-{size}-{e}" for e in executors))
                print(f"      lists byte-identical to the one-process run: {result['lists_identical_to_local']}",
                      flush=True)
    local = {r["patients"]: r["seconds"] for r in results if r["executor"] == "local"}
    growth = None
    if len(local) >= 2:
        small, large = min(local), max(local)
        growth = {"patients_factor": round(large / small, 2), "time_factor": round(local[large] / local[small], 2)}
        print(f"growth: {growth['patients_factor']}x the patients took {growth['time_factor']}x the time "
              "(target <= 4.4x for 4x)")
        runs = [r for r in results if r["executor"] == "local"]
        costs = {"end to end": linear_costs(local),
                 "start-up": linear_costs({r["patients"]: r["before_first_stage_s"] for r in runs})}
        for name in runs[0]["stages"]:
            costs[name] = linear_costs({r["patients"]: r["stages"][name]["seconds"] for r in runs
                                        if name in r["stages"]})
        print(f"{'fixed and per-million costs':<40}{'fixed':>8}{'per 1M':>9}")
        for name, cost in costs.items():
            if cost is not None:
                print(f"  {name:<38}{cost[0]:>7.1f} s{cost[1]:>7.1f} s")
        growth["costs"] = {name: {"fixed_s": round(c[0], 1), "per_million_s": round(c[1], 1)}
                           for name, c in costs.items() if c is not None}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"cores": os.cpu_count(), "runs": results, "growth": growth}, indent=2) + "\n")
    print(f"wrote {args.out}" + (f"; the runs' folders kept in {tmp}" if args.keep else ""))
    differ = [r["lists"] for r in results if r["lists"].startswith("LISTS DIFFER")]
    if differ:  # after the figures: they are still worth reading, but the change is not acceptable
        raise SystemExit("\n".join(differ))


if __name__ == "__main__":
    main()
