"""Every error a user of phm can meet, and the exit code the command line gives it.

Messages name the file, row, column or code at fault and say what to do about it. They never
contain patient-level values (a row number is fine; a date of birth is not).
"""

from __future__ import annotations

import errno
import re


class PhmError(Exception):
    """Base class: a problem the user can fix. The CLI prints ``str(error)`` on one line."""

    exit_code = 1


class ConfigError(PhmError):
    """A command-line option or configuration value is invalid."""

    exit_code = 2


class ExtractError(PhmError):
    """A file-level fault in an extract: missing table or column, unreadable, empty, malformed.

    Ingest stops: loading a partial extract would silently drop rows.
    """

    exit_code = 3

    def __init__(self, message: str, *, file: str | None = None, column: str | None = None,
                 row: int | None = None) -> None:
        where = []
        if file:
            where.append(f"file {file}")
        if row is not None:
            where.append(f"row {row}")
        if column:
            where.append(f"column {column!r}")
        prefix = (", ".join(where) + ": ") if where else ""
        super().__init__(prefix + message)
        self.file, self.column, self.row = file, column, row


class PracticeFileError(ExtractError):
    """A file at the practice is unusable for re-identification (phm reidentify): its key file,
    its lookup from patient_id to NHS number, or the list it was sent. Named with the file, row and
    column, never a value: an NHS number or a key is never echoed."""

    exit_code = 3


class CodelistError(PhmError):
    """A codelist file or its manifest is malformed (names the file, line and code)."""

    exit_code = 4


class ValidationError(PhmError):
    """The validation machinery disagreed with itself (e.g. GX counted rows we could not find).

    Never raised for bad data rows: those go to quarantine.
    """

    exit_code = 5


class DatabaseError(PhmError):
    """The DuckDB file cannot be opened or written (locked by another run, read-only, full disk)."""

    exit_code = 6


class ServerUnavailable(PhmError):
    """A server phm must talk to does not answer as one (e.g. the Prefect server at
    PREFECT_API_URL for ``phm deploy``): nothing answers there, or something that is not its API.
    The message names the setting and its value (without any credentials in it), never a secret."""

    exit_code = 1


class FairnessGateFailed(PhmError):
    """The fairness gate's decision refused an outcome (a FAIL, or a WARN no named reviewer signed
    off): no list leaves the pipeline and 'champion' stays where it was. The report says which
    group and which check; a named reviewer can sign it off ([[audit.signoff]] in the
    configuration, or phm review), which is recorded in MLflow and the lists' manifest."""

    exit_code = 7


class TooLittleData(PhmError):
    """The extract loaded, but holds too little to do the work: no registered patients of an ICB,
    patients in only one practice (models are validated on held-out practices), or no patient
    with an outcome in the training or validation practices. Not a configuration fault: a larger
    or later extract is the fix."""

    exit_code = 8


class DiskFull(PhmError):
    """No space left where phm writes (database, MLflow store, lists): named with the path.
    The published lists are untouched; free space and run again."""

    exit_code = 9

    @classmethod
    def from_exception(cls, exc: BaseException, outputs: str = "") -> DiskFull | None:
        """The full disk behind ``exc`` (an OSError with ENOSPC anywhere in its chain, or a
        library's message saying so: DuckDB and MLflow wrap it), or None. Without this a full
        disk read as a malformed extract (exit 3) or an internal error (exit 70). ``outputs``:
        where the command writes (its output options), named when the error has no path, as when
        ``write()`` or ``close()`` of an open file fails, which Python reports without one."""
        seen: set[int] = set()
        while exc is not None and id(exc) not in seen:
            seen.add(id(exc))
            if isinstance(exc, cls):
                return exc
            text = str(exc)
            if (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "No space left on device" in text:
                path = getattr(exc, "filename", None) or next(iter(re.findall(r'"(/[^"]+)"', text)), None)
                where = f" writing {path}" if path else (f" writing phm's output ({outputs})" if outputs else "")
                return cls(f"no space left on the device{where}: the published lists are untouched; "
                           "free some space (or point --out at a larger disk) and run again")
            exc = exc.__cause__ or exc.__context__
        return None


class StaleExtract(PhmError):
    """The extract is older than ``[run] max_extract_age_days`` and ``[run] stale_extract`` is
    "refuse": no list is produced, and the published lists stay, marked as not replaced
    (phm/freshness.py)."""

    exit_code = 10


EXIT_CODES: dict[str, int] = {
    cls.__name__: cls.exit_code
    for cls in (PhmError, ConfigError, ExtractError, PracticeFileError, CodelistError, ValidationError, DatabaseError,
                ServerUnavailable, FairnessGateFailed, TooLittleData, DiskFull, StaleExtract)
}
