"""flows/temporary_server.py starts Prefect's temporary server the way Prefect would (issue 21).

Prefect has no public way to be handed a server, so two undocumented parts of Prefect 3.8 are
relied on; each test here fails when Prefect changes one of them:
- the command line and environment of ``SubprocessASGIServer._run_uvicorn_command``, which
  ``_command``/``_environment`` copy so that the server can start before Prefect is imported;
- the instance attributes ``port``, ``server_process`` and ``running`` through which
  ``SubprocessASGIServer.start`` keeps its server and ``get_client`` finds it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# In a process of its own: Prefect's settings are read from the environment when Prefect is
# first imported, so the comparison needs an environment with no Prefect settings beyond the
# test's own (and none of a test harness that another test may have entered here).
COMPARE = r"""
import json, subprocess, sys
from flows import temporary_server
ours = {"args": temporary_server._command(8123), "env": temporary_server._environment()}
from prefect.server.api.server import SubprocessASGIServer

prefects = {}

class Recorder:  # stands in for the OS's process creation only; Prefect's own method runs
    def __init__(self, args, env=None, **kwargs):
        prefects.update(args=args, env=env)

real_popen, subprocess.Popen = subprocess.Popen, Recorder
SubprocessASGIServer(port=8123)._run_uvicorn_command()
subprocess.Popen = real_popen

# what hand_over sets, and what Prefect then does with it
import inspect
from prefect.client.orchestration import get_client
server = SubprocessASGIServer()
server.running, server.port = True, 8124
server.start()  # already running: starts nothing
kept = {"process": server.server_process is None, "api_url": server.api_url,
        "same_instance": SubprocessASGIServer() is server, "get_client": inspect.getsource(get_client)}
server.running = False
server.stop()
print(json.dumps({"ours": ours, "prefects": prefects, "kept": kept}))
"""


@pytest.fixture(scope="module")
def compared(tmp_path_factory) -> dict:
    tmp_path = tmp_path_factory.mktemp("temporary-server")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", COMPARE], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_the_early_server_has_prefects_command_line_and_environment(compared):
    """Where no profile or settings file exists (the only case where the server is started
    early), the command and environment are Prefect's own, up to how a boolean is spelt."""
    ours, prefects = compared["ours"], compared["prefects"]
    assert ours["args"] == prefects["args"]

    def prefect_settings(env: dict) -> dict:
        return {k: v.lower() for k, v in env.items() if k.startswith("PREFECT")}

    assert prefect_settings(ours["env"]) == prefect_settings(prefects["env"])
    assert {k: v for k, v in ours["env"].items() if not k.startswith("PREFECT")} == \
        {k: v for k, v in prefects["env"].items() if not k.startswith("PREFECT")}


def test_prefect_keeps_its_temporary_server_where_the_hand_over_puts_it(compared):
    """SubprocessASGIServer.start does nothing when ``running`` is set, the address comes from
    ``port``, and every ``SubprocessASGIServer()`` is the one instance: what hand_over sets so
    that Prefect's clients use the early server. get_client asks that instance for the address,
    with nothing (a cache, another instance) between them."""
    kept = compared["kept"]
    assert kept["process"] and kept["api_url"] == "http://127.0.0.1:8124/api" and kept["same_instance"]
    assert "server = SubprocessASGIServer()" in kept["get_client"] and "api = server.api_url" in kept["get_client"]
