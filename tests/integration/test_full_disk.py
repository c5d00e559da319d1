"""A real full disk (issue 16 item 5): phm writing into a small tmpfs, not an ENOSPC raised by a
test (tests/unit/test_errors.py does that, for every wrapping of the error).

The tmpfs is mounted in a user and mount namespace of its own (``unshare --user --map-root-user
--mount``), so no root is needed and nothing outside the command sees it; it goes when the command
ends. Where the kernel does not allow unprivileged user namespaces the tests are skipped, saying so.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from tests.shared_run import ROOT, subprocess_env

pytestmark = pytest.mark.slow

MOUNT_AND_RUN = 'mount -t tmpfs -o size="$1" phm-full-disk "$2" && shift 2 && exec "$@"'


def user_namespaces() -> bool:
    if shutil.which("unshare") is None:
        return False
    done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True)
    return done.returncode == 0


requires_namespaces = pytest.mark.skipif(not user_namespaces(), reason="unprivileged user namespaces are not "
                                         "allowed here (unshare --user --map-root-user --mount), so no tmpfs")


def on_a_small_disk(size: str, mount_point: Path, *phm_args: str, prefect_api: str | None = None
                    ) -> subprocess.CompletedProcess:
    """``phm`` with ``mount_point`` a tmpfs of ``size`` (e.g. "1m"); with ``prefect_api``, its flow
    uses the session's Prefect server rather than starting (and, loaded, noisily stopping) its own."""
    mount_point.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", MOUNT_AND_RUN, "sh",
                           size, str(mount_point), sys.executable, "-m", "cli", *phm_args],
                          cwd=ROOT, env=subprocess_env(**({"PREFECT_API_URL": prefect_api} if prefect_api else {})),
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def extract(tmp_path_factory) -> Path:
    """2,000 synthetic patients as CSV (2.9 MB; its database takes 5.4 MB)."""
    from phm.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("full-disk") / "extract"
    generate(SynthConfig(patients=2_000, seed=7, pcns=2, format="csv"), out)
    return out


@requires_namespaces
@pytest.mark.parametrize("size", ["1m", "3m"])  # full while loading the tables; full at the quarantine's commit
def test_ingest_onto_a_full_disk_says_so_naming_the_file_with_exit_9(extract, tmp_path, size, prefect_test_server):
    small = tmp_path / "small"
    done = on_a_small_disk(size, small, "ingest", "--extract", str(extract), "--db", str(small / "phm.duckdb"),
                           "--no-docs", prefect_api=prefect_test_server)
    assert done.returncode == 9, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("phm: ")]
    assert errors == [f"phm: error: no space left on the device writing {small / 'phm.duckdb.wal'}: the published "
                      "lists are untouched; free some space (or point --out at a larger disk) and run again"]
    assert "Traceback" not in done.stdout + done.stderr  # nor does Prefect's log repeat it with tracebacks
    assert "malformed" not in done.stderr and "extract" not in errors[0]  # the extract is not blamed


@requires_namespaces
def test_a_full_disk_error_without_a_path_is_named_by_the_commands_output(tmp_path):
    """polars (like Python's write() and close()) reports ENOSPC without the file: the output
    option names it."""
    source = tmp_path / "in.csv"
    rows = 30_000
    pl.DataFrame({"age": [50] * rows, "sex": ["F"] * rows, "bmi": [27.5] * rows, "sbp": [135.0] * rows}
                 ).write_csv(source)
    small = tmp_path / "small"
    done = on_a_small_disk("256k", small, "calc", "qrisk3", "--input", str(source), "--output", str(small / "o.csv"))
    assert done.returncode == 9, done.stderr[-2000:]
    assert f"no space left on the device writing phm's output (--output {small / 'o.csv'})" in done.stderr
