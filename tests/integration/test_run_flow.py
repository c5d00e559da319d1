"""The whole flow (phm run) and the lists' content rules.

The session's finished run (tests/shared_run.py: 12,000 synthetic patients in 3 PCNs, ingest to
published lists). The rules a PCN team relies on are checked on its files: only its own
practices' patients, grouped by practice and ranked, reasons that are true for the patient
(re-identified the way a practice would, with its own key), exclusions counted and never on a
list, no raw identifiers. (A refused gate leaving the previous lists in place:
tests/integration/test_faults.py, on a folder of its own.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import polars as pl
import pytest

from flows.config import RunConfig
from flows.publish import published_files
from phm.pseudonymise import practice_key, pseudonym
from tests.shared_run import KEY
from tests.signoff import REVIEWER

pytestmark = pytest.mark.slow


def read_lists(run) -> dict[str, pl.DataFrame]:
    return {pcn: pl.read_csv(path, infer_schema_length=None) for pcn, path in sorted(published_files(run.lists).items())}


def test_one_csv_and_excel_file_per_pcn_with_only_its_own_practices(finished_run):
    practices = pl.read_parquet(finished_run.extract / "practices.parquet")
    pcn_of = dict(practices.select(pl.col("practice_pseudo_id").cast(pl.String), "pcn_code").iter_rows())
    lists = read_lists(finished_run)
    assert sorted(lists) == sorted(set(pcn_of.values()))
    for pcn, rows in lists.items():
        assert rows.height > 0
        assert {pcn_of[str(p)] for p in rows["practice_pseudo_id"].unique()} == {pcn}
        workbook = published_files(finished_run.lists, "xlsx")[pcn]
        assert workbook.name == f"{pcn}_2026-03-31.xlsx"  # the extract's date in every file name
        excel = pl.read_excel(workbook, sheet_name="list", engine="openpyxl")
        assert excel.height == rows.height


def test_the_parquet_list_holds_the_csvs_rows_with_reasons_and_actions_as_lists(finished_run):
    from phm.lists import JOINED_WITH

    for pcn, rows in read_lists(finished_run).items():
        stored = pl.read_parquet(published_files(finished_run.lists, "parquet")[pcn])
        assert stored["pseudonym"].to_list() == rows["pseudonym"].to_list()
        for column, separator in JOINED_WITH.items():
            assert stored.schema[column] == pl.List(pl.String)
            split = [None if text is None else text.split(separator) for text in rows[column].to_list()]
            assert split == stored[column].to_list(), column  # the joined text splits back into the items
        horizon = [c for c in stored.columns if c.startswith("cvd_model_")]
        assert horizon in (["cvd_model_5y_band"], ["cvd_model_10y_band"])  # the horizon is in the name


def test_every_published_workbook_is_a_working_document_that_agrees_with_the_manifest(finished_run):
    """Issue 18's evidence on the real run's workbooks (the spec test has a hand-made one)."""
    from openpyxl import load_workbook

    manifest = json.loads((finished_run.lists / "lists_manifest.json").read_text())
    practices = pl.read_parquet(finished_run.extract / "practices.parquet")
    pcn_of = dict(practices.select(pl.col("practice_pseudo_id").cast(pl.String), "pcn_code").iter_rows())
    for pcn, path in published_files(finished_run.lists, "xlsx").items():
        book = load_workbook(path)
        rows = read_lists(finished_run)[pcn]
        assert book.sheetnames[:2] == ["Read me", "list"] and book.sheetnames[-2:] == ["ethnicity re-ask", "summary"]
        assert len(book.sheetnames) == 4 + rows["practice_pseudo_id"].n_unique()  # a sheet per practice
        reask = pl.read_csv(published_files(finished_run.lists, "reask")[pcn])
        assert book["ethnicity re-ask"].max_row == reask.height + 1 > 1
        assert {pcn_of[str(p)] for p in reask["practice_pseudo_id"].unique()} == {pcn}  # its own practices only
        assert reask["pseudonym"].str.contains("^[0-9a-f]{20}$").all()
        assert reask.filter(pl.col("on_targeting_list"))["pseudonym"].is_in(rows["pseudonym"].to_list()).all()
        for _, practice in reask.group_by("practice_pseudo_id"):  # patients on a list first
            assert practice["on_targeting_list"].to_list() == sorted(practice["on_targeting_list"].to_list(), reverse=True)
        assert next(book["summary"].iter_rows(max_row=1, values_only=True)) == (
            "section", "value", "patients", "registered_adults")
        for section in book["summary"].iter_rows(min_row=2, values_only=True):
            # suppressed, as people read it: "[suppressed]" for 1-7, others rounded to 5
            assert all(v is None or v == "[suppressed]" or int(v.replace(",", "")) % 5 == 0 for v in section[2:])
            if section[0] in ("total", "ethnic group", "IMD quintile", "ethnicity re-ask"):
                assert None not in section[2:]  # every count shown, suppressed or not
        facts = {r[0]: r[1] for r in book["Read me"].iter_rows(values_only=True)}
        assert facts["PCN"] == pcn and facts["list published"] == manifest["published_at"]
        assert facts["extract date"] == manifest["extract_date"] and facts["data as at (index date)"] == \
            manifest["index_date"]
        assert facts["fairness gate"] == manifest["gate"]
        assert "voluntary" in facts["ethnicity re-ask sheet"] and "[suppressed]" in facts["summary sheet"]
        for sheet in book.worksheets[1:-2]:
            assert sheet.freeze_panes == "B2" and sheet.auto_filter.ref.startswith("A1:")
            kinds = {v.type for v in sheet.data_validations.dataValidation}
            assert kinds == {"list", "date"}  # the outcome drop-down and the contacted-on date
        assert book["ethnicity re-ask"].freeze_panes == "B2"
        assert book["list"].max_row == rows.height + 1


def test_rows_are_grouped_by_practice_ranked_and_within_capacity(finished_run):
    for rows in read_lists(finished_run).values():
        assert rows["practice_pseudo_id"].to_list() == sorted(rows["practice_pseudo_id"].to_list())
        for _, practice in rows.group_by("practice_pseudo_id"):
            assert practice["priority_rank"].to_list() == list(range(1, practice.height + 1))
            assert practice["tier"].to_list() == sorted(practice["tier"].to_list())
            assert practice.height <= RunConfig().lists.capacity_per_practice
        assert rows["reasons"].null_count() == 0 and rows["suggested_actions"].null_count() == 0


def reidentified(run) -> pl.DataFrame:
    """What a practice does with its own key: recompute its patients' ids and match them."""
    from phm.db import connect

    con = connect(run.db, read_only=True)
    try:
        features = con.execute("select f.*, s.qrisk3_10y_pct, h.finding from marts.mart_patient_features f "
                               "left join marts.patient_scores s using (patient_id) "
                               "left join marts.mart_hypertension_case_finding h using (patient_id)").pl()
    finally:
        con.close()
    keys = {p: practice_key(KEY.encode(), str(p)) for p in features["practice_pseudo_id"].unique().to_list()}
    features = features.with_columns(pl.Series("pseudonym", [
        pseudonym(keys[p], i) for p, i in zip(features["practice_pseudo_id"], features["patient_id"], strict=True)]))
    rows = pl.concat(read_lists(run).values(), how="diagonal_relaxed")
    return rows.join(features, on="pseudonym", how="left", suffix="_db")


def test_reasons_are_true_for_the_patient_and_excluded_patients_are_never_listed(finished_run):
    joined = reidentified(finished_run)
    assert joined["patient_id"].null_count() == 0  # every id re-identifies with the practice's key
    assert (joined["practice_pseudo_id"] == joined["practice_pseudo_id_db"]).all()
    for row in joined.iter_rows(named=True):
        reasons = row["reasons"]
        if "QRISK3 10-year risk" in reasons:
            assert row["qrisk3_10y_pct"] >= 10 and not row["on_statins"]
        if "predicted risk of a CVD event" in reasons:  # the CVD model's reason is set aside like QRISK3's
            assert not row["on_statins"]
        if "two readings at or above 140/90" in reasons:
            assert row["finding"] == "possible_undiagnosed"
        if "no hypertension diagnosis: urgent" in reasons:
            assert row["finding"] == "possible_undiagnosed_urgent" and row["tier"] == 1
        if "(48 or over) and no diabetes diagnosis" in reasons:
            assert row["hba1c_mmol_mol"] >= 48 and not row["type2_diabetes"]
        assert not row["palliative_care"] and not row["care_home"]
        assert f"{row['age_years'] // 5 * 5}-" in row["age_band"]


def one_to_one_share(first: pl.DataFrame, second: pl.DataFrame, columns: list[str]) -> float:
    """The share of ``first``'s rows whose values in ``columns`` match exactly one row of
    ``second``: the rows someone holding both lists could link one to one."""
    matches = second.group_by(columns).len()
    joined = first.select(columns).join(matches, on=columns, how="left", nulls_equal=True)
    return float((joined["len"] == 1).sum() / first.height)


def test_lists_made_under_two_keys_do_not_link_one_to_one_through_their_other_columns(finished_run, tmp_path):
    """Issue 16 item 14. Same data, two keys: with exact risks (in columns and reasons) and rows
    ranked by exact risk, 98.2-98.5% of the rows (1,178-1,182 of 1,200) matched exactly one row of the other
    list through every column but the pseudonym. With bands and a keyed order within a band:
    4.6-5.4% over six key pairs (1.4-2.1% with capacity per PCN, 7.4-9.3% with core20plus5).
    Ignoring the rank, 94-95% still match: age band, sex, ethnic group, IMD quintile, practice
    and reasons single out a patient (docs/lists.md says what the lists do not protect against)."""
    import shutil

    from phm.lists import ListSettings, build_lists, for_people

    db = tmp_path / "phm.duckdb"
    shutil.copyfile(finished_run.db, db)
    con = duckdb.connect(str(db))
    try:
        index_date = con.execute("select index_date from features.parameters").fetchone()[0]
        first, second = (build_lists(con, ListSettings(), key, index_date) for key in (
            KEY.encode(), b"the ICB's next key, after rotation, 0123456789"))
    finally:
        con.close()
    first.lists, second.lists = for_people(first.lists), for_people(second.lists)  # as a person holds them
    columns = [c for c in first.lists.columns if c != "pseudonym"]
    assert first.lists.height == second.lists.height == 1200
    assert not set(first.lists["pseudonym"]) & set(second.lists["pseudonym"])
    linked = one_to_one_share(first.lists, second.lists, columns)
    assert linked <= 0.10, f"{linked:.1%} of the rows link one to one"
    # what a PCN team relies on holds under either key: tiers in order, every risk a band
    for run in (first, second):
        for _, practice in run.lists.group_by("practice_pseudo_id"):
            ordered = practice.sort("priority_rank")
            assert ordered["tier"].to_list() == sorted(ordered["tier"].to_list())
        assert not run.lists["reasons"].str.contains(r"\d\.\d%").any()
        assert run.lists["qrisk3_10y_band"].drop_nulls().str.contains(r"^\d+(\.\d+)?(-\d+(\.\d+)?%|% or over)$").all()


def test_a_stale_extract_published_as_stale_says_so_in_the_manifest_and_every_workbook(finished_run):
    """The shared run's synthetic extract is dated 2026-03-31 and its settings mark a stale extract
    (tests/signoff.py) instead of refusing it (tests/integration/test_faults.py)."""
    from openpyxl import load_workbook

    manifest = json.loads((finished_run.lists / "lists_manifest.json").read_text())
    assert manifest["extract_date"] == "2026-03-31" and manifest["max_extract_age_days"] == 45
    assert manifest["stale"]["extract_age_days"] == manifest["extract_age_days"] > 45
    assert "STALE DATA" in finished_run.terminal
    for workbook in finished_run.lists.glob("*.xlsx"):
        read_me = load_workbook(workbook, read_only=True)["Read me"]
        first = next(read_me.iter_rows(values_only=True))
        assert first[0] == "STALE DATA" and "2026-03-31" in first[1]


def test_the_run_used_one_temporary_prefect_server_and_stopped_it(finished_run):
    """The shared run starts Prefect's temporary server before it imports Prefect
    (flows/temporary_server.py) and Prefect uses that one: one server, stopped at exit. Had
    Prefect started one of its own beside it, its start would be logged too."""
    started = re.findall(r"Starting temporary server on (\S+)", finished_run.terminal)
    assert len(started) == 1
    assert re.findall(r"Stopping temporary server on (\S+)", finished_run.terminal) == started


def test_a_listed_patient_read_as_white_for_want_of_an_ethnicity_is_asked_to_record_it(finished_run):
    rows = reidentified(finished_run)
    record = "record ethnicity (not known: the risk scores read it as White)"
    actions = rows["suggested_actions"].str.split("; ")
    scored = rows["qrisk3_10y_band"].is_not_null() | rows["qdiabetes_10y_band"].is_not_null()
    asked = actions.list.contains(record).to_list()
    expected = ((rows["ethnicity_category"] == "99") & scored).to_list()
    assert asked == expected and any(asked)  # 'Not stated' (Z) is never asked again here
    # first, unless the patient is urgent: then the urgent review comes first and this after it
    first = (actions.list.first() == record).to_list()
    assert first == [a and not u for a, u in zip(asked, rows["urgent"].to_list(), strict=True)]
    # each PCN's summary counts them (suppressed)
    for path in finished_run.lists.glob("*_summary.csv"):
        summary = pl.read_csv(path)
        row = summary.filter(pl.col("section") == "ethnicity not known")
        assert row.height == 1 and (row["patients"][0] is None or row["patients"][0] % 5 == 0)


def test_exclusions_and_every_candidate_are_counted(finished_run):
    manifest = json.loads((finished_run.lists / "lists_manifest.json").read_text())
    for counts in manifest["pcns"].values():
        assert set(counts) >= {"candidates", "on_list", "over_capacity", "excluded", "listed_earlier_in_period"}
        assert all(v is None or v % 5 == 0 for v in counts.values())  # suppressed: it leaves the pipeline
        assert counts["listed_earlier_in_period"] == 0  # the database's first list
    for warning in manifest["warnings"]:  # the run's warnings are in the manifest as on the terminal
        assert warning in finished_run.terminal
    capacity = manifest["capacity"]  # the period and each PCN's capacity: configuration, not counts
    assert capacity["period"] == "month" and capacity["from"] == manifest["index_date"][:8] + "01"
    assert capacity["pcns"].keys() == manifest["pcns"].keys()
    assert "over capacity (the backlog)" in finished_run.terminal
    con = duckdb.connect(str(finished_run.db), read_only=True)
    listed = con.execute("select count(*) from lists.invitations").fetchone()[0]
    history = con.execute("select * from lists.invitations limit 0").pl().columns
    con.close()
    assert listed == sum(rows.height for rows in read_lists(finished_run).values())
    # no patient id; the groups patients were listed as, for the uptake of invitations by group
    assert history == ["practice_pseudo_id", "pseudonym", "list_date", "urgent", "ethnicity_group", "imd_quintile"]


def test_no_raw_identifier_leaves_in_a_list(finished_run):
    patients = pl.read_parquet(finished_run.extract / "patients.parquet")
    ids = {str(i) for i in patients["patient_id"].to_list()}
    for rows in read_lists(finished_run).values():
        assert not {"patient_id", "date_of_birth", "nhs_number"} & set(rows.columns)
        assert not ids & set(rows["pseudonym"].cast(pl.String).to_list())
        assert rows["pseudonym"].str.contains("^[0-9a-f]{20}$").all()
    text = "".join(p.read_text() for p in finished_run.lists.glob("*.csv")) + \
        (finished_run.lists / "lists_manifest.json").read_text()
    assert KEY not in text


def test_the_manifest_and_mlflow_record_the_gate_decision_and_who_signed_it_off(finished_run):
    from mlflow.tracking import MlflowClient

    manifest = json.loads((finished_run.lists / "lists_manifest.json").read_text())
    decision = manifest["gate_decision"]
    assert set(decision) == {"cvd", "t2d", "hypertension"}
    client = MlflowClient(f"sqlite:///{finished_run.out / 'mlflow' / 'mlflow.db'}")
    tags = client.get_run(manifest["audit_run_id"]).data.tags
    for outcome, entry in decision.items():
        assert entry["may_publish"] is True
        if entry["gate"] == "PASS":
            assert entry["signoff"] is None
        else:  # WARN or FAIL went out only because the named reviewer signed it off
            assert entry["signoff"]["reviewer"] == REVIEWER.reviewer and entry["signoff"]["source"] == "configuration"
            assert tags[f"phm.signoff.{outcome}.reviewer"] == REVIEWER.reviewer
        assert tags[f"phm.fairness_gate.{outcome}.may_publish"] == "true"


def test_the_manifest_names_the_versions_the_run_registered_audited_and_scored_with(finished_run):
    from mlflow.tracking import MlflowClient

    manifest = json.loads((finished_run.lists / "lists_manifest.json").read_text())
    client = MlflowClient(f"sqlite:///{finished_run.out / 'mlflow' / 'mlflow.db'}")
    tags = client.get_run(manifest["audit_run_id"]).data.tags
    for outcome, audited in manifest["models"].items():
        assert audited["taken as"] == "registered by this run's training"
        assert tags[f"phm.fairness_gate.{outcome}.model"] == str(audited["version"])
        scored = manifest["scored_with"][outcome]
        assert scored["taken as"] == f"audited by fairness audit run {manifest['audit_run_id']}"
        if scored["ranks_list"] == "model":
            assert scored["version"] == str(audited["version"])


def test_the_run_reports_codelist_coverage_in_the_data_docs_and_warns_of_nothing(finished_run):
    terminal = finished_run.terminal.splitlines()
    named = [line.split("codelists: ", 1)[1].split(" (", 1)[0] for line in terminal if line.startswith("  codelists: ")]
    assert len(named) == 1
    report = Path(named[0])
    assert report.is_file() and report.parent.name == "local_site"  # beside the Great Expectations pages
    assert not [line for line in terminal if line.startswith("WARN ")]
    coverage = json.loads(report.with_suffix(".json").read_text())
    assert all(c["patients"] is None or c["patients"] % 5 == 0 for c in coverage["concepts"])  # suppressed


def test_the_run_appended_one_history_row_set_its_report_and_its_mlflow_run(finished_run):
    """phm/history.py on a real run: one row in history.runs, its figures suppressed, the exact
    bins only in the database, the report under <out>/history and in MLflow's 'phm history <ICB>'."""
    from mlflow.tracking import MlflowClient

    manifest = json.loads((finished_run.lists / "lists_manifest.json").read_text())
    con = duckdb.connect(str(finished_run.db), read_only=True)
    try:
        runs = con.execute("select * from history.runs").pl()
        figures = con.execute("select * from history.figures").pl()
        bins = con.execute("select score, grp, sum(patients) as n from history.score_bins group by all").pl()
    finally:
        con.close()
    assert runs.height == 1 and runs["published"].to_list() == [True]
    [run] = runs.iter_rows(named=True)
    assert str(run["extract_date"]) == manifest["extract_date"] and run["drift_findings"] == 0
    assert set(figures["run_id"]) == {run["run_id"]}
    assert {"gate", "data quality", "score share", "list size", "patients"} <= set(figures["figure"])
    assert {(r["subject"], r["label"].split(" ")[0]) for r in figures.filter(
        (pl.col("figure") == "gate") & ~pl.col("subject").str.ends_with("ranked by")).iter_rows(named=True)} == \
        {(o, e["gate"]) for o, e in manifest["gate_decision"].items()}
    sizes = figures.filter(pl.col("figure") == "list size")
    assert dict(zip(sizes["subject"], sizes["value"], strict=True)) == \
        {pcn: counts["on_list"] for pcn, counts in manifest["pcns"].items()}  # suppressed as in the manifest
    assert {"QRISK3 10y", "QDiabetes 10y", "cvd list risk", "t2d list risk", "hypertension list risk"} <= \
        set(bins["score"])
    counts = figures.filter(pl.col("figure").is_in(["patients", "list size"]))["value"].drop_nulls()
    assert all(v % 5 == 0 for v in counts)
    report = finished_run.out / "history" / "history_report.html"
    assert report.is_file() and f"history:   {report.resolve()}" in finished_run.terminal
    assert "first of its ICB in the history" in finished_run.terminal
    client = MlflowClient(f"sqlite:///{finished_run.out / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(f"phm history {run['icb']}")
    [logged] = client.search_runs([experiment.experiment_id])
    assert logged.data.tags["phm.pipeline_run"] == run["run_id"] and logged.data.tags["phm.drift"] == "none"
    assert [a.path for a in client.list_artifacts(logged.info.run_id, "history")] == ["history/history_report.html"]


def test_the_run_wrote_the_ethnicity_report_logged_it_with_the_audit_and_appended_its_figures(finished_run):
    """Issue 20: the ethnicity data-quality report beside the fairness report, on the audit's MLflow
    run (artifacts, metrics, flags tag) and in the run history per practice, PCN and ICB."""
    from mlflow.tracking import MlflowClient

    page = finished_run.out / "audit" / "ethnicity_quality.html"
    data = json.loads((finished_run.out / "audit" / "ethnicity_quality.json").read_text())
    assert page.is_file() and f"ethnicity: {page.resolve()}" in finished_run.terminal
    assert "the 2021 census" in page.read_text() and data["rule"]["judged"]  # 6 practices: judged
    practices = [u for u in data["units"] if u["level"] == "practice"]
    assert len(practices) >= 5 and all(u["label"].startswith("Z1") for u in practices)  # by ODS code
    assert data["benchmark"]["any_other_expected_share"] == pytest.approx(0.116, abs=0.001)  # as tests/spec/test_ethnicity_dq.py
    run_id = json.loads((finished_run.lists / "lists_manifest.json").read_text())["audit_run_id"]
    client = MlflowClient(f"sqlite:///{finished_run.out / 'mlflow' / 'mlflow.db'}")
    logged = client.get_run(run_id)
    assert {a.path for a in client.list_artifacts(run_id, "ethnicity")} == {
        "ethnicity/ethnicity_quality.html", "ethnicity/ethnicity_quality.json"}
    assert logged.data.metrics["ethnicity_dq/flagged_practices"] == len({f["practice"] for f in data["flags"]})
    icb = next(u for u in data["units"] if u["level"] == "icb")
    assert logged.data.metrics["ethnicity_dq/icb/ICB/not_known_99"] == icb["figures"]["not_known_99"]["value"]
    assert "phm.ethnicity_dq.flags" in logged.data.tags
    con = duckdb.connect(str(finished_run.db), read_only=True)
    try:
        figures = con.execute("select * from history.figures where figure = 'ethnicity dq'").pl()
    finally:
        con.close()
    assert set(figures["grp"]) == {f"{u['level']} {u['label']}" for u in data["units"]}
    assert figures.filter(pl.col("label") == "flag").height == len(data["flags"])
