"""Real servers for the tests that need them (MLflow, Prefect), started on 127.0.0.1."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(command: list[str], health_url: str, log: Path, env: dict, timeout: float = 120):
    """Start ``command``, wait until ``health_url`` answers 200, stop it at the end."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=open(log, "w"), env=env)
    try:
        deadline = time.time() + timeout
        while True:
            try:
                with urllib.request.urlopen(health_url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"{command[0:3]} did not start: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def keep_migrated_database(to: Path) -> None:
    """A copy of the running Prefect test harness's database (SQLite's online backup, consistent
    while the server runs) as it is right after the harness started: every migration applied and
    the block types registered, no flow run yet. A fresh PREFECT_HOME given a copy of it
    (``migrated_prefect_home`` in tests/conftest.py) is still a home of its own, empty of runs, but
    its server skips the migrations: 9.1 s of CPU to answer instead of 17.2 s (2026-12-01)."""
    import sqlite3

    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL

    url = PREFECT_SERVER_DATABASE_CONNECTION_URL.value()  # the harness's: sqlite+aiosqlite:///<its folder>/...
    if not url.startswith("sqlite+aiosqlite:///"):
        raise RuntimeError(f"the test harness's Prefect database is not a SQLite file: {url}")
    source = sqlite3.connect(url.removeprefix("sqlite+aiosqlite:///"))
    copy = sqlite3.connect(to)
    try:
        source.backup(copy)
    finally:
        copy.close()
        source.close()


def prefect_harness():
    """Prefect's test harness (a temporary Prefect server for the test's flows), waiting for the
    server as long as PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS (tests/conftest.py: 180 s)
    rather than the harness's own 30 s, which a busy 2-core CI machine has run past."""
    from prefect.testing.utilities import prefect_test_harness

    return prefect_test_harness(server_startup_timeout=None)
