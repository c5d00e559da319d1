"""A pytest plugin for benchmarks/bench_suite_cpu.py: each test phase's wall time and CPU time.

Enabled with ``-p tests.cpu_times`` and PHM_TEST_CPU_OUT set to a path prefix; each pytest-xdist
worker appends JSON lines to ``<prefix>-<worker>.jsonl``: the test, its phase (setup, call,
teardown), wall seconds, and the CPU seconds of this process (all its threads: in-process flows)
and of the child processes it reaped during the phase (``phm run`` subprocesses, servers).

The suite is bound by CPU on a 2-core machine (docs/benchmarks.md), so wall time per test says
little about what to cut: a test waiting for a server shows the server's work as its own wall
time. A child's CPU is counted when it is reaped, so a server a fixture starts is counted at the
teardown that stops it, not in the tests that used it.
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

import pytest

OUT = os.environ.get("PHM_TEST_CPU_OUT")


def _cpu() -> tuple[float, float]:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def _timed(phase: str):
    @pytest.hookimpl(hookwrapper=True)
    def hook(item):
        own, children = _cpu()
        started = time.perf_counter()
        yield
        if OUT:
            own_after, children_after = _cpu()
            worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
            with Path(f"{OUT}-{worker}.jsonl").open("a") as lines:
                lines.write(json.dumps({"test": item.nodeid, "phase": phase, "wall": time.perf_counter() - started,
                                        "own_cpu": own_after - own, "children_cpu": children_after - children})
                            + "\n")
    return hook


pytest_runtest_setup = _timed("setup")
pytest_runtest_call = _timed("call")
pytest_runtest_teardown = _timed("teardown")
