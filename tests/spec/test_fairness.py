"""Spec tests for the fairness audit on small hand-made and simulated tables.

Each figure is checked against an independent computation (scikit-learn, fairlearn, a plain
patient-level bootstrap, hand arithmetic); each gate rule is triggered by a table built to break
it, and left alone by one that does not.
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import precision_score, roc_auc_score

from flows.config import load_config
from models.fairness import AuditSettings, Override, audit_score, ethnicity_quality, judge
from models.fairness._metrics import wilson_interval
from models.fairness._report import AuditReport
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
    return {g.labels["group"]: g for g in audit.grouping(kind, "ethnicity").groups}


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
        assert row.counts["patients"] == part.height
        assert row.counts["events"] == part["outcome"].sum()
        assert row.figures["outcome_rate"].value == pytest.approx(part["outcome"].mean())
        assert row.figures["mean_predicted_risk"].value == pytest.approx(part["score"].mean())
        assert row.figures["observed_expected"].value == pytest.approx(part["outcome"].sum() / part["score"].sum())


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
            assert ours[group].figures[name].value == pytest.approx(value), (group, name)


def test_binned_auroc_and_slope_agree_with_patient_level_figures(plain):
    frame, audit = plain
    for name, row in ethnicity(audit).items():
        part = frame.filter(pl.col("group") == name)
        assert row.figures["auroc"].value == pytest.approx(roc_auc_score(part["outcome"], part["score"]), abs=0.005)
        slope = calibration_slope(part["outcome"].to_numpy(), part["score"].to_numpy())
        assert row.figures["calibration_slope"].value == pytest.approx(slope, abs=0.03)


def test_calibration_slope_sees_scores_that_are_too_extreme():
    audit = run(simulate(slope=0.6))
    assert ethnicity(audit)["White"].figures["calibration_slope"].value == pytest.approx(0.6, abs=0.08)


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
    ours = ethnicity(audit)["Black"].figures["observed_expected"]
    assert ours.low == pytest.approx(low, rel=0.08) and ours.high == pytest.approx(high, rel=0.08)


def test_ratios_are_against_the_reference_in_the_same_stratum(plain):
    _, audit = plain
    rows = audit.grouping("performance", "ethnicity x imd quintile")
    black = rows.find(group="Black", imd_quintile="3")
    white = rows.find(group="White", imd_quintile="3")
    expected = black.figures["sensitivity"].value / white.figures["sensitivity"].value
    assert black.vs_reference["sensitivity"].value == pytest.approx(expected)
    assert white.vs_reference["sensitivity"].value == pytest.approx(1.0)


def test_every_intersection_is_reported_and_small_cells_are_marked_not_merged():
    frame = simulate(n=3000, shares=(0.9, 0.07, 0.03))
    audit = run(frame)
    cells = audit.grouping("performance", "ethnicity x imd quintile x sex").groups
    expected = frame.select("group", "imd_quintile", "sex").unique().height
    assert len(cells) == expected
    assert any(c.too_small for c in cells) and not all(c.too_small for c in cells)


def test_need_at_the_same_score_finds_a_group_that_is_sicker():
    frame = simulate()
    sicker = frame.with_columns(pl.when(pl.col("group") == "Black").then(pl.col("need") * 2 + 1)
                                .otherwise(pl.col("need")).alias("need"))
    rows = ethnicity(run(sicker), "selection")
    assert rows["Black"].figures["need_at_same_score"].low > 1.5
    # the others are less sick than a population that now includes the sicker group, alike
    assert rows["White"].figures["need_at_same_score"].value < 1
    assert rows["White"].figures["need_at_same_score"].value == pytest.approx(
        rows["Asian"].figures["need_at_same_score"].value, abs=0.05)
    fair = ethnicity(run(frame), "selection")
    assert fair["Black"].figures["need_at_same_score"].low < 1.0 < fair["Black"].figures["need_at_same_score"].high


# --- the gate ---------------------------------------------------------------------------------

def test_a_fair_score_passes_or_warns_but_never_fails(plain):
    _, audit = plain
    assert judge(audit, FAST, 0.05).status in ("PASS", "WARN")


def test_an_under_predicted_group_fails_on_observed_expected():
    audit = run(simulate(under_predicted={"Black": 2.0}))
    gate = judge(audit, FAST, 0.05)
    assert gate.status == "FAIL" and not gate.accepted
    assert any(f.rule == "observed/expected" and f.group == "Black" and f.level == "FAIL" for f in gate.findings)
    # under-rated, so selected far less than its share of the outcomes: under-served twice over
    for rule in ("need-adjusted selection", "sensitivity ratio"):
        assert any(f.rule == rule and f.group == "Black" and f.level == "FAIL" for f in gate.findings), rule


def test_a_group_served_beyond_its_share_is_a_warning_unless_configured_to_fail():
    audit = run(simulate(under_predicted={"Black": 0.5}))  # over-predicted: over-selected
    over = [f for f in judge(audit, FAST, 0.05).findings if f.group == "Black" and f.rule == "need-adjusted selection"]
    assert over and over[0].level == "WARN"
    strict = AuditSettings(replicates=300, fail_when_over_served=True)
    assert any(f.group == "Black" and f.rule == "need-adjusted selection" and f.level == "FAIL"
               for f in judge(audit, strict, 0.05).findings)


def test_a_group_too_small_to_judge_is_a_warning():
    frame = simulate(n=20_000, groups=("White", "Asian", "Other"), shares=(0.8, 0.197, 0.003))
    gate = judge(run(frame), FAST, 0.05)
    assert any(f.rule == "too small to judge" and f.group == "Other" for f in gate.findings)
    assert gate.status == "WARN" and gate.accepted  # accept_warn is the default


def test_missing_ethnicity_over_the_limit_is_a_data_quality_warning(plain):
    _, audit = plain
    gate = judge(audit, FAST, 0.30)
    assert any(f.rule == "ethnicity data quality" and f.level == "WARN" for f in gate.findings)
    strict = AuditSettings(replicates=300, accept_warn=False)
    assert not judge(audit, strict, 0.30).accepted


def test_a_reviewer_override_accepts_a_fail_only_for_its_outcomes():
    audit = run(simulate(under_predicted={"Black": 2.0}))
    override = Override("Dr Reviewer", "known under-recording, correction under way", "FAIL", ("test",))
    gate = judge(audit, AuditSettings(replicates=300, overrides=(override,)), 0.05)
    assert gate.status == "FAIL" and gate.accepted and gate.label() == "FAIL (accepted by Dr Reviewer)"
    other = Override("Dr Reviewer", "known under-recording, correction under way", "FAIL", ("cvd",))
    assert not judge(audit, AuditSettings(replicates=300, overrides=(other,)), 0.05).accepted
    warn_only = Override("Dr Reviewer", "known under-recording, correction under way", "WARN")
    assert not judge(audit, AuditSettings(replicates=300, overrides=(warn_only,)), 0.05).accepted


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
    path.write_text("[audit]\nreplicates = 2000\nratio_band = [0.9, 1.1]\naccept_warn = false\n"
                    "[[audit.override]]\nreviewer = 'Dr R'\nreason = 'accepted at the panel of 1 May'\n"
                    "outcomes = ['cvd']\n")
    settings = load_config(path).audit
    assert settings.replicates == 2000 and settings.ratio_band == (0.9, 1.1) and not settings.accept_warn
    assert settings.overrides[0].covers("cvd") and not settings.overrides[0].covers("t2d")


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
    assert "FAIL [observed/expected]" in captured.out and "Black" in captured.out
    assert "fairness gate says FAIL" in captured.err


@pytest.mark.parametrize("args, message", [
    (["--group", "nope"], "--group nope: no such column"),
    (["--score", "need"], "row 1, column 'need': a score must be a probability"),
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
