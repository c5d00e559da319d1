"""Children die with the command that started them.

A ``phm`` command can start processes of its own: Prefect's temporary API server (a uvicorn
child), Dask's local workers. When the command ends normally it stops them; when it is killed
with SIGKILL (what the OOM killer does) it cannot, and they live on, re-parented to PID 1,
holding ports, memory and the database. So the command starts a watchdog, in its own session so
that a signal to the command's process group does not reach it: while the command lives, the
watchdog notes its descendants every half second; when the command is gone, it sends each one
still alive (the same process: start time checked, so a reused PID is never hit) SIGTERM, then
SIGKILL after five seconds, and exits. Linux only (it reads /proc); elsewhere nothing is started.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# Runs as ``python -c WATCHDOG <pid>``: the standard library only, so it starts in milliseconds.
WATCHDOG = r"""
import os, signal, sys, time

def stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return int(fields[1]), fields[19]  # parent pid, start time
    except (OSError, IndexError, ValueError):
        return None

def table():
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (found := stat(int(name))) is not None:
            out[int(name)] = found
    return out

watched, me = int(sys.argv[1]), os.getpid()
started = (stat(watched) or (None, None))[1]
seen = {}
while started is not None and (stat(watched) or (None, None))[1] == started:
    processes = table()
    frontier = [watched]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, start) in processes.items():
            if ppid == parent and pid != me and pid not in seen:
                seen[pid] = start
                frontier.append(pid)
    seen = {pid: start for pid, start in seen.items() if (stat(pid) or (None, None))[1] == start}
    time.sleep(0.5)
for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
    alive = [pid for pid, start in seen.items() if (stat(pid) or (None, None))[1] == start]
    for pid in alive:
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    deadline = time.monotonic() + wait
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [pid for pid in alive if (stat(pid) or (None, None))[1] == seen[pid]]
"""


def start_watchdog(pid: int) -> subprocess.Popen | None:
    """Watch ``pid`` (the running command) and end its descendants when it is gone."""
    if not Path("/proc/self/stat").exists():
        return None
    return subprocess.Popen([sys.executable, "-c", WATCHDOG, str(pid)], start_new_session=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
