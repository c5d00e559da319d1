"""Models: validation metrics on hand-made data, the practice split, the input variants, and
training -> MLflow (embedded SQLite) -> registry alias -> phm score, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
from sklearn.metrics import brier_score_loss, roc_auc_score

from models import metrics
from models.train import (
    EQUITY_CATEGORICAL,
    EQUITY_NUMERIC,
    TrainingConfig,
    model_inputs,
    practice_split,
)
from phm.exceptions import ConfigError

# --- metrics ---------------------------------------------------------------------------------


def simulated(n=40_000, seed=3, stretch=1.0, scale=1.0):
    """Outcomes drawn from true risks p; predictions distorted on the logit scale by
    ``stretch`` (slope 1/stretch) and on the risk scale by ``scale`` (O/E 1/scale)."""
    rng = np.random.default_rng(seed)
    logit = rng.normal(-2.5, 1.0, n)
    p = 1 / (1 + np.exp(-logit))
    y = (rng.random(n) < p).astype(int)
    predicted = 1 / (1 + np.exp(-(logit * stretch)))
    return y, np.clip(predicted * scale, 0, 1)


def test_perfectly_calibrated_predictions_have_slope_one_intercept_zero_and_oe_one():
    y, p = simulated()
    v = metrics.validate(y, p)
    assert v.calibration_slope == pytest.approx(1.0, abs=0.05)
    assert v.calibration_intercept == pytest.approx(0.0, abs=0.05)
    assert v.observed_expected_ci_low < 1 < v.observed_expected_ci_high
    assert v.brier == pytest.approx(brier_score_loss(y, p))
    assert (v.n, v.events) == (y.size, y.sum())


def test_too_extreme_predictions_have_a_slope_below_one():
    y, p = simulated(stretch=2.0)
    assert metrics.calibration_slope(y, p) == pytest.approx(0.5, abs=0.05)


def test_overestimated_risk_has_oe_below_one_and_a_negative_intercept():
    y, p = simulated(scale=2.0)
    oe, low, high = metrics.observed_expected(y, p)
    assert high < 0.6 and oe == pytest.approx(y.sum() / p.sum())
    assert metrics.calibration_intercept(y, p) < -0.5


def test_auroc_equals_scikit_learn_and_its_interval_covers_it():
    y, p = simulated(n=5_000)
    auc, low, high = metrics.auroc_delong(y, p)
    assert auc == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert low < auc < high


def test_auroc_handles_ties_like_scikit_learn():
    y = np.array([0, 0, 1, 1, 0, 1, 0, 1])
    p = np.array([0.1, 0.5, 0.5, 0.9, 0.2, 0.2, 0.5, 0.7])
    assert metrics.auroc_delong(y, p)[0] == pytest.approx(roc_auc_score(y, p))


def test_delong_interval_matches_the_published_hanley_mcneil_scale():
    # Hanley & McNeil (1982): for AUC 0.8 with 50 positives and 50 negatives the standard
    # error is about 0.044. DeLong's estimate on a sample of that design should be close.
    rng = np.random.default_rng(0)
    positives, negatives = rng.normal(1.19, 1, 50), rng.normal(0, 1, 50)  # AUC ~0.8
    y = np.r_[np.ones(50), np.zeros(50)]
    auc, low, high = metrics.auroc_delong(y, np.r_[positives, negatives])
    assert 0.7 < auc < 0.9
    assert (high - low) / (2 * 1.96) == pytest.approx(0.044, abs=0.012)


def test_observed_expected_interval_is_the_exact_poisson_interval():
    # 10 observed, 10 expected: exact 95% Poisson limits for 10 are 4.795 and 18.390.
    y = np.r_[np.ones(10), np.zeros(90)]
    p = np.full(100, 0.1)
    oe, low, high = metrics.observed_expected(y, p)
    assert (round(oe, 9), round(low, 3), round(high, 3)) == (1.0, 0.480, 1.839)


def test_a_single_class_gives_nan_not_an_error():
    v = metrics.validate(np.zeros(10), np.full(10, 0.1))
    assert np.isnan(v.auroc) and np.isnan(v.calibration_slope)


def test_ten_year_risk_converted_to_five_years_under_constant_hazard():
    assert metrics.ten_to_horizon(np.array([0.1]), 5)[0] == pytest.approx(1 - 0.9 ** 0.5)
    assert metrics.ten_to_horizon(np.array([0.1]), 10)[0] == pytest.approx(0.1)


# --- split and inputs --------------------------------------------------------------------------


def test_validation_is_by_practice_and_holds_out_about_the_share():
    practices = np.repeat(np.arange(20), 50)
    in_validation = practice_split(practices, 0.3, seed=1)
    assert set(practices[in_validation]).isdisjoint(practices[~in_validation])
    assert np.unique(practices[in_validation]).size == 6


def test_one_practice_cannot_be_split():
    from phm.exceptions import TooLittleData

    with pytest.raises(TooLittleData, match="at least 2 practices"):
        practice_split(np.zeros(100), 0.3, seed=1)


def mart_rows():
    return pl.DataFrame({
        "sex": ["female", "male"], "age_years": [50, 60], "ethnicity_group": ["Asian", None],
        "imd_decile": [1, None], "townsend_score": [2.5, None], "core20": [True, False],
        "bmi": [None, 30.0], "qrisk3_10y_pct": [5.0, None], "qdiabetes_10y_pct": [3.0, None],
    })


def test_clinical_only_variant_never_sees_ethnicity_or_deprivation():
    frame = mart_rows()
    for column in ("sbp_mmhg", "dbp_mmhg", "sbp_sd_5y", "cholesterol_ratio", "hba1c_mmol_mol",
                   "fasting_glucose_mmol_l", "smoke_cat", "long_term_conditions"):
        frame = frame.with_columns(pl.lit(None, dtype=pl.Float64).alias(column))
    from models.train import CLINICAL_FLAGS

    for flag in CLINICAL_FLAGS:
        if flag != "sex_male":
            frame = frame.with_columns(pl.lit(False).alias(flag))
    clinical = model_inputs(frame, "clinical_only")
    with_equity = model_inputs(frame, "with_equity")
    equity = {*EQUITY_NUMERIC, *EQUITY_CATEGORICAL, "core20"}
    assert equity.isdisjoint(clinical.columns)
    assert equity <= set(with_equity.columns)
    assert list(with_equity["ethnicity_group"]) == ["Asian", "White"]  # not known: the reference group
    assert list(clinical["sex_male"]) == [0.0, 1.0]
    assert np.isnan(clinical["bmi"][0])  # missing stays missing; the model handles it


def test_training_settings_are_checked():
    for bad in (TrainingConfig(candidate_variant="both"), TrainingConfig(validation_share=1.0),
                TrainingConfig(horizon_years=0)):
        with pytest.raises(ConfigError):
            bad.validate()


# --- end to end: train, MLflow, registry, score ------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 12,000-patient extract (4 practices), ingested, featured, trained and logged."""
    from features.run import run_features
    from models.training_run import run_training
    from phm.ingest import ingest
    from phm.synth import SynthConfig, generate

    folder = tmp_path_factory.mktemp("models")
    generate(SynthConfig(patients=12_000, seed=11, pcns=2), folder / "extract")
    db = folder / "phm.duckdb"
    ingest(folder / "extract", db)
    run_features(db)
    run = run_training(db, TrainingConfig(), truth_dir=folder / "extract" / "truth")
    return folder, db, run


def client_for(run):
    from mlflow.tracking import MlflowClient

    return MlflowClient(run.log.location.tracking_uri)


def test_mlflow_store_is_embedded_under_the_output_folder(trained):
    folder, _, run = trained
    assert run.log.location.tracking_uri == f"sqlite:///{folder.resolve() / 'mlflow' / 'mlflow.db'}"
    assert (folder / "mlflow" / "artifacts").is_dir()


def test_one_experiment_per_icb_with_a_child_run_per_outcome_kind_and_variant(trained):
    _, _, run = trained
    client = client_for(run)
    experiment = client.get_experiment_by_name(f"phm-risk {run.result.icb_code}")
    assert experiment is not None
    children = client.search_runs([experiment.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{run.log.parent_run_id}'")
    combos = {(r.data.params["outcome"], r.data.params["model_kind"], r.data.params["variant"]) for r in children}
    assert len(children) == len(combos) == 12
    for child in children:
        params, metrics_ = child.data.params, child.data.metrics
        assert params["validation_split"] == "by practice"
        assert len(params["training_data_digest"]) == 64
        assert params["ethnicity_and_deprivation_inputs"] == str(params["variant"] == "with_equity")
        for key in ("val_auroc", "val_auroc_ci_low", "val_auroc_ci_high", "val_brier",
                    "val_calibration_slope", "val_calibration_intercept", "val_observed_expected",
                    "truth_spearman_true_risk", "truth_auroc_true_events"):
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
    assert main(["train", "--db", str(db), "--candidate-variant", "clinical_only"]) == 0
    out = capsys.readouterr().out
    assert "QRISK3 (10y converted to 5y)" in out and "version 2 as 'candidate'" in out
    assert main(["score", "--db", str(db)]) == 0
    captured = capsys.readouterr()
    assert "v2 (candidate, clinical_only)" in captured.out
    assert "has no champion" in captured.err


def test_training_is_reproducible_for_a_seed(trained):
    from models.train import OUTCOMES, train_outcome

    _, _, run = trained
    again = train_outcome(run.result.data.frame, OUTCOMES[0], TrainingConfig())
    for first, second in zip(run.result.outcomes[0].models, again.models, strict=True):
        np.testing.assert_array_equal(first.predictions, second.predictions)
    assert again.candidate.kind == run.result.outcomes[0].candidate.kind


@pytest.mark.parametrize("command", ["train", "score"])
def test_a_missing_database_is_named_and_nothing_is_created(command, tmp_path, capsys):
    from cli.main import main

    missing = tmp_path / "none.duckdb"
    assert main([command, "--db", str(missing)]) == 2
    assert f"--db {missing}: no such database" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_predict_risk_is_the_models_risk_whatever_the_batch():
    import numpy as np
    import pandas as pd

    from models.train import COMPARATORS, OUTCOME_BY_SHORT, feature_names, make_model, predict_risk

    rng = np.random.default_rng(5)
    numeric, categorical = feature_names("with_equity")
    n = 3_000
    x = pd.DataFrame({c: rng.normal(50, 10, n) for c in numeric})
    for c in categorical:
        x[c] = rng.choice(["White", "Black", "Asian"], n)
    for c in COMPARATORS:
        x[c] = rng.uniform(1, 30, n)
    event = (x[numeric[0]] + rng.normal(0, 10, n) > 62).to_numpy()
    years = np.where(event, rng.uniform(0, 5, n), rng.choice([5.0, 2.5], n))
    for kind in ("hazard_glm", "hazard_boosting"):
        model = make_model(kind, "with_equity", 1, OUTCOME_BY_SHORT["cvd"], 5).fit(x, event, years)
        whole = predict_risk(model, x)
        np.testing.assert_allclose(whole, model.predict_proba(x)[:, 1], rtol=1e-12, atol=1e-15)
        assert ((whole > 0) & (whole < 1)).all()
        in_batches = np.concatenate([predict_risk(model, x.iloc[i:i + 7]) for i in range(0, n, 7)])
        assert (whole == in_batches).all(), kind
