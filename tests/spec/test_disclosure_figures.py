"""Figures that would give a count of 1-7 back are withheld; figures from exact counts are published
from the rounded counts or to 3 significant figures (docs/fairness.md, "Disclosure control";
docs/dpia.md, section 6). Tiny hand-made tables, one route each, and one small audit end to end."""

from __future__ import annotations

import json
import math

import pytest

from models.fairness._audit import Count, Counts, Estimate, Figure, GroupResults
from models.fairness._gate import GateTest, judge
from models.fairness._quality import QualityRow
from models.fairness._recording import standardised_ratio
from models.fairness._report import AuditReport, _quality_json, group_json
from models.fairness._standard import SENSITIVITY, GroupComparison, StandardComparison
from phm.disclosure import WITHHELD, significant, small
from phm.ethnicity_dq import Figure as DQFigure
from tests.integration.test_leaks import count_leaks, observed_behind_exact_interval


def test_small_and_significant():
    assert [small(n) for n in (None, 0, 1, 7, 8, float("nan"))] == [False, False, True, True, False, False]
    assert significant(0.046143) == 0.0461 and significant(1.08979) == 1.09 and significant(1234.5) == 1230
    assert significant(float("nan")) is None and significant(None) is None


def _row(kind: str, counts: Counts, estimates: dict) -> GroupResults:
    return GroupResults(kind, {"group": "Black"}, counts, False, [], [], estimates)


def test_a_recording_ratio_on_1_to_7_observed_is_withheld_and_its_count_could_be_solved_back():
    """3 undiagnosed where 1.5 were expected: the exact interval's width alone names the 3."""
    few = standardised_ratio(3, 1.5)
    assert observed_behind_exact_interval(few.low, few.high) == 3  # the attack works on the exact figure
    row = _row("selection", Counts(patients=400, selected=40, high_need=90, selected_high_need=40),
               {(None, Figure.DIAGNOSIS_GAP): few})
    assert group_json(row, 1000)["figures"]["diagnosis_gap"] is None
    enough = _row("selection", Counts(patients=400, selected=40, high_need=90, selected_high_need=40),
                  {(None, Figure.DIAGNOSIS_GAP): standardised_ratio(12, 6.123)})
    shown = group_json(enough, 1000)["figures"]["diagnosis_gap"]
    assert shown == {k: significant(v) for k, v in standardised_ratio(12, 6.123).as_dict().items()}


def test_need_adjusted_selection_is_from_the_rounded_counts():
    """(41 / 398) / (23 / 203) at 5 decimals names 41, 398, 23 and 203; from the rounded counts it is
    (40 / 400) / (25 / 205)."""
    exact = (41 / 398) / (23 / 203)
    row = _row("performance", Counts(patients=403, events=23, selected=41, true_positives=12, missed=11),
               {(None, Figure.NEED_ADJUSTED_SELECTION): Estimate(exact, exact * 0.8, exact * 1.2),
                (None, Figure.OBSERVED_EXPECTED): Estimate(23 / 19.87, 0.7, 1.6, 23.0, 19.87)})
    data = group_json(row, 2000, population_counts={Count.SELECTED: 400, Count.EVENTS: 205})
    shown = data["figures"]["need_adjusted_selection"]
    assert shown["value"] == significant((40 / 400) / (25 / 205))
    assert shown["low"] == pytest.approx(shown["value"] * 0.8, rel=0.01)
    assert data["figures"]["observed_expected"]["value"] == 1.16  # 3 significant figures
    # a secondary suppression of the outcomes withholds what rests on them
    hidden = group_json(row, 2000, {"events"}, population_counts={Count.SELECTED: 400, Count.EVENTS: 205})
    assert hidden["figures"]["need_adjusted_selection"] is None and hidden["figures"]["observed_expected"] is None


def test_measurement_completeness_is_a_mean_withheld_under_100_patients():
    row = GroupResults("selection", {"group": "Other"}, Counts(patients=60, selected=10), False, [], [],
                       {(None, Figure.MEASUREMENT_COMPLETENESS): Estimate(0.725, 0.6, 0.8)})
    assert group_json(row, 1000)["figures"]["measurement_completeness"] is None


def test_ethnicity_shares_are_the_rounded_counts_over_the_rounded_patients():
    row = QualityRow("practice", "P1", 1003, {"recorded": 803, "not_known_99": 6},
                     {"recorded": (803 / 1003, 0.77, 0.82), "not_known_99": (6 / 1003, 0.002, 0.01)})
    shares = _quality_json(row)["shares"]
    assert shares["recorded"]["value"] == round(805 / 1005, 4) and shares["not_known_99"] is None
    figure = DQFigure(803, 1003).published()
    assert figure["value"] == round(805 / 1005, 4)
    assert (figure["low"], figure["high"]) == tuple(round(x, 4) for x in DQFigure(805, 1005).interval())


def test_do_no_harm_withholds_a_group_with_1_to_7_true_positives_and_rounds_the_others():
    few = GroupComparison("Not known", 180, 8, True, {SENSITIVITY: {"model": 3 / 8, "standard": 3 / 8, "difference": 0.0,
                                                                   "low": -0.1, "high": 0.1, "p": 0.5}},
                          worse=[SENSITIVITY], true_positives={"model": 3, "standard": 3})
    large = GroupComparison("White", 845, 39, True, {SENSITIVITY: {"model": 14 / 39, "standard": 15 / 39,
                                                                  "difference": -1 / 39, "low": -0.18, "high": 0.107,
                                                                  "p": 0.4381}},
                            true_positives={"model": 14, "standard": 15})
    assert few.withheld and few.as_dict()["figures"] == {} and few.as_dict()["withheld_reason"] == WITHHELD
    shown = large.as_dict()["figures"][SENSITIVITY]
    assert (shown["model"], shown["standard"]) == (round(15 / 40, 4), round(15 / 40, 4))
    assert shown["p"] == 0.438
    reasons = StandardComparison("cvd", "QRISK3-2017", [few, large]).reasons()
    assert reasons and WITHHELD in reasons[0] and "0.375" not in reasons[0]


def test_a_withheld_gate_test_keeps_its_verdict_and_publishes_no_figure():
    t = GateTest("cvd", "Other", "calibration", "both", (0.8, 1.25), Estimate(2.34762, 0.59898, 5.06009, 4.0, 1.7),
                 shrunk=1.2274, p_value=0.26, adjusted_p=1.0, detectable=0.1741, verdict="WARN", withheld=True)
    published = t.published()
    assert published["verdict"] == "WARN" and published["withheld"]
    assert all(published[k] is None for k in ("estimate", "shrunk", "p_value", "adjusted_p_value",
                                              "minimum_detectable_ratio"))
    assert t.as_dict()["estimate"]["value"] == 2.34762  # in memory (the gate, the truth study) it is exact
    t.withheld = False
    assert t.published()["estimate"] == {"value": 2.35, "low": 0.599, "high": 5.06}


def test_a_small_audit_publishes_nothing_that_gives_a_count_back(tmp_path):
    """A group of about a dozen patients with a handful of outcomes: its tests are withheld in the
    JSON and HTML, its findings state no figure, and the verdicts are the gate's own."""
    from models.fairness import ethnicity_quality
    from tests.spec.test_fairness import FAST, run, simulate

    frame = simulate(n=4000, seed=5, groups=("White", "Asian", "Black", "Other"), shares=(0.85, 0.1, 0.047, 0.003))
    audit = run(frame)
    gate = judge(audit, FAST, 0.05)
    withheld = [t for t in gate.tests if t.withheld]
    assert withheld and all(t.group in ("Other", "Black") for t in withheld)
    assert all(math.isfinite(t.p_value) for t in withheld)  # judged all the same
    report = AuditReport("Test audit", FAST, [audit], [gate], ethnicity_quality(frame.select("group")), {},
                         {"test": {"model": "m"}})
    json_path, html_path = report.write(tmp_path)
    data = json.loads(json_path.read_text())
    assert count_leaks(data) == []
    assert [t["verdict"] for t in data["gate"]["outcomes"]["test"]["tests"]] == [t.verdict for t in gate.tests]
    assert WITHHELD in html_path.read_text()
    for f in gate.findings:
        if any(t.withheld and (t.check, t.group) == (f.rule, f.group) for t in gate.tests):
            assert "95% CI" not in f.message and WITHHELD in f.message


def test_a_validation_with_1_to_7_outcomes_logs_no_figure_to_mlflow():
    """An AUROC is a count of pairs over outcomes x non-outcomes, an O/E the outcomes over a sum of
    risks: with 1-7 outcomes either gives the count back."""
    from models.metrics import Validation
    from models.tracking import comparison_markdown, validation_metrics

    few = Validation(400, 5, 0.8, 0.7, 0.9, 0.01, 1.0, 0.0, 1.1, 0.5, 2.0)
    enough = Validation(400, 40, 0.8, 0.7, 0.9, 0.01, 1.0, 0.0, 1.1, 0.9, 1.3)
    assert validation_metrics("val", few) == {} and validation_metrics("val", enough)["val_auroc"] == 0.8
    row = {"outcome": "cvd", "model": "m", "patients": "400", "events": "[suppressed]",
           **{k: None for k in ("auroc", "auroc_ci_low", "auroc_ci_high", "brier", "calibration_slope",
                                "calibration_intercept", "observed_expected", "observed_expected_ci_low",
                                "observed_expected_ci_high")}}
    assert WITHHELD in comparison_markdown([row])
