"""The run configuration: one TOML file, checked on load with errors that name the key.

Tables: ``[run]`` (ICB, horizon, seed, MLflow, the stale-data guard), ``[ingest]`` (max_quarantined_share), ``[lists]`` (capacity, prioritisation,
exclusions, thresholds: docs/lists.md), ``[audit]`` (the fairness audit and its gate:
docs/fairness.md), ``[alerts]`` (the data-quality thresholds of the alerts: phm/alerts.py) and
``[retention]`` (how long lists folders, the lists' history and outcomes are kept: phm/retention.py), ``[ethnicity_dq]``
(the ethnicity data-quality report: census_table, alpha, min_practices; docs/ethnicity.md). Every key is optional. Secrets never live here: the pseudonymisation key
comes only from the environment (PHM_PSEUDONYMISATION_KEY).

    [run]
    icb = "QXX"
    extract = "/data/extracts/QXX/2026-03-31"
    out = "/data/phm/QXX"
    max_extract_age_days = 45   # an older extract is stale (phm/freshness.py)
    stale_extract = "refuse"    # or "mark": publish, marked stale everywhere
    compare_variants = false    # true: also train the clinical_only models, for comparison in MLflow

    [lists]
    capacity_per_practice = 200
    capacity_period = "month"
    prioritisation = "core20plus5"
    plus_groups = ["Black"]

    [audit]
    replicates = 1000
    reference_group = "White"
    ratio_band = [0.8, 1.25]

    [[audit.signoff]]
    reviewer = "Dr A. Reviewer, ICS fairness panel"
    reason = "Black group under-recording known and being corrected; list needed for winter"
    accepts = "FAIL"
    outcomes = ["hypertension"]

    [[audit.block]]               # a reviewer's no: the outcome's list does not go out, whatever the gate found
    reviewer = "Dr B. Reviewer, ICS fairness panel"
    reason = "T2D ranks Black patients low in MLflow's figures for PCN U10037; under review (ref. 2026-15)"
    outcomes = ["t2d"]
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import tomllib
from pathlib import Path

from models.fairness import AuditSettings, Block, SignOff
from phm.alerts import AlertThresholds
from phm.alerts import thresholds_from as alert_thresholds
from phm.contract import CODE_PATTERNS
from phm.ethnicity_dq import EthnicityDQSettings
from phm.ethnicity_dq import settings_from as ethnicity_dq_settings
from phm.exceptions import ConfigError
from phm.freshness import DEFAULT_MAX_AGE_DAYS, STALE_POLICIES
from phm.ingest import IngestSettings
from phm.ingest import settings_from as ingest_settings
from phm.lists import ListSettings
from phm.lists import settings_from as lists_settings
from phm.retention import RetentionSettings
from phm.retention import settings_from as retention_settings

TYPES = {int: "an integer", float: "a number", str: "text", bool: "true or false"}


def _check(key: str, value, expected):
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, bool) or not isinstance(value, expected):
        raise ConfigError(f"{key}: must be {TYPES.get(expected, expected.__name__)}, not {value!r}")
    return value


def audit_settings(table: dict, where: str = "audit") -> AuditSettings:
    fields = {f.name: f for f in dataclasses.fields(AuditSettings)}
    values = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        if name in ("signoff", "override"):  # [[audit.override]]: the earlier name, same meaning
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise ConfigError(f"{where}.{key}: must be a list of tables ([[audit.signoff]])")
            values["signoffs"] = values.get("signoffs", ()) + tuple(
                _signoff(v, f"{where}.{key}[{i}]") for i, v in enumerate(value))
            continue
        if name == "block":
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise ConfigError(f"{where}.{key}: must be a list of tables ([[audit.block]])")
            values["blocks"] = tuple(_block(v, f"{where}.{key}[{i}]") for i, v in enumerate(value))
            continue
        if name == "accept_warn":
            raise ConfigError(f"{where}.accept_warn: removed: a WARN is no longer accepted silently; a named "
                              "reviewer signs it off with [[audit.signoff]] (reviewer, reason, accepts = \"WARN\")")
        if name not in fields or name in ("signoffs", "blocks"):
            known = ", ".join(sorted([*(n for n in fields if n not in ("signoffs", "blocks")), "signoff", "block"]))
            raise ConfigError(f"{where}.{key}: unknown key (known: {known})")
        default = getattr(AuditSettings(), name)
        if name == "ratio_band":
            if not isinstance(value, list) or len(value) != 2:
                raise ConfigError(f"{where}.ratio_band: must be [low, high], not {value!r}")
            values[name] = tuple(_check(f"{where}.ratio_band", v, float) for v in value)
        else:
            values[name] = _check(f"{where}.{key}", value, type(default))
    settings = AuditSettings(**values)
    settings.validate()
    from phm.ethnicity import BROAD_GROUPS

    if settings.reference_group not in BROAD_GROUPS:
        raise ConfigError(f"{where}.reference_group: one of {', '.join(BROAD_GROUPS)}, "
                          f"not {settings.reference_group!r}")
    return settings


def _outcomes(table: dict, where: str) -> tuple[str, ...]:
    outcomes = table.get("outcomes", ["*"])
    if not isinstance(outcomes, list) or not all(isinstance(o, str) for o in outcomes):
        raise ConfigError(f"{where}.outcomes: must be a list of outcome names, e.g. [\"cvd\"]")
    known = ("*", "cvd", "t2d", "hypertension")
    for outcome in outcomes:
        if outcome not in known:
            raise ConfigError(f"{where}.outcomes: {outcome!r} is not an outcome (cvd, t2d, hypertension, or \"*\" for all)")
    return tuple(outcomes)


def _reviewers_table(table: dict, where: str, known: set[str], what: str) -> tuple[str, str, tuple[str, ...]]:
    """(reviewer, reason, outcomes) of a sign-off's or a block's table, its keys checked."""
    for key in table:
        if key not in known:
            raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(sorted(known))})")
    for key in ("reviewer", "reason"):
        if key not in table:
            raise ConfigError(f"{where}.{key}: required (a {what} must name the reviewer and the reason)")
        _check(f"{where}.{key}", table[key], str)
    return table["reviewer"], table["reason"], _outcomes(table, where)


def _block(table: dict, where: str) -> Block:
    reviewer, reason, outcomes = _reviewers_table(table, where, {"reviewer", "reason", "outcomes"}, "block")
    block = Block(reviewer, reason, outcomes)
    block.validate(where)
    return block


def _signoff(table: dict, where: str) -> SignOff:
    reviewer, reason, outcomes = _reviewers_table(table, where, {"reviewer", "reason", "accepts", "outcomes"},
                                                  "sign-off")
    signoff = SignOff(reviewer, reason, _check(f"{where}.accepts", table.get("accepts", "WARN"), str),
                      outcomes, "configuration")
    signoff.validate(where)
    return signoff


@dataclasses.dataclass(frozen=True)
class RunSettings:
    icb: str | None = None  # default: the extract's only ICB
    index_date: dt.date | None = None  # the date the lists are for; default: the extract date
    horizon_years: int = 5
    seed: int = 42
    tracking_uri: str | None = None  # default: MLFLOW_TRACKING_URI, else a SQLite store under the output folder
    extract: Path | None = None  # paths: the command line's --extract and --out win
    out: Path | None = None
    executor: str = "local"  # "local": one process; "dask": per-PCN shards on Dask (docs/scale.md)
    dask_address: str | None = None  # tcp://scheduler:8786; default: a LocalCluster on this machine
    dask_workers: int | None = None  # LocalCluster workers; default: one per core
    max_extract_age_days: int = DEFAULT_MAX_AGE_DAYS  # an older extract is stale (phm/freshness.py)
    stale_extract: str = "refuse"  # "refuse": no lists; "mark": lists published, marked stale
    # also train the clinical_only models beside the candidate's, for reviewers to compare in
    # MLflow (never a candidate; off by default: the lists never use them; docs/models.md)
    compare_variants: bool = False


EXECUTORS = ("local", "dask")


def run_settings(table: dict, where: str = "run") -> RunSettings:
    types = {"icb": str, "index_date": dt.date, "horizon_years": int, "seed": int, "tracking_uri": str,
             "extract": str, "out": str, "executor": str, "dask_address": str, "dask_workers": int,
             "max_extract_age_days": int, "stale_extract": str, "compare_variants": bool}
    for key, value in table.items():
        if key not in types:
            raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(sorted(types))})")
        if types[key] is dt.date and (not isinstance(value, dt.date) or isinstance(value, dt.datetime)):
            raise ConfigError(f"{where}.{key}: must be a date (index_date = 2026-03-31, unquoted), not {value!r}")
        _check(f"{where}.{key}", value, types[key])
    table = {k: Path(v) if k in ("extract", "out") else v for k, v in table.items()}
    return check_run_settings(RunSettings(**table), where)


ICB_CODE = re.compile(CODE_PATTERNS["icb_code"])
ALLOWED_ROOTS = "PHM_ALLOWED_ROOTS"


def check_path(key: str, path: Path | None) -> Path | None:
    """A folder the run reads or writes: a plain path, inside PHM_ALLOWED_ROOTS when that is set
    (folders separated by ':'; an ICS sets it so a configuration cannot point a run elsewhere)."""
    if path is None:
        return None
    text = str(path)
    if any(ch in text for ch in "\0\n\r") or not text.strip():
        raise ConfigError(f"{key}: not a usable path: {text!r}")
    roots = [Path(r).resolve() for r in os.environ.get(ALLOWED_ROOTS, "").split(os.pathsep) if r]
    if roots:
        resolved = Path(path).resolve()
        if not any(resolved == root or root in resolved.parents for root in roots):
            raise ConfigError(f"{key}: {resolved} is outside the allowed folders ({ALLOWED_ROOTS}: "
                              f"{', '.join(map(str, roots))})")
    return Path(path)


def check_icb(key: str, icb: str | None) -> None:
    """An ICB code names files, keys (PHM_PSEUDONYMISATION_KEY_<ICB>) and MLflow models."""
    if icb is not None and not ICB_CODE.fullmatch(icb):
        raise ConfigError(f"{key}: an ICB code of 3 capital letters or digits (e.g. QXX), not {icb!r}")


def check_run_settings(settings: RunSettings, where: str = "run") -> RunSettings:
    """The value checks (also for settings the command line changed: --executor, --address)."""
    check_icb(f"{where}.icb", settings.icb)
    check_path(f"{where}.extract", settings.extract)
    check_path(f"{where}.out", settings.out)
    if not 1 <= settings.horizon_years <= 10:
        raise ConfigError(f"{where}.horizon_years: between 1 and 10 (default 5), not {settings.horizon_years}")
    if settings.executor not in EXECUTORS:
        raise ConfigError(f"{where}.executor: one of {', '.join(EXECUTORS)}, not {settings.executor!r}")
    if settings.dask_address is not None and not settings.dask_address.startswith(("tcp://", "tls://")):
        raise ConfigError(f"{where}.dask_address: a Dask scheduler address such as tcp://10.0.0.5:8786, "
                          f"not {settings.dask_address!r}")
    if settings.dask_workers is not None and not 1 <= settings.dask_workers <= 256:
        raise ConfigError(f"{where}.dask_workers: between 1 and 256, not {settings.dask_workers}")
    if not 1 <= settings.max_extract_age_days <= 3650:
        raise ConfigError(f"{where}.max_extract_age_days: between 1 and 3650 (default {DEFAULT_MAX_AGE_DAYS}), "
                          f"not {settings.max_extract_age_days}")
    if settings.stale_extract not in STALE_POLICIES:
        raise ConfigError(f"{where}.stale_extract: one of {', '.join(STALE_POLICIES)}, not {settings.stale_extract!r}")
    return settings


@dataclasses.dataclass(frozen=True)
class RunConfig:
    run: RunSettings = dataclasses.field(default_factory=RunSettings)
    ingest: IngestSettings = dataclasses.field(default_factory=IngestSettings)
    lists: ListSettings = dataclasses.field(default_factory=ListSettings)
    audit: AuditSettings = dataclasses.field(default_factory=AuditSettings)
    alerts: AlertThresholds = dataclasses.field(default_factory=AlertThresholds)
    retention: RetentionSettings = dataclasses.field(default_factory=RetentionSettings)
    ethnicity_dq: EthnicityDQSettings = dataclasses.field(default_factory=EthnicityDQSettings)


def load_config(path: Path | None) -> RunConfig:
    if path is None:
        return RunConfig()
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {path}: not valid TOML ({exc})") from None
    readers = {"run": run_settings, "ingest": ingest_settings, "lists": lists_settings,
               "audit": audit_settings, "alerts": alert_thresholds, "retention": retention_settings,
               "ethnicity_dq": ethnicity_dq_settings}
    for key in data:
        if key not in readers:
            raise ConfigError(f"{path}: unknown table or key {key!r} (known: {', '.join(readers)})")
        if not isinstance(data[key], dict):
            raise ConfigError(f"{path}: {key} must be a table ([{key}])")
    try:
        config = RunConfig(**{name: read(data[name]) for name, read in readers.items() if name in data})
        config.retention.validate(config.lists.recently_invited_days)
        return config
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
