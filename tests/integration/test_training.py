"""Training -> MLflow (embedded SQLite) -> registry alias -> phm score, end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest

from models.train import TrainingConfig
from phm.exceptions import ConfigError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(finished_run, tmp_path_factory):
    """The session's 12,000-patient extract, ingested and featured (a copy of the finished run's
    database), trained and logged here into an MLflow store of its own."""
    from models.training_run import run_training

    folder = tmp_path_factory.mktemp("models")
    db = folder / "phm.duckdb"
    shutil.copyfile(finished_run.db, db)
    run = run_training(db, TrainingConfig(), truth_dir=finished_run.extract / "truth")
    # as training left them, before later tests train again into this store and database
    (folder / "as-trained").mkdir()
    shutil.copyfile(db, folder / "as-trained" / "phm.duckdb")
    shutil.copyfile(folder / "mlflow" / "mlflow.db", folder / "as-trained" / "mlflow.db")
    return folder, db, run


def client_for(run):
    from mlflow.tracking import MlflowClient

    return MlflowClient(run.log.location.tracking_uri)


def test_mlflow_store_is_embedded_under_the_output_folder(trained):
    folder, _, run = trained
    assert run.log.location.tracking_uri == f"sqlite:///{folder.resolve() / 'mlflow' / 'mlflow.db'}"
    assert (folder / "mlflow" / "artifacts").is_dir()


def child_runs(client, parent_run_id: str) -> list:
    """The training run's child runs, after checking there is one per outcome, kind and variant."""
    parent = client.get_run(parent_run_id)
    children = client.search_runs([parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'")
    combos = {(r.data.params["outcome"], r.data.params["model_kind"], r.data.params["variant"]) for r in children}
    variants = parent.data.params["variants_trained"].split(", ")
    assert len(children) == len(combos) == 3 * 2 * len(variants)
    assert {variant for _, _, variant in combos} == set(variants)
    return children


def test_one_experiment_per_icb_with_a_child_run_per_outcome_and_kind_of_the_candidate_variant(trained):
    """The comparison variant is not trained unless asked for (it can never be the candidate),
    and the comparison a reviewer reads says so rather than leaving it out silently."""
    _, _, run = trained
    client = client_for(run)
    experiment = client.get_experiment_by_name(f"phm-risk {run.result.icb_code}")
    assert experiment is not None
    children = child_runs(client, run.log.parent_run_id)
    assert {r.data.params["variant"] for r in children} == {"with_equity"}
    comparison = open(client.download_artifacts(run.log.parent_run_id, "comparison/comparison.md")).read()
    assert "clinical_only" in comparison and "--compare-variants" in comparison
    assert any("Not trained in this run: the clinical_only models" in line for line in run.summary_lines())
    check_child_runs(client, children, truth=True)


def check_child_runs(client, children, truth: bool = False) -> None:
    for child in children:
        params, metrics_ = child.data.params, child.data.metrics
        assert params["validation_split"] == "by practice"
        assert len(params["training_data_digest"]) == 64
        assert params["ethnicity_and_deprivation_inputs"] == str(params["variant"] == "with_equity")
        for key in ("val_auroc", "val_auroc_ci_low", "val_auroc_ci_high", "val_brier",
                    "val_calibration_slope", "val_calibration_intercept", "val_observed_expected",
                    *(("truth_spearman_true_risk", "truth_auroc_true_events") if truth else ())):
            assert key in metrics_, key
        if params["outcome"] == "cvd":
            assert "qrisk3_auroc" in metrics_ and "qrisk3_observed_expected" in metrics_
        if params["outcome"] == "t2d":
            assert "qdiabetes_auroc" in metrics_
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id, "validation")}
        assert artifacts == {"validation/calibration.png", "validation/roc.png", "validation/features.json"}
        features = json.loads(open(client.download_artifacts(child.info.run_id, "validation/features.json")).read())
        assert ("ethnicity_group" in features["features"]) == (params["variant"] == "with_equity")


def test_counts_leave_mlflow_suppressed_and_no_patient_value_is_logged(trained, tmp_path):
    import mlflow

    _, db, run = trained
    client = client_for(run)
    children = client.search_runs([run.log.experiment_id])
    for child in children:
        for key in ("training_patients", "training_events", "validation_patients", "validation_events"):
            if key in child.data.params:
                value = child.data.params[key]
                assert value == "[suppressed]" or int(value.replace(",", "")) % 5 == 0
    comparison = client.download_artifacts(run.log.parent_run_id, "comparison/comparison.json")
    rows = json.loads(open(comparison).read())
    assert {r["outcome"] for r in rows} == {"cvd", "t2d", "hypertension"}
    assert any(r["model"].startswith("QRISK3") for r in rows) and any(r["model"].startswith("QDiabetes") for r in rows)
    for r in rows:
        assert r["events"] == "[suppressed]" or int(r["events"].replace(",", "")) % 5 == 0
    # the logged model carries no input example (it would be a patient's record)
    candidate = run.log.candidates[0]
    mlflow.set_tracking_uri(run.log.location.tracking_uri)
    local = mlflow.artifacts.download_artifacts(f"models:/{candidate.name}/{candidate.version}", dst_path=str(tmp_path))
    files = {p.name for p in Path(local).rglob("*")}
    assert "MLmodel" in files and "model.skops" in files
    assert not any(name.startswith(("input_example", "serving_input")) for name in files)
    assert "scikit-learn==" in (Path(local) / "requirements.txt").read_text()


def test_each_outcome_registers_a_candidate_and_no_champion(trained):
    from mlflow.exceptions import MlflowException

    _, _, run = trained
    client = client_for(run)
    assert [c.outcome for c in run.log.candidates] == ["cvd", "t2d", "hypertension"]
    for candidate in run.log.candidates:
        version = client.get_model_version_by_alias(candidate.name, "candidate")
        assert str(version.version) == candidate.version
        assert version.tags["phm.variant"] == "with_equity"  # the default candidate variant
        assert version.tags["phm.fairness_gate"] == "not audited"
        with pytest.raises(MlflowException):
            client.get_model_version_by_alias(candidate.name, "champion")


def test_validation_predictions_stay_in_the_database_for_practices_not_trained_on(trained):
    _, db, run = trained
    with duckdb.connect(str(db), read_only=True) as con:
        table = con.execute("select * from models.validation_predictions").pl()
    assert set(table["outcome"]) == {"cvd", "t2d", "hypertension"}
    assert table.filter(pl.col("is_candidate")).group_by("outcome").agg(
        pl.struct("model_kind", "variant").n_unique().alias("n"))["n"].to_list() == [1, 1, 1]
    assert table["predicted_risk"].is_between(0, 1).all()
    for outcome_result in run.result.outcomes:
        validation_practices = set(outcome_result.validation_frame["practice_pseudo_id"])
        all_practices = set(run.result.data.frame["practice_pseudo_id"])
        assert validation_practices and validation_practices < all_practices


def test_score_uses_the_candidate_loudly_then_the_champion(trained):
    from models.score_models import score_models

    _, db, run = trained
    run_ = score_models(db, run.log.location)
    assert len(run_.warnings) == 3 and all("NOT passed the fairness audit" in w for w in run_.warnings)
    with duckdb.connect(str(db), read_only=True) as con:
        scores = con.execute("select * from marts.risk_scores").pl()
        features = con.execute("select * from marts.mart_patient_features").pl()
    assert scores.height == features.height
    for candidate in run.log.candidates:
        assert (scores[f"{candidate.outcome}_model_name"] == candidate.name).all()
        assert (scores[f"{candidate.outcome}_model_version"] == candidate.version).all()
        assert (scores[f"{candidate.outcome}_model_alias"] == "candidate").all()
    joined = scores.join(features, on="patient_id")
    eligible_cvd = joined.filter(pl.col("age_years").is_between(25, 84) & ~pl.col("cvd"))
    assert eligible_cvd["cvd_model_risk"].is_not_null().all()
    assert eligible_cvd["cvd_model_risk"].is_between(0, 1).all()
    assert joined.filter(pl.col("cvd"))["cvd_model_risk"].is_null().all()
    assert joined.filter(pl.col("age_years") < 25)["t2d_model_risk"].is_null().all()

    client = client_for(run)
    cvd = run.log.candidates[0]
    client.set_registered_model_alias(cvd.name, "champion", cvd.version)
    try:
        run_ = score_models(db, run.log.location)
        assert len(run_.warnings) == 2 and not any(cvd.name in w for w in run_.warnings)
        with duckdb.connect(str(db), read_only=True) as con:
            aliases = con.execute("select distinct cvd_model_alias from marts.risk_scores").fetchall()
        assert aliases == [("champion",)]
    finally:
        client.delete_registered_model_alias(cvd.name, "champion")


def test_score_without_a_registered_model_says_to_train(trained, tmp_path):
    from models.score_models import score_models
    from models.tracking import tracking_location

    _, db, _ = trained
    with pytest.raises(ConfigError, match="run phm train first"):
        score_models(db, tracking_location(tmp_path))


def test_phm_train_and_score_on_the_command_line(trained, capsys):
    from cli.main import main

    _, db, _ = trained
    assert main(["train", "--db", str(db), "--candidate-variant", "clinical_only", "--compare-variants"]) == 0
    out = capsys.readouterr().out
    assert "QRISK3 (10y converted to 5y)" in out and "version 2 as 'candidate'" in out
    assert "hazard_glm (with_equity)" in out and "Not trained in this run" not in out
    client = client_for(trained[2])
    latest = client.search_runs([trained[2].log.experiment_id], "tags.`phm.kind` = 'training'",
                                order_by=["attributes.start_time DESC"], max_results=1)[0]
    check_child_runs(client, child_runs(client, latest.info.run_id))  # both variants, each with its own inputs
    assert main(["score", "--db", str(db)]) == 0
    captured = capsys.readouterr()
    assert "v2 (candidate, clinical_only)" in captured.out
    assert "has no champion" in captured.err


def test_training_is_reproducible_for_a_seed(trained):
    """Trained again with the same seed, one outcome after another in this thread: every model
    predicts the same bits as the run's training, which fitted outcomes two at a time in threads
    (models.train.TRAINING_THREADS, on a machine of 2 cores or more), each boosting fit with its
    share of the cores' OpenMP threads, where one by one each has them all; and the same
    candidates are chosen."""
    import os

    from models.train import (
        OUTCOMES,
        TRAINING_THREADS,
        openmp_threads_per_outcome,
        train_all,
        train_outcome,
    )

    if TRAINING_THREADS > 1:  # so the comparison below is between different OpenMP thread counts
        assert openmp_threads_per_outcome(TRAINING_THREADS) < (os.cpu_count() or 1)
    _, _, run = trained
    again = train_outcome(run.result.data.frame, OUTCOMES[0], TrainingConfig())
    for first, second in zip(run.result.outcomes[0].models, again.models, strict=True):
        np.testing.assert_array_equal(first.predictions, second.predictions)
    assert again.candidate.kind == run.result.outcomes[0].candidate.kind
    alone = train_all(run.result.data, TrainingConfig(), threads=1)
    assert [o.outcome for o in alone.outcomes] == [o.outcome for o in run.result.outcomes] == list(OUTCOMES)
    for threaded, one_by_one in zip(run.result.outcomes, alone.outcomes, strict=True):
        for first, second in zip(threaded.models, one_by_one.models, strict=True):
            assert (first.kind, first.variant) == (second.kind, second.variant)
            np.testing.assert_array_equal(first.predictions, second.predictions)
        assert threaded.candidate.kind == one_by_one.candidate.kind


def test_each_model_fitted_on_its_own_predicts_the_same_bits(trained):
    """Training fills a variant's missing readings once for all its kinds of model
    (models.train._filled_once); each model fitted on its own, fitting and filling with its own
    GroupImputer, predicts the same bits on the validation patients."""
    from models.train import at_risk, make_model, model_inputs, practice_split

    _, _, run = trained
    config = TrainingConfig()
    for result in run.result.outcomes:
        population = at_risk(run.result.data.frame.filter(pl.col("icb_code") == run.result.icb_code), result.outcome)
        in_validation = practice_split(population["practice_pseudo_id"].to_numpy(), config.validation_share,
                                       config.seed)
        event = population[result.outcome.label].to_numpy().astype(bool)[~in_validation]
        years = population[result.outcome.followup].to_numpy().astype(float)[~in_validation]
        shared = [m for m in result.models if m.estimator.imputer is not None]
        assert len(shared) >= 2 and len({id(m.estimator.imputer) for m in shared}) == 1  # filled once
        for model in shared:
            x = model_inputs(population, model.variant)
            alone = make_model(model.kind, model.variant, config.seed, result.outcome, config.horizon_years)
            alone.fit(x[~in_validation], event, years)
            assert alone.imputer is not model.estimator.imputer
            np.testing.assert_array_equal(alone.predict_risk(x[in_validation]), model.predictions)


def another_run_registers_and_moves_the_aliases(client, versions) -> dict[str, str]:
    """What a second run of the same ICB sharing the MLflow store does between this run's
    registration and its audit or scoring: a training of its own registers a version of each
    model, and its audit makes it 'candidate' and 'champion'. Returns outcome -> its version."""
    import mlflow

    mlflow.set_tracking_uri(client.tracking_uri)  # MLflow resolves a version's source in the current store
    experiment = client.get_experiment(client.get_run(versions[0].run_id).info.experiment_id)
    parent = client.create_run(experiment.experiment_id, run_name="train (another run sharing the store)",
                               tags={"phm.kind": "training"})
    child = client.create_run(experiment.experiment_id, tags={"mlflow.parentRunId": parent.info.run_id})
    theirs = {}
    for mine in versions:
        registered = client.get_model_version(mine.name, mine.version)
        other = client.create_model_version(mine.name, registered.source, run_id=child.info.run_id,
                                            tags=registered.tags)
        client.set_registered_model_alias(mine.name, "candidate", other.version)
        client.set_registered_model_alias(mine.name, "champion", other.version)
        theirs[mine.outcome] = str(other.version)
    for run_id in (child.info.run_id, parent.info.run_id):
        client.set_terminated(run_id)
    return theirs


def test_a_run_audits_and_scores_the_versions_it_registered_whatever_the_aliases_say(trained, tmp_path):
    """Issue 16 item 15. Fails on the code that took the audit's model by 'candidate' and
    scoring's by 'champion': it audited, tagged and scored the other run's version."""
    from mlflow.tracking import MlflowClient
    from polars.testing import assert_frame_equal

    from models.audit_run import run_audit
    from models.population import read_population
    from models.score_models import ScoredVersions, score_models
    from models.tracking import TrackingLocation
    from tests.signoff import AUDIT

    folder, _, run = trained
    db = tmp_path / "phm.duckdb"
    shutil.copyfile(folder / "as-trained" / "phm.duckdb", db)
    shutil.copyfile(folder / "as-trained" / "mlflow.db", tmp_path / "mlflow.db")
    location = TrackingLocation(f"sqlite:///{tmp_path / 'mlflow.db'}", run.log.location.artifact_root)
    client = MlflowClient(location.tracking_uri)
    mine = {v.outcome: v.version for v in run.versions}

    theirs = another_run_registers_and_moves_the_aliases(client, run.versions)
    population = read_population(db, None)
    audit = run_audit(db, AUDIT, location, tmp_path / "audit", versions=run.versions, population=population)
    assert {o: str(m["version"]) for o, m in audit.report.models.items()} == mine
    assert audit.scores.versions == {v.outcome: (v.name, v.version) for v in run.versions}
    tags = client.get_run(audit.run_id).data.tags
    for v in run.versions:
        assert tags[f"phm.fairness_gate.{v.outcome}.model"] == v.version
        assert tags[f"phm.fairness_gate.{v.outcome}.model_taken_as"] == "registered by this run's training"
        assert client.get_model_version(v.name, v.version).tags["phm.audit_run_id"] == audit.run_id
        assert "phm.audit_run_id" not in client.get_model_version(v.name, theirs[v.outcome]).tags

    theirs = another_run_registers_and_moves_the_aliases(client, run.versions)  # and again, before scoring
    scored = score_models(db, location, versions=audit.scoring_versions(), population=population,
                          audit_scores=audit.scores)
    assert scored.reused_audit_scores  # the audited versions: the audit's scores, not predicted again
    with duckdb.connect(str(db), read_only=True) as con:
        scores = con.execute("select * from marts.risk_scores").pl()
    # the same table as scoring afresh, bit for bit; scores of other versions are never reused
    other = ScoredVersions({o: (name, theirs[o]) for o, (name, _) in audit.scores.versions.items()},
                           audit.scores.scores)
    afresh = score_models(db, location, versions=audit.scoring_versions(), population=population,
                          audit_scores=other)
    assert not afresh.reused_audit_scores and afresh.scored == scored.scored
    with duckdb.connect(str(db), read_only=True) as con:
        assert_frame_equal(con.execute("select * from marts.risk_scores").pl(), scores)
    for m in scored.models:
        ranks_list = client.get_model_version(f"phm-{run.result.icb_code}-{m.outcome}", mine[m.outcome]).tags[
            "phm.ranks_list"]
        # our version, or (do no harm, as our audit decided) the validated score; never theirs
        expected = mine[m.outcome] if ranks_list == "model" else "validated score"
        assert set(scores[f"{m.outcome}_model_version"]) == {expected} != {theirs[m.outcome]}
        assert m.source == f"audited by fairness audit run {audit.run_id}"


def test_standalone_commands_resolve_the_alias_once_and_refuse_another_trainings_candidate(trained, tmp_path):
    """phm score (no versions given) fixes champion's versions at the start and says so; phm audit
    --db refuses a 'candidate' that another training registered, whose validation predictions
    are not the database's."""
    from mlflow.tracking import MlflowClient

    from models.audit_run import run_audit
    from models.score_models import score_models
    from models.tracking import TrackingLocation
    from tests.signoff import AUDIT

    folder, _, run = trained
    db = tmp_path / "phm.duckdb"
    shutil.copyfile(folder / "as-trained" / "phm.duckdb", db)
    shutil.copyfile(folder / "as-trained" / "mlflow.db", tmp_path / "mlflow.db")
    location = TrackingLocation(f"sqlite:///{tmp_path / 'mlflow.db'}", run.log.location.artifact_root)
    theirs = another_run_registers_and_moves_the_aliases(MlflowClient(location.tracking_uri), run.versions)

    scored = score_models(db, location)
    assert {m.outcome: m.version for m in scored.models} == theirs  # champion's, as it was at the start
    assert all(m.source.startswith("alias 'champion' resolved at ") for m in scored.models)
    assert any(line.startswith("  model versions alias 'champion' resolved at") for line in scored.summary_lines())
    with pytest.raises(ConfigError, match="another training shares this MLflow store"):
        run_audit(db, AUDIT, location, tmp_path / "audit")


def test_declining_to_state_ethnicity_moves_no_risk_beyond_the_ethnic_effects_the_model_carries(trained):
    """Issue 22: a patient's risk must not move much because they declined to state their
    ethnicity. Read as the recorded mix (models/hazard.py), a decliner's risk against their risk
    as recorded moves by at most what the model's ethnic effects allow:
    - CVD and T2D carry ethnicity only through the validated score's published terms (the score's
      log hazard is the offset): the log hazard moves by at most the spread of those terms for the
      patient's sex (and QDiabetes model);
    - hypertension carries each group's published effect and its update, and reads its fills: the
      decliner's risk lies between their risks as each recorded group.
    Before the gradient boosting read fills as missing (HorizonHazardModel.reads_fills), its trees
    read a group's fills as the group: 18 of 5,294 patients here moved beyond the published CVD
    terms, by up to 2.8 on the log scale (a 27-year-old Asian man with no readings, 2.6% as
    recorded, 0.16% declined; docs/models.md, "A group effect learned from fills"). A learned
    'Not stated' effect (it once doubled anyone's odds) would leave these bounds too. Figures per
    true group against the truth: docs/models.md, "'Not stated' bounded"."""
    from models.equity_truth import features_at_extract
    from models.hazard import QDIABETES_MODEL
    from models.scores import ethnic_log_hr
    from models.train import model_inputs, predict_risk
    from phm.ethnicity import BROAD_GROUPS, NHS_ETHNIC_CATEGORIES, NOT_STATED, QRISK3_ETHRISK

    _, db, run = trained
    features = features_at_extract(db)
    recorded = features.filter(pl.col("ethnicity_group").is_in(list(BROAD_GROUPS)))

    def read_as(category: str, group: str) -> pl.DataFrame:
        return recorded.with_columns(pl.lit(category).alias("ethnicity_category"), pl.lit(group).alias("ethnicity_group"),
                                     pl.lit(QRISK3_ETHRISK[category]).cast(recorded.schema["qrisk3_ethrisk"])
                                     .alias("qrisk3_ethrisk"))

    terms = {"cvd": ethnic_log_hr("qrisk3"), "t2d": ethnic_log_hr("qdiabetes")}
    judged = set()
    for outcome_result in run.result.outcomes:
        outcome, candidate = outcome_result.outcome, outcome_result.candidate
        assert candidate.variant == "with_equity"
        eligible = outcome.eligible(recorded)

        def risk(frame: pl.DataFrame, candidate=candidate, eligible=eligible) -> np.ndarray:
            return predict_risk(candidate.estimator, model_inputs(frame.filter(eligible), candidate.variant))

        inputs = model_inputs(recorded.filter(eligible), candidate.variant)
        as_recorded, as_declined = risk(recorded), risk(read_as(NOT_STATED, "Not stated"))
        # proportional hazards over the horizon: the ratio of cumulative hazards is the hazards'
        log_shift = np.log(np.log1p(-as_declined) / np.log1p(-as_recorded))
        assert np.all(np.isfinite(log_shift)) and log_shift.size > 1_000, outcome.short
        if outcome.short in terms:
            own = terms[outcome.short][inputs["sex_male"].to_numpy().astype(int), inputs[QDIABETES_MODEL].to_numpy()]
            spread = own.max(axis=1) - own.min(axis=1)
            assert np.all(np.abs(log_shift) <= spread + 1e-9), (
                outcome.short, int((np.abs(log_shift) > spread + 1e-9).sum()), float(np.abs(log_shift).max()))
        else:
            as_each = np.array([risk(read_as(next(c for c, (_, g) in NHS_ETHNIC_CATEGORIES.items() if g == group), group))
                                for group in BROAD_GROUPS])
            assert np.all((as_declined >= as_each.min(axis=0) * (1 - 1e-9))
                          & (as_declined <= as_each.max(axis=0) * (1 + 1e-9))), outcome.short
        # and it does move: declining costs a patient part of their group's effect (a bound met
        # by never moving would prove nothing)
        assert np.abs(log_shift).max() > 0.05, outcome.short
        judged.add(outcome.short)
    assert judged == {"cvd", "t2d", "hypertension"}, judged
