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
from flows.config import check_icb, check_path, load_config
from flows.prefect_api import check_server
from flows.status import UNCHANGED
from phm.exceptions import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = "flows/deployments.py:scheduled_run"
DEFAULT_POOL = "phm"
DEFAULT_CRON = "0 6 * * 1"
DEFAULT_TIMEZONE = "Europe/London"
NAME_FORBIDDEN = "/%&><"  # characters Prefect refuses in a deployment's name


@flow(name="phm-scheduled-run")
def scheduled_run(icb: str, extract: str, out: str, config: str | None = None, force: bool = False):
    """One ICB's scheduled run: the whole pipeline (flows/run.py) with the ICB's configuration.
    An extract that has not changed since the last published run is not processed again
    (``force`` to run it anyway): the run ends Completed under the name "Unchanged", so that the
    Prefect UI, and ``phm status``, tell a week with no new extract from a week with new lists."""
    from prefect.states import Completed

    from flows.run import flow_for

    _freeze_stage_imports()
    # checked by phm deploy, and again here: the file may have changed since
    settings = icb_config(config, icb, "deployment parameter 'config'")
    settings = dataclasses.replace(settings, run=dataclasses.replace(settings.run, icb=icb))
    if not Path(extract).is_dir():
        raise ConfigError(f"extract {extract}: no such folder (deployment parameter 'extract')")
    summary = flow_for(settings.run)(Path(extract), Path(out), settings, force=force)
    result = {"skipped": str(summary.skipped), "lists": str(summary.lists_link),
              "audit_report": str(summary.audit_report), "database": str(summary.db)}
    if summary.skipped:
        return Completed(name=UNCHANGED, message=summary.lines[0] if summary.lines else "nothing to do", data=result)
    return result


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
        if "name" in table and (bad := sorted(set(table["name"]) & set(NAME_FORBIDDEN))):
            raise ConfigError(f"{where}.name: a deployment's name cannot hold {' '.join(bad)!r} "
                              f"(Prefect refuses any of {' '.join(NAME_FORBIDDEN)}), not {table['name']!r}")
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
        _check_run_config(spec, where)
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


def _check_run_config(spec: DeploymentSpec, where: str) -> None:
    """The ICB's run configuration, read as its scheduled runs will read it, so that a missing
    file or a mistyped key stops ``phm deploy`` now rather than failing the first scheduled run,
    days later."""
    icb_config(spec.config, spec.icb, f"{where}.config")


def icb_config(config: str | None, icb: str, where: str):
    """An ICB's run configuration (flows/config.py), errors naming ``where`` and the file. Its
    ``[run] icb``, if any, must be ``icb``: a configuration holds an ICB's sign-offs and
    capacities, and must not be run as another ICB's."""
    if config is None:
        return load_config(None)
    path = Path(config)
    if not path.is_file():
        raise ConfigError(f"{where}: {path}: no such file (the ICB's run configuration: [run], [lists], "
                          "[audit]; leave config out for the defaults)")
    try:
        settings = load_config(path)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {str(exc).removeprefix('--config ')}") from None
    if settings.run.icb is not None and settings.run.icb != icb:
        raise ConfigError(f"{where}: {path}: [run] icb is {settings.run.icb!r}, but this deployment is for "
                          f"ICB {icb!r}: give the ICB its own configuration (or take icb out of [run])")
    return settings


def site_warnings(specs: list[DeploymentSpec]) -> list[str]:
    """What would fail every scheduled run on this machine (where the worker runs them) but may be
    set right before the first one: the extract folder not there (yet), an output folder this
    user cannot create or write. Said by ``phm deploy``; not refused."""
    import os

    warnings = []
    for spec in specs:
        name = f"phm-scheduled-run/{spec.deployment_name}"
        if not Path(spec.extract).is_dir():
            warnings.append(f"{name}: extract {spec.extract} is not a folder on this machine (yet): its scheduled "
                            "runs fail until the extract lands there")
        existing = Path(spec.out)
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            warnings.append(f"{name}: out {spec.out}: {existing} is not a folder this user can write to: its "
                            "scheduled runs fail unless the worker runs as a user who can")
        # the deployment's paths win over the configuration's, as the command line's do in phm run:
        # say so where they differ, or an edit to [run] extract would seem to move the ICB's runs
        run = icb_config(spec.config, spec.icb, name).run
        for key, configured, used in (("extract", run.extract, spec.extract), ("out", run.out, spec.out)):
            if configured is not None and Path(configured) != Path(used):
                warnings.append(f"{name}: {spec.config}: [run] {key} = {str(configured)!r} is not used: the "
                                f"deployment's {key} ({used}) is")
    return warnings


def next_runs(spec: DeploymentSpec, n: int = 1) -> list[str]:
    """The schedule's next start times, as local times with their zone (GMT or BST)."""
    import asyncio

    from prefect.server.schemas.schedules import CronSchedule

    dates = asyncio.run(CronSchedule(cron=spec.cron, timezone=spec.timezone).get_dates(n))
    return [d.strftime("%a %Y-%m-%d %H:%M %Z") for d in dates]


def unlisted_deployments(pool: str, names: list[str]) -> list[str]:
    """Deployments of the scheduled flow in ``pool`` that the file no longer names: they keep
    running on their schedules until deleted."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        registered = client.read_deployments(flow_filter=FlowFilter(name=FlowFilterName(any_=["phm-scheduled-run"])))
    return sorted(d.name for d in registered if d.work_pool_name == pool and d.name not in names)


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
    url = PREFECT_API_URL.value()
    if not url:
        raise ConfigError("PREFECT_API_URL is not set: start a Prefect server (docs/scheduling.md) and point "
                          "PREFECT_API_URL at it, e.g. http://127.0.0.1:4200/api")
    for dest, where in alerts.values():  # before registering anything: a missing or wrong URL stops here
        if dest.url_env:
            resolve_url(dest, where)
    check_server(url)
    ensure_work_pool(pool)
    source = flow.from_source(source=str(PROJECT_ROOT), entrypoint=ENTRYPOINT)
    ids = []
    for spec in specs:
        # to_deployment and apply: what Flow.deploy does for a process pool, without the console
        # table and the advice to use .serve that it prints for each deployment
        deployment = source.to_deployment(
            name=spec.deployment_name, parameters=spec.parameters,
            schedules=[CronSchedule(cron=spec.cron, timezone=spec.timezone)], tags=["phm", f"icb:{spec.icb}"],
            description=f"phm-risk weekly run for ICB {spec.icb}: ingest to published PCN lists")
        ids.append(str(deployment.apply(work_pool_name=pool)))
        progress(f"deployed phm-scheduled-run/{spec.deployment_name} ({spec.cron}, {spec.timezone}; next run "
                 f"{next_runs(spec)[0]}) -> work pool {pool!r}")
    for warning in site_warnings(specs):
        progress(f"warning: {warning}")
    for name in unlisted_deployments(pool, [s.deployment_name for s in specs]):
        progress(f"warning: phm-scheduled-run/{name} is registered in work pool {pool!r} but not in {path}: it "
                 f"still runs on its schedule (remove it: prefect deployment delete phm-scheduled-run/{name})")
    if alerts:
        register_alerts(alerts, progress)
    else:
        progress("no [alerts] in the file: no alert automations registered (docs/scheduling.md, \"Alerts\")")
    progress(f"start a worker for the pool: prefect worker start --pool {pool}")
    return ids
