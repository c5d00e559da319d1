"""Synthetic extracts only: how often each rule for conflicting ethnicity codes is right (tests, benchmarks).

``sql/intermediate/int_patient_ethnicity.sql`` gives each patient two readings of their codes:
``ethnicity_category`` (the most frequent stated category, then the latest) and ``latest_category``
(the latest stated code, the rule it replaced). ``rule_accuracy`` runs that SQL on an extract's
own events (no ingest needed: the rule reads only ``clinical_events`` and the codelists) at the
extract date and compares both readings with the generator's ``truth/`` per true broad group:
the share of patients with a stated category whose category (letter) and whose broad group is
the true one. The pipeline never reads ``truth/``.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from features.build import load_reference_tables, set_parameters
from phm.db import SQL_DIR, in_memory
from phm.ethnicity import NHS_ETHNIC_CATEGORIES

RULES = {"most_frequent": "ethnicity_category", "latest": "latest_category"}


def _read(extract: Path, table: str) -> pl.DataFrame:
    parquet = extract / f"{table}.parquet"
    return pl.read_parquet(parquet) if parquet.exists() else pl.read_csv(extract / f"{table}.csv", infer_schema=False)


def _project_rule(events: pl.DataFrame, hospital: pl.DataFrame, extract_date: str, select: str,
                  parameters: list | None = None) -> pl.DataFrame:
    """The project's own ethnicity rule (sql/intermediate/int_patient_ethnicity.sql) run on an
    extract's coded events and hospital records, as table ``ethnicity``; ``select`` reads it."""
    with in_memory() as con:
        con.register("events_frame", events)
        con.register("hospital_frame", hospital)
        con.execute("create table main.clinical_events as select * from events_frame")
        con.execute("create table main.hospital_ethnicity as select * from hospital_frame")
        load_reference_tables(con)
        set_parameters(con, extract_date, "IMD2019")  # the IMD version plays no part in this rule
        con.execute(f"create table ethnicity as {(SQL_DIR / 'intermediate' / 'int_patient_ethnicity.sql').read_text()}")
        return con.execute(select, parameters or []).pl()


def rule_readings(extract: Path, with_hospital_records: bool = False) -> pl.DataFrame:
    """One row per patient with a stated category: patient_id, ethnicity_true, each rule's letter
    and ``ethnicity_source``. Hospital records (the optional table) are read only when asked: the
    comparison of the GP-record rules leaves them out."""
    extract = Path(extract)
    extract_date = json.loads((extract / "extract.json").read_text())["extract_date"]
    events = _read(extract, "clinical_events").select(
        pl.col("patient_id").cast(pl.Int64), pl.col("date").cast(pl.Date), pl.col("snomedct_code").cast(pl.String))
    hospital = pl.DataFrame(schema={"patient_id": pl.Int64, "date": pl.Date, "ethnic_category": pl.String})
    if with_hospital_records and any(extract.glob("hospital_ethnicity.*")):
        hospital = _read(extract, "hospital_ethnicity").select(
            pl.col("patient_id").cast(pl.Int64), pl.col("date").cast(pl.Date), pl.col("ethnic_category").cast(pl.String))
    truth = pl.read_parquet(extract / "truth" / "patients.parquet").select("patient_id", "ethnicity_true")
    readings = _project_rule(events, hospital, extract_date,
                             "select patient_id, ethnicity_category, latest_category, ethnicity_source "
                             "from ethnicity where ethnicity_category in (select unnest(?))",
                             [list(NHS_ETHNIC_CATEGORIES)])
    return readings.join(truth, on="patient_id", how="inner")


def rule_accuracy(extract: Path) -> pl.DataFrame:
    """Per true broad group (and 'All'): patients with a stated category, how many have codes of
    more than one category, and for each rule the share whose letter (``<rule>_category``) and
    whose broad group (``<rule>_group``) is the true one."""
    broad = {letter: group for letter, (_, group) in NHS_ETHNIC_CATEGORIES.items()}
    frame = rule_readings(extract).with_columns(
        pl.col("ethnicity_true").replace_strict(broad).alias("true_group"))
    shares = []
    for rule, column in RULES.items():
        shares += [(pl.col(column) == pl.col("ethnicity_true")).mean().alias(f"{rule}_category"),
                   (pl.col(column).replace_strict(broad) == pl.col("true_group")).mean().alias(f"{rule}_group")]
    disagree = (pl.col(RULES["most_frequent"]) != pl.col(RULES["latest"])).sum().alias("rules_disagree")
    by_group = frame.group_by("true_group").agg(pl.len().alias("patients"), disagree, *shares)
    overall = frame.select(pl.lit("All").alias("true_group"), pl.len().alias("patients"), disagree, *shares)
    return pl.concat([by_group.sort("true_group"), overall], how="vertical_relaxed")


def pooled(tables: list[pl.DataFrame]) -> pl.DataFrame:
    """``rule_accuracy`` tables of several extracts as one: counts summed, shares weighted by patients."""
    shares = [f"{rule}_{level}" for rule in RULES for level in ("category", "group")]
    return (pl.concat(tables).group_by("true_group", maintain_order=True)
            .agg(pl.col("patients").sum(), pl.col("rules_disagree").sum(),
                 *[((pl.col(c) * pl.col("patients")).sum() / pl.col("patients").sum()).alias(c) for c in shares]))


def dq_frame(extract: Path) -> tuple[pl.DataFrame, dict[str, str]]:
    """Synthetic extracts only (tests, benchmarks): the ethnicity data-quality report's input
    without an ingest: one row per patient registered at the extract date (their practice and
    PCN, and int_patient_ethnicity.sql's reading of their codes and hospital records at the
    extract date), and practice pseudo id -> ODS code."""
    extract = Path(extract)
    extract_date = json.loads((extract / "extract.json").read_text())["extract_date"]
    events = _read(extract, "clinical_events").select(
        pl.col("patient_id").cast(pl.Int64), pl.col("date").cast(pl.Date), pl.col("snomedct_code").cast(pl.String))
    hospital = pl.DataFrame(schema={"patient_id": pl.Int64, "date": pl.Date, "ethnic_category": pl.String})
    if any(extract.glob("hospital_ethnicity.*")):
        hospital = _read(extract, "hospital_ethnicity").select(
            pl.col("patient_id").cast(pl.Int64), pl.col("date").cast(pl.Date), pl.col("ethnic_category").cast(pl.String))
    registrations = _read(extract, "practice_registrations").select(
        pl.col("patient_id").cast(pl.Int64), pl.col("practice_pseudo_id").cast(pl.Int64),
        pl.col("start_date").cast(pl.Date), pl.col("end_date").cast(pl.Date))
    practices = _read(extract, "practices").select(
        pl.col("practice_pseudo_id").cast(pl.Int64), pl.col("pcn_code").cast(pl.String), pl.col("ods_code").cast(pl.String))
    when = pl.lit(extract_date).str.to_date()
    current = (registrations.filter((pl.col("start_date") <= when) & (pl.col("end_date").is_null() | (pl.col("end_date") >= when)))
               .sort("start_date").group_by("patient_id").last().join(practices, on="practice_pseudo_id"))
    readings = _project_rule(
        events, hospital, extract_date,
        "select patient_id, ethnicity_category, has_conflicting_codes as ethnicity_has_conflicting_codes, "
        "ethnicity_source, non_census_only as ethnicity_non_census_only, "
        "hospital_category as ethnicity_hospital_category from ethnicity")
    frame = current.join(readings, on="patient_id", how="left").with_columns(
        pl.col("ethnicity_category").fill_null("99"))
    labels = {str(r["practice_pseudo_id"]): r["ods_code"] for r in practices.iter_rows(named=True)}
    return frame, labels


def planted_practices(extract: Path) -> set[str]:
    """ODS codes of the practices the generator made record ethnicity badly (truth/planted.json)."""
    planted = json.loads((Path(extract) / "truth" / "planted.json").read_text())
    return {code for knob in ("ethnicity_unrecorded_practice", "ethnicity_misrecording_practice")
            for code, value in planted.get(knob, {}).items() if value > 0}
