"""Missing readings filled with the value expected for the patient's own group, for the trained models.

A reading that was never taken (BMI, blood pressure, its variability, the cholesterol ratio) is
missing for reasons the extract can see: how often a practice measures depends on age and on the
conditions already diagnosed (hypertension, diabetes, CVD), and, where access to care differs, on
who the patient is. Filling it with one pooled value (QRISK3's and QDiabetes' centring value,
or the training median) gives every patient without the reading the average patient's, so a
group whose readings run higher and are more often missing is scored as if it were average:
under-rated at the same score (docs/models.md, "Missing readings filled by group").

``GroupImputer`` fills each missing reading with its expected value given what is known of the
patient at T0: age (and its square), sex, the diagnoses and treatments that drive how often it is
measured, deprivation (Townsend score) and the broad ethnic group, fitted by least squares on the
training patients who have the reading. The group effects carry a ridge penalty of
``SHRINK_PATIENTS`` pseudo-patients, so a group with few recorded values is pulled towards the
pooled value for its age, sex and conditions (a group of n recorded patients keeps about
n / (n + SHRINK_PATIENTS) of its own difference). A patient whose ethnicity is 'Not stated' or
'Not known' is read as the recorded mix, as models.hazard.HorizonHazardModel reads them: with a
linear fill that is the mix-weighted mean of the groups' fills, i.e. the group indicators set to
the groups' shares among the patients fitted on.

QRISK3 and QDiabetes were derived this way: their missing continuous values (BMI, systolic blood
pressure and its variability, cholesterol/HDL ratio) were filled by multiple imputation with
chained equations whose imputation model held the scores' predictors, ethnicity and deprivation
among them, not with a pooled value (Hippisley-Cox J, Coupland C, Brindle P. Development and
validation of QRISK3 risk prediction algorithms. BMJ 2017;357:j2099; Hippisley-Cox J, Coupland
C. Development and validation of QDiabetes-2018 risk prediction algorithm. BMJ 2017;359:j5019).
The centring default belongs to the published calculators' handling of a blank input; the
validated score columns keep it (they are the published algorithms), while the trained updates
read the score recomputed on the filled inputs (``transform`` with ``comparator``).

HbA1c and fasting glucose are not filled: QDiabetes scores a patient without them with its model
A (or B), fitted for that case with ethnicity terms that carry the groups' glycaemic differences;
filling them would move the patient to model C and count the difference twice.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.impute import SimpleImputer

# The readings filled (model-input column names) and what they are read on.
READINGS = ("bmi", "sbp_mmhg", "dbp_mmhg", "sbp_sd_5y", "cholesterol_ratio")
# Diagnoses and treatments at T0 that drive how often readings are taken (or move them)
DRIVERS = ("hypertension", "treated_hypertension", "on_antihypertensives", "type1_diabetes",
           "type2_diabetes", "cvd", "ckd_3_5", "on_statins")
DEPRIVATION = "townsend_score"
GROUPS = ("Asian", "Black", "Mixed", "Other")  # against White
# Pseudo-patients of the pooled value each group's effect is shrunk with (ridge on its indicator)
SHRINK_PATIENTS = 50.0
# For each reading filled, a column of the rows ``fill`` filled: the gradient boosting reads those
# readings as missing (models.hazard.HorizonHazardModel, ``reads_fills``), because its trees read a
# group's fill as a value only that group has (docs/models.md, "A group effect learned from fills")
FILLED = "{}__filled"


class GroupImputer(BaseEstimator):
    """Fills ``READINGS`` present in a model-input frame (models.train.model_inputs).
    ``group_column``: the broad group read (the clinical_only variant reads no group and has no
    GroupImputer: models.train.make_model); ``unknown_column``: rows read as the recorded mix;
    ``comparator``: a validated-score column (10-year %) recomputed on the filled inputs for the
    rows filled."""

    def __init__(self, group_column: str, unknown_column: str | None = None, comparator: str | None = None):
        self.group_column = group_column
        self.unknown_column = unknown_column
        self.comparator = comparator

    def _design(self, x: pd.DataFrame, rows: np.ndarray | None = None) -> np.ndarray:
        """The fill's inputs for ``rows`` of ``x`` (all rows: None), one column at a time (taking
        the rows of the whole frame first cost more than the fill at 1M patients)."""
        def column(name: str, dtype=float) -> np.ndarray:
            values = x[name].to_numpy(dtype=dtype)
            return values if rows is None else values[rows]

        n = len(x) if rows is None else len(rows)
        age = (column("age_years") - 50) / 10
        male = column("sex_male")
        columns = [np.ones(n), age, age ** 2, male, male * age]
        columns += [np.nan_to_num(column(c)) if c in x.columns else np.zeros(n) for c in DRIVERS]
        town = column(DEPRIVATION) if DEPRIVATION in x.columns else np.full(n, np.nan)
        columns += [np.nan_to_num(town), np.isnan(town).astype(float)]
        groups = column(self.group_column, object)
        unknown = self._unknown(x) if rows is None else self._unknown(x)[rows]
        for g in GROUPS:
            # a row read as the recorded mix takes each group's share (set by ``fit``)
            columns.append(np.where(unknown, self.group_shares_.get(g, 0.0), (groups == g).astype(float)))
        return np.column_stack(columns)

    def _unknown(self, x: pd.DataFrame) -> np.ndarray:
        if self.unknown_column is None or self.unknown_column not in x.columns:
            return np.zeros(len(x), dtype=bool)
        return x[self.unknown_column].to_numpy(dtype=bool)

    def fit(self, x: pd.DataFrame):
        readings = [c for c in READINGS if c in x.columns]
        known = ~self._unknown(x)
        groups = x.loc[known, self.group_column].astype(str)
        self.group_shares_ = {g: float((groups == g).mean()) if len(groups) else 0.0 for g in GROUPS}
        design = self._design(x)
        penalty = np.full(design.shape[1], 1e-6)
        penalty[-len(GROUPS):] = SHRINK_PATIENTS
        self.coef_, self.range_ = {}, {}
        for name in readings:
            values = x[name].to_numpy(dtype=float)
            # fitted on the patients who have the reading and a recorded group
            rows = ~np.isnan(values) & known
            if rows.sum() < design.shape[1] * 10:
                continue  # too few recorded values to say anything: left missing (the models' own fill)
            a, b = design[rows], values[rows]
            self.coef_[name] = np.linalg.solve(a.T @ a + np.diag(penalty), a.T @ b)
            self.range_[name] = (float(b.min()), float(b.max()))
        return self

    def fill(self, x: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        """``x`` with its missing readings filled (and, per reading filled, a ``FILLED`` column of
        the rows filled), and which rows had any filled."""
        filled = np.zeros(len(x), dtype=bool)
        todo = {name: x[name].isna().to_numpy() for name in self.coef_ if name in x.columns}
        todo = {name: missing for name, missing in todo.items() if missing.any()}
        if not todo:
            return x, filled
        rows = np.flatnonzero(np.logical_or.reduce(list(todo.values())))
        design = self._design(x, rows)
        # a copy written in place: replacing whole columns split the frame into blocks, and the
        # GLM's pipeline then spent a second at 1M patients putting them back together
        out = x.copy()
        for name, missing in todo.items():
            low, high = self.range_[name]
            where = np.flatnonzero(missing)
            fill = np.clip(design[np.searchsorted(rows, where)] @ self.coef_[name], low, high)
            out.iloc[where, out.columns.get_loc(name)] = fill
            filled |= missing
        # added to the copy as ``assign`` adds them, without the copy of every column it makes first
        for name, missing in todo.items():
            out[FILLED.format(name)] = missing
        return out, filled

    def transform(self, x: pd.DataFrame) -> pd.DataFrame:
        out, filled = self.fill(x)
        if self.comparator is not None and filled.any() and self.comparator in out.columns:
            from models.score_patients import score_inputs_frame

            score = score_inputs_frame(out, self.comparator, np.flatnonzero(filled))
            where = np.flatnonzero(filled)
            before = out[self.comparator].to_numpy(dtype=float)[where]
            # only where the published score applies (null stays null: e.g. not in its age range)
            out.iloc[where, out.columns.get_loc(self.comparator)] = np.where(np.isnan(before), np.nan, score)
        return out


class MedianImputer(SimpleImputer):
    """``SimpleImputer(strategy="median")`` (the GLMs' pooled fill, models.train.make_model) with
    its medians found by a partial sort of each column's recorded values instead of a full sort
    of every column as a masked array (``numpy.ma.median``): at 1M patients that sort was 4.7 s of
    ``phm train``, for columns most of which arrive complete or already filled (GroupImputer).

    The statistics are the same bit for bit: the middle value (odd count) or the two middle
    values (even count) are the same order statistics however the column is sorted (only 0.0 and
    -0.0 are equal values with different bits: a column holding -0.0 is sorted as SimpleImputer
    sorts it), and they are combined as ``numpy.ma.median`` combines them, (low + high) / 2 (low +
    low for an odd count);
    an all-missing column gets NaN (0 with ``keep_empty_features``), as SimpleImputer gives it.
    Every other strategy, a non-NaN missing marker or a non-float64 column goes to
    SimpleImputer's own fit; ``transform`` is SimpleImputer's (tests/spec/test_impute.py holds
    the statistics to SimpleImputer's)."""

    def _dense_fit(self, X, strategy, missing_values, fill_value):
        if (strategy != "median" or not isinstance(missing_values, float) or not np.isnan(missing_values)
                or X.dtype != np.float64):
            return super()._dense_fit(X, strategy, missing_values, fill_value)
        missing = np.isnan(X)
        self._fit_indicator(missing)
        statistics = np.empty(X.shape[1])
        for j in range(X.shape[1]):
            values = X[:, j]
            if missing[:, j].any():
                values = values[~missing[:, j]]
            if values.size == 0:
                statistics[j] = 0.0 if self.keep_empty_features else np.nan
                continue
            zero = values == 0
            if zero.any() and np.signbit(values[zero]).any():
                # 0.0 and -0.0 are equal but not the same bits: which one lands in the middle
                # depends on how the column is sorted, so the column is sorted as SimpleImputer
                # sorts it (one column of the same masked-array median)
                column = np.ma.masked_array(X[:, j:j + 1], mask=missing[:, j:j + 1])
                statistics[j] = np.ma.getdata(np.ma.median(column, axis=0))[0]
                continue
            high = values.size // 2
            low = high if values.size % 2 else high - 1
            ordered = np.partition(values, (low, high))
            statistics[j] = (ordered[low] + ordered[high]) / 2.0
        return statistics
