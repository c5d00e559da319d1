"""Do no harm against the standard: the trained model against QRISK3 (CVD) or QDiabetes (T2D).

On the same validation patients, for every broad group large enough to judge (at least
``min_patients`` patients and ``min_events`` recorded outcomes), two paired comparisons:

- sensitivity at the list's operating point: each score selects the top ``capacity_share`` of
  the validation patients (the same capacity); difference model - standard;
- calibration: the absolute log of observed / expected, model minus standard (a positive
  difference: the model is further from the recorded outcomes than the standard). The expected
  outcomes are over each patient's own follow-up where the frame gives them (``score_expected``,
  ``standard_expected``: models/audit_run.py), as the audit's calibration counts them.

Intervals and one-sided p-values come from one patient-level Poisson bootstrap shared by both
scores (paired). "Worse beyond the interval" is a test that survives Holm's control over the
family of these comparisons (every outcome, group and figure) at ``1 - level``. If the model is
worse for any group, it does not become champion and the validated score ranks that outcome's
list; the report says why.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from models.fairness._gate import adjust
from models.fairness._settings import AuditSettings
from phm.disclosure import WITHHELD, significant, small, suppress

SENSITIVITY = "sensitivity at the operating point"
STANDARDS = {"cvd": "QRISK3-2017", "t2d": "QDiabetes-2018"}
CHUNK = 100


@dataclass
class GroupComparison:
    group: str
    patients: int
    events: int
    judged: bool
    figures: dict[str, dict[str, float]] = field(default_factory=dict)  # figure -> model, standard, diff, low, high, p
    worse: list[str] = field(default_factory=list)  # figures where the model is surely worse
    # each score's true positives at the operating point (exact; for what is published)
    true_positives: dict[str, int] = field(default_factory=dict)

    @property
    def withheld(self) -> bool:
        """Do the group's figures rest on a count of 1-7 (its patients, its outcomes, either score's
        true positives or missed outcomes)? A sensitivity k / n with a small k or n, or an observed /
        expected with 1-7 observed, gives the count back: such a group's figures are not published
        (it is still compared, and judged if large enough)."""
        counts = [self.patients, self.events, *self.true_positives.values(),
                  *(self.events - tp for tp in self.true_positives.values())]
        return any(small(n) for n in counts)

    def published(self) -> dict[str, dict[str, float | None]]:
        """The figures as they may leave the pipeline: the sensitivities from the rounded counts
        (rounded true positives over rounded outcomes, as the audit's tables give them), the rest to
        3 significant figures; none where ``withheld``."""
        if self.withheld:
            return {}
        out = {}
        events = suppress(self.events)
        for name, f in self.figures.items():
            shown = {n: significant(v) for n, v in f.items()}
            if name == SENSITIVITY and events and set(self.true_positives) == {"model", "standard"}:
                model, standard = (suppress(self.true_positives[k]) / events for k in ("model", "standard"))
                shown.update(model=round(model, 4), standard=round(standard, 4), difference=round(model - standard, 4))
            out[name] = shown
        return out

    def as_dict(self) -> dict:
        return {"group": self.group, "patients": suppress(self.patients), "events": suppress(self.events),
                "judged": self.judged, "withheld": self.withheld,
                **({"withheld_reason": WITHHELD} if self.withheld else {}),
                "figures": self.published(), "model_worse_on": self.worse}


@dataclass
class StandardComparison:
    outcome: str
    standard: str
    groups: list[GroupComparison]

    @property
    def model_is_worse(self) -> bool:
        return any(g.worse for g in self.groups)

    @property
    def ranks_list(self) -> str:
        return self.standard if self.model_is_worse else "model"

    def reasons(self) -> list[str]:
        out = []
        for g in self.groups:
            if g.withheld:  # judged, and worse, on figures resting on a count of 1-7: said without them
                out += [f"{self.outcome}: for {g.group}, the trained model's {figure} is worse than {self.standard}'s "
                        f"on the same validation patients ({WITHHELD}: the figures are withheld)" for figure in g.worse]
                continue
            published = g.published()
            for figure in g.worse:
                f = published[figure]
                out.append(f"{self.outcome}: for {g.group}, the trained model's {figure} is worse than "
                           f"{self.standard}'s on the same validation patients (model {f['model']:.3f}, "
                           f"{self.standard} {f['standard']:.3f}; difference {f['difference']:+.3f}, "
                           f"95% CI {f['low']:+.3f} to {f['high']:+.3f})")
        return out

    def as_dict(self) -> dict:
        return {"standard": self.standard, "ranks_list": self.ranks_list, "reasons": self.reasons(),
                "groups": [g.as_dict() for g in self.groups]}


def _top(score: np.ndarray, share: float) -> np.ndarray:
    capacity = max(1, int(round(score.size * share)))
    threshold = np.sort(score)[::-1][capacity - 1]
    return score >= threshold


def _weights(seed: int, replicates: int, patients: int) -> Iterator[np.ndarray]:
    """The bootstrap's Poisson(1) weights, ``CHUNK`` replicates at a time, from one generator in
    the order they always were drawn. The next chunk is drawn in a second thread (numpy draws
    without holding the GIL) while the caller sums the current one: the draws are most of the
    comparison's time, and the sums no longer wait for them."""
    rng = np.random.default_rng(seed)
    sizes = [min(CHUNK, replicates - done) for done in range(0, replicates, CHUNK)]
    with ThreadPoolExecutor(max_workers=1) as draws:
        pending = draws.submit(rng.poisson, 1.0, (sizes[0], patients)) if sizes else None
        for k in range(len(sizes)):
            w = pending.result()
            if k + 1 < len(sizes):
                pending = draws.submit(rng.poisson, 1.0, (sizes[k + 1], patients))
            yield w.astype(float)


def compare(frames: dict[str, pl.DataFrame], settings: AuditSettings) -> dict[str, StandardComparison]:
    """``frames``: outcome -> validation patients with ``group``, ``score`` (model),
    ``standard`` (validated score at the same horizon) and ``outcome`` (0/1); and, where known,
    ``score_expected`` and ``standard_expected``: the outcomes each score expects over the
    patient's own follow-up (without them: its risk, every patient followed to the horizon)."""
    out, tests = {}, []
    for k, (outcome, frame) in enumerate(frames.items()):
        frame = frame.filter(pl.col("score").is_not_null() & pl.col("standard").is_not_null())
        if frame.is_empty():
            continue
        groups = sorted(frame["group"].unique().to_list())
        g_index = frame["group"].replace_strict({g: i for i, g in enumerate(groups)}, return_dtype=pl.Int64).to_numpy()
        y = frame["outcome"].to_numpy().astype(float)
        model, standard = frame["score"].to_numpy(), frame["standard"].to_numpy()
        selected = {"model": _top(model, settings.capacity_share), "standard": _top(standard, settings.capacity_share)}
        onehot = np.zeros((y.size, len(groups)))
        onehot[np.arange(y.size), g_index] = 1
        followed = "score_expected" in frame.columns and "standard_expected" in frame.columns
        columns = {"n": np.ones_like(y), "y": y, "tp_model": y * selected["model"], "tp_standard": y * selected["standard"],
                   "risk_model": frame["score_expected"].to_numpy() if followed else model,
                   "risk_standard": frame["standard_expected"].to_numpy() if followed else standard}

        def figures(sums):
            with np.errstate(divide="ignore", invalid="ignore"):
                sens_m, sens_s = sums["tp_model"] / sums["y"], sums["tp_standard"] / sums["y"]
                cal_m = np.abs(np.log(sums["y"] / sums["risk_model"]))
                cal_s = np.abs(np.log(sums["y"] / sums["risk_standard"]))
                return {"sensitivity at the operating point": (sens_m, sens_s, sens_m - sens_s, "below"),
                        "calibration error |log O/E|": (cal_m, cal_s, cal_m - cal_s, "above")}

        by_group = {name: values[:, None] * onehot for name, values in columns.items()}
        observed = figures({name: values.sum(axis=0) for name, values in by_group.items()})
        # The counts' columns are whole numbers, and so are the Poisson weights: their weighted
        # sums are exact in any order, so one product serves all four (each product reads every
        # weight). The risks' sums are not, and keep a product each, as they always had.
        counted = ("n", "y", "tp_model", "tp_standard")
        counts_matrix = np.hstack([by_group[c] for c in counted])
        width = onehot.shape[1]
        reps: dict[str, list[np.ndarray]] = {name: [] for name in observed}
        for w in _weights(settings.seed + 100 + k, settings.replicates, y.size):
            summed = w @ counts_matrix
            sums = {c: summed[:, i * width:(i + 1) * width] for i, c in enumerate(counted)}
            sums.update({c: w @ by_group[c] for c in ("risk_model", "risk_standard")})
            for name, value in figures(sums).items():
                reps[name].append(value[2])
        reps = {name: np.concatenate(v) for name, v in reps.items()}
        comparisons = []
        counts = {"n": columns["n"] @ onehot, "y": y @ onehot, "model": columns["tp_model"] @ onehot,
                  "standard": columns["tp_standard"] @ onehot}
        for i, group in enumerate(groups):
            judged = counts["n"][i] >= settings.min_patients and counts["y"][i] >= settings.min_events
            comparison = GroupComparison(group, int(counts["n"][i]), int(counts["y"][i]), bool(judged),
                                         true_positives={k: int(round(counts[k][i])) for k in ("model", "standard")})
            for name, (m, s, diff, worse_side) in observed.items():
                samples = reps[name][:, i]
                finite = samples[np.isfinite(samples)]
                if finite.size < 0.9 * samples.size or not math.isfinite(diff[i]):
                    continue
                low, high = np.percentile(finite, [50 * (1 - settings.level), 50 * (1 + settings.level)])
                # one-sided bootstrap p of "the model is not worse": the share of replicates on that side
                p = float(((finite >= 0) if worse_side == "below" else (finite <= 0)).mean())
                comparison.figures[name] = {"model": float(m[i]), "standard": float(s[i]), "difference": float(diff[i]),
                                            "low": float(low), "high": float(high), "p": max(p, 1 / (finite.size + 1))}
                if judged:
                    tests.append((comparison, name))
            comparisons.append(comparison)
        out[outcome] = StandardComparison(outcome, STANDARDS.get(outcome, "validated score"), comparisons)
    adjusted = adjust(np.array([c.figures[name]["p"] for c, name in tests]), "holm")
    for (comparison, name), p in zip(tests, adjusted, strict=True):
        comparison.figures[name]["adjusted_p"] = float(p)
        if p <= 1 - settings.level:
            comparison.worse.append(name)
    return out
