"""Alerts: the conditions an ICS population health unit is told about, and their messages.

Prefect does the telling (flows/alerts.py): the flow emits an event for each condition below
that Prefect does not see by itself, one automation per ICB and condition matches it, and a
notification block (a webhook, Slack or Teams) sends the message. A failed or crashed run is
Prefect's own event (``prefect.flow-run.Failed`` / ``Crashed``).

Every message names the ICB, the condition and where to look (the report, the lists' folder,
the Prefect run), and carries no patient-level value: only dates of the extract, outcome names,
table and rule names, and shares of a whole table or ICB, rounded to a whole per cent (this
module builds the text from exactly those, nothing else reaches it).

Data-quality thresholds are ``[alerts]`` of the run configuration (flows/config.py)::

    [alerts]
    min_ethnicity_recorded_share = 0.80   # share of the ICB's patients with an ethnicity recorded
    max_quarantined_share = 0.01          # share of any table's rows quarantined by its own rules

80%: England's GP records have an ethnicity code for about 90% of registered patients (Z 'not
stated' and 99 'not known' excluded); under 80% the audit's group figures rest on a population
noticeably different from the ICB's (the gate itself WARNs above 15% 'not known',
``[audit] max_ethnicity_missing``). 1%: a well-formed extract quarantines a handful of rows per
table (an impossible date, an implausible reading); a per cent means a supplier fault worth a
look long before ingest refuses the extract (``[ingest] max_quarantined_share``, 50%).

Score drift (``drift``) is judged in phm/history.py: a score's population stability index in a
broad ethnic group against the ICB's previous run above ``max_score_psi`` (0.2), for groups of
at least ``min_drift_group`` patients (500) in both runs; its message carries the score, the
group and the PSI (one number over hundreds of patients), nothing else.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from phm.exceptions import ConfigError
from phm.history import DEFAULT_MAX_PSI, DEFAULT_MIN_GROUP

RUN_FAILED, GATE_FAIL, GATE_WARN, STALE_EXTRACT, DATA_QUALITY, DRIFT = (
    "run_failed", "gate_fail", "gate_warn", "stale_extract", "data_quality", "drift")
CONDITIONS = (RUN_FAILED, GATE_FAIL, GATE_WARN, STALE_EXTRACT, DATA_QUALITY, DRIFT)

# The events the flow emits (Prefect's own flow-run events cover RUN_FAILED).
EVENTS = {
    GATE_FAIL: "phm.fairness-gate.fail",
    GATE_WARN: "phm.fairness-gate.awaiting-signoff",
    STALE_EXTRACT: "phm.extract.stale",
    DATA_QUALITY: "phm.data-quality.below-threshold",
    DRIFT: "phm.scores.drift",
}
TITLES = {
    RUN_FAILED: "run failed",
    GATE_FAIL: "fairness gate FAIL",
    GATE_WARN: "fairness gate WARN awaiting a reviewer's sign-off",
    STALE_EXTRACT: "stale extract",
    DATA_QUALITY: "data quality below threshold",
    DRIFT: "score drift between runs",
}

DEFAULT_MIN_ETHNICITY_RECORDED = 0.80
DEFAULT_MAX_QUARANTINED = 0.01


@dataclass(frozen=True)
class AlertThresholds:
    """``[alerts]`` of the run configuration: when the flow reports data quality as an alert."""

    min_ethnicity_recorded_share: float = DEFAULT_MIN_ETHNICITY_RECORDED
    max_quarantined_share: float = DEFAULT_MAX_QUARANTINED
    max_score_psi: float = DEFAULT_MAX_PSI  # drift of a score in a group between runs (phm/history.py)
    min_drift_group: int = DEFAULT_MIN_GROUP  # patients a group needs in both runs to be judged


def thresholds_from(table: dict, where: str = "alerts") -> AlertThresholds:
    known = {f.name for f in dataclasses.fields(AlertThresholds)}
    values = {}
    for key, value in table.items():
        if key not in known:
            raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(sorted(known))}; where alerts "
                              "go is set in the deployments file's [alerts], docs/scheduling.md)")
        default = getattr(AlertThresholds(), key)
        if key == "min_drift_group":
            if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 10_000_000:
                raise ConfigError(f"{where}.{key}: a number of patients, at least 100 (default {default}), "
                                  f"not {value!r}")
            values[key] = value
            continue
        if key == "max_score_psi":
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 10:
                raise ConfigError(f"{where}.{key}: a population stability index above 0 (default {default}; "
                                  f"0.1 some change, 0.25 a significant shift), not {value!r}")
            values[key] = float(value)
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ConfigError(f"{where}.{key}: a share between 0 and 1 (default {default}), not {value!r}")
        values[key] = float(value)
    return AlertThresholds(**values)


def _pct(share: float) -> str:
    return f"{share:.0%}"


@dataclass(frozen=True)
class Alert:
    """One condition for one ICB: what the event carries (``payload``) and the message text."""

    condition: str
    icb: str
    message: str
    where: str  # where to look: a report, the lists' folder
    details: dict = dataclasses.field(default_factory=dict)  # aggregates only: names, dates, shares

    @property
    def event(self) -> str:
        return EVENTS[self.condition]

    @property
    def subject(self) -> str:
        return subject(self.icb, self.condition)

    def payload(self) -> dict:
        return {"condition": self.condition, "title": TITLES[self.condition], "icb": self.icb,
                "message": self.message, "where": self.where, **self.details}


def subject(icb: str, condition: str) -> str:
    return f"phm-risk ICB {icb}: {TITLES[condition]}"


def gate_alerts(icb: str, refused: list[tuple[str, str]], report: str, lists: str) -> list[Alert]:
    """``refused``: (outcome, FAIL or WARN) of each outcome the gate's decision refused."""
    alerts = []
    for status, condition in (("FAIL", GATE_FAIL), ("WARN", GATE_WARN)):
        outcomes = sorted(o for o, s in refused if s == status)
        if not outcomes:
            continue
        what = ("fairness gate FAIL for" if status == "FAIL"
                else "fairness gate WARN, not signed off by a named reviewer, for")
        then = ("a named reviewer may sign it off only with accepts = \"FAIL\"" if status == "FAIL"
                else "a named reviewer signs it off with phm review or [[audit.signoff]] (docs/fairness.md)")
        message = (f"ICB {icb}: {what} {', '.join(outcomes)}. No list was published; the previous lists stay, "
                   f"marked as not replaced. Read the fairness report: {report}; {then}. Lists folder: {lists}")
        alerts.append(Alert(condition, icb, message, report, {"outcomes": outcomes, "gate": status}))
    return alerts


def stale_alert(icb: str, extract_date: str, age_days: int, max_age_days: int, policy: str, lists: str) -> Alert:
    then = ("the run was refused before any work (exit code 10): no list was made and the published lists "
            "stay, marked as not replaced" if policy == "refuse"
            else "the lists were published marked STALE DATA ([run] stale_extract = \"mark\")")
    message = (f"ICB {icb}: the extract is dated {extract_date}, {age_days} days old; the limit is {max_age_days} "
               f"days ([run] max_extract_age_days): {then}. Deliver a newer extract. Lists folder: {lists}")
    return Alert(STALE_EXTRACT, icb, message, lists, {"extract_date": extract_date, "extract_age_days": age_days,
                                                      "max_extract_age_days": max_age_days, "policy": policy})


def quality_alert(icb: str, thresholds: AlertThresholds, ethnicity_recorded: float | None,
                  quarantined: dict[str, tuple[float, str]], report: str) -> Alert | None:
    """``ethnicity_recorded``: the ICB's share with an ethnicity recorded (not Z, not 99);
    ``quarantined``: table -> (share of its rows quarantined by its own rules, the rule most
    broke). None when every measure is within its threshold."""
    findings, details = [], {}
    if ethnicity_recorded is not None and ethnicity_recorded < thresholds.min_ethnicity_recorded_share:
        findings.append(f"ethnicity recorded for {_pct(ethnicity_recorded)} of patients, below "
                        f"{_pct(thresholds.min_ethnicity_recorded_share)} ([alerts] min_ethnicity_recorded_share): "
                        "the fairness audit's group figures rest on fewer patients than they should")
        details["ethnicity_recorded_share"] = round(ethnicity_recorded, 2)
    over = {t: v for t, v in sorted(quarantined.items()) if v[0] > thresholds.max_quarantined_share}
    for table, (share, rule) in over.items():
        findings.append(f"{_pct(share) if share >= 0.005 else 'under 1%'} of the {table} table's rows quarantined, "
                        f"above {_pct(thresholds.max_quarantined_share)} ([alerts] max_quarantined_share); "
                        f"most broke the rule '{rule}'")
    if over:
        details["quarantined_share"] = {t: round(v[0], 2) for t, v in over.items()}
    if not findings:
        return None
    message = (f"ICB {icb}: data quality below threshold: {'; '.join(findings)}. The run went on. "
               f"Where to look: {report} (the ingest's Data Docs, or the run's database; its ingest.quarantine table "
               "lists every quarantined row and the rule it broke)")
    return Alert(DATA_QUALITY, icb, message, report, details)


def drift_alert(icb: str, threshold: float, drifted: list[tuple[str, str, float]], report: str,
                notes: list[str] | None = None) -> Alert | None:
    """``drifted``: (score, broad ethnic group, PSI) of each score whose distribution in a group
    moved more than ``threshold`` since the ICB's previous run. A PSI is one number over a group
    of hundreds of patients (phm/history.py), rounded here to two places; no patient value.
    ``notes``: what may explain it, e.g. what ranks a list changed (phm.history.ranking_changes)."""
    if not drifted:
        return None
    parts = [f"{score} for {'all patients' if group == 'all' else group} (PSI {value:.2f})"
             for score, group, value in sorted(drifted)]
    message = (f"ICB {icb}: score drift between runs: the distribution of {'; '.join(parts)} moved more than "
               f"the threshold {threshold:g} ([alerts] max_score_psi; 0.1 is some change, 0.25 a significant "
               "shift) since the previous run. The run went on. "
               + "".join(f"Note: {n}. " for n in notes or [])
               + "Look for a change in the extract (a practice joined or left, a coding or supplier change) or in "
               "the model before trusting the lists. "
               f"Where to look: the history report {report} (the 'phm history {icb}' experiment in MLflow)")
    groups = sorted({g for _, g, _ in drifted})
    return Alert(DRIFT, icb, message, report, {"drifted": [{"score": s, "group": g, "psi": round(v, 2)}
                                                           for s, g, v in sorted(drifted)],
                                               "groups": groups, "max_score_psi": threshold})


RUN_PAGE = "{ui}/runs/flow-run/{{{{ flow_run.id }}}}"  # Prefect renders flow_run from the event's flow run


def run_failed_body(icb: str, ui: str) -> str:
    """The body template of the run-failed automation (Prefect's Jinja, rendered by the server
    from the flow-run event: the run's name, its state and its page in the UI at ``ui``). The
    state message is left out on purpose: an unexpected error's text is not under phm's control."""
    return (f"ICB {icb}: a phm-risk run ended {{{{ event.resource['prefect.state-name'] }}}} "
            "(flow run '{{ event.resource['prefect.resource.name'] }}'). Where to look: the run's page in the "
            f"Prefect UI, {RUN_PAGE.format(ui=ui)}, names the failed step and its error; the previous lists "
            "stay published. If a 'stale extract' or 'fairness gate' alert came with this one, that is the cause.")


def custom_body(ui: str) -> str:
    """The body template of the flow's own conditions: the flow's message, then the run's page."""
    return "{{ event.payload.message }} Prefect run: " + RUN_PAGE.format(ui=ui)


def ethnicity_recorded_share(groups) -> float | None:
    """``groups``: the ICB's patients' broad ethnic groups (a polars Series); the share recorded
    as the fairness audit counts it ('recorded': neither Z 'not stated' nor 99 'not known')."""
    if groups is None or len(groups) == 0:
        return None
    recorded = (~groups.cast(str).fill_null("Not known").is_in(["Not stated", "Not known"])).sum()
    return int(recorded) / len(groups)


def quarantined_shares(tables) -> dict[str, tuple[float, str]]:
    """``tables``: the ingest report's TableReports; table -> (share of its rows quarantined by
    its own rules, as ``[ingest] max_quarantined_share`` counts them, the rule most broke)."""
    shares = {}
    for t in tables:
        own = t.rows_quarantined - t.rows_quarantined_with_parent
        if t.rows_read and own > 0:
            rule = max(t.quarantine_reasons.items(), key=lambda kv: kv[1])[0] if t.quarantine_reasons else "?"
            shares[t.table] = (own / t.rows_read, rule)
    return shares
