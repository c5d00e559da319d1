"""phm run on a Dask cluster as real clusters run it: a scheduler and two workers, each its own
process, that share no disk with the run. Per-PCN shards give the single-process run's lists,
scores and audit figures.

The session's 12,000-patient synthetic extract in 3 PCNs (tests/shared_run.py) is run twice from
scratch: with the default executor (the whole ICB one shard, in one process: the session's
finished run) and here with ``executor = "dask"`` and ``dask_address`` (one shard per PCN, the
shard tasks on the cluster through prefect-dask). Both runs build their own database and train
their own models from the same extract and seed.

The workers have no access to the run's folders: each runs in its own working directory outside
the test session's temporary folder, with its own ``--local-directory``, without the
pseudonymisation key, and (where the machine allows user namespaces) with the whole test session's
temporary folder hidden under an empty tmpfs in its own mount namespace. The shards' rows reach
them through Dask (scattered frames), never as paths: every task and every scattered object the
run sends to the cluster is checked not to name the run's folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cloudpickle
import duckdb
import numpy as np
import polars as pl
import pytest

from phm.pseudonymise import KEY_VARIABLE
from tests.servers import free_port
from tests.shared_run import KEY, reviewed

pytestmark = pytest.mark.slow


def _can_hide_folders() -> bool:
    """Whether this machine lets an unprivileged process mount a tmpfs in its own namespace."""
    try:
        return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"],
                              capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@dataclass(frozen=True)
class Cluster:
    address: str
    worker_pids: tuple[int, ...]
    hidden: Path | None  # the folder the workers cannot see (None: no user namespaces here)


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1, stopped at the end."""
    import distributed

    dask = str(Path(sys.executable).with_name("dask"))
    hidden = tmp_path_factory.getbasetemp() if _can_hide_folders() else None  # every run folder of the session
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", KEY_VARIABLE)}  # the workers need no key
    homes, processes = [], []
    try:
        address = f"tcp://127.0.0.1:{free_port()}"
        home = Path(tempfile.mkdtemp(prefix="phm-dask-scheduler-"))
        homes.append(home)
        processes.append(subprocess.Popen(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1], "--no-dashboard"],
            cwd=home, env=env, stdout=subprocess.DEVNULL, stderr=open(home / "log", "w")))
        for i in (1, 2):
            home = Path(tempfile.mkdtemp(prefix=f"phm-dask-worker-{i}-"))
            homes.append(home)
            command = [dask, "worker", address, "--name", f"worker-{i}", "--host", "127.0.0.1", "--nthreads", "1",
                       "--no-nanny", "--no-dashboard", "--local-directory", str(home / "dask")]
            if hidden is not None:  # an empty tmpfs over the session's folders, for this process only
                command = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                           'mount -t tmpfs tmpfs "$0" && exec "$@"', str(hidden), *command]
            processes.append(subprocess.Popen(command, cwd=home, env={**env, "PREFECT_HOME": str(home / "prefect")},
                                              stdout=subprocess.DEVNULL, stderr=open(home / "log", "w")))
        try:
            with distributed.Client(address, timeout=60) as client:
                client.wait_for_workers(2, timeout=120)
                pids = tuple(sorted(client.run(os.getpid).values()))
                if hidden is not None:
                    seen = client.run(lambda: sorted(os.listdir(hidden)))
                    assert seen and all(names == [] for names in seen.values()), seen
        except Exception:
            raise RuntimeError("the Dask cluster did not start: " +
                               " | ".join((h / "log").read_text()[-1500:] for h in homes)) from None
        yield Cluster(address, pids, hidden)
    finally:
        # the workers first, while their scheduler still answers: a worker stopped together with
        # its scheduler could hang in its close until killed after the 20 s below (41 s of this
        # module's teardown in the suite of 2026-12-02 00:27; the cluster stopped workers first
        # took 0.9-1.3 s in 3 of 3 tries, all together 20.6 s and 40.1 s in 2 of 3)
        for group in (processes[1:], processes[:1]):
            for process in group:
                process.terminate()
            for process in group:
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        for home in homes:
            shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def two_runs(shared_extract, finished_run, prefect_test_server, dask_cluster, tmp_path_factory):
    """{executor: Run} of the two runs; the Dask run's every task and scattered object recorded."""
    from prefect_dask.client import PrefectDaskClient

    from flows.run import flow_for

    config = reviewed()
    config = dataclasses.replace(config, run=dataclasses.replace(config.run, executor="dask",
                                                                 dask_address=dask_cluster.address))
    out = tmp_path_factory.mktemp("scale") / "dask"
    sent: list[tuple[str, bytes]] = []
    submit, scatter = PrefectDaskClient.submit, PrefectDaskClient.scatter

    def recorded_submit(self, func, *args, **kwargs):
        from prefect.context import serialize_context

        parameters = kwargs.get("parameters") or {}
        handed = "+".join(type(parameters.get(k)).__name__ for k in ("rows", "scores"))  # Future, or a frame
        # what Prefect sends with the task besides its parameters: the context it is submitted
        # in (the flow run's, and the enclosing task run's with that task's parameters)
        context = serialize_context()
        sent.append((f"task({handed})", cloudpickle.dumps((func, args, parameters, context["task_run_context"]))))
        sent.append(("flow-run-context", cloudpickle.dumps(context["flow_run_context"])))
        return submit(self, func, *args, **kwargs)

    def recorded_scatter(self, data, *args, **kwargs):
        sent.append(("scatter", cloudpickle.dumps(data)))
        return scatter(self, data, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(KEY_VARIABLE, KEY)
        patch.setattr(PrefectDaskClient, "submit", recorded_submit)
        patch.setattr(PrefectDaskClient, "scatter", recorded_scatter)
        dask = flow_for(config.run)(shared_extract, out, config)
    return {"local": Run(finished_run.lists, finished_run.audit_json, finished_run.db, finished_run.terminal),
            "dask": Run(dask.lists_link, dask.audit_report.with_suffix(".json"), dask.db, "\n".join(dask.lines),
                        out, tuple(sent))}


@dataclass(frozen=True)
class Run:
    lists: Path
    audit_json: Path
    db: Path
    lines: str
    out: Path | None = None
    sent: tuple[tuple[str, bytes], ...] = ()  # every task and scattered object sent to the cluster, pickled


def _scores(db) -> pl.DataFrame:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("select * from marts.risk_scores order by patient_id").pl()
    finally:
        con.close()


def test_the_dask_run_sharded_by_pcn_on_the_two_worker_processes(two_runs, dask_cluster):
    assert "shards: 3 (dask executor)" in two_runs["dask"].lines
    assert "3 shard(s) scored in 2 process(es)" in two_runs["dask"].lines
    assert "1 shard(s) scored in 1 process(es)" in two_runs["local"].lines
    for run in two_runs.values():  # scored once: the lists take the audit's scores of the same versions
        assert "the audit's scores of these versions, taken as they were" in run.lines
    assert os.getpid() not in dask_cluster.worker_pids and len(dask_cluster.worker_pids) == 2


def test_no_task_names_the_runs_folder_only_data_travels(two_runs):
    """The shard work gets its patients from Dask: no task or scattered object names a path of
    the run (its folder, its database), so a worker needs no shared disk."""
    run = two_runs["dask"]
    kinds = sorted(kind for kind, _ in run.sent if kind != "flow-run-context")
    # the shards scattered once, then the audit's scores; 3 tasks each to score for the audit and
    # make its cells (handed the scores too): every one handed futures, no rows. The lists take the
    # audit's scores of the same versions: no scoring task of their own
    assert kinds == ["scatter"] * 2 + ["task(Future+Future)"] * 3 + ["task(Future+NoneType)"] * 3, kinds
    folder = str(run.out.resolve()).encode()
    assert not [kind for kind, sent in run.sent if folder in sent and kind != "flow-run-context"]
    assert not [kind for kind, sent in run.sent if b".shards-" in sent]
    assert not list(run.out.glob(".shards-*"))
    # Prefect's flow-run context goes with each task too: the flow's parameters (the extract's and
    # the output folder's paths, which the workers never open), never patient rows
    assert max(len(sent) for kind, sent in run.sent if kind == "flow-run-context") < 200_000


def test_the_lists_are_byte_identical(two_runs):
    local, dask = (two_runs[k].lists for k in ("local", "dask"))
    files = sorted(p.name for p in local.iterdir() if p.suffix == ".csv")
    assert files == sorted(p.name for p in dask.iterdir() if p.suffix == ".csv")
    assert len(files) == 9  # a list, a summary and an ethnicity re-ask worklist per PCN
    for name in files:
        assert (local / name).read_bytes() == (dask / name).read_bytes(), name
    manifests = []
    for link in (local, dask):  # the same manifest, but for when it was published and the audit's MLflow run
        manifest = json.loads((link / "lists_manifest.json").read_text())
        manifest.pop("published_at")
        audit_run = manifest.pop("audit_run_id")
        manifests.append(json.loads(json.dumps(manifest).replace(audit_run, "the audit run")))
    assert manifests[0]["pcns"] and manifests[0] == manifests[1]


def test_every_audit_figure_and_interval_is_the_same(two_runs):
    local, dask = (json.loads(two_runs[k].audit_json.read_text()) for k in ("local", "dask"))
    for report in (local, dask):
        report.pop("generated_at")
    assert local == dask


def test_the_scores_are_the_same(two_runs):
    local, dask = (_scores(two_runs[k].db) for k in ("local", "dask"))
    # bitwise: the features are computed in a fixed order (sql/intermediate), so two runs of one
    # extract train the same models, and a patient's score does not depend on its shard
    assert local.equals(dask)


def test_scoring_in_shards_is_bitwise_the_scoring_of_the_whole(two_runs):
    """On one database: the same models score the ICB as one shard and as per-PCN shards."""
    from models.population import read_features
    from models.shards import ModelToScore, make_shards, score_shard
    from models.train import OUTCOME_BY_SHORT, make_model, model_inputs

    con = duckdb.connect(str(two_runs["local"].db), read_only=True)
    try:
        features = read_features(con)
    finally:
        con.close()
    eligible = features.filter(pl.col("age_years").is_between(25, 84))
    label = (eligible["sbp_mmhg"].fill_null(0) > 140).to_numpy()  # any outcome: the models are what matter
    years = np.where(label, 2.5, 5.0)
    models = []
    for kind in ("hazard_glm", "hazard_boosting"):
        model = make_model(kind, "with_equity", 1, OUTCOME_BY_SHORT["cvd"], 5)
        model.fit(model_inputs(eligible, "with_equity"), label, years)
        models.append(ModelToScore("hypertension", "with_equity", model))
    for model in models:
        whole = make_shards(features, by=None)
        parts = make_shards(features, by="pcn")
        assert len(parts) == 3 and sum(p.patients for p in parts) == whole[0].patients
        one = score_shard(whole[0], [model]).scores.sort("patient_id")
        many = pl.concat([score_shard(part, [model]).scores for part in parts]).sort("patient_id")
        assert one.equals(many)


def test_the_audit_of_shards_is_the_audit_of_the_eligible_patients(two_runs):
    """The whole shard chain on real features (scores, histograms, bins, cells) against the audit
    of the patient table made directly: same operating point, same figures."""
    from models.audit_run import operating_point
    from models.fairness import AuditSettings, audit_score, measurements_recorded, need
    from models.fairness._cells import add_cells
    from models.population import read_features
    from models.shards import (
        ModelToScore,
        cut_points,
        make_shards,
        order_statistics,
        run_here,
        score_shard,
        scores_in_bins,
        shard_cells,
        with_scores,
    )
    from models.train import OUTCOMES, make_model, model_inputs, predict_risk

    con = duckdb.connect(str(two_runs["local"].db), read_only=True)
    try:
        features = read_features(con)
    finally:
        con.close()
    outcome = next(o for o in OUTCOMES if o.short == "hypertension")  # also a feature's name
    eligible = features.filter(outcome.eligible(features))
    label = (eligible["sbp_mmhg"].fill_null(0) > 140).to_numpy()
    model = make_model("hazard_glm", "with_equity", 1, outcome, 5).fit(
        model_inputs(eligible, "with_equity"), label, np.where(label, 2.5, 5.0))
    settings = AuditSettings(replicates=200)

    shards = make_shards(features, by="pcn")
    scored = run_here(score_shard, shards, models=[ModelToScore("hypertension", "with_equity", model)])

    def find(wanted):
        bins = {"hypertension": [w.bin for w in wanted]}
        return order_statistics(wanted, [scores_in_bins(s.scores, bins) for s in scored])

    cuts = cut_points(scored, settings.capacity_share, find)["hypertension"]
    cells = add_cells([c.cells["hypertension"] for c in run_here(
        shard_cells, with_scores(shards, scored, run_here), cuts={"hypertension": cuts})])

    scores = pl.Series("score", predict_risk(model, model_inputs(eligible, "with_equity")))
    threshold = operating_point(scores, settings.capacity_share)
    patients = eligible.with_columns(scores, need("hypertension"), measurements_recorded()).select(
        pl.col("ethnicity_group").alias("group"), "imd_quintile", "sex", pl.col("age_years").alias("age"), "score",
        "need", "measurements_recorded", (pl.col("score") >= threshold).alias("selected"))
    assert cuts.threshold == threshold and cuts.eligible == eligible.height
    direct = audit_score("hypertension", None, patients, threshold, settings, 1)
    sharded = audit_score("hypertension", None, cells, threshold, settings, 1)
    assert direct.groupings("selection") == sharded.groupings("selection")
    for grouping in direct.groupings("selection"):
        assert [(g.labels, g.counts, [(k, v.as_dict()) for k, v in g.figures()])
                for g in direct.by_group(grouping, "selection")] == \
            [(g.labels, g.counts, [(k, v.as_dict()) for k, v in g.figures()])
             for g in sharded.by_group(grouping, "selection")]
