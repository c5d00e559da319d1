"""``phm status``: where each ICB's runs stand, for the unit that schedules them.

Read from what the runs leave in each output folder (never the DuckDB file, which a run may hold
open: ``last_run.json``, the published lists' manifest and their ``NOT_REPLACED.txt`` mark), and,
with a Prefect server at PREFECT_API_URL, each deployment's latest runs and its next one. Only
what the folder's files and Prefect's UI already show: dates, states, file names, gate results;
no count, no patient-level value.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path

from flows.publish import CURRENT, MANIFEST
from flows.runrecord import last_run
from phm.exceptions import PhmError

FLOW = "phm-scheduled-run"
UNCHANGED = "Unchanged"  # the state name of a scheduled run that found nothing new (flows/deployments.py)
RECENT_RUNS = 10  # how many of a deployment's latest runs to read for its last finished one


@dataclass
class IcbStatus:
    """What ``phm status`` says of one output folder (and its deployment, if any)."""

    out: Path
    icb: str | None = None
    deployment: str | None = None
    lines: list[str] = field(default_factory=list)
    attention: list[str] = field(default_factory=list)  # what the unit should act on

    def render(self) -> list[str]:
        title = " ".join(x for x in (self.icb or "", f"({FLOW}/{self.deployment})" if self.deployment else "",
                                      str(self.out)) if x)
        flag = "NEEDS ATTENTION" if self.attention else "ok"
        return [f"{title}: {flag}", *(f"  {line}" for line in self.lines),
                *(f"  ! {item}" for item in self.attention)]


def folder_status(out: Path, today: dt.date | None = None, max_age_days: int | None = None) -> IcbStatus:
    """The published lists of ``out`` and the last run that published them."""
    from phm.freshness import DEFAULT_MAX_AGE_DAYS, today_utc

    out = Path(out)
    status = IcbStatus(out)
    today = today or today_utc()
    max_age_days = max_age_days or DEFAULT_MAX_AGE_DAYS
    if not out.is_dir():
        status.attention.append(f"no output folder {out}: no run has written here yet")
        return status
    record = last_run(out)
    link = out / CURRENT
    manifest_path = link / MANIFEST
    if not link.is_symlink() or not manifest_path.is_file():
        status.lines.append("lists: none published yet")
        status.attention.append("no lists published from this folder yet")
        return status
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        status.attention.append(f"lists: {manifest_path} cannot be read ({type(exc).__name__})")
        return status
    extract_date = _date(manifest.get("extract_date"))
    age = (today - extract_date).days if extract_date else None
    pcns = manifest.get("pcns") or {}
    status.lines.append(f"lists: {link.resolve().name}, published {manifest.get('published_at', '?')}, "
                        f"index date {manifest.get('index_date', '?')}, {len(pcns)} PCN(s)")
    status.lines.append(f"extract: dated {extract_date or '?'}"
                        + (f", {age} days old today (limit {max_age_days}, [run] max_extract_age_days)"
                           if age is not None else ""))
    status.lines.append(f"gate: {manifest.get('gate', '?')}")
    if record is not None:
        status.lines.append(f"last published run finished {record.finished_at}"
                            + ("" if record.lists == link.resolve().name else
                               f" (its lists {record.lists} are no longer the published ones)"))
    if manifest.get("stale"):
        status.attention.append("the published lists are marked STALE (their extract was over the age limit)")
    elif age is not None and age > max_age_days:
        status.attention.append(f"the published lists' extract is {age} days old: the next run on it is refused "
                                "as stale (exit 10) unless a newer extract arrives")
    not_replaced = manifest.get("not_replaced")
    if isinstance(not_replaced, dict):
        status.attention.append(f"NOT REPLACED: a run refused at {not_replaced.get('at', '?')} "
                                f"({not_replaced.get('why', '?')}) left these lists in place; "
                                f"see {link / 'NOT_REPLACED.txt'}")
    return status


def _date(text) -> dt.date | None:
    try:
        return dt.date.fromisoformat(str(text))
    except ValueError:
        return None


def prefect_status(status: IcbStatus, deployment: str) -> None:
    """The deployment's last finished run (state, when, its message if it failed) and its next
    scheduled one, from the Prefect server at PREFECT_API_URL."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.exceptions import ObjectNotFound

    status.deployment = deployment
    with get_client(sync_client=True) as client:
        try:
            registered = client.read_deployment_by_name(f"{FLOW}/{deployment}")
        except ObjectNotFound:
            status.attention.append(f"{FLOW}/{deployment} is not registered on the Prefect server (phm deploy)")
            return
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[registered.id])),
                                     sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=RECENT_RUNS)
        upcoming = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[registered.id])),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=1,
            flow_run_filter=_scheduled_only())
    if registered.paused or not any(s.active for s in registered.schedules):
        status.attention.append(f"{FLOW}/{deployment}: its schedule is paused (resume it in the Prefect UI)")
    running = [r for r in runs if r.state_type is not None and r.state_type.value in ("RUNNING", "PENDING")]
    finished = [r for r in runs if r.state is not None and r.state.is_final()]
    for run in running[:1]:
        status.lines.append(f"running now: {run.name} ({run.state_name}, since {_when(run.start_time)})")
    if finished:
        last = finished[0]
        when = _when(last.end_time or last.start_time or last.expected_start_time)
        status.lines.append(f"last run: {last.name} {last.state_name} at {when}" + (
            " (the extract and settings of the published lists again: nothing to do)"
            if last.state_name == UNCHANGED else ""))
        if last.state_type.value in ("FAILED", "CRASHED", "CANCELLED"):
            message = (last.state.message or "").splitlines()[0][:300] if last.state.message else ""
            status.attention.append(f"the last run {last.name} ended {last.state_name}"
                                    + (f": {message}" if message else "") + " (its page in the Prefect UI has the "
                                    "failed step)")
    else:
        status.lines.append("last run: none yet")
    if upcoming:
        status.lines.append(f"next run: {_when(upcoming[0].expected_start_time)}")
    elif nxt := _next_by_schedule(registered):  # the server's scheduler has not put it in yet
        status.lines.append(f"next run: {nxt} (by its schedule)")


def _next_by_schedule(registered) -> str | None:
    import asyncio

    from prefect.server.schemas.schedules import CronSchedule

    dates = []
    for item in registered.schedules:
        schedule = item.schedule
        if item.active and getattr(schedule, "cron", None):
            dates += asyncio.run(CronSchedule(cron=schedule.cron, timezone=schedule.timezone).get_dates(1))
    return _when(min(dates)) if dates else None


def _scheduled_only():
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )

    return FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=["SCHEDULED"])))


def _when(moment) -> str:
    """A time as London local time with its zone (the schedules' time), or '?'."""
    from zoneinfo import ZoneInfo

    if moment is None:
        return "?"
    return moment.astimezone(ZoneInfo("Europe/London")).strftime("%a %Y-%m-%d %H:%M %Z")


def deployments_status(path: Path, with_prefect: bool) -> list[IcbStatus]:
    """Every deployment of a deployments file: its folder, and with_prefect its Prefect runs."""
    from prefect.settings import PREFECT_API_URL

    from flows.config import load_config
    from flows.deployments import read_deployments
    from flows.prefect_api import check_server

    _, specs = read_deployments(path)
    unreachable = None
    if with_prefect:
        try:
            check_server(PREFECT_API_URL.value())
        except PhmError as exc:  # the folders still say where each ICB stands
            unreachable, with_prefect = str(exc), False
    statuses = []
    for spec in specs:
        config = load_config(Path(spec.config) if spec.config else None)
        status = folder_status(Path(spec.out), max_age_days=config.run.max_extract_age_days)
        status.icb = spec.icb
        if with_prefect:
            prefect_status(status, spec.deployment_name)
        elif unreachable:
            status.deployment = spec.deployment_name
            status.attention.append(f"its runs in Prefect are not known: {unreachable}")
        statuses.append(status)
    return statuses
