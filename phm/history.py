"""Run history and drift: each run's aggregates, kept in the run's database, and the population
stability index (PSI) of each score per broad ethnic group between a run and the one before.

Tables (schema ``history`` of ``<out>/phm.duckdb``, appended to by every ``phm run``, never
replaced):

- ``history.runs``: one row per run: run id and time, ICB, extract and index dates, whether
  lists were published, the gate's overall result, the ICB's patients (suppressed), the PSI
  threshold used and how many drift findings the run raised.
- ``history.figures``: long format, one row per figure: ``figure`` (gate, data quality, score
  share, list size, uptake, psi; ``ethnicity dq``: the ethnicity data-quality report's figures per
  practice, PCN and ICB, ``grp`` '<level> <unit>', ``label`` 'flag' where flagged), ``subject`` (the outcome, score, table or PCN), ``grp`` (the
  broad ethnic group, 'all', or an IMD quintile), ``bin`` (a score bin such as ``5-7.5%``),
  ``value`` (a number; null where withheld) and ``label`` (text: a gate result and who signed it
  off). **Everything here is as it may leave the pipeline** (phm/disclosure.py): counts 1-7
  suppressed (null), others rounded to 5; shares computed from the rounded counts, and withheld
  where the count they rest on is 1-7. The report and MLflow read only this table.
- ``history.score_bins``: the exact number of patients per run, score, group and bin. **Exact,
  in the database only** (like ``ingest.table_counts`` and the patient-level tables beside it):
  the PSI is computed from these exact counts, before any suppression, because rounding a small
  bin to 0 or 5 would itself move the PSI. Nothing reads this table into an output; the PSI that
  leaves (the figure ``psi``) is one number per group of at least ``min_group`` patients.
- ``history.drift``: the PSI per score and group against the previous run, with both runs'
  group sizes (suppressed) and whether it was judged and found drifted.

The PSI (the scorecard-monitoring statistic of credit risk; Siddiqi, *Credit Risk
Scorecards*, Wiley 2006; its sampling distribution in Yurdakul, *Statistical properties
of the population stability index*, Western Michigan University, 2018):

    PSI = sum over bins of (a_i - e_i) * ln(a_i / e_i)

where ``e_i`` is the share of the group's patients in bin ``i`` in the previous run and ``a_i``
in this one. The usual reading: under 0.1 no real change, 0.1-0.25 some change, over 0.25 a
significant shift (Siddiqi). The default threshold, 0.2 (``[alerts] max_score_psi``), sits
inside the "some change" band, below Siddiqi's 0.25: an ICS would rather look at a shift early.
An empty bin in either run would make the logarithm infinite: a share of 0 is taken as
``EPSILON`` = 0.0001 (a common choice in scorecard monitoring), less than one patient in any
group that is judged (``min_group`` 500 patients: one patient is 0.002), so a bin that empties
counts as a real, finite shift.

Bins are fixed, on the risk in per cent, the same for every score and run so that runs compare
(``BIN_EDGES_PCT``: 0, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 100; 12 bins, finer where most
patients are). A model's list-ranking risk is a probability and is taken in per cent.

Small groups: with no change at all, PSI is about (1/n + 1/m) times a chi-square on (bins - 1)
degrees of freedom for groups of n and m patients (Yurdakul 2018): at 100 patients a run its
mean is 0.22 and it would alarm on noise. A group is judged only when it has at least
``min_group`` patients in both runs (default 500: mean 0.044 with no change, 99.9th percentile
0.125, under the threshold); smaller groups are recorded as not judged.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

import duckdb
import polars as pl

from phm.db import transaction
from phm.disclosure import SUPPRESSED_BELOW, suppress

BIN_EDGES_PCT = (0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 50.0, 100.0)
EPSILON = 0.0001
DEFAULT_MAX_PSI = 0.2
DEFAULT_MIN_GROUP = 500
ALL = "all"

# figure names of history.figures
GATE, QUALITY, SCORE_SHARE, LIST_SIZE, UPTAKE, PSI, PATIENTS = (
    "gate", "data quality", "score share", "list size", "uptake", "psi", "patients")


def bin_label(i: int) -> str:
    low, high = BIN_EDGES_PCT[i], BIN_EDGES_PCT[i + 1]
    return f"{low:g}-{high:g}%"


BIN_LABELS = tuple(bin_label(i) for i in range(len(BIN_EDGES_PCT) - 1))


def psi(expected: list[int] | tuple[int, ...], actual: list[int] | tuple[int, ...], epsilon: float = EPSILON) -> float:
    """The population stability index of ``actual`` against ``expected``: counts per bin (the
    same bins, in the same order). A bin's share of 0 is taken as ``epsilon``."""
    if len(expected) != len(actual):
        raise ValueError(f"different numbers of bins: {len(expected)} and {len(actual)}")
    n_e, n_a = sum(expected), sum(actual)
    if n_e <= 0 or n_a <= 0:
        raise ValueError("a distribution with no patients has no PSI")
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        pe, pa = max(e / n_e, epsilon), max(a / n_a, epsilon)
        if e == 0 and a == 0:
            continue
        total += (pa - pe) * math.log(pa / pe)
    return total


def bin_counts(scores: pl.DataFrame) -> pl.DataFrame:
    """``scores``: one row per patient and score, columns ``score`` (its name), ``grp`` (broad
    ethnic group) and ``risk_pct`` (null: the score does not apply). Returns the exact patients
    per score, group (and 'all') and bin, every bin present (zeros too)."""
    scored = scores.filter(pl.col("risk_pct").is_not_null() & pl.col("risk_pct").is_not_nan())
    edges = list(BIN_EDGES_PCT[1:-1])
    # left-closed bins [low, high); 100% falls in the last one
    binned = scored.with_columns(
        pl.col("risk_pct").clip(0.0, 100.0).cut(edges, labels=list(BIN_LABELS), left_closed=True)
        .cast(pl.String).alias("bin"),
        pl.col("grp").cast(pl.String).fill_null("Not known"))
    both = pl.concat([binned.select("score", "grp", "bin"),
                      binned.select("score", pl.lit(ALL).alias("grp"), "bin")])
    counts = both.group_by("score", "grp", "bin").agg(pl.len().cast(pl.Int64).alias("patients"))
    frame = counts.select("score", "grp").unique().join(
        pl.DataFrame({"bin": list(BIN_LABELS), "bin_index": list(range(len(BIN_LABELS)))}), how="cross")
    return frame.join(counts, on=["score", "grp", "bin"], how="left").with_columns(
        pl.col("patients").fill_null(0)).sort("score", "grp", "bin_index").select(
        "score", "grp", "bin_index", "bin", "patients")


def shared(count: int, total: int) -> float | None:
    """A share as it may leave the pipeline: from the rounded counts, withheld (None) where
    the count or the total is 1-7."""
    if 0 < count < SUPPRESSED_BELOW or 0 < total < SUPPRESSED_BELOW:
        return None
    c, t = suppress(count), suppress(total)
    return round(c / t, 4) if t else None


@dataclass(frozen=True)
class DriftSettings:
    max_psi: float = DEFAULT_MAX_PSI
    min_group: int = DEFAULT_MIN_GROUP


@dataclass(frozen=True)
class Drift:
    score: str
    grp: str
    psi: float | None  # None: not judged (too few patients in one run)
    patients: int  # exact, this run (database only; shown suppressed)
    previous_patients: int
    previous_run_id: str
    judged: bool
    drifted: bool


@dataclass
class RunFacts:
    """What a run is, and what its gate decided (``decision.manifest()``: outcome -> gate,
    may_publish, ranks_list, signoff)."""

    run_id: str
    run_at: dt.datetime
    icb: str
    extract_date: dt.date | None
    index_date: dt.date | None
    published: bool
    gate: dict = field(default_factory=dict)
    # table -> (rows quarantined by its own rules, rows read), exact: stored as a share, withheld at 1-7 rows
    quarantined: dict[str, tuple[int, int]] = field(default_factory=dict)
    extract_digest: str = ""


@dataclass
class HistoryAppend:
    run_id: str
    drift: list[Drift]
    settings: DriftSettings
    # what ranks a list changed since the previous run (do no harm): its list risk moves with it
    ranking_changes: list[str] = field(default_factory=list)

    @property
    def findings(self) -> list[Drift]:
        return [d for d in self.drift if d.drifted]

    def summary_lines(self) -> list[str]:
        judged = [d for d in self.drift if d.judged]
        if not self.drift:
            return ["history: this run is the first of its ICB in the history (no drift to measure)"]
        lines = [f"history: score drift against the previous run (PSI, threshold {self.settings.max_psi:g}; "
                 f"{len(judged)} score x group pairs judged, {len(self.drift) - len(judged)} with fewer than "
                 f"{self.settings.min_group} patients in a run not judged)"]
        for d in self.findings:
            lines.append(f"  DRIFT: {d.score}, {d.grp}: PSI {d.psi:.2f} > {self.settings.max_psi:g}")
        if not self.findings:
            lines.append("  no drift above the threshold")
        return lines + [f"  note: {change}" for change in self.ranking_changes]


SCHEMA = (
    "create schema if not exists history",
    "create table if not exists history.runs (run_id varchar primary key, run_at timestamp, icb varchar, "
    "extract_date date, index_date date, published boolean, gate varchar, patients bigint, extract_digest varchar, "
    "max_psi double, min_group bigint, drift_findings integer)",
    "create table if not exists history.figures (run_id varchar, figure varchar, subject varchar, grp varchar, "
    "bin varchar, value double, label varchar)",
    "create table if not exists history.score_bins (run_id varchar, score varchar, grp varchar, bin_index integer, "
    "bin varchar, patients bigint)",
    "create table if not exists history.drift (run_id varchar, previous_run_id varchar, score varchar, grp varchar, "
    "psi double, patients bigint, previous_patients bigint, judged boolean, drifted boolean)",
)


def prepare(con: duckdb.DuckDBPyConnection) -> None:
    for statement in SCHEMA:
        con.execute(statement)


def _gate_label(entry: dict) -> str:
    status = entry.get("gate", "?")
    signoff = entry.get("signoff")
    if status == "PASS":
        return "PASS"
    if signoff:
        demo = " (demo sign-off)" if signoff.get("source") == "phm demo" else ""
        return f"{status} signed off by {signoff.get('reviewer')}{demo}"
    return f"{status}, not signed off"


def _overall(gate: dict) -> str:
    levels = [e.get("gate") for e in gate.values()]
    worst = next((level for level in ("FAIL", "WARN", "PASS") if level in levels), "not audited")
    return worst if all(e.get("may_publish") for e in gate.values()) or not gate else f"{worst} (refused)"


def quality_counts(groups: pl.Series) -> dict[str, int]:
    """``groups``: each patient's broad ethnic group (as the audit reads it). Exact counts."""
    g = groups.cast(pl.String).fill_null("Not known")
    return {"patients": len(g), "Not stated": int((g == "Not stated").sum()),
            "Not known": int((g == "Not known").sum())}


def figures_of(facts: RunFacts, bins: pl.DataFrame, quality: dict[str, int] | None,
               list_sizes: dict[str, int] | None, uptake: list[dict] | None) -> list[tuple]:
    """The run's figures as they may leave the pipeline: (figure, subject, grp, bin, value, label)."""
    rows: list[tuple] = []
    for outcome, entry in sorted(facts.gate.items()):
        rows.append((GATE, outcome, ALL, None, None, _gate_label(entry)))
        rows.append((GATE, f"{outcome} ranked by", ALL, None, None, entry.get("ranks_list", "model")))
    if quality:
        n = quality["patients"]
        rows.append((PATIENTS, "registered", ALL, None, suppress(n), None))
        recorded = n - quality["Not stated"] - quality["Not known"]
        for name, count in (("ethnicity recorded", recorded), ("ethnicity Z not stated", quality["Not stated"]),
                            ("ethnicity 99 not known", quality["Not known"])):
            rows.append((QUALITY, name, ALL, None, shared(count, n), None))
    for table, (quarantined, read) in sorted(facts.quarantined.items()):
        rows.append((QUALITY, f"quarantined: {table}", ALL, None, shared(quarantined, read), None))
    totals = bins.group_by("score", "grp").agg(pl.col("patients").sum().alias("total"))
    for r in bins.join(totals, on=["score", "grp"]).sort("score", "grp", "bin_index").iter_rows(named=True):
        rows.append((SCORE_SHARE, r["score"], r["grp"], r["bin"], shared(r["patients"], r["total"]), None))
    for r in totals.sort("score", "grp").iter_rows(named=True):
        rows.append((PATIENTS, r["score"], r["grp"], None, suppress(r["total"]), None))
    for pcn, size in sorted((list_sizes or {}).items()):
        rows.append((LIST_SIZE, pcn, ALL, None, suppress(int(size)), None))
    for u in uptake or []:  # already as it may leave (phm/outcomes.py uptake)
        grp = str(u["group"]) if u["grouping"] != "imd quintile" else f"IMD quintile {u['group']}"
        for share in ("contacted_share", "attended_share"):
            value = None if u["withheld"] or not u[share] else u[share]["value"]
            rows.append((UPTAKE, share.removesuffix("_share"), grp, None, value, None))
        rows.append((UPTAKE, "listed", grp, None, u["listed"], None))
    return rows


def _previous_bins(con: duckdb.DuckDBPyConnection, icb: str, run_id: str) -> dict[tuple[str, str], tuple[str, list[int]]]:
    """(score, group) -> (run id, counts per bin) of the latest earlier run of the ICB that has it."""
    rows = con.execute(
        "select b.run_id, b.score, b.grp, b.bin_index, b.patients from history.score_bins b "
        "join history.runs r using (run_id) where r.icb = ? and r.run_id <> ? "
        "order by r.run_at, r.run_id, b.bin_index", [icb, run_id]).fetchall()
    latest: dict[tuple[str, str], tuple[str, list[int]]] = {}
    for rid, score, grp, _, patients in rows:
        key = (score, grp)
        if key not in latest or latest[key][0] != rid:
            latest[key] = (rid, [])
        latest[key][1].append(int(patients))
    return latest


def ranking_changes(con: duckdb.DuckDBPyConnection, facts: RunFacts) -> list[str]:
    """Outcomes whose list is ranked by something else than in the ICB's previous run (the
    model, or QRISK3 / QDiabetes under do no harm): the list risk's distribution moves with it."""
    previous = con.execute("select run_id from history.runs where icb = ? and run_id <> ? order by run_at desc, "
                           "run_id desc limit 1", [facts.icb, facts.run_id]).fetchone()
    if previous is None:
        return []
    before = dict(con.execute("select subject, label from history.figures where run_id = ? and figure = ? "
                              "and subject like '% ranked by'", [previous[0], GATE]).fetchall())
    changes = []
    for outcome, entry in sorted(facts.gate.items()):
        was, now = before.get(f"{outcome} ranked by"), entry.get("ranks_list", "model")
        if was is not None and was != now:
            changes.append(f"the {outcome} list was ranked by {was} in the previous run and by {now} in this one, "
                           f"so its list risk's distribution moves with that")
    return changes


def measure_drift(previous: dict[tuple[str, str], tuple[str, list[int]]], bins: pl.DataFrame,
                  settings: DriftSettings) -> list[Drift]:
    found = []
    for (score, grp), frame in sorted(bins.partition_by(["score", "grp"], as_dict=True).items()):
        if (score, grp) not in previous:
            continue
        previous_run, before = previous[(score, grp)]
        now = frame.sort("bin_index")["patients"].to_list()
        n, m = sum(now), sum(before)
        judged = n >= settings.min_group and m >= settings.min_group
        value = psi(before, now) if judged else None
        found.append(Drift(score, grp, value, n, m, previous_run, judged, judged and value > settings.max_psi))
    return found


def append_run(con: duckdb.DuckDBPyConnection, facts: RunFacts, scores: pl.DataFrame | None,
               groups: pl.Series | None = None, list_sizes: dict[str, int] | None = None,
               uptake: list[dict] | None = None, settings: DriftSettings | None = None,
               extra_rows: list[tuple] | None = None) -> HistoryAppend:
    """Append one run to the history and measure each score's drift per group against the
    ICB's previous run. ``scores``: per patient and score (``score``, ``grp``, ``risk_pct``);
    ``groups``: every registered patient's broad ethnic group (data quality); ``list_sizes``:
    PCN -> patients on its list (exact; stored suppressed); ``uptake``: phm.outcomes.uptake();
    ``extra_rows``: further figures (figure, subject, grp, bin, value, label), already as they may
    leave the pipeline (the ethnicity data-quality report's: phm.ethnicity_dq.history_rows)."""
    settings = settings or DriftSettings()
    prepare(con)
    if con.execute("select count(*) from history.runs where run_id = ?", [facts.run_id]).fetchone()[0]:
        raise ValueError(f"run {facts.run_id} is already in the history")
    bins = bin_counts(scores) if scores is not None and not scores.is_empty() else pl.DataFrame(
        schema={"score": pl.String, "grp": pl.String, "bin_index": pl.Int64, "bin": pl.String, "patients": pl.Int64})
    drift = measure_drift(_previous_bins(con, facts.icb, facts.run_id), bins, settings)
    changes = ranking_changes(con, facts)
    quality = quality_counts(groups) if groups is not None else None
    rows = figures_of(facts, bins, quality, list_sizes, uptake) + list(extra_rows or [])
    rows += [(PSI, d.score, d.grp, None, round(d.psi, 4), "drift" if d.drifted else None) for d in drift if d.judged]
    with transaction(con):
        con.execute("insert into history.runs values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
            facts.run_id, facts.run_at.replace(tzinfo=None), facts.icb, facts.extract_date, facts.index_date,
            facts.published, _overall(facts.gate), suppress(quality["patients"]) if quality else None,
            facts.extract_digest, settings.max_psi, settings.min_group, sum(d.drifted for d in drift)])
        if rows:
            con.executemany("insert into history.figures values (?, ?, ?, ?, ?, ?, ?)",
                            [(facts.run_id, *r) for r in rows])
        if not bins.is_empty():
            con.register("history_bins_frame", bins.with_columns(pl.lit(facts.run_id).alias("run_id")).select(
                "run_id", "score", "grp", "bin_index", "bin", "patients").to_arrow())
            con.execute("insert into history.score_bins select * from history_bins_frame")
            con.unregister("history_bins_frame")
        if drift:
            con.executemany("insert into history.drift values (?, ?, ?, ?, ?, ?, ?, ?, ?)", [
                (facts.run_id, d.previous_run_id, d.score, d.grp, d.psi, suppress(d.patients),
                 suppress(d.previous_patients), d.judged, d.drifted) for d in drift])
    return HistoryAppend(facts.run_id, drift, settings, changes)


def read_history(con: duckdb.DuckDBPyConnection, icb: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The ICB's runs and their figures (what may leave the pipeline only), oldest first. Reads a
    read-only connection too; a database with no history yet gives empty frames."""
    if not con.execute("select count(*) from information_schema.tables where table_schema = 'history' "
                       "and table_name = 'runs'").fetchone()[0]:
        from phm.db import in_memory

        con = in_memory()  # the empty tables
        prepare(con)
    runs = con.execute("select * from history.runs where icb = ? order by run_at, run_id", [icb]).pl()
    figures = con.execute("select f.* from history.figures f join history.runs r using (run_id) where r.icb = ? "
                          "order by r.run_at, r.run_id", [icb]).pl()
    return runs, figures
