"""A run's place in the history (phm/history.py): its scores by group, appended to the run's
database; the history report (phm/history_report.py) written under ``<out>/history/`` and logged
to MLflow, one run per pipeline run, in the experiment ``phm history <ICB>``.

The scores whose drift is measured, each per broad ethnic group (and 'all'): QRISK3-2017 and
QDiabetes-2018 (10-year risk, every patient they apply to) and each outcome's list-ranking risk
(``marts.risk_scores``: the audited model's risk, or QRISK3/QDiabetes where do no harm made it
rank the list; a run the gate refused has no list risk, so only the validated scores are kept).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from models.tracking import TrackingLocation
from phm.db import connect
from phm.history import DriftSettings, HistoryAppend, RunFacts, append_run, read_history
from phm.history_report import REPORT_NAME, write_report

VALIDATED_SCORES = {"qrisk3_10y_pct": "QRISK3 10y", "qdiabetes_10y_pct": "QDiabetes 10y"}
LIST_OUTCOMES = ("cvd", "t2d", "hypertension")
ARTIFACT_PATH = "history"


def experiment_name(icb: str) -> str:
    return f"phm history {icb}"


def list_score(outcome: str) -> str:
    return f"{outcome} list risk"


def history_scores(features: pl.DataFrame, risk_scores: pl.DataFrame | None = None) -> pl.DataFrame:
    """Long format, one row per patient and score: ``score``, ``grp`` (broad ethnic group),
    ``risk_pct``. ``features``: the ICB's population (patient_id, ethnicity_group and the
    validated scores); ``risk_scores``: ``marts.risk_scores`` after scoring (None: not scored)."""
    groups = features.select("patient_id", pl.col("ethnicity_group").cast(pl.String).alias("grp"))
    parts = [features.select(pl.lit(name).alias("score"), pl.col("ethnicity_group").cast(pl.String).alias("grp"),
                             pl.col(column).cast(pl.Float64).alias("risk_pct"))
             for column, name in VALIDATED_SCORES.items() if column in features.columns]
    if risk_scores is not None:
        joined = risk_scores.join(groups, on="patient_id", how="inner")
        for outcome in LIST_OUTCOMES:
            column = f"{outcome}_model_risk"
            if column in joined.columns:
                parts.append(joined.select(pl.lit(list_score(outcome)).alias("score"), "grp",
                                           (pl.col(column).cast(pl.Float64) * 100).alias("risk_pct")))
    return pl.concat(parts) if parts else pl.DataFrame(schema={"score": pl.String, "grp": pl.String,
                                                                "risk_pct": pl.Float64})


@dataclass
class HistoryRecord:
    appended: HistoryAppend
    report: Path
    mlflow_run_id: str | None = None

    def summary_lines(self) -> list[str]:
        where = f"; in MLflow run {self.mlflow_run_id}" if self.mlflow_run_id else ""
        return [*self.appended.summary_lines(), f"  history report: {self.report.resolve()}{where}"]


def record_history(db: Path, facts: RunFacts, features: pl.DataFrame, out: Path,
                   location: TrackingLocation | None, settings: DriftSettings, scored: bool = True,
                   list_sizes: dict[str, int] | None = None, uptake: list[dict] | None = None,
                   extra_rows: list[tuple] | None = None) -> HistoryRecord:
    """Append the run to the history in ``db``, write the report over every run of the ICB
    under ``out``/history and log it to MLflow (``location``; None: not logged). ``extra_rows``:
    further published figures of the run (the ethnicity data-quality report's, per practice and PCN:
    phm.ethnicity_dq.history_rows)."""
    con = connect(db)
    try:
        risk_scores = con.execute("select * from marts.risk_scores").pl() if scored else None
        appended = append_run(con, facts, history_scores(features, risk_scores), features["ethnicity_group"],
                              list_sizes, uptake, settings, extra_rows)
        runs, figures = read_history(con, facts.icb)
    finally:
        con.close()
    report = write_report(runs, figures, Path(out) / "history", facts.icb, settings)
    record = HistoryRecord(appended, report)
    if location is not None:
        record.mlflow_run_id = log_history(record, facts, location)
    return record


def log_history(record: HistoryRecord, facts: RunFacts, location: TrackingLocation) -> str:
    """One MLflow run per pipeline run in ``phm history <ICB>``: the report as its artifact, the
    PSI per score and group as metrics, the gate and drift as tags (published figures only)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(location.tracking_uri)
    client = MlflowClient(location.tracking_uri)
    name = experiment_name(facts.icb)
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment is not None else client.create_experiment(
        name, artifact_location=location.artifact_root, tags={
            "phm.icb_code": facts.icb, "mlflow.note.content":
            f"The run history of ICB {facts.icb}: one run per pipeline run, its artifact `{ARTIFACT_PATH}/"
            f"{REPORT_NAME}` the report over every run so far (gate, data quality, score distributions by "
            "broad ethnic group and their drift, list sizes, uptake); counts suppressed. docs/operations.md, "
            "'Run history and drift'."})
    findings = record.appended.findings
    run_name = (f"history, {facts.icb}, {facts.extract_date or 'no extract date'}: "
                + (f"DRIFT in {len(findings)}" if findings else "no drift"))
    description = "\n".join([
        f"**{run_name}**", "", *[f"- {line}" for line in record.appended.summary_lines()], "",
        f"The report: Artifacts tab, `{ARTIFACT_PATH}/{REPORT_NAME}`."])
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, description=description) as run:
        mlflow.set_tags({"phm.kind": "history", "phm.icb_code": facts.icb, "phm.pipeline_run": facts.run_id,
                         "phm.drift": ", ".join(f"{d.score} / {d.grp}" for d in findings) or "none",
                         **({"phm.extract_date": str(facts.extract_date)} if facts.extract_date else {})})
        mlflow.log_params({"max_score_psi": record.appended.settings.max_psi,
                           "min_drift_group": record.appended.settings.min_group})
        metrics = {f"psi/{d.score}/{d.grp}".replace(" ", "_"): round(d.psi, 4)
                   for d in record.appended.drift if d.judged}
        if metrics:
            mlflow.log_metrics(metrics)
        mlflow.log_artifact(str(record.report), artifact_path=ARTIFACT_PATH)
        return run.info.run_id
