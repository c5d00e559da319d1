"""Run history and drift (phm/history.py, phm/history_report.py, models/history_run.py): the
population stability index on hand-made distributions, the suppression of everything the history
lets out, and four runs with drift planted in one group that raises the alert.

The four runs drive ``append_run`` with score frames built here, as four ``phm run`` of an ICB
would (a whole pipeline run takes minutes); the shared finished run's own history is checked in
tests/integration/test_run_flow.py."""

from __future__ import annotations

import datetime as dt
import math
import re

import duckdb
import numpy as np
import polars as pl
import pytest

from phm.alerts import DRIFT, AlertThresholds, drift_alert, thresholds_from
from phm.disclosure import SUPPRESSED_BELOW
from phm.exceptions import ConfigError
from phm.history import (
    BIN_LABELS,
    EPSILON,
    DriftSettings,
    RunFacts,
    append_run,
    bin_counts,
    psi,
    read_history,
)

# -- the population stability index ----------------------------------------------------------


def test_identical_distributions_have_a_psi_of_zero():
    assert psi([10, 20, 30, 40], [10, 20, 30, 40]) == 0
    assert psi([10, 20, 30, 40], [20, 40, 60, 80]) == pytest.approx(0, abs=1e-15)  # shares, not counts


def test_a_known_shift_gives_the_textbook_value():
    # half and half, then a quarter and three quarters:
    # (0.25 - 0.5) ln(0.25/0.5) + (0.75 - 0.5) ln(0.75/0.5) = 0.25 ln 2 + 0.25 ln 1.5 = 0.2747
    assert psi([50, 50], [25, 75]) == pytest.approx(0.25 * math.log(2) + 0.25 * math.log(1.5))
    assert psi([50, 50], [25, 75]) == pytest.approx(0.2747, abs=1e-4)
    # ten deciles of the baseline; now the bottom two hold 5% each, the top two 15%:
    # 2 x (0.05 - 0.1) ln(0.5) + 2 x (0.15 - 0.1) ln(1.5) = 0.1 ln 2 + 0.1 ln 1.5 = 0.1099
    assert psi([10] * 10, [5, 5, 10, 10, 10, 10, 10, 10, 15, 15]) == pytest.approx(0.1099, abs=1e-4)
    # symmetric: PSI is a symmetrised Kullback-Leibler divergence
    assert psi([25, 75], [50, 50]) == pytest.approx(psi([50, 50], [25, 75]))


def test_an_empty_bin_counts_as_a_share_of_epsilon_and_two_empty_bins_as_nothing():
    assert EPSILON == 0.0001
    # a bin empty before and holding 10% now: (0.1 - 0.0001) ln(0.1 / 0.0001); the middle bin 0.5 -> 0.4
    expected = (0.1 - EPSILON) * math.log(0.1 / EPSILON) + (0.4 - 0.5) * math.log(0.4 / 0.5)
    assert psi([50, 50, 0], [50, 40, 10]) == pytest.approx(expected)
    assert psi([50, 50, 0], [50, 40, 10]) == pytest.approx(0.7124, abs=1e-4)
    assert psi([50, 0, 50], [50, 0, 50]) == 0  # empty in both: no contribution, no error
    with pytest.raises(ValueError, match="no patients"):
        psi([0, 0], [1, 1])
    with pytest.raises(ValueError, match="different numbers of bins"):
        psi([1, 2], [1, 2, 3])


def test_scores_fall_in_fixed_left_closed_bins_every_bin_present():
    scores = pl.DataFrame({"score": ["QRISK3 10y"] * 6, "grp": ["White", "White", "Black", "Black", None, "White"],
                           "risk_pct": [0.0, 0.5, 4.99, 5.0, 100.0, None]})
    bins = bin_counts(scores)
    assert bins.height == 3 * len(BIN_LABELS) + len(BIN_LABELS)  # White, Black, Not known, and 'all'
    got = {(r["grp"], r["bin"]): r["patients"] for r in bins.iter_rows(named=True) if r["patients"]}
    assert got == {("White", "0-0.5%"): 1, ("White", "0.5-1%"): 1, ("Black", "3-5%"): 1, ("Black", "5-7.5%"): 1,
                   ("Not known", "50-100%"): 1,  # no group recorded reads as 'Not known'; 100% is in the last bin
                   ("all", "0-0.5%"): 1, ("all", "0.5-1%"): 1, ("all", "3-5%"): 1, ("all", "5-7.5%"): 1,
                   ("all", "50-100%"): 1}


# -- four runs, drift planted in one group on the fourth -------------------------------------

GROUPS = {"White": 3000, "Asian": 900, "Black": 700, "Mixed": 150}  # Mixed: too few to judge


def _scores(seed: int, shifted: str | None = None) -> tuple[pl.DataFrame, pl.Series]:
    """Each group's QRISK3 and a model's list risk, log-normal around a group's own level; the
    ``shifted`` group's risks 2.5 times higher (a practice with older patients joined, say)."""
    rng = np.random.default_rng(seed)
    frames, groups = [], []
    for i, (group, n) in enumerate(GROUPS.items()):
        for score, centre in (("QRISK3 10y", 6.0 + i), ("cvd list risk", 3.0 + i)):
            risk = np.exp(rng.normal(math.log(centre), 0.8, n)) * (2.5 if group == shifted else 1.0)
            frames.append(pl.DataFrame({"score": score, "grp": group, "risk_pct": np.minimum(risk, 99.0)}))
        groups += [group] * n
    groups += ["Not stated"] * 40 + ["Not known"] * 6
    return pl.concat(frames), pl.Series(groups)


def _facts(i: int, gate: str = "PASS") -> RunFacts:
    signoff = {"reviewer": "Dr A. Reviewer", "reason": "known", "source": "configuration"} if gate != "PASS" else None
    return RunFacts(f"run-{i}", dt.datetime(2026, 4 + i, 2, 6, 0, tzinfo=dt.UTC), "QXX", dt.date(2026, 3 + i, 28),
                    dt.date(2026, 3 + i, 28), True,
                    {"cvd": {"gate": gate, "may_publish": True, "ranks_list": "model", "signoff": signoff}},
                    {"clinical_events": (31, 10_000), "patients": (3, 4_796)})


@pytest.fixture(scope="module")
def four_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("history")
    con = duckdb.connect(str(folder / "phm.duckdb"))
    appended = []
    for i in range(1, 5):
        scores, groups = _scores(seed=i, shifted="Black" if i == 4 else None)
        appended.append(append_run(con, _facts(i, "WARN" if i == 2 else "PASS"), scores, groups,
                                   {"U00001": 203 + i, "U00002": 5}, None, DriftSettings(0.2, 500)))
    yield folder, con, appended
    con.close()


def test_the_first_run_has_no_drift_to_measure(four_runs):
    _, _, appended = four_runs
    assert appended[0].drift == [] and "first of its ICB" in appended[0].summary_lines()[0]


def test_only_the_planted_group_drifts_and_small_groups_are_not_judged(four_runs):
    _, _, appended = four_runs
    for run in appended[1:3]:  # the same population drawn again: noise only
        assert run.findings == [], [(d.score, d.grp, d.psi) for d in run.findings]
        assert all(d.psi < 0.1 for d in run.drift if d.judged)
    fourth = appended[3]
    assert {(d.score, d.grp) for d in fourth.findings} == {("QRISK3 10y", "Black"), ("cvd list risk", "Black")}
    assert all(d.psi > 0.5 for d in fourth.findings)
    others = [d for d in fourth.drift if d.judged and d.grp != "Black"]
    assert others and all(d.psi < 0.2 for d in others)  # 'all' moves too, but under the threshold
    mixed = [d for d in fourth.drift if d.grp == "Mixed"]
    assert mixed and all(not d.judged and d.psi is None and not d.drifted for d in mixed)
    assert all(d.previous_run_id == "run-3" for d in fourth.drift)
    assert any(line.startswith("  DRIFT: QRISK3 10y, Black: PSI") for line in fourth.summary_lines())


def test_the_drift_raises_the_alert_naming_the_icb_the_condition_and_where_to_look(four_runs):
    folder, _, appended = four_runs
    findings = [(d.score, d.grp, d.psi) for d in appended[3].findings]
    report = str(folder / "history" / "history_report.html")
    alert = drift_alert("QXX", 0.2, findings, report)
    assert alert.condition == DRIFT and alert.event == "phm.scores.drift"
    assert alert.subject == "phm-risk ICB QXX: score drift between runs"
    assert alert.message.startswith("ICB QXX: score drift between runs: ")
    assert re.search(r"QRISK3 10y for Black \(PSI \d\.\d\d\)", alert.message)
    assert "cvd list risk for Black" in alert.message and "White" not in alert.message
    assert report in alert.message and alert.where == report and "phm history QXX" in alert.message
    # nothing from a patient: besides dates and the path, the only numbers are the PSIs and the threshold
    numbers = re.findall(r"\d+(?:\.\d+)?", alert.message.replace(report, "").replace("QRISK3", "").replace("10y", ""))
    assert sorted(numbers) == sorted([f"{v:.2f}" for _, _, v in findings] + ["0.2", "0.1", "0.25"])
    assert alert.payload()["groups"] == ["Black"] and alert.payload()["condition"] == "drift"
    assert drift_alert("QXX", 0.2, [], report) is None  # no finding, no alert


def test_everything_the_history_lets_out_is_suppressed(four_runs):
    _, con, _ = four_runs
    runs, figures = read_history(con, "QXX")
    assert runs["run_id"].to_list() == ["run-1", "run-2", "run-3", "run-4"]
    assert all(p % 5 == 0 for p in runs["patients"])
    counts = figures.filter(pl.col("figure").is_in(["patients", "list size"]))
    assert counts.height and all(v is None or v % 5 == 0 for v in counts["value"])
    assert counts.filter(pl.col("subject") == "U00002")["value"].to_list() == [None] * 4  # 5 on a list: suppressed
    assert counts.filter(pl.col("subject") == "U00001")["value"].to_list() == [205, 205, 205, 205]  # 204-207
    # a share of a bin holding 1-7 patients is withheld; every other share is from rounded counts
    exact = con.execute("select run_id, score, grp, bin, patients from history.score_bins").pl()
    shares = figures.filter(pl.col("figure") == "score share").join(
        exact, left_on=["run_id", "subject", "grp", "bin"], right_on=["run_id", "score", "grp", "bin"])
    assert shares.height == exact.height
    small = shares.filter((pl.col("patients") > 0) & (pl.col("patients") < SUPPRESSED_BELOW))
    assert small.height > 0 and small["value"].null_count() == small.height
    quality = {r["subject"]: r["value"] for r in figures.filter((pl.col("figure") == "data quality")
                                                                & (pl.col("run_id") == "run-1")).iter_rows(named=True)}
    assert quality["ethnicity 99 not known"] is None  # 6 patients: withheld
    assert quality["ethnicity Z not stated"] == round(40 / 4795, 4)  # 40 of 4,796, from rounded counts
    assert quality["quarantined: clinical_events"] == 0.003  # 30 of 10,000 (31 rounded to 5)
    assert quality["quarantined: patients"] is None  # 3 rows: withheld
    gate = figures.filter((pl.col("figure") == "gate") & (pl.col("subject") == "cvd"))["label"].to_list()
    assert gate == ["PASS", "WARN signed off by Dr A. Reviewer", "PASS", "PASS"]
    # no exact count leaves: every number in figures is a rounded count, a share, or a PSI
    values = figures.filter(pl.col("value").is_not_null() & ~pl.col("figure").is_in(["psi"]))["value"]
    assert all(v % 5 == 0 or 0 <= v <= 1 for v in values)


def test_a_run_is_appended_once(four_runs):
    _, con, _ = four_runs
    scores, groups = _scores(1)
    with pytest.raises(ValueError, match="already in the history"):
        append_run(con, _facts(1), scores, groups)


def _report(four_runs):
    from phm.history_report import write_report

    folder, con, _ = four_runs
    runs, figures = read_history(con, "QXX")
    return write_report(runs, figures, folder / "history", "QXX", DriftSettings(0.2, 500))


def test_the_report_plots_the_history_on_one_self_contained_page(four_runs):
    text = _report(four_runs).read_text()
    assert text.count("data:image/png;base64,") >= 6  # plots embedded: the page stands alone
    assert not re.search(r"""src=["'](?!data:)""", text) and "<link" not in text
    assert "QRISK3 10y / Black" in text and "WARN signed off by Dr A. Reviewer" in text


@pytest.mark.slow  # an MLflow store made from nothing: about 20 s on a busy machine
def test_each_run_of_the_history_is_an_mlflow_run_with_the_report(four_runs, tmp_path):
    from mlflow.tracking import MlflowClient

    from models.history_run import HistoryRecord, experiment_name, log_history
    from models.tracking import tracking_location

    _, _, appended = four_runs
    report = _report(four_runs)
    location = tracking_location(tmp_path)
    run_id = log_history(HistoryRecord(appended[3], report), _facts(4), location)
    client = MlflowClient(location.tracking_uri)
    run = client.get_run(run_id)
    assert client.get_experiment(run.info.experiment_id).name == experiment_name("QXX") == "phm history QXX"
    assert run.data.tags["phm.drift"] == "QRISK3 10y / Black, cvd list risk / Black"
    assert run.data.metrics["psi/QRISK3_10y/Black"] > 0.5
    assert [a.path for a in client.list_artifacts(run_id, "history")] == ["history/history_report.html"]


def test_drift_thresholds_are_alerts_configuration():
    assert AlertThresholds().max_score_psi == 0.2 and AlertThresholds().min_drift_group == 500
    assert thresholds_from({"max_score_psi": 0.25, "min_drift_group": 1000}) == \
        AlertThresholds(max_score_psi=0.25, min_drift_group=1000)
    with pytest.raises(ConfigError, match=r"alerts\.max_score_psi: a population stability index above 0"):
        thresholds_from({"max_score_psi": 0})
    with pytest.raises(ConfigError, match=r"alerts\.min_drift_group: a number of patients, at least 100"):
        thresholds_from({"min_drift_group": 10})


def test_a_refused_run_is_kept_with_its_gate_and_validated_scores_but_no_list_risk(tmp_path):
    """The flow records a run the gate refused (flows/run.py ``_history``, published=False):
    its gate and data quality and the validated scores; the list risks of an earlier run still
    in marts.risk_scores are not read, and it has no list sizes."""
    from models.history_run import record_history

    db = tmp_path / "phm.duckdb"
    con = duckdb.connect(str(db))
    con.execute("create schema marts")
    con.execute("create table marts.risk_scores as select 1 as patient_id, 0.5 as cvd_model_risk")  # a stale one
    con.close()
    rng = np.random.default_rng(5)
    features = pl.DataFrame({"patient_id": range(600), "ethnicity_group": ["White"] * 500 + ["Black"] * 100,
                             "qrisk3_10y_pct": rng.uniform(0, 30, 600), "qdiabetes_10y_pct": rng.uniform(0, 20, 600)})
    facts = _facts(1)
    facts.published = False
    facts.gate = {"cvd": {"gate": "FAIL", "may_publish": False, "ranks_list": "model", "signoff": None}}
    record = record_history(db, facts, features, tmp_path, None, DriftSettings(), scored=False)
    assert record.mlflow_run_id is None and record.report == tmp_path / "history" / "history_report.html"
    con = duckdb.connect(str(db), read_only=True)
    runs, figures = read_history(con, "QXX")
    con.close()
    assert runs["published"].to_list() == [False] and runs["gate"].to_list() == ["FAIL (refused)"]
    assert set(figures.filter(pl.col("figure") == "score share")["subject"]) == {"QRISK3 10y", "QDiabetes 10y"}
    assert figures.filter(pl.col("figure") == "list size").is_empty()
    assert figures.filter(pl.col("figure") == "gate")["label"].to_list()[0] == "FAIL, not signed off"
    assert "Lists published" not in record.report.read_text() and "FAIL (refused)" in record.report.read_text()


def test_a_change_in_what_ranks_a_list_is_noted_with_the_drift(tmp_path):
    """Under do no harm QRISK3 ranks the CVD list in one run and the model in the next: the list
    risk's distribution moves with that, and the summary and the alert say why."""
    con = duckdb.connect(str(tmp_path / "phm.duckdb"))
    scores, groups = _scores(1)
    first = _facts(1)
    first.gate = {"cvd": {"gate": "WARN", "may_publish": True, "ranks_list": "QRISK3-2017", "signoff": None}}
    assert append_run(con, first, scores, groups).ranking_changes == []
    appended = append_run(con, _facts(2), *_scores(2))
    con.close()
    change = ("the cvd list was ranked by QRISK3-2017 in the previous run and by model in this one, so its list "
              "risk's distribution moves with that")
    assert appended.ranking_changes == [change]
    assert f"  note: {change}" in appended.summary_lines()
    alert = drift_alert("QXX", 0.2, [("cvd list risk", "all", 0.31)], "/r.html", appended.ranking_changes)
    assert f"Note: {change}. Look for a change" in alert.message
