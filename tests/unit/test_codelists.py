"""The project's codelists: valid, and consistent with the real NHS / OpenSAFELY lists."""

from __future__ import annotations

import csv

import pytest

from phm.codelists import load_codelists, project_codelists
from phm.ethnicity import NHS_ETHNIC_CATEGORIES, NOT_STATED
from phm.exceptions import CodelistError

COVERAGE: list[tuple[str, int, int]] = []  # printed at the end of the run by conftest
REQUIRED_CONCEPTS = {
    "ethnicity", "hypertension", "hypertension_resolved", "diabetes_type1", "diabetes_type2", "chd",
    "mi", "stroke", "tia", "atrial_fibrillation", "ckd_3_5", "rheumatoid_arthritis", "sle",
    "migraine", "severe_mental_illness", "erectile_dysfunction", "family_history_cvd",
    "family_history_diabetes", "gestational_diabetes", "pcos", "learning_disability",
    "palliative_care", "care_home", "systolic_bp", "diastolic_bp", "bmi", "smoking",
    "total_cholesterol", "hdl_cholesterol", "cholesterol_hdl_ratio", "hba1c", "fasting_glucose",
    "antihypertensives", "statins", "corticosteroids", "atypical_antipsychotics",
}


def _reference_codes(reference_dir, filename, code_column):
    with open(reference_dir / "codelists" / filename, encoding="utf-8") as handle:
        return {row[code_column]: row for row in csv.DictReader(handle)}


def test_every_required_concept_has_a_codelist():
    assert REQUIRED_CONCEPTS <= set(project_codelists())


@pytest.mark.parametrize("concept", sorted(c for c, cl in project_codelists().items() if cl.references))
def test_every_project_code_is_in_its_reference_list(reference_dir, concept):
    cl = project_codelists()[concept]
    reference = {}
    for filename in cl.references:
        reference.update(_reference_codes(reference_dir, filename, cl.reference_code_column))
    checked = {c for c, cat in cl.codes.items() if not (concept == "ethnicity" and cat == NOT_STATED)}
    missing = sorted(checked - set(reference))
    assert not missing, f"{concept}: codes not in {cl.references}: {missing}"
    COVERAGE.append((concept, len(checked), len(reference)))


def test_ethnicity_categories_agree_with_the_reference_16_groups(reference_dir):
    cl = project_codelists()["ethnicity"]
    reference = _reference_codes(reference_dir, cl.references[0], "code")
    letters = list(NHS_ETHNIC_CATEGORIES)  # A..S in Data Dictionary order = Grouping_16 1..16
    for code, category in cl.codes.items():
        if category == NOT_STATED:
            continue
        assert letters[int(reference[code][cl.reference_category_column]) - 1] == category, code
    # all 16 categories and 'not stated' are represented; 'not known' is the absence of a code
    assert set(cl.codes.values()) == set(letters) | {NOT_STATED}


def test_smoking_categories_cover_never_ex_light_moderate_heavy():
    assert {"never", "ex", "light", "moderate", "heavy"} <= set(project_codelists()["smoking"].codes.values())


def test_measurements_have_units_and_plausible_ranges():
    for concept in ("systolic_bp", "diastolic_bp", "bmi", "total_cholesterol", "hdl_cholesterol",
                    "cholesterol_hdl_ratio", "hba1c", "fasting_glucose"):
        cl = project_codelists()[concept]
        assert cl.unit and cl.plausible_min < cl.plausible_max


def _write_lists(tmp_path, csv_text, manifest='[demo]\nsystem = "snomedct"\n'):
    (tmp_path / "manifest.toml").write_text(manifest)
    (tmp_path / "demo.csv").write_text(csv_text)
    return tmp_path


@pytest.mark.parametrize("csv_text,message", [
    ("code,term\n38341003,Hypertension\n0123456,Leading zero\n", r"demo.csv, line 3: code '0123456' is not a valid snomedct"),
    ("code,term\n38341003,Hypertension\nabc,Letters\n", r"demo.csv, line 3: code 'abc'"),
    ("code,term\n38341003,Hypertension\n38341003,Again\n", r"demo.csv, line 3: code 38341003 is listed twice"),
    ("id,name\n38341003,Hypertension\n", r"demo.csv, line 1: header must have columns 'code' and 'term'"),
    ("code,term,category\n38341003,Hypertension,\n", r"demo.csv, line 2: code 38341003 has no category"),
])
def test_malformed_codelists_name_the_file_line_and_code(tmp_path, csv_text, message):
    with pytest.raises(CodelistError, match=message):
        load_codelists(_write_lists(tmp_path, csv_text))


def test_unknown_system_and_unlisted_files_are_errors(tmp_path):
    with pytest.raises(CodelistError, match=r"\[demo\] system must be one of"):
        load_codelists(_write_lists(tmp_path, "code,term\n38341003,H\n", '[demo]\nsystem = "read"\n'))
    _write_lists(tmp_path, "code,term\n38341003,H\n")
    (tmp_path / "stray.csv").write_text("code,term\n38341003,H\n")
    with pytest.raises(CodelistError, match="not in the manifest: \\['stray'\\]"):
        load_codelists(tmp_path)
