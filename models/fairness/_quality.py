"""Ethnicity data quality: how well ethnicity is recorded, overall and by practice and PCN.

'Not stated' (Z: asked, declined) and 'Not known' (99: never recorded) are kept apart; with
conflicting codes and over-use of the 'any other ...' categories they say how far the group
figures can be trusted. Proportions get Wilson intervals.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from models.fairness._metrics import wilson_interval
from phm.ethnicity import ANY_OTHER_CATEGORIES

INDICATORS = {  # name -> expression over the patient table (true = counted)
    "recorded": lambda: ~pl.col("group").is_in(["Not stated", "Not known"]),
    "not_stated_z": lambda: pl.col("group") == "Not stated",
    "not_known_99": lambda: pl.col("group") == "Not known",
    "conflicting_codes": lambda: pl.col("ethnicity_has_conflicting_codes").fill_null(False),
    "any_other_category": lambda: pl.col("ethnicity_category").is_in(list(ANY_OTHER_CATEGORIES)),
    # the GP record states no category and the optional hospital_ethnicity table gave one
    "from_hospital_records": lambda: pl.col("ethnicity_source").fill_null("") == "hospital",
}


@dataclass
class QualityRow:
    level: str  # overall, pcn or practice
    unit: str
    patients: int
    counts: dict[str, int] = field(default_factory=dict)
    shares: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # value, low, high


@dataclass
class EthnicityQuality:
    rows: list[QualityRow]

    @property
    def missing_share(self) -> float:
        """Share with no ethnicity code at all ('Not known', 99). 'Not stated' (Z) is a recorded
        answer, the patient's choice, and is reported separately."""
        overall = self.rows[0]
        return overall.shares["not_known_99"][0] if overall.patients else 0.0


def ethnicity_quality(frame: pl.DataFrame, level: float = 0.95) -> EthnicityQuality:
    """``frame``: one row per patient with ``group`` and, where known, ``ethnicity_category``,
    ``ethnicity_has_conflicting_codes``, ``ethnicity_source``, ``pcn_code``, ``practice_pseudo_id``."""
    frame = frame.with_columns(pl.col("group").cast(pl.String).fill_null("Not known"))
    indicators = {name: make() for name, make in INDICATORS.items()
                  if name in ("recorded", "not_stated_z", "not_known_99")
                  or (name == "conflicting_codes" and "ethnicity_has_conflicting_codes" in frame.columns)
                  or (name == "any_other_category" and "ethnicity_category" in frame.columns)
                  or (name == "from_hospital_records" and "ethnicity_source" in frame.columns)}
    levels = [("overall", None)]
    levels += [(lvl, col) for lvl, col in (("pcn", "pcn_code"), ("practice", "practice_pseudo_id")) if col in frame.columns]
    rows = []
    for level_name, column in levels:
        keyed = frame.with_columns(pl.lit("all").alias("_unit") if column is None else pl.col(column).cast(pl.String).alias("_unit"))
        table = keyed.group_by("_unit").agg(pl.len().alias("_n"), *[e.sum().alias(k) for k, e in indicators.items()]).sort("_unit")
        for r in table.iter_rows(named=True):
            row = QualityRow(level_name, r["_unit"], int(r["_n"]))
            for k in indicators:
                count = int(r[k])
                low, high = wilson_interval(count, row.patients, level)
                row.counts[k] = count
                row.shares[k] = (count / row.patients if row.patients else float("nan"), float(low), float(high))
            rows.append(row)
    return EthnicityQuality(rows)

