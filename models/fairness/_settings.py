"""The audit's settings and the gate's rules, with their documented defaults.

Loaded from the ``[audit]`` table of the run configuration by ``flows/config.py``, which names
any key it rejects. docs/fairness.md explains each default.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from phm.exceptions import ConfigError

GATE_LEVELS = ("PASS", "WARN", "FAIL")
FAMILY_CONTROLS = ("holm", "fdr")
# what one family of tests is: each outcome's check across its groups (the gate's error rates are
# measured, and asked for, per check), each outcome's checks together, or the whole run
FAMILIES = ("check", "outcome", "run")
DEMO_REVIEWER = "DEMO REVIEWER (phm demo, synthetic data: not a real review)"


@dataclass(frozen=True)
class SignOff:
    """A named reviewer's sign-off on a WARN or FAIL: without one, neither moves ``champion`` nor
    lets a list out. Recorded in MLflow (tags of the audit run and the model version) and in the
    lists' manifest. ``source`` says where it came from: the configuration, ``phm review`` or
    ``phm demo`` (a demo sign-off is labelled as such everywhere it is shown)."""

    reviewer: str
    reason: str
    accepts: str = "WARN"  # the worst result it accepts: "WARN" or "FAIL"
    outcomes: tuple[str, ...] = ("*",)  # outcomes it covers; "*" = all
    source: str = "configuration"

    @property
    def is_demo(self) -> bool:
        return self.source == "phm demo"

    def covers(self, outcome: str) -> bool:
        return "*" in self.outcomes or outcome in self.outcomes

    def validate(self, where: str) -> None:
        if not self.reviewer.strip():
            raise ConfigError(f"{where}.reviewer: name the reviewer who signs off the result")
        if len(self.reason.strip()) < 10:
            raise ConfigError(f"{where}.reason: give the reason for the sign-off (at least 10 characters)")
        if self.accepts not in ("WARN", "FAIL"):
            raise ConfigError(f"{where}.accepts: must be WARN or FAIL, not {self.accepts!r}")

    def as_dict(self) -> dict:
        return {"reviewer": self.reviewer, "reason": self.reason, "accepts": self.accepts,
                "outcomes": list(self.outcomes), "source": self.source}


Override = SignOff  # the name used before sign-offs were required for WARN too


@dataclass(frozen=True)
class Block:
    """A named reviewer's block on outcomes' lists: whatever the gate found (a PASS too) and
    whatever sign-off there is, the outcome's model does not become ``champion`` and its list does
    not go out while the block is in the configuration. For a harm a fairness reviewer sees (in
    MLflow's per-group figures, or the report) that the gate did not judge so: the gate decides
    what it can test; a reviewer can always say no. Recorded like a sign-off (MLflow tags of the
    audit run and the model version, the lists' manifest, the report)."""

    reviewer: str
    reason: str
    outcomes: tuple[str, ...] = ("*",)  # outcomes it blocks; "*" = all
    source: str = "configuration"

    def covers(self, outcome: str) -> bool:
        return "*" in self.outcomes or outcome in self.outcomes

    def validate(self, where: str) -> None:
        if not self.reviewer.strip():
            raise ConfigError(f"{where}.reviewer: name the reviewer who blocks the list")
        if len(self.reason.strip()) < 10:
            raise ConfigError(f"{where}.reason: give the reason for the block (at least 10 characters)")

    def as_dict(self) -> dict:
        return {"reviewer": self.reviewer, "reason": self.reason, "outcomes": list(self.outcomes),
                "source": self.source}


def demo_signoff() -> SignOff:
    return SignOff(DEMO_REVIEWER, "phm demo signs off its own synthetic run so that the whole pipeline can be "
                   "seen end to end; a real run needs a named reviewer ([[audit.signoff]] or phm review)",
                   "FAIL", ("*",), "phm demo")


@dataclass(frozen=True)
class AuditSettings:
    replicates: int = 1000  # bootstrap replicates
    seed: int = 42
    level: float = 0.95  # confidence level of every interval; the family's error rate is 1 - level
    reference_group: str = "White"  # the comparison group for ratios and differences
    ratio_band: tuple[float, float] = (0.8, 1.25)  # the equivalence margin of every ratio check
    need_ratio_limit: float = 1.25  # label choice: the margin for need at the same score (and age)
    family_control: str = "holm"  # multiplicity control of the gate's tests: holm (FWER) or fdr (BH)
    family: str = "check"  # one family: an outcome's check across groups, an outcome, or the run
    shrinkage: bool = True  # empirical-Bayes shrinkage of group estimates before judging them
    # the treatment checks (treated, no diagnosis) pooled per group over outcomes, a family of its
    # own (docs/fairness.md, "The recording checks pooled over outcomes"; the diagnosis gap is not
    # pooled: it also counts disease not yet detected, which differs by condition)
    pool_recording: bool = True
    power: float = 0.8  # for the minimum detectable effect stated for every group
    min_patients: int = 100  # groups smaller than this are also "too small to judge" (WARN), still tested
    min_events: int = 10  # ... or with fewer recorded outcomes than this
    max_ethnicity_missing: float = 0.15  # WARN when more than this share has no stated ethnicity
    capacity_share: float = 0.10  # list capacity as a share of eligible patients (until lists set it)
    fail_when_over_served: bool = False  # FAIL also when a selection ratio is surely above the band
    compare_with_standard: bool = True  # do no harm: a model worse than QRISK3/QDiabetes for a group is not used
    signoffs: tuple[SignOff, ...] = field(default_factory=tuple)
    blocks: tuple[Block, ...] = field(default_factory=tuple)  # [[audit.block]]: a reviewer's no, which nothing overrides

    @property
    def overrides(self) -> tuple[SignOff, ...]:
        return self.signoffs

    def validate(self) -> None:
        low, high = self.ratio_band
        checks = [
            (self.replicates >= 1000, "audit.replicates: at least 1000 bootstrap replicates (the default)"),
            (0.5 < self.level < 1, "audit.level: a confidence level between 0.5 and 1 (default 0.95)"),
            (0 < low < 1 < high, "audit.ratio_band: [low, high] with low < 1 < high (default [0.8, 1.25])"),
            (self.need_ratio_limit > 1, "audit.need_ratio_limit: above 1 (default 1.25)"),
            (self.family_control in FAMILY_CONTROLS, "audit.family_control: holm or fdr (default holm)"),
            (self.family in FAMILIES, "audit.family: check, outcome or run (default check)"),
            (0.5 <= self.power < 1, "audit.power: between 0.5 and 1 (default 0.8)"),
            (self.min_patients >= 8, "audit.min_patients: at least 8 (default 100)"),
            (self.min_events >= 1, "audit.min_events: at least 1 (default 10)"),
            (0 <= self.max_ethnicity_missing <= 1, "audit.max_ethnicity_missing: a share in [0, 1] (default 0.15)"),
            (0 < self.capacity_share < 1, "audit.capacity_share: a share in (0, 1) (default 0.1)"),
            (bool(self.reference_group.strip()), "audit.reference_group: name a group (default White)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        for i, signoff in enumerate(self.signoffs):
            signoff.validate(f"audit.signoff[{i}]")
        for i, block in enumerate(self.blocks):
            block.validate(f"audit.block[{i}]")
