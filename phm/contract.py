"""The extract contract: the tables phm reads, written down once and enforced in code.

The layout follows OpenSAFELY ehrQL's core tables, which real GP data is already mapped to.
An extract is a folder holding one file per table (``<table>.csv``, ``<table>.csv.gz`` or
``<table>.parquet``) and ``extract.json`` (see ``ExtractMetadata``).

``docs/extract-contract.md`` is generated from this module (``phm contract``); a test keeps the
two in step, so this file is the only place the contract is defined.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

from phm.exceptions import ExtractError

# Contract types and the DuckDB type each is cast to in the staging layer.
DUCKDB_TYPES = {"integer": "BIGINT", "string": "VARCHAR", "date": "DATE", "float": "DOUBLE"}

SEX_VALUES = ("female", "male", "intersex", "unknown")
IMD_VERSIONS = {"IMD2019": 32_844, "IMD2025": 33_755}  # number of LSOAs ranked
SUPPORTED_SUFFIXES = (".parquet", ".csv", ".csv.gz")

# Codes that become file names (a PCN's list files), MLflow names and keys (the ICB): ODS-style,
# capital letters and digits only, so no value from an extract can name a path outside its folder.
# Ingest quarantines a practice whose code breaks its pattern (expectations/practices.json uses
# the same patterns; a test keeps them in step) and publishing checks again before it writes.
# ``ods_code`` (a GP practice's ODS code: a letter and five digits, e.g. A12345 or Y01234) names
# the practice on its lists and in the files ``phm reidentify`` writes.
CODE_PATTERNS = {"pcn_code": r"[A-Z0-9]{3,8}", "icb_code": r"[A-Z0-9]{3}", "ods_code": r"[A-Z][0-9]{5}"}


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool
    description: str
    optional: bool = False  # the file may leave the column out (read as empty)


@dataclass(frozen=True)
class Table:
    name: str
    grain: str
    description: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()
    optional: bool = False  # an extract may leave the whole table out (it is then loaded empty)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def required_column_names(self) -> list[str]:
        """The columns every file of this table must have (the others may be left out)."""
        return [c.name for c in self.columns if not c.optional]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


def _c(name: str, type_: str, nullable: bool, description: str, optional: bool = False) -> Column:
    assert type_ in DUCKDB_TYPES, type_
    assert nullable or not optional, name  # a column a file may leave out is empty there
    return Column(name, type_, nullable, description, optional)


PATIENTS = Table(
    "patients",
    "one row per patient",
    "Every patient in the extract, alive or dead, registered now or in the past.",
    (
        _c("patient_id", "integer", False, "Pseudonymous patient identifier, unique in this table."),
        _c("sex", "string", False, "One of: " + ", ".join(SEX_VALUES) + "."),
        _c("date_of_birth", "date", False, "Date of birth (ehrQL rounds it to the first of the month)."),
        _c("date_of_death", "date", True, "Date of death, if the patient has died."),
    ),
    key=("patient_id",),
)

PRACTICE_REGISTRATIONS = Table(
    "practice_registrations",
    "one row per registration period",
    "Periods of registration with a GP practice. A patient may have several, and they may overlap.",
    (
        _c("patient_id", "integer", False, "Patient; must exist in patients."),
        _c("start_date", "date", False, "First day of the registration."),
        _c("end_date", "date", True, "Last day of the registration; empty while it is current. A date after "
           "the extract date is read as current (counted in the ingest notes)."),
        _c("practice_pseudo_id", "integer", False, "Practice; must exist in practices."),
    ),
)

CLINICAL_EVENTS = Table(
    "clinical_events",
    "one row per coded event",
    "Coded events in the GP record: diagnoses, measurements (with values), ethnicity, smoking, ...",
    (
        _c("patient_id", "integer", False, "Patient; must exist in patients."),
        _c("date", "date", False, "Date of the event; not after the extract date, death, or before birth."),
        _c("snomedct_code", "string", False, "SNOMED CT concept id (pattern [1-9][0-9]{5,17})."),
        _c("numeric_value", "float", True, "Value of a measurement, in the unit of its code (see codelists)."),
    ),
)

MEDICATIONS = Table(
    "medications",
    "one row per prescription issue",
    "Medicines issued by the practice.",
    (
        _c("patient_id", "integer", False, "Patient; must exist in patients."),
        _c("date", "date", False, "Date of issue; not after the extract date, death, or before birth."),
        _c("dmd_code", "string", False, "dm+d product code (VMP/AMP; pattern [1-9][0-9]{5,17})."),
    ),
)

ADDRESSES = Table(
    "addresses",
    "one row per address period",
    "Where the patient lived, as area-level deprivation only (no address text ever).",
    (
        _c("patient_id", "integer", False, "Patient; must exist in patients."),
        _c("start_date", "date", False, "First day at this address."),
        _c("end_date", "date", True, "Last day at this address; empty while current. A date after the "
           "extract date is read as current (counted in the ingest notes)."),
        _c("lsoa_code", "string", True, "2011/2021 LSOA code (E01xxxxxx / W01xxxxxx); empty if unknown."),
        _c("imd_rounded", "integer", True,
           "IMD rank of the LSOA rounded to the nearest 100 (1 = most deprived); the IMD version is in extract.json."),
        _c("townsend_score", "float", True, "Townsend deprivation score of the area, if the source has it."),
    ),
)

PRACTICES = Table(
    "practices",
    "one row per practice",
    "The practices in the extract, with their PCN and ICB.",
    (
        _c("practice_pseudo_id", "integer", False, "Pseudonymous practice identifier, unique in this table."),
        _c("pcn_code", "string", False,
           f"Primary Care Network ODS code (pattern {CODE_PATTERNS['pcn_code']}, e.g. U12345)."),
        _c("pcn_name", "string", False, "Primary Care Network name."),
        _c("icb_code", "string", False,
           f"Integrated Care Board ODS code (pattern {CODE_PATTERNS['icb_code']}, e.g. QXX)."),
        _c("ods_code", "string", True,
           f"The practice's ODS code (pattern {CODE_PATTERNS['ods_code']}, e.g. A12345), shown on its lists. "
           "Optional column.", optional=True),
        _c("practice_name", "string", True,
           "The practice's name, shown on its lists; must not begin with =, +, - or @ (a spreadsheet would "
           "read it as a formula) nor hold control characters. Optional column.", optional=True),
    ),
    key=("practice_pseudo_id",),
)

# NHS Data Dictionary ETHNIC CATEGORY as hospital data (SUS, HES) sends it: the 16 letters, Z (not
# stated), 99 (not known) and X (not known, in older SUS/HES records).
HOSPITAL_ETHNIC_CATEGORY_VALUES = (*"ABCDEFGHJKLMNPRS", "Z", "99", "X")

HOSPITAL_ETHNICITY = Table(
    "hospital_ethnicity",
    "one row per hospital record of a patient's ethnic category",
    "Optional table: the ethnic category recorded in hospital records (SUS/HES style, NHS Data Dictionary "
    "ETHNIC CATEGORY), as OpenSAFELY supplements primary care with SUS. It fills the gap for a patient "
    "whose GP record states no category (no code, or only 'not recorded'-type codes) and never overrides a "
    "GP code, 'not stated' included (docs/features.md). An extract without it loads as before.",
    (
        _c("patient_id", "integer", False, "Patient; must exist in patients."),
        _c("date", "date", False, "Date of the hospital record (e.g. the admission or attendance); not after "
           "the extract date, death, or before birth."),
        _c("ethnic_category", "string", False, "One of " + ", ".join(HOSPITAL_ETHNIC_CATEGORY_VALUES)
           + ": a letter A-S, Z (not stated), 99 or X (not known; X in older records)."),
    ),
    optional=True,
)

# Load order matters: tables referenced by others come first.
TABLES: dict[str, Table] = {
    t.name: t
    for t in (PRACTICES, PATIENTS, PRACTICE_REGISTRATIONS, ADDRESSES, CLINICAL_EVENTS, MEDICATIONS,
              HOSPITAL_ETHNICITY)
}

METADATA_FILE = "extract.json"


@dataclass(frozen=True)
class ExtractMetadata:
    """``extract.json``: facts about the extract as a whole.

    - ``extract_date`` (ISO date, required): the date the data was extracted; nothing may be later.
    - ``imd_version`` (required): ``IMD2019`` or ``IMD2025``, the version ``imd_rounded`` uses.
    - ``source`` (optional): free text naming the supplier or generator.
    """

    extract_date: dt.date
    imd_version: str
    source: str = ""

    @classmethod
    def read(cls, extract_dir: Path) -> ExtractMetadata:
        path = Path(extract_dir) / METADATA_FILE
        if not path.is_file():
            raise ExtractError(
                f"missing; an extract needs {METADATA_FILE} with extract_date and imd_version "
                "(see docs/extract-contract.md)", file=str(path))
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ExtractError(f"not valid UTF-8 JSON ({exc})", file=str(path)) from None
        if not isinstance(raw, dict):
            raise ExtractError("must be a JSON object", file=str(path))
        try:
            extract_date = dt.date.fromisoformat(str(raw["extract_date"]))
        except KeyError:
            raise ExtractError("required key missing", file=str(path), column="extract_date") from None
        except ValueError:
            raise ExtractError("must be an ISO date such as 2026-03-31", file=str(path),
                               column="extract_date") from None
        imd_version = raw.get("imd_version")
        if imd_version not in IMD_VERSIONS:
            raise ExtractError(f"must be one of {sorted(IMD_VERSIONS)}", file=str(path),
                               column="imd_version")
        return cls(extract_date, imd_version, str(raw.get("source", "")))

    def write(self, extract_dir: Path) -> None:
        body = {"extract_date": self.extract_date.isoformat(), "imd_version": self.imd_version,
                "source": self.source}
        (Path(extract_dir) / METADATA_FILE).write_text(json.dumps(body, indent=2) + "\n")


def find_table_file(extract_dir: Path, table: str) -> Path:
    """The one file holding ``table``; an ExtractError if there is none or more than one."""
    found = [p for s in SUPPORTED_SUFFIXES if (p := Path(extract_dir) / f"{table}{s}").is_file()]
    if not found:
        raise ExtractError(
            f"table {table!r} is missing: expected one of "
            + ", ".join(f"{table}{s}" for s in SUPPORTED_SUFFIXES),
            file=str(Path(extract_dir) / f"{table}.*"))
    if len(found) > 1:
        raise ExtractError(f"table {table!r} is given twice ({', '.join(p.name for p in found)}); "
                           "keep one", file=str(extract_dir))
    return found[0]


def render_markdown() -> str:
    """The contract as Markdown (written to docs/extract-contract.md)."""
    out = [
        "# Extract contract",
        "",
        "Generated from `phm/contract.py` by `phm contract`; do not edit by hand.",
        "",
        "An extract is a folder with one file per table: `<table>.parquet`, `<table>.csv` or "
        "`<table>.csv.gz` (UTF-8, comma-separated, header row, ISO dates `YYYY-MM-DD`, empty "
        "cell = missing), and `extract.json`:",
        "",
        "```json",
        '{"extract_date": "2026-03-31", "imd_version": "IMD2019", "source": "supplier name"}',
        "```",
        "",
        "- `extract_date`: nothing in the extract may be dated later.",
        f"- `imd_version`: one of {', '.join(f'`{k}` ({v:,} LSOAs)' for k, v in IMD_VERSIONS.items())}.",
        "",
        "A column marked optional may be left out of the file (it is then read as empty); every "
        "other column must be in the header. A table marked optional may be left out of the "
        "extract (it is then loaded empty); every other table must be there. "
        "Columns not listed are ignored (and named in the ingest report), and so are files that "
        "are no table here (named too). Rows that break a rule go to quarantine with the rule they "
        "broke; file-level faults stop the ingest.",
        "",
        "**Row numbers** mean one thing everywhere (errors, quarantine, reports): the data row of "
        "the file, counting from 1 for the first row after the header (row 0 is the header). "
        "For Parquet, row 1 is the first row. Errors name the file, row and column, never the "
        "value.",
        "",
    ]
    for t in TABLES.values():
        out += [f"## `{t.name}` ({t.grain}{', optional table' if t.optional else ''})", "", t.description, ""]
        if t.key:
            out += [f"Unique key: `{', '.join(t.key)}`.", ""]
        out += ["| column | type | required | meaning |", "|---|---|---|---|"]
        for c in t.columns:
            out.append(f"| `{c.name}` | {c.type} | {'no' if c.nullable else 'yes'} | {c.description} |")
        out.append("")
    return "\n".join(out)
