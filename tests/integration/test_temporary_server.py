"""``phm run`` starts Prefect's temporary server before it imports Prefect, and stops it when
interrupted before Prefect has taken it over (issue 21, flows/temporary_server.py).

The command runs in a process of its own with an audit hook (``sys.addaudithook``) that notes,
when the server's uvicorn child is started, which heavy libraries the command has imported. On
the code before this change the server was started only after Prefect, MLflow and scikit-learn
had been imported (about 9 s into the command), so the first test fails there. ``main`` is
called without the watchdog (phm/orphans.py), so a server left behind is the command's own doing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.extracts import write_extract
from tests.processes import alive, children_with

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("prefect", "mlflow", "sklearn", "great_expectations", "polars", "duckdb")

HOOKED = r"""
import json, sys
record, HEAVY = open(sys.argv[1], "a"), sys.argv[2].split(",")

def hook(event, args):
    if event == "subprocess.Popen" and "uvicorn" in [str(a) for a in (args[1] or [])]:
        record.write(json.dumps({"args": [str(a) for a in args[1]],
                                 "loaded": [m for m in HEAVY if m in sys.modules]}) + "\n")
        record.flush()

sys.addaudithook(hook)
from cli.main import main
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads /proc (Linux)")
def test_phm_run_starts_prefects_server_before_importing_prefect_and_stops_it_on_ctrl_c(tmp_path):
    extract = write_extract(tmp_path / "extract")
    record = tmp_path / "spawned.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PYTHONPATH=str(ROOT), PHM_PSEUDONYMISATION_KEY="a-temporary-server-test-key-long-enough-42")
    command = subprocess.Popen([sys.executable, "-c", HOOKED, str(record), ",".join(HEAVY), "run", "--extract", str(extract),
                                "--out", str(tmp_path / "out")], env=env, cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    servers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while not servers and time.monotonic() < deadline and command.poll() is None:
            servers = children_with(command.pid, "uvicorn")
            time.sleep(0.05)
        assert servers, "phm run never started Prefect's temporary server"
        spawned = [json.loads(line) for line in record.read_text().splitlines()]
        assert spawned[0]["loaded"] == [], f"the server was started only after importing {spawned[0]['loaded']}"
        os.kill(command.pid, signal.SIGINT)  # Ctrl-C, before the flow (and Prefect) has the server
        output, _ = command.communicate(timeout=60)
        assert command.returncode == 130, output[-2000:]
        deadline = time.monotonic() + 10
        while any(alive(p) for p in servers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(alive(p) for p in servers), "the interrupted command left Prefect's server running"
        assert len(record.read_text().splitlines()) == 1, "more than one server was started"
    finally:
        if command.poll() is None:
            command.kill()
            command.wait()
        for pid in servers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
