"""Ethnicity data quality per practice and PCN, each figure beside a benchmark, and the practices
whose recording stands out beyond chance (docs/ethnicity.md).

What is measured, per practice, PCN and the ICB (one row per registered patient in, aggregates out):

- ``not_known_99``: no ethnicity code that states a category or 'not stated' ('99', not known);
  of all patients. Completeness is the rest minus 'not stated'.
- ``not_stated_z``: 'not stated' (Z: asked and declined); of all patients.
- ``conflicting_codes``: GP codes of more than one category; of patients whose GP record states one.
- ``non_census_only``: the category rests only on codes outside the census classifications
  ('Caucasian', 'Greeks', ...); of patients whose GP record states one.
- ``any_other``: an 'any other ...' category (C, G, L, P, S), of patients with a stated category,
  as observed / expected, where the expected count is the census's share of 'any other' within
  each broad group applied to the practice's patients of that group (indirect standardisation:
  a practice with more Asian patients expects more 'Any other Asian background').
- ``hospital_disagrees``: where the optional hospital_ethnicity table has records, the hospital's
  category differs from the GP record's; of patients with both.
- ``from_hospital``: categories filled from hospital records (shown, not judged).
- the recorded mix in the five broad groups beside the benchmark (the census), as information.

The flag (a data-quality signal a practice can act on). For each judged indicator, practices are
compared with **the ICB's own practices**, not with a national figure: the typical practice
(the median of the practices' shares, or of their observed / expected ratios) and the spread
between practices beyond sampling (``tau``, found so that the median absolute standardised
deviation is that of a standard normal, 0.6745: a robust random-effects funnel, in the spirit of
Spiegelhalter, Statistics in Medicine 2005;24:1185-1202, with the median and the median absolute
deviation so that the practices being flagged do not widen the funnel that judges them). A
practice's z is (its value - typical) / sqrt(sampling variance at the typical value + tau^2), its
p-value one-sided in the direction that is worse (more not known, more not stated, more
conflicts, more non-census codes, more 'any other' than expected, more disagreement). The family
is every practice x indicator judged in the run; **Holm's step-down** keeps the chance of any
false flag in a run under ``alpha`` (0.05). With fewer than ``min_practices`` practices the ICB has
no spread to judge against, and nothing is flagged.

The recorded mix is not flagged: a practice's population can differ from the national mix for
real (a practice in an Asian-majority area), so the mix against the census is shown as
information, with intervals and 'above' / 'below' where the difference is beyond chance (Holm
over practices x groups). A census table by LSOA (``[ethnicity_dq] census_by_lsoa``) gives each
practice its own benchmark (``practice_benchmarks``: the mix of its registered patients' areas);
the synthetic extract's LSOA codes are made up, so the demo uses the national mix.

Everything that leaves (``published``) is suppressed: counts of 1-7 withheld, others rounded to 5,
shares from the rounded counts, intervals withheld where their count is 1-7 (phm/disclosure.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import polars as pl

from phm.disclosure import SUPPRESSED_BELOW, significant, suppress
from phm.ethnicity import (
    ANY_OTHER_CATEGORIES,
    BROAD_GROUPS,
    NHS_ETHNIC_CATEGORIES,
    NOT_KNOWN,
    NOT_STATED,
)

ALPHA = 0.05
MIN_PRACTICES = 5
MIN_DENOMINATOR = 50
TYPICAL_ABS_Z = 0.6744897501960817  # median of |Z| for a standard normal

# name -> (label, denominator, how it is judged: "share", "ratio" or None (shown only))
INDICATORS = {
    "not_known_99": ("no ethnicity recorded ('99' not known)", "patients", "share"),
    "not_stated_z": ("'not stated' (Z)", "patients", "share"),
    "conflicting_codes": ("conflicting codes (more than one category)", "stated in the GP record", "share"),
    "non_census_only": ("only codes outside the census categories", "stated in the GP record", "share"),
    "any_other": ("'any other' category (observed / expected from the census)", "stated", "ratio"),
    "hospital_disagrees": ("hospital records give another category", "stated in both", "share"),
    "from_hospital": ("category filled from hospital records", "patients", None),
}
DIRECTIONS = {
    "not_known_99": "'not known' (99) high: ethnicity not recorded",
    "not_stated_z": "'not stated' (Z) high",
    "conflicting_codes": "conflicting codes high",
    "non_census_only": "codes outside the census categories high",
    "any_other": "'any other' categories over-used",
    "hospital_disagrees": "disagrees with hospital records: categories may be misrecorded",
}


def _normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2))


def _normal_quantile(p: float) -> float:
    """The standard normal's quantile (bisection on the survival function; enough for intervals)."""
    lo, hi = -12.0, 12.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 1 - _normal_sf(mid) < p else (lo, mid)
    return (lo + hi) / 2


def wilson(count: int, total: int, level: float = 0.95) -> tuple[float, float]:
    if total <= 0:
        return float("nan"), float("nan")
    z = _normal_quantile(0.5 + level / 2)
    p = count / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def poisson_ratio_interval(observed: int, expected: float, level: float = 0.95) -> tuple[float, float]:
    """Observed / expected with Byar's approximation to the exact Poisson interval."""
    if expected <= 0:
        return float("nan"), float("nan")
    z = _normal_quantile(0.5 + level / 2)
    o = observed
    low = 0.0 if o == 0 else o * (1 - 1 / (9 * o) - z / (3 * math.sqrt(o))) ** 3
    high = (o + 1) * (1 - 1 / (9 * (o + 1)) + z / (3 * math.sqrt(o + 1))) ** 3
    return low / expected, high / expected


def holm(p_values: list[float], alpha: float = ALPHA) -> list[tuple[float, bool]]:
    """Holm's step-down: (adjusted p-value, rejected) per p-value, in the given order."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    m = len(p_values)
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return [(a, a <= alpha) for a in adjusted]


def robust_tau2(values: list[float], variances: list[float], centre: float) -> float:
    """The between-practice variance beyond sampling: the smallest tau^2 >= 0 for which the median
    of |value - centre| / sqrt(variance + tau^2) is at most 0.6745 (that of a standard normal)."""
    deviations = [abs(v - centre) for v in values]

    def median_z(tau2: float) -> float:
        zs = sorted(d / math.sqrt(max(var + tau2, 1e-18)) for d, var in zip(deviations, variances, strict=True))
        n = len(zs)
        return zs[n // 2] if n % 2 else (zs[n // 2 - 1] + zs[n // 2]) / 2

    if not values or median_z(0.0) <= TYPICAL_ABS_Z:
        return 0.0
    lo, hi = 0.0, max(deviations) ** 2 / TYPICAL_ABS_Z ** 2 + 1e-12
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if median_z(mid) > TYPICAL_ABS_Z else (lo, mid)
    return hi


def _finite(value: float | None) -> float | None:
    return None if value is None or value != value else round(value, 4)


def _median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


@dataclass
class Figure:
    """One indicator of one unit: exact counts (never published as such) and what may leave."""

    count: int
    denominator: int
    expected: float | None = None  # 'any_other': the expected count from the benchmark

    @property
    def value(self) -> float | None:
        if self.expected is not None:
            return self.count / self.expected if self.expected > 0 else None
        return self.count / self.denominator if self.denominator else None

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        if self.expected is not None:
            return poisson_ratio_interval(self.count, self.expected, level)
        return wilson(self.count, self.denominator, level)

    def published(self, level: float = 0.95) -> dict:
        withheld = 0 < self.count < SUPPRESSED_BELOW or 0 < self.denominator < SUPPRESSED_BELOW
        count, denominator = suppress(self.count), suppress(self.denominator)
        out = {"count": count, "denominator": denominator, "withheld": withheld}
        if withheld or not denominator or (self.expected is not None and self.expected <= 0):
            return {**out, "value": None, "low": None, "high": None}
        # the interval from the rounded counts too: the exact counts' Wilson (or exact Poisson) bounds,
        # at 4 decimals, named the exact counts among the few the rounded ones allow
        low, high = Figure(count, denominator, self.expected).interval(level)
        if self.expected is not None:  # a ratio: from the rounded count over the expected count
            value = count / self.expected if self.expected > 0 else None
            return {**out, "value": None if value is None else round(value, 3), "expected_share":
                    round(self.expected / self.denominator, 4), "low": round(low, 3), "high": round(high, 3)}
        return {**out, "value": round(count / denominator, 4), "low": round(low, 4), "high": round(high, 4)}


@dataclass
class Judgement:
    unit: str
    indicator: str
    value: float
    typical: float
    tau: float
    z: float
    p: float
    p_adjusted: float = 1.0
    flagged: bool = False

    @property
    def direction(self) -> str:
        return DIRECTIONS[self.indicator]


@dataclass
class Unit:
    level: str  # "icb", "pcn" or "practice"
    unit: str  # practice pseudo id, PCN code or 'all'
    label: str  # what a reader knows it by: ODS code and name, PCN code
    pcn: str | None
    patients: int
    figures: dict[str, Figure] = field(default_factory=dict)
    mix: dict[str, int] = field(default_factory=dict)  # broad group -> patients with a stated category
    mix_findings: dict[str, str] = field(default_factory=dict)  # broad group -> 'above' / 'below' the benchmark
    benchmark_mix: dict[str, float] = field(default_factory=dict)  # broad group -> the unit's benchmark share

    def published(self, level: float = 0.95) -> dict:
        stated = sum(self.mix.values())
        return {"level": self.level, "unit": self.unit, "label": self.label, "pcn": self.pcn,
                "patients": suppress(self.patients),
                "figures": {k: f.published(level) for k, f in self.figures.items()},
                "mix": {g: {**Figure(c, stated).published(level), "against_benchmark": self.mix_findings.get(g),
                            "benchmark": _finite(self.benchmark_mix.get(g))}
                        for g, c in self.mix.items()}}


@dataclass
class EthnicityDQ:
    units: list[Unit]
    judgements: list[Judgement]
    benchmark: dict[str, float]  # category letter -> share of the population (census)
    benchmark_source: str
    alpha: float = ALPHA
    min_practices: int = MIN_PRACTICES
    judged: bool = True  # False: too few practices to judge against the ICB's spread
    level: float = 0.95
    local: list[str] = field(default_factory=list)  # practices read against their own areas' census mix

    @property
    def flags(self) -> list[Judgement]:
        return [j for j in self.judgements if j.flagged]

    def flagged_units(self) -> set[str]:
        return {j.unit for j in self.flags}

    def unit(self, level: str, unit: str) -> Unit:
        return next(u for u in self.units if u.level == level and u.unit == unit)

    def published(self) -> dict:
        labels = {u.unit: u.label for u in self.units if u.level == "practice"}
        return {
            "counts": "1-7 suppressed (null), others rounded to 5; shares from the rounded counts",
            "benchmark": {"source": self.benchmark_source, "shares": self.benchmark,
                          "broad_groups": broad_shares(self.benchmark),
                          "any_other_expected_share": round(sum(self.benchmark.get(c, 0.0) for c in
                                                                ANY_OTHER_CATEGORIES), 4)},
            "local_benchmark_practices": [labels.get(p, p) for p in self.local],
            "rule": {"alpha": self.alpha, "family": "practices x indicators, Holm", "judged": self.judged,
                     "min_practices": self.min_practices},
            "flags": [{"practice": labels.get(j.unit, j.unit), "indicator": j.indicator, "direction": j.direction,
                       "typical": significant(j.typical), "z": round(j.z, 2), "p_adjusted": round(j.p_adjusted, 4)}
                      for j in self.flags],
            "units": [u.published(self.level) for u in self.units],
        }


def broad_shares(benchmark: dict[str, float]) -> dict[str, float]:
    """Category shares summed to the broad groups, over the stated categories (A-S)."""
    total = sum(v for c, v in benchmark.items() if c in NHS_ETHNIC_CATEGORIES)
    out = dict.fromkeys(BROAD_GROUPS, 0.0)
    for c, v in benchmark.items():
        if c in NHS_ETHNIC_CATEGORIES:
            out[NHS_ETHNIC_CATEGORIES[c][1]] += v / total
    return {g: round(v, 4) for g, v in out.items()}


def any_other_within_group(benchmark: dict[str, float]) -> dict[str, float]:
    """Per broad group, the benchmark's share of 'any other' within the group."""
    totals = dict.fromkeys(BROAD_GROUPS, 0.0)
    other = dict.fromkeys(BROAD_GROUPS, 0.0)
    for c, v in benchmark.items():
        if c in NHS_ETHNIC_CATEGORIES:
            g = NHS_ETHNIC_CATEGORIES[c][1]
            totals[g] += v
            other[g] += v if c in ANY_OTHER_CATEGORIES else 0.0
    return {g: (other[g] / totals[g] if totals[g] else 0.0) for g in BROAD_GROUPS}


def _benchmark_columns(prepared: pl.DataFrame, benchmark: dict[str, float],
                       practice_benchmarks: dict[str, dict[str, float]]) -> pl.DataFrame:
    """Per patient, from their practice's benchmark (its own where given, else the run's): the
    expected chance of an 'any other' category given their broad group (stated patients only) and
    the benchmark's broad-group shares (``bench_<group>``)."""
    practices = prepared["practice"].unique().to_list()
    rows = []
    for practice in practices:
        own = practice_benchmarks.get(practice, benchmark)
        within, groups = any_other_within_group(own), broad_shares(own)
        rows.append({"practice": practice, **{f"within_{g}": within[g] for g in BROAD_GROUPS},
                     **{f"bench_{g}": groups[g] for g in BROAD_GROUPS}})
    table = pl.DataFrame(rows, schema={"practice": pl.String, **{f"within_{g}": pl.Float64 for g in BROAD_GROUPS},
                                       **{f"bench_{g}": pl.Float64 for g in BROAD_GROUPS}})
    joined = prepared.join(table, on="practice", how="left")
    expected = pl.lit(0.0)
    for g in BROAD_GROUPS:
        expected = pl.when(pl.col("broad") == g).then(pl.col(f"within_{g}")).otherwise(expected)
    return joined.with_columns(pl.when(pl.col("stated")).then(expected).otherwise(0.0).alias("expected_any_other"))


def _prepare(frame: pl.DataFrame) -> pl.DataFrame:
    stated_letters = list(NHS_ETHNIC_CATEGORIES)
    cols = frame.columns
    category = pl.col("ethnicity_category").cast(pl.String).fill_null(NOT_KNOWN)
    source = pl.col("ethnicity_source").cast(pl.String).fill_null("") if "ethnicity_source" in cols else pl.lit("primary_care")
    stated = category.is_in(stated_letters)
    gp_stated = stated & (source != "hospital")
    hospital = (pl.col("ethnicity_hospital_category").cast(pl.String) if "ethnicity_hospital_category" in cols
                else pl.lit(None, dtype=pl.String))
    return frame.select(
        pl.col("practice_pseudo_id").cast(pl.String).alias("practice"),
        pl.col("pcn_code").cast(pl.String).fill_null("unknown").alias("pcn"),
        category.alias("category"),
        category.replace_strict({c: g for c, (_, g) in NHS_ETHNIC_CATEGORIES.items()}, default=None).alias("broad"),
        stated.alias("stated"), gp_stated.alias("gp_stated"),
        (category == NOT_KNOWN).alias("not_known_99"), (category == NOT_STATED).alias("not_stated_z"),
        (gp_stated & pl.col("ethnicity_has_conflicting_codes").fill_null(False)).alias("conflicting_codes"),
        (gp_stated & (pl.col("ethnicity_non_census_only").fill_null(False) if "ethnicity_non_census_only" in cols
                      else pl.lit(False))).alias("non_census_only"),
        (stated & category.is_in(list(ANY_OTHER_CATEGORIES))).alias("any_other"),
        (gp_stated & hospital.is_not_null()).alias("both_sources"),
        (gp_stated & hospital.is_not_null() & (hospital != category)).alias("hospital_disagrees"),
        (source == "hospital").alias("from_hospital"),
    )


def _units(prepared: pl.DataFrame, key: str | None, level: str, labels: dict[str, str], with_hospital: bool,
           with_census_codes: bool) -> list[Unit]:
    keyed = prepared.with_columns((pl.lit("all") if key is None else pl.col(key)).alias("_unit"))
    sums = ["stated", "gp_stated", "not_known_99", "not_stated_z", "conflicting_codes", "non_census_only", "any_other",
            "both_sources", "hospital_disagrees", "from_hospital", "expected_any_other"]
    stated = pl.col("stated")
    table = keyed.group_by("_unit").agg(pl.len().alias("_n"), pl.col("pcn").first().alias("_pcn"),
                                        *[pl.col(c).sum().alias(c) for c in sums],
                                        *[pl.col(f"bench_{g}").filter(stated).mean().alias(f"bench_{g}")
                                          for g in BROAD_GROUPS])
    # in the order a reader looks for them: by PCN, then by the name they know (ODS code)
    table = table.with_columns(pl.col("_unit").replace_strict(labels, default=pl.col("_unit")).alias("_label")) \
        .sort("_pcn", "_label")
    mix = keyed.filter(pl.col("stated")).group_by("_unit", "broad").agg(pl.len().alias("n"))
    mixes: dict[str, dict[str, int]] = {}
    for r in mix.iter_rows(named=True):
        mixes.setdefault(r["_unit"], {})[r["broad"]] = int(r["n"])
    out = []
    for r in table.iter_rows(named=True):
        unit_mix = {g: mixes.get(r["_unit"], {}).get(g, 0) for g in BROAD_GROUPS}
        n = int(r["_n"])
        figures = {
            "not_known_99": Figure(int(r["not_known_99"]), n),
            "not_stated_z": Figure(int(r["not_stated_z"]), n),
            "conflicting_codes": Figure(int(r["conflicting_codes"]), int(r["gp_stated"])),
        }
        if with_census_codes:
            figures["non_census_only"] = Figure(int(r["non_census_only"]), int(r["gp_stated"]))
        figures["any_other"] = Figure(int(r["any_other"]), int(r["stated"]), expected=float(r["expected_any_other"]))
        if with_hospital:
            figures["hospital_disagrees"] = Figure(int(r["hospital_disagrees"]), int(r["both_sources"]))
            figures["from_hospital"] = Figure(int(r["from_hospital"]), n)
        unit = r["_unit"]
        out.append(Unit(level, unit, labels.get(unit, unit), None if level == "icb" else
                        (r["_pcn"] if level == "practice" else unit), n, figures, unit_mix,
                        benchmark_mix={g: (r[f"bench_{g}"] if r[f"bench_{g}"] is not None else float("nan"))
                                       for g in BROAD_GROUPS}))
    return out


def judge(practices: list[Unit], alpha: float = ALPHA, min_practices: int = MIN_PRACTICES,
          min_denominator: int = MIN_DENOMINATOR) -> tuple[list[Judgement], bool]:
    """Each judged indicator of each practice against the ICB's practices (robust funnel), Holm
    over the family. Returns the judgements and whether there were enough practices to judge."""
    if len(practices) < min_practices:
        return [], False
    judgements: list[Judgement] = []
    for name, (_, _, kind) in INDICATORS.items():
        if kind is None:
            continue
        members = [(u, u.figures[name]) for u in practices if name in u.figures]
        if kind == "share":
            members = [(u, f) for u, f in members if f.denominator >= min_denominator]
        else:
            members = [(u, f) for u, f in members if f.expected is not None and f.expected >= 5]
        if len(members) < min_practices:
            continue
        values = [f.value for _, f in members]
        typical = _median(values)
        if kind == "share":
            p0 = min(max(typical, 0.5 / max(f.denominator for _, f in members)), 1 - 1e-9)
            variances = [p0 * (1 - p0) / f.denominator for _, f in members]
        else:
            r0 = max(typical, 1e-9)
            variances = [r0 / f.expected for _, f in members]
        tau2 = robust_tau2(values, variances, typical)
        for (u, _), value, var in zip(members, values, variances, strict=True):
            z = (value - typical) / math.sqrt(var + tau2)
            judgements.append(Judgement(u.unit, name, value, typical, math.sqrt(tau2), z, _normal_sf(z)))
    for j, (adjusted, rejected) in zip(judgements, holm([j.p for j in judgements], alpha), strict=True):
        j.p_adjusted, j.flagged = adjusted, rejected
    return judgements, True


def _mix_findings(units: list[Unit], alpha: float) -> None:
    """'above' / 'below' the benchmark per unit and broad group where beyond chance (two-sided,
    Holm over units x groups): information, never a flag."""
    tests = []
    for u in units:
        stated = sum(u.mix.values())
        if stated < MIN_DENOMINATOR:
            continue
        for g in BROAD_GROUPS:
            p0 = u.benchmark_mix.get(g, float("nan"))
            if not 0 < p0 < 1:
                continue
            z = (u.mix[g] / stated - p0) / math.sqrt(p0 * (1 - p0) / stated)
            tests.append((u, g, z, 2 * _normal_sf(abs(z))))
    for (u, g, z, _), (_, rejected) in zip(tests, holm([t[3] for t in tests], alpha), strict=True):
        if rejected:
            u.mix_findings[g] = "above" if z > 0 else "below"


def assess(frame: pl.DataFrame, benchmark: dict[str, float], benchmark_source: str,
           practice_labels: dict[str, str] | None = None, alpha: float = ALPHA,
           min_practices: int = MIN_PRACTICES, level: float = 0.95,
           practice_benchmarks: dict[str, dict[str, float]] | None = None) -> EthnicityDQ:
    """``frame``: one row per registered patient with ``practice_pseudo_id``, ``pcn_code``,
    ``ethnicity_category`` (A-S, Z or 99), ``ethnicity_has_conflicting_codes`` and, where known,
    ``ethnicity_source``, ``ethnicity_non_census_only``, ``ethnicity_hospital_category``.
    ``benchmark``: category letter -> share (the census). ``practice_labels``: practice pseudo id
    (as text) -> what its staff know it by (ODS code and name). ``practice_benchmarks``: practice
    pseudo id -> its own benchmark (the census mix of its registered population's areas); the
    others take ``benchmark``."""
    prepared = _benchmark_columns(_prepare(frame), benchmark, practice_benchmarks or {})
    with_hospital = bool(prepared["both_sources"].any() or prepared["from_hospital"].any())
    with_census_codes = "ethnicity_non_census_only" in frame.columns
    labels = practice_labels or {}
    units = (_units(prepared, None, "icb", {"all": "ICB"}, with_hospital, with_census_codes)
             + _units(prepared, "pcn", "pcn", {}, with_hospital, with_census_codes)
             + _units(prepared, "practice", "practice", labels, with_hospital, with_census_codes))
    practices = [u for u in units if u.level == "practice"]
    judgements, judged = judge(practices, alpha, min_practices)
    _mix_findings(units, alpha)
    return EthnicityDQ(units, judgements, benchmark, benchmark_source, alpha, min_practices, judged, level,
                       local=sorted(practice_benchmarks or {}))


@dataclass(frozen=True)
class EthnicityDQSettings:
    """``[ethnicity_dq]`` of the run configuration."""

    census_table: str | None = None  # category,share_pct (A-S); default the national 2021 census mix
    census_by_lsoa: str | None = None  # lsoa_code,category,residents: each practice read against its areas' mix
    alpha: float = ALPHA  # Holm: the chance of any false flag in a run
    min_practices: int = MIN_PRACTICES  # fewer: no spread between practices to judge against, no flag

    def validate(self, where: str = "ethnicity_dq") -> EthnicityDQSettings:
        from phm.exceptions import ConfigError

        if not 0 < self.alpha < 0.5:
            raise ConfigError(f"{where}.alpha: a chance of a false flag in (0, 0.5), not {self.alpha!r}")
        if self.min_practices < 3:
            raise ConfigError(f"{where}.min_practices: at least 3 (a median and a spread), not {self.min_practices!r}")
        return self


def settings_from(table: dict, where: str = "ethnicity_dq") -> EthnicityDQSettings:
    from phm.exceptions import ConfigError

    types = {"census_table": str, "census_by_lsoa": str, "alpha": (int, float), "min_practices": int}
    for key, value in table.items():
        if key not in types:
            raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(sorted(types))})")
        if isinstance(value, bool) or not isinstance(value, types[key]):
            raise ConfigError(f"{where}.{key}: wrong type: {value!r}")
    return EthnicityDQSettings(**{k: (float(v) if k == "alpha" else v) for k, v in table.items()}).validate(where)


HISTORY_FIGURE = "ethnicity dq"


def history_rows(dq: EthnicityDQ) -> list[tuple]:
    """The run's figures for ``history.figures`` as they may leave: (figure, subject, grp, bin,
    value, label) with subject the indicator, grp '<level> <label>', value the published share
    (or observed / expected for 'any other'), label 'flag' where the practice was flagged."""
    flagged = {(j.unit, j.indicator) for j in dq.flags}
    rows = []
    for u in dq.units:
        for name, f in u.figures.items():
            rows.append((HISTORY_FIGURE, name, f"{u.level} {u.label}", None, f.published(dq.level)["value"],
                         "flag" if (u.unit, name) in flagged else None))
    return rows
