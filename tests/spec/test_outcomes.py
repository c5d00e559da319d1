"""Outcomes back (phm/outcomes.py) on hand-made tables: a practice's file validated like an
extract (every bad row quarantined with its reason, rows in = loaded + quarantined), and the
uptake of invitations by the groups patients were listed as, suppressed, with intervals."""

from __future__ import annotations

import datetime as dt

import duckdb
import pytest

from phm.exceptions import ConfigError, ExtractError
from phm.outcomes import load_outcomes, uptake

TODAY = dt.date(2026, 5, 1)


def pseudonym(n: int) -> str:
    return f"{n:020x}"


def database(path, listed: list[tuple]) -> None:
    """lists.invitations as published lists leave it: (practice, pseudonym n, list date, group, quintile)."""
    con = duckdb.connect(str(path))
    con.execute("create schema lists")
    con.execute("create table lists.invitations (practice_pseudo_id bigint, pseudonym varchar, list_date date, "
                "urgent boolean, ethnicity_group varchar, imd_quintile integer)")
    con.executemany("insert into lists.invitations values (?, ?, ?::date, false, ?, ?)",
                    [(p, pseudonym(n), d, g, q) for p, n, d, g, q in listed])
    con.close()


def write(path, *rows: str) -> None:
    path.write_text("pseudonym,contacted,attended,declined,date\n" + "".join(r + "\n" for r in rows))


BAD_ROWS = {
    f"{pseudonym(1)},maybe,no,no,2026-04-05": "contacted is missing or is not yes/no",
    f"{pseudonym(1)},yes,no,no,02/04/2026": "date is missing or is not a date (YYYY-MM-DD)",
    "not-a-pseudonym,yes,no,no,2026-04-02": "pseudonym is not a list's pseudonym (20 hexadecimal characters)",
    f"{pseudonym(99)},yes,no,no,2026-04-02": "pseudonym is on no list published from this database",
    f"{pseudonym(2)},yes,no,no,2026-03-01": "date is before the patient's first list",
    f"{pseudonym(2)},yes,no,no,2026-06-01": "date is after the day the file was loaded",
    f"{pseudonym(3)},no,yes,no,2026-04-02": "attended but not contacted",
    f"{pseudonym(3)},yes,yes,yes,2026-04-03": "both attended and declined",
}


def test_every_bad_row_is_quarantined_with_its_reason_and_rows_in_equal_loaded_plus_quarantined(tmp_path):
    db = tmp_path / "phm.duckdb"
    database(db, [(10, n, "2026-03-17", "White", 1) for n in (1, 2, 3, 4)])
    good = [f"{pseudonym(1)},Yes,no,N,2026-04-02", f"{pseudonym(4)},y,Y,n,2026-04-10",
            f"{pseudonym(4)},yes,no,no,2026-04-20",  # the same patient, a later date: both kept
            f"{pseudonym(2)},yes,no,yes,2026-04-03", f"{pseudonym(2)},no,no,no,2026-04-03"]  # twice: the last wins
    write(tmp_path / "outcomes.csv", *good, *BAD_ROWS)
    load = load_outcomes(tmp_path / "outcomes.csv", db, today=TODAY)
    assert (load.rows_in, load.loaded, load.quarantined) == (13, 4, 9)
    assert "  rows in 15 = loaded [suppressed] + quarantined 10" in load.summary_lines()
    con = duckdb.connect(str(db))
    quarantined = dict(con.execute("select source_row, reason from lists.outcomes_quarantine").fetchall())
    for row, (text, reason) in enumerate(BAD_ROWS.items(), start=len(good) + 1):
        assert quarantined[row].startswith(reason), (text, quarantined[row])
    assert quarantined[4].startswith("the same pseudonym and date again")
    kept = con.execute("select pseudonym, contacted, attended, declined, outcome_date from lists.invitation_outcomes "
                       "order by pseudonym, outcome_date").fetchall()
    assert kept == [(pseudonym(1), True, False, False, dt.date(2026, 4, 2)),
                    (pseudonym(2), False, False, False, dt.date(2026, 4, 3)),
                    (pseudonym(4), True, True, False, dt.date(2026, 4, 10)),
                    (pseudonym(4), True, False, False, dt.date(2026, 4, 20))]
    con.close()
    again = load_outcomes(tmp_path / "outcomes.csv", db, today=TODAY)  # the same file twice changes nothing
    con = duckdb.connect(str(db))
    assert (again.loaded, again.quarantined) == (4, 9)
    assert con.execute("select count(*) from lists.invitation_outcomes").fetchone() == (4,)
    assert con.execute("select count(*) from lists.outcomes_quarantine").fetchone() == (9,)


@pytest.mark.parametrize("content,message", [
    ("pseudonym,contacted,attended,date\nabc,yes,no,2026-04-01\n", "column 'declined': required column is missing"),
    ("pseudonym,contacted,attended,declined,date\n", "has a header but no rows"),
    ("", "is empty"),
])
def test_a_file_level_fault_names_the_file_and_column(tmp_path, content, message):
    db = tmp_path / "phm.duckdb"
    database(db, [(10, 1, "2026-03-17", "White", 1)])
    (tmp_path / "o.csv").write_text(content)
    with pytest.raises(ExtractError, match=message) as raised:
        load_outcomes(tmp_path / "o.csv", db, today=TODAY)
    assert "o.csv" in str(raised.value)


def test_outcomes_need_a_database_lists_were_published_from(tmp_path):
    duckdb.connect(str(tmp_path / "phm.duckdb")).close()
    write(tmp_path / "o.csv", f"{pseudonym(1)},yes,yes,no,2026-04-02")
    with pytest.raises(ConfigError, match="no list has been published from this database"):
        load_outcomes(tmp_path / "o.csv", tmp_path / "phm.duckdb", today=TODAY)


def test_uptake_by_group_as_listed_suppressed_with_wilson_intervals_and_silent_practices_left_out(tmp_path):
    db = tmp_path / "phm.duckdb"
    # practice 10: 40 White (20 attend), 20 Black (8 attend); practice 11 returned nothing
    listed = [(10, n, "2026-03-17", "White", 1) for n in range(40)] + \
             [(10, n, "2026-03-17", "Black", 5) for n in range(40, 60)] + \
             [(11, n, "2026-03-17", "Asian", 3) for n in range(60, 90)]
    database(db, listed)
    rows = [f"{pseudonym(n)},yes,{'yes' if n < 20 or 40 <= n < 48 else 'no'},no,2026-04-02" for n in range(60)]
    write(tmp_path / "o.csv", *rows)
    load_outcomes(tmp_path / "o.csv", db, today=TODAY)
    con = duckdb.connect(str(db))
    found = {(r["grouping"], r["group"]): r for r in uptake(con)}
    assert ("ethnicity", "Asian") not in found  # practice 11 returned nothing: not counted as no one attending
    white, black = found[("ethnicity", "White")], found[("ethnicity", "Black")]
    assert (white["listed"], white["attended"], black["listed"], black["attended"]) == (40, 20, 20, 10)  # 8 rounded
    assert white["attended_share"] == {"value": 0.5, "low": 0.352, "high": 0.648}  # Wilson, 95%
    # from the rounded 10 of 20, not the exact 8 (0.4 beside a rounded 10 would give the 8 back)
    assert black["attended_share"]["value"] == 0.5 and not black["withheld"]
    assert found[("all", "all")]["listed"] == 60 and found[("imd quintile", "5")]["contacted"] == 20
    # a group with a count of 1-7 shows no share, and its counts are suppressed
    con.execute("update lists.invitations set ethnicity_group = 'Mixed' where pseudonym in (?, ?, ?)",
                [pseudonym(41), pseudonym(50), pseudonym(51)])  # 3 listed, 1 attended
    mixed = {(r["grouping"], r["group"]): r for r in uptake(con)}[("ethnicity", "Mixed")]
    assert mixed["withheld"] and mixed["attended_share"] is None and mixed["listed"] is None
    con.execute("drop table lists.invitation_outcomes")
    assert uptake(con) is None
