"""The whole pipeline as one Prefect flow: ``phm run`` and ``phm demo``.

ingest and validate -> features and validated scores -> train -> fairness audit and gate ->
score with the audited models -> lists -> publish. Each task is a thin wrapper around a plain
function (tested without Prefect); the flow only wires them. The gate's one decision
(models/fairness/_decision.py) says whether lists may go out: where it refuses (a FAIL, or a
WARN that no named reviewer signed off) the flow stops before scoring: no list is written, the
previous lists stay published, and the error (FairnessGateFailed, exit code 7) names the report.
The decision (gate result, reviewer, reason, what ranks each list) goes into the lists' manifest.

Per-shard work (scoring patients for the audit and for the lists, and the audit's cells:
models/shards.py) goes through the flow's task runner as ``shard`` tasks: with the default
executor the whole ICB is one shard run here; with ``executor = "dask"`` each PCN is a shard and
the tasks run on a Dask cluster (prefect-dask's DaskTaskRunner; a LocalCluster unless an
address is given). Everything else, and every write to the database, stays in this process:
DuckDB allows one writer per file.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from prefect import flow, get_run_logger, task, unmapped
from prefect.cache_policies import NONE

from flows.config import RunConfig
from flows.ingest import ingest_flow

# What the stages import (the heaviest: MLflow with skops, Great Expectations, scikit-learn), which
# a run's process imports before its work starts: `phm run` while Prefect's temporary server starts
# (cli/main.py), a scheduled run before it freezes them out of the garbage collector's walks
# (flows/deployments.py; phm/collector.py).
STAGE_IMPORTS = ("phm.ingest", "features.run", "models.training_run", "mlflow.sklearn", "skops.io",
                 "models.audit_run", "models.score_models", "phm.lists", "flows.publish")

STAGES = ("ingest and validate", "features and validated scores", "train the risk models",
          "fairness audit and gate", "score with the audited models", "build the lists", "publish the lists")


@dataclass
class RunSummary:
    out: Path
    db: Path
    seconds: dict[str, float] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    lists_link: Path | None = None
    audit_report: Path | None = None
    coverage_report: Path | None = None  # codelist coverage of the extract (phm.codelist_coverage)
    mlflow_ui: str = ""
    audit_ui_url: str = ""  # the audit run's page in the MLflow UI
    history_report: Path | None = None  # the run history and drift report (phm/history_report.py)
    ethnicity_report: Path | None = None  # ethnicity data quality per practice and PCN (phm/ethnicity_dq_report.py)
    skipped: bool = False  # the extract was the last one published: nothing done


class Stages:
    """Progress on the terminal (and in Prefect's log) for each stage, with its time."""

    def __init__(self, progress) -> None:
        self.progress, self.seconds, self._started = progress, {}, None

    def start(self, name: str) -> None:
        self._started = (name, time.perf_counter())
        self.progress(f"[{STAGES.index(name) + 1}/{len(STAGES)}] {name}")

    def done(self) -> None:
        name, started = self._started
        self.seconds[name] = time.perf_counter() - started


def _progress():
    """Progress lines in Prefect's log, which its console handler also shows on the terminal."""
    return get_run_logger().info


@task(name="features", cache_policy=NONE)
def features_task(db: Path, index_date: dt.date | None):
    from features.run import run_features

    return run_features(db, index_date, progress=_progress())


@task(name="validated-scores", cache_policy=NONE)
def scores_task(db: Path):
    from models.score_patients import run_scores

    return run_scores(db, progress=_progress())


@task(name="population", cache_policy=NONE)
def population_task(db: Path, config: RunConfig):
    """The ICB's patients with their features and validated scores, read once for the run."""
    from models.population import read_population

    return read_population(db, config.run.icb)


@task(name="train", cache_policy=NONE, retries=1, retry_delay_seconds=5)  # MLflow store may be busy
def train_task(db: Path, config: RunConfig, icb_code: str, truth: Path | None = None):
    from models.train import TrainingConfig
    from models.training_run import run_training

    training = TrainingConfig(horizon_years=config.run.horizon_years, seed=config.run.seed,
                              compare_variants=config.run.compare_variants)
    return run_training(db, training, config.run.tracking_uri, icb_code, truth, progress=_progress())


@task(name="shard", cache_policy=NONE, retries=1, retry_delay_seconds=2)  # a fault in the work: run it again
def shard_task(work, name: str, rows, scores, kwargs: dict):
    """``rows``/``scores``: the shard's frames; on Dask, futures of frames scattered to the
    workers, which Dask resolves to the frames where the task runs (it never sees a path)."""
    from models.shards import Shard

    return work(Shard(name, rows.height, rows, scores), **kwargs)


def _dask_client():
    """The flow's Dask client where its task runner is prefect-dask's, else None."""
    import sys

    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or "prefect_dask" not in sys.modules:
        return None
    from prefect_dask import DaskTaskRunner

    return context.task_runner.client if isinstance(context.task_runner, DaskTaskRunner) else None


class OnTaskRunner:
    """models.shards.ShardMap through the flow's task runner: one ``shard`` task per shard. On
    Dask, a shard's frames are scattered to the workers once (``put``) and each task is handed
    the futures, so no task carries patient rows in its graph and no worker reads a file."""

    def __call__(self, work, shards, **kwargs) -> list:
        from prefect.context import TaskRunContext

        named = shard_task.with_options(name=work.__name__.replace("_", "-"),
                                        task_run_name=work.__name__.replace("_", "-") + " {name}")
        # Submitted as the flow's tasks, not as children of the task calling this (the audit,
        # scoring): Prefect sends the enclosing task's context, its parameters included, with
        # every task it submits to Dask, and those parameters are the whole population (the
        # 1M-patient features frame: 277 MB in each shard task's graph) and the run's paths.
        detached = TaskRunContext.__var__.set(None)
        try:
            futures = named.map(unmapped(work), [s.name for s in shards], [s.rows for s in shards],
                                [s.scores for s in shards], unmapped(kwargs))
        finally:
            TaskRunContext.__var__.reset(detached)
        return [future.result() for future in futures]

    def put(self, frames) -> list:
        client = _dask_client()
        return list(frames) if client is None else client.scatter(list(frames), hash=False)

    def release(self, handles) -> None:
        for handle in handles:
            if hasattr(handle, "release"):  # a Dask future: the worker may drop the frame
                handle.release()


on_task_runner = OnTaskRunner()


@task(name="make-shards", cache_policy=NONE)
def shards_task(config: RunConfig, population):
    """The ICB's patients as shards (per PCN on Dask), scattered to the workers there."""
    from models.shards import make_shards

    return make_shards(population.features, by="pcn" if config.run.executor == "dask" else None,
                       put=on_task_runner.put)


@task(name="fairness-audit", cache_policy=NONE, retries=1, retry_delay_seconds=5)  # MLflow store may be busy
def audit_task(db: Path, config: RunConfig, out: Path, location, shards, population, versions):
    from models.audit_run import run_audit

    return run_audit(db, config.audit, location, out / "audit", population.icb_code, progress=_progress(),
                     shards=shards, shard_map=on_task_runner, population=population, versions=versions,
                     ethnicity=config.ethnicity_dq)


@task(name="score", cache_policy=NONE)
def score_task(db: Path, config: RunConfig, location, shards, population, versions, audit_scores):
    from models.score_models import score_models

    return score_models(db, location, population.icb_code, warn=get_run_logger().warning, shards=shards,
                        shard_map=on_task_runner, population=population, versions=versions,
                        audit_scores=audit_scores)


@task(name="lists", cache_policy=NONE)
def lists_task(db: Path, config: RunConfig, index_date: dt.date):
    from phm.db import connect
    from phm.lists import build_lists
    from phm.pseudonymise import icb_key

    key = icb_key(icb=config.run.icb)  # read here, never passed around: task arguments can be recorded by Prefect
    con = connect(db)
    try:
        run = build_lists(con, config.lists, key, index_date)
    finally:
        con.close()
    for warning in run.warnings:  # in the Prefect UI too: urgent patients beyond a practice's capacity
        get_run_logger().warning(warning)
    return run


@task(name="publish", cache_policy=NONE, retries=2, retry_delay_seconds=2)  # files: transient faults
def publish_task(run, db: Path, out: Path, manifest: dict, index_date: dt.date, keep: int = 2):
    from flows.publish import discard, publish, write_run_folder
    from phm.db import connect
    from phm.lists import record_invitations

    folder = write_run_folder(run, out, manifest)
    try:
        link = publish(folder, out, keep)
    except BaseException:
        discard(folder)
        raise
    con = connect(db)
    try:
        record_invitations(con, run, index_date)
    finally:
        con.close()
    return link


@flow(name="phm-run", log_prints=False)
def run_flow(extract: Path, out: Path, config: RunConfig | None = None, truth: Path | None = None,
             force: bool = False) -> RunSummary:
    """``truth``: synthetic extracts only, the generator's truth/ folder, to also measure the
    models against each patient's true risk (logged to MLflow). ``force``: run even if this
    extract, with these settings, was the last one published from ``out`` (flows/runrecord.py)."""
    from flows.publish import mark_not_replaced
    from flows.runlock import run_lock
    from flows.runrecord import (
        extract_digest,
        remove_leftovers,
        settings_digest,
        unchanged_since,
        write_record,
    )
    from models.tracking import remove_unfinished_runs
    from phm.contract import ExtractMetadata
    from phm.exceptions import FairnessGateFailed, StaleExtract
    from phm.freshness import check_freshness
    from phm.pseudonymise import icb_key

    config = config or RunConfig()
    key = icb_key(icb=config.run.icb)  # first: without the key no list can be made, so do not start the work
    extract, out = Path(extract), Path(out)
    log = get_run_logger()
    # Everything the run writes (database, MLflow store, lists) is for its owner only.
    umask = os.umask(0o077)
    try:
        with run_lock(out):
            removed = remove_leftovers(out)
            if removed:
                log.warning(f"removed what an interrupted run left in {out}: {', '.join(removed)}")
            unfinished = remove_unfinished_runs(out, config.run.tracking_uri)
            if unfinished:
                log.warning(f"removed the MLflow artifacts of {unfinished} run(s) a failed or killed run left")
            # before "unchanged": a stale extract is refused (or marked) every time, not skipped as current
            try:
                freshness = check_freshness(ExtractMetadata.read(extract).extract_date,
                                            config.run.max_extract_age_days, config.run.stale_extract)
            except StaleExtract as exc:
                _alert_stale(config, out, ExtractMetadata.read(extract).extract_date)
                if mark_not_replaced(out, "stale extract", str(exc)):
                    log.warning(f"the published lists in {out / 'lists'} are marked as not replaced")
                raise
            if freshness.stale:
                log.warning(f"STALE DATA: {freshness.message()}; the lists are published marked as stale "
                            "([run] stale_extract = \"mark\")")
                _alert_stale(config, out, freshness.extract_date)
            digest, settings = extract_digest(extract), settings_digest(config, key)
            previous = None if force else unchanged_since(out, digest, settings)
            if previous:
                message = (f"extract and settings unchanged since the run that finished at {previous.finished_at} "
                           f"(content digest {digest[:12]}): the published lists are current; nothing to do "
                           "(--force runs it again)")
                log.info(message)
                return RunSummary(out, out / "phm.duckdb", lines=[message], lists_link=out / "lists", skipped=True)
            log.info(f"extract content digest {digest[:12]}: processing")
            try:
                summary = _run(extract, out, config, truth, digest, freshness)
            except BaseException as exc:
                remove_unfinished_runs(out, config.run.tracking_uri)  # a failed run's partial artifacts
                if isinstance(exc, FairnessGateFailed) and mark_not_replaced(out, "fairness gate refused", str(exc)):
                    log.warning(f"the published lists in {out / 'lists'} are marked as not replaced")
                raise
            write_record(out, digest, settings, summary.lists_link)
            return summary
    finally:
        os.umask(umask)


def _run(extract: Path, out: Path, config: RunConfig, truth: Path | None, digest: str, freshness) -> RunSummary:
    from models.shards import release_shards
    from models.tracking import create_store_meanwhile, tracking_location

    db = out / "phm.duckdb"
    stages = Stages(_progress())
    summary = RunSummary(out, db)
    if freshness.stale:
        summary.lines.append(f"STALE DATA: {freshness.message()}; the lists are marked as stale")
    location = tracking_location(db.resolve().parent, config.run.tracking_uri)
    store = create_store_meanwhile(location)  # a new MLflow store's tables, made while ingest runs
    try:
        stages.start("ingest and validate")
        ingest = ingest_flow(extract, db, out, config.ingest)
        summary.lines += ingest.summary_lines()
        summary.coverage_report = Path(ingest.codelist_coverage_report) if ingest.codelist_coverage_report else None
        stages.done()

        stages.start("features and validated scores")
        features = features_task(db, config.run.index_date)
        summary.lines += features.summary_lines()
        summary.lines += scores_task(db).summary_lines()
        population = population_task(db, config)  # the ICB resolved once, its patients read once
        _alert_quality(config, population, ingest, out)
        stages.done()
    finally:
        if store is not None:  # whatever happened: a store left half-made would refuse the next run
            store.join()

    stages.start("train the risk models")
    training = train_task(db, config, population.icb_code, truth)
    summary.lines += training.summary_lines()
    summary.mlflow_ui = location.ui_command()
    stages.done()

    stages.start("fairness audit and gate")
    shards = shards_task(config, population)
    try:
        summary.lines.append(f"shards: {len(shards)} ({config.run.executor} executor)")
        # The versions this run registered, as data: never what an alias points to by the time
        # the audit or scoring reads it (another run may share the MLflow store).
        audit = audit_task(db, config, out, location, shards, population, training.versions)
        summary.lines += audit.summary_lines()
        summary.audit_report = audit.html_path
        summary.ethnicity_report = audit.ethnicity_report
        summary.audit_ui_url = location.ui_url(audit.ui_path())
        stages.done()
        _alert_gate(population.icb_code, audit, out)
        if audit.decision.refused:  # the history keeps refused runs too: their gate, data quality, scores
            _history(summary, db, out, config, population, ingest, audit, freshness, features.index_date, digest,
                     location, published=False)
        audit.decision.raise_if_refused("no list is produced and the previous lists stay published",
                                        audit.html_path)

        stages.start("score with the audited models")
        # the audited versions: their scores, which the audit left beside the shards, are reused
        scored = score_task(db, config, location, shards, population, audit.scoring_versions(), audit.scores)
        summary.lines += scored.summary_lines()
        stages.done()
    finally:
        release_shards(shards, on_task_runner)  # the workers drop the patient rows, whatever happened

    stages.start("build the lists")
    lists = lists_task(db, config, features.index_date)
    summary.lines += lists.summary_lines()
    stages.done()

    stages.start("publish the lists")
    manifest = {
        "published_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "index_date": features.index_date.isoformat(), **freshness.manifest(),
        **({"stale": freshness.manifest()} if freshness.stale else {}),
        "extract": str(extract.resolve()), "extract_digest": digest, "gate": audit.report.label(),
        "gate_decision": audit.decision.manifest(), "models": audit.report.models, "audit_run_id": audit.run_id,
        "scored_with": scored.manifest(),
        "pcns": {row["pcn_code"]: {k: v for k, v in row.items() if k != "pcn_code"}
                 for row in lists.counts.iter_rows(named=True)},
        "capacity": lists.capacity,  # the period and each PCN's capacity in it: configuration, not counts
        # e.g. urgent patients beyond a capacity: in the files a team reads, not only the terminal
        # and the Prefect log (each names its PCN; counts suppressed)
        "warnings": list(lists.warnings),
    }
    summary.lists_link = publish_task(lists, db, out, _suppressed(manifest), features.index_date,
                                      config.retention.list_folders)
    stages.done()
    _history(summary, db, out, config, population, ingest, audit, freshness, features.index_date, digest, location,
             published=True, list_sizes={r["pcn_code"]: r["on_list"] for r in lists.counts.iter_rows(named=True)})
    summary.seconds = stages.seconds
    return summary


@task(name="history", cache_policy=NONE)
def history_task(db: Path, facts, features, out: Path, location, settings, published: bool, list_sizes, uptake,
                 ethnicity_rows=None):
    from models.history_run import record_history

    return record_history(db, facts, features, out, location, settings, scored=published, list_sizes=list_sizes,
                          uptake=uptake, extra_rows=ethnicity_rows)


def _history(summary: RunSummary, db: Path, out: Path, config: RunConfig, population, ingest, audit, freshness,
             index_date: dt.date, digest: str, location, published: bool, list_sizes: dict | None = None) -> None:
    """Append the run to the history (phm/history.py), write and log the history report, and
    raise a drift alert where a score moved in a group. A fault here is reported, never the
    reason a run whose lists are out ends failed (the history is a record, not a gate)."""
    import uuid

    from prefect.context import FlowRunContext

    from phm.history import DriftSettings, RunFacts

    log = get_run_logger()
    context = FlowRunContext.get()
    run_id = str(context.flow_run.id) if context is not None and context.flow_run is not None else str(uuid.uuid4())
    facts = RunFacts(run_id, dt.datetime.now(dt.UTC), population.icb_code, freshness.extract_date, index_date,
                     published, audit.decision.manifest(),
                     {t.table: (t.rows_quarantined - t.rows_quarantined_with_parent, t.rows_read)
                      for t in ingest.tables.values() if t.rows_read}, digest)
    settings = DriftSettings(config.alerts.max_score_psi, config.alerts.min_drift_group)
    try:
        record = history_task(db, facts, population.features, out, location, settings, published, list_sizes,
                              audit.report.uptake, audit.ethnicity_rows)
    except Exception as exc:  # noqa: BLE001 - reported, not raised: see the docstring
        message = f"history not recorded ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        log.warning(message)
        summary.lines.append(message)
        return
    summary.lines += record.summary_lines()
    summary.history_report = record.report
    _alert_drift(population.icb_code, record.appended, record.report)


def _alert_drift(icb: str, appended, report: Path) -> None:
    """Scores whose distribution moved in a group since the previous run (``appended``:
    phm.history.HistoryAppend): the Prefect log, and an alert (flows/alerts.py)."""
    from flows.alerts import emit
    from phm.alerts import drift_alert

    findings = appended.findings
    alert = drift_alert(icb, appended.settings.max_psi, [(d.score, d.grp, d.psi) for d in findings],
                        str(Path(report).resolve()), appended.ranking_changes)
    if alert is not None:
        get_run_logger().warning(alert.message)
        emit(alert)


def _alert_stale(config: RunConfig, out: Path, extract_date: dt.date) -> None:
    """An extract over the age limit, refused or published marked: an alert (flows/alerts.py)."""
    from flows.alerts import emit
    from phm.alerts import stale_alert
    from phm.freshness import Freshness, today_utc

    freshness = Freshness(extract_date, today_utc(), config.run.max_extract_age_days)
    emit(stale_alert(config.run.icb or "unknown", extract_date.isoformat(), freshness.age_days,
                     freshness.max_age_days, config.run.stale_extract, str(out.resolve() / "lists")))


def _alert_quality(config: RunConfig, population, ingest, out: Path) -> None:
    """Ethnicity recorded and quarantined shares against ``[alerts]``: an alert when below."""
    from flows.alerts import emit
    from phm.alerts import ethnicity_recorded_share, quality_alert, quarantined_shares

    features = population.features
    recorded = ethnicity_recorded_share(features["ethnicity_group"]) if "ethnicity_group" in features.columns else None
    report = ingest.data_docs or str(out.resolve() / "phm.duckdb")  # Data Docs, or the database's ingest tables
    alert = quality_alert(population.icb_code, config.alerts, recorded, quarantined_shares(ingest.tables.values()),
                          report)
    if alert is not None:
        get_run_logger().warning(alert.message)
        emit(alert)


def _alert_gate(icb: str, audit, out: Path) -> None:
    """The gate refused an outcome (a FAIL, or a WARN nobody signed off): an alert per kind. An
    outcome a reviewer blocked is not one of them (its reviewer knows; the run's failure alerts)."""
    from flows.alerts import emit
    from phm.alerts import gate_alerts

    refused = [(r.outcome, r.status) for r in audit.decision.refused if r.block is None]
    for alert in gate_alerts(icb, refused, str(Path(audit.html_path).resolve()), str(out.resolve() / "lists")):
        emit(alert)


def _suppressed(manifest: dict) -> dict:
    """The manifest leaves the pipeline: its per-PCN counts are suppressed like every aggregate."""
    from phm.disclosure import suppress

    manifest = dict(manifest)
    manifest["pcns"] = {pcn: {k: suppress(int(v)) for k, v in counts.items()} for pcn, counts in manifest["pcns"].items()}
    manifest["counts"] = "1-7 suppressed (null), others rounded to 5"
    return manifest


def flow_for(run) -> object:
    """``run_flow`` with the task runner ``[run]`` asks for: the default thread pool, or
    prefect-dask's DaskTaskRunner (on ``dask_address``, else a LocalCluster started for the
    run and stopped after it)."""
    if run.executor != "dask":
        return run_flow
    from prefect_dask import DaskTaskRunner

    if run.dask_address:
        runner = DaskTaskRunner(address=run.dask_address)
    else:
        workers = run.dask_workers or os.cpu_count() or 1
        # one thread per worker: the shard work is numpy/scikit-learn, which holds the GIL often
        runner = DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1,
                                                "processes": True, "dashboard_address": None})
    return run_flow.with_options(task_runner=runner)
