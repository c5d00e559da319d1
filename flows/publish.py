"""Publishing the lists: one folder of files per run, swapped into place in one step.

Every PCN gets ``<PCN>_<extract date>.parquet`` (reasons, actions, reasons set aside and what to measure as
lists of text, for software), ``.csv`` and ``.xlsx`` (the same rows with those lists
joined by a separator no item contains, for people; the workbook is a working document: Read
me, the list, a sheet per practice, the summary; phm/workbook.py), rows grouped by
practice and ranked by priority, and ``<PCN>_<extract date>_summary.csv`` (aggregate, suppressed):
the extract's date is in every name, so a downloaded list says which data it comes from. The run adds
``lists_manifest.json`` (what was published, from which models and audit). Files are written to
a new folder ``<out>/lists-<stamp>`` and only then does the link ``<out>/lists`` move to it, by
an atomic rename: a reader sees the old lists or the new ones, never a mixture, and a run that
fails or is killed before the swap leaves the previous lists in place. The previous folder is
kept (one step back); older ones are removed. Files and folders are readable by their owner
only: they hold pseudonymised patient rows.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import re
import shutil
from pathlib import Path

import polars as pl

from phm.contract import CODE_PATTERNS
from phm.exceptions import ExtractError
from phm.lists import ListRun, for_people
from phm.workbook import write_workbook

FILE_MODE, DIR_MODE = 0o600, 0o700
CURRENT = "lists"
NEXT_LINK = f".{CURRENT}.next"  # the new link, before it replaces CURRENT
MANIFEST = "lists_manifest.json"  # written last: a folder without it was never complete
NOT_REPLACED = "NOT_REPLACED.txt"  # beside the manifest of lists a later run was refused to replace


def _private(path: Path, mode: int) -> None:
    os.chmod(path, mode)


def published_files(folder: Path, kind: str = "csv") -> dict[str, Path]:
    """Each PCN's file of a kind (parquet, csv, summary, xlsx) in a published folder, from its manifest."""
    manifest = json.loads((Path(folder) / MANIFEST).read_text())
    return {pcn: Path(folder) / names[kind] for pcn, names in manifest["files"].items()}


def pcn_file(folder: Path, pcn: str, suffix: str) -> Path:
    """``folder/<pcn><suffix>``, refused unless the PCN code is ODS-style and the file lands in
    ``folder``. Ingest already quarantines practices whose code breaks the pattern; this is the
    last check before a value from an extract becomes a file name (``../x`` or ``/tmp/x`` would
    otherwise write a patient list outside the output folder). The code is not echoed."""
    if not isinstance(pcn, str) or not re.fullmatch(CODE_PATTERNS["pcn_code"], pcn):
        raise ExtractError(f"a PCN code is not an ODS-style code ({CODE_PATTERNS['pcn_code']}); "
                           "refusing to name a list file after it", file="practices", column="pcn_code")
    path = folder / f"{pcn}{suffix}"
    if path.resolve().parent != folder.resolve():
        raise ExtractError("a PCN code would name a file outside the lists folder", file="practices",
                           column="pcn_code")
    return path


FILE_KINDS = {"parquet": ".parquet", "csv": ".csv", "summary": "_summary.csv", "xlsx": ".xlsx",
              "reask": "_ethnicity_reask.csv"}


def dated(extract_date) -> str:
    """``_2026-03-31``: the extract's date in every file name, so a list downloaded or e-mailed on
    says which data it comes from ('' when the manifest has no date: tests of the mechanics)."""
    if not extract_date:
        return ""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(extract_date)):
        raise ExtractError("the extract date must be YYYY-MM-DD before it names a list file", file="extract.json",
                           column="extract_date")
    return f"_{extract_date}"


# From this many PCNs, and this many rows to write (the lists' and re-ask worklists' together),
# their files are written by worker processes, one per core: a PCN's files (mostly its workbook,
# pure Python in openpyxl) are independent of every other PCN's, and at 1M patients (25 PCNs;
# 20,000 listed rows and 222,000 on the re-ask worklists) writing them one after another was the
# longest stage after training. Below either, starting the workers (a second or two each,
# spawned) costs more than it saves: 4 PCNs of 5,000 rows took 1.1-1.4 s here and 2.8-3.1 s with
# two workers (docs/benchmarks.md, 2026-12-01).
PARALLEL_FROM_PCNS = 4
PARALLEL_FROM_ROWS = 20_000


def default_workers(pcns: int, rows: int) -> int:
    """Processes that write the PCNs' files when the caller does not say: one per core for many
    PCNs with many rows, else this process alone."""
    if pcns >= PARALLEL_FROM_PCNS and rows >= PARALLEL_FROM_ROWS:
        return os.cpu_count() or 1
    return 1


def _write_pcn(paths: tuple[Path, ...], pcn: str, rows: pl.DataFrame, summary: pl.DataFrame,
               reask: pl.DataFrame | None, manifest: dict) -> None:
    """One PCN's files (FILE_KINDS order): the list as Parquet and CSV, its summary, its re-ask
    worklist and the workbook."""
    list_parquet, list_csv, summary_csv, workbook, reask_csv = paths
    rows.write_parquet(list_parquet)
    for_people(rows).write_csv(list_csv)
    summary.write_csv(summary_csv)
    if reask is not None:
        reask.write_csv(reask_csv)
    write_workbook(workbook, pcn, for_people(rows), summary, manifest, reask)


def for_worker(frame: pl.DataFrame | None) -> pl.DataFrame | None:
    """``frame`` holding only its own rows' values, to be pickled for a worker process. A frame
    filtered out of a larger one (a PCN's rows out of the ICB's) still points into the larger
    frame's text buffers, and pickling it copies all of them: at 1M patients the 25 PCNs' rows and
    re-ask worklists pickled to 1,272 MB (36 MB as their own), and pickling them took this process
    6.4 s while the two workers waited for them. An Arrow IPC round trip keeps the values, types
    and order and drops what the rows do not use."""
    if frame is None:
        return None
    buffer = io.BytesIO()
    frame.write_ipc(buffer)
    return pl.read_ipc(buffer.getvalue())


def write_run_folder(run: ListRun, out: Path, manifest: dict, workers: int | None = None) -> Path:
    """Write every PCN's files into a new folder under ``out``; returns it (not yet published).
    The manifest gains ``files``: each PCN's file names, for software that reads the folder.
    ``workers``: processes writing PCNs' files at once (default: ``default_workers``); the files
    are the same either way."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    folder = out / f"{CURRENT}-{stamp}"
    date = dated(manifest.get("extract_date"))
    # every file name is checked before anything is written
    files = {pcn: [pcn_file(folder, pcn, date + suffix) for suffix in FILE_KINDS.values()]
             for pcn in run.counts["pcn_code"].to_list()}
    manifest = {**manifest, "files": {pcn: {kind: path.name for kind, path in zip(FILE_KINDS, paths, strict=True)}
                                      for pcn, paths in files.items()}}
    out.mkdir(parents=True, exist_ok=True)
    folder.mkdir(mode=DIR_MODE)
    work = [(tuple(paths), pcn, run.lists.filter(pl.col("pcn_code") == pcn).drop("pcn_code"), run.summary[pcn],
             run.reask.filter(pl.col("pcn_code") == pcn).drop("pcn_code") if run.reask.width else None, manifest)
            for pcn, paths in files.items()]
    if workers is None:
        workers = default_workers(len(work), run.lists.height + run.reask.height)
    workers = max(1, min(workers, len(work)))
    if workers == 1:
        for item in work:
            _write_pcn(*item)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # made ready one by one as they are submitted: the workers start on the first meanwhile
        work = ((paths, pcn, for_worker(rows), summary, for_worker(reask), manifest)
                for paths, pcn, rows, summary, reask, manifest in work)
        # spawned, not forked: this process runs threads (Prefect's), which a fork would copy mid-step
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for done in [pool.submit(_write_pcn, *item) for item in work]:
                done.result()  # the first PCN whose files failed raises here, as it would in this process
    manifest["files"] = {pcn: {kind: name for kind, name in names.items() if (folder / name).exists()}
                         for pcn, names in manifest["files"].items()}  # a run without a re-ask worklist has none
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    for path in folder.iterdir():
        _private(path, FILE_MODE)
    return folder


def publish(folder: Path, out: Path, keep: int = 2) -> Path:
    """Point ``out/lists`` at ``folder`` atomically; keep the newest ``keep`` published folders
    (``[retention] list_folders``: the current one and, with 2, the one before), remove older ones."""
    from phm.retention import old_list_folders

    link = out / CURRENT
    if link.exists() and not link.is_symlink():
        raise FileExistsError(f"{link} exists and is not the link phm publishes through: move it away")
    temporary = out / NEXT_LINK
    if temporary.is_symlink() or temporary.exists():
        temporary.unlink()
    temporary.symlink_to(folder.name)
    os.replace(temporary, link)  # the atomic step
    for old in old_list_folders(out, keep):
        shutil.rmtree(old)
    remove_unpublished(out)  # what a failed write left (one run at a time per folder: flows/runlock.py)
    return link


def remove_unpublished(out: Path) -> list[str]:
    """Lists folders a killed run left unfinished (no manifest) and not published, and a new link
    it never swapped in. Returns the folders' names."""
    link = out / CURRENT
    current = link.resolve() if link.is_symlink() else None
    removed = []
    for path in sorted(out.glob(f"{CURRENT}-*")):
        if path.is_dir() and path.resolve() != current and not (path / MANIFEST).is_file():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    if (out / NEXT_LINK).is_symlink() or (out / NEXT_LINK).exists():
        (out / NEXT_LINK).unlink()
    return removed


def mark_not_replaced(out: Path, why: str, detail: str) -> Path | None:
    """A run was refused (a stale extract, the fairness gate): the lists still published are not
    the newest run's. Their manifest gains ``not_replaced`` (replaced atomically, so a reader sees
    the old manifest or the new one) and ``NOT_REPLACED.txt`` says so in words beside the files.
    The next published run replaces the whole folder, and the mark with it. Returns the folder
    marked, or None when nothing is published yet. ``detail``: the refusal's message (it names
    files and reasons, never a patient-level value)."""
    link = out / CURRENT
    if not link.is_symlink() or not (link.resolve() / MANIFEST).is_file():
        return None
    folder = link.resolve()
    at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["not_replaced"] = {"at": at, "why": why, "detail": detail}
    partial = folder / f".{MANIFEST}.next"
    partial.write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    _private(partial, FILE_MODE)
    os.replace(partial, folder / MANIFEST)
    (folder / NOT_REPLACED).write_text(
        f"These lists were NOT replaced by the run refused at {at} ({why}).\n"
        f"They are still the latest published lists, from the index date {manifest.get('index_date')}, "
        "but not from the newest extract.\n\n"
        f"Why: {detail}\n")
    _private(folder / NOT_REPLACED, FILE_MODE)
    return folder


def discard(folder: Path) -> None:
    """A run that will not publish (gate FAIL, error) removes its own unpublished folder."""
    shutil.rmtree(folder, ignore_errors=True)
