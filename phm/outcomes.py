"""Outcomes back: what happened after an invitation, from the practices, and the uptake of
invitations by group.

A practice returns a CSV of its listed patients' outcomes (``phm outcomes --file``): ``pseudonym``
(as on its list), ``contacted``, ``attended``, ``declined`` (yes/no) and ``date``. It is loaded
and validated like an extract: a file-level fault stops with an error naming the file, row and
column; a bad row goes to quarantine (``lists.outcomes_quarantine``) with its reason, and rows
in = rows loaded + rows quarantined, which the command says. The rules (Great Expectations,
``expectations/invitation_outcomes.json``): every value present and well formed, the pseudonym
on a list published from this database, the date neither before the patient's first list nor
after the day of loading, no contradiction (attended without contact, attended and declined),
one row per patient and date (the last wins). Loading the same file again changes nothing: a
patient's row for a date replaces the earlier one.

Uptake (``uptake``) is judged on the groups patients were listed as (``lists.invitations``
keeps the broad ethnic group and IMD quintile at listing): of the patients listed at practices
that have returned outcomes, the share contacted and the share who attended, per broad ethnic
group and IMD quintile, with 95% Wilson intervals (scipy), counts suppressed (1-7, others
rounded to 5) and shares withheld where a count is 1-7. A practice that returned nothing is left
out rather than counted as no one attending. The fairness audit reports it (models/audit_run.py):
equity of uptake is what matters once the list is fair (NHS England's Core20PLUS5 asks for it).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl

from phm.db import SQL_DIR, connect, transaction
from phm.disclosure import SUPPRESSED_BELOW, show, suppress
from phm.exceptions import ConfigError, DiskFull, ExtractError, ValidationError

TABLE = "invitation_outcomes"
COLUMNS = ("pseudonym", "contacted", "attended", "declined", "date")
QUARANTINE = "lists.outcomes_quarantine"
LEVEL = 0.95


@dataclass
class OutcomesLoad:
    file: str
    rows_in: int = 0
    loaded: int = 0
    quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # rows per reason (a row may have several)

    def summary_lines(self) -> list[str]:
        lines = [f"outcomes from {self.file} (counts: 1-7 suppressed, others rounded to 5):",
                 f"  rows in {show(self.rows_in)} = loaded {show(self.loaded)} + quarantined {show(self.quarantined)}"]
        lines += [f"  quarantined: {reason}: {show(n)}" for reason, n in sorted(self.reasons.items())]
        if self.quarantined:
            lines.append(f"  the quarantined rows and their reasons: table {QUARANTINE} (source_file, source_row)")
        return lines


def _check_file(path: Path) -> None:
    from phm.ingest import read_header

    if not path.is_file():
        raise ExtractError("no such file", file=str(path))
    if not path.name.endswith(".csv"):
        raise ExtractError("an outcomes file is a CSV (pseudonym, contacted, attended, declined, date)",
                           file=str(path))
    if path.stat().st_size == 0:
        raise ExtractError("is empty (0 bytes)", file=str(path))
    columns = read_header(path)
    for column in COLUMNS:
        if column not in columns:
            raise ExtractError(f"required column is missing (an outcomes file has {', '.join(COLUMNS)})",
                               file=str(path), column=column)


def _stage(con: duckdb.DuckDBPyConnection, path: Path, today: dt.date) -> int:
    from phm.ingest import _safe_csv_error

    if not con.execute("select count(*) from information_schema.tables where table_schema = 'lists' "
                       "and table_name = 'invitations'").fetchone()[0]:
        raise ConfigError("no list has been published from this database: there is nothing to match outcomes to "
                          "(give the --db of the run that published the lists)")
    con.execute("create or replace table lists.outcome_parameters as select ?::date as loaded_on", [today])
    con.execute("create schema if not exists staging")
    con.execute((SQL_DIR / "staging" / "macros.sql").read_text())
    model = (SQL_DIR / "staging" / f"stg_{TABLE}.sql").read_text()
    columns = ", ".join(f'"{c}"' for c in COLUMNS)  # the contract's names, never the file's
    try:
        con.execute(f"create or replace table staging.stg_{TABLE}_rows as with raw_source as (select {columns} "  # noqa: S608
                    "from read_csv(?, header = true, all_varchar = true, delim = ',', quote = '\"', escape = '\"', "
                    f"strict_mode = true, encoding = 'utf-8')) {model}", [str(path)])
    except duckdb.Error as exc:
        if (full := DiskFull.from_exception(exc)) is not None:
            raise full from None
        summary, line = _safe_csv_error(exc)
        raise ExtractError(f"malformed CSV: {summary}", file=str(path), row=line) from None
    con.execute(f"create or replace view staging.stg_{TABLE} as select rowid + 1 as source_row, * "  # noqa: S608
                f"from staging.stg_{TABLE}_rows")
    rows = con.execute(f"select count(*) from staging.stg_{TABLE}_rows").fetchone()[0]  # noqa: S608
    if rows == 0:
        raise ExtractError("has a header but no rows", file=str(path))
    return rows


def load_outcomes(path: Path, db_path: Path, today: dt.date | None = None, progress=None) -> OutcomesLoad:
    """Validate a practice's outcomes file and load it into ``lists.invitation_outcomes``."""
    from phm.validation import validate_staged_tables

    path = Path(path)
    _check_file(path)
    load = OutcomesLoad(path.name)
    con = connect(db_path)
    try:
        load.rows_in = _stage(con, path, today or dt.datetime.now(dt.UTC).date())
    finally:
        con.close()
    if progress:
        progress(f"validating {path.name}: {show(load.rows_in)} rows")
    outcomes = validate_staged_tables(db_path, [TABLE])  # GX opens its own connection
    con = connect(db_path)
    try:
        _quarantine_and_load(con, outcomes, load)
    finally:
        con.close()
    return load


def _quarantine_and_load(con: duckdb.DuckDBPyConnection, outcomes, load: OutcomesLoad) -> None:
    loaded_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    con.execute("create table if not exists lists.outcomes_quarantine (source_file varchar, source_row bigint, "
                "column_name varchar, rule varchar, reason varchar, loaded_at timestamp)")
    con.execute("create table if not exists lists.invitation_outcomes (practice_pseudo_id bigint, pseudonym varchar, "
                "contacted boolean, attended boolean, declined boolean, outcome_date date, source_file varchar, "
                "loaded_at timestamp)")
    try:
        with transaction(con):
            con.execute("create or replace temp table bad_rows (source_row bigint, column_name varchar, rule varchar, "
                        "reason varchar)")
            for o in outcomes:
                if not o.rows_query:
                    continue
                query = o.rows_query.rstrip(";")
                found = con.execute(f"select count(*) from ({query})").fetchone()[0]  # noqa: S608
                if found != o.unexpected_count:
                    raise ValidationError(f"{TABLE}: Great Expectations counted {o.unexpected_count} rows breaking "
                                          f"'{o.reason}' but the quarantine query found {found}")
                con.execute(f"insert into bad_rows select distinct source_row, ?, ?, ? from ({query})",  # noqa: S608
                            [o.column, o.expectation, o.reason])
                load.reasons[o.reason] = found
            con.execute("delete from lists.outcomes_quarantine where source_file = ?", [load.file])  # sent again
            con.execute("insert into lists.outcomes_quarantine select ?, source_row, column_name, rule, reason, ? "
                        "from bad_rows", [load.file, loaded_at])
            load.quarantined = con.execute("select count(distinct source_row) from bad_rows").fetchone()[0]
            # a patient's row for a date replaces the one loaded before (a file sent twice changes nothing)
            good = (f"select s.* from staging.stg_{TABLE} as s where s.source_row not in "  # noqa: S608
                    "(select source_row from bad_rows)")
            con.execute("delete from lists.invitation_outcomes where (pseudonym, outcome_date) in "  # noqa: S608
                        f"(select pseudonym, outcome_date from ({good}))")
            con.execute("insert into lists.invitation_outcomes select p.practice_pseudo_id, g.pseudonym, g.contacted, g.attended, "  # noqa: S608
                        f"g.declined, g.outcome_date, ?, ? from ({good}) as g join (select pseudonym, "
                        "min(practice_pseudo_id) as practice_pseudo_id from lists.invitations group by pseudonym) as p "
                        "using (pseudonym)", [load.file, loaded_at])
            load.loaded = con.execute(f"select count(*) from ({good})").fetchone()[0]  # noqa: S608
            if load.rows_in != load.loaded + load.quarantined:
                raise ValidationError(f"{load.file}: rows in ({load.rows_in}) != loaded ({load.loaded}) + quarantined "
                                      f"({load.quarantined})")
    finally:
        con.execute("drop table if exists bad_rows")


UPTAKE_PATIENTS = SQL_DIR / "lists" / "uptake_patients.sql"


def _share(k: int, n: int) -> dict:
    """The share k / n as it may leave the pipeline: from the rounded counts, with their Wilson
    interval (from the exact ones, 8 of 20 showed 0.4 beside a rounded 10: the 8 came back)."""
    from scipy.stats import binomtest

    k, n = suppress(k), suppress(n)
    if not n or k is None:
        return {"value": None, "low": None, "high": None}
    interval = binomtest(k, n).proportion_ci(confidence_level=LEVEL, method="wilson")
    return {"value": round(k / n, 4), "low": round(float(interval.low), 4), "high": round(float(interval.high), 4)}


def uptake(con: duckdb.DuckDBPyConnection) -> list[dict] | None:
    """Uptake by broad ethnic group and IMD quintile (and overall), as it may leave the pipeline;
    None when no outcomes were loaded."""
    if not con.execute("select count(*) from information_schema.tables where table_schema = 'lists' "
                       "and table_name = 'invitation_outcomes'").fetchone()[0]:
        return None
    patients = con.execute(UPTAKE_PATIENTS.read_text()).pl()
    if patients.is_empty():
        return None
    rows = []
    groupings = (("all", pl.lit("all")), ("ethnicity", pl.col("ethnicity_group").fill_null("unknown")),
                 ("imd quintile", pl.col("imd_quintile").cast(pl.String).fill_null("unknown")))
    for grouping, key in groupings:
        counts = patients.group_by(key.alias("group")).agg(
            pl.len().alias("listed"), pl.col("contacted").sum(), pl.col("attended").sum(), pl.col("declined").sum()
        ).sort("group")
        for r in counts.iter_rows(named=True):
            exact = [r["listed"], r["contacted"], r["attended"], r["declined"]]
            withheld = any(0 < n < SUPPRESSED_BELOW for n in exact)
            rows.append({"grouping": grouping, "group": r["group"],
                         **{k: suppress(r[k]) for k in ("listed", "contacted", "attended", "declined")},
                         "withheld": withheld,
                         "contacted_share": None if withheld else _share(r["contacted"], r["listed"]),
                         "attended_share": None if withheld else _share(r["attended"], r["listed"])})
    return rows
