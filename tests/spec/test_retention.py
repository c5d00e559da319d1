"""Retention (phm/retention.py) on a hand-made output folder: old lists folders and old rows of
the lists' history and outcomes go, the current lists and what the rules still read stay."""

from __future__ import annotations

import datetime as dt
import json

import duckdb
import pytest

from flows.config import load_config
from phm.exceptions import ConfigError
from phm.retention import RetentionSettings, apply

TODAY = dt.date(2026, 11, 30)


def output_folder(tmp_path):
    for stamp in ("20260101T000000Z", "20260201T000000Z", "20260301T000000Z"):
        folder = tmp_path / f"lists-{stamp}"
        folder.mkdir()
        (folder / "lists_manifest.json").write_text(json.dumps({"index_date": stamp[:8]}))
    (tmp_path / "lists-20260401T000000Z").mkdir()  # a killed run's unfinished folder: not this command's
    (tmp_path / "lists").symlink_to("lists-20260201T000000Z")  # the current lists are not the newest folder
    con = duckdb.connect(str(tmp_path / "phm.duckdb"))
    con.execute("create schema lists")
    con.execute("create table lists.invitations as select * from (values (10, 'a', date '2024-01-01'), "
                "(10, 'b', date '2024-12-30'), (10, 'c', date '2026-11-01')) as t(practice_pseudo_id, pseudonym, "
                "list_date)")
    con.execute("create table lists.invitation_outcomes as select * from (values ('a', date '2024-06-01'), "
                "('c', date '2026-11-10')) as t(pseudonym, outcome_date)")
    return con


def test_old_folders_and_rows_go_and_the_current_lists_and_recent_rows_stay(tmp_path):
    con = output_folder(tmp_path)
    dry = apply(con, tmp_path, RetentionSettings(list_folders=1), today=TODAY, dry_run=True)
    assert dry.folders == ["lists-20260101T000000Z", "lists-20260301T000000Z"]
    assert dry.rows == {"lists.invitations": 1, "lists.invitation_outcomes": 1}
    assert len(list(tmp_path.glob("lists-*"))) == 4 and con.execute(
        "select count(*) from lists.invitations").fetchone() == (3,)  # a dry run removes nothing
    applied = apply(con, tmp_path, RetentionSettings(list_folders=1), today=TODAY)
    assert applied.folders == dry.folders and "removed 2 lists folder(s)" in applied.summary_lines()[0]
    assert sorted(p.name for p in tmp_path.glob("lists-*")) == ["lists-20260201T000000Z", "lists-20260401T000000Z"]
    assert (tmp_path / "lists").resolve().name == "lists-20260201T000000Z"
    assert con.execute("select pseudonym from lists.invitations order by 1").fetchall() == [("b",), ("c",)]
    assert con.execute("select pseudonym from lists.invitation_outcomes").fetchall() == [("c",)]


@pytest.mark.parametrize("text,message", [
    ("[retention]\nhistory_days = 30\n", "retention.history_days: at least 90"),
    ("[retention]\nhistory_days = 100\n[lists]\nrecently_invited_days = 120\n", "retention.history_days: at least 120"),
    ("[retention]\nlist_folders = 0\n", "retention.list_folders: between 1 and 100"),
    ("[retention]\nkeep_forever = true\n", "retention.keep_forever: unknown key"),
    ("[retention]\noutcomes_days = \"two years\"\n", "retention.outcomes_days: must be a whole number"),
])
def test_retention_settings_that_would_break_a_rule_are_refused(tmp_path, text, message):
    (tmp_path / "phm.toml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "phm.toml")


def test_phm_retention_applies_the_configuration(tmp_path, capsys):
    from cli.main import main

    output_folder(tmp_path).close()
    (tmp_path / "phm.toml").write_text("[retention]\nlist_folders = 2\nhistory_days = 365\n")
    assert main(["retention", "--out", str(tmp_path), "--config", str(tmp_path / "phm.toml")]) == 0
    out = capsys.readouterr().out
    assert "removed 1 lists folder(s) (lists-20260101T000000Z)" in out  # the current and the newest are kept
    assert sorted(p.name for p in tmp_path.glob("lists-2026*")) == [
        "lists-20260201T000000Z", "lists-20260301T000000Z", "lists-20260401T000000Z"]
