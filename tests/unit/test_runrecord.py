"""The extract's content digest, the record of the last published run, and leftovers."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from pathlib import Path

import pytest

from flows.config import RunConfig
from flows.runrecord import (
    extract_digest,
    remove_leftovers,
    settings_digest,
    unchanged_since,
    write_record,
)
from phm.exceptions import ExtractError


def extract(tmp_path):
    folder = tmp_path / "extract"
    folder.mkdir()
    (folder / "extract.json").write_text('{"extract_date": "2026-03-31"}')
    (folder / "patients.csv").write_text("patient_id,sex\n1,female\n")
    (folder / "practices.parquet").write_bytes(b"PAR1 not really")
    return folder


def test_the_digest_follows_the_contract_files_content_and_nothing_else(tmp_path):
    folder = extract(tmp_path)
    first = extract_digest(folder)
    assert first == extract_digest(folder)
    (folder / "truth").mkdir()
    (folder / "truth" / "planted.json").write_text("{}")
    (folder / "notes.txt").write_text("not part of the extract")
    assert extract_digest(folder) == first
    (folder / "patients.csv").write_text("patient_id,sex\n1,male\n")
    assert extract_digest(folder) != first
    (folder / "patients.csv").write_text("patient_id,sex\n1,female\n")
    assert extract_digest(folder) == first
    (folder / "patients.csv").rename(folder / "addresses.csv")  # same bytes, another table
    assert extract_digest(folder) != first


def test_an_empty_folder_is_an_extract_error_naming_it(tmp_path):
    with pytest.raises(ExtractError, match="no extract files"):
        extract_digest(tmp_path)


def test_unchanged_only_while_the_recorded_lists_are_the_published_ones(tmp_path):
    out = tmp_path / "out"
    (out / "lists-1").mkdir(parents=True)
    (out / "lists").symlink_to("lists-1")
    assert unchanged_since(out, "abc", "s1") is None  # no record yet
    write_record(out, "abc", "s1", out / "lists")
    assert unchanged_since(out, "abc", "s1").lists == "lists-1"
    assert unchanged_since(out, "def", "s1") is None  # a changed extract is processed
    assert unchanged_since(out, "abc", "s2") is None  # ... and changed settings
    (out / "lists-2").mkdir()
    os.replace(out / "lists", out / "lists.tmp")
    (out / "lists").symlink_to("lists-2")
    assert unchanged_since(out, "abc", "s1") is None  # someone else's lists are published now
    (out / "last_run.json").write_text("{not json")
    assert unchanged_since(out, "abc", "s1") is None
    (out / "last_run.json").write_text('{"digest": "abc", "finished_at": "x", "lists": "lists-2"}')
    assert unchanged_since(out, "abc", "s1") is None  # an older record, without settings: run in full


KEY = b"k" * 32


def test_settings_that_decide_the_lists_change_the_digest_and_paths_do_not():
    base = RunConfig()
    digest = settings_digest(base, KEY)
    assert digest == settings_digest(RunConfig(), KEY)
    changed = [
        dataclasses.replace(base, lists=dataclasses.replace(base.lists, capacity_per_practice=150)),
        dataclasses.replace(base, audit=dataclasses.replace(base.audit, min_patients=50)),
        dataclasses.replace(base, run=dataclasses.replace(base.run, index_date=dt.date(2026, 1, 1))),
        dataclasses.replace(base, run=dataclasses.replace(base.run, seed=7)),
    ]
    assert all(settings_digest(c, KEY) != digest for c in changed)
    assert settings_digest(base, b"another key, also long enough....") != digest  # new key: new ids
    same_lists = dataclasses.replace(base, run=dataclasses.replace(
        base.run, out=Path("/elsewhere"), executor="dask", dask_workers=3, tracking_uri="http://127.0.0.1:5000",
        compare_variants=True))  # comparison models never rank a list
    assert settings_digest(same_lists, KEY) == digest
    assert KEY.decode() not in digest


def test_leftovers_of_a_killed_run_are_removed_and_published_lists_kept(tmp_path):
    out = tmp_path / "out"
    for name in ("lists-1", "lists-2", "lists-3", ".shards-abc"):
        (out / name).mkdir(parents=True)
    (out / "lists-1" / "lists_manifest.json").write_text("{}")  # previous, complete
    (out / "lists-2" / "lists_manifest.json").write_text("{}")  # current
    (out / "lists-3" / "U1.csv").write_text("half written")  # never published
    (out / ".shards-abc" / "shard-all.parquet").write_text("patient rows")
    (out / "lists").symlink_to("lists-2")
    (out / ".lists.next").symlink_to("lists-3")
    assert remove_leftovers(out) == [".shards-abc", "lists-3"]
    assert sorted(p.name for p in out.iterdir()) == ["lists", "lists-1", "lists-2"]
