"""Training data: features as of a past index date, and what was recorded in the horizon after.

Features are built with the same SQL as scoring (features/build.py), for index date
T0 = extract date - horizon, inside a transaction that is rolled back, so the extract-date
tables are untouched. Labels (time-to-event: recorded outcome, years followed, censoring at
death or leaving) come from sql/labels/outcomes.sql.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from features.build import build
from phm.db import SQL_DIR, connect, extract_date
from phm.ethnicity import NOT_KNOWN, QRISK3_ETHRISK, broad_group
from phm.exceptions import ConfigError

LABELS_SQL = SQL_DIR / "labels" / "outcomes.sql"
ETHNICITY_SQL = SQL_DIR / "intermediate" / "int_patient_ethnicity.sql"
TRAINING_MART = "marts.mart_patient_features"  # what training reads (and sql/labels/outcomes.sql)
OUTCOMES = ("cvd_event", "t2d_event", "hypertension_event")
# Columns that describe what happened after the index date: labels, follow-up, and the
# ethnicity known at the extract date (which the models read as their ethnicity input, under
# its own name: ethnicity_as_known_at_extract). No model input may be one of them.
AFTER_INDEX_COLUMNS = (*OUTCOMES, "cvd_followup_years", "t2d_followup_years", "hypertension_followup_years",
                       "followup_end_reason", "ethnicity_category_at_extract", "ethnicity_group_at_extract")


@dataclass(frozen=True)
class TrainingData:
    index_date: dt.date
    horizon_years: int
    # mart features at index_date; per outcome, whether it was recorded within follow-up and the
    # years followed (null = not at risk); why follow-up ended; the ethnicity known at the extract date
    frame: pl.DataFrame


def past_index_date(extract_date: dt.date, horizon_years: int) -> dt.date:
    try:
        return extract_date.replace(year=extract_date.year - horizon_years)
    except ValueError:  # 29 February
        return extract_date.replace(year=extract_date.year - horizon_years, day=28)


@contextmanager
def features_as_of(db_path: Path, index_date: dt.date) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to ``db_path`` in which the feature layers are built for ``index_date``.

    Everything happens in one transaction that is rolled back on exit, so the tables built
    for the extract date are untouched and a crash leaves nothing half-written. (A separate
    read-only attachment would be neater, but DuckDB's ATTACH takes no bound parameters and
    the path must not be formatted into SQL.) Only the patient features mart and the models it
    reads are built: training reads nothing else, and the practice and hypertension case-finding
    marts were a tenth of the time.
    """
    con = connect(db_path)
    try:
        con.execute("begin transaction")
        build(con, index_date, only=(TRAINING_MART,))
        yield con
    finally:
        try:
            con.execute("rollback")
        finally:
            con.close()


def training_data(db_path: Path, horizon_years: int = 5) -> TrainingData:
    """Features at extract date - horizon, with the outcomes recorded in the horizon."""
    if horizon_years < 1:
        raise ConfigError(f"--horizon must be at least 1 year (got {horizon_years})")
    con = connect(db_path)
    try:
        extract = extract_date(con)
        index_date = past_index_date(extract, horizon_years)
    finally:
        con.close()
    with features_as_of(db_path, index_date) as con:
        con.execute("create schema labels")
        con.execute("create table labels.parameters (horizon_years integer)")
        con.execute("insert into labels.parameters values (?)", [horizon_years])
        con.execute(f"create table labels.outcomes as {LABELS_SQL.read_text()}")
        # The ethnicity known at the extract date (the same rule as the mart's, run with the
        # extract date as index date): the models' ethnicity input and the audit's groups.
        con.execute("update features.parameters set index_date = ?", [extract])
        con.execute(f"create table labels.ethnicity_at_extract as {ETHNICITY_SQL.read_text()}")
        frame = con.execute(
            "select f.*, o.* exclude (patient_id), "
            "coalesce(e.ethnicity_category, ?) as ethnicity_category_at_extract, "
            "coalesce(g.broad_group, ?) as ethnicity_group_at_extract "
            "from marts.mart_patient_features f join labels.outcomes o using (patient_id) "
            "left join labels.ethnicity_at_extract e using (patient_id) "
            "left join ref.ethnic_categories g on g.category = e.ethnicity_category "
            "order by patient_id", [NOT_KNOWN, broad_group(NOT_KNOWN)]).pl()
    return TrainingData(index_date, horizon_years, ethnicity_as_known_at_extract(frame))


def ethnicity_as_known_at_extract(frame: pl.DataFrame) -> pl.DataFrame:
    """The models read each patient's ethnicity as known at the extract date, not as recorded by
    T0 (docs/models.md, "Who is in which group").

    Ethnicity does not change over time; only its recording does. At T0 about half of every
    group had no code yet, against 85% with one at the extract date, where the lists are scored.
    A model trained with T0's recording learns its scale and extension for a population where
    half the minority patients carry White's ethnic effect, and is then applied to one where most
    carry their own: on the synthetic truth that under-rated Asian patients' type 2 diabetes
    risk at the same score by 1.3-1.5 times. The value read is the patient's attribute, not an
    outcome: nothing else after T0 reaches the inputs (tests/integration/test_training_data.py).
    The ethnicity recorded at T0 is kept as ``*_at_index`` for comparison."""
    return frame.with_columns(
        pl.col("ethnicity_category").alias("ethnicity_category_at_index"),
        pl.col("ethnicity_group").alias("ethnicity_group_at_index"),
        pl.col("qrisk3_ethrisk").alias("qrisk3_ethrisk_at_index"),
    ).with_columns(
        pl.col("ethnicity_category_at_extract").alias("ethnicity_category"),
        pl.col("ethnicity_group_at_extract").alias("ethnicity_group"),
        pl.col("ethnicity_category_at_extract").replace_strict(
            QRISK3_ETHRISK, default=1, return_dtype=frame.schema["qrisk3_ethrisk"]).alias("qrisk3_ethrisk"),
    )
