"""The reports' PNGs drawn once (phm/png.py): the crop keeps everything ``savefig(bbox_inches="tight")``
keeps, and a figure drawn beyond the margin is saved the usual way."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from phm import png


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))


def _usual(fig) -> bytes:
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=png.DPI, bbox_inches="tight")
    return out.getvalue()


def _sticking_out(legend_entries: int, fontsize: int = 7):
    """A plot whose legend sits beside the axes, outside the figure, and whose title is wider
    than the figure: what the history report's line plots look like, at their largest."""
    fig = png.figure(5.5, 3.4)
    ax = fig.add_subplot()
    for i in range(legend_entries):
        ax.plot([0, 1], [i, i + 1], marker="o", label=f"quarantined: a table with a long name {i}")
    ax.set_xticks([0, 1], ["1: 2026-03-31", "2: 2026-06-30"], rotation=30, ha="right")
    ax.set_title("a title much wider than the figure it belongs to, so that it sticks out on both sides")
    ax.legend(fontsize=fontsize, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return fig


def test_the_crop_keeps_what_the_tight_bounding_box_keeps_with_the_same_padding():
    fig = _sticking_out(legend_entries=6)
    once, usual = _pixels(png.tight_png(fig)), _pixels(_usual(fig))
    # the same extent, to the few pixels by which text's ink is smaller than its box
    assert abs(once.shape[0] - usual.shape[0]) <= 6 and abs(once.shape[1] - usual.shape[1]) <= 6
    drawn = png._drawn(np.ascontiguousarray(once))
    rows, columns = np.flatnonzero(drawn.any(axis=1)), np.flatnonzero(drawn.any(axis=0))
    pad = round(0.1 * png.DPI)  # savefig.pad_inches: nothing was cut at any edge
    assert (rows[0], columns[0]) == (pad, pad)
    assert (once.shape[0] - 1 - rows[-1], once.shape[1] - 1 - columns[-1]) == (pad, pad)


def test_a_figure_drawn_beyond_the_margin_is_saved_the_usual_way():
    fig = _sticking_out(legend_entries=24, fontsize=16)  # a legend taller than the figure and its margin
    assert png.tight_png(fig) == _usual(fig)
