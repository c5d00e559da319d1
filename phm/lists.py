"""PCN targeting lists: who to invite, why, in what order, within each practice's capacity.

From the features, the validated scores, hypertension case-finding and the audited models'
scores (all at the extract date), ``sql/lists/list_reasons.sql`` gives every reason a patient
could be invited, each with a tier (1 = act first) and a suggested action. Then, here:

1. reasons a treatment or a recorded decision makes moot are set aside (a lipid review for
   someone on a statin, or who declined one in 5 years, is allergic, intolerant, contraindicated
   or not indicated; a BP check after ABPM or home monitoring; a BP check or diabetes risk
   advice after an NHS Health Check in 5 years: sql/lists/list_reasons.sql). A patient whose
   every reason is set aside is excluded for the first of them; a patient listed for another
   reason carries them in ``set_aside``. Patients in palliative care (always), a care home
   (``exclude_care_homes``) or on a list published in the last ``recently_invited_days`` are
   excluded; every exclusion is counted by reason, per PCN, never silently dropped;
2. the remaining patients are ordered by tier, then (with ``prioritisation = "core20plus5"``)
   the most deprived national quintile (Core20) and the configured PLUS groups first within a
   tier, then by the band of their highest model risk relative to others (the smallest top-share
   across the three models: top 1%, 1-5%, 5-10%, 10-25%, 25-50%, the rest), then, within a band,
   in a keyed pseudo-random order (by pseudonym, an HMAC under the practice's key): a different
   key gives a different order, so the rank does not link lists made under two keys;
3. each practice (``capacity_per_practice``) or PCN (``capacity_per_pcn``) takes as many as it
   has room for in the period (``capacity_period``: the calendar month or week of the index
   date): its capacity less the patients it listed earlier in the period (``lists.invitations``,
   the history every published list adds to; a patient listed again within one period counts
   once). The safety net: an urgent patient (``URGENT_REASONS``: no diagnosis and a
   reading of 180/120 or more, or an HbA1c or fasting glucose in the diabetic range) is never
   left out by capacity or by the recently-invited rule; urgent patients head the list (its
   ``urgent`` column) and count towards capacity, the rest fill what is left; where urgent
   patients alone exceed it, all of them are listed (and no one else) and the run says so;
4. ids are replaced by pseudonyms only the patient's practice can re-identify (phm/pseudonymise.py).

Risks on a list, in its columns and in the reasons, are bands (``risk_band_edges``, with every
threshold that decides a reason added; sql/lists/macros.sql), never the exact value: exact risks
made 399 of 400 rows of lists built under two keys match one to one (issue 16; docs/lists.md
says what the lists protect against and what they do not).

Rows in = rows on a list + rows over capacity + rows excluded, per PCN; ``ListRun`` says so.
Rows over capacity are the backlog: patients with a reason who wait for a later period.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field

import duckdb
import polars as pl

from phm.db import SQL_DIR, transaction
from phm.disclosure import SUPPRESSED, show, suppress
from phm.ethnicity import NOT_KNOWN, broad_group
from phm.exceptions import ConfigError, DatabaseError
from phm.pseudonymise import pseudonymise

SQL = SQL_DIR / "lists" / "list_reasons.sql"
MACROS = SQL_DIR / "lists" / "macros.sql"
# Bands of the relative model risk (share of eligible patients at or above it) that order
# patients within a tier; inside a band the order is keyed pseudo-random.
TOP_SHARE_BANDS = (0.01, 0.05, 0.10, 0.25, 0.50)
PRIORITISATIONS = ("risk", "core20plus5")
BROAD_GROUPS = ("White", "Mixed", "Asian", "Black", "Other", "Not stated", "Not known")
# What capacity is counted over: the calendar month of the index date, or its week (Monday to
# Sunday). Not "per run": a weekly schedule (flows/deployments.py's default) then invited a
# practice's full capacity every week (issue 18).
CAPACITY_PERIODS = ("month", "week")


@dataclass(frozen=True)
class ListSettings:
    capacity_per_practice: int | None = 200  # patients each practice can invite per capacity_period
    capacity_per_pcn: int | None = None  # or a PCN-wide capacity instead
    capacity_period: str = "month"  # "month" or "week": capacity is shared by every list of the period
    prioritisation: str = "risk"  # "risk", or "core20plus5": Core20 and PLUS groups first within a tier
    plus_groups: tuple[str, ...] = ()  # PLUS groups: broad ethnic groups, e.g. ("Black",)
    exclude_care_homes: bool = True
    recently_invited_days: int = 90  # not invited again within this many days of an earlier list
    reask_not_stated_days: int = 1095  # 'not stated' ethnicity is not asked again within this many days
    qrisk3_threshold: float = 10.0  # % (NICE NG238: offer a statin from 10%)
    qrisk3_high: float = 20.0
    qdiabetes_threshold: float = 10.0  # %
    model_top_share: float = 0.10  # a model's top share of eligible patients is a reason
    # Risks go out as bands between these edges (%), with 0 and the thresholds above added
    risk_band_edges: tuple[float, ...] = (5.0, 10.0, 15.0, 20.0, 30.0, 50.0)

    def band_edges(self) -> list[float]:
        """Every edge a band is cut at: 0, the configured edges and each threshold, so that a
        band never straddles a threshold that decides a reason."""
        return sorted({0.0, *map(float, self.risk_band_edges), self.qrisk3_threshold, self.qrisk3_high,
                       self.qdiabetes_threshold})

    def capacity_unit(self) -> tuple[str, int]:
        """(the column capacity is counted over, the capacity): each practice, or each PCN."""
        if self.capacity_per_practice is not None:
            return "practice_pseudo_id", self.capacity_per_practice
        return "pcn_code", self.capacity_per_pcn

    def validate(self) -> None:
        capacities = [c for c in (self.capacity_per_practice, self.capacity_per_pcn) if c is not None]
        if len(capacities) != 1:
            raise ConfigError("lists: set exactly one of capacity_per_practice and capacity_per_pcn")
        if capacities[0] < 1:
            raise ConfigError(f"lists: capacity must be at least 1, not {capacities[0]}")
        if self.capacity_period not in CAPACITY_PERIODS:
            why = (" (capacity per run let a weekly schedule invite a full capacity every week; for the old "
                   "behaviour on a weekly schedule set \"week\")") if self.capacity_period == "run" else ""
            raise ConfigError(f"lists.capacity_period: one of {', '.join(CAPACITY_PERIODS)}, "
                              f"not {self.capacity_period!r}{why}")
        if self.prioritisation not in PRIORITISATIONS:
            raise ConfigError(f"lists.prioritisation: one of {', '.join(PRIORITISATIONS)}, not {self.prioritisation!r}")
        for group in self.plus_groups:
            if group not in BROAD_GROUPS:
                raise ConfigError(f"lists.plus_groups: {group!r} is not a group ({', '.join(BROAD_GROUPS)})")
        if not 0 < self.qrisk3_threshold <= self.qrisk3_high < 100:
            raise ConfigError("lists: need 0 < qrisk3_threshold <= qrisk3_high < 100")
        if not 0 < self.qdiabetes_threshold < 100:
            raise ConfigError("lists.qdiabetes_threshold: a percentage between 0 and 100")
        if self.reask_not_stated_days < 0:
            raise ConfigError("lists.reask_not_stated_days: 0 or more")
        if self.recently_invited_days < 0:
            raise ConfigError("lists.recently_invited_days: 0 or more")
        if not 0 < self.model_top_share < 1:
            raise ConfigError("lists.model_top_share: a share between 0 and 1")
        edges = list(self.risk_band_edges)
        if not edges or edges != sorted(set(edges)) or not all(0 < e < 100 for e in edges):
            raise ConfigError("lists.risk_band_edges: percentages between 0 and 100 in increasing order, "
                              "e.g. [5, 10, 15, 20, 30, 50]")


def prepare(con: duckdb.DuckDBPyConnection, settings: ListSettings) -> None:
    """The lists' parameters (bound) and macros, for the reasons and the list columns."""
    con.execute("create schema if not exists lists")
    con.execute(MACROS.read_text())
    # each band's label made once, here, not for every risk written (phm_risk_band, sql/lists/macros.sql)
    con.execute("create or replace table lists.parameters as select *, "
                "phm_risk_band_labels(risk_band_edges) as risk_band_labels from (select ?::double as qrisk3_threshold, "
                "?::double as qrisk3_high, ?::double as qdiabetes_threshold, ?::double as model_top_share, "
                "?::double[] as risk_band_edges)",
                [settings.qrisk3_threshold, settings.qrisk3_high, settings.qdiabetes_threshold,
                 settings.model_top_share, settings.band_edges()])


def reasons(con: duckdb.DuckDBPyConnection, settings: ListSettings) -> pl.DataFrame:
    """Every reason for every patient (sql/lists/list_reasons.sql), thresholds bound as parameters."""
    prepare(con, settings)
    # Materialised first, then read: fetching this query's result straight from DuckDB 1.5.6 as a
    # stream stalls indefinitely at about a million patients (the same query into a table takes
    # 2 s); benchmarks/bench_scale.py found it.
    con.execute("create or replace temp table list_reasons as " + SQL.read_text())
    try:
        return con.execute("select * from list_reasons").pl()
    finally:
        con.execute("drop table if exists list_reasons")


# after prepare(): the risks as bands, as the reasons write them
PATIENT_COLUMNS = """
    select f.patient_id, f.practice_pseudo_id, f.pcn_code, f.age_years, f.sex, f.ethnicity_group,
           f.imd_quintile, f.core20, f.palliative_care, f.care_home,
           s.qrisk3_notes, s.qdiabetes_notes,
           phm_risk_band(s.qrisk3_10y_pct, p.risk_band_edges, p.risk_band_labels) as qrisk3_10y_band,
           phm_risk_band(s.qdiabetes_10y_pct, p.risk_band_edges, p.risk_band_labels) as qdiabetes_10y_band,
           h.finding as hypertension_finding,
           r.cvd_model_risk, r.t2d_model_risk, r.hypertension_model_risk,
           r.cvd_model_horizon_years, r.t2d_model_horizon_years, r.hypertension_model_horizon_years,
           phm_risk_band(100 * r.cvd_model_risk, p.risk_band_edges, p.risk_band_labels) as cvd_model_risk_band,
           phm_risk_band(100 * r.t2d_model_risk, p.risk_band_edges, p.risk_band_labels) as t2d_model_risk_band,
           phm_risk_band(100 * r.hypertension_model_risk, p.risk_band_edges, p.risk_band_labels) as hypertension_model_risk_band
    from marts.mart_patient_features as f
    left join marts.patient_scores as s using (patient_id)
    left join marts.mart_hypertension_case_finding as h using (patient_id)
    left join marts.risk_scores as r using (patient_id)
    cross join lists.parameters as p
"""


# Reasons a patient must never wait for: no diagnosis and a reading of 180/120 or more (NICE
# NG136 1.4.1: same-day assessment when symptomatic, else within days), or a glucose measure in
# the diagnostic range of diabetes (NICE NG28 / WHO 2011: HbA1c 48 mmol/mol or more, fasting
# glucose 7.0 mmol/L or more) with none recorded (sql/lists/list_reasons.sql).
URGENT_REASONS = ("bp_urgent", "hba1c_diabetic_range", "glucose_diabetic_range")


# One action per clinical area (a reason's outcome), the most pressing first: a possible
# undiagnosed diabetes replaces diabetes prevention advice, a lipid review a general CVD review,
# an urgent BP review any BP check; a trained model's reason gives way to any validated one.
ACTION_PRECEDENCE = {
    "hypertension": ("bp_urgent", "bp_confirmed_not_coded", "bp_possible_undiagnosed", "bp_above_target",
                     "bp_no_recent_reading", "bp_none_in_5_years", "model_high_risk"),
    "t2d": ("hba1c_diabetic_range", "glucose_diabetic_range", "ndh_ndpp", "qdiabetes_high", "model_high_risk"),
    "cvd": ("qrisk3_high", "qrisk3_raised", "model_high_risk"),
}
SEPARATOR = "; "  # between reasons, and between actions: no reason or action contains it (tested)
# The columns that are lists (in Parquet) and the separator that joins them for people (CSV,
# workbook): no item contains its separator, so a joined cell splits back into its items.
JOINED_WITH = {"reasons": SEPARATOR, "suggested_actions": SEPARATOR, "set_aside": SEPARATOR, "to_measure": ", "}


def _precedence() -> pl.Expr:
    out = pl.lit(None, dtype=pl.Int32)
    for outcome, codes in ACTION_PRECEDENCE.items():
        for rank, code in enumerate(codes):
            out = pl.when((pl.col("outcome") == outcome) & (pl.col("reason_code") == code)).then(rank).otherwise(out)
    return out


def per_patient(reason_rows: pl.DataFrame) -> pl.DataFrame:
    """One row per patient with a reason: tier, every reason in plain English, one action per
    clinical area (ACTION_PRECEDENCE), and whether any reason is urgent. Reasons, actions and
    reasons set aside are lists (``JOINED_WITH`` joins them for people)."""
    kept = reason_rows.filter(pl.col("excluded_by").is_null()).sort("tier", "reason_code", "outcome")
    moot = reason_rows.filter(pl.col("excluded_by").is_not_null())
    actions = (kept.with_columns(_precedence().alias("_precedence"))
               .sort("patient_id", "outcome", "_precedence", nulls_last=True)
               .group_by("patient_id", "outcome", maintain_order=True).first()  # the area's most pressing
               .sort("patient_id", "tier", "_precedence", nulls_last=True)
               .group_by("patient_id", maintain_order=True)
               .agg(pl.col("action").unique(maintain_order=True).alias("suggested_actions")))
    listed = kept.group_by("patient_id", maintain_order=True).agg(
        pl.col("tier").min(),
        pl.col("reason_code").is_in(list(URGENT_REASONS)).any().alias("urgent"),
        pl.col("reason").alias("reasons"),
        pl.col("reason_code").unique(maintain_order=True).str.join(",").alias("reason_codes")
    ).join(actions, on="patient_id", how="left", maintain_order="left")
    set_aside = moot.group_by("patient_id", maintain_order=True).agg(
        pl.col("excluded_by").unique(maintain_order=True).alias("set_aside"))
    treated = moot.join(listed.select("patient_id"), on="patient_id", how="anti").group_by("patient_id").agg(
        pl.col("excluded_by").first().alias("treatment_exclusion"))
    return pl.concat([listed, treated], how="diagonal").join(set_aside, on="patient_id", how="left")


def _age_band(age: pl.Expr) -> pl.Expr:
    low = (age // 5) * 5
    return pl.format("{}-{}", low, low + 4)


def order_and_cap(candidates: pl.DataFrame, settings: ListSettings, used: pl.DataFrame | None = None) -> pl.DataFrame:
    """Adds ``priority_rank`` (within practice or PCN) and ``on_list`` to eligible candidates.

    Urgent patients (an ``urgent`` column, where there is one) come first and are always on the
    list, counting towards capacity; the others fill what is left. Within a tier (and Core20PLUS5 group) the order is by band
    of relative model risk, then by
    pseudonym: the exact risk would give every patient the same rank under any key, and the
    rank would link lists made under two keys; the pseudonym, an HMAC under the practice's key,
    orders a band differently under each key and means nothing clinically (nor does the exact
    order of patients whose risks fall in one band).

    Capacity is per period: ``used`` (the capacity unit's column and ``listed_earlier``, the
    patients its earlier lists of the period took) leaves ``capacity - listed_earlier``. A
    candidate already listed this period (a ``listed_this_period`` column, where there is one:
    an urgent patient listed again, or anyone with ``recently_invited_days`` shorter than the
    period) is listed again, in rank order, without taking another place."""
    relative = [pl.col(f"{o}_model_risk").rank("max", descending=True) / pl.col(f"{o}_model_risk").count()
                for o in ("cvd", "t2d", "hypertension")]
    top_share = pl.min_horizontal(*relative).fill_null(1.0)
    band = pl.lit(len(TOP_SHARE_BANDS), dtype=pl.Int8)
    for index, edge in reversed(list(enumerate(TOP_SHARE_BANDS))):
        band = pl.when(top_share <= edge).then(pl.lit(index, dtype=pl.Int8)).otherwise(band)
    frame = candidates.with_columns(band.alias("_model_top_band"))
    first = pl.lit(0)
    if settings.prioritisation == "core20plus5":
        first = (~(pl.col("core20").fill_null(False) | pl.col("ethnicity_group").is_in(list(settings.plus_groups)))
                 ).cast(pl.Int8)
    unit, capacity = settings.capacity_unit()
    urgent = pl.col("urgent").fill_null(False) if "urgent" in frame.columns else pl.lit(False)
    again = pl.col("listed_this_period").fill_null(False) if "listed_this_period" in frame.columns else pl.lit(False)
    frame = frame.with_columns(first.alias("_first"), urgent.alias("urgent"), again.alias("_again")).sort(
        ["urgent", "tier", "_first", "_model_top_band", "pseudonym"], descending=[True, False, False, False, False])
    frame = frame.with_columns(capacity_left(frame, settings, used).alias("_left"))
    frame = frame.with_columns(pl.int_range(1, pl.len() + 1).over(unit).alias("priority_rank"),
                               (~pl.col("_again")).cast(pl.Int32).cum_sum().over(unit).alias("_places_taken"))
    return frame.with_columns((pl.col("urgent") | (pl.col("_places_taken") <= pl.col("_left"))).alias("on_list")).drop(
        "_first", "_model_top_band", "_again", "_left", "_places_taken")


def capacity_left(frame: pl.DataFrame, settings: ListSettings, used: pl.DataFrame | None) -> pl.Series:
    """Each row's unit's capacity left in the period: capacity less ``used.listed_earlier``, at least 0."""
    unit, capacity = settings.capacity_unit()
    if used is None or used.height == 0:
        return pl.Series("_left", [capacity] * frame.height, dtype=pl.Int64)
    earlier = frame.select(unit).join(used.select(unit, "listed_earlier"), on=unit, how="left", maintain_order="left")
    return (capacity - earlier["listed_earlier"].fill_null(0)).clip(lower_bound=0).cast(pl.Int64).alias("_left")


@dataclass
class ListRun:
    lists: pl.DataFrame  # the rows on a list, all PCNs, list columns only (reasons etc. as lists)
    counts: pl.DataFrame  # per PCN: candidates, on list, over capacity, each exclusion (exact)
    summary: dict[str, pl.DataFrame] = field(default_factory=dict)  # per PCN: aggregate, suppressed
    invited: pl.DataFrame = field(default_factory=pl.DataFrame)  # who is on a list, by practice: stays in the database
    warnings: list[str] = field(default_factory=list)  # e.g. urgent patients beyond capacity (no patient values)
    notes: list[str] = field(default_factory=list)  # e.g. the history moved to its current shape (counts suppressed)
    capacity: dict = field(default_factory=dict)  # the period and each PCN's capacity in it (configuration, not counts)
    reask: pl.DataFrame = field(default_factory=pl.DataFrame)  # the ethnicity re-ask worklist, all PCNs (REASK_COLUMNS)

    def summary_lines(self) -> list[str]:
        period = self.capacity.get("period")
        head = "lists (counts: 1-7 suppressed, others rounded to 5"
        if period:
            head += f"; capacity per {period}, {self.capacity['from']} to {self.capacity['to']}"
        lines = [head + "):"]
        for row in self.counts.iter_rows(named=True):
            line = (f"  PCN {row['pcn_code']}: {show(row['on_list'])} on the list, "
                    f"{show(row['over_capacity'])} over capacity (the backlog), {show(row['excluded'])} excluded "
                    f"of {show(row['candidates'])} with a reason")
            if period and row["pcn_code"] in self.capacity.get("pcns", {}):
                line += (f"; the {period}'s capacity {self.capacity['pcns'][row['pcn_code']]:,}, "
                         f"{show(row.get('listed_earlier_in_period', 0))} of it used by earlier lists")
            lines.append(line)
        return lines + [f"  note: {n}" for n in self.notes] + [f"  warning: {w}" for w in self.warnings]


OUTCOMES = ("cvd", "t2d", "hypertension")


def model_band_column(outcome: str, horizon_years: int | None) -> str:
    """``cvd_model_5y_band``: a headline risk carries its horizon in its name, as
    ``qrisk3_10y_band`` does (the trained models' horizon is configured; where QRISK3 or
    QDiabetes ranks an outcome's list instead, do no harm, it is their 10 years)."""
    return f"{outcome}_model_{horizon_years}y_band" if horizon_years else f"{outcome}_model_band"


def list_columns(horizons: dict[str, int | None]) -> list[str]:
    """A list's columns, in order; ``horizons``: each model's horizon in years."""
    return ["pseudonym", "practice_pseudo_id", "practice_ods_code", "practice_name", "priority_rank", "urgent",
            "tier", "age_band", "sex",
            "ethnicity_group", "imd_quintile", "core20", "qrisk3_10y_band", "qdiabetes_10y_band",
            *[model_band_column(o, horizons.get(o)) for o in OUTCOMES],
            "hypertension_finding", "reasons", "suggested_actions", "set_aside", "to_measure"]


def model_horizons(patients: pl.DataFrame) -> dict[str, int | None]:
    """Each model's horizon (marts.risk_scores names it on every row: one value per outcome)."""
    horizons = {}
    for outcome in OUTCOMES:
        values = patients[f"{outcome}_model_horizon_years"].drop_nulls().unique().to_list()
        if len(values) > 1:
            raise ValueError(f"marts.risk_scores: {outcome} has more than one horizon ({sorted(values)})")
        horizons[outcome] = int(values[0]) if values else None
    return horizons


def for_people(rows: pl.DataFrame) -> pl.DataFrame:
    """The list as people read it (CSV, workbook): every list column joined by its separator
    (``JOINED_WITH``); an empty list is an empty cell."""
    return rows.with_columns(
        pl.when(pl.col(c).list.len() > 0).then(pl.col(c).list.join(sep)).alias(c)
        for c, sep in JOINED_WITH.items() if c in rows.columns and rows.schema[c] == pl.List(pl.String))


# The lists' history: one row per patient on a published list, pseudonymous and per practice
# (the pseudonym under the practice's key, as on the list itself), never in an output. It
# decides who was invited recently (``recently_invited_days``) and how much of a period's
# capacity earlier lists used. A list for the same index date is that list run again: it is
# replaced when the rerun publishes, and neither rule counts it. The patient's broad ethnic group
# and IMD quintile when listed are kept for the uptake of invitations by group (phm/outcomes.py):
# equity is judged on the groups patients were invited as, including those who left since.
HISTORY = "lists.invitations"
HISTORY_COLUMNS = ("practice_pseudo_id", "pseudonym", "list_date", "urgent", "ethnicity_group", "imd_quintile")
CREATE_HISTORY = ("create table lists.invitations (practice_pseudo_id bigint, pseudonym varchar, list_date date, "
                  "urgent boolean, ethnicity_group varchar, imd_quintile integer)")
OLD_HISTORY_COLUMNS = ("patient_id", "list_date")  # before issue 18: every list of every practice
WITHOUT_GROUPS = HISTORY_COLUMNS[:4]  # issue 18's first shape, before the uptake by group


def period_bounds(day: dt.date | str, period: str) -> tuple[dt.date, dt.date]:
    """The capacity period holding ``day``: (its first day, the next period's first day), the
    calendar month, or the week from Monday (ISO 8601)."""
    day = dt.date.fromisoformat(day) if isinstance(day, str) else day
    if period == "week":
        start = day - dt.timedelta(days=day.weekday())
        return start, start + dt.timedelta(days=7)
    if period == "month":
        start = day.replace(day=1)
        return start, (start + dt.timedelta(days=32)).replace(day=1)
    raise ValueError(f"capacity period: one of {', '.join(CAPACITY_PERIODS)}, not {period!r}")


def _history_columns(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [name for (name,) in con.execute(
        "select column_name from information_schema.columns where table_schema = 'lists' "
        "and table_name = 'invitations' order by ordinal_position").fetchall()]


def prepare_history(con: duckdb.DuckDBPyConnection, key: bytes) -> list[str]:
    """``lists.invitations`` in its current shape, created if missing. A database from before
    issue 18 holds (patient_id, list_date): its rows are carried over, each patient under the
    practice they are registered with now (marts.mart_patient_features) and its pseudonym,
    ``urgent`` unknown (null); a patient no longer registered cannot be placed, and cannot be a
    candidate either, so their rows go. Returns what it did, counts suppressed, for the run's
    summary."""
    con.execute("create schema if not exists lists")
    columns = _history_columns(con)
    if not columns:
        con.execute(CREATE_HISTORY)
        return []
    if columns == list(HISTORY_COLUMNS):
        return []
    if columns == list(WITHOUT_GROUPS):  # the groups of patients listed then are not known
        con.execute("alter table lists.invitations add column ethnicity_group varchar")
        con.execute("alter table lists.invitations add column imd_quintile integer")
        return []
    if columns != list(OLD_HISTORY_COLUMNS):
        raise DatabaseError(f"{HISTORY}: columns {', '.join(columns)} are neither the lists' history "
                            f"({', '.join(HISTORY_COLUMNS)}) nor its earlier shape ({', '.join(OLD_HISTORY_COLUMNS)})")
    old = con.execute("select i.patient_id, i.list_date, f.practice_pseudo_id, f.ethnicity_group, f.imd_quintile "
                      "from lists.invitations as i left join marts.mart_patient_features as f using (patient_id)").pl()
    placed = old.filter(pl.col("practice_pseudo_id").is_not_null())
    carried = placed.with_columns(pseudonymise(placed, key)).select(
        "practice_pseudo_id", "pseudonym", "list_date", pl.lit(None, pl.Boolean).alias("urgent"),
        "ethnicity_group", pl.col("imd_quintile").cast(pl.Int32)).unique()
    con.register("carried_frame", carried.to_arrow())
    try:
        with transaction(con):
            con.execute("drop table lists.invitations")
            con.execute(CREATE_HISTORY)
            con.execute("insert into lists.invitations select * from carried_frame")
    finally:
        con.unregister("carried_frame")
    dropped = old.height - placed.height
    return [f"{HISTORY} moved to its pseudonymous shape: {show(placed.height)} earlier listings carried over"
            + (f", {show(dropped)} of patients no longer registered dropped" if dropped else "")]


def listed_before(con: duckdb.DuckDBPyConnection, index_date, settings: ListSettings) -> pl.DataFrame:
    """Every (practice, pseudonym) on an earlier list that matters to this one: ``recently_invited``
    (a list in the ``recently_invited_days`` before the index date) and ``listed_this_period``
    (a list of the same capacity period, other than this index date's own)."""
    start, end = period_bounds(index_date, settings.capacity_period)
    recent = [index_date, settings.recently_invited_days, index_date]
    period = [start, end, index_date]
    return con.execute(
        "select practice_pseudo_id, pseudonym, "
        "bool_or(list_date > ?::date - ?::integer and list_date < ?::date) as recently_invited, "
        "bool_or(list_date >= ?::date and list_date < ?::date and list_date <> ?::date) as listed_this_period "
        "from lists.invitations "
        "where (list_date > ?::date - ?::integer and list_date < ?::date) "
        "or (list_date >= ?::date and list_date < ?::date and list_date <> ?::date) "
        "group by practice_pseudo_id, pseudonym",
        [*recent, *period, *recent, *period]).pl()


def record_invitations(con: duckdb.DuckDBPyConnection, run: ListRun, index_date) -> None:
    """After a list is published: remember who was on it, under which practice, and whether
    urgently (for ``recently_invited_days`` and the period's capacity). A rerun for the same
    index date replaces its own rows."""
    if _history_columns(con) != list(HISTORY_COLUMNS):
        raise DatabaseError(f"{HISTORY}: not in its current shape; build_lists prepares it before a list is made")
    invited = run.invited.select("practice_pseudo_id", "pseudonym", "urgent", "ethnicity_group",
                                 pl.col("imd_quintile").cast(pl.Int32))
    con.register("invited_frame", invited.to_arrow())
    try:
        with transaction(con):
            con.execute("delete from lists.invitations where list_date = ?::date", [index_date])
            con.execute("insert into lists.invitations select practice_pseudo_id, pseudonym, ?::date, urgent, "
                        "ethnicity_group, imd_quintile from invited_frame", [index_date])
    finally:
        con.unregister("invited_frame")


# What to measure or record first where QRISK3 or QDiabetes took the model's default for a
# missing input (models/scores.py notes "defaulted: <input>"; ClinRisk's input names). The
# deprivation score (town) comes from the postcode, not from the patient, so it is not asked for.
MEASURE_FOR_DEFAULT = {"sbp": "blood pressure", "sbps5": "blood pressure", "rati": "cholesterol", "bmi": "BMI",
                       "smoke_cat": "smoking status", "ethrisk": "ethnicity"}


ETHNICITY_TO_RECORD = MEASURE_FOR_DEFAULT["ethrisk"]


def scores_assume_white() -> pl.Expr:
    """The patient's QRISK3 or QDiabetes read them as White because their ethnicity is not known
    ('Not known': no code stating a category; the mart maps it to QRISK3's "White or not stated"
    before scoring, so the scores note no default). 'Not stated' is the patient's own answer and
    is not counted: asking again is for the practice's re-ask worklist, not for the list."""
    scored = pl.col("qrisk3_10y_band").is_not_null() | pl.col("qdiabetes_10y_band").is_not_null()
    return ((pl.col("ethnicity_group") == broad_group(NOT_KNOWN)) & scored).fill_null(False).alias("scores_assume_white")


def to_measure(assumed_white: pl.Expr | None = None) -> pl.Expr:
    """The measurements a patient's QRISK3 or QDiabetes is missing, e.g. ["cholesterol", "BMI"]
    (null when none): measured, the score on the next list is the patient's own. "ethnicity" where
    a score noted it defaulted (``phm calc``) or ``assumed_white`` holds (``scores_assume_white``:
    in the pipeline a missing ethnicity is read as White before scoring)."""
    notes = pl.concat_str(pl.col("qrisk3_notes").fill_null(""), pl.col("qdiabetes_notes").fill_null(""), separator="; ")
    items = [pl.when(notes.str.contains(f"defaulted: {name}", literal=True)
                     | (assumed_white if name == "ethrisk" and assumed_white is not None else pl.lit(False)))
             .then(pl.lit(label)) for name, label in MEASURE_FOR_DEFAULT.items()]
    listed = pl.concat_list(items).list.drop_nulls().list.unique(maintain_order=True)
    return pl.when(listed.list.len() > 0).then(listed).alias("to_measure")


def measure_first(urgent: pl.Expr | None = None) -> pl.Expr:
    """A patient whose QRISK3 or QDiabetes rests on defaults is asked to measure them first: the
    first suggested actions, e.g. "record ethnicity (not known: the risk scores read it as White)"
    and "measure first: cholesterol, BMI (the risk scores took a default)"; the reasons' risks are
    the defaults' until then. Except for an urgent patient (``urgent``, e.g. ``pl.col("urgent")``):
    the urgent review comes first and the measurements after it, since an undiagnosed
    180/120 or an HbA1c of 48 does not wait for a cholesterol test."""
    measurements = pl.col("to_measure").list.set_difference([ETHNICITY_TO_RECORD])
    ethnicity = pl.col("to_measure").list.contains(ETHNICITY_TO_RECORD).fill_null(False)
    asked = pl.concat_list(
        pl.when(ethnicity).then(pl.lit(f"record {ETHNICITY_TO_RECORD} (not known: the risk scores read it as White)")),
        pl.when(measurements.list.len() > 0).then(
            pl.format("measure first: {} (the risk scores took a default)", measurements.list.join(", "))))
    first = pl.concat_list(asked, pl.col("suggested_actions")).list.drop_nulls()
    after = pl.concat_list(pl.col("suggested_actions"), asked).list.drop_nulls()
    urgent = pl.lit(False) if urgent is None else urgent.fill_null(False)
    return pl.when(pl.col("to_measure").is_null()).then(pl.col("suggested_actions")) \
        .when(urgent).then(after).otherwise(first).alias("suggested_actions")


def exclusion(settings: ListSettings) -> pl.Expr:
    """Why a candidate is not listed (null: listed, capacity allowing), first cause first. An
    urgent patient invited recently is listed again: an undiagnosed 180/120 does not wait."""
    return (pl.when(pl.col("palliative_care").fill_null(False)).then(pl.lit("palliative care"))
            .when(pl.col("care_home").fill_null(False) & pl.lit(settings.exclude_care_homes)).then(pl.lit("care home"))
            .when(pl.col("treatment_exclusion").is_not_null()).then(pl.col("treatment_exclusion"))
            .when(pl.col("recently_invited").fill_null(False) & ~pl.col("urgent").fill_null(False))
            .then(pl.lit("recently invited"))
            .otherwise(None).alias("exclusion"))


def build_lists(con: duckdb.DuckDBPyConnection, settings: ListSettings, key: bytes, index_date) -> ListRun:
    settings.validate()
    notes = prepare_history(con, key)
    reason_rows = reasons(con, settings)  # prepares the parameters and macros PATIENT_COLUMNS uses
    patients = con.execute(PATIENT_COLUMNS).pl()
    candidates = per_patient(reason_rows).join(patients, on="patient_id", how="left")
    candidates = candidates.with_columns(pseudonymise(candidates, key))
    earlier = listed_before(con, index_date, settings)
    candidates = candidates.join(earlier, on=["practice_pseudo_id", "pseudonym"], how="left").with_columns(
        exclusion(settings))
    practices = patients.select("practice_pseudo_id", "pcn_code").unique()
    this_period = earlier.filter(pl.col("listed_this_period")).join(practices, on="practice_pseudo_id")
    unit, _ = settings.capacity_unit()
    used = this_period.group_by(unit).agg(pl.len().alias("listed_earlier"))
    eligible = order_and_cap(candidates.filter(pl.col("exclusion").is_null()), settings, used)
    on_list = eligible.filter(pl.col("on_list")).with_columns(
        _age_band(pl.col("age_years")).alias("age_band"),
        scores_assume_white(),
    ).with_columns(to_measure(pl.col("scores_assume_white"))).with_columns(measure_first(pl.col("urgent"))).sort("pcn_code", "practice_pseudo_id", "priority_rank").join(
        practice_identity(con), on="practice_pseudo_id", how="left", maintain_order="left")
    horizons = model_horizons(patients)
    on_list = on_list.rename({f"{o}_model_risk_band": model_band_column(o, horizons[o]) for o in OUTCOMES})
    counts = _counts(candidates, eligible, this_period.group_by("pcn_code").agg(
        pl.len().alias("listed_earlier_in_period")))
    capacity = period_capacity(settings, index_date, practices)
    run = ListRun(on_list.select("pcn_code", *list_columns(horizons)), counts,
                  invited=on_list.select("practice_pseudo_id", "pseudonym", "urgent", "ethnicity_group", "imd_quintile"),
                  warnings=urgent_beyond_capacity(eligible, settings, used), notes=notes, capacity=capacity)
    run.reask = reask_worklist(con, settings, key, on_list)
    adults = patients.filter(pl.col("age_years") >= 18)  # everyone a reason can apply to
    for row in counts.iter_rows(named=True):
        pcn = row["pcn_code"]
        summary = pcn_summary(adults.filter(pl.col("pcn_code") == pcn), on_list.filter(pl.col("pcn_code") == pcn),
                              candidates.filter(pl.col("pcn_code") == pcn),
                              {"period": settings.capacity_period, "from": capacity["from"],
                               "capacity": capacity["pcns"].get(pcn, 0), **row})
        run.summary[pcn] = pl.concat([summary, reask_summary(run.reask.filter(pl.col("pcn_code") == pcn))])
    return run


# Why a practice might ask a patient's ethnicity again (sql/lists/ethnicity_reask.sql), in the
# worklist's order: the audit cannot see a group its records do not name, and for the first a
# computed QRISK3 or QDiabetes read the patient as White (REASK_READ_AS_WHITE says so, on the rows
# of patients who were scored: "QRISK3 and QDiabetes took White" was also written for patients
# neither score applies to).
REASK_REASONS = {
    "no_ethnicity_recorded": "no ethnicity recorded",
    "conflicting_codes": "codes of more than one ethnic category",
    "any_other_category": "only an 'any other' category: a specific one may fit",
    "not_stated_long_ago": "'not stated' before the re-ask window: may be asked again",
}
REASK_READ_AS_WHITE = f"{REASK_REASONS['no_ethnicity_recorded']}: the risk scores read it as White"
# ``on_targeting_list``: the patient is on this run's targeting list (the worklist is a list too:
# it was ``on_a_list``, which did not say which)
REASK_COLUMNS = ["pseudonym", "practice_pseudo_id", "practice_ods_code", "practice_name", "on_targeting_list",
                 "reask_reason"]
REASK_SQL = SQL_DIR / "lists" / "ethnicity_reask.sql"


def reask_worklist(con: duckdb.DuckDBPyConnection, settings: ListSettings, key: bytes,
                   on_list: pl.DataFrame) -> pl.DataFrame:
    """The ethnicity re-ask worklist: pseudonymous like the lists, per practice, patients on this
    run's lists first (their scores depend on it), then by reason. Asking is voluntary; 'not
    stated' is a valid answer, not asked again within ``reask_not_stated_days``."""
    con.execute("create schema if not exists lists")
    con.execute("create or replace table lists.reask_parameters as select ?::integer as not_stated_days",
                [settings.reask_not_stated_days])
    rows = con.execute(REASK_SQL.read_text()).pl()
    rows = rows.with_columns(pseudonymise(rows, key)).join(
        on_list.select("pseudonym", pl.lit(True).alias("on_targeting_list")), on="pseudonym", how="left").with_columns(
        pl.col("on_targeting_list").fill_null(False),
        pl.col("reask_reason").replace_strict(list(REASK_REASONS), list(range(len(REASK_REASONS)))).alias("_order"),
        pl.when((pl.col("reask_reason") == "no_ethnicity_recorded") & pl.col("scored"))
        .then(pl.lit(REASK_READ_AS_WHITE))
        .otherwise(pl.col("reask_reason").replace_strict(REASK_REASONS)).alias("reask_reason"))
    rows = rows.join(practice_identity(con), on="practice_pseudo_id", how="left")
    return rows.sort(["pcn_code", "practice_pseudo_id", "on_targeting_list", "_order", "pseudonym"],
                     descending=[False, False, True, False, False]).select("pcn_code", *REASK_COLUMNS)


def reask_summary(reask: pl.DataFrame) -> pl.DataFrame:
    """The worklist's size by reason, as the summary's rows (suppressed)."""
    rows = []
    for reason in REASK_REASONS.values():
        texts = [reason, REASK_READ_AS_WHITE] if reason == REASK_REASONS["no_ethnicity_recorded"] else [reason]
        own = reask.filter(pl.col("reask_reason").is_in(texts))
        rows.append({"section": "ethnicity re-ask", "value": reason,
                     "patients": suppress(int(own["on_targeting_list"].sum())), "registered_adults": suppress(own.height)})
    return pl.DataFrame(rows, schema=SUMMARY_SCHEMA)


def practice_identity(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Each practice's ODS code and name, as the extract gives them (optional columns of the
    contract's practices table: empty where the extract leaves them out)."""
    return con.execute("select practice_pseudo_id, ods_code as practice_ods_code, practice_name "
                       "from main.practices").pl()


def period_capacity(settings: ListSettings, index_date, practices: pl.DataFrame) -> dict:
    """The capacity period of this list and each PCN's capacity in it (per practice times its
    practices, or per PCN): configuration, not a count of patients."""
    start, end = period_bounds(index_date, settings.capacity_period)
    per_pcn = practices.group_by("pcn_code").len().sort("pcn_code")
    return {"period": settings.capacity_period, "from": start.isoformat(),
            "to": (end - dt.timedelta(days=1)).isoformat(),
            "capacity_per_practice": settings.capacity_per_practice, "capacity_per_pcn": settings.capacity_per_pcn,
            "pcns": {pcn: settings.capacity_per_pcn if settings.capacity_per_pcn is not None
                     else n * settings.capacity_per_practice for pcn, n in per_pcn.iter_rows()}}


def urgent_beyond_capacity(eligible: pl.DataFrame, settings: ListSettings, used: pl.DataFrame | None = None) -> list[str]:
    """A warning for each practice (or PCN) whose urgent patients alone exceed the capacity it
    has left in the period (capacity less ``used.listed_earlier``; an urgent patient already
    listed this period takes no new place): they are all listed, no one else is, and the team
    needs to know before it plans the week."""
    unit, capacity = settings.capacity_unit()
    again = pl.col("listed_this_period").fill_null(False) if "listed_this_period" in eligible.columns else pl.lit(False)
    # with capacity per PCN the unit is pcn_code itself: grouping by it twice was a DuplicateError
    keys = list(dict.fromkeys(["pcn_code", unit]))
    over = eligible.group_by(keys).agg((pl.col("urgent") & ~again).sum().alias("n"))
    if used is not None and used.height:
        over = over.join(used.select(unit, "listed_earlier"), on=unit, how="left")
    else:
        over = over.with_columns(pl.lit(0).alias("listed_earlier"))
    over = over.with_columns(pl.col("listed_earlier").fill_null(0)).filter(
        pl.col("n") > (capacity - pl.col("listed_earlier")).clip(lower_bound=0))
    where = "practice" if unit == "practice_pseudo_id" else "PCN"
    period = settings.capacity_period

    def limit(earlier: int) -> str:
        return f"{capacity}, of which {show(earlier)} already used" if earlier else f"{capacity}"
    return [f"PCN {row['pcn_code']}: {'practice ' + str(row[unit]) if where == 'practice' else 'the PCN'} "
            "has more urgent patients "
            f"({show(row['n'])}) than its capacity for the {period} ({limit(row['listed_earlier'])}); "
            "all are listed, and no one else"
            for row in over.sort(keys).iter_rows(named=True)]


def _counts(candidates: pl.DataFrame, eligible: pl.DataFrame, earlier: pl.DataFrame | None = None) -> pl.DataFrame:
    excluded = candidates.filter(pl.col("exclusion").is_not_null()).group_by("pcn_code", "exclusion").len()
    by_reason = excluded.pivot(on="exclusion", index="pcn_code", values="len") if excluded.height else \
        pl.DataFrame({"pcn_code": []}, schema={"pcn_code": pl.String})
    # the pivot's columns come in the order the reasons appear, which group_by does not fix: sorted,
    # so the manifest's per-PCN counts are the same bytes on every run of the same data
    by_reason = by_reason.select("pcn_code", *sorted(c for c in by_reason.columns if c != "pcn_code"))
    placed = eligible.group_by("pcn_code").agg(pl.col("on_list").sum().alias("on_list"),
                                               (~pl.col("on_list")).sum().alias("over_capacity"))
    total = candidates.group_by("pcn_code").agg(pl.len().alias("candidates"),
                                                pl.col("exclusion").is_not_null().sum().alias("excluded"))
    out = total.join(placed, on="pcn_code", how="left")
    if earlier is not None:  # patients the PCN's earlier lists of the period took: its capacity used
        out = out.join(earlier.select("pcn_code", pl.col("listed_earlier_in_period").cast(pl.Int64)),
                       on="pcn_code", how="left")
    out = out.join(by_reason, on="pcn_code", how="left")
    out = out.with_columns(pl.col(c).fill_null(0) for c in out.columns if c != "pcn_code").sort("pcn_code")
    if not (out["candidates"] == out["on_list"] + out["over_capacity"] + out["excluded"]).all():
        raise AssertionError("list rows do not add up: candidates != on list + over capacity + excluded")
    return out


# A PCN's summary (``pcn_summary``, ``reask_summary``): ``patients`` counts the patients a row
# describes (those on the list for total, tier, ethnic group, IMD quintile and ethnicity not known;
# those excluded, set aside, over capacity or taken by earlier lists for those sections; the
# worklist's patients who are on the list for ethnicity re-ask), ``registered_adults`` the PCN's
# registered adults in the row's group (for ethnicity re-ask: the worklist's patients with that
# reason). Both are suppressed; ``registered_adults`` is a count only in WITH_BASE, and a
# SETTING row (configuration, in its text) counts nothing. ``patients`` was ``on_list``, which
# read wrongly on every row whose patients are not on the list (excluded, the backlog).
SUMMARY_SCHEMA = {"section": pl.String, "value": pl.String, "patients": pl.Int64, "registered_adults": pl.Int64}
SUMMARY_COUNTS = ("patients", "registered_adults")
WITH_BASE = ("total", "ethnic group", "IMD quintile", "ethnicity re-ask")
SETTING = "capacity setting"


def pcn_summary(population: pl.DataFrame, on_list: pl.DataFrame, candidates: pl.DataFrame,
                capacity: dict | None = None) -> pl.DataFrame:
    """Aggregate, suppressed: the list against the PCN's registered adults (everyone a reason can
    apply to), by tier, ethnic group and IMD quintile; exclusions by reason; with ``capacity``
    (period, from, capacity, over_capacity, listed_earlier_in_period), the backlog and how much of
    the period's capacity earlier lists used (SUMMARY_SCHEMA; ``summary_for_people`` writes it for
    people)."""
    rows = []

    def add(section: str, value: str, listed: int, base: int | None) -> None:
        if (base is not None) != (section in WITH_BASE):
            raise ValueError(f"summary section {section!r}: registered_adults is counted only in {WITH_BASE}")
        rows.append({"section": section, "value": value, "patients": suppress(listed),
                     "registered_adults": None if base is None else suppress(base)})

    add("total", "all", on_list.height, population.height)
    if capacity is not None:
        period = capacity["period"]
        add("backlog", f"over capacity: with a reason, eligible, waiting for a later {period}",
            capacity["over_capacity"], None)
        # configuration, not a count of patients: in the text, so the count columns hold only counts
        rows.append({"section": SETTING, "value": f"the {period}'s from {capacity['from']}: {capacity['capacity']}",
                     "patients": None, "registered_adults": None})
        add("capacity", f"used by earlier lists of the {period}", capacity.get("listed_earlier_in_period", 0), None)
    for tier, n in on_list.group_by("tier").len().sort("tier").iter_rows():
        add("tier", str(tier), n, None)
    if "scores_assume_white" in on_list.columns:
        # how many listed patients' QRISK3/QDiabetes read them as White because ethnicity is not known
        add("ethnicity not known", "scores read the patient as White: record ethnicity",
            int(on_list["scores_assume_white"].sum()), None)
    for column, label in (("ethnicity_group", "ethnic group"), ("imd_quintile", "IMD quintile")):
        registered = dict(population.group_by(column).len().iter_rows())
        listed = dict(on_list.group_by(column).len().iter_rows())
        for value in sorted(registered, key=lambda v: (v is None, str(v))):
            add(label, "unknown" if value is None else str(value), listed.get(value, 0), registered[value])
    for reason, n in candidates.filter(pl.col("exclusion").is_not_null()).group_by("exclusion").len().sort(
            "exclusion").iter_rows():
        add("excluded", reason, n, None)
    # every reason set aside (patients listed for another reason included): what practices recorded
    if "set_aside" in candidates.columns:
        aside = candidates.select("set_aside").explode("set_aside").drop_nulls()
        for reason, n in aside.group_by("set_aside").len().sort("set_aside").iter_rows():
            add("reason set aside", reason, n, None)
    return pl.DataFrame(rows, schema=SUMMARY_SCHEMA)


def summary_for_people(summary: pl.DataFrame) -> pl.DataFrame:
    """A PCN's summary as people read it (the workbook's summary sheet): each count as
    ``phm.disclosure.show`` writes it ("[suppressed]" for 1-7, others rounded to 5), and empty
    where the row counts nothing (the capacity setting; ``registered_adults`` outside WITH_BASE).
    The counts are already suppressed (``pcn_summary``): ``show`` leaves a rounded count as it is,
    and a null in a counted cell can only be a suppressed count. (In the summary CSV, for
    software, a suppressed count is an empty cell, as is a cell that counts nothing.)"""
    section = pl.col("section") if "section" in summary.columns else pl.lit(None, pl.String)

    def shown(column: str) -> pl.Expr:
        counted = (section != SETTING) if column == "patients" else section.is_in(list(WITH_BASE))
        text = pl.col(column).map_elements(show, return_dtype=pl.String)
        return (pl.when(pl.col(column).is_not_null()).then(text)
                .when(counted.fill_null(False)).then(pl.lit(SUPPRESSED))
                .otherwise(None).alias(column))

    return summary.with_columns(shown(c) for c in SUMMARY_COUNTS if c in summary.columns)


def settings_from(table: dict, where: str = "lists") -> ListSettings:
    """``[lists]`` of the run configuration, keys checked by name."""
    fields = {f.name: f for f in dataclasses.fields(ListSettings)}
    values = {}
    for key, value in table.items():
        if key not in fields:
            raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(sorted(fields))})")
        if key == "plus_groups":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}.plus_groups: a list of group names, e.g. [\"Black\"]")
            value = tuple(value)
        elif key in ("capacity_per_practice", "capacity_per_pcn", "recently_invited_days", "reask_not_stated_days"):
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"{where}.{key}: must be an integer, not {value!r}")
        elif key == "exclude_care_homes":
            if not isinstance(value, bool):
                raise ConfigError(f"{where}.{key}: must be true or false, not {value!r}")
        elif key == "risk_band_edges":
            if not isinstance(value, list) or not all(isinstance(v, int | float) and not isinstance(v, bool)
                                                      for v in value):
                raise ConfigError(f"{where}.risk_band_edges: a list of percentages, e.g. [5, 10, 15, 20, 30, 50]")
            value = tuple(float(v) for v in value)
        elif key in ("prioritisation", "capacity_period"):
            if not isinstance(value, str):
                raise ConfigError(f"{where}.{key}: must be text, not {value!r}")
        elif not isinstance(value, int | float) or isinstance(value, bool):
            raise ConfigError(f"{where}.{key}: must be a number, not {value!r}")
        values[key] = value
    if "capacity_per_pcn" in values and "capacity_per_practice" not in values:
        values["capacity_per_practice"] = None
    settings = ListSettings(**values)
    settings.validate()
    return settings
