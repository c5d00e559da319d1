"""Build the feature layers: ``sql/intermediate`` then ``sql/marts``, in order, in DuckDB.

Each ``.sql`` file is one ``select``; it becomes ``<layer>.<file name>``. Run settings (index
date, IMD version) and the codelists reach the SQL as tables (``features.parameters``, ``ref.codelist_codes``),
never as text in the query.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import duckdb

from phm.codelists import insert_project_codes, project_codelists
from phm.contract import IMD_VERSIONS
from phm.db import SQL_DIR
from phm.ethnicity import NHS_ETHNIC_CATEGORIES, NOT_KNOWN, NOT_STATED, QRISK3_ETHRISK, broad_group
from phm.exceptions import ConfigError
from phm.ingest import insert_rows

LAYERS = ("intermediate", "marts")


def is_census_code(term: str) -> bool:
    """An ethnicity code of a census classification: its term names the census ('White British -
    ethnic category 2001 census'); the generator draws 10% of codes from the others."""
    return "census" in term.lower()


def load_reference_tables(con: duckdb.DuckDBPyConnection) -> None:
    """The project's codelists as ``ref.codelist_codes(concept, code, category)``."""
    con.execute("create schema if not exists ref")
    con.execute("create or replace table ref.codelist_codes (concept varchar, code varchar, category varchar)")
    insert_project_codes(con, "ref.codelist_codes", "select concept, code, category from project_codes")
    # ethnicity codes of a census classification ('... - ethnic category 2001 census', '... 2011
    # census'): a category resting on none of them is a data-quality signal (docs/ethnicity.md)
    con.execute("create or replace table ref.ethnicity_census_codes (code varchar)")
    ethnicity = project_codelists()["ethnicity"]
    insert_rows(con, "ref.ethnicity_census_codes", [
        (code,) for code in ethnicity.codes if is_census_code(ethnicity.terms.get(code, ""))])
    con.execute("create or replace table ref.ethnic_categories "
                "(category varchar, name varchar, broad_group varchar, qrisk3_ethrisk integer)")
    categories = [(c, name, group, QRISK3_ETHRISK[c]) for c, (name, group) in NHS_ETHNIC_CATEGORIES.items()]
    categories += [(NOT_STATED, "Not stated", broad_group(NOT_STATED), QRISK3_ETHRISK[NOT_STATED]),
                   (NOT_KNOWN, "Not known", broad_group(NOT_KNOWN), QRISK3_ETHRISK[NOT_KNOWN])]
    insert_rows(con, "ref.ethnic_categories", categories)


def set_parameters(con: duckdb.DuckDBPyConnection, index_date: dt.date, imd_version: str | None) -> None:
    """The run's settings as ``features.parameters``; the IMD version defaults to the ingested
    extract's (``ingest.run_parameters``)."""
    if imd_version is None:
        try:
            imd_version = con.execute("select imd_version from ingest.run_parameters").fetchone()[0]
        except duckdb.CatalogException:
            raise ConfigError("the database has no ingest.run_parameters: ingest an extract first, "
                              "or give the IMD version") from None
    if imd_version not in IMD_VERSIONS:
        raise ConfigError(f"IMD version must be one of {sorted(IMD_VERSIONS)}, not {imd_version!r}")
    con.execute("create schema if not exists features")
    con.execute("create or replace table features.parameters "
                "(index_date date, imd_version varchar, imd_lsoa_count integer)")
    con.execute("insert into features.parameters values (?, ?, ?)",
                [index_date, imd_version, IMD_VERSIONS[imd_version]])


def models_in_order() -> list[tuple[str, str, Path]]:
    """(layer, model name, path) for every SQL model: layer by layer, and within a layer after
    the models it reads (found by their ``<layer>.<name>`` references), then by name."""
    ordered: list[tuple[str, str, Path]] = []
    for layer in LAYERS:
        pending = {path.stem: path for path in sorted((SQL_DIR / layer).glob("*.sql"))}
        needs = {name: set(re.findall(rf"\b{layer}\.(\w+)", path.read_text())) & set(pending) - {name}
                 for name, path in pending.items()}
        while pending:
            ready = sorted(n for n in pending if not needs[n] & set(pending))
            if not ready:
                raise ConfigError(f"sql/{layer}: models read each other in a cycle: {sorted(pending)}")
            for name in ready:
                ordered.append((layer, name, pending.pop(name)))
    return ordered


def models_read(models: list[tuple[str, str, Path]], wanted: tuple[str, ...]) -> set[str]:
    """The ``<layer>.<name>`` of the ``wanted`` models and of every model they read, directly or
    through another (found by their ``<layer>.<name>`` references, as ``models_in_order`` finds them)."""
    paths = {f"{layer}.{name}": path for layer, name, path in models}
    unknown = set(wanted) - set(paths)
    if unknown:
        raise ConfigError(f"no SQL model {sorted(unknown)} in sql/{{{','.join(LAYERS)}}}")
    pattern = re.compile(rf"\b(?:{'|'.join(LAYERS)})\.\w+")
    needed, todo = set(), list(wanted)
    while todo:
        model = todo.pop()
        if model not in needed:
            needed.add(model)
            todo += [m for m in pattern.findall(paths[model].read_text()) if m in paths]
    return needed


def build(con: duckdb.DuckDBPyConnection, index_date: dt.date, imd_version: str | None = None,
          progress=None, only: tuple[str, ...] | None = None) -> list[str]:
    """Create every intermediate and mart table for ``index_date`` (``only``: the models named,
    as ``<layer>.<name>``, and those they read); return their names."""
    load_reference_tables(con)
    set_parameters(con, index_date, imd_version)
    models = models_in_order()
    if only is not None:
        needed = models_read(models, only)
        models = [m for m in models if f"{m[0]}.{m[1]}" in needed]
    built = []
    for layer, name, path in models:
        if progress:
            progress(f"building {layer}.{name}")
        con.execute(f"create schema if not exists {layer}")
        con.execute(f"create or replace table {layer}.{name} as {path.read_text()}")
        built.append(f"{layer}.{name}")
    return built
