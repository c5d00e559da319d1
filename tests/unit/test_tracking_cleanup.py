"""A failed or killed run's partial MLflow artifacts are removed (issue 16), and nothing else."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from models.tracking import remove_unfinished_runs, tracking_location


def test_the_artifacts_of_failed_and_killed_runs_go_and_finished_or_registered_ones_stay(tmp_path, monkeypatch):
    monkeypatch.setattr("models.tracking.CONFIGURED_TRACKING_URI", None)
    from mlflow import MlflowClient

    location = tracking_location(tmp_path)
    client = MlflowClient(tracking_uri=location.tracking_uri)
    experiment = client.create_experiment("phm-risk QXX", artifact_location=location.artifact_root)
    (tmp_path / "a.txt").write_text("aggregate")
    runs = {}
    for name, status in (("finished", "FINISHED"), ("failed", "FAILED"), ("killed", None),
                         ("registered", "FAILED")):
        run = client.create_run(experiment, run_name=name)
        client.log_artifact(run.info.run_id, str(tmp_path / "a.txt"))
        if status:
            client.set_terminated(run.info.run_id, status)
        runs[name] = run.info
    client.create_registered_model("phm-QXX-cvd")
    client.create_model_version("phm-QXX-cvd", runs["registered"].artifact_uri, run_id=runs["registered"].run_id)

    def artifacts(name):
        return Path(urlparse(runs[name].artifact_uri).path)

    assert all(artifacts(n).is_dir() for n in runs)
    assert remove_unfinished_runs(tmp_path) == 2
    assert artifacts("finished").is_dir() and artifacts("registered").is_dir()
    assert not artifacts("failed").exists() and not artifacts("killed").exists()
    assert client.get_run(runs["killed"].run_id).info.status == "KILLED"
    assert remove_unfinished_runs(tmp_path) == 0  # records stay; nothing more to remove
    assert remove_unfinished_runs(tmp_path, tracking_uri="http://127.0.0.1:5000") == 0  # a shared server: never


def test_no_store_no_work(tmp_path, monkeypatch):
    monkeypatch.setattr("models.tracking.CONFIGURED_TRACKING_URI", None)
    assert remove_unfinished_runs(tmp_path / "nothing") == 0
    assert not (tmp_path / "nothing").exists()
