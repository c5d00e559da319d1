"""The audit of any scored table (CSV or Parquet) from any model: ``phm audit --scores``.

The table is both the validation data and the list's population: one row per patient with a
group, a predicted probability, the recorded outcome (0/1) and optionally a need count; the
operating point is the top k rows or a threshold. ``imd_quintile`` and ``sex`` columns, when
present, give the intersections. Errors name the file, the column and the first bad row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from models.fairness._audit import audit_score
from models.fairness._gate import judge
from models.fairness._quality import ethnicity_quality
from models.fairness._report import AuditReport
from models.fairness._settings import AuditSettings
from phm.exceptions import ConfigError


@dataclass(frozen=True)
class TableSpec:
    path: Path
    group: str
    score: str
    outcome: str
    need: str | None = None
    top_k: int | None = None
    threshold: float | None = None
    high_need_from: int = 1


def read_table(path: Path) -> pl.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--scores {path}: no such file")
    try:
        if path.suffix.lower() == ".parquet":
            return pl.read_parquet(path)
        frame = pl.read_csv(path, infer_schema_length=None)
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError, OSError) as exc:
        # polars quotes the offending value: keep its words, never the data
        reason = re.sub(r"[`'\"][^`'\"]*[`'\"]", "...", str(exc).splitlines()[0])
        raise ConfigError(f"--scores {path}: not a readable CSV or Parquet file ({reason})") from None
    if any(_looks_like_data(name) for name in frame.columns):
        # a headerless file: its first patient's values became the column names; say so, and
        # never repeat them (an NHS number or a date of birth would be echoed otherwise)
        raise ConfigError(f"--scores {path}: the first row looks like data, not a header (a column "
                          "is named like a number or a date): add a header row naming the columns")
    return frame


def _looks_like_data(name: str) -> bool:
    text = name.strip()
    return bool(re.fullmatch(r"[-+]?[0-9][0-9.,:/ eE+-]*", text))


def _first_bad_row(bad: pl.Series) -> int | None:
    """1-based row number (as in a spreadsheet, after the header) of the first True in ``bad``."""
    rows = bad.fill_null(True).arg_true()
    return int(rows[0]) + 1 if rows.len() else None


def _numeric(frame: pl.DataFrame, path: Path, column: str, option: str) -> pl.Series:
    if column not in frame.columns:
        raise ConfigError(f"{option} {column}: no such column in {path} (columns: {', '.join(frame.columns)})")
    values = frame[column]
    if values.dtype == pl.Boolean:
        values = values.cast(pl.Int8)
    converted = values.cast(pl.Float64, strict=False)
    row = _first_bad_row(converted.is_null())
    if row is not None:
        raise ConfigError(f"{path}, row {row}, column {column!r}: empty or not a number")
    return converted


def prepare(spec: TableSpec) -> tuple[pl.DataFrame, float]:
    frame = read_table(spec.path)
    if frame.is_empty():
        raise ConfigError(f"--scores {spec.path}: no rows")
    if spec.group not in frame.columns:
        raise ConfigError(f"--group {spec.group}: no such column in {spec.path} (columns: {', '.join(frame.columns)})")
    score = _numeric(frame, spec.path, spec.score, "--score")
    row = _first_bad_row(~score.is_between(0, 1))
    if row is not None:
        raise ConfigError(f"{spec.path}, row {row}, column {spec.score!r}: a score must be a probability between 0 and 1")
    outcome = _numeric(frame, spec.path, spec.outcome, "--outcome")
    row = _first_bad_row(~outcome.is_in([0.0, 1.0]))
    if row is not None:
        raise ConfigError(f"{spec.path}, row {row}, column {spec.outcome!r}: the outcome must be 0 or 1")
    if spec.need:
        need = _numeric(frame, spec.path, spec.need, "--need")
        row = _first_bad_row(~((need >= 0) & (need == need.floor())))
        if row is not None:
            raise ConfigError(f"{spec.path}, row {row}, column {spec.need!r}: need must be a count (0, 1, 2, ...)")
    else:
        need = outcome  # without a need measure, need is the recorded outcome itself
    table = pl.DataFrame({"group": frame[spec.group].cast(pl.String).fill_null("Not known"),
                          "score": score, "outcome": outcome.cast(pl.Int8), "need": need.cast(pl.Int64)})
    for column in ("imd_quintile", "sex"):
        if column in frame.columns:
            table = table.with_columns(frame[column].cast(pl.String).alias(column))
    if spec.top_k is not None:
        if not 1 <= spec.top_k <= table.height:
            raise ConfigError(f"--top-k must be between 1 and the number of rows ({table.height:,}), not {spec.top_k}")
        order = table["score"].rank("ordinal", descending=True)
        table = table.with_columns((order <= spec.top_k).alias("selected"))
        threshold = float(table.filter(pl.col("selected"))["score"].min())
    else:
        threshold = spec.threshold if spec.threshold is not None else None
        if threshold is None:
            raise ConfigError("give the operating point: --top-k N or --threshold X")
        table = table.with_columns((pl.col("score") >= threshold).alias("selected"))
    return table, threshold


def audit_table(spec: TableSpec, settings: AuditSettings, out_dir: Path, name: str = "score") -> AuditReport:
    table, threshold = prepare(spec)
    settings.validate()
    columns = [c for c in ("group", "imd_quintile", "sex") if c in table.columns]
    audit = audit_score(name, table.select(*columns, "score", "selected", "outcome"),
                        table.select(*columns, "score", "selected", "need"), threshold, settings, spec.high_need_from)
    audit.need_description = f"column {spec.need!r}" if spec.need else "the recorded outcome (no --need given)"
    quality = ethnicity_quality(table.select("group"), settings.level)
    gate = judge(audit, settings, quality.missing_share)
    report = AuditReport(f"Fairness audit of {spec.path.name}", settings, [audit], [gate], quality, {},
                         {name: {"table": spec.path.name, "score column": spec.score, "outcome column": spec.outcome}})
    report.write(Path(out_dir))
    return report
