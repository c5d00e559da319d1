"""The ethnicity data-quality report: one self-contained HTML page per run, written beside the
fairness report (``<out>/audit/ethnicity_quality.html``) and logged with the audit to MLflow.

For a practice or PCN team: which practices stand out (flagged, with the direction and the
figures), every practice's and PCN's figures with intervals beside the ICB's typical practice and
the census, the recorded mix beside the census mix (information), and the trend over the last runs
from the run history. Only published figures (phm/ethnicity_dq.py ``published``; the history's
figures are stored suppressed already).
"""

from __future__ import annotations

import html
from pathlib import Path

import polars as pl

from phm.ethnicity import ANY_OTHER_CATEGORIES, BROAD_GROUPS, NHS_ETHNIC_CATEGORIES
from phm.ethnicity_dq import (
    HISTORY_FIGURE,
    INDICATORS,
    EthnicityDQ,
    any_other_within_group,
    broad_shares,
)

REPORT_NAME = "ethnicity_quality.html"
JSON_NAME = "ethnicity_quality.json"
TREND_RUNS = 6


def _pct(value, digits: int = 1) -> str:
    return "" if value is None else f"{100 * value:.{digits}f}%"


def _cell(figure: dict, ratio: bool) -> str:
    if figure.get("withheld"):
        return "withheld (1-7)"
    if figure.get("value") is None:
        return ""
    if ratio:
        return f"{figure['value']:.2f} ({figure['low']:.2f}-{figure['high']:.2f})"
    return f"{_pct(figure['value'])} ({_pct(figure['low'])}-{_pct(figure['high'])})"


def _table(header: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(f"<tr class=\"{c}\">" + "".join(f"<td>{v}</td>" for v in row) + "</tr>"
                   for row, c in zip(rows, classes or [""] * len(rows), strict=True))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _trend(dq: EthnicityDQ, runs: pl.DataFrame | None, figures: pl.DataFrame | None) -> str:
    """Per indicator, each practice's value in the last runs (from the history) and this run."""
    data = dq.published()
    now = {(f"{u['level']} {u['label']}", name): fig["value"] for u in data["units"]
           for name, fig in u["figures"].items()}
    flagged_now = {(f"practice {u.label}", j.indicator) for u in dq.units for j in dq.flags if j.unit == u.unit}
    previous: list[tuple[str, dict]] = []
    if runs is not None and figures is not None and not runs.is_empty():
        mine = figures.filter(pl.col("figure") == HISTORY_FIGURE)
        numbered = list(enumerate(runs.iter_rows(named=True), 1))[-(TREND_RUNS - 1):]
        for number, r in numbered:
            rows = mine.filter(pl.col("run_id") == r["run_id"])
            if rows.is_empty():
                continue
            previous.append((f"{number}: extract {r['extract_date'] or '?'}, run {str(r['run_at'])[:16]}",
                             {(x["grp"], x["subject"]): (x["value"], x["label"]) for x in rows.iter_rows(named=True)}))
    if not previous:
        return ("<p>This is the first run with these figures in the run history: the trend starts here "
                "(each run appends its figures to <code>history.figures</code>).</p>")
    parts = []
    units = [f"{u['level']} {u['label']}" for u in data["units"] if u["level"] in ("icb", "pcn", "practice")]
    for name, (label, _, kind) in INDICATORS.items():
        if not any((unit, name) in now for unit in units):
            continue
        rows, classes = [], []
        for unit in units:
            if (unit, name) not in now:
                continue
            cells = [html.escape(unit)]
            for _, values in previous:
                value, flag = values.get((unit, name), (None, None))
                text = "" if value is None else (f"{value:.2f}" if kind == "ratio" else _pct(value))
                cells.append(text + (" <b>flag</b>" if flag == "flag" else ""))
            value = now[(unit, name)]
            cells.append(("" if value is None else (f"{value:.2f}" if kind == "ratio" else _pct(value)))
                         + (" <b>flag</b>" if (unit, name) in flagged_now else ""))
            rows.append(cells)
            classes.append("flagged" if (unit, name) in flagged_now else "")
        parts += [f"<h3>{html.escape(label)}</h3>",
                  _table(["", *[f"run {d}" for d, _ in previous], "this run"], rows, classes)]
    return "".join(parts)


def render(dq: EthnicityDQ, icb: str, runs: pl.DataFrame | None = None, figures: pl.DataFrame | None = None) -> str:
    data = dq.published()
    bench = data["benchmark"]
    groups = broad_shares(dq.benchmark)
    within = any_other_within_group(dq.benchmark)
    icb_unit = next(u for u in data["units"] if u["level"] == "icb")
    judged = [name for name, (_, _, kind) in INDICATORS.items() if kind and name in icb_unit["figures"]]
    parts = [f"<h1>Ethnicity recording, ICB {html.escape(icb)}: data quality per practice and PCN</h1>",
             "<p>Counts: 1-7 withheld, others rounded to 5; shares from the rounded counts, with 95% intervals. "
             "No patient-level values. docs/ethnicity.md explains every figure.</p>"]
    # what to act on first
    flags = data["flags"]
    parts.append("<h2>Practices to look at</h2>")
    if not dq.judged:
        parts.append(f"<p>Fewer than {dq.min_practices} practices: there is no spread between practices to judge "
                     "against, so no practice is flagged. The figures below are still shown.</p>")
    elif not flags:
        parts.append("<p>No practice stands out from the ICB's practices beyond chance.</p>")
    else:
        rows = []
        for f in flags:
            unit = next(u for u in data["units"] if u["level"] == "practice" and u["label"] == f["practice"])
            ratio = INDICATORS[f["indicator"]][2] == "ratio"
            typical = f"{f['typical']:.2f}" if ratio else _pct(f["typical"])
            rows.append([html.escape(f["practice"]), html.escape(unit["pcn"] or ""), html.escape(f["direction"]),
                         _cell(unit["figures"][f["indicator"]], ratio), typical, f"{f['z']:.1f}",
                         f"{f['p_adjusted']:.2g}" if f["p_adjusted"] >= 0.001 else "&lt;0.001"])
        parts.append(_table(["practice", "PCN", "what stands out", "practice (95% interval)", "ICB's typical practice",
                             "z", "Holm-adjusted p"], rows, ["flagged"] * len(rows)))
    parts.append(
        f"<p class=\"note\">How a practice is flagged: each indicator is compared with the ICB's own practices "
        f"(the median practice, and the spread between practices beyond chance, estimated robustly), one-sided in "
        f"the direction that is worse; Holm's correction over every practice x indicator keeps the chance of any "
        f"false flag in this run under {dq.alpha:g}. Not compared with the national figure: practices' populations "
        f"really differ. The recorded mix is never flagged (below, as information).</p>")
    # the ICB against the census
    any_other_icb = icb_unit["figures"]["any_other"]
    parts += ["<h2>The benchmark: the 2021 census</h2>",
              f"<p>Source: {html.escape(bench['source'])}. Expected share of the five 'any other' categories "
              f"(C, G, L, P, S) in the census: <b>{_pct(bench['any_other_expected_share'])}</b> of people; within "
              "each broad group: " + ", ".join(f"{g} {_pct(within[g])}" for g in BROAD_GROUPS) +
              ". A practice's expected 'any other' count applies these to its own patients of each group, so a "
              "more diverse practice expects more. Observed / expected over 1 is over-use.</p>",
              "<p>Completeness has no census figure; in GP records in England 78.2% of patients had an ethnicity "
              "recorded (OpenSAFELY-TPP, 25 million patients; BMC Med 2024;22:288). This ICB: "
              f"{_pct(1 - (icb_unit['figures']['not_known_99']['value'] or 0) - (icb_unit['figures']['not_stated_z']['value'] or 0))}"
              " recorded.</p>",
              "<p>ICB: 'any other' observed / expected " + _cell(any_other_icb, True)
              + (f", {_pct(any_other_icb['value'] * any_other_icb['expected_share'])} of patients with a stated "
                 f"category against {_pct(any_other_icb['expected_share'])} expected"
                 if any_other_icb.get("value") is not None else "") + ".</p>"]
    stated = sum(icb_unit["mix"][g]["count"] or 0 for g in BROAD_GROUPS)
    rows = [[g, _cell(icb_unit["mix"][g], False), _pct(groups[g]), icb_unit["mix"][g]["against_benchmark"] or ""]
            for g in BROAD_GROUPS]
    parts += [f"<p>Recorded mix of the ICB's patients with a stated category ({stated:,}, rounded):</p>",
              _table(["broad group", "recorded (95% interval)", "census", "beyond chance"], rows)]
    # per PCN and practice
    header = ["", "patients", "recorded"] + [INDICATORS[n][0] for n in judged]
    if "from_hospital" in icb_unit["figures"]:
        header.append(INDICATORS["from_hospital"][0])
    flagged = {(f["practice"], f["indicator"]) for f in flags}

    def unit_row(u: dict) -> tuple[list[str], str]:
        recorded = None
        if u["patients"] and u["figures"]["not_known_99"]["count"] is not None and \
                u["figures"]["not_stated_z"]["count"] is not None:
            recorded = 1 - (u["figures"]["not_known_99"]["count"] + u["figures"]["not_stated_z"]["count"]) / u["patients"]
        cells = [html.escape(u["label"] + (f" (PCN {u['pcn']})" if u["level"] == "practice" and u["pcn"] else "")),
                 "" if u["patients"] is None else f"{u['patients']:,}", _pct(recorded)]
        for n in [*judged, *(["from_hospital"] if "from_hospital" in u["figures"] else [])]:
            text = _cell(u["figures"][n], INDICATORS[n][2] == "ratio")
            cells.append(f"<b>{text} flag</b>" if (u["label"], n) in flagged else text)
        return cells, "flagged" if any(u["label"] == p for p, _ in flagged) else ""

    typical = {j.indicator: j.typical for j in dq.judgements}
    typical_row = ["ICB's typical practice (median: what a practice is judged against)", "", ""]
    for n in [*judged, *(["from_hospital"] if "from_hospital" in icb_unit["figures"] else [])]:
        value = typical.get(n)
        typical_row.append("" if value is None else (f"{value:.2f}" if INDICATORS[n][2] == "ratio" else _pct(value)))
    for level, title in (("pcn", "Per PCN"), ("practice", "Per practice")):
        made = [unit_row(u) for u in data["units"] if u["level"] in (level, "icb")]
        if level == "practice" and typical:
            made.insert(1, (typical_row, "typical"))
        parts += [f"<h2>{title}</h2>", _table(header, [c for c, _ in made], [k for _, k in made])]
    parts.append("<p class=\"note\">'recorded': a category A-S (neither 'not stated' nor 'not known'). Conflicts "
                 "and codes outside the census categories are shares of patients whose GP record states a "
                 "category; disagreement with hospital records of patients with both.</p>")
    # mix per practice (information)
    rows = []
    for u in data["units"]:
        if u["level"] != "practice":
            continue
        cells = [html.escape(u["label"])]
        local = u["label"] in data["local_benchmark_practices"]
        for g in BROAD_GROUPS:
            m = u["mix"][g]
            arrow = {"above": " &#9650;", "below": " &#9660;"}.get(m["against_benchmark"] or "", "")
            area = f" (its areas {_pct(m['benchmark'])})" if local and m["benchmark"] is not None else ""
            cells.append(("withheld" if m["withheld"] else _pct(m["value"])) + area + arrow)
        rows.append(cells)
    parts += ["<h2>Recorded mix per practice beside the census (information)</h2>",
              "<p>Share of each practice's patients with a stated category; &#9650; / &#9660;: above / below the "
              "census mix beyond chance (Holm over practices x groups). A practice's population can differ from the "
              "national mix for real, so this is never a flag; with a census table by LSOA "
              "(<code>[ethnicity_dq] census_by_lsoa</code>) each practice reads against the census mix of its "
              "registered patients' areas, shown beside its figure"
              + (f" ({len(data['local_benchmark_practices'])} practices here)" if data["local_benchmark_practices"]
                 else "") + ".</p>",
              _table(["practice", *[f"{g} (census {_pct(groups[g])})" for g in BROAD_GROUPS]], rows)]
    parts += [f"<h2>Trend over the last runs (up to {TREND_RUNS})</h2>", _trend(dq, runs, figures)]
    rows = [[c, html.escape(NHS_ETHNIC_CATEGORIES[c][0]), _pct(v, 2), "any other" if c in ANY_OTHER_CATEGORIES else ""]
            for c, v in dq.benchmark.items()]
    parts += ["<h2>The census mix by category</h2>", _table(["category", "name", "share", ""], rows)]
    style = ("body{font-family:sans-serif;max-width:1250px;margin:1em auto;padding:0 1em}"
             "table{border-collapse:collapse;font-size:0.82em;margin-bottom:1em}td,th{border:1px solid #ccc;"
             "padding:3px 6px}th{background:#eee}tr.flagged td{background:#fde2e1}tr.typical td{background:#eef4fb}.note{color:#444;font-size:0.9em}")
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Ethnicity recording, ICB "
            f"{html.escape(icb)}</title><style>{style}</style></head><body>{''.join(parts)}</body></html>\n")


def write_report(dq: EthnicityDQ, folder: Path, icb: str, runs: pl.DataFrame | None = None,
                 figures: pl.DataFrame | None = None) -> tuple[Path, Path]:
    import json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    html_path, json_path = folder / REPORT_NAME, folder / JSON_NAME
    for path, text in ((html_path, render(dq, icb, runs, figures)),
                       (json_path, json.dumps(dq.published(), indent=2) + "\n")):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return html_path, json_path
