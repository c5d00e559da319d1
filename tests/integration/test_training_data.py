"""Training data: features at a past index date never see the future; labels are what came after."""

from __future__ import annotations

import datetime as dt
import shutil

import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from models.training_data import past_index_date, training_data
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
    """Delete every event, prescription, address and registration change after T0: the
    features at T0 must not change at all."""
    data = training_data(ingested, 5)
    truncated = tmp_path / "truncated.duckdb"
    shutil.copy(ingested, truncated)
    t0 = data.index_date
    with duckdb.connect(str(truncated)) as con:
        removed = 0
        for table in ("clinical_events", "medications"):
            removed += con.execute(f"delete from main.{table} where date > ?", [t0]).fetchone()[0]
        for table in ("addresses", "practice_registrations"):
            removed += con.execute(f"delete from main.{table} where start_date > ?", [t0]).fetchone()[0]
            con.execute(f"update main.{table} set end_date = null where end_date > ?", [t0])
        con.execute("update main.patients set date_of_death = null where date_of_death > ?", [t0])
    assert removed > 1000  # the test removes a lot of future
    future_free = training_data(truncated, 5)
    features = [c for c in data.frame.columns if c not in ("cvd_event", "t2d_event", "hypertension_event")]
    assert_frame_equal(data.frame.select(features), future_free.frame.select(features))
    # and with the future gone nothing is recorded after T0
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
