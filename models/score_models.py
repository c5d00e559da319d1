"""``phm score``: the registered models and the validated scores for every eligible patient.

Each outcome's model is loaded from the MLflow registry by alias: ``champion`` (audited), or
where none exists yet ``candidate``, with a loud warning that the model has not passed the
fairness gate; a candidate the gate's decision refused (a FAIL, or a WARN no reviewer signed
off: models/fairness/_decision.py) is refused (exit code 7). Where the audit found the trained
model worse than QRISK3 / QDiabetes for a group (do no harm), the validated score ranks that
outcome's list: its 10-year risk is written in the model's column, named as such. Patients are scored at the current index date (the features built by
``phm features``). Eligible: aged 25-84 and free of the outcome, as in training; others get
no model risk. Writes ``marts.risk_scores``, one row per registered patient, with the model
name, version and alias on every row.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl

from features.run import connect
from models.fairness import version_may_be_scored
from models.fairness._decision import TAG_RANKS_LIST
from models.shards import (
    LIST_SCORES,
    ModelToScore,
    Shard,
    ShardMap,
    read_shard_scores,
    run_here,
    score_column,
    score_shard,
    shards_for,
)
from models.tracking import CANDIDATE, CHAMPION, TrackingLocation, registered_model_name
from models.train import OUTCOMES, Outcome, single_icb
from phm.disclosure import show
from phm.exceptions import ConfigError, FairnessGateFailed


@dataclass
class ModelInUse:
    outcome: str
    name: str
    version: str
    alias: str
    variant: str
    horizon_years: int
    ranks_list: str = "model"  # or the validated score that ranks this outcome's list (do no harm)


@dataclass
class ScoreRun:
    models: list[ModelInUse]
    patients: int
    scored: dict[str, int]
    seconds: float
    warnings: list[str] = field(default_factory=list)

    def summary_lines(self) -> list[str]:
        lines = [f"scored {show(self.patients)} registered patients in {self.seconds:.1f} s -> marts.risk_scores"]
        for m in self.models:
            lines.append(f"  {m.outcome:<13} {m.name} v{m.version} ({m.alias}, {m.variant}): "
                         f"{show(self.scored[m.outcome])} eligible patients scored, "
                         f"{m.horizon_years}-year risk")
        lines.append("  (counts: 1-7 suppressed, others rounded to 5)")
        return lines


def model_in_use(client, icb_code: str, outcome: Outcome) -> ModelInUse:
    from mlflow.exceptions import MlflowException

    name = registered_model_name(icb_code, outcome)
    for alias in (CHAMPION, CANDIDATE):
        try:
            version = client.get_model_version_by_alias(name, alias)
        except MlflowException:
            continue
        if alias == CANDIDATE and not version_may_be_scored(version.tags):
            raise FairnessGateFailed(
                f"{name} version {version.version} did not pass the fairness audit "
                f"({version.tags.get('phm.fairness_gate', 'refused')}) and there is no champion: nothing is scored "
                "with it (see the audit report; a named reviewer can sign it off with [[audit.signoff]] in the "
                "configuration or with phm review)")
        return ModelInUse(outcome.short, name, str(version.version), alias, version.tags["phm.variant"],
                          int(version.tags["phm.horizon_years"]), version.tags.get(TAG_RANKS_LIST, "model"))
    raise ConfigError(f"no registered model {name} with alias 'champion' or 'candidate': run phm train first")


def read_features(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    try:
        features = con.execute("select * from marts.mart_patient_features").pl()
        validated = con.execute("select patient_id, qrisk3_10y_pct, qdiabetes_10y_pct from marts.patient_scores").pl()
    except duckdb.CatalogException:
        raise ConfigError("the database has no features or validated scores: run phm features first") from None
    return features.join(validated, on="patient_id", how="left")


def score_models(db_path: Path, location: TrackingLocation, icb_code: str | None = None,
                 warn=None, shards: list[Shard] | None = None, shard_map: ShardMap = run_here) -> ScoreRun:
    """``shards``/``shard_map``: as for the audit (models/shards.py): the models are loaded once
    here and each shard's patients scored where ``shard_map`` runs them; the scores come back
    as files and are written to the database here, its only writer."""
    import mlflow
    from mlflow.tracking import MlflowClient

    started = time.perf_counter()
    mlflow.set_tracking_uri(location.tracking_uri)
    client = MlflowClient(location.tracking_uri)
    con = connect(db_path, read_only=True)
    try:
        icb_code, features = single_icb(read_features(con), icb_code)
    finally:
        con.close()
    run = ScoreRun([], features.height, {}, 0.0)
    to_score = []
    validated = {o.short: o.comparator for o in OUTCOMES}
    for outcome in OUTCOMES:
        in_use = model_in_use(client, icb_code, outcome)
        if in_use.ranks_list != "model":
            message = (f"{in_use.name} v{in_use.version} was worse than {in_use.ranks_list} for a group in the "
                       f"audit (do no harm): {in_use.ranks_list} ranks the {outcome.short} list")
            run.warnings.append(message)
            if warn:
                warn(message)
        elif in_use.alias == CANDIDATE:
            message = (f"WARNING: {in_use.name} has no champion: scoring with the CANDIDATE "
                       f"version {in_use.version}, which has NOT passed the fairness audit")
            run.warnings.append(message)
            if warn:
                warn(message)
        estimator = mlflow.sklearn.load_model(f"models:/{in_use.name}@{in_use.alias}")
        to_score.append(ModelToScore(outcome.short, in_use.variant, estimator))
        run.models.append(in_use)
    with shards_for(features, db_path, shards) as shards:
        scored = shard_map(score_shard, shards, models=to_score, purpose=LIST_SCORES)
        risks = pl.concat([read_shard_scores(shard, LIST_SCORES) for shard in shards])
    for m in run.models:
        run.scored[m.outcome] = sum(s.eligible[m.outcome] for s in scored)
    scores = features.select("patient_id", "qrisk3_10y_pct", "qdiabetes_10y_pct").join(
        risks.rename({score_column(m.outcome): f"{m.outcome}_model_risk" for m in run.models}), on="patient_id", how="left",
        maintain_order="left")
    for m in run.models:
        if m.ranks_list != "model" and validated.get(m.outcome):
            # do no harm: the validated 10-year risk ranks the list, for the same eligible patients
            column = f"{m.outcome}_model_risk"
            scores = scores.with_columns(pl.when(pl.col(column).is_not_null()).then(
                pl.col(validated[m.outcome]) / 100).otherwise(None).alias(column))
            m.name, m.version, m.horizon_years = m.ranks_list, "validated score", 10
    # The model is named on every row, scored or not: a null risk then means "not eligible for
    # this model", never "no model was run".
    scores = scores.select(
        "patient_id", "qrisk3_10y_pct", "qdiabetes_10y_pct",
        *[column for m in run.models for column in (
            pl.col(f"{m.outcome}_model_risk"),
            pl.lit(m.name).alias(f"{m.outcome}_model_name"),
            pl.lit(m.version).alias(f"{m.outcome}_model_version"),
            pl.lit(m.alias).alias(f"{m.outcome}_model_alias"),
            pl.lit(m.horizon_years).alias(f"{m.outcome}_model_horizon_years"))])
    con = connect(db_path)
    try:
        con.register("risk_scores_frame", scores.to_arrow())
        con.execute("create or replace table marts.risk_scores as select * from risk_scores_frame")
        con.unregister("risk_scores_frame")
    finally:
        con.close()
    run.seconds = time.perf_counter() - started
    return run
