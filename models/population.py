"""The ICB's population at the index date: the feature mart with each patient's validated
scores, read from the database once per run and resolved to one ICB, then handed as data to the
stages that use it (the shards, the fairness audit, scoring)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from models.train import single_icb
from phm.db import connect
from phm.exceptions import ConfigError


@dataclass(frozen=True)
class Population:
    icb_code: str
    features: pl.DataFrame  # one row per registered patient of the ICB


def read_features(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Every registered patient's features and validated scores (all ICBs in the database)."""
    try:
        features = con.execute("select * from marts.mart_patient_features").pl()
        validated = con.execute("select patient_id, qrisk3_10y_pct, qdiabetes_10y_pct from marts.patient_scores").pl()
    except duckdb.CatalogException:
        raise ConfigError("the database has no features or validated scores: run phm features first") from None
    return features.join(validated, on="patient_id", how="left")


def read_population(db_path: Path, icb_code: str | None = None) -> Population:
    """``icb_code``'s patients (None: the database's only ICB; more than one is an error)."""
    con = connect(db_path, read_only=True)
    try:
        return Population(*single_icb(read_features(con), icb_code))
    finally:
        con.close()
