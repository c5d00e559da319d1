"""Alerts through Prefect's own machinery: a real ``prefect server`` (its triggers and actions
services run the automations; the session's test harness is not used for this), a webhook
receiver on 127.0.0.1, and the automations and notification block ``phm deploy`` registers
from a deployments file's ``[alerts]``.

What is real and what is driven:
- run failed: a real ``phm run`` on a broken extract (it fails fast in ingest); Prefect's own
  ``prefect.flow-run.Failed`` event fires the automation;
- stale extract: a real ``phm run`` on an extract dated long ago, refused before any work
  (exit 10); it also ends the run Failed, so the run-failed alert comes with it;
- run failed, scheduled: the deployment's run through a real process worker, whose
  ``phm-run`` subflow fails with it: one alert, not one per flow run;
- gate FAIL, WARN awaiting sign-off, data quality, drift: the flow's own alert functions
  (flows/run.py ``_alert_gate``, ``_alert_quality`` and ``_alert_drift``) called inside a small
  flow with what a real refusal, a real ingest and a real history produce (a decision refusing
  cvd with FAIL and t2d with WARN; an ingest report and an ICB population with a low
  ethnicity-recorded share; two runs appended to a history, the second with one group's QRISK3
  shifted), not a whole pipeline run (minutes).

Each message must name the ICB, the condition and where to look, and hold no patient-level
value (the broken extract's one patient row carries sentinels that must appear nowhere).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.servers import free_port, running

pytestmark = pytest.mark.slow
ICB = "QAA"
KEY = "key-of-icb-qaa-long-enough-0123456789abc"
SENTINEL_ID = "SENTINELPATIENT42"
SENTINEL_DOB = "1931-07-19"
POOL = "phm-alerts-test"
RUN_PAGE = re.compile(r"http://127\.0\.0\.1:\d+/runs/flow-run/[0-9a-f-]{36}")


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory, migrated_prefect_home):
    home = migrated_prefect_home(tmp_path_factory.mktemp("prefect-home"))  # its own, migrated (conftest.py)
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with running(command, f"{url}/health", home / "server.log", env, timeout=180):
        yield url, home


@pytest.fixture(scope="module")
def receiver():
    """A webhook receiver on 127.0.0.1: every POSTed JSON body, in order."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook/secret-token-xyz", received
    finally:
        server.shutdown()
        server.server_close()


def _extract(folder: Path, extract_date: dt.date) -> Path:
    """An extract that fails in ingest (no practices table), with one patient row of sentinels."""
    folder.mkdir(parents=True)
    (folder / "extract.json").write_text(json.dumps({"extract_date": extract_date.isoformat(),
                                                     "imd_version": "IMD2019"}))
    (folder / "patients.csv").write_text(f"patient_id,sex,date_of_birth\n{SENTINEL_ID},female,{SENTINEL_DOB}\n")
    return folder


@pytest.fixture(scope="module")
def deployed(prefect_server, receiver, tmp_path_factory):
    url, home = prefect_server
    hook, _ = receiver
    folder = tmp_path_factory.mktemp("alerts")
    _extract(folder / "extract", dt.datetime.now(dt.UTC).date())  # the deployment's: fails in ingest
    (folder / "deployments.toml").write_text(f'''
work_pool = "{POOL}"

[alerts]
kind = "webhook"
url_env = "PHM_TEST_ALERTS_URL"

[[deployment]]
icb = "{ICB}"
extract = "{folder / 'extract'}"
out = "{folder / 'out'}"
''')
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": url, "PHM_TEST_ALERTS_URL": hook,
           "PHM_PSEUDONYMISATION_KEY": KEY}
    env.pop("MLFLOW_TRACKING_URI", None)
    outputs = []
    for _ in range(2):  # registering again must update, not duplicate
        started = time.perf_counter()
        deploy = subprocess.run([sys.executable, "-m", "cli", "deploy", "--file", str(folder / "deployments.toml")],
                                env=env, capture_output=True, text=True, timeout=300)
        assert deploy.returncode == 0, deploy.stderr[-3000:]
        outputs.append((deploy.stdout + deploy.stderr, time.perf_counter() - started))
    return folder, env, outputs


def _wait_for(received: list[dict], condition, timeout: float = 90) -> list[dict]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = [m for m in received if condition(m)]
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"no such alert in {timeout} s; received: {[m['subject'] for m in received]}")


def _check_message(message: dict, title: str) -> None:
    text = message["subject"] + "\n" + message["body"]
    assert f"ICB {ICB}" in message["subject"] and title in message["subject"], message["subject"]
    assert f"ICB {ICB}" in message["body"]
    assert SENTINEL_ID not in text and SENTINEL_DOB not in text  # no patient-level value
    assert "secret-token-xyz" not in text
    assert message["source"] == "phm-risk" and message["text"].startswith(message["subject"])


def test_phm_deploy_registers_one_automation_per_condition_idempotently_without_showing_the_url(deployed):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    folder, env, outputs = deployed
    for output, _ in outputs:
        assert f"alerts for ICB {ICB}: run_failed, gate_fail, gate_warn, stale_extract, data_quality, drift" in output
        assert "secret-token-xyz" not in output and "$PHM_TEST_ALERTS_URL" in output
    with temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
        automations = [a for a in client.read_automations() if a.name.startswith(f"phm-risk {ICB}:")]
        block = client.read_block_document_by_name("phm-alerts-qaa", "custom-webhook", include_secrets=False)
    assert sorted(a.name for a in automations) == sorted({a.name for a in automations}) and len(automations) == 6
    assert "secret-token-xyz" not in json.dumps(block.data, default=str)  # the URL is a secret value
    print(f"phm deploy with alerts: {outputs[0][1]:.1f} s, again {outputs[1][1]:.1f} s")


def test_a_failed_run_alerts_with_the_icb_and_the_prefect_run(deployed, receiver):
    folder, env, _ = deployed
    _, received = receiver
    config = folder / "qaa.toml"
    config.write_text(f'[run]\nicb = "{ICB}"\n')
    extract = _extract(folder / "broken", dt.datetime.now(dt.UTC).date())
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "cli", "run", "--extract", str(extract), "--out",
                          str(folder / "out-broken"), "--config", str(config)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 3, run.stderr[-2000:]
    [message] = _wait_for(received, lambda m: "run failed" in m["subject"])
    print(f"run failed: phm run and its alert {time.perf_counter() - started:.1f} s")
    _check_message(message, "run failed")
    assert "ended Failed" in message["body"] and RUN_PAGE.search(message["body"])  # the run's page


def test_a_stale_extract_alerts_with_its_date_and_the_lists_folder(deployed, receiver):
    folder, env, _ = deployed
    _, received = receiver
    config = folder / "qaa-stale.toml"
    config.write_text(f'[run]\nicb = "{ICB}"\nmax_extract_age_days = 45\n')
    extract = _extract(folder / "stale", dt.date(2026, 1, 5))
    run = subprocess.run([sys.executable, "-m", "cli", "run", "--extract", str(extract), "--out",
                          str(folder / "out-stale"), "--config", str(config)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 10, run.stderr[-2000:]
    [message] = _wait_for(received, lambda m: "stale extract" in m["subject"])
    _check_message(message, "stale extract")
    assert "2026-01-05" in message["body"] and "limit is 45 days" in message["body"]
    assert str(folder / "out-stale" / "lists") in message["body"] and RUN_PAGE.search(message["body"])


EMITTER = '''
import sys, types
from pathlib import Path
import polars as pl
from prefect import flow
from flows.config import RunConfig
from flows.run import _alert_gate, _alert_quality
from phm.ingest import IngestReport, TableReport

out = Path(sys.argv[1])

@flow(name="phm-run")
def gate_and_quality():
    # what a real refusal gives _alert_gate: the decision's refused results and the report
    refused = [types.SimpleNamespace(outcome="cvd", status="FAIL", block=None),
               types.SimpleNamespace(outcome="t2d", status="WARN", block=None)]
    audit = types.SimpleNamespace(decision=types.SimpleNamespace(refused=refused),
                                  html_path=out / "audit" / "fairness_audit.html")
    _alert_gate("QAA", audit, out)
    # an ICB where 60% have an ethnicity recorded, and a clinical_events table 3% quarantined
    groups = ["White"] * 60 + ["Not known"] * 30 + ["Not stated"] * 10
    population = types.SimpleNamespace(icb_code="QAA", features=pl.DataFrame({"ethnicity_group": groups}))
    table = TableReport("clinical_events", "clinical_events.csv", rows_read=1000, rows_loaded=970,
                        rows_quarantined=30, quarantine_reasons={"date after the extract date": 30})
    ingest = IngestReport(str(out), str(out / "phm.duckdb"), "2026-11-01", "IMD2019", {"clinical_events": table},
                          [], None, 1.0)
    _alert_quality(RunConfig(), population, ingest, out)
    # two runs in the history, the second with the Black group's QRISK3 shifted up (phm/history.py)
    import datetime as dt, duckdb, numpy as np
    from flows.run import _alert_drift
    from phm.history import RunFacts, append_run
    con = duckdb.connect()
    rng = np.random.default_rng(1)
    for i in (1, 2):
        frames = [pl.DataFrame({"score": "QRISK3 10y", "grp": g,
                                "risk_pct": rng.lognormal(np.log(6.0), 0.8, n) * (2.5 if (g, i) == ("Black", 2) else 1)})
                  for g, n in (("White", 4000), ("Black", 800))]
        appended = append_run(con, RunFacts(f"r{i}", dt.datetime(2026, i, 2, tzinfo=dt.UTC), "QAA", None, None, True),
                              pl.concat(frames))
    _alert_drift("QAA", appended, out / "history" / "history_report.html")

gate_and_quality()
'''


def test_gate_fail_warn_data_quality_and_drift_alert_with_the_report(deployed, receiver):
    folder, env, _ = deployed
    _, received = receiver
    out = folder / "out-gate"
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", EMITTER, str(out)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    [fail] = _wait_for(received, lambda m: "fairness gate FAIL" in m["subject"])
    [warn] = _wait_for(received, lambda m: "awaiting a reviewer's sign-off" in m["subject"])
    [quality] = _wait_for(received, lambda m: "data quality below threshold" in m["subject"])
    [drift] = _wait_for(received, lambda m: "score drift between runs" in m["subject"])
    print(f"gate FAIL, WARN and data quality alerts: {time.perf_counter() - started:.1f} s")
    report = str(out.resolve() / "audit" / "fairness_audit.html")
    assert all(RUN_PAGE.search(m["body"]) for m in (fail, warn, quality))
    _check_message(fail, "fairness gate FAIL")
    assert "fairness gate FAIL for cvd." in fail["body"] and report in fail["body"] and "t2d" not in fail["body"]
    _check_message(warn, "awaiting a reviewer's sign-off")
    assert "not signed off by a named reviewer, for t2d." in warn["body"] and report in warn["body"] and "phm review" in warn["body"]
    _check_message(quality, "data quality below threshold")
    assert "ethnicity recorded for 60% of patients, below 80%" in quality["body"]
    assert "3% of the clinical_events table's rows quarantined" in quality["body"]
    assert "'date after the extract date'" in quality["body"] and str(out.resolve() / "phm.duckdb") in quality["body"]
    _check_message(drift, "score drift between runs")
    assert re.search(r"the distribution of QRISK3 10y for Black \(PSI \d\.\d\d\) moved more than the threshold 0\.2",
                     drift["body"])
    assert "White" not in drift["body"] and RUN_PAGE.search(drift["body"])
    assert str(out.resolve() / "history" / "history_report.html") in drift["body"] and "phm history QAA" in drift["body"]


def test_a_failed_scheduled_run_alerts_once_though_its_subflows_fail_with_it(deployed, receiver):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    folder, env, _ = deployed
    _, received = receiver
    worker_env = {**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"}
    worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL],
                              env=worker_env, stdout=subprocess.DEVNULL, stderr=open(folder / "worker.log", "w"))
    settings = {PREFECT_API_URL: env["PREFECT_API_URL"], PREFECT_HOME: env["PREFECT_HOME"]}
    try:
        started = time.perf_counter()
        with temporary_settings(updates=settings):
            run = run_deployment(f"phm-scheduled-run/phm-{ICB}", timeout=300)
        assert run.state.type.value == "FAILED", (folder / "worker.log").read_text()[-3000:]
        [message] = _wait_for(received, lambda m: f"(flow run '{run.name}')" in m["body"])
        time.sleep(5)  # time for a second alert, from the phm-run or phm-ingest subflow, to arrive
        print(f"scheduled run failed and its alert: {time.perf_counter() - started:.1f} s")
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    _check_message(message, "run failed")
    assert RUN_PAGE.search(message["body"]).group().endswith(str(run.id))
    # every run-failed alert of the module names a different run, and never a subflow's
    ids = [RUN_PAGE.search(m["body"]).group().rsplit("/", 1)[1] for m in received if "run failed" in m["subject"]]
    assert len(ids) == len(set(ids)) and str(run.id) in ids
    with temporary_settings(updates=settings), get_client(sync_client=True) as client:
        runs = {str(r.id): r for r in client.read_flow_runs()}
    assert all(runs[i].parent_task_run_id is None for i in ids)
    assert any(r.parent_task_run_id is not None and r.state_type.value == "FAILED" for r in runs.values())
