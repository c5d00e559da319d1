"""Prefect's temporary API server, started before the command imports Prefect (issue 21).

With no Prefect API configured, the first flow run of a process starts Prefect's temporary
("ephemeral") server: a uvicorn child process that imports the whole Prefect server and checks
its database's migrations before it answers, seconds of one core. Prefect starts it from
``prefect.server.api.server.SubprocessASGIServer``, which a command can only reach by importing
Prefect and that server module first (about 4 s of this process's own start-up), so the child
used to begin only after them. Here ``phm run`` starts the same child, with the same command
line and environment, as its first act (``start``): it then starts up on the other core while
this process imports Prefect, MLflow, Great Expectations and scikit-learn. Before the flow,
``hand_over`` gives it to Prefect as its temporary server (the one instance every Prefect client
of this process asks for), waits until it answers, and Prefect uses and stops it as if it had
started it: same address format, same log lines, stopped at exit. If it has died or does not
answer in time, it is stopped and Prefect starts its own as before.

Only where the environment alone decides Prefect's settings and names no API (no profile, no
settings file: ``cli.main._prefect_api_configured``'s test), and only in a process that has not
imported Prefect (under a test harness, Prefect's own start is used). With PREFECT_API_URL set
nothing here runs.

Prefect offers no public way to hand it a server: this relies on two undocumented parts of
Prefect 3.8 (pinned in uv.lock), each pinned by tests/unit/test_temporary_server.py: the
command line and environment of ``SubprocessASGIServer._run_uvicorn_command`` (copied in
``_command``/``_environment``), and the instance attributes ``port``, ``server_process`` and
``running`` that ``SubprocessASGIServer.start`` sets (set by ``hand_over``). Prefect's own test
harness installs a server it started the same way (prefect/testing/utilities.py).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

# What Prefect's SubprocessASGIServer adds to the environment of the server it starts.
SERVER_ENVIRONMENT = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
# What Prefect's built-in default profile sets where no profiles file exists ("ephemeral" in
# prefect/settings/profiles.toml), which Prefect passes on as a setting that is set.
DEFAULT_PROFILE = {"PREFECT_SERVER_EPHEMERAL_ENABLED": "True"}
PORTS = range(8000, 9000)  # SubprocessASGIServer._port_range
# Settings that decide whether Prefect may start a temporary server at all: when one is set, Prefect decides.
EPHEMERAL_SWITCHES = ("PREFECT_SERVER_EPHEMERAL_ENABLED", "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE")


class EarlyServer:
    """The uvicorn child started before Prefect is imported, until Prefect takes it over."""

    def __init__(self, port: int, process: subprocess.Popen) -> None:
        self.port, self.process = port, process
        self.handed_over = False

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def stop(self) -> None:
        """Stop the child unless Prefect has taken it over (then Prefect's own stop does, at exit).
        Registered at exit when the child is started, so an error or Ctrl-C before the hand-over
        leaves nothing behind; a SIGKILL is the watchdog's (phm/orphans.py)."""
        if self.handed_over or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


_early: EarlyServer | None = None


def _free_port() -> int:
    """A free port in Prefect's range, chosen as SubprocessASGIServer.find_available_port does
    (if another process takes it first, the child exits and Prefect starts its own)."""
    for _ in range(10):
        port = random.choice(PORTS)
        with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                time.sleep(random.uniform(0.1, 0.5))
                continue
        return port
    raise RuntimeError("no free port for Prefect's temporary server")


def _command(port: int) -> list[str]:
    """SubprocessASGIServer._run_uvicorn_command's command line, without importing Prefect
    (``prefect.__module_path__.parent`` is the folder that holds the prefect package)."""
    prefect_folder = Path(importlib.util.find_spec("prefect").origin).parent
    return [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect_folder.parent), "--factory",
            "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "error", "--lifespan", "on"]


def _environment() -> dict[str, str]:
    """The server's environment as Prefect makes it: this one, the server's own switches, then
    every Prefect setting that is set (``to_environment_variables(exclude_unset=True)``). Where
    no profile or settings file exists, the settings that are set are the PREFECT_ variables of
    this environment, already in it, and the built-in default profile's."""
    return {**os.environ, **SERVER_ENVIRONMENT, **DEFAULT_PROFILE}


def start() -> EarlyServer | None:
    """Start Prefect's temporary server now if this process will need one (see the module's
    docstring); at most once. Returns it, or None where Prefect is left to start its own."""
    global _early
    if _early is not None:
        return _early
    if "prefect" in sys.modules or any(os.environ.get(name) for name in EPHEMERAL_SWITCHES):
        return None
    try:
        port = _free_port()
        _early = EarlyServer(port, subprocess.Popen(_command(port), env=_environment()))
    except (OSError, RuntimeError):  # Prefect's own start will try, and report what fails
        return None
    atexit.register(_early.stop)
    return _early


def hand_over() -> bool:
    """Give the early server to Prefect as this process's temporary server and wait until it
    answers, as SubprocessASGIServer.start waits for its own. False (the child stopped, Prefect
    left to start one itself as before) when there is none, Prefect already has one, or it has
    died or not answered within PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS."""
    from prefect.server.api.server import SubprocessASGIServer, subprocess_server_logger
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    early = _early
    if early is None or early.handed_over:
        return early is not None
    server = SubprocessASGIServer()  # the instance Prefect's clients ask for when no API is set
    if PREFECT_API_URL.value() or server.running or early.process.poll() is not None:
        early.stop()
        return False
    # the line SubprocessASGIServer.start logs when it starts one
    subprocess_server_logger.info(
        f"Starting temporary server on http://127.0.0.1:{early.port}\nSee "
        "https://docs.prefect.io/v3/concepts/server#how-to-guides "
        "for more information on running a dedicated Prefect server.")
    if not _answers(early, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()):
        early.stop()
        return False
    server.port, server.server_process, server.running = early.port, early.process, True
    early.handed_over = True
    atexit.register(server.stop)  # as SubprocessASGIServer.start registers it
    return True


def _answers(early: EarlyServer, timeout: float) -> bool:
    """Whether the child answers its health check within ``timeout`` seconds: polled every 0.1 s
    through httpx, as SubprocessASGIServer.start polls its own."""
    import httpx

    deadline = time.monotonic() + timeout
    with httpx.Client() as client:
        while time.monotonic() < deadline and early.process.poll() is None:
            try:
                if client.get(f"{early.api_url}/health").status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    return False


def started() -> EarlyServer | None:
    """The early server of this process, if ``start`` started one."""
    return _early
