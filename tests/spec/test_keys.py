"""Rotating the ICB's key (phm/keys.py) on hand-made tables: the history and returned outcomes move
to the new pseudonyms, each practice gets its own map and nothing else, and a team's work in a
workbook made under the old key carries over to the new one."""

from __future__ import annotations

import datetime as dt
import os
import stat

import duckdb
import polars as pl
import pytest

from phm.exceptions import ConfigError
from phm.keys import carry_over, pseudonym_map, rotate
from phm.lists import for_people
from phm.pseudonymise import practice_key, pseudonym
from phm.workbook import write_workbook

OLD, NEW = b"the retiring ICB key, 0123456789abcdef", b"the new ICB key after rotation, fedcba9876543210"


def database() -> duckdb.DuckDBPyConnection:
    """Patients 1-3 at practice 10, 4-5 at practice 11; the history and one outcome under the old key."""
    con = duckdb.connect()
    con.execute("create schema marts")
    con.execute("create schema lists")
    con.execute("create table marts.mart_patient_features as select * from (values (1, 10), (2, 10), (3, 10), "
                "(4, 11), (5, 11)) as t(patient_id, practice_pseudo_id)")
    con.execute("create table lists.invitations (practice_pseudo_id bigint, pseudonym varchar, list_date date, "
                "urgent boolean, ethnicity_group varchar, imd_quintile integer)")
    old = {i: pseudonym(practice_key(OLD, str(p)), i) for i, p in ((1, 10), (2, 10), (4, 11))}
    for i, practice in ((1, 10), (2, 10), (4, 11)):
        con.execute("insert into lists.invitations values (?, ?, '2026-03-02', false, 'White', 2)", [practice, old[i]])
    con.execute("insert into lists.invitations values (10, 'someone who left long ago', '2026-01-05', false, "
                "'White', 2)")
    con.execute("create table lists.invitation_outcomes (practice_pseudo_id bigint, pseudonym varchar, "
                "contacted boolean, attended boolean, declined boolean, outcome_date date, source_file varchar, "
                "loaded_at timestamp)")
    con.execute("insert into lists.invitation_outcomes values (10, ?, true, true, false, '2026-03-10', 'f', now())",
                [old[1]])
    return con


def test_rotation_moves_the_history_and_outcomes_and_gives_each_practice_only_its_own_map(tmp_path):
    con = database()
    rotation = rotate(con, OLD, NEW, tmp_path)
    new = {i: pseudonym(practice_key(NEW, str(p)), i) for i, p in ((1, 10), (2, 10), (3, 10), (4, 11), (5, 11))}
    history = set(con.execute("select practice_pseudo_id, pseudonym from lists.invitations").fetchall())
    assert history == {(10, new[1]), (10, new[2]), (11, new[4]), (10, "someone who left long ago")}
    assert con.execute("select pseudonym from lists.invitation_outcomes").fetchall() == [(new[1],)]
    assert rotation.moved == {"lists.invitations": 3, "lists.invitation_outcomes": 1}
    assert con.execute("select practices, patients, history_rows_moved from lists.key_rotations").fetchall() == \
        [(2, 5, 3)]
    maps = {p.name: pl.read_csv(p) for p in rotation.maps}
    assert sorted(maps) == ["practice_10_pseudonym_map.csv", "practice_11_pseudonym_map.csv"]
    assert set(maps["practice_11_pseudonym_map.csv"]["new_pseudonym"]) == {new[4], new[5]}  # its patients only
    assert not set(maps["practice_10_pseudonym_map.csv"]["new_pseudonym"]) & {new[4], new[5]}
    for path in rotation.maps:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert OLD.hex() not in path.read_text() and practice_key(NEW, "10").hex() not in path.read_text()
    with pytest.raises(ConfigError, match="exists: phm does not overwrite"):  # checked before anything moves
        rotate(con, NEW, OLD, tmp_path)
    assert set(con.execute("select practice_pseudo_id, pseudonym from lists.invitations").fetchall()) == history
    with pytest.raises(ConfigError, match="the same key"):
        rotate(con, NEW, NEW, tmp_path / "x")


def workbook(path, pseudonyms: list[str]) -> None:
    rows = pl.DataFrame({"pseudonym": pseudonyms, "practice_pseudo_id": [10] * len(pseudonyms),
                         "reasons": [["a reason"]] * len(pseudonyms)})
    write_workbook(path, "U00001", for_people(rows), pl.DataFrame({"section": ["total"]}), {})


def test_a_teams_work_carries_over_to_the_list_made_under_the_new_key(tmp_path):
    from openpyxl import load_workbook

    con = database()
    mapping = pseudonym_map(con, OLD, NEW).filter(pl.col("practice_pseudo_id") == 10)
    mapping.select("old_pseudonym", "new_pseudonym").write_csv(tmp_path / "map.csv")
    old_of = dict(zip(mapping["new_pseudonym"], mapping["old_pseudonym"], strict=True))
    new_1, new_2, new_3 = mapping["new_pseudonym"].to_list()
    workbook(tmp_path / "old.xlsx", [old_of[new_1], old_of[new_2], "f" * 20])
    book = load_workbook(tmp_path / "old.xlsx")
    sheet = book["list"]
    header = [c.value for c in sheet[1]]
    sheet.cell(2, header.index("contacted_on") + 1).value = dt.date(2026, 3, 9)
    sheet.cell(2, header.index("outcome") + 1).value = "booked"
    sheet.cell(3, header.index("notes") + 1).value = "prefers a call after 5pm"
    sheet.cell(4, header.index("notes") + 1).value = "moved away"  # not in the map: left the practice
    book.save(tmp_path / "old.xlsx")
    workbook(tmp_path / "new.xlsx", [new_3, new_1])  # patient 2 is not on the new list
    result = carry_over(tmp_path / "old.xlsx", tmp_path / "new.xlsx", tmp_path / "map.csv", tmp_path / "out.xlsx")
    assert (result.rows_with_work, result.carried, result.not_on_new_list, result.unmapped) == (3, 1, 1, 1)
    for name in ("list", "practice 10"):
        sheet = load_workbook(tmp_path / "out.xlsx")[name]
        header = [c.value for c in sheet[1]]
        rows = {r[header.index("pseudonym")]: r for r in sheet.iter_rows(min_row=2, values_only=True)}
        assert rows[new_1][header.index("outcome")] == "booked"
        assert rows[new_1][header.index("contacted_on")].date() == dt.date(2026, 3, 9)
        assert rows[new_3][header.index("outcome")] is None
    with pytest.raises(ConfigError, match="exists"):
        carry_over(tmp_path / "old.xlsx", tmp_path / "new.xlsx", tmp_path / "map.csv", tmp_path / "out.xlsx")


def test_phm_rotate_key_reads_both_keys_from_the_environment_only(tmp_path, monkeypatch, capsys):
    from cli.main import main
    from phm.pseudonymise import KEY_VARIABLE

    db = tmp_path / "phm.duckdb"
    con = database()
    con.execute(f"attach '{db}' as target")  # the hand-made database, as a file
    con.execute("copy from database memory to target")
    con.close()
    (tmp_path / "maps").mkdir()
    monkeypatch.setenv(KEY_VARIABLE, NEW.decode())
    monkeypatch.delenv(f"{KEY_VARIABLE}_PREVIOUS", raising=False)
    assert main(["rotate-key", "--db", str(db), "--out", str(tmp_path / "maps")]) == 2
    assert "PHM_PSEUDONYMISATION_KEY_PREVIOUS is not set" in capsys.readouterr().err
    monkeypatch.setenv(f"{KEY_VARIABLE}_PREVIOUS", OLD.decode())
    assert main(["rotate-key", "--db", str(db), "--out", str(tmp_path / "maps")]) == 0
    out = capsys.readouterr().out
    assert "key rotated for 2 practice(s)" in out and OLD.decode() not in out and NEW.decode() not in out
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == ["practice_10_pseudonym_map.csv",
                                                                    "practice_11_pseudonym_map.csv"]
