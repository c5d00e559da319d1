"""Train risk models on the extract's own history and validate them on unseen practices.

For each outcome (incident CVD, new type 2 diabetes, new hypertension) the model predicts the
outcome recorded within the horizon after a past index date T0, from features as of T0
(models/training_data.py). The population is everyone aged 25-84 at T0 who is free of the
outcome then: the age range of QRISK3/QDiabetes and of the outreach the lists serve.

Two model kinds per outcome:
- ``logistic``: regularised logistic regression (age as a spline; missing values imputed by
  the median with a missing-indicator column). Well calibrated by construction.
- ``gradient_boosting``: HistGradientBoosting (missing values handled natively), then
  calibrated on training-practice patients it did not see (isotonic when there are at least
  500 events there, else Platt's sigmoid).

Two input variants per kind: ``with_equity`` adds ethnicity (broad group) and deprivation (IMD
decile, Townsend score, Core20) to the clinical inputs; ``clinical_only`` leaves them out.
``TrainingConfig.candidate_variant`` (default ``with_equity``, as QRISK3 and QDiabetes do)
decides which variant may become the candidate; both are trained and logged so reviewers can
compare them.

Validation is by practice: a share of practices (default 30%) is held out entirely, so every
figure is for practices the model has not seen. The candidate for an outcome is the model of
the candidate variant with the lower validation Brier score (discrimination and calibration in
one number).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import polars as pl
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupShuffleSplit
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, SplineTransformer, StandardScaler

from models.metrics import Validation, ten_to_horizon, validate
from models.score_patients import score_features
from models.training_data import TrainingData
from phm.exceptions import ConfigError, TooLittleData


@dataclass(frozen=True)
class Outcome:
    label: str  # column in the training data
    short: str  # used in model names
    description: str
    comparator: str | None  # validated score column (10-year %), if one predicts this outcome
    prevalent: tuple[str, ...]  # mart flags meaning "already has it": not at risk, not scored

    def eligible(self, features: pl.DataFrame) -> pl.Series:
        """Aged 25-84 and free of the outcome: who is trained on and scored. (The labels' SQL,
        sql/labels/outcomes.sql, says the same; a test holds the two together.)"""
        has_it = pl.any_horizontal(pl.col(c).fill_null(False) for c in self.prevalent)
        return features.select(pl.col("age_years").is_between(MIN_AGE, MAX_AGE) & ~has_it).to_series()


OUTCOMES = (
    Outcome("cvd_event", "cvd", "incident CVD (CHD, MI, stroke or TIA) recorded", "qrisk3_10y_pct", ("cvd",)),
    Outcome("t2d_event", "t2d", "new type 2 diabetes diagnosis recorded", "qdiabetes_10y_pct",
            ("type1_diabetes", "type2_diabetes")),
    Outcome("hypertension_event", "hypertension", "new hypertension diagnosis recorded", None, ("hypertension",)),
)
COMPARATOR_NAMES = {"qrisk3_10y_pct": "QRISK3", "qdiabetes_10y_pct": "QDiabetes"}

CLINICAL_NUMERIC = (
    "age_years", "bmi", "sbp_mmhg", "dbp_mmhg", "sbp_sd_5y", "cholesterol_ratio",
    "hba1c_mmol_mol", "fasting_glucose_mmol_l", "smoke_cat", "long_term_conditions",
)
CLINICAL_FLAGS = (
    "sex_male", "hypertension", "type1_diabetes", "type2_diabetes", "cvd", "atrial_fibrillation",
    "ckd_3_5", "rheumatoid_arthritis", "sle", "migraine", "severe_mental_illness",
    "erectile_dysfunction", "family_history_cvd", "family_history_diabetes", "gestational_diabetes",
    "pcos", "learning_disability", "on_antihypertensives", "on_statins", "on_corticosteroids",
    "on_atypical_antipsychotics", "treated_hypertension",
)
EQUITY_NUMERIC = ("imd_decile", "townsend_score")
EQUITY_FLAGS = ("core20",)
EQUITY_CATEGORICAL = ("ethnicity_group",)
VARIANTS = ("with_equity", "clinical_only")
MODEL_KINDS = ("logistic", "gradient_boosting")
MIN_AGE, MAX_AGE = 25, 84
# Kept with the validation predictions for the fairness audit: its measure of need (conditions,
# blood pressure, HbA1c) and of measurement completeness (which of these were recorded).
AUDIT_MEASURES = ("long_term_conditions", "sbp_mmhg", "dbp_mmhg", "hba1c_mmol_mol", "bmi", "cholesterol_ratio")


@dataclass(frozen=True)
class TrainingConfig:
    horizon_years: int = 5
    candidate_variant: str = "with_equity"
    validation_share: float = 0.3
    calibration_share: float = 0.2
    seed: int = 42

    def validate(self) -> None:
        if self.candidate_variant not in VARIANTS:
            raise ConfigError(f"candidate variant must be one of {VARIANTS}, not {self.candidate_variant!r}")
        if not 0 < self.validation_share < 1:
            raise ConfigError(f"validation share must be between 0 and 1, not {self.validation_share}")
        if not 0 < self.calibration_share < 1:
            raise ConfigError(f"calibration share must be between 0 and 1, not {self.calibration_share}")
        if self.horizon_years < 1:
            raise ConfigError(f"horizon must be at least 1 year, not {self.horizon_years}")


def feature_names(variant: str) -> tuple[list[str], list[str]]:
    """(numeric-or-flag columns, categorical columns) that a variant's model reads."""
    numeric = [*CLINICAL_NUMERIC, *CLINICAL_FLAGS]
    if variant == "with_equity":
        return [*numeric, *EQUITY_NUMERIC, *EQUITY_FLAGS], list(EQUITY_CATEGORICAL)
    return numeric, []


def model_inputs(features: pl.DataFrame, variant: str) -> pd.DataFrame:
    """The model's input table from mart rows: floats (missing = NaN) and category strings."""
    numeric, categorical = feature_names(variant)
    frame = features.with_columns((pl.col("sex") == "male").alias("sex_male"))
    return frame.select(
        *[pl.col(c).cast(pl.Float64) for c in numeric],
        *[pl.col(c).cast(pl.String).fill_null("Not known") for c in categorical],
    ).to_pandas()


def make_model(kind: str, variant: str, seed: int) -> Pipeline:
    numeric, categorical = feature_names(variant)
    encode = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
    if kind == "logistic":
        columns = ColumnTransformer([
            ("age_spline", make_pipeline(SimpleImputer(strategy="median"),
                                         SplineTransformer(n_knots=5, degree=3)), ["age_years"]),
            ("numeric", make_pipeline(SimpleImputer(strategy="median", add_indicator=True),
                                      StandardScaler()), numeric),
            ("categorical", encode, categorical),
        ])
        return Pipeline([("inputs", columns), ("classifier", LogisticRegression(C=1.0, max_iter=2000))])
    if kind == "gradient_boosting":
        columns = ColumnTransformer([("numeric", "passthrough", numeric), ("categorical", encode, categorical)])
        booster = HistGradientBoostingClassifier(
            learning_rate=0.08, max_iter=300, max_leaf_nodes=31, min_samples_leaf=50,
            l2_regularization=1.0, early_stopping=True, validation_fraction=0.1,
            n_iter_no_change=15, random_state=seed)
        return Pipeline([("inputs", columns), ("classifier", booster)])
    raise ConfigError(f"model kind must be one of {MODEL_KINDS}, not {kind!r}")


def predict_risk(model, x: pd.DataFrame) -> np.ndarray:
    """The model's risk for each row, the same for a row whatever else is in the batch.

    scikit-learn's LogisticRegression scores through BLAS (X @ coef), whose kernels add up a row
    in an order that depends on where the row falls in the batch: a PCN scored alone and inside
    its ICB could differ in the last bit. So for a pipeline ending in a logistic regression the
    last step is done here row by row (einsum's own loop, no BLAS), then expit as scikit-learn
    does. Every other model is already row by row.
    """
    from scipy.special import expit

    final = model[-1] if isinstance(model, Pipeline) else None
    if isinstance(final, LogisticRegression) and final.coef_.shape[0] == 1:
        inputs = np.ascontiguousarray(model[:-1].transform(x), dtype=np.float64)
        decision = np.einsum("ij,j->i", inputs, final.coef_[0]) + final.intercept_[0]
        return expit(decision)
    return model.predict_proba(x)[:, 1]


def practice_split(practices: np.ndarray, validation_share: float, seed: int) -> np.ndarray:
    """True for rows in validation practices. Needs at least 2 practices."""
    if np.unique(practices).size < 2:
        raise TooLittleData("validation by practice needs patients in at least 2 practices; "
                          "this extract has one")
    splitter = GroupShuffleSplit(n_splits=1, test_size=validation_share, random_state=seed)
    _, validation_rows = next(splitter.split(practices, groups=practices))
    in_validation = np.zeros(practices.size, dtype=bool)
    in_validation[validation_rows] = True
    return in_validation


def fit(kind: str, variant: str, x: pd.DataFrame, y: np.ndarray, config: TrainingConfig):
    """Fit one model; boosting is then calibrated on training rows it did not see."""
    model = make_model(kind, variant, config.seed)
    if kind == "logistic":
        return model.fit(x, y)
    rng = np.random.default_rng(config.seed)
    calibration_rows = rng.random(y.size) < config.calibration_share
    model.fit(x[~calibration_rows], y[~calibration_rows])
    method = "isotonic" if y[calibration_rows].sum() >= 500 else "sigmoid"
    calibrated = CalibratedClassifierCV(FrozenEstimator(model), method=method)
    return calibrated.fit(x[calibration_rows], y[calibration_rows])


@dataclass
class TrainedModel:
    outcome: Outcome
    kind: str
    variant: str
    estimator: object
    features: list[str]
    validation: Validation
    predictions: np.ndarray  # validation rows, in the order of OutcomeResult.validation_rows
    fit_seconds: float
    training_rows: int
    training_events: int


@dataclass
class OutcomeResult:
    outcome: Outcome
    models: list[TrainedModel]
    candidate: TrainedModel
    validation_frame: pl.DataFrame  # validation patients: ids, groups, label, comparator at horizon
    comparator: Validation | None
    seconds: float


@dataclass
class TrainingResult:
    data: TrainingData
    config: TrainingConfig
    icb_code: str
    outcomes: list[OutcomeResult] = field(default_factory=list)


def at_risk(frame: pl.DataFrame, outcome: Outcome) -> pl.DataFrame:
    return frame.filter(outcome.eligible(frame))


def train_outcome(frame: pl.DataFrame, outcome: Outcome, config: TrainingConfig, progress=None) -> OutcomeResult:
    started = time.perf_counter()
    population = at_risk(frame, outcome)
    y_all = population[outcome.label].cast(pl.Int8).to_numpy()
    in_validation = practice_split(population["practice_pseudo_id"].to_numpy(), config.validation_share, config.seed)
    y_train, y_valid = y_all[~in_validation], y_all[in_validation]
    for name, y in (("training", y_train), ("validation", y_valid)):
        if y.sum() == 0 or y.sum() == y.size:
            raise TooLittleData(f"{outcome.description}: the {name} practices have no patients with and "
                              "without the outcome, so no model can be trained or judged; use a larger extract")
    validation_frame = population.filter(pl.Series(in_validation)).select(
        "patient_id", "practice_pseudo_id", "pcn_code", "sex", "age_years", "ethnicity_category",
        "ethnicity_group", "ethnicity_has_conflicting_codes", "imd_quintile", *AUDIT_MEASURES,
        pl.col(outcome.label).alias("recorded_outcome"))
    comparator = None
    if outcome.comparator:
        valid_features = population.filter(pl.Series(in_validation))
        ten_year = score_features(valid_features)[outcome.comparator].to_numpy() / 100
        horizon_risk = ten_to_horizon(ten_year, config.horizon_years)
        validation_frame = validation_frame.with_columns(pl.Series("comparator_risk", horizon_risk))
        scored = ~np.isnan(horizon_risk)
        comparator = validate(y_valid[scored], horizon_risk[scored])
    models = []
    for variant in VARIANTS:
        inputs = model_inputs(population, variant)
        x_train, x_valid = inputs[~in_validation], inputs[in_validation]
        for kind in MODEL_KINDS:
            if progress:
                progress(f"{outcome.short}: fitting {kind} ({variant}) on {y_train.size:,} patients")
            t = time.perf_counter()
            estimator = fit(kind, variant, x_train, y_train, config)
            seconds = time.perf_counter() - t
            predicted = predict_risk(estimator, x_valid)
            models.append(TrainedModel(outcome, kind, variant, estimator, list(inputs.columns),
                                       validate(y_valid, predicted), predicted, seconds,
                                       int(y_train.size), int(y_train.sum())))
    eligible = [m for m in models if m.variant == config.candidate_variant]
    candidate = min(eligible, key=lambda m: m.validation.brier)
    return OutcomeResult(outcome, models, candidate, validation_frame, comparator, time.perf_counter() - started)


def single_icb(frame: pl.DataFrame, icb_code: str | None) -> tuple[str, pl.DataFrame]:
    """The ICB the models are for (one experiment per ICB), and its patients."""
    icbs = sorted(frame["icb_code"].drop_nulls().unique().to_list())
    if not icbs:
        raise TooLittleData("no registered patients at the index date in any ICB: the extract is "
                            "empty after ingest, or its registrations ended before the index date")
    if icb_code is None:
        if len(icbs) != 1:
            raise ConfigError(f"the extract covers {len(icbs)} ICBs ({', '.join(icbs)}): choose one with --icb")
        icb_code = icbs[0]
    elif icb_code not in icbs:
        raise ConfigError(f"--icb {icb_code}: no patients of that ICB in the extract (it has {', '.join(icbs)})")
    return icb_code, frame.filter(pl.col("icb_code") == icb_code)


def train_all(data: TrainingData, config: TrainingConfig, icb_code: str | None = None,
              outcomes=OUTCOMES, progress=None) -> TrainingResult:
    config.validate()
    icb_code, frame = single_icb(data.frame, icb_code)
    result = TrainingResult(data, config, icb_code)
    for outcome in outcomes:
        result.outcomes.append(train_outcome(frame, outcome, config, progress))
    return result
