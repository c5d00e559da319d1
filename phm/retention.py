"""Retention: how long a run's output folder keeps what it holds, set in ``[retention]`` and
applied by ``phm retention`` (and, for the lists folders, by every publish).

What is kept, and for how long (the ICS's retention schedule decides the values; dpia.md):

- ``list_folders`` (default 2): the published lists folders under ``<out>``: the current one and,
  with 2, the one before it (a step back if the new lists are wrong). 1 keeps only the current.
- ``history_days`` (default 730): rows of the lists' history (``lists.invitations``) older than
  this, by list date. It must cover ``[lists] recently_invited_days`` and a capacity period (62
  days), or the rules that read it would forget invitations they need.
- ``outcomes_days`` (default 730): practices' returned outcomes (``lists.invitation_outcomes``,
  by outcome date) and their quarantined rows (``lists.outcomes_quarantine``, by load time).

The database holds one extract at a time (each ingest replaces it), so there are no old extracts
to remove; MLflow runs and the Prefect server's history are the ICS's to prune with their own
tools (docs/operations.md).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from phm.disclosure import show
from phm.exceptions import ConfigError

CAPACITY_PERIOD_DAYS = 62  # the longest capacity period (a month) and the one before it


@dataclass(frozen=True)
class RetentionSettings:
    list_folders: int = 2
    history_days: int = 730
    outcomes_days: int = 730

    def validate(self, recently_invited_days: int = 90, where: str = "retention") -> None:
        if not 1 <= self.list_folders <= 100:
            raise ConfigError(f"{where}.list_folders: between 1 and 100 (default 2), not {self.list_folders}")
        shortest = max(recently_invited_days, CAPACITY_PERIOD_DAYS)
        if not shortest <= self.history_days <= 36500:
            raise ConfigError(f"{where}.history_days: at least {shortest} (the recently-invited window and a "
                              f"capacity period read the history), not {self.history_days}")
        if not 1 <= self.outcomes_days <= 36500:
            raise ConfigError(f"{where}.outcomes_days: at least 1, not {self.outcomes_days}")


def settings_from(table: dict, where: str = "retention") -> RetentionSettings:
    known = {f.name for f in dataclasses.fields(RetentionSettings)}
    for key, value in table.items():
        if key not in known:
            raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(sorted(known))})")
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{where}.{key}: must be a whole number, not {value!r}")
    return RetentionSettings(**table)


@dataclass
class Applied:
    folders: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows removed
    dry_run: bool = False

    def summary_lines(self) -> list[str]:
        verb = "would remove" if self.dry_run else "removed"
        return [f"retention: {verb} {len(self.folders)} lists folder(s)"
                + (f" ({', '.join(self.folders)})" if self.folders else ""),
                *(f"  {table}: {verb} {show(n)} rows" for table, n in self.rows.items()),
                "  (counts: 1-7 suppressed, others rounded to 5)"]


def old_list_folders(out: Path, keep: int) -> list[Path]:
    """Published lists folders beyond the newest ``keep`` (the current one is always kept)."""
    link = out / "lists"
    current = link.resolve() if link.is_symlink() else None
    finished = sorted((p for p in out.glob("lists-*") if p.is_dir() and (p / "lists_manifest.json").is_file()),
                      key=lambda p: p.name, reverse=True)  # names are UTC stamps: newest first
    kept = [p for p in finished if p.resolve() == current] + [p for p in finished if p.resolve() != current]
    return sorted(kept[keep:])


# (table, the date column its age is read from, the setting): names from here, never from data
AGED = (("lists.invitations", "list_date", "history_days"),
        ("lists.invitation_outcomes", "outcome_date", "outcomes_days"),
        ("lists.outcomes_quarantine", "loaded_at", "outcomes_days"))


def apply(con: duckdb.DuckDBPyConnection, out: Path, settings: RetentionSettings, today: dt.date | None = None,
          dry_run: bool = False) -> Applied:
    today = today or dt.datetime.now(dt.UTC).date()
    applied = Applied(dry_run=dry_run)
    folders = old_list_folders(Path(out), settings.list_folders)
    applied.folders = [p.name for p in folders]
    existing = {f"{s}.{t}" for s, t in con.execute("select table_schema, table_name from information_schema.tables")
                .fetchall()}
    con.execute("begin transaction")
    try:
        for table, column, setting in AGED:
            if table not in existing:
                continue
            cutoff = today - dt.timedelta(days=getattr(settings, setting))
            where = f"from {table} where {column} < ?::date"  # noqa: S608  (names from AGED)
            applied.rows[table] = con.execute(f"select count(*) {where}", [cutoff]).fetchone()[0]
            if not dry_run:
                con.execute(f"delete {where}", [cutoff])
        con.execute("rollback" if dry_run else "commit")
    except BaseException:
        con.execute("rollback")
        raise
    if not dry_run:
        for folder in folders:
            shutil.rmtree(folder)
    return applied
