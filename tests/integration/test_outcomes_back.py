"""Outcomes back on the suite's finished run: a practice's file for its listed patients, loaded
with ``phm outcomes`` into a copy of the run's database, and the uptake by group it gives.

Two practices return outcomes for every patient on their lists, with uptake planted by group:
White patients attend 3 in 5, everyone else 1 in 5 (in each group, in the list's order). A third practice returns nothing and is
left out of the denominators. The uptake must find the planted gap (the intervals of the White
group and of the rest do not overlap) and count rows in = loaded + quarantined.
"""

from __future__ import annotations

import shutil

import duckdb
import polars as pl
import pytest

from phm.outcomes import uptake

pytestmark = pytest.mark.slow


def test_a_practices_outcomes_load_and_the_uptake_finds_the_planted_gap(finished_run, tmp_path, capsys):
    from cli.main import main

    db = tmp_path / "phm.duckdb"
    shutil.copyfile(finished_run.db, db)
    with duckdb.connect(str(db), read_only=True) as con:
        listed = con.execute("select practice_pseudo_id, pseudonym, ethnicity_group, min(list_date) as listed_on "
                             "from lists.invitations group by all order by all").pl()
    practices = listed["practice_pseudo_id"].unique().sort().to_list()
    returning = listed.filter(pl.col("practice_pseudo_id").is_in(practices[:2]))
    rows, seen = [], {}
    for r in returning.iter_rows(named=True):
        # counted within each group, so every group gets its planted share whatever the list's
        # order (a count over all rows gave 'Not stated' none of its 12 when the list changed)
        i = seen[r["ethnicity_group"]] = seen.get(r["ethnicity_group"], -1) + 1
        attends = (i % 5 < 3) if r["ethnicity_group"] == "White" else (i % 5 == 0)
        rows.append(f"{r['pseudonym']},yes,{'yes' if attends else 'no'},{'no' if attends else 'yes'},"
                    f"{r['listed_on'].isoformat()}")
    rows += ["0123456789abcdef0123,yes,yes,no,2026-03-31",  # on no list: quarantined
             f"{returning['pseudonym'][0]},no,yes,no,2026-04-01"]  # attended, never contacted: quarantined
    (tmp_path / "outcomes.csv").write_text("pseudonym,contacted,attended,declined,date\n" + "\n".join(rows) + "\n")

    assert main(["outcomes", "--file", str(tmp_path / "outcomes.csv"), "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "rows in " in out and "quarantined: pseudonym is on no list" in out
    assert not any(p in out for p in returning["pseudonym"].to_list())  # no pseudonym printed
    with duckdb.connect(str(db), read_only=True) as con:
        loaded = con.execute("select count(*) from lists.invitation_outcomes").fetchone()[0]
        quarantined = con.execute("select count(*) from lists.outcomes_quarantine").fetchone()[0]
        found = {(r["grouping"], r["group"]): r for r in uptake(con)}
    assert (loaded, quarantined) == (returning.height, 2) and loaded + quarantined == len(rows)
    everyone = found[("all", "all")]
    assert everyone["listed"] == pytest.approx(returning.height, abs=2)  # the silent practice is not counted
    white = found[("ethnicity", "White")]["attended_share"]
    others = [r["attended_share"] for (grouping, group), r in found.items()
              if grouping == "ethnicity" and group != "White" and not r["withheld"]]
    assert others and all(o["high"] < white["low"] for o in others), (white, others)
    assert 0.5 < white["value"] < 0.7 and all(0.1 < o["value"] < 0.3 for o in others)
