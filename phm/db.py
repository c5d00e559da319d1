"""The database gateway: the one place that opens the project's DuckDB file, knows where the SQL
models are, and says what is wrong when a database is missing, locked or not yet ingested.

``create`` is for ingest (it makes the file and its folder); every later stage opens an existing,
ingested database with ``connect``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from phm.exceptions import ConfigError, DatabaseError

SQL_DIR = Path(__file__).resolve().parents[1] / "sql"  # staging/, intermediate/, marts/, labels/, lists/

# DuckDB names a database after its file, and a name equal to a schema makes every
# ``<schema>.<table>`` ambiguous (``phm ingest --db ingest.duckdb`` failed as an internal error, and
# ``staging.duckdb`` as a "malformed Parquet" extract). The schemas phm creates, the SQL layers,
# and DuckDB's own catalogs.
RESERVED_DATABASE_NAMES = frozenset({"ingest", "staging", "intermediate", "marts", "labels", "lists",
                                     "features", "models", "ref", "main", "memory", "system", "temp",
                                     "history"})


def check_database_name(db_path: Path) -> None:
    """Refuse, before any work, a database file whose name DuckDB would confuse with a schema."""
    name = Path(db_path).stem.lower()
    if name in RESERVED_DATABASE_NAMES:
        raise ConfigError(f"--db {db_path}: DuckDB names a database after its file, and "
                          f"{name!r} is also one of phm's schemas; choose another file name "
                          "(e.g. phm.duckdb)")


def _open(db_path: Path, read_only: bool, make_folder: bool = False) -> duckdb.DuckDBPyConnection:
    check_database_name(db_path)
    try:
        if make_folder:
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        return duckdb.connect(str(db_path), read_only=read_only)
    except (duckdb.IOException, OSError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else str(exc)
        raise DatabaseError(f"cannot open database {db_path}: {first_line} (is another run using it?)") from None


def create(db_path: Path) -> duckdb.DuckDBPyConnection:
    """Open ``db_path`` for writing, making it (and its folder) if it does not exist."""
    return _open(db_path, read_only=False, make_folder=True)


def require(db_path: Path, first: str = "phm ingest") -> Path:
    """``db_path`` if the database exists, else the error naming it and what to ``run first``."""
    if not Path(db_path).is_file():
        raise ConfigError(f"--db {db_path}: no such database (run {first} first)")
    return Path(db_path)


def connect(db_path: Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open an existing database, with errors a user can act on; nothing is created."""
    check_database_name(db_path)
    return _open(require(db_path), read_only)


def in_memory() -> duckdb.DuckDBPyConnection:
    """A database with nothing on disk, for SQL models run over frames (e.g. one rule checked
    against a synthetic extract's truth)."""
    return duckdb.connect()


def extract_date(con: duckdb.DuckDBPyConnection) -> dt.date:
    """The extract date of the ingested extract."""
    try:
        return con.execute("select extract_date from ingest.run_parameters").fetchone()[0]
    except duckdb.CatalogException:
        raise ConfigError("the database has no ingested extract: run phm ingest first") from None


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """All of the block's writes, or none: committed at its end, rolled back if it raises. A
    rollback DuckDB refuses because it already ended the transaction (it could not write: a full
    disk) is passed over, so the error the caller sees says why, not that."""
    con.execute("begin transaction")
    try:
        yield con
        con.execute("commit")
    except BaseException:
        try:
            con.execute("rollback")
        except duckdb.TransactionException:
            pass
        raise
