"""The gate's WARN for a group served beyond the margin, on the side that is not harm
(models/fairness/_gate.py, ``_surely_served_beyond``): the group's own evidence must say so, not
the shrunk estimate alone.

The figures are the demo's T2D sensitivity ratios (seed 42, 2026-12-03): every non-reference group
above White's, the small ones with intervals from 0. Shrinkage pulls them all to about 1.66 with
the common mean's small standard error; judged on that, all six were "surely" beyond 1.25 and each
drew a WARN that a reviewer had to sign off, Mixed's at 0.78 among them."""

from __future__ import annotations

import math

import numpy as np

from models.fairness._audit import Estimate
from models.fairness._gate import GateTest, _log_and_se, _p_value, _surely_served_beyond, shrink

LEVEL, ALPHA, BAND = 0.95, 0.05, (0.8, 1.25)
DEMO_T2D_SENSITIVITY = {"Asian": (1.98, 1.36, 2.68), "Black": (1.23, 0.00, 2.49), "Mixed": (0.78, 0.00, 1.62),
                        "Not known": (1.51, 1.13, 2.01), "Not stated": (1.64, 0.44, 2.93),
                        "Other": (1.27, 0.28, 2.39)}


def _tests(figures: dict[str, tuple[float, float, float]], side: str = "below") -> list[GateTest]:
    tests = []
    for group, (value, low, high) in figures.items():
        t = GateTest("t2d", group, "sensitivity ratio", side, BAND, Estimate(value, low, high))
        t.log_value, t.se = _log_and_se(t.estimate, LEVEL)
        tests.append(t)
    shrunk, shrunk_se = shrink(np.array([t.log_value for t in tests]), np.array([t.se for t in tests]))
    for t, value, se in zip(tests, shrunk, shrunk_se, strict=True):
        t.shrunk, t.shrunk_se = math.exp(value), se
    return tests


def test_only_a_group_whose_own_evidence_is_surely_beyond_is_warned():
    tests = _tests(DEMO_T2D_SENSITIVITY)
    # what the rule judged before: the shrunk estimate with its own standard error puts every group
    # surely above 1.25, Mixed (0.78, 0.00-1.62) included
    assert all(_p_value(math.log(t.shrunk), t.shrunk_se, "above", BAND) <= ALPHA for t in tests)
    assert {t.group for t in tests if _surely_served_beyond(t, ALPHA)} == {"Asian"}  # 1.36-2.68: above 1.25


def test_a_group_surely_beyond_alone_but_not_after_shrinkage_is_not_warned():
    # Asian's own interval is above 1.25, but the others pull its shrunk estimate inside the band
    figures = {"Asian": (1.90, 1.26, 2.86), "Black": (1.00, 0.90, 1.11), "Mixed": (1.02, 0.92, 1.13),
               "Other": (0.98, 0.88, 1.09)}
    asian = next(t for t in _tests(figures) if t.group == "Asian")
    assert _p_value(asian.log_value, asian.se, "above", BAND) <= ALPHA
    assert asian.shrunk <= BAND[1] and not _surely_served_beyond(asian, ALPHA)


def test_the_label_choice_checks_other_side_is_below_the_margin():
    # label choice: harm above 1.25, so a group surely below 0.80 is the one served beyond
    figures = {"Asian": (0.50, 0.42, 0.60), "Black": (1.00, 0.85, 1.18), "Mixed": (1.05, 0.80, 1.38)}
    warned = {t.group for t in _tests(figures, side="above") if _surely_served_beyond(t, ALPHA)}
    assert warned == {"Asian"}


def test_a_check_with_harm_either_way_has_no_other_side():
    (t,) = [t for t in _tests({"Asian": (3.0, 2.5, 3.6), "Black": (1.0, 0.9, 1.1), "Mixed": (1.0, 0.9, 1.1)},
                              side="both") if t.group == "Asian"]
    assert not _surely_served_beyond(t, ALPHA)


def _carries_an_effect_its_need_lacks(n: int = 20_000, seed: int = 3):
    """A score that is each patient's true risk, Black patients' 1.54 times at the same clinical
    state (as the hypertension model carries REGARDS's published effect, and the generator's truth
    has one), and a need that follows the clinical state alone (as the blood pressure stage does)."""
    import polars as pl

    from models.fairness import AuditSettings, audit_score

    rng = np.random.default_rng(seed)
    group = rng.choice(np.array(["White", "Asian", "Black"]), size=n, p=np.array([0.7, 0.2, 0.1]))
    clinical = rng.normal(-3, 1, n)
    risk = 1 / (1 + np.exp(-(clinical + np.where(group == "Black", 0.43, 0.0))))
    frame = pl.DataFrame({"group": group, "sex": rng.choice(np.array(["female", "male"]), size=n),
                          "imd_quintile": rng.integers(1, 6, n), "score": risk,
                          "outcome": (rng.random(n) < risk).astype(np.int8),
                          "need": rng.poisson(10 / (1 + np.exp(-clinical)))})
    threshold = float(np.quantile(risk, 0.9))
    frame = frame.with_columns((pl.col("score") >= threshold).alias("selected"))
    columns = ["group", "imd_quintile", "sex", "score", "selected"]
    settings = AuditSettings(replicates=300, seed=1)
    return audit_score("hypertension", frame.select(*columns, "outcome"), frame.select(*columns, "need"), threshold,
                       settings, 2), settings


def test_a_published_effect_the_need_measure_cannot_carry_is_no_group_served_beyond():
    from models.fairness import judge

    audit, settings = _carries_an_effect_its_need_lacks()
    gate = judge(audit, settings, 0.05)
    (black,) = [t for t in gate.tests if t.group == "Black" and t.check == "label choice"]
    assert black.estimate.value < BAND[0] and black.served_beyond and black.verdict == "WARN"  # as before
    audit.need_lacks_effect = {"Black": 0.43}  # what the pipeline's audit sets for hypertension (models/audit_run.py)
    gate = judge(audit, settings, 0.05)
    (black,) = [t for t in gate.tests if t.group == "Black" and t.check == "label choice"]
    assert black.verdict == "PASS" and not black.served_beyond and "1.54 times the hazard" in black.note
    assert black.as_dict()["note"] == black.note
    assert not [f for f in gate.findings if f.group == "Black" and f.rule == "label choice"]
    # still a test of the family (its harmful side, more need at the same score, is judged as before)
    assert black.judged and black.side == "above" and math.isfinite(black.adjusted_p)
