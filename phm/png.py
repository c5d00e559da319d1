"""PNG figures for the reports (the run history's, the fairness audit's), drawn once.

``savefig(bbox_inches="tight")`` lays a figure out twice before it draws it: once with drawing
switched off, to place the ticks and text, then again to measure every artist's extent, then it
draws the figure cropped to that extent. ``tight_png`` draws the figure once, with a wide margin
of empty canvas on every side (so a legend or title that sticks out of the figure is drawn whole,
as the tight crop keeps it), and crops the pixels to what was drawn, with the same padding: the
same plot, everything at the same place relative to everything else, at about two thirds of the
cost. A figure whose drawing reaches the edge of the margin is saved the usual way instead, so
nothing is ever cut off.
"""

from __future__ import annotations

import io

import numpy as np

DPI = 90  # the reports' PNGs
MARGIN_INCHES = (2.0, 2.0, 6.0, 2.0)  # left, bottom, right (legends beside the axes), top


def figure(width: float, height: float):
    """A figure on matplotlib's Agg canvas, without pyplot (no figure manager to close)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _drawn(rgba: np.ndarray) -> np.ndarray:
    """Pixels something was drawn on: neither the white figure (opaque white) nor the
    transparent canvas outside it (alpha 0)."""
    pixels = rgba.view("<u4")[..., 0]  # bytes R, G, B, A: A is the most significant byte
    return (pixels != 0xFFFFFFFF) & (pixels > 0x00FFFFFF)


def tight_png(fig, dpi: int = DPI) -> bytes:
    """The figure as PNG bytes, cropped to what is drawn and padded by ``savefig.pad_inches``
    as ``savefig(bbox_inches="tight")`` crops it, from one drawing."""
    import matplotlib
    from matplotlib.image import imsave
    from matplotlib.transforms import Bbox

    width, height = fig.get_size_inches()
    left, bottom, right, top = MARGIN_INCHES
    canvas = Bbox.from_extents(-left, -bottom, width + right, height + top)
    raw = io.BytesIO()
    fig.savefig(raw, format="rgba", dpi=dpi, bbox_inches=canvas)
    # the canvas's pixels as matplotlib counts them (FigureCanvasBase.get_width_height)
    columns, rows = (int(size * dpi + 1e-8) for size in (canvas.width, canvas.height))
    buffer = raw.getbuffer()
    drawn_rows = drawn_columns = np.empty(0, dtype=np.intp)
    if len(buffer) == rows * columns * 4:
        rgba = np.frombuffer(buffer, dtype=np.uint8).reshape(rows, columns, 4)
        drawn = _drawn(rgba)
        drawn_rows, drawn_columns = np.flatnonzero(drawn.any(axis=1)), np.flatnonzero(drawn.any(axis=0))
    if (drawn_rows.size == 0 or drawn_rows[0] == 0 or drawn_columns[0] == 0
            or drawn_rows[-1] == rows - 1 or drawn_columns[-1] == columns - 1):
        out = io.BytesIO()  # nothing drawn, or drawn up to the margin's edge: the usual way
        fig.savefig(out, format="png", dpi=dpi, bbox_inches="tight")
        return out.getvalue()
    pad = round(matplotlib.rcParams["savefig.pad_inches"] * dpi)
    crop = rgba[max(drawn_rows[0] - pad, 0):drawn_rows[-1] + 1 + pad,
                max(drawn_columns[0] - pad, 0):drawn_columns[-1] + 1 + pad]
    out = io.BytesIO()
    imsave(out, crop, format="png", origin="upper", dpi=dpi)
    return out.getvalue()
