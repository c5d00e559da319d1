"""``phm train``: training data at the past index date, models, MLflow, validation predictions.

The validation predictions (one row per validation patient, outcome and model) stay in the
DuckDB file as ``models.validation_predictions``, with the groups the fairness audit needs;
they are patient-level and never leave the database.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from models.tracking import (
    ModelVersion,
    TrainingLog,
    comparison_markdown,
    create_store_meanwhile,
    log_training,
    tracking_location,
)
from models.train import TrainingConfig, TrainingResult, train_all
from models.training_data import training_data
from phm.db import connect, extract_date
from phm.exceptions import ConfigError


@dataclass
class TrainingRun:
    result: TrainingResult
    log: TrainingLog
    seconds: dict[str, float]  # stage -> wall seconds

    @property
    def versions(self) -> list[ModelVersion]:
        """The versions this training registered: what the run's audit must judge (passed on as
        data, not found again through the ``candidate`` alias another run may have moved)."""
        return list(self.log.candidates)

    def summary_lines(self) -> list[str]:
        data = self.result.data
        lines = [f"trained at index date {data.index_date} on outcomes recorded in the next "
                 f"{data.horizon_years} years (validation: held-out practices)", ""]
        lines += comparison_markdown(self.log.comparison, self.log.not_trained).splitlines()
        lines.append("")
        for candidate in self.log.candidates:
            lines.append(f"registered {candidate.name} version {candidate.version} as 'candidate' "
                         "(not yet audited: the fairness gate moves 'champion')")
        lines.append(f"MLflow: {self.log.location.tracking_uri} (experiment "
                     f"'phm-risk {self.result.icb_code}'); browse with: {self.log.location.ui_command()}")
        lines.append("timings: " + ", ".join(f"{stage} {s:.1f} s" for stage, s in self.seconds.items()))
        return lines


def read_truth(truth_dir: Path | None) -> pl.DataFrame | None:
    if truth_dir is None:
        return None
    path = Path(truth_dir) / "patients.parquet"
    if not path.is_file():
        raise ConfigError(f"--truth {truth_dir}: no patients.parquet (give the truth/ folder made by phm synth)")
    return pl.read_parquet(path)


def store_validation_predictions(db_path: Path, result: TrainingResult, parent_run_id: str) -> int:
    frames = []
    for outcome_result in result.outcomes:
        base = outcome_result.validation_frame
        if "comparator_risk" not in base.columns:
            base = base.with_columns(pl.lit(None, dtype=pl.Float64).alias("comparator_risk"))
        for model in outcome_result.models:
            frames.append(base.with_columns(
                pl.lit(outcome_result.outcome.short).alias("outcome"),
                pl.lit(model.kind).alias("model_kind"),
                pl.lit(model.variant).alias("variant"),
                pl.lit(model is outcome_result.candidate).alias("is_candidate"),
                pl.Series("predicted_risk", model.predictions),
                pl.lit(parent_run_id).alias("mlflow_training_run_id"),
            ))
    table = pl.concat(frames)
    con = connect(db_path)
    try:
        con.execute("create schema if not exists models")
        con.register("validation_predictions_frame", table.to_arrow())
        con.execute("create or replace table models.validation_predictions as "
                    "select * from validation_predictions_frame")
        con.unregister("validation_predictions_frame")
    finally:
        con.close()
    return table.height


def run_training(db_path: Path, config: TrainingConfig, tracking_uri: str | None = None,
                 icb_code: str | None = None, truth_dir: Path | None = None, progress=None) -> TrainingRun:
    config.validate()
    truth = read_truth(truth_dir)
    seconds = {}
    con = connect(db_path)  # the database's own errors (none, nothing ingested) before anything is made beside it
    try:
        extract_date(con)
    finally:
        con.close()
    location = tracking_location(Path(db_path).resolve().parent, tracking_uri)
    # a new MLflow store's tables made while the training data is built (phm train on a new
    # folder: 1-2 s of schema migrations; phm run made its store during ingest)
    store = create_store_meanwhile(location)
    try:
        started = time.perf_counter()
        if progress:
            progress(f"building features at extract date - {config.horizon_years} years, and the outcomes after")
        data = training_data(db_path, config.horizon_years)
        seconds["training data"] = time.perf_counter() - started
        result = train_all(data, config, icb_code, progress=progress)
    finally:
        if store is not None:  # before anything else uses the store, whatever happened
            store.join()
    for outcome_result in result.outcomes:
        seconds[f"train {outcome_result.outcome.short}"] = outcome_result.seconds
    started = time.perf_counter()
    # The validation predictions are written to DuckDB (which runs without the GIL) in a thread
    # while MLflow logs the models (Python: plots, serialising), as soon as the training run's
    # id, which they carry, exists: at 1M patients each took seconds, one after the other.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="validation-predictions") as pool:
        stored = []
        log = log_training(result, location, truth, progress=progress, on_parent_run=lambda run_id: stored.append(
            pool.submit(store_validation_predictions, db_path, result, run_id)))
        for future in stored:
            future.result()  # its error, if any, is the run's
    seconds["MLflow and storing"] = time.perf_counter() - started
    return TrainingRun(result, log, seconds)
