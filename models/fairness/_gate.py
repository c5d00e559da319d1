"""The fairness gate: PASS, WARN or FAIL from the audit's figures and the configured rules.

Rules (defaults in _settings.py, explained in docs/fairness.md), for each broad ethnic group
(including 'Not stated' and 'Not known') that is large enough to judge:

FAIL when the interval of
- the sensitivity ratio (group / reference group) at the list's operating point,
- the need-adjusted selection ratio (share of those selected / share of recorded outcomes), or
- the observed/expected ratio
lies wholly outside the ratio band (0.8-1.25) (all three on the validation patients; for the two
selection ratios only below it, unless ``fail_when_over_served``: a group served beyond its
share is a WARN, as the groups it displaces show their own low ratios); or when
the group is surely sicker at the same score on the list's population (label-choice check: the
interval of its need ratio lies wholly above the limit, 1.5).

WARN when one of those point estimates is outside the band but its interval overlaps it; when
a group is too small to judge (fewer than 100 patients or 10 recorded outcomes); when more than
15% of patients have no ethnicity recorded ('Not known'); or when a group's measurements are recorded much less
often than the reference group's (completeness ratio below the band).

A reviewer's override in the configuration can accept a WARN or a FAIL for named outcomes; the
result then reads e.g. "FAIL (accepted by ...)" and is recorded in MLflow with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from models.fairness._audit import GroupFigures, ScoreAudit
from models.fairness._settings import GATE_LEVELS, AuditSettings, Override


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
class GateResult:
    outcome: str
    findings: list[Finding] = field(default_factory=list)
    override: Override | None = None

    @property
    def status(self) -> str:
        levels = [f.level for f in self.findings]
        return max(levels, key=GATE_LEVELS.index) if levels else "PASS"

    @property
    def accepted(self) -> bool:
        """May this outcome's model become champion and its list go out?"""
        return self.status == "PASS" or self.override is not None

    def label(self) -> str:
        if self.override is not None and self.status != "PASS":
            return f"{self.status} (accepted by {self.override.reviewer})"
        return self.status


def worst(results: list[GateResult]) -> str:
    return max((r.status for r in results), key=GATE_LEVELS.index, default="PASS")


def _fmt(estimate) -> str:
    return f"{estimate.value:.2f} (95% CI {estimate.low:.2f}-{estimate.high:.2f})"


def _judge(findings: list[Finding], outcome: str, group: str, rule: str, what: str, estimate,
           low: float, high: float, fail_above: bool = True) -> None:
    """``fail_above`` False: a ratio wholly above the band (the group served more than its
    share) is a WARN, not a FAIL: it is a cost to the other groups, which their own ratios show."""
    if estimate is None:
        return
    if estimate.wholly_outside(low, high):
        level = "FAIL" if fail_above or estimate.high < low else "WARN"
        findings.append(Finding(level, rule, outcome, group,
                                f"{outcome}: {what} for {group} is {_fmt(estimate)}, wholly outside {low}-{high}"))
    elif estimate.outside(low, high):
        findings.append(Finding("WARN", rule, outcome, group,
                                f"{outcome}: {what} for {group} is {_fmt(estimate)}: outside {low}-{high}, "
                                "but the interval overlaps it"))


def judge(audit: ScoreAudit, settings: AuditSettings, missing_ethnicity_share: float | None) -> GateResult:
    result = GateResult(audit.name)
    findings = result.findings
    low, high = settings.ratio_band
    outcome = audit.name
    performance = {g.labels["group"]: g for g in audit.grouping("performance", "ethnicity").groups} \
        if audit.performance else {}
    selection = {g.labels["group"]: g for g in audit.grouping("selection", "ethnicity").groups}
    for group in sorted(set(performance) | set(selection)):
        perf: GroupFigures | None = performance.get(group)
        sel: GroupFigures | None = selection.get(group)
        if (perf is not None and perf.too_small) or (sel is not None and sel.too_small):
            sizes = []
            if perf is not None:
                sizes.append(f"{_size(perf.counts['patients'])} validation patients, "
                             f"{_size(perf.counts['events'])} recorded outcomes")
            if sel is not None:
                sizes.append(f"{_size(sel.counts['patients'])} patients now")
            findings.append(Finding("WARN", "too small to judge", outcome, group,
                                    f"{outcome}: {group} is too small to judge ({'; '.join(sizes)}; needs at "
                                    f"least {settings.min_patients} patients and {settings.min_events} outcomes)"))
        if perf is not None and not perf.too_small:
            if group != settings.reference_group:
                _judge(findings, outcome, group, "sensitivity ratio",
                       f"sensitivity relative to {settings.reference_group}", perf.vs_reference.get("sensitivity"),
                       low, high, settings.fail_when_over_served)
            _judge(findings, outcome, group, "observed/expected", "observed/expected",
                   perf.figures.get("observed_expected"), low, high)
        if perf is not None and not perf.too_small:
            _judge(findings, outcome, group, "need-adjusted selection",
                   "need-adjusted selection (share selected / share of recorded outcomes)",
                   perf.figures.get("need_adjusted_selection"), low, high, settings.fail_when_over_served)
        if sel is not None and not sel.too_small:
            need = sel.figures.get("need_at_same_score")
            if need is not None and need.low > settings.need_ratio_limit:
                findings.append(Finding(
                    "FAIL", "label choice", outcome, group,
                    f"{outcome}: label-choice check: at the same score, {group} patients have "
                    f"{_fmt(need)} times the need expected, surely above {settings.need_ratio_limit}: "
                    "their outcomes may be under-recorded, so the model under-rates them"))
            elif need is not None and need.value > settings.need_ratio_limit:
                findings.append(Finding(
                    "WARN", "label choice", outcome, group,
                    f"{outcome}: label-choice check: at the same score, {group} patients have "
                    f"{_fmt(need)} times the need expected (above {settings.need_ratio_limit}, interval overlaps)"))
            if group != settings.reference_group:
                completeness = sel.vs_reference.get("measurement_completeness")
                if completeness is not None and completeness.value < low:
                    findings.append(Finding(
                        "WARN", "measurement gap", outcome, group,
                        f"{outcome}: measurements (blood pressure, BMI, cholesterol, HbA1c) are recorded for "
                        f"{group} patients {_fmt(completeness)} times as often as for {settings.reference_group}: "
                        "their scores rest more on defaulted inputs"))
    if missing_ethnicity_share is not None and missing_ethnicity_share > settings.max_ethnicity_missing:
        findings.append(Finding(
            "WARN", "ethnicity data quality", outcome, "all",
            f"ethnicity data quality: {missing_ethnicity_share:.0%} of patients have no ethnicity recorded "
            f"('Not known'), above {settings.max_ethnicity_missing:.0%}: group figures may mislead"))
    for override in settings.overrides:
        if override.covers(outcome) and result.status != "PASS" and \
                GATE_LEVELS.index(result.status) <= GATE_LEVELS.index(override.accepts):
            result.override = override
            break
    if result.override is None and result.status == "WARN" and settings.accept_warn:
        result.override = Override("the accept_warn setting",
                                   "WARN results are accepted by the configured default", "WARN")
    return result


def _size(count: int) -> str:
    from phm.disclosure import show

    return show(count)
