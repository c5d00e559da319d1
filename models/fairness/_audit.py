"""The audit of one score: by ethnic group, with deprivation and sex, with confidence intervals.

Two tables go in (both patient-level, both stay in memory):

- ``performance``: patients whose outcome is known (the validation practices at the past index
  date): ``group``, ``score`` (predicted risk), ``outcome`` (recorded, 0/1), ``selected`` (the
  score is at or above the list's operating point), and optionally ``imd_quintile`` and ``sex``.
- ``selection``: the population the list is drawn from, scored now: ``group``, ``score``,
  ``selected`` (on the list), ``need`` (a count: long-term conditions, uncontrolled blood
  pressure, HbA1c; see _need.py), optionally ``measurements_recorded`` (0-4), ``imd_quintile``,
  ``sex``.

What comes out, per group of every grouping (ethnicity; IMD quintile; sex; ethnicity x IMD
quintile; ethnicity x sex; ethnicity x IMD quintile x sex), each figure with its interval:
patients, share of the population, recorded outcome rate, mean predicted risk, observed /
expected, calibration slope, AUROC, selection rate, sensitivity, PPV and false negative rate at
the operating point; share of the list over share of high need; need at the same score
(label-choice check) with the curve by score decile; measurement completeness. And ratios and
differences against the reference group (within the same IMD quintile and sex, for
intersections) and against the whole population.

The shape follows fairlearn's MetricFrame: overall, by group, ratio and difference, each with
its interval. fairlearn's own MetricFrame computes the operating-point figures too (a test holds
the two equal); its bootstrap refits per replicate, which at 1M patients takes seconds per
replicate, so the intervals come from the cell bootstrap in _cells.py.

The results of one score (``ScoreAudit``) are two polars frames with declared schemas, made once
by ``_summarise``:

- ``figures`` (``FIGURES_SCHEMA``): one row per population (``kind``: performance, selection) x
  grouping x group x figure. The group's labels are the columns ``group`` (ethnic group),
  ``imd_quintile`` and ``sex`` (null where the grouping does not use them: all null for the
  population); ``figure`` is an Enum of ``Figure``; ``value``, ``low``, ``high``; and
  ``ratio_to_reference``, ``difference_to_reference``, ``ratio_to_population``,
  ``difference_to_population`` (``Compared``), each with ``_low`` and ``_high``, null where the
  figure is not compared (only ``RATIO_FIGURES`` are; the population has no reference row).
- ``groups`` (``GROUPS_SCHEMA``): one row per population x grouping x group: the exact counts
  (one Int64 column per ``Count``, null where the population has no such count), ``too_small``,
  and the need curve by score decile (``need_by_decile``, ``patients_by_decile``).

Figure and count names are declared once (``Figure``, ``Count``, ``Compared``); every accessor
checks the name it is given, so a misspelt one raises instead of finding nothing. The gate, the
report and the pipeline read the frames through ``ScoreAudit.by_group(grouping, kind)`` (a
``GroupResults`` per group: ``labels``, typed ``counts``, ``figure(f)``,
``ratio_to_reference(f)``, ``compared(c, f)``), ``find``, ``figure`` and ``ratio_to_reference``.
The one figure measured outside the audit, the diagnosis gap (_recording.py), is appended with
``add_figure``.
"""

from __future__ import annotations

import ctypes
import math
import os
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import polars as pl

from models.fairness import _metrics
from models.fairness._cells import (
    AGE_BANDS,
    SCORE_BINS,
    SCORE_DECILES,
    Cells,
    GroupIndex,
    Grouping,
    age_band,
    group_index,
    poisson_replicates,
    scatter_matrix,
    score_bins,
    to_cells,
)
from models.fairness._settings import AuditSettings
from phm.disclosure import SUPPRESSED_BELOW as _SUPPRESSED_BELOW

MEASURES = 4  # blood pressure, BMI, cholesterol ratio, HbA1c: see _need.py


class Figure(StrEnum):
    """Every figure the audit gives, declared once, in the order the report lists them. A name
    that is not one of these is an error: ``Figure("sensitivty")`` raises ValueError, and so does
    every accessor given a misspelt name."""

    OUTCOME_RATE = "outcome_rate"
    MEAN_PREDICTED_RISK = "mean_predicted_risk"
    OBSERVED_EXPECTED = "observed_expected"
    CALIBRATION_SLOPE = "calibration_slope"
    AUROC = "auroc"
    SELECTION_RATE = "selection_rate"
    SENSITIVITY = "sensitivity"
    FALSE_NEGATIVE_RATE = "false_negative_rate"
    PPV = "ppv"
    NEED_ADJUSTED_SELECTION = "need_adjusted_selection"
    # the same ratio over its value under the score's own risks: what the gate judges
    NEED_ADJUSTED_SELECTION_VS_SCORE = "need_adjusted_selection_vs_score"
    MEAN_NEED = "mean_need"
    MEASUREMENT_COMPLETENESS = "measurement_completeness"
    LIST_OVER_HIGH_NEED_SHARE = "list_over_high_need_share"
    NEED_AT_SAME_SCORE = "need_at_same_score"
    DIAGNOSIS_GAP = "diagnosis_gap"  # added after the audit by _recording.add_gap_figures
    TREATED_UNDIAGNOSED = "treated_undiagnosed"  # likewise


class Count(StrEnum):
    """The exact counts of a group (suppressed only when written out)."""

    PATIENTS = "patients"
    EVENTS = "events"
    SELECTED = "selected"
    TRUE_POSITIVES = "true_positives"
    MISSED = "missed"
    HIGH_NEED = "high_need"
    SELECTED_HIGH_NEED = "selected_high_need"
    NEED_SUM = "need_sum"


class Compared(StrEnum):
    """A figure against the reference group (in the same IMD quintile and sex) or the population."""

    RATIO_TO_REFERENCE = "ratio_to_reference"
    DIFFERENCE_TO_REFERENCE = "difference_to_reference"
    RATIO_TO_POPULATION = "ratio_to_population"
    DIFFERENCE_TO_POPULATION = "difference_to_population"


PROPORTIONS = {  # figure -> (numerator, denominator): Wilson intervals
    Figure.OUTCOME_RATE: (Count.EVENTS, Count.PATIENTS),
    Figure.SELECTION_RATE: (Count.SELECTED, Count.PATIENTS),
    Figure.SENSITIVITY: (Count.TRUE_POSITIVES, Count.EVENTS),
    Figure.FALSE_NEGATIVE_RATE: (Count.MISSED, Count.EVENTS),
    Figure.PPV: (Count.TRUE_POSITIVES, Count.SELECTED),
}
RATIO_FIGURES = {  # figures compared with the reference group and the population, in this order
    "performance": (Figure.OUTCOME_RATE, Figure.MEAN_PREDICTED_RISK, Figure.OBSERVED_EXPECTED,
                    Figure.CALIBRATION_SLOPE, Figure.AUROC, Figure.SELECTION_RATE, Figure.SENSITIVITY, Figure.PPV,
                    Figure.FALSE_NEGATIVE_RATE),
    "selection": (Figure.SELECTION_RATE, Figure.MEAN_NEED, Figure.MEASUREMENT_COMPLETENESS),
}
COUNTS = tuple(Count)
# the performance figures' sum of the outcomes expected over each patient's follow-up: no figure of
# its own (a sum of risks is not published), it is the observed / expected estimate's ``expected``
EXPECTED_OUTCOMES = "expected_outcomes"
KINDS = ("performance", "selection")  # the two populations audited (see the module docstring)
LABELS = ("group", "imd_quintile", "sex")  # a group's labels; those its grouping does not use are null

# ``observed`` and ``expected``: a standardised ratio's counts (the recording checks, _recording.py), for its exact
# test; NaN for every other figure
_ESTIMATE_COLUMNS = ["value", "low", "high", "observed", "expected",
                     *(f"{c}{part}" for c in Compared for part in ("", "_low", "_high"))]
FIGURES_SCHEMA = pl.Schema({
    "kind": pl.Enum(KINDS), "grouping": pl.String, **{c: pl.String for c in LABELS},
    "figure": pl.Enum([f.value for f in Figure]), **{c: pl.Float64 for c in _ESTIMATE_COLUMNS}})
GROUPS_SCHEMA = pl.Schema({
    "kind": pl.Enum(KINDS), "grouping": pl.String, **{c: pl.String for c in LABELS},
    **{c.value: pl.Int64 for c in Count}, "too_small": pl.Boolean,
    "need_by_decile": pl.List(pl.Float64), "patients_by_decile": pl.List(pl.Int64)})


@dataclass
class Estimate:
    value: float
    low: float = float("nan")
    high: float = float("nan")
    # a standardised ratio's own counts (observed / expected: the recording checks, _recording.py), so
    # that the gate tests the count exactly rather than through the interval's width; NaN elsewhere
    observed: float = float("nan")
    expected: float = float("nan")

    @property
    def counted(self) -> bool:
        return math.isfinite(self.observed) and math.isfinite(self.expected) and self.expected > 0

    def as_dict(self) -> dict:
        return {k: (None if not math.isfinite(v) else round(float(v), 5)) for k, v in
                (("value", self.value), ("low", self.low), ("high", self.high))}

    def wholly_outside(self, low: float, high: float) -> bool:
        return math.isfinite(self.low) and (self.low > high or self.high < low)

    def outside(self, low: float, high: float) -> bool:
        return math.isfinite(self.value) and not low <= self.value <= high


def _columns(estimate: Estimate, prefix: str = "") -> dict[str, float]:
    if not prefix:
        return {"value": estimate.value, "low": estimate.low, "high": estimate.high,
                "observed": estimate.observed, "expected": estimate.expected}
    return dict(zip((prefix, f"{prefix}_low", f"{prefix}_high"), (estimate.value, estimate.low, estimate.high),
                    strict=True))


def _estimate(row: dict, prefix: str = "") -> Estimate | None:
    """The estimate in ``row``'s columns (``value``, or ``<prefix>``), None where not measured."""
    if not prefix:
        return None if row["value"] is None else Estimate(
            *(row[n] for n in ("value", "low", "high")),
            *(float("nan") if row.get(n) is None else row[n] for n in ("observed", "expected")))
    names = (prefix, f"{prefix}_low", f"{prefix}_high")
    return None if row[names[0]] is None else Estimate(*(row[n] for n in names))


@dataclass(frozen=True)
class Counts:
    """A group's exact counts; None where its population has no such count (e.g. ``events`` of
    the list's population, whose outcomes are not yet known)."""

    patients: int
    events: int | None = None
    selected: int | None = None
    true_positives: int | None = None
    missed: int | None = None
    high_need: int | None = None
    selected_high_need: int | None = None
    need_sum: int | None = None

    def get(self, count: Count | str) -> int | None:
        return getattr(self, Count(count).value)

    def items(self) -> list[tuple[str, int]]:
        """The counts this population has, in declared order."""
        return [(c.value, getattr(self, c.value)) for c in Count if getattr(self, c.value) is not None]


@dataclass(frozen=True)
class GroupResults:
    """One group of one grouping, as read from the audit's frames (``ScoreAudit.by_group``)."""

    kind: str
    labels: dict[str, str]
    counts: Counts
    too_small: bool
    need_by_decile: list[float | None]
    patients_by_decile: list[int]
    estimates: dict[tuple[Compared | None, Figure], Estimate] = field(repr=False)  # (None: the figure itself)

    @property
    def name(self) -> str:
        return " x ".join(str(v) for v in self.labels.values())

    def figure(self, figure: Figure | str) -> Estimate | None:
        return self.estimates.get((None, Figure(figure)))

    def ratio_to_reference(self, figure: Figure | str) -> Estimate | None:
        return self.compared(Compared.RATIO_TO_REFERENCE, figure)

    def compared(self, comparison: Compared | str, figure: Figure | str) -> Estimate | None:
        return self.estimates.get((Compared(comparison), Figure(figure)))

    def figures(self) -> list[tuple[Figure, Estimate]]:
        """Every figure measured for the group, in the frame's order."""
        return [(f, e) for (c, f), e in self.estimates.items() if c is None]

    def comparisons(self, comparison: Compared | str) -> list[tuple[Figure, Estimate]]:
        """The figures compared with the reference or the population, in ``RATIO_FIGURES`` order."""
        comparison = Compared(comparison)
        order = RATIO_FIGURES[self.kind]
        found = {f: e for (c, f), e in self.estimates.items() if c == comparison}
        return [(f, found[f]) for f in order if f in found] + [(f, e) for f, e in found.items() if f not in order]


def _small(count: int | None) -> bool:
    return count is not None and 0 < count < _SUPPRESSED_BELOW


# disclosure control of a grouping's counts (docs/fairness.md, "Disclosure control"): here, beside the
# results, as both the report (_report.py) and the gate's withheld tests (_gate.py) apply it
def secondary_suppression(rows: list[GroupResults]) -> dict[int, set[str]]:
    """For each row (by index), the counts to suppress beyond 1-7: where exactly one cell of a
    grouping has a given count suppressed, the next smallest non-zero cell's count too."""
    extra: dict[int, set[str]] = {i: set() for i in range(len(rows))}
    names = {k for r in rows for k, _ in r.counts.items() if k != Count.NEED_SUM}
    for name in names:
        values = [(r.counts.get(name), i) for i, r in enumerate(rows)]
        primary = [i for v, i in values if _small(v)]
        if len(primary) == 1 and len(rows) > 1:
            others = sorted((v, i) for v, i in values if v and i not in primary)
            if others:
                extra[others[0][1]].add(name)
    return extra


def groupings_for(columns: list[str]) -> list[Grouping]:
    """The population, each column alone, and ethnicity with every combination of the others."""
    out = [Grouping("population", ())]
    others = [c for c in ("imd_quintile", "sex") if c in columns]
    out.append(Grouping("ethnicity", ("group",)))
    out += [Grouping(c.replace("_", " "), (c,)) for c in others]
    for c in others:
        out.append(Grouping(f"ethnicity x {c.replace('_', ' ')}", ("group", c)))
    if len(others) == 2:
        out.append(Grouping("ethnicity x imd quintile x sex", ("group", *others)))
    return out


def _strata(frame: pl.DataFrame) -> list[str]:
    return [c for c in ("group", "imd_quintile", "sex") if c in frame.columns]


def _prepare_strata(frame: pl.DataFrame) -> pl.DataFrame:
    exprs = [pl.col("group").cast(pl.String).fill_null("Not known")]
    for c in ("imd_quintile", "sex"):
        if c in frame.columns:
            exprs.append(pl.col(c).cast(pl.String).fill_null("unknown"))
    return frame.with_columns(exprs)


# chunks of replicates whose figures are computed at once (see _in_order): the machine's two cores
BOOTSTRAP_THREADS = min(2, os.cpu_count() or 1)


def _in_order(fn: Callable, items: Iterable, threads: int) -> list:
    """``fn`` of every item, in the items' order, on ``threads`` threads.

    The bootstrap's chunks of replicates are independent: each is its own weights (drawn here,
    in this thread, one chunk after the other from the one seeded generator, as before) and its
    figures are the same arithmetic on the same arrays whichever thread computes them, so the
    figures are the same to the last bit. Their numpy and scipy loops (products, sums, the
    slope's Newton steps, the Poisson draws) run without the GIL, so a second thread uses the
    second core: only the Python between those calls is taken in turns. At most ``threads + 1``
    chunks are drawn ahead (each chunk's arrays are tens of MB at 1M patients)."""
    if threads <= 1:
        return [fn(item) for item in items]
    out, pending = [], deque()
    with ThreadPoolExecutor(threads, thread_name_prefix="bootstrap") as pool:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > threads:
                out.append(pending.popleft().result())
        out += [f.result() for f in pending]
    _give_back_freed_memory()
    return out


def _give_back_freed_memory() -> None:
    """The threads freed their chunks' arrays into their own malloc arenas, which glibc keeps
    for them rather than giving back: a 1M run's later peak (publishing) stood 0.2 GB higher for
    it. ``malloc_trim`` gives every arena's free pages back (glibc; elsewhere nothing to do)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):
        pass


def _bootstrap(cells: Cells, groupings: list[Grouping], inner: np.ndarray, inner_shape: tuple[int, ...],
               values: dict[str, np.ndarray | None], figures_fn, settings: AuditSettings, seed_offset: int,
               observed_only: tuple[str, ...] = ()):
    """Observed figures and bootstrap replicates of ``figures_fn`` for every grouping.

    Returns (indexes, observed, replicates): observed[grouping][figure] is (groups,),
    replicates[grouping][figure] is (replicates, groups) (or with a trailing axis).
    ``values``: per-cell values whose weighted sums ``figures_fn`` takes, by name; None for the
    counts (the weights themselves). ``observed_only``: figures whose replicates are not wanted
    (dropped from each chunk of replicates rather than joined).

    The replicates are drawn 50 to a chunk (``poisson_replicates``) and must stay so: the
    products come out with the replicate as the fast axis, and the population's calibration
    slope (its one group's rows are not copied) sums each row in that layout while all of the
    chunk's rows still move, so its last bits depend on which replicates share a chunk.
    """
    indexes = [group_index(cells, g) for g in groupings]
    size = int(np.prod(inner_shape))
    blocks = [scatter_matrix(gi.of_cell, inner, size, gi.labels.height) for gi in indexes]
    from scipy import sparse

    matrix = sparse.hstack(blocks).tocsr()
    offsets = np.cumsum([0] + [b.shape[1] for b in blocks])

    def figures(weights: np.ndarray) -> list[dict[str, np.ndarray]]:
        sums = {name: np.asarray((weights if per_cell is None else weights * per_cell) @ matrix)
                for name, per_cell in values.items()}
        out = []
        for k, gi in enumerate(indexes):
            shape = (weights.shape[0], gi.labels.height, *inner_shape)
            out.append(figures_fn(**{name: s[:, offsets[k]:offsets[k + 1]].reshape(shape) for name, s in sums.items()}))
        return out

    def replicate_figures(weights: np.ndarray) -> list[dict[str, np.ndarray]]:
        out = figures(weights)
        for f in out:
            for name in observed_only:
                del f[name]
        return out

    observed = [{k: v[0] for k, v in f.items()} for f in figures(cells.count[None, :])]
    chunks = _in_order(replicate_figures, poisson_replicates(cells.count, settings.replicates, settings.seed + seed_offset),
                       BOOTSTRAP_THREADS)
    replicates = [{k: np.concatenate([c[i][k] for c in chunks]) for k in chunks[0][i]} for i in range(len(indexes))]
    return indexes, observed, replicates


def _percentiles(reps: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap percentile interval of each column of ``reps`` (replicates x groups), over its
    finite replicates; NaN where fewer than 90% of them are finite."""
    finite = np.isfinite(reps)
    counts = finite.sum(axis=0)
    low, high = np.full(reps.shape[1], np.nan), np.full(reps.shape[1], np.nan)
    q = [50 * (1 - level), 50 * (1 + level)]
    whole = counts == reps.shape[0]
    if whole.any():  # the usual case, every replicate finite: one call for all those columns
        low[whole], high[whole] = np.percentile(reps[:, whole], q, axis=0)
    for g in np.flatnonzero(~whole & (counts >= 0.9 * reps.shape[0]) & (counts > 0)):
        low[g], high[g] = np.percentile(reps[finite[:, g], g], q)
    return low, high


def _compared(obs: np.ndarray, reps: np.ndarray, obs_base: np.ndarray, reps_base: np.ndarray,
              level: float) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """Ratio and difference of each group over its base (the reference group, or the
    population), with bootstrap intervals: ((value, low, high) of the ratio, of the difference)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(obs_base != 0, obs / np.where(obs_base != 0, obs_base, 1.0), np.nan)
        ratio_reps = reps / reps_base
    difference_reps = reps - reps_base
    return (ratio, *_percentiles(ratio_reps, level)), (obs - obs_base, *_percentiles(difference_reps, level))


def _reference_rows(index: GroupIndex, reference: str) -> np.ndarray:
    """For each group, the row of the reference group with the same other labels (or -1)."""
    labels = index.labels
    if "group" not in labels.columns:
        return np.full(labels.height, -1)
    others = [c for c in labels.columns if c != "group"]
    numbered = labels.with_row_index("_row")
    refs = numbered.filter(pl.col("group") == reference).select(*others, pl.col("_row").alias("_ref"))
    if not others:
        ref = refs["_ref"].to_list()
        return np.full(labels.height, ref[0] if ref else -1)
    joined = numbered.join(refs, on=others, how="left", maintain_order="left")
    return joined["_ref"].fill_null(-1).to_numpy()


def _summarise(kind: str, indexes: list[GroupIndex], observed, replicates, settings: AuditSettings,
               population_observed: dict[str, np.ndarray], population_reps: dict[str, np.ndarray],
               curves=None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The figures of every group of every grouping as the audit's two frames (FIGURES_SCHEMA,
    GROUPS_SCHEMA); ``curves(g, obs)`` gives a group's need curve by score decile."""
    figure_rows, group_rows = [], []
    for gi, obs, reps in zip(indexes, observed, replicates, strict=True):
        ref_rows = _reference_rows(gi, settings.reference_group)
        # every 1-D array that is not a count is a figure, and must be a declared one
        names = [Figure(name) for name, values in obs.items()
                 if name not in COUNTS and name != EXPECTED_OUTCOMES and values.ndim == 1]
        intervals, to_reference, to_population = {}, {}, {}
        has_reference = ref_rows >= 0
        for name in names:  # every group's intervals at once, a figure at a time
            values, figure_reps = obs[name], reps[name]
            if name not in PROPORTIONS:
                intervals[name] = _percentiles(figure_reps, settings.level)
            if name in RATIO_FIGURES[kind]:
                base = np.where(has_reference, ref_rows, 0)
                to_reference[name] = _compared(values, figure_reps, values[base], figure_reps[:, base], settings.level)
                to_population[name] = _compared(values, figure_reps, np.full_like(values, population_observed[name][0]),
                                                population_reps[name][:, [0]], settings.level)
        for g, labels in enumerate(gi.labels.iter_rows(named=True)):
            where = {"kind": kind, "grouping": gi.grouping.name, **{k: str(v) for k, v in labels.items()}}
            counts = {c.value: int(round(obs[c][g])) for c in COUNTS if c in obs}
            if Count.EVENTS in counts:
                counts[Count.MISSED] = counts[Count.EVENTS] - counts[Count.TRUE_POSITIVES]
            small = counts[Count.PATIENTS] < settings.min_patients
            if kind == "performance":
                small |= counts[Count.EVENTS] < settings.min_events
            group_rows.append({**where, **counts, "too_small": bool(small),
                               **(curves(g, obs) if curves else {"need_by_decile": [], "patients_by_decile": []})})
            for name in names:
                values = obs[name]
                if name in PROPORTIONS:
                    num, den = PROPORTIONS[name]
                    low, high = _metrics.wilson_interval(counts[num], counts[den], settings.level)
                else:
                    low, high = intervals[name][0][g], intervals[name][1][g]
                estimate = Estimate(float(values[g]), float(low), float(high))
                if name is Figure.OBSERVED_EXPECTED and EXPECTED_OUTCOMES in obs:
                    # its counts, for the gate's exact test (models/fairness/_gate.py, _expected_outcomes)
                    estimate.observed, estimate.expected = float(obs[Count.EVENTS][g]), float(obs[EXPECTED_OUTCOMES][g])
                row = {**where, "figure": name.value, **_columns(estimate)}
                if name in RATIO_FIGURES[kind]:
                    if has_reference[g]:
                        ratio, difference = (Estimate(*(float(a[g]) for a in part)) for part in to_reference[name])
                        row |= _columns(ratio, Compared.RATIO_TO_REFERENCE) | \
                            _columns(difference, Compared.DIFFERENCE_TO_REFERENCE)
                    ratio, difference = (Estimate(*(float(a[g]) for a in part)) for part in to_population[name])
                    row |= _columns(ratio, Compared.RATIO_TO_POPULATION) | \
                        _columns(difference, Compared.DIFFERENCE_TO_POPULATION)
                figure_rows.append(row)
    return (pl.from_dicts(figure_rows, schema=FIGURES_SCHEMA) if figure_rows else pl.DataFrame(schema=FIGURES_SCHEMA),
            pl.from_dicts(group_rows, schema=GROUPS_SCHEMA) if group_rows else pl.DataFrame(schema=GROUPS_SCHEMA))


@dataclass
class Curves:
    """Aggregate points for the report's plots, by ethnic group (and the population)."""

    calibration: dict[str, list[tuple[float, float, int, int]]]  # mean predicted, observed, patients, events
    roc: dict[str, list[tuple[float, float]]]  # false positive rate, sensitivity


@dataclass
class ScoreAudit:
    """Everything measured about one score (one outcome's model), as two typed frames:

    - ``figures`` (FIGURES_SCHEMA): one row per population (``kind``) x grouping x group x
      figure: the group's labels, the figure (a ``Figure``), its value and interval, and its
      ratio and difference to the reference group and to the population with their intervals
      (null where not compared);
    - ``groups`` (GROUPS_SCHEMA): one row per population x grouping x group: its exact counts,
      whether it is too small to judge, and its need by score decile (the list's population).

    The accessors read them a group at a time (``by_group``) or a figure at a time."""

    name: str
    threshold: float
    figures: pl.DataFrame
    groups: pl.DataFrame
    population_need_by_decile: list[float]
    curves: Curves | None = None
    need_description: str = ""
    # groups whose published ethnic effect (log hazard ratio) the score carries and its need measure
    # cannot: hypertension's need is the blood pressure stage, and the model carries REGARDS's
    # incidence effect for Black adults (models.train.PUBLISHED_GROUP_LOG_HR). At the same score such
    # a group has less of that need by design; the label-choice check's other side shows the
    # effect, not a group served beyond its share (_gate.judge_all)
    need_lacks_effect: dict[str, float] = field(default_factory=dict)
    # False for a rank (a percentile, ``phm audit --scores``): its values are no risks, so the checks
    # that read them as expected outcomes (_gate.RISK_CHECKS) are not judged
    score_is_risk: bool = True

    def audited(self, kind: str) -> bool:
        """Was this population audited (the validation patients may be absent)?"""
        return self.groups.filter(pl.col("kind") == _kind(kind)).height > 0

    def groupings(self, kind: str) -> list[str]:
        """The groupings' names in order: population, ethnicity, then the others."""
        return self.groups.filter(pl.col("kind") == _kind(kind))["grouping"].unique(maintain_order=True).to_list()

    def by_group(self, grouping: str, kind: str = "performance") -> list[GroupResults]:
        """Every group of ``grouping`` (e.g. "ethnicity", "ethnicity x imd quintile") in order;
        none where ``kind`` was not audited."""
        if not self.audited(kind):
            return []
        if grouping not in self.groupings(kind):
            raise KeyError(f"no grouping {grouping!r} in the {kind} audit (there are: {self.groupings(kind)})")
        rows = self.groups.filter((pl.col("kind") == kind) & (pl.col("grouping") == grouping))
        figures = self.figures.filter((pl.col("kind") == kind) & (pl.col("grouping") == grouping))
        labels = [c for c in LABELS if rows[c].null_count() < rows.height]
        parts = figures.partition_by(labels, as_dict=True, maintain_order=True) if labels else {(): figures}
        out = []
        for row in rows.iter_rows(named=True):
            key = tuple(row[c] for c in labels)
            estimates = {}
            for f in parts[key].iter_rows(named=True) if key in parts else ():
                estimates[None, Figure(f["figure"])] = _estimate(f)
                for comparison in Compared:
                    if f[comparison] is not None:
                        estimates[comparison, Figure(f["figure"])] = _estimate(f, comparison)
            out.append(GroupResults(kind, {c: row[c] for c in labels},
                                    Counts(**{c.value: row[c] for c in Count if row[c] is not None}),
                                    row["too_small"], row["need_by_decile"], row["patients_by_decile"], estimates))
        return out

    def find(self, grouping: str, kind: str = "performance", **labels: str) -> GroupResults | None:
        """The group of ``grouping`` with these labels, e.g. ``find("ethnicity x sex", group="Black", sex="male")``."""
        unknown = set(labels) - set(LABELS)
        if unknown:
            raise KeyError(f"no label {sorted(unknown)}: the labels are {LABELS}")
        return next((g for g in self.by_group(grouping, kind)
                     if all(g.labels.get(k) == v for k, v in labels.items())), None)

    def figure(self, figure: Figure | str, kind: str = "performance",
               grouping: str = "ethnicity") -> dict[str, Estimate]:
        """One figure of every group of ``grouping``, by the group's name."""
        return {g.name: e for g in self.by_group(grouping, kind) if (e := g.figure(figure)) is not None}

    def ratio_to_reference(self, figure: Figure | str, kind: str = "performance",
                           grouping: str = "ethnicity") -> dict[str, Estimate]:
        """One figure's ratio to the reference group, by the group's name."""
        return {g.name: e for g in self.by_group(grouping, kind) if (e := g.ratio_to_reference(figure)) is not None}

    def add_figure(self, kind: str, grouping: str, figure: Figure | str, estimates: dict[str, Estimate]) -> None:
        """A figure measured outside the audit (the diagnosis gap, _recording.py) for the groups of
        ``grouping`` named in ``estimates``."""
        figure = Figure(figure)
        rows = [{"kind": kind, "grouping": grouping, **g.labels, "figure": figure.value, **_columns(estimates[g.name])}
                for g in self.by_group(grouping, kind) if g.name in estimates]
        if rows:
            self.figures = pl.concat([self.figures, pl.from_dicts(rows, schema=FIGURES_SCHEMA)])


def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"no population {kind!r}: the audit's are {KINDS}")
    return kind


def performance_curves(frame: pl.DataFrame, points: int = 10) -> Curves:
    """Calibration by tenth of the score and ROC points at 20 thresholds, per group: aggregates
    only (the report plots a calibration point only where it rests on enough patients)."""
    calibration, roc = {}, {}
    binned = frame.with_columns((pl.col("score_bin") * points // SCORE_BINS).alias("_part"))
    for name, part in [("population", binned), *sorted(binned.partition_by("group", as_dict=True).items())]:
        name = name if isinstance(name, str) else name[0]
        cal = part.group_by("_part").agg(pl.col("score").mean().alias("p"), pl.col("outcome").mean().alias("o"),
                                         pl.len().alias("n"), pl.col("outcome").sum().alias("e")).sort("_part")
        calibration[name] = [(float(r["p"]), float(r["o"]), int(r["n"]), int(r["e"])) for r in cal.iter_rows(named=True)]
        by_bin = part.group_by("score_bin").agg(pl.col("outcome").sum().alias("pos"),
                                                (1 - pl.col("outcome")).sum().alias("neg")).sort("score_bin", descending=True)
        pos, neg = by_bin["pos"].to_numpy().cumsum(), by_bin["neg"].to_numpy().cumsum()
        if pos.size and pos[-1] > 0 and neg[-1] > 0:
            step = max(1, pos.size // 20)
            keep = list(range(0, pos.size, step)) + [pos.size - 1]
            roc[name] = [(0.0, 0.0)] + [(float(neg[i] / neg[-1]), float(pos[i] / pos[-1])) for i in keep]
    return Curves(calibration, roc)


def audit_performance(frame: pl.DataFrame, settings: AuditSettings) -> tuple[pl.DataFrame, pl.DataFrame, Curves]:
    frame = _prepare_strata(frame).with_columns(
        score_bins(pl.col("score"), SCORE_BINS).alias("score_bin"),
        pl.col("outcome").cast(pl.Int8), pl.col("selected").cast(pl.Int8))
    curves = performance_curves(frame)
    strata = _strata(frame)
    # ``expected``, where given: each patient's outcomes expected over its own follow-up
    # (_metrics.performance); without it, every patient counts as followed to the horizon's end
    summed = ["score", "expected"] if "expected" in frame.columns else ["score"]
    cells = to_cells(frame, [*strata, "score_bin", "outcome", "selected"], summed)
    keys = cells.keys
    inner = (keys["score_bin"].to_numpy().astype(np.int64) * 4 + keys["outcome"].to_numpy() * 2
             + keys["selected"].to_numpy())
    values = {"n": None, "risk": cells.sums["score"] / cells.count}
    if "expected" in cells.sums:
        values["expected"] = cells.sums["expected"] / cells.count
    groupings = groupings_for(strata)
    indexes, observed, replicates = _bootstrap(
        cells, groupings, inner, (SCORE_BINS, 2, 2), values, _metrics.performance, settings, seed_offset=0)
    for obs in observed:
        obs["missed"] = obs["events"] - obs["true_positives"]
    population = groupings.index(Grouping("population", ()))
    for obs, reps in zip(observed, replicates, strict=True):
        for target, source in ((obs, observed[population]), (reps, replicates[population])):
            # need-adjusted selection: the group's share of those selected at the operating point
            # over its share of the recorded outcomes (the need the list exists to meet)
            target["need_adjusted_selection"] = _share_ratio(target["selected"], source["selected"],
                                                             target["events"], source["events"])
            # ... over the same ratio with the group's share of the score's expected outcomes (its
            # predicted risks summed) in place of its share of the recorded ones. A top-k list takes
            # more of a group whose risk sits in the high tail, so the raw ratio is not 1 for a fair
            # ranking of groups whose risks are spread differently (a ranking calibrated within groups
            # cannot also balance selection against need: Kleinberg, Mullainathan, Raghavan 2016;
            # Chouldechova 2017). Its value for such a ranking is what the score itself expects; the
            # selected shares cancel, leaving (expected share) / (recorded share): below 1 where the
            # group's recorded need is larger than the score says, whatever the scale of the scores.
            # (The expected outcomes are over each patient's own follow-up, as the recorded ones are.)
            target["need_adjusted_selection_vs_score"] = _share_ratio(
                target["expected_outcomes"], source["expected_outcomes"], target["events"], source["events"])
    figures, groups = _summarise("performance", indexes, observed, replicates, settings,
                                 observed[population], replicates[population])
    return figures, groups, curves


def _share_ratio(part, whole, need_part, need_whole) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        list_share = part / whole
        need_share = need_part / need_whole
        return np.where(need_share > 0, list_share / need_share, np.nan)


SELECTION_INNER = ("decile", "high_need", "selected")
# The label-choice check compares need at the same score in the upper half of the scores (deciles
# 6-10), where the list's decisions are made: in the lowest deciles risks are a fraction of a
# percent, and a ratio of two tiny needs says little about who the list misses.
LABEL_CHOICE_FROM_DECILE = 5


def selection_cells(frame: pl.DataFrame, high_need_from: float = 1) -> Cells:
    """Patients of the list population to cells. ``frame`` has ``decile`` (0-9, the score decile
    of the whole population: see _cells.score_bins and models/shards.py) rather than the score,
    so that shards of one population make cells that add up to the population's; and, where
    known, ``age_band`` (_cells.age_band): the label-choice check standardises by both. Need is
    summed per cell (it may be a count or a risk); ``high_need`` is need >= ``high_need_from``."""
    if "measurements_recorded" not in frame.columns:
        frame = frame.with_columns(pl.lit(0).alias("measurements_recorded"))
    if "score" not in frame.columns:  # cells made without scores standardise by decile means
        frame = frame.with_columns(pl.lit(1.0).alias("score"))
    band = pl.col("age_band").cast(pl.Int32) if "age_band" in frame.columns else pl.lit(0, dtype=pl.Int32)
    frame = _prepare_strata(frame.with_columns(
        (pl.col("decile").cast(pl.Int32) * AGE_BANDS + band).alias("decile")).drop("age_band", strict=False)).with_columns(
        pl.col("need").cast(pl.Float64).fill_null(0.0).alias("need"),
        (pl.col("need").fill_null(0) >= high_need_from).cast(pl.Int8).alias("high_need"),
        pl.col("selected").cast(pl.Int8))
    return to_cells(frame, [*_strata(frame), *SELECTION_INNER], ["need", "measurements_recorded", "score"])


def audit_selection(frame: pl.DataFrame, settings: AuditSettings,
                    high_need_from: float = 1) -> tuple[pl.DataFrame, pl.DataFrame, list[float]]:
    frame = frame.with_columns(score_bins(pl.col("score"), SCORE_DECILES).alias("decile"))
    if "age" in frame.columns:
        frame = frame.with_columns(age_band(pl.col("age")).alias("age_band")).drop("age")
    return audit_selection_cells(selection_cells(frame, high_need_from), settings)


# the selection figures by stratum and decile that only the observed curves read: their
# replicates are not kept (need at the same score reads the need and score by stratum)
UNREPLICATED = ("patients_by_decile", "need_by_decile", "patients_by_stratum")


def audit_selection_cells(cells: Cells, settings: AuditSettings,
                          high_need_from: float | None = None) -> tuple[pl.DataFrame, pl.DataFrame, list[float]]:
    """``high_need_from`` is applied when the cells are made (selection_cells)."""
    keys = cells.keys
    strata = [c for c in keys.columns if c not in SELECTION_INNER]
    inner = ((keys["decile"].to_numpy().astype(np.int64) * 2 + keys["high_need"].to_numpy()) * 2
             + keys["selected"].to_numpy())
    groupings = groupings_for(strata)

    def figures(n, need, measured, score):
        return _metrics.selection(n, need, measured, MEASURES, AGE_BANDS, score)

    indexes, observed, replicates = _bootstrap(
        cells, groupings, inner, (SCORE_DECILES * AGE_BANDS, 2, 2),
        {"n": None, "need": cells.sums["need"] / cells.count,
         "measured": cells.sums["measurements_recorded"] / cells.count,
         "score": cells.sums["score"] / cells.count},
        figures, settings, seed_offset=1, observed_only=UNREPLICATED)
    population = groupings.index(Grouping("population", ()))
    pop_obs, pop_reps = observed[population], replicates[population]
    for obs, reps in zip(observed, replicates, strict=True):
        for target, source in ((obs, pop_obs), (reps, pop_reps)):
            # share of the list over share of the patients with high need now (descriptive)
            target["list_over_high_need_share"] = _share_ratio(target["selected"], source["selected"],
                                                               target["high_need"], source["high_need"])
            # the label-choice check, where the list's decisions are made: the upper half of the scores
            upper = np.repeat(np.arange(SCORE_DECILES) >= LABEL_CHOICE_FROM_DECILE, AGE_BANDS)
            # (need expected in proportion to the score within each stratum: a decile, the top one
            # above all, spans a range of scores, and a group stacked at its top would otherwise
            # look sicker "at the same score" only for having higher scores)
            target["need_at_same_score"] = _metrics.need_ratio(
                target["score_by_stratum"] * upper, (target["need_by_stratum"] * upper).sum(axis=-1),
                source["score_by_stratum"][:, :1] if target is reps else source["score_by_stratum"][:1],
                source["need_by_stratum"][:, :1] if target is reps else source["need_by_stratum"][:1])
    for obs in observed:
        obs["patients_by_decile_kept"] = np.rint(obs["patients_by_decile"])
        obs["need_by_decile_mean"] = np.where(obs["patients_by_decile"] > 0,
                                              obs["need_by_decile"] / np.maximum(obs["patients_by_decile"], 1), np.nan)

    def curves(g, obs) -> dict:
        return {"need_by_decile": [None if not np.isfinite(x) else round(float(x), 4)
                                   for x in obs["need_by_decile_mean"][g]],
                "patients_by_decile": [int(x) for x in obs["patients_by_decile_kept"][g]]}

    # the per-decile arrays are curves, not figures: keep them out of the figure tables
    by_stratum = (*UNREPLICATED, "need_by_stratum", "score_by_stratum")
    for obs in observed:
        for name in by_stratum:
            obs.pop(name, None)
    for reps in replicates:
        for name in by_stratum:
            reps.pop(name, None)
    figures, groups = _summarise("selection", indexes, observed, replicates, settings, pop_obs, pop_reps, curves)
    population_curve = [round(float(x), 4) for x in np.nan_to_num(pop_obs["need_by_decile_mean"][0])]
    return figures, groups, population_curve


def audit_score(name: str, performance: pl.DataFrame | None, selection: pl.DataFrame | Cells, threshold: float,
                settings: AuditSettings, high_need_from: float = 1) -> ScoreAudit:
    """``selection``: the patients (with ``score``), or their cells already made
    (``selection_cells``, e.g. added up from shards)."""
    figures, groups, curves = [], [], None
    if performance is not None and performance.height:
        perf_figures, perf_groups, curves = audit_performance(performance, settings)
        figures, groups = [perf_figures], [perf_groups]
    if isinstance(selection, Cells):
        sel_figures, sel_groups, curve = audit_selection_cells(selection, settings, high_need_from)
    else:
        sel_figures, sel_groups, curve = audit_selection(selection, settings, high_need_from)
    return ScoreAudit(name, threshold, pl.concat([*figures, sel_figures]), pl.concat([*groups, sel_groups]),
                      curve, curves)
