"""Risk over the horizon from censored follow-up: a constant-hazard (Poisson) survival model,
optionally fitted as an update of a validated score.

Each patient contributes their follow-up time t (to the outcome, death, leaving the practice or
the horizon's end, sql/labels/outcomes.sql) and whether the outcome was recorded in it (d).
With a hazard lambda(x) constant over the horizon, the likelihood of (d, t) is the Poisson
likelihood of d with mean lambda(x) t: censoring at death or deregistration is respected exactly,
and nobody censored early counts as event-free. The risk over the horizon h is then
1 - exp(-h lambda(x)). This is the piecewise-exponential survival model with one piece
(Holford 1980; Laird & Olivier 1981), fitted with scikit-learn's Poisson losses.

Model updating (Steyerberg, Clinical Prediction Models, ch. 20; Riley et al. 2021): where a
validated score predicts the outcome (QRISK3 for CVD, QDiabetes for type 2 diabetes), its
10-year risk r gives a log hazard o = log(-log(1 - r) / 10), used as an offset:
log lambda(x) = o + f(x). f recalibrates the score in the large (its intercept) and extends it
with the extract's inputs; f penalised towards 0 means "the validated score unless the data
says otherwise". (The score's log hazard is also handed to the regressor as the column
``comparator_log_hazard``, so a pipeline may let its slope move; models.train does not, see
docs/models.md.)

scikit-learn has no offset argument, but the Poisson likelihood of d with mean exp(f(x)) e,
e = t exp(o), equals that of the rate d / e with sample weight e; so the regressor is fitted to
d / e with weight e, and predicts exp(f(x)).

``prior_sd``: the GLM's penalty as a fixed prior N(0, prior_sd^2) on each standardised
coefficient of the correction, whatever the data's size: alpha = 1 / (prior_sd^2 x the sum of the
weights), the events the offset expects (scikit-learn's alpha is per unit of mean deviance, so a
fixed alpha restrains a small extract's update hardly at all: docs/models.md, "Why higher-risk
groups sat above 1 at the same score").

Without a validated score (hypertension), a published effect per group can be the offset
instead (``group_log_hr``: group -> log hazard ratio against the reference, read from the column
``group_column``): f is then penalised towards the published effect, not towards "no difference
from White" (docs/models.md, "Why the hypertension model under-rated Black patients").
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.linear_model import PoissonRegressor
from sklearn.pipeline import Pipeline

# Comparator log hazards are clipped to this range: 10-year risks from 0.01% to 99%.
_MIN_LOG_HAZARD, _MAX_LOG_HAZARD = np.log(-np.log1p(-1e-4) / 10), np.log(-np.log1p(-0.99) / 10)
OFFSET_INPUT = "comparator_log_hazard"


def log_hazard_from_ten_year_pct(risk_pct: np.ndarray) -> np.ndarray:
    """log of the constant yearly hazard implied by a 10-year risk in %: log(-log(1 - r) / 10)."""
    risk = np.clip(np.asarray(risk_pct, dtype=float) / 100, 1e-4, 0.99)
    return np.clip(np.log(-np.log1p(-risk) / 10), _MIN_LOG_HAZARD, _MAX_LOG_HAZARD)


class HorizonHazardModel(BaseEstimator):
    """``regressor`` (a Poisson GLM or Poisson gradient boosting, as a scikit-learn pipeline)
    models the hazard (times the comparator's hazard when ``comparator`` names a column of 10-year
    risks in %). ``predict_risk`` gives the risk over ``horizon_years``."""

    def __init__(self, regressor: Pipeline, horizon_years: int, comparator: str | None = None,
                 group_column: str | None = None, group_log_hr: dict[str, float] | None = None,
                 prior_sd: float | None = None):
        self.regressor = regressor
        self.horizon_years = horizon_years
        self.comparator = comparator
        self.group_column = group_column
        self.group_log_hr = group_log_hr
        self.prior_sd = prior_sd

    def _offset(self, x: pd.DataFrame) -> np.ndarray:
        offset = np.zeros(len(x))
        if self.comparator is not None:
            o = log_hazard_from_ten_year_pct(x[self.comparator].to_numpy(dtype=float))
            # a patient the score could not be computed for gets the training patients' median
            offset = np.where(np.isnan(o), self.offset_fill_, o)
        if getattr(self, "group_log_hr", None):  # models saved before the parameter existed have none
            effects = self.group_log_hr
            offset = offset + np.array([effects.get(g, 0.0) for g in x[self.group_column].to_numpy()], dtype=float)
        return offset

    def _inputs(self, x: pd.DataFrame, offset: np.ndarray) -> pd.DataFrame:
        return x.assign(**{OFFSET_INPUT: offset})

    def fit(self, x: pd.DataFrame, event: np.ndarray, years: np.ndarray):
        event = np.asarray(event, dtype=float)
        years = np.clip(np.asarray(years, dtype=float), 1 / 365.25, None)  # a same-day event counts a day
        if self.comparator is not None:
            own = log_hazard_from_ten_year_pct(x[self.comparator].to_numpy(dtype=float))
            self.offset_fill_ = float(np.nanmedian(own)) if np.isfinite(own).any() else float(np.log(0.01))
        offset = self._offset(x)
        exposure = years * np.exp(offset)
        last = self.regressor.steps[-1][0]
        if getattr(self, "prior_sd", None) is not None and isinstance(self.regressor[-1], PoissonRegressor):
            # a fixed prior on the correction, whatever the extract's size: scikit-learn's alpha is
            # per unit of mean deviance, so N(0, prior_sd^2) on each standardised coefficient is
            # alpha = 1 / (prior_sd^2 x the sum of the weights), the events the offset expects
            self.regressor.set_params(**{f"{last}__alpha": 1.0 / (self.prior_sd ** 2 * float(exposure.sum()))})
        self.regressor.fit(self._inputs(x, offset), event / exposure, **{f"{last}__sample_weight": exposure})
        return self

    def hazard(self, x: pd.DataFrame) -> np.ndarray:
        """Yearly hazard for each row, the same for a row whatever else is in the batch."""
        offset = self._offset(x)
        inputs = self._inputs(x, offset)
        final = self.regressor[-1]
        if isinstance(final, PoissonRegressor):
            # row by row (einsum's own loop, no BLAS), as models.train.predict_risk explains
            design = np.ascontiguousarray(self.regressor[:-1].transform(inputs), dtype=np.float64)
            multiplier = np.exp(np.einsum("ij,j->i", design, final.coef_) + final.intercept_)
        else:
            multiplier = self.regressor.predict(inputs)
        return np.exp(offset) * multiplier

    def predict_risk(self, x: pd.DataFrame) -> np.ndarray:
        return -np.expm1(-self.horizon_years * self.hazard(x))

    def predict_proba(self, x: pd.DataFrame) -> np.ndarray:
        risk = self.predict_risk(x)
        return np.column_stack([1 - risk, risk])


def expected_events(risk: np.ndarray, years: np.ndarray, horizon_years: float) -> np.ndarray:
    """Each patient's expected number of events over their own follow-up, from a risk over the
    horizon under a constant hazard: -log(1 - risk) * years / horizon. Summed over a group and
    set against its observed events, this is the O/E ratio for censored follow-up."""
    risk = np.clip(np.asarray(risk, dtype=float), 0, 1 - 1e-12)
    return -np.log1p(-risk) * np.asarray(years, dtype=float) / horizon_years


def kaplan_meier_risk(event: np.ndarray, years: np.ndarray, horizon_years: float) -> tuple[float, float]:
    """Observed risk by the horizon, 1 - S(h), by Kaplan-Meier (1958) with censoring at death
    or leaving, and its standard error by Greenwood's formula."""
    event = np.asarray(event, dtype=bool)
    years = np.asarray(years, dtype=float)
    if years.size == 0:
        return float("nan"), float("nan")
    times, deaths = np.unique(years[event & (years <= horizon_years)], return_counts=True)
    at_risk = years.size - np.searchsorted(np.sort(years), times, side="left")
    survival = float(np.prod(1 - deaths / at_risk))
    with np.errstate(divide="ignore", invalid="ignore"):
        greenwood = float(np.sum(np.where(at_risk > deaths, deaths / (at_risk * (at_risk - deaths)), 0.0)))
    return 1 - survival, survival * np.sqrt(greenwood)
