"""The fairness audit on the synthetic generator's bias knobs, end to end, and as a reviewer sees it.

Each scenario generates an extract, ingests it, builds features, trains the models and audits
them with the default rules (1,000 bootstrap replicates). (No planted bias, judged against the
generator's truth on three seeds and both profiles, is tests/integration/test_gate_truth.py; how
often the gate is right over many seeds, docs/fairness.md "The gate's error rates".)
- outcomes under-recorded for Black African patients (coded at 60%): FAIL, naming their group and the
  label-choice check, exit code 7, 'champion' not moved; a named reviewer signs it off with
  phm review, which MLflow records, and only then can the model be scored;
- a measurement-access gap for Black patients: flagged in the report;
- ethnicity missing for 30%, audited through a real ``mlflow server`` on 127.0.0.1: WARN naming
  data quality; the run is found through the REST API, its report downloaded through the
  server and rendered in headless Chromium, which must show the gate result and every group;
  the MLflow UI's pages a reviewer goes through (the runs, the audit run with its description,
  the model version) are rendered there too. With PHM_DOCS_SCREENSHOTS=<folder> the test keeps
  the screenshots (docs/images/ holds the ones docs/fairness.md shows).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from models.fairness import AuditSettings, SignOff
from tests.servers import free_port, running

pytestmark = pytest.mark.slow


def build(folder: Path, tracking_uri: str | None = None, **synth) -> Path:
    from features.run import run_features
    from models.score_patients import run_scores
    from models.train import TrainingConfig
    from models.training_run import run_training
    from phm.ingest import ingest
    from phm.synth import SynthConfig, generate

    generate(SynthConfig(**{"seed": 42, **synth}), folder / "extract")
    db = folder / "phm.duckdb"
    ingest(folder / "extract", db)
    run_features(db)
    run_scores(db)
    run_training(db, TrainingConfig(), tracking_uri=tracking_uri)
    return db


def audit(db: Path, tracking_uri: str | None = None, settings: AuditSettings | None = None):
    from models.audit_run import run_audit
    from models.tracking import tracking_location

    location = tracking_location(db.resolve().parent, tracking_uri)
    return run_audit(db, settings or AuditSettings(), location, db.parent / "audit")


def champion_versions(run) -> dict[str, str]:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(run.location.tracking_uri)
    out = {}
    for gate in run.report.gates:
        name = run.report.models[gate.outcome]["registered model"]
        try:
            out[gate.outcome] = str(client.get_model_version_by_alias(name, "champion").version)
        except MlflowException:
            pass
    return out


def test_under_recorded_outcomes_fail_naming_the_group_and_the_label_choice_check(tmp_path, capsys):
    from cli.main import main

    db = build(tmp_path, patients=40_000, pcns=2, profile="diverse_urban", outcome_recording={"N": 0.6})  # Black African
    code = main(["audit", "--db", str(db), "--out", str(tmp_path / "audit")])
    assert code == 7
    captured = capsys.readouterr()
    assert "FAIL [label choice" in captured.out and "Black patients" in captured.out
    assert "fairness gate refused" in captured.err
    data = json.loads((tmp_path / "audit" / "fairness_audit.json").read_text())
    assert data["gate"]["status"] == "FAIL"
    failed = [f for o in data["gate"]["outcomes"].values() for f in o["findings"] if f["level"] == "FAIL"]
    assert any(f["rule"].startswith("label choice") and f["group"] == "Black" for f in failed)
    failed_outcomes = {name for name, o in data["gate"]["outcomes"].items() if not o["accepted"]}
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    for outcome in failed_outcomes:
        with pytest.raises(MlflowException):
            client.get_model_version_by_alias(f"phm-QXX-{outcome}", "champion")
        tags = client.get_model_version(f"phm-QXX-{outcome}", "1").tags
        assert tags["phm.fairness_gate.may_publish"] == "false" and tags["phm.fairness_gate"].startswith(
            data["gate"]["outcomes"][outcome]["status"])
    # and nothing can be scored with a model that was refused while there is no champion
    assert main(["score", "--db", str(db)]) == 7
    assert "did not pass the fairness audit" in capsys.readouterr().err

    # a named reviewer signs it off with phm review; MLflow records who and why, and only then
    # can the model be scored
    failed = sorted(o for o in failed_outcomes if data["gate"]["outcomes"][o]["status"] == "FAIL")
    assert main(["review", "--db", str(db), "--outcome", failed[0], "--reviewer", "Dr A. Reviewer",
                 "--reason", "short"]) == 2  # a reason of fewer than 10 characters is no reason
    assert main(["review", "--db", str(db), "--outcome", failed[0], "--reviewer", "Dr A. Reviewer",
                 "--reason", "Under-recording known; correction under way (ref 14)"]) == 2  # WARN does not cover FAIL
    assert "does not cover" in capsys.readouterr().err
    assert main(["review", "--db", str(db), "--outcome", *sorted(failed_outcomes), "--reviewer", "Dr A. Reviewer",
                 "--reason", "Under-recording known; correction under way (ref 14)", "--accepts", "FAIL"]) == 0
    runs = client.search_runs([client.get_experiment_by_name("phm-risk QXX").experiment_id],
                              "tags.`phm.kind` = 'fairness audit'", order_by=["attributes.start_time DESC"])
    tags = runs[0].data.tags
    for outcome in failed_outcomes:
        assert tags[f"phm.signoff.{outcome}.reviewer"] == "Dr A. Reviewer"
        assert tags[f"phm.signoff.{outcome}.source"] == "phm review"
        assert tags[f"phm.signoff.{outcome}.reason"].startswith("Under-recording known")
        version = client.get_model_version(f"phm-QXX-{outcome}", "1")
        assert version.tags["phm.fairness_gate"].endswith("(signed off by Dr A. Reviewer)")
        assert version.tags["phm.fairness_gate.may_publish"] == "true"
    assert main(["score", "--db", str(db)]) == 0


def test_a_measurement_access_gap_is_flagged_in_the_report(tmp_path):
    db = build(tmp_path, patients=30_000, pcns=1, profile="diverse_urban", measurement_access={"Black": 0.5})
    run = audit(db)
    gaps = [f for g in run.report.gates for f in g.findings if f.rule == "measurement gap"]
    assert gaps and {f.group for f in gaps} == {"Black"}
    page = run.html_path.read_text()
    assert "[measurement gap]" in page and "measurement completeness" in page


# --- a reviewer's view: real MLflow server, headless Chromium ----------------------------------

@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    store = tmp_path / "server"
    store.mkdir()
    # MLflow 3's job workers (seven huey processes, for its GenAI jobs) are not what a reviewer
    # uses; they cost about 45 s of CPU in the minute after start-up (docs/fairness.md)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
               "--default-artifact-root", (store / "artifacts").as_uri(), "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1"]
    url = f"http://127.0.0.1:{port}"
    with running(command, f"{url}/health", store / "server.log", env):
        yield url


def rest(url: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(url + path, data=json.dumps(body).encode() if body else None,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "headless Chromium is needed: apt-get install chromium (.ci/run installs it)"
        if os.environ.get("PHM_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def test_reviewer_finds_the_audit_in_mlflow_and_reads_the_report_in_a_browser(tmp_path, mlflow_server):
    browser = chromium()
    db = build(tmp_path, tracking_uri=mlflow_server, patients=20_000, pcns=1, ethnicity_unrecorded=0.3)
    reviewer = SignOff("Dr B. Reviewer", "missing ethnicity known: recording campaign under way", "FAIL")
    run = audit(db, mlflow_server, AuditSettings(signoffs=(reviewer,)))
    assert run.status in ("WARN", "FAIL") and any(f.rule == "ethnicity data quality" for g in run.report.gates
                                                  for f in g.findings)

    experiment = rest(mlflow_server, "/api/2.0/mlflow/experiments/get-by-name?experiment_name="
                      + urllib.parse.quote("phm-risk QXX"))["experiment"]
    found = rest(mlflow_server, "/api/2.0/mlflow/runs/search", {
        "experiment_ids": [experiment["experiment_id"]], "filter": "tags.`phm.kind` = 'fairness audit'"})["runs"]
    assert len(found) == 1
    info, data = found[0]["info"], found[0]["data"]
    tags = {t["key"]: t["value"] for t in data["tags"]}
    assert tags["phm.fairness_gate"].startswith(run.status)
    # what a reviewer reads first: the run's name and description say what it is and what it decided
    assert info["run_name"] == f"fairness audit, QXX, 2026-03-31: {run.status}"
    note = tags["mlflow.note.content"]
    assert f"**fairness audit, QXX, 2026-03-31: {run.status}**: {run.status}" in note
    assert "| cvd | " in note and "Dr B. Reviewer" in note and "fairness/fairness_audit.html" in note
    assert "phm review" in note
    assert "fairness audit, QXX, <extract date>" in {t["key"]: t["value"] for t in experiment["tags"]}[
        "mlflow.note.content"]
    assert tags["phm.signoff.cvd.reviewer"] == "Dr B. Reviewer"
    metrics = {m["key"] for m in data["metrics"]}
    assert "cvd/performance/White/observed_expected" in metrics
    artifacts = {f["path"] for f in rest(mlflow_server, f"/api/2.0/mlflow/artifacts/list?run_id={info['run_id']}"
                                         "&path=fairness")["files"]}
    assert artifacts == {"fairness/fairness_audit.html", "fairness/fairness_audit.json"}
    version = rest(mlflow_server, "/api/2.0/mlflow/model-versions/get?name=phm-QXX-cvd&version=1")
    version_tags = {t["key"]: t["value"] for t in version["model_version"]["tags"]}
    assert version_tags["phm.fairness_gate"].endswith("(signed off by Dr B. Reviewer)")
    assert version_tags["phm.audit_run_id"] == info["run_id"]
    description = version["model_version"]["description"]
    assert description.startswith(f"Audited in fairness audit, QXX, 2026-03-31: {run.status} (run {info['run_id']})")
    assert "Signed off by Dr B. Reviewer (configuration): missing ethnicity known" in description

    page = tmp_path / "downloaded_report.html"
    with urllib.request.urlopen(f"{mlflow_server}/get-artifact?path=fairness/fairness_audit.html"
                                f"&run_uuid={info['run_id']}", timeout=30) as response:
        page.write_bytes(response.read())
    rendered = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'chromium'}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    dom = rendered.stdout
    assert 'id="gate-result"' in dom, rendered.stderr[-2000:]
    gate_text = dom.split('id="gate-result">', 1)[1].split("<", 1)[0]
    assert gate_text.startswith(run.status)
    assert "signed off by Dr B. Reviewer" in dom and "The gate's tests" in dom
    assert "ethnicity data quality" in dom
    for group in ("White", "Mixed", "Asian", "Black", "Other", "Not stated", "Not known"):
        assert f"<td>{group}" in dom, group

    # the pages of the MLflow UI a reviewer goes through, as the browser renders them
    experiment_id = experiment["experiment_id"]
    pages = {"mlflow-runs": (f"{mlflow_server}/#/experiments/{experiment_id}?workflowType=machine_learning", 800),
             "mlflow-audit-run": (f"{mlflow_server}/{run.ui_path()}", 2000),  # down to the description
             "mlflow-model-version": (f"{mlflow_server}/#/models/phm-QXX-cvd/versions/1?workflowType=machine_learning",
                                      1000),
             "fairness-report": (page.as_uri(), 1400)}
    keep = os.environ.get("PHM_DOCS_SCREENSHOTS")
    for name, (url, height) in pages.items():
        shot = tmp_path / f"{name}.png"
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={tmp_path / 'chromium'}", f"--window-size=1400,{height}",
                        "--virtual-time-budget=15000", f"--screenshot={shot}", url],
                       capture_output=True, text=True, timeout=120)
        assert shot.is_file() and shot.stat().st_size > 20_000, name  # a page was drawn, not a blank one
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, Path(keep) / shot.name)
