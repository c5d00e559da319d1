"""Validation metrics for risk predictions: discrimination, accuracy and calibration.

All take the recorded outcome ``y`` (0/1) and a predicted probability ``p`` for the same horizon.
scikit-learn gives AUROC and the Brier score; what it lacks is written here, each in a few
lines with the method named:

- AUROC confidence interval: DeLong et al. (1988), in the fast midrank form of Sun & Xu (2014).
- Calibration slope: the coefficient of logit(p) in a logistic regression of y on logit(p)
  (1 is ideal; below 1, predictions are too extreme).
- Calibration intercept (calibration-in-the-large): the intercept of a logistic regression of
  y with logit(p) as offset (0 is ideal; below 0, risk is over-estimated).
- Observed/expected ratio with an exact Poisson interval on the observed count.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss

EPS = 1e-7


@dataclass(frozen=True)
class Validation:
    n: int
    events: int
    auroc: float
    auroc_ci_low: float
    auroc_ci_high: float
    brier: float
    calibration_slope: float
    calibration_intercept: float
    observed_expected: float
    observed_expected_ci_low: float
    observed_expected_ci_high: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p / (1 - p))


def auroc_delong(y: np.ndarray, p: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """AUROC and its DeLong confidence interval (on the logit scale, so it stays inside 0-1)."""
    y = np.asarray(y, dtype=bool)
    p = np.asarray(p, dtype=float)
    positives, negatives = p[y], p[~y]
    m, n = positives.size, negatives.size
    if m == 0 or n == 0:
        return float("nan"), float("nan"), float("nan")
    # Placement values from midranks: V10 for each positive, V01 for each negative.
    all_ranks = stats.rankdata(np.concatenate([positives, negatives]))
    v10 = (all_ranks[:m] - stats.rankdata(positives)) / n
    v01 = 1 - (all_ranks[m:] - stats.rankdata(negatives)) / m
    auc = float(v10.mean())
    variance = v10.var(ddof=1) / m + v01.var(ddof=1) / n if m > 1 and n > 1 else float("nan")
    if not variance > 0 or auc in (0.0, 1.0):
        return auc, auc, auc
    z = stats.norm.ppf(0.5 + level / 2)
    logit_auc = np.log(auc / (1 - auc))
    half = z * np.sqrt(variance) / (auc * (1 - auc))  # delta method
    low, high = 1 / (1 + np.exp(-(logit_auc - half))), 1 / (1 + np.exp(-(logit_auc + half)))
    return auc, float(low), float(high)


def calibration_slope(y: np.ndarray, p: np.ndarray) -> float:
    model = LogisticRegression(C=np.inf, max_iter=200)  # unpenalised
    model.fit(_logit(p).reshape(-1, 1), np.asarray(y, dtype=int))
    return float(model.coef_[0, 0])


def calibration_intercept(y: np.ndarray, p: np.ndarray, iterations: int = 50) -> float:
    """Intercept a of logit P(y) = a + logit(p), by Newton's method (one parameter)."""
    y = np.asarray(y, dtype=float)
    offset = _logit(np.asarray(p, dtype=float))
    a = 0.0
    for _ in range(iterations):
        q = 1 / (1 + np.exp(-(a + offset)))
        gradient, curvature = (y - q).sum(), (q * (1 - q)).sum()
        if curvature <= 0:
            break
        step = gradient / curvature
        a += step
        if abs(step) < 1e-10:
            break
    return float(a)


def observed_expected(y: np.ndarray, p: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    observed, expected = float(np.sum(y)), float(np.sum(p))
    if expected <= 0:
        return float("nan"), float("nan"), float("nan")
    alpha = 1 - level
    low = stats.chi2.ppf(alpha / 2, 2 * observed) / 2 if observed > 0 else 0.0
    high = stats.chi2.ppf(1 - alpha / 2, 2 * observed + 2) / 2
    return observed / expected, float(low / expected), float(high / expected)


def validate(y: np.ndarray, p: np.ndarray) -> Validation:
    """Every validation figure for predictions ``p`` of outcome ``y``."""
    y = np.asarray(y, dtype=int)
    p = np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    auc, low, high = auroc_delong(y, p)
    oe, oe_low, oe_high = observed_expected(y, p)
    both_classes = 0 < y.sum() < y.size
    return Validation(
        n=int(y.size), events=int(y.sum()),
        auroc=auc, auroc_ci_low=low, auroc_ci_high=high,
        brier=float(brier_score_loss(y, p)) if y.size else float("nan"),
        calibration_slope=calibration_slope(y, p) if both_classes else float("nan"),
        calibration_intercept=calibration_intercept(y, p) if both_classes else float("nan"),
        observed_expected=oe, observed_expected_ci_low=oe_low, observed_expected_ci_high=oe_high)


def ten_to_horizon(risk_10y: np.ndarray, horizon_years: float) -> np.ndarray:
    """A 10-year risk as a risk over ``horizon_years``, assuming a constant hazard.

    QRISK3 and QDiabetes predict 10 years; the models and the validation labels cover the
    horizon (5 years by default). Under a constant hazard, S(h) = S(10) ** (h / 10). This is an
    approximation (hazards rise with age), stated wherever the converted figures are shown.
    """
    risk_10y = np.clip(np.asarray(risk_10y, dtype=float), 0.0, 1.0)
    return 1 - (1 - risk_10y) ** (horizon_years / 10)
