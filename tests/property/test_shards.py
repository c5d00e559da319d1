"""Shards combine exactly: order statistics from histograms, deciles, cells and the audit."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.audit_run import operating_point
from models.fairness import AuditSettings, Compared, audit_score
from models.fairness._audit import selection_cells
from models.fairness._cells import SCORE_DECILES, add_cells, score_bins
from models.shards import (
    GRID_BINS,
    CutPoints,
    ShardScored,
    _grid_bin,
    cut_points,
    order_statistics,
)
from tests.hypothesis_settings import examples


def _cuts_from_parts(parts: list[np.ndarray], share: float) -> CutPoints:
    """cut_points over in-memory shards: the same exchange the file-based shards make."""
    scored = [ShardScored(str(i), {"x": p.size}, {"x": np.bincount(_grid_bin(p), minlength=GRID_BINS)})
              for i, p in enumerate(parts)]

    def find(wanted):
        replies = []
        for p in parts:
            of_value = _grid_bin(p)
            replies.append({("x", w.bin): np.sort(p[of_value == w.bin]) for w in wanted})
        return order_statistics(wanted, replies)

    return cut_points(scored, share, find)["x"]


def _decile(scores: np.ndarray, cuts: CutPoints) -> np.ndarray:
    return sum((scores > c).astype(int) for c in cuts.decile_cuts) if cuts.decile_cuts else np.zeros(scores.size)


scores_with_ties = st.lists(
    st.one_of(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.99999, 1.0]), st.floats(0, 1, allow_nan=False)),
    min_size=1, max_size=300)


@settings(max_examples=examples(200), deadline=None)
@given(values=scores_with_ties, cuts_at=st.lists(st.integers(0, 300), max_size=5),
       share=st.sampled_from([0.01, 0.1, 0.33, 1.0]))
def test_cut_points_from_shards_equal_the_whole_populations(values, cuts_at, share):
    scores = np.array(values)
    edges = sorted({min(c, scores.size) for c in cuts_at})
    parts = np.split(scores, edges)
    cuts = _cuts_from_parts(parts, share)
    assert cuts.threshold == operating_point(pl.Series(scores), share)
    assert (scores >= cuts.threshold).sum() >= cuts.capacity
    expected = pl.select(score_bins(pl.Series(scores), SCORE_DECILES)).to_series().to_numpy()
    np.testing.assert_array_equal(_decile(scores, cuts), expected)


def test_cut_points_on_a_large_population_with_scores_crowded_in_one_grid_bin():
    rng = np.random.default_rng(3)
    scores = np.concatenate([rng.beta(1, 30, 200_000), np.full(5_000, 0.0312), rng.uniform(0.0312, 0.03121, 3_000)])
    rng.shuffle(scores)
    cuts = _cuts_from_parts(np.array_split(scores, 7), 0.1)
    assert cuts.threshold == operating_point(pl.Series(scores), 0.1)
    expected = pl.select(score_bins(pl.Series(scores), SCORE_DECILES)).to_series().to_numpy()
    np.testing.assert_array_equal(_decile(scores, cuts), expected)


def _population(n: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    groups = ["White", "Asian", "Black", "Mixed", "Other", "Not stated", "Not known"]
    return pl.DataFrame({
        "group": rng.choice(groups, n, p=[0.7, 0.1, 0.06, 0.03, 0.03, 0.03, 0.05]),
        "imd_quintile": rng.integers(1, 6, n),
        "sex": rng.choice(["female", "male"], n),
        "score": np.round(rng.beta(2, 20, n), 3),  # rounded: many ties
        "need": rng.poisson(0.8, n),
        "measurements_recorded": rng.integers(0, 5, n),
    })


def test_cells_of_shards_add_up_to_the_audit_of_the_whole_population():
    frame = _population(30_000, 11)
    audit_settings = AuditSettings(replicates=200)
    scores = frame["score"].to_numpy()
    parts = np.array_split(np.arange(frame.height), 4)
    cuts = _cuts_from_parts([scores[p] for p in parts], audit_settings.capacity_share)
    whole = frame.with_columns((pl.col("score") >= cuts.threshold).alias("selected"))

    def cells_of(rows: pl.DataFrame):
        decile = pl.sum_horizontal(*[(pl.col("score") > c).cast(pl.Int32) for c in cuts.decile_cuts])
        return selection_cells(rows.with_columns(decile.alias("decile")))

    added = add_cells([cells_of(whole[p]) for p in parts])
    direct = selection_cells(whole.with_columns(score_bins(pl.col("score"), SCORE_DECILES).alias("decile")))
    assert added.keys.equals(direct.keys)
    np.testing.assert_array_equal(added.count, direct.count)
    np.testing.assert_array_equal(added.sums["measurements_recorded"], direct.sums["measurements_recorded"])
    # scores are summed too (the label-choice check is in proportion to them): equal up to the
    # order of float additions
    np.testing.assert_allclose(added.sums["score"], direct.sums["score"], rtol=1e-12)

    from_cells = audit_score("x", None, added, cuts.threshold, audit_settings)
    from_patients = audit_score("x", None, whole, cuts.threshold, audit_settings)
    assert from_cells.groupings("selection") == from_patients.groupings("selection")
    for grouping in from_cells.groupings("selection"):
        for ga, gb in zip(from_cells.by_group(grouping, "selection"), from_patients.by_group(grouping, "selection"),
                          strict=True):
            assert ga.labels == gb.labels and ga.counts == gb.counts
            assert [(k, v.as_dict()) for k, v in ga.figures()] == [(k, v.as_dict()) for k, v in gb.figures()]
            assert [(k, v.as_dict()) for k, v in ga.comparisons(Compared.RATIO_TO_REFERENCE)] == \
                [(k, v.as_dict()) for k, v in gb.comparisons(Compared.RATIO_TO_REFERENCE)]
            assert ga.need_by_decile == gb.need_by_decile


def test_adding_no_cells_is_an_error():
    with pytest.raises(ValueError, match="no cells"):
        add_cells([])
