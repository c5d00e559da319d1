"""Load an extract into DuckDB, validate it with Great Expectations, quarantine bad rows.

Layers in the database:
- ``staging.stg_<table>``: during the ingest, each file cast to the contract types by
  ``sql/staging/stg_<table>.sql`` as it is read, numbered by source row (a view of
  ``main.staged_<table>``, written once).
- ``main.<table>``: the rows that passed every rule; what the rest of the pipeline reads. A table
  none of whose rows was quarantined is its staged table, renamed, less the staging model's flag
  columns (DuckDB cannot move a table to another schema); any other is copied from the staged
  rows not in quarantine. The staged tables are gone when the ingest ends, whether or not it
  succeeds.
- ``ingest.quarantine``: every row that did not, with its source row number and the rule.
- ``ingest.table_counts`` / ``ingest.runs``: rows read / loaded / quarantined, per run.

Nothing is dropped silently: for every table, rows read = rows loaded + rows quarantined, and the
ingest fails loudly if that ever does not hold. Re-running replaces every table, so ingesting the
same extract twice gives the same database.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb

from phm.codelists import insert_project_codes, measurement_ranges, project_codelists
from phm.contract import METADATA_FILE, SUPPORTED_SUFFIXES, TABLES, ExtractMetadata, find_table_file
from phm.db import SQL_DIR, check_database_name, create, transaction
from phm.disclosure import show, suppress
from phm.exceptions import ConfigError, DiskFull, ExtractError, ValidationError

STAGED = "main.staged_{table}"  # renamed to main.<table> when published (see above)

# A row whose patient (or practice) row was quarantined cannot be loaded either.
PARENTS = {
    "practice_registrations": [("patient_id", "patients"), ("practice_pseudo_id", "practices")],
    "addresses": [("patient_id", "patients")],
    "clinical_events": [("patient_id", "patients")],
    "medications": [("patient_id", "patients")],
    "hospital_ethnicity": [("patient_id", "patients")],
}


@dataclass(frozen=True)
class IngestSettings:
    """``[ingest]`` of the run configuration.

    ``max_quarantined_share``: a table with more of its rows quarantined than this stops the run
    at ingest, naming the table and the rule most rows broke. A file in another date format or
    with the wrong column types is quarantined row by row; without this stop the run would go
    on and fail later with a misleading message ("the extract covers 0 ICBs").
    """

    max_quarantined_share: float = 0.5


def settings_from(table: dict, where: str = "ingest") -> IngestSettings:
    known = {"max_quarantined_share"}
    for key, value in table.items():
        if key not in known:
            raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(sorted(known))})")
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
            raise ConfigError(f"{where}.{key}: a share between 0 and 1 (default 0.5), not {value!r}")
    return IngestSettings(**table)


@dataclass
class TableReport:
    table: str
    file: str
    rows_read: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    rows_quarantined_with_parent: int = 0  # only because their patient or practice row was
    ignored_columns: list[str] = field(default_factory=list)
    absent_optional_columns: list[str] = field(default_factory=list)  # read as empty
    given: bool = True  # False: an optional table the extract leaves out (loaded empty)


@dataclass
class IngestReport:
    extract_dir: str
    database: str
    extract_date: str
    imd_version: str
    tables: dict[str, TableReport]
    notes: list[str]
    data_docs: str | None
    seconds: float
    codelist_coverage: dict | None = None  # phm.codelist_coverage, counts suppressed
    codelist_coverage_report: str | None = None  # its HTML page (in the Data Docs site when built)
    warnings: list[str] = field(default_factory=list)  # e.g. a concept that must appear matches nobody

    def to_json(self, exact: bool = False) -> str:
        """The report as JSON. Counts are suppressed (1-7 withheld, others rounded to 5) unless
        ``exact``: only the database's own record (``ingest.runs``) keeps them exact."""
        body = asdict(self)
        if not exact:
            for t in body["tables"].values():
                for key in ("rows_read", "rows_loaded", "rows_quarantined", "rows_quarantined_with_parent"):
                    t[key] = suppress(t[key])
                t["quarantine_reasons"] = {r: suppress(n) for r, n in t["quarantine_reasons"].items()}
            body["counts"] = "suppressed: 1-7 withheld (null), others rounded to the nearest 5"
        return json.dumps(body, indent=2) + "\n"

    def summary_lines(self) -> list[str]:
        """For logs and the terminal: counts suppressed (the check that rows read = loaded +
        quarantined is made on the exact counts, in ``publish``)."""
        lines = [f"{'table':<24}{'read':>12}{'loaded':>12}{'quarantined':>13}   (counts: 1-7 suppressed, others rounded to 5)"]
        for t in self.tables.values():
            lines.append(f"{t.table:<24}{show(t.rows_read):>12}{show(t.rows_loaded):>12}{show(t.rows_quarantined):>13}")
            for reason, count in sorted(t.quarantine_reasons.items(), key=lambda kv: -kv[1]):
                lines.append(f"    {show(count):>12}  {reason}")
        lines.append("every table: rows read = rows loaded + rows quarantined (checked on the exact counts)")
        lines += [f"note: {n}" for n in self.notes]
        lines += [f"WARN {w}" for w in self.warnings]
        if self.codelist_coverage_report:
            lines.append(f"codelist coverage (codes found per concept, unknown codes): {self.codelist_coverage_report}")
        return lines


def insert_rows(con: duckdb.DuckDBPyConnection, table: str, rows: list[list | tuple]) -> None:
    """Insert rows with one statement, each column bound as a list parameter.

    DuckDB's executemany runs one statement per row (about 0.1 s each); unnest of bound lists
    keeps values out of the SQL text and is fast.
    """
    if not rows:
        return
    columns = [list(c) for c in zip(*rows, strict=True)]
    unnests = ", ".join("unnest(?)" for _ in columns)
    con.execute(f"insert into {table} select {unnests}", columns)  # noqa: S608 - table is ours


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def _safe_csv_error(exc: Exception) -> tuple[str, int | None]:
    """DuckDB's CSV error without the copy of the offending line (it may hold patient data).

    DuckDB counts file lines (the header is line 1); phm's row numbers are data rows (the first
    row after the header is row 1, as in quarantine), so the line becomes ``line - 1`` and
    DuckDB's own "on Line: N" is taken out of the text rather than contradict it."""
    text = str(exc)
    line = re.search(r"[Ll]ine:? (\d+)", text)
    kept = []
    for part in text.splitlines():
        if part.startswith(("Original Line", "Possible", "*", "  ", "This type of error",
                            "Please", "Consider", "File:")) or not part.strip():
            continue
        part = re.sub(r"\s*(on )?[Ll]ine:? \d+;?", "", part.strip())
        kept.append(re.sub(r"'[^']*'", "'...'", part))
    summary = "; ".join(kept[:2])[:300] or "the file could not be parsed"
    return summary, int(line.group(1)) - 1 if line else None


def read_header(path: Path) -> list[str]:
    """Column names from a CSV header; file-level faults raise ExtractError naming the file."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            first = handle.readline()
    except (OSError, EOFError) as exc:
        raise ExtractError(f"cannot be read ({_first_line(str(exc))})", file=str(path)) from None
    if not first.strip():
        raise ExtractError("is empty: expected a header row", file=str(path))
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ExtractError("header is not UTF-8: re-export the file as UTF-8", file=str(path),
                           row=0) from None
    names = next(csv.reader(io.StringIO(text)))
    names = [n.strip() for n in names]
    if len(names) == 1 and any(sep in names[0] for sep in (";", "\t", "|")):
        raise ExtractError("has one column; it looks delimited by something other than commas "
                           "(files must be comma-separated)", file=str(path))
    seen = set()
    for name in names:
        if name in seen:
            raise ExtractError("column name appears twice in the header", file=str(path),
                               column=name)
        seen.add(name)
    return names


def _parquet_columns(con: duckdb.DuckDBPyConnection, path: Path) -> list[str]:
    try:
        rows = con.execute("describe select * from read_parquet(?)", [str(path)]).fetchall()
    except duckdb.Error as exc:
        raise ExtractError(f"is not a readable Parquet file ({_safe_csv_error(exc)[0]})",
                           file=str(path)) from None
    return [r[0] for r in rows]


def check_file(con: duckdb.DuckDBPyConnection, extract_dir: Path, table: str) -> tuple[TableReport, Path | None]:
    """File-level checks for one table: present, non-empty, readable header, every column. An
    optional table the extract leaves out gives a report with ``given`` False and no path."""
    spec = TABLES[table]
    if spec.optional and not any((Path(extract_dir) / f"{table}{s}").exists() for s in SUPPORTED_SUFFIXES):
        return TableReport(table=table, file="", given=False), None
    path = find_table_file(extract_dir, table)
    report = TableReport(table=table, file=path.name)
    if path.stat().st_size == 0:
        raise ExtractError("is empty (0 bytes)", file=str(path))
    columns = read_header(path) if _is_csv(path) else _parquet_columns(con, path)
    for column in spec.required_column_names:
        if column not in columns:
            raise ExtractError(f"required column is missing (the {table} table needs "
                               f"{', '.join(spec.required_column_names)})", file=str(path), column=column)
    report.ignored_columns = [c for c in columns if c not in spec.column_names]
    report.absent_optional_columns = [c for c in spec.column_names if c not in columns]
    return report, path


def unknown_files(extract_dir: Path) -> list[str]:
    """Files and folders in the extract that are no contract table (a supplier's extra
    ``ons_deaths.csv`` is named, not silently ignored; the generator's ``truth/`` too)."""
    known = {METADATA_FILE} | {f"{t}{s}" for t in TABLES for s in SUPPORTED_SUFFIXES}
    return sorted(p.name + ("/" if p.is_dir() else "") for p in Path(extract_dir).iterdir()
                  if p.name not in known)


def _is_csv(path: Path) -> bool:
    return path.name.endswith((".csv", ".csv.gz"))


def stage(con: duckdb.DuckDBPyConnection, path: Path | None, table: str, absent: list[str] | tuple[str, ...] = ()) -> int:
    """Cast one file into staging with ``sql/staging/stg_<table>.sql``; return rows read.

    The file is cast as it is scanned (CSV as text, so a bad value is kept and flagged rather
    than failing the read) into ``main.staged_<table>``; insertion order is file order, so
    the view ``staging.stg_<table>`` numbers rows by rowid: source_row is the 1-based data row
    of the file, which quarantine reports. ``absent``: optional columns the file leaves out, read
    as empty. ``path`` None: an optional table the extract leaves out, staged with no rows.
    """
    spec = TABLES[table]
    model = (SQL_DIR / "staging" / f"stg_{table}.sql").read_text()
    if path is None:
        assert spec.optional, table
        columns = ", ".join(f'null::varchar as "{c}"' for c in spec.column_names)
        con.execute("create schema if not exists staging")
        con.execute((SQL_DIR / "staging" / "macros.sql").read_text())
        con.execute(f"create or replace table {STAGED.format(table=table)} as "  # noqa: S608 - names are ours
                    f"with raw_source as (select {columns} where false) {model}")
        con.execute(f"create or replace view staging.stg_{table} as "  # noqa: S608
                    f"select rowid + 1 as source_row, * from {STAGED.format(table=table)}")
        return 0
    # Column names come from the contract, never from the file; the path is a bound parameter.
    columns = ", ".join(f'null::varchar as "{c}"' if c in absent else f'"{c}"' for c in spec.column_names)
    reader = ("read_csv(?, header = true, all_varchar = true, delim = ',', quote = '\"', "
              "escape = '\"', strict_mode = true, encoding = 'utf-8')"
              if _is_csv(path) else "read_parquet(?)")
    con.execute("create schema if not exists staging")
    con.execute((SQL_DIR / "staging" / "macros.sql").read_text())
    # Written once, compressed: a table nothing of which is quarantined is published by renaming it.
    try:
        con.execute(
            f"create or replace table {STAGED.format(table=table)} as "  # noqa: S608
            f"with raw_source as (select {columns} from {reader}) {model}", [str(path)])
    except duckdb.Error as exc:
        if (full := DiskFull.from_exception(exc)) is not None:
            raise full from None  # not the extract's fault
        summary, line = _safe_csv_error(exc)
        kind = "CSV" if _is_csv(path) else "Parquet"
        raise ExtractError(f"malformed {kind}: {summary}", file=str(path), row=line) from None
    con.execute(f"create or replace view staging.stg_{table} as "  # noqa: S608
                f"select rowid + 1 as source_row, * from {STAGED.format(table=table)}")
    rows = con.execute(f"select count(*) from {STAGED.format(table=table)}").fetchone()[0]  # noqa: S608
    if rows == 0:
        raise ExtractError("has a header but no rows" if _is_csv(path) else "has no rows",
                           file=str(path))
    _refuse_excel_notation(con, path, table)
    return rows


def _refuse_excel_notation(con: duckdb.DuckDBPyConnection, path: Path, table: str) -> None:
    """Ids that Excel rewrote as 8.30000E+11 have lost their digits: thousands of patients
    would share one id. Stop, naming the first row, rather than quarantine them one by one."""
    for column in TABLES[table].column_names:
        if not column.endswith("_id"):
            continue
        first = con.execute(
            f"select min(source_row) from staging.stg_{table} where {column}_excel_notation"  # noqa: S608
        ).fetchone()[0]
        if first is not None:
            raise ExtractError(
                "identifiers in scientific notation, as Excel writes long numbers (e.g. 8.3E+11): "
                "their digits are lost and different patients would share one id; export the "
                "extract again without opening it in Excel (or format the column as text)",
                file=str(path), row=first, column=column)


def write_run_parameters(con: duckdb.DuckDBPyConnection, metadata: ExtractMetadata) -> None:
    """Values the expectations need, as tables, so no value is ever formatted into SQL."""
    con.execute("create schema if not exists ingest")
    con.execute("create or replace table ingest.run_parameters (extract_date date, imd_version varchar)")
    con.execute("insert into ingest.run_parameters values (?, ?)",
                [metadata.extract_date, metadata.imd_version])
    con.execute("create or replace table ingest.measurement_ranges "
                "(code varchar, concept varchar, plausible_min double, plausible_max double)")
    insert_rows(con, "ingest.measurement_ranges", measurement_ranges())


def quarantine(con: duckdb.DuckDBPyConnection, outcomes, reports: dict[str, TableReport]) -> None:
    """Put every row that broke an expectation into ``ingest.quarantine`` with its reason."""
    con.execute("create or replace table ingest.quarantine (table_name varchar, source_row bigint, "
                "column_name varchar, rule varchar, reason varchar)")
    for o in outcomes:
        if not o.rows_query:
            continue
        found = con.execute(f"select count(*) from ({o.rows_query.rstrip(';')})").fetchone()[0]  # noqa: S608
        if found != o.unexpected_count:
            raise ValidationError(
                f"{o.table}: Great Expectations counted {o.unexpected_count} rows breaking "
                f"'{o.reason}' but the quarantine query found {found}")
        con.execute(
            f"insert into ingest.quarantine select distinct ?, source_row, ?, ?, ? "  # noqa: S608
            f"from ({o.rows_query.rstrip(';')})", [o.table, o.column, o.expectation, o.reason])


def publish(con: duckdb.DuckDBPyConnection, reports: dict[str, TableReport]) -> None:
    """Create ``main.<table>`` from the staged rows not in quarantine, parents first.

    A table none of whose rows (and none of whose parents' rows) were quarantined is published
    straight from its staged rows: the same rows in the same order, without the joins."""
    for table, spec in TABLES.items():
        for column, parent in PARENTS.get(table, []):
            parent_key = TABLES[parent].key[0]
            if not con.execute(f"select count(*) from ingest.quarantined_keys_{parent}").fetchone()[0]:  # noqa: S608
                continue  # no parent row was quarantined: no row can follow one
            reason = f"its {parent} row was quarantined, so {column} has nothing to refer to"
            con.execute(
                f"""insert into ingest.quarantine
                select ?, s.source_row, ?, 'parent_quarantined', ?
                from staging.stg_{table} s
                where s.{column} in (select {parent_key} from ingest.quarantined_keys_{parent})
                  and s.{column} not in (select {parent_key} from main.{parent})
                  and s.source_row not in (
                      select source_row from ingest.quarantine where table_name = ?)""",  # noqa: S608
                [table, column, reason, table])
        if spec.key:
            key = spec.key[0]
            con.execute(
                f"""create or replace table ingest.quarantined_keys_{table} as
                select distinct s.{key} from staging.stg_{table} s
                join ingest.quarantine q on q.table_name = ? and q.source_row = s.source_row
                where s.{key} is not null""",  # noqa: S608
                [table])
        _publish_table(con, table)
        report = reports[table]
        report.rows_loaded = con.execute(f"select count(*) from main.{table}").fetchone()[0]  # noqa: S608
        report.rows_quarantined = con.execute(
            "select count(distinct source_row) from ingest.quarantine where table_name = ?",
            [table]).fetchone()[0]
        report.rows_quarantined_with_parent = con.execute(
            "select count(distinct source_row) from ingest.quarantine where table_name = ? "
            "and rule = 'parent_quarantined'", [table]).fetchone()[0]
        report.quarantine_reasons = dict(con.execute(
            "select reason, count(distinct source_row) from ingest.quarantine where table_name = ? "
            "group by reason order by 2 desc", [table]).fetchall())
        if report.rows_read != report.rows_loaded + report.rows_quarantined:
            raise ValidationError(
                f"{table}: rows read ({report.rows_read}) != loaded ({report.rows_loaded}) + "
                f"quarantined ({report.rows_quarantined}); nothing may be dropped silently")


def _publish_table(con: duckdb.DuckDBPyConnection, table: str) -> None:
    """``main.<table>``: the staged table renamed, less its flag columns, when none of its rows
    was quarantined (no second copy of the rows); else the staged rows not in quarantine."""
    spec, staged = TABLES[table], STAGED.format(table=table)
    staged_columns = [c for (c,) in con.execute(
        "select column_name from duckdb_columns() where schema_name = 'main' and table_name = ? "
        "order by column_index", [staged.split(".")[1]]).fetchall()]
    quarantined = con.execute("select count(*) from ingest.quarantine where table_name = ?", [table]).fetchone()[0]
    con.execute(f"drop view staging.stg_{table}")  # noqa: S608 - our table name
    con.execute(f"drop table if exists main.{table}")  # noqa: S608
    if quarantined or [c for c in staged_columns if c in spec.column_names] != list(spec.column_names):
        con.execute(
            f"""create table main.{table} as
            select {", ".join(spec.column_names)} from (select rowid + 1 as source_row, * from {staged}) s
            anti join (select source_row from ingest.quarantine where table_name = ?) q
            using (source_row)""",  # noqa: S608
            [table])
        con.execute(f"drop table {staged}")
        return
    for column in staged_columns:
        if column not in spec.column_names:
            con.execute(f'alter table {staged} drop column "{column}"')
    con.execute(f"alter table {staged} rename to {table}")


def drop_staged(db_path: Path) -> None:
    """Remove the staged tables (and their views): after a publish, or an ingest that stopped."""
    con = create(db_path)
    try:
        _drop_staged(con)
    finally:
        con.close()


def _drop_staged(con: duckdb.DuckDBPyConnection) -> None:
    for table in TABLES:
        con.execute(f"drop view if exists staging.stg_{table}")  # noqa: S608 - our table names
        con.execute(f"drop table if exists {STAGED.format(table=table)}")  # noqa: S608


def future_ends(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Registrations and address periods ending after the extract date (read as current), among
    the staged rows, for the notes: counted before the staged tables are published."""
    return {table: con.execute(f"select count(*) from staging.stg_{table} "  # noqa: S608 - our table name
                               "where end_date_after_extract").fetchone()[0]
            for table in ("practice_registrations", "addresses")}


def notes(con: duckdb.DuckDBPyConnection, reports: dict[str, TableReport], future_end: dict[str, int]) -> list[str]:
    """Facts about loaded data worth knowing that are not errors (no patient-level values)."""
    out = []
    for r in reports.values():
        if not r.given:
            out.append(f"{r.table}: optional table not in the extract (loaded empty)")
        if r.ignored_columns:
            out.append(f"{r.file}: columns not in the contract were ignored: {', '.join(r.ignored_columns)}")
    overlapping = con.execute(
        """select count(distinct a.patient_id) from main.practice_registrations a
        join main.practice_registrations b on a.patient_id = b.patient_id
        and a.start_date < b.start_date and (a.end_date is null or a.end_date >= b.start_date)""").fetchone()[0]
    if overlapping:
        out.append(f"{show(overlapping)} patients have overlapping registrations (kept; the feature "
                   "layer uses the most recently started one)")
    for table, what in (("practice_registrations", "registrations"), ("addresses", "address periods")):
        future = future_end[table]
        if future:
            out.append(f"{show(future)} {what} end after the extract date: read as current (no end yet)")
    con.execute("create or replace temp table known_codes (code varchar)")
    insert_project_codes(con, "known_codes", "select code from project_codes where system = 'snomedct'")
    outside = con.execute("select count(*) from main.clinical_events where snomedct_code not in "
                          "(select code from known_codes)").fetchone()[0]
    if reports["hospital_ethnicity"].rows_loaded:
        stating = [[code] for code, category in project_codelists()["ethnicity"].codes.items() if category != "99"]
        con.execute("create or replace temp table gp_ethnicity_codes (code varchar)")
        insert_rows(con, "gp_ethnicity_codes", stating)
        fills = con.execute(
            """select count(distinct patient_id) from main.hospital_ethnicity
            where ethnic_category not in ('Z', '99', 'X')
              and patient_id not in (select patient_id from main.clinical_events
                                     where snomedct_code in (select code from gp_ethnicity_codes))""").fetchone()[0]
        out.append(f"hospital_ethnicity: {show(fills)} patients have a hospital-recorded ethnic category and "
                   "none in their GP record: the features take it from there (never over a GP code)")
    total = reports["clinical_events"].rows_loaded
    if total:
        out.append(f"{outside / total:.1%} of clinical events use codes in no project codelist "
                   "(loaded, not used by features)")
    return out


def record_run(con: duckdb.DuckDBPyConnection, report: IngestReport) -> None:
    con.execute("create table if not exists ingest.runs (finished_at timestamp, extract_dir varchar, "
                "extract_date date, report_json varchar)")
    con.execute("create or replace table ingest.table_counts (table_name varchar, rows_read bigint, "
                "rows_loaded bigint, rows_quarantined bigint)")
    insert_rows(con, "ingest.table_counts", [[t.table, t.rows_read, t.rows_loaded, t.rows_quarantined]
                                             for t in report.tables.values()])
    con.execute("insert into ingest.runs values (?, ?, ?, ?)",
                [dt.datetime.now(), report.extract_dir, report.extract_date, report.to_json(exact=True)])


def load_and_stage(extract_dir: Path, db_path: Path, progress=None) -> tuple[ExtractMetadata, dict[str, TableReport]]:
    """Step 1: file checks and staging for every table (then the connection closes)."""
    check_database_name(db_path)
    metadata = ExtractMetadata.read(extract_dir)
    reports = {}
    con = create(db_path)
    try:
        _drop_staged(con)  # an earlier ingest that stopped
        write_run_parameters(con, metadata)
        for table in TABLES:
            if progress:
                progress(f"loading {table}")
            reports[table], path = check_file(con, extract_dir, table)
            reports[table].rows_read = stage(con, path, table, reports[table].absent_optional_columns)
        # a table, not a view: a dozen of the rules join to it, and a view would group the
        # patients file again for each of them
        con.execute("create or replace table staging.patients_agreed as "
                    + (SQL_DIR / "staging" / "patients_agreed.sql").read_text())
    except BaseException:
        _drop_staged(con)  # nothing half-staged is left in main
        raise
    finally:
        con.close()
    return metadata, reports


def quarantine_and_publish(db_path: Path, outcomes, reports: dict[str, TableReport]) -> list[str]:
    """Step 3: quarantine rule-breaking rows, publish the rest, record the run."""
    con = create(db_path)
    try:
        with transaction(con):  # DuckDB may end it itself on a full disk: the error says why, not the rollback
            quarantine(con, outcomes, reports)
            future_end = future_ends(con)
            publish(con, reports)
            found = notes(con, reports, future_end)
    except BaseException:
        con.close()
        drop_staged(db_path)  # rolled back: the staged tables are still there
        raise
    else:
        con.close()
    return found


def staged_tables(db_path: Path) -> list[str]:
    """The contract tables staged with rows to validate: every table, less an optional one the
    extract left out (staged empty; nothing to validate)."""
    con = create(db_path)
    try:
        return [t for t, spec in TABLES.items() if not spec.optional or con.execute(
            f"select count(*) from {STAGED.format(table=t)}").fetchone()[0]]  # noqa: S608 - our table name
    finally:
        con.close()


def validate(db_path: Path, docs_dir: Path | None = None, progress=None):
    """Step 2: run the Great Expectations suites on every staged table."""
    from phm.validation import validate_staged_tables  # GX takes seconds to import

    try:
        return validate_staged_tables(
            Path(db_path), staged_tables(db_path), docs_dir,
            on_table=(lambda t: progress(f"validating {t}")) if progress else None)
    except BaseException:
        drop_staged(db_path)  # nothing unvalidated is left in main
        raise


def finish(extract_dir: Path, db_path: Path, docs_dir: Path | None, metadata: ExtractMetadata,
           reports: dict[str, TableReport], notes_found: list[str], started: float) -> IngestReport:
    """Step 4: the report, recorded in the database."""
    docs = Path(docs_dir) / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html" if docs_dir else None
    unknown = unknown_files(extract_dir)
    if unknown:
        notes_found = [f"not in the contract, so not read: {', '.join(unknown)}", *notes_found]
    from phm.codelist_coverage import coverage_report, link_from_data_docs, write_report

    con = create(db_path)
    try:
        coverage = coverage_report(con, metadata.extract_date)
        # in the Great Expectations Data Docs site (linked from its index) when they are built,
        # else beside the database
        page = write_report(coverage, docs.parent if docs and docs.exists() else Path(db_path).parent)
        if docs and docs.exists():
            link_from_data_docs(docs, page)
        report = IngestReport(
            extract_dir=str(extract_dir), database=str(db_path),
            extract_date=metadata.extract_date.isoformat(), imd_version=metadata.imd_version,
            tables=reports, notes=notes_found, data_docs=str(docs) if docs and docs.exists() else None,
            seconds=round(time.perf_counter() - started, 2), codelist_coverage=coverage.to_dict(),
            codelist_coverage_report=str(page), warnings=list(coverage.warnings))
        record_run(con, report)
    finally:
        con.close()
    return report


def refuse_mostly_quarantined(report: IngestReport, settings: IngestSettings) -> None:
    """Stop when a table is wholly or mostly quarantined by its own rules (rows that follow a
    quarantined patient or practice count against that table, which names the cause). The
    report is already recorded in ``ingest.runs`` and every row in ``ingest.quarantine``."""
    for t in report.tables.values():
        own = t.rows_quarantined - t.rows_quarantined_with_parent
        if t.rows_read and own / t.rows_read > settings.max_quarantined_share:
            rule = max(t.quarantine_reasons.items(), key=lambda kv: kv[1])[0]
            raise ExtractError(
                f"{own / t.rows_read:.0%} of the {t.table} table's rows were "
                f"quarantined, more than ingest.max_quarantined_share ({settings.max_quarantined_share:.0%}); "
                f"most broke the rule '{rule}'. The file is probably in another format or has "
                "columns of the wrong type; ingest.quarantine in the database lists every row",
                file=str(Path(report.extract_dir) / t.file))


# What the steps after the load import: Great Expectations (seconds in a fresh process) and the
# coverage report.
LATER_IMPORTS = ("phm.validation", "phm.codelist_coverage")


def _load_while_importing(extract_dir: Path, db_path: Path, progress=None):
    """load_and_stage in a thread while this thread imports what the later steps need (in a
    fresh process Great Expectations takes seconds to import; DuckDB releases the interpreter
    while it reads the files). Only this thread imports: load_and_stage imports nothing new."""
    import importlib
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="phm-load") as pool:
        staged = pool.submit(load_and_stage, extract_dir, db_path, progress)
        try:
            for name in LATER_IMPORTS:
                importlib.import_module(name)
            return staged.result()  # the load's own error, if it stopped (it left nothing staged)
        except BaseException:
            if staged.exception() is None:  # an import failed or Ctrl-C: waits for the load,
                drop_staged(db_path)        # then leaves nothing unvalidated in main
            raise


def ingest(extract_dir: Path, db_path: Path, docs_dir: Path | None = None, progress=None,
           settings: IngestSettings | None = None) -> IngestReport:
    """Load, validate and publish an extract (the four steps above, in order)."""
    started = time.perf_counter()
    extract_dir, db_path = Path(extract_dir), Path(db_path)
    metadata, reports = _load_while_importing(extract_dir, db_path, progress)
    outcomes = validate(db_path, docs_dir, progress)
    if progress:
        progress("quarantining and publishing")
    notes_found = quarantine_and_publish(db_path, outcomes, reports)
    report = finish(extract_dir, db_path, docs_dir, metadata, reports, notes_found, started)
    refuse_mostly_quarantined(report, settings or IngestSettings())
    return report
