"""Every error a user of phm can meet, and the exit code the command line gives it.

Messages name the file, row, column or code at fault and say what to do about it. They never
contain patient-level values (a row number is fine; a date of birth is not).
"""

from __future__ import annotations


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


class FairnessGateFailed(PhmError):
    """The fairness audit's gate FAILed: no list leaves the pipeline and 'champion' stays where it
    was. The report says which group and which check; a reviewer can accept it only through the
    configuration (audit.override), which is recorded in MLflow."""

    exit_code = 7


EXIT_CODES: dict[str, int] = {
    cls.__name__: cls.exit_code
    for cls in (PhmError, ConfigError, ExtractError, CodelistError, ValidationError, DatabaseError,
                FairnessGateFailed)
}
