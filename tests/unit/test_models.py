"""Models: validation metrics on hand-made data, the practice split, the input variants.
(Training -> MLflow -> registry alias -> phm score, end to end: tests/integration/test_training.py.)"""

from __future__ import annotations

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
from phm.exceptions import ConfigError, TooLittleData

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
    assert list(with_equity["ethnicity_unknown"]) == [False, True]  # ... which the models read as the mix
    assert {"ethnicity_unknown", "qrisk3_ethrisk"}.isdisjoint(clinical.columns)
    assert list(clinical["sex_male"]) == [0.0, 1.0]
    assert np.isnan(clinical["bmi"][0])  # missing stays missing; the model handles it


def test_training_settings_are_checked():
    for bad in (TrainingConfig(candidate_variant="both"), TrainingConfig(validation_share=1.0),
                TrainingConfig(horizon_years=0)):
        with pytest.raises(ConfigError):
            bad.validate()


@pytest.mark.parametrize("command", ["train", "score"])
def test_a_missing_database_is_named_and_nothing_is_created(command, tmp_path, capsys):
    from cli.main import main

    missing = tmp_path / "none.duckdb"
    assert main([command, "--db", str(missing)]) == 2
    assert f"--db {missing}: no such database" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_ethnicity_reads_as_the_recorded_mix_not_as_white():
    """'Not stated' / 'Not known': the hazard is the mean of the row's hazards as each recorded
    (group, category), weighted by the fitted rows' recorded mix (docs/models.md)."""
    import pandas as pd

    from models.qdiabetes_2018 import FEMALE_A
    from models.train import COMPARATORS, OUTCOME_BY_SHORT, feature_names, make_model

    numeric, _ = feature_names("with_equity")
    rng = np.random.default_rng(3)
    # 6 recorded: 4 White (QRISK3 category 1), 2 Indian (2); 2 declined, read as White by the score
    group = ["White"] * 4 + ["Asian"] * 2 + ["White"] * 2
    x = pd.DataFrame({c: rng.normal(0, 1, 8) for c in numeric}).assign(
        sex_male=0.0, ethnicity_group=group, ethnicity_unknown=[False] * 6 + [True] * 2,
        qrisk3_ethrisk=[1] * 4 + [2] * 2 + [1] * 2, qdiabetes_model_index=0,
        **{c: 5.0 for c in COMPARATORS})
    event, years = np.array([1, 0, 0, 1, 0, 1, 0, 0]), np.full(8, 5.0)
    as_white = x.assign(ethnicity_unknown=False)
    t2d = make_model("hazard_glm", "with_equity", 1, OUTCOME_BY_SHORT["t2d"], 5).fit(x, event, years)
    indian = FEMALE_A.ethrisk[2]  # QDiabetes-2018's published term: model A (no blood test), female, Indian
    np.testing.assert_allclose(t2d.hazard(x)[6:] / t2d.hazard(as_white)[6:], 4 / 6 + 2 / 6 * np.exp(indian))
    np.testing.assert_allclose(t2d.hazard(x)[:6], t2d.hazard(as_white)[:6])  # recorded rows: as before
    # hypertension: the published effect and the learned indicator of each group, mixed
    htn = make_model("hazard_glm", "with_equity", 1, OUTCOME_BY_SHORT["hypertension"], 5).fit(x, event, years)
    as_asian = as_white.assign(ethnicity_group="Asian")
    np.testing.assert_allclose(htn.hazard(x)[6:], 4 / 6 * htn.hazard(as_white)[6:] + 2 / 6 * htn.hazard(as_asian)[6:])
    assert htn.unknown_mix_ == [("Asian", 1, 2 / 6), ("White", 1, 4 / 6)]


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
    # a tenth declined to state: read as the recorded mix, which must not depend on the batch either
    x["ethnicity_unknown"] = rng.uniform(size=n) < 0.1
    x["ethnicity_group"] = np.where(x["ethnicity_unknown"], "White", x["ethnicity_group"])
    x["qrisk3_ethrisk"] = np.where(x["ethnicity_unknown"], 1, x["ethnicity_group"].map({"White": 1, "Black": 6, "Asian": 2}))
    x["qdiabetes_model_index"] = rng.integers(0, 3, n)
    event = (x[numeric[0]] + rng.normal(0, 10, n) > 62).to_numpy()
    years = np.where(event, rng.uniform(0, 5, n), rng.choice([5.0, 2.5], n))
    for kind in ("hazard_glm", "hazard_boosting"):
        model = make_model(kind, "with_equity", 1, OUTCOME_BY_SHORT["cvd"], 5).fit(x, event, years)
        whole = predict_risk(model, x)
        np.testing.assert_allclose(whole, model.predict_proba(x)[:, 1], rtol=1e-12, atol=1e-15)
        assert ((whole > 0) & (whole < 1)).all()
        # batches of 7 taken from every part of the whole batch (every 20th one: predicting all
        # 429 takes minutes and shows nothing more)
        starts = range(0, n, 7 * 20)
        in_batches = np.concatenate([predict_risk(model, x.iloc[i:i + 7]) for i in starts])
        same_rows = np.concatenate([whole[i:i + 7] for i in starts])
        assert (same_rows == in_batches).all(), kind
