"""Spec tests for the fairness audit on small hand-made and simulated tables.

Each figure is checked against an independent computation (scikit-learn, fairlearn, a plain
patient-level bootstrap, hand arithmetic); each gate rule is triggered by a table built to break
it, and left alone by one that does not.
"""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import precision_score, roc_auc_score

from flows.config import load_config
from models.fairness import (
    FIGURES_SCHEMA,
    GROUPS_SCHEMA,
    AuditSettings,
    Compared,
    Figure,
    Override,
    SignOff,
    audit_score,
    ethnicity_quality,
    judge,
)
from models.fairness._metrics import binned_auroc, binned_calibration_slope, wilson_interval
from models.fairness._report import AuditReport
from models.hazard import risk_while_followed
from models.metrics import calibration_slope
from phm.exceptions import ConfigError

FAST = AuditSettings(replicates=300, seed=1)


def simulate(n=20_000, seed=0, groups=("White", "Asian", "Black"), shares=(0.7, 0.2, 0.1),
             under_predicted: dict[str, float] | None = None, slope: float = 1.0) -> pl.DataFrame:
    """Patients with a true risk, an outcome drawn from it, and a score: the true risk, made
    too extreme by ``slope`` < 1, and divided by ``under_predicted[group]`` for some groups."""
    rng = np.random.default_rng(seed)
    group = rng.choice(np.array(groups), size=n, p=np.array(shares))
    lp = rng.normal(-3, 1, n)
    risk = 1 / (1 + np.exp(-lp))
    outcome = rng.random(n) < risk
    score_lp = lp / slope
    for g, factor in (under_predicted or {}).items():
        score_lp = np.where(group == g, score_lp - np.log(factor), score_lp)
    score = 1 / (1 + np.exp(-score_lp))
    sex = rng.choice(np.array(["female", "male"]), size=n)
    imd = rng.integers(1, 6, n)
    need = rng.poisson(1 + 3 * risk)
    frame = pl.DataFrame({"group": group, "sex": sex, "imd_quintile": imd, "score": score,
                          "outcome": outcome.astype(np.int8), "need": need})
    threshold = float(np.quantile(score, 0.9))
    return frame.with_columns((pl.col("score") >= threshold).alias("selected"))


def run(frame: pl.DataFrame, settings: AuditSettings = FAST, high_need_from: int = 2):
    threshold = float(frame.filter(pl.col("selected"))["score"].min())
    columns = ["group", "imd_quintile", "sex", "score", "selected"]
    return audit_score("test", frame.select(*columns, "outcome"), frame.select(*columns, "need"), threshold,
                       settings, high_need_from)


def ethnicity(audit, kind="performance"):
    return {g.labels["group"]: g for g in audit.by_group("ethnicity", kind)}


# --- single figures -------------------------------------------------------------------------

def test_wilson_interval_matches_the_published_example():
    # Newcombe (1998), table I: 81/263 -> 0.2553 to 0.3662
    low, high = wilson_interval(81, 263)
    assert low == pytest.approx(0.2553, abs=5e-4) and high == pytest.approx(0.3662, abs=5e-4)
    low, high = wilson_interval(0, 10)
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(0.2775, abs=5e-4)


@pytest.fixture(scope="module")
def plain():
    frame = simulate()
    return frame, run(frame)


def test_counts_and_rates_are_exact(plain):
    frame, audit = plain
    for name, row in ethnicity(audit).items():
        part = frame.filter(pl.col("group") == name)
        assert row.counts.patients == part.height
        assert row.counts.events == part["outcome"].sum()
        assert row.figure(Figure.OUTCOME_RATE).value == pytest.approx(part["outcome"].mean())
        assert row.figure(Figure.MEAN_PREDICTED_RISK).value == pytest.approx(part["score"].mean())
        assert row.figure(Figure.OBSERVED_EXPECTED).value == pytest.approx(part["outcome"].sum() / part["score"].sum())


def test_operating_point_figures_equal_fairlearn_metricframe(plain):
    from fairlearn.metrics import (
        MetricFrame,
        false_negative_rate,
        selection_rate,
        true_positive_rate,
    )

    frame, audit = plain
    y, predicted = frame["outcome"].to_numpy(), frame["selected"].cast(pl.Int8).to_numpy()
    metric_frame = MetricFrame(
        metrics={"selection_rate": selection_rate, "sensitivity": true_positive_rate,
                 "false_negative_rate": false_negative_rate,
                 "ppv": lambda t, p: precision_score(t, p, zero_division=0)},
        y_true=y, y_pred=predicted, sensitive_features=frame["group"].to_numpy())
    ours = ethnicity(audit)
    for group, values in metric_frame.by_group.iterrows():
        for name, value in values.items():
            assert ours[group].figure(name).value == pytest.approx(value), (group, name)


def test_binned_auroc_and_slope_agree_with_patient_level_figures(plain):
    frame, audit = plain
    for name, row in ethnicity(audit).items():
        part = frame.filter(pl.col("group") == name)
        assert row.figure(Figure.AUROC).value == pytest.approx(roc_auc_score(part["outcome"], part["score"]), abs=0.005)
        slope = calibration_slope(part["outcome"].to_numpy(), part["score"].to_numpy())
        assert row.figure(Figure.CALIBRATION_SLOPE).value == pytest.approx(slope, abs=0.03)


def test_calibration_slope_sees_scores_that_are_too_extreme():
    audit = run(simulate(slope=0.6))
    assert ethnicity(audit)["White"].figure(Figure.CALIBRATION_SLOPE).value == pytest.approx(0.6, abs=0.08)


def test_the_auroc_and_slope_shortcuts_keep_the_plain_arithmetic_to_the_last_bit():
    # the AUROC's pairs as two dot products: exact for whole-number counts, as the per-bin sum is
    rng = np.random.default_rng(7)
    positives = rng.poisson(4, (30, 5, 200)) * (rng.random((30, 5, 200)) < 0.6).astype(float)
    negatives = rng.poisson(60, (30, 5, 200)) * (rng.random((30, 5, 200)) < 0.8).astype(float)
    below = np.cumsum(negatives, axis=-1) - negatives
    plain = (positives * (below + 0.5 * negatives)).sum(axis=-1) / (positives.sum(axis=-1) * negatives.sum(axis=-1))
    assert binned_auroc(positives, negatives).tobytes() == plain.tobytes()
    # the slope of a row is the same taken alone as among rows without both outcomes (which never
    # enter the iteration, and have none)
    total = rng.poisson(30, (24, 50)) * (rng.random((24, 50)) < 0.7).astype(float)
    risk = np.clip(np.sort(rng.beta(1, 12, (24, 50)), axis=-1), 1e-7, 1 - 1e-7)
    events = rng.binomial(total.astype(int), np.minimum(1, risk * rng.uniform(0.6, 1.5, (24, 1)))).astype(float)
    events[::5] = 0  # no events
    events[1::7] = total[1::7]  # no non-events
    x = np.where(total > 0, np.log(risk / (1 - risk)), 0.0)
    together = binned_calibration_slope(x, events, total)
    alone = np.array([binned_calibration_slope(x[i:i + 1], events[i:i + 1], total[i:i + 1])[0] for i in range(24)])
    assert together.tobytes() == alone.tobytes()
    assert np.isnan(together[::5]).all() and np.isnan(together[1::7]).all() and np.isfinite(together[2:5]).all()


def test_the_bootstrap_on_two_threads_gives_what_one_thread_gives_to_the_last_bit(monkeypatch):
    from models.fairness import _audit

    # four chunks of replicates (50 each): two threads, each computing two (see _audit._in_order)
    frame, settings = simulate(n=2000, seed=5), AuditSettings(replicates=200, seed=1)
    monkeypatch.setattr(_audit, "BOOTSTRAP_THREADS", 1)
    one = run(frame, settings)
    monkeypatch.setattr(_audit, "BOOTSTRAP_THREADS", 2)
    two = run(frame, settings)
    for a, b in ((one.figures, two.figures), (one.groups, two.groups)):
        assert a.schema == b.schema and a.height == b.height
        for column in a.columns:
            if a[column].dtype == pl.Float64:
                assert a[column].to_numpy().tobytes() == b[column].to_numpy().tobytes(), column
            else:
                assert a[column].to_list() == b[column].to_list(), column


def test_cell_bootstrap_intervals_match_a_patient_level_bootstrap(plain):
    frame, audit = plain
    part = frame.filter(pl.col("group") == "Black")
    y, p = part["outcome"].to_numpy(), part["score"].to_numpy()
    rng = np.random.default_rng(3)
    replicates = []
    for _ in range(1000):
        i = rng.integers(0, y.size, y.size)
        replicates.append(y[i].sum() / p[i].sum())
    low, high = np.percentile(replicates, [2.5, 97.5])
    ours = ethnicity(audit)["Black"].figure(Figure.OBSERVED_EXPECTED)
    assert ours.low == pytest.approx(low, rel=0.08) and ours.high == pytest.approx(high, rel=0.08)


def test_ratios_are_against_the_reference_in_the_same_stratum(plain):
    _, audit = plain
    black = audit.find("ethnicity x imd quintile", group="Black", imd_quintile="3")
    white = audit.find("ethnicity x imd quintile", group="White", imd_quintile="3")
    expected = black.figure(Figure.SENSITIVITY).value / white.figure(Figure.SENSITIVITY).value
    assert black.ratio_to_reference(Figure.SENSITIVITY).value == pytest.approx(expected)
    assert white.ratio_to_reference(Figure.SENSITIVITY).value == pytest.approx(1.0)
    # the frame says the same
    row = audit.figures.filter((pl.col("grouping") == "ethnicity x imd quintile") & (pl.col("group") == "Black")
                               & (pl.col("imd_quintile") == "3") & (pl.col("figure") == Figure.SENSITIVITY))
    assert row[Compared.RATIO_TO_REFERENCE].item() == pytest.approx(expected)
    assert audit.ratio_to_reference(Figure.SENSITIVITY)["White"].value == pytest.approx(1.0)


def test_the_results_are_typed_frames_and_a_misspelt_name_is_an_error_not_a_silent_miss(plain):
    _, audit = plain
    assert audit.figures.schema == FIGURES_SCHEMA and audit.groups.schema == GROUPS_SCHEMA
    black = ethnicity(audit)["Black"]
    assert black.figure("sensitivity") == black.figure(Figure.SENSITIVITY)
    with pytest.raises(ValueError, match="sensitivty"):
        black.figure("sensitivty")
    with pytest.raises(ValueError, match="sensitivty"):
        audit.ratio_to_reference("sensitivty")
    with pytest.raises(KeyError, match="ethnicty"):
        audit.by_group("ethnicty")
    with pytest.raises(ValueError, match="selecton"):
        audit.by_group("ethnicity", "selecton")
    with pytest.raises(KeyError, match="imd"):
        audit.find("ethnicity x imd quintile", group="Black", imd="3")


def test_every_intersection_is_reported_and_small_cells_are_marked_not_merged():
    frame = simulate(n=3000, shares=(0.9, 0.07, 0.03))
    audit = run(frame)
    cells = audit.by_group("ethnicity x imd quintile x sex")
    expected = frame.select("group", "imd_quintile", "sex").unique().height
    assert len(cells) == expected
    assert any(c.too_small for c in cells) and not all(c.too_small for c in cells)


def test_need_at_the_same_score_finds_a_group_that_is_sicker():
    frame = simulate()
    sicker = frame.with_columns(pl.when(pl.col("group") == "Black").then(pl.col("need") * 2 + 1)
                                .otherwise(pl.col("need")).alias("need"))
    rows = ethnicity(run(sicker), "selection")
    assert rows["Black"].figure(Figure.NEED_AT_SAME_SCORE).low > 1.5
    # the others are less sick than a population that now includes the sicker group, alike
    assert rows["White"].figure(Figure.NEED_AT_SAME_SCORE).value < 1
    assert rows["White"].figure(Figure.NEED_AT_SAME_SCORE).value == pytest.approx(
        rows["Asian"].figure(Figure.NEED_AT_SAME_SCORE).value, abs=0.05)
    fair = ethnicity(run(frame), "selection")
    assert fair["Black"].figure(Figure.NEED_AT_SAME_SCORE).low < 1.0 < fair["Black"].figure(Figure.NEED_AT_SAME_SCORE).high


# --- the gate ---------------------------------------------------------------------------------

def test_a_fair_score_passes_or_warns_but_never_fails(plain):
    _, audit = plain
    assert judge(audit, FAST, 0.05).status in ("PASS", "WARN")


def test_an_under_predicted_group_fails_on_observed_expected():
    audit = run(simulate(under_predicted={"Black": 2.0}))
    gate = judge(audit, FAST, 0.05)
    assert gate.status == "FAIL" and not gate.accepted
    assert any(f.rule == "calibration" and f.group == "Black" and f.level == "FAIL" for f in gate.findings)
    # under-rated, so selected far less than its share of the outcomes: under-served twice over
    for rule in ("need-adjusted selection", "sensitivity ratio"):
        assert any(f.rule == rule and f.group == "Black" and f.level == "FAIL" for f in gate.findings), rule


def censored(n=20_000, seed=4, leaving: dict[str, float] | None = None, horizon=5.0) -> pl.DataFrame:
    """Validation patients scored with their true risk over the horizon, followed as the pipeline
    follows them (sql/labels/outcomes.sql): until the outcome, the horizon's end, or leaving the
    practice; in group g a share ``leaving[g]`` leaves at a time uniform over the horizon. The
    outcome comes at the constant hazard the risk implies, and is recorded only while followed."""
    frame = simulate(n, seed)
    rng = np.random.default_rng(seed + 1)
    risk = frame["score"].to_numpy()
    hazard = -np.log1p(-risk) / horizon
    onset = rng.exponential(1 / hazard)
    leaves = np.zeros(n, dtype=bool)
    for g, share in (leaving or {}).items():
        leaves |= (frame["group"].to_numpy() == g) & (rng.random(n) < share)
    end = np.where(leaves, rng.uniform(0, horizon, n), horizon)
    outcome = onset <= end
    years = np.minimum(onset, end)
    return frame.with_columns(pl.Series("outcome", outcome.astype(np.int8)),
                              pl.Series("expected", risk_while_followed(risk, years, horizon, leaves & ~outcome)))


def test_calibration_counts_the_outcomes_expected_over_each_patients_follow_up():
    """A score right for every group, where most Black patients leave their practice before the
    horizon's end: their outcomes after leaving are never recorded. Over each patient's follow-up
    the score expects as many outcomes as were recorded (O/E near 1, no calibration finding);
    counting every patient's whole risk instead reads the group as over-predicted (O/E about 0.6)
    and FAILs a fair score."""
    frame = censored(leaving={"Black": 0.8})
    threshold = float(frame.filter(pl.col("selected"))["score"].min())
    columns = ["group", "imd_quintile", "sex", "score", "selected"]

    followed = audit_score("test", frame.select(*columns, "outcome", "expected"), frame.select(*columns, "need"),
                           threshold, FAST)
    black = ethnicity(followed)["Black"].figure(Figure.OBSERVED_EXPECTED)
    assert 0.85 < black.value < 1.15 and black.counted
    assert black.observed == ethnicity(followed)["Black"].counts.events
    assert black.expected == pytest.approx(frame.filter(pl.col("group") == "Black")["expected"].sum())
    gate = judge(followed, FAST, 0.05)
    assert not [f for f in gate.findings if f.rule == "calibration"], gate.findings

    whole = audit_score("test", frame.select(*columns, "outcome"), frame.select(*columns, "need"), threshold, FAST)
    assert ethnicity(whole)["Black"].figure(Figure.OBSERVED_EXPECTED).value < 0.7
    assert any(f.rule == "calibration" and f.group == "Black" and f.level == "FAIL" for f in judge(whole, FAST, 0.05).findings)


def spread_apart(n=20_000, seed=0) -> pl.DataFrame:
    """A score that is each patient's true risk (calibrated in every group), where White's risks sit
    close together and Asian and Black patients' spread wide: a top-10% list takes few White
    patients, although White patients have over half of the outcomes."""
    rng = np.random.default_rng(seed)
    group = rng.choice(np.array(["White", "Asian", "Black"]), size=n, p=np.array([0.6, 0.25, 0.15]))
    lp = np.where(group == "White", rng.normal(-3.0, 0.3, n), rng.normal(-3.6, 1.4, n))
    risk = 1 / (1 + np.exp(-lp))
    frame = pl.DataFrame({"group": group, "sex": rng.choice(np.array(["female", "male"]), size=n),
                          "imd_quintile": rng.integers(1, 6, n), "score": risk,
                          "outcome": (rng.random(n) < risk).astype(np.int8), "need": rng.poisson(1 + 3 * risk)})
    return frame.with_columns((pl.col("score") >= float(np.quantile(risk, 0.9))).alias("selected"))


def test_a_fair_ranking_of_groups_whose_risks_spread_differently_is_not_failed_for_selection():
    """The raw share-selected / share-of-outcomes ratio is far from 1 for a fair ranking (a ranking
    calibrated within groups cannot also balance selection against need); the gate judges it over
    its value under the score's own risks, which is 1 here."""
    for seed in (0, 1):
        audit = run(spread_apart(seed=seed))
        white = ethnicity(audit)["White"]
        assert white.figure(Figure.NEED_ADJUSTED_SELECTION).high < 0.5  # the raw ratio: 0.31-0.35
        gated = white.figure(Figure.NEED_ADJUSTED_SELECTION_VS_SCORE)
        assert gated.low < 1 < gated.high or abs(gated.value - 1) < 0.1
        gate = judge(audit, FAST, 0.05)
        assert not [f for f in gate.findings if f.rule == "need-adjusted selection" and f.level == "FAIL"], gate.findings
        assert gate.status != "FAIL"


def test_need_adjusted_selection_does_not_move_with_the_scale_of_the_scores():
    """Scores all halved (a score calibrated in rank, not in level) leave the gated ratio as it was:
    it compares shares, and the calibration check judges the level."""
    frame = simulate(under_predicted={"Black": 2.0})
    halved = frame.with_columns(pl.col("score") / 2)
    before, after = (ethnicity(run(f))["Black"].figure(Figure.NEED_ADJUSTED_SELECTION_VS_SCORE) for f in (frame, halved))
    assert after.value == pytest.approx(before.value, rel=0.02) and before.high < 0.8


def test_a_group_served_beyond_its_share_is_a_warning_unless_configured_to_fail():
    audit = run(simulate(under_predicted={"Black": 0.5}))  # over-predicted: over-selected
    over = [f for f in judge(audit, FAST, 0.05).findings if f.group == "Black" and f.rule == "need-adjusted selection"]
    assert over and over[0].level == "WARN"
    strict = AuditSettings(replicates=300, fail_when_over_served=True)
    assert any(f.group == "Black" and f.rule == "need-adjusted selection" and f.level == "FAIL"
               for f in judge(audit, strict, 0.05).findings)


def test_a_group_too_small_to_judge_is_a_warning_that_names_what_it_could_show():
    frame = simulate(n=20_000, groups=("White", "Asian", "Other"), shares=(0.8, 0.197, 0.003))
    gate = judge(run(frame), FAST, 0.05)
    small = [f for f in gate.findings if f.rule == "too small to judge" and f.group == "Other"]
    assert small and "smallest effects it could show" in small[0].message
    # judged all the same: its tests are in the family, with a minimum detectable ratio
    assert any(t.group == "Other" and t.small and t.detectable > 0 for t in gate.tests)
    assert gate.status == "WARN" and not gate.accepted  # a WARN is never accepted silently
    signed = SignOff("Dr Reviewer", "small group, reviewed by hand at the panel", "WARN")
    assert judge(run(frame), AuditSettings(replicates=300, signoffs=(signed,)), 0.05).accepted


def test_missing_ethnicity_over_the_limit_is_a_data_quality_warning(plain):
    _, audit = plain
    gate = judge(audit, FAST, 0.30)
    assert any(f.rule == "ethnicity data quality" and f.level == "WARN" for f in gate.findings)
    assert not judge(audit, FAST, 0.30).accepted


def test_a_reviewer_override_accepts_a_fail_only_for_its_outcomes():
    audit = run(simulate(under_predicted={"Black": 2.0}))
    override = Override("Dr Reviewer", "known under-recording, correction under way", "FAIL", ("test",))
    gate = judge(audit, AuditSettings(replicates=300, signoffs=(override,)), 0.05)
    assert gate.status == "FAIL" and gate.accepted and gate.label() == "FAIL (signed off by Dr Reviewer)"
    other = Override("Dr Reviewer", "known under-recording, correction under way", "FAIL", ("cvd",))
    assert not judge(audit, AuditSettings(replicates=300, signoffs=(other,)), 0.05).accepted
    warn_only = Override("Dr Reviewer", "known under-recording, correction under way", "WARN")
    assert not judge(audit, AuditSettings(replicates=300, signoffs=(warn_only,)), 0.05).accepted


# --- data quality and the report -----------------------------------------------------------------

def test_ethnicity_quality_keeps_not_stated_and_not_known_apart():
    frame = pl.DataFrame({
        "group": ["White"] * 6 + ["Not stated"] * 2 + ["Not known"] * 2,
        "ethnicity_category": ["A"] * 5 + ["C"] + ["Z"] * 2 + ["99"] * 2,
        "ethnicity_has_conflicting_codes": [True] + [False] * 9,
        "pcn_code": ["P1"] * 5 + ["P2"] * 5, "practice_pseudo_id": ["X"] * 10})
    quality = ethnicity_quality(frame)
    overall = quality.rows[0]
    assert overall.counts == {"recorded": 6, "not_stated_z": 2, "not_known_99": 2, "conflicting_codes": 1,
                              "any_other_category": 1}
    assert quality.missing_share == pytest.approx(0.2)
    assert {(r.level, r.unit) for r in quality.rows} == {("overall", "all"), ("pcn", "P1"), ("pcn", "P2"),
                                                         ("practice", "X")}


def test_the_report_shows_the_uptake_of_invitations_once_outcomes_came_back(tmp_path):
    """The pipeline's audit passes uptake (phm/outcomes.py): [] before any outcome came back, rows
    after; an audit of a scored table (None) has no such section."""
    frame = simulate(n=3000, groups=("White", "Black"), shares=(0.7, 0.3))
    audit = run(frame)
    gate = judge(audit, FAST, 0.05)
    rows = [{"grouping": "ethnicity", "group": "White", "listed": 400, "contacted": 300, "attended": 240,
             "declined": 20, "withheld": False, "contacted_share": {"value": 0.75, "low": 0.71, "high": 0.79},
             "attended_share": {"value": 0.6, "low": 0.55, "high": 0.65}},
            {"grouping": "ethnicity", "group": "Mixed", "listed": 10, "contacted": None, "attended": None,
             "declined": 0, "withheld": True, "contacted_share": None, "attended_share": None}]
    pages = {}
    for name, uptake in (("none", None), ("empty", []), ("rows", rows)):
        report = AuditReport("Test audit", FAST, [audit], [gate], None, {}, {"test": {"model": "m"}}, uptake=uptake)
        json_path, html_path = report.write(tmp_path / name)
        pages[name] = (json.loads(json_path.read_text()), html_path.read_text())
    assert "uptake_of_invitations" not in pages["none"][0] and "Uptake of invitations" not in pages["none"][1]
    assert pages["empty"][0]["uptake_of_invitations"]["rows"] == [] and "No outcomes have come back" in pages["empty"][1]
    data, page = pages["rows"]
    assert data["uptake_of_invitations"]["rows"] == rows
    assert "<td>White</td><td>400</td><td>300</td><td>240</td><td>20</td><td>0.75 <span class=note>(0.71&ndash;0.79)" \
        in page
    assert "<td>Mixed</td><td>10</td><td>[suppressed]</td><td>[suppressed]</td><td>0</td><td colspan=2>shares withheld" \
        in page


def test_report_suppresses_every_count_and_withholds_figures_resting_on_small_ones(tmp_path):
    frame = simulate(n=6000, groups=("White", "Asian", "Other"), shares=(0.8, 0.199, 0.001))
    audit = run(frame)
    gate = judge(audit, FAST, 0.05)
    quality = ethnicity_quality(frame.select("group"))
    report = AuditReport("Test audit", FAST, [audit], [gate], quality, {}, {"test": {"model": "m"}})
    json_path, html_path = report.write(tmp_path)
    data = json.loads(json_path.read_text())

    def counts(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("counts",):
                    yield from value.values()
                elif key == "patients" and not isinstance(value, dict):
                    yield value
                else:
                    yield from counts(value)
        elif isinstance(node, list):
            for item in node:
                yield from counts(item)

    seen = list(counts(data))
    assert seen and all(c is None or c % 5 == 0 for c in seen)
    other = next(r for r in data["scores"]["test"]["performance"]["ethnicity"] if r["group"]["group"] == "Other")
    assert other["withheld"] and "figures" not in other and other["counts"]["patients"] is None
    page = html_path.read_text()
    assert "id=gate-result" in page and gate.label() in page
    assert "data:image/png;base64," in page and "<script" not in page


# --- configuration ------------------------------------------------------------------------

def test_configuration_errors_name_the_key(tmp_path):
    cases = {
        "[audit]\nreplicates = 'many'\n": "audit.replicates: must be an integer",
        "[audit]\nreplicatse = 1000\n": "audit.replicatse: unknown key",
        "[audit]\nreplicates = 200\n": "audit.replicates: at least 1000",
        "[audit]\nratio_band = [1.2, 0.8]\n": "audit.ratio_band",
        "[audit]\n[[audit.override]]\nreviewer = 'Dr R'\n": "audit.override[0].reason: required",
        "[audit]\n[[audit.signoff]]\nreviewer = ' '\nreason = 'reviewed at the panel'\n": "audit.signoff[0].reviewer",
        "[audit]\naccept_warn = true\n": "audit.accept_warn: removed",
        "[paths]\nout = 3\n": "unknown table or key 'paths'",
        "[lists]\ncapacity = 3\n": "lists.capacity: unknown key",
        "[audit\n": "not valid TOML",
    }
    for text, message in cases.items():
        path = tmp_path / "phm.toml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
            load_config(path)


def test_configuration_loads_rules_and_overrides(tmp_path):
    path = tmp_path / "phm.toml"
    path.write_text("[audit]\nreplicates = 2000\nratio_band = [0.9, 1.1]\nfamily_control = 'fdr'\n"
                    "[[audit.signoff]]\nreviewer = 'Dr R'\nreason = 'accepted at the panel of 1 May'\n"
                    "outcomes = ['cvd']\n")
    settings = load_config(path).audit
    assert settings.replicates == 2000 and settings.ratio_band == (0.9, 1.1) and settings.family_control == "fdr"
    assert settings.signoffs[0].covers("cvd") and not settings.signoffs[0].covers("t2d")
    assert settings.signoffs[0].accepts == "WARN" and settings.signoffs[0].source == "configuration"


# --- phm audit --scores -------------------------------------------------------------------------

def test_audit_of_a_scored_table_on_the_command_line(tmp_path, capsys):
    from cli.main import main

    table = simulate(n=20_000).rename({"group": "ethnicity", "score": "risk", "outcome": "event"})
    table.drop("selected").write_parquet(tmp_path / "fair.parquet")
    assert main(["audit", "--scores", str(tmp_path / "fair.parquet"), "--group", "ethnicity", "--score", "risk",
                 "--outcome", "event", "--need", "need", "--top-k", "2000", "--replicates", "1000",
                 "--out", str(tmp_path / "fair")]) == 0
    out = capsys.readouterr().out
    assert "fairness audit: PASS" in out or "fairness audit: WARN" in out
    data = json.loads((tmp_path / "fair" / "fairness_audit.json").read_text())
    rows = data["scores"]["score"]["performance"]["ethnicity x imd quintile x sex"]
    assert len(rows) == 3 * 5 * 2
    selected = data["scores"]["score"]["performance"]["population"][0]["counts"]["selected"]
    assert selected == 2000

    unfair = simulate(n=20_000, under_predicted={"Black": 2.0})
    unfair.drop("selected").write_csv(tmp_path / "unfair.csv")
    code = main(["audit", "--scores", str(tmp_path / "unfair.csv"), "--group", "group", "--score", "score",
                 "--outcome", "outcome", "--threshold", "0.1", "--replicates", "1000", "--out", str(tmp_path / "u")])
    captured = capsys.readouterr()
    assert code == 7
    assert "FAIL [calibration]" in captured.out and "Black" in captured.out
    assert "fairness gate refused score FAIL" in captured.err


@pytest.mark.parametrize("args, message", [
    (["--group", "nope"], "--group nope: no such column"),
    (["--score", "group"], "row 1, column 'group': empty or not a number"),
    (["--outcome", "score"], "column 'score': the outcome must be 0 or 1"),
    (["--top-k", "0"], "--top-k must be between 1"),
])
def test_audit_of_a_scored_table_names_the_column_and_row_at_fault(tmp_path, capsys, args, message):
    from cli.main import main

    frame = simulate(n=500).with_columns(pl.col("need") + 2)
    frame.write_csv(tmp_path / "t.csv")
    base = {"--group": "group", "--score": "score", "--outcome": "outcome", "--top-k": "50"}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    argv = ["audit", "--scores", str(tmp_path / "t.csv"), "--out", str(tmp_path / "o"), "--replicates", "1000"]
    for key, value in base.items():
        argv += [key, value]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


# --- phm audit --scores: scores that are not probabilities; the published label-choice case ---------

def obermeyer_table(n=20_000, seed=3, cost_factor=0.6) -> pl.DataFrame:
    """A table in the shape of Obermeyer et al. (Science 2019; their data is public): the score is
    a percentile (0-100) of predicted cost, the outcome is high cost, need is the number of chronic
    conditions. Black patients' care costs less for the same illness (``cost_factor``), so at the
    same score they carry more chronic conditions."""
    rng = np.random.default_rng(seed)
    black = rng.random(n) < 0.12
    conditions = rng.poisson(np.exp(rng.normal(0.6, 0.7, n)))
    cost = conditions * np.where(black, cost_factor, 1.0) * np.exp(rng.normal(0, 0.3, n))
    predicted = cost * np.exp(rng.normal(0, 0.2, n))
    percentile = 100 * (np.argsort(np.argsort(predicted)) + 0.5) / n
    high_cost = (cost > np.quantile(cost, 0.9)).astype(np.int8)
    return pl.DataFrame({"race": np.where(black, "Black", "White"), "risk_score_t": percentile,
                         "high_cost": high_cost, "gagne_sum_t": conditions})


def test_a_percentile_score_is_read_as_a_rank_the_label_choice_case_fails_and_the_fair_table_passes(tmp_path, capsys):
    """Issue 22: a score that is not a probability, such as a percentile from 0 to 100, is accepted
    with a clear note, not refused. Read as a percentage (divided by 100), the fair table below was
    refused on calibration for both groups (observed / expected 0.19 and 0.20): a percentile of 50
    is no 50% risk."""
    from cli.main import main

    audit = ["audit", "--group", "race", "--score", "risk_score_t", "--outcome", "high_cost", "--need", "gagne_sum_t",
             "--top-k", "2000", "--reference", "White", "--replicates", "1000"]
    obermeyer_table().write_csv(tmp_path / "obermeyer.csv")
    code = main([*audit, "--scores", str(tmp_path / "obermeyer.csv"), "--out", str(tmp_path / "audit")])
    captured = capsys.readouterr()
    assert "note: column 'risk_score_t' is not a probability" in captured.out
    assert "read as a percentile" in captured.out and "--score-kind percentage" in captured.out
    assert code == 7
    assert "FAIL [label choice]" in captured.out and "Black" in captured.out
    data = json.loads((tmp_path / "audit" / "fairness_audit.json").read_text())
    assert data["notes"] and data["gate"]["exit_code"] == 7
    failed = [f for f in data["gate"]["outcomes"]["score"]["findings"] if f["level"] == "FAIL"]
    assert any(f["rule"] == "label choice" and f["group"] == "Black" for f in failed)
    # the same table without the cost gap passes: nothing judges a percentile as a risk
    obermeyer_table(cost_factor=1.0).write_csv(tmp_path / "fair.csv")
    assert main([*audit, "--scores", str(tmp_path / "fair.csv"), "--out", str(tmp_path / "fair")]) == 0
    out = capsys.readouterr().out
    assert "fairness audit: PASS" in out and "[calibration]" not in out
    fair = json.loads((tmp_path / "fair" / "fairness_audit.json").read_text())
    assert fair["gate"]["exit_code"] == 0


def test_a_percentage_risk_is_divided_by_100_and_judged_on_calibration(tmp_path):
    """A risk in percent (QRISK3's 10-year risk as a GP system shows it) stays a risk: divided by
    100, calibration judged. Told that a percentile is a percentage (``score_kind``), the audit
    judges its calibration too, and the fair percentile table fails it."""
    from models.fairness._table import TableSpec, audit_table

    table = simulate(n=5_000, under_predicted={"Black": 2.0})
    table.with_columns(pl.col("score") * 100).write_csv(tmp_path / "percent.csv")
    report = audit_table(TableSpec(tmp_path / "percent.csv", "group", "score", "outcome", top_k=500),
                         AuditSettings(), tmp_path / "o")
    assert "read as a percentage risk" in report.notes[0] and "divided by 100" in report.notes[0]
    calibration = {t.group: t for t in report.gates[0].tests if t.check == "calibration"}
    # half the true risk: observed / expected about 2, judged (at 500 Black patients, not surely)
    assert calibration["Black"].estimate.value > 1.5 and calibration["Black"].verdict != "PASS"
    assert {t.check for t in report.gates[0].tests} >= {"calibration", "need-adjusted selection"}

    obermeyer_table(n=5_000, cost_factor=1.0).write_csv(tmp_path / "fair.csv")
    told = audit_table(TableSpec(tmp_path / "fair.csv", "race", "risk_score_t", "high_cost", need="gagne_sum_t",
                                 top_k=500, score_kind="percentage"), AuditSettings(reference_group="White"),
                       tmp_path / "told")
    assert "given as a percentage" in told.notes[0]
    assert any(t.check == "calibration" and t.verdict == "FAIL" for t in told.gates[0].tests)


def test_a_score_kind_that_does_not_fit_the_values_is_an_error_naming_the_column(tmp_path):
    from models.fairness._table import TableSpec, audit_table

    obermeyer_table(n=500).write_csv(tmp_path / "t.csv")
    with pytest.raises(ConfigError, match=r"--score-kind probability: column 'risk_score_t' has values from .* not 0-1"):
        audit_table(TableSpec(tmp_path / "t.csv", "race", "risk_score_t", "high_cost", top_k=50,
                              score_kind="probability"), AuditSettings(), tmp_path / "o")
    with pytest.raises(ConfigError, match="--score-kind 'odds': one of auto, probability, percentage, rank"):
        audit_table(TableSpec(tmp_path / "t.csv", "race", "risk_score_t", "high_cost", top_k=50, score_kind="odds"),
                    AuditSettings(), tmp_path / "o")


def test_a_score_that_is_no_probability_nor_percentile_is_ranked_and_not_judged_on_calibration(tmp_path):
    from models.fairness._table import TableSpec, audit_table

    table = simulate(n=5_000).with_columns((pl.col("score").log() * 10).alias("score"))  # negative log-scores
    table.write_csv(tmp_path / "t.csv")
    report = audit_table(TableSpec(tmp_path / "t.csv", "group", "score", "outcome", top_k=500), AuditSettings(),
                         tmp_path / "o")
    assert "percentile rank" in report.notes[0]
    assert not any(t.check in ("calibration", "need-adjusted selection") for t in report.gates[0].tests)
    assert report.audits[0].by_group("population")[0].counts.selected == 500


# --- the gate as a family of tests ------------------------------------------------------------------

def test_holm_by_hand_and_benjamini_hochberg_as_scipy():
    from scipy.stats import false_discovery_control

    from models.fairness._gate import adjust

    p = np.array([0.001, 0.04, 0.03, 0.2, np.nan, 0.012])
    ok = np.isfinite(p)
    holm = adjust(p, "holm")
    assert np.isnan(holm[~ok]).all()
    # sorted 0.001, 0.012, 0.03, 0.04, 0.2 times 5, 4, 3, 2, 1, then running maximum
    np.testing.assert_allclose(holm[ok], [0.005, 0.09, 0.09, 0.2, 0.048])
    np.testing.assert_allclose(adjust(p, "fdr")[ok], false_discovery_control(p[ok], method="bh"))


def test_shrinkage_pulls_a_noisy_small_group_towards_the_others_more_than_a_precise_one():
    from models.fairness._gate import shrink

    values = np.log(np.array([1.0, 1.05, 0.95, 1.6, 1.6]))
    ses = np.array([0.02, 0.02, 0.02, 0.5, 0.02])
    shrunk, shrunk_se = shrink(values, ses)
    assert abs(shrunk[3]) < abs(values[3]) * 0.8  # the noisy one moves a lot
    assert shrunk[4] == pytest.approx(values[4], rel=0.05)  # the precise one hardly
    assert (shrunk_se <= ses + 1e-9).all()


def test_a_fair_family_of_many_groups_rarely_fails_and_a_large_effect_in_a_small_group_still_does():
    groups = ("White", "Asian", "Black", "Mixed", "Other")
    fails = 0
    for seed in range(4):
        frame = simulate(n=20_000, seed=seed, groups=groups, shares=(0.7, 0.12, 0.08, 0.06, 0.04))
        fails += judge(run(frame), FAST, 0.05).status == "FAIL"
    assert fails == 0
    small = simulate(n=20_000, seed=9, groups=groups, shares=(0.7, 0.12, 0.08, 0.07, 0.03),
                     under_predicted={"Other": 3.0})
    gate = judge(run(small), FAST, 0.05)
    assert any(f.group == "Other" and f.level == "FAIL" for f in gate.findings)


# --- suppression that cannot be undone (issue 16, item 2) ---------------------------------------------

def test_no_suppressed_count_can_be_recovered_from_the_published_figures(tmp_path):
    """Tries every route an attacker has to each suppressed cell: its share of the population
    times the published total, a proportion times its published denominator, a mean times its
    patients, and the grouping's total minus the other cells; each must fail."""
    frame = simulate(n=4000, seed=5, groups=("White", "Asian", "Black", "Other"), shares=(0.85, 0.1, 0.047, 0.003))
    audit = run(frame)
    gate = judge(audit, FAST, 0.05)
    report = AuditReport("Test audit", FAST, [audit], [gate], ethnicity_quality(frame.select("group")), {},
                         {"test": {"model": "m"}})
    data = json.loads(report.write(tmp_path)[0].read_text())
    exact = {kind: {grouping: {tuple(r.labels.values()): dict(r.counts.items()) for r in audit.by_group(grouping, kind)}
                    for grouping in audit.groupings(kind)} for kind in ("performance", "selection")}
    from models.fairness._audit import PROPORTIONS

    suppressed_cells = 0
    for kind in ("performance", "selection"):
        population = data["scores"]["test"][kind]["population"][0]["counts"]
        for grouping, rows in data["scores"]["test"][kind].items():
            for name in rows[0]["counts"]:
                nulls = [r for r in rows if r["counts"].get(name) is None]
                # subtraction: a single hidden cell would be the total minus the others
                assert len(nulls) != 1, (kind, grouping, name)
                if len(nulls) >= 2 and population.get(name) is not None:
                    rest = population[name] - sum(r["counts"][name] for r in rows if r["counts"].get(name) is not None)
                    true = [exact[kind][grouping][tuple(r["group"].values())][name] for r in nulls]
                    assert rest != true[0] or len(set(true)) > 1 or len(nulls) > 1
            for r in rows:
                counts = r["counts"]
                true = exact[kind][grouping][tuple(r["group"].values())]
                hidden = [k for k, v in counts.items() if v is None and 0 < true[k]]
                suppressed_cells += bool(hidden)
                if counts.get("patients") is None:
                    assert r.get("share_of_population") is None
                elif r.get("share_of_population") is not None:  # from the published (rounded) counts only
                    total = sum(x["counts"]["patients"] or 0 for x in rows)
                    assert r["share_of_population"] in (round(counts["patients"] / total, 3),
                                                        round(counts["patients"] / population["patients"], 3))
                for figure, (numerator, denominator) in PROPORTIONS.items():
                    shown = (r.get("figures") or {}).get(figure)
                    if shown and numerator in hidden:
                        pytest.fail(f"{figure} of {r['group']} shown over a suppressed {numerator}")
                    if shown and counts.get(denominator):  # rate x published denominator = the published numerator
                        assert shown["value"] * counts[denominator] == pytest.approx(
                            counts[numerator], abs=counts[denominator] * 1e-4 + 0.01)
                if true["patients"] < 100 and r.get("figures"):
                    assert r["figures"].get("mean_need") is None
    assert suppressed_cells >= 3  # the attack had something to attack


# --- one decision, one exit code ---------------------------------------------------------------------

def _result(outcome: str, level: str | None):
    from models.fairness import Finding, GateResult

    result = GateResult(outcome)
    if level:
        result.findings.append(Finding(level, "calibration", outcome, "Black", f"{outcome}: {level}"))
    return result


def test_the_decision_lets_out_pass_and_signed_off_results_only_with_one_exit_code():
    from models.fairness import decide, demo_signoff, version_may_be_scored
    from phm.exceptions import FairnessGateFailed

    unsigned = decide([_result("cvd", None), _result("t2d", "WARN"), _result("hypertension", "FAIL")], ())
    assert [unsigned.may_publish(o) for o in ("cvd", "t2d", "hypertension")] == [True, False, False]
    assert unsigned.exit_code == FairnessGateFailed.exit_code == 7
    with pytest.raises(FairnessGateFailed, match="t2d WARN awaiting a reviewer's sign-off, hypertension FAIL"):
        unsigned.raise_if_refused("no list")
    assert unsigned.version_tags("t2d")["phm.fairness_gate"] == "WARN (not signed off)"
    assert not version_may_be_scored(unsigned.version_tags("t2d"))

    warn_only = SignOff("Dr R", "reviewed at the panel of 1 May", "WARN")
    partly = decide([_result("t2d", "WARN"), _result("hypertension", "FAIL")], (warn_only,))
    assert partly.may_publish("t2d") and not partly.may_publish("hypertension") and partly.exit_code == 7
    manifest = partly.manifest()
    assert manifest["t2d"]["signoff"]["reviewer"] == "Dr R" and manifest["hypertension"]["signoff"] is None
    assert partly.tags()["phm.signoff.t2d.source"] == "configuration"

    demo = decide([_result("t2d", "WARN"), _result("hypertension", "FAIL")], (demo_signoff(),))
    assert demo.exit_code == 0 and demo.demo_signed
    assert "DEMO SIGN-OFF" in "\n".join(demo.lines())
    assert demo.manifest()["hypertension"]["signoff"]["source"] == "phm demo"
    assert version_may_be_scored(demo.version_tags("hypertension"))


def test_phm_demo_signs_off_as_the_labelled_demo_reviewer_after_any_named_one_and_says_so(tmp_path):
    """``phm demo`` runs with ``demo_config`` of the loaded configuration and prints ``demo_notes``
    (cli/main.py ``cmd_demo``). No pipeline run here: the demo's sign-off is one more entry in
    ``config.audit.signoffs``, and the pipeline's audit hands those to ``decide`` (models/audit_run.py),
    whose manifest and tags go into the lists' manifest and MLflow. That path, with the sign-off
    of the shared run's configuration, is checked on a finished run by
    tests/integration/test_run_flow.py::test_the_manifest_and_mlflow_record_the_gate_decision_and_who_signed_it_off
    (the shared run's gate WARNs at 12,000 patients, so its sign-off is recorded). What is the
    demo's own is checked here: which sign-offs it adds, in what order, and what it says."""
    from cli.main import demo_config, demo_notes
    from models.fairness import DEMO_REVIEWER, decide

    path = tmp_path / "phm.toml"
    path.write_text('[[audit.signoff]]\nreviewer = "Dr R"\nreason = "reviewed at the panel of 1 May"\n'
                    'accepts = "WARN"\noutcomes = ["t2d"]\n')
    loaded = load_config(path)
    config = demo_config(loaded)
    assert config.run.stale_extract == "mark" and loaded.run.stale_extract != "mark"
    assert config.audit.signoffs[0] == loaded.audit.signoffs[0]  # the named reviewer, asked first
    assert config == dataclasses.replace(loaded, run=config.run, audit=config.audit)  # nothing else changes

    def gates():
        return [_result("cvd", None), _result("t2d", "WARN"), _result("hypertension", "FAIL")]

    # without the demo's sign-off the FAIL is refused: the demo's is what lets it out
    assert decide(gates(), loaded.audit.signoffs).exit_code == 7
    decision = decide(gates(), config.audit.signoffs)
    assert decision.exit_code == 0 and decision.demo_signed
    manifest, tags = decision.manifest(), decision.tags()
    assert manifest["cvd"]["signoff"] is None  # a PASS needs no one
    assert manifest["t2d"]["signoff"]["reviewer"] == "Dr R"  # a named reviewer who covers it is not displaced
    assert manifest["hypertension"]["signoff"] == {
        "reviewer": DEMO_REVIEWER, "reason": manifest["hypertension"]["signoff"]["reason"], "accepts": "FAIL",
        "outcomes": ["*"], "source": "phm demo"}
    assert tags["phm.signoff.hypertension.reviewer"] == DEMO_REVIEWER
    assert tags["phm.signoff.hypertension.source"] == "phm demo"
    assert [line for line in decision.lines() if "DEMO SIGN-OFF" in line] == [
        f"  hypertension: FAIL signed off by {DEMO_REVIEWER} (phm demo) [DEMO SIGN-OFF: synthetic run, not a "
        f"real review]: {manifest['hypertension']['signoff']['reason']}"]

    notes = demo_notes(config, tmp_path / "out", tmp_path / "out" / "extract", own_key=False, code=0)
    # the name printed is the name recorded: the manifest's reviewer begins with it
    assert DEMO_REVIEWER.startswith("DEMO REVIEWER") and "not a real review" in DEMO_REVIEWER
    assert notes[0].startswith("demo: any WARN or FAIL above was signed off by the DEMO REVIEWER (synthetic data, "
                               "not a real review); phm run needs a named reviewer ([[audit.signoff]] in --config")
    assert "published marked STALE" in notes[1] and len(notes) == 2  # no re-identification hint with a random key


BLOCK_TOML = ('[[audit.block]]\nreviewer = "Dr B, ICS fairness panel"\n'
              'reason = "T2D ranks Black patients low in the MLflow figures of PCN U10037 (ref. 15)"\n'
              'outcomes = ["t2d"]\n')


def test_a_reviewer_blocks_an_outcomes_list_whatever_the_gate_found_and_no_sign_off_lifts_it(tmp_path):
    """Fairness reviewers can say no: a [[audit.block]] in the configuration refuses the outcome
    it names even where the gate PASSed or a reviewer signed off (a harm they see in MLflow that
    the gate did not judge so), with the same exit code 7, no champion and no list; it is recorded
    in the manifest, the audit run's and the model version's tags and descriptions, and the
    report, and the message says how to lift it. Other outcomes are untouched."""
    from models.fairness import Block, decide, demo_signoff, version_may_be_scored
    from phm.exceptions import FairnessGateFailed

    path = tmp_path / "phm.toml"
    path.write_text(BLOCK_TOML)
    [block] = load_config(path).audit.blocks
    assert block == Block("Dr B, ICS fairness panel",
                          "T2D ranks Black patients low in the MLflow figures of PCN U10037 (ref. 15)", ("t2d",))
    decision = decide([_result("cvd", None), _result("t2d", None), _result("hypertension", "WARN")],
                      (demo_signoff(),), blocks=(block,))
    assert [decision.may_publish(o) for o in ("cvd", "t2d", "hypertension")] == [True, False, True]
    assert not decision.becomes_champion("t2d") and decision.exit_code == 7
    with pytest.raises(FairnessGateFailed, match=r"refused t2d PASS, blocked by Dr B, ICS fairness panel \(t2d "
                       r"blocked by Dr B.*U10037.*\): no list; the reviewer who blocked it removes their "
                       r"\[\[audit.block\]\] from the configuration"):
        decision.raise_if_refused("no list")
    assert decision.manifest()["t2d"]["blocked"] == {"reviewer": "Dr B, ICS fairness panel", "reason": block.reason,
                                                     "outcomes": ["t2d"], "source": "configuration"}
    assert "blocked" not in decision.manifest()["cvd"]
    tags, version = decision.tags(), decision.version_tags("t2d")
    assert tags["phm.block.t2d.reviewer"] == "Dr B, ICS fairness panel" and tags["phm.fairness_gate.t2d.may_publish"] == "false"
    assert tags["phm.fairness_gate.t2d"] == "PASS (blocked by Dr B, ICS fairness panel)"
    assert version["phm.blocked_by"] == "Dr B, ICS fairness panel" and not version_may_be_scored(version)
    assert "Blocked by Dr B, ICS fairness panel (configuration)" in decision.version_description("t2d", "run r1")
    assert "| t2d | PASS | no: BLOCKED |" in decision.description("audit", "fairness/fairness_audit.html")
    assert any(line.startswith("  t2d: PASS, BLOCKED by Dr B") for line in decision.lines())

    # a sign-off, even one that accepts FAIL, does not lift a block; a block on every outcome ("*") blocks them all
    signed = decide([_result("t2d", "FAIL")], (SignOff("Dr R", "reviewed at the panel of 1 May", "FAIL"),),
                    blocks=(block,))
    assert not signed.may_publish("t2d") and signed.manifest()["t2d"]["signoff"] is not None
    everything = decide([_result("cvd", None), _result("hypertension", None)], (),
                        blocks=(Block("Dr B", "every list held for the panel of 3 May"),))
    assert everything.refused and not any(everything.may_publish(o) for o in ("cvd", "hypertension"))


@pytest.mark.parametrize(("table", "message"), [
    ('[[audit.block]]\nreviewer = "Dr B"\noutcomes = ["t2d"]\n', r"audit.block\[0\].reason: required"),
    ('[[audit.block]]\nreviewer = "Dr B"\nreason = "too short"\n', r"audit.block\[0\].reason: give the reason"),
    ('[[audit.block]]\nreviewer = "Dr B"\nreason = "held for the panel of 3 May"\noutcomes = ["T2D"]\n',
     r"audit.block\[0\].outcomes: 'T2D' is not an outcome"),
    ('[[audit.block]]\nreviewer = "Dr B"\nreason = "held for the panel of 3 May"\naccepts = "FAIL"\n',
     r"audit.block\[0\].accepts: unknown key"),
    # a sign-off's outcomes are checked the same way: a misspelt one would cover nothing
    ('[[audit.signoff]]\nreviewer = "Dr R"\nreason = "reviewed at the panel of 1 May"\noutcomes = ["diabetes"]\n',
     r"audit.signoff\[0\].outcomes: 'diabetes' is not an outcome"),
])
def test_a_block_names_its_reviewer_reason_and_real_outcomes(tmp_path, table, message):
    """A misspelt outcome in a block would block nothing and let the list out: refused on load."""
    path = tmp_path / "phm.toml"
    path.write_text(table)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_the_report_shows_a_blocked_outcome_and_who_blocked_it(tmp_path):
    from models.fairness import Block, decide, judge_all

    audit = run(simulate(n=3000, groups=("White", "Black"), shares=(0.7, 0.3)))  # its outcome is named "test"
    block = Block("Dr B, ICS fairness panel", "held for the fairness panel of 3 May (ref. 15)", ("test",))
    settings = dataclasses.replace(FAST, blocks=(block,))
    gates = judge_all([audit], settings, 0.05)
    decision = decide(gates, (), blocks=settings.blocks)
    report = AuditReport("blocked", settings, [audit], gates, None, {}, {"test": {"model": "m"}}, decision=decision)
    json_path, html_path = report.write(tmp_path)
    data = json.loads(json_path.read_text())
    assert data["gate"]["outcomes"]["test"]["blocked"]["reviewer"] == "Dr B, ICS fairness panel"
    assert data["gate"]["may_publish"] is False and data["settings"]["blocks"][0]["outcomes"] == ["test"]
    assert "blocked" in report.label()  # the audit run's name in MLflow says so
    assert ("BLOCKED by Dr B, ICS fairness panel (configuration): held for the fairness panel of 3 May (ref. 15): "
            "champion not moved, no list may go out") in html_path.read_text()


def test_mlflow_descriptions_state_the_decision_in_full_for_a_reviewer():
    from models.fairness import decide

    signed = SignOff("Dr R", "reviewed | at the panel of 1 May", "WARN")
    decision = decide([_result("cvd", None), _result("t2d", "WARN"), _result("hypertension", "FAIL")], (signed,))
    note = decision.description("fairness audit, QXX, 2026-03-31: FAIL", "fairness/fairness_audit.html")
    assert note.startswith("**fairness audit, QXX, 2026-03-31: FAIL**: FAIL, no list may go out until a named "
                           "reviewer signs off.")
    rows = note.splitlines()
    assert "| cvd | PASS | yes | model |  |  |" in rows
    assert "| t2d | WARN | yes | model | Dr R | reviewed / at the panel of 1 May |" in rows  # a '|' cannot break the table
    assert "| hypertension | FAIL | no | model |  |  |" in rows
    assert "- hypertension FAIL: hypertension: FAIL" in rows and "`fairness/fairness_audit.html`" in note
    assert decision.version_description("t2d", "fairness audit, QXX, 2026-03-31: FAIL (run r1)") == (
        "Audited in fairness audit, QXX, 2026-03-31: FAIL (run r1): WARN (signed off by Dr R). Its list may go out. "
        "Signed off by Dr R (configuration): reviewed | at the panel of 1 May")
    assert decision.version_description("hypertension", "run r1", ranks_list="QRISK3-2017").startswith(
        "Audited in run r1: FAIL (not signed off). Its list may not go out, ranked by QRISK3-2017 (do no harm).")


def test_the_label_choice_test_is_published_only_where_the_interval_has_width():
    from models.fairness._audit import Estimate
    from models.fairness._report import label_choice_test

    sicker = label_choice_test(Estimate(1.5, 1.2, 1.875))
    assert sicker["z"] > 1.96 and sicker["p_value"] < 0.05
    # the population against itself: an interval of no width, exactly or to the last bits, as
    # two runs of the same code gave it; either way no test (it was NaN in one run, 0.0 in the next)
    assert label_choice_test(Estimate(1.0, 1.0, 1.0)) is None
    assert label_choice_test(Estimate(1.0, 1.0 - 2e-16, 1.0 + 2e-16)) is None
    assert label_choice_test(Estimate(0.0, 0.0, 0.5)) is None


def test_a_calibration_plot_with_no_group_large_enough_says_so_instead_of_showing_empty_axes(tmp_path):
    """Every risk bin under PLOT_MIN_PATIENTS: the report's calibration figure says why it is empty
    (and matplotlib is not asked for a legend of nothing, which it warns about); a larger table
    plots the groups under the plain title."""
    from models.fairness._report import PLOT_MIN_PATIENTS

    titles = {}
    for n in (300, 6000):
        frame = simulate(n=n, groups=("White", "Black"), shares=(0.7, 0.3))
        audit = run(frame)
        report = AuditReport("Test audit", FAST, [audit], [judge(audit, FAST, 0.05)], None, {}, {"test": {"model": "m"}})
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _, html_path = report.write(tmp_path / str(n))
        assert not [w for w in caught if "legend" in str(w.message)], n
        titles[n] = html_path.read_text()
    empty = f"calibration by group: no group has {PLOT_MIN_PATIENTS} patients in two risk bins"
    assert empty in titles[300]
    assert empty not in titles[6000] and "calibration by group" in titles[6000]


def _validation_group(patients: int, events: int, expected: float):
    from models.fairness import Counts, Estimate, Figure, GroupResults

    return GroupResults("performance", {"group": "g"}, Counts(patients=patients, events=events), patients < 100,
                        [], [], {(None, Figure.MEAN_PREDICTED_RISK): Estimate(expected / patients)})


def test_calibration_and_need_adjusted_selection_are_tested_exactly_on_the_validation_counts():
    # seed 88 'england', no bias planted: 38 Mixed validation patients with 10 hypertension outcomes
    # where the score expected 4.3; the population 390 where it expected 415. The bootstrap interval
    # read as normal gave need-adjusted selection p 0.006 against 0.8 (a FAIL after Holm over seven
    # groups); the exact binomial test of its share of the outcomes gives 0.034
    from scipy import stats

    from models.fairness._gate import _exact_from_validation

    mixed, population = _validation_group(38, 10, 4.3248), _validation_group(3401, 390, 415.3871)
    share = 4.3248 / 415.3871
    nas = _exact_from_validation("need-adjusted selection", "below", (0.8, 1.25), mixed, population)
    assert nas == pytest.approx(stats.binom.sf(9, 390, share / 0.8)) and 0.03 < nas < 0.04
    over = _exact_from_validation("need-adjusted selection", "both", (0.8, 1.25), mixed, population)
    assert over == pytest.approx(min(1, 2 * min(nas, stats.binom.cdf(10, 390, share / 1.25))))
    calibration = _exact_from_validation("calibration", "both", (0.8, 1.25), mixed, population)
    assert calibration == pytest.approx(2 * stats.poisson.sf(9, 1.25 * 4.3248)) and 0.09 < calibration < 0.11
    # a large effect in a group of the same size is still sure: 16 outcomes where 4.3 were expected
    assert _exact_from_validation("need-adjusted selection", "below", (0.8, 1.25),
                                  _validation_group(38, 16, 4.3248), population) < 0.001


def test_the_gate_takes_calibration_and_need_adjusted_selection_p_values_from_the_exact_tests():
    from scipy import stats

    from models.fairness import judge

    audit = run(simulate(n=20_000, seed=4, under_predicted={"Black": 2.0}))
    gate = judge(audit, FAST, 0.05)
    groups = ethnicity(audit)
    population = next(iter(audit.by_group("population", "performance")))
    expected = {g: r.figure("mean_predicted_risk").value * r.counts.patients for g, r in groups.items()}
    total_expected = population.figure("mean_predicted_risk").value * population.counts.patients
    for t in gate.tests:
        r = groups.get(t.group)
        if t.check == "calibration":
            o, e = r.counts.events, expected[t.group]
            assert t.p_value == pytest.approx(min(1, 2 * min(stats.poisson.sf(o - 1, 1.25 * e),
                                                              stats.poisson.cdf(o, 0.8 * e))))
        elif t.check == "need-adjusted selection":
            share = expected[t.group] / total_expected
            assert t.p_value == pytest.approx(stats.binom.sf(r.counts.events - 1, population.counts.events,
                                                             min(1.0, share / 0.8)))
    # Black, under-predicted twice over, still FAILs both
    assert {("calibration", "Black"), ("need-adjusted selection", "Black")} <= \
        {(f.rule, f.group) for f in gate.findings if f.level == "FAIL"}
