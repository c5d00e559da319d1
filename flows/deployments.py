"""Scheduled runs for ICS population health units: deployments on a Prefect server.

The deployments are declared in one TOML file (``phm deploy --file deployments.toml``), one
``[[deployment]]`` per ICB, and registered here with one ``deploy`` call each::

    work_pool = "phm"                  # a Prefect 'process' work pool (created if missing)

    [[deployment]]
    icb = "QXX"
    extract = "/data/extracts/QXX/latest"
    out = "/data/phm/QXX"              # its own folder: its own DuckDB file, MLflow store, lists
    config = "/etc/phm/QXX.toml"       # optional: [run], [lists], [audit] (docs/lists.md)
    cron = "0 6 * * 1"                 # default: Mondays 06:00
    timezone = "Europe/London"         # default; the cron is local time, across the clock change

    [alerts]                           # optional: Prefect automations per ICB (flows/alerts.py)
    kind = "slack"
    url_env = "PHM_ALERTS_URL"

Each deployment runs ``scheduled_run`` (below) with the ICB, extract, output folder and
configuration as its parameters; a worker (``prefect worker start --pool phm``) picks the runs
up. The pseudonymisation key is never a parameter (parameters are stored by the server): the
worker's environment holds it, ``PHM_PSEUDONYMISATION_KEY_<ICB>`` or ``PHM_PSEUDONYMISATION_KEY``.
docs/scheduling.md says how an ICS unit starts the server and the worker.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path

from prefect import flow

from flows.alerts import AlertDestination, destination_from, register_alerts, resolve_url
from flows.config import check_icb, check_path
from phm.exceptions import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = "flows/deployments.py:scheduled_run"
DEFAULT_POOL = "phm"
DEFAULT_CRON = "0 6 * * 1"
DEFAULT_TIMEZONE = "Europe/London"


@flow(name="phm-scheduled-run")
def scheduled_run(icb: str, extract: str, out: str, config: str | None = None, force: bool = False) -> dict[str, str]:
    """One ICB's scheduled run: the whole pipeline (flows/run.py) with the ICB's configuration.
    An extract that has not changed since the last published run is not processed again
    (``force`` to run it anyway)."""
    from flows.config import load_config
    from flows.run import flow_for

    _freeze_stage_imports()
    settings = load_config(Path(config) if config else None)
    settings = dataclasses.replace(settings, run=dataclasses.replace(settings.run, icb=icb))
    if not Path(extract).is_dir():
        raise ConfigError(f"extract {extract}: no such folder (deployment parameter 'extract')")
    summary = flow_for(settings.run)(Path(extract), Path(out), settings, force=force)
    return {"skipped": str(summary.skipped), "lists": str(summary.lists_link), "audit_report": str(summary.audit_report), "database": str(summary.db)}


def _freeze_stage_imports() -> None:
    """A scheduled run has a process of its own (the Prefect worker starts one per flow run), as
    ``phm run`` has: import what the stages need with cyclic collection paused, then freeze it
    out of the collector's walks for the rest of the process, and freeze everything before the
    process exits (phm/collector.py says why: seconds of CPU per run, whatever its size)."""
    import atexit
    import importlib

    from flows.run import STAGE_IMPORTS
    from phm import collector

    collector.collect_later()
    for name in STAGE_IMPORTS:
        importlib.import_module(name)
    collector.freeze_for_good()
    atexit.register(collector.before_exit)  # the last exit handler registered runs first: then Prefect's


@dataclass(frozen=True)
class DeploymentSpec:
    icb: str
    extract: str
    out: str
    config: str | None = None
    cron: str = DEFAULT_CRON
    timezone: str = DEFAULT_TIMEZONE
    name: str = ""
    alerts: AlertDestination | None = None  # [alerts], with this deployment's [deployment.alerts] over it

    @property
    def deployment_name(self) -> str:
        return self.name or f"phm-{self.icb}"

    @property
    def parameters(self) -> dict:
        return {"icb": self.icb, "extract": self.extract, "out": self.out, "config": self.config}


def read_deployments(path: Path) -> tuple[str, list[DeploymentSpec]]:
    """The work pool and the deployments of a deployments file; errors name the key."""
    pool, specs, _ = read_deployments_file(path)
    return pool, specs


def read_deployments_file(path: Path) -> tuple[str, list[DeploymentSpec], dict]:
    """The work pool, the deployments and each ICB's alerts (ICB -> (destination, where))."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"--file {path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--file {path}: not valid TOML ({exc})") from None
    unknown = set(data) - {"work_pool", "deployment", "alerts"}
    if unknown:
        raise ConfigError(f"{path}: unknown key {sorted(unknown)[0]!r} (known: work_pool, deployment, alerts)")
    base = destination_from(data["alerts"], f"{path}: alerts") if "alerts" in data else None
    pool = data.get("work_pool", DEFAULT_POOL)
    if not isinstance(pool, str) or not pool:
        raise ConfigError(f"{path}: work_pool must be text, not {pool!r}")
    tables = data.get("deployment", [])
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"{path}: no [[deployment]] tables")
    known = {f.name for f in dataclasses.fields(DeploymentSpec)}
    specs, alerts = [], {}
    for i, table in enumerate(tables):
        where = f"{path}: deployment[{i}]"
        table = dict(table)
        own = table.pop("alerts", None)
        for key, value in table.items():
            if key not in known:
                raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(sorted(known))})")
            if not isinstance(value, str):
                raise ConfigError(f"{where}.{key}: must be text, not {value!r}")
        for key in ("icb", "extract", "out"):
            if not table.get(key):
                raise ConfigError(f"{where}.{key}: required")
        check_icb(f"{where}.icb", table["icb"])
        dest = destination_from(own, f"{where}.alerts", base) if own is not None else base
        spec = DeploymentSpec(**table, alerts=dest)
        if dest is not None:
            earlier = alerts.setdefault(spec.icb, (dest, f"{where}.alerts" if own is not None else f"{path}: alerts"))
            if earlier[0] != dest:
                raise ConfigError(f"{where}.alerts: ICB {spec.icb}'s alerts differ from {earlier[1]}'s: one ICB, "
                                  "one set of alerts")
        for key in ("extract", "out", "config"):
            check_path(f"{where}.{key}", getattr(spec, key))
        _check_schedule(spec, where)
        specs.append(spec)
    names = [s.deployment_name for s in specs]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ConfigError(f"{path}: deployment name {duplicated[0]!r} used twice (give each a distinct name)")
    outs = [str(Path(s.out).resolve()) for s in specs]
    shared = sorted({o for o in outs if outs.count(o) > 1})
    if shared:
        raise ConfigError(f"{path}: two deployments write to {shared[0]}: each ICB needs its own out folder "
                          "(its own DuckDB file: DuckDB allows one writer per file)")
    return pool, specs, alerts


def _check_schedule(spec: DeploymentSpec, where: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    try:
        ZoneInfo(spec.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{where}.timezone: unknown time zone {spec.timezone!r} (e.g. Europe/London)") from None
    try:
        CronSchedule(cron=spec.cron, timezone=spec.timezone)
    except ValidationError:
        raise ConfigError(f"{where}.cron: not a cron expression: {spec.cron!r} "
                          "(e.g. \"0 6 * * 1\", Mondays 06:00)") from None


def ensure_work_pool(pool: str) -> None:
    """A 'process' work pool: the worker runs each flow run as a process on its machine."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        except ObjectAlreadyExists:
            pass


def deploy(path: Path, progress=print) -> list[str]:
    """Register every deployment of the file on the Prefect server (PREFECT_API_URL); returns
    their ids. Registering again updates them in place."""
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.settings import PREFECT_API_URL

    pool, specs, alerts = read_deployments_file(path)
    if not PREFECT_API_URL.value():
        raise ConfigError("PREFECT_API_URL is not set: start a Prefect server (docs/scheduling.md) and point "
                          "PREFECT_API_URL at it, e.g. http://127.0.0.1:4200/api")
    for dest, where in alerts.values():  # before registering anything: a missing or wrong URL stops here
        if dest.url_env:
            resolve_url(dest, where)
    ensure_work_pool(pool)
    source = flow.from_source(source=str(PROJECT_ROOT), entrypoint=ENTRYPOINT)
    ids = []
    for spec in specs:
        deployment_id = source.deploy(
            name=spec.deployment_name, work_pool_name=pool, build=False, push=False, print_next_steps=False,
            parameters=spec.parameters, schedules=[CronSchedule(cron=spec.cron, timezone=spec.timezone)],
            tags=["phm", f"icb:{spec.icb}"],
            description=f"phm-risk weekly run for ICB {spec.icb}: ingest to published PCN lists")
        ids.append(str(deployment_id))
        progress(f"deployed phm-scheduled-run/{spec.deployment_name} ({spec.cron}, {spec.timezone}) "
                 f"-> work pool {pool!r}")
    if alerts:
        register_alerts(alerts, progress)
    else:
        progress("no [alerts] in the file: no alert automations registered (docs/scheduling.md, \"Alerts\")")
    progress(f"start a worker for the pool: prefect worker start --pool {pool}")
    return ids
