"""The stale-data guard (phm/freshness.py) on hand-made dates, and what a stale or refused run
leaves for a reader: the Read me's banner, the manifest, the not-replaced mark."""

from __future__ import annotations

import datetime as dt
import json
import os

import polars as pl
import pytest

from flows.config import load_config
from flows.publish import MANIFEST, NOT_REPLACED, mark_not_replaced, publish, write_run_folder
from phm.exceptions import ConfigError, StaleExtract
from phm.freshness import check_freshness
from phm.lists import ListRun

EXTRACT = dt.date(2026, 3, 31)


def test_an_extract_is_stale_the_day_after_its_age_passes_the_limit():
    on_the_limit = check_freshness(EXTRACT, 45, "refuse", today=EXTRACT + dt.timedelta(days=45))
    assert on_the_limit.age_days == 45 and not on_the_limit.stale
    with pytest.raises(StaleExtract, match=r"dated 2026-03-31, 46 days before today \(2026-05-16\); the limit is "
                       "45 days") as refused:
        check_freshness(EXTRACT, 45, "refuse", today=EXTRACT + dt.timedelta(days=46))
    assert refused.value.exit_code == 10
    marked = check_freshness(EXTRACT, 45, "mark", today=EXTRACT + dt.timedelta(days=46))
    assert marked.stale and marked.manifest() == {"extract_date": "2026-03-31", "extract_age_days": 46,
                                                  "max_extract_age_days": 45}


@pytest.mark.parametrize("text,message", [
    ('[run]\nstale_extract = "ignore"\n', "run.stale_extract: one of refuse, mark"),
    ('[run]\nmax_extract_age_days = 0\n', "run.max_extract_age_days: between 1 and 3650"),
    ('[run]\nmax_extract_age_days = "45"\n', "run.max_extract_age_days: must be"),
])
def test_the_guards_settings_are_checked_by_name(tmp_path, text, message):
    path = tmp_path / "phm.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def one_pcn_run() -> ListRun:
    rows = pl.DataFrame({"pcn_code": ["U00001"], "pseudonym": ["a" * 20], "practice_pseudo_id": [1]})
    return ListRun(rows, pl.DataFrame({"pcn_code": ["U00001"]}),
                   {"U00001": pl.DataFrame({"section": ["total"], "patients": [None]})})


def test_a_stale_list_says_so_first_in_red_with_its_extract_date(tmp_path):
    from openpyxl import load_workbook

    stale = check_freshness(EXTRACT, 45, "mark", today=dt.date(2026, 11, 30)).manifest()
    manifest = {"index_date": "2026-03-31", **stale, "stale": stale}
    book = load_workbook(write_run_folder(one_pcn_run(), tmp_path, manifest) / "U00001_2026-03-31.xlsx")
    first = book["Read me"]["A1"]
    assert first.value == "STALE DATA" and first.fill.fgColor.rgb.endswith("C00000")
    assert "extract dated 2026-03-31, 244 days old" in book["Read me"]["B1"].value
    assert {s.sheet_properties.tabColor.rgb[-6:] for s in book.worksheets} == {"C00000"}
    facts = {row[0]: row[1] for row in book["Read me"].iter_rows(values_only=True)}
    assert facts["extract date"] == "2026-03-31"
    fresh = load_workbook(write_run_folder(one_pcn_run(), tmp_path / "fresh", {"extract_date": "2026-11-20"})
                          / "U00001_2026-11-20.xlsx")
    assert fresh["Read me"]["A1"].value == "what this list is" and fresh["Read me"].sheet_properties.tabColor is None


def test_lists_a_later_run_was_refused_to_replace_are_marked_and_nothing_else_changes(tmp_path):
    assert mark_not_replaced(tmp_path, "stale extract", "nothing published yet") is None
    assert not any(tmp_path.iterdir())
    link = publish(write_run_folder(one_pcn_run(), tmp_path, {"index_date": "2026-03-31"}), tmp_path)
    files = {p.name: p.read_bytes() for p in link.resolve().iterdir()}
    assert mark_not_replaced(tmp_path, "fairness gate refused", "see audit/x.html") == link.resolve()
    after = {p.name: p.read_bytes() for p in link.resolve().iterdir()}
    assert set(after) == set(files) | {NOT_REPLACED}  # no temporary file left
    assert {n: b for n, b in after.items() if n not in (MANIFEST, NOT_REPLACED)} == \
        {n: b for n, b in files.items() if n != MANIFEST}
    marked = json.loads(after[MANIFEST])
    assert marked["index_date"] == "2026-03-31" and marked["not_replaced"]["why"] == "fairness gate refused"
    assert "NOT replaced" in after[NOT_REPLACED].decode() and "see audit/x.html" in after[NOT_REPLACED].decode()
    # the next published run replaces the folder, and the mark with it
    again = publish(write_run_folder(one_pcn_run(), tmp_path, {"index_date": "2026-04-30"}), tmp_path)
    assert not (again / NOT_REPLACED).exists() and "not_replaced" not in json.loads((again / MANIFEST).read_text())


@pytest.mark.slow
def test_pcns_files_written_by_worker_processes_are_the_files_written_here(tmp_path):
    """Publishing writes PCNs' files in worker processes from PARALLEL_FROM_PCNS PCNs on: the
    same bytes (the workbook: the same cells) as this process writes them one after another."""
    from openpyxl import load_workbook

    from flows.publish import PARALLEL_FROM_PCNS

    pcns = [f"U0000{i}" for i in range(PARALLEL_FROM_PCNS)]
    # list columns and a re-ask worklist too: the workers are sent them through Arrow IPC (for_worker)
    rows = pl.DataFrame({"pcn_code": [p for p in pcns for _ in range(3)], "pseudonym": [f"{i:020d}" for i in range(12)],
                         "practice_pseudo_id": [i % 2 for i in range(12)],
                         "reasons": [[f"reason {i}", "another; with its separator"][: 1 + i % 2] for i in range(12)],
                         "set_aside": [[] if i % 3 else ["statin declined"] for i in range(12)]})
    reask = pl.DataFrame({"pcn_code": [p for p in pcns for _ in range(2)], "pseudonym": [f"{i:020d}" for i in range(8)],
                          "on_targeting_list": [i % 2 == 0 for i in range(8)], "reask_reason": ["no ethnicity recorded"] * 8})
    run = ListRun(rows, pl.DataFrame({"pcn_code": pcns}),
                  {p: pl.DataFrame({"section": ["total"], "patients": [3]}) for p in pcns}, reask=reask)
    manifest = {"extract_date": "2026-03-31"}
    here, workers = (write_run_folder(run, tmp_path / name, manifest, workers=n) for name, n in (("here", 1), ("pool", 2)))
    assert sorted(p.name for p in here.iterdir()) == sorted(p.name for p in workers.iterdir())
    for path in here.iterdir():
        if path.suffix == ".xlsx":
            cells = [[[c.value for c in row] for row in sheet.iter_rows()] for sheet in load_workbook(path).worksheets]
            assert cells == [[[c.value for c in row] for row in sheet.iter_rows()]
                             for sheet in load_workbook(workers / path.name).worksheets]
        else:
            assert path.read_bytes() == (workers / path.name).read_bytes(), path.name
    assert (here / "U00003_2026-03-31.csv").read_text().count("\n") == 4  # header and the PCN's 3 rows


def test_worker_processes_write_only_many_pcns_with_many_rows():
    """Spawning the workers costs a second or two each: a few PCNs, or many small ones, are
    written by this process (4 PCNs of 5,000 rows took 1.1-1.4 s here, 2.8-3.1 s with two workers)."""
    from flows.publish import PARALLEL_FROM_PCNS, PARALLEL_FROM_ROWS, default_workers

    assert default_workers(PARALLEL_FROM_PCNS - 1, 10 * PARALLEL_FROM_ROWS) == 1
    assert default_workers(12, PARALLEL_FROM_ROWS - 1) == 1
    assert default_workers(25, 242_000) == (os.cpu_count() or 1)  # the 1M run's 25 PCNs


def test_a_pcns_rows_go_to_a_worker_without_the_rest_of_the_icbs_text():
    """A PCN's rows filtered out of the ICB's still point into the ICB's text buffers, and pickled
    for a worker they carried all of it (flows.publish.for_worker): the worker gets the same
    values, types and order, and only their bytes."""
    import pickle

    from flows.publish import for_worker

    icb = pl.DataFrame({"pcn_code": [f"U{i % 25:05d}" for i in range(50_000)],
                        "pseudonym": [f"{i:020d}" for i in range(50_000)],
                        "reasons": [[f"a reason written out at some length, number {i}"] for i in range(50_000)],
                        "urgent": [i % 7 == 0 for i in range(50_000)]})
    pcn = icb.filter(pl.col("pcn_code") == "U00003").drop("pcn_code")
    sent = for_worker(pcn)
    assert sent.equals(pcn) and sent.schema == pcn.schema
    assert len(pickle.dumps(sent)) * 5 < len(pickle.dumps(pcn))  # a 25th of the rows: a 25th of the bytes, about
    assert for_worker(None) is None
