"""Fairness audit by ethnicity, with deprivation and sex, and the gate it feeds.

Public API (implementation in the private modules):

- ``audit_score(name, performance, selection, threshold, settings)``: every figure for one
  score, by group and intersection, with intervals (``_audit``).
- ``judge(audit, settings, missing_share)``: the gate's PASS / WARN / FAIL with findings (``_gate``).
- ``ethnicity_quality(frame)``: recording quality overall, by PCN and practice (``_quality``).
- ``need(outcome)``, ``measurements_recorded()``: the label-choice need measures (``_need``).
- ``AuditReport``: JSON and HTML, counts suppressed (``_report``).
- ``AuditSettings``, ``Override``: configuration (``_settings``).
- ``audit_table(spec, settings, out_dir)``, ``TableSpec``: the audit of any scored table (``_table``).
"""

from models.fairness._audit import GroupFigures, GroupingFigures, ScoreAudit, audit_score
from models.fairness._gate import Finding, GateResult, judge, worst
from models.fairness._need import (
    HIGH_NEED_FROM,
    NEED_COLUMNS,
    NEED_DESCRIPTIONS,
    measurements_recorded,
    need,
)
from models.fairness._quality import EthnicityQuality, ethnicity_quality
from models.fairness._report import AuditReport
from models.fairness._settings import AuditSettings, Override
from models.fairness._table import TableSpec, audit_table

__all__ = [
    "HIGH_NEED_FROM", "NEED_COLUMNS", "NEED_DESCRIPTIONS", "AuditReport", "AuditSettings", "EthnicityQuality",
    "Finding", "GateResult", "GroupFigures", "GroupingFigures", "Override", "ScoreAudit", "TableSpec", "audit_score",
    "audit_table",
    "ethnicity_quality", "judge", "measurements_recorded", "need", "worst",
]
