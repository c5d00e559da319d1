"""Faults: a run killed (SIGKILL) in each stage in turn, then run again, ends as if never killed;
a run whose gate refuses leaves the published lists as they were.

A 2,000-patient synthetic extract in 3 PCNs. Folder Y gets an uninterrupted run: the lists a PCN
already has, and the reference (its lists' bytes, its database's row counts). Then seven runs of
the same extract (``--force``), each killed with SIGKILL, process group and all, in stage 1, 2,
... 7 (a second into it, or halfway through a stage shorter than two seconds in the reference
run, so that the kill lands in the stage); then one more run. Throughout, a reader keeps opening
Y's published lists: they must always be there and readable, and the same. At the end Y's lists
equal the reference byte for byte, its database has no duplicated or half-written rows and the
reference's counts, nothing of the killed runs is left behind, and one more run of the unchanged
extract does nothing. Last, a run of Y with settings whose gate refuses every model fails and
leaves Y's lists published. (That two folders' runs of one extract give the same lists is the
scale-out test's: the session's run against a Dask run, tests/integration/test_scale_out.py.)

The runs use the session's Prefect server (PREFECT_API_URL), as an ICS's scheduled runs use
theirs: a killed run leaves its flow run behind on the server, as a killed worker's would, and no
run pays for a temporary server of its own (about 12 s each, ten runs). The extract is small
because every stage is killed in a run that first goes through the stages before it: eleven
runs, where the session's 12,000-patient extract cost a minute more and tied this module to the
worker that makes the session's run. Size is not what is tested (the sign-off accepts whatever
the gate finds at this size). The module's tests took 295 s at 2,000 patients (alone, -n 0, on the
shared machine), 386 s at 4,000 (in the suite of 2026-11-30 11:50).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from flows.config import RunConfig
from flows.publish import MANIFEST, NOT_REPLACED
from phm.exceptions import FairnessGateFailed
from phm.pseudonymise import KEY_VARIABLE
from tests.shared_run import KEY, subprocess_env, write_config
from tests.signoff import STALE_MARKED

PATIENTS, SEED, PCNS = 2_000, 11, 3

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prefect_api(prefect_test_server) -> dict:
    """The environment of every run here: the session's Prefect server."""
    return subprocess_env(PREFECT_API_URL=prefect_test_server)


def command(extract: Path, out: Path, *extra: str) -> list[str]:
    config = write_config(Path(out).parent)  # the settings with the sign-off (tests/signoff.py)
    return [sys.executable, "-m", "cli", "run", "--extract", str(extract), "--out", str(out), "--config", str(config),
            *extra]


def run_to_end(env: dict, extract: Path, out: Path, *extra: str) -> str:
    done = subprocess.run(command(extract, out, *extra), env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def stage_seconds(terminal: str) -> list[float]:
    """Each stage's seconds in a run's terminal output ("  stages: ingest and validate 13 s, ...")."""
    line = next(line for line in terminal.splitlines() if line.startswith("  stages: "))
    return [float(part.rsplit(" ", 2)[-2]) for part in line.removeprefix("  stages: ").split(", ")]


def kill_in_stage(env: dict, extract: Path, out: Path, stage: int, after: float) -> None:
    process = subprocess.Popen(command(extract, out, "--force"), env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen = []
    for line in process.stdout:
        seen.append(line)
        if f"[{stage}/7]" in line:
            time.sleep(after)
            os.killpg(process.pid, signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, f"the run ended before stage {stage}: {''.join(seen)[-2000:]}"


def list_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix == ".csv"}


class ListsReader(threading.Thread):
    """Opens the published lists again and again, as a PCN team might at any moment."""

    def __init__(self, out: Path, expected: dict[str, bytes]) -> None:
        super().__init__(daemon=True)
        self.out, self.expected, self.stop, self.reads, self.faults = out, expected, threading.Event(), 0, []

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                folder = (self.out / "lists").resolve(strict=True)
                if list_files(folder) != self.expected:
                    self.faults.append(f"{folder.name}: lists differ")
                json.loads((folder / "lists_manifest.json").read_text())
                self.reads += 1
            except (OSError, ValueError) as exc:
                self.faults.append(repr(exc))
            time.sleep(0.05)


@pytest.fixture(scope="module")
def extract(tmp_path_factory) -> Path:
    from phm.synth import SynthConfig, generate

    folder = tmp_path_factory.mktemp("faults-extract") / "extract"
    generate(SynthConfig(patients=PATIENTS, seed=SEED, pcns=PCNS), folder)
    return folder


@dataclass(frozen=True)
class Published:
    folder: Path  # Y
    terminal: str  # what its uninterrupted run printed


@pytest.fixture(scope="module")
def published(extract, prefect_api, tmp_path_factory) -> Published:
    """Folder Y: one uninterrupted run of the extract, published."""
    folder = tmp_path_factory.mktemp("faults") / "y"
    return Published(folder, run_to_end(prefect_api, extract, folder))


def _db_facts(db: Path) -> dict:
    con = duckdb.connect(str(db), read_only=True)
    try:
        facts = {}
        for table, key in (("main.patients", "patient_id"), ("marts.mart_patient_features", "patient_id"),
                           ("marts.patient_scores", "patient_id"), ("marts.risk_scores", "patient_id"),
                           ("lists.invitations", "practice_pseudo_id, pseudonym, list_date")):
            rows, distinct = con.execute(f"select count(*), count(distinct ({key})) from {table}").fetchone()
            facts[table] = rows
            assert rows == distinct, f"{table}: duplicated rows"
        for table in ("main.clinical_events", "main.medications", "main.practice_registrations"):
            facts[table] = con.execute(f"select count(*) from {table}").fetchone()[0]
        counts = con.execute("select table_name, rows_read, rows_loaded, rows_quarantined from ingest.table_counts").fetchall()
        assert counts and all(read == loaded + quarantined for _, read, loaded, quarantined in counts)
        facts["table_counts"] = sorted(counts)
        return facts
    finally:
        con.close()


def test_killed_in_every_stage_then_run_again_equals_an_uninterrupted_run(extract, published, prefect_api):
    folder = published.folder
    reference_lists = list_files((folder / "lists").resolve())
    reference_facts = _db_facts(folder / "phm.duckdb")
    assert len(reference_lists) == 3 * PCNS  # a list, its summary and its ethnicity re-ask worklist per PCN
    seconds = stage_seconds(published.terminal)
    assert len(seconds) == 7, seconds

    reader = ListsReader(folder, reference_lists)
    reader.start()
    try:
        for stage in range(1, 8):
            kill_in_stage(prefect_api, extract, folder, stage, after=min(1.0, seconds[stage - 1] / 2))
            assert list_files((folder / "lists").resolve()) == reference_lists, f"killed in stage {stage}"
        output = run_to_end(prefect_api, extract, folder, "--force")
    finally:
        reader.stop.set()
        reader.join()
    assert reader.reads > 100 and reader.faults == [], reader.faults[:5]
    assert "removed what an interrupted run left" in output or not list(folder.glob(".shards-*"))

    assert list_files((folder / "lists").resolve()) == reference_lists
    assert _db_facts(folder / "phm.duckdb") == reference_facts
    assert not list(folder.glob(".shards-*"))
    published_folders = [p for p in folder.glob("lists-*") if p.is_dir()]
    assert all((p / "lists_manifest.json").is_file() for p in published_folders) and len(published_folders) <= 2

    # the same extract once more, without --force: nothing to do, the lists untouched
    target = (folder / "lists").resolve()
    again = run_to_end(prefect_api, extract, folder)
    assert "extract and settings unchanged since the run that finished at" in again
    assert (folder / "lists").resolve() == target


def test_a_gate_that_refuses_leaves_the_previous_lists_published(extract, published, prefect_test_server,
                                                                 monkeypatch):
    from flows.run import run_flow
    from models.fairness import AuditSettings, Block

    folder = published.folder
    before = (folder / "lists").resolve()
    files = {p.name: p.read_bytes() for p in before.iterdir()}
    monkeypatch.setenv(KEY_VARIABLE, KEY)
    # every group too small: WARN, and no sign-off; and a reviewer blocks T2D ([[audit.block]]),
    # which the same refusal names (the block's own rules: tests/spec/test_fairness.py)
    block = Block("Dr B, ICS fairness panel", "held for the fairness panel of 3 May (ref. 15)", ("t2d",))
    strict = RunConfig(run=STALE_MARKED, audit=AuditSettings(min_patients=10**9, blocks=(block,)))
    with pytest.raises(FairnessGateFailed, match="the fairness gate refused .*(FAIL|awaiting a reviewer's "
                       "sign-off).*no list is produced and the previous lists stay published") as refused:
        run_flow(extract, folder, strict)
    assert "t2d WARN, blocked by Dr B, ICS fairness panel" in str(refused.value) or \
        "t2d FAIL, blocked by Dr B, ICS fairness panel" in str(refused.value)
    assert (folder / "lists").resolve() == before
    after = {p.name: p.read_bytes() for p in before.iterdir()}
    # the lists themselves are untouched; they are marked as not replaced by the refused run
    assert {n: b for n, b in after.items() if n not in (MANIFEST, NOT_REPLACED)} == \
        {n: b for n, b in files.items() if n != MANIFEST}
    manifest = json.loads(after[MANIFEST])
    assert manifest["not_replaced"]["why"] == "fairness gate refused"
    assert {k: v for k, v in manifest.items() if k != "not_replaced"} == json.loads(files[MANIFEST])
    assert "NOT replaced" in after[NOT_REPLACED].decode() and "fairness gate" in after[NOT_REPLACED].decode()
    assert "blocked by Dr B, ICS fairness panel" in manifest["not_replaced"]["detail"]


def test_a_stale_extract_is_refused_before_any_work_and_the_published_lists_are_marked(
        extract, published, prefect_test_server, monkeypatch):
    """The synthetic extract is dated 2026-03-31: with the default policy ("refuse", 45 days) the
    run stops before ingest (the database is not touched) and says how to go on."""
    from flows.config import RunSettings
    from flows.run import run_flow
    from phm.exceptions import StaleExtract

    folder = published.folder
    lists = (folder / "lists").resolve()
    database = (folder / "phm.duckdb").stat().st_mtime_ns
    monkeypatch.setenv(KEY_VARIABLE, KEY)
    with pytest.raises(StaleExtract, match=r"stale data: the extract is dated 2026-03-31, \d+ days before today .*"
                       r"limit is 45 days.*stale_extract = \"mark\"") as refused:
        run_flow(extract, folder, RunConfig(run=RunSettings(max_extract_age_days=45)), force=True)
    assert refused.value.exit_code == 10
    assert (folder / "lists").resolve() == lists and (folder / "phm.duckdb").stat().st_mtime_ns == database
    assert json.loads((lists / MANIFEST).read_text())["not_replaced"]["why"] == "stale extract"
