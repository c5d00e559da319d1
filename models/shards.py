"""Per-shard work: score a shard's patients, and combine shards exactly.

A shard is a PCN (``by="pcn"``) or the whole ICB (``by=None``, the single-process run). The
shard's patients (features and validated scores) travel as data, never as files: a ``ShardMap``
says where the per-shard work runs and how a shard's rows get there. ``run_here`` runs it in this
process on the frames themselves; the flow's Dask runner (flows/run.py) scatters each shard's
frame to a Dask worker once, and every task on that shard gets the frame from Dask. So a worker
needs no disk shared with the coordinator: only the same code. The work (``score_shard``,
``shard_cells``) returns its results to the coordinator, which alone writes the outputs: the
scores (one float per patient and model), counts, fixed-grid score histograms, and audit cells.

Exactness. The audit's operating point (the score of the last patient the list has room for) and
its score deciles are order statistics of the whole population's scores. They are found without
sorting the whole population: each shard returns a histogram of its scores on one fixed grid
(``GRID_BINS`` equal bins over [0, 1]); the summed histograms say which bin holds the k-th
smallest score and its rank inside that bin; the shards' scores in just those bins (a few
hundred values) give the k-th smallest exactly. A patient's decile is the number of decile cut
points strictly below their score, which is exactly the equal-count decile of
``_cells.score_bins`` (a test holds the two equal). The shards' cells then add up
(``add_cells``) to the cells of the whole population, so a sharded audit gives the same figures,
intervals included, as an unsharded one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import polars as pl

from models.fairness import HIGH_NEED_FROM, measurements_recorded, need
from models.fairness._audit import selection_cells
from models.fairness._cells import SCORE_DECILES, Cells, age_band
from models.train import OUTCOMES, model_inputs, predict_risk

GRID_BINS = 1 << 16  # equal bins over [0, 1]: a few hundred patients per bin at 1M
SHARD_BY = ("pcn", None)
FOLDER_PREFIX = ".shards-"  # shard folders of earlier versions, which wrote shards to files: removed if left


@dataclass(frozen=True)
class Shard:
    """One shard's patients. ``rows``: their features and validated scores, as a polars frame or
    as the ShardMap's handle to one (a Dask future: the frame held by a worker); the work is
    always handed the frame. ``scores``: the shard's scores (``score_shard``'s), likewise, where
    the work needs them (``shard_cells``)."""

    name: str
    patients: int
    rows: object = field(repr=False, compare=False)
    scores: object = field(default=None, repr=False, compare=False)


class ShardMap(Protocol):
    """Where the per-shard work runs. ``shard_map(work, shards, **kwargs)`` is
    ``[work(shard, **kwargs) for shard in shards]`` with each shard's ``rows`` and ``scores``
    handed over as frames; ``put(frames)`` makes handles the work can be handed (the frames
    themselves here; futures of frames scattered to the Dask workers); ``release(handles)``
    lets them go."""

    def __call__(self, work: Callable, shards: Sequence[Shard], **kwargs) -> list: ...

    def put(self, frames: Sequence[pl.DataFrame]) -> list: ...

    def release(self, handles: Sequence[object]) -> None: ...


class RunHere:
    """The per-shard work in this process, on the frames themselves (no copies)."""

    def __call__(self, work: Callable, shards: Sequence[Shard], **kwargs) -> list:
        return [work(shard, **kwargs) for shard in shards]

    def put(self, frames: Sequence[pl.DataFrame]) -> list:
        return list(frames)

    def release(self, handles: Sequence[object]) -> None:
        pass


run_here = RunHere()


@dataclass(frozen=True)
class ModelToScore:
    """One outcome's model, as the shard work needs it (the estimator travels to the worker)."""

    outcome: str
    variant: str
    estimator: object


@dataclass
class ShardScored:
    shard: str
    eligible: dict[str, int]
    histograms: dict[str, np.ndarray]  # outcome -> counts over GRID_BINS
    # patient_id and one score column per model (``score_column``), null where not eligible
    scores: pl.DataFrame | None = field(default=None, repr=False)
    process: str = field(default_factory=lambda: f"{os.uname().nodename}:{os.getpid()}")  # where it ran


def score_column(outcome: str) -> str:
    """The score's column in a shard's scores: never an outcome's own name, which is also a
    feature (``cvd``, ``hypertension``: the patient already has it)."""
    return f"score_{outcome}"


def _grid_bin(scores: np.ndarray) -> np.ndarray:
    return np.clip((scores * GRID_BINS).astype(np.int64), 0, GRID_BINS - 1)


def make_shards(features: pl.DataFrame, by: str | None, put: Callable[[list], list] = run_here.put) -> list[Shard]:
    """The shards of ``features`` (one per PCN, or one of everything), their rows handed to
    ``put`` (a ShardMap's) at once: a Dask client spreads a list it scatters over its workers."""
    if by not in SHARD_BY:
        raise ValueError(f"shard by {by!r}: use 'pcn' or None")
    if by is None:
        parts = {"all": features}
    else:
        parts = {str(key[0]) if key[0] is not None else "no-pcn": part
                 for key, part in features.partition_by("pcn_code", as_dict=True, maintain_order=True).items()}
    names = sorted(parts)
    handles = put([parts[name] for name in names])
    return [Shard(name, parts[name].height, handle) for name, handle in zip(names, handles, strict=True)]


def release_shards(shards: Sequence[Shard], shard_map: ShardMap) -> None:
    shard_map.release([s.rows for s in shards] + [s.scores for s in shards if s.scores is not None])


@contextlib.contextmanager
def shards_for(features: pl.DataFrame, shards: list[Shard] | None, shard_map: ShardMap):
    """The shards to work on: ``shards`` if the caller made them (the flow makes them once for
    the audit and the scoring), else one shard of the whole ICB, let go when the work is done."""
    if shards is not None:
        yield shards
        return
    made = make_shards(features, None, shard_map.put)
    try:
        yield made
    finally:
        release_shards(made, shard_map)


def with_scores(shards: Sequence[Shard], scored: Sequence[ShardScored], shard_map: ShardMap) -> list[Shard]:
    """The shards with their scores (``score_shard``'s results, in the shards' order) put where
    the work can be handed them."""
    if [s.name for s in shards] != [s.shard for s in scored]:
        raise ValueError("scores of other shards, or in another order")
    handles = shard_map.put([s.scores for s in scored])
    return [dataclasses.replace(shard, scores=handle) for shard, handle in zip(shards, handles, strict=True)]


def score_shard(shard: Shard, models: list[ModelToScore]) -> ShardScored:
    """Score the shard's eligible patients with each model: the scores (one column per outcome,
    null where not eligible) and their histograms."""
    frame = shard.rows
    scores = frame.select("patient_id")
    result = ShardScored(shard.name, {}, {})
    outcomes = {o.short: o for o in OUTCOMES}
    for model in models:
        eligible = outcomes[model.outcome].eligible(frame)
        rows = frame.filter(eligible)
        risk = (predict_risk(model.estimator, model_inputs(rows, model.variant))
                if rows.height else np.empty(0))
        scored = rows.select("patient_id").with_columns(pl.Series(score_column(model.outcome), risk, dtype=pl.Float64))
        scores = scores.join(scored, on="patient_id", how="left", maintain_order="left")
        result.eligible[model.outcome] = rows.height
        result.histograms[model.outcome] = np.bincount(_grid_bin(risk), minlength=GRID_BINS)
    result.scores = scores
    return result


@dataclass(frozen=True)
class RankWanted:
    """The k-th smallest score (1-based) of an outcome: in grid bin ``bin``, ``rank`` within it."""

    outcome: str
    k: int
    bin: int
    rank: int


def ranks_wanted(outcome: str, histogram: np.ndarray, ks: list[int]) -> list[RankWanted]:
    cumulative = np.cumsum(histogram)
    out = []
    for k in ks:
        b = int(np.searchsorted(cumulative, k))  # first bin whose cumulative count reaches k
        before = int(cumulative[b - 1]) if b else 0
        out.append(RankWanted(outcome, k, b, k - before))
    return out


def scores_in_bins(scores: pl.DataFrame, bins: dict[str, list[int]]) -> dict[tuple[str, int], np.ndarray]:
    """A shard's scores (``ShardScored.scores``) that fall in the given grid bins, per (outcome, bin)."""
    out = {}
    for outcome, wanted in bins.items():
        values = scores[score_column(outcome)].drop_nulls().to_numpy()
        of_value = _grid_bin(values)
        for b in set(wanted):
            out[(outcome, b)] = np.sort(values[of_value == b])
    return out


def order_statistics(wanted: list[RankWanted], parts: list[dict[tuple[str, int], np.ndarray]]) -> dict[tuple[str, int], float]:
    """(outcome, k) -> the k-th smallest score, from every shard's scores in the wanted bins."""
    out = {}
    for w in wanted:
        values = np.sort(np.concatenate([p.get((w.outcome, w.bin), np.empty(0)) for p in parts]))
        out[(w.outcome, w.k)] = float(values[w.rank - 1])
    return out


@dataclass(frozen=True)
class CutPoints:
    """For one outcome: the list's operating point and the score deciles' cut points."""

    eligible: int
    capacity: int
    threshold: float  # selected: score >= threshold
    decile_cuts: tuple[float, ...]  # decile = number of cuts strictly below the score

    @staticmethod
    def ranks(eligible: int, capacity_share: float) -> tuple[int, list[int]]:
        capacity = max(1, int(round(eligible * capacity_share)))
        threshold_k = eligible - capacity + 1  # the capacity-th largest
        decile_ks = [math.ceil(d * eligible / SCORE_DECILES) for d in range(1, SCORE_DECILES)]
        return capacity, [threshold_k, *decile_ks]


def cut_points(scored: list[ShardScored], capacity_share: float, find_order_statistics) -> dict[str, CutPoints]:
    """``find_order_statistics(wanted) -> {(outcome, k): value}``: from the shards' scores in the
    wanted bins (see ``scores_in_bins``)."""
    outcomes = list(scored[0].histograms)
    eligible = {o: sum(s.eligible[o] for s in scored) for o in outcomes}
    wanted, plans = [], {}
    for o in outcomes:
        if eligible[o] == 0:
            continue
        histogram = np.sum([s.histograms[o] for s in scored], axis=0)
        capacity, ks = CutPoints.ranks(eligible[o], capacity_share)
        plans[o] = (capacity, ks)
        wanted += ranks_wanted(o, histogram, ks)
    values = find_order_statistics(wanted) if wanted else {}
    out = {}
    for o, (capacity, ks) in plans.items():
        out[o] = CutPoints(eligible[o], capacity, values[(o, ks[0])], tuple(values[(o, k)] for k in ks[1:]))
    return out


@dataclass
class ShardCells:
    shard: str
    cells: dict[str, Cells] = field(default_factory=dict)  # outcome -> broad groups x IMD x sex
    detailed: dict[str, Cells] = field(default_factory=dict)  # outcome -> 16 detailed categories
    selected: dict[str, int] = field(default_factory=dict)


def shard_cells(shard: Shard, cuts: dict[str, CutPoints]) -> ShardCells:
    """The audit's list-population cells for the shard (its rows and its scores): selection, need
    and completeness."""
    frame = shard.rows.join(shard.scores, on="patient_id", how="left", validate="1:1")
    clashes = [c for c in frame.columns if c.endswith("_right")]
    if clashes:  # a score column shadowing a feature would silently audit the wrong thing
        raise ValueError(f"shard {shard.name}: score columns clash with features: {clashes}")
    out = ShardCells(shard.name)
    if any(o in cuts for o in ("cvd", "t2d")):  # the label-choice need (models/fairness/_need.py)
        # the validated scores come with the population (models/population.py reads them from
        # marts.patient_scores); computed here only for shards made from bare features
        missing = [c for c in ("qrisk3_10y_pct", "qdiabetes_10y_pct") if c not in frame.columns]
        if missing:
            from models.score_patients import score_features

            frame = frame.with_columns(score_features(frame).select(missing))
    for outcome, cut in cuts.items():
        score = pl.col(score_column(outcome))
        rows = frame.filter(score.is_not_null())
        decile = pl.sum_horizontal(*[(score > c).cast(pl.Int32) for c in cut.decile_cuts]) \
            if cut.decile_cuts else pl.lit(0)
        rows = rows.with_columns(need(outcome), measurements_recorded()).with_columns(
            (score >= cut.threshold).alias("selected"), decile.alias("decile"))
        out.selected[outcome] = int(rows["selected"].sum())
        rows = rows.with_columns(age_band(pl.col("age_years")).alias("age_band"))
        rows = rows.with_columns(score.alias("score"))
        common = ["decile", "age_band", "need", "measurements_recorded", "selected", "score"]
        out.cells[outcome] = selection_cells(rows.select(
            pl.col("ethnicity_group").alias("group"), "imd_quintile", "sex", *common), HIGH_NEED_FROM[outcome])
        out.detailed[outcome] = selection_cells(rows.select(pl.col("ethnicity_category").alias("group"), *common),
                                                HIGH_NEED_FROM[outcome])
    return out
