"""The audit of any scored table (CSV or Parquet) from any model: ``phm audit --scores``.

The table is both the validation data and the list's population: one row per patient with a
group, a score, the recorded outcome (0/1) and optionally a need count; the operating point is
the top k rows or a threshold. ``imd_quintile`` and ``sex`` columns, when present, give the
intersections; an ``age`` (or ``age_years``) column makes the label-choice check compare by age
band too. Errors name the file, the column and the first bad row.

A score that is not a probability is read, with a note in the output and the report:
- a percentile or percentage (0-100, some value above 1): divided by 100;
- anything else (negative values, or above 100): a rank score; it is converted to its
  percentile within the table (0-1). Ranking, selection and the label-choice check do not
  change; calibration (observed / expected) is then not meaningful and is not gated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from models.fairness._audit import audit_score
from models.fairness._decision import decide
from models.fairness._gate import judge_all
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


def as_probability(score: pl.Series, column: str) -> tuple[pl.Series, str | None]:
    """The score as a probability, and a note saying how it was read (None when it was one)."""
    low, high = score.min(), score.max()
    if low >= 0 and high <= 1:
        return score, None
    if low >= 0 and high <= 100:
        return score / 100, (f"column {column!r} is not a probability (values up to {high:g}): read as a "
                             "percentage or percentile 0-100 and divided by 100")
    ranked = (score.rank("average") - 0.5) / score.len()
    return ranked, (f"column {column!r} is not a probability (values from {low:g} to {high:g}): converted to its "
                    "percentile rank within the table; ranking and selection are unchanged, but calibration "
                    "(observed / expected) is not meaningful for it and is not gated")


def prepare(spec: TableSpec) -> tuple[pl.DataFrame, float]:
    frame = read_table(spec.path)
    if frame.is_empty():
        raise ConfigError(f"--scores {spec.path}: no rows")
    if spec.group not in frame.columns:
        raise ConfigError(f"--group {spec.group}: no such column in {spec.path} (columns: {', '.join(frame.columns)})")
    raw_score = _numeric(frame, spec.path, spec.score, "--score")
    score, note = as_probability(raw_score, spec.score)
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
    age = next((c for c in ("age", "age_years") if c in frame.columns), None)
    if age is not None:
        table = table.with_columns(_numeric(frame, spec.path, age, "age column").alias("age"))
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
        # the threshold is on the score as given
        table = table.with_columns((raw_score >= threshold).alias("selected"))
    return table, threshold, note


def audit_table(spec: TableSpec, settings: AuditSettings, out_dir: Path, name: str = "score") -> AuditReport:
    table, threshold, note = prepare(spec)
    settings.validate()
    columns = [c for c in ("group", "imd_quintile", "sex") if c in table.columns]
    age = ["age"] if "age" in table.columns else []
    audit = audit_score(name, table.select(*columns, "score", "selected", "outcome"),
                        table.select(*columns, *age, "score", "selected", "need"), threshold, settings,
                        spec.high_need_from)
    audit.need_description = f"column {spec.need!r}" if spec.need else "the recorded outcome (no --need given)"
    quality = ethnicity_quality(table.select("group"), settings.level)
    gate = judge_all([audit], settings, quality.missing_share)[0]
    if note and "percentile rank" in note:  # calibration of a rank is meaningless: not gated
        gate.tests = [t for t in gate.tests if t.check != "calibration"]
        gate.findings = [f for f in gate.findings if f.rule != "calibration"]
    decision = decide([gate], settings.signoffs)
    report = AuditReport(f"Fairness audit of {spec.path.name}", settings, [audit], [gate], quality, {},
                         {name: {"table": spec.path.name, "score column": spec.score, "outcome column": spec.outcome}},
                         decision=decision, notes=[note] if note else [])
    report.write(Path(out_dir))
    return report
