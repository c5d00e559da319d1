"""The benchmark of the ethnicity data-quality report (phm/ethnicity_dq.py): the 2021 census mix.

``features/census2021_ethnicity.csv``: the share of usual residents in each of the 2021 census's
19 ethnic groups, mapped to the NHS Data Dictionary's 16 categories (A-S; Gypsy or Irish
Traveller and Roma go to C 'any other White', Arab to S 'any other ethnic group'). Source: ONS,
Census 2021, TS021 Ethnic group, England and Wales, usual residents (21 March 2021), as published on
GOV.UK Ethnicity facts and figures, "Population of England and Wales" (22 December 2022;
percentages to one decimal place). England alone differs by under 0.7 percentage points in each
broad group (White 81.0%, Asian 9.6%, Black 4.2%, Mixed 3.0%, Other 2.2%). docs/ethnicity.md.

A table of your own replaces it through ``[ethnicity_dq] census_table`` (the same columns:
``category`` A-S and ``share_pct``), e.g. ONS TS021 for your ICB's local authorities; and a table
by LSOA through ``[ethnicity_dq] census_by_lsoa`` gives each practice the mix of its registered
patients' areas (``lsoa_benchmarks``).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from phm.ethnicity import NHS_ETHNIC_CATEGORIES
from phm.exceptions import ConfigError

NATIONAL_TABLE = Path(__file__).with_name("census2021_ethnicity.csv")
NATIONAL_SOURCE = ("ONS Census 2021, TS021 ethnic group, England and Wales (usual residents, 21 March 2021; "
                   "GOV.UK Ethnicity facts and figures, 22 December 2022)")


def census_benchmark(path: Path | None = None) -> tuple[dict[str, float], str]:
    """(category letter -> share of the population, source) from ``path`` (default: the national
    table). Shares are normalised to sum to 1 over A-S."""
    path = Path(path) if path else NATIONAL_TABLE
    try:
        table = pl.read_csv(path, columns=["category", "share_pct"], schema_overrides={"category": pl.String})
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise ConfigError(f"census benchmark {path}: cannot read category,share_pct ({exc})") from None
    shares = {r["category"]: float(r["share_pct"]) for r in table.iter_rows(named=True)}
    unknown = set(shares) - set(NHS_ETHNIC_CATEGORIES)
    if unknown or set(shares) != set(NHS_ETHNIC_CATEGORIES) or any(v < 0 for v in shares.values()):
        raise ConfigError(f"census benchmark {path}: needs one share_pct >= 0 for each category A-S "
                          f"(unknown: {sorted(unknown)}, missing: {sorted(set(NHS_ETHNIC_CATEGORIES) - set(shares))})")
    total = sum(shares.values())
    source = NATIONAL_SOURCE if path == NATIONAL_TABLE else f"{path.name} (configured: [ethnicity_dq] census_table)"
    return {c: shares[c] / total for c in NHS_ETHNIC_CATEGORIES}, source


MIN_COVERAGE = 0.5  # a practice whose patients' areas are mostly missing from the table keeps the run's benchmark


def lsoa_benchmarks(path: Path, practice_lsoas: pl.DataFrame) -> dict[str, dict[str, float]]:
    """Per practice (pseudo id as text), the census mix of its registered population's areas:
    each LSOA's mix from ``path`` (columns ``lsoa_code``, ``category`` A-S and ``residents``, e.g.
    ONS Census 2021 TS021 by LSOA in long form; any non-negative number, normalised within each
    LSOA) weighted by the practice's registered patients living there (``practice_lsoas``:
    ``marts.mart_practice_lsoa``). A practice with under half its patients in LSOAs of the table
    is left out (it keeps the run's benchmark)."""
    path = Path(path)
    try:
        table = pl.read_csv(path, columns=["lsoa_code", "category", "residents"],
                            schema_overrides={"lsoa_code": pl.String, "category": pl.String, "residents": pl.Float64})
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise ConfigError(f"census by LSOA {path}: cannot read lsoa_code,category,residents ({exc})") from None
    unknown = set(table["category"].unique()) - set(NHS_ETHNIC_CATEGORIES)
    if unknown or (table["residents"] < 0).any():
        raise ConfigError(f"census by LSOA {path}: categories must be A-S (not {sorted(unknown)}) and residents >= 0")
    mix = (table.group_by("lsoa_code", "category").agg(pl.col("residents").sum())
           .with_columns((pl.col("residents") / pl.col("residents").sum().over("lsoa_code")).alias("share"))
           .filter(pl.col("share").is_not_nan()))
    weighted = practice_lsoas.with_columns(pl.col("practice_pseudo_id").cast(pl.String), pl.col("lsoa_code").cast(pl.String))
    total = weighted.group_by("practice_pseudo_id").agg(pl.col("patients").sum().alias("total"))
    covered = weighted.join(mix.select("lsoa_code").unique(), on="lsoa_code", how="semi")
    shares = (covered.join(mix, on="lsoa_code").group_by("practice_pseudo_id", "category")
              .agg((pl.col("share") * pl.col("patients")).sum().alias("weight")))
    coverage = covered.group_by("practice_pseudo_id").agg(pl.col("patients").sum().alias("covered")).join(
        total, on="practice_pseudo_id")
    kept = {r["practice_pseudo_id"] for r in coverage.iter_rows(named=True) if r["covered"] >= MIN_COVERAGE * r["total"]}
    out: dict[str, dict[str, float]] = {}
    for (practice,), frame in shares.partition_by("practice_pseudo_id", as_dict=True).items():
        if practice not in kept:
            continue
        weights = dict(zip(frame["category"], frame["weight"], strict=True))
        whole = sum(weights.values())
        out[practice] = {c: weights.get(c, 0.0) / whole for c in NHS_ETHNIC_CATEGORIES}
    return out
