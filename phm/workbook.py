"""A PCN's list as a workbook a care coordinator can work in (openpyxl).

Sheets, in order:

- **Read me**: a white-on-red STALE DATA line first when the extract was stale (phm/freshness.py;
  every sheet's tab is then red too), a red WARNING line for each of the run's warnings about
  the PCN (the manifest's ``warnings``: e.g. urgent patients beyond its capacity), then the list's facts (PCN, when it was published, the
  extract's date, the date the data describe, the
  fairness gate's result per outcome and who signed it off, what ranks each list), what every
  column means, what tiers and IMD quintiles are, the risks' horizons, and how the practice
  re-identifies its patients. The facts are the manifest's (``lists_manifest.json``), so the two
  agree.
- **list**: the whole PCN, practice by practice, in priority order.
- **practice <id>**: each practice's own rows, in priority order.
- **ethnicity re-ask**: the PCN's patients whose ethnicity a practice might ask again, those on a
  list first (phm/lists.py ``reask_worklist``), with ``asked_on`` and ``answer_recorded`` for the team.
- **summary**: the aggregate, suppressed (as ``<PCN>_summary.csv``), each count as
  ``phm.disclosure.show`` writes it: "[suppressed]" for 1-7 (``phm.lists.summary_for_people``).

Every list sheet has a frozen header row and first column (the pseudonym), a filter on every
column, widths that fit, wrapped reasons and actions, and three columns for the team's work
(``contacted_on``, a date; ``outcome``, from a drop-down list; ``notes``), empty when published.
Nothing here computes a figure: the rows and the manifest are written as they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from phm.freshness import stale_banner
from phm.lists import summary_for_people

READ_ME, LIST, SUMMARY, REASK = "Read me", "list", "summary", "ethnicity re-ask"
REASK_WORK = ("asked_on", "answer_recorded")  # the team's columns of the re-ask worklist
REASK_WIDTHS = {"pseudonym": 24, "practice_name": 28, "reask_reason": 52, "asked_on": 14, "answer_recorded": 18}
STALE_RED = "C00000"
WORKFLOW = ("contacted_on", "outcome", "notes")
OUTCOMES = ("invited", "booked", "attended", "declined", "no response", "not appropriate")
WRAPPED = {"reasons", "suggested_actions", "set_aside", "to_measure", "notes"}
WIDTHS = {"pseudonym": 24, "reasons": 60, "suggested_actions": 48, "set_aside": 30, "to_measure": 28, "notes": 40,
          "contacted_on": 14, "outcome": 16}

COLUMN_MEANINGS = {
    "pseudonym": "the patient's id under the practice's own key (20 hex characters); the practice re-identifies it",
    "practice_pseudo_id": "the practice (its id in the extract; its key is derived from it)",
    "practice_ods_code": "the practice's ODS code, where the extract gives it",
    "practice_name": "the practice's name, where the extract gives it",
    "priority_rank": "1 is first, within the practice (or the PCN, with PCN-wide capacity)",
    "urgent": "yes: an urgent reason (no diagnosis and a reading of 180/120 or more, or HbA1c 48+ or fasting "
              "glucose 7.0+); urgent patients head the list and are never left off by capacity or a recent invitation",
    "tier": "1 acts first, then 2, then 3 (the reasons' tiers; docs/lists.md)",
    "age_band": "5-year age band",
    "sex": "female or male, as recorded",
    "ethnicity_group": "broad ethnic group as recorded (Not stated / Not known where not recorded)",
    "imd_quintile": "national deprivation quintile: 1 = most deprived, 5 = least",
    "core20": "yes: in the most deprived national quintile (Core20PLUS5)",
    "qrisk3_10y_band": "QRISK3: risk of heart attack or stroke over 10 years, as a band; empty where QRISK3 does "
                       "not apply (under 25 or over 84, or CVD already recorded)",
    "qdiabetes_10y_band": "QDiabetes: risk of type 2 diabetes over 10 years, as a band; empty where QDiabetes does "
                          "not apply (under 25 or over 84, diabetes already recorded, or an HbA1c or fasting glucose "
                          "already in the diabetic range: see the reasons)",
    "hypertension_finding": "blood pressure case-finding: possible_undiagnosed_urgent, confirmed_not_coded, "
                            "possible_undiagnosed, above_target, no_recent_reading, no_bp_in_5_years",
    "reasons": "every reason, most urgent first, separated by '; '",
    "suggested_actions": "one action per clinical area (blood pressure, diabetes, cardiovascular), separated by '; '",
    "set_aside": "reasons set aside by a treatment or recorded decision (e.g. already on a statin), separated by '; '",
    "to_measure": "what to measure or record first, separated by ', ': the scores took a default for it",
    "contacted_on": "for the team: the date the patient was contacted",
    "outcome": "for the team: " + ", ".join(OUTCOMES),
    "notes": "for the team: free text (stays at the practice)",
}

REIDENTIFY = ("The practice, and only the practice, turns a pseudonym into its patient. It holds its own key file "
              "from the ICB (phm practice-key) and its own lookup from patient_id to NHS number (an export from "
              "its clinical system), and runs: phm reidentify --list <this PCN's list>.csv --practice "
              "<practice_pseudo_id> --key-file <the practice's key> --lookup <lookup>.csv --out <folder>. It writes "
              "the practice's rows with their NHS numbers, in this order, and the NHS numbers alone, one a line, to "
              "import into EMIS Web or SystmOne as a patient group for recall. Another practice's key matches none "
              "of its rows. See docs/lists.md, 'Re-identification at the practice'.")


MODEL_OUTCOMES = {"cvd": "a CVD event", "t2d": "type 2 diabetes", "hypertension": "a hypertension diagnosis"}
MODEL_BAND = re.compile(r"(cvd|t2d|hypertension)_model_(?:(\d+)y_)?band")


def meaning(column: str) -> str:
    """What a column means; a model's risk column names its horizon (``cvd_model_5y_band``)."""
    model = MODEL_BAND.fullmatch(column)
    if model is None:
        return COLUMN_MEANINGS.get(column, "")
    outcome, years = model.groups()
    over = f"over {years} years" if years else "over its horizon"
    return (f"the risk of {MODEL_OUTCOMES[outcome]} {over} that ranks this outcome's list, as a band: the audited "
            "model's, or QRISK3's / QDiabetes' 10-year risk where the gate kept the model from ranking it "
            "(the 'gate' rows above say which)")


def horizons(columns: list[str]) -> str:
    """The horizons of the risks on the list, from the columns' names."""
    parts = ["QRISK3 and QDiabetes: 10 years"]
    for column in columns:
        model = MODEL_BAND.fullmatch(column)
        if model is not None:
            parts.append(f"{model.group(1)} model column: {model.group(2) or 'unknown'} years")
    return "; ".join(parts)


# What the workbook's other sheets are and what to do with them (the list sheets are the columns above)
REASK_SHEET = (f"The '{REASK}' sheet lists the PCN's registered adults whose ethnicity a practice might ask again, "
               "one row each, practice by practice, those on this targeting list first, then by reason: "
               "no ethnicity recorded (where a patient's QRISK3 or QDiabetes was computed, it read them as White); "
               "codes of more than one ethnic category; only an 'any other' category, where a specific one may fit; "
               "'not stated' longer ago than the re-ask window. It is not a list of people to invite for a health "
               "check: at the patient's next contact (or with this list's invitation, for those on it), the practice "
               "may ask them to state their ethnic group, record the answer in the clinical record (the next "
               "extract picks it up), and fill in asked_on and answer_recorded here. Asking is voluntary: "
               "'not stated' is a valid answer and is not asked again within the window. Re-identify it as the list "
               "is (phm reidentify --list <this PCN's>_ethnicity_reask.csv ...): its files are named "
               "*_ethnicity_reask_* so they are not mistaken for the targeting list.")
SUMMARY_SHEET = (f"The '{SUMMARY}' sheet counts, per section, the patients each row describes ('patients': on this "
                 "list for total, tier, ethnic group, IMD quintile and ethnicity not known; excluded, set aside, "
                 "over capacity (the backlog) or taken by earlier lists of the period for those sections; for "
                 "ethnicity re-ask, the worklist's patients who are also on this list) and the PCN's registered "
                 "adults in the same group ('registered_adults'; for ethnicity re-ask, the worklist's patients with "
                 "that reason). Counts of 1-7 show as [suppressed], others are rounded to 5; an empty cell counts "
                 "nothing.")


def pcn_warnings(manifest: dict, pcn: str) -> list[str]:
    """The run's warnings about this PCN (the manifest's ``warnings``, each 'PCN <code>: ...'),
    e.g. urgent patients beyond its capacity: all listed, and no one else."""
    return [w for w in manifest.get("warnings") or [] if w.startswith(f"PCN {pcn}:")]


def read_me_rows(pcn: str, manifest: dict, columns: list[str], reask: bool = False) -> list[tuple[str, str]]:
    """The Read me sheet as (item, value) rows, from the manifest and the columns written;
    ``reask``: the workbook has the ethnicity re-ask sheet."""
    rows = [("STALE DATA", stale_banner(manifest["stale"]))] if manifest.get("stale") else []
    rows += [("WARNING", warning) for warning in pcn_warnings(manifest, pcn)]
    rows += [("what this list is", INTENDED_USE), ("PCN", pcn), ("list published", str(manifest.get("published_at", ""))),
            ("extract date", str(manifest.get("extract_date", ""))),
            ("data as at (index date)", str(manifest.get("index_date", ""))),
            ("fairness gate", str(manifest.get("gate", "")))]
    for outcome, decision in (manifest.get("gate_decision") or {}).items():
        signoff = decision.get("signoff") or {}
        who = f"; signed off by {signoff['reviewer']}: {signoff.get('reason', '')}" if signoff.get("reviewer") else ""
        rows.append((f"gate: {outcome}", f"{decision.get('gate')}, ranked by {decision.get('ranks_list')}{who}"))
    capacity = manifest.get("capacity") or {}
    if capacity.get("period"):
        per = (f"{capacity['capacity_per_practice']} patients a practice" if capacity.get("capacity_per_practice")
               else f"{capacity.get('capacity_per_pcn')} patients for the PCN")
        rows.append(("capacity", f"{per} a {capacity['period']} ({capacity['from']} to {capacity['to']}; this PCN: "
                                 f"{capacity.get('pcns', {}).get(pcn, '')}), shared by every list of the "
                                 f"{capacity['period']}; the summary sheet says how much earlier lists used and "
                                 "how many wait for a later one (the backlog)"))
    rows += [("", ""), ("column", "meaning")]
    rows += [(c, meaning(c)) for c in columns]
    rows += [("", ""), ("horizons", horizons(columns)),
             ("re-identifying patients", REIDENTIFY)]
    if reask:
        rows.append((f"{REASK} sheet", REASK_SHEET))
    rows += [(f"{SUMMARY} sheet", SUMMARY_SHEET),
             ("small numbers", "summary counts of 1-7 are shown as [suppressed], others rounded to 5")]
    return rows


def sheet_name(practice, taken: list[str], ods_code: str | None = None, practice_name: str | None = None) -> str:
    """``<ODS code> <name>`` where the extract gives the practice's ODS code (``A12345 Riverside
    Surgery``), else ``practice <id>``. Values come from the extract, so they are kept to letters,
    digits, spaces, '-', '&', ',' and '.' (no character Excel forbids in a sheet name) and cut to
    Excel's 31 characters, and a name is never repeated."""
    if ods_code:
        label = re.sub(r"[^0-9A-Za-z-]", "_", str(ods_code))[:10]
        if practice_name:
            label = f"{label} {re.sub(r'[^0-9A-Za-z &,.-]', '_', str(practice_name))}"
        name = label[:31].strip()
    else:
        name = "practice " + re.sub(r"[^0-9A-Za-z-]", "_", str(practice))[:20]
    n = 1
    while name in taken:
        n += 1
        name = f"{name[:26]} ({n})"
    return name


# The intended use, in words, where a team reads first (docs/clinical-safety.md, section 1; HAZ-13)
INTENDED_USE = ("A targeting aid for preventive outreach, not a diagnosis or a clinical decision: a row says the "
                "record suggests a reason to invite the patient; the clinician who sees the patient's own record "
                "decides what, if anything, to do. Risks are bands, not the patient's score. The list holds what "
                "capacity allows (the backlog waits) and sees only the extract, as of its date. It is not a way to "
                "act on an abnormal result: results are handled as they are recorded; the 'urgent' rows are a "
                "safety net for any that went without a diagnosis.")
LINE_HEIGHT = 15  # points: one line of the default 11-point font
READ_ME_WIDTH = 110


def wrapped_lines(rows: pl.DataFrame) -> list[int]:
    """Each row's lines once its wrapped columns wrap at their widths (a width is about that many
    characters; two are kept for the cell's margins and for words that do not split)."""
    counts = [pl.lit(1)]
    for name in WRAPPED & set(rows.columns):
        per_line = max(1, WIDTHS.get(name, 10) - 2)
        counts.append(((pl.col(name).cast(pl.String).str.len_chars().fill_null(0) + per_line - 1) // per_line)
                      .cast(pl.Int64))
    return rows.select(pl.max_horizontal(*counts).alias("lines"))["lines"].to_list()


def _list_sheet(book, title: str, rows: pl.DataFrame, later: list | None = None) -> None:
    """``later``: where the rows after the first go when they are written as XML after saving
    (``_RowsLater``); None: every row through openpyxl."""
    from copy import copy

    from openpyxl.styles import Alignment, Font
    from openpyxl.utils import get_column_letter
    from openpyxl.worksheet.datavalidation import DataValidation

    sheet = book.create_sheet(title)
    # yes/no rather than Excel's TRUE/FALSE or LibreOffice's 1/0 for urgent and core20
    rows = rows.with_columns(pl.when(pl.col(c)).then(pl.lit("yes")).when(pl.col(c).is_not_null()).then(pl.lit("no"))
                             .alias(c) for c, kind in rows.schema.items() if kind == pl.Boolean)
    columns = [*rows.columns, *WORKFLOW]
    heights = [LINE_HEIGHT * lines for lines in wrapped_lines(rows)]
    rest = _rows_later(later, sheet, rows.with_columns(pl.lit(None).alias(c) for c in WORKFLOW), heights)
    sheet.append(columns)
    for row in rows.head(1 if rest else rows.height).iter_rows():
        sheet.append([*row, None, None, None])
    last = max(2, rows.height + 1)
    for index, name in enumerate(columns, start=1):
        letter = get_column_letter(index)
        sheet.cell(1, index).font = Font(bold=True)
        sheet.column_dimensions[letter].width = WIDTHS.get(name, max(10, len(name) + 2))
        aligned = Alignment(wrap_text=name in WRAPPED, vertical="top")  # a row's values line up at its top
        cells = sheet[letter][1:]
        if cells:
            # the style is registered once and its record copied to the column's other cells: setting
            # .alignment on each cell hashed the Alignment against the book's styles every time
            cells[0].alignment = aligned
            for cell in cells[1:]:
                cell._style = copy(cells[0]._style)
    # Heights for wrapped text: neither openpyxl nor LibreOffice fits a row to its wrapped text
    # when the file is opened, so without them a long reason spills over the next row's
    # (seen in the LibreOffice rendering, docs/lists.md).
    for index, height in enumerate(heights[:1] if rest else heights, start=2):
        sheet.row_dimensions[index].height = height
    sheet.freeze_panes = "B2"  # the header and the pseudonym stay in view
    sheet.auto_filter.ref = f"A1:{get_column_letter(len(columns))}{last}"
    outcome = get_column_letter(columns.index("outcome") + 1)
    choices = DataValidation(type="list", formula1='"' + ",".join(OUTCOMES) + '"', allow_blank=True)
    choices.add(f"{outcome}2:{outcome}{last + 500}")  # room for the rows a team adds
    contacted = get_column_letter(columns.index("contacted_on") + 1)
    dates = DataValidation(type="date", operator="greaterThan", formula1="DATE(2000,1,1)", allow_blank=True)
    dates.add(f"{contacted}2:{contacted}{last + 500}")
    sheet.add_data_validation(choices)
    sheet.add_data_validation(dates)


def _reask_sheet(book, reask: pl.DataFrame, later: list | None = None) -> None:
    """The ethnicity re-ask worklist (phm/lists.py ``reask_worklist``), with two columns for the team."""
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    sheet = book.create_sheet(REASK)
    rows = reask.drop("pcn_code", strict=False).with_columns(
        pl.when(pl.col("on_targeting_list")).then(pl.lit("yes")).otherwise(pl.lit("no")).alias("on_targeting_list"))
    columns = [*rows.columns, *REASK_WORK]
    rest = _rows_later(later, sheet, rows.with_columns(pl.lit(None).alias(c) for c in REASK_WORK))
    sheet.append(columns)
    for row in rows.head(1 if rest else rows.height).iter_rows():
        sheet.append([*row, None, None])
    for index, name in enumerate(columns, start=1):
        sheet.cell(1, index).font = Font(bold=True)
        sheet.column_dimensions[get_column_letter(index)].width = REASK_WIDTHS.get(name, max(12, len(name) + 2))
    # No alignment per cell: every row here is one line (nothing wraps), where top and bottom are
    # the same, and styling each of a large ICB's 100,000+ re-ask cells took most of the
    # publishing time (a new Alignment hashed per cell: 3 of the 3.5 s per PCN at 500,000 patients).
    sheet.freeze_panes = "B2"
    sheet.auto_filter.ref = f"A1:{get_column_letter(len(columns))}{max(2, rows.height + 1)}"


def write_workbook(path: Path, pcn: str, rows: pl.DataFrame, summary: pl.DataFrame, manifest: dict,
                   reask: pl.DataFrame | None = None, rows_as_xml: bool = True) -> None:
    """``rows``: the PCN's list rows (practice by practice, in priority order). ``rows_as_xml``:
    a list sheet's rows after the first are written as the XML openpyxl writes for them, in one
    pass over each column (``_RowsLater``), instead of a cell object each; False: every cell
    through openpyxl. The workbook's parts are the same either way."""
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Font, PatternFill

    later = [] if rows_as_xml else None
    book = Workbook()
    read_me = book.active
    read_me.title = READ_ME
    has_reask = reask is not None and reask.height > 0
    for item, value in read_me_rows(pcn, manifest, [*rows.columns, *WORKFLOW], has_reask):
        read_me.append([item, value])
    read_me.column_dimensions["A"].width, read_me.column_dimensions["B"].width = 30, READ_ME_WIDTH
    for (cell,) in read_me.iter_rows(min_col=2, max_col=2):
        cell.alignment = Alignment(wrap_text=True, vertical="top")
        lines = -(-len(str(cell.value or "")) // (READ_ME_WIDTH - 10))  # bold text runs wider: 10 spare
        read_me.row_dimensions[cell.row].height = LINE_HEIGHT * max(1, lines)
    for (cell,) in read_me.iter_rows(min_col=1, max_col=1):
        cell.alignment = Alignment(vertical="top")
        if cell.value in ("column", "PCN"):
            cell.font = Font(bold=True)
        if cell.value == "WARNING":  # before the team plans its week: in red, above the facts
            for each in read_me[cell.row]:
                each.font = Font(bold=True, color=STALE_RED)
    _list_sheet(book, LIST, rows, later)
    by_practice = rows.sort("practice_pseudo_id", maintain_order=True)  # stable: priority order within
    for (practice,), own in by_practice.partition_by("practice_pseudo_id", as_dict=True, maintain_order=True).items():
        ods, name = (own[c][0] if c in own.columns else None for c in ("practice_ods_code", "practice_name"))
        _list_sheet(book, sheet_name(practice, book.sheetnames, ods, name), own, later)
    if has_reask:
        _reask_sheet(book, reask, later)
    sheet = book.create_sheet(SUMMARY)
    shown = summary_for_people(summary)  # "[suppressed]" where a count was 1-7, not an empty cell
    sheet.append(shown.columns)
    for row in shown.iter_rows():
        sheet.append(list(row))
    sheet.freeze_panes = "A2"
    if manifest.get("stale"):  # loud: white on red at the top of the Read me, and every tab red
        for cell in read_me[1]:
            cell.font, cell.fill = Font(bold=True, color="FFFFFF"), PatternFill("solid", fgColor=STALE_RED)
        for each in book.worksheets:
            each.sheet_properties.tabColor = STALE_RED
    if not later:
        book.save(path)
        return
    import io

    saved = io.BytesIO()
    book.save(saved)
    if not _write_with_rows(saved, path, later):  # not the sheets openpyxl was expected to write: all its own
        write_workbook(path, pcn, rows, summary, manifest, reask, rows_as_xml=False)


# --- A list sheet's rows as XML -------------------------------------------------------------
# openpyxl makes a cell object for every value and writes each through lxml: at 1,000,000
# patients that was most of the time spent publishing (a PCN's re-ask worklist alone is some
# 9,000 rows). For a sheet whose values are plain (text, whole numbers, yes/no, empty), openpyxl
# writes its first row as usual and the rest are made here, column by column, as the same XML it
# writes (inline strings, each column's style from the first row, the row heights), then put in
# the saved file. A sheet with any other value (a number with a fraction, a date, text openpyxl
# would refuse or treat specially) is written wholly by openpyxl. tests/spec/test_lists.py
# compares the two ways part by part.

_ILLEGAL = r"[\x00-\x08\x0b\x0c\x0e-\x1f]"  # openpyxl refuses these (IllegalCharacterError)
_ERROR_CODES = ("#NULL!", "#DIV/0!", "#VALUE!", "#REF!", "#NAME?", "#NUM!", "#N/A")  # openpyxl: error cells
_MAX_TEXT = 32767  # openpyxl cuts longer text
_PLAIN_INTEGERS = 10**15  # whole numbers below this are written as their digits (openpyxl: "%.16g")


@dataclass
class _RowsLater:
    sheet: object  # the openpyxl worksheet; its part in the file is known once saved
    rows: pl.DataFrame  # every data row, the team's columns included (empty)
    heights: list[int] | None  # each data row's height (points), or None


def _plain(rows: pl.DataFrame) -> bool:
    """Whether every value is one the XML below writes as openpyxl does."""
    checks = []
    for name, kind in rows.schema.items():
        column = pl.col(name)
        if kind == pl.String:
            checks.append((column.str.contains(_ILLEGAL) | column.str.contains(r"^\s|\s$")
                           | (column.str.starts_with("=") & (column.str.len_chars() > 1))
                           | column.is_in(_ERROR_CODES) | (column.str.len_chars() > _MAX_TEXT)).any())
        elif kind.is_integer():
            checks.append((column.abs() >= _PLAIN_INTEGERS).any())
        elif kind not in (pl.Boolean, pl.Null):
            return False
    return not checks or not any(v for v in rows.select(checks).row(0))


def _rows_later(later: list | None, sheet, rows: pl.DataFrame, heights: list[int] | None = None) -> bool:
    """Keep the sheet's rows after the first for ``_write_with_rows``; False when openpyxl
    writes them all (no ``later``, fewer than two rows, or a value that is not plain)."""
    if later is None or rows.height < 2 or not _plain(rows):
        return False
    later.append(_RowsLater(sheet, rows, heights))
    return True


def _escaped(text: pl.Expr, ascii_only: bool) -> pl.Expr:
    """Text as lxml writes it in an element of openpyxl's sheets: &, <, > and carriage returns
    escaped, every character beyond ASCII as its number (``&#233;``)."""
    text = (text.str.replace_all("&", "&amp;", literal=True).str.replace_all("<", "&lt;", literal=True)
            .str.replace_all(">", "&gt;", literal=True).str.replace_all("\r", "&#13;", literal=True))
    if ascii_only:
        return text
    return text.map_elements(lambda value: value.encode("ascii", "xmlcharrefreplace").decode("ascii"),
                             return_dtype=pl.String)


def _rows_xml(later: _RowsLater, styles: dict[str, str]) -> str:
    """Rows 3 onwards of the sheet, as openpyxl writes them. ``styles``: each column letter's
    style attribute in row 2 (' s="N"'), absent for a column without one."""
    from openpyxl.utils import get_column_letter

    rows = later.rows.slice(1)
    number = pl.int_range(3, rows.height + 3, eager=False).cast(pl.String)
    cells = []
    for index, (name, kind) in enumerate(rows.schema.items(), start=1):
        letter = get_column_letter(index)
        style = styles.get(letter, "")
        column = pl.col(name)
        start = pl.lit(f'<c r="{letter}') + number + pl.lit(f'"{style} t=')
        empty = start + pl.lit('"n"></c>') if style else pl.lit("")  # an unstyled empty cell is not written
        if kind == pl.String:
            filled = pl.when(column == "").then(start + pl.lit('"inlineStr"></c>')).otherwise(
                start + pl.lit('"inlineStr"><is><t>') + _escaped(column, not rows[name].str.contains(
                    r"[^\x00-\x7f]").any()) + pl.lit("</t></is></c>"))
        elif kind == pl.Boolean:
            filled = start + pl.lit('"b"><v>') + column.cast(pl.Int8).cast(pl.String) + pl.lit("</v></c>")
        elif kind == pl.Null:
            filled = empty
        else:
            filled = start + pl.lit('"n"><v>') + column.cast(pl.String) + pl.lit("</v></c>")
        cells.append(pl.when(column.is_null()).then(empty).otherwise(filled))
    opening = pl.lit('<row r="') + number
    if later.heights is not None:  # rows without one (wrapped_lines gives one for all when nothing wraps) have none
        heights = (later.heights[1:] + [None] * rows.height)[:rows.height]
        rows = rows.with_columns(pl.Series("_height", heights, dtype=pl.Int64))
        opening = opening + pl.when(pl.col("_height").is_null()).then(pl.lit("")).otherwise(
            pl.lit('" ht="') + pl.col("_height").cast(pl.String) + pl.lit('" customHeight="1'))
    opening = opening + pl.lit('">')
    return rows.select(pl.concat_str([opening, *cells, pl.lit("</row>")]).str.join("")).item()


def _write_with_rows(saved, path: Path, later: list[_RowsLater]) -> bool:
    """Copy the workbook openpyxl saved (``saved``) to ``path``, each of ``later``'s sheets with
    its rows after the first put after its first, and its dimension extended to its last row.
    False, with nothing written, where a sheet is not as openpyxl was expected to write it."""
    import io
    import re
    import zipfile

    parts = {each.sheet.path.lstrip("/"): each for each in later}  # xl/worksheets/sheetN.xml, numbered by the save
    copied = io.BytesIO()
    with zipfile.ZipFile(saved) as source, zipfile.ZipFile(copied, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename in parts:
                each, xml = parts.pop(info.filename), data.decode("utf-8")
                second = re.search(r'<row r="2"[^>]*>(.*?)</row>', xml, re.DOTALL)
                xml, found = re.subn(r'(<dimension ref="A1:[A-Z]+)2"', rf'\g<1>{each.rows.height + 1}"', xml, count=1)
                if second is None or not found or xml.count("<row ") != 2 or xml.count("</sheetData>") != 1:
                    return False
                styles = dict(re.findall(r'<c r="([A-Z]+)2"( s="\d+")', second.group(1)))
                end = xml.index("</sheetData>")
                data = (xml[:end] + _rows_xml(each, styles) + xml[end:]).encode("utf-8")
            target.writestr(info, data)
    if parts:
        return False
    Path(path).write_bytes(copied.getvalue())
    return True
