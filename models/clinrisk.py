"""A vectorised evaluator for ClinRisk's published risk equations (QRISK3-2017, QDiabetes-2018).

Every ClinRisk equation has the same shape, so each model is data (``ClinRiskModel``) and one
function evaluates any of them on numpy arrays:

    a = ethrisk[ethnicity] + smoke[smoke_cat]
        + sum(coefficient * centred fractional-polynomial transform of each continuous input)
        + sum(coefficient * binary input) + sum(coefficient * interaction)
    risk (%) = 100 * (1 - survivor ** exp(a))

The coefficients are ClinRisk's (see NOTICE for their disclaimer); the code is ours. Exactness
is checked against every published test vector in ../shared/reference/scores.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Transform:
    """A continuous term: ``(x / scale) ** power`` (power 0 means log), times log if asked,
    minus the model's centring constant."""

    name: str
    source: str
    scale: float
    power: float
    times_log: bool
    centre: float

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64) / self.scale
        with np.errstate(divide="ignore", invalid="ignore"):
            value = np.log(x) if self.power == 0 else np.power(x, self.power)
            if self.times_log:
                value = value * np.log(x)
        return value - self.centre


@dataclass(frozen=True)
class ClinRiskModel:
    name: str
    survivor: float                      # baseline survival at 10 years
    ethrisk: tuple[float, ...]           # indexed by ethrisk 0..9 (0 and 1 are the reference)
    smoke: tuple[float, ...]             # indexed by smoke_cat 0..4
    transforms: tuple[Transform, ...]
    coefficients: Mapping[str, float]    # transform names and binary inputs
    interactions: tuple[tuple[str, str, float], ...]  # (transform, factor, coefficient)

    @property
    def inputs(self) -> list[str]:
        """The input columns the model reads (ClinRisk's argument names)."""
        names = {"ethrisk", "smoke_cat"} | {t.source for t in self.transforms}
        names |= {k for k in self.coefficients if k not in {t.name for t in self.transforms}}
        return sorted(names)


def linear_predictor(model: ClinRiskModel, data: Mapping[str, np.ndarray]) -> np.ndarray:
    terms = {t.name: t(data[t.source]) for t in model.transforms}
    ethrisk = np.asarray(data["ethrisk"], dtype=np.int64)
    smoke = np.asarray(data["smoke_cat"], dtype=np.int64)
    a = np.asarray(model.ethrisk)[ethrisk] + np.asarray(model.smoke)[smoke]
    for name, coefficient in model.coefficients.items():
        value = terms[name] if name in terms else np.asarray(data[name], dtype=np.float64)
        a = a + coefficient * value
    for term, factor, coefficient in model.interactions:
        if factor.startswith("smoke_cat=="):
            other = (smoke == int(factor.removeprefix("smoke_cat=="))).astype(np.float64)
        else:
            other = terms[factor] if factor in terms else np.asarray(data[factor], dtype=np.float64)
        a = a + coefficient * terms[term] * other
    return a


def risk_percent(model: ClinRiskModel, data: Mapping[str, np.ndarray]) -> np.ndarray:
    """10-year risk in percent, exactly as ClinRisk's C source computes it."""
    return 100.0 * (1.0 - np.power(model.survivor, np.exp(linear_predictor(model, data))))


def age_interactions(age_terms: tuple[str, str], factors: Mapping[str, tuple[float, float]]):
    """Interactions of both age terms with each factor: {factor: (coef with age_1, with age_2)}."""
    return tuple((age_terms[i], factor, coefs[i]) for i in (0, 1) for factor, coefs in factors.items())
