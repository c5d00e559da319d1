"""Fairness audit by ethnicity, with deprivation and sex, and the gate it feeds.

Public API (implementation in the private modules):

- ``audit_score(name, performance, selection, threshold, settings)``: every figure for one
  score, by group and intersection, with intervals (``_audit``).
- ``judge_all(audits, settings, missing_share)``: the gate's PASS / WARN / FAIL per outcome, one
  family of tests (``_gate``); ``judge`` for one score alone.
- ``decide(results, signoffs)``: the one decision, with reviewers' sign-offs (``_decision``).
- ``ethnicity_quality(frame)``: recording quality overall, by PCN and practice (``_quality``).
- ``need(outcome)``, ``measurements_recorded()``: the label-choice need measures (``_need``).
- ``AuditReport``: JSON and HTML, counts suppressed (``_report``).
- ``AuditSettings``, ``SignOff``: configuration (``_settings``).
"""

from models.fairness._audit import GroupFigures, GroupingFigures, ScoreAudit, audit_score
from models.fairness._decision import GateDecision, decide, version_may_be_scored
from models.fairness._gate import Finding, GateResult, GateTest, judge, judge_all, worst
from models.fairness._need import (
    HIGH_NEED_FROM,
    NEED_COLUMNS,
    NEED_DESCRIPTIONS,
    measurements_recorded,
    need,
)
from models.fairness._quality import EthnicityQuality, ethnicity_quality
from models.fairness._report import AuditReport
from models.fairness._settings import DEMO_REVIEWER, AuditSettings, Override, SignOff, demo_signoff

__all__ = [
    "DEMO_REVIEWER", "HIGH_NEED_FROM", "NEED_COLUMNS", "NEED_DESCRIPTIONS", "AuditReport", "AuditSettings",
    "EthnicityQuality", "Finding", "GateDecision", "GateResult", "GateTest", "GroupFigures", "GroupingFigures",
    "Override", "ScoreAudit", "SignOff", "audit_score", "decide", "demo_signoff", "ethnicity_quality", "judge",
    "judge_all", "measurements_recorded", "need", "version_may_be_scored", "worst",
]
