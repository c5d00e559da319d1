"""Leaks: run the demo's flow, then read everything it left outside the database for patients.

The session's finished run (tests/shared_run.py): the whole pipeline, as ``phm demo`` runs it
(with the synthetic truth measured in MLflow), on a synthetic extract whose patient ids are first
remapped to 12-digit numbers no other output could contain by chance (830,000,000,000 + 13 x id),
so any id that escapes is found; in a fresh process with its own PREFECT_HOME, so the Prefect
server's database (every Prefect log, run, state and event) is here to read. Then a scan of the
terminal output, the Prefect database, the
MLflow store (parameters, metrics, tags, and every artifact, zip members included: models,
reports, plots), the fairness report, the Great Expectations Data Docs, the lists, their
summaries and manifest. None may hold a patient id, a date of birth, an NHS-number-shaped value,
or the pseudonymisation key in any form; every count in a report, summary or manifest must be
suppressed (null, 0, or a multiple of 5 from 10).
"""

from __future__ import annotations

import base64
import json
import re
import sqlite3
import zipfile
from pathlib import Path

import polars as pl
import pytest

from tests.shared_run import KEY

pytestmark = pytest.mark.slow
NOT_SCANNED = {"phm.duckdb", "phm.duckdb.wal", ".phm-run.lock"}  # the data store itself holds patients


def texts(path: Path):
    """(where, text) for a file: sqlite databases row by row, zip archives member by member."""
    data = path.read_bytes()
    if data[:16] == b"SQLite format 3\x00":
        con = sqlite3.connect(path)
        try:
            for (table,) in con.execute("select name from sqlite_master where type = 'table'"):
                if table.startswith("block_"):  # Prefect's catalogue of block types, shipped with it
                    continue
                rows = con.execute(f'select * from "{table}"').fetchall()
                yield f"{path}:{table}", "\n".join(" | ".join(map(str, row)) for row in rows)
        finally:
            con.close()
    elif data[:4] == b"PAR1":  # Parquet: its values, not its compressed pages (which hide them and hold
        # byte tables that look like numbers)
        frame = pl.read_parquet(path)
        yield str(path), "\n".join(" | ".join(map(str, row)) for row in frame.iter_rows())
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                yield f"{path}!{member}", archive.read(member).decode("latin-1")
    else:
        yield str(path), data.decode("latin-1")


def nhs_number_shaped(digits: str) -> bool:
    if len(digits) != 10:
        return False
    total = sum(int(d) * w for d, w in zip(digits[:9], range(10, 1, -1), strict=True))
    check = 11 - total % 11
    return (0 if check == 11 else check) == int(digits[9]) and check != 10


def scanned(folder: Path):
    roots = [folder / "out", folder / "prefect-home", folder / "terminal.log"]
    for root in roots:
        for path in ([root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())):
            # a SQLite database's -wal/-shm files are read through the database itself
            if path.name not in NOT_SCANNED and not path.name.endswith(("-wal", "-shm", "-journal")):
                yield from texts(path)


def test_no_patient_id_date_of_birth_nhs_number_or_key_leaves_the_database(finished_run):
    folder, patients = finished_run.folder, pl.read_parquet(finished_run.extract / "patients.parquet")
    ids = set(patients["patient_id"].cast(pl.String).to_list())
    # the run's own dates (the index date, the capacity period's first and last days) are not births
    manifest = json.loads((finished_run.lists / "lists_manifest.json").read_text())
    run_dates = {manifest["index_date"], manifest["capacity"]["from"], manifest["capacity"]["to"]}
    births = set(patients["date_of_birth"].cast(pl.String).to_list()) - run_dates
    key_forms = {KEY, KEY.encode().hex(), base64.b64encode(KEY.encode()).decode()}
    found, files = [], 0
    for where, text in scanned(folder):
        files += 1
        for number in re.findall(r"(?<!\d)83\d{10}(?!\d)", text):
            if number in ids:
                found.append(f"{where}: patient id")
        # a date, not a timestamp (Prefect stores durations as times on 1970-01-01)
        for date in set(re.findall(r"(?<!\d)(?:19|20)\d\d-\d\d-\d\d(?![\dT]| \d\d:)", text)) & births:
            found.append(f"{where}: date of birth {date}")
        # standing alone: not inside a hex pseudonym or a UUID
        for digits in re.findall(r"(?<![0-9A-Za-z.-])(\d{3} ?\d{3} ?\d{4})(?![0-9A-Za-z.-])", text):
            plain = digits.replace(" ", "")
            # Unix times in seconds (2020-2030) are in Prefect's and Dask's records, not NHS numbers
            if nhs_number_shaped(plain) and not 1_577_836_800 <= int(plain) <= 1_893_456_000:
                found.append(f"{where}: NHS-number-shaped {digits}")
        for form in key_forms:
            if form in text:
                found.append(f"{where}: the pseudonymisation key")
    assert files > 50
    assert found == [], found[:20]


def _suppressed(value) -> bool:
    return value is None or (isinstance(value, int) and value % 5 == 0 and value not in (5,))


def test_every_count_that_leaves_the_pipeline_is_suppressed(finished_run):
    out = finished_run.out
    lists = (out / "lists").resolve()
    manifest = json.loads((lists / "lists_manifest.json").read_text())
    for pcn, counts in manifest["pcns"].items():
        assert all(_suppressed(v) for v in counts.values()), (pcn, counts)
    for summary in lists.glob("*_summary.csv"):
        frame = pl.read_csv(summary)
        for column in ("patients", "registered_adults"):
            assert all(_suppressed(v) for v in frame[column].to_list()), (summary.name, column)
    report = json.loads((out / "audit" / "fairness_audit.json").read_text())
    # the ethnicity data-quality report's figures per practice and PCN (docs/ethnicity.md)
    ethnicity = json.loads((out / "audit" / "ethnicity_quality.json").read_text())
    counts = []
    # not counts of people: settings, and the pooled recording check's degrees of freedom (outcomes pooled - 1)
    SETTINGS = {"version", "replicates", "seed", "min_patients", "min_events", "min_practices", "degrees_of_freedom"}

    def walk(node, key=None):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, k)
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif isinstance(node, int) and not isinstance(node, bool) and key not in SETTINGS:
            counts.append((key, node))
    walk(report)
    walk(ethnicity)
    assert len(counts) > 100
    assert all(_suppressed(v) for _, v in counts), [c for c in counts if not _suppressed(c[1])][:10]


def test_everything_the_run_writes_is_readable_by_its_owner_only(finished_run):
    out = finished_run.out
    checked = 0
    for path in [out, *out.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode & 0o777
        assert mode & 0o077 == 0, f"{path}: {oct(mode)}"
        checked += 1
    assert checked > 20 and (out / "phm.duckdb").is_file()


# --- figures that give a count back (docs/dpia.md, section 6; docs/fairness.md, "Disclosure control") ---
# A count of 1-7 is suppressed; so must be every figure it could be solved back from: a rate k / n
# whose k or n is 1-7, an observed / expected whose exact interval's width names its observed count,
# a gate test's estimate on a group with 1-7 outcomes. The attacks below read only what the run
# published (the report's JSON and HTML, the MLflow store, the terminal).

PROPORTION_FIGURES = {"outcome_rate", "selection_rate", "sensitivity", "ppv", "false_negative_rate"}
RECORDING_FIGURES = {"diagnosis_gap", "treated_undiagnosed"}
PERFORMANCE_CHECKS = {"calibration", "sensitivity ratio", "need-adjusted selection"}
# figures that times a published count give the outcomes back
ON_OUTCOMES = ("outcome_rate", "observed_expected", "sensitivity", "false_negative_rate", "ppv",
               "need_adjusted_selection", "need_adjusted_selection_vs_score")


def observed_behind_exact_interval(low: float | None, high: float | None, level: float = 0.95) -> int | None:
    """The observed count k (1-40) whose exact (Garwood) Poisson interval has this width, high / low:
    the ratio does not depend on the expected count, so it names k. None where it names none."""
    from scipy import stats

    if not low or not high or low <= 0:
        return None
    alpha = 1 - level
    for k in range(1, 41):
        ratio = (stats.chi2.ppf(1 - alpha / 2, 2 * k + 2) / 2) / (stats.chi2.ppf(alpha / 2, 2 * k) / 2)
        if abs(high / low - ratio) <= 0.02 * ratio:
            return k
    return None


def significant_figures_at_most(value: float, digits: int) -> bool:
    return value == 0 or float(f"{value:.{digits}g}") == value


def _estimates(node, path=()):
    """(path, estimate) for every {value, low, high} in a JSON tree."""
    if isinstance(node, dict):
        if "value" in node and "low" in node and "high" in node and not isinstance(node["value"], dict):
            yield path, node
        for k, v in node.items():
            yield from _estimates(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _estimates(v, (*path, i))


def count_leaks(report: dict) -> list[str]:
    """Every published figure of a fairness report's JSON that gives back a count of 1-7 (or, for
    figures computed from exact counts, more precision than 3 significant figures allows)."""
    leaks = []
    for score, entry in report["scores"].items():
        for kind in ("performance", "selection"):
            for grouping, rows in entry[kind].items():
                for r in rows:
                    where = f"{score}/{kind}/{grouping}/{'/'.join(map(str, r['group'].values()))}"
                    for section in ("figures", "ratio_to_reference", "difference_to_reference",
                                    "ratio_to_population", "difference_to_population"):
                        for name, e in (r.get(section) or {}).items():
                            if not e or e.get("value") is None:
                                continue
                            if name in RECORDING_FIGURES:
                                k = observed_behind_exact_interval(e["low"], e["high"])
                                if k is not None and k < 8:
                                    leaks.append(f"{where}: {section} {name} {e} names an observed count of {k}")
                            if not (section == "figures" and name in PROPORTION_FIGURES):
                                for part in ("value", "low", "high"):
                                    if e.get(part) is not None and not significant_figures_at_most(e[part], 3):
                                        leaks.append(f"{where}: {section} {name} {part} {e[part]} beyond 3 "
                                                     "significant figures")
                    counts, figures = r["counts"], r.get("figures") or {}
                    if counts.get("patients") is None and any(figures.values()):
                        leaks.append(f"{where}: figures shown over a suppressed count of patients")
                    if counts.get("events", 0) is None:  # suppressed, or suppressed to protect another cell
                        shown = [k for k in ON_OUTCOMES if figures.get(k)]
                        if shown:
                            leaks.append(f"{where}: {shown} shown over a suppressed count of outcomes")
    # the gate's tests: a group whose validation outcomes are suppressed has its performance tests withheld
    for outcome, gate in report["gate"]["outcomes"].items():
        events = {r["group"]["group"]: r["counts"].get("events")
                  for r in report["scores"][outcome]["performance"]["ethnicity"]}
        withheld_findings = set()
        for t in gate["tests"]:
            where = f"gate/{outcome}/{t['group']}/{t['check']}"
            if t.get("withheld"):
                assert t["estimate"] is None and t["p_value"] is None and t["minimum_detectable_ratio"] is None, where
                withheld_findings.add((t["check"], t["group"]))
                continue
            if t["check"] in PERFORMANCE_CHECKS and t["group"] in events and events[t["group"]] is None:
                leaks.append(f"{where}: estimate {t['estimate']} shown for a group with 1-7 recorded outcomes")
            if t["check"].startswith("label choice (") and t["estimate"]:
                k = observed_behind_exact_interval(t["estimate"]["low"], t["estimate"]["high"])
                if k is not None and k < 8:
                    leaks.append(f"{where}: estimate {t['estimate']} names an observed count of {k}")
        for f in gate["findings"]:
            if (f["rule"], f["group"]) in withheld_findings and "95% CI" in f["message"]:
                leaks.append(f"gate/{outcome}/{f['group']}: finding quotes a withheld figure: {f['message'][:120]}")
    # do no harm: sensitivities from the rounded counts, none for a group with a count of 1-7
    for outcome, comparison in (report.get("compared_with_standard") or {}).items():
        for g in comparison["groups"]:
            where = f"do no harm/{outcome}/{g['group']}"
            if g["figures"] and (g["patients"] is None or g["events"] is None):
                leaks.append(f"{where}: figures {g['figures']} shown over a suppressed count")
            sensitivity = g["figures"].get("sensitivity at the operating point")
            if sensitivity and g["events"]:
                for who in ("model", "standard"):
                    true_positives = sensitivity[who] * g["events"]
                    if abs(true_positives - 5 * round(true_positives / 5)) > g["events"] * 1e-4 + 0.01:
                        leaks.append(f"{where}: {who} sensitivity {sensitivity[who]} is not from the rounded counts")
    # uptake of invitations: shares from the rounded counts (share x rounded listed = a multiple of 5)
    for r in (report.get("uptake_of_invitations") or {}).get("rows", []):
        for name in ("contacted_share", "attended_share"):
            share = r.get(name)
            if share and share.get("value") is not None and r["listed"]:
                count = share["value"] * r["listed"]
                if abs(count - 5 * round(count / 5)) > r["listed"] * 5e-5 + 0.01:
                    leaks.append(f"uptake/{r['grouping']}/{r['group']}: {name} {share} from an exact count")
    # ethnicity recording shares: from the rounded counts (share x rounded patients = a multiple of 5)
    for r in report.get("ethnicity_data_quality", []):
        for name, share in r["shares"].items():
            if share is not None and r["patients"]:
                count = share["value"] * r["patients"]
                if abs(count - 5 * round(count / 5)) > r["patients"] * 5e-5 + 0.01:
                    leaks.append(f"ethnicity quality/{r['level']}/{r['unit']}: {name} {share} from an exact count")
    return leaks


def test_no_published_figure_gives_back_a_count_of_1_to_7(finished_run):
    """The report's JSON (which its HTML and MLflow's metrics show; the next test holds MLflow to it):
    no figure solved back to a count of 1-7 (an observed / expected's exact interval, a gate test's
    estimate on 1-7 outcomes, a do-no-harm sensitivity k / n), and figures from exact counts to 3
    significant figures."""
    report = json.loads(finished_run.audit_json.read_text())
    assert count_leaks(report) == []
    # the attack had something to attack: the shared run has groups with 1-7 outcomes, whose tests are withheld
    tests = [t for gate in report["gate"]["outcomes"].values() for t in gate["tests"]]
    assert any(t["withheld"] for t in tests) and any(not t["withheld"] for t in tests)
    html = (finished_run.out / "audit" / "fairness_audit.html").read_text()
    assert "withheld: fewer than 8" in html


def test_mlflow_metrics_of_the_audit_are_the_reports_published_figures(finished_run):
    """Every metric the audit logs to MLflow per group is the report's published figure (so the scan
    above covers MLflow too): nothing more precise, nothing the report withholds."""
    report = json.loads(finished_run.audit_json.read_text())
    con = sqlite3.connect(finished_run.out / "mlflow" / "mlflow.db")
    try:
        runs = [r for (r,) in con.execute("select run_uuid from tags where key = 'phm.kind' and value = 'fairness audit'")]
        assert runs
        metrics = con.execute(f"select key, value from metrics where run_uuid in ({','.join('?' * len(runs))})",
                              runs).fetchall()
    finally:
        con.close()
    checked = 0
    for key, value in metrics:
        parts = key.split("/")
        if len(parts) != 4 or parts[0] not in report["scores"] or parts[1] not in ("performance", "selection"):
            continue
        outcome, kind, group, figure = parts
        section = "figures"
        if figure.endswith("_ratio_to_reference"):
            section, figure = "ratio_to_reference", figure.removesuffix("_ratio_to_reference")
        grouping = "population" if group == "population" else "ethnicity"
        row = next(r for r in report["scores"][outcome][kind][grouping]
                   if grouping == "population" or r["group"]["group"].replace(" ", "_") == group)
        assert not row["withheld"], key
        assert row[section][figure] is not None and row[section][figure]["value"] == pytest.approx(value, rel=1e-9), key
        checked += 1
    assert checked > 50


def test_the_terminal_prints_only_suppressed_patient_counts(finished_run):
    """The training's progress lines ("fitting ... on N patients") go through phm/disclosure.py."""
    fitted = re.findall(r"fitting .* on (\S+) patients", finished_run.terminal)
    assert fitted
    for shown in fitted:
        assert shown == "[suppressed]" or int(shown.replace(",", "")) % 5 == 0, shown
