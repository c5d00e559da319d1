"""The diagnosis-gap check (models/fairness/_recording.py) on tiny hand-made tables."""

from __future__ import annotations

import polars as pl
import pytest

from models.fairness._recording import gap_counts, gap_ratios, treated_counts


def _patients(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=["ethnicity_group", "age_years", "sbp_mmhg", "dbp_mmhg", "hba1c_mmol_mol",
                                      "hypertension", "type1_diabetes", "type2_diabetes"], orient="row")


def test_only_adults_with_a_reading_over_the_diagnostic_threshold_count():
    frame = _patients([
        ("White", 50, 150, 80, None, False, False, False),  # high, undiagnosed
        ("White", 50, 150, 80, None, True, False, False),  # high, diagnosed
        ("White", 50, 139, 89, None, False, False, False),  # below 140/90: not counted
        ("White", 17, 170, 95, None, False, False, False),  # a child: not counted
        ("White", 50, 120, 92, None, False, False, False),  # diastolic 92: counted
        ("Black", 50, None, None, None, False, False, False),  # no reading: not counted
    ])
    counts = gap_counts(frame, "hypertension")
    assert counts["patients"].sum() == 3
    assert counts["undiagnosed"].sum() == 2
    t2d = gap_counts(_patients([("Asian", 40, None, None, 48, False, False, False),
                                ("Asian", 40, None, None, 47.9, False, False, False),
                                ("Asian", 40, None, None, 60, False, True, False)]), "t2d")
    # 48 counts, 47.9 does not; a type 1 code is a diagnosis too
    assert (t2d["patients"].sum(), t2d["undiagnosed"].sum()) == (2, 1)
    assert gap_counts(frame, "cvd") is None  # no reading shows an unrecorded CVD event


def test_treated_without_a_diagnosis_counts_adults_on_antihypertensives_with_no_current_code():
    frame = pl.DataFrame(
        [("White", 50, True, True), ("White", 50, True, False), ("White", 50, False, False),
         ("White", 17, True, False), ("Black", 75, True, False), ("Black", 75, None, False)],
        schema=["ethnicity_group", "age_years", "on_antihypertensives", "hypertension"], orient="row")
    counts = treated_counts(frame, "hypertension").sort("group")
    # a child and the untreated do not count; a treated adult with no current code does
    assert counts.rows() == [("Black", 4, 1, 1), ("White", 2, 2, 1)]
    t2d = pl.DataFrame(
        [("Asian", 40, "F", True, False, False, False),  # metformin, no diabetes code: counted
         ("Asian", 40, "F", True, True, False, False),   # metformin for PCOS: not counted
         ("Asian", 40, "M", True, False, False, True),   # type 1 code: diagnosed
         ("Asian", 40, "M", False, False, False, False)],  # untreated
        schema=["ethnicity_group", "age_years", "sex", "on_glucose_lowering", "pcos", "type2_diabetes",
                "type1_diabetes"], orient="row")
    assert treated_counts(t2d, "t2d").rows() == [("Asian", 1, 2, 1)]


def test_treated_without_a_diagnosis_counts_adults_on_antiplatelets_with_no_cvd_code():
    frame = pl.DataFrame(
        [("Black", 62, True, False, False),   # antiplatelet, no CHD/MI/stroke/TIA code: counted
         ("Black", 62, True, True, False),    # antiplatelet after a coded event: diagnosed
         ("Black", 62, True, False, True),    # atrial fibrillation is no reason for one: counted
         ("Black", 62, False, False, False),  # untreated: not counted
         ("White", 45, True, False, False),
         ("White", 16, True, False, False),   # a child: not counted
         ("White", 45, None, True, False)],   # no issue recorded: not treated
        schema=["ethnicity_group", "age_years", "on_antiplatelets", "cvd", "atrial_fibrillation"], orient="row")
    counts = treated_counts(frame, "cvd").sort("group")
    # (group, age band, treated adults, of them with no CVD code)
    assert counts.rows() == [("Black", 3, 3, 2), ("White", 1, 1, 1)]


def test_a_group_undiagnosed_as_often_as_the_population_at_the_same_reading_and_age_is_1():
    # the Black group has higher readings (stage 2) where everyone is diagnosed more often:
    # standardised by reading band, it is diagnosed exactly as often as the population
    counts = pl.DataFrame({"group": ["White", "White", "Black", "Black"], "stratum": [3, 13, 3, 13],
                           "patients": [400, 100, 50, 150], "undiagnosed": [200, 20, 25, 30]})
    ratios = gap_ratios(counts)
    assert ratios["Black"][0].value == pytest.approx(1.0)
    assert ratios["White"][0].value == pytest.approx(1.0)
    # unstandardised, Black would look better diagnosed: 55/200 against 220/500
    assert 55 / 200 < 220 / 500


def test_twice_the_undiagnosed_at_the_same_reading_is_about_2_with_an_exact_interval():
    counts = pl.DataFrame({"group": ["White", "Black"], "stratum": [3, 3], "patients": [1000, 100],
                           "undiagnosed": [100, 20]})
    estimate, patients, undiagnosed = gap_ratios(counts)["Black"]
    assert (patients, undiagnosed) == (100, 20)
    expected = 100 * 120 / 1100
    assert estimate.value == pytest.approx(20 / expected)
    # Garwood's exact 95% interval of 20 events is 12.22-30.89
    assert estimate.low == pytest.approx(12.217 / expected, rel=1e-3)
    assert estimate.high == pytest.approx(30.893 / expected, rel=1e-3)


def test_a_handful_of_patients_is_not_a_sure_excess():
    # 3 undiagnosed where 0.87 were expected (seed 3 'england', Other group, T2D)
    counts = pl.DataFrame({"group": ["White", "Other"], "stratum": [5, 5], "patients": [460, 15],
                           "undiagnosed": [23, 3]})
    estimate = gap_ratios(counts)["Other"][0]
    assert estimate.value > 3
    assert estimate.low < 1.25  # the gate's margin: it could be no excess at all


def _audit_with_gap(undiagnosed_black: int, family: str = "check", figure=None):
    from models.fairness import AuditSettings, judge
    from models.fairness._recording import add_gap_figures
    from tests.spec.test_fairness import run, simulate

    settings = AuditSettings(replicates=300, seed=1, family=family)
    audit = run(simulate(n=20_000, seed=4), settings)
    counts = pl.DataFrame({"group": ["White", "Asian", "Black"], "stratum": [3, 3, 3],
                           "patients": [1000, 300, 100], "undiagnosed": [100, 30, undiagnosed_black]})
    add_gap_figures(audit, counts, **({"figure": figure} if figure else {}))
    return judge(audit, settings, 0.05)


def test_the_gate_fails_a_group_whose_high_readings_go_undiagnosed_naming_the_label_choice_check():
    gate = _audit_with_gap(40)  # 40 undiagnosed where about 11 were expected
    failed = [f for f in gate.findings if f.level == "FAIL"]
    assert [(f.rule, f.group) for f in failed] == [("label choice (diagnosis gap)", "Black")]
    assert "go undiagnosed more often" in failed[0].message
    # as often as the others: no finding on that check
    assert not [f for f in _audit_with_gap(10).findings if f.rule == "label choice (diagnosis gap)"]


def test_each_check_is_its_own_family_unless_configured_otherwise():
    from models.fairness import AuditSettings

    per_check = _audit_with_gap(22)
    whole_run = _audit_with_gap(22, family="run")
    gap = [t for t in per_check.tests if t.check == "label choice (diagnosis gap)" and t.group == "Black"][0]
    gap_run = [t for t in whole_run.tests if t.check == "label choice (diagnosis gap)" and t.group == "Black"][0]
    assert gap.p_value == gap_run.p_value and gap.adjusted_p < gap_run.adjusted_p
    with pytest.raises(Exception, match="audit.family"):
        AuditSettings(family="everything").validate()


def test_the_gate_fails_a_group_treated_without_its_diagnosis_as_its_own_label_choice_check():
    from models.fairness import Figure

    gate = _audit_with_gap(40, figure=Figure.TREATED_UNDIAGNOSED)
    failed = [f for f in gate.findings if f.level == "FAIL"]
    assert [(f.rule, f.group) for f in failed] == [("label choice (treated, no diagnosis)", "Black")]
    assert "known and treated but not coded" in failed[0].message
    assert not [f for f in gate.findings if f.rule == "label choice (diagnosis gap)"]
    assert not [f for f in _audit_with_gap(10, figure=Figure.TREATED_UNDIAGNOSED).findings
                if f.rule.startswith("label choice (treated")]


def test_a_handful_of_patients_is_tested_exactly_as_its_interval_is():
    # seed 75 'england', no bias planted: 4 Mixed adults on antihypertensives with no code where about
    # 0.6 were expected. The normal test on the log scale, from the exact interval's width, made that a
    # sure excess over 1.25 among six groups and FAILed Mixed; the exact Poisson test does not
    import copy

    import numpy as np
    from scipy import stats

    from models.fairness import AuditSettings, Figure, judge
    from models.fairness._gate import _p_value, adjust
    from models.fairness._recording import add_gap_figures
    from tests.spec.test_fairness import run, simulate

    groups = ("White", "Asian", "Black", "Mixed", "Other", "Not stated")
    settings = AuditSettings(replicates=300, seed=1)
    base = run(simulate(n=20_000, seed=4, groups=groups, shares=(0.6, 0.15, 0.1, 0.05, 0.05, 0.05)), settings)

    def gate(mixed: int):
        audit = copy.deepcopy(base)
        add_gap_figures(audit, pl.DataFrame({"group": list(groups), "stratum": [3] * 6,
                                             "patients": [1000, 300, 100, 20, 100, 100],
                                             "undiagnosed": [30, 9, 3, mixed, 3, 3]}),
                        figure=Figure.TREATED_UNDIAGNOSED)
        tests = [t for t in judge(audit, settings, 0.05).tests if t.check == "label choice (treated, no diagnosis)"]
        return tests, [t.group for t in tests].index("Mixed")

    tests, i = gate(4)
    mixed = tests[i]
    assert (mixed.estimate.observed, mixed.estimate.value) == (4, pytest.approx(6.2, abs=0.1))
    lam = 1.25 * mixed.estimate.expected  # the most the margin allows
    assert mixed.p_value == pytest.approx(1 - np.exp(-lam) * (1 + lam + lam ** 2 / 2 + lam ** 3 / 6), rel=1e-9)
    normal = adjust(np.array([_p_value(t.log_value, t.se, t.side, t.margin) for t in tests]), "holm")
    assert normal[i] < 0.05 and mixed.shrunk > 1.25  # what the normal test made of it: a FAIL
    assert mixed.adjusted_p > 0.05 and mixed.verdict != "FAIL"
    # one more patient is a sure excess by the exact test too
    tests, i = gate(5)
    assert tests[i].verdict == "FAIL" and tests[i].p_value == pytest.approx(stats.poisson.sf(4, 1.25 * tests[i].estimate.expected))
