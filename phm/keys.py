"""Rotating the ICB's pseudonymisation key without losing the lists' history or a practice's work.

A new ICB key gives every patient a new pseudonym (phm/pseudonymise.py). Without more, the
lists' history (``lists.invitations``: who was invited when, which decides the recently-invited
rule and the period's capacity) and the outcomes practices returned would stop matching anyone,
and each practice would lose the contacted-on, outcome and notes it typed into its workbook.

``phm rotate-key`` (ICB side; the new key in ``PHM_PSEUDONYMISATION_KEY[_<ICB>]``, the old one in
``PHM_PSEUDONYMISATION_KEY_PREVIOUS[_<ICB>]``):

1. for every practice in the database, maps each registered patient's old pseudonym to the new
   one, and writes the practice's own map (``practice_<id>_pseudonym_map.csv``: old_pseudonym,
   new_pseudonym; owner-only, never over an existing file), which the ICB hands to that practice
   alone with its new key (phm practice-key). A map holds pseudonyms only: without the practice's
   lookup it identifies no one, and it says nothing about another practice's patients;
2. moves the history and the returned outcomes to the new pseudonyms, in one transaction, and
   records the rotation (``lists.key_rotations``: when, how many rows moved; never a key).

``phm carry-over`` (practice side): copies the team's columns of a workbook made under the old key
onto the same patients' rows of a new workbook, through the practice's map.

Patients no longer registered cannot be mapped (their pseudonyms are computed from the database's
registered patients): their history rows keep the old pseudonym and match no one, as they would
on any list.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl

from phm.db import transaction
from phm.disclosure import show
from phm.exceptions import ConfigError, PracticeFileError
from phm.pseudonymise import KEY_VARIABLE, icb_key, pseudonymise
from phm.reidentify import check_practice_id, write_private

PREVIOUS = f"{KEY_VARIABLE}_PREVIOUS"
MOVED = (("lists", "invitations"), ("lists", "invitation_outcomes"))  # tables keyed by (practice, pseudonym)
WORKFLOW = ("contacted_on", "outcome", "notes")  # the team's columns of a workbook (phm/workbook.py)


def previous_key(environ: dict[str, str] | None = None, icb: str | None = None) -> bytes:
    """The key being retired: ``PHM_PSEUDONYMISATION_KEY_PREVIOUS_<ICB>`` or ``..._PREVIOUS``."""
    import os

    environ = environ if environ is not None else os.environ
    names = ([f"{PREVIOUS}_{icb}"] if icb else []) + [PREVIOUS]
    name = next((n for n in names if environ.get(n)), None)
    if name is None:
        raise ConfigError(f"{' or '.join(names)} is not set: rotating needs the key being retired there and the new "
                          f"key in {KEY_VARIABLE}")
    from phm.pseudonymise import check_key

    return check_key(name, environ[name])


@dataclass
class Rotation:
    maps: list[Path] = field(default_factory=list)
    practices: int = 0
    patients: int = 0
    moved: dict[str, int] = field(default_factory=dict)  # table -> rows moved to the new pseudonyms

    def summary_lines(self) -> list[str]:
        return [f"key rotated for {self.practices} practice(s), {show(self.patients)} registered patients "
                "(counts: 1-7 suppressed, others rounded to 5)",
                *(f"  {table}: {show(n)} rows moved to the new pseudonyms" for table, n in self.moved.items()),
                f"  {len(self.maps)} practice maps (old_pseudonym, new_pseudonym) in {self.maps[0].parent if self.maps else '-'}: "
                "give each practice its own, with its new key (phm practice-key); its team carries its work "
                "over with phm carry-over"]


def pseudonym_map(con: duckdb.DuckDBPyConnection, old: bytes, new: bytes) -> pl.DataFrame:
    """(practice_pseudo_id, old_pseudonym, new_pseudonym) for every registered patient."""
    patients = con.execute("select patient_id, practice_pseudo_id from marts.mart_patient_features").pl()
    return patients.select(
        "practice_pseudo_id",
        pseudonymise(patients, old).alias("old_pseudonym"),
        pseudonymise(patients, new).alias("new_pseudonym"))


def rotate(con: duckdb.DuckDBPyConnection, old: bytes, new: bytes, out_dir: Path) -> Rotation:
    if old == new:
        raise ConfigError(f"{PREVIOUS} and {KEY_VARIABLE} hold the same key: nothing to rotate")
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir}: no such folder")
    mapping = pseudonym_map(con, old, new)
    practices = sorted(mapping["practice_pseudo_id"].unique().to_list())
    paths = {p: out_dir / f"practice_{check_practice_id(str(p))}_pseudonym_map.csv" for p in practices}
    taken = [str(path) for path in paths.values() if path.exists()]
    if taken:  # before anything changes: never over an existing map
        raise ConfigError(f"{taken[0]} exists: phm does not overwrite it; move it away or choose another --out")
    rotation = Rotation(practices=len(practices), patients=mapping.height)
    con.register("pseudonym_map", mapping.to_arrow())
    try:
        with transaction(con):
            _move(con, rotation)
    finally:
        con.unregister("pseudonym_map")
    for practice, path in paths.items():
        own = mapping.filter(pl.col("practice_pseudo_id") == practice).select("old_pseudonym", "new_pseudonym")
        write_private(path, own.write_csv())
        rotation.maps.append(path)
    return rotation


def _move(con: duckdb.DuckDBPyConnection, rotation: Rotation) -> None:
    """The history and outcomes to the new pseudonyms (``pseudonym_map``), and the rotation's record."""
    for schema, table in MOVED:
        if not con.execute("select count(*) from information_schema.tables where table_schema = ? "
                           "and table_name = ?", [schema, table]).fetchone()[0]:
            continue
        name = f"{schema}.{table}"  # from MOVED, never from data
        rotation.moved[name] = con.execute(
            f"select count(*) from {name} as t join pseudonym_map as m "  # noqa: S608
            "on t.practice_pseudo_id = m.practice_pseudo_id and t.pseudonym = m.old_pseudonym").fetchone()[0]
        con.execute(f"update {name} as t set pseudonym = m.new_pseudonym from pseudonym_map as m "  # noqa: S608
                    "where t.practice_pseudo_id = m.practice_pseudo_id and t.pseudonym = m.old_pseudonym")
    con.execute("create table if not exists lists.key_rotations (rotated_at timestamp, practices integer, "
                "patients bigint, history_rows_moved bigint, outcome_rows_moved bigint)")
    con.execute("insert into lists.key_rotations values (?, ?, ?, ?, ?)",
                [dt.datetime.now(dt.UTC).replace(tzinfo=None), rotation.practices, rotation.patients,
                 rotation.moved.get("lists.invitations", 0), rotation.moved.get("lists.invitation_outcomes", 0)])


def rotate_database(db_path: Path, out_dir: Path, icb: str | None = None) -> Rotation:
    from phm.db import connect

    old, new = previous_key(icb=icb), icb_key(icb=icb)
    con = connect(db_path)
    try:
        return rotate(con, old, new, out_dir)
    finally:
        con.close()


# --- the practice side -------------------------------------------------------------------------

def read_map(path: Path) -> dict[str, str]:
    try:
        frame = pl.read_csv(path, infer_schema_length=0)
    except FileNotFoundError:
        raise ConfigError(f"--map {path}: no such file") from None
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError):
        raise PracticeFileError("is not a pseudonym map (CSV: old_pseudonym, new_pseudonym)", file=str(path)) from None
    for column in ("old_pseudonym", "new_pseudonym"):
        if column not in frame.columns:
            raise PracticeFileError("required column is missing (a map has old_pseudonym, new_pseudonym)",
                                    file=str(path), column=column)
    return dict(frame.select("old_pseudonym", "new_pseudonym").iter_rows())


@dataclass
class CarriedOver:
    rows_with_work: int = 0  # rows of the old workbook with anything in the team's columns
    carried: int = 0
    not_on_new_list: int = 0  # the patient is on no sheet of the new workbook (e.g. seen, not listed again)
    unmapped: int = 0  # the old pseudonym is not in the map (the patient left the practice)

    def summary_lines(self) -> list[str]:
        return [f"carried the team's columns ({', '.join(WORKFLOW)}) of {self.carried} of {self.rows_with_work} rows "
                f"with work: {self.not_on_new_list} not on the new list, {self.unmapped} not in the map "
                "(no longer registered)"]


def _team_work(book) -> dict[str, tuple]:
    """pseudonym -> the team's columns, from every list sheet of a workbook (the first non-empty)."""
    work = {}
    for sheet in book.worksheets:
        header = [c.value for c in sheet[1]]
        if "pseudonym" not in header or not set(WORKFLOW) <= set(header):
            continue
        where = [header.index(c) for c in ("pseudonym", *WORKFLOW)]
        for row in sheet.iter_rows(min_row=2, values_only=True):
            values = tuple(row[i] for i in where[1:])
            if row[where[0]] and any(v not in (None, "") for v in values):
                work.setdefault(row[where[0]], values)
    return work


def carry_over(old_workbook: Path, new_workbook: Path, map_path: Path, out: Path) -> CarriedOver:
    """The team's columns of ``old_workbook`` onto the same patients in ``new_workbook``, saved as ``out``."""
    from openpyxl import load_workbook

    if Path(out).exists():
        raise ConfigError(f"--out {out} exists: phm does not overwrite it")
    mapping = read_map(map_path)
    old_work = _team_work(load_workbook(old_workbook, read_only=True))
    book = load_workbook(new_workbook)
    result = CarriedOver(rows_with_work=len(old_work))
    wanted = {mapping[p]: values for p, values in old_work.items() if p in mapping}
    result.unmapped = len(old_work) - len(wanted)
    placed = set()
    for sheet in book.worksheets:
        header = [c.value for c in sheet[1]]
        if "pseudonym" not in header or not set(WORKFLOW) <= set(header):
            continue
        columns = [header.index(c) + 1 for c in WORKFLOW]
        pseudonym_column = header.index("pseudonym") + 1
        for r in range(2, sheet.max_row + 1):
            values = wanted.get(sheet.cell(r, pseudonym_column).value)
            if values is None:
                continue
            for column, value in zip(columns, values, strict=True):
                sheet.cell(r, column).value = value
            placed.add(sheet.cell(r, pseudonym_column).value)
    result.carried = len(placed)
    result.not_on_new_list = len(wanted) - len(placed)
    book.save(out)
    Path(out).chmod(0o600)
    return result
