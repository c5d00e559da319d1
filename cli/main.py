"""``phm``: the command line. Every command has --help; errors are one line on stderr.

The top floor: it may import flows/, models/, features/ and phm/, and nothing imports it
(tests/unit/test_layers.py). Each command is a ``cmd_<command>`` (what it does) and an
``add_<command>`` (its options), listed in COMMANDS.

Exit codes: 0 success; 1 other user-facing error; 2 invalid option or configuration;
3 extract file fault; 4 codelist fault; 5 validation machinery fault; 6 database unavailable;
7 the fairness gate refused a list (a FAIL, or a WARN no named reviewer signed off: one rule for
every command, models/fairness/_decision.py); 8 too little data; 9 no space left on the device;
10 stale extract; 70 internal error (a bug: please report it with ``--debug`` output).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import difflib
import logging
import os
import re
import sys
import time
from pathlib import Path

from phm import collector
from phm.exceptions import EXIT_CODES, ConfigError, DiskFull, PhmError

INTERNAL_ERROR = 70


def _env_defaults() -> None:
    # Quiet, local-only defaults for the embedded Prefect and GX; explicit settings win.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    # Prefect's temporary server gets 20 s to start by default; on a busy machine (several ICB
    # runs at once on 2 cores) it needs longer, and a run should wait rather than fail.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    # before scikit-learn loads OpenMP: threads wait passively on a shared machine (models/__init__.py)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _probabilities(items: list[str] | None, option: str, key: str = "GROUP",
                   example: str = "N=0.6 or Black=0.6") -> dict[str, float]:
    out = {}
    for item in items or []:
        group, sep, value = item.partition("=")
        try:
            out[group] = float(value) if sep else float("nan")
        except ValueError:
            out[group] = float("nan")
        if not sep or out[group] != out[group]:
            raise ConfigError(f"{option} takes {key}=PROBABILITY (e.g. {example}), not {item!r}")
    return out


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date (YYYY-MM-DD): {text!r}") from None


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cmd_synth(args) -> int:
    from phm.synth import SynthConfig, check_replaceable, generate

    check_replaceable(Path(args.out))
    config = SynthConfig(
        patients=args.patients, seed=args.seed, extract_date=args.extract_date,
        profile=args.profile, pcns=args.pcns, format=args.format,
        ethnicity_unrecorded=args.ethnicity_unrecorded,
        measurement_access=_probabilities(args.measurement_access, "--measurement-access"),
        outcome_recording=_probabilities(args.outcome_recording, "--outcome-recording"),
        ethnicity_misrecording=_probabilities(args.ethnicity_misrecording, "--ethnicity-misrecording"),
        ethnicity_repeat_codes=args.ethnicity_repeat_codes,
        hospital_ethnicity=args.hospital_ethnicity,
        ethnicity_unrecorded_practice=_probabilities(args.ethnicity_unrecorded_practice,
                                                     "--ethnicity-unrecorded-practice", "PRACTICE", "Z10003=0.5"),
        ethnicity_misrecording_practice=_probabilities(args.ethnicity_misrecording_practice,
                                                       "--ethnicity-misrecording-practice", "PRACTICE", "Z10003=0.3"))
    config.validate()
    _progress(f"generating {config.patients:,} synthetic patients (seed {config.seed}) into {args.out}")
    started = time.perf_counter()
    counts = generate(config, Path(args.out))
    for table, rows in counts.items():
        print(f"{table:<24}{rows:>12,} rows")
    print(f"written to {args.out} in {time.perf_counter() - started:.1f} s "
          f"(truth for checking results in {Path(args.out) / 'truth'}; each practice's own lookup to test NHS "
          f"numbers, for phm reidentify, in {Path(args.out) / 'practice_side'}: neither is read by ingest)")
    return 0


def add_synth(sub) -> None:
    p = sub.add_parser("synth", help="generate a synthetic GP extract (and its truth/)",
                       description="Generate a synthetic extract in the contract layout, with a "
                       "truth/ folder the pipeline never reads. Deterministic for a seed.")
    p.add_argument("--patients", type=int, default=10_000, help="number of patients (default 10000)")
    p.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    p.add_argument("--out", required=True, help="output folder: new, empty, or an earlier phm synth output (replaced "
                   "whole); a folder holding anything else is refused")
    p.add_argument("--profile", default="england", help="ethnicity profile: england (default) or diverse_urban")
    p.add_argument("--pcns", type=int, help="number of PCNs (default: patients / 40,000, rounded up)")
    p.add_argument("--format", default="parquet", choices=["parquet", "csv"], help="file format (default parquet)")
    p.add_argument("--extract-date", type=_date, default=dt.date(2026, 3, 31), help="extract date (default 2026-03-31)")
    p.add_argument("--ethnicity-unrecorded", type=float, default=0.15, help="share with no ethnicity code (default 0.15)")
    p.add_argument("--measurement-access", nargs="*", metavar="GROUP=P",
                   help="bias knob: probability a measurement is taken, per group (e.g. N=0.5)")
    p.add_argument("--outcome-recording", nargs="*", metavar="GROUP=P",
                   help="bias knob: probability a true diagnosis or event is coded, per group")
    p.add_argument("--ethnicity-misrecording", nargs="*", metavar="GROUP=P",
                   help="bias knob: probability the recorded ethnicity is another category")
    p.add_argument("--ethnicity-repeat-codes", type=float, default=0.0, metavar="MEAN",
                   help="mean number of further codes of a patient's usual recorded ethnicity (as real records "
                        "repeat it); 0 (default) adds none")
    p.add_argument("--hospital-ethnicity", type=float, default=0.0, metavar="SHARE",
                   help="share of patients with hospital records of their ethnic category, written to the "
                        "optional hospital_ethnicity table with its own recording errors; 0 (default) writes none")
    p.add_argument("--ethnicity-unrecorded-practice", nargs="*", metavar="PRACTICE=SHARE",
                   help="a practice that records ethnicity badly: the share of its patients with no ethnicity code, "
                        "by ODS code (Z10001 is the first practice), e.g. Z10003=0.5")
    p.add_argument("--ethnicity-misrecording-practice", nargs="*", metavar="PRACTICE=P",
                   help="a practice that misrecords ethnicity: the probability it records another category, by ODS "
                        "code, e.g. Z10002=0.3")
    p.set_defaults(func=cmd_synth)


def _quiet_user_errors_on_console() -> None:
    """Keep Prefect's console from repeating a user error with tracebacks.

    A PhmError (bad extract, bad option) is reported by main() as one line; Prefect would also
    print it at ERROR level with two tracebacks. The filter is on console handlers only: the
    Prefect API (and UI) still receives the failure with the step and the message.
    """
    from prefect.logging.handlers import PrefectConsoleHandler

    error_names = tuple(EXIT_CODES)

    def keep(record: logging.LogRecord) -> bool:
        # a full disk is a user error too, wherever a library raised it (main() names the path)
        if record.exc_info and (isinstance(record.exc_info[1], PhmError)
                                or DiskFull.from_exception(record.exc_info[1]) is not None):
            return False
        return not any(name in record.getMessage() for name in error_names)

    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)]
    for logger in [*loggers, logging.getLogger()]:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, PrefectConsoleHandler):
                handler.addFilter(keep)


def run_ingest(extract: Path, db: Path, docs: Path | None, report_path: Path | None) -> int:
    from phm.db import check_database_name

    check_database_name(db)  # before any work
    if _prefect_api_configured():
        report = _ingest_flow(extract, db, docs)
    else:
        _progress(f"ingesting {extract} into {db} (no Prefect API configured: the steps run here, "
                  "without a temporary Prefect server)")
        report = _ingest_here(extract, db, docs)
    for line in report.summary_lines():
        print(line)
    report_path = report_path or db.with_suffix(".ingest.json")
    report_path.write_text(report.to_json())
    print(f"report: {report_path.resolve()}")
    if report.data_docs:
        print(f"Great Expectations Data Docs: {Path(report.data_docs).resolve()}")
    return 0


def _prefect_api_configured() -> bool:
    """Whether Prefect has an API to record runs in: PREFECT_API_URL in the environment, or in a
    Prefect profile or settings file. Prefect's own settings decide whenever a file or variable
    that could set it exists (importing them takes about a second, so not otherwise)."""
    if os.environ.get("PREFECT_API_URL"):
        return True
    if "prefect.settings" not in sys.modules and not _prefect_settings_elsewhere():
        return False  # (when Prefect is imported already, e.g. under a test harness, it is asked)
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def _prefect_settings_elsewhere(cwd: Path | None = None) -> bool:
    """Whether any of Prefect 3's other settings sources exists (prefect/settings/sources.py): a
    profiles file (PREFECT_PROFILES_PATH, $PREFECT_HOME/profiles.toml, ~/.prefect/profiles.toml)
    or a chosen profile (PREFECT_PROFILE), and in the working folder .env, prefect.toml or
    pyproject.toml's [tool.prefect]. Without any of them Prefect's settings are its defaults,
    which name no API."""
    cwd = cwd or Path.cwd()
    if any(os.environ.get(name) for name in ("PREFECT_PROFILE", "PREFECT_PROFILES_PATH")):
        return True
    if (cwd / ".env").exists() or (cwd / "prefect.toml").exists():
        return True
    pyproject = cwd / "pyproject.toml"
    if pyproject.is_file() and "tool.prefect" in pyproject.read_text(errors="replace"):
        return True
    home = Path(os.environ["PREFECT_HOME"]) if os.environ.get("PREFECT_HOME") else Path.home() / ".prefect"
    return (home / "profiles.toml").exists()


def _ingest_flow(extract: Path, db: Path, docs: Path | None):
    """The ingest as the Prefect flow 'phm-ingest', its run and steps recorded by the server at
    PREFECT_API_URL (as scheduled runs are)."""
    from flows.ingest import ingest_flow

    _check_configured_prefect_server()
    _quiet_user_errors_on_console()
    _progress(f"ingesting {extract} into {db} (Prefect flow 'phm-ingest')")
    return ingest_flow(extract, db, docs)


def _ingest_here(extract: Path, db: Path, docs: Path | None):
    """The flow's steps as plain functions (phm.ingest.ingest), for a command run with no Prefect
    API: Prefect would first start a temporary server of its own (about 7 s before the first
    step, more than a 100k-patient ingest takes) only to record the run in a local database.
    The run's record is the report JSON and ``ingest.runs``, as with the flow."""
    from phm import ingest as steps

    return steps.ingest(extract, db, docs, progress=_progress)


def cmd_ingest(args) -> int:
    docs = None if args.no_docs else (args.docs or Path(args.db).resolve().parent)
    return run_ingest(Path(args.extract), Path(args.db), docs, args.report)


def add_ingest(sub) -> None:
    p = sub.add_parser("ingest", help="load, validate and quarantine an extract into DuckDB",
                       description="Load an extract folder into a DuckDB file, validate it with the "
                       "Great Expectations suites in expectations/, quarantine rows that break a "
                       "rule, and report rows read / loaded / quarantined per table.")
    p.add_argument("--extract", required=True, help="extract folder (see docs/extract-contract.md)")
    p.add_argument("--db", required=True, help="DuckDB file to create or update")
    p.add_argument("--docs", type=Path, help="folder for Great Expectations Data Docs (default: beside --db)")
    p.add_argument("--no-docs", action="store_true", help="do not build Data Docs")
    p.add_argument("--report", type=Path, help="JSON report path (default: <db>.ingest.json)")
    p.set_defaults(func=cmd_ingest)


def cmd_features(args) -> int:
    from features.run import run_features
    from models.score_patients import run_scores

    run = run_features(Path(args.db), args.index_date, progress=_progress)
    scores = run_scores(Path(args.db), progress=_progress)
    for line in run.summary_lines() + scores.summary_lines():
        print(line)
    print(f"tables: {', '.join([*run.tables, 'marts.patient_scores'])}")
    return 0


def add_features(sub) -> None:
    p = sub.add_parser("features", help="build features, QRISK3/QDiabetes and hypertension case-finding",
                       description="Build the feature layers (sql/intermediate, sql/marts) for an "
                       "index date in an ingested database, score QRISK3 and QDiabetes, and find "
                       "possible undiagnosed or uncontrolled hypertension. Prints a suppressed summary.")
    p.add_argument("--db", required=True, help="DuckDB file made by phm ingest")
    p.add_argument("--index-date", type=_date, help="index date (default: the extract date)")
    p.set_defaults(func=cmd_features)


def _start_prefect_server_early() -> None:
    """Where the flow will need Prefect's temporary server (no Prefect API configured), start it
    now, before this process imports Prefect, so that it starts up while the process imports
    (flows/temporary_server.py). At most once."""
    from flows import temporary_server

    if not _prefect_api_configured():
        temporary_server.start()


def _check_configured_prefect_server() -> None:
    """With a Prefect API configured (PREFECT_API_URL, or a profile), that it answers, before
    any work: else the flow fails on its first call to it, as an internal error (exit 70)."""
    from prefect.settings import PREFECT_API_URL

    from flows.prefect_api import check_server

    if PREFECT_API_URL.value():  # (not Prefect's temporary server, which sets no URL)
        check_server(PREFECT_API_URL.value(), unset_ok=True)


def _imports_while_prefect_starts(modules: tuple[str, ...] | None = None) -> None:
    """Without PREFECT_API_URL, a flow first starts Prefect's temporary server: a process of
    its own that takes seconds to answer, while this one only waits. Import here what the stages
    will import anyway while it starts. Started early (``_start_prefect_server_early``), it is
    given to Prefect after the imports, once it answers. Otherwise (e.g. under a test harness
    that imported Prefect first) it is started here in a thread and the imports run meanwhile in
    this thread: only the server's start runs in the other thread (it imports nothing new), so no
    module is ever imported by two threads at once. If the start fails, the flow starts it again
    and reports the error as it always does."""
    import importlib
    import threading

    from prefect.settings import PREFECT_API_URL

    from flows import temporary_server
    from flows.run import STAGE_IMPORTS

    modules = STAGE_IMPORTS if modules is None else modules
    early = temporary_server.started()
    starting = None
    if early is None and not PREFECT_API_URL.value():
        from prefect.server.api.server import SubprocessASGIServer

        server = SubprocessASGIServer()

        def start() -> None:
            try:
                server.start()
            except Exception:  # noqa: BLE001 - the flow's own start reports it
                pass

        starting = threading.Thread(target=start, name="prefect-server-start", daemon=True)
        starting.start()
    for name in modules:
        importlib.import_module(name)
    if early is not None:
        temporary_server.hand_over()  # if it failed, the flow starts Prefect's own as before
    if starting is not None:
        starting.join()


def run_pipeline(extract: Path, out: Path, config, truth: Path | None = None, force: bool = False) -> int:
    _collect_after_imports()
    _start_prefect_server_early()  # before Prefect is imported (a no-op if main() has started it)
    from prefect import tags

    from flows.alerts import run_tags
    from flows.run import flow_for

    _check_configured_prefect_server()
    _quiet_user_errors_on_console()
    _quiet_mlflow()
    _progress(f"running the pipeline on {extract} into {out} (Prefect flow 'phm-run', "
              f"{config.run.executor} executor)")
    _imports_while_prefect_starts()
    _freeze_imported_objects()
    with tags(*run_tags(config.run.icb)):  # the ICB's run-failed alert finds the run by its tag
        summary = flow_for(config.run)(extract, out, config, truth, force)
    for line in summary.lines:
        print(line)
    if summary.skipped:
        print(f"  lists:     {summary.lists_link.absolute()}/")
        return 0
    print(f"\nrun finished in {sum(summary.seconds.values()):.0f} s; everything is under {out.resolve()}")
    print("  stages: " + ", ".join(f"{name} {s:.0f} s" for name, s in summary.seconds.items()))
    print(f"  lists:     {summary.lists_link.absolute()}/ (per PCN: the list as Parquet, CSV and an Excel workbook, its summary and its ethnicity re-ask worklist)")
    print(f"  fairness:  {summary.audit_report.resolve()} (open in a browser)")
    if summary.ethnicity_report:
        print(f"  ethnicity: {summary.ethnicity_report.resolve()} (recording per practice and PCN against the census, "
              "flags, trend)")
    if summary.coverage_report:
        print(f"  codelists: {summary.coverage_report.resolve()} (codes found per concept, unknown codes)")
    if summary.history_report:
        print(f"  history:   {summary.history_report.resolve()} (every run: gate, data quality, score drift)")
    print(f"  database:  {summary.db.resolve()}")
    print(f"  MLflow UI: {summary.mlflow_ui}")
    print(f"  the audit in MLflow: {summary.audit_ui_url} (its decision, who signed off, the report)")
    return 0


def _check_writable_folder(option: str, folder: Path) -> None:
    """Before any work: the folder, or the nearest part of it that exists, must be a folder this
    user can write to (else the run would fail later, in the middle of a stage)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{option} {folder}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {folder}: {existing} is not writable by this user")


def cmd_run(args) -> int:
    from flows.config import check_path, check_run_settings, load_config
    from phm.pseudonymise import icb_key

    config = load_config(args.config)
    if args.executor or args.address or args.workers:
        config = dataclasses.replace(config, run=dataclasses.replace(
            config.run, executor=args.executor or ("dask" if args.address or args.workers else config.run.executor),
            dask_address=args.address or config.run.dask_address, dask_workers=args.workers or config.run.dask_workers))
        check_run_settings(config.run, "command line")
    extract = Path(args.extract) if args.extract else config.run.extract
    out = Path(args.out) if args.out else config.run.out
    if extract is None or out is None:
        raise ConfigError("give --extract and --out (or extract and out in [run] of --config)")
    check_path("--extract", extract)
    check_path("--out", out)
    _check_writable_folder("--out", out)
    if not extract.is_dir():
        raise ConfigError(f"--extract {extract}: no such folder")
    icb_key(icb=config.run.icb)  # before any work: without the key no list can be made
    return run_pipeline(extract, out, config, force=args.force)


def add_run(sub) -> None:
    p = sub.add_parser("run", help="the whole pipeline on an extract: ingest to published PCN lists",
                       description="One Prefect flow: ingest and validate, features and validated "
                       "scores, train, fairness audit and gate, score with the audited models, build "
                       "the PCN lists and publish them atomically under --out/lists. Needs "
                       "PHM_PSEUDONYMISATION_KEY in the environment. Exit code 10 when the extract is older than "
                       "[run] max_extract_age_days (45 days by default; or stale_extract = \"mark\" publishes "
                       "it marked stale). Exit code 7 when the gate refuses "
                       "(a FAIL, or a WARN that no named reviewer signed off in [[audit.signoff]]): no list "
                       "is produced; the previous lists stay. See docs/lists.md and docs/fairness.md.")
    p.add_argument("--extract", help="extract folder (see docs/extract-contract.md); or [run] extract")
    p.add_argument("--out", help="output folder: database, MLflow store, audit, lists; or [run] out")
    p.add_argument("--config", type=Path, help="TOML configuration ([run], [lists], [audit]; docs/lists.md)")
    p.add_argument("--executor", choices=["local", "dask"],
                   help="local (default): one process; dask: per-PCN shards on a Dask cluster (docs/scale.md)")
    p.add_argument("--address", help="Dask scheduler, e.g. tcp://10.0.0.5:8786 (default: a LocalCluster here)")
    p.add_argument("--workers", type=int, help="LocalCluster workers (default: one per core)")
    p.add_argument("--force", action="store_true",
                   help="run even if the extract and settings are unchanged since the last published run")
    p.set_defaults(func=cmd_run)


def cmd_deploy(args) -> int:
    from flows.deployments import deploy

    deploy(Path(args.file), progress=_progress)
    return 0


def add_deploy(sub) -> None:
    p = sub.add_parser("deploy", help="register scheduled runs (one per ICB) on a Prefect server",
                       description="Register the deployments declared in --file (one [[deployment]] per "
                       "ICB: icb, extract, out, config, cron, timezone; see flows/deployments.py) on the "
                       "Prefect server at PREFECT_API_URL, in a 'process' work pool (created if missing). "
                       "Registering again updates them. Before registering anything it reads each ICB's config "
                       "as its runs will and checks the server answers; it warns of a missing extract folder, an "
                       "unwritable out folder and deployments in the pool the file no longer names (they keep "
                       "their schedules). Then start a worker: prefect worker start --pool <pool>. See "
                       "docs/scheduling.md.")
    p.add_argument("--file", required=True, help="deployments file (TOML)")
    p.set_defaults(func=cmd_deploy)


def cmd_status(args) -> int:
    from flows.config import load_config
    from flows.status import deployments_status, folder_status

    if args.file:
        if args.config:
            raise ConfigError("--config goes with --out: with --file each deployment's own config is read")
        statuses = deployments_status(Path(args.file), with_prefect=_prefect_api_configured())
    else:
        config = load_config(args.config)
        statuses = [folder_status(Path(out), max_age_days=config.run.max_extract_age_days) for out in args.out]
    for status in statuses:
        for line in status.render():
            print(line)
    attention = sum(bool(s.attention) for s in statuses)
    print(f"{len(statuses)} output folder(s), {attention} needing attention")
    return 0


def add_status(sub) -> None:
    p = sub.add_parser("status", help="where each ICB's runs stand: published lists, last and next run",
                       description="For every deployment of --file (or each --out folder): the published lists "
                       "(when, which extract and how old it is now, the gate's result), a STALE or NOT REPLACED "
                       "mark, and, with a Prefect server at PREFECT_API_URL, the deployment's last run (its state, "
                       "and the error of a failed one) and its next. Reads only files a run leaves and the Prefect "
                       "API, never the database, so it can run while a run does. Lines starting '!' need "
                       "attention. Exit 0 whatever it finds. See docs/scheduling.md, \"Every ICB at a glance\".")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--file", help="deployments file (TOML, as for phm deploy)")
    where.add_argument("--out", nargs="+", help="output folder(s) of phm run")
    p.add_argument("--config", type=Path, help="with --out: the run configuration ([run] max_extract_age_days)")
    p.set_defaults(func=cmd_status)


def demo_config(config):
    """The settings ``phm demo`` runs with: ``config`` (from --config, or the documented defaults)
    with two changes for a synthetic run, both said in what the demo prints (``demo_notes``). The
    pipeline then treats them as it treats any configuration."""
    from models.fairness import demo_signoff

    # A WARN or FAIL needs a named reviewer's sign-off; on synthetic data the demo signs off as a
    # labelled demo reviewer, and says so (here, in the report, in MLflow and in the manifest).
    # Appended after the configuration's own: the first sign-off that covers an outcome is the one
    # recorded, so a reviewer named in --config is never displaced by the demo's.
    config = dataclasses.replace(config, audit=dataclasses.replace(
        config.audit, signoffs=(*config.audit.signoffs, demo_signoff())))
    # The synthetic extract is dated 2026-03-31 (reproducible, whatever the day): older than the
    # stale-data guard allows, so the demo publishes its lists marked as stale instead of refusing.
    return dataclasses.replace(config, run=dataclasses.replace(config.run, stale_extract="mark"))


def demo_notes(config, out: Path, extract: Path, own_key: bool, code: int) -> list[str]:
    """What ``phm demo`` prints after its run: that the DEMO REVIEWER signed off, and the stale
    mark (``demo_config``), so that nobody takes either for what ``phm run`` does."""
    notes = ["demo: any WARN or FAIL above was signed off by the DEMO REVIEWER (synthetic data, not a real review); "
             "phm run needs a named reviewer ([[audit.signoff]] in --config, see docs/fairness.md)",
             "demo: the synthetic extract is dated 2026-03-31, so its lists are published marked STALE; phm run "
             f"refuses an extract older than [run] max_extract_age_days ({config.run.max_extract_age_days}) unless "
             "stale_extract = \"mark\""]
    if own_key and code == 0:
        notes.append(f"demo: to re-identify as a practice would: phm practice-key --practice <id> --out <id>.key, then "
                     f"phm reidentify --list {out / 'lists'}/<PCN>_<extract date>.csv --practice <id> --key-file "
                     f"<id>.key --lookup {extract / 'practice_side'}/<id>/patients.csv --out <folder> (docs/lists.md)")
    return notes


def cmd_demo(args) -> int:
    import secrets

    from flows.config import load_config
    from phm.pseudonymise import KEY_VARIABLE
    from phm.synth import SynthConfig, generate

    out = Path(args.out)
    extract = out / "extract"
    if (out / "phm.duckdb").exists() and not (extract / "truth").is_dir():
        # a demo's run publishes synthetic lists under a throwaway key and signs off as a demo
        # reviewer: never into the folder of a real run (an ICB's --out given by mistake)
        raise ConfigError(f"--out {out}: holds a phm run that is not a demo's (no synthetic extract in "
                          f"{extract}): the demo would publish synthetic lists there; give a new folder")
    _progress(f"demo: generating {args.patients:,} synthetic patients into {extract}")
    generate(SynthConfig(patients=args.patients, seed=args.seed, pcns=args.pcns), extract)
    own_key = bool(os.environ.get(KEY_VARIABLE))
    if not own_key:
        # Synthetic data: a throwaway key, so nobody can re-identify these ids (real runs set it).
        os.environ[KEY_VARIABLE] = secrets.token_hex(32)
        _progress(f"demo: {KEY_VARIABLE} is not set; using a random key for this synthetic run "
                  "(set it to try re-identification at the practice: docs/lists.md)")
    config = demo_config(load_config(args.config))
    # The demo is synthetic, so the models are also measured against the generator's truth.
    # A demo always runs (the regenerated extract is the same, so it would otherwise be skipped).
    code = run_pipeline(extract, out, config, truth=extract / "truth", force=True)
    for line in demo_notes(config, out, extract, own_key, code):
        print(line)
    return code


def add_demo(sub) -> None:
    p = sub.add_parser("demo", help="generate a synthetic extract and run the pipeline on it",
                       description="The embedded default: a synthetic extract, a local DuckDB "
                       "file, Prefect and MLflow with no server; the whole flow of phm run. "
                       "Everything is written under --out.")
    p.add_argument("--out", default="phm-demo", help="output folder (default ./phm-demo)")
    p.add_argument("--patients", type=int, default=100_000, help="patients (default 100000)")
    p.add_argument("--pcns", type=int, default=3, help="PCNs (default 3)")
    p.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    p.add_argument("--config", type=Path, help="TOML configuration (default: the documented defaults)")
    p.set_defaults(func=cmd_demo)


def _add_model_options(p: argparse.ArgumentParser) -> None:
    """The options phm train and phm score share: which ICB, and where MLflow is."""
    p.add_argument("--icb", help="ICB code (default: the extract's only ICB)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else a "
                   "SQLite store in mlflow/ beside --db)")


def _quiet_mlflow() -> None:
    # MLflow logs every model save at INFO/WARNING (environment inference, uv detection);
    # our own progress lines say what is happening. Errors still show.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow  # noqa: F401  (importing it configures its loggers; set the level after)

    logging.getLogger("mlflow").setLevel(logging.ERROR)


def cmd_train(args) -> int:
    from models.train import TrainingConfig
    from models.training_run import run_training

    _quiet_mlflow()
    config = TrainingConfig(horizon_years=args.horizon, candidate_variant=args.candidate_variant,
                            validation_share=args.validation_share, seed=args.seed,
                            compare_variants=args.compare_variants)
    run = run_training(Path(args.db), config, args.tracking_uri, args.icb, args.truth, progress=_progress)
    for line in run.summary_lines():
        print(line)
    return 0


def add_train(sub) -> None:
    p = sub.add_parser("train", help="train the risk models on the extract's history; log them to MLflow",
                       description="Build features at the extract date minus the horizon, label the "
                       "outcomes recorded after with follow-up censored at death or leaving, train "
                       "survival models (Poisson GLM and boosting; updates of QRISK3 and QDiabetes) "
                       "with ethnicity/deprivation inputs (or without: --candidate-variant; both with "
                       "--compare-variants), validate on held-out "
                       "practices side by side with QRISK3 and QDiabetes, log everything to MLflow and "
                       "register each outcome's candidate. See docs/models.md.")
    p.add_argument("--db", required=True, help="DuckDB file made by phm ingest")
    p.add_argument("--horizon", type=int, default=5, help="outcome horizon in years (default 5)")
    p.add_argument("--candidate-variant", default="with_equity", choices=["with_equity", "clinical_only"],
                   help="which input variant may become the candidate: with ethnicity and deprivation "
                   "inputs (default) or clinical inputs only")
    p.add_argument("--compare-variants", action="store_true",
                   help="also train and log the other input variant, for comparison in MLflow (never the "
                   "candidate; off by default, as in phm run: [run] compare_variants)")
    p.add_argument("--validation-share", type=float, default=0.3, help="share of practices held out (default 0.3)")
    p.add_argument("--seed", type=int, default=42, help="random seed for the split and the models (default 42)")
    _add_model_options(p)
    p.add_argument("--truth", type=Path, help="synthetic data only: the truth/ folder of phm synth, to "
                   "also measure the models against each patient's true risk")
    p.set_defaults(func=cmd_train)


def cmd_score(args) -> int:
    from models.score_models import score_models
    from models.tracking import tracking_location
    from phm.db import require

    _quiet_mlflow()
    require(Path(args.db), "phm ingest and phm features")
    location = tracking_location(Path(args.db).resolve().parent, args.tracking_uri)
    _progress(f"scoring with the registered models in {location.tracking_uri}")
    run = score_models(Path(args.db), location, args.icb, warn=lambda m: print(m, file=sys.stderr, flush=True))
    for line in run.summary_lines():
        print(line)
    return 0


def add_score(sub) -> None:
    p = sub.add_parser("score", help="score every eligible patient with the registered models",
                       description="Apply each outcome's champion model (or, where none exists yet, "
                       "the candidate, with a warning) and the validated scores to every patient at "
                       "the current index date; write marts.risk_scores with the model name and version "
                       "on every row. The alias is resolved once, at the start, to the version used, so "
                       "another run moving it meanwhile changes nothing. Run phm features first.")
    p.add_argument("--db", required=True, help="DuckDB file with features (phm features)")
    _add_model_options(p)
    p.set_defaults(func=cmd_score)


def cmd_audit(args) -> int:
    from flows.config import load_config

    settings = load_config(args.config).audit
    if args.reference:
        settings = dataclasses.replace(settings, reference_group=args.reference)
    if args.replicates:
        settings = dataclasses.replace(settings, replicates=args.replicates)
    if bool(args.db) == bool(args.scores):
        raise ConfigError("give either --db (audit the pipeline's candidate models) or --scores (audit a scored table)")
    if args.scores:
        from models.fairness import TableSpec, audit_table

        for option in ("group", "score", "outcome", "out"):
            if not getattr(args, option):
                raise ConfigError(f"--scores needs --{option}")
        spec = TableSpec(Path(args.scores), args.group, args.score, args.outcome, args.need, args.top_k,
                         args.threshold, args.high_need_from, args.score_kind)
        if spec.top_k is None and spec.threshold is None:
            raise ConfigError("give the operating point of the list: --top-k N or --threshold X")
        _progress(f"auditing {args.scores} by {args.group} ({settings.replicates:,} bootstrap replicates)")
        report = audit_table(spec, settings, Path(args.out))
        gate = report.gates[0]
        for note in report.notes:
            print(f"note: {note}")
        print(f"fairness audit: {report.label()}")
        for finding in sorted(gate.findings, key=lambda f: f.level != "FAIL"):
            print(f"  {finding.level} [{finding.rule}] {finding.message}")
        print(f"report: {(Path(args.out) / 'fairness_audit.html').resolve()}")
        print(f"figures (JSON, counts suppressed): {(Path(args.out) / 'fairness_audit.json').resolve()}")
        report.decision.raise_if_refused("this score's list may not go out", Path(args.out) / "fairness_audit.html")
        return 0
    return run_pipeline_audit(Path(args.db), settings, args.tracking_uri, args.icb,
                              Path(args.out) if args.out else None)


def add_audit(sub) -> None:
    p = sub.add_parser("audit", help="fairness audit by ethnicity (with deprivation and sex) and the gate",
                       description="Audit each outcome's candidate model (--db) or any scored table "
                       "(--scores) by ethnic group, IMD quintile and sex: calibration, discrimination, "
                       "selection and need at the list's operating point, the label-choice check and "
                       "ethnicity data quality, with confidence intervals, judged as one family of tests; "
                       "with --db also against QRISK3/QDiabetes on the same patients. Writes a self-contained "
                       "HTML report and JSON (counts suppressed); with --db also logs them to MLflow and moves "
                       "'champion' to each audited version that passes or that a named reviewer signed off. "
                       "With --db, 'candidate' is resolved once, at the start, to the versions audited (recorded "
                       "in MLflow). "
                       "Exit code 7 when the gate refuses (a FAIL, or a WARN not signed off). "
                       "See docs/fairness.md.")
    p.add_argument("--db", help="DuckDB file with features and trained models (phm train)")
    p.add_argument("--scores", help="a scored table (CSV or Parquet) to audit instead")
    p.add_argument("--group", help="with --scores: the group column (e.g. ethnicity)")
    p.add_argument("--score", help="with --scores: the score column (a probability; a 0-100 percentage risk, "
                   "a percentile or any other score is converted, with a note)")
    p.add_argument("--score-kind", choices=("auto", "probability", "percentage", "rank"), default="auto",
                   help="with --scores: how to read the score (default auto: 0-1 a probability; 0-100 a "
                   "percentage risk, or a percentile when spread evenly over 0-100; anything else a rank). A "
                   "rank (or percentile) is not judged on calibration or need-adjusted selection")
    p.add_argument("--outcome", help="with --scores: the recorded outcome column (0/1)")
    p.add_argument("--need", help="with --scores: a need count column (default: the outcome)")
    p.add_argument("--high-need-from", type=int, default=1, help="with --scores: need counted as high from (default 1)")
    point = p.add_mutually_exclusive_group()
    point.add_argument("--top-k", type=int, help="with --scores: the list holds the k highest scores")
    point.add_argument("--threshold", type=float, help="with --scores: the list holds scores at or above this")
    p.add_argument("--out", help="folder for the report and JSON (default with --db: audit/ beside it)")
    p.add_argument("--config", type=Path, help="TOML configuration ([audit] table: rules, [[audit.signoff]])")
    p.add_argument("--reference", help="reference group (default: the configuration's, White)")
    p.add_argument("--replicates", type=int, help="bootstrap replicates (default: the configuration's, 1000)")
    _add_model_options(p)
    p.set_defaults(func=cmd_audit)


def run_pipeline_audit(db: Path, settings, tracking_uri: str | None = None, icb: str | None = None,
                       out: Path | None = None) -> int:
    from models.audit_run import run_audit
    from models.tracking import tracking_location
    from phm.db import require

    _quiet_mlflow()
    require(db, "phm ingest, features and train")
    location = tracking_location(db.resolve().parent, tracking_uri)
    run = run_audit(db, settings, location, out or db.resolve().parent / "audit", icb, progress=_progress)
    for line in run.summary_lines():
        print(line)
    run.decision.raise_if_refused("'champion' not moved and no list may be produced from these models",
                                  run.html_path)
    return 0


def cmd_review(args) -> int:
    from models.audit_run import record_review
    from models.fairness import SignOff
    from models.tracking import tracking_location
    from phm.db import require

    _quiet_mlflow()
    require(Path(args.db), "phm train and phm audit")  # the MLflow store is found beside it
    signoff = SignOff(args.reviewer, args.reason, args.accepts, tuple(args.outcome), "phm review")
    signoff.validate("phm review")
    location = tracking_location(Path(args.db).resolve().parent, args.tracking_uri)
    for outcome in args.outcome:
        for line in record_review(location, outcome, signoff, args.icb).lines():
            print(line)
    return 0


def cmd_outcomes(args) -> int:
    from phm.db import require
    from phm.outcomes import load_outcomes

    _quiet_user_errors_on_console()
    load = load_outcomes(Path(args.file), require(Path(args.db), "phm run"), progress=_progress)
    for line in load.summary_lines():
        print(line)
    print("the next audit (phm run, or phm audit --db) reports the uptake of invitations by ethnic group and "
          "IMD quintile")
    return 0


def add_outcomes(sub) -> None:
    p = sub.add_parser("outcomes", help="load a practice's outcomes of its list's invitations (for uptake by group)",
                       description="Validate a practice's CSV of what happened after its list's invitations "
                       "(pseudonym, contacted, attended, declined: yes/no; date: YYYY-MM-DD) and load it into "
                       "the run's database: bad rows are quarantined with their reason (lists.outcomes_quarantine) "
                       "and rows in = loaded + quarantined is printed. Loading a file again replaces its rows. "
                       "The next fairness audit reports uptake by ethnic group and IMD quintile. See "
                       "docs/lists.md, 'Outcomes back'.")
    p.add_argument("--file", required=True, help="the practice's outcomes CSV")
    p.add_argument("--db", required=True, help="the database of the runs that published the lists (<out>/phm.duckdb)")
    p.set_defaults(func=cmd_outcomes)


def add_review(sub) -> None:
    p = sub.add_parser("review", help="a named reviewer signs off the latest audit's WARN or FAIL",
                       description="Record a named reviewer's sign-off of the latest fairness audit's WARN (or, "
                       "with --accepts FAIL, FAIL) for the given outcomes: tags on the MLflow audit run and model "
                       "version (reviewer, reason, source 'phm review'), and 'champion' moves to the audited "
                       "version unless the validated score ranks that outcome's list. phm score then uses it. "
                       "For phm run, sign off in the configuration ([[audit.signoff]]). See docs/fairness.md.")
    p.add_argument("--db", required=True, help="DuckDB file of the audit (its MLflow store is beside it)")
    p.add_argument("--outcome", required=True, nargs="+", choices=["cvd", "t2d", "hypertension"],
                   help="the outcome(s) signed off")
    p.add_argument("--reviewer", required=True, help="the reviewer's name and role")
    p.add_argument("--reason", required=True, help="why the result is accepted (at least 10 characters)")
    p.add_argument("--accepts", default="WARN", choices=["WARN", "FAIL"],
                   help="the worst result signed off (default WARN)")
    _add_model_options(p)
    p.set_defaults(func=cmd_review)


def cmd_practice_key(args) -> int:
    from phm.contract import CODE_PATTERNS
    from phm.pseudonymise import icb_key
    from phm.reidentify import check_practice_id, write_practice_key

    check_practice_id(args.practice)
    if args.icb is not None and not re.fullmatch(CODE_PATTERNS["icb_code"], args.icb):
        raise ConfigError(f"--icb: an ICB code is {CODE_PATTERNS['icb_code']} (e.g. QXX)")
    path = write_practice_key(icb_key(icb=args.icb), args.practice, Path(args.out))
    print(f"wrote practice {args.practice}'s key to {path} (readable by its owner only). Give it to that "
          "practice alone, over a secure channel; it re-identifies that practice's list rows and no other's "
          "(phm reidentify; docs/lists.md)")
    return 0


def cmd_rotate_key(args) -> int:
    from phm.db import require
    from phm.keys import rotate_database

    for line in rotate_database(require(Path(args.db), "phm run"), Path(args.out), args.icb).summary_lines():
        print(line)
    return 0


def add_rotate_key(sub) -> None:
    p = sub.add_parser("rotate-key", help="ICB side: move the lists' history to a new pseudonymisation key",
                       description="After setting a new ICB key (PHM_PSEUDONYMISATION_KEY[_<ICB>]) with the "
                       "retiring one in PHM_PSEUDONYMISATION_KEY_PREVIOUS[_<ICB>]: move the lists' history and "
                       "the practices' returned outcomes to the new pseudonyms (one transaction), and write each "
                       "practice's map from old to new pseudonyms (owner-only, never over a file) for the ICB to "
                       "hand over with the practice's new key (phm practice-key). See docs/operations.md.")
    p.add_argument("--db", required=True, help="the run's database (<out>/phm.duckdb)")
    p.add_argument("--out", required=True, help="an existing folder for the practices' maps")
    p.add_argument("--icb", help="the ICB whose keys to read (PHM_PSEUDONYMISATION_KEY_<ICB>), e.g. QXX")
    p.set_defaults(func=cmd_rotate_key)


def cmd_retention(args) -> int:
    from flows.config import load_config
    from flows.runlock import run_lock
    from phm.db import connect
    from phm.retention import apply

    out = Path(args.out)
    if not out.is_dir():
        raise ConfigError(f"--out {out}: no such folder")
    settings = load_config(args.config).retention
    with run_lock(out):  # never while a run writes into the folder
        con = connect(out / "phm.duckdb")
        try:
            applied = apply(con, out, settings, dry_run=args.dry_run)
        finally:
            con.close()
    for line in applied.summary_lines():
        print(line)
    return 0


def add_retention(sub) -> None:
    p = sub.add_parser("retention", help="apply [retention]: old lists folders, the lists' history and outcomes",
                       description="Remove what [retention] of --config says a run's output folder keeps no "
                       "longer: published lists folders beyond list_folders (default 2), lists' history rows older "
                       "than history_days and returned outcomes older than outcomes_days (default 730 each). Takes "
                       "the run lock, so never runs while phm run writes there. See docs/operations.md.")
    p.add_argument("--out", required=True, help="the run's output folder (--out of phm run)")
    p.add_argument("--config", type=Path, help="TOML configuration with [retention] (default: the defaults)")
    p.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    p.set_defaults(func=cmd_retention)


def cmd_carry_over(args) -> int:
    from phm.keys import carry_over

    for line in carry_over(Path(args.old), Path(args.new), Path(args.map), Path(args.out)).summary_lines():
        print(line)
    return 0


def add_carry_over(sub) -> None:
    p = sub.add_parser("carry-over", help="practice side: carry the team's columns to a list made under a new key",
                       description="Copy contacted_on, outcome and notes from a workbook made under the ICB's "
                       "previous key onto the same patients' rows of a new workbook, through the practice's "
                       "pseudonym map (phm rotate-key), and save the result as --out (never over a file).")
    p.add_argument("--old", required=True, help="the workbook the team worked in (old pseudonyms)")
    p.add_argument("--new", required=True, help="the new workbook (new pseudonyms)")
    p.add_argument("--map", required=True, help="the practice's map: practice_<id>_pseudonym_map.csv")
    p.add_argument("--out", required=True, help="where to save the new workbook with the team's columns")
    p.set_defaults(func=cmd_carry_over)


def add_practice_key(sub) -> None:
    p = sub.add_parser("practice-key", help="ICB side: write one practice's re-identification key to a file",
                       description="Derive one practice's key from the ICB's pseudonymisation key "
                       "(PHM_PSEUDONYMISATION_KEY_<ICB> or PHM_PSEUDONYMISATION_KEY, as phm run reads it) and "
                       "write it, as 64 hex characters, to --out: readable by its owner only, never over an "
                       "existing file, never printed. The ICB hands the file to that practice alone over a "
                       "secure channel; with it and its own lookup the practice re-identifies its rows of a "
                       "list (phm reidentify), and no other practice's. See docs/lists.md.")
    p.add_argument("--practice", required=True, help="the practice's practice_pseudo_id, as the lists write it")
    p.add_argument("--out", required=True, help="the key file to create (refused if it exists)")
    p.add_argument("--icb", help="ICB code: read PHM_PSEUDONYMISATION_KEY_<ICB> first (as phm run with [run] icb)")
    p.set_defaults(func=cmd_practice_key)


def cmd_reidentify(args) -> int:
    from phm.reidentify import (
        check_practice_id,
        read_list,
        read_lookup,
        read_practice_key,
        reidentify,
        write_outputs,
    )

    check_practice_id(args.practice)
    key = read_practice_key(Path(args.key_file))
    lookup = read_lookup(Path(args.lookup))
    rows = read_list(Path(args.list))
    if not (rows["practice_pseudo_id"].str.strip_chars() == args.practice).any():
        raise ConfigError(f"--list {args.list}: no row of practice {args.practice} (the list's practices: "
                          f"{', '.join(sorted(set(rows['practice_pseudo_id'].drop_nulls().to_list())))})")
    result = reidentify(rows, args.practice, key, lookup, args.list)
    if result.found == 0:
        raise ConfigError(f"none of practice {args.practice}'s {result.listed} listed patients matches the lookup "
                          "under this key: is --key-file this practice's key (phm practice-key --practice "
                          f"{args.practice}) from the ICB key the list was made with, and --lookup this practice's "
                          "export? Nothing was written")
    listed, numbers = write_outputs(result, Path(args.out))
    for line in result.summary_lines():
        print(line)
    if result.reask:  # not the targeting list: patients whose ethnicity the practice might ask again
        print(f"  the practice's ethnicity re-ask worklist with NHS numbers: {listed}")
        print("  NHS numbers of the patients whose ethnicity the practice might ask again (one a line; not the "
              f"targeting list's recall group): {numbers}")
    else:
        print(f"  the practice's list with NHS numbers: {listed}")
        print(f"  NHS numbers to import into the clinical system as a patient group (one a line): {numbers}")
    print("  both files hold patient identifiers: keep them at the practice, readable by their owner only")
    return 0


def add_reidentify(sub) -> None:
    p = sub.add_parser("reidentify", help="practice side: add NHS numbers to the practice's rows of a list",
                       description="At the practice, with no ICB key: compute the pseudonym of each patient in "
                       "--lookup (the practice's own export: patient_id and nhs_number) under the practice's key "
                       "(--key-file, from phm practice-key), keep the practice's rows of the PCN list, and write "
                       "them with an nhs_number column (CSV, in the list's order) and the NHS numbers alone, "
                       "one a line, for import into EMIS Web or SystmOne as a patient group. Counts listed, "
                       "re-identified and not found (a patient who left is reported, not dropped). Files are "
                       "owner-only and never overwritten. See docs/lists.md.")
    p.add_argument("--list", required=True, help="the PCN's list as published: <PCN>_<extract date>.csv (or .parquet)")
    p.add_argument("--practice", required=True, help="the practice's practice_pseudo_id, as in the list")
    p.add_argument("--key-file", required=True, help="the practice's key file from the ICB (phm practice-key)")
    p.add_argument("--lookup", required=True, help="CSV from the practice's clinical system: patient_id, nhs_number")
    p.add_argument("--out", required=True, help="folder for the two files")
    p.set_defaults(func=cmd_reidentify)


def cmd_calc(args) -> int:
    import polars as pl

    from models import scores

    source = Path(args.input)
    try:
        frame = pl.read_csv(source, infer_schema_length=None)
    except FileNotFoundError:
        raise ConfigError(f"--input {source}: no such file") from None
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError) as exc:
        raise ConfigError(f"--input {source}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    for column in ("age", "sex"):
        if column not in frame.columns:
            raise ConfigError(f"--input {source}: column {column!r} is required "
                              "(columns are named as ClinRisk's arguments; see phm calc --help)")
    expected = scores.input_columns(args.score)
    unknown = [c for c in frame.columns if c not in expected]
    if unknown and not args.allow_extra_columns:
        # a misspelt predictor (b_af for b_AF) would otherwise be scored as absent, silently
        by_case = {name.lower(): name for name in expected}
        hints = [f"{c!r} (did you mean {m[0]!r}?)" if (m := [by_case[c.lower()]] if c.lower() in by_case
                                                      else difflib.get_close_matches(c, expected, 1, 0.6))
                 else repr(c) for c in unknown]
        raise ConfigError(f"--input {source}: {args.score} does not read column(s) {', '.join(hints)}; "
                          f"it reads {', '.join(sorted(expected, key=str.lower))}. Rename them, or pass "
                          "--allow-extra-columns to carry other columns (e.g. an id) through unscored")
    for column in frame.columns:
        if column in ("age", "bmi", "rati", "sbp", "sbps5", "town", "fbs", "hba1c", "fpg_mmol_l",
                      "hba1c_mmol_mol", "ethrisk", "smoke_cat") and not frame[column].dtype.is_numeric():
            bad = frame.with_row_index("row", offset=1).filter(
                pl.col(column).is_not_null() & pl.col(column).cast(pl.Float64, strict=False).is_null())
            if bad.height:
                raise ConfigError(f"--input {source}, row {bad['row'][0]}, column {column!r}: not a number")
    scored = scores.qrisk3(frame) if args.score == "qrisk3" else scores.qdiabetes(frame)
    scored.write_csv(args.output)
    applicable = scored["risk_10y_pct"].is_not_null().sum()
    print(f"scored {applicable:,} of {scored.height:,} rows with {args.score} -> {args.output} "
          "(column risk_10y_pct; score_notes says what was defaulted, clamped or not applicable)")
    print("ClinRisk's disclaimer travels with these scores: see NOTICE.")
    return 0


def add_calc(sub) -> None:
    p = sub.add_parser("calc", help="score a CSV with QRISK3-2017 or QDiabetes-2018",
                       description="Score any CSV whose columns are named as ClinRisk's "
                       "arguments (age, sex F/M, bmi, rati, sbp, sbps5, town, ethrisk, smoke_cat, "
                       "b_AF, b_treatedhyp, ... ; QDiabetes also fbs or fpg_mmol_l, hba1c or "
                       "hba1c_mmol_mol, and picks model C, B or A from which is present). Writes the "
                       "input columns plus risk_10y_pct and score_notes.")
    p.add_argument("score", choices=["qrisk3", "qdiabetes"], help="which score")
    p.add_argument("--input", required=True, help="CSV to score")
    p.add_argument("--output", required=True, help="CSV to write")
    p.add_argument("--allow-extra-columns", action="store_true",
                   help="carry columns the score does not read (e.g. an id) through to the output; "
                   "without it such a column is an error, as a misspelt predictor would be scored as absent")
    p.set_defaults(func=cmd_calc)


def cmd_contract(args) -> int:
    from phm.contract import render_markdown

    text = render_markdown() + "\n"
    if args.write:
        Path(args.write).write_text(text)
        print(f"wrote {args.write}")
    else:
        sys.stdout.write(text)
    return 0


def add_contract(sub) -> None:
    p = sub.add_parser("contract", help="print the extract contract as Markdown",
                       description="Print the extract contract (tables, columns, types, rules).")
    p.add_argument("--write", help="write it to this file instead of printing")
    p.set_defaults(func=cmd_contract)


def cmd_codelists(args) -> int:
    from phm.codelists import coverage, project_codelists

    if args.reference:
        # A Markdown table (docs/features.md keeps a copy): both directions, per concept.
        reference_dir = Path(args.reference)
        if not reference_dir.is_dir():
            raise ConfigError(f"--reference: {reference_dir} is not a directory of reference codelists")
        print("| concept | codes | national reference codes | included | excluded (with reason) | "
              "from other sources | undocumented gaps |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        gaps = 0
        for cl in project_codelists().values():
            if not cl.references:
                print(f"| {cl.concept} | {len(cl.codes)} | no national list | | | {len(cl.sources)} | |")
                continue
            cov = coverage(cl, reference_dir)
            undocumented = len(cov.undocumented_gaps) + len(cov.unsourced) + len(cov.stale_exclusions)
            gaps += undocumented
            print(f"| {cl.concept} | {len(cl.codes)} | {cov.reference_codes} | {cov.included} | {cov.excluded} "
                  f"| {cov.from_elsewhere} | {undocumented} |")
        return 1 if gaps else 0
    print(f"{'concept':<30}{'system':<10}{'codes':>6}  reference")
    for cl in project_codelists().values():
        ref = ", ".join(cl.references) if cl.references else "no national list: " + (cl.provenance or "review on OpenCodelists")
        print(f"{cl.concept:<30}{cl.system:<10}{len(cl.codes):>6}  {ref}")
    return 0


def add_codelists(sub) -> None:
    p = sub.add_parser("codelists", help="list the project's codelists and their references",
                       description="List every codelist with its coding system, size and the "
                       "reference lists it is cross-checked against.")
    p.add_argument("--reference", metavar="DIR",
                   help="print a Markdown coverage table against the national lists in DIR (both "
                   "directions); exit 1 if any gap is undocumented")
    p.set_defaults(func=cmd_codelists)


# the commands in the order --help lists them: each has its cmd_<command> and add_<command> above
COMMANDS = (add_synth, add_ingest, add_features, add_train, add_score, add_audit, add_review, add_run, add_deploy,
            add_status, add_demo, add_practice_key, add_reidentify, add_rotate_key, add_carry_over, add_outcomes,
            add_retention, add_calc, add_contract, add_codelists)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phm", description="Population health management for NHS primary care: risk, "
        "fairness audit by ethnicity, and PCN targeting lists.",
        epilog="Exit codes: 0 ok, 1 error (e.g. an unwritable path, no Prefect server at PREFECT_API_URL), "
        "2 bad option or config, 3 extract fault, 4 codelist fault, 5 validation fault, 6 database unavailable "
        "(e.g. another run holds the output folder), 7 the fairness gate refused (a FAIL, or a WARN no named "
        "reviewer signed off), 8 too little data, 9 no space left on the device, 10 stale extract (older than "
        "[run] max_extract_age_days), 70 internal error (rerun with --debug).")
    parser.add_argument("--debug", action="store_true", help="show the traceback of internal errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_command in COMMANDS:
        add_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    _env_defaults()
    parser = build_parser()
    args = parser.parse_args(argv)
    umask = os.umask(0o077)  # everything any command writes is readable by its owner only
    try:
        if args.func in (cmd_run, cmd_demo):  # after the umask: the server's database is this user's only
            _start_prefect_server_early()
        return args.func(args)
    except KeyboardInterrupt:
        print("phm: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        return _report(exc, args.debug, _outputs(args))
    finally:
        os.umask(umask)


def _outputs(args) -> str:
    """Where the command writes, as its options say: a full disk is named by them when the
    error itself carries no path."""
    given = [f"--{name} {getattr(args, name)}" for name in ("out", "db", "output", "report", "docs", "write")
             if getattr(args, name, None) and not isinstance(getattr(args, name), bool)]
    return " or ".join(given)


def _report(exc: Exception, debug: bool, outputs: str = "") -> int:
    """One line on stderr and the exit code (README: exit codes)."""
    full = DiskFull.from_exception(exc, outputs)  # first: a full disk shows up inside other errors
    if full is not None:
        exc = full
    if isinstance(exc, PhmError):
        print(f"phm: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if isinstance(exc, OSError):  # unwritable folder, missing path: name the path
        where = f": {exc.filename}" if exc.filename else ""
        print(f"phm: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    if debug:  # a bug, not a user error: one line unless --debug
        raise exc
    print(f"phm: internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
          "(run with --debug for the traceback)", file=sys.stderr)
    return INTERNAL_ERROR

# Commands that may start processes of their own (Prefect's temporary server, Dask workers).
STARTS_PROCESSES = {"ingest", "features", "train", "audit", "score", "run", "deploy", "demo"}


# Set by ``console``: this process is the command's own, not a test calling ``main`` in-process.
_OWN_PROCESS = False


def _collect_after_imports() -> None:
    """In the command's own process: no cyclic collection while a run imports its modules, then
    those frozen out of the collector's view for good (phm/collector.py, which says why)."""
    if _OWN_PROCESS:
        collector.collect_later()


def _freeze_imported_objects() -> None:
    if _OWN_PROCESS:
        collector.freeze_for_good()


def console() -> int:
    """The ``phm`` command (and ``python -m cli``): ``main`` with a watchdog that ends the
    command's children if it is killed (phm/orphans.py). Tests call ``main`` in-process."""
    global _OWN_PROCESS
    from phm.orphans import start_watchdog

    _OWN_PROCESS = True
    argv = sys.argv[1:]
    if any(word in STARTS_PROCESSES for word in argv[:3]):
        start_watchdog(os.getpid())
    try:
        return main(argv)
    finally:
        collector.before_exit()


if __name__ == "__main__":
    sys.exit(console())
