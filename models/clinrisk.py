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


@dataclass(frozen=True)
class CodedModel:
    """A model rearranged for speed, with the same terms.

    Every interaction of a ClinRisk equation is with one of the two age terms, so the linear
    predictor is ``ethrisk[e] + base[c] + sum_k age_k * age_coef_k[c] + sum_t T_t * w_t`` with
    ``c`` one small integer per row coding smoking and every binary input, ``w_t`` a continuous
    term's coefficient plus its age interactions. The tables by code are summed once per model,
    not once per row, so a row costs a few gathers and the continuous terms only. Exact to
    rounding: within 1e-12 (percentage points) of ``risk_percent`` (tests/spec/test_scores.py).
    """

    model: ClinRiskModel
    binaries: tuple[str, ...]            # bit i of the code is binaries[i]; smoke_cat above them
    ethrisk: np.ndarray
    base: np.ndarray                     # by code
    age: tuple[tuple[Transform, np.ndarray], ...]  # each age term with its coefficient by code
    continuous: tuple[tuple[Transform, float, tuple[tuple[int, float], ...]], ...]


def coded(model: ClinRiskModel, binaries: tuple[str, ...]) -> CodedModel:
    """``model`` as a ``CodedModel`` whose code has one bit for each of ``binaries`` (a superset
    of the model's binary inputs), then ``smoke_cat`` (``code = smoke_cat << len(binaries) | bits``)."""
    transforms = {t.name: t for t in model.transforms}
    ages = [t for t in model.transforms if t.source == "age"]
    age_index = {t.name: i for i, t in enumerate(ages)}
    unknown = {k for k in model.coefficients if k not in transforms} - set(binaries)
    if unknown or any(term not in age_index for term, _, _ in model.interactions):
        raise ValueError(f"{model.name}: not an age-interaction ClinRisk model over {binaries}")
    codes = np.arange(len(model.smoke) << len(binaries))
    smoke = codes >> len(binaries)
    bits = {name: ((codes >> i) & 1).astype(np.float64) for i, name in enumerate(binaries)}
    base = np.asarray(model.smoke, dtype=np.float64)[smoke]
    for name in binaries:
        if name in model.coefficients:
            base = base + model.coefficients[name] * bits[name]
    age_coef = [np.full(codes.size, model.coefficients.get(t.name, 0.0)) for t in ages]
    continuous: dict[str, list] = {t.name: [] for t in model.transforms if t.source != "age"}
    for term, factor, coefficient in model.interactions:
        k = age_index[term]
        if factor.startswith("smoke_cat=="):
            age_coef[k] = age_coef[k] + coefficient * (smoke == int(factor.removeprefix("smoke_cat=="))).astype(np.float64)
        elif factor in continuous:
            continuous[factor].append((k, coefficient))
        elif factor in transforms:
            raise ValueError(f"{model.name}: age interacts with an age term")
        else:
            age_coef[k] = age_coef[k] + coefficient * bits[factor]
    return CodedModel(
        model=model, binaries=binaries, ethrisk=np.asarray(model.ethrisk, dtype=np.float64), base=base,
        age=tuple(zip(ages, age_coef, strict=True)),
        continuous=tuple((transforms[name], model.coefficients.get(name, 0.0), tuple(ia))
                         for name, ia in continuous.items()))


def risk_percent_coded(coded_model: CodedModel, data: Mapping[str, np.ndarray], ethrisk: np.ndarray,
                       code: np.ndarray) -> np.ndarray:
    """``risk_percent`` of ``coded_model.model``; ``data`` holds the continuous inputs (``age``
    included), ``ethrisk`` the ethnicity index and ``code`` smoking and the binaries."""
    m = coded_model
    a = m.ethrisk[ethrisk]
    a += m.base[code]
    shared: dict[tuple, np.ndarray] = {}

    def powered(t: Transform) -> tuple[np.ndarray, np.ndarray]:
        # (x / scale) and its power, shared by the terms of one input (bmi_1 and bmi_2)
        key = (t.source, t.scale, t.power)
        if key not in shared:
            x = np.asarray(data[t.source], dtype=np.float64) / t.scale
            with np.errstate(divide="ignore", invalid="ignore"):
                shared[key] = (x, np.log(x) if t.power == 0 else np.power(x, t.power))
        return shared[key]

    def term(t: Transform) -> np.ndarray:
        x, value = powered(t)
        if t.times_log:
            with np.errstate(divide="ignore", invalid="ignore"):
                value = value * np.log(x)
        return value - t.centre

    ages = []
    for t, by_code in m.age:
        value = term(t)
        ages.append(value)
        a += value * by_code[code]
    for t, coefficient, interactions in m.continuous:
        weight = coefficient
        for k, c in interactions:
            weight = weight + c * ages[k]
        a += term(t) * weight
    np.exp(a, out=a)
    return 100.0 * (1.0 - np.power(m.model.survivor, a))
