"""Prefect flow for ingest: each task is a thin wrapper around a step in ``phm.ingest``.

Runs with no server (Prefect starts a temporary local one) or against ``PREFECT_API_URL``.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from phm import ingest as steps

# Caching is off: a step's result depends on the files' contents, not only on its arguments.


@task(name="load-and-stage", cache_policy=NONE)
def load_and_stage(extract_dir: Path, db_path: Path):
    logger = get_run_logger()
    return steps.load_and_stage(extract_dir, db_path, progress=logger.info)


@task(name="validate", cache_policy=NONE)
def validate(db_path: Path, docs_dir: Path | None):
    logger = get_run_logger()
    return steps.validate(db_path, docs_dir, progress=logger.info)


@task(name="quarantine-and-publish", cache_policy=NONE)
def quarantine_and_publish(db_path: Path, outcomes, reports):
    return steps.quarantine_and_publish(db_path, outcomes, reports)


@task(name="report", cache_policy=NONE)
def finish(extract_dir, db_path, docs_dir, metadata, reports, notes_found, started):
    report = steps.finish(extract_dir, db_path, docs_dir, metadata, reports, notes_found, started)
    logger = get_run_logger()
    for line in report.summary_lines():  # counts and rule names only, never row values
        (logger.warning if line.startswith("WARN ") else logger.info)(line)
    return report


@flow(name="phm-ingest", log_prints=False)
def ingest_flow(extract_dir: Path, db_path: Path, docs_dir: Path | None = None,
                settings: steps.IngestSettings | None = None) -> steps.IngestReport:
    started = time.perf_counter()
    extract_dir, db_path = Path(extract_dir), Path(db_path)
    metadata, reports = load_and_stage(extract_dir, db_path)
    outcomes = validate(db_path, docs_dir)
    notes_found = quarantine_and_publish(db_path, outcomes, reports)
    report = finish(extract_dir, db_path, docs_dir, metadata, reports, notes_found, started)
    steps.refuse_mostly_quarantined(report, settings or steps.IngestSettings())
    return report
