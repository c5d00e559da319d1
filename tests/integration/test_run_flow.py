"""The whole flow (phm run) under a Prefect test harness, and the lists' content rules.

One 12,000-patient synthetic extract in 2 PCNs runs ingest to published lists. Then the rules
a PCN team relies on are checked on the files: only its own practices' patients, grouped by
practice and ranked, reasons that are true for the patient (re-identified the way a practice
would, with its own key), exclusions counted and never on a list, no raw identifiers, and a
failed run leaving the previous lists in place.
"""

from __future__ import annotations

import json

import duckdb
import polars as pl
import pytest

from models.fairness import AuditSettings, SignOff
from phm.config import RunConfig
from phm.exceptions import FairnessGateFailed
from phm.pseudonymise import KEY_VARIABLE, practice_key, pseudonym
from tests.servers import prefect_harness

pytestmark = pytest.mark.slow
KEY = "a-test-key-that-is-long-enough-0123456789"
# a WARN or FAIL needs a named reviewer's sign-off before any list goes out (docs/fairness.md)
REVIEWER = SignOff("Test Reviewer, flow tests", "a 12,000-patient synthetic extract: small groups reviewed by the test",
                   "FAIL")
SIGNED_OFF = RunConfig(audit=AuditSettings(signoffs=(REVIEWER,)))


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory):
    from flows.run import run_flow
    from phm.synth import SynthConfig, generate

    folder = tmp_path_factory.mktemp("run")
    generate(SynthConfig(patients=12_000, seed=11, pcns=2), folder / "extract")
    with pytest.MonkeyPatch.context() as patch, prefect_harness():
        patch.setenv(KEY_VARIABLE, KEY)
        summary = run_flow(folder / "extract", folder / "out", SIGNED_OFF)
        yield folder, summary, patch


def read_lists(summary) -> dict[str, pl.DataFrame]:
    return {p.stem: pl.read_csv(p, infer_schema_length=None) for p in sorted(summary.lists_link.glob("*.csv"))
            if not p.stem.endswith("_summary")}


def test_one_csv_and_excel_file_per_pcn_with_only_its_own_practices(flow_run):
    folder, summary, _ = flow_run
    practices = pl.read_parquet(folder / "extract" / "practices.parquet")
    pcn_of = dict(practices.select(pl.col("practice_pseudo_id").cast(pl.String), "pcn_code").iter_rows())
    lists = read_lists(summary)
    assert sorted(lists) == sorted(set(pcn_of.values()))
    for pcn, rows in lists.items():
        assert rows.height > 0
        assert {pcn_of[str(p)] for p in rows["practice_pseudo_id"].unique()} == {pcn}
        assert (summary.lists_link / f"{pcn}.xlsx").is_file()
        excel = pl.read_excel(summary.lists_link / f"{pcn}.xlsx", sheet_name="list", engine="openpyxl")
        assert excel.height == rows.height


def test_rows_are_grouped_by_practice_ranked_and_within_capacity(flow_run):
    _, summary, _ = flow_run
    for rows in read_lists(summary).values():
        assert rows["practice_pseudo_id"].to_list() == sorted(rows["practice_pseudo_id"].to_list())
        for _, practice in rows.group_by("practice_pseudo_id"):
            assert practice["priority_rank"].to_list() == list(range(1, practice.height + 1))
            assert practice["tier"].to_list() == sorted(practice["tier"].to_list())
            assert practice.height <= RunConfig().lists.capacity_per_practice
        assert rows["reasons"].null_count() == 0 and rows["suggested_actions"].null_count() == 0


def reidentified(folder, summary) -> pl.DataFrame:
    """What a practice does with its own key: recompute its patients' ids and match them."""
    from features.run import connect

    con = connect(summary.db, read_only=True)
    try:
        features = con.execute("select f.*, s.qrisk3_10y_pct, h.finding from marts.mart_patient_features f "
                               "left join marts.patient_scores s using (patient_id) "
                               "left join marts.mart_hypertension_case_finding h using (patient_id)").pl()
    finally:
        con.close()
    keys = {p: practice_key(KEY.encode(), str(p)) for p in features["practice_pseudo_id"].unique().to_list()}
    features = features.with_columns(pl.Series("pseudonym", [
        pseudonym(keys[p], i) for p, i in zip(features["practice_pseudo_id"], features["patient_id"], strict=True)]))
    rows = pl.concat(read_lists(summary).values(), how="diagonal_relaxed")
    return rows.join(features, on="pseudonym", how="left", suffix="_db")


def test_reasons_are_true_for_the_patient_and_excluded_patients_are_never_listed(flow_run):
    folder, summary, _ = flow_run
    joined = reidentified(folder, summary)
    assert joined["patient_id"].null_count() == 0  # every id re-identifies with the practice's key
    assert (joined["practice_pseudo_id"] == joined["practice_pseudo_id_db"]).all()
    for row in joined.iter_rows(named=True):
        reasons = row["reasons"]
        if "QRISK3 10-year risk" in reasons:
            assert row["qrisk3_10y_pct"] >= 10 and not row["on_statins"]
        if "two readings at or above 140/90" in reasons:
            assert row["finding"] == "possible_undiagnosed"
        if "no hypertension diagnosis: urgent" in reasons:
            assert row["finding"] == "possible_undiagnosed_urgent" and row["tier"] == 1
        if "(48 or over) and no diabetes diagnosis" in reasons:
            assert row["hba1c_mmol_mol"] >= 48 and not row["type2_diabetes"]
        assert not row["palliative_care"] and not row["care_home"]
        assert f"{row['age_years'] // 5 * 5}-" in row["age_band"]


def test_exclusions_and_every_candidate_are_counted(flow_run):
    _, summary, _ = flow_run
    manifest = json.loads((summary.lists_link / "lists_manifest.json").read_text())
    for counts in manifest["pcns"].values():
        assert set(counts) >= {"candidates", "on_list", "over_capacity", "excluded"}
        assert all(v is None or v % 5 == 0 for v in counts.values())  # suppressed: it leaves the pipeline
    con = duckdb.connect(str(summary.db), read_only=True)
    listed = con.execute("select count(*) from lists.invitations").fetchone()[0]
    con.close()
    assert listed == sum(rows.height for rows in read_lists(summary).values())


def test_no_raw_identifier_leaves_in_a_list(flow_run):
    folder, summary, _ = flow_run
    patients = pl.read_parquet(folder / "extract" / "patients.parquet")
    ids = {str(i) for i in patients["patient_id"].to_list()}
    for rows in read_lists(summary).values():
        assert not {"patient_id", "date_of_birth", "nhs_number"} & set(rows.columns)
        assert not ids & set(rows["pseudonym"].cast(pl.String).to_list())
        assert rows["pseudonym"].str.contains("^[0-9a-f]{20}$").all()
    text = "".join(p.read_text() for p in summary.lists_link.glob("*.csv")) + \
        (summary.lists_link / "lists_manifest.json").read_text()
    assert KEY not in text


def test_the_manifest_and_mlflow_record_the_gate_decision_and_who_signed_it_off(flow_run):
    from mlflow.tracking import MlflowClient

    folder, summary, _ = flow_run
    manifest = json.loads((summary.lists_link / "lists_manifest.json").read_text())
    decision = manifest["gate_decision"]
    assert set(decision) == {"cvd", "t2d", "hypertension"}
    client = MlflowClient(f"sqlite:///{folder / 'out' / 'mlflow' / 'mlflow.db'}")
    tags = client.get_run(manifest["audit_run_id"]).data.tags
    for outcome, entry in decision.items():
        assert entry["may_publish"] is True
        if entry["gate"] == "PASS":
            assert entry["signoff"] is None
        else:  # WARN or FAIL went out only because the named reviewer signed it off
            assert entry["signoff"]["reviewer"] == REVIEWER.reviewer and entry["signoff"]["source"] == "configuration"
            assert tags[f"phm.signoff.{outcome}.reviewer"] == REVIEWER.reviewer
        assert tags[f"phm.fairness_gate.{outcome}.may_publish"] == "true"


def test_a_gate_that_refuses_leaves_the_previous_lists_published(flow_run):
    from flows.run import run_flow

    folder, summary, patch = flow_run
    before = summary.lists_link.resolve()
    files = {p.name: p.read_bytes() for p in before.iterdir()}
    strict = RunConfig(audit=AuditSettings(min_patients=10**9))  # every group too small: WARN, and no sign-off
    with prefect_harness():
        with pytest.raises(FairnessGateFailed, match="the fairness gate refused .*(FAIL|awaiting a reviewer's "
                           "sign-off).*no list is produced and the previous lists stay published"):
            run_flow(folder / "extract", folder / "out", strict)
    assert summary.lists_link.resolve() == before
    assert {p.name: p.read_bytes() for p in before.iterdir()} == files


def test_the_run_reports_codelist_coverage_in_the_data_docs_and_warns_of_nothing(flow_run):
    folder, summary, _ = flow_run
    assert summary.coverage_report is not None and summary.coverage_report.is_file()
    assert summary.coverage_report.parent.name == "local_site"  # beside the Great Expectations pages
    assert not [line for line in summary.lines if line.startswith("WARN ")]
    coverage = json.loads(summary.coverage_report.with_suffix(".json").read_text())
    assert all(c["patients"] is None or c["patients"] % 5 == 0 for c in coverage["concepts"])  # suppressed
