"""``phm audit``: the fairness audit of each outcome's candidate model, its gate, and MLflow.

For each outcome (CVD, type 2 diabetes, hypertension):
- model performance by group on the validation practices at the past index date
  (``models.validation_predictions``, written by ``phm train``);
- the list the candidate would produce now: every eligible patient scored by the candidate at
  the extract date, the top ``capacity_share`` selected (the operating point); selection, need
  at the same score (label-choice check) and measurement completeness on that population;
- ethnicity data quality of the registered population, by PCN and practice.

The gate then judges every outcome as one family of tests, the trained model is compared with
QRISK3 / QDiabetes on the same validation patients (do no harm), and one decision
(models/fairness/_decision.py) says per outcome whether the model may become champion: PASS, or
a WARN or FAIL that a named reviewer signed off, moves the registry alias ``champion`` to the
audited version unless the model was worse than the validated score for a group (then the
validated score ranks that outcome's list). Everything goes to an MLflow run (report, JSON,
per-group metrics, gate and sign-off tags) and to ``--out``. The command's exit code is the
decision's: 0 when every outcome may go out, 7 otherwise.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from features.ethnicity_benchmark import census_benchmark, lsoa_benchmarks
from models.fairness import (
    HIGH_NEED_FROM,
    NEED_DESCRIPTIONS,
    AuditReport,
    AuditSettings,
    Figure,
    GateDecision,
    audit_score,
    decide,
    ethnicity_quality,
    judge_all,
)
from models.fairness._cells import add_cells
from models.fairness._recording import add_gap_figures, gap_counts, treated_counts
from models.fairness._report import grouping_json
from models.fairness._standard import compare as compare_with_standard
from models.hazard import risk_while_followed
from models.population import Population, read_population
from models.score_models import ScoredVersions
from models.shards import (
    CutPoints,
    ModelToScore,
    Shard,
    ShardCells,
    ShardMap,
    cut_points,
    order_statistics,
    run_here,
    score_shard,
    scores_in_bins,
    shard_cells,
    shards_for,
    with_scores,
)
from models.tracking import (
    CANDIDATE,
    CHAMPION,
    ModelVersion,
    TrackingLocation,
    check_versions,
    ensure_experiment,
    experiment_name,
    registered_model_name,
    versions_by_alias,
)
from models.train import OUTCOMES
from phm.db import connect
from phm.ethnicity_dq import EthnicityDQ, EthnicityDQSettings, assess, history_rows
from phm.ethnicity_dq_report import write_report as write_ethnicity_report
from phm.exceptions import ConfigError
from phm.history import read_history
from phm.outcomes import uptake

GROUP_COLUMNS = ("ethnicity_group", "imd_quintile", "sex")


@dataclass
class AuditRun:
    report: AuditReport
    json_path: Path
    html_path: Path
    run_id: str
    location: TrackingLocation
    decision: GateDecision | None = None
    champions: dict[str, str] = field(default_factory=dict)  # outcome -> version made champion
    versions: dict[str, ModelVersion] = field(default_factory=dict)  # outcome -> the version audited
    seconds: float = 0.0
    shards: int = 1
    shard_processes: int = 1  # how many processes the shard work ran in
    experiment_id: str = ""
    ethnicity_report: Path | None = None  # the ethnicity data-quality report (phm/ethnicity_dq_report.py)
    ethnicity_flags: list[str] = field(default_factory=list)  # "<practice>: <what stands out>"
    ethnicity_rows: list[tuple] = field(default_factory=list)  # its figures for the run history (published)
    # every eligible patient's scores by the audited versions: scoring the same versions takes
    # them (models/score_models.py) instead of predicting again
    scores: ScoredVersions | None = field(default=None, repr=False)

    def ui_path(self) -> str:
        """The audit run's page in the MLflow UI (after the server's address), in its "Model
        training" view: MLflow 3 otherwise opens experiments in its GenAI view."""
        return f"#/experiments/{self.experiment_id}/runs/{self.run_id}?workflowType=machine_learning"

    @property
    def status(self) -> str:
        return self.report.status

    def scoring_versions(self) -> list[ModelVersion]:
        """The versions this audit judged, for scoring the same run's lists: each in the role the
        decision gave it ('champion' where it moved the alias; otherwise 'candidate', whose
        version tags say what scoring may do with it). Scoring never asks the alias again."""
        return [dataclasses.replace(v, alias=CHAMPION if outcome in self.champions else CANDIDATE,
                                    source=f"audited by fairness audit run {self.run_id}")
                for outcome, v in self.versions.items()]

    def summary_lines(self) -> list[str]:
        lines = [f"fairness audit: {self.report.label()} ({self.seconds:.1f} s; {self.shards} shard(s) "
                 f"scored in {self.shard_processes} process(es))"]
        for gate in self.report.gates:
            counts = {level: sum(f.level == level for f in gate.findings) for level in ("FAIL", "WARN")}
            lines.append(f"  {gate.outcome:<13} {gate.label():<40} {counts['FAIL']} FAIL, {counts['WARN']} WARN findings")
            for finding in gate.findings:
                if finding.level == "FAIL":
                    lines.append(f"    FAIL [{finding.rule}] {finding.message}")
        for version in self.versions.values():
            lines.append(f"  audited {version.described()}")
        if self.decision is not None:
            lines += self.decision.lines()
        for outcome, version in self.champions.items():
            lines.append(f"  'champion' -> {outcome} model version {version}")
        if not self.champions:
            lines.append("  'champion' not moved")
        lines.append(f"report: {self.html_path.resolve()}")
        lines.append(f"figures (JSON, counts suppressed): {self.json_path.resolve()}")
        if self.ethnicity_report is not None:
            lines.append(f"ethnicity data quality per practice and PCN: {self.ethnicity_report.resolve()} ("
                         + (f"{len(self.ethnicity_flags)} flag(s): {'; '.join(self.ethnicity_flags)}"
                            if self.ethnicity_flags else "no practice flagged") + ")")
        lines.append(f"MLflow run {self.run_id} in {self.location.tracking_uri} (in the UI: {self.ui_path()})")
        return lines


def _validation(con, version: ModelVersion) -> pl.DataFrame:
    """The validation predictions of the audited version: those of the training run that
    registered it. The database keeps its last training's; a version from another training (one
    sharing the MLflow store) would be judged on predictions it did not make."""
    try:
        frame = con.execute("select * from models.validation_predictions where is_candidate and outcome = ?",
                            [version.outcome]).pl()
    except Exception as exc:  # duckdb.CatalogException: no table
        if "validation_predictions" in str(exc):
            raise ConfigError("the database has no validation predictions: run phm train first") from None
        raise
    trained_by = set(frame["mlflow_training_run_id"].unique().to_list())
    if trained_by and trained_by != {version.training_run_id}:
        raise ConfigError(f"{version.described()} comes from MLflow training run {version.training_run_id}, but "
                          f"the database's validation predictions from run {', '.join(sorted(trained_by))}: another "
                          "training shares this MLflow store. Run phm train on this database again and audit the "
                          "versions it registers")
    return frame


def operating_point(scores: pl.Series, capacity_share: float) -> float:
    """The score of the last patient the list has room for (capacity = share of eligible)."""
    ordered = scores.drop_nulls().sort(descending=True)
    if ordered.is_empty():
        raise ConfigError("no eligible patients to audit")
    capacity = max(1, int(round(ordered.len() * capacity_share)))
    return float(ordered[capacity - 1])


def _list_population_cells(shards: list[Shard], models: list[ModelToScore], settings: AuditSettings,
                           shard_map: ShardMap, progress=None
                           ) -> tuple[dict[str, CutPoints], list[ShardCells], int, pl.DataFrame]:
    """Score every shard with the candidates, find the operating point and deciles exactly from
    the shards' histograms, and make each shard's cells (models/shards.py). The scores come back
    here; for the cells, each shard is handed its own again. Returns the scores too (every
    shard's, in order), for scoring the lists with the same versions."""
    if progress:
        progress(f"audit: scoring {len(shards)} shard(s) with the candidate models")
    scored = shard_map(score_shard, shards, models=models)

    def find(wanted):
        bins: dict[str, list[int]] = {}
        for w in wanted:
            bins.setdefault(w.outcome, []).append(w.bin)
        return order_statistics(wanted, [scores_in_bins(s.scores, bins) for s in scored])

    cuts = cut_points(scored, settings.capacity_share, find)
    missing = [m.outcome for m in models if m.outcome not in cuts]
    if missing:
        raise ConfigError(f"no eligible patients to audit for {', '.join(missing)}")
    processes = len({s.process for s in scored})
    scored_shards = with_scores(shards, scored, shard_map)
    try:
        cells = shard_map(shard_cells, scored_shards, cuts=cuts)
    finally:
        shard_map.release([s.scores for s in scored_shards])
    return cuts, cells, processes, pl.concat([s.scores for s in scored])


def run_audit(db_path: Path, settings: AuditSettings, location: TrackingLocation, out_dir: Path,
              icb_code: str | None = None, progress=None, shards: list[Shard] | None = None,
              shard_map: ShardMap = run_here, population: Population | None = None,
              versions: list[ModelVersion] | None = None,
              ethnicity: EthnicityDQSettings | None = None) -> AuditRun:
    """``shards``: the ICB's patients already made into shards (the flow makes them once for
    the audit and scoring); without them, one shard of the whole ICB. ``shard_map`` runs the
    per-shard work (here, or on Dask: models/shards.py).
    ``population``: the ICB's patients as the flow read them once (models/population.py);
    without it, read here. ``versions``: the model versions to audit, as training registered
    them (the flow passes them); without them, the ``candidate`` alias is resolved once, here
    at the start, and only those versions are used and recorded."""
    import mlflow
    from mlflow.tracking import MlflowClient

    started = time.perf_counter()
    settings.validate()
    mlflow.set_tracking_uri(location.tracking_uri)
    client = MlflowClient(location.tracking_uri)
    population = population or read_population(db_path, icb_code)
    icb_code, features = population.icb_code, population.features
    pinned = check_versions(versions or versions_by_alias(client, icb_code, (CANDIDATE,)), icb_code)
    con = connect(db_path, read_only=True)
    try:
        validations = {o.short: _validation(con, pinned[o.short]) for o in OUTCOMES}
        extract_date = _extract_date(con)
        uptake_of_invitations = uptake(con) or []  # outcomes back from practices (phm outcomes); none yet: []
        practice_labels = _practice_labels(con)
        ethnicity = (ethnicity or EthnicityDQSettings()).validate()
        practice_lsoas = _practice_lsoas(con) if ethnicity.census_by_lsoa else None
        history_runs, history_figures = read_history(con, icb_code)
    finally:
        con.close()
    population = features.select(
        pl.col("ethnicity_group").alias("group"), "ethnicity_category", "ethnicity_has_conflicting_codes",
        "ethnicity_source", "pcn_code", "practice_pseudo_id")
    quality = ethnicity_quality(population, settings.level)
    benchmark, benchmark_source = census_benchmark(ethnicity.census_table)
    local = lsoa_benchmarks(ethnicity.census_by_lsoa, practice_lsoas) if practice_lsoas is not None else None
    dq = assess(features, benchmark, benchmark_source, practice_labels, ethnicity.alpha, ethnicity.min_practices,
                settings.level, local)
    versions, models_to_score = {}, []
    for outcome in OUTCOMES:
        given = pinned[outcome.short]
        name, version = given.name, client.get_model_version(given.name, given.version)
        versions[outcome.short] = (name, version)
        if progress:
            progress(f"audit {outcome.short}: {given.described()}")
        estimator = mlflow.sklearn.load_model(f"models:/{name}/{version.version}")
        models_to_score.append(ModelToScore(outcome.short, version.tags["phm.variant"], estimator))
    with shards_for(features, shards, shard_map) as shards:
        cuts, per_shard, processes, scores = _list_population_cells(shards, models_to_score, settings, shard_map,
                                                                    progress)
    scores = ScoredVersions({o: (name, str(version.version)) for o, (name, version) in versions.items()}, scores)
    # the diagnosis-gap check reads every adult's latest readings and diagnoses (aggregates kept)
    gaps = {o.short: gap_counts(features, o.short) for o in OUTCOMES}
    treated = {o.short: treated_counts(features, o.short) for o in OUTCOMES}
    del features
    # Do no harm (the models against QRISK3/QDiabetes on the same validation patients) depends on
    # nothing the bootstrap below computes, and its own bootstrap is Poisson draws and matrix
    # products that run without holding the GIL: it runs in a second thread meanwhile, on the
    # other core, which the bootstrap's figures (holding the GIL) leave idle. Not from the start:
    # scoring the list population above uses both cores already (OpenMP), and sharing them made
    # it twice as slow at 1M. Each has its own seeded generator, so the figures are the same.
    standard_frames = {o.short: _standard_frame(validations[o.short], _horizon_years(versions[o.short][1]))
                       for o in OUTCOMES
                       if settings.compare_with_standard and _compares_with_standard(validations[o.short])}
    if progress and standard_frames:
        progress(f"audit: the models against {', '.join(standard_frames)}'s validated scores on the same patients")
    beside = ThreadPoolExecutor(max_workers=1, thread_name_prefix="do-no-harm")
    try:
        standards = beside.submit(compare_with_standard, standard_frames, settings)
        audits, detailed, models = _audit_outcomes(versions, cuts, validations, per_shard, gaps, treated, pinned,
                                                   settings, progress)
        standards = standards.result()
    finally:
        beside.shutdown(wait=True, cancel_futures=True)
    gates = judge_all(audits, settings, quality.missing_share)
    decision = decide(gates, settings.signoffs, standards, blocks=settings.blocks)
    report = AuditReport(f"Fairness audit, ICB {icb_code}", settings, audits, gates, quality, detailed, models,
                         decision=decision, uptake=uptake_of_invitations)
    json_path, html_path = report.write(Path(out_dir))
    run_id = log_audit(report, json_path, html_path, client, location, icb_code, extract_date)
    dq_html, dq_json = write_ethnicity_report(dq, Path(out_dir), icb_code, history_runs, history_figures)
    log_ethnicity_dq(client, run_id, dq, dq_html, dq_json)
    champions = {}
    for gate in gates:
        name, version = versions[gate.outcome]
        for key, value in {**decision.version_tags(gate.outcome), "phm.audit_run_id": run_id}.items():
            client.set_model_version_tag(name, version.version, key, value)
        client.update_model_version(name, version.version, description=decision.version_description(
            gate.outcome, audit_run_name(icb_code, extract_date, report.status) + f" (run {run_id})"))
        if decision.becomes_champion(gate.outcome):
            client.set_registered_model_alias(name, CHAMPION, version.version)
            champions[gate.outcome] = str(version.version)
    return AuditRun(report, json_path, html_path, run_id, location, decision, champions, pinned,
                    time.perf_counter() - started, len(shards), processes, client.get_run(run_id).info.experiment_id,
                    dq_html, flag_lines(dq), history_rows(dq), scores=scores)


def _compares_with_standard(validation: pl.DataFrame) -> bool:
    """Whether the validation predictions carry the validated score to compare the model with."""
    return "comparator_risk" in validation.columns and bool(validation["comparator_risk"].is_not_null().any())


CENSORED_AT = ("died", "left practice")  # sql/labels/outcomes.sql, followup_end_reason


def _horizon_years(version) -> float | None:
    """The horizon the audited version's risks are over (its training's, as registered)."""
    value = version.tags.get("phm.horizon_years")
    return float(value) if value else None


def _expected_over_followup(risk: str, validation: pl.DataFrame, horizon_years: float | None) -> list[pl.Series]:
    """Each validation patient's outcomes expected by ``risk`` while followed
    (models.hazard.risk_while_followed), named ``expected_`` + ``risk``: the risk for a patient
    followed to the horizon's end or to the outcome; for one who died or left without it, the
    chance of the outcome in the years they were followed, the only years it could be recorded.
    Without this, the O/E of a group that leaves its practice or dies more often reads lower than
    it is. None where the validation predictions have no follow-up (a database from before
    2026-11-30)."""
    if horizon_years is None or not {"followup_years", "followup_end_reason"} <= set(validation.columns):
        return []
    censored = (validation["followup_end_reason"].is_in(CENSORED_AT) & ~validation["recorded_outcome"]
                .cast(pl.Boolean).fill_null(False)).fill_null(False).to_numpy()
    expected = risk_while_followed(validation[risk].cast(pl.Float64).to_numpy(),
                                   validation["followup_years"].cast(pl.Float64).to_numpy(), horizon_years, censored)
    return [pl.Series(f"expected_{risk}", expected, nan_to_null=True)]


def _standard_frame(validation: pl.DataFrame, horizon_years: float | None) -> pl.DataFrame:
    followed = [*_expected_over_followup("predicted_risk", validation, horizon_years),
                *_expected_over_followup("comparator_risk", validation, horizon_years)]
    return validation.with_columns(*followed).select(
        pl.col("ethnicity_group").alias("group"), pl.col("predicted_risk").alias("score"),
        pl.col("comparator_risk").alias("standard"), pl.col("recorded_outcome").cast(pl.Int8).alias("outcome"),
        *([pl.col("expected_predicted_risk").alias("score_expected"),
           pl.col("expected_comparator_risk").alias("standard_expected")] if followed else []))


def _audit_outcomes(versions, cuts, validations, per_shard, gaps, treated, pinned, settings: AuditSettings,
                    progress) -> tuple[list, dict, dict]:
    """Each outcome's audit (by group and intersection, and by the detailed categories) and what
    the report says of its model."""
    audits, detailed, models = [], {}, {}
    for outcome in OUTCOMES:
        name, version = versions[outcome.short]
        threshold = cuts[outcome.short].threshold
        validation = validations[outcome.short]
        if validation.is_empty():
            raise ConfigError(f"no validation predictions for {outcome.short}: run phm train again")
        followed = _expected_over_followup("predicted_risk", validation, _horizon_years(version))
        performance = validation.with_columns(*followed).select(
            pl.col("ethnicity_group").alias("group"), "imd_quintile", "sex", "ethnicity_category",
            pl.col("predicted_risk").alias("score"), pl.col("recorded_outcome").cast(pl.Int8).alias("outcome"),
            *([pl.col("expected_predicted_risk").alias("expected")] if followed else []),
        ).with_columns((pl.col("score") >= threshold).alias("selected"))
        if progress:
            progress(f"audit {outcome.short}: {settings.replicates:,} bootstrap replicates by group and intersection")
        columns = ["group", "imd_quintile", "sex", "score", "selected", *(["expected"] if followed else [])]
        audit = audit_score(outcome.short, performance.select(*columns, "outcome"),
                            add_cells([c.cells[outcome.short] for c in per_shard]), threshold, settings,
                            HIGH_NEED_FROM[outcome.short])
        audit.need_description = NEED_DESCRIPTIONS[outcome.short]
        if version.tags.get("phm.variant") == "with_equity":  # the variant that carries the published effects
            from models.train import PUBLISHED_GROUP_LOG_HR

            audit.need_lacks_effect = {group: effect for group, effect in
                                       PUBLISHED_GROUP_LOG_HR.get(outcome.short, {}).items() if effect > 0}
        add_gap_figures(audit, gaps[outcome.short], settings.level)
        add_gap_figures(audit, treated[outcome.short], settings.level, Figure.TREATED_UNDIAGNOSED)
        detailed[outcome.short] = audit_score(
            outcome.short, performance.with_columns(group=pl.col("ethnicity_category")).select(
                "group", "score", "selected", "outcome", *(["expected"] if followed else [])),
            add_cells([c.detailed[outcome.short] for c in per_shard]), threshold, settings,
            HIGH_NEED_FROM[outcome.short])
        audits.append(audit)
        models[outcome.short] = {"registered model": name, "version": version.version,
                                 "taken as": pinned[outcome.short].source,
                                 "variant": version.tags.get("phm.variant"),
                                 "horizon years": version.tags.get("phm.horizon_years")}
    return audits, detailed, models


def _practice_labels(con) -> dict[str, str]:
    """Practice pseudo id (text) -> its ODS code (the pseudo id where the extract gives none); {}
    for a database made without phm ingest."""
    try:
        rows = con.execute("select practice_pseudo_id, ods_code from main.practices").fetchall()
    except Exception:  # a database made without phm ingest (tests of the audit alone)
        return {}
    return {str(pid): (ods or str(pid)) for pid, ods in rows}


def _practice_lsoas(con) -> pl.DataFrame:
    """Registered patients per practice and LSOA (``marts.mart_practice_lsoa``), for a per-LSOA
    census benchmark."""
    try:
        return con.execute("select practice_pseudo_id, lsoa_code, patients from marts.mart_practice_lsoa").pl()
    except Exception as exc:  # noqa: BLE001 - a database made before the mart existed: say what to do
        raise ConfigError("[ethnicity_dq] census_by_lsoa needs marts.mart_practice_lsoa: run phm features (or "
                          f"phm run) with this version first ({type(exc).__name__})") from None


def flag_lines(dq: EthnicityDQ) -> list[str]:
    labels = {u.unit: u.label for u in dq.units if u.level == "practice"}
    return [f"{labels.get(j.unit, j.unit)}: {j.direction}" for j in dq.flags]


ETHNICITY_ARTIFACT_PATH = "ethnicity"


def log_ethnicity_dq(client, run_id: str, dq: EthnicityDQ, html_path: Path, json_path: Path) -> None:
    """The ethnicity data-quality report on the audit's MLflow run: the page and its JSON as
    artifacts, every published figure as a metric (``ethnicity_dq/<level>/<unit>/<indicator>``;
    withheld figures are left out), the flags as a tag."""
    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    metrics = [Metric("ethnicity_dq/flagged_practices", float(len(dq.flagged_units())), stamp, 0)]
    for unit in dq.published()["units"]:
        for name, figure in unit["figures"].items():
            if figure["value"] is not None:
                key = _metric_key("ethnicity_dq", unit["level"], str(unit["label"]), name)
                metrics.append(Metric(key, float(figure["value"]), stamp, 0))
    for start in range(0, len(metrics), 1000):  # MLflow's batch limit
        client.log_batch(run_id, metrics=metrics[start:start + 1000])
    client.set_tag(run_id, "phm.ethnicity_dq.flags", "; ".join(flag_lines(dq))[:5000] or "none")
    client.log_artifact(run_id, str(html_path), ETHNICITY_ARTIFACT_PATH)
    client.log_artifact(run_id, str(json_path), ETHNICITY_ARTIFACT_PATH)


def _extract_date(con) -> str | None:
    """The extract's date (ingest.run_parameters), for the audit run's name; None without one."""
    try:
        row = con.execute("select extract_date from ingest.run_parameters").fetchone()
    except Exception:  # a database made without phm ingest (tests of the audit alone)
        return None
    return row[0].isoformat() if row and row[0] else None


def audit_run_name(icb_code: str, extract_date: str | None, status: str) -> str:
    """"fairness audit, QXX, 2026-03-31: WARN": what a reviewer looks for in the runs list."""
    return f"fairness audit, {icb_code}" + (f", {extract_date}" if extract_date else "") + f": {status}"


REPORT_ARTIFACT = "fairness/fairness_audit.html"


def _metric_key(*parts: str) -> str:
    return "/".join(p.replace(" ", "_") for p in parts)


def log_audit(report: AuditReport, json_path: Path, html_path: Path, client, location: TrackingLocation,
              icb_code: str, extract_date: str | None = None) -> str:
    import mlflow

    experiment_id = ensure_experiment(client, icb_code, location.artifact_root)
    settings = report.settings
    name = audit_run_name(icb_code, extract_date, report.status)
    with mlflow.start_run(experiment_id=experiment_id, run_name=name,
                          description=report.decision.description(name, REPORT_ARTIFACT)) as run:
        mlflow.log_params({
            "replicates": settings.replicates, "level": settings.level, "reference_group": settings.reference_group,
            "ratio_band": f"{settings.ratio_band[0]}-{settings.ratio_band[1]}",
            "need_ratio_limit": settings.need_ratio_limit, "min_patients": settings.min_patients,
            "min_events": settings.min_events, "max_ethnicity_missing": settings.max_ethnicity_missing,
            "capacity_share": settings.capacity_share, "family_control": settings.family_control,
            "shrinkage": settings.shrinkage, "power": settings.power,
            "compare_with_standard": settings.compare_with_standard,
            "fail_when_over_served": settings.fail_when_over_served})
        tags = {"phm.kind": "fairness audit", "phm.icb_code": icb_code, "phm.fairness_gate": report.label(),
                "phm.report": REPORT_ARTIFACT, **({"phm.extract_date": extract_date} if extract_date else {})}
        for gate in report.gates:
            tags[f"phm.fairness_gate.{gate.outcome}.model"] = str(report.models[gate.outcome]["version"])
            tags[f"phm.fairness_gate.{gate.outcome}.model_taken_as"] = report.models[gate.outcome]["taken as"]
        tags.update(report.decision.tags())
        mlflow.set_tags(tags)
        metrics = {}
        for audit in report.audits:
            for kind in ("performance", "selection"):
                for grouping in ("population", "ethnicity"):
                    groups = audit.by_group(grouping, kind)
                    # the same published figures as the JSON (suppression that cannot be undone)
                    for row, data in zip(groups, grouping_json(groups, settings.level), strict=True):
                        if data["withheld"]:
                            continue
                        group = row.name if grouping == "ethnicity" else "population"
                        for figure, estimate in data["figures"].items():
                            if estimate and estimate["value"] is not None:
                                metrics[_metric_key(audit.name, kind, group, figure)] = estimate["value"]
                        for figure, estimate in data["ratio_to_reference"].items():
                            if estimate and estimate["value"] is not None:
                                metrics[_metric_key(audit.name, kind, group, f"{figure}_ratio_to_reference")] = estimate["value"]
        for row in report.uptake or []:  # the same published figures as the JSON
            for share in ("contacted_share", "attended_share"):
                if not row["withheld"] and row[share]["value"] is not None:
                    metrics[_metric_key("uptake", row["grouping"], str(row["group"]), share)] = row[share]["value"]
        mlflow.log_metrics(metrics)
        mlflow.log_artifact(str(html_path), artifact_path="fairness")
        mlflow.log_artifact(str(json_path), artifact_path="fairness")
        return run.info.run_id



@dataclass
class Review:
    outcome: str
    audit_run_id: str
    status: str
    model: str
    version: str
    champion_moved: bool
    ranks_list: str

    def lines(self) -> list[str]:
        moved = (f"'champion' -> {self.model} version {self.version}" if self.champion_moved else
                 f"'champion' not moved: {self.ranks_list} ranks the {self.outcome} list (do no harm)")
        return [f"{self.outcome}: {self.status} signed off and recorded on MLflow run {self.audit_run_id} and "
                f"{self.model} version {self.version}", f"  {moved}"]


def record_review(location: TrackingLocation, outcome: str, signoff, icb_code: str | None = None) -> Review:
    """``phm review``: a named reviewer signs off the latest audit's WARN or FAIL for one outcome.

    The same rule as everywhere (models/fairness/_decision.py): the sign-off must accept the
    gate's level. It is recorded as tags of the audit run and the model version (reviewer,
    reason, source "phm review"), and 'champion' moves to the audited version unless the
    validated score ranks that outcome's list."""
    from mlflow.tracking import MlflowClient

    from models.fairness import Finding, GateResult
    from models.fairness._decision import HOW_TO_UNBLOCK, TAG_RANKS_LIST

    client = MlflowClient(location.tracking_uri)
    experiments = [e for e in client.search_experiments() if e.name.startswith(experiment_name(""))]
    if icb_code is not None:
        experiments = [e for e in experiments if e.name == experiment_name(icb_code)]
    runs = client.search_runs([e.experiment_id for e in experiments], "tags.`phm.kind` = 'fairness audit'",
                              order_by=["attributes.start_time DESC"], max_results=1) if experiments else []
    if not runs:
        raise ConfigError(f"no fairness audit in {location.tracking_uri}" + (f" for ICB {icb_code}" if icb_code else "")
                          + ": run phm audit (or phm run) first")
    run = runs[0]
    tags = run.data.tags
    icb_code = tags["phm.icb_code"]
    label = tags.get(f"phm.fairness_gate.{outcome}")
    if label is None:
        raise ConfigError(f"--outcome {outcome}: the latest audit (run {run.info.run_id}) has no such outcome")
    blocker = tags.get(f"phm.block.{outcome}.reviewer")
    if blocker is not None:
        raise ConfigError(f"{outcome}: the latest audit (run {run.info.run_id}) was blocked by {blocker}: a sign-off "
                          f"does not lift a block; {HOW_TO_UNBLOCK}, and the next run decides again")
    result = GateResult(outcome)
    status = label.split()[0]
    if status == "PASS":
        raise ConfigError(f"{outcome}: the latest audit PASSed: there is nothing to sign off")
    result.findings.append(Finding(status, "recorded", outcome, "all", label))
    decision = decide([result], [signoff])
    if not result.accepted:
        raise ConfigError(f"{outcome}: the latest audit says {status}, which a sign-off with accepts = "
                          f"{signoff.accepts} does not cover (use --accepts FAIL to sign off a FAIL)")
    ranks_list = tags.get(f"phm.ranks_list.{outcome}", "model")
    for key, value in decision.tags().items():
        if not key.startswith("phm.ranks_list"):
            client.set_tag(run.info.run_id, key, value)
    # the run's description says it too: a reviewer reads it before any tag
    note = tags.get("mlflow.note.content", "")
    client.set_tag(run.info.run_id, "mlflow.note.content", note + (
        f"\n\n**Signed off after the audit** ({signoff.source}, {dt.date.today().isoformat()}): {outcome} {status} "
        f"by {signoff.reviewer}: {signoff.reason}"))
    name = registered_model_name(icb_code, next(o for o in OUTCOMES if o.short == outcome))
    version = tags[f"phm.fairness_gate.{outcome}.model"]
    for key, value in decision.version_tags(outcome).items():
        if key != TAG_RANKS_LIST:
            client.set_model_version_tag(name, version, key, value)
    client.update_model_version(name, version, description=decision.version_description(
        outcome, f"{run.info.run_name} (run {run.info.run_id})", ranks_list))
    moved = ranks_list == "model"
    if moved:
        client.set_registered_model_alias(name, CHAMPION, version)
    return Review(outcome, run.info.run_id, status, name, version, moved, ranks_list)
