"""The audit of any scored table (CSV or Parquet) from any model: ``phm audit --scores``.

The table is both the validation data and the list's population: one row per patient with a
group, a score, the recorded outcome (0/1) and optionally a need count; the operating point is
the top k rows or a threshold. ``imd_quintile`` and ``sex`` columns, when present, give the
intersections; an ``age`` (or ``age_years``) column makes the label-choice check compare by age
band too. Errors name the file, the column and the first bad row.

A score that is not a probability is read, with a note in the output and the report
(``read_score``; ``--score-kind`` says it outright where the reading would guess wrong):
- a percentage risk (0-100, some value above 1, not spread evenly): divided by 100;
- a percentile (0-100, spread evenly over the range, as a percentile of the table's own rows is:
  Kolmogorov-Smirnov distance from the uniform under ``PERCENTILE_MAX_DISTANCE``), or anything
  else (negative values, or above 100): a rank. It is converted to its percentile rank within the
  table (0-1). Ranking, selection and the label-choice checks do not change; the checks that read
  the score's values as risks (calibration, and need-adjusted selection over the score's
  expectation) mean nothing for a rank and are not judged (``ScoreAudit.score_is_risk``). Read as
  a percentage, a fair percentile table was refused on calibration for every group (observed /
  expected 0.19-0.20: a percentile of 50 is no 50% risk).
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
    score_kind: str = "auto"  # SCORE_KINDS: how to read the score's values (read_score)


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


SCORE_KINDS = ("auto", "probability", "percentage", "rank")
# A percentile of the table's own rows is as even as its ties allow (distance about 1 / rows; whole
# percentiles 1-100 about 0.013); a percentage risk is skewed towards low values (a 2,000-patient
# synthetic run's QRISK3 and QDiabetes 10-year risks: 0.69 and 0.81), and even a risk spread from 0
# to 100% as a beta(2, 2) is 0.10 from the uniform.
PERCENTILE_MAX_DISTANCE = 0.05


def _distance_from_uniform(values: pl.Series) -> float:
    """Kolmogorov-Smirnov distance of ``values`` (0-1) from the uniform distribution."""
    from scipy import stats

    return float(stats.kstest(values.to_numpy(), "uniform").statistic)


def _as_rank(score: pl.Series) -> pl.Series:
    return (score.rank("average") - 0.5) / score.len()


def read_score(score: pl.Series, column: str, kind: str = "auto") -> tuple[pl.Series, str | None, bool]:
    """The score on the 0-1 scale the audit reads, a note saying how it was read (None when it was
    a probability), and whether its values are risks (False for a rank: ``ScoreAudit.score_is_risk``).
    ``kind``: one of SCORE_KINDS; "auto" reads the values (module docstring)."""
    if kind not in SCORE_KINDS:
        raise ConfigError(f"--score-kind {kind!r}: one of {', '.join(SCORE_KINDS)}")
    low, high = score.min(), score.max()
    as_rank_note = ("ranking and selection are unchanged; calibration and need-adjusted selection read a score's "
                    "values as risks, so they are not judged for it")
    if kind == "probability" or (kind == "auto" and low >= 0 and high <= 1):
        if low < 0 or high > 1:
            raise ConfigError(f"--score-kind probability: column {column!r} has values from {low:g} to {high:g}, "
                              "not 0-1")
        return score, None, True
    if kind == "percentage" or (kind == "auto" and low >= 0 and high <= 100
                                and _distance_from_uniform(score / 100) > PERCENTILE_MAX_DISTANCE):
        if low < 0 or high > 100:
            raise ConfigError(f"--score-kind percentage: column {column!r} has values from {low:g} to {high:g}, "
                              "not 0-100")
        how = "given as a percentage" if kind == "percentage" else \
            f"values up to {high:g}, not spread evenly over 0-100: read as a percentage risk"
        return score / 100, (f"column {column!r} is not a probability ({how}) and is divided by 100; "
                             "if it is a percentile or a rank, give --score-kind rank"), True
    if kind == "rank":
        how = "given as a rank"
    elif high <= 100 and low >= 0:
        how = (f"values spread evenly over 0-{high:g}, {_distance_from_uniform(score / 100):.3f} from the uniform: "
               "read as a percentile")
    else:
        how = f"values from {low:g} to {high:g}"
    return _as_rank(score), (f"column {column!r} is not a probability ({how}): converted to its percentile rank "
                             f"within the table; {as_rank_note}; if it is a percentage risk, give --score-kind "
                             "percentage"), False


def prepare(spec: TableSpec) -> tuple[pl.DataFrame, float, str | None, bool]:
    frame = read_table(spec.path)
    if frame.is_empty():
        raise ConfigError(f"--scores {spec.path}: no rows")
    if spec.group not in frame.columns:
        raise ConfigError(f"--group {spec.group}: no such column in {spec.path} (columns: {', '.join(frame.columns)})")
    raw_score = _numeric(frame, spec.path, spec.score, "--score")
    score, note, is_risk = read_score(raw_score, spec.score, spec.score_kind)
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
    return table, threshold, note, is_risk


def audit_table(spec: TableSpec, settings: AuditSettings, out_dir: Path, name: str = "score") -> AuditReport:
    table, threshold, note, is_risk = prepare(spec)
    settings.validate()
    columns = [c for c in ("group", "imd_quintile", "sex") if c in table.columns]
    age = ["age"] if "age" in table.columns else []
    audit = audit_score(name, table.select(*columns, "score", "selected", "outcome"),
                        table.select(*columns, *age, "score", "selected", "need"), threshold, settings,
                        spec.high_need_from)
    audit.need_description = f"column {spec.need!r}" if spec.need else "the recorded outcome (no --need given)"
    audit.score_is_risk = is_risk
    quality = ethnicity_quality(table.select("group"), settings.level)
    gate = judge_all([audit], settings, quality.missing_share)[0]
    decision = decide([gate], settings.signoffs)
    report = AuditReport(f"Fairness audit of {spec.path.name}", settings, [audit], [gate], quality, {},
                         {name: {"table": spec.path.name, "score column": spec.score, "outcome column": spec.outcome}},
                         decision=decision, notes=[note] if note else [])
    report.write(Path(out_dir))
    return report
