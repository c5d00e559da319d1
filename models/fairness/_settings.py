"""The audit's settings and the gate's rules, with their documented defaults.

Loaded from the ``[audit]`` table of the run configuration by ``flows/config.py``, which names
any key it rejects. docs/fairness.md explains each default.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from phm.exceptions import ConfigError

GATE_LEVELS = ("PASS", "WARN", "FAIL")


@dataclass(frozen=True)
class Override:
    """A reviewer's acceptance of a gate result, recorded in MLflow with the audit."""

    reviewer: str
    reason: str
    accepts: str = "FAIL"  # the worst result it accepts: "WARN" or "FAIL"
    outcomes: tuple[str, ...] = ("*",)  # outcomes it covers; "*" = all

    def covers(self, outcome: str) -> bool:
        return "*" in self.outcomes or outcome in self.outcomes

    def validate(self, where: str) -> None:
        if not self.reviewer.strip():
            raise ConfigError(f"{where}.reviewer: name the reviewer who accepts the result")
        if len(self.reason.strip()) < 10:
            raise ConfigError(f"{where}.reason: give the reason for the override (at least 10 characters)")
        if self.accepts not in ("WARN", "FAIL"):
            raise ConfigError(f"{where}.accepts: must be WARN or FAIL, not {self.accepts!r}")


@dataclass(frozen=True)
class AuditSettings:
    replicates: int = 1000  # bootstrap replicates
    seed: int = 42
    level: float = 0.95  # confidence level of every interval
    reference_group: str = "White"  # the comparison group for ratios and differences
    ratio_band: tuple[float, float] = (0.8, 1.25)  # ratios inside it are judged equitable
    need_ratio_limit: float = 1.5  # label choice: FAIL when a group is surely this much sicker at the same score
    min_patients: int = 100  # groups smaller than this are "too small to judge" (WARN)
    min_events: int = 10  # ... or with fewer recorded outcomes than this
    max_ethnicity_missing: float = 0.15  # WARN when more than this share has no stated ethnicity
    capacity_share: float = 0.10  # list capacity as a share of eligible patients (until lists set it)
    fail_when_over_served: bool = False  # FAIL also when a selection ratio is wholly above the band
    accept_warn: bool = True  # a WARN still moves 'champion' (and lets lists out), recorded as such
    overrides: tuple[Override, ...] = field(default_factory=tuple)

    def validate(self) -> None:
        low, high = self.ratio_band
        checks = [
            (self.replicates >= 1000, "audit.replicates: at least 1000 bootstrap replicates (the default)"),
            (0.5 < self.level < 1, "audit.level: a confidence level between 0.5 and 1 (default 0.95)"),
            (0 < low < 1 < high, "audit.ratio_band: [low, high] with low < 1 < high (default [0.8, 1.25])"),
            (self.need_ratio_limit > 1, "audit.need_ratio_limit: above 1 (default 1.5)"),
            (self.min_patients >= 8, "audit.min_patients: at least 8 (default 100)"),
            (self.min_events >= 1, "audit.min_events: at least 1 (default 10)"),
            (0 <= self.max_ethnicity_missing <= 1, "audit.max_ethnicity_missing: a share in [0, 1] (default 0.15)"),
            (0 < self.capacity_share < 1, "audit.capacity_share: a share in (0, 1) (default 0.1)"),
            (bool(self.reference_group.strip()), "audit.reference_group: name a group (default White)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        for i, override in enumerate(self.overrides):
            override.validate(f"audit.override[{i}]")
