"""Benchmark: five ICBs' runs started together on one machine (prints figures, writes JSON).

    uv run python benchmarks/bench_concurrent.py [--icbs 5] [--patients 100000]

Generates one synthetic extract per ICB (different ICB codes and seeds; not timed), then starts
`phm run` for all of them at the same moment, each a fresh process with its own output folder
(its own DuckDB file and MLflow store) and its own pseudonymisation key, and waits. Checks each
run's outputs (exit 0, a list per PCN of its own ICB and no other, the manifest, the audit
report) and prints the wall time of each, the total, and the peak memory of all the processes
together (sampled every 0.2 s). The gate is overridden for timing as in bench_scale.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import polars as pl
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import TIMING_ONLY  # noqa: E402  (the same reviewer override for timing)

ROOT = Path(__file__).resolve().parents[1]


def total_rss(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for p in [root, *root.children(recursive=True)]:
                total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--icbs", type=int, default=5)
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--work", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "concurrent.json")
    args = parser.parse_args()
    from phm.synth import SynthConfig, generate

    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        base = Path(tmp)
        icbs = [f"Q{chr(ord('A') + i)}{chr(ord('A') + i)}" for i in range(args.icbs)]
        for i, icb in enumerate(icbs):
            generate(SynthConfig(patients=args.patients, seed=42 + i, icb_code=icb), base / icb / "extract")
            (base / icb / "phm.toml").write_text(f"[run]\nicb = \"{icb}\"\nstale_extract = \"mark\"\n" + TIMING_ONLY)
        processes, started = {}, time.time()
        for icb in icbs:
            env = {**os.environ, f"PHM_PSEUDONYMISATION_KEY_{icb}": f"key-{icb}-" + "0" * 40}
            env.pop("PHM_PSEUDONYMISATION_KEY", None)
            log = open(base / icb / "run.log", "w")
            processes[icb] = subprocess.Popen(
                [sys.executable, "-m", "cli", "run", "--extract", str(base / icb / "extract"), "--out",
                 str(base / icb / "out"), "--config", str(base / icb / "phm.toml")], stdout=log, stderr=subprocess.STDOUT,
                env=env)
        peak, stop = [0], threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], total_rss([p.pid for p in processes.values()]))
                time.sleep(0.2)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        seconds = {}
        for icb, process in processes.items():
            process.wait()
            seconds[icb] = round(time.time() - started, 1)
        stop.set()
        sampler.join()
        wall = round(time.time() - started, 1)
        results = {}
        for icb in icbs:
            out, code = base / icb / "out", processes[icb].returncode
            ok = code == 0
            if ok:
                lists = (out / "lists").resolve()
                practices = pl.read_parquet(base / icb / "extract" / "practices.parquet")
                own = set(practices.filter(pl.col("icb_code") == icb)["pcn_code"].to_list())
                manifest = json.loads((lists / "lists_manifest.json").read_text())
                files = {pcn for pcn, names in manifest["files"].items() if (lists / names["csv"]).is_file()}
                ok = files == own and set(manifest["pcns"]) == own and (out / "audit" / "fairness_audit.json").is_file()
            results[icb] = {"exit": code, "outputs_correct": ok, "seconds": seconds[icb]}
            print(f"{icb}: exit {code}, outputs {'correct' if ok else 'WRONG'}, finished after {seconds[icb]:.0f} s")
            if code != 0:
                print((base / icb / "run.log").read_text()[-2000:])
    print(f"{args.icbs} runs of {args.patients:,} patients started together: all done in {wall:.0f} s, "
          f"peak memory of all of them {peak[0] / 2**30:.2f} GB ({os.cpu_count()} cores)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"icbs": args.icbs, "patients": args.patients, "wall_seconds": wall,
                                    "peak_gb": round(peak[0] / 2**30, 2), "runs": results}, indent=2) + "\n")
    print(f"wrote {args.out}")
    if not all(r["outputs_correct"] for r in results.values()):
        raise SystemExit("a run failed or its outputs were wrong")


if __name__ == "__main__":
    main()
