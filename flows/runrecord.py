"""What a run leaves to the next one: the extract's content digest, and no leftovers.

- ``extract_digest``: SHA-256 over the extract's contract files (names and bytes, in name order)
  and its extract.json; the synthetic generator's truth/ folder and anything else in the folder
  are not part of it (the pipeline never reads them).
- ``settings_digest``: what else decides the lists: the configuration's run, lists and audit
  settings (not where the run's files are, nor which executor runs it: those give the same lists)
  and the pseudonymisation key. It is an HMAC under the key, so the record shows that the key
  changed, never anything about the key.
- ``last_run.json`` in the output folder records both digests of the last run that published,
  and is written (atomically) only after the lists are published. A run with the same extract
  and the same settings, with those lists still published, does nothing and says so (``--force``
  runs it again); a changed extract, configuration or key is processed in full. A killed run
  writes no record, so the next run processes the extract from the start.
- ``remove_leftovers``: a killed run can leave shard files (patient rows) and an unpublished
  lists folder; the next run removes them before it starts (it holds the folder's lock, so no
  other run is using them).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from phm.contract import TABLES
from phm.exceptions import ExtractError

RECORD = "last_run.json"
RECORD_BEING_WRITTEN = "last_run.tmp"
CHUNK = 1 << 20


def extract_files(extract: Path) -> list[Path]:
    names = set(TABLES)
    files = [p for p in sorted(extract.iterdir()) if p.is_file()
             and (p.name == "extract.json" or p.name.split(".", 1)[0] in names)]
    if not files:
        raise ExtractError("no extract files (extract.json and the contract tables) in the folder", file=str(extract))
    return files


def extract_digest(extract: Path) -> str:
    digest = hashlib.sha256()
    for path in extract_files(Path(extract)):
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as handle:
            while block := handle.read(CHUNK):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


# Run settings that change where or how a run works but not what it publishes.
NOT_IN_SETTINGS_DIGEST = ("extract", "out", "tracking_uri", "executor", "dask_address", "dask_workers",
                          "compare_variants")


def settings_digest(config, key: bytes) -> str:
    """``config``: a flows.config.RunConfig; ``key``: the ICB's pseudonymisation key."""
    run = {k: v for k, v in dataclasses.asdict(config.run).items() if k not in NOT_IN_SETTINGS_DIGEST}
    settings = {"run": run, "lists": dataclasses.asdict(config.lists), "audit": dataclasses.asdict(config.audit)}
    text = json.dumps(settings, sort_keys=True, default=str)
    return hmac.new(key, b"phm run settings v1:" + text.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class LastRun:
    digest: str
    settings: str
    finished_at: str
    lists: str


def last_run(out: Path) -> LastRun | None:
    path = Path(out) / RECORD
    try:
        data = json.loads(path.read_text())
        return LastRun(data["digest"], data["settings"], data["finished_at"], data["lists"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
        return None  # no record, or one from an older version: run in full


def unchanged_since(out: Path, digest: str, settings: str) -> LastRun | None:
    """The last run, if it processed this same extract with the same settings and its lists are
    still published."""
    from flows.publish import CURRENT

    record = last_run(out)
    link = Path(out) / CURRENT
    if (record and record.digest == digest and record.settings == settings
            and link.is_symlink() and link.resolve().name == record.lists):
        return record
    return None


def write_record(out: Path, digest: str, settings: str, lists_link: Path) -> None:
    path = Path(out) / RECORD
    temporary = Path(out) / RECORD_BEING_WRITTEN
    temporary.write_text(json.dumps({
        "digest": digest, "settings": settings, "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "lists": lists_link.resolve().name}, indent=2) + "\n")
    os.replace(temporary, path)


def remove_leftovers(out: Path) -> list[str]:
    """Shard folders, and lists folders never published (flows.publish.remove_unpublished), left
    by a killed run. Returns what was removed (names only)."""
    from flows.publish import remove_unpublished
    from models.shards import FOLDER_PREFIX

    out = Path(out)
    removed = []
    for path in sorted(out.glob(f"{FOLDER_PREFIX}*")):
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
    removed += remove_unpublished(out)
    (out / RECORD_BEING_WRITTEN).unlink(missing_ok=True)
    return removed
