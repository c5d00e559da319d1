"""The run configuration: one TOML file, checked on load with errors that name the key.

Only the ``[audit]`` table exists so far (the fairness audit and its gate); every key is
optional and defaults are documented in docs/fairness.md. Secrets never live here.

    [audit]
    replicates = 1000
    reference_group = "White"
    ratio_band = [0.8, 1.25]

    [[audit.override]]
    reviewer = "Dr A. Reviewer, ICS fairness panel"
    reason = "Black group under-recording known and being corrected; list needed for winter"
    accepts = "FAIL"
    outcomes = ["hypertension"]
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from models.fairness._settings import AuditSettings, Override
from phm.exceptions import ConfigError

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
        if name == "override":
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise ConfigError(f"{where}.override: must be a list of tables ([[audit.override]])")
            values["overrides"] = tuple(_override(v, f"{where}.override[{i}]") for i, v in enumerate(value))
            continue
        if name not in fields or name == "overrides":
            known = ", ".join(sorted([*(n for n in fields if n != "overrides"), "override"]))
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
    return settings


def _override(table: dict, where: str) -> Override:
    known = {"reviewer", "reason", "accepts", "outcomes"}
    for key in table:
        if key not in known:
            raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(sorted(known))})")
    for key in ("reviewer", "reason"):
        if key not in table:
            raise ConfigError(f"{where}.{key}: required (an override must name the reviewer and the reason)")
        _check(f"{where}.{key}", table[key], str)
    outcomes = table.get("outcomes", ["*"])
    if not isinstance(outcomes, list) or not all(isinstance(o, str) for o in outcomes):
        raise ConfigError(f"{where}.outcomes: must be a list of outcome names, e.g. [\"cvd\"]")
    override = Override(table["reviewer"], table["reason"], _check(f"{where}.accepts", table.get("accepts", "FAIL"), str),
                        tuple(outcomes))
    override.validate(where)
    return override


@dataclasses.dataclass(frozen=True)
class RunConfig:
    audit: AuditSettings = dataclasses.field(default_factory=AuditSettings)


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
    for key in data:
        if key != "audit":
            raise ConfigError(f"{path}: unknown table or key {key!r} (known: audit)")
    table = data.get("audit", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: audit must be a table ([audit])")
    try:
        return RunConfig(audit=audit_settings(table))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
