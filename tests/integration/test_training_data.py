"""Training data: features at a past index date never see the future; labels are what came after."""

from __future__ import annotations

import datetime as dt
import shutil

import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from models.train import VARIANTS, model_inputs
from models.training_data import AFTER_INDEX_COLUMNS, past_index_date, training_data
from phm.codelists import project_codelists
from phm.ingest import ingest


@pytest.fixture(scope="module")
def ingested(small_synthetic_extract, tmp_path_factory):
    db = tmp_path_factory.mktemp("train") / "phm.duckdb"
    ingest(small_synthetic_extract, db)
    return db


def test_past_index_date_is_extract_date_minus_horizon():
    assert past_index_date(dt.date(2026, 3, 31), 5) == dt.date(2021, 3, 31)
    assert past_index_date(dt.date(2028, 2, 29), 1) == dt.date(2027, 2, 28)


def test_no_feature_uses_data_after_its_index_date(ingested, tmp_path):
    """Delete every event, prescription, address and registration change after T0, apart from
    ethnicity codes: the features at T0 must not change at all. Ethnicity is the one thing read
    as known at the extract date (ethnicity does not change, its recording does; docs/models.md),
    and the test shows it is the only one."""
    data = training_data(ingested, 5)
    truncated = tmp_path / "truncated.duckdb"
    shutil.copy(ingested, truncated)
    t0 = data.index_date
    with duckdb.connect(str(truncated)) as con:
        removed = 0
        con.execute("create temporary table ethnicity_codes (code varchar)")
        con.executemany("insert into ethnicity_codes values (?)",
                        [[c] for c in project_codelists()["ethnicity"].codes])
        removed += con.execute(
            "delete from main.clinical_events where date > ? and snomedct_code not in "
            "(select code from ethnicity_codes)", [t0]).fetchone()[0]
        removed += con.execute("delete from main.medications where date > ?", [t0]).fetchone()[0]
        for table in ("addresses", "practice_registrations"):
            removed += con.execute(f"delete from main.{table} where start_date > ?", [t0]).fetchone()[0]
            con.execute(f"update main.{table} set end_date = null where end_date > ?", [t0])
        con.execute("update main.patients set date_of_death = null where date_of_death > ?", [t0])
    assert removed > 1000  # the test removes a lot of future
    future_free = training_data(truncated, 5)
    features = [c for c in data.frame.columns if c not in AFTER_INDEX_COLUMNS]
    assert_frame_equal(data.frame.select(features), future_free.frame.select(features))
    # no model input is a column that describes what came after T0 (labels, follow-up)
    for variant in VARIANTS:
        inputs = model_inputs(data.frame, variant)
        assert set(inputs.columns).isdisjoint(AFTER_INDEX_COLUMNS)
        assert_frame_equal(pl.from_pandas(inputs), pl.from_pandas(model_inputs(future_free.frame, variant)))
    # and with the future gone nothing is recorded after T0; without the later ethnicity codes
    # too, only the ethnicity inputs change
    with duckdb.connect(str(truncated)) as con:
        con.execute("delete from main.clinical_events where date > ?", [t0])
    no_later_ethnicity = training_data(truncated, 5).frame
    changed = [c for c in features if not data.frame[c].equals(no_later_ethnicity[c], null_equal=True)]
    assert set(changed) <= {"ethnicity_category", "ethnicity_group", "qrisk3_ethrisk", "ethnicity_has_conflicting_codes",
                            "ethnicity_source", "ethnicity_non_census_only", "ethnicity_hospital_category",
                            "ethnicity_category_at_extract", "ethnicity_group_at_extract"}, changed
    assert "ethnicity_group" in changed
    assert future_free.frame.select(pl.col("cvd_event", "t2d_event").fill_null(False).any()).row(0) == (False, False)


def test_labels_match_the_synthetic_truth_of_what_was_recorded(ingested, small_synthetic_extract):
    data = training_data(ingested, 5)
    truth = pl.read_parquet(small_synthetic_extract / "truth" / "patients.parquet")
    joined = data.frame.join(truth, on="patient_id").filter(pl.col("cvd_event").is_not_null())
    # every recorded true CVD event of an at-risk patient is a label; labels come from nowhere else
    agree = (joined["cvd_event"] == joined["cvd_event_recorded"]).mean()
    assert agree > 0.99
    assert joined["cvd_event"].sum() > 20
    # patients with the outcome at T0 are not at risk: null, never False
    prevalent = data.frame.filter(pl.col("cvd"))
    assert prevalent["cvd_event"].null_count() == prevalent.height > 0


def test_the_extract_date_tables_are_untouched(ingested):
    with duckdb.connect(str(ingested), read_only=True) as con:
        before = con.execute("select count(*) from ingest.table_counts").fetchone()[0]
    training_data(ingested, 5)
    with duckdb.connect(str(ingested), read_only=True) as con:
        schemas = {r[0] for r in con.execute("select schema_name from information_schema.schemata").fetchall()}
        assert "labels" not in schemas
        assert con.execute("select count(*) from ingest.table_counts").fetchone()[0] == before


def test_the_labels_sql_and_the_python_eligibility_agree(ingested):
    """sql/labels/outcomes.sql leaves the label null for patients who already have the outcome;
    Outcome.eligible (used for training and scoring) must pick exactly the others (at 25-84)."""
    from models.train import MAX_AGE, MIN_AGE, OUTCOMES

    frame = training_data(ingested, 5).frame.filter(pl.col("age_years").is_between(MIN_AGE, MAX_AGE))
    for outcome in OUTCOMES:
        assert outcome.eligible(frame).to_list() == frame[outcome.label].is_not_null().to_list(), outcome.short


def test_follow_up_ends_at_death_or_leaving_and_such_patients_are_censored_not_event_free(ingested, small_synthetic_extract):
    """A patient who died or left before the horizon's end without the outcome is followed until
    then (censored), not counted as followed event-free for 5 years; one with the outcome is
    followed to its record. The truth says when each death and event happened."""
    data = training_data(ingested, 5)
    frame = data.frame.filter(pl.col("t2d_event").is_not_null())
    horizon = 5.01
    assert frame["t2d_followup_years"].is_between(0, horizon).all()
    full = frame.filter(pl.col("followup_end_reason") == "horizon")
    assert full.filter(~pl.col("t2d_event"))["t2d_followup_years"].min() > 4.99
    censored = frame.filter(pl.col("followup_end_reason").is_in(["died", "left practice"]) & ~pl.col("t2d_event"))
    assert censored.height > 20 and (censored["t2d_followup_years"] < 4.99).all()
    patients = pl.read_csv(small_synthetic_extract / "patients.csv", try_parse_dates=True)
    died = censored.filter(pl.col("followup_end_reason") == "died").join(patients, on="patient_id")
    days = (pl.col("date_of_death") - pl.lit(data.index_date)).dt.total_days() / 365.25
    assert died.select((days - pl.col("t2d_followup_years")).abs().max()).item() < 1e-6
    truth = pl.read_parquet(small_synthetic_extract / "truth" / "patients.parquet")
    events = frame.filter(pl.col("t2d_event")).join(truth, on="patient_id")
    years_to_event = (pl.col("t2d_event_date") - pl.lit(data.index_date)).dt.total_days() / 365.25
    recorded_true_events = events.filter(pl.col("t2d_event_recorded"))
    assert recorded_true_events.height > 5
    assert recorded_true_events.select((years_to_event - pl.col("t2d_followup_years")).abs().max()).item() < 1e-6


def test_ethnicity_known_at_the_extract_date_fills_in_what_the_index_date_did_not_know(ingested):
    frame = training_data(ingested, 5).frame
    unknown_then = frame.filter(pl.col("ethnicity_group_at_index") == "Not known")
    known_now = unknown_then.filter(pl.col("ethnicity_group_at_extract") != "Not known")
    assert known_now.height > 0.3 * unknown_then.height
    # a group known at T0 is still known at the extract date (codes are never removed)
    known_then = frame.filter(~pl.col("ethnicity_group_at_index").is_in(["Not known", "Not stated"]))
    assert (known_then["ethnicity_group_at_extract"] != "Not known").all()
    # the models read the ethnicity known at the extract date; the T0 recording is kept beside it
    assert frame["ethnicity_group"].equals(frame["ethnicity_group_at_extract"])
    assert (frame["ethnicity_group_at_index"] != frame["ethnicity_group"]).sum() >= known_now.height
