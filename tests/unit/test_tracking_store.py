"""A new embedded MLflow store is a copy of the first one made with the same MLflow version
(issue 21: MLflow's schema migrations cost about 2 s of CPU per new output folder), and the copy
works as a store MLflow made itself."""

from __future__ import annotations

import sqlite3

import mlflow
import pytest

from models.tracking import create_store, store_template_path, tracking_location


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setattr("models.tracking.CONFIGURED_TRACKING_URI", None)
    monkeypatch.setenv("PHM_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _experiments(database):
    con = sqlite3.connect(database)
    try:
        return con.execute("select experiment_id, name, artifact_location from experiments").fetchall()
    finally:
        con.close()


def test_the_first_new_store_leaves_a_template_and_the_next_is_a_copy_that_mlflow_uses(cache, tmp_path):
    first, second = tracking_location(tmp_path / "first"), tracking_location(tmp_path / "second")
    template = store_template_path(mlflow.__version__)
    assert template.parent == cache and not template.exists()

    create_store(first)
    assert template.is_file()
    # the copy: no migration runs (the template's tables, byte for byte but the Default experiment)
    create_store(second)
    second_db = tmp_path / "second" / "mlflow" / "mlflow.db"
    first_db = tmp_path / "first" / "mlflow" / "mlflow.db"
    assert second_db.stat().st_mode == first_db.stat().st_mode  # made as MLflow makes one, not 0600
    assert not list((tmp_path / "second" / "mlflow").glob(".*partial"))
    assert _experiments(second_db) == [(0, "Default", f"{second.artifact_root}/0")]  # its own folder

    client = mlflow.MlflowClient(second.tracking_uri)
    experiment = client.create_experiment("phm-risk QXX", artifact_location=second.artifact_root)
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "auroc", 0.8)
    client.set_terminated(run.info.run_id)
    assert client.get_run(run.info.run_id).data.metrics == {"auroc": 0.8}
    assert [e.name for e in client.search_experiments()] == ["phm-risk QXX", "Default"]
    # the template itself is untouched by the copy's use, and an existing store is left alone
    assert _experiments(template)[0][:2] == (0, "Default") and len(_experiments(template)) == 1
    before = second_db.read_bytes()
    create_store(second)
    assert second_db.read_bytes() == before


def test_a_store_at_a_given_uri_is_made_by_mlflow_and_no_template_is_kept(cache, tmp_path):
    location = tracking_location(tmp_path, tracking_uri=f"sqlite:///{tmp_path / 'given.db'}")
    create_store(location)
    assert (tmp_path / "given.db").is_file() and not store_template_path(mlflow.__version__).exists()


def test_without_a_home_folder_or_cache_setting_a_store_is_made_by_mlflow(tmp_path, monkeypatch):
    monkeypatch.setattr("models.tracking.CONFIGURED_TRACKING_URI", None)
    monkeypatch.delenv("PHM_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)

    def no_home():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr("pathlib.Path.home", no_home)
    location = tracking_location(tmp_path)
    create_store(location)
    assert [e.name for e in mlflow.MlflowClient(location.tracking_uri).search_experiments()] == ["Default"]
