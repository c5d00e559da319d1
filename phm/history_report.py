"""The history report: one self-contained HTML page (plots embedded as PNG data URLs, as the
fairness report embeds its plots) of an ICB's runs over time, from ``history.runs`` and
``history.figures`` only: figures as they may leave the pipeline (phm/history.py), never the
exact counts of ``history.score_bins``.

Sections: the runs (extract and index dates, published or not, gate, drift findings); the gate
per outcome and who signed it off; data quality (ethnicity recorded, Z 'not stated', 99 'not
known', quarantined shares); score drift (PSI per broad ethnic group against the previous run,
with the threshold) and the score distributions by group in the latest runs; list size per
PCN; uptake by group when outcomes have come back.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import polars as pl

from phm import png
from phm.history import (
    ALL,
    BIN_LABELS,
    GATE,
    LIST_SIZE,
    PSI,
    QUALITY,
    SCORE_SHARE,
    UPTAKE,
    DriftSettings,
)

REPORT_NAME = "history_report.html"
RUNS_SHOWN_IN_DISTRIBUTIONS = 4
GROUP_ORDER = (ALL, "White", "Mixed", "Asian", "Black", "Other", "Not stated", "Not known")


def _png(fig) -> str:
    return "data:image/png;base64," + base64.b64encode(png.tight_png(fig)).decode()


def _run_labels(runs: pl.DataFrame) -> dict[str, str]:
    return {r["run_id"]: f"{i + 1}: {r['extract_date'] or '?'}" for i, r in enumerate(runs.iter_rows(named=True))}


def _series(figures: pl.DataFrame, labels: dict[str, str], figure: str, subject: str | None = None,
            by: str = "subject") -> dict[str, list[float | None]]:
    """name -> value per run, in run order (None where the run has no value or it is withheld)."""
    chosen = figures.filter(pl.col("figure") == figure)
    if subject is not None:
        chosen = chosen.filter(pl.col("subject") == subject)
    out: dict[str, list[float | None]] = {}
    order = list(labels)
    for name in sorted(chosen[by].unique().to_list(), key=_group_key):
        values = {r["run_id"]: r["value"] for r in chosen.filter(pl.col(by) == name).iter_rows(named=True)}
        out[name] = [values.get(run) for run in order]
    return out


def _group_key(name: str):
    return (GROUP_ORDER.index(name), name) if name in GROUP_ORDER else (len(GROUP_ORDER), name)


def _line_plot(title: str, labels: dict[str, str], series: dict[str, list], ylabel: str,
               threshold: float | None = None) -> str | None:
    if not series:
        return None
    fig = png.figure(7.5, 3.4)
    ax = fig.add_subplot()
    x = list(range(len(labels)))
    for name, values in series.items():
        ax.plot(x, [float("nan") if v is None else v for v in values], marker="o", label=name)
    if threshold is not None:
        ax.axhline(threshold, color="red", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    ax.set_xticks(x, list(labels.values()), rotation=30, ha="right", fontsize=8)
    ax.set_xlabel("run: extract date")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.grid(alpha=0.3)
    return _png(fig)


def _distribution_plot(score: str, figures: pl.DataFrame, labels: dict[str, str]) -> str | None:
    chosen = figures.filter((pl.col("figure") == SCORE_SHARE) & (pl.col("subject") == score))
    if chosen.is_empty():
        return None
    runs = [r for r in labels if r in set(chosen["run_id"].to_list())][-RUNS_SHOWN_IN_DISTRIBUTIONS:]
    groups = sorted(chosen["grp"].unique().to_list(), key=_group_key)
    columns = 4
    rows = (len(groups) + columns - 1) // columns
    fig = png.figure(12, 2.6 * rows)
    axes = fig.subplots(rows, columns, squeeze=False, sharey=False)
    x = list(range(len(BIN_LABELS)))
    for i, (ax, group) in enumerate(zip(axes.flat, groups, strict=False)):
        for run in runs:
            shares = {r["bin"]: r["value"] for r in chosen.filter((pl.col("run_id") == run) & (pl.col("grp") == group))
                      .iter_rows(named=True)}
            ax.plot(x, [float("nan") if shares.get(b) is None else shares[b] for b in BIN_LABELS],
                    marker=".", label=labels[run])
        ax.set_title(group, fontsize=9, y=1.0)  # placed, not measured: nothing of the panel is above it
        # the bands' labels under the lowest panel of each column only, as the panels above it
        # share its bands: with the titles placed, a sixth less CPU than labels in every panel
        ax.set_xticks(x, BIN_LABELS if i + columns >= len(groups) else [], rotation=60, fontsize=6)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.suptitle(f"{score}: share of each group's patients per risk band (latest runs; withheld shares not drawn)",
                 fontsize=10)
    # the spacing tight_layout gives these panels (their titles and the rotated band labels under
    # the lowest row are fixed; the shares' tick labels are short), set rather than measured
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=0.46 / width, right=1 - 0.18 / width, bottom=0.6 / height, top=1 - 0.64 / height,
                        wspace=0.2, hspace=0.3)
    return _png(fig)


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape('' if v is None else str(v))}</td>" for v in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(src: str | None, alt: str) -> str:
    return f'<p><img src="{src}" alt="{html.escape(alt)}"></p>' if src else "<p>No figures yet.</p>"


def render(runs: pl.DataFrame, figures: pl.DataFrame, icb: str, settings: DriftSettings) -> str:
    labels = _run_labels(runs)
    parts = [f"<h1>Run history, ICB {html.escape(icb)}</h1>",
             "<p>Every figure is as it may leave the pipeline: counts of 1-7 suppressed, others rounded to 5; "
             "shares from the rounded counts, withheld (blank) where they rest on a count of 1-7. "
             f"Score drift is the population stability index (PSI) per broad ethnic group against the run before, "
             f"judged where a group has at least {settings.min_group} patients in both runs; above "
             f"{settings.max_psi:g} it raises a drift alert (docs/operations.md, 'Run history and drift').</p>"]
    gate = figures.filter(pl.col("figure") == GATE)
    psi = figures.filter(pl.col("figure") == PSI)
    rows = []
    for r in runs.iter_rows(named=True):
        drifted = psi.filter((pl.col("run_id") == r["run_id"]) & (pl.col("label") == "drift"))
        rows.append([labels[r["run_id"]], str(r["run_at"])[:19], r["index_date"], "yes" if r["published"] else "no",
                     r["gate"], r["patients"],
                     "; ".join(f"{d['subject']} / {d['grp']} ({d['value']:.2f})" for d in drifted.iter_rows(named=True))
                     or "none"])
    parts += ["<h2>Runs</h2>", _table(["run", "run at (UTC)", "index date", "lists published", "gate",
                                       "patients", "drift above the threshold"], rows)]
    outcomes = sorted({s for s in gate["subject"].to_list() if not s.endswith(" ranked by")})
    gate_rows = []
    for run_id, label in labels.items():
        mine = {r["subject"]: r["label"] for r in gate.filter(pl.col("run_id") == run_id).iter_rows(named=True)}
        gate_rows.append([label, *[f"{mine.get(o, '')} (ranked by {mine.get(o + ' ranked by', '')})"
                                   if o in mine else "" for o in outcomes]])
    parts += ["<h2>Fairness gate per outcome</h2>", _table(["run", *outcomes], gate_rows)]
    quality = _series(figures, labels, QUALITY)
    ethnicity = {k: v for k, v in quality.items() if k.startswith("ethnicity")}
    quarantined = {k.removeprefix("quarantined: "): v for k, v in quality.items() if k.startswith("quarantined")}
    parts += ["<h2>Data quality</h2>",
              _img(_line_plot("ethnicity recording (share of registered patients)", labels, ethnicity, "share"),
                   "ethnicity recording"),
              _img(_line_plot("rows quarantined by their own table's rules (share of the table)", labels, quarantined,
                              "share"), "quarantined") if quarantined else "<p>No rows quarantined in any run.</p>"]
    parts.append("<h2>Score drift by broad ethnic group</h2>")
    scores = sorted(figures.filter(pl.col("figure") == SCORE_SHARE)["subject"].unique().to_list())
    for score in scores:
        series = _series(psi.filter(pl.col("subject") == score), labels, PSI, by="grp")
        parts += [f"<h3>{html.escape(score)}</h3>",
                  _img(_line_plot(f"{score}: PSI against the previous run", labels, series, "PSI",
                                  settings.max_psi), f"{score} PSI") if series else
                  "<p>No PSI yet (one run, or every group too small).</p>",
                  _img(_distribution_plot(score, figures, labels), f"{score} distribution")]
    parts += ["<h2>List size per PCN</h2>",
              _img(_line_plot("patients on each PCN's list", labels, _series(figures, labels, LIST_SIZE),
                              "patients (rounded to 5)"), "list sizes")]
    uptake = figures.filter((pl.col("figure") == UPTAKE) & (pl.col("subject") == "attended"))
    parts.append("<h2>Uptake of invitations</h2>")
    if uptake.is_empty():
        parts.append("<p>No outcomes have come back from practices yet (phm outcomes).</p>")
    else:
        parts.append(_img(_line_plot("share of listed patients who attended, by group", labels,
                                     _series(uptake, labels, UPTAKE, "attended", by="grp"), "share"), "uptake"))
    style = ("body{font-family:sans-serif;max-width:1200px;margin:1em auto;padding:0 1em}"
             "table{border-collapse:collapse;font-size:0.85em}td,th{border:1px solid #ccc;padding:3px 6px}"
             "th{background:#eee}img{max-width:100%}")
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Run history, ICB "
            f"{html.escape(icb)}</title><style>{style}</style></head><body>{''.join(parts)}</body></html>\n")


def write_report(runs: pl.DataFrame, figures: pl.DataFrame, folder: Path, icb: str, settings: DriftSettings) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / REPORT_NAME
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(render(runs, figures, icb, settings), encoding="utf-8")
    tmp.replace(path)
    return path
