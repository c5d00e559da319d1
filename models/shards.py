"""Per-shard work: score a shard's patients, and combine shards exactly.

A shard is a PCN (``by="pcn"``) or the whole ICB (``by=None``, the single-process run). The
coordinator writes each shard's patients (features and validated scores) to a Parquet file in a
folder only its owner can read; the shard work (``score_shard``, ``shard_cells``) runs wherever
the executor puts it (in this process, or on Dask workers that can read that folder) and returns
only aggregates: counts, fixed-grid score histograms, and audit cells. The scores themselves stay
in the shard's folder until the coordinator loads them.

Exactness. The audit's operating point (the score of the last patient the list has room for) and
its score deciles are order statistics of the whole population's scores. They are found without
gathering the scores: each shard returns a histogram of its scores on one fixed grid
(``GRID_BINS`` equal bins over [0, 1]); the summed histograms say which bin holds the k-th
smallest score and its rank inside that bin; each shard then returns its scores in just those
bins (a few hundred values), and the k-th smallest is read off exactly. A patient's decile is
the number of decile cut points strictly below their score, which is exactly the equal-count
decile of ``_cells.score_bins`` (a test holds the two equal). The shards' cells then add up
(``add_cells``) to the cells of the whole population, so a sharded audit gives the same figures,
intervals included, as an unsharded one.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from models.fairness import HIGH_NEED_FROM, measurements_recorded, need
from models.fairness._audit import selection_cells
from models.fairness._cells import SCORE_DECILES, Cells, age_band
from models.train import OUTCOMES, model_inputs, predict_risk

GRID_BINS = 1 << 16  # equal bins over [0, 1]: a few hundred patients per bin at 1M
SHARD_BY = ("pcn", None)
FOLDER_PREFIX = ".shards-"  # a run's shard folders, beside the database
AUDIT_SCORES, LIST_SCORES = "audit", "list"  # candidates' scores for the audit; champions' for the lists

# ``shard_map(work, shards, **kwargs) -> [work(shard, **kwargs) for shard in shards]``, run
# wherever the caller chooses: ``run_here`` in this process, or the flow's Prefect task runner
# (flows/run.py), which with ``--executor dask`` is a Dask cluster.
ShardMap = Callable[..., list]


def run_here(work, shards, **kwargs) -> list:
    return [work(shard, **kwargs) for shard in shards]


def shard_folder(beside: Path) -> Path:
    """A new folder for one run's shard files, beside the database (same disk, same owner)."""
    beside.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX, dir=beside.parent))


@dataclass(frozen=True)
class Shard:
    name: str
    path: Path  # Parquet: the shard's registered patients, features and validated scores
    patients: int

    def scores_path(self, purpose: str) -> Path:
        return self.path.with_name(f"{self.path.stem}.{purpose}-scores.parquet")


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
    process: str = field(default_factory=lambda: f"{os.uname().nodename}:{os.getpid()}")  # where it ran


def score_column(outcome: str) -> str:
    """The score's column in a shard's scores file: never an outcome's own name, which is also a
    feature (``cvd``, ``hypertension``: the patient already has it)."""
    return f"score_{outcome}"


def _grid_bin(scores: np.ndarray) -> np.ndarray:
    return np.clip((scores * GRID_BINS).astype(np.int64), 0, GRID_BINS - 1)


def make_shards(features: pl.DataFrame, folder: Path, by: str | None) -> list[Shard]:
    """Write each shard's patients to ``folder`` (created owner-only: these are patient rows)."""
    if by not in SHARD_BY:
        raise ValueError(f"shard by {by!r}: use 'pcn' or None")
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    if by is None:
        parts = {"all": features}
    else:
        parts = {str(key[0]) if key[0] is not None else "no-pcn": part
                 for key, part in features.partition_by("pcn_code", as_dict=True, maintain_order=True).items()}
    shards = []
    for name in sorted(parts):
        path = folder / f"shard-{name}.parquet"
        parts[name].write_parquet(path)
        os.chmod(path, 0o600)
        shards.append(Shard(name, path, parts[name].height))
    return shards


def remove_shards(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def shards_for(features: pl.DataFrame, db_path: Path, shards: list[Shard] | None):
    """The shards to work on: ``shards`` if the caller made them (the flow makes them once for
    the audit and the scoring), else one shard of the whole ICB in a new folder beside the
    database, removed when the work is done, whatever happens (it holds patient rows)."""
    if shards is not None:
        yield shards
        return
    folder = shard_folder(Path(db_path))
    try:
        yield make_shards(features, folder, by=None)
    finally:
        remove_shards(folder)


def score_shard(shard: Shard, models: list[ModelToScore], purpose: str) -> ShardScored:
    """Score the shard's eligible patients with each model; keep the scores beside the shard
    (one column per outcome, null where not eligible) and return their histograms."""
    frame = pl.read_parquet(shard.path)
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
    path = shard.scores_path(purpose)
    scores.write_parquet(path)
    os.chmod(path, 0o600)
    return result


def read_shard_scores(shard: Shard, purpose: str) -> pl.DataFrame:
    return pl.read_parquet(shard.scores_path(purpose))


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


def scores_in_bins(shard: Shard, purpose: str, bins: dict[str, list[int]]) -> dict[tuple[str, int], np.ndarray]:
    """The shard's scores that fall in the given grid bins, per (outcome, bin)."""
    scores = read_shard_scores(shard, purpose)
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
    """``find_order_statistics(wanted) -> {(outcome, k): value}``: asks the shards (see
    ``scores_in_bins``)."""
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


def shard_cells(shard: Shard, purpose: str, cuts: dict[str, CutPoints]) -> ShardCells:
    """The audit's list-population cells for the shard: selection, need and completeness."""
    frame = pl.read_parquet(shard.path).join(read_shard_scores(shard, purpose), on="patient_id", how="left",
                                             validate="1:1")
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
