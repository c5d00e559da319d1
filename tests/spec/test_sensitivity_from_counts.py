"""The sensitivity ratio read from the counts where the bootstrap's interval collapsed
(models/fairness/_gate.py, ``_count_based``): a group with no recorded outcome has no sensitivity,
and a group with every one of its few outcomes selected is not known to have a sensitivity of 1.

Found on the 12,000-patient demo (seed 42, 2026-12-03): CVD's Black and Other groups had no
recorded outcome among their validation patients. With 0.5 added to 0 of 0 their sensitivity read
as 1, and the variance of its log, 1 / 0.5 - 1 / 0.5, vanished; the ratio over White's (about
0.33) was 3.0 with White's small standard error. Shrinkage drew every other group to that 3.0, and
the gate WARNed "Black is nan (95% CI nan-nan); 3.00 after shrinkage: surely above 1.25, ... served
beyond the margin" for a group it had no figure for."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np

from models.fairness._audit import Counts, Estimate
from models.fairness._gate import (
    GateTest,
    _count_based,
    _log_and_se,
    _p_value,
    _surely_served_beyond,
    shrink,
)

LEVEL, ALPHA, BAND = 0.95, 0.05, (0.8, 1.25)
WHITE = SimpleNamespace(counts=Counts(patients=2_000, events=240, selected=300, true_positives=80))  # sensitivity 1/3


def _row(events: int, true_positives: int) -> SimpleNamespace:
    return SimpleNamespace(counts=Counts(patients=50, events=events, selected=5, true_positives=true_positives))


def test_a_group_with_no_recorded_outcome_has_no_sensitivity_to_judge():
    log, se = _count_based("sensitivity ratio", _row(0, 0), WHITE, None)
    assert math.isnan(log) and math.isnan(se)
    # nor against a reference group with none
    log, se = _count_based("sensitivity ratio", _row(5, 2), SimpleNamespace(counts=Counts(patients=9, events=0)), None)
    assert math.isnan(log) and math.isnan(se)


def test_every_one_of_a_few_outcomes_selected_keeps_the_uncertainty_of_a_few():
    log, se = _count_based("sensitivity ratio", _row(3, 3), WHITE, None)
    white_only = math.sqrt(1 / (80 + 0.5) - 1 / (240 + 1))  # what the standard error was before: White's part alone
    assert se > 2 * white_only and se > 0.15
    # 3 of 3 against White's 1/3: about 2.6 times (read as normal it would still look sure of being
    # above 1.25, where exactly P(3 of 3 | 1.25 x 1/3) = 0.07: so a stand-in never warns of a group
    # served beyond, below; it weighs in the shrinkage as three patients, not as White's 240)
    assert 2.3 < math.exp(log) < 2.9


def test_none_of_many_outcomes_selected_is_still_judged_as_harm():
    # the reason the counts stand in for a collapsed interval: 0 of 30 selected is evidence
    log, se = _count_based("sensitivity ratio", _row(30, 0), WHITE, None)
    assert math.isfinite(log) and math.exp(log) < 0.1
    assert _p_value(log, se, "below", BAND) < ALPHA


def test_groups_without_outcomes_no_longer_draw_the_others_to_their_stand_in():
    # the 12,000-patient demo's CVD before (2026-12-03 03:25): four groups with bootstrap intervals,
    # Black and Other with no recorded outcome; every group's shrunk ratio came out 3.00
    measured = {"Asian": (1.85, 0.66, 4.00), "Not known": (1.25, 0.05, 2.84), "Not stated": (1.67, 0.05, 4.21)}
    logs, ses = zip(*(_log_and_se(Estimate(*v), LEVEL) for v in measured.values()), strict=True)
    old_log = math.log(0.5 / 0.5) - math.log(80.5 / 240.5)  # the counts' stand-in as it was: 1 over White's
    old_se = math.sqrt(1 / 0.5 - 1 / 0.5 + 1 / 80.5 - 1 / 240.5)
    before, _ = shrink(np.array([*logs, old_log, old_log]), np.array([*ses, old_se, old_se]))
    assert np.allclose(np.exp(before), 2.99, atol=0.05)
    new = [_count_based("sensitivity ratio", _row(0, 0), WHITE, None)] * 2
    after, _ = shrink(np.array([*logs, *(n[0] for n in new)]), np.array([*ses, *(n[1] for n in new)]))
    assert np.isnan(after[3:]).all()
    assert (np.exp(after[:3]) < 2.0).all()


def test_a_stand_in_from_the_counts_never_warns_of_a_group_served_beyond():
    log, se = _count_based("sensitivity ratio", _row(9, 9), WHITE, None)
    t = GateTest("cvd", "Mixed", "sensitivity ratio", "below", BAND, Estimate(float("nan"), float("nan"), float("nan")),
                 log_value=log, se=se, shrunk=math.exp(log), shrunk_se=se)
    assert _p_value(log, se, "above", BAND) <= ALPHA  # 9 of 9 against 1/3 would pass the test alone
    assert _surely_served_beyond(t, ALPHA)
    t.count_based = True
    assert not _surely_served_beyond(t, ALPHA)


def _small_groups_audit():
    """White's sensitivity about a third; Asian with 3 recorded outcomes, all selected; Other with 2,
    both selected; Mixed with none; Black as White."""
    import polars as pl

    from models.fairness import AuditSettings, audit_score

    rng = np.random.default_rng(5)
    frames = []
    for group, patients in (("White", 6_000), ("Black", 1_500)):
        risk = rng.beta(0.5, 6, patients)
        frames.append(pl.DataFrame({"group": group, "score": risk, "outcome": (rng.random(patients) < risk)}))
    for group, patients, outcomes in (("Asian", 60, 3), ("Other", 40, 2), ("Mixed", 50, 0)):
        score = np.r_[np.full(outcomes, 0.9), rng.uniform(0.0, 0.02, patients - outcomes)]
        frames.append(pl.DataFrame({"group": group, "score": score,
                                    "outcome": np.r_[np.ones(outcomes, bool), np.zeros(patients - outcomes, bool)]}))
    frame = pl.concat(frames).with_columns(
        pl.col("outcome").cast(pl.Int8), sex=pl.lit("female"), imd_quintile=pl.lit(3),
        need=pl.col("score") * 10)
    threshold = float(frame["score"].quantile(0.9))
    frame = frame.with_columns((pl.col("score") >= threshold).alias("selected"))
    columns = ["group", "imd_quintile", "sex", "score", "selected"]
    settings = AuditSettings(replicates=300, seed=1)
    return audit_score("cvd", frame.select(*columns, "outcome"), frame.select(*columns, "need"), threshold, settings,
                       2), settings


def test_in_the_gate_a_few_outcomes_all_selected_are_not_a_group_served_beyond_and_none_is_no_test():
    from models.fairness import judge

    audit, settings = _small_groups_audit()
    gate = judge(audit, settings, 0.05)
    tests = {t.group: t for t in gate.tests if t.check == "sensitivity ratio"}
    assert "Mixed" not in tests  # no recorded outcome: no sensitivity, no test
    white = next(g for g in audit.by_group("ethnicity", "performance") if g.labels["group"] == "White").counts
    assert 0.2 < white.true_positives / white.events < 0.5
    # Other, 2 of 2: the bootstrap's interval is lost (no outcome in about e^-2 of the replicates),
    # and the counts stand in
    assert tests["Other"].count_based and tests["Other"].as_dict()["from_counts"]
    # Asian, 3 of 3: an interval whose width is White's alone; exactly, P(3 of 3 | 1.25 x White's) > 5%
    assert not tests["Asian"].count_based and tests["Asian"].served_p > ALPHA
    assert _p_value(tests["Asian"].log_value, tests["Asian"].se, "above", BAND) <= ALPHA  # what the normal read said
    for group in ("Asian", "Other"):
        assert not tests[group].served_beyond and tests[group].verdict == "PASS", tests[group]
    assert not [f for f in gate.findings if f.rule == "sensitivity ratio" and f.group in ("Asian", "Mixed", "Other")]
