"""Killing a phm command ends its children (issue 16): the OOM killer's SIGKILL of the main
process used to leave Prefect's temporary server running, re-parented to PID 1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.extracts import write_extract
from tests.processes import alive, children_with

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="the watchdog reads /proc (Linux)")
def test_sigkill_of_the_command_ends_prefects_temporary_server(tmp_path):
    extract = write_extract(tmp_path / "extract")
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": "",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PHM_PSEUDONYMISATION_KEY": "an-orphans-test-key-that-is-long-enough-42"}
    # phm run starts Prefect's temporary server before its first stage (phm ingest no longer does)
    command = subprocess.Popen([sys.executable, "-m", "cli", "run", "--extract", str(extract),
                                "--out", str(tmp_path / "out")], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        servers: list[int] = []
        while not servers and time.monotonic() < deadline and command.poll() is None:
            servers = children_with(command.pid, "uvicorn")
            time.sleep(0.2)
        assert servers, "the command never started Prefect's temporary server"
        time.sleep(1.0)  # the watchdog notes descendants every half second
        os.kill(command.pid, signal.SIGKILL)
        command.wait()
        deadline = time.monotonic() + 20
        while any(alive(p) for p in servers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(alive(p) for p in servers), "Prefect's server outlived the killed command"
    finally:
        if command.poll() is None:
            command.kill()
