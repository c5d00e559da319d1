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
import json
import math
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
from scipy import stats

from models.fairness._audit import (
    PROPORTIONS,
    Compared,
    Count,
    Estimate,
    Figure,
    GroupResults,
    ScoreAudit,
    _small,
    secondary_suppression,
)
from models.fairness._gate import GateResult, worst
from models.fairness._metrics import wilson_interval
from models.fairness._quality import EthnicityQuality
from models.fairness._settings import AuditSettings
from phm import png
from phm.disclosure import MEANS_FROM, SUPPRESSED_BELOW, WITHHELD, significant, small, suppress

PLOT_MIN_PATIENTS = 100
SMALL_CELL = MEANS_FROM  # means of cells with fewer patients are withheld
# means over a cell's patients: mean need, and measurement completeness (the mean of 0-4 measurements
# recorded, over 4: times 4 x patients it is a count)
MEANS = (Figure.MEAN_NEED, Figure.MEASUREMENT_COMPLETENESS)
DISCLOSURE_NOTE = ("Counts: 1-7 suppressed (null), others rounded to the nearest 5, with secondary suppression "
                   "where one cell of a grouping alone is suppressed; shares and proportions are computed from the "
                   "rounded counts; a group's figures are withheld where a count they rest on is 1-7 or suppressed "
                   "(an observed / expected or a recording check's ratio where its observed count is 1-7; a gate "
                   "test's figures where its group, outcomes or true positives are), and means of cells under "
                   f"{SMALL_CELL} patients are withheld; other figures computed from exact counts are given to 3 "
                   "significant figures.")
FIGURE_NAMES = {
    Figure.OUTCOME_RATE: "recorded outcome rate", Figure.MEAN_PREDICTED_RISK: "mean predicted risk",
    Figure.OBSERVED_EXPECTED: "observed / expected", Figure.CALIBRATION_SLOPE: "calibration slope",
    Figure.AUROC: "AUROC", Figure.SELECTION_RATE: "selection rate", Figure.SENSITIVITY: "sensitivity",
    Figure.PPV: "PPV", Figure.FALSE_NEGATIVE_RATE: "false negative rate",
    Figure.NEED_ADJUSTED_SELECTION: "need-adjusted selection",
    Figure.NEED_ADJUSTED_SELECTION_VS_SCORE: "need-adjusted selection over the score's own expectation",
    Figure.MEAN_NEED: "mean need",
    Figure.MEASUREMENT_COMPLETENESS: "measurement completeness",
    Figure.NEED_AT_SAME_SCORE: "need at the same score (label choice)",
    Figure.DIAGNOSIS_GAP: "high readings undiagnosed, over expected (label choice: diagnosis gap)",
    Figure.TREATED_UNDIAGNOSED: "treated with no diagnosis code, over expected (label choice: treated, no diagnosis)",
    Figure.LIST_OVER_HIGH_NEED_SHARE: "share of list / share of high need",
}


# Which counts each figure rests on, beyond the group's patients and outcomes (which, if 1-7,
# withhold the whole group).
RESTS_ON = {
    Figure.SELECTION_RATE: (Count.SELECTED,), Figure.SENSITIVITY: (Count.TRUE_POSITIVES, Count.MISSED),
    Figure.FALSE_NEGATIVE_RATE: (Count.TRUE_POSITIVES, Count.MISSED),
    Figure.PPV: (Count.TRUE_POSITIVES, Count.SELECTED),
    # share selected over share of recorded outcomes
    Figure.NEED_ADJUSTED_SELECTION: (Count.SELECTED, Count.EVENTS),
    Figure.LIST_OVER_HIGH_NEED_SHARE: (Count.SELECTED, Count.HIGH_NEED),
    # the outcomes over those expected: times the expected (mean predicted risk x patients) it is the count
    Figure.OBSERVED_EXPECTED: (Count.EVENTS,), Figure.NEED_ADJUSTED_SELECTION_VS_SCORE: (Count.EVENTS,),
}


# figures that are a group's share of one count over its share of another (``_audit._share_ratio``):
# (part / population's part) / (need / population's need), every term a count. Published from the
# rounded counts, as the proportions are; at 5 decimals from the exact ones they named the exact counts.
SHARE_RATIOS = {
    Figure.NEED_ADJUSTED_SELECTION: (Count.SELECTED, Count.EVENTS),
    Figure.LIST_OVER_HIGH_NEED_SHARE: (Count.SELECTED, Count.HIGH_NEED),
}


def published_estimate(estimate: Estimate) -> dict:
    """An estimate computed from exact counts as it may leave the pipeline: 3 significant figures
    (phm/disclosure.py, ``significant``)."""
    return {k: significant(v) for k, v in estimate.as_dict().items()}


# an interval narrower than this on the log scale has no sampling variation to test against: the
# population compared with itself (ratio 1, its bootstrap interval 1 to within the last bits)
NO_WIDTH = 1e-9


def label_choice_test(need: Estimate) -> dict | None:
    """The label-choice test statistic: Wald z of log(need at the same score) with the bootstrap
    interval's width, and its two-sided p-value. None where there is nothing to test: a ratio or
    bound that is not positive, or an interval with no width. The population row is compared
    with itself, and its interval's width came out 0 in one run and a last-bit difference in the
    next, so z was NaN or 0.0 between runs of the same code: a published figure must not depend
    on the order of a sum."""
    if not min(need.value, need.low, need.high) > 0:
        return None
    se = (np.log(need.high) - np.log(need.low)) / (2 * stats.norm.ppf(0.975))
    if not se > NO_WIDTH:
        return None
    z = float(np.log(need.value) / se)
    return {"z": round(z, 3), "p_value": float(f"{2 * stats.norm.sf(abs(z)):.3g}")}


def group_json(row: GroupResults, population_patients: int | None, secondary: set[str] = frozenset(),
               level: float = 0.95, population_counts: dict[str, int | None] | None = None) -> dict:
    """``population_patients``: the grouping's total as published (rounded); ``population_counts``:
    the grouping's totals of the other counts as published (for ``SHARE_RATIOS``; without them
    those figures are withheld)."""
    # every figure of a group rests on its patients: withheld with them when they are suppressed to
    # protect another cell (secondary suppression), as when they are 1-7
    withheld = _small(row.counts.patients) or _small(row.counts.events) or Count.PATIENTS in secondary
    published = {k: (None if k in secondary else suppress(v)) for k, v in row.counts.items() if k != Count.NEED_SUM}
    out = {"group": row.labels, "too_small_to_judge": row.too_small, "withheld": withheld, "counts": published}
    if withheld:
        return out
    # withheld where a count it rests on is 1-7, or suppressed to protect another cell (secondary)
    hidden = {name for name, counts in RESTS_ON.items()
              if any(_small(row.counts.get(c)) or c in secondary for c in counts)}
    if row.counts.patients < SMALL_CELL:
        hidden |= set(MEANS)
    # a standardised count (the recording checks: observed over expected, with the exact interval of
    # the observed count): the interval's width alone gives the count back
    hidden |= {name for name, estimate in row.figures() if estimate.counted and small(round(estimate.observed))}

    def proportion(name: str, estimate):
        numerator, denominator = (published.get(c) for c in PROPORTIONS[name])
        if numerator is None or not denominator:
            return None
        low, high = wilson_interval(numerator, denominator, level)
        return {"value": round(numerator / denominator, 4), "low": round(float(low), 4), "high": round(float(high), 4)}

    def share_ratio(name: Figure, estimate: Estimate):
        """The share ratio from the published counts; its bootstrap interval moved with it."""
        part, need = SHARE_RATIOS[name]
        totals = population_counts or {}
        terms = (published.get(part), totals.get(part), published.get(need), totals.get(need))
        if any(not t for t in terms) or not (math.isfinite(estimate.value) and estimate.value > 0):
            return None
        value = (terms[0] / terms[1]) / (terms[2] / terms[3])
        scale = value / estimate.value
        return {"value": significant(value), "low": significant(estimate.low * scale),
                "high": significant(estimate.high * scale)}

    def shown(figures: list[tuple[Figure, object]], rounded_proportions: bool = False) -> dict:
        out = {}
        for k, v in figures:
            if k in hidden:
                out[k.value] = None
            elif rounded_proportions and k in PROPORTIONS and all(c in published for c in PROPORTIONS[k]):
                out[k.value] = proportion(k, v)
            elif rounded_proportions and k in SHARE_RATIOS:
                out[k.value] = share_ratio(k, v)
            else:
                out[k.value] = published_estimate(v)
        return out

    patients = published.get("patients")
    out["share_of_population"] = round(patients / population_patients, 3) \
        if population_patients and patients is not None else None
    out["figures"] = shown(row.figures(), rounded_proportions=True)
    for comparison in Compared:
        out[comparison.value] = shown(row.comparisons(comparison))
    need = row.figure(Figure.NEED_AT_SAME_SCORE)
    test = label_choice_test(need) if need is not None and Figure.NEED_AT_SAME_SCORE not in hidden else None
    if test is not None:
        out["label_choice_test"] = test
    if row.need_by_decile:
        out["need_by_score_decile"] = [None if n < SUPPRESSED_BELOW else significant(v)
                                       for v, n in zip(row.need_by_decile, row.patients_by_decile, strict=True)]
    return out


def grouping_json(groups: list[GroupResults], level: float = 0.95) -> list[dict]:
    """The published figures of one grouping's groups (``ScoreAudit.by_group``)."""
    population = suppress(sum(g.counts.patients for g in groups))
    totals = {c: suppress(sum(g.counts.get(c) or 0 for g in groups)) for c in {c for pair in SHARE_RATIOS.values()
                                                                               for c in pair}}
    secondary = secondary_suppression(groups)
    return [group_json(g, population, secondary[i], level, totals) for i, g in enumerate(groups)]


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
    uptake: list[dict] | None = None  # uptake of invitations by group (phm/outcomes.py); [] before outcomes came back

    def __post_init__(self) -> None:
        if self.decision is None:
            from models.fairness._decision import GateDecision

            self.decision = GateDecision(self.gates)

    @property
    def status(self) -> str:
        return worst(self.gates)

    def label(self) -> str:
        labels = {g.label() for g in self.gates if g.status == self.status}
        label = sorted(labels)[0] if len(labels) == 1 else self.status
        # a block refuses whatever the result: the run's name in MLflow and the manifest say so
        blocked = [g.outcome for g in self.gates if g.block is not None]
        return label if not blocked or "blocked" in label else f"{label}; blocked: {', '.join(blocked)}"

    def to_json(self) -> dict:
        settings = asdict(self.settings)
        settings["signoffs"] = [s.as_dict() for s in self.settings.signoffs]
        settings["blocks"] = [b.as_dict() for b in self.settings.blocks]
        decision = self.decision
        out = {
            "kind": "phm fairness audit", "title": self.title,
            "generated_at": self.generated_at or dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "disclosure": DISCLOSURE_NOTE, "settings": settings, "notes": self.notes,
            "gate": {"status": self.status, "label": self.label(), "may_publish": not decision.refused,
                     "exit_code": decision.exit_code, "outcomes": {g.outcome: {
                         "status": g.status, "label": g.label(), "accepted": g.accepted,
                         "signoff": g.signoff.as_dict() if g.signoff and g.status != "PASS" else None,
                         "blocked": g.block.as_dict() if g.block is not None else None,
                         "ranks_list": decision.ranks_list(g.outcome),
                         "findings": [f.as_dict() for f in g.findings],
                         "tests": [t.published() for t in g.tests]} for g in self.gates}},
            "scores": {},
        }
        if decision.standards:
            out["compared_with_standard"] = {k: v.as_dict() for k, v in decision.standards.items()}
        for audit in self.audits:
            entry = {"model": self.models.get(audit.name, {}), "operating_point_threshold": round(audit.threshold, 6),
                     "need_measure": audit.need_description,
                     **{kind: {name: grouping_json(audit.by_group(name, kind), self.settings.level)
                               for name in audit.groupings(kind)} for kind in ("performance", "selection")},
                     "population_need_by_score_decile": [significant(v) for v in audit.population_need_by_decile]}
            if audit.name in self.detailed:
                d = self.detailed[audit.name]
                entry["detailed_categories"] = {
                    "performance": grouping_json(d.by_group("ethnicity", "performance")),
                    "selection": grouping_json(d.by_group("ethnicity", "selection"))}
            out["scores"][audit.name] = entry
        if self.quality is not None:
            out["ethnicity_data_quality"] = [_quality_json(r, self.settings.level) for r in self.quality.rows]
        if self.uptake is not None:
            out["uptake_of_invitations"] = {"about": UPTAKE_NOTE, "rows": self.uptake}
        return out

    def write(self, folder: Path) -> tuple[Path, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        data = self.to_json()
        json_path = folder / "fairness_audit.json"
        json_path.write_text(json.dumps(data, indent=1) + "\n")
        html_path = folder / "fairness_audit.html"
        html_path.write_text(render_html(self, data))
        return json_path, html_path


def _quality_json(row, level: float = 0.95) -> dict:
    """A unit's ethnicity recording shares, each the rounded count over the rounded patients with the
    Wilson interval of those (the exact shares, at 4 decimals, gave the exact counts back); withheld
    (None) where the count or the unit's patients are 1-7."""
    patients = suppress(row.patients)
    out = {"level": row.level, "unit": row.unit, "patients": patients}
    shares = {}
    for k in row.shares:
        count = suppress(row.counts[k])
        if count is None or not patients:
            shares[k] = None
            continue
        low, high = wilson_interval(count, patients, level)
        shares[k] = {"value": round(count / patients, 4), "low": round(float(low), 4), "high": round(float(high), 4)}
    out["shares"] = shares
    return out


# --- HTML -----------------------------------------------------------------------------------
# The page is templates/fairness_audit.html.j2 (layout only, autoescaped); the functions below
# turn the report and its JSON into the plain data it lays out: text, counts already suppressed,
# numbers already formatted. A table cell is None (shown as a dash), text, or an estimate
# (``_estimate``).

TEMPLATE = "fairness_audit.html.j2"
TEMPLATES = Path(__file__).with_name("templates")


@cache
def _environment():
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                              keep_trailing_newline=True)


def _png(fig) -> str:
    return "data:image/png;base64," + base64.b64encode(png.tight_png(fig)).decode()


def _new_figure():
    fig = png.figure(5.5, 4.5)
    return fig, fig.add_subplot()


def _plots(audit: ScoreAudit, data: dict, band: tuple[float, float]) -> list[dict]:
    """The figures of one score as {title, src (a PNG data URL)}."""
    out = []
    if audit.curves is not None:
        fig, ax = _new_figure()
        top = 0.0
        for group, points in audit.curves.calibration.items():
            kept = [(p, o) for p, o, n, e in points if n >= PLOT_MIN_PATIENTS and not 0 < e < SUPPRESSED_BELOW]
            if len(kept) >= 2:
                ax.plot(*zip(*kept, strict=True), marker="o", label=group)
                top = max(top, *[max(p, o) for p, o in kept])
        ax.plot([0, top], [0, top], ":", color="grey")
        ax.set(title=f"{audit.name}: calibration by group", xlabel="mean predicted risk", ylabel="recorded outcome rate")
        if top > 0:
            ax.legend(fontsize=7)
            out.append(("calibration by group", _png(fig)))
        else:  # say why the plot is empty, rather than show empty axes (and warn of an empty legend)
            out.append((f"calibration by group: no group has {PLOT_MIN_PATIENTS} patients in two risk bins "
                        "(small numbers: not plotted)", _png(fig)))
        fig, ax = _new_figure()
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
            fig, ax = _new_figure()
            names = [r["group"]["group"] for r in rows]
            at = np.arange(len(names))
            for offset, figure, colour, label in (
                    (-0.2, Figure.NEED_ADJUSTED_SELECTION, "#a9c1e0", "share selected / share of recorded outcomes"),
                    (0.2, Figure.NEED_ADJUSTED_SELECTION_VS_SCORE, "#4a7ab5",
                     "... over its value under the score's own risks (gated)")):
                values = [(r["figures"].get(figure) or {}).get("value") or 0 for r in rows]
                ax.barh(at + offset, values, height=0.4, color=colour, label=label)
            ax.set_yticks(at, names)
            ax.axvline(1, color="black")
            for edge in band:
                ax.axvline(edge, color="grey", linestyle=":")
            ax.legend(fontsize=7)
            ax.set(title=f"{audit.name}: selection versus need", xlabel="ratio")
            out.append(("selection versus need", _png(fig)))
    fig, ax = _new_figure()
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
    return [{"title": title, "src": src} for title, src in out]


def _estimate(estimate: dict | None, band: tuple[float, float] | None = None) -> dict | None:
    """An estimate as shown: value (and interval) to 3 significant figures, flagged outside ``band``."""
    if not estimate or estimate.get("value") is None:
        return None
    interval = estimate.get("low") is not None
    return {"value": f"{estimate['value']:.3g}",
            "low": f"{estimate['low']:.3g}" if interval else None,
            "high": f"{estimate['high']:.3g}" if interval else None,
            "flag": bool(band and not band[0] <= estimate["value"] <= band[1])}


def _count(value) -> str:
    return "[suppressed]" if value is None else f"{value:,}"


def _num(value) -> str | None:
    return None if value is None else f"{value:.3g}"


def _figure(name: str, flag: str | None = None):
    """A table column showing figure ``name``; ``flag`` 'band' or 'limit' marks values outside."""
    def show(r: dict, band, limit) -> dict | None:
        bounds = {"band": band, "limit": (0, limit)}.get(flag)
        return _estimate(r["figures"].get(name), bounds)
    return show


def _ratio(name: str, flag: str | None = None):
    def show(r: dict, band, limit) -> dict | None:
        return _estimate(r["ratio_to_reference"].get(name), band if flag == "band" else None)
    return show


def _counted(name: str):
    def show(r: dict, band, limit) -> str:
        return _count(r["counts"].get(name))
    return show


PERFORMANCE_COLUMNS = [
    ("patients", _counted(Count.PATIENTS)), ("outcomes", _counted(Count.EVENTS)),
    ("share", lambda r, band, limit: None if r["share_of_population"] is None else f"{r['share_of_population']:.1%}"),
    ("outcome rate", _figure(Figure.OUTCOME_RATE)), ("mean predicted", _figure(Figure.MEAN_PREDICTED_RISK)),
    ("O/E", _figure(Figure.OBSERVED_EXPECTED, "band")), ("cal. slope", _figure(Figure.CALIBRATION_SLOPE)),
    ("AUROC", _figure(Figure.AUROC)), ("selection rate", _figure(Figure.SELECTION_RATE)),
    ("sensitivity", _figure(Figure.SENSITIVITY)), ("sensitivity ratio to reference", _ratio(Figure.SENSITIVITY, "band")),
    ("PPV", _figure(Figure.PPV)), ("FNR", _figure(Figure.FALSE_NEGATIVE_RATE)),
    ("need-adjusted selection", _figure(Figure.NEED_ADJUSTED_SELECTION)),
    ("... over the score's expectation (gated)", _figure(Figure.NEED_ADJUSTED_SELECTION_VS_SCORE, "band")),
]
SELECTION_COLUMNS = [
    ("patients", _counted(Count.PATIENTS)), ("on the list", _counted(Count.SELECTED)),
    ("selection rate", _figure(Figure.SELECTION_RATE)), ("mean need", _figure(Figure.MEAN_NEED)),
    ("need at the same score", _figure(Figure.NEED_AT_SAME_SCORE, "limit")),
    ("diagnosis gap", _figure(Figure.DIAGNOSIS_GAP, "limit")),
    ("treated, no diagnosis", _figure(Figure.TREATED_UNDIAGNOSED, "limit")),
    ("share of list / share of high need", _figure(Figure.LIST_OVER_HIGH_NEED_SHARE)),
    ("measurement completeness", _figure(Figure.MEASUREMENT_COMPLETENESS)),
    ("completeness ratio to reference", _ratio(Figure.MEASUREMENT_COMPLETENESS)),
]


def _table(rows: list[dict], columns, band, limit) -> dict:
    """A group table: headers, and per group its name and cells (a withheld group's counts only)."""
    shown_rows = []
    for r in rows:
        shown = columns[:2] if r["withheld"] else columns  # withheld: the counts (suppressed) only
        shown_rows.append({"name": " x ".join(r["group"].values()), "withheld": r["withheld"],
                           "small": r["too_small_to_judge"], "cells": [show(r, band, limit) for _, show in shown]})
    return {"headers": [h for h, _ in columns], "rows": shown_rows, "withheld_span": len(columns) - 2}


def _performance_table(rows: list[dict], band) -> dict:
    return _table(rows, PERFORMANCE_COLUMNS, band, None)


def _selection_table(rows: list[dict], limit: float) -> dict:
    return _table(rows, SELECTION_COLUMNS, None, limit)


def _tests(report: AuditReport, settings: AuditSettings) -> dict:
    rows = []
    for gate in report.gates:
        for t in gate.tests:
            d = t.published()  # a test resting on a count of 1-7: its verdict, its figures withheld
            rows.append({"outcome": t.outcome, "group": t.group + (" (small)" if t.small else ""), "check": t.check,
                         "side": t.side, "estimate": WITHHELD if t.withheld else _estimate(d["estimate"]),
                         "shrunk": _num(d["shrunk"]),
                         "margin": f"{t.margin[0]:.2f}-{t.margin[1]:.2f}", "p_value": _num(d["p_value"]),
                         "adjusted_p_value": _num(d["adjusted_p_value"]),
                         "minimum_detectable_ratio": _num(d["minimum_detectable_ratio"]), "verdict": t.verdict,
                         "note": t.note})
    return {"family": "Holm" if settings.family_control == "holm" else "Benjamini-Hochberg",
            "family_error": f"{1 - settings.level:.0%}", "shrinkage": bool(settings.shrinkage),
            "power": f"{settings.power:.0%}", "rows": rows}


def _standards(data: dict) -> list[dict]:
    """Do no harm: per outcome, the trained model against the validated score. A group whose figures
    rest on a count of 1-7 has one row saying so (its figures are withheld)."""
    out = []
    for outcome, c in (data.get("compared_with_standard") or {}).items():
        rows = []
        for g in c["groups"]:
            common = {"group": g["group"], "patients": _count(g["patients"]), "events": _count(g["events"]),
                      "judged": g["judged"]}
            if g.get("withheld"):
                rows.append({**common, "figure": "every figure", "model": WITHHELD, "standard": None,
                             "difference": None, "low": None, "high": None, "model_worse": bool(g["model_worse_on"])})
                continue
            rows += [{**common, "figure": name, "model": _num(f["model"]), "standard": _num(f["standard"]),
                      "difference": _num(f["difference"]), "low": _num(f["low"]), "high": _num(f["high"]),
                      "model_worse": name in g["model_worse_on"]} for name, f in g["figures"].items()]
        out.append({"outcome": outcome, "standard": c["standard"], "ranks_list": c["ranks_list"],
                    "reasons": c["reasons"], "rows": rows})
    return out


def _gates(report: AuditReport) -> list[dict]:
    """Per outcome: result, sign-off (shown for WARN and FAIL), what ranks the list, findings FAIL first."""
    out = []
    for gate in report.gates:
        signoff = None
        if gate.signoff is not None and gate.status != "PASS":
            signoff = {"reviewer": gate.signoff.reviewer, "source": gate.signoff.source,
                       "reason": gate.signoff.reason, "is_demo": gate.signoff.is_demo}
        ranks = report.decision.ranks_list(gate.outcome)
        findings = [{"level": f.level, "rule": f.rule, "message": f.message}
                    for f in sorted(gate.findings, key=lambda f: (f.level != "FAIL", f.rule, f.group))]
        blocked = None if gate.block is None else {"reviewer": gate.block.reviewer, "source": gate.block.source,
                                                   "reason": gate.block.reason}
        out.append({"outcome": gate.outcome, "status": gate.status, "signoff": None if blocked else signoff,
                    "blocked": blocked, "ranks_list": None if ranks == "model" else ranks, "findings": findings})
    return out


def _score_section(audit: ScoreAudit, entry: dict, settings: AuditSettings) -> dict:
    band, limit = settings.ratio_band, settings.need_ratio_limit
    model = entry.get("model") or {}
    others = [name for name in entry["performance"] if name not in ("population", "ethnicity")]
    detailed = None
    if "detailed_categories" in entry:
        d = entry["detailed_categories"]
        detailed = {"performance": _performance_table(d["performance"], band) if d["performance"] else None,
                    "selection": _selection_table(d["selection"], limit)}
    return {
        "name": audit.name,
        "model": ", ".join(f"{k}: {v}" for k, v in model.items()) if model else None,
        "threshold": f"{audit.threshold:.4g}", "need": audit.need_description or "as given",
        "performance": _performance_table(entry["performance"]["ethnicity"], band) if entry["performance"] else None,
        "selection": _selection_table(entry["selection"]["ethnicity"], limit),
        "plots": _plots(audit, entry, band),
        "performance_by": [(name, _performance_table(entry["performance"][name], band)) for name in others],
        "selection_by": [(name, _selection_table(rows, limit)) for name, rows in entry["selection"].items()
                         if name not in ("population", "ethnicity")],
        "detailed": detailed,
    }


def _quality(data: dict) -> list[dict] | None:
    if "ethnicity_data_quality" not in data:
        return None
    return [{"level": r["level"], "unit": r["unit"], "patients": _count(r["patients"]),
             "shares": [_estimate(r["shares"].get(k)) for k in
                        ("recorded", "not_stated_z", "not_known_99", "conflicting_codes", "any_other_category",
                         "from_hospital_records")]}
            for r in data["ethnicity_data_quality"]]


UPTAKE_NOTE = ("Of the patients listed at practices that returned outcomes (phm outcomes), the share "
               "contacted and the share who attended, by the group they were listed as; 95% Wilson intervals; "
               "counts 1-7 suppressed, others rounded to 5; shares from the rounded counts, withheld where a count "
               "is 1-7.")


def _uptake(data: dict) -> list[dict] | None:
    if "uptake_of_invitations" not in data:
        return None
    return [{"grouping": r["grouping"], "group": r["group"], "withheld": r["withheld"],
             "counts": [_count(r[k]) for k in ("listed", "contacted", "attended", "declined")],
             "shares": [_estimate(r[k]) for k in ("contacted_share", "attended_share")]}
            for r in data["uptake_of_invitations"]["rows"]]


def render_html(report: AuditReport, data: dict) -> str:
    """The self-contained HTML report of ``report``, whose JSON (``to_json``) is ``data``."""
    settings = report.settings
    band = settings.ratio_band
    gates = _gates(report)
    page = {
        "title": report.title, "status": data["gate"]["status"], "label": report.label(),
        "generated_at": data["generated_at"], "reference_group": settings.reference_group,
        "band": (f"{band[0]}", f"{band[1]}"), "need_ratio_limit": f"{settings.need_ratio_limit}",
        "replicates": f"{settings.replicates:,}", "level": f"{settings.level:.0%}", "disclosure": DISCLOSURE_NOTE,
        "notes": data.get("notes", []), "gates": gates, "any_finding": any(g["findings"] for g in gates),
        "tests": _tests(report, settings), "standards": _standards(data),
        "scores": [_score_section(audit, data["scores"][audit.name], settings) for audit in report.audits],
        "quality": _quality(data), "uptake": _uptake(data), "uptake_note": UPTAKE_NOTE,
    }
    return _environment().get_template(TEMPLATE).render(page)
