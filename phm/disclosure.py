"""Statistical disclosure control for aggregate outputs: one small pure function.

Counts of 1-7 are suppressed; every other count is rounded to the nearest 5 (the convention of
OpenSAFELY and NHS Digital outputs). Zero stays zero: it discloses no one.
"""

from __future__ import annotations

SUPPRESSED_BELOW = 8
ROUND_TO = 5


def suppress(count: int) -> int | None:
    """The count as it may leave the pipeline; None means suppressed."""
    if count < 0:
        raise ValueError(f"a count cannot be negative: {count}")
    if count == 0:
        return 0
    if count < SUPPRESSED_BELOW:
        return None
    return int(ROUND_TO * round(count / ROUND_TO))


def show(count: int) -> str:
    """For printing: the suppressed count, or '[suppressed]'."""
    value = suppress(count)
    return "[suppressed]" if value is None else f"{value:,}"
