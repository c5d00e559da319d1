"""Benchmark: `phm demo` end to end after installation (prints figures, writes JSON).

    uv run python benchmarks/bench_demo.py [--patients 100000]

Runs the demo command as a newcomer does (a fresh process, a new output folder) and reports the
wall time of the whole command, the time of each stage of the flow (from its summary), and the
peak memory of the process. Target (issue 6): within 3 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "demo.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PHM_PSEUDONYMISATION_KEY": "benchmark-key-" + "0" * 40}
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "cli", "demo", "--out", str(Path(tmp) / "demo"),
                               "--patients", str(args.patients)], capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"phm demo failed ({done.returncode}): {done.stderr[-2000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 / 1024
    stage_line = next(line for line in done.stdout.splitlines() if line.strip().startswith("stages:"))
    stages = {name.strip(): float(s) for name, s in re.findall(r"([a-z ]+) (\d+) s", stage_line.split(":", 1)[1])}
    print(f"phm demo, {args.patients:,} patients: {seconds:.0f} s end to end (target <= 180 s), "
          f"peak {peak:.2f} GB")
    for name, s in stages.items():
        print(f"  {name:<34}{s:>6.0f} s")
    result = {"patients": args.patients, "seconds": round(seconds, 1), "peak_gb": round(peak, 2), "stages": stages}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
