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


def test_the_offsets_table_averages_the_runs_without_planted_recording_for_model_and_standard():
    def run(scenario: str, model: float, standard: float) -> ScenarioRun:
        return ScenarioRun(1, "england", scenario, {}, {"t2d": {"status": "PASS", "fails": []}},
                           [Tracking("t2d", "Black", 120, 1.0, 1.0, model, NAN)], 1.0, [],
                           [{"outcome": "t2d", "group": "Black", "patients": 120, "true_risk_at_same_score": standard}])

    runs = [run("no bias", 1.1, 1.0), run("measurement-access gap", 1.3, 1.1),
            run("outcome under-recording", 2.0, 2.0)]  # planted recording: harm by design, left out
    table = _study().same_score_offsets(runs)
    assert "| t2d | england | Black | 2 | 1.200 | 1 | 1.050 | 0 |" in table.splitlines()


def test_the_truths_statistic_at_the_same_score_is_true_over_expected_within_decile_and_age_band():
    import polars as pl

    from models.fairness.truth import _at_same_score

    # one age band; scores 1..20: deciles 0..9, two patients each; the upper half is deciles 5-9
    # (scores 11-20). In each decile the White patient has the lower score; expected is in
    # proportion to the score within the decile, so each decile's true risk is shared 2k-1 : 2k.
    scores = [float(s) for s in range(1, 21)]
    groups = ["White" if s % 2 else "Black" for s in range(1, 21)]
    rows = pl.DataFrame({"score": scores, "ethnicity_group": groups, "age_years": [50] * 20,
                         "true": [0.1 if g == "White" else 0.3 for g in groups]})
    result = _at_same_score(rows, "score", min_patients=1)
    upper = [(2 * k - 1, 2 * k) for k in range(6, 11)]
    expected = sum(0.4 * b / (a + b) for a, b in upper)
    assert set(result) == {"Black"}  # White is the reference, never reported
    assert result["Black"][0] == 5 and abs(result["Black"][1] - 0.3 * 5 / expected) < 1e-12
    assert _at_same_score(rows, "score", min_patients=6) == {}


def _truth(groups: dict[str, tuple[int, int]]) -> tuple:
    """A hand-made truth with only CVD events: group -> (true events, of which coded)."""
    import polars as pl

    rows = [(f"{g}{i}", g, True, i < coded) for g, (events, coded) in groups.items() for i in range(events)]
    truth = pl.DataFrame(rows, schema=["patient_id", "true_group", "cvd_event", "cvd_event_recorded"], orient="row")
    truth = truth.with_columns(*(pl.lit(False).alias(c) for c in (
        "t2d_true_at_extract", "t2d_coded_by_extract", "hypertension_true_at_extract", "hypertension_coded_by_extract")))
    return truth.select("patient_id"), truth


def test_cvd_recording_is_judged_on_the_scale_of_the_other_outcomes_uncoded_over_whites():
    from models.fairness.truth import true_under_recording

    # Black CVD events coded at 80% where White's are at 98% (2 of 100 happened after the patient
    # left): 20% uncoded against 2%, 10 times; White's share coded over Black's would be 1.225, under
    # the margin, though T2D and hypertension coded at 80% are judged harmed
    registered, truth = _truth({"White": (100, 98), "Black": (40, 32), "Asian": (40, 39)})
    out = true_under_recording(registered, truth)
    assert abs(out[("cvd", "Black")] - 10.0) < 1e-9 and abs(out[("cvd", "Asian")] - 1.25) < 1e-9
    assert Tracking("cvd", "Black", 300, 1.0, 1.0, 1.0, out[("cvd", "Black")]).harmed()
    # every White event coded: any uncoded Black event is worse without bound, none is no worse
    registered, truth = _truth({"White": (100, 100), "Black": (40, 39), "Asian": (40, 40)})
    out = true_under_recording(registered, truth)
    assert out[("cvd", "Black")] == float("inf") and out[("cvd", "Asian")] == 1.0
    # fewer than 30 true events: the truth cannot measure the group
    registered, truth = _truth({"White": (100, 98), "Black": (29, 10)})
    assert ("cvd", "Black") not in true_under_recording(registered, truth)


def test_sensitivity_is_told_by_how_far_past_its_line_the_truth_s_harm_is():
    """A harm just past its line (true risk 1.3x the expected at the same score: 1.04x the 1.25
    line) is counted apart from one well past it (recording 2.0x White's: 1.6x the line), and the
    tracking's line is read the other way (0.6 against 0.75: 1.25x)."""
    near = ScenarioRun(1, "england", "no bias", {}, {"t2d": {"status": "PASS", "fails": []}},
                       [Tracking("t2d", "Black", 80, 1.0, 1.0, 1.3, NAN)], 1.0)
    far = _run(PLANTED, 2.0, BLACK_FAIL)
    tracked = ScenarioRun(2, "england", "no bias", {}, {"cvd": {"status": "FAIL", "fails": BLACK_FAIL}},
                          [Tracking("cvd", "Black", 400, 0.6, 1.0, 1.0, NAN)], 1.0)
    assert round(near.harm_size("t2d"), 3) == 1.04 and round(far.harm_size("cvd"), 3) == 1.6
    assert round(tracked.harm_size("cvd"), 3) == 1.25
    assert _run({}, 2.0, []).harm_size("cvd") == 0.0  # recording not planted: chance, no harm
    rows = _study().by_harm_size([near, far, tracked])
    assert [(r["harmed"], r["failed"]) for r in rows] == [(1, 0), (0, 0), (1, 1), (1, 1)]
    assert "| 1.0-1.1x | 1 | 0 | 0% |" in _study().harm_size_table(rows)


def test_a_group_the_model_gives_no_risk_at_all_is_harmed_without_dividing_by_zero():
    nothing = Tracking("t2d", "Black", 300, 0.0, 1.5, 1.0, NAN)
    assert nothing.harmed() and nothing.harm_size() == float("inf")
    assert not Tracking("t2d", "Black", 300, 1.0, 1.0, NAN, NAN).harmed()  # figures missing: no harm claimed


def test_the_truths_need_counts_hypertension_present_at_t0_as_had_and_reads_diabetes_as_its_chance():
    """Four validation patients (none diagnosed at T0): an onset risk of 0.1, a condition already
    present (the generator's onset risk is 0 for it), a dead or unregistered row with no figures,
    and one with both. Hypertension counts the present condition as 1 (systolic 140 or more: the
    state itself); type 2 diabetes reads the generator's expected need, whatever the draw gave;
    CVD is an event, read as the horizon risk alone. The realised key (``--key need``) counts the
    diabetes drawn at T0 as 1."""
    import polars as pl

    from models.fairness.truth import true_need_horizon

    truth = pl.DataFrame({
        "true_risk_cvd_horizon": [0.1, 0.0, None, 0.2], "true_risk_t2d_horizon": [0.1, 0.0, None, 0.2],
        "true_risk_htn_horizon": [0.1, 0.0, None, 0.2],
        "t2d_true_past_index": [False, True, None, True], "hypertension_true_past_index": [False, True, None, False],
        "t2d_expected_need_horizon": [0.15, 0.3, None, 0.25],
    })
    need = truth.select(*(true_need_horizon(o).alias(o) for o in ("cvd", "t2d", "hypertension")))
    assert need["cvd"].to_list() == [0.1, 0.0, 0.0, 0.2]
    assert need["t2d"].to_list() == [0.15, 0.3, 0.0, 0.25]
    assert need["hypertension"].to_list() == [0.1, 1.0, 0.0, 0.2]
    with _study().answer_key("need"):
        assert truth.select(true_need_horizon("t2d")).to_series().to_list() == [0.1, 1.0, 0.0, 1.0]


def test_the_truths_need_now_counts_a_condition_present_and_uncoded_as_had():
    """At the extract date: a 10-year risk of 0.2, an undiagnosed condition whose onset model gave
    0.7, and a row with no figures (too young for the 10-year risk). T2D and hypertension count the
    present condition as 1; CVD reads the 10-year risk alone."""
    import polars as pl

    from models.fairness.truth import true_need_now

    truth = pl.DataFrame({
        "true_risk_cvd_10y_at_extract": [0.2, 0.7, None], "true_risk_t2d_10y_at_extract": [0.2, 0.7, None],
        "true_risk_htn_10y_at_extract": [0.2, 0.7, None],
        "t2d_true_at_extract": [False, True, None], "hypertension_true_at_extract": [False, True, True],
    })
    need = truth.select(*(true_need_now(o).alias(o) for o in ("cvd", "t2d", "hypertension")))
    assert need["cvd"].to_list() == [0.2, 0.7, 0.0]
    assert need["t2d"].to_list() == [0.2, 1.0, 0.0]
    assert need["hypertension"].to_list() == [0.2, 1.0, 1.0]


def test_the_onset_and_need_keys_read_the_risk_or_the_draw_and_the_expected_key_comes_back_after():
    import polars as pl
    import pytest

    import models.fairness.truth as truth

    patients = pl.DataFrame({"true_risk_t2d_horizon": [0.02, 0.03], "t2d_true_past_index": [True, False],
                             "t2d_expected_need_horizon": [0.2, 0.05],
                             "true_risk_t2d_10y_at_extract": [0.9, 0.1], "t2d_true_at_extract": [True, False]})

    def needs() -> tuple[list, list]:
        return (patients.select(truth.true_need_horizon("t2d")).to_series().to_list(),
                patients.select(truth.true_need_now("t2d")).to_series().to_list())

    study = _study()
    assert needs() == ([0.2, 0.05], [1.0, 0.1])
    with study.answer_key("onset"):
        assert needs() == ([0.02, 0.03], [0.9, 0.1])
    assert needs() == ([0.2, 0.05], [1.0, 0.1])
    with pytest.raises(RuntimeError), study.answer_key("onset"):
        raise RuntimeError("a run that cannot be judged")
    assert needs() == ([0.2, 0.05], [1.0, 0.1])
    with study.answer_key("need"):
        assert needs() == ([1.0, 0.03], [1.0, 0.1])
    with study.answer_key("expected"):
        assert needs() == ([0.2, 0.05], [1.0, 0.1])
    with pytest.raises(ValueError, match="expected, need or onset"), study.answer_key("prevalence"):
        pass


def test_a_saved_study_is_judged_as_it_was_run_even_just_past_a_line(tmp_path):
    """A statistic of 1.2504 at the same score, and a tracking of 0.7496, are harms; the study's
    JSON, which --summarise and --judge-again read back, must keep them harms (at three decimals
    the first was stored as 1.25, under the line)."""
    import json

    near = ScenarioRun(175, "england", "measurement-access gap", {}, {"t2d": {"status": "WARN", "fails": []}},
                       [Tracking("t2d", "Black", 133, 1.0, 1.0, 1.2504, NAN),
                        Tracking("t2d", "Asian", 262, 0.7496, 1.0, 1.0, NAN)], 1.0)
    assert near.harmed("t2d") == ["Black", "Asian"]
    saved = tmp_path / "study.json"
    saved.write_text(json.dumps({"runs_detail": [near.as_dict()]}))
    (again,) = _study().from_json(saved)
    assert again.harmed("t2d") == ["Black", "Asian"]


def test_a_replayed_audits_copy_of_the_mlflow_store_writes_nothing_into_the_kept_run(tmp_path):
    """replay_audit copies a kept run's MLflow store; the store's own paths (artifact locations,
    model sources) must then point at the copy, or the replayed audit's artifacts land in the kept
    run. Every text column holding the original folder is pointed at the copy; nothing else moves."""
    import sqlite3

    from models.fairness.truth import _point_store_at

    original, copy = tmp_path / "kept" / "mlflow", tmp_path / "scratch" / "mlflow"
    copy.mkdir(parents=True)
    con = sqlite3.connect(copy / "mlflow.db")
    con.execute("create table experiments (experiment_id integer, artifact_location varchar(256), name text)")
    con.execute("create table model_versions (version integer, source varchar(500))")
    con.executemany("insert into experiments values (?, ?, ?)", [
        (1, f"file://{original.resolve()}/artifacts", "phm fairness QXX"), (2, "s3://elsewhere/artifacts", "other")])
    con.execute("insert into model_versions values (1, ?)", (f"{original.resolve()}/artifacts/models/m-1",))
    con.commit()
    con.close()

    _point_store_at(copy, original)

    con = sqlite3.connect(copy / "mlflow.db")
    assert con.execute("select artifact_location, name from experiments order by experiment_id").fetchall() == [
        (f"file://{copy.resolve()}/artifacts", "phm fairness QXX"), ("s3://elsewhere/artifacts", "other")]
    assert con.execute("select source from model_versions").fetchall() == [(f"{copy.resolve()}/artifacts/models/m-1",)]
    con.close()


def _seen(tracking: Tracking, evidence: list[dict], fails: list[dict]) -> ScenarioRun:
    return ScenarioRun(1, "england", "no bias", {}, {tracking.outcome: {
        "status": "FAIL" if fails else "PASS", "fails": fails, "evidence": evidence}}, [tracking], 1.0)


def test_a_harm_the_data_can_see_is_one_at_least_the_smallest_effect_the_gate_stated_for_its_check():
    """Issue 22's promise: no list leaves when the model under-serves a group "that the data can
    see". The study counts apart the harms at least the smallest effect the gate says its check
    could detect for the group (80% power, the report's minimum detectable ratio): a true risk
    1.3 times the expected at the same score is seen by a label-choice test with standard error
    0.01 (it detects 1.28) and not by one with 0.3 (2.64); under-rating to 0.6 of the truth's ratio
    (1.67 the other way) by calibration with 0.1 (two-sided: 1.65) and not with 0.2 (2.19); a
    group the gate did not test could show nothing."""
    from models.fairness._gate import _detectable
    from models.fairness.truth import detectable_ratio

    assert detectable_ratio("label choice", 0.3) == _detectable(0.3, "above", (0.8, 1.25), 0.05, 0.8)
    assert round(detectable_ratio("label choice", 0.01), 2) == 1.28
    assert round(detectable_ratio("label choice", 0.3), 2) == 2.64
    assert round(detectable_ratio("calibration", 0.1), 2) == 1.65
    assert round(detectable_ratio("calibration", 0.2), 2) == 2.19

    near = Tracking("t2d", "Black", 120, 1.0, 1.0, 1.3, NAN)
    under = Tracking("cvd", "Black", 400, 0.6, 1.0, 1.0, NAN)
    seen = _seen(near, [{"check": "label choice", "group": "Black", "se": 0.01}], [])
    unseen = _seen(near, [{"check": "label choice", "group": "Black", "se": 0.3}], [])
    # the check that looks for the harm decides, not another check's standard error
    other_check = _seen(near, [{"check": "calibration", "group": "Black", "se": 0.01}], [])
    calibrated = _seen(under, [{"check": "calibration", "group": "Black", "se": 0.1}], BLACK_FAIL)
    too_wide = _seen(under, [{"check": "calibration", "group": "Black", "se": 0.2}], [])
    untested = _seen(under, [], [])
    assert seen.visible("t2d") == ["Black"] and unseen.visible("t2d") == [] and other_check.visible("t2d") == []
    assert calibrated.visible("cvd") == ["Black"] and too_wide.visible("cvd") == [] and untested.visible("cvd") == []
    fair = _seen(Tracking("t2d", "Black", 120, 1.0, 1.0, 1.1, NAN), [{"check": "label choice", "group": "Black", "se": 0.01}], [])
    assert fair.visible("t2d") == []  # no harm: nothing to see

    summary = _study().rates([seen, unseen, other_check, calibrated, too_wide, untested, fair])
    assert summary["sensitivity"] == {"share": round(1 / 6, 3), "of": 6, "hits": 1}
    assert summary["sensitivity, harms the data can see"] == {"share": 0.5, "of": 2, "hits": 1}
    assert "| any check, harms at least the smallest effect the gate stated it could detect | 50% (1/2) | |" in \
        _study().table(summary)


def test_planted_under_recording_is_seen_by_the_most_sensitive_recording_check_or_the_pooled_one():
    planted = {"outcome_recording": {"Black": 0.6}}
    harm = Tracking("hypertension", "Black", 300, 1.0, 1.0, 1.0, 1.8)

    def run(evidence: list[dict], pooled: list[dict]) -> ScenarioRun:
        return ScenarioRun(1, "england", "outcome under-recording", planted, {"hypertension": {
            "status": "PASS", "fails": [], "recording_evidence": evidence, "pooled_recording": pooled}}, [harm], 1.0)

    wide = {"check": "label choice (diagnosis gap)", "group": "Black", "se": 0.5}  # detects 4.33
    narrow = {"check": "label choice (treated, no diagnosis)", "group": "Black", "se": 0.1}  # 1.60
    assert run([wide], []).visible("hypertension") == []
    assert run([wide, narrow], []).visible("hypertension") == ["Black"]
    assert run([wide], [{"group": "Black", "minimum_detectable_ratio": 1.7}]).visible("hypertension") == ["Black"]
    # not planted, a recording statistic is chance, not harm (Tracking.harmed): nothing to see
    chance = ScenarioRun(1, "england", "no bias", {}, {"hypertension": {
        "status": "PASS", "fails": [], "recording_evidence": [wide, narrow]}}, [harm], 1.0)
    assert chance.visible("hypertension") == []


def _named(findings: list[dict], ranks_list: str = "model", published: list[dict] | None = None) -> ScenarioRun:
    gate = {"status": "WARN", "fails": [], "named": sorted({f["group"] for f in findings}), "findings": findings,
            "ranks_list": ranks_list}
    return ScenarioRun(1, "england", "no bias", {}, {"t2d": gate}, [], 1.0, published or [])


def test_a_group_named_only_as_too_small_or_for_its_measurement_gap_is_not_named_for_its_rating():
    """The truth test asks that an under-rated group be named by one of the gate's checks: a note
    that the group is too small to judge alone says nothing about its ranking."""
    run = _named([{"level": "WARN", "rule": "too small to judge", "group": "Black"},
                  {"level": "WARN", "rule": "measurement gap", "group": "Mixed"},
                  {"level": "WARN", "rule": "calibration", "group": "Asian"},
                  {"level": "FAIL", "rule": "label choice (recording, pooled over outcomes)", "group": "Other"}])
    assert run.gates["t2d"]["named"] == ["Asian", "Black", "Mixed", "Other"]
    assert run.named_for_rating("t2d") == ["Asian", "Other"]


def test_a_run_saved_before_findings_were_recorded_is_read_from_its_tests_verdicts():
    gate = {"status": "WARN", "fails": [], "named": ["Asian", "Black"], "ranks_list": "model",
            "evidence": [{"check": "calibration", "group": "Black", "verdict": "PASS"},
                         {"check": "calibration", "group": "Asian", "verdict": "WARN"}],
            "recording_evidence": [], "pooled_recording": []}
    run = ScenarioRun(1, "england", "no bias", {}, {"t2d": gate}, [], 1.0)
    assert run.named_for_rating("t2d") == ["Asian"]


def test_the_ranking_judged_is_the_one_that_ranks_the_list():
    published = [{"outcome": "t2d", "group": "Black", "patients": 900, "tracks": 0.6,
                  "standard_patients": 880, "standard_tracks": 0.97}]
    by_model = _named([], "model", published).ranking_tracks("t2d")
    by_standard = _named([], "QDiabetes-2018", published).ranking_tracks("t2d")
    assert by_model == [{"group": "Black", "patients": 900, "tracks": 0.6, "ranked_by": "model"}]
    assert by_standard == [{"group": "Black", "patients": 880, "tracks": 0.97, "ranked_by": "QDiabetes-2018"}]
    # a validated score ranking a run saved before its own tracking was recorded: nothing to judge
    assert _named([], "QDiabetes-2018", [{k: v for k, v in published[0].items()
                                          if not k.startswith("standard")}]).ranking_tracks("t2d") == []
