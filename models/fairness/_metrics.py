"""Group figures from cell sums, vectorised over bootstrap replicates.

Every function takes arrays whose first axis is the replicate and second the group, and returns
(replicates, groups) arrays. The observed figures are the same functions applied to the
observed counts (one "replicate").

- AUROC: the Mann-Whitney statistic over score bins (pairs in one bin count one half), so it is
  the AUROC of the score in 200 equal-count bins; it differs from the unbinned AUROC by less
  than 0.005 (tests/test_fairness.py measures it).
- Calibration slope: logistic regression of the outcome on logit(mean predicted risk of the
  bin), over 50 bins of the score, fitted by Newton's method for all groups and replicates at
  once; it agrees with the patient-level slope to within 0.02 (measured in the tests).
- Wilson score interval for proportions (Wilson 1927), the interval the audit gives every
  proportion; bootstrap percentiles for everything else.
"""

from __future__ import annotations

import numpy as np
from scipy import special, stats

EPS = 1e-7
SLOPE_BIN_WIDTH = 4


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = numerator / denominator
    return np.where(denominator > 0, out, np.nan)


def wilson_interval(successes, trials, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    successes = np.asarray(successes, dtype=float)
    trials = np.asarray(trials, dtype=float)
    z = stats.norm.ppf(0.5 + level / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = successes / trials
        centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
        half = z * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    valid = trials > 0
    return np.where(valid, centre - half, np.nan), np.where(valid, centre + half, np.nan)


def binned_auroc(positives: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """AUROC from counts per score bin (last axis, ascending score): the pairs a positive ranks
    above, plus half the pairs in its own bin, over all pairs.

    The counts are whole numbers (bootstrap weights times patients), so every product and sum
    here is a whole number or a half, exactly as a float (far below 2**52) in any order: the
    two dot products give the same figure to the last bit as summing each bin's term."""
    cumulative = np.cumsum(negatives, axis=-1)  # negatives in this bin or below
    concordant = (np.einsum("...i,...i->...", positives, cumulative)
                  - 0.5 * np.einsum("...i,...i->...", positives, negatives))
    return _divide(concordant, positives.sum(axis=-1) * cumulative[..., -1])


def binned_calibration_slope(x: np.ndarray, events: np.ndarray, total: np.ndarray,
                             iterations: int = 12) -> np.ndarray:
    """Slope b of logit P(y) = a + b x, with x the logit of each bin's mean risk (last axis).

    Newton's method on every (replicate, group) at once, from a = 0, b = 1 (a calibrated model,
    close to every row's answer: most rows settle in 4-7 iterations; a warm start from the
    observed fit measured no fewer). A row leaves the iteration once its step is below 1e-7, or
    once its Hessian is singular (its a and b could not change again), so the few rows that do
    not settle (small groups) no longer carry the whole array through all 12 iterations. While
    every row still moves, the arrays are used in place rather than copied row by row, and the
    sums of products are einsum's (no temporary per product): the same arithmetic, in the same
    order per row, so the same slopes to the last bits (1e-15), about 25% faster.
    """
    shape = x.shape[:-1]
    bins = x.shape[-1]
    x, events, total = x.reshape(-1, bins), events.reshape(-1, bins), total.reshape(-1, bins)
    rows = x.shape[0]
    has_both = (events.sum(-1) > 0) & ((total - events).sum(-1) > 0)
    a, b = np.zeros(rows), np.ones(rows)
    ok = np.ones(rows, dtype=bool)
    active = None  # None: every row (no copy); else the indexes of the rows still moving
    xa, ea, ta = x, events, total
    if x.flags.c_contiguous and not has_both.all():
        # a row without both outcomes has no slope (NaN below) whatever its steps: it does not
        # enter. Only where the rows are contiguous, so that a row's sums are the same taken
        # alone as in the whole array: one group's rows (the population) arrive with the
        # replicate as the fast axis and are summed in another order, kept as it was.
        active = np.flatnonzero(has_both)
        if active.size == 0:
            return np.full(shape, np.nan)
        xa, ea, ta = x[active], events[active], total[active]
    for _ in range(iterations):
        aa, bb = (a, b) if active is None else (a[active], b[active])
        q = bb[:, None] * xa
        q += aa[:, None]
        special.expit(q, out=q)
        v = ta * q
        residual = ea - v
        v *= 1 - q
        ga, gb = residual.sum(-1), np.einsum("ij,ij->i", xa, residual)
        xv = xa * v
        haa, hab, hbb = v.sum(-1), xv.sum(-1), np.einsum("ij,ij->i", xa, xv)
        det = haa * hbb - hab * hab
        ok_now = det > 1e-12
        safe = np.where(ok_now, det, 1.0)
        step_a, step_b = (hbb * ga - hab * gb) / safe, (haa * gb - hab * ga) / safe
        new_a, new_b = np.where(ok_now, aa + step_a, aa), np.where(ok_now, bb + step_b, bb)
        settled = ~ok_now | ~(np.abs(step_b) >= 1e-7)  # a NaN step settles: its b stays NaN
        if active is None:
            a, b, ok = new_a, new_b, ok_now
            active = np.flatnonzero(~settled)
            if active.size == rows:
                active = None
                continue
        else:
            a[active], b[active], ok[active] = new_a, new_b, ok_now
            active = active[~settled]
        if active.size == 0:
            break
        xa, ea, ta = x[active], events[active], total[active]
    return np.where(ok & has_both & np.isfinite(b), b, np.nan).reshape(shape)


def performance(n: np.ndarray, risk: np.ndarray, expected: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Figures from counts and predicted-risk sums shaped (r, groups, bins, outcome, selected).

    ``expected``: the outcomes each cell's patients are expected to have had recorded while
    followed (models.hazard.risk_while_followed: a patient who died or left after two years of a
    five-year horizon, the chance of the outcome in those two years), summed like ``risk``; the
    observed / expected ratio and ``expected_outcomes`` read it. None: every patient followed to
    the horizon's end, so a patient's expected outcomes are its risk (a scored table).

    The counts are whole numbers, so their sums are exact in any order and each is taken from
    the smallest array that holds it. The risk sums are not: each keeps the order of the sum
    that made the published figures (numpy's over these arrays, as they come from the matrix
    product)."""
    per_bin = n.sum(axis=4)  # (r, g, bins, outcome)
    patients = per_bin.sum(axis=(2, 3))
    events = per_bin[..., 1].sum(axis=2)
    selected = n[:, :, :, :, 1].sum(axis=(2, 3))
    true_positives = n[:, :, :, 1, 1].sum(axis=2)
    risk_sum = risk.sum(axis=(2, 3, 4))
    expected_sum = risk_sum if expected is None else expected.sum(axis=(2, 3, 4))
    # the slope is fitted on coarser bins (4 score bins each): as exact in practice, 4x cheaper
    r, g, bins = per_bin.shape[:3]
    coarse = per_bin.reshape(r, g, bins // SLOPE_BIN_WIDTH, SLOPE_BIN_WIDTH, 2).sum(axis=3)
    coarse_risk = risk.sum(axis=(3, 4)).reshape(r, g, bins // SLOPE_BIN_WIDTH, SLOPE_BIN_WIDTH).sum(axis=3)
    bin_total = coarse.sum(axis=3)
    bin_risk = np.clip(_divide(coarse_risk, bin_total), EPS, 1 - EPS)
    x = np.where(bin_total > 0, np.log(bin_risk / (1 - bin_risk)), 0.0)
    return {
        "patients": patients, "events": events, "selected": selected, "true_positives": true_positives,
        "outcome_rate": _divide(events, patients),
        "mean_predicted_risk": _divide(risk_sum, patients),
        "observed_expected": _divide(events, expected_sum),
        "expected_outcomes": expected_sum,  # not a figure of its own: the O/E's count (the gate's exact test)
        "calibration_slope": binned_calibration_slope(x, coarse[..., 1], bin_total),
        "auroc": binned_auroc(per_bin[..., 1], per_bin[..., 0]),
        "selection_rate": _divide(selected, patients),
        "sensitivity": _divide(true_positives, events),
        "false_negative_rate": _divide(events - true_positives, events),
        "ppv": _divide(true_positives, selected),
    }


def selection(n: np.ndarray, need: np.ndarray, measured: np.ndarray, measures: int,
              age_bands: int = 1, score: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Figures from counts, need sums and measurement sums shaped (r, groups, strata, high need,
    selected), where a stratum is a score decile and age band (decile * age_bands + band).
    Counts are summed from the smallest array that holds them (exact in any order, as in
    ``performance``); need, measurement and score sums keep their order."""
    by_stratum = n.sum(axis=(3, 4))
    patients = by_stratum.sum(axis=2)
    selected = n[..., 1].sum(axis=(2, 3))
    high = n[:, :, :, 1, :]
    need_by_stratum = need.sum(axis=(3, 4))
    need_sum = need_by_stratum.sum(axis=2)
    r, g, strata = by_stratum.shape
    return {
        "patients": patients, "selected": selected,
        "high_need": high.sum(axis=(2, 3)), "selected_high_need": high[..., 1].sum(axis=2),
        "need_sum": need_sum,
        "patients_by_stratum": by_stratum, "need_by_stratum": need_by_stratum,  # (r, g, strata)
        "score_by_stratum": by_stratum if score is None else score.sum(axis=(3, 4)),
        "patients_by_decile": by_stratum.reshape(r, g, strata // age_bands, age_bands).sum(axis=3),
        "need_by_decile": need_by_stratum.reshape(r, g, strata // age_bands, age_bands).sum(axis=3),
        "selection_rate": _divide(selected, patients),
        "mean_need": _divide(need_sum, patients),
        "measurement_completeness": _divide(measured.sum(axis=(2, 3, 4)), patients * measures),
    }


def need_ratio(group_score_by_stratum: np.ndarray, group_need_sum: np.ndarray,
               population_score_by_stratum: np.ndarray, population_need_by_stratum: np.ndarray) -> np.ndarray:
    """Label-choice check: the group's need over the need expected at its scores and ages.

    Expected = for each stratum (score decile x age band), the group's summed score times the
    population's need per unit of score in that stratum (indirect standardisation, in proportion
    to the score within the stratum; given patient counts for the scores it is the stratum's mean
    need per patient). Above 1: at the same score and age the group is sicker. Age is in the
    strata because need (readings) does not rise with age the way the score does: a younger
    group would otherwise look sicker at the same score with no recording bias at all.
    """
    per_score = _divide(population_need_by_stratum, population_score_by_stratum)  # (r, 1, d)
    expected = (group_score_by_stratum * np.nan_to_num(per_score)).sum(axis=-1)
    return _divide(group_need_sum, expected)
