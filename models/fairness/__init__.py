"""Fairness audit by ethnicity, with deprivation and sex, and the gate it feeds.

Public API (implementation in the private modules):

- ``audit_score(name, performance, selection, threshold, settings)``: every figure for one
  score, by group and intersection, with intervals, as a ``ScoreAudit``: typed frames
  (``FIGURES_SCHEMA``, ``GROUPS_SCHEMA``) read through ``by_group``, ``figure``,
  ``ratio_to_reference``; figures and counts are named by ``Figure``, ``Count``, ``Compared``
  (``_audit``).
- ``judge_all(audits, settings, missing_share)``: the gate's PASS / WARN / FAIL per outcome, one
  family of tests (``_gate``); ``judge`` for one score alone.
- ``decide(results, signoffs, blocks=...)``: the one decision, with reviewers' sign-offs and blocks (``_decision``).
- ``ethnicity_quality(frame)``: recording quality overall, by PCN and practice (``_quality``).
- ``need(outcome)``, ``measurements_recorded()``: the label-choice need measures (``_need``).
- ``AuditReport``: JSON and HTML, counts suppressed (``_report``).
- ``AuditSettings``, ``SignOff``, ``Block``: configuration (``_settings``).
- ``audit_table(spec, settings, out_dir)``, ``TableSpec``: the audit of any scored table (``_table``).
"""

from models.fairness._audit import (
    FIGURES_SCHEMA,
    GROUPS_SCHEMA,
    Compared,
    Count,
    Counts,
    Estimate,
    Figure,
    GroupResults,
    ScoreAudit,
    audit_score,
)
from models.fairness._decision import NOT_AUDITED, GateDecision, decide, version_may_be_scored
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
from models.fairness._settings import (
    DEMO_REVIEWER,
    AuditSettings,
    Block,
    Override,
    SignOff,
    demo_signoff,
)
from models.fairness._table import TableSpec, audit_table

__all__ = [
    "NOT_AUDITED",
    "DEMO_REVIEWER", "HIGH_NEED_FROM", "NEED_COLUMNS", "NEED_DESCRIPTIONS", "AuditReport", "AuditSettings", "Block",
    "FIGURES_SCHEMA", "GROUPS_SCHEMA", "Compared", "Count", "Counts", "Estimate", "Figure", "GroupResults",
    "EthnicityQuality", "Finding", "GateDecision", "GateResult", "GateTest",
    "Override", "ScoreAudit", "SignOff", "TableSpec", "audit_score", "audit_table", "decide", "demo_signoff", "ethnicity_quality", "judge",
    "judge_all", "measurements_recorded", "need", "version_may_be_scored", "worst",
]
