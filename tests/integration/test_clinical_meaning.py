"""Evidence on the synthetic extract, against the generator's truth: with the complete codelists
(and the generator drawing each record's code from them, as real records spread over many codes),
the features keep their meaning and nobody whose record codes a diagnosis is invited as possibly
undiagnosed. Several seeds and both ethnicity profiles, not only the demo's."""

from __future__ import annotations

import duckdb
import polars as pl
import pytest

from features.run import run_features
from models.score_patients import run_scores
from phm.ingest import ingest
from phm.lists import ListSettings, reasons
from phm.synth import SynthConfig, generate

pytestmark = pytest.mark.slow  # two synthetic extracts of 6,000 patients: about 40 s

UNDIAGNOSED_BP = {"bp_urgent", "bp_possible_undiagnosed", "bp_confirmed_not_coded"}
UNDIAGNOSED_DIABETES = {"hba1c_diabetic_range", "glucose_diabetic_range", "ndh_ndpp", "qdiabetes_high"}


@pytest.fixture(scope="module", params=[(5, "england"), (6, "diverse_urban")], ids=["england", "diverse_urban"])
def pipeline(request, tmp_path_factory):
    seed, profile = request.param
    folder = tmp_path_factory.mktemp(f"meaning-{seed}")
    generate(SynthConfig(patients=6_000, seed=seed, profile=profile), folder / "extract")
    db = folder / "phm.duckdb"
    ingest(folder / "extract", db)
    run_features(db)
    run_scores(db)
    with duckdb.connect(str(db)) as con:
        # no trained model here: the model reasons are not what this test is about
        con.execute("create table marts.risk_scores as select patient_id, null::double as cvd_model_risk, "
                    "null::double as t2d_model_risk, null::double as hypertension_model_risk, "
                    "5 as cvd_model_horizon_years, 5 as t2d_model_horizon_years, "
                    "5 as hypertension_model_horizon_years, "
                    + ", ".join(f"null::varchar as {o}_model_name, null::varchar as {o}_model_version"
                                for o in ("cvd", "t2d", "hypertension")) + " from marts.mart_patient_features")
        features = con.execute("select * from marts.mart_patient_features").pl()
        found = reasons(con, ListSettings())
    truth = pl.read_parquet(folder / "extract" / "truth" / "patients.parquet")
    return features.join(truth, on="patient_id", how="inner"), found


def test_coded_diagnoses_are_read_as_the_truth_says(pipeline):
    patients, _ = pipeline
    # type 2 diabetes: exactly the patients whose record codes it
    assert (patients["type2_diabetes"] == patients["t2d_coded_by_extract"]).all()
    # hypertension: every coded patient but the few with a later 'resolved' code (3% in the generator)
    coded = patients.filter(pl.col("hypertension_coded_by_extract"))
    assert coded["hypertension"].mean() > 0.95
    assert not patients.filter(pl.col("hypertension") & ~pl.col("hypertension_coded_by_extract")).height


def test_ethnicity_keeps_not_stated_and_not_known_apart_and_matches_the_truth(pipeline):
    patients, _ = pipeline
    share = patients["ethnicity_category"].value_counts(normalize=True)
    shares = dict(zip(share["ethnicity_category"], share["proportion"], strict=True))
    assert 0.10 < shares["99"] < 0.20       # 15% unrecorded, some of them with 'not recorded' codes
    assert 0.01 < shares["Z"] < 0.05        # 3% of the recorded declined
    recorded = patients.filter(~pl.col("ethnicity_category").is_in(["Z", "99"]))
    assert (recorded["ethnicity_category"] == recorded["ethnicity_true"]).mean() > 0.85


def test_diagnosed_patients_are_not_invited_as_undiagnosed(pipeline):
    patients, found = pipeline
    invited = found.filter(pl.col("excluded_by").is_null())
    coded_htn = patients.filter(pl.col("hypertension_coded_by_extract") & pl.col("hypertension"))["patient_id"]
    coded_t2d = patients.filter(pl.col("t2d_coded_by_extract"))["patient_id"]
    assert coded_htn.len() > 300 and coded_t2d.len() > 100
    wrongly_bp = invited.filter(pl.col("reason_code").is_in(list(UNDIAGNOSED_BP)) & pl.col("patient_id").is_in(coded_htn.implode()))
    wrongly_dm = invited.filter(pl.col("reason_code").is_in(list(UNDIAGNOSED_DIABETES))
                                & pl.col("patient_id").is_in(coded_t2d.implode()))
    assert wrongly_bp.height == 0 and wrongly_dm.height == 0
    # and the undiagnosed the truth knows of are still found: the reasons are not emptied
    hidden = patients.filter(pl.col("hypertension_true_at_extract") & ~pl.col("hypertension_coded_by_extract"))
    found_hidden = invited.filter(pl.col("reason_code").is_in(list(UNDIAGNOSED_BP))
                                  & pl.col("patient_id").is_in(hidden["patient_id"].implode()))
    assert found_hidden["patient_id"].n_unique() > 0.2 * hidden.height


def test_statin_users_are_never_told_to_discuss_a_statin(pipeline):
    patients, found = pipeline
    on_statins = patients.filter(pl.col("on_statins"))["patient_id"]
    assert on_statins.len() > 100
    lipid = found.filter(pl.col("reason_code").is_in(["qrisk3_high", "qrisk3_raised"])
                         & pl.col("patient_id").is_in(on_statins.implode()))
    assert lipid.height > 0 and (lipid["excluded_by"] == "already on a statin").all()


def test_what_practices_record_sets_reasons_aside_and_abpm_confirms(pipeline):
    patients, found = pipeline
    declined_or_unsuitable = patients.filter(pl.col("statin_exclusion").is_not_null() & ~pl.col("on_statins"))["patient_id"]
    assert declined_or_unsuitable.len() > 10
    lipid = found.filter(pl.col("reason_code").is_in(["qrisk3_high", "qrisk3_raised"])
                         & pl.col("patient_id").is_in(declined_or_unsuitable.implode()))
    assert lipid["excluded_by"].str.starts_with("statin ").all()
    confirmed = found.filter(pl.col("reason_code") == "bp_confirmed_not_coded")["patient_id"]
    assert confirmed.len() > 0
    truly = patients.filter(pl.col("patient_id").is_in(confirmed.implode()))
    assert truly["hypertension_true_at_extract"].all() and not truly["hypertension_coded_by_extract"].any()
    checked = patients.filter(pl.col("nhs_health_check_5y"))["patient_id"]
    assert found.filter(pl.col("reason_code").is_in(["bp_none_in_5_years", "qdiabetes_high"])
                        & pl.col("patient_id").is_in(checked.implode()))["excluded_by"].is_not_null().all()
