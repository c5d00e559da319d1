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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

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

MEASURES = 4  # blood pressure, BMI, cholesterol ratio, HbA1c: see _need.py
PROPORTIONS = {  # figure -> (numerator, denominator): Wilson intervals
    "outcome_rate": ("events", "patients"),
    "selection_rate": ("selected", "patients"),
    "sensitivity": ("true_positives", "events"),
    "false_negative_rate": ("missed", "events"),
    "ppv": ("true_positives", "selected"),
}
RATIO_FIGURES = {  # figures compared with the reference group and the population
    "performance": ("outcome_rate", "mean_predicted_risk", "observed_expected", "calibration_slope",
                    "auroc", "selection_rate", "sensitivity", "ppv", "false_negative_rate"),
    "selection": ("selection_rate", "mean_need", "measurement_completeness"),
}
COUNTS = ("patients", "events", "selected", "true_positives", "missed", "high_need", "selected_high_need", "need_sum")


@dataclass
class Estimate:
    value: float
    low: float = float("nan")
    high: float = float("nan")

    def as_dict(self) -> dict:
        return {k: (None if not math.isfinite(v) else round(float(v), 5)) for k, v in
                (("value", self.value), ("low", self.low), ("high", self.high))}

    def wholly_outside(self, low: float, high: float) -> bool:
        return math.isfinite(self.low) and (self.low > high or self.high < low)

    def outside(self, low: float, high: float) -> bool:
        return math.isfinite(self.value) and not low <= self.value <= high


@dataclass
class GroupFigures:
    """One group of one grouping: exact counts (suppressed only when written out) and figures."""

    labels: dict[str, str]
    counts: dict[str, int]
    figures: dict[str, Estimate] = field(default_factory=dict)
    vs_reference: dict[str, Estimate] = field(default_factory=dict)  # ratios
    vs_reference_difference: dict[str, Estimate] = field(default_factory=dict)
    vs_population: dict[str, Estimate] = field(default_factory=dict)
    vs_population_difference: dict[str, Estimate] = field(default_factory=dict)
    too_small: bool = False
    need_by_decile: list[float | None] = field(default_factory=list)
    patients_by_decile: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return " x ".join(str(v) for v in self.labels.values())


@dataclass
class GroupingFigures:
    grouping: Grouping
    groups: list[GroupFigures]

    def find(self, **labels) -> GroupFigures | None:
        for g in self.groups:
            if all(g.labels.get(k) == v for k, v in labels.items()):
                return g
        return None


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


def _bootstrap(cells: Cells, groupings: list[Grouping], inner: np.ndarray, inner_shape: tuple[int, ...],
               values: dict[str, np.ndarray], figures_fn, settings: AuditSettings, seed_offset: int):
    """Observed figures and bootstrap replicates of ``figures_fn`` for every grouping.

    Returns (indexes, observed, replicates): observed[grouping][figure] is (groups,),
    replicates[grouping][figure] is (replicates, groups) (or with a trailing axis).
    """
    indexes = [group_index(cells, g) for g in groupings]
    size = int(np.prod(inner_shape))
    blocks = [scatter_matrix(gi.of_cell, inner, size, gi.labels.height) for gi in indexes]
    from scipy import sparse

    matrix = sparse.hstack(blocks).tocsr()
    offsets = np.cumsum([0] + [b.shape[1] for b in blocks])

    def figures(weights: np.ndarray) -> list[dict[str, np.ndarray]]:
        sums = {name: np.asarray((weights * per_cell) @ matrix) for name, per_cell in values.items()}
        out = []
        for k, gi in enumerate(indexes):
            shape = (weights.shape[0], gi.labels.height, *inner_shape)
            out.append(figures_fn(**{name: s[:, offsets[k]:offsets[k + 1]].reshape(shape) for name, s in sums.items()}))
        return out

    observed = [{k: v[0] for k, v in f.items()} for f in figures(cells.count[None, :])]
    chunks = [figures(w) for w in poisson_replicates(cells.count, settings.replicates, settings.seed + seed_offset)]
    replicates = [{k: np.concatenate([c[i][k] for c in chunks]) for k in chunks[0][i]} for i in range(len(indexes))]
    return indexes, observed, replicates


def _percentile(reps: np.ndarray, level: float) -> tuple[float, float]:
    finite = reps[np.isfinite(reps)]
    if finite.size < 0.9 * reps.size or finite.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(finite, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def _compare(obs: np.ndarray, reps: np.ndarray, i: int, j: int, level: float) -> tuple[Estimate, Estimate]:
    """Ratio and difference of group i over group j (or the population), with bootstrap intervals."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = Estimate(obs[i] / obs[j] if obs[j] else float("nan"),
                         *_percentile(reps[:, i] / reps[:, j], level))
    difference = Estimate(obs[i] - obs[j], *_percentile(reps[:, i] - reps[:, j], level))
    return ratio, difference


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
               extra=None) -> list[GroupingFigures]:
    out = []
    for gi, obs, reps in zip(indexes, observed, replicates, strict=True):
        ref_rows = _reference_rows(gi, settings.reference_group)
        groups = []
        for g, labels in enumerate(gi.labels.iter_rows(named=True)):
            counts = {c: int(round(obs[c][g])) for c in COUNTS if c in obs}
            if "events" in counts:
                counts["missed"] = counts["events"] - counts["true_positives"]
            row = GroupFigures({k: str(v) for k, v in labels.items()}, counts)
            for name, values in obs.items():
                if name in COUNTS or values.ndim != 1:
                    continue
                if name in PROPORTIONS:
                    num, den = PROPORTIONS[name]
                    low, high = _metrics.wilson_interval(counts[num], counts[den], settings.level)
                    row.figures[name] = Estimate(float(values[g]), float(low), float(high))
                else:
                    row.figures[name] = Estimate(float(values[g]), *_percentile(reps[name][:, g], settings.level))
            for name in RATIO_FIGURES[kind]:
                if name not in obs:
                    continue
                if ref_rows[g] >= 0:
                    row.vs_reference[name], row.vs_reference_difference[name] = _compare(
                        obs[name], reps[name], g, ref_rows[g], settings.level)
                both_obs = np.array([obs[name][g], population_observed[name][0]])
                both_reps = np.stack([reps[name][:, g], population_reps[name][:, 0]], axis=1)
                row.vs_population[name], row.vs_population_difference[name] = _compare(
                    both_obs, both_reps, 0, 1, settings.level)
            if extra:
                extra(row, g, obs, reps)
            groups.append(row)
        out.append(GroupingFigures(gi.grouping, groups))
    return out


@dataclass
class Curves:
    """Aggregate points for the report's plots, by ethnic group (and the population)."""

    calibration: dict[str, list[tuple[float, float, int, int]]]  # mean predicted, observed, patients, events
    roc: dict[str, list[tuple[float, float]]]  # false positive rate, sensitivity


@dataclass
class ScoreAudit:
    """Everything measured about one score (one outcome's model)."""

    name: str
    threshold: float
    performance: list[GroupingFigures]
    selection: list[GroupingFigures]
    population_need_by_decile: list[float]
    curves: Curves | None = None
    need_description: str = ""

    def grouping(self, kind: str, name: str) -> GroupingFigures:
        for g in getattr(self, kind):
            if g.grouping.name == name:
                return g
        raise KeyError(name)


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


def audit_performance(frame: pl.DataFrame, settings: AuditSettings) -> tuple[list[GroupingFigures], Curves]:
    frame = _prepare_strata(frame).with_columns(
        score_bins(pl.col("score"), SCORE_BINS).alias("score_bin"),
        pl.col("outcome").cast(pl.Int8), pl.col("selected").cast(pl.Int8))
    curves = performance_curves(frame)
    strata = _strata(frame)
    cells = to_cells(frame, [*strata, "score_bin", "outcome", "selected"], ["score"])
    keys = cells.keys
    inner = (keys["score_bin"].to_numpy().astype(np.int64) * 4 + keys["outcome"].to_numpy() * 2
             + keys["selected"].to_numpy())
    mean_score = cells.sums["score"] / cells.count
    groupings = groupings_for(strata)
    indexes, observed, replicates = _bootstrap(
        cells, groupings, inner, (SCORE_BINS, 2, 2), {"n": np.ones(cells.size), "risk": mean_score},
        _metrics.performance, settings, seed_offset=0)
    for obs in observed:
        obs["missed"] = obs["events"] - obs["true_positives"]
    population = groupings.index(Grouping("population", ()))
    for obs, reps in zip(observed, replicates, strict=True):
        for target, source in ((obs, observed[population]), (reps, replicates[population])):
            # need-adjusted selection: the group's share of those selected at the operating point
            # over its share of the recorded outcomes (the need the list exists to meet)
            target["need_adjusted_selection"] = _share_ratio(target["selected"], source["selected"],
                                                             target["events"], source["events"])
    figures = _summarise("performance", indexes, observed, replicates, settings,
                         observed[population], replicates[population], _too_small(settings, performance=True))
    return figures, curves


def _share_ratio(part, whole, need_part, need_whole) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        list_share = part / whole
        need_share = need_part / need_whole
        return np.where(need_share > 0, list_share / need_share, np.nan)


def _too_small(settings: AuditSettings, performance: bool):
    def mark(row: GroupFigures, g, obs, reps) -> None:
        small = row.counts["patients"] < settings.min_patients
        if performance:
            small |= row.counts["events"] < settings.min_events
        row.too_small = bool(small)
    return mark


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
                    high_need_from: float = 1) -> tuple[list[GroupingFigures], list[float]]:
    frame = frame.with_columns(score_bins(pl.col("score"), SCORE_DECILES).alias("decile"))
    if "age" in frame.columns:
        frame = frame.with_columns(age_band(pl.col("age")).alias("age_band")).drop("age")
    return audit_selection_cells(selection_cells(frame, high_need_from), settings)


def audit_selection_cells(cells: Cells, settings: AuditSettings,
                          high_need_from: float | None = None) -> tuple[list[GroupingFigures], list[float]]:
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
        {"n": np.ones(cells.size), "need": cells.sums["need"] / cells.count,
         "measured": cells.sums["measurements_recorded"] / cells.count,
         "score": cells.sums["score"] / cells.count},
        figures, settings, seed_offset=1)
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

    def extra(row: GroupFigures, g, obs, reps) -> None:
        _too_small(settings, performance=False)(row, g, obs, reps)
        row.need_by_decile = [None if not np.isfinite(x) else round(float(x), 4) for x in obs["need_by_decile_mean"][g]]
        row.patients_by_decile = [int(x) for x in obs["patients_by_decile_kept"][g]]

    # the per-decile arrays are curves, not figures: keep them out of the figure tables
    curves = ("patients_by_decile", "need_by_decile", "patients_by_stratum", "need_by_stratum", "score_by_stratum")
    for obs in observed:
        for name in curves:
            obs.pop(name, None)
    for reps in replicates:
        for name in curves:
            reps.pop(name)
    groups = _summarise("selection", indexes, observed, replicates, settings, pop_obs, pop_reps, extra)
    population_curve = [round(float(x), 4) for x in np.nan_to_num(pop_obs["need_by_decile_mean"][0])]
    for grouping in groups:
        for row in grouping.groups:
            row.figures.pop("need_by_decile_mean", None)
    return groups, population_curve


def audit_score(name: str, performance: pl.DataFrame | None, selection: pl.DataFrame | Cells, threshold: float,
                settings: AuditSettings, high_need_from: float = 1) -> ScoreAudit:
    """``selection``: the patients (with ``score``), or their cells already made
    (``selection_cells``, e.g. added up from shards)."""
    perf, curves = [], None
    if performance is not None and performance.height:
        perf, curves = audit_performance(performance, settings)
    if isinstance(selection, Cells):
        sel, curve = audit_selection_cells(selection, settings, high_need_from)
    else:
        sel, curve = audit_selection(selection, settings, high_need_from)
    return ScoreAudit(name, threshold, perf, sel, curve, curves)
