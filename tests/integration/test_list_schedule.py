"""Issue 18's schedule simulation: four weekly lists on one database, across a month boundary.

The session's finished run (tests/shared_run.py: 12,000 synthetic patients, 6 practices in 3
PCNs) is copied, and its lists' history replaced by the shape an earlier version left
(``patient_id, list_date``): 10 patients a practice on a list of 3 March. Then four lists are
built the way ``phm run`` builds and records them (phm.lists.build_lists, record_invitations;
a whole pipeline run each would add nothing here), on 17, 24 and 31 March and 7 April, with
capacity 60 a practice a month. Before the third, 5 patients at one practice become urgent (a
reading of 180/120 or more with no diagnosis): capacity for March is already used there.

The data do not change from week to week (the hardest case: every week the same candidates,
more of them than capacity). Checked from the outside, with an oracle that does not use the
list code's capacity rules: every urgent patient is on every list; per practice and calendar
month, the patients listed never exceed capacity except by urgent patients, and only when the
month's capacity was already used; no one is on a list again within ``recently_invited_days``
unless urgent; the summary counts the capacity used and the backlog; a rerun for the same
index date gives the same list and leaves the history as it was.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections import defaultdict

import duckdb
import polars as pl
import pytest

from phm.lists import (
    PATIENT_COLUMNS,
    URGENT_REASONS,
    ListSettings,
    build_lists,
    reasons,
    record_invitations,
)
from phm.pseudonymise import pseudonymise
from tests.shared_run import KEY

pytestmark = pytest.mark.slow

CAPACITY = 60
SETTINGS = ListSettings(capacity_per_practice=CAPACITY, capacity_period="month", recently_invited_days=90)
EARLIER = dt.date(2026, 3, 3)  # the list an earlier version of phm recorded, in its old shape
SEEDED = 10  # patients a practice on it
RUNS = [dt.date(2026, 3, 17), dt.date(2026, 3, 24), dt.date(2026, 3, 31), dt.date(2026, 4, 7)]
NEW_URGENT = 5  # patients at one practice who become urgent before the third run


def candidates(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Every patient with a reason not set aside, whether urgent, and whether palliative care or
    a care home keeps them off any list: from the reasons, not from the list code's rules."""
    found = reasons(con, SETTINGS).filter(pl.col("excluded_by").is_null()).group_by("patient_id").agg(
        pl.col("reason_code").is_in(list(URGENT_REASONS)).any().alias("urgent"))
    patients = con.execute(PATIENT_COLUMNS).pl().select("patient_id", "practice_pseudo_id", "pcn_code",
                                                        "palliative_care", "care_home")
    frame = found.join(patients, on="patient_id").with_columns(
        (pl.col("palliative_care").fill_null(False) | pl.col("care_home").fill_null(False)).alias("never"))
    return frame.with_columns(pseudonymise(frame, KEY.encode()))


def seed_old_history(con: duckdb.DuckDBPyConnection) -> None:
    """lists.invitations as an earlier version left it: patient ids, a list of 3 March."""
    pool = candidates(con).filter(~pl.col("urgent") & ~pl.col("never")).sort("patient_id")
    seeded = pool.group_by("practice_pseudo_id").head(SEEDED).select("patient_id")
    con.execute("drop table if exists lists.invitations")
    con.execute("create table lists.invitations (patient_id bigint, list_date date)")
    con.register("seeded", seeded.to_arrow())
    con.execute("insert into lists.invitations select patient_id, ?::date from seeded", [EARLIER])
    con.unregister("seeded")


def make_urgent(con: duckdb.DuckDBPyConnection, practice: int, listed: set) -> list[int]:
    """NEW_URGENT patients at ``practice``, never listed, become urgent (an undiagnosed 182/121)."""
    pool = candidates(con).filter((pl.col("practice_pseudo_id") == practice) & ~pl.col("urgent") & ~pl.col("never"))
    pool = pool.filter(~pl.struct("practice_pseudo_id", "pseudonym").is_in(
        [{"practice_pseudo_id": p, "pseudonym": s} for p, s in listed]))
    ids = pool.sort("patient_id")["patient_id"].head(NEW_URGENT).to_list()
    con.execute("update marts.mart_hypertension_case_finding set finding = 'possible_undiagnosed_urgent', "
                "finding_reason = 'latest reading 182/121 mmHg (180/120 or over), no hypertension diagnosis', "
                "urgent = true where list_contains(?, patient_id)", [ids])
    return ids


def history(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    return con.execute("select * from lists.invitations").pl()


def test_four_weekly_lists_keep_capacity_per_month_never_reinvite_and_always_list_the_urgent(finished_run, tmp_path):
    db = tmp_path / "phm.duckdb"
    shutil.copyfile(finished_run.db, db)
    con = duckdb.connect(str(db))
    try:
        seed_old_history(con)
        practices = sorted(con.execute("select distinct practice_pseudo_id from marts.mart_patient_features")
                           .pl()["practice_pseudo_id"].to_list())
        pcn_of = dict(con.execute("select distinct practice_pseudo_id, pcn_code from marts.mart_patient_features")
                      .fetchall())
        runs, urgent_due = {}, {}
        for number, day in enumerate(RUNS, start=1):
            if number == 3:
                listed = {(p, s) for p, s in history(con).select("practice_pseudo_id", "pseudonym").rows()}
                made_urgent = make_urgent(con, practices[0], listed)
                assert len(made_urgent) == NEW_URGENT
            due = candidates(con).filter(pl.col("urgent") & ~pl.col("never"))
            urgent_due[day] = {(p, s) for p, s in due.select("practice_pseudo_id", "pseudonym").rows()}
            runs[day] = build_lists(con, SETTINGS, KEY.encode(), day)
            record_invitations(con, runs[day], day)
        seen = history(con)

        # a rerun of the last list: the same list, and the history as it was
        again = build_lists(con, SETTINGS, KEY.encode(), RUNS[-1])
        assert again.lists.equals(runs[RUNS[-1]].lists)
        record_invitations(con, again, RUNS[-1])
        assert history(con).sort(pl.all()).equals(seen.sort(pl.all()))
    finally:
        con.close()

    # the earlier version's history was carried over: each seeded patient under their practice
    assert runs[RUNS[0]].notes and "carried over" in runs[RUNS[0]].notes[0]
    assert seen.filter(pl.col("list_date") == EARLIER).group_by("practice_pseudo_id").len()["len"].to_list() == \
        [SEEDED] * len(practices)

    listings = [(p, s, EARLIER, False) for p, s in seen.filter(pl.col("list_date") == EARLIER)
                .select("practice_pseudo_id", "pseudonym").rows()]
    for day, run in runs.items():
        on_list = run.lists
        # 1. every urgent patient is on every list, marked urgent, and no one else is marked urgent
        urgent = {(p, s) for p, s in on_list.filter(pl.col("urgent")).select("practice_pseudo_id", "pseudonym").rows()}
        assert urgent == urgent_due[day] and urgent, day
        listings += [(p, s, day, u) for p, s, u in on_list.select("practice_pseudo_id", "pseudonym", "urgent").rows()]
    assert seen.height == len(listings)

    # 2. capacity per practice and calendar month: each run takes what is left of the month's
    # capacity (new patients; an urgent patient listed again takes no place), urgent patients first
    by_practice = defaultdict(list)
    for practice, patient, day, urgent in listings:
        by_practice[practice].append((day, patient, urgent))
    for practice, rows in by_practice.items():
        for day in RUNS:
            month = [(d, p, u) for d, p, u in rows if (d.year, d.month) == (day.year, day.month)]
            before = {p for d, p, _ in month if d < day}
            now = [(p, u) for d, p, u in month if d == day]
            new_urgent = sum(u and p not in before for p, u in now)
            new_other = sum(not u and p not in before for p, u in now)
            left = max(0, CAPACITY - len(before))
            # more candidates than capacity every week: what is left is filled, never more
            assert new_other == max(0, left - new_urgent), (practice, day)
            assert len(before) + new_urgent + new_other <= max(CAPACITY, len(before) + new_urgent)
        for year_month in ((2026, 3), (2026, 4)):
            distinct = {p for d, p, _ in rows if (d.year, d.month) == year_month}
            over = NEW_URGENT if (practice, year_month) == (practices[0], (2026, 3)) else 0
            assert len(distinct) == CAPACITY + over, (practice, year_month)  # beyond it only by the new urgent

    # 3. no one on a list again within recently_invited_days, unless urgent
    for practice, rows in by_practice.items():
        for day, patient, urgent in rows:
            if day == EARLIER or urgent:
                continue
            earlier = [d for d, p, _ in rows if p == patient and d < day]
            assert not [d for d in earlier if (day - d).days < SETTINGS.recently_invited_days], (practice, day)

    # 4. the warning: only where urgent patients exceed what is left (the third run, one practice)
    assert [len(run.warnings) for run in runs.values()] == [0, 0, 1, 0]
    assert runs[RUNS[2]].warnings[0].startswith(
        f"PCN {pcn_of[practices[0]]}: practice {practices[0]} has more urgent patients")
    assert "than its capacity for the month (60, of which 60 already used)" in runs[RUNS[2]].warnings[0]

    # 5. the summary: the capacity earlier lists of the month used, and the backlog
    second = runs[RUNS[1]]
    used = dict(second.counts.select("pcn_code", "listed_earlier_in_period").iter_rows())
    per_pcn = defaultdict(int)
    for practice in practices:
        per_pcn[pcn_of[practice]] += CAPACITY  # the first list of March filled each practice's month
    assert used == dict(per_pcn)
    assert (second.counts["over_capacity"] > 0).all()
    assert second.capacity["pcns"] == {pcn: n for pcn, n in per_pcn.items()}
    assert any("the month's capacity 120, 120 of it used by earlier lists" in line for line in second.summary_lines())
    april = runs[RUNS[3]]
    assert (april.counts["listed_earlier_in_period"] == 0).all() and april.capacity["from"] == "2026-04-01"
    for pcn, summary in second.summary.items():
        rows = {(r["section"], r["value"]): r["patients"] for r in summary.iter_rows(named=True)}
        assert rows[("capacity", "used by earlier lists of the month")] == per_pcn[pcn]
        assert rows[("backlog", "over capacity: with a reason, eligible, waiting for a later month")] % 5 == 0
