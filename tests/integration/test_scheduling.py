"""Scheduled runs as an ICS unit has them: a real ``prefect server`` and a process worker on
127.0.0.1, deployments registered by ``phm deploy``.

- the schedule (cron in Europe/London) reads back through the API, and the server's scheduler
  has put the next runs at 06:00 London time;
- two ICBs' deployments triggered together with ``run_deployment`` both complete on one
  machine (each its own DuckDB file), with their lists and their MLflow audit run;
- a run whose extract is broken fails visibly: the failed step and the error are in the API.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.servers import free_port, running
from tests.shared_run import write_config

pytestmark = pytest.mark.slow
KEYS = {"QAA": "key-of-icb-qaa-long-enough-0123456789abc", "QBB": "key-of-icb-qbb-long-enough-0123456789abc"}
POOL = "phm-test-pool"


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory, migrated_prefect_home):
    home = migrated_prefect_home(tmp_path_factory.mktemp("prefect-home"))  # its own, migrated (conftest.py)
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5", "PREFECT_API_URL": ""}
    env.pop("PREFECT_API_URL")
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with running(command, f"{url}/health", home / "server.log", env, timeout=180):
        yield url, home


def copy_for_icb(extract: Path, icb: str, to: Path) -> None:
    """The extract as ICB ``icb`` sends it: the same patients, their practices in that ICB."""
    import polars as pl

    shutil.copytree(extract, to)
    practices = pl.read_parquet(to / "practices.parquet")
    practices.with_columns(pl.lit(icb).alias("icb_code")).write_parquet(to / "practices.parquet")


@pytest.fixture(scope="module")
def icb_extract(tmp_path_factory) -> Path:
    """A small extract for the scheduled runs: 2,000 patients in 3 PCNs. Scheduling is what is
    tested here, not scale; the session's 12,000-patient run is left to the tests that read it,
    so this module can go to either pytest-xdist worker."""
    from phm.synth import SynthConfig, generate

    extract = tmp_path_factory.mktemp("icb-extract") / "extract"
    generate(SynthConfig(patients=2_000, seed=11, pcns=3), extract)
    return extract


@pytest.fixture(scope="module")
def deployed(prefect_server, icb_extract, tmp_path_factory):
    url, home = prefect_server
    folder = tmp_path_factory.mktemp("icbs")
    # one extract as two ICBs' extracts, run with the mechanics tests' settings (a small group's
    # model can fail the gate, which is right but not what this test is about: a reviewer's
    # sign-off accepts it)
    for icb in KEYS:
        copy_for_icb(icb_extract, icb, folder / icb / "extract")
    config = write_config(folder)  # the settings with the sign-off (tests/signoff.py)
    (folder / "broken").mkdir()
    (folder / "broken" / "extract.json").write_text('{"extract_date": "2026-03-31", "imd_version": "IMD2019"}')
    (folder / "deployments.toml").write_text(f'''
work_pool = "{POOL}"

[[deployment]]
icb = "QAA"
extract = "{folder / 'QAA' / 'extract'}"
out = "{folder / 'QAA' / 'out'}"
config = "{config}"

[[deployment]]
icb = "QBB"
extract = "{folder / 'QBB' / 'extract'}"
out = "{folder / 'QBB' / 'out'}"
config = "{config}"
cron = "30 5 * * 1-5"

[[deployment]]
name = "phm-QAA-broken"
icb = "QAA"
extract = "{folder / 'broken'}"
out = "{folder / 'broken-out'}"
config = "{config}"
''')
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": url}
    env.pop("MLFLOW_TRACKING_URI", None)  # see conftest.py: each run uses its own folder's store
    deploy = subprocess.run([sys.executable, "-m", "cli", "deploy", "--file", str(folder / "deployments.toml")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert deploy.returncode == 0, deploy.stderr[-3000:]
    worker_env = {**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
                  **{f"PHM_PSEUDONYMISATION_KEY_{icb}": key for icb, key in KEYS.items()}}
    worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL],
                              env=worker_env, stdout=subprocess.DEVNULL, stderr=open(folder / "worker.log", "w"))
    try:
        # Prefect reads its settings from the environment once, at import, and an earlier test has
        # imported it, so setting PREFECT_API_URL here would leave this process on an ephemeral
        # server: point this process's client at the real server through Prefect's own settings.
        from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: url, PREFECT_HOME: home}):
            yield folder, deploy.stderr + deploy.stdout
    finally:
        worker.terminate()
        worker.wait(timeout=60)


def _client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def test_phm_deploy_registers_each_icb_with_its_schedule_in_london_time(deployed):
    folder, output = deployed
    assert "deployed phm-scheduled-run/phm-QAA (0 6 * * 1, Europe/London; next run Mon " in output
    assert "Looks like you're deploying" not in output and "Successfully created" not in output  # Prefect's own
    assert f"prefect worker start --pool {POOL}" in output
    with _client() as client:
        qaa = client.read_deployment_by_name("phm-scheduled-run/phm-QAA")
        qbb = client.read_deployment_by_name("phm-scheduled-run/phm-QBB")
        assert qaa.work_pool_name == POOL and qaa.parameters["icb"] == "QAA"
        assert qaa.parameters["extract"] == str(folder / "QAA" / "extract")
        assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in qaa.schedules] == \
            [("0 6 * * 1", "Europe/London", True)]
        assert qbb.schedules[0].schedule.cron == "30 5 * * 1-5"
        assert "PHM_PSEUDONYMISATION_KEY" not in str(qaa.parameters)
        # the server's scheduler has already put the coming runs in, at 06:00 on Mondays in London
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

        deadline = time.time() + 60
        while True:
            scheduled = [r for r in client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[qaa.id])))
                if r.state_type.value == "SCHEDULED"]
            if scheduled or time.time() > deadline:
                break
            time.sleep(2)
    assert scheduled, "the scheduler made no runs"
    for run in scheduled:
        local = run.expected_start_time.astimezone(ZoneInfo("Europe/London"))
        assert (local.weekday(), local.hour, local.minute) == (0, 6, 0)
        assert run.expected_start_time > dt.datetime.now(dt.UTC)


def test_two_icb_runs_started_together_both_complete_with_lists_and_mlflow(deployed):
    import mlflow
    from prefect.deployments import run_deployment

    folder, _ = deployed
    started = {icb: run_deployment(f"phm-scheduled-run/phm-{icb}", timeout=0) for icb in KEYS}
    finished = {}
    deadline = time.time() + 900
    with _client() as client:
        while len(finished) < len(started) and time.time() < deadline:
            for icb, run in started.items():
                state = client.read_flow_run(run.id).state
                if state.is_final():
                    finished[icb] = state
            time.sleep(3)
    assert {icb: s.type.value for icb, s in finished.items()} == {icb: "COMPLETED" for icb in KEYS}, \
        {icb: s.message for icb, s in finished.items()} or (folder / "worker.log").read_text()[-3000:]
    for icb in KEYS:
        out = folder / icb / "out"
        lists = out / "lists"
        assert lists.is_symlink() and sorted(p.suffix for p in lists.iterdir()).count(".xlsx") == 3  # PCNs
        client = mlflow.MlflowClient(f"sqlite:///{out / 'mlflow' / 'mlflow.db'}")
        experiments = client.search_experiments()
        runs = client.search_runs([e.experiment_id for e in experiments], "tags.`phm.kind` = 'fairness audit'")
        assert len(runs) == 1 and runs[0].data.tags["phm.icb_code"] == icb


def test_a_failed_run_shows_the_failed_step_and_its_error(deployed):
    from prefect.client.schemas.filters import (
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.deployments import run_deployment

    run = run_deployment("phm-scheduled-run/phm-QAA-broken", timeout=600)
    assert run.state.type.value == "FAILED"
    assert "ExtractError" in run.state.message and "table 'practices' is missing" in run.state.message
    with _client() as client:
        failed = client.read_task_runs(task_run_filter=TaskRunFilter(
            state=TaskRunFilterState(type=TaskRunFilterStateType(any_=["FAILED"]))))
    steps = {t.name.rsplit("-", 1)[0]: t.state.message for t in failed}
    assert "load-and-stage" in steps and "practices" in steps["load-and-stage"]


def test_phm_deploy_names_a_wrong_api_url_and_the_deployments_the_file_no_longer_has(prefect_server, tmp_path):
    """What an operator meets: PREFECT_API_URL without its /api (the UI's address), and an ICB
    taken out of the deployments file, whose deployment goes on running on its schedule."""
    url, home = prefect_server
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": url.removesuffix("/api")}
    for icb in ("QCC", "QDD"):
        (tmp_path / icb).mkdir()

    def deploy(icbs):
        path = tmp_path / "deployments.toml"
        path.write_text('work_pool = "phm-test-pool-unlisted"\n' + "".join(
            f'[[deployment]]\nicb = "{icb}"\nextract = "{tmp_path / icb}"\nout = "{tmp_path / "out" / icb}"\n'
            for icb in icbs))
        return subprocess.run([sys.executable, "-m", "cli", "deploy", "--file", str(path)], env=env,
                              capture_output=True, text=True, timeout=300)

    done = deploy(["QCC", "QDD"])
    assert done.returncode == 1 and "internal error" not in done.stderr, done.stderr[-2000:]
    assert f"PREFECT_API_URL={url.removesuffix('/api')}: the server answered HTTP 404" in done.stderr
    assert "ending in /api" in done.stderr
    env["PREFECT_API_URL"] = url
    done = deploy(["QCC", "QDD"])
    assert done.returncode == 0 and "warning" not in done.stderr, done.stderr[-2000:]
    done = deploy(["QCC"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert ("warning: phm-scheduled-run/phm-QDD is registered in work pool 'phm-test-pool-unlisted' but not in "
            f"{tmp_path / 'deployments.toml'}: it still runs on its schedule") in done.stderr
    assert "phm-QCC is registered" not in done.stderr


def test_phm_status_shows_each_icbs_last_and_next_run_and_a_week_with_nothing_new(deployed, prefect_server):
    """The unit's morning check: a run that found the published lists' extract again ends
    Completed named 'Unchanged' (in the UI too), and ``phm status`` shows it beside a failed
    run's error and the lists each ICB has out."""
    from prefect.deployments import run_deployment

    folder, _ = deployed
    url, home = prefect_server
    for _ in range(2):  # (the first is a full run, unless another test of the module ran it already)
        run = run_deployment("phm-scheduled-run/phm-QAA", timeout=900)
    assert (run.state.type.value, run.state.name) == ("COMPLETED", "Unchanged"), run.state
    assert "unchanged since the run that finished at" in run.state.message
    assert run_deployment("phm-scheduled-run/phm-QAA-broken", timeout=600).state.type.value == "FAILED"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": url}
    done = subprocess.run([sys.executable, "-m", "cli", "status", "--file", str(folder / "deployments.toml")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    blocks = {}  # each folder's block: its title line, then its lines indented
    for line in done.stdout.splitlines():
        if not line.startswith(" "):
            title = line
        blocks.setdefault(title, []).append(line)
    qaa = "\n".join(next(b for t, b in blocks.items() if "(phm-scheduled-run/phm-QAA)" in t))
    broken = "\n".join(next(b for t, b in blocks.items() if "(phm-scheduled-run/phm-QAA-broken)" in t))
    assert f"QAA (phm-scheduled-run/phm-QAA) {folder / 'QAA' / 'out'}: " in qaa
    assert f"last run: {run.name} Unchanged at " in qaa and "lists: lists-" in qaa and "next run: Mon " in qaa
    assert "ended Failed: " in broken and "ExtractError" in broken and "table 'practices' is missing" in broken
