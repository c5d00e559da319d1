"""Re-identification at the practice: from a list's pseudonyms to the practice's own patients.

Who holds what (docs/lists.md, "Re-identification at the practice"):

- the ICB holds its pseudonymisation key (``PHM_PSEUDONYMISATION_KEY``), the extract and the
  database; it publishes lists that carry pseudonyms and no NHS number, and gives each practice
  its own key once, over a secure channel (``write_practice_key``, ``phm practice-key``);
- the practice holds that key and its own lookup from the extract's ``patient_id`` to NHS
  number (an export from its clinical system). ``reidentify`` computes the pseudonym of each of
  the lookup's patients under the practice's key (phm/pseudonymise.py), keeps the practice's own
  rows of the list and adds their NHS numbers. Nothing it reads or writes goes back to the ICB.

One practice's key recomputes its own patients' pseudonyms and no other practice's: another
practice's rows stay unmatched, as do rows made under another ICB key.

Every input is checked before use, and errors name the file, row and column, never a value (an
NHS number or a key is never echoed). Files written are readable by their owner only and are
never overwritten.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from phm.exceptions import ConfigError, PracticeFileError
from phm.lists import for_people
from phm.pseudonymise import ID_HEX_CHARS, practice_key, pseudonym

KEY_HEX_CHARS = 64  # a practice key: HMAC-SHA256, 32 bytes, written as hex
# practice_pseudo_id as ingest loads it and the lists write it: a whole number without leading
# zeros ("012" would derive another key than "12")
PRACTICE_ID = re.compile(r"0|[1-9][0-9]{0,17}")
PSEUDONYM = re.compile(f"[0-9a-f]{{{ID_HEX_CHARS}}}")
LIST_SUFFIXES = (".csv", ".parquet")
FILE_MODE = 0o600


def check_practice_id(value: str, option: str = "--practice") -> str:
    """The practice id as the lists write it (it names files and derives the key), or a ConfigError."""
    if not isinstance(value, str) or not PRACTICE_ID.fullmatch(value):
        raise ConfigError(f"{option}: a practice id is the list's practice_pseudo_id, a whole number written "
                          "without leading zeros or spaces (e.g. 62394)")
    return value


def nhs_number_is_valid(number: str) -> bool:
    """Ten digits whose last is the modulus-11 check digit of the first nine (weights 10 to 2;
    11 - remainder, 11 read as 0; a result of 10 is never a valid number)."""
    if not re.fullmatch(r"[0-9]{10}", number):
        return False
    total = sum(int(d) * w for d, w in zip(number[:9], range(10, 1, -1), strict=True))
    check = (11 - total % 11) % 11
    return check != 10 and check == int(number[9])


def write_private(path: Path, text: str) -> None:
    """Create ``path`` readable by its owner only; refuse if it exists (never overwrite)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        raise ConfigError(f"{path} exists: phm does not overwrite it; move it away or choose another path") from None
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
    os.chmod(path, FILE_MODE)  # whatever the umask


# --- the ICB side -------------------------------------------------------------------------------

def write_practice_key(icb_key: bytes, practice: str, out: Path) -> Path:
    """Write one practice's key (64 hex characters and a newline) to ``out``, owner-only, never
    over an existing file. The ICB hands this file to that practice alone over a secure channel."""
    check_practice_id(practice)
    out = Path(out)
    if not out.parent.is_dir():
        raise ConfigError(f"--out {out}: {out.parent} is not a folder")
    write_private(out, practice_key(icb_key, practice).hex() + "\n")
    return out


# --- the practice side --------------------------------------------------------------------------

def read_practice_key(path: Path) -> bytes:
    """The key from a file ``phm practice-key`` wrote: 64 hex characters (a final newline allowed).
    The error names the file and says what is wrong, never what the file holds."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"--key-file {path}: no such file") from None
    if os.name == "posix" and path.stat().st_mode & 0o077:
        raise PracticeFileError("is readable by others: the practice key must be readable by its owner only "
                                "(chmod 600 it, and ask the ICB for a new key if others could have read it)",
                                file=str(path))
    text = raw[:-1] if raw.endswith(b"\n") else raw
    text = text[:-1] if text.endswith(b"\r") else text
    if len(text) != KEY_HEX_CHARS:
        raise PracticeFileError(f"holds {len(text)} characters; a practice key is {KEY_HEX_CHARS} hexadecimal "
                                "characters, as phm practice-key writes it (was the file cut short or edited?)",
                                file=str(path))
    if not re.fullmatch(rb"[0-9a-fA-F]+", text):
        raise PracticeFileError(f"is not a practice key: {KEY_HEX_CHARS} hexadecimal characters (0-9, a-f) "
                                "expected, as phm practice-key writes it", file=str(path))
    return bytes.fromhex(text.decode("ascii"))


def _read_csv(path: Path, what: str) -> pl.DataFrame:
    """A CSV as text columns (ids and NHS numbers keep their digits); faults name the file."""
    try:
        return pl.read_csv(path, infer_schema=False, encoding="utf8")
    except FileNotFoundError:
        raise ConfigError(f"{what} {path}: no such file") from None
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError, UnicodeDecodeError) as exc:
        reason = "is empty" if isinstance(exc, pl.exceptions.NoDataError) else "is not a readable UTF-8 CSV file"
        raise PracticeFileError(reason, file=str(path)) from None


def _require(frame: pl.DataFrame, path: Path, columns: tuple[str, ...], what: str) -> None:
    for column in columns:
        if column not in frame.columns:
            raise PracticeFileError(f"required column is missing ({what} needs {', '.join(columns)})",
                                    file=str(path), column=column)


def _first_row(mask: pl.Series) -> int:
    """The 1-based data row (row 1 follows the header) of the first True."""
    return int(mask.arg_true()[0]) + 1


def read_lookup(path: Path) -> pl.DataFrame:
    """The practice's lookup (CSV: ``patient_id``, ``nhs_number``; other columns ignored) as
    ``patient_id`` (the extract's id, as text without leading zeros) and ``nhs_number`` (10 digits;
    spaces, as clinical systems display them, are removed). Refused, naming the file, row and
    column: a missing value, an id that is not a whole number, an NHS number whose check digit is
    wrong, a patient_id or NHS number given twice."""
    path = Path(path)
    frame = _read_csv(path, "--lookup")
    _require(frame, path, ("patient_id", "nhs_number"), "the lookup")
    if frame.height == 0:
        raise PracticeFileError("has a header but no rows", file=str(path))
    ids = frame["patient_id"].str.strip_chars()
    bad = ids.is_null() | ~ids.str.contains(r"^[0-9]{1,18}$")
    if bad.any():
        raise PracticeFileError("patient_id is missing or is not a whole number (the extract's patient id)",
                                file=str(path), row=_first_row(bad), column="patient_id")
    ids = ids.str.strip_chars_start("0").replace("", "0")
    numbers = frame["nhs_number"].str.replace_all(" ", "", literal=True)
    valid = pl.Series([n is not None and nhs_number_is_valid(n) for n in numbers.to_list()])
    if not valid.all():
        raise PracticeFileError("not a valid NHS number (10 digits whose last is the modulus-11 check digit); "
                                "correct the export from the clinical system", file=str(path),
                                row=_first_row(~valid), column="nhs_number")
    lookup = pl.DataFrame({"patient_id": ids, "nhs_number": numbers})
    for column, meaning in (("patient_id", "two rows give one patient_id"),
                            ("nhs_number", "two patients share one NHS number")):
        repeated = lookup[column].is_duplicated() & ~lookup[column].is_first_distinct()
        if repeated.any():
            raise PracticeFileError(f"{meaning}: each patient once, please", file=str(path),
                                    row=_first_row(repeated), column=column)
    return lookup


def read_list(path: Path) -> pl.DataFrame:
    """A PCN's list as phm published it (``<PCN>.csv``, or ``<PCN>.parquet``), every column as text
    (a Parquet list column joined as in the CSV). Needs ``pseudonym`` and ``practice_pseudo_id``."""
    path = Path(path)
    if path.suffix not in LIST_SUFFIXES:
        raise ConfigError(f"--list {path}: a PCN list file is .csv or .parquet")
    if path.suffix == ".csv":
        frame = _read_csv(path, "--list")
    else:
        try:
            frame = pl.read_parquet(path)
        except FileNotFoundError:
            raise ConfigError(f"--list {path}: no such file") from None
        except (pl.exceptions.ComputeError, OSError):
            raise PracticeFileError("is not a readable Parquet file", file=str(path)) from None
        frame = for_people(frame)  # as the CSV joins them (phm/lists.py), any other list column by '; '
        frame = frame.with_columns(
            *[pl.col(c).list.eval(pl.element().cast(pl.String)).list.join("; ") for c, t in frame.schema.items()
              if isinstance(t, pl.List)],
        ).with_columns(pl.all().cast(pl.String))
    _require(frame, path, ("pseudonym", "practice_pseudo_id"), "a PCN list")
    if "nhs_number" in frame.columns:
        raise PracticeFileError("already has an nhs_number column: give the list as the ICB published it",
                                file=str(path), column="nhs_number")
    bad = frame["pseudonym"].is_null() | ~frame["pseudonym"].str.contains(f"^{PSEUDONYM.pattern}$")
    if bad.any():
        raise PracticeFileError(f"not a pseudonym ({ID_HEX_CHARS} hexadecimal characters)", file=str(path),
                                row=_first_row(bad), column="pseudonym")
    return frame


# The ethnicity re-ask worklist (phm/lists.py REASK_COLUMNS) is re-identified as a list is, and
# is known by its reason column: its files are named for it, so a practice never takes its NHS
# numbers for the targeting list's recall group (both used to be practice_<id>_list_with_...).
REASK_COLUMN = "reask_reason"


def is_reask_worklist(rows: pl.DataFrame) -> bool:
    """Whether ``rows`` (as ``read_list`` reads them) are an ethnicity re-ask worklist."""
    return REASK_COLUMN in rows.columns


@dataclass(frozen=True)
class Reidentified:
    practice: str
    rows: pl.DataFrame  # the practice's rows of the list, in the list's order, nhs_number first (null: not found)

    @property
    def reask(self) -> bool:
        """The ethnicity re-ask worklist, not a targeting list."""
        return is_reask_worklist(self.rows)

    @property
    def what(self) -> str:
        return "the ethnicity re-ask worklist" if self.reask else "the list"

    @property
    def listed(self) -> int:
        return self.rows.height

    @property
    def found(self) -> int:
        return self.rows.height - self.not_found

    @property
    def not_found(self) -> int:
        return self.rows["nhs_number"].null_count()

    def summary_lines(self) -> list[str]:
        lines = [f"practice {self.practice}: {self.listed} patients on {self.what}, {self.found} re-identified "
                 f"from the lookup, {self.not_found} not found in it"]
        if self.not_found:
            lines.append(f"  {self.not_found} listed patients are not in the lookup: registered with the practice "
                         "on the list's index date but not in this export (left, died or deducted since, or the "
                         "export is older than the list). Their rows are kept, with no NHS number: check them "
                         "by hand rather than drop them")
        return lines


def reidentify(rows: pl.DataFrame, practice: str, key_of_practice: bytes, lookup: pl.DataFrame,
               list_file: str = "the list") -> Reidentified:
    """The practice's rows of ``rows`` (a PCN list), in their order, with ``nhs_number`` added
    from ``lookup`` where the pseudonym of a lookup patient under ``key_of_practice`` matches."""
    check_practice_id(practice)
    own = rows.filter(pl.col("practice_pseudo_id").str.strip_chars() == practice)
    repeated = own["pseudonym"].is_duplicated() & ~own["pseudonym"].is_first_distinct()
    if repeated.any():
        raise PracticeFileError("a pseudonym appears twice among the practice's rows (one patient listed twice?)",
                                file=list_file, column="pseudonym")
    computed = lookup.select(
        pl.col("patient_id").map_elements(lambda i: pseudonym(key_of_practice, i), return_dtype=pl.String)
        .alias("pseudonym"), "nhs_number")
    # an 80-bit pseudonym shared by two of a practice's patients would mean a broken lookup or key
    if computed["pseudonym"].is_duplicated().any():
        raise PracticeFileError("two of the lookup's patients give one pseudonym: check the lookup",
                                file="the lookup", column="patient_id")
    found = own.join(computed, on="pseudonym", how="left", maintain_order="left")
    return Reidentified(practice, found.select("nhs_number", *own.columns))


def output_paths(out_dir: Path, practice: str, reask: bool = False) -> tuple[Path, Path]:
    """``<out>/practice_<id>_list_with_nhs_numbers.csv`` and ``<out>/practice_<id>_nhs_numbers.txt``;
    for the ethnicity re-ask worklist (``reask``) ``practice_<id>_ethnicity_reask_with_nhs_numbers.csv``
    and ``practice_<id>_ethnicity_reask_nhs_numbers.txt``, never to be taken for the targeting
    list's (the id is checked first: it comes from the command line and names files)."""
    check_practice_id(practice)
    out_dir = Path(out_dir)
    if reask:
        return (out_dir / f"practice_{practice}_ethnicity_reask_with_nhs_numbers.csv",
                out_dir / f"practice_{practice}_ethnicity_reask_nhs_numbers.txt")
    return (out_dir / f"practice_{practice}_list_with_nhs_numbers.csv",
            out_dir / f"practice_{practice}_nhs_numbers.txt")


def write_outputs(result: Reidentified, out_dir: Path) -> tuple[Path, Path]:
    """The practice's list with NHS numbers (CSV, the list's order) and the NHS-number file for the
    clinical system (one 10-digit number a line, no header, the re-identified patients in the
    list's order). Both owner-only; neither overwrites a file."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    listed, numbers = output_paths(out_dir, result.practice, result.reask)
    for path in (listed, numbers):
        if path.exists():
            raise ConfigError(f"{path} exists: phm does not overwrite it; move it away or choose another --out")
    write_private(listed, result.rows.write_csv())
    write_private(numbers, "".join(f"{n}\n" for n in result.rows["nhs_number"].drop_nulls().to_list()))
    return listed, numbers
