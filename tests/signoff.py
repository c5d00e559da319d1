"""A named sign-off for tests of the pipeline's mechanics (faults, leaks, scale-out, scheduling).

Since issue 22 a WARN or FAIL needs a named reviewer's sign-off before any list goes out
(docs/fairness.md). These tests are about the pipeline reaching its lists, not about the gate
(tests/spec/test_fairness.py and tests/integration/test_fairness_pipeline.py are), so they sign off
explicitly, as an ICS would in its configuration; it is recorded like any other.
"""

from __future__ import annotations

from pathlib import Path

from flows.config import RunSettings
from models.fairness import AuditSettings, SignOff

REVIEWER = SignOff("Test reviewer (pipeline mechanics)",
                   "tests of the pipeline's mechanics on synthetic data, not of the fairness gate", "FAIL")
AUDIT = AuditSettings(signoffs=(REVIEWER,))
# Synthetic extracts are dated 2026-03-31 (phm/synth.py), older than the stale-data guard's 45 days
# when these tests run: they publish marked as stale (phm/freshness.py; its own tests refuse).
STALE_MARKED = RunSettings(stale_extract="mark")
TOML = ('[run]\nstale_extract = "mark"\n\n'
        f'[[audit.signoff]]\nreviewer = "{REVIEWER.reviewer}"\nreason = "{REVIEWER.reason}"\n'
        f'accepts = "{REVIEWER.accepts}"\n')


def signed_off_config(folder: Path) -> Path:
    """A configuration file with the sign-off, in ``folder``."""
    path = Path(folder) / "signed_off.toml"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(TOML)
    return path
