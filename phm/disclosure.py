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

# What a report says in place of a figure that rests on a count of 1-7 (a rate, a ratio, an
# observed / expected, a test's estimate or p-value): the count could be solved back from it.
WITHHELD = "withheld: fewer than 8"
# Figures computed from exact counts (ratios, observed / expected, AUROC, means) leave the pipeline
# to this many significant figures: at 5 decimals a ratio of counts of a few hundred names its exact
# numerator and denominator among the few the rounded counts allow, undoing the rounding (and with
# it the secondary suppression: the total minus the others).
SIGNIFICANT_FIGURES = 3
# a mean over patients (mean need, measurement completeness) of fewer patients is withheld
MEANS_FROM = 100


def small(count: float | None) -> bool:
    """Is ``count`` one of 1-7 (suppressed; a figure resting on it is withheld)? None and 0 are not."""
    return count is not None and count == count and 0 < count < SUPPRESSED_BELOW


def significant(value: float | None, digits: int = SIGNIFICANT_FIGURES) -> float | None:
    """``value`` to ``digits`` significant figures for publishing; None for None, NaN or infinity."""
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return None
    return float(f"{float(value):.{digits}g}")


def summary_lines(title: str, counts: dict[str, str]) -> list[str]:
    """A stage's summary for the terminal: its title, a line per label with its count as
    ``show`` gives it, and what the counts are."""
    return [title, *(f"  {label:<58}{value:>14}" for label, value in counts.items()), f"  {COUNTS_NOTE}"]
