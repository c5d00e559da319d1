"""One run at a time per output folder.

An output folder holds one DuckDB file, and DuckDB allows one writer per file; two runs into one
folder would also publish over each other's lists. So a run holds an exclusive lock on
``<out>/.phm-run.lock`` from start to end; a second run into the same folder stops at once with
an error naming the folder (runs for different ICBs use different folders and run side by side).
The lock is the operating system's (flock): it goes with the process, so a killed run leaves no
stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from phm.exceptions import DatabaseError

LOCK_NAME = ".phm-run.lock"


@contextlib.contextmanager
def run_lock(out: Path):
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(handle, 64, 0).decode(errors="replace").strip() or "unknown"
            raise DatabaseError(f"{out.resolve()}: another phm run (process {holder}) is using this output folder; "
                                "wait for it to finish, or give this run its own --out") from None
        os.ftruncate(handle, 0)
        os.pwrite(handle, str(os.getpid()).encode(), 0)
        yield path
    finally:
        os.close(handle)  # releases the lock
