"""Missing readings are filled with the patient's own group's expected value (models.impute)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from models.score_patients import score_features
from models.train import CLINICAL_FLAGS, OUTCOME_BY_SHORT, make_model, model_inputs, predict_risk


def mart_table(n=6_000, seed=3):
    """A hand-made feature mart where Black patients' BMI runs 5 kg/m2 above White patients' and is
    missing for 40% of them (10% of White patients), at random within the group; everything else
    recorded and alike. Returns the rows as recorded and the true BMI."""
    rng = np.random.default_rng(seed)
    black = rng.uniform(size=n) < 0.15
    bmi = np.round(np.where(black, 31.0, 26.0) + rng.normal(0, 3, n), 1)
    missing = rng.uniform(size=n) < np.where(black, 0.4, 0.1)
    frame = pl.DataFrame({
        "patient_id": np.arange(n), "sex": np.where(np.arange(n) % 2 == 0, "female", "male"),
        "age_years": rng.integers(30, 80, n), "ethnicity_group": np.where(black, "Black", "White"),
        "qrisk3_ethrisk": np.where(black, 7, 1), "imd_decile": np.full(n, 5), "townsend_score": np.zeros(n),
        "core20": np.zeros(n, dtype=bool), "bmi": np.where(missing, np.nan, bmi),
        "sbp_mmhg": rng.normal(128, 12, n).round(), "dbp_mmhg": np.full(n, 80.0), "sbp_sd_5y": np.full(n, 8.0),
        "cholesterol_ratio": np.full(n, 4.0), "hba1c_mmol_mol": np.full(n, np.nan),
        "fasting_glucose_mmol_l": np.full(n, np.nan), "smoke_cat": np.zeros(n),
        "long_term_conditions": np.zeros(n),
        **{flag: np.zeros(n, dtype=bool) for flag in CLINICAL_FLAGS if flag != "sex_male"},
    }).with_columns(pl.col("bmi", "hba1c_mmol_mol", "fasting_glucose_mmol_l").fill_nan(None))
    return frame, black, missing, bmi


# no HbA1c or fasting glucose anywhere (QDiabetes model A): the GLM's median has nothing to fill them with
@pytest.mark.filterwarnings("ignore:Skipping features without any observed values")
def test_a_group_whose_readings_are_missing_is_scored_with_its_own_groups_value_not_the_pooled_one():
    """The truth is QDiabetes on the true BMI. Filled with the pooled value (QDiabetes' centring
    BMI in the offset, the median and a missing indicator in the GLM), Black patients without a
    BMI were rated at 0.66 of their true risk and White patients without one at 1.43 (the
    indicator learned mostly from Black patients' missing values); filled with the group's own
    expected BMI they are rated at 0.93 and 0.97, and recorded Black patients at 1.02."""
    frame, black, missing, bmi = mart_table()
    truth_ten_year = score_features(frame.with_columns(pl.Series("bmi", bmi)))["qdiabetes_10y_pct"].to_numpy() / 100
    hazard = -np.log1p(-truth_ten_year) / 10
    x = model_inputs(frame, "with_equity")
    # fitted to the expected events over 5 years' follow-up (the Poisson likelihood takes a mean)
    model = make_model("hazard_glm", "with_equity", 1, OUTCOME_BY_SHORT["t2d"], 5).fit(x, 5 * hazard, np.full(len(x), 5.0))
    risk, true_risk = predict_risk(model, x), -np.expm1(-5 * hazard)
    for rows in (black & missing, ~black & missing, black & ~missing):
        assert risk[rows].mean() / true_risk[rows].mean() == pytest.approx(1, abs=0.1)


def test_the_offset_recomputed_on_model_inputs_is_the_published_score_on_the_same_values():
    """A row with nothing to fill keeps the validated score's own figure: recomputed from the model
    inputs (models.score_patients.score_inputs_frame), QRISK3 and QDiabetes are what the feature
    mart's scores give for the same values."""
    from models.score_patients import score_inputs_frame

    frame, *_ = mart_table(n=500)
    x = model_inputs(frame.with_columns(pl.col("bmi").fill_null(27.0)), "with_equity")
    for comparator in ("qrisk3_10y_pct", "qdiabetes_10y_pct"):
        np.testing.assert_array_equal(score_inputs_frame(x, comparator), x[comparator].to_numpy())


@pytest.mark.filterwarnings("ignore:Skipping features without any observed values")
@pytest.mark.parametrize("keep_empty", [False, True])
def test_the_glms_median_imputer_finds_simpleimputers_medians_bit_for_bit(keep_empty):
    """MedianImputer (a partial sort per column) against SimpleImputer(strategy="median") (a
    masked-array sort of every column): the same statistics, indicator columns and output, on
    columns with an odd and an even count of recorded values (whose two middle values are
    averaged: 0.1 + 0.2 is not 0.3 in floating point), ties, negative values, 0.0 beside -0.0,
    an all-missing column and a complete one, plus random columns."""
    from sklearn.impute import SimpleImputer

    from models.impute import MedianImputer

    nan = np.nan
    table = np.array([
        [0.1, 1.0, nan, 5.0, -2.5, 1.0, -0.0],
        [0.2, 1.0, nan, 5.0, nan, 0.0, 0.0],
        [nan, 1.0, nan, 5.0, -1.0, 0.0, -0.0],
        [0.7, 2.0, nan, 5.0, 3.0, 1.0, 0.0],
        [nan, 1.0, nan, 5.0, -7.25, 0.0, 1.0],
        [1e-300, 3.0, nan, 5.0, nan, 1.0, -1.0],
    ])
    rng = np.random.default_rng(5)
    # rounded: many columns hold both 0.0 and -0.0 (equal, not the same bits) near their median
    noise = (rng.normal(0, 1, (501, 8)) / 3).round(1)
    noise[:, :4] = rng.normal(0, 1, (501, 4)) / 3
    noise[rng.uniform(size=noise.shape) < 0.3] = nan
    for x in (table, noise, noise[:-1]):
        ours = MedianImputer(strategy="median", add_indicator=True, keep_empty_features=keep_empty).fit(x)
        theirs = SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=keep_empty).fit(x)
        assert ours.statistics_.tobytes() == theirs.statistics_.tobytes()
        assert np.array_equal(ours.indicator_.features_, theirs.indicator_.features_)
        assert ours.transform(x).tobytes() == theirs.transform(x).tobytes()
    # the even counts' averages are where a different formula would show
    assert MedianImputer(strategy="median").fit(table).statistics_[0] == (0.1 + 0.2) / 2


def test_the_boosting_reads_a_filled_reading_as_missing_so_a_groups_fill_is_no_group_effect():
    """A group's fill is a value only that group's unmeasured patients have, so trees reading it
    split on it as on the group. Here Black patients without a BMI have three times the events
    their published score expects (the chance of a few dozen events in one extract, which the CVD
    and T2D models must never learn as an ethnic effect: docs/models.md, "A group effect learned
    from fills"). Reading fills, the boosting's multiplier for such a patient rose above a White
    patient's with the same inputs; reading them as missing, the two are the same, and the
    offset (the score recomputed on the group's fill) is all that differs."""
    frame, black, missing, _ = mart_table()
    # a few White patients with glycaemic readings: the trees bin every column, and cannot bin one
    # with no value at all
    measured = pl.Series(~black & (np.arange(len(black)) % 5 == 0))
    frame = frame.with_columns(pl.when(measured).then(38.0).otherwise(pl.col("hba1c_mmol_mol")).alias("hba1c_mmol_mol"),
                               pl.when(measured).then(5.2).otherwise(pl.col("fasting_glucose_mmol_l"))
                               .alias("fasting_glucose_mmol_l"))
    truth_ten_year = score_features(frame)["qdiabetes_10y_pct"].to_numpy() / 100
    hazard = -np.log1p(-truth_ten_year) / 10 * np.where(black & missing, 3.0, 1.0)
    x = model_inputs(frame, "with_equity")
    one = frame.filter(pl.Series(black & missing)).head(1)
    as_white = one.with_columns(pl.lit("White").alias("ethnicity_group"),
                                pl.lit(1).cast(one.schema["qrisk3_ethrisk"]).alias("qrisk3_ethrisk"))
    pair = model_inputs(pl.concat([one, as_white]), "with_equity")  # the same patient, Black and White

    def multipliers(reads_fills: bool) -> np.ndarray:
        model = make_model("hazard_boosting", "with_equity", 1, OUTCOME_BY_SHORT["t2d"], 5)
        model.set_params(reads_fills=reads_fills).fit(x, 5 * hazard, np.full(len(x), 5.0))
        rows = model._filled(pair)
        assert rows["bmi"].iloc[0] > rows["bmi"].iloc[1] + 2  # each filled with its own group's BMI
        return model._multiplier(rows, model._offset(rows))

    assert make_model("hazard_boosting", "with_equity", 1, OUTCOME_BY_SHORT["t2d"], 5).reads_fills is False
    as_missing = multipliers(reads_fills=False)
    assert as_missing[0] == as_missing[1]
    reading = multipliers(reads_fills=True)  # as before: the trees read the fills and learned the group
    assert reading[0] > 1.2 * reading[1]
