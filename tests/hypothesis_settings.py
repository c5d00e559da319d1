"""Hypothesis profiles: every property test's full example count in CI (CI=true), a few examples
on a developer's machine, so the fast tier stays fast. HYPOTHESIS_PROFILE=ci runs the full
count anywhere; HYPOTHESIS_PROFILE=dev the short one.

A test asks for its CI count with ``@settings(max_examples=examples(80))``.
"""

from __future__ import annotations

import os

from hypothesis import settings

DEV_EXAMPLES = 10
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if CI else "dev")

settings.register_profile("ci", deadline=None)
settings.register_profile("dev", deadline=None, max_examples=DEV_EXAMPLES)
settings.load_profile(PROFILE)


def examples(full: int) -> int:
    """``full`` under the ci profile; at most DEV_EXAMPLES under dev."""
    return full if PROFILE == "ci" else min(full, DEV_EXAMPLES)
