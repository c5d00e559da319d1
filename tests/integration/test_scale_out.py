"""phm run on Dask: per-PCN shards on a LocalCluster with 2 workers give the single-process run's
lists, scores and audit figures.

The session's 12,000-patient synthetic extract in 3 PCNs (tests/shared_run.py) is run twice from
scratch: with the default executor (the whole ICB one shard, in one process: the session's
finished run) and here with ``executor = "dask"`` (one shard per PCN, the shard tasks on a real
LocalCluster through prefect-dask). Both runs build their own database and train their own
models from the same extract and seed.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest

from phm.pseudonymise import KEY_VARIABLE
from tests.shared_run import KEY, reviewed

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_runs(shared_extract, finished_run, prefect_test_server, tmp_path_factory):
    """{executor: (lists folder, audit JSON, database, terminal lines)} of the two runs."""
    from flows.run import flow_for

    config = reviewed()
    config = dataclasses.replace(config, run=dataclasses.replace(config.run, executor="dask", dask_workers=2))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(KEY_VARIABLE, KEY)
        dask = flow_for(config.run)(shared_extract, tmp_path_factory.mktemp("scale") / "dask", config)
    return {"local": Run(finished_run.lists, finished_run.audit_json, finished_run.db, finished_run.terminal),
            "dask": Run(dask.lists_link, dask.audit_report.with_suffix(".json"), dask.db, "\n".join(dask.lines))}


@dataclass(frozen=True)
class Run:
    lists: Path
    audit_json: Path
    db: Path
    lines: str


def _scores(db) -> pl.DataFrame:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("select * from marts.risk_scores order by patient_id").pl()
    finally:
        con.close()


def test_the_dask_run_sharded_by_pcn_on_two_worker_processes(two_runs):
    assert "shards: 3 (dask executor)" in two_runs["dask"].lines
    assert "3 shard(s) scored in 2 process(es)" in two_runs["dask"].lines
    assert "1 shard(s) scored in 1 process(es)" in two_runs["local"].lines


def test_the_lists_are_byte_identical(two_runs):
    local, dask = (two_runs[k].lists for k in ("local", "dask"))
    files = sorted(p.name for p in local.iterdir() if p.suffix == ".csv")
    assert files == sorted(p.name for p in dask.iterdir() if p.suffix == ".csv")
    assert len(files) == 9  # a list, a summary and an ethnicity re-ask worklist per PCN
    for name in files:
        assert (local / name).read_bytes() == (dask / name).read_bytes(), name
    manifests = [json.loads((link / "lists_manifest.json").read_text()) for link in (local, dask)]
    assert manifests[0]["pcns"] == manifests[1]["pcns"]


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


def test_scoring_in_shards_is_bitwise_the_scoring_of_the_whole(two_runs, tmp_path):
    """On one database: the same models score the ICB as one shard and as per-PCN shards."""
    from models.population import read_features
    from models.shards import ModelToScore, make_shards, read_shard_scores, score_shard
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
        whole = make_shards(features, tmp_path / "whole", by=None)
        parts = make_shards(features, tmp_path / "pcn", by="pcn")
        assert len(parts) == 3 and sum(p.patients for p in parts) == whole[0].patients
        score_shard(whole[0], [model], "x")
        for part in parts:
            score_shard(part, [model], "x")
        one = read_shard_scores(whole[0], "x").sort("patient_id")
        many = pl.concat([read_shard_scores(p, "x") for p in parts]).sort("patient_id")
        assert one.equals(many)


def test_the_audit_of_shards_is_the_audit_of_the_eligible_patients(two_runs, tmp_path):
    """The whole shard chain on real features (files, histograms, bins, cells) against the audit
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

    shards = make_shards(features, tmp_path / "shards", by="pcn")
    scored = run_here(score_shard, shards, models=[ModelToScore("hypertension", "with_equity", model)], purpose="a")

    def find(wanted):
        bins = {"hypertension": [w.bin for w in wanted]}
        return order_statistics(wanted, run_here(scores_in_bins, shards, purpose="a", bins=bins))

    cuts = cut_points(scored, settings.capacity_share, find)["hypertension"]
    cells = add_cells([c.cells["hypertension"] for c in run_here(shard_cells, shards, purpose="a",
                                                                  cuts={"hypertension": cuts})])

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
