"""Do no harm against the standard (models/fairness/_standard.py) on small hand-made tables: a
trained model worse than QDiabetes for one group on the same validation patients does not become
champion, and the validated score ranks that outcome's list."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import duckdb
import numpy as np
import polars as pl

from models.fairness import AuditSettings
from models.fairness._decision import decide
from models.fairness._gate import GateResult
from models.fairness._standard import GroupComparison, StandardComparison, compare
from phm.pseudonymise import pseudonymise

SETTINGS = AuditSettings(replicates=300, seed=1)


def validation(model_factor: dict[str, float], n: int = 12_000, seed: int = 2) -> pl.DataFrame:
    """Patients whose outcome is drawn from the standard's risk (the standard is right); the
    model's risk is the standard's, divided by ``model_factor[group]`` for some groups."""
    rng = np.random.default_rng(seed)
    group = rng.choice(np.array(["White", "Asian", "Black"]), n, p=[0.6, 0.25, 0.15])
    standard = np.clip(rng.beta(2, 25, n), 1e-4, 0.9)
    outcome = (rng.random(n) < standard).astype(np.int8)
    model = standard.copy()
    for g, factor in model_factor.items():
        model = np.where(group == g, model / factor, model)
    return pl.DataFrame({"group": group, "score": model, "standard": standard, "outcome": outcome})


def test_a_model_worse_than_the_standard_for_one_group_is_not_used_and_the_report_says_why():
    comparison = compare({"t2d": validation({"Black": 4.0})}, SETTINGS)["t2d"]
    assert comparison.model_is_worse and comparison.ranks_list == "QDiabetes-2018"
    worse = {g.group: g.worse for g in comparison.groups}
    assert worse["Black"] and not worse["White"] and not worse["Asian"]
    assert any("for Black, the trained model's" in r for r in comparison.reasons())
    decision = decide([GateResult("t2d")], (), {"t2d": comparison})
    assert decision.may_publish("t2d")  # the list goes out ...
    assert not decision.becomes_champion("t2d")  # ... ranked by QDiabetes, not the model
    assert decision.ranks_list("t2d") == "QDiabetes-2018"


def test_a_model_as_good_as_the_standard_ranks_its_list():
    comparison = compare({"t2d": validation({})}, SETTINGS)["t2d"]
    assert not comparison.model_is_worse and comparison.ranks_list == "model"
    decision = decide([GateResult("t2d")], (), {"t2d": comparison})
    assert decision.becomes_champion("t2d")


def test_the_report_shows_each_groups_comparison_and_what_ranks_the_list(tmp_path):
    """The fairness report's do-no-harm section (issue 22: "show the per-group comparison with
    QRISK3 and QDiabetes in the report, on the same patients"): per group, both scores' figures,
    their difference with its interval, and the group the model is worse for; counts suppressed."""
    import json

    from models.fairness._report import AuditReport

    comparison = compare({"t2d": validation({"Black": 4.0})}, SETTINGS)["t2d"]
    gate = GateResult("t2d")
    report = AuditReport("Test audit", SETTINGS, [], [gate], None, {}, {},
                         decision=decide([gate], (), {"t2d": comparison}))
    json_path, html_path = report.write(tmp_path)
    data, page = json.loads(json_path.read_text()), html_path.read_text()

    assert data["compared_with_standard"]["t2d"]["ranks_list"] == "QDiabetes-2018"
    assert "the list is ranked by <b>QDiabetes-2018</b>" in page
    black = next(g for g in comparison.groups if g.group == "Black")
    figure = black.figures["calibration error |log O/E|"]
    # counts rounded to 5 (disclosure control), figures to 3 significant digits
    row = (f"<td>Black</td><td>{round(black.patients / 5) * 5:,}</td><td>{round(black.events / 5) * 5:,}</td>"
           f"<td>calibration error |log O/E|</td><td>{figure['model']:.3g}</td><td>{figure['standard']:.3g}</td>"
           f"<td>{figure['difference']:.3g} <span class=note>({figure['low']:.3g} to {figure['high']:.3g})</span></td>"
           "<td>yes</td><td><b>yes</b></td></tr>")
    assert row in page, page[page.find("Do no harm"):][:3000]
    for group in ("White", "Asian"):
        assert f"<td>{group}</td>" in page


# --- the list do no harm hands to the validated score ----------------------------------------------

INDEX_DATE = dt.date(2026, 3, 31)
KEY = b"k" * 32
# 20 patients of one practice, each with a reason that lists them whatever their risk (no blood
# pressure in 5 years), so that only the ranking risk orders them. QRISK3 rises with the patient
# number and stays under its 10% threshold (no QRISK3 reason of its own); the trained model's
# 5-year CVD risk falls with it: the two scores rank the practice in reverse.
PATIENT_IDS = list(range(1, 21))
QRISK3 = [0.45 * i for i in PATIENT_IDS]  # 0.45-9%
MODEL_CVD = [(21 - i) / 200 for i in PATIENT_IDS]  # 10%-0.5%


def one_practice_database() -> duckdb.DuckDBPyConnection:
    """The tables phm.lists.build_lists reads, every one from the same hand-made rows (extra
    columns are not read), except marts.risk_scores: scoring writes that (``ranking_risks``)."""
    rows = pl.DataFrame({
        "patient_id": PATIENT_IDS, "practice_pseudo_id": 1, "pcn_code": "U00001", "age_years": 60, "sex": "F",
        "ethnicity_group": "White", "ethnicity_category": "A", "ethnicity_has_conflicting_codes": False,
        "imd_quintile": 3, "core20": False, "palliative_care": False, "care_home": False,
        "type1_diabetes": False, "type2_diabetes": False, "on_statins": False, "statin_exclusion": None,
        "nhs_health_check_5y": False, "ndh_coded": False, "gestational_diabetes": False,
        "hba1c_mmol_mol": None, "hba1c_date": INDEX_DATE, "fasting_glucose_mmol_l": None,
        "fasting_glucose_date": INDEX_DATE, "qrisk3_10y_pct": QRISK3, "qdiabetes_10y_pct": None,
        "qrisk3_notes": None, "qdiabetes_notes": None, "finding": "no_bp_in_5_years",
        "finding_reason": "no blood pressure reading in 5 years", "monitoring_12_months": False},
        schema_overrides={"statin_exclusion": pl.String, "hba1c_mmol_mol": pl.Float64,
                          "fasting_glucose_mmol_l": pl.Float64, "qdiabetes_10y_pct": pl.Float64,
                          "qrisk3_notes": pl.String, "qdiabetes_notes": pl.String})
    con = duckdb.connect()
    for schema in ("marts", "features", "ref"):
        con.execute(f"create schema {schema}")
    con.execute("create table features.parameters as select ?::date as index_date", [INDEX_DATE])
    con.register("rows", rows.to_arrow())
    for table in ("marts.mart_patient_features", "marts.patient_scores", "marts.mart_hypertension_case_finding"):
        con.execute(f"create table {table} as select * from rows")
    con.execute("create table main.practices as select 1 as practice_pseudo_id, 'A00001' as ods_code, "
                "'The Surgery' as practice_name")
    con.execute("create table main.clinical_events (patient_id bigint, date date, snomedct_code varchar)")
    con.execute("create table ref.codelist_codes (concept varchar, code varchar, category varchar)")
    return con


class Registry:
    """MLflow's model registry as scoring reads it (models/score_models.py ``model_in_use``): a
    version's tags, which the audit wrote from its decision (``version_tags``) beside training's."""

    def __init__(self, decision):
        self.decision = decision

    def get_model_version(self, name: str, version: str):
        outcome = name.rsplit("-", 1)[1]
        return SimpleNamespace(version=version, tags={**self.decision.version_tags(outcome),
                                                      "phm.variant": "with_ethnicity", "phm.horizon_years": "5"})


def published_list(cvd_comparison: StandardComparison):
    """The audit's decision, with ``cvd_comparison`` as do no harm's, through scoring's and the
    lists' own code: the PCN's list (capacity 5), the lists' manifest as the run writes it, and
    the Read me sheet's rows."""
    from models.score_models import ScoreRun, model_in_use, ranking_risks
    from models.tracking import ModelVersion
    from phm.lists import ListSettings, build_lists
    from phm.workbook import read_me_rows

    decision = decide([GateResult(o) for o in ("cvd", "t2d", "hypertension")], (), {"cvd": cvd_comparison})
    registry = Registry(decision)
    models = [model_in_use(registry, ModelVersion(o, f"phm-QXX-{o}", "3", "run", "training", "candidate",
                                                  "registered by this run's training"))
              for o in ("cvd", "t2d", "hypertension")]
    con = one_practice_database()
    features = con.execute("select patient_id, qrisk3_10y_pct, qdiabetes_10y_pct from marts.patient_scores").pl()
    risks = pl.DataFrame({"patient_id": PATIENT_IDS, "score_cvd": MODEL_CVD, "score_t2d": None,
                          "score_hypertension": None}, schema_overrides={"score_t2d": pl.Float64,
                                                                          "score_hypertension": pl.Float64})
    con.register("scores", ranking_risks(features, risks, models).to_arrow())
    con.execute("create table marts.risk_scores as select * from scores")
    run = build_lists(con, ListSettings(capacity_per_practice=5), KEY, INDEX_DATE)
    con.close()
    manifest = {"gate_decision": decision.manifest(), "scored_with": ScoreRun(models, 20, {}, 0.0).manifest()}
    return run.lists, manifest, dict(read_me_rows("U00001", manifest, run.lists.columns))


def pseudonyms_of(patients: list[int]) -> list[str]:
    frame = pl.DataFrame({"patient_id": patients, "practice_pseudo_id": 1})
    return pseudonymise(frame, KEY).to_list()


def test_a_list_the_validated_score_ranks_is_ordered_and_explained_by_it_and_says_so():
    """Issue 22: where do no harm finds the trained model worse than QRISK3 for a group, QRISK3
    ranks the CVD list. From the decision to the published list, through the registry's tags,
    scoring's ``ranking_risks`` and ``build_lists``: the patients QRISK3 ranks highest fill the
    capacity in QRISK3's order, their reason states QRISK3's 10-year risk and names it, and the
    manifest and the workbook's Read me say QRISK3 ranked it (the fairness report's saying so is
    ``test_the_report_shows_each_groups_comparison_and_what_ranks_the_list``). The same patients
    with no group worse are ranked by the model, in the reverse order, and its reason says "model"."""
    worse = GroupComparison("Black", 400, 40, True, {"calibration error |log O/E|": {
        "model": 0.40, "standard": 0.05, "difference": 0.35, "low": 0.20, "high": 0.50, "p": 0.001}},
        ["calibration error |log O/E|"])
    lists, manifest, read_me = published_list(StandardComparison("cvd", "QRISK3-2017", [worse]))
    # capacity 5 in order of relative risk bands (top 5%, 10%, 25%): 20, then 19, then 16-18
    assert lists["pseudonym"].to_list()[:2] == pseudonyms_of([20, 19])
    assert sorted(lists["pseudonym"].to_list()[2:]) == sorted(pseudonyms_of([16, 17, 18]))
    assert "cvd_model_10y_band" in lists.columns and lists["cvd_model_10y_band"].to_list()[:2] == ["5-10%", "5-10%"]
    assert lists["reasons"].to_list()[0] == [
        "no blood pressure reading in 5 years",
        "predicted risk of a CVD event in the next 10 years: 5-10% (QRISK3-2017, top 10%)"]
    assert manifest["gate_decision"]["cvd"]["ranks_list"] == "QRISK3-2017"
    scored_with = manifest["scored_with"]["cvd"]
    assert (scored_with["registered model"], scored_with["version"], scored_with["ranks_list"]) == (
        "QRISK3-2017", "validated score", "QRISK3-2017")
    assert read_me["gate: cvd"] == "PASS, ranked by QRISK3-2017"

    fair = GroupComparison("Black", 400, 40, True, {}, [])
    lists, manifest, read_me = published_list(StandardComparison("cvd", "QRISK3-2017", [fair]))
    assert lists["pseudonym"].to_list()[:2] == pseudonyms_of([1, 2])
    assert sorted(lists["pseudonym"].to_list()[2:]) == sorted(pseudonyms_of([3, 4, 5]))
    assert lists["reasons"].to_list()[0][1] == "predicted risk of a CVD event in the next 5 years: 10-15% (model, top 10%)"
    assert manifest["scored_with"]["cvd"]["registered model"] == "phm-QXX-cvd"
    assert read_me["gate: cvd"] == "PASS, ranked by model"
