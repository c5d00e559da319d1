"""The project's codelists (OpenCodelists CSV format) and their manifest.

Codes are validated by pattern when loaded; an error names the file, the line and the code.
Each list covers its national reference lists (``manifest.toml`` names them): a reference code
left out is in ``exclusions/<concept>.csv`` with its reason, and a code from elsewhere names its
source in the list's ``source`` column (tests/test_codelists.py checks both directions).
"""

from __future__ import annotations

import csv
import re
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from phm.exceptions import CodelistError

CODELIST_DIR = Path(__file__).resolve().parent.parent / "features" / "codelists"
MANIFEST = "manifest.toml"
EXCLUSIONS_DIR = "exclusions"
UNUSED_REFERENCES = "unused_references.toml"

# SNOMED CT and dm+d identifiers are both SCTIDs: no leading zero, 6 to 18 digits.
CODE_PATTERNS = {
    "snomedct": re.compile(r"[1-9][0-9]{5,17}"),
    "dmd": re.compile(r"[1-9][0-9]{5,17}"),
}
CODE_PATTERN_SQL = "^[1-9][0-9]{5,17}$"


@dataclass(frozen=True)
class Codelist:
    concept: str
    system: str
    version: str
    description: str
    codes: dict[str, str | None]  # code -> category (None where the list has no categories)
    terms: dict[str, str]
    references: tuple[str, ...] = ()
    sources: dict[str, str] = field(default_factory=dict)  # code -> where it comes from, if not a reference
    provenance: str = ""
    reference_code_column: str = "code"
    reference_category_column: str | None = None
    unit: str | None = None
    plausible_min: float | None = None
    plausible_max: float | None = None
    expected_prevalence: float | None = None  # a low share of adults who must match (phm.codelist_coverage)
    path: Path | None = None

    @property
    def is_measurement(self) -> bool:
        return self.unit is not None


def _read_csv(path: Path, system: str) -> tuple[dict[str, str | None], dict[str, str], dict[str, str]]:
    pattern = CODE_PATTERNS[system]
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CodelistError(f"{path}: codelist file is missing") from None
    except UnicodeDecodeError as exc:
        raise CodelistError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames or "code" not in reader.fieldnames or "term" not in reader.fieldnames:
        raise CodelistError(f"{path}, line 1: header must have columns 'code' and 'term' "
                            f"(found {reader.fieldnames})")
    has_category = "category" in reader.fieldnames
    codes: dict[str, str | None] = {}
    terms: dict[str, str] = {}
    sources: dict[str, str] = {}
    for line, row in enumerate(reader, start=2):
        code = (row.get("code") or "").strip()
        if not pattern.fullmatch(code):
            raise CodelistError(
                f"{path}, line {line}: code {code!r} is not a valid {system} identifier "
                f"(expected {pattern.pattern})")
        if code in codes:
            raise CodelistError(f"{path}, line {line}: code {code} is listed twice")
        category = (row.get("category") or "").strip() or None if has_category else None
        if has_category and category is None:
            raise CodelistError(f"{path}, line {line}: code {code} has no category")
        codes[code] = category
        terms[code] = (row.get("term") or "").strip()
        if (row.get("source") or "").strip():
            sources[code] = row["source"].strip()
    if not codes:
        raise CodelistError(f"{path}: codelist has no codes")
    return codes, terms, sources


def load_codelists(directory: Path = CODELIST_DIR) -> dict[str, Codelist]:
    """Every codelist named in ``manifest.toml``, validated."""
    manifest_path = Path(directory) / MANIFEST
    try:
        manifest = tomllib.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CodelistError(f"{manifest_path}: codelist manifest is missing") from None
    except tomllib.TOMLDecodeError as exc:
        raise CodelistError(f"{manifest_path}: not valid TOML ({exc})") from None
    lists = {}
    for concept, entry in manifest.items():
        system = entry.get("system")
        if system not in CODE_PATTERNS:
            raise CodelistError(f"{manifest_path}: [{concept}] system must be one of "
                                f"{sorted(CODE_PATTERNS)}, not {system!r}")
        path = Path(directory) / f"{concept}.csv"
        codes, terms, sources = _read_csv(path, system)
        lists[concept] = Codelist(
            concept=concept, system=system, version=str(entry.get("version", "")),
            description=entry.get("description", ""), codes=codes, terms=terms,
            references=tuple(entry.get("references", ())), sources=sources,
            provenance=" ".join(str(entry.get("provenance", "")).split()),
            reference_code_column=entry.get("reference_code_column", "code"),
            reference_category_column=entry.get("reference_category_column"),
            unit=entry.get("unit"), plausible_min=entry.get("plausible_min"),
            plausible_max=entry.get("plausible_max"), expected_prevalence=entry.get("expected_prevalence"),
            path=path)
    unlisted = {p.stem for p in Path(directory).glob("*.csv")} - set(lists)
    if unlisted:
        raise CodelistError(f"{manifest_path}: codelist files not in the manifest: {sorted(unlisted)}")
    return lists


def load_exclusions(concept: str, directory: Path = CODELIST_DIR) -> dict[str, dict[str, str]]:
    """Reference codes deliberately left out of ``concept``: code -> {reference file: reason}."""
    path = Path(directory) / EXCLUSIONS_DIR / f"{concept}.csv"
    if not path.exists():
        return {}
    out: dict[str, dict[str, str]] = {}
    reader = csv.DictReader(path.read_text(encoding="utf-8").splitlines())
    if not reader.fieldnames or not {"code", "reference", "reason"} <= set(reader.fieldnames):
        raise CodelistError(f"{path}, line 1: header must have columns 'code', 'reference' and 'reason' "
                            f"(found {reader.fieldnames})")
    for line, row in enumerate(reader, start=2):
        code, reference, reason = (row.get(k, "").strip() for k in ("code", "reference", "reason"))
        if not CODE_PATTERNS["snomedct"].fullmatch(code):
            raise CodelistError(f"{path}, line {line}: code {code!r} is not a valid identifier")
        if not reference or not reason:
            raise CodelistError(f"{path}, line {line}: code {code} needs the reference it comes from and a reason")
        out.setdefault(code, {})[reference] = reason
    return out


def unused_references(directory: Path = CODELIST_DIR) -> dict[str, str]:
    """Reference files no concept covers, with the reason (``unused_references.toml``)."""
    path = Path(directory) / UNUSED_REFERENCES
    if not path.exists():
        return {}
    try:
        return {k: str(v) for k, v in tomllib.loads(path.read_text(encoding="utf-8")).items()}
    except tomllib.TOMLDecodeError as exc:
        raise CodelistError(f"{path}: not valid TOML ({exc})") from None


@cache
def project_codelists() -> dict[str, Codelist]:
    """The project's own codelists, loaded once per process."""
    return load_codelists(CODELIST_DIR)


@cache
def project_codes_table():
    """Every code of the project's codelists as an Arrow table (concept, system, code, category; in
    the lists' order), made once per process, for DuckDB to read as a table: each ingest fills two
    temporary tables with these 15,700 codes, and each feature build ``ref.codelist_codes``; from
    bound Python lists (``phm.ingest.insert_rows``) that took 75-100 ms a table; from this one,
    about 20 ms. Arrow tables cannot be changed in place."""
    import pyarrow as pa

    rows = [(cl.concept, cl.system, code, category)
            for cl in project_codelists().values() for code, category in cl.codes.items()]
    return pa.table({name: pa.array([r[k] for r in rows], pa.string())
                     for k, name in enumerate(("concept", "system", "code", "category"))})


def insert_project_codes(con, table: str, select: str) -> None:
    """Fill ``table`` from ``select`` run over ``project_codes``, the project's codes as one table
    (concept, system, code, category; ``project_codes_table``). ``select`` is the project's own
    SQL, never built from data."""
    con.register("project_codes", project_codes_table())
    try:
        con.execute(f"insert into {table} {select}")
    finally:
        con.unregister("project_codes")


def measurement_ranges() -> list[tuple[str, str, float, float]]:
    """(code, concept, min, max) for every measurement code: plausible value ranges."""
    return [
        (code, cl.concept, float(cl.plausible_min), float(cl.plausible_max))
        for cl in project_codelists().values() if cl.is_measurement
        for code in cl.codes
    ]


@dataclass(frozen=True)
class Coverage:
    """How one project list compares with its national reference lists, in both directions."""
    concept: str
    reference_codes: int          # distinct codes over the concept's reference files
    included: int                 # reference codes in the list
    excluded: int                 # reference codes left out with a documented reason
    undocumented_gaps: tuple[str, ...]    # reference codes neither included nor excluded
    stale_exclusions: tuple[str, ...]     # exclusions naming a code the reference does not have, or that the list has
    from_elsewhere: int           # list codes in no reference, each naming its source
    unsourced: tuple[str, ...]    # list codes in no reference and with no source

    @property
    def complete(self) -> bool:
        return not (self.undocumented_gaps or self.stale_exclusions or self.unsourced)


def read_reference(path: Path, code_column: str = "code") -> set[str]:
    """The codes of one reference CSV (OpenCodelists format)."""
    with open(path, encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if code_column not in (reader.fieldnames or ()):
            raise CodelistError(f"{path}, line 1: no column {code_column!r} (found {reader.fieldnames})")
        return {row[code_column].strip() for row in reader if row[code_column].strip()}


def coverage(cl: Codelist, reference_dir: Path, directory: Path = CODELIST_DIR) -> Coverage:
    """Compare ``cl`` with its reference files in ``reference_dir`` (both directions)."""
    exclusions = load_exclusions(cl.concept, directory)
    per_file = {name: read_reference(Path(reference_dir) / name, cl.reference_code_column) for name in cl.references}
    reference = set().union(*per_file.values()) if per_file else set()
    gaps = sorted(code for name, codes in per_file.items() for code in codes
                  if code not in cl.codes and name not in exclusions.get(code, {}))
    stale = sorted(code for code, by_file in exclusions.items()
                   if code in cl.codes or any(code not in per_file.get(name, ()) for name in by_file))
    elsewhere = [code for code in cl.codes if code not in reference]
    return Coverage(
        concept=cl.concept, reference_codes=len(reference),
        included=sum(code in cl.codes for code in reference),
        excluded=sum(code not in cl.codes and code in exclusions for code in reference),
        undocumented_gaps=tuple(dict.fromkeys(gaps)), stale_exclusions=tuple(stale),
        from_elsewhere=sum(code in cl.sources for code in elsewhere),
        unsourced=tuple(code for code in elsewhere if code not in cl.sources))
