"""Patients to cells, and the Poisson bootstrap over cells.

Every audit figure is a function of sums over patients (counts, events, selected, predicted
risk, need) within a group and a score bin. So the patients are first aggregated into cells:
one per combination of the stratum columns (ethnicity, IMD quintile, sex), score bin, recorded
outcome, selection and need. A 1M-patient table becomes tens of thousands of cells.

The bootstrap is the Poisson bootstrap (Hanley & MacGibbon 2006; Chamandy et al. 2012): each
patient gets a Poisson(1) weight per replicate instead of a multinomial draw, which for large n
is the same resampling scheme and lets replicates be drawn per cell: the weighted count of a
cell of k patients is Poisson(k). Counts, events, selection and need are then resampled
exactly; a cell's predicted-risk sum is its resampled count times its mean risk, so the
spread of risk inside one score bin (1/200 of the patients) is the only approximation. One draw
of the finest cells serves every grouping, so a group and its intersections come from the same
replicates.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import polars as pl
from scipy import sparse

SCORE_BINS = 200  # performance: equal-count bins of the score (ties share a bin)
SCORE_DECILES = 10  # label-choice curves and the need standardisation
MAX_NEED = 20  # need counts above this are counted as 20 (none seen in practice)
AGE_BAND_EDGES = (40, 50, 60, 70)  # the label-choice check compares like with like: 25-39, 40-49, ..., 70+
AGE_BANDS = len(AGE_BAND_EDGES) + 1


def age_band(age: pl.Expr) -> pl.Expr:
    """0-4 for ages under 40, 40-49, 50-59, 60-69, 70 and over (0 where unknown)."""
    band = pl.lit(0)
    for edge in AGE_BAND_EDGES:
        band = band + (age >= edge).fill_null(False).cast(pl.Int32)
    return band.cast(pl.Int32)


def score_bins(score: pl.Expr, bins: int) -> pl.Expr:
    """Equal-count bins 0..bins-1 of a score; tied scores always share a bin."""
    rank = score.rank("min") - 1
    return (rank * bins // score.count()).clip(0, bins - 1).cast(pl.Int32)


@dataclass
class Cells:
    """Aggregated patients: ``keys`` has one row per cell, the arrays are aligned with it."""

    keys: pl.DataFrame
    count: np.ndarray
    sums: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. score, measurements

    @property
    def size(self) -> int:
        return self.count.size


def to_cells(frame: pl.DataFrame, key_columns: list[str], sum_columns: list[str]) -> Cells:
    aggregated = frame.group_by(key_columns).agg(
        pl.len().alias("_count"), *[pl.col(c).cast(pl.Float64).sum().alias(f"_sum_{c}") for c in sum_columns],
    ).sort(key_columns, nulls_last=True)
    return Cells(
        keys=aggregated.select(key_columns),
        count=aggregated["_count"].to_numpy().astype(np.float64),
        sums={c: aggregated[f"_sum_{c}"].to_numpy() for c in sum_columns},
    )


def add_cells(parts: list[Cells]) -> Cells:
    """The cells of a population from the cells of its parts (shards): the same keys, counts and
    sums, in the same order, as ``to_cells`` of the whole: exactly for sums of whole numbers (counts,
    need counts), up to the order of float additions for scores and risks."""
    parts = [p for p in parts if p.size]
    if not parts:
        raise ValueError("no cells to add")
    key_columns = parts[0].keys.columns
    sum_columns = list(parts[0].sums)
    stacked = pl.concat([p.keys.with_columns(pl.Series("_count", p.count),
                                             *[pl.Series(f"_sum_{c}", p.sums[c]) for c in sum_columns])
                         for p in parts], how="vertical_relaxed")
    added = stacked.group_by(key_columns).agg(pl.col("_count").sum(), *[pl.col(f"_sum_{c}").sum() for c in sum_columns]
                                              ).sort(key_columns, nulls_last=True)
    return Cells(keys=added.select(key_columns), count=added["_count"].to_numpy().astype(np.float64),
                 sums={c: added[f"_sum_{c}"].to_numpy() for c in sum_columns})


@dataclass
class Grouping:
    """A way of cutting the population: ``columns`` () is the whole population."""

    name: str
    columns: tuple[str, ...]


@dataclass
class GroupIndex:
    """For one grouping: its groups (labels) and each cell's group number."""

    grouping: Grouping
    labels: pl.DataFrame  # one row per group, in group-number order
    of_cell: np.ndarray


def group_index(cells: Cells, grouping: Grouping) -> GroupIndex:
    if not grouping.columns:
        return GroupIndex(grouping, pl.DataFrame({"group": ["population"]}), np.zeros(cells.size, dtype=np.int64))
    keys = cells.keys.select(grouping.columns)
    labels = keys.unique(maintain_order=False).sort(list(grouping.columns), nulls_last=True)
    numbered = labels.with_row_index("_group")
    of_cell = keys.join(numbered, on=list(grouping.columns), how="left", nulls_equal=True,
                        maintain_order="left")["_group"].to_numpy().astype(np.int64)
    return GroupIndex(grouping, labels, of_cell)


def scatter_matrix(of_cell: np.ndarray, inner: np.ndarray, inner_size: int, groups: int) -> sparse.csr_matrix:
    """Cells x (group, inner key) indicator: weights @ matrix sums cells into the keys."""
    columns = of_cell * inner_size + inner
    rows = np.arange(of_cell.size)
    return sparse.csr_matrix((np.ones(of_cell.size), (rows, columns)), shape=(of_cell.size, groups * inner_size))


def poisson_replicates(count: np.ndarray, replicates: int, seed: int, chunk: int = 50) -> Iterator[np.ndarray]:
    """Bootstrap weights for the cells, ``chunk`` replicates at a time: arrays (r, cells)."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < replicates:
        r = min(chunk, replicates - done)
        yield rng.poisson(count, size=(r, count.size)).astype(np.float64)
        done += r
