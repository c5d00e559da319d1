"""benchmarks/bench_scale.py's sampler of a run's process tree: the memory it reports is the
tree's, not a child's view of its parent's memory before it execs."""

import importlib.util
import subprocess
import sys
from pathlib import Path

# A process holding 400 MB that forks a child which does not exec for 0.6 s (three of the
# sampler's 0.2 s intervals): the child's resident set is its parent's pages (as a worker being
# spawned reports its parent's, between its vfork and its exec); then it execs a small Python.
HOLDER = """
import os, sys, time
big = bytearray(400 * 2**20)
for i in range(0, len(big), 4096):
    big[i] = 1
pid = os.fork()
if pid == 0:
    time.sleep(0.6)
    os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(0.3)"])
os.waitpid(pid, 0)
"""


def _sampler():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_scale.py"
    spec = importlib.util.spec_from_file_location("bench_scale", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TreeMemory


def test_a_child_not_yet_execd_is_not_counted_as_a_second_copy_of_its_parents_memory():
    holder = subprocess.Popen([sys.executable, "-c", HOLDER])
    sampler = _sampler()(holder.pid)
    sampler.start()
    try:
        holder.wait(timeout=60)
    finally:
        sampler.stop.set()
        sampler.join()
    assert holder.returncode == 0
    peak = max(total for _, total, _ in sampler.samples)
    # the holder's 400 MB once (and the exec'd child's own few MB), never twice
    assert 400 * 2**20 < peak < 640 * 2**20, peak / 2**20
    assert len(sampler.samples) >= 4  # it sampled while the child held its parent's memory
