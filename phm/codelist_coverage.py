"""Codelist coverage at run time: which codes of each list an extract uses, and which codes it
uses that no list knows.

Per concept: the distinct codes of its list found in the extract and the patients they match.
Then the extract's codes that no codelist knows, ranked by how often they occur, so an analyst
can spot a local or newer code the lists miss. A code is not patient-level, but how often it
occurs can be, so every count leaves the pipeline suppressed (phm.disclosure). A concept that
matches nobody in an extract large enough that it must appear (no hypertension codes at all, no
statins) is a WARN that names it: the extract, or the list, is wrong.

'Must appear': ``expected_prevalence`` in the manifest is a deliberately low share of registered
adults (well under the national prevalence); the check fires only when the extract's adults
times that share is at least ``MIN_EXPECTED_PATIENTS``, so a concept that is really there has a
Poisson chance below exp(-20), about 2e-9, of matching nobody by chance.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb

from phm.codelists import insert_project_codes, project_codelists
from phm.disclosure import show, suppress

MIN_EXPECTED_PATIENTS = 20
UNKNOWN_CODES_SHOWN = 50
TABLE_OF_SYSTEM = {"snomedct": ("clinical_events", "snomedct_code"), "dmd": ("medications", "dmd_code")}


@dataclass
class ConceptCoverage:
    concept: str
    system: str
    codes_in_list: int
    codes_found: int  # distinct codes of the list present in the extract (not patient-level)
    patients: int     # exact; suppressed whenever it leaves the pipeline
    expected_patients: float | None  # adults x expected_prevalence, where the manifest sets one


@dataclass
class UnknownCode:
    table: str
    code: str
    records: int   # exact; suppressed on output
    patients: int  # exact; suppressed on output


@dataclass
class CoverageReport:
    adults: int
    concepts: list[ConceptCoverage] = field(default_factory=list)
    unknown: list[UnknownCode] = field(default_factory=list)
    unknown_distinct: dict[str, int] = field(default_factory=dict)  # table -> distinct unknown codes
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Counts suppressed (1-7 withheld as null, others rounded to 5)."""
        body = asdict(self)
        body["adults"] = suppress(self.adults)
        for c in body["concepts"]:
            c["patients"] = suppress(c["patients"])
            if c["expected_patients"] is not None:
                c["expected_patients"] = round(c["expected_patients"])
        for u in body["unknown"]:
            u["records"], u["patients"] = suppress(u["records"]), suppress(u["patients"])
        body["counts"] = "suppressed: 1-7 withheld (null), others rounded to the nearest 5"
        return body

    def warnings_for(self, concept: str) -> list[str]:
        return [w for w in self.warnings if f"a {concept} code" in w]


def _adults(con: duckdb.DuckDBPyConnection, extract_date) -> int:
    return con.execute("select count(*) from main.patients where date_of_birth <= ?::date - interval 18 year "
                       "and (date_of_death is null or date_of_death > ?::date)", [extract_date, extract_date]).fetchone()[0]


# Distinct patients are counted with a bitmap per group (DuckDB's bitstring_agg: one bit per
# patient id between the table's smallest and largest) where the bitmaps stay small, else with
# count(distinct). Both are exact; at 1M patients the bitmaps take half the time of count(distinct)'s
# hash sets (docs/benchmarks.md). The limit bounds one thread's bitmaps: ids spread over more than
# this many bits in all (sparse pseudonymous ids, or many groups) are counted the other way.
BITMAP_BITS_LIMIT = 2 ** 30  # 128 MB


def distinct_patients(con: duckdb.DuckDBPyConnection, table: str, relation: str, group: str, groups: int,
                      parameters: list) -> dict:
    """``{group value: distinct patient_id}`` over ``relation`` (SQL of ours: rows of ``table`` with
    a join or filter, its bound ``parameters``), grouped by ``group``, which has at most ``groups``
    values. The bitmaps span the whole table's ids: found in one scan, without the join."""
    low, high = con.execute(f"select min(patient_id), max(patient_id) from {table}").fetchone()  # noqa: S608 - ours
    if low is None:
        return {}
    if (high - low + 1) * max(groups, 1) <= BITMAP_BITS_LIMIT:
        count, bounds = "coalesce(bit_count(bitstring_agg(patient_id, ?::bigint, ?::bigint)), 0)", [low, high]
    else:
        count, bounds = "count(distinct patient_id)", []
    return dict(con.execute(f"select {group}, {count} from {relation} group by {group}",  # noqa: S608 - ours
                            bounds + parameters).fetchall())


def coverage_report(con: duckdb.DuckDBPyConnection, extract_date) -> CoverageReport:
    """The coverage of every project codelist in the published ``main`` tables."""
    lists = project_codelists()
    con.execute("create or replace temp table coverage_codes (concept varchar, system varchar, code varchar)")
    insert_project_codes(con, "coverage_codes", "select concept, system, code from project_codes")
    report = CoverageReport(adults=_adults(con, extract_date))
    found: dict[str, tuple[int, int]] = {}
    for system, (table, column) in TABLE_OF_SYSTEM.items():
        # Table and column names are ours (TABLE_OF_SYSTEM); every value is a bound parameter.
        # Each code's records first (grouping by the code alone is cheap), then distinct patients
        # only where the report needs them: per concept, and for the unknown codes it lists.
        con.execute(f"create or replace temp table coverage_by_code as "  # noqa: S608
                    f"select {column} as code, count(*) as records from main.{table} group by {column}")
        codes_found = dict(con.execute(
            "select c.concept, count(distinct e.code) from coverage_by_code as e join coverage_codes as c "
            "on c.code = e.code and c.system = ? group by c.concept", [system]).fetchall())
        in_lists = (f"(select e.patient_id, c.concept from main.{table} as e join coverage_codes as c "  # noqa: S608
                    f"on c.code = e.{column} and c.system = ?)")
        patients = distinct_patients(con, f"main.{table}", in_lists, "concept", len(codes_found), [system])
        found.update({concept: (codes, patients.get(concept, 0)) for concept, codes in codes_found.items()})
        con.execute("""
            create or replace temp table coverage_unknown as
            select e.code, e.records from coverage_by_code as e
            anti join (select code from coverage_codes where system = ?) as k on k.code = e.code""", [system])
        listed = con.execute("select code, records from coverage_unknown order by records desc, code limit ?",
                             [UNKNOWN_CODES_SHOWN]).fetchall()
        if listed:
            con.execute("create or replace temp table coverage_listed as select unnest(?::varchar[]) as code",
                        [[code for code, _ in listed]])
            of_listed = (f"(select e.patient_id, e.{column} as code from main.{table} as e "  # noqa: S608
                         f"semi join coverage_listed as k on k.code is not distinct from e.{column})")
            unknown_patients = distinct_patients(con, f"main.{table}", of_listed, "code", len(listed), [])
            report.unknown += [UnknownCode(table, code, records, unknown_patients.get(code, 0))
                               for code, records in listed]
            con.execute("drop table coverage_listed")
        report.unknown_distinct[table] = con.execute("select count(*) from coverage_unknown").fetchone()[0]
        con.execute("drop table coverage_unknown")
        con.execute("drop table coverage_by_code")
    for cl in lists.values():
        codes, patients = found.get(cl.concept, (0, 0))
        expected = report.adults * cl.expected_prevalence if cl.expected_prevalence else None
        report.concepts.append(ConceptCoverage(cl.concept, cl.system, len(cl.codes), codes, patients, expected))
        if patients == 0 and expected is not None and expected >= MIN_EXPECTED_PATIENTS:
            report.warnings.append(
                f"no patient has a {cl.concept} code ({cl.description.rstrip('.')}), although at least "
                f"{expected:.0f} of the extract's adults would have one at {cl.expected_prevalence:.0%}: "
                f"check the extract (is the {TABLE_OF_SYSTEM[cl.system][0]} table complete?) and the codelist")
    con.execute("drop table coverage_codes")
    return report


def write_report(report: CoverageReport, folder: Path) -> Path:
    """``codelist_coverage.html`` and ``.json`` in ``folder`` (counts suppressed); the HTML's path."""
    folder.mkdir(parents=True, exist_ok=True)
    body = report.to_dict()
    (folder / "codelist_coverage.json").write_text(json.dumps(body, indent=2) + "\n")
    esc = html.escape
    concept_rows = "".join(
        f"<tr><td>{esc(c.concept)}</td><td>{esc(c.system)}</td><td>{c.codes_in_list:,}</td><td>{c.codes_found:,}</td>"
        f"<td>{esc(show(c.patients))}</td><td>{'' if c.expected_patients is None else f'{c.expected_patients:,.0f}'}</td></tr>"
        for c in report.concepts)
    unknown_rows = "".join(
        f"<tr><td>{i}</td><td>{esc(u.table)}</td><td>{esc(u.code)}</td><td>{esc(show(u.records))}</td>"
        f"<td>{esc(show(u.patients))}</td></tr>" for i, u in enumerate(report.unknown, start=1))
    warnings = "".join(f"<li><b>WARN</b> {esc(w)}</li>" for w in report.warnings) or "<li>none</li>"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Codelist coverage</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:70em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:right}}td:first-child,th:first-child{{text-align:left}}</style>
</head><body>
<h1>Codelist coverage of this extract</h1>
<p>Counts: 1-7 suppressed, others rounded to the nearest 5. Registered adults: {esc(show(report.adults))}.</p>
<h2>Warnings</h2><ul>{warnings}</ul>
<h2>Per concept</h2>
<p>Codes found: distinct codes of the list present in the extract. Expected: adults times the concept's
deliberately low expected prevalence (manifest.toml); a concept with no patient where at least
{MIN_EXPECTED_PATIENTS} are expected is a warning.</p>
<table><tr><th>concept</th><th>system</th><th>codes in list</th><th>codes found</th><th>patients</th><th>expected at least</th></tr>
{concept_rows}</table>
<h2>Codes no codelist knows, most frequent first</h2>
<p>{", ".join(f"{esc(t)}: {n:,} distinct codes" for t, n in report.unknown_distinct.items())}; the
{UNKNOWN_CODES_SHOWN} most frequent of each table are listed. A frequent code here may be a local or newer
code that a list should hold.</p>
<table><tr><th>rank</th><th>table</th><th>code</th><th>records</th><th>patients</th></tr>
{unknown_rows}</table>
</body></html>
"""
    path = folder / "codelist_coverage.html"
    path.write_text(page)
    return path


LINK_MARK = "<!-- phm: codelist coverage -->"


def link_from_data_docs(index_html: Path, page: Path) -> None:
    """Put a link to the coverage page at the top of the Great Expectations Data Docs index, so a
    reader of the Data Docs finds it (GX rebuilds the index on every run; the link is added once)."""
    text = index_html.read_text(encoding="utf-8")
    if LINK_MARK in text or "<body>" not in text:
        return
    link = (f'{LINK_MARK}<div style="padding:.6em 2em;background:#eef5ff;font-family:sans-serif">'
            f'<a href="{html.escape(page.name)}">Codelist coverage of this extract</a>: codes found per '
            "concept and codes no codelist knows (counts suppressed)</div>")
    index_html.write_text(text.replace("<body>", "<body>" + link, 1), encoding="utf-8")
