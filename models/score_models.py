"""``phm score``: the registered models and the validated scores for every eligible patient.

Each outcome's model is an explicit registered version: in ``phm run``, the version this run
trained and audited (handed on as data, models/tracking.py ``ModelVersion``); on its own, the
version the alias ``champion`` (audited), or where none exists yet ``candidate``, points to when
the command starts, resolved once, so that another run moving an alias meanwhile changes
nothing. A candidate is scored with a loud warning that the model has not passed the fairness
gate; one the gate's decision refused (a FAIL, or a WARN no reviewer signed off:
models/fairness/_decision.py) is refused (exit code 7). Where the audit found the trained
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

import polars as pl

from models.fairness import version_may_be_scored
from models.fairness._decision import TAG_RANKS_LIST
from models.population import Population, read_population
from models.shards import (
    ModelToScore,
    Shard,
    ShardMap,
    run_here,
    score_column,
    score_shard,
    shards_for,
)
from models.tracking import (
    CANDIDATE,
    CHAMPION,
    ModelVersion,
    TrackingLocation,
    check_versions,
    versions_by_alias,
)
from models.train import OUTCOMES
from phm.db import connect
from phm.disclosure import COUNTS_NOTE, show
from phm.exceptions import FairnessGateFailed

# the version written for an outcome whose list the validated score ranks (do no harm): the
# lists' reasons read it (sql/lists/list_reasons.sql) to name the score instead of "model"
VALIDATED_SCORE = "validated score"


@dataclass(frozen=True)
class ScoredVersions:
    """Every eligible patient's scores (``patient_id`` and a ``score_column`` per outcome, null
    where not eligible: models/shards.py ``score_shard``) and the versions that made them:
    outcome -> (registered model, version)."""
    versions: dict[str, tuple[str, str]]
    scores: pl.DataFrame = field(repr=False)


@dataclass
class ModelInUse:
    outcome: str
    name: str
    version: str
    alias: str
    variant: str
    horizon_years: int
    ranks_list: str = "model"  # or the validated score that ranks this outcome's list (do no harm)
    source: str = ""  # how the run came by the version (models/tracking.py ModelVersion)


@dataclass
class ScoreRun:
    models: list[ModelInUse]
    patients: int
    scored: dict[str, int]
    seconds: float
    warnings: list[str] = field(default_factory=list)
    reused_audit_scores: bool = False  # the audit scored the same versions: its scores were read back

    def manifest(self) -> dict:
        """The lists' manifest's ``scored_with``: per outcome, what ranked its list."""
        return {m.outcome: {"registered model": m.name, "version": m.version, "role": m.alias,
                            "ranks_list": m.ranks_list, "taken as": m.source} for m in self.models}

    def summary_lines(self) -> list[str]:
        lines = [f"scored {show(self.patients)} registered patients in {self.seconds:.1f} s -> marts.risk_scores"]
        for m in self.models:
            lines.append(f"  {m.outcome:<13} {m.name} v{m.version} ({m.alias}, {m.variant}): "
                         f"{show(self.scored[m.outcome])} eligible patients scored, "
                         f"{m.horizon_years}-year risk")
        for source in dict.fromkeys(m.source for m in self.models if m.source):
            lines.append(f"  model versions {source}")
        if self.reused_audit_scores:
            lines.append("  the audit's scores of these versions, taken as they were (the same model on the same "
                         "patients: not predicted again)")
        lines.append(f"  {COUNTS_NOTE}")
        return lines


def model_in_use(client, given: ModelVersion) -> ModelInUse:
    """The version's own record (its tags, read by version number, never by alias)."""
    version = client.get_model_version(given.name, given.version)
    if given.alias == CANDIDATE and not version_may_be_scored(version.tags):
        raise FairnessGateFailed(
            f"{given.name} version {version.version} did not pass the fairness audit "
            f"({version.tags.get('phm.fairness_gate', 'refused')}) and there is no champion: nothing is scored "
            "with it (see the audit report; a named reviewer can sign it off with [[audit.signoff]] in the "
            "configuration or with phm review)")
    return ModelInUse(given.outcome, given.name, str(version.version), given.alias, version.tags["phm.variant"],
                      int(version.tags["phm.horizon_years"]), version.tags.get(TAG_RANKS_LIST, "model"), given.source)


def score_models(db_path: Path, location: TrackingLocation, icb_code: str | None = None,
                 warn=None, shards: list[Shard] | None = None, shard_map: ShardMap = run_here,
                 population: Population | None = None, versions: list[ModelVersion] | None = None,
                 audit_scores: ScoredVersions | None = None) -> ScoreRun:
    """``shards``/``shard_map``: as for the audit (models/shards.py): the models are loaded once
    here and each shard's patients scored where ``shard_map`` runs them; the scores come back
    as data and are written to the database here, its only writer. ``population``: the ICB's
    patients as the flow read them once (models/population.py); without it, read here.
    ``versions``: the model versions to score with (the flow passes those its audit judged);
    without them, ``champion`` (else ``candidate``) is resolved once, here at the start.
    ``audit_scores``: the scores of every eligible patient the run's audit made, and with which
    versions (models/audit_run.py ``AuditRun.scores``). Where they are the versions scored here
    (a run scores with the versions its audit judged), the audit's scores are the lists' scores:
    the same model on the same patients, taken instead of predicted again."""
    import mlflow
    from mlflow.tracking import MlflowClient

    started = time.perf_counter()
    mlflow.set_tracking_uri(location.tracking_uri)
    client = MlflowClient(location.tracking_uri)
    population = population or read_population(db_path, icb_code)
    icb_code, features = population.icb_code, population.features
    pinned = check_versions(versions or versions_by_alias(client, icb_code, (CHAMPION, CANDIDATE)), icb_code)
    run = ScoreRun([], features.height, {}, 0.0)
    to_score = []
    for outcome in OUTCOMES:
        in_use = model_in_use(client, pinned[outcome.short])
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
        run.models.append(in_use)
    scored_by_audit = audit_scores is not None and all(
        audit_scores.versions.get(m.outcome) == (m.name, m.version) for m in run.models)
    if scored_by_audit:
        risks = audit_scores.scores
    else:
        for in_use in run.models:
            estimator = mlflow.sklearn.load_model(f"models:/{in_use.name}/{in_use.version}")
            to_score.append(ModelToScore(in_use.outcome, in_use.variant, estimator))
        with shards_for(features, shards, shard_map) as shards:
            scored = shard_map(score_shard, shards, models=to_score)
        risks = pl.concat([s.scores for s in scored])
    run.reused_audit_scores = scored_by_audit
    for m in run.models:
        run.scored[m.outcome] = int(risks[score_column(m.outcome)].is_not_null().sum())  # the eligible
    scores = ranking_risks(features, risks, run.models)
    con = connect(db_path)
    try:
        con.register("risk_scores_frame", scores.to_arrow())
        con.execute("create or replace table marts.risk_scores as select * from risk_scores_frame")
        con.unregister("risk_scores_frame")
    finally:
        con.close()
    run.seconds = time.perf_counter() - started
    return run


def ranking_risks(features: pl.DataFrame, risks: pl.DataFrame, models: list[ModelInUse]) -> pl.DataFrame:
    """``marts.risk_scores``: per patient, QRISK3 and QDiabetes, and for each outcome the risk that
    ranks its list (``<outcome>_model_risk``) with what made it. ``features``: ``patient_id``,
    ``qrisk3_10y_pct``, ``qdiabetes_10y_pct``; ``risks``: ``patient_id`` and each model's
    ``score_column`` (null where not eligible). Where the audit's decision put the validated
    score in the model's place (``ranks_list``, do no harm), its 10-year risk is written for the
    same eligible patients and the model in use is renamed after it (name, ``VALIDATED_SCORE``,
    10 years), so that the lists and the manifest say what ranked them."""
    validated = {o.short: o.comparator for o in OUTCOMES}
    scores = features.select("patient_id", "qrisk3_10y_pct", "qdiabetes_10y_pct").join(
        risks.rename({score_column(m.outcome): f"{m.outcome}_model_risk" for m in models}), on="patient_id", how="left",
        maintain_order="left")
    for m in models:
        if m.ranks_list != "model" and validated.get(m.outcome):
            # do no harm: the validated 10-year risk ranks the list, for the same eligible patients
            column = f"{m.outcome}_model_risk"
            scores = scores.with_columns(pl.when(pl.col(column).is_not_null()).then(
                pl.col(validated[m.outcome]) / 100).otherwise(None).alias(column))
            m.name, m.version, m.horizon_years = m.ranks_list, VALIDATED_SCORE, 10
    # The model is named on every row, scored or not: a null risk then means "not eligible for
    # this model", never "no model was run".
    return scores.select(
        "patient_id", "qrisk3_10y_pct", "qdiabetes_10y_pct",
        *[column for m in models for column in (
            pl.col(f"{m.outcome}_model_risk"),
            pl.lit(m.name).alias(f"{m.outcome}_model_name"),
            pl.lit(m.version).alias(f"{m.outcome}_model_version"),
            pl.lit(m.alias).alias(f"{m.outcome}_model_alias"),
            pl.lit(m.horizon_years).alias(f"{m.outcome}_model_horizon_years"))])
