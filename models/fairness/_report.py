"""The audit's outputs: JSON of every figure and a self-contained HTML report.

Both are aggregate outputs and leave the pipeline, so no published figure may let a suppressed
count be recovered (docs/fairness.md, "Disclosure control"):

- every count passes through phm/disclosure.py (1-7 suppressed, others rounded to 5);
- secondary suppression: where a grouping (e.g. ethnicity x IMD quintile) has exactly one cell
  with a count suppressed, the next smallest cell's count is suppressed too, so the total minus
  the others does not give it;
- shares of the population and proportions (rates, sensitivity, PPV, ...) with their Wilson
  intervals are computed from the rounded counts, never from the exact ones;
- a group whose counts include a suppressed one has its figures withheld; means (mean need) of
  cells under ``SMALL_CELL`` patients are withheld.

Plot points rest on at least 100 patients and never on 1-7 outcomes.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

from models.fairness._audit import PROPORTIONS, GroupFigures, GroupingFigures, ScoreAudit
from models.fairness._gate import GateResult, worst
from models.fairness._metrics import wilson_interval
from models.fairness._quality import EthnicityQuality
from models.fairness._settings import AuditSettings
from phm.disclosure import SUPPRESSED_BELOW, suppress

PLOT_MIN_PATIENTS = 100
SMALL_CELL = 100  # means of cells with fewer patients are withheld
MEANS = ("mean_need",)
DISCLOSURE_NOTE = ("Counts: 1-7 suppressed (null), others rounded to the nearest 5, with secondary suppression "
                   "where one cell of a grouping alone is suppressed; shares and proportions are computed from the "
                   "rounded counts; a group's figures are withheld where a count they rest on is 1-7, and means "
                   f"of cells under {SMALL_CELL} patients are withheld.")
FIGURE_NAMES = {
    "outcome_rate": "recorded outcome rate", "mean_predicted_risk": "mean predicted risk",
    "observed_expected": "observed / expected", "calibration_slope": "calibration slope", "auroc": "AUROC",
    "selection_rate": "selection rate", "sensitivity": "sensitivity", "ppv": "PPV",
    "false_negative_rate": "false negative rate", "need_adjusted_selection": "need-adjusted selection",
    "mean_need": "mean need", "measurement_completeness": "measurement completeness",
    "need_at_same_score": "need at the same score (label choice)",
    "diagnosis_gap": "high readings undiagnosed, over expected (label choice: diagnosis gap)",
    "list_over_high_need_share": "share of list / share of high need",
}


# Which counts each figure rests on, beyond the group's patients and outcomes (which, if 1-7,
# withhold the whole group).
RESTS_ON = {
    "selection_rate": ("selected",), "sensitivity": ("true_positives", "missed"),
    "false_negative_rate": ("true_positives", "missed"), "ppv": ("true_positives", "selected"),
    "need_adjusted_selection": ("selected",), "list_over_high_need_share": ("selected", "high_need"),
}


def _small(count: int | None) -> bool:
    return count is not None and 0 < count < SUPPRESSED_BELOW


def secondary_suppression(rows: list[GroupFigures]) -> dict[int, set[str]]:
    """For each row (by index), the counts to suppress beyond 1-7: where exactly one cell of a
    grouping has a given count suppressed, the next smallest non-zero cell's count too."""
    extra: dict[int, set[str]] = {i: set() for i in range(len(rows))}
    names = {k for r in rows for k in r.counts if k != "need_sum"}
    for name in names:
        values = [(r.counts.get(name), i) for i, r in enumerate(rows)]
        primary = [i for v, i in values if _small(v)]
        if len(primary) == 1 and len(rows) > 1:
            others = sorted((v, i) for v, i in values if v and i not in primary)
            if others:
                extra[others[0][1]].add(name)
    return extra


def group_json(row: GroupFigures, population_patients: int | None, secondary: set[str] = frozenset(),
               level: float = 0.95) -> dict:
    """``population_patients``: the grouping's total as published (rounded)."""
    withheld = _small(row.counts.get("patients")) or _small(row.counts.get("events"))
    published = {k: (None if k in secondary else suppress(v)) for k, v in row.counts.items() if k != "need_sum"}
    out = {"group": row.labels, "too_small_to_judge": row.too_small, "withheld": withheld, "counts": published}
    if withheld:
        return out
    hidden = {name for name, counts in RESTS_ON.items() if any(_small(row.counts.get(c)) for c in counts)}
    if row.counts.get("patients", 0) < SMALL_CELL:
        hidden |= set(MEANS)

    def proportion(name: str, estimate):
        numerator, denominator = (published.get(c) for c in PROPORTIONS[name])
        if numerator is None or not denominator:
            return None
        low, high = wilson_interval(numerator, denominator, level)
        return {"value": round(numerator / denominator, 4), "low": round(float(low), 4), "high": round(float(high), 4)}

    def shown(figures: dict, rounded_proportions: bool = False) -> dict:
        out = {}
        for k, v in figures.items():
            if k in hidden:
                out[k] = None
            elif rounded_proportions and k in PROPORTIONS and all(c in published for c in PROPORTIONS[k]):
                out[k] = proportion(k, v)
            else:
                out[k] = v.as_dict()
        return out

    patients = published.get("patients")
    out["share_of_population"] = round(patients / population_patients, 3) \
        if population_patients and patients is not None else None
    out["figures"] = shown(row.figures, rounded_proportions=True)
    out["ratio_to_reference"] = shown(row.vs_reference)
    out["difference_to_reference"] = shown(row.vs_reference_difference)
    out["ratio_to_population"] = shown(row.vs_population)
    out["difference_to_population"] = shown(row.vs_population_difference)
    need = row.figures.get("need_at_same_score")
    if need is not None and "need_at_same_score" not in hidden and min(need.value, need.low, need.high) > 0:
        # the label-choice test statistic: Wald z of log(ratio) with the bootstrap interval's width
        se = (np.log(need.high) - np.log(need.low)) / (2 * stats.norm.ppf(0.975))
        z = float(np.log(need.value) / se) if se > 0 else float("nan")
        out["label_choice_test"] = {"z": round(z, 3), "p_value": float(f"{2 * stats.norm.sf(abs(z)):.3g}")}
    if row.need_by_decile:
        out["need_by_score_decile"] = [None if n < SUPPRESSED_BELOW else v
                                       for v, n in zip(row.need_by_decile, row.patients_by_decile, strict=True)]
    return out


def grouping_json(grouping: GroupingFigures, level: float = 0.95) -> list[dict]:
    population = suppress(sum(g.counts["patients"] for g in grouping.groups))
    secondary = secondary_suppression(grouping.groups)
    return [group_json(g, population, secondary[i], level) for i, g in enumerate(grouping.groups)]


@dataclass
class AuditReport:
    """Everything one audit produced, ready to write."""

    title: str
    settings: AuditSettings
    audits: list[ScoreAudit]
    gates: list[GateResult]
    quality: EthnicityQuality | None
    detailed: dict[str, ScoreAudit]  # by score name: the 16 detailed categories, descriptive
    models: dict[str, dict]  # by score name: model name, version, ... (for the header)
    generated_at: str = ""
    decision: object | None = None  # _decision.GateDecision: sign-offs and what ranks each list
    notes: list[str] = field(default_factory=list)  # e.g. how a score that was not a probability was read

    def __post_init__(self) -> None:
        if self.decision is None:
            from models.fairness._decision import GateDecision

            self.decision = GateDecision(self.gates)

    @property
    def status(self) -> str:
        return worst(self.gates)

    def label(self) -> str:
        labels = {g.label() for g in self.gates if g.status == self.status}
        return sorted(labels)[0] if len(labels) == 1 else self.status

    def to_json(self) -> dict:
        settings = asdict(self.settings)
        settings["signoffs"] = [s.as_dict() for s in self.settings.signoffs]
        decision = self.decision
        out = {
            "kind": "phm fairness audit", "title": self.title,
            "generated_at": self.generated_at or dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "disclosure": DISCLOSURE_NOTE, "settings": settings, "notes": self.notes,
            "gate": {"status": self.status, "label": self.label(), "may_publish": not decision.refused,
                     "exit_code": decision.exit_code, "outcomes": {g.outcome: {
                         "status": g.status, "label": g.label(), "accepted": g.accepted,
                         "signoff": g.signoff.as_dict() if g.signoff and g.status != "PASS" else None,
                         "ranks_list": decision.ranks_list(g.outcome),
                         "findings": [f.as_dict() for f in g.findings],
                         "tests": [t.as_dict() for t in g.tests]} for g in self.gates}},
            "scores": {},
        }
        if decision.standards:
            out["compared_with_standard"] = {k: v.as_dict() for k, v in decision.standards.items()}
        for audit in self.audits:
            entry = {"model": self.models.get(audit.name, {}), "operating_point_threshold": round(audit.threshold, 6),
                     "need_measure": audit.need_description,
                     "performance": {g.grouping.name: grouping_json(g, self.settings.level) for g in audit.performance},
                     "selection": {g.grouping.name: grouping_json(g, self.settings.level) for g in audit.selection},
                     "population_need_by_score_decile": audit.population_need_by_decile}
            if audit.name in self.detailed:
                d = self.detailed[audit.name]
                entry["detailed_categories"] = {
                    "performance": grouping_json(d.performance[1]) if d.performance else [],
                    "selection": grouping_json(d.selection[1])}
            out["scores"][audit.name] = entry
        if self.quality is not None:
            out["ethnicity_data_quality"] = [_quality_json(r) for r in self.quality.rows]
        return out

    def write(self, folder: Path) -> tuple[Path, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        data = self.to_json()
        json_path = folder / "fairness_audit.json"
        json_path.write_text(json.dumps(data, indent=1) + "\n")
        html_path = folder / "fairness_audit.html"
        html_path.write_text(render_html(self, data))
        return json_path, html_path


def _quality_json(row) -> dict:
    withheld = any(0 < v < SUPPRESSED_BELOW for v in row.counts.values()) or 0 < row.patients < SUPPRESSED_BELOW
    out = {"level": row.level, "unit": row.unit, "patients": suppress(row.patients)}
    out["shares"] = {k: None if (0 < row.counts[k] < SUPPRESSED_BELOW or withheld and row.patients < SUPPRESSED_BELOW)
                     else {"value": round(v, 4), "low": round(lo, 4), "high": round(hi, 4)}
                     for k, (v, lo, hi) in row.shares.items()}
    return out


# --- HTML -----------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
h1{margin-bottom:.2em} .status{font-size:1.6em;font-weight:bold;padding:.3em .6em;border-radius:6px;display:inline-block}
.PASS{background:#d4edda} .WARN{background:#fff3cd} .FAIL{background:#f8d7da}
table{border-collapse:collapse;margin:1em 0;font-size:.85em} td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left} .flag{color:#b00;font-weight:bold}
img{max-width:48%;margin:.5%} .note{color:#555;font-size:.85em}
"""


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _plots(audit: ScoreAudit, data: dict) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    if audit.curves is not None:
        fig, ax = plt.subplots(figsize=(5.5, 4.5))
        top = 0.0
        for group, points in audit.curves.calibration.items():
            kept = [(p, o) for p, o, n, e in points if n >= PLOT_MIN_PATIENTS and not 0 < e < SUPPRESSED_BELOW]
            if len(kept) >= 2:
                ax.plot(*zip(*kept, strict=True), marker="o", label=group)
                top = max(top, *[max(p, o) for p, o in kept])
        ax.plot([0, top], [0, top], ":", color="grey")
        ax.set(title=f"{audit.name}: calibration by group", xlabel="mean predicted risk", ylabel="recorded outcome rate")
        ax.legend(fontsize=7)
        out.append(("calibration by group", _png(fig)))
        fig, ax = plt.subplots(figsize=(5.5, 4.5))
        perf = {tuple(r["group"].values()): r for r in data["performance"]["ethnicity"]}
        for group, points in audit.curves.roc.items():
            row = perf.get((group,))
            if group != "population" and (row is None or row["withheld"] or row["too_small_to_judge"]):
                continue
            ax.plot(*zip(*points, strict=True), label=group)
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set(title=f"{audit.name}: ROC by group", xlabel="false positive rate", ylabel="sensitivity")
        ax.legend(fontsize=7)
        out.append(("ROC by group", _png(fig)))
        rows = [r for r in data["performance"]["ethnicity"] if not r["withheld"]]
        if rows:
            fig, ax = plt.subplots(figsize=(5.5, 4.5))
            names = [r["group"]["group"] for r in rows]
            values = [(r["figures"].get("need_adjusted_selection") or {}).get("value") or 0 for r in rows]
            ax.barh(names, values, color="#4a7ab5")
            ax.axvline(1, color="black")
            for edge in audit_band(data):
                ax.axvline(edge, color="grey", linestyle=":")
            ax.set(title=f"{audit.name}: selection versus need", xlabel="share selected / share of recorded outcomes")
            out.append(("selection versus need", _png(fig)))
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.plot(range(1, 11), audit.population_need_by_decile, color="black", linewidth=2, label="population")
    for r in data["selection"]["ethnicity"]:
        if r["withheld"] or r["too_small_to_judge"]:
            continue
        curve = r.get("need_by_score_decile") or []
        ax.plot([i + 1 for i, v in enumerate(curve) if v is not None], [v for v in curve if v is not None],
                marker=".", label=r["group"]["group"])
    ax.set(title=f"{audit.name}: need by score decile (label choice)", xlabel="score decile (10 = highest)",
           ylabel="mean need")
    ax.legend(fontsize=7)
    out.append(("need by score decile", _png(fig)))
    return out


def audit_band(data: dict) -> tuple[float, float]:
    return tuple(data.get("_band", (0.8, 1.25)))


def _cell(estimate: dict | None, band: tuple[float, float] | None = None) -> str:
    if not estimate or estimate.get("value") is None:
        return "&ndash;"
    text = f"{estimate['value']:.3g}"
    if estimate.get("low") is not None:
        text += f" <span class=note>({estimate['low']:.3g}&ndash;{estimate['high']:.3g})</span>"
    if band and not band[0] <= estimate["value"] <= band[1]:
        text = f"<span class=flag>{text}</span>"
    return text


def _count(value) -> str:
    return "[suppressed]" if value is None else f"{value:,}"


def _figure(name: str, flag: str | None = None):
    """A table column showing figure ``name``; ``flag`` 'band' or 'limit' marks values outside."""
    def show(r: dict, band, limit) -> str:
        bounds = {"band": band, "limit": (0, limit)}.get(flag)
        return _cell(r["figures"].get(name), bounds)
    return show


def _ratio(name: str, flag: str | None = None):
    def show(r: dict, band, limit) -> str:
        return _cell(r["ratio_to_reference"].get(name), band if flag == "band" else None)
    return show


def _counted(name: str):
    def show(r: dict, band, limit) -> str:
        return _count(r["counts"].get(name))
    return show


PERFORMANCE_COLUMNS = [
    ("patients", _counted("patients")), ("outcomes", _counted("events")),
    ("share", lambda r, band, limit: "&ndash;" if r["share_of_population"] is None else f"{r['share_of_population']:.1%}"),
    ("outcome rate", _figure("outcome_rate")), ("mean predicted", _figure("mean_predicted_risk")),
    ("O/E", _figure("observed_expected", "band")), ("cal. slope", _figure("calibration_slope")),
    ("AUROC", _figure("auroc")), ("selection rate", _figure("selection_rate")),
    ("sensitivity", _figure("sensitivity")), ("sensitivity ratio to reference", _ratio("sensitivity", "band")),
    ("PPV", _figure("ppv")), ("FNR", _figure("false_negative_rate")),
    ("need-adjusted selection", _figure("need_adjusted_selection", "band")),
]
SELECTION_COLUMNS = [
    ("patients", _counted("patients")), ("on the list", _counted("selected")),
    ("selection rate", _figure("selection_rate")), ("mean need", _figure("mean_need")),
    ("need at the same score", _figure("need_at_same_score", "limit")),
    ("diagnosis gap", _figure("diagnosis_gap", "limit")),
    ("share of list / share of high need", _figure("list_over_high_need_share")),
    ("measurement completeness", _figure("measurement_completeness")),
    ("completeness ratio to reference", _ratio("measurement_completeness")),
]


def _table(rows: list[dict], columns, band, limit) -> str:
    head = "<tr><th>group</th>" + "".join(f"<th>{html.escape(h)}</th>" for h, _ in columns) + "</tr>"
    body = []
    for r in rows:
        name = html.escape(" x ".join(r["group"].values()))
        if r["withheld"]:  # the counts (suppressed) only
            shown = [show(r, band, limit) for header, show in columns[:2]]
            body.append(f"<tr><td>{name}</td>" + "".join(f"<td>{v}</td>" for v in shown)
                        + f"<td colspan={len(columns) - 2}>figures withheld (a count is 1-7)</td></tr>")
            continue
        small = " <span class=note>(too small to judge)</span>" if r["too_small_to_judge"] else ""
        body.append(f"<tr><td>{name}{small}</td>" + "".join(f"<td>{show(r, band, limit)}</td>" for _, show in columns)
                    + "</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def _performance_table(rows: list[dict], band) -> str:
    return _table(rows, PERFORMANCE_COLUMNS, band, None)


def _selection_table(rows: list[dict], limit: float) -> str:
    return _table(rows, SELECTION_COLUMNS, None, limit)


def _tests_table(report: AuditReport, settings: AuditSettings) -> str:
    family = "Holm" if settings.family_control == "holm" else "Benjamini-Hochberg"
    rows = ["<h2>The gate's tests</h2><p class=note>One family of tests over every outcome, group and check; "
            f"p-values of 'no worse than the margin', {family}-adjusted; family error {1 - settings.level:.0%}. "
            "Estimates shrunk by empirical Bayes before judging"
            f"{'' if settings.shrinkage else ' (off)'}. The minimum detectable ratio is the smallest effect on the "
            f"harmful side the test would find with {settings.power:.0%} power: a small group is judged, and this "
            "says how large an effect it could show.</p><table><tr><th>outcome</th><th>group</th><th>check</th>"
            "<th>harm</th><th>estimate (95% CI)</th><th>after shrinkage</th><th>margin</th><th>p</th>"
            "<th>adjusted p</th><th>minimum detectable ratio</th><th>verdict</th></tr>"]
    for gate in report.gates:
        for t in gate.tests:
            d = t.as_dict()
            rows.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
                t.outcome, t.group + (" (small)" if t.small else ""), t.check, t.side)) +
                f"<td>{_cell(d['estimate'])}</td><td>{_num(d['shrunk'])}</td>"
                f"<td>{t.margin[0]:.2f}-{t.margin[1]:.2f}</td><td>{_num(d['p_value'])}</td>"
                f"<td>{_num(d['adjusted_p_value'])}</td><td>{_num(d['minimum_detectable_ratio'])}</td>"
                f"<td class={t.verdict}>{t.verdict}</td></tr>")
    return "".join(rows) + "</table>"


def _num(value) -> str:
    return "&ndash;" if value is None else f"{value:.3g}"


def _standard_table(data: dict) -> str:
    compared = data.get("compared_with_standard")
    if not compared:
        return ""
    parts = ["<h2>Do no harm: the trained model against the validated score, same validation patients</h2>"
             "<p class=note>Each score selects the same share of the validation patients. Difference = model "
             "minus standard, paired bootstrap interval; 'worse' = surely worse after Holm's control over these "
             "comparisons. A model worse for any group large enough to judge does not become champion, and the "
             "validated score ranks that outcome's list.</p>"]
    for outcome, c in compared.items():
        parts.append(f"<h3>{html.escape(outcome)}: {html.escape(c['standard'])}; the list is ranked by "
                     f"<b>{html.escape(c['ranks_list'])}</b></h3>")
        for reason in c["reasons"]:
            parts.append(f"<p class=flag>{html.escape(reason)}</p>")
        parts.append("<table><tr><th>group</th><th>patients</th><th>outcomes</th><th>figure</th><th>model</th>"
                     f"<th>{html.escape(c['standard'])}</th><th>difference (95% CI)</th><th>judged</th>"
                     "<th>model worse</th></tr>")
        for g in c["groups"]:
            for name, f in g["figures"].items():
                parts.append(f"<tr><td>{html.escape(g['group'])}</td><td>{_count(g['patients'])}</td>"
                             f"<td>{_count(g['events'])}</td><td>{html.escape(name)}</td><td>{_num(f['model'])}</td>"
                             f"<td>{_num(f['standard'])}</td><td>{_num(f['difference'])} <span class=note>"
                             f"({_num(f['low'])} to {_num(f['high'])})</span></td><td>{'yes' if g['judged'] else 'no'}"
                             f"</td><td>{'<b>yes</b>' if name in g['model_worse_on'] else 'no'}</td></tr>")
        parts.append("</table>")
    return "".join(parts)


def render_html(report: AuditReport, data: dict) -> str:
    settings = report.settings
    band = settings.ratio_band
    status = data["gate"]["status"]
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(report.title)}</title>"
             f"<style>{CSS}</style></head><body>",
             f"<h1>{html.escape(report.title)}</h1>",
             f"<p>Gate result: <span class='status {status}' id=gate-result>{html.escape(report.label())}</span></p>",
             f"<p class=note>Generated {html.escape(data['generated_at'])}. Reference group: "
             f"{html.escape(settings.reference_group)}. Margin {band[0]}-{band[1]}; label-choice margin "
             f"{settings.need_ratio_limit}; {settings.replicates:,} bootstrap replicates; {settings.level:.0%} "
             f"intervals (Wilson for proportions, bootstrap otherwise). {DISCLOSURE_NOTE}</p>"]
    for note in data.get("notes", []):
        parts.append(f"<p class=note><b>Note:</b> {html.escape(note)}</p>")
    parts.append("<h2>Findings</h2><ul>")
    any_finding = False
    for gate in report.gates:
        override = ""
        if gate.signoff is not None and gate.status != "PASS":
            demo = " <b>[DEMO SIGN-OFF on synthetic data: not a real review]</b>" if gate.signoff.is_demo else ""
            override = (f" &mdash; signed off by {html.escape(gate.signoff.reviewer)} "
                        f"({html.escape(gate.signoff.source)}){demo}: {html.escape(gate.signoff.reason)}")
        elif gate.status != "PASS":
            override = " &mdash; <b>not signed off: champion not moved, no list may go out</b>"
        ranks = report.decision.ranks_list(gate.outcome)
        if ranks != "model":
            override += f" &mdash; <b>do no harm: {html.escape(ranks)} ranks this list, not the trained model</b>"
        parts.append(f"<li><b>{html.escape(gate.outcome)}: {gate.status}</b>{override}<ul>")
        for f in sorted(gate.findings, key=lambda f: (f.level != "FAIL", f.rule, f.group)):
            any_finding = True
            parts.append(f"<li class={f.level}>{f.level} [{html.escape(f.rule)}] {html.escape(f.message)}</li>")
        parts.append("</ul></li>")
    if not any_finding:
        parts.append("<li>No findings.</li>")
    parts.append("</ul>")
    parts.append(_tests_table(report, settings))
    parts.append(_standard_table(data))
    for audit in report.audits:
        entry = data["scores"][audit.name]
        entry["_band"] = band
        model = entry.get("model") or {}
        parts.append(f"<h2>{html.escape(audit.name)}</h2>")
        if model:
            parts.append("<p class=note>" + html.escape(", ".join(f"{k}: {v}" for k, v in model.items())) + "</p>")
        parts.append(f"<p class=note>Operating point: score &ge; {audit.threshold:.4g} (the list's capacity). "
                     f"Need: {html.escape(audit.need_description or 'as given')}.</p>")
        if entry["performance"]:
            parts.append("<h3>Model performance by ethnic group (validation patients)</h3>")
            parts.append(_performance_table(entry["performance"]["ethnicity"], band))
        parts.append("<h3>Selection and need by ethnic group (the list's population)</h3>")
        parts.append(_selection_table(entry["selection"]["ethnicity"], settings.need_ratio_limit))
        parts.append("<div>" + "".join(f"<img alt='{html.escape(t)}' src='{src}'>" for t, src in _plots(audit, entry))
                     + "</div>")
        for name, rows in entry["performance"].items():
            if name in ("population", "ethnicity"):
                continue
            parts.append(f"<details><summary>Performance by {html.escape(name)}</summary>"
                         f"{_performance_table(rows, band)}</details>")
        for name, rows in entry["selection"].items():
            if name in ("population", "ethnicity"):
                continue
            parts.append(f"<details><summary>Selection and need by {html.escape(name)}</summary>"
                         f"{_selection_table(rows, settings.need_ratio_limit)}</details>")
        if "detailed_categories" in entry:
            detailed = entry["detailed_categories"]
            parts.append("<details><summary>The 16 detailed ethnic categories (descriptive)</summary>")
            if detailed["performance"]:
                parts.append(_performance_table(detailed["performance"], band))
            parts.append(_selection_table(detailed["selection"], settings.need_ratio_limit) + "</details>")
        entry.pop("_band", None)
    if "ethnicity_data_quality" in data:
        parts.append("<h2>Ethnicity data quality</h2><table><tr><th>level</th><th>unit</th><th>patients</th>"
                     "<th>recorded</th><th>not stated (Z)</th><th>not known (99)</th><th>conflicting codes</th>"
                     "<th>'any other' category</th></tr>")
        for r in data["ethnicity_data_quality"]:
            s = r["shares"]
            parts.append(f"<tr><td>{r['level']}</td><td>{html.escape(r['unit'])}</td><td>{_count(r['patients'])}</td>"
                         + "".join(f"<td>{_cell(s.get(k))}</td>" for k in
                                   ("recorded", "not_stated_z", "not_known_99", "conflicting_codes", "any_other_category"))
                         + "</tr>")
        parts.append("</table>")
    parts.append("</body></html>\n")
    return "".join(parts)
