"""Train risk models on the extract's own history and validate them on unseen practices.

For each outcome (incident CVD, new type 2 diabetes, new hypertension) the model predicts the
risk of the outcome being recorded within the horizon after a past index date T0, from features
as of T0 (models/training_data.py), learned from censored follow-up: a patient who died or left
before the horizon's end counts for the time they were followed, never as event-free
(models/hazard.py; docs/models.md says why this method). The population is everyone aged 25-84
at T0 who is free of the outcome then: the age range of QRISK3/QDiabetes and of the outreach the
lists serve.

Two model kinds per outcome, both constant-hazard (Poisson) survival models and, for CVD and type
2 diabetes, updates of QRISK3 and QDiabetes (their log hazard as a fixed offset, recalibrated
in the large and extended; ethnicity acts only through their published effects):
- ``hazard_glm``: an L2-penalised Poisson GLM (age as a spline; missing values imputed by the
  median with a missing-indicator column); the penalty shrinks the extension towards the
  validated score.
- ``hazard_boosting``: HistGradientBoosting with the Poisson loss (missing values handled
  natively), boosting from the validated score's hazard.

In the ``with_equity`` variant both read missing readings (BMI, blood pressure, its variability,
cholesterol ratio) filled first with the value expected for the patient's group, and update the
validated score recomputed on them (models/impute.py: filled with one pooled value, a group whose
readings run higher and are more often missing was scored as average).

Two input variants per kind: ``with_equity`` adds ethnicity (broad group, as recorded at T0) and
deprivation (IMD decile, Townsend score, Core20) to the clinical inputs; ``clinical_only`` leaves
them out. ``TrainingConfig.candidate_variant`` (default ``with_equity``, as QRISK3 and QDiabetes
do) decides which variant may become the candidate. Only that variant is trained unless
``compare_variants`` asks for the other too (``phm train --compare-variants``, ``[run]
compare_variants = true``): a comparison model can never become the candidate, so fitting it on
every run was work whose result the lists never used. When trained, it is logged beside the
candidate's models so reviewers can compare them; when not, the comparison says so.

Validation is by practice: a share of practices (default 30%) is held out entirely, so every
figure is for practices the model has not seen. The candidate for an outcome is the model of
the candidate variant with the lower validation Brier score (on patients whose status at the
horizon is known). The validation patients carry the ethnicity known at the extract date, by
which the audit groups them.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import polars as pl
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import PoissonRegressor
from sklearn.model_selection import GroupShuffleSplit
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, SplineTransformer, StandardScaler
from threadpoolctl import threadpool_limits

from models.hazard import ETHRISK, QDIABETES_MODEL, HorizonHazardModel, risk_while_followed
from models.impute import GroupImputer, MedianImputer
from models.metrics import Validation, observed_expected, ten_to_horizon, validate
from models.score_patients import score_features
from models.scores import ethnic_log_hr, qdiabetes_model_index
from models.training_data import TrainingData
from phm.disclosure import show
from phm.ethnicity import BROAD_GROUPS
from phm.exceptions import ConfigError, TooLittleData


@dataclass(frozen=True)
class Outcome:
    label: str  # column in the training data
    short: str  # used in model names
    description: str
    comparator: str | None  # validated score column (10-year %), if one predicts this outcome
    prevalent: tuple[str, ...]  # mart flags meaning "already has it": not at risk, not scored
    followup: str  # column of years followed (sql/labels/outcomes.sql)

    def eligible(self, features: pl.DataFrame) -> pl.Series:
        """Aged 25-84 and free of the outcome: who is trained on and scored. (The labels' SQL,
        sql/labels/outcomes.sql, says the same; a test holds the two together.)"""
        has_it = pl.any_horizontal(pl.col(c).fill_null(False) for c in self.prevalent)
        return features.select(pl.col("age_years").is_between(MIN_AGE, MAX_AGE) & ~has_it).to_series()


OUTCOMES = (
    Outcome("cvd_event", "cvd", "incident CVD (CHD, MI, stroke or TIA) recorded", "qrisk3_10y_pct", ("cvd",),
            "cvd_followup_years"),
    Outcome("t2d_event", "t2d", "new type 2 diabetes diagnosis recorded", "qdiabetes_10y_pct",
            ("type1_diabetes", "type2_diabetes"), "t2d_followup_years"),
    Outcome("hypertension_event", "hypertension", "new hypertension diagnosis recorded", None, ("hypertension",),
            "hypertension_followup_years"),
)
OUTCOME_BY_SHORT = {o.short: o for o in OUTCOMES}
COMPARATOR_NAMES = {"qrisk3_10y_pct": "QRISK3", "qdiabetes_10y_pct": "QDiabetes"}
COMPARATOR_SCORES = {"qrisk3_10y_pct": "qrisk3", "qdiabetes_10y_pct": "qdiabetes"}  # models.scores' names

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
MODEL_KINDS = ("hazard_glm", "hazard_boosting")
COMPARATORS = ("qrisk3_10y_pct", "qdiabetes_10y_pct")
REFERENCE_GROUP = "White"
UNKNOWN_COLUMN = "ethnicity_unknown"  # model_inputs: 'Not stated' or 'Not known'
# L2 penalty of the GLM's extension (scikit-learn's alpha, per unit of exposure-weighted mean
# deviance): chosen on the truth (docs/models.md), where a weaker one let small groups' effects
# wander and a stronger one pulled every group back to the validated score.
GLM_PENALTY = 1e-3
# Published ethnic effects (log hazard ratio against White) for an outcome without a validated
# score, carried as a fixed offset so that the learned group indicators are penalised towards
# them, not towards White's risk. Hypertension, Black adults: REGARDS (Howard G et al., JAMA
# 2018;320(13):1338-48, doi:10.1001/jama.2018.13467), hypertension-free at baseline, 46% of
# Black and 33% of White participants developed hypertension over a median 9.4 years: under a
# constant hazard -log(0.54) / -log(0.67) = 1.54, log 0.43. No published incidence effect for
# the UK's Asian, Mixed and Other groups: 0 (White's). Each group's effect is then updated by its
# own events (GROUP_PRIOR_SD). Why an offset: GLM_PENALTY shrank a rare group's indicator towards
# White even with no noise at all (docs/models.md, "Why the hypertension model under-rated Black
# patients").
PUBLISHED_GROUP_LOG_HR: dict[str, dict[str, float]] = {
    "hypertension": {"Black": 0.43, "Asian": 0.0, "Mixed": 0.0, "Other": 0.0}}
# Prior standard deviation of each group's update of its published effect (log hazard ratio),
# for the outcomes of PUBLISHED_GROUP_LOG_HR: the group's effect is the published one moved by its
# own observed over expected events in training, with this normal prior
# (models.hazard.HorizonHazardModel, group_prior_sd), instead of a learned indicator penalised by
# GLM_PENALTY on a raw 0/1 column, which swung by +-0.25 between 20,000-patient extracts (Black
# -0.26 and Mixed +0.38 on seed 6 diverse_urban: docs/models.md). The same prior as a correction
# to a validated score's effect (OFFSET_PRIOR_SD).
GROUP_PRIOR_SD = 0.1
# Prior standard deviation of each (standardised) input's correction to a validated score, for the
# GLMs that update QRISK3 or QDiabetes: the penalty is then a fixed prior, alpha = 1 / (sd^2 x the
# events the score expects in training) (models.hazard.HorizonHazardModel), strong in a small
# extract and weak in a large one. GLM_PENALTY, the same at every size, let a 20,000-patient
# extract's update wander from the score (age-spline and treatment terms of +-1 on a few hundred
# events): ranking noise that leaves higher-risk groups under-rated at the same score
# (docs/models.md, "Why higher-risk groups sat above 1 at the same score").
OFFSET_PRIOR_SD = 0.1
# The boosting update of a validated score takes half the steps' size (0.04, against 0.08 without a
# score): with early stopping on a tenth of a small extract's few hundred events, 0.08 overshot
# the score in a few noisy steps; at 0.04 the validation Brier score was lower on all 8 of the
# extracts measured and higher-risk groups sat closer to 1 at the same score (docs/models.md).
BOOSTING_RATE_UPDATE = 0.04
MIN_AGE, MAX_AGE = 25, 84
# Kept with the validation predictions for the fairness audit: its measure of need (conditions,
# blood pressure, HbA1c) and of measurement completeness (which of these were recorded).
AUDIT_MEASURES = ("long_term_conditions", "sbp_mmhg", "dbp_mmhg", "hba1c_mmol_mol", "bmi", "cholesterol_ratio")


@dataclass(frozen=True)
class TrainingConfig:
    horizon_years: int = 5
    candidate_variant: str = "with_equity"
    validation_share: float = 0.3
    seed: int = 42
    # which kinds to fit (both: the candidate is the better of them on validation)
    model_kinds: tuple[str, ...] = MODEL_KINDS
    # also fit the other input variant, for reviewers to compare in MLflow (never a candidate)
    compare_variants: bool = False

    @property
    def variants(self) -> tuple[str, ...]:
        """The input variants fitted: the candidate variant, and the other when compared."""
        if self.compare_variants:
            return VARIANTS
        return (self.candidate_variant,)

    @property
    def not_fitted(self) -> tuple[str, ...]:
        """Comparison variants left out (``compare_variants`` off): the comparison names them."""
        return tuple(v for v in VARIANTS if v not in self.variants)

    def validate(self) -> None:
        if self.candidate_variant not in VARIANTS:
            raise ConfigError(f"candidate variant must be one of {VARIANTS}, not {self.candidate_variant!r}")
        if not self.model_kinds or not set(self.model_kinds) <= set(MODEL_KINDS):
            raise ConfigError(f"model kinds must be some of {MODEL_KINDS}, not {self.model_kinds}")
        if not 0 < self.validation_share < 1:
            raise ConfigError(f"validation share must be between 0 and 1, not {self.validation_share}")
        if self.horizon_years < 1:
            raise ConfigError(f"horizon must be at least 1 year, not {self.horizon_years}")


def feature_names(variant: str) -> tuple[list[str], list[str]]:
    """(numeric-or-flag columns, categorical columns) that a variant's model reads."""
    numeric = [*CLINICAL_NUMERIC, *CLINICAL_FLAGS]
    if variant == "with_equity":
        return [*numeric, *EQUITY_NUMERIC, *EQUITY_FLAGS], list(EQUITY_CATEGORICAL)
    return numeric, []


def model_inputs(features: pl.DataFrame, variant: str) -> pd.DataFrame:
    """The model's input table from mart rows: floats (missing = NaN), category strings, and the
    validated scores (10-year %) that the models update (computed here when the rows lack them)."""
    numeric, categorical = feature_names(variant)
    frame = features.with_columns((pl.col("sex") == "male").alias("sex_male"))
    if not set(COMPARATORS) <= set(frame.columns):
        frame = frame.with_columns(score_features(frame).select(*COMPARATORS))
    # The broad group as recorded, with 'Not stated' and 'Not known' given the reference group,
    # White, as QRISK3 and QDiabetes read them (and as the validated score columns above are
    # computed); ``ethnicity_unknown`` marks those rows, which the with_equity models read as the
    # recorded mix of known groups instead (make_model, models/hazard.py), and the score's
    # ethnicity category and QDiabetes model say which published terms that mix moves.
    known = [pl.when(pl.col(c).is_in(list(BROAD_GROUPS))).then(pl.col(c).cast(pl.String))
             .otherwise(pl.lit(REFERENCE_GROUP)).alias(c) for c in categorical]
    mix = [~pl.col(c).is_in(list(BROAD_GROUPS)).fill_null(False).alias(UNKNOWN_COLUMN) for c in categorical[:1]]
    if categorical:
        # (a frame without the score's category, such as hand-made rows, reads category 1)
        ethrisk = pl.col(ETHRISK) if ETHRISK in frame.columns else pl.lit(1)
        mix += [ethrisk.fill_null(1).cast(pl.Int64).alias(ETHRISK),
                pl.lit(pl.Series(QDIABETES_MODEL, qdiabetes_model_index(
                    frame["hba1c_mmol_mol"].cast(pl.Float64).fill_null(np.nan).to_numpy(),
                    frame["fasting_glucose_mmol_l"].cast(pl.Float64).fill_null(np.nan).to_numpy()).astype(np.int64)))]
    return frame.select(
        *[pl.col(c).cast(pl.Float64) for c in numeric],
        *known,
        *[pl.col(c).cast(pl.Float64) for c in COMPARATORS],
        *mix,
    ).to_pandas()


def make_model(kind: str, variant: str, seed: int, outcome: Outcome, horizon_years: int) -> HorizonHazardModel:
    """A survival model of ``outcome`` over ``horizon_years`` (models/hazard.py).

    Where the outcome has a validated score (QRISK3, QDiabetes), the model is an update of it:
    the score's log hazard is a fixed offset (slope 1: its published effects stay whole), the
    intercept recalibrates it in the large and the other inputs extend it. Ethnicity then acts
    only through the score's published effects, never through an effect learned here: each
    minority group's own events in one extract are too few (the demo's Black patients had about
    20 type 2 diabetes events identifiable at T0), and effects learned from them swung from 0.6
    to 1.5 times the truth between seeds (docs/models.md). Without a validated score
    (hypertension) the published effects in PUBLISHED_GROUP_LOG_HR are the offset (penalised
    towards White's, a Black indicator lost half its size even fitted to the true risks), and
    each group's effect is the published one updated by the group's own observed and expected
    events in training with a fixed prior (GROUP_PRIOR_SD, models.hazard): learned indicators
    fitted jointly with the other inputs under GLM_PENALTY swung by +-0.25 between 20,000-patient
    extracts and were over-shrunk in large ones (a true 0.3 learned as 0.18 from 150,000
    patients) (docs/models.md, "The hypertension model's group effects").

    'Not stated' and 'Not known' (the with_equity variant) read as the recorded mix, not as
    White: the patient's hazard is the mean of their hazards as each recorded (broad group,
    QRISK3 ethnicity category), weighted by the shares among the patients fitted on who have one
    (HorizonHazardModel.unknown_mix_, kept with the model so that scoring reads the same
    weights). For CVD and T2D that moves the score's offset by its own published ethnicity terms
    (models.scores.ethnic_log_hr; the QRISK3 and QDiabetes columns stay the published algorithms,
    which read these patients as White); for hypertension, each group's published effect and
    its update. Read as White, the truth's T2D risk at the same score was 1.1-1.4 times
    the expected for them where minorities are many; declining still costs a minority patient
    part of their group's term and now raises a White patient's (issue 22; measured in
    docs/models.md, "'Not stated' and 'Not known' read as the recorded mix")."""
    numeric, categorical = feature_names(variant)
    published = PUBLISHED_GROUP_LOG_HR.get(outcome.short) if categorical else None
    if outcome.comparator is not None or published:
        # no learned group indicators: the validated score's published effects (CVD, T2D) or the
        # published effects updated by each group's events (hypertension: group_prior_sd)
        categorical = []
    encode = OneHotEncoder(categories=[list(BROAD_GROUPS)] * len(categorical),
                           drop=[REFERENCE_GROUP] * len(categorical), sparse_output=False)
    if kind == "hazard_glm":
        columns = ColumnTransformer([
            ("age_spline", make_pipeline(MedianImputer(strategy="median"),
                                         SplineTransformer(n_knots=5, degree=3)), ["age_years"]),
            ("numeric", make_pipeline(MedianImputer(strategy="median", add_indicator=True),
                                      StandardScaler()), numeric),
            ("categorical", encode, categorical),
        ])
        regressor = PoissonRegressor(alpha=GLM_PENALTY, solver="newton-cholesky", max_iter=300)
    elif kind == "hazard_boosting":
        columns = ColumnTransformer([("numeric", "passthrough", numeric), ("categorical", encode, categorical)])
        regressor = HistGradientBoostingRegressor(
            loss="poisson", learning_rate=BOOSTING_RATE_UPDATE if outcome.comparator else 0.08, max_iter=300,
            max_leaf_nodes=31, min_samples_leaf=100,
            l2_regularization=1.0, early_stopping=True, validation_fraction=0.1,
            n_iter_no_change=15, random_state=seed)
    else:
        raise ConfigError(f"model kind must be one of {MODEL_KINDS}, not {kind!r}")
    prior_sd = OFFSET_PRIOR_SD if kind == "hazard_glm" and outcome.comparator is not None else None
    reads_ethnicity = variant == "with_equity"
    score = COMPARATOR_SCORES.get(outcome.comparator)
    # missing readings filled for the patient's group (models.impute), in the variant that reads
    # ethnicity and deprivation; the clinical_only comparison reads neither, so it keeps the
    # pooled fills (the validated score's centring value, the median, boosting's own)
    imputer = GroupImputer("ethnicity_group", UNKNOWN_COLUMN, outcome.comparator) if reads_ethnicity else None
    return HorizonHazardModel(Pipeline([("inputs", columns), ("regressor", regressor)]),
                              horizon_years, outcome.comparator,
                              "ethnicity_group" if reads_ethnicity else None, dict(published) if published else None,
                              unknown_column=UNKNOWN_COLUMN if reads_ethnicity else None,
                              ethnic_terms=ethnic_log_hr(score) if reads_ethnicity and score else None,
                              group_is_input=bool(categorical), prior_sd=prior_sd, imputer=imputer,
                              group_prior_sd=GROUP_PRIOR_SD if published else None,
                              # the trees read a group's fills as the group (HorizonHazardModel._inputs);
                              # without a validated score (hypertension) no offset carries the fills, and
                              # the trees reading them as missing under-rated Black patients in the
                              # measurement-access gap (docs/models.md, "A group effect learned from fills")
                              reads_fills=kind == "hazard_glm" or outcome.comparator is None)


def predict_risk(model, x: pd.DataFrame) -> np.ndarray:
    """The model's risk over its horizon for each row, the same for a row whatever else is in
    the batch (HorizonHazardModel.hazard does the GLM's last step row by row: BLAS kernels add up
    a row in an order that depends on where it falls in the batch)."""
    return model.predict_risk(x)


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


def _filled_once(imputer, filled: tuple | None, x_train: pd.DataFrame, x_valid: pd.DataFrame) -> tuple:
    """The variant's missing readings filled once for all its kinds of model: (``imputer`` fitted
    on the training rows, the training rows filled, the validation rows filled). Each kind's
    model would fit the same GroupImputer on the same rows (its settings are the variant's, not
    the kind's: make_model) and get the same coefficients and fills; at 1M patients fitting and
    filling again for the second kind was about 2.5 s of training's CPU. ``filled``: the one
    made for an earlier kind, kept when its imputer has these settings (so the first kind's fit
    time, logged with its model, includes the fill, and the later kinds' do not)."""
    if filled is not None and filled[0].get_params() == imputer.get_params():
        return filled
    imputer = imputer.fit(x_train)
    return imputer, imputer.transform(x_train), imputer.transform(x_valid)


def validate_followup(event: np.ndarray, years: np.ndarray, risk: np.ndarray, horizon_years: int) -> Validation:
    """Validation figures that respect follow-up: discrimination, Brier score and calibration
    slope on patients whose status at the horizon is known (the outcome, or followed to the end);
    O/E as recorded outcomes over those expected while each patient was followed
    (models.hazard.risk_while_followed, as the fairness audit counts them, so that a group's O/E
    in training and in the audit mean the same: not the cumulative hazard over follow-up, which
    counts a patient predicted near 1 who stayed well as several expected outcomes)."""
    known = event | (years >= horizon_years - 1 / 365.25)
    figures = validate(event[known].astype(int), risk[known])
    oe, low, high = observed_expected(event.astype(int), risk_while_followed(risk, years, horizon_years, ~known))
    return replace(figures, observed_expected=oe, observed_expected_ci_low=low, observed_expected_ci_high=high)


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
    y_all = population[outcome.label].to_numpy().astype(bool)
    years_all = population[outcome.followup].to_numpy().astype(float)
    in_validation = practice_split(population["practice_pseudo_id"].to_numpy(), config.validation_share, config.seed)
    y_train, y_valid = y_all[~in_validation], y_all[in_validation]
    years_train, years_valid = years_all[~in_validation], years_all[in_validation]
    for name, y in (("training", y_train), ("validation", y_valid)):
        if y.sum() == 0 or y.sum() == y.size:
            raise TooLittleData(f"{outcome.description}: the {name} practices have no patients with and "
                              "without the outcome, so no model can be trained or judged; use a larger extract")
    # The audit groups validation patients by the ethnicity known at the extract date (ethnicity
    # does not change; its recording does): see docs/models.md. The group recorded at the index
    # date, which the model may read, is kept beside it.
    validation_frame = population.filter(pl.Series(in_validation)).select(
        "patient_id", "practice_pseudo_id", "pcn_code", "sex", "age_years",
        pl.col("ethnicity_category_at_extract").alias("ethnicity_category"),
        pl.col("ethnicity_group_at_extract").alias("ethnicity_group"),
        "ethnicity_group_at_index", "ethnicity_has_conflicting_codes", "imd_quintile", *AUDIT_MEASURES,
        pl.col(outcome.label).alias("recorded_outcome"), pl.col(outcome.followup).alias("followup_years"),
        "followup_end_reason")
    inputs = {variant: model_inputs(population, variant) for variant in config.variants}
    comparator = None
    if outcome.comparator:
        ten_year = inputs[config.candidate_variant][outcome.comparator].to_numpy()[in_validation] / 100
        horizon_risk = ten_to_horizon(ten_year, config.horizon_years)
        validation_frame = validation_frame.with_columns(pl.Series("comparator_risk", horizon_risk))
        scored = ~np.isnan(horizon_risk)
        comparator = validate_followup(y_valid[scored], years_valid[scored], horizon_risk[scored],
                                       config.horizon_years)
    models = []
    for variant in config.variants:
        x_train, x_valid = inputs[variant][~in_validation], inputs[variant][in_validation]
        filled = None  # (imputer, training rows, validation rows): see _filled_once
        for kind in config.model_kinds:
            if progress:
                # a line on the terminal and the Prefect log: the count suppressed, as every count printed
                progress(f"{outcome.short}: fitting {kind} ({variant}) on {show(y_train.size)} patients")
            t = time.perf_counter()
            estimator = make_model(kind, variant, config.seed, outcome, config.horizon_years)
            x_fit, x_predict = x_train, x_valid
            if estimator.imputer is not None:
                filled = _filled_once(estimator.imputer, filled, x_train, x_valid)
                estimator.imputer, x_fit, x_predict = filled
            given_filled = estimator.imputer is not None
            estimator.fit(x_fit, y_train, years_train, filled=given_filled)
            seconds = time.perf_counter() - t
            predicted = estimator.predict_risk(x_predict, filled=given_filled)
            models.append(TrainedModel(outcome, kind, variant, estimator, list(x_train.columns),
                                       validate_followup(y_valid, years_valid, predicted, config.horizon_years),
                                       predicted, seconds, int(y_train.size), int(y_train.sum())))
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


# Outcomes trained at once, each in its own thread. One outcome's fits keep about 1.25 of 2 cores
# busy at 1M patients (py-spy and the process's CPU: the boosting's trees use both, the inputs'
# copies, imputers and pandas work one): two outcomes at once fill the second core. Each outcome's
# models are the same whichever thread fits them (their own seeded generators; BLAS is not
# changed), and the results are kept in OUTCOMES' order.
TRAINING_THREADS = min(2, os.cpu_count() or 1)


def openmp_threads_per_outcome(threads: int) -> int:
    """The OpenMP threads one outcome's boosting may use while ``threads`` outcomes train at once:
    the cores shared out (1 each on 2 cores), rather than every fit starting a thread per core.

    Two boosting fits at once, each with a thread per core, put 4 OpenMP threads on 2 cores:
    every parallel loop (several per tree node) ends at a barrier that waits for a thread the
    other fit may hold off its core, then wakes the sleepers (OMP_WAIT_POLICY=PASSIVE,
    models/__init__.py). Measured (docs/benchmarks.md, "Training's two outcomes at once, each
    with its share of the cores"): the 1M run's training took 46.2 / 36.6 s and 73.8 / 60.4 s
    of CPU before, 37.9 / 33.1 s and 62.1 / 55.3 s after, the lists byte-identical.

    The trees are the same: the boosting's loops over features and rows do each feature's and
    row's arithmetic in one thread whatever their number; the one sum whose order follows the
    thread count (the root's gradients, summed in float64 from float32 terms) came out the same
    in every fit measured, and tests/integration/test_training.py fits the same outcomes one by
    one, with every core, and compares the predictions bit for bit."""
    return max(1, (os.cpu_count() or 1) // max(1, threads))


def _train_outcome_sharing_cores(frame: pl.DataFrame, outcome: Outcome, config: TrainingConfig, progress,
                                 openmp_threads: int) -> OutcomeResult:
    # threadpoolctl sets OpenMP's thread count for this thread only (each thread keeps its own)
    with threadpool_limits(limits=openmp_threads, user_api="openmp"):
        return train_outcome(frame, outcome, config, progress)


def train_all(data: TrainingData, config: TrainingConfig, icb_code: str | None = None,
              outcomes=OUTCOMES, progress=None, threads: int | None = None) -> TrainingResult:
    config.validate()
    icb_code, frame = single_icb(data.frame, icb_code)
    result = TrainingResult(data, config, icb_code)
    threads = max(1, min(TRAINING_THREADS if threads is None else threads, len(outcomes)))
    if threads == 1:
        for outcome in outcomes:
            result.outcomes.append(train_outcome(frame, outcome, config, progress))
        return result
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="train")
    try:
        openmp = openmp_threads_per_outcome(threads)
        futures = [pool.submit(_train_outcome_sharing_cores, frame, outcome, config, progress, openmp)
                   for outcome in outcomes]
        result.outcomes.extend(future.result() for future in futures)  # the first outcome's error first
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return result
