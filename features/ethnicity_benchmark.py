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
    each LSOA's mix from ``path`` (columns ``lsoa_code``, ``category`` A-S and ``residents``, or
    nomis's own TS021 LSOA file as downloaded: ``read_lsoa_table``; any non-negative number,
    normalised within each LSOA) weighted by the practice's registered patients living there (``practice_lsoas``:
    ``marts.mart_practice_lsoa``). A practice with under half its patients in LSOAs of the table
    is left out (it keeps the run's benchmark)."""
    path = Path(path)
    table = read_lsoa_table(path)
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


# nomis's TS021 file by LSOA (census2021-ts021.zip, census2021-ts021-lsoa.csv) has one column per
# census group, headed "Ethnic group: <section>: <group>"; the section's own total and the overall
# total have no "<group>" part. Each of the 19 groups maps to one NHS letter, as in the national table.
TS021_GROUPS = {
    ("white", "english, welsh, scottish, northern irish or british"): "A",
    ("white", "irish"): "B",
    ("white", "gypsy or irish traveller"): "C",
    ("white", "roma"): "C",
    ("white", "other white"): "C",
    ("mixed or multiple ethnic groups", "white and black caribbean"): "D",
    ("mixed or multiple ethnic groups", "white and black african"): "E",
    ("mixed or multiple ethnic groups", "white and asian"): "F",
    ("mixed or multiple ethnic groups", "other mixed or multiple ethnic groups"): "G",
    ("asian, asian british or asian welsh", "indian"): "H",
    ("asian, asian british or asian welsh", "pakistani"): "J",
    ("asian, asian british or asian welsh", "bangladeshi"): "K",
    ("asian, asian british or asian welsh", "other asian"): "L",
    ("black, black british, black welsh, caribbean or african", "caribbean"): "M",
    ("black, black british, black welsh, caribbean or african", "african"): "N",
    ("black, black british, black welsh, caribbean or african", "other black"): "P",
    ("asian, asian british or asian welsh", "chinese"): "R",
    ("other ethnic group", "arab"): "S",
    ("other ethnic group", "any other ethnic group"): "S",
}


def _ts021_key(header: str) -> tuple[str, str] | None:
    """("section", "group") of a nomis TS021 column header, or None for totals and other columns."""
    parts = [" ".join(p.split()) for p in header.lower().replace(";", ":").split(":")]
    if len(parts) != 3 or parts[0] != "ethnic group" or parts[1] == "total":
        return None
    return parts[1], parts[2]


def read_lsoa_table(path: Path) -> pl.DataFrame:
    """The census by LSOA as long rows (lsoa_code, category A-S, residents), from either
    - a long table with columns ``lsoa_code``, ``category`` (A-S) and ``residents``; or
    - nomis's TS021 LSOA file as downloaded (``geography code`` and one "Ethnic group: ..." column
      per census group), its 19 groups mapped to the NHS letters by ``TS021_GROUPS``."""
    try:
        header = pl.read_csv(path, n_rows=0).columns
        if {"lsoa_code", "category", "residents"} <= set(header):
            return pl.read_csv(path, columns=["lsoa_code", "category", "residents"],
                               schema_overrides={"lsoa_code": pl.String, "category": pl.String,
                                                 "residents": pl.Float64})
        code = next((h for h in header if " ".join(h.lower().split()) == "geography code"), None)
        groups = {h: key for h in header if (key := _ts021_key(h)) is not None}
        missing = sorted(" / ".join(k) for k in set(TS021_GROUPS) - set(groups.values()))
        if code is None or missing:
            raise ConfigError(f"census by LSOA {path}: neither columns lsoa_code,category,residents nor nomis's "
                              f"TS021 layout ('geography code' and an 'Ethnic group: <section>: <group>' column for "
                              f"each of the 19 groups; missing: {missing or 'geography code'})")
        unknown = sorted(" / ".join(k) for k in groups.values() if k not in TS021_GROUPS)
        if unknown:
            raise ConfigError(f"census by LSOA {path}: TS021 groups this project does not map to an NHS category: "
                              f"{unknown}")
        wide = pl.read_csv(path, columns=[code, *groups], schema_overrides={code: pl.String} | {
            h: pl.Float64 for h in groups})
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise ConfigError(f"census by LSOA {path}: cannot read it ({exc})") from None
    return (wide.unpivot(index=code, on=list(groups), variable_name="column", value_name="residents")
            .with_columns(pl.col("column").replace_strict({h: TS021_GROUPS[k] for h, k in groups.items()})
                          .alias("category"))
            .select(pl.col(code).alias("lsoa_code"), "category", "residents"))
