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


SUPPRESSED = "[suppressed]"  # what a person reads where a count of 1-7 was


def show(count: int) -> str:
    """For printing: the suppressed count, or '[suppressed]'."""
    value = suppress(count)
    return SUPPRESSED if value is None else f"{value:,}"


COUNTS_NOTE = "(counts: 1-7 suppressed, others rounded to 5)"


def summary_lines(title: str, counts: dict[str, str]) -> list[str]:
    """A stage's summary for the terminal: its title, a line per label with its count as
    ``show`` gives it, and what the counts are."""
    return [title, *(f"  {label:<58}{value:>14}" for label, value in counts.items()), f"  {COUNTS_NOTE}"]
