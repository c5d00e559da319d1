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

``group_prior_sd``: each group's effect is then not a learned indicator of the regressor but the
published effect updated by the group's own observed and expected events, with a normal prior
N(published, group_prior_sd^2) on its log hazard ratio: after the regressor is fitted, each
group's update d maximises O d - E exp(d) - d^2 / (2 sd^2) (O the group's recorded outcomes in
training, E those the model expects), so a group with few events keeps nearly the published
effect and one with many moves as far as its O/E says (the conjugate normal-Poisson update of a
log rate ratio; Greenland S. Bayesian perspectives for epidemiological research: I.
Foundations and basic methods. Int J Epidemiol 2006;35:765-75). A penalised indicator of a raw
0/1 column, as before, swung by +-0.25 between 20,000-patient extracts (docs/models.md).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import PoissonRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from models.impute import FILLED, READINGS

# Comparator log hazards are clipped to this range: 10-year risks from 0.01% to 99%.
_MIN_LOG_HAZARD, _MAX_LOG_HAZARD = np.log(-np.log1p(-1e-4) / 10), np.log(-np.log1p(-0.99) / 10)
OFFSET_INPUT = "comparator_log_hazard"
# Columns models.train.model_inputs adds for reading an unknown ethnicity as the recorded mix:
# the QRISK3 ethnicity category (1-9) and which QDiabetes model scores the row (0-2, A-C).
ETHRISK, QDIABETES_MODEL = "qrisk3_ethrisk", "qdiabetes_model_index"


def log_hazard_from_ten_year_pct(risk_pct: np.ndarray) -> np.ndarray:
    """log of the constant yearly hazard implied by a 10-year risk in %: log(-log(1 - r) / 10)."""
    risk = np.clip(np.asarray(risk_pct, dtype=float) / 100, 1e-4, 0.99)
    return np.clip(np.log(-np.log1p(-risk) / 10), _MIN_LOG_HAZARD, _MAX_LOG_HAZARD)


class HorizonHazardModel(BaseEstimator):
    """``regressor`` (a Poisson GLM or Poisson gradient boosting, as a scikit-learn pipeline)
    models the hazard (times the comparator's hazard when ``comparator`` names a column of 10-year
    risks in %). ``predict_risk`` gives the risk over ``horizon_years``.

    With ``unknown_column`` (models.train: ethnicity 'Not stated' or 'Not known'), a row where
    it is true is read as the recorded mix: its hazard is the mean of its hazards as each
    (``group_column``, ``ETHRISK`` category) seen among the fitted rows where it is false,
    weighted by their shares there (``unknown_mix_``, kept with the model, so a row's risk does
    not depend on the batch). ``ethnic_terms`` are the comparator's published ethnicity terms
    ([male, ``QDIABETES_MODEL``, ethrisk], models.scores.ethnic_log_hr), by which its log hazard
    moves with the category; ``group_is_input`` says the regressor reads ``group_column`` (it is
    then predicted once per group). Without ``unknown_column`` such a row is read as it comes
    (models.train gives it the reference group), as models saved before it were."""

    def __init__(self, regressor: Pipeline, horizon_years: int, comparator: str | None = None,
                 group_column: str | None = None, group_log_hr: dict[str, float] | None = None,
                 unknown_column: str | None = None, ethnic_terms: np.ndarray | None = None,
                 group_is_input: bool = False, prior_sd: float | None = None, imputer=None,
                 group_prior_sd: float | None = None, reads_fills: bool = True):
        self.regressor = regressor
        self.horizon_years = horizon_years
        self.comparator = comparator
        self.group_column = group_column
        self.group_log_hr = group_log_hr
        self.unknown_column = unknown_column
        self.ethnic_terms = ethnic_terms
        self.group_is_input = group_is_input
        self.prior_sd = prior_sd
        self.imputer = imputer
        self.group_prior_sd = group_prior_sd
        self.reads_fills = reads_fills

    def _filled(self, x: pd.DataFrame) -> pd.DataFrame:
        """``x`` with missing readings filled for the patient's group and the comparator recomputed
        on them (``imputer``, models.impute; fitted with the model). Models saved before it have none."""
        imputer = getattr(self, "imputer", None)
        return x if imputer is None else imputer.transform(x)

    def _group_effect(self, groups: np.ndarray) -> np.ndarray:
        effects = getattr(self, "group_log_hr", None) or {}  # models saved before it existed have none
        update = getattr(self, "group_update_", None) or {}  # nor had those before group_prior_sd
        # each distinct group's effect once, then given to its rows: the same sum for every row
        # as adding them row by row, which at 1M patients was a second of Python per model scored
        codes, distinct = pd.factorize(np.asarray(groups, dtype=object), use_na_sentinel=False)
        per_group = np.array([effects.get(g, 0.0) + update.get(g, 0.0) for g in distinct], dtype=float)
        return per_group[codes] if len(codes) else np.zeros(0)

    def _update_groups(self, x: pd.DataFrame, offset: np.ndarray, exposure: np.ndarray, event: np.ndarray) -> None:
        """Each group of ``group_log_hr``: its published effect updated by its observed and expected
        events among the rows fitted with a recorded group, prior N(0, group_prior_sd^2) on the update."""
        expected = exposure * self._multiplier(x, offset)
        known = ~self._unknown(x)
        groups = x[self.group_column].to_numpy()
        precision = 1.0 / self.group_prior_sd ** 2
        self.group_update_ = {}
        # What each update was read from, kept so that a group's training O/E against its published
        # effect can be examined after the fit (benchmarks/bench_htn_label_mix.py); every recorded
        # group, the reference too. Aggregates of hundreds of events: never patient-level.
        self.group_observed_expected_ = {
            str(group): (float(event[known & (groups == group)].sum()), float(expected[known & (groups == group)].sum()))
            for group in np.unique(groups[known])}
        for group in self.group_log_hr:
            observed, due = self.group_observed_expected_.get(group, (0.0, 0.0))  # (0, 0): no one in it
            d = 0.0
            for _ in range(50):  # Newton's method on a concave function of one variable
                step = (observed - due * np.exp(d) - precision * d) / (due * np.exp(d) + precision)
                d += step
                if abs(step) < 1e-10:
                    break
            self.group_update_[group] = float(d)

    def _offset(self, x: pd.DataFrame) -> np.ndarray:
        offset = np.zeros(len(x))
        if self.comparator is not None:
            o = log_hazard_from_ten_year_pct(x[self.comparator].to_numpy(dtype=float))
            # a patient the score could not be computed for gets the training patients' median
            offset = np.where(np.isnan(o), self.offset_fill_, o)
        if getattr(self, "group_log_hr", None):
            offset = offset + self._group_effect(x[self.group_column].to_numpy())
        return offset

    def _inputs(self, x: pd.DataFrame, offset: np.ndarray) -> pd.DataFrame:
        """The regressor's inputs. Without ``reads_fills`` (the gradient boosting), the readings
        ``imputer`` filled are given back as missing, which the trees read as one pooled branch:
        a fill is the patient's group's expected value, so a tree can split on it as on the group
        itself, and learn from a few dozen events an ethnic effect that the validated score's
        published terms do not carry (the 12,000-patient test extract's CVD model rated young
        Asian men with no readings at 12 times QRISK3; docs/models.md, "A group effect learned
        from fills"). The offset keeps the score recomputed on the fills (models.train gives the
        boosting ``reads_fills`` only where there is no such offset: hypertension)."""
        # one copy of the frame with both (each assign copies every column: at 1M patients the
        # boosting's inputs were copied twice over, a second each)
        return x.assign(**self._replaced(x, offset))

    def _replaced(self, x: pd.DataFrame, offset: np.ndarray) -> dict[str, np.ndarray]:
        """The columns ``_inputs`` gives the regressor in place of (or beside) ``x``'s: the offset,
        and without ``reads_fills`` each filled reading given back as missing."""
        if getattr(self, "reads_fills", True):
            return {OFFSET_INPUT: offset}
        return {OFFSET_INPUT: offset,
                **{name: x[name].mask(x[FILLED.format(name)].to_numpy(dtype=bool)).to_numpy()
                   for name in READINGS if FILLED.format(name) in x.columns}}

    def _unknown(self, x: pd.DataFrame) -> np.ndarray:
        if getattr(self, "unknown_column", None) is None:
            return np.zeros(len(x), dtype=bool)
        return x[self.unknown_column].to_numpy(dtype=bool)

    def _mix_terms(self, x: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
        """[row, mix entry] for ``rows`` of ``x`` (a boolean mask): what each row's log hazard
        gains when read as each (group, category) of the mix: that group's published effect and
        the comparator's term for that category, less the row's own. The few columns it reads
        are taken for the rows, not the rows' whole frame."""
        def column(name: str, dtype=None) -> np.ndarray:
            return x[name].to_numpy(dtype=dtype)[rows]

        groups = np.array([g for g, _, _ in self.unknown_mix_], dtype=object)
        shift = self._group_effect(groups)[None, :] - self._group_effect(column(self.group_column))[:, None]
        if self.comparator is not None and self.ethnic_terms is not None:
            terms = np.asarray(self.ethnic_terms)
            male = (column("sex_male", float) > 0.5).astype(np.int64)
            model = column(QDIABETES_MODEL, np.int64)
            own = column(ETHRISK, np.int64)
            categories = np.array([c for _, c, _ in self.unknown_mix_], dtype=np.int64)
            shift = shift + terms[male[:, None], model[:, None], categories[None, :]] - terms[male, model, own][:, None]
        return shift

    def fit(self, x: pd.DataFrame, event: np.ndarray, years: np.ndarray, filled: bool = False):
        """``filled``: ``x`` is already ``imputer.transform`` of the rows, by an ``imputer`` fitted
        on them (models.train fills a variant's rows once for all its kinds of model)."""
        event = np.asarray(event, dtype=float)
        self.group_update_ = {}
        self.group_observed_expected_ = {}
        if getattr(self, "imputer", None) is not None and not filled:
            x = self.imputer.fit(x).transform(x)
        years = np.clip(np.asarray(years, dtype=float), 1 / 365.25, None)  # a same-day event counts a day
        if self.comparator is not None:
            own = log_hazard_from_ten_year_pct(x[self.comparator].to_numpy(dtype=float))
            self.offset_fill_ = float(np.nanmedian(own)) if np.isfinite(own).any() else float(np.log(0.01))
        offset = self._offset(x)
        unknown = self._unknown(x)
        if self.unknown_column is not None:
            # the recorded mix among the rows fitted on, by (group, the comparator's category)
            known = x.loc[~unknown]
            category = (known[ETHRISK].to_numpy(dtype=np.int64) if self.ethnic_terms is not None
                        else np.ones(len(known), dtype=np.int64))
            mix = pd.Series(1.0, index=pd.MultiIndex.from_arrays(
                [known[self.group_column].astype(str).to_numpy(), category])).groupby(level=[0, 1]).sum()
            self.unknown_mix_ = [(str(g), int(c), float(n / mix.sum())) for (g, c), n in mix.items()]
            if unknown.any():
                # fitted as read: an unknown row's offset is its mixed one (a regressor that reads
                # the group sees the reference group there, as it is given)
                weights = np.array([w for _, _, w in self.unknown_mix_])
                offset = offset.copy()
                offset[unknown] += np.log(np.exp(self._mix_terms(x, unknown)) @ weights)
        exposure = years * np.exp(offset)
        last = self.regressor.steps[-1][0]
        if getattr(self, "prior_sd", None) is not None and isinstance(self.regressor[-1], PoissonRegressor):
            # a fixed prior on the correction, whatever the extract's size: scikit-learn's alpha is
            # per unit of mean deviance, so N(0, prior_sd^2) on each standardised coefficient is
            # alpha = 1 / (prior_sd^2 x the sum of the weights), the events the offset expects
            self.regressor.set_params(**{f"{last}__alpha": 1.0 / (self.prior_sd ** 2 * float(exposure.sum()))})
        self.regressor.fit(self._inputs(x, offset), event / exposure, **{f"{last}__sample_weight": exposure})
        if getattr(self, "group_prior_sd", None) is not None and self.group_log_hr and self.group_column:
            self._update_groups(x, offset, exposure, event)
        return self

    def _multiplier(self, x: pd.DataFrame, offset: np.ndarray) -> np.ndarray:
        """exp(f(x)) for each row of ``x`` (filled) with its ``offset``: the regressor's part of
        the hazard, row by row (the same for a row whatever else is in the batch)."""
        final = self.regressor[-1]
        if isinstance(final, PoissonRegressor):
            # row by row (einsum's own loop, no BLAS), as models.train.predict_risk explains
            design = np.ascontiguousarray(self.regressor[:-1].transform(self._inputs(x, offset)), dtype=np.float64)
            return np.exp(np.einsum("ij,j->i", design, final.coef_) + final.intercept_)
        if not hasattr(final, "feature_names_in_"):
            # the boosting's inputs straight from ``x`` and the replaced columns: no copy of the
            # frame with them (a second of a 1M-patient model's scoring)
            design = passed_through(self.regressor[:-1], x, self._replaced(x, offset))
            if design is not None:
                return final.predict(design)
        return self.regressor.predict(self._inputs(x, offset))

    def hazard(self, x: pd.DataFrame, filled: bool = False) -> np.ndarray:
        """Yearly hazard for each row, the same for a row whatever else is in the batch.
        ``filled``: ``x`` is already ``imputer.transform`` of the rows."""
        x = x if filled else self._filled(x)
        offset = self._offset(x)
        unknown = self._unknown(x)
        if not unknown.any():
            return np.exp(offset) * self._multiplier(x, offset)
        base = offset[unknown]
        multipliers: dict[str, np.ndarray] = {}
        if self.group_is_input:
            hazard = np.empty(len(x))
            if not unknown.all():
                hazard[~unknown] = np.exp(offset[~unknown]) * self._multiplier(x.loc[~unknown], offset[~unknown])
            rows = x.loc[unknown]
        else:
            # the regressor reads no group, so an unknown row's multiplier is the one it has as it
            # comes: every row's in one pass (a row's is the same in any batch), without a copy
            # of the known and unknown rows' frames
            everyone = self._multiplier(x, offset)
            hazard = np.exp(offset) * everyone
            multipliers[""] = everyone[unknown]
        terms = self._mix_terms(x, unknown)
        mixed = np.zeros(len(base))
        for j, (group, _, weight) in enumerate(self.unknown_mix_):
            key = group if self.group_is_input else ""
            if key not in multipliers:
                multipliers[key] = self._multiplier(rows.assign(**{self.group_column: group}), base)
            mixed += weight * np.exp(base + terms[:, j]) * multipliers[key]
        hazard[unknown] = mixed
        return hazard

    def predict_risk(self, x: pd.DataFrame, filled: bool = False) -> np.ndarray:
        return -np.expm1(-self.horizon_years * self.hazard(x, filled))

    def predict_proba(self, x: pd.DataFrame) -> np.ndarray:
        risk = self.predict_risk(x)
        return np.column_stack([1 - risk, risk])


def passed_through(transform: Pipeline, x: pd.DataFrame,
                   replaced: dict[str, np.ndarray] | None = None) -> np.ndarray | None:
    """The regressor's inputs as ``transform`` (a pipeline's steps before its regressor) makes
    them from ``x``, where it is one ColumnTransformer that only passes float columns through
    (the gradient boosting's: models.train.make_model); None for any other, which then
    transforms as it was fitted to.

    The same numbers in the same layout (one column after another, as the ColumnTransformer's
    ``hstack`` leaves them), copied a column at a time: the ColumnTransformer first turns the
    frame's blocks into a row-major array and then copies that again, 2.3 s of a 1M run's
    audit for each of the list population's boosting models against 0.1 s
    (docs/benchmarks.md, "The boosting's inputs passed through a column at a time").
    ``replaced``: columns read instead of ``x``'s (or as well), as if ``x.assign(**replaced)``
    had been given, without that copy of the frame."""
    replaced = replaced or {}
    if len(transform) != 1 or not isinstance(transform[0], ColumnTransformer):
        return None
    columns: list[str] = []
    for _, step, selected in transform[0].transformers_:
        if isinstance(step, str) and step == "drop":
            continue
        names = list(selected) if isinstance(selected, (list, tuple)) else None
        if names is None:
            return None
        if not names:
            continue  # a transformer given no columns adds none
        if not (isinstance(step, FunctionTransformer) and step.func is None and step.inverse_func is None) \
                or not all(isinstance(c, str) for c in names):
            return None
        columns += names
    def values(name: str):
        return replaced[name] if name in replaced else x[name]

    if not columns or not set(columns) <= set(x.columns) | set(replaced) \
            or any(values(c).dtype != np.float64 or len(values(c)) != len(x) for c in columns):
        return None
    design = np.empty((len(x), len(columns)), dtype=np.float64, order="F")
    for j, name in enumerate(columns):
        design[:, j] = np.asarray(values(name))
    return design


def expected_events(risk: np.ndarray, years: np.ndarray, horizon_years: float) -> np.ndarray:
    """Each patient's expected number of events over their own follow-up, from a risk over the
    horizon under a constant hazard: -log(1 - risk) * years / horizon. Summed over a group and
    set against its observed events, this is the O/E ratio for censored follow-up."""
    risk = np.clip(np.asarray(risk, dtype=float), 0, 1 - 1e-12)
    return -np.log1p(-risk) * np.asarray(years, dtype=float) / horizon_years


def risk_while_followed(risk: np.ndarray, years: np.ndarray, horizon_years: float,
                        censored: np.ndarray) -> np.ndarray:
    """Each patient's chance of having the outcome while followed, from a risk over the horizon
    under a constant hazard: the risk itself for a patient followed to the horizon's end or to the
    outcome (``censored`` false), and 1 - (1 - risk) ** (years / horizon) for one who died or left
    without it after ``years`` (``censored`` true). Summed over a group it is the number of
    outcomes expected to be recorded, with independent censoring, set against the recorded count
    (the audit's observed / expected). Unlike the cumulative hazard over follow-up
    (``expected_events``), no patient counts for more than 1, so a predicted risk near 1 for a
    patient who stayed well weighs as one expected outcome, not a dozen. A patient who had the
    outcome before they died or left counts in full: the labels end their follow-up at the outcome
    and do not carry when they would have left (a few in a thousand; their expected is a little
    high)."""
    risk = np.clip(np.asarray(risk, dtype=float), 0, 1)
    share = np.clip(np.asarray(years, dtype=float) / horizon_years, 0, 1)
    partial = -np.expm1(np.log1p(-np.minimum(risk, 1 - 1e-12)) * share)
    return np.where(np.asarray(censored, dtype=bool), partial, risk)


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
