"""The fairness gate: PASS, WARN or FAIL per outcome, from a family of statistical tests.

A run makes dozens of comparisons (outcomes x broad groups x checks); judged one by one at 95%,
some would fire on fair data by chance. So the gate is one family of tests (docs/fairness.md):

1. Each check is a ratio with a bootstrap interval, taken on the log scale with its standard
   error from the interval. For every broad group (including Not stated and Not known; the
   reference group only where the check is not relative to it):
   - calibration (observed / expected on the validation patients): harm either way;
   - sensitivity ratio (group / reference) at the list's operating point: harm below;
   - need-adjusted selection (share selected / share of recorded outcomes), judged over its value
     under the score's own risks, which is not 1 for a fair ranking of groups whose risks are
     spread differently: harm below (above too with ``fail_when_over_served``);
   - label choice (need at the same score and age band, over the need expected): harm above.
2. Non-inferiority against the margin (``ratio_band``, ``need_ratio_limit``): the one-sided
   null hypothesis is "the group is no worse than the margin"; its p-value is from the
   estimate and its standard error (from the counts where the bootstrap interval collapses).
3. Each family is controlled with Holm's step-down method (family-wise error ``1 - level``), or
   Benjamini-Hochberg (``family_control = "fdr"``). A family (``family``) is by default one
   outcome's check across its groups (the error rates the issue sets, at most 5% false alarms,
   are per check; docs/fairness.md has them measured); or an outcome's checks together, or the
   whole run.
4. Empirical-Bayes shrinkage (``shrinkage``): for each outcome and check, the groups' log
   ratios are shrunk towards their precision-weighted mean by the between-group variance
   (DerSimonian-Laird). A FAIL needs both: the test survives the family's control, and the
   shrunk estimate still lies beyond the margin on the harmful side; so a small group's noisy
   estimate does not decide alone, and a large effect in a small group is not hidden. No group is
   exempt for being small. Each test states the smallest effect it could detect (minimum
   detectable ratio at ``power``).

5. The recording checks pooled over outcomes (``pool_recording``): recording completeness is a
   property of a group's record at these practices, not of one outcome. Per group, the log ratios
   of the treatment check (treated, no diagnosis) of every outcome are pooled by inverse variance
   (fixed effect) into one test of "this group's known diagnoses are coded no less completely than
   the margin" (``need_ratio_limit``), its own family across the groups
   (Holm), shrunk across the groups like the other checks. Its own family whatever ``family``
   says: no other test's adjusted p-value moves. A pooled FAIL FAILs the group on each outcome
   that contributed evidence and whose own pooled estimate for the group is above 1 (an outcome
   whose own evidence says its recording is fine is not blocked), as "label choice (recording,
   pooled over outcomes)". It adds no WARN: the checks it pools show their own.

WARN when a (shrunk) point estimate is beyond the margin but the test does not reject; when a
group is surely served beyond the margin on the side that is not harm, by its own estimate
(``_surely_served_beyond``); when a group is small (fewer than ``min_patients`` patients or ``min_events`` outcomes: judged all
the same, and its minimum detectable effect is named); when more than ``max_ethnicity_missing``
of patients have no ethnicity recorded; when a group's measurements are recorded much less often
than the reference group's.

Whether a WARN or FAIL may still move ``champion`` and let lists out is decided in one place:
``models/fairness/_decision.py`` (a named reviewer's sign-off).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from models.fairness._audit import (
    Compared,
    Count,
    Estimate,
    Figure,
    GroupResults,
    ScoreAudit,
    secondary_suppression,
)
from models.fairness._recording import exact_p_value, standardised_ratio
from models.fairness._settings import GATE_LEVELS, AuditSettings, Block, SignOff
from phm.disclosure import MEANS_FROM, WITHHELD, significant, small

# check -> (which population, the figure itself (None) or compared with what, the figure, which side is harm)
CHECKS = {
    "calibration": ("performance", None, Figure.OBSERVED_EXPECTED, "both"),
    "sensitivity ratio": ("performance", Compared.RATIO_TO_REFERENCE, Figure.SENSITIVITY, "below"),
    "need-adjusted selection": ("performance", None, Figure.NEED_ADJUSTED_SELECTION_VS_SCORE, "below"),
    "label choice": ("selection", None, Figure.NEED_AT_SAME_SCORE, "above"),
    "label choice (diagnosis gap)": ("selection", None, Figure.DIAGNOSIS_GAP, "above"),
    "label choice (treated, no diagnosis)": ("selection", None, Figure.TREATED_UNDIAGNOSED, "above"),
}
CHECK_WORDS = {
    "calibration": "observed / expected (calibration)",
    "sensitivity ratio": "sensitivity relative to the reference group at the list's operating point",
    "need-adjusted selection": "need-adjusted selection (share selected / share of recorded outcomes), over its value "
                               "under the score's own risks (share of expected outcomes / share of recorded ones)",
    "label choice": "need at the same score and age, over the need expected (label-choice check)",
    "label choice (diagnosis gap)": "diagnostic readings left undiagnosed, over the number expected at the "
                                    "same reading and age (label-choice check: recorded outcomes under-state need)",
    "label choice (treated, no diagnosis)": "patients on the condition's treatment with no diagnosis code, over the "
                                            "number expected at the same age (label-choice check: recorded outcomes "
                                            "under-state need)",
}
POOLED_CHECK = "label choice (recording, pooled over outcomes)"
# the checks that read the score's values as risks (expected outcomes): nothing to judge for a rank
RISK_CHECKS = ("calibration", "need-adjusted selection")
# the checks whose evidence is of the record's completeness (not of the score)
RECORDING_CHECKS = ("label choice (diagnosis gap)", "label choice (treated, no diagnosis)")
# what the pooled check pools: a diagnosis known (treated) and not coded is the coding failure, a
# property of the group's record; the diagnosis gap also counts disease not yet detected, which
# differs by condition (who is offered a reading), and hypertension's is blind to coding failure
# (readings follow the register): pooled with the treatment checks it outweighed them (docs/fairness.md)
POOLED_CHECKS = ("label choice (treated, no diagnosis)",)
CHECK_WORDS[POOLED_CHECK] = ("patients on a condition's treatment with no diagnosis code, over the number expected "
                             "at the same age, pooled over the outcomes (label-choice check: the group's record "
                             "codes its known diagnoses less completely)")
FLOOR = 0.01  # ratios are taken on the log scale; a ratio of 0 counts as 0.01


@dataclass(frozen=True)
class Finding:
    level: str  # WARN or FAIL
    rule: str  # short name, e.g. "label choice"
    outcome: str
    group: str
    message: str

    def as_dict(self) -> dict:
        return {"level": self.level, "rule": self.rule, "outcome": self.outcome, "group": self.group,
                "message": self.message}


@dataclass
class GateTest:
    """One test of the family: one outcome, group and check."""

    outcome: str
    group: str
    check: str
    side: str  # harm "below", "above" or "both"
    margin: tuple[float, float]
    estimate: Estimate  # as measured, with its bootstrap interval
    log_value: float = float("nan")
    se: float = float("nan")
    shrunk: float = float("nan")  # the ratio after empirical-Bayes shrinkage
    shrunk_se: float = float("nan")  # of the log ratio
    p_value: float = float("nan")
    adjusted_p: float = float("nan")
    detectable: float = float("nan")  # minimum detectable ratio (on the harmful side)
    small: bool = False
    verdict: str = "PASS"  # PASS, WARN or FAIL
    served_beyond: bool = False  # a WARN for the side that is not harm (_surely_served_beyond)
    # the bootstrap's interval collapsed, and the log ratio and its standard error are read from the
    # counts instead (_count_based): evidence of harm, never of a group served beyond its share
    count_based: bool = False
    # the sensitivity ratio's exact p of "not above the margin": the group's true positives against
    # its outcomes at the margin times the reference's sensitivity (_served_beyond_exactly); NaN elsewhere
    served_p: float = float("nan")
    # why a test that would have WARNed does not (the reviewer reads it beside the verdict)
    note: str = ""
    pooled: dict | None = None  # the pooled recording check only: what it pooled, heterogeneity, own estimate
    # the test's figures rest on a count of 1-7 (the group's patients or outcomes, its true positives,
    # the reference's, a recording check's observed count): judged all the same, but its estimate,
    # p-values and detectable ratio are withheld wherever it is published (the count could be solved
    # back from them: an observed / expected times the expected is the observed count)
    withheld: bool = False

    @property
    def judged(self) -> bool:
        return math.isfinite(self.p_value)

    def as_dict(self) -> dict:
        def r(x, d=4):
            return None if x is None or not math.isfinite(x) else round(float(x), d)
        return {"outcome": self.outcome, "group": self.group, "check": self.check, "harm": self.side,
                "margin": list(self.margin), "estimate": self.estimate.as_dict(), "shrunk": r(self.shrunk),
                "p_value": r(self.p_value, 6), "adjusted_p_value": r(self.adjusted_p, 6),
                "minimum_detectable_ratio": r(self.detectable), "small_group": self.small, "verdict": self.verdict,
                **({"from_counts": True} if self.count_based else {}),
                **({"note": self.note} if self.note else {}),
                **({"pooled": self.pooled} if self.pooled is not None else {})}

    def published(self) -> dict:
        """``as_dict`` as it may leave the pipeline (the report's JSON and HTML, MLflow): the figures
        to 3 significant figures, and none at all where the test is ``withheld`` (the verdict stays)."""
        out = self.as_dict()
        out["withheld"] = self.withheld
        if self.withheld:
            out.update({"estimate": None, "shrunk": None, "p_value": None, "adjusted_p_value": None,
                        "minimum_detectable_ratio": None, "withheld_reason": WITHHELD})
            if self.pooled is not None:
                out["pooled"] = {"pooled": [{"outcome": p["outcome"], "check": p["check"]} for p in self.pooled["pooled"]],
                                 "pooled_fails": self.pooled["pooled_fails"],
                                 "degrees_of_freedom": self.pooled["degrees_of_freedom"]}
            return out
        out["estimate"] = {k: significant(v) for k, v in out["estimate"].items()}
        for key in ("shrunk", "minimum_detectable_ratio"):
            out[key] = significant(out[key])
        if self.pooled is not None:
            pooled = dict(self.pooled)
            pooled["pooled"] = [{**p, "ratio": significant(p["ratio"])} for p in pooled["pooled"]]
            pooled["own_ratio"] = significant(pooled["own_ratio"])
            if pooled["own_ratio_interval"] is not None:
                pooled["own_ratio_interval"] = [significant(x) for x in pooled["own_ratio_interval"]]
            out["pooled"] = pooled
        return out


@dataclass
class GateResult:
    outcome: str
    findings: list[Finding] = field(default_factory=list)
    tests: list[GateTest] = field(default_factory=list)
    signoff: SignOff | None = None  # set by the decision (_decision.py) when a reviewer signed off
    block: Block | None = None  # set by the decision when a reviewer blocked the outcome's list

    @property
    def status(self) -> str:
        levels = [f.level for f in self.findings]
        return max(levels, key=GATE_LEVELS.index) if levels else "PASS"

    @property
    def override(self) -> SignOff | None:
        return self.signoff

    @property
    def accepted(self) -> bool:
        """May this outcome's model become champion and its list go out? PASS, or signed off; and
        never while a reviewer blocks it."""
        if self.block is not None:
            return False
        return self.status == "PASS" or (
            self.signoff is not None and GATE_LEVELS.index(self.status) <= GATE_LEVELS.index(self.signoff.accepts))

    def label(self) -> str:
        if self.block is not None:
            return f"{self.status} (blocked by {self.block.reviewer})"
        if self.status != "PASS" and self.accepted:
            return f"{self.status} (signed off by {self.signoff.reviewer})"
        if self.status != "PASS":
            return f"{self.status} (not signed off)"
        return self.status


def worst(results: list[GateResult]) -> str:
    return max((r.status for r in results), key=GATE_LEVELS.index, default="PASS")


def _fmt(estimate: Estimate) -> str:
    return f"{estimate.value:.2f} (95% CI {estimate.low:.2f}-{estimate.high:.2f})"


def _log_and_se(estimate: Estimate | None, level: float) -> tuple[float, float]:
    if estimate is None or not (math.isfinite(estimate.value) and math.isfinite(estimate.low)
                                and math.isfinite(estimate.high)):
        return float("nan"), float("nan")
    low, value, high = (math.log(max(x, FLOOR)) for x in (estimate.low, estimate.value, estimate.high))
    se = (high - low) / (2 * stats.norm.ppf(0.5 + level / 2))
    return value, se if se > 0 else float("nan")


def _expected_outcomes(row: GroupResults) -> float:
    """The group's outcomes expected by the score over its patients' own follow-up, as its
    observed / expected estimate carries them (_audit.audit_performance: a patient who died or
    left before the horizon's end is expected to have had only part of its risk, as its recorded
    outcomes could only have been recorded while followed); where the audit had no follow-up (a
    scored table; an audit saved before 2026-12-02 evening), its mean predicted risk times its
    patients."""
    calibration = row.figure(Figure.OBSERVED_EXPECTED)
    if calibration is not None and calibration.counted:
        return calibration.expected
    risk = row.figure(Figure.MEAN_PREDICTED_RISK)
    return (risk.value if risk is not None and math.isfinite(risk.value) else 0.0) * row.counts.patients


def _count_based(check: str, row: GroupResults, reference: GroupResults | None,
                 population: GroupResults | None) -> tuple[float, float]:
    """Log ratio and standard error from the counts, with a continuity correction of 0.5: used
    where the bootstrap interval collapses (no outcomes, or none selected, in every replicate),
    so that a group with no events where many were expected is still judged."""
    c = row.counts
    if check == "calibration":
        expected = _expected_outcomes(row)
        if expected <= 0:
            return float("nan"), float("nan")
        return math.log((c.events + 0.5) / (expected + 0.5)), math.sqrt(1 / (c.events + 0.5))
    if check == "sensitivity ratio" and reference is not None:
        r = reference.counts
        if not c.events or not r.events:
            # no recorded outcome, no sensitivity: nothing to judge. (With 0.5 added to 0 of 0 it
            # read as 1, and the group's share of the variance, 1 / 0.5 - 1 / 0.5, vanished: a
            # ratio of 1 over the reference's sensitivity, with the reference's small standard
            # error, drew every other group to it in the shrinkage and was "surely above" the
            # margin: the 12,000-patient demo's CVD, "Black is nan (95% CI nan-nan); 3.00 after
            # shrinkage: surely above 1.25".)
            return float("nan"), float("nan")
        return _log_sensitivity(c) - _log_sensitivity(r), \
            math.sqrt(_log_sensitivity_variance(c) + _log_sensitivity_variance(r))
    if check == "need-adjusted selection" and population is not None:
        # (the group's share of the expected outcomes) / (its share of the recorded ones): the
        # selected shares cancel (_audit.audit_performance); the expected counts are the score's
        p = population.counts
        expected, population_expected = _expected_outcomes(row), _expected_outcomes(population)
        if not p.events or expected <= 0 or population_expected <= 0:
            return float("nan"), float("nan")
        log = math.log(expected / population_expected) - math.log((c.events + 0.5) / p.events)
        return log, math.sqrt(1 / (c.events + 0.5))
    return float("nan"), float("nan")


def _served_beyond_exactly(row: GroupResults, reference: GroupResults | None, margin: tuple[float, float]) -> float:
    """The exact one-sided p that a group's sensitivity is no more than the margin times the
    reference group's: its true positives of its recorded outcomes, binomial at that sensitivity
    (the reference's, from hundreds of outcomes, taken as known). A group with two or three
    outcomes, all selected, keeps a bootstrap interval whose width is the reference's alone (its
    own sensitivity is 1 in every replicate): read as normal, 2 of 2 against White's 1/3 was
    "surely above 1.25" (3.01, 2.76-3.30), where exactly P(2 of 2 | 0.42) = 0.17."""
    if reference is None or not row.counts.events or not reference.counts.events:
        return float("nan")
    at_margin = min(1.0, margin[1] * reference.counts.true_positives / reference.counts.events)
    return float(stats.binom.sf(row.counts.true_positives - 1, row.counts.events, at_margin))


def _log_sensitivity(counts) -> float:
    """log of true positives over recorded outcomes with the Haldane-Anscombe correction (0.5
    added to the true positives and to the missed), so that none of all, or all of a few, is a
    finite figure with a finite variance."""
    return math.log((counts.true_positives + 0.5) / (counts.events + 1))


def _log_sensitivity_variance(counts) -> float:
    """Its delta-method variance, 1 / (tp + 0.5) - 1 / (n + 1): above 0 even where every outcome
    was selected (3 of 3 is not a sensitivity known to be 1)."""
    return 1 / (counts.true_positives + 0.5) - 1 / (counts.events + 1)


def _exact_from_validation(check: str, side: str, margin: tuple[float, float], row: GroupResults,
                           population: GroupResults | None) -> float:
    """The exact test of calibration and need-adjusted selection from the group's validation counts
    (NaN where they do not say: the bootstrap's normal test stands).

    Both are a count of recorded outcomes against the count the score expects: calibration the
    group's outcomes over its expected (Poisson: a sum of independent outcomes, each rarer than 1 in
    2, varies no more than a Poisson count of the same mean); need-adjusted selection the group's
    share of the population's recorded outcomes over its share of the expected ones (binomial, given
    the population's outcomes). With a dozen outcomes the bootstrap's interval, read as normal on the
    log scale, is too sure: a group of 38 validation patients with 10 outcomes where 4.3 were
    expected gave p 0.006 against 0.8, exactly 0.034 (docs/fairness.md, "Exact tests")."""
    observed, expected = row.counts.events, _expected_outcomes(row)
    if observed is None or not expected > 0:
        return float("nan")
    low, high = margin
    if check == "calibration":
        above = stats.poisson.sf(observed - 1, high * expected) if observed > 0 else 1.0
        below = stats.poisson.cdf(observed, low * expected)
    elif check == "need-adjusted selection" and population is not None:
        total, total_expected = population.counts.events, _expected_outcomes(population)
        if not total or not total_expected > 0:
            return float("nan")
        share = expected / total_expected  # the group's share of the outcomes the score expects
        # the ratio is expected share over recorded share: below ``low`` (under-served) when the
        # group's share of the recorded outcomes is above share / low, above ``high`` when below
        below = stats.binom.sf(observed - 1, total, min(1.0, share / low)) if observed > 0 else 1.0
        above = stats.binom.cdf(observed, total, min(1.0, share / high))
    else:
        return float("nan")
    if side == "above":
        return float(above)
    if side == "below":
        return float(below)
    return float(min(1.0, 2 * min(above, below)))


def shrink(values: np.ndarray, ses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Empirical-Bayes (DerSimonian-Laird) shrinkage of estimates towards their weighted mean.

    Returns the shrunk estimates and their standard errors (including the mean's uncertainty).
    Fewer than 3 estimates: returned unchanged."""
    ok = np.isfinite(values) & np.isfinite(ses) & (ses > 0)
    out, out_se = values.copy(), ses.copy()
    if ok.sum() < 3:
        return out, out_se
    y, v = values[ok], ses[ok] ** 2
    w = 1 / v
    mean = (w * y).sum() / w.sum()
    q = (w * (y - mean) ** 2).sum()
    tau2 = max(0.0, (q - (y.size - 1)) / (w.sum() - (w * w).sum() / w.sum()))
    w_star = 1 / (v + tau2)
    mean_star = (w_star * y).sum() / w_star.sum()
    mean_var = 1 / w_star.sum()
    b = v / (v + tau2) if tau2 > 0 else np.ones_like(v)
    out[ok] = mean_star + (1 - b) * (y - mean_star)
    out_se[ok] = np.sqrt((1 - b) * v + b * b * mean_var)
    return out, out_se


def _p_value(log_value: float, se: float, side: str, margin: tuple[float, float]) -> float:
    """One-sided p of "no worse than the margin" (two one-sided tests for harm both ways)."""
    if not (math.isfinite(log_value) and math.isfinite(se) and se > 0):
        return float("nan")
    below = stats.norm.cdf((log_value - math.log(margin[0])) / se)
    above = stats.norm.sf((log_value - math.log(margin[1])) / se)
    if side == "below":
        return float(below)
    if side == "above":
        return float(above)
    return float(min(1.0, 2 * min(below, above)))


def _detectable(se: float, side: str, margin: tuple[float, float], alpha: float, power: float) -> float:
    """The ratio on the harmful side that the test would detect with the given power."""
    if not (math.isfinite(se) and se > 0):
        return float("nan")
    alpha = alpha / 2 if side == "both" else alpha
    distance = (stats.norm.ppf(1 - alpha) + stats.norm.ppf(power)) * se
    return margin[1] * math.exp(distance) if side == "above" else margin[0] * math.exp(-distance)


def adjust(p_values: np.ndarray, method: str) -> np.ndarray:
    """Holm's step-down (family-wise error) or Benjamini-Hochberg (false discovery rate)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if not m:
        return out
    values = p[ok]
    order = np.argsort(values)
    ranked = values[order]
    if method != "holm":
        out[ok] = stats.false_discovery_control(values, method="bh")
        return out
    adjusted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * ranked))
    result = np.empty(m)
    result[order] = adjusted
    out[ok] = result
    return out


def _groups(audit: ScoreAudit, kind: str) -> dict[str, GroupResults]:
    return {g.labels["group"]: g for g in audit.by_group("ethnicity", kind)}


def _population(audit: ScoreAudit, kind: str) -> GroupResults | None:
    return next(iter(audit.by_group("population", kind)), None)


def _rests_on_few(check: str, row: GroupResults, reference: GroupResults | None, estimate: Estimate,
                  secondary: dict[str, set[str]]) -> bool:
    """Does the test's figure rest on a count of 1-7, or on one the report suppresses to protect
    another cell (``secondary``: group -> its counts suppressed so)? The group's patients and outcomes
    always; the sensitivity ratio also on the group's and the reference's true positives and missed
    outcomes; a recording check (a standardised count) on its observed count. Such a test is judged
    all the same (``GateTest.withheld``: only what is published changes)."""
    names = [Count.PATIENTS, Count.EVENTS]
    rows = [row]
    if check == "sensitivity ratio":
        names += [Count.TRUE_POSITIVES, Count.MISSED]
        rows += [reference] if reference is not None else []
    for r in rows:
        if any(small(r.counts.get(n)) or n in secondary.get(r.labels["group"], ()) for n in names):
            return True
    return estimate.counted and small(round(estimate.observed))


def _tests(audit: ScoreAudit, settings: AuditSettings) -> list[GateTest]:
    tests, exact = [], {}
    groups = {"performance": _groups(audit, "performance"), "selection": _groups(audit, "selection")}
    populations = {"performance": _population(audit, "performance"), "selection": _population(audit, "selection")}
    # the counts the report suppresses beyond 1-7 (secondary suppression of the ethnicity grouping)
    secondary = {}
    for kind, rows in groups.items():
        extra = secondary_suppression(list(rows.values()))
        secondary[kind] = {name: extra[i] for i, name in enumerate(rows)}
    for check, (kind, compared, figure, side) in CHECKS.items():
        if check in RISK_CHECKS and not audit.score_is_risk:
            continue
        if check == "need-adjusted selection" and settings.fail_when_over_served:
            side = "both"
        margin = (1 / settings.need_ratio_limit, settings.need_ratio_limit) if check.startswith("label choice") \
            else settings.ratio_band
        for group, row in sorted(groups[kind].items()):
            if compared is Compared.RATIO_TO_REFERENCE and group == settings.reference_group:
                continue
            estimate = row.figure(figure) if compared is None else row.compared(compared, figure)
            if estimate is None:
                continue
            test = GateTest(audit.name, group, check, side, margin, estimate, small=row.too_small,
                            withheld=_rests_on_few(check, row, groups[kind].get(settings.reference_group), estimate,
                                                   secondary[kind]))
            test.log_value, test.se = _log_and_se(estimate, settings.level)
            if not (math.isfinite(test.se) and math.isfinite(test.log_value)):
                test.log_value, test.se = _count_based(check, row, groups[kind].get(settings.reference_group),
                                                       populations[kind])
                test.count_based = True
            if check == "sensitivity ratio":
                test.served_p = _served_beyond_exactly(row, groups[kind].get(settings.reference_group), margin)
            if math.isfinite(test.se):
                tests.append(test)
                exact[id(test)] = _exact_from_validation(check, side, margin, row, populations[kind])
    # empirical Bayes, per check, across the groups
    for check in CHECKS:
        part = [t for t in tests if t.check == check]
        shrunk, shrunk_se = shrink(np.array([t.log_value for t in part]), np.array([t.se for t in part])) \
            if settings.shrinkage else (np.array([t.log_value for t in part]), np.array([t.se for t in part]))
        for t, value, se in zip(part, shrunk, shrunk_se, strict=True):
            t.shrunk, t.shrunk_se = (math.exp(value) if math.isfinite(value) else float("nan")), se
            t.p_value = _p_value(t.log_value, t.se, t.side, t.margin)
            if math.isfinite(exact.get(id(t), float("nan"))):
                t.p_value = exact[id(t)]
            elif t.side == "above" and t.estimate.counted:
                # a standardised count (the recording checks) is tested exactly, as its interval is
                # (docs/fairness.md, "Exact tests of the recording checks")
                t.p_value = exact_p_value(t.estimate.observed, t.estimate.expected, t.margin[1])
            t.detectable = _detectable(t.se, t.side, t.margin, 1 - settings.level, settings.power)
    return tests


def _surely_served_beyond(t: GateTest, alpha: float) -> bool:
    """Beyond the margin on the side that is not harm (a group served beyond its share), surely:
    by the group's own estimate at ``alpha``, and still beyond after shrinkage.

    The group's own evidence decides, not the shrunk estimate's: where the groups' estimates agree
    within chance, shrinkage pulls every group to their common mean with that mean's small standard
    error, and testing that would call every group "surely" beyond whatever its own figure (the
    demo's T2D sensitivity ratios: Mixed 0.78 (0.00-1.62) became "1.66 after shrinkage", one of six
    such WARNs). The groups it displaces show their own low ratios.

    Nor does a stand-in read from the counts where the bootstrap's interval collapsed
    (``count_based``): it is there so that a group with no outcomes where many were expected is
    still judged for harm, and a continuity correction is no evidence that a group with every one of
    its two or three outcomes selected is served beyond its share."""
    if t.side == "both" or t.count_based or not (math.isfinite(t.shrunk) and math.isfinite(t.log_value)):
        return False
    safe_side = "above" if t.side == "below" else "below"
    beyond = t.shrunk > t.margin[1] if safe_side == "above" else t.shrunk < t.margin[0]
    own = _p_value(t.log_value, t.se, safe_side, t.margin)
    if math.isfinite(t.served_p):  # a sensitivity ratio: the group's own counts, exactly, as well
        own = max(own, t.served_p)
    return beyond and own <= alpha


def _published_effect_note(group: str, effect: float) -> str:
    """Why a group surely below the label-choice margin is no group served beyond: its need
    measure cannot carry the group's published effect that the score carries (ScoreAudit.
    need_lacks_effect). Without it every fair hypertension run WARNed for Black patients (the demo:
    0.50, 95% CI 0.47-0.54), where the answer key puts their true risk at the same score at about
    1.1 times the expected (docs/fairness.md, "The label-choice check")."""
    return (f"below the margin as expected: the score carries {group} patients' published effect "
            f"({math.exp(effect):.2f} times the hazard at the same readings), which the need measure "
            "cannot; not a group served beyond its share")


def judge_all(audits: list[ScoreAudit], settings: AuditSettings,
              missing_ethnicity_share: float | None) -> list[GateResult]:
    """Every outcome's gate result from one family of tests over all of them."""
    results = [GateResult(a.name) for a in audits]
    all_tests = [t for audit, result in zip(audits, results, strict=True)
                 for t in _store(result, _tests(audit, settings))]
    families: dict[tuple, list[GateTest]] = {}
    for t in all_tests:
        key = {"check": (t.outcome, t.check), "outcome": (t.outcome,), "run": ()}[settings.family]
        families.setdefault(key, []).append(t)
    for family in families.values():
        for t, p in zip(family, adjust(np.array([t.p_value for t in family]), settings.family_control), strict=True):
            t.adjusted_p = float(p)
    alpha = 1 - settings.level
    lacks = {a.name: a.need_lacks_effect for a in audits}
    for t in all_tests:
        p = t.adjusted_p
        harmful = (t.side in ("below", "both") and t.shrunk < t.margin[0]) or \
            (t.side in ("above", "both") and t.shrunk > t.margin[1])
        if math.isfinite(p) and p <= alpha and harmful:
            t.verdict = "FAIL"
        elif harmful:
            t.verdict = "WARN"
        elif _surely_served_beyond(t, alpha):
            effect = lacks.get(t.outcome, {}).get(t.group) if t.check == "label choice" else None
            if effect is None:
                t.verdict, t.served_beyond = "WARN", True
            else:
                t.note = _published_effect_note(t.group, effect)
    if settings.pool_recording:
        # after every other test is judged, in a family of its own: nothing above moves
        for result, tests in zip(results, _pooled_recording(all_tests, [a.name for a in audits], settings),
                                 strict=True):
            result.tests = result.tests + tests
    for audit, result in zip(audits, results, strict=True):
        _findings(audit, result, settings, missing_ethnicity_share)
    return results


def _inverse_variance(values: np.ndarray, ses: np.ndarray) -> tuple[float, float, float, int]:
    """Fixed-effect (inverse-variance) pool of log ratios: (pooled, its standard error, Cochran's Q,
    degrees of freedom)."""
    w = 1 / ses ** 2
    pooled = float((w * values).sum() / w.sum())
    return pooled, float(math.sqrt(1 / w.sum())), float((w * (values - pooled) ** 2).sum()), values.size - 1


def _pool(evidence: list[GateTest], level: float) -> tuple[Estimate, float, float, list[float]]:
    """One group's treated-without-a-code counts pooled over outcomes: (the pooled estimate, its log,
    the log's standard error, each outcome's weight).

    The evidence is counted (the standardised ratios of _recording.py), so the pool is a standardised
    ratio: the uncoded patients of every outcome over the number expected of every outcome, with the
    exact interval and, in the gate, the exact test; each outcome weighs by its expected count (the
    Mantel-Haenszel weights of a standardised ratio). Inverse-variance weighting of the log ratios
    taken from the intervals gave a handful of patients the normal test's too small p-values."""
    expected = [t.estimate.expected for t in evidence]
    estimate = standardised_ratio(round(sum(t.estimate.observed for t in evidence)), sum(expected), level)
    value, se = _log_and_se(estimate, level)
    return estimate, value, se, [e / sum(expected) for e in expected]


def _pooled_recording(tests: list[GateTest], outcomes: list[str], settings: AuditSettings) -> list[list[GateTest]]:
    """The recording checks pooled over outcomes, per group (module docstring, rule 5): one
    GateTest per outcome that contributed evidence and group, in ``outcomes``' order."""
    evidence: dict[str, list[GateTest]] = {}
    for t in tests:
        if t.check in POOLED_CHECKS and t.estimate.counted and math.isfinite(t.log_value) and math.isfinite(t.se) \
                and t.se > 0:
            evidence.setdefault(t.group, []).append(t)
    # a group with evidence from one outcome only: its own checks already judge it
    evidence = {g: part for g, part in evidence.items() if len({t.outcome for t in part}) >= 2}
    groups = sorted(evidence)
    if not groups:
        return [[] for _ in outcomes]
    margin = (1 / settings.need_ratio_limit, settings.need_ratio_limit)
    alpha = 1 - settings.level
    z = stats.norm.ppf(0.5 + settings.level / 2)
    pools = {g: _pool(evidence[g], settings.level) for g in groups}
    values, ses = np.array([pools[g][1] for g in groups]), np.array([pools[g][2] for g in groups])
    shrunk, shrunk_se = shrink(values, ses) if settings.shrinkage else (values, ses)
    p_values = np.array([exact_p_value(pools[g][0].observed, pools[g][0].expected, margin[1]) for g in groups])
    adjusted = adjust(p_values, settings.family_control)
    out: dict[str, list[GateTest]] = {o: [] for o in outcomes}
    for i, group in enumerate(groups):
        estimate, value, se, weights = pools[group]
        _, _, q, df = _inverse_variance(np.array([t.log_value for t in evidence[group]]),
                                        np.array([t.se for t in evidence[group]]))
        fails = bool(adjusted[i] <= alpha and math.exp(shrunk[i]) > margin[1])
        heterogeneity_p = float(stats.chi2.sf(q, df)) if df > 0 else float("nan")
        for outcome in outcomes:
            own = [t for t in evidence[group] if t.outcome == outcome]
            if own:
                own_log, own_se, _, _ = _inverse_variance(np.array([t.log_value for t in own]),
                                                          np.array([t.se for t in own]))
                # the guard: an outcome whose own evidence says its recording is no worse is not blocked
                verdict = "FAIL" if fails and own_log > 0 else "PASS"
                own_figures = {"own_ratio": round(math.exp(own_log), 4),
                               "own_ratio_interval": [round(math.exp(own_log - z * own_se), 4),
                                                      round(math.exp(own_log + z * own_se), 4)]}
                own_small = any(t.small for t in own)
            elif fails:
                # An outcome that gave the pool nothing of its own: its treatment check counted none
                # of the group (no treated patient of the group, or none expected at its ages), so
                # nothing of its own can say its coding differs. Coding completeness is the group's
                # record's (the pool's premise), so its labels share the failure the other outcomes
                # show, and it is FAILed. Until 2026-12-03 such an outcome was skipped: on seed 244
                # `england`, Black coded at 70%, the pool FAILed Black on CVD and hypertension while
                # T2D went out (docs/fairness.md, "Seeds 241-260").
                verdict, own_figures, own_small = "FAIL", {"own_ratio": None, "own_ratio_interval": None}, False
            else:
                continue
            test = GateTest(outcome, group, POOLED_CHECK, "above", margin, estimate, value, se,
                            shrunk=math.exp(shrunk[i]), shrunk_se=float(shrunk_se[i]), p_value=float(p_values[i]),
                            adjusted_p=float(adjusted[i]),
                            detectable=_detectable(se, "above", margin, alpha, settings.power),
                            small=own_small,
                            # the pool lists each outcome's ratio: withheld if any of them, or the pool, rests on 1-7
                            withheld=any(t.withheld for t in evidence[group]) or small(round(estimate.observed)))
            test.verdict = verdict
            test.pooled = {
                "pooled": [{"outcome": t.outcome, "check": t.check, "ratio": round(math.exp(t.log_value), 4),
                            "weight": round(w, 4)} for t, w in zip(evidence[group], weights, strict=True)],
                **own_figures,
                "pooled_fails": fails, "cochran_q": round(q, 4), "degrees_of_freedom": df,
                "heterogeneity_p_value": None if not math.isfinite(heterogeneity_p) else round(heterogeneity_p, 6),
                "i_squared": round(max(0.0, (q - df) / q), 4) if q > 0 else 0.0}
            out[outcome].append(test)
    return [out[o] for o in outcomes]


def _store(result: GateResult, tests: list[GateTest]) -> list[GateTest]:
    result.tests = tests
    return tests


def _findings(audit: ScoreAudit, result: GateResult, settings: AuditSettings,
              missing_ethnicity_share: float | None) -> None:
    outcome, findings = audit.name, result.findings
    family = "Holm" if settings.family_control == "holm" else "Benjamini-Hochberg"
    for t in result.tests:
        if t.verdict == "PASS":
            continue
        what = CHECK_WORDS[t.check]
        low, high = t.margin
        shrunk = f"; {t.shrunk:.2f} after shrinkage" if settings.shrinkage and math.isfinite(t.shrunk) else ""
        # a test resting on a count of 1-7 states its verdict, not its figures (GateTest.withheld)
        value = f"is {_fmt(t.estimate)}{shrunk}" if not t.withheld else \
            f"({WITHHELD} patients, outcomes or true positives)"
        adjusted = f"{family}-adjusted p = {t.adjusted_p:.2g}" if not t.withheld else f"{family}-adjusted"
        if t.verdict == "FAIL":
            message = (f"{outcome}: {what} for {t.group} {value}: surely beyond the margin "
                       f"{low:.2f}-{high:.2f} ({adjusted})")
            if t.check == "label choice":
                message += (f"; label-choice check: at the same score, {t.group} patients are sicker than the "
                            "score says: their outcomes may be under-recorded, so the model under-rates them")
            elif t.check == "label choice (diagnosis gap)":
                message += (f"; label-choice check: {t.group} patients whose readings meet the diagnostic "
                            "threshold go undiagnosed more often than others at the same reading and age: their "
                            "outcomes are under-recorded, so the labels (and any model trained on them) under-state "
                            "their need")
            elif t.check == "label choice (treated, no diagnosis)":
                message += (f"; label-choice check: {t.group} patients on the condition's treatment lack its "
                            "diagnosis code more often than others of the same age: their diagnoses are known and "
                            "treated but not coded, so the labels (and any model trained on them) under-state "
                            "their need")
            elif t.check == POOLED_CHECK and t.withheld:
                message = (f"{outcome}: {what} for {t.group} {value}: surely beyond the margin {high:.2f} "
                           f"({adjusted}, over the groups); label-choice check: {t.group} patients' known (treated) "
                           "diagnoses are coded less completely than others' at the same age across this record's "
                           f"outcomes, so {outcome}'s labels (and any model trained on them) under-state their need")
            elif t.check == POOLED_CHECK:
                pooled = ", ".join(f"{p['outcome']} {p['ratio']:.2f}" for p in t.pooled["pooled"])
                if t.pooled["own_ratio_interval"] is None:
                    own_words = (f"{outcome} gave the pool no evidence of its own (no treated {t.group} patient "
                                 "without a code counted), and its coding is the group's record's")
                else:
                    low_own, high_own = t.pooled["own_ratio_interval"]
                    own_words = f"{outcome}'s own evidence {t.pooled['own_ratio']:.2f} ({low_own:.2f}-{high_own:.2f})"
                message = (f"{outcome}: {what} for {t.group} is {_fmt(t.estimate)}{shrunk}: surely beyond the "
                           f"margin {high:.2f} ({family}-adjusted p = {t.adjusted_p:.2g}, over the groups); pooled: "
                           f"{pooled}; heterogeneity Cochran's Q = {t.pooled['cochran_q']:.1f} on "
                           f"{t.pooled['degrees_of_freedom']} df (I-squared {t.pooled['i_squared']:.0%}); {own_words}; "
                           "label-choice check: "
                           f"{t.group} patients' known (treated) diagnoses are coded less completely than others' at "
                           f"the same age across this record's outcomes, so {outcome}'s labels (and any model trained "
                           "on them) under-state their need")
        elif t.served_beyond:
            side = f"above {high:.2f}" if t.side == "below" else f"below {low:.2f}"
            message = (f"{outcome}: {what} for {t.group} {value}: surely {side}, the side "
                       f"that is not harm: {t.group} is served beyond the margin, and the groups it displaces "
                       "show their own ratios")
        else:
            message = (f"{outcome}: {what} for {t.group} {value}: beyond the margin "
                       f"{low:.2f}-{high:.2f}, but not surely ({adjusted})")
        findings.append(Finding(t.verdict, t.check, outcome, t.group, message))
    performance, selection = _groups(audit, "performance"), _groups(audit, "selection")
    for group in sorted(set(performance) | set(selection)):
        perf, sel = performance.get(group), selection.get(group)
        if (perf is not None and perf.too_small) or (sel is not None and sel.too_small):
            sizes = []
            if perf is not None:
                sizes.append(f"{_size(perf.counts.patients)} validation patients, "
                             f"{_size(perf.counts.events)} recorded outcomes")
            if sel is not None:
                sizes.append(f"{_size(sel.counts.patients)} patients now")
            detectable = [f"{t.check} {t.detectable:.2f}" for t in result.tests
                          if t.group == group and math.isfinite(t.detectable) and t.check != POOLED_CHECK
                          and not t.withheld]
            can = ("; it is judged all the same, and the smallest effects it could show are ratios of "
                   + ", ".join(detectable)) if detectable else "; too few to estimate any ratio"
            findings.append(Finding("WARN", "too small to judge", outcome, group,
                                    f"{outcome}: {group} is too small to judge alone ({'; '.join(sizes)}; fewer than "
                                    f"{settings.min_patients} patients or {settings.min_events} outcomes){can}"))
        if sel is not None and group != settings.reference_group:
            completeness = sel.ratio_to_reference(Figure.MEASUREMENT_COMPLETENESS)
            if completeness is not None and completeness.value < settings.ratio_band[0]:
                # a mean of fewer than MEANS_FROM patients is not published (docs/fairness.md, "Disclosure control")
                times = f"{_fmt(completeness)} times as often as" if sel.counts.patients >= MEANS_FROM else \
                    f"less often than (the figure is withheld: fewer than {MEANS_FROM} patients)"
                findings.append(Finding(
                    "WARN", "measurement gap", outcome, group,
                    f"{outcome}: measurements (blood pressure, BMI, cholesterol, HbA1c) are recorded for "
                    f"{group} patients {times} for {settings.reference_group}: "
                    "their scores rest more on defaulted inputs"))
    if missing_ethnicity_share is not None and missing_ethnicity_share > settings.max_ethnicity_missing:
        findings.append(Finding(
            "WARN", "ethnicity data quality", outcome, "all",
            f"ethnicity data quality: {missing_ethnicity_share:.0%} of patients have no ethnicity recorded "
            f"('Not known'), above {settings.max_ethnicity_missing:.0%}: group figures may mislead"))


def judge(audit: ScoreAudit, settings: AuditSettings, missing_ethnicity_share: float | None) -> GateResult:
    """One outcome judged alone (its own family), with the configured sign-offs applied."""
    from models.fairness._decision import decide

    result = judge_all([audit], settings, missing_ethnicity_share)[0]
    decide([result], settings.signoffs, blocks=settings.blocks)
    return result


def _size(count: int) -> str:
    from phm.disclosure import show

    return show(count)
