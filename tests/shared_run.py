"""One finished pipeline run for the whole test session (fixtures ``shared_extract`` and
``finished_run`` in tests/conftest.py), read by the flow, leak, scale-out, fault and model tests
instead of each running the pipeline again.

The extract: 12,000 synthetic patients in 3 PCNs, seed 11, its patient ids remapped to 12-digit
numbers no other output could contain by chance (830,000,000,000 + 13 x id), so that any id that
escapes is found (tests/integration/test_leaks.py). The run: what ``phm demo`` runs after
generating its extract (the whole flow, with the synthetic truth measured in MLflow), in a fresh
process with its own PREFECT_HOME, so the Prefect server's database (every Prefect log, run, state
and event) is there to read.

Its settings carry a named reviewer's sign-off of the fairness gate (tests/signoff.py: ``reviewed()``,
or ``write_config`` for ``phm run --config``): these tests are about the pipeline's mechanics, and at
12,000 patients a small group's model can rightly fail the gate; the gate itself is tested in
tests/spec/test_fairness.py and tests/integration/test_fairness_pipeline.py.

Tests only read it. A test that needs to change a database copies it first; one that needs a run
of its own makes one in its own folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

KEY = "a-test-key-that-is-long-enough-0123456789"  # PHM_PSEUDONYMISATION_KEY of the shared run
ID_OFFSET = 830_000_000_000
PATIENTS, SEED, PCNS = 12_000, 11, 3
ROOT = Path(__file__).resolve().parents[1]  # the repository: ``tests`` is importable from here


@dataclass(frozen=True)
class FinishedRun:
    folder: Path  # extract/, out/ (what the run wrote), prefect-home/, terminal.log

    @property
    def extract(self) -> Path:
        return self.folder / "extract"

    @property
    def out(self) -> Path:
        return self.folder / "out"

    @property
    def db(self) -> Path:
        return self.out / "phm.duckdb"

    @property
    def lists(self) -> Path:
        """The published lists (a link to the folder of the run that published them)."""
        return self.out / "lists"

    @property
    def audit_json(self) -> Path:
        return self.out / "audit" / "fairness_audit.json"

    @property
    def terminal(self) -> str:
        return (self.folder / "terminal.log").read_text()


def reviewed():
    """The run settings of the shared run: the defaults, with the sign-off (tests/signoff.py)."""
    from flows.config import RunConfig
    from tests.signoff import AUDIT, STALE_MARKED

    return RunConfig(run=STALE_MARKED, audit=AUDIT)


def write_config(folder: Path) -> Path:
    """The same settings as a ``--config`` file for ``phm run`` (and deployments)."""
    from tests.signoff import signed_off_config

    return signed_off_config(folder)


def remap_ids(extract: Path) -> None:
    import polars as pl

    for path in [*extract.glob("*.parquet"), *extract.glob("truth/*.parquet")]:
        frame = pl.read_parquet(path)
        if "patient_id" in frame.columns:
            frame.with_columns(pl.col("patient_id") * 13 + ID_OFFSET).write_parquet(path)
    for path in extract.glob("practice_side/*/patients.csv"):  # each practice's lookup to NHS numbers
        frame = pl.read_csv(path, schema_overrides={"nhs_number": pl.String})
        frame.with_columns(pl.col("patient_id") * 13 + ID_OFFSET).write_csv(path)


def make_extract(extract: Path) -> Path:
    from phm.synth import SynthConfig, generate

    generate(SynthConfig(patients=PATIENTS, seed=SEED, pcns=PCNS), extract)
    remap_ids(extract)
    return extract


def subprocess_env(**extra: str) -> dict:
    """This process's environment for a pipeline in a child process: with the key, without an
    inherited MLflow tracking URI (tests/conftest.py says why)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL")}
    return {**env, "PHM_PSEUDONYMISATION_KEY": KEY, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **extra}


def run_like_the_demo(folder: Path) -> FinishedRun:
    """The whole flow on ``folder``/extract into ``folder``/out, as ``phm demo`` runs it."""
    run = FinishedRun(folder)
    # A process of the run's own, as the demo's: its modules frozen out of the garbage collector's
    # walks once imported and at exit (phm/collector.py), as ``phm``'s console entry point does.
    demo = ("import sys; from pathlib import Path; from cli import main as cli; from phm import collector; "
            "from tests.shared_run import reviewed; cli._OWN_PROCESS = True; "
            "cli._env_defaults(); e = Path(sys.argv[1]); "
            "code = cli.run_pipeline(e, Path(sys.argv[2]), reviewed(), truth=e / 'truth', force=True); "
            "collector.before_exit(); sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", demo, str(run.extract), str(run.out)],
                          env=subprocess_env(PREFECT_HOME=str(folder / "prefect-home")), cwd=ROOT,
                          capture_output=True, text=True, timeout=1800)
    (folder / "terminal.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, done.stderr[-3000:]
    return run
