"""The gate study's judging of a run against the truth (models/fairness/truth.py, and the rates of
benchmarks/bench_gate_error_rates.py), on hand-made runs: no extract is generated."""

import importlib.util
from pathlib import Path

from models.fairness.truth import ScenarioRun, Tracking

NAN = float("nan")


def _study():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_gate_error_rates.py"
    spec = importlib.util.spec_from_file_location("bench_gate_error_rates", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(knobs: dict, black_recording: float, fails: list[dict]) -> ScenarioRun:
    tracking = [Tracking("cvd", "Black", 300, 1.0, 1.0, 1.0, black_recording),
                Tracking("cvd", "Asian", 300, 1.0, 1.0, 1.0, NAN)]
    return ScenarioRun(1, "england", "outcome under-recording" if knobs else "no bias", knobs,
                       {"cvd": {"status": "FAIL" if fails else "PASS", "fails": fails}}, tracking, 1.0)


BLACK_FAIL = [{"rule": "label choice (treated, no diagnosis)", "group": "Black"}]
PLANTED = {"outcome_recording": {"Black": 0.6}}


def test_a_planted_group_the_truth_cannot_measure_is_neither_harmed_nor_fair():
    run = _run(PLANTED, NAN, BLACK_FAIL)
    assert run.harmed("cvd") == [] and run.truth_cannot_judge("cvd") == ["Black"]
    summary = _study().rates([run])
    assert summary["false alarms"]["of"] == 0 and summary["sensitivity"]["of"] == 0
    unjudged = summary["truth cannot judge (recording planted, too few true cases)"]
    assert unjudged == {"outcome-runs": 1, "FAIL naming the planted group": 1, "any FAIL": 1}


def test_a_planted_group_the_truth_measures_is_judged_as_before():
    under_recorded, chance = _run(PLANTED, 1.6, BLACK_FAIL), _run(PLANTED, 1.1, BLACK_FAIL)
    assert under_recorded.harmed("cvd") == ["Black"] and under_recorded.truth_cannot_judge("cvd") == []
    assert chance.harmed("cvd") == [] and chance.truth_cannot_judge("cvd") == []
    summary = _study().rates([under_recorded, chance])
    assert summary["sensitivity"]["hits"] == 1 and summary["false alarms"] == {"share": 1.0, "of": 1, "hits": 1}


def test_without_a_planted_group_a_missing_recording_figure_is_not_an_excuse():
    run = _run({}, NAN, BLACK_FAIL)
    assert run.truth_cannot_judge("cvd") == []
    assert _study().rates([run])["false alarms"] == {"share": 1.0, "of": 1, "hits": 1}


def test_a_fail_naming_another_group_stops_the_list_but_does_not_name_the_harm():
    """Sensitivity counts an outcome-run the gate FAILs at all (the list is stopped); the stricter
    figure counts it only when a FAIL names a group the truth shows harmed (seed 31 `england`,
    measurement gap: hypertension harmed Black, the gate FAILed calibration for Asian)."""
    named = _run(PLANTED, 1.6, BLACK_FAIL)
    other = _run(PLANTED, 1.6, [{"rule": "calibration", "group": "Asian"}])
    summary = _study().rates([named, other])
    assert summary["sensitivity"] == {"share": 1.0, "of": 2, "hits": 2}
    assert summary["sensitivity, naming a harmed group"] == {"share": 0.5, "of": 2, "hits": 1}
