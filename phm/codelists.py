"""The project's codelists (OpenCodelists CSV format) and their manifest.

Codes are validated by pattern when loaded; an error names the file, the line and the code.
"""

from __future__ import annotations

import csv
import re
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from phm.exceptions import CodelistError

CODELIST_DIR = Path(__file__).resolve().parent.parent / "features" / "codelists"
MANIFEST = "manifest.toml"

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
    reference_code_column: str = "code"
    reference_category_column: str | None = None
    unit: str | None = None
    plausible_min: float | None = None
    plausible_max: float | None = None
    path: Path | None = None

    @property
    def is_measurement(self) -> bool:
        return self.unit is not None


def _read_csv(path: Path, system: str) -> tuple[dict[str, str | None], dict[str, str]]:
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
    if not codes:
        raise CodelistError(f"{path}: codelist has no codes")
    return codes, terms


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
        codes, terms = _read_csv(path, system)
        lists[concept] = Codelist(
            concept=concept, system=system, version=str(entry.get("version", "")),
            description=entry.get("description", ""), codes=codes, terms=terms,
            references=tuple(entry.get("references", ())),
            reference_code_column=entry.get("reference_code_column", "code"),
            reference_category_column=entry.get("reference_category_column"),
            unit=entry.get("unit"), plausible_min=entry.get("plausible_min"),
            plausible_max=entry.get("plausible_max"), path=path)
    unlisted = {p.stem for p in Path(directory).glob("*.csv")} - set(lists)
    if unlisted:
        raise CodelistError(f"{manifest_path}: codelist files not in the manifest: {sorted(unlisted)}")
    return lists


@cache
def project_codelists() -> dict[str, Codelist]:
    """The project's own codelists, loaded once per process."""
    return load_codelists(CODELIST_DIR)


def measurement_ranges() -> list[tuple[str, str, float, float]]:
    """(code, concept, min, max) for every measurement code: plausible value ranges."""
    return [
        (code, cl.concept, float(cl.plausible_min), float(cl.plausible_max))
        for cl in project_codelists().values() if cl.is_measurement
        for code in cl.codes
    ]
