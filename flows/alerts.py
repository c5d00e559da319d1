"""Alerts through Prefect's own machinery: events, automations and notification blocks.

The flow (flows/run.py) emits an event for each condition Prefect does not see by itself (a
gate FAIL, a WARN awaiting sign-off, a stale extract, data quality below the ``[alerts]``
thresholds, score drift between runs), its resource the ICB (``phm.icb.<ICB>``) and the flow run its related resource.
A failed or crashed run is Prefect's own ``prefect.flow-run.Failed`` / ``Crashed`` event.
``phm deploy`` registers, per ICB of the deployments file's ``[alerts]``, one notification block
and one automation per condition (``register_alerts``); registering again updates them in place.
Message texts: phm/alerts.py. docs/scheduling.md, "Alerts", has the configuration.

    [alerts]                        # every ICB of the file; a [deployment.alerts] table overrides keys
    kind = "slack"                  # "webhook" (JSON POST), "slack" or "teams"
    url_env = "PHM_ALERTS_URL"      # the variable holding the URL when phm deploy runs (never in a file)
    # block = "slack-webhook/ics-phm"   # or a notification block made in the Prefect UI
    conditions = ["run_failed", "gate_fail", "gate_warn", "stale_extract", "data_quality", "drift"]  # default: all
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import urllib.parse
from dataclasses import dataclass

from phm.alerts import (
    CONDITIONS,
    EVENTS,
    RUN_FAILED,
    TITLES,
    Alert,
    custom_body,
    run_failed_body,
    subject,
)
from phm.exceptions import ConfigError

KINDS = ("webhook", "slack", "teams")
RUN_FLOWS = ["phm-run", "phm-scheduled-run"]  # not phm-ingest: one alert per failed run
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
BLOCK_REF = re.compile(r"[a-z0-9-]+/[a-z0-9-]+")


@dataclass(frozen=True)
class AlertDestination:
    """Where one ICB's alerts go, and which conditions it is told about."""

    kind: str = "webhook"
    url_env: str | None = None
    block: str | None = None  # "<block type slug>/<block name>", made elsewhere
    conditions: tuple[str, ...] = CONDITIONS


def destination_from(table: dict, where: str, base: AlertDestination | None = None) -> AlertDestination:
    """``[alerts]`` (or ``[deployment.alerts]`` over ``base``); errors name the key and never
    show a URL."""
    known = {f.name for f in dataclasses.fields(AlertDestination)}
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table ([alerts])")
    values = dataclasses.asdict(base) if base else {}
    for key, value in table.items():
        if key not in known:
            hint = " (a URL is a secret: name the environment variable holding it with url_env)" \
                if key in ("url", "webhook_url") else ""
            raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(sorted(known))}){hint}")
        if key == "conditions":
            if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
                raise ConfigError(f"{where}.conditions: a list of conditions, e.g. [\"run_failed\"], not {value!r}")
            for c in value:
                if c not in CONDITIONS:
                    raise ConfigError(f"{where}.conditions: unknown condition {c!r} (known: {', '.join(CONDITIONS)})")
            values[key] = tuple(dict.fromkeys(value))
            continue
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}.{key}: must be text, not {value!r}")
        values[key] = value
    if "block" in table and "url_env" not in table:
        values["url_env"] = None
    if "url_env" in table and "block" not in table:
        values["block"] = None
    dest = AlertDestination(**values)
    if dest.kind not in KINDS:
        raise ConfigError(f"{where}.kind: one of {', '.join(KINDS)}, not {dest.kind!r}")
    if dest.url_env and dest.block:
        raise ConfigError(f"{where}: give url_env or block, not both")
    if not dest.url_env and not dest.block:
        raise ConfigError(f"{where}.url_env: required (the environment variable holding the webhook URL), "
                          "or block = \"<type>/<name>\" for a notification block made in the Prefect UI")
    if dest.url_env and not ENV_NAME.fullmatch(dest.url_env):
        raise ConfigError(f"{where}.url_env: the name of an environment variable (e.g. PHM_ALERTS_URL), "
                          "not a URL or other text")
    if dest.block and not BLOCK_REF.fullmatch(dest.block):
        raise ConfigError(f"{where}.block: \"<block type slug>/<block name>\" (e.g. slack-webhook/ics-phm), "
                          f"not {dest.block!r}")
    return dest


LOCAL_HOSTS = ("localhost",)


def check_url(url: str, kind: str, where: str) -> None:
    """A webhook URL must be https (plain http only to this machine, for a local relay or a
    test); the message names the variable, never the URL (it is a secret)."""
    parsed = urllib.parse.urlsplit(url.strip())
    host = parsed.hostname or ""
    try:
        local = host in LOCAL_HOSTS or ipaddress.ip_address(host).is_loopback
    except ValueError:
        local = False
    if parsed.scheme not in ("https", "http") or not host or (parsed.scheme == "http" and not local):
        raise ConfigError(f"{where}: not an https URL (plain http only to 127.0.0.1); the value is not shown")
    if kind == "slack" and not re.fullmatch(r"hooks\.slack(-gov)?\.com", host):
        raise ConfigError(f"{where}: not a Slack incoming-webhook URL (https://hooks.slack.com/services/...); "
                          "the value is not shown")


def resolve_url(dest: AlertDestination, where: str, environ=os.environ) -> str:
    url = environ.get(dest.url_env or "")
    if not url:
        raise ConfigError(f"{where}.url_env: the environment variable {dest.url_env} is not set (it holds the "
                          "webhook URL when phm deploy runs)")
    check_url(url, dest.kind, f"{where}.url_env (${dest.url_env})")
    try:  # the block's own check (a Teams URL must be a Power Automate Workflows one)
        notification_block(dest, "QXX", url.strip())
    except Exception:  # its message may quote the URL: never shown
        raise ConfigError(f"{where}.url_env (${dest.url_env}): not a URL Prefect's {dest.kind} notification block "
                          "accepts (Teams: a Power Automate Workflows URL); the value is not shown") from None
    return url.strip()


# -- the flow's side -------------------------------------------------------------------------

def emit(alert: Alert) -> None:
    """The alert as a Prefect event: resource the ICB, related the current flow run. Never
    fails the run (Prefect's events client logs and drops what it cannot send)."""
    from prefect.context import FlowRunContext
    from prefect.events import emit_event

    related = []
    context = FlowRunContext.get()
    if context is not None and context.flow_run is not None:
        related.append({"prefect.resource.id": f"prefect.flow-run.{context.flow_run.id}",
                        "prefect.resource.role": "flow-run", "prefect.resource.name": context.flow_run.name})
    try:
        emit_event(event=alert.event, resource=icb_resource(alert.icb), related=related, payload=alert.payload())
    except Exception:  # an alert must never be the reason a run fails
        pass


def icb_resource(icb: str) -> dict[str, str]:
    return {"prefect.resource.id": f"phm.icb.{icb}", "prefect.resource.name": f"ICB {icb}", "phm.icb": icb}


def run_tags(icb: str | None) -> list[str]:
    """The tags a run carries so that the ICB's run-failed automation finds it (deployments
    carry the same: flows/deployments.py)."""
    return ["phm", f"icb:{icb}"] if icb else []


# -- phm deploy's side -----------------------------------------------------------------------

def automation_name(icb: str, condition: str) -> str:
    return f"phm-risk {icb}: {TITLES[condition]}"


def block_name(icb: str) -> str:
    return f"phm-alerts-{icb.lower()}"


def trigger_for(icb: str, condition: str):
    from prefect.events.schemas.automations import EventTrigger, Posture

    if condition == RUN_FAILED:
        return EventTrigger(
            expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related=[{"prefect.resource.role": "flow", "prefect.resource.name": RUN_FLOWS},
                           {"prefect.resource.role": "tag", "prefect.resource.id": f"prefect.tag.icb:{icb}"}],
            posture=Posture.Reactive, threshold=1)
    return EventTrigger(expect={EVENTS[condition]}, match={"prefect.resource.id": f"phm.icb.{icb}"},
                        posture=Posture.Reactive, threshold=1)


def notification_block(dest: AlertDestination, icb: str, url: str):
    from prefect.blocks.notifications import (
        CustomWebhookNotificationBlock,
        MicrosoftTeamsWebhook,
        SlackWebhook,
    )

    if dest.kind == "slack":
        return SlackWebhook(url=url)
    if dest.kind == "teams":
        return MicrosoftTeamsWebhook(url=url)
    # the URL as a secret value substituted at send time: not shown in the UI or the API
    return CustomWebhookNotificationBlock(
        name=f"phm-risk {icb}", url="{{webhook_url}}", secrets={"webhook_url": url},
        json_data={"text": "{{subject}}\n{{body}}", "subject": "{{subject}}", "body": "{{body}}",
                   "source": "phm-risk"})


def _block_id(client, dest: AlertDestination, icb: str, where: str):
    if dest.block:
        from prefect.exceptions import ObjectNotFound

        slug, name = dest.block.split("/")
        try:
            return client.read_block_document_by_name(name=name, block_type_slug=slug, include_secrets=False).id
        except ObjectNotFound:
            raise ConfigError(f"{where}.block: no notification block {dest.block!r} on the Prefect server") from None
    return notification_block(dest, icb, resolve_url(dest, where)).save(block_name(icb), overwrite=True)


def register_alerts(destinations: dict[str, tuple[AlertDestination, str]], progress=print) -> dict[str, list[str]]:
    """One notification block and one automation per condition for each ICB (``destinations``:
    ICB -> (destination, where in the file)). Registering again updates each automation in
    place (found by its name) and removes those of conditions no longer configured.
    Returns ICB -> the ids of its automations."""
    from prefect.client.orchestration import get_client
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import AutomationCore
    from prefect.settings import PREFECT_UI_URL

    ui = (PREFECT_UI_URL.value() or "").rstrip("/")  # the server's UI as this machine reaches it
    registered = {}
    with get_client(sync_client=True) as client:
        for icb, (dest, where) in sorted(destinations.items()):
            block_id = _block_id(client, dest, icb, where)
            ids = []
            for condition in CONDITIONS:
                name = automation_name(icb, condition)
                existing = client.read_automations_by_name(name)
                if condition not in dest.conditions:
                    for automation in existing:
                        client.delete_automation(automation.id)
                    continue
                body = run_failed_body(icb, ui) if condition == RUN_FAILED else custom_body(ui)
                automation = AutomationCore(
                    name=name, description=f"phm-risk alert for ICB {icb}: {TITLES[condition]} (phm deploy)",
                    enabled=True, trigger=trigger_for(icb, condition),
                    actions=[SendNotification(block_document_id=block_id, subject=subject(icb, condition), body=body)])
                if existing:
                    client.update_automation(existing[0].id, automation)
                    for extra in existing[1:]:
                        client.delete_automation(extra.id)
                    ids.append(str(existing[0].id))
                else:
                    ids.append(str(client.create_automation(automation)))
            registered[icb] = ids
            via = f"block {dest.block}" if dest.block else f"{dest.kind} (URL from ${dest.url_env})"
            progress(f"alerts for ICB {icb}: {', '.join(dest.conditions) or 'none'} -> {via}")
    return registered
