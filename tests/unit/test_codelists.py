"""The project's codelists: valid, and consistent with the real NHS / OpenSAFELY lists."""

from __future__ import annotations

import csv

import pytest

from phm.codelists import coverage, load_codelists, project_codelists, unused_references
from phm.ethnicity import BROAD_GROUPS, NHS_ETHNIC_CATEGORIES, NOT_KNOWN, NOT_STATED, broad_group
from phm.exceptions import CodelistError

REQUIRED_CONCEPTS = {
    "ethnicity", "hypertension", "hypertension_resolved", "diabetes_type1", "diabetes_type2", "chd",
    "mi", "stroke", "tia", "atrial_fibrillation", "ckd_3_5", "rheumatoid_arthritis", "sle",
    "migraine", "severe_mental_illness", "erectile_dysfunction", "family_history_cvd",
    "family_history_diabetes", "gestational_diabetes", "pcos", "learning_disability",
    "palliative_care", "care_home", "systolic_bp", "diastolic_bp", "bmi", "smoking",
    "total_cholesterol", "hdl_cholesterol", "cholesterol_hdl_ratio", "hba1c", "fasting_glucose",
    "antihypertensives", "statins", "corticosteroids", "atypical_antipsychotics",
    "diabetes", "non_diabetic_hyperglycaemia", "ckd_1_2", "egfr", "palliative_care_not_indicated",
    "nhs_health_check", "statin_exclusion", "abpm", "home_bp",
}
# brand names of statins (and statin combinations) whose terms do not contain 'statin'
STATIN_BRANDS = {"Lipitor", "Zocor", "Crestor", "Lescol", "Lipostat", "Inegy", "Simvador", "Lipobay", "Ranzolont",
                 "Lloydspharmacy", "Baycol", "Livazo", "Pravachol", "Cholib", "Atozet", "Vytorin", "Cadaff",
                 "Dorisin", "Luvinsta", "Mevacor", "Nandovar", "Pinmactil", "Stefluvin"}


def _reference_rows(reference_dir, filename, code_column="code"):
    with open(reference_dir / "codelists" / filename, encoding="utf-8") as handle:
        return {row[code_column]: row for row in csv.DictReader(handle)}


def test_every_required_concept_has_a_codelist():
    assert REQUIRED_CONCEPTS <= set(project_codelists())


def test_every_reference_file_is_covered_by_a_concept_or_documented_as_unused(reference_dir):
    covered = {name for cl in project_codelists().values() for name in cl.references}
    unused = unused_references()
    present = {p.name for p in (reference_dir / "codelists").glob("*.csv")}
    assert not covered & set(unused), "a reference file is both covered and 'unused'"
    assert not (covered | set(unused)) - present, "the manifest names reference files that do not exist"
    undocumented = sorted(present - covered - set(unused))
    assert not undocumented, f"reference lists no concept covers and unused_references.toml does not explain: {undocumented}"
    assert all(reason.strip() for reason in unused.values())


@pytest.mark.parametrize("concept", sorted(c for c, cl in project_codelists().items() if cl.references))
def test_codelist_covers_its_national_lists_in_both_directions(reference_dir, concept, record_property):
    """Every reference code is in the list or excluded with a reason; every list code is in a
    reference or names its source; no exclusion is stale."""
    cl = project_codelists()[concept]
    cov = coverage(cl, reference_dir / "codelists")
    assert not cov.undocumented_gaps, (
        f"{concept}: {len(cov.undocumented_gaps)} reference codes neither in the list nor in "
        f"exclusions/{concept}.csv: {list(cov.undocumented_gaps)[:20]}")
    assert not cov.unsourced, f"{concept}: codes in no reference and with no source: {list(cov.unsourced)[:20]}"
    assert not cov.stale_exclusions, f"{concept}: exclusions for codes the list has or the reference lacks: {cov.stale_exclusions[:20]}"
    record_property("codelist coverage", (concept, len(cl.codes), cov.reference_codes))  # printed by conftest


@pytest.mark.parametrize("concept", sorted(c for c, cl in project_codelists().items() if not cl.references))
def test_a_list_without_a_national_list_says_so_and_sources_every_code(concept):
    cl = project_codelists()[concept]
    assert "no national" in cl.provenance.lower(), f"{concept}: say in provenance that no national list was found"
    assert set(cl.sources) == set(cl.codes), f"{concept}: every code needs a source"


def test_coverage_finds_a_gap_an_extra_code_and_a_stale_exclusion(tmp_path):
    """The coverage check itself can fail: one of each kind of problem, on tiny lists."""
    refs = tmp_path / "ref"
    refs.mkdir()
    (refs / "national.csv").write_text("code,term\n38341003,Hypertension\n59621000,Essential hypertension\n"
                                        "10725009,Benign hypertension\n")
    lists = _write_lists(tmp_path / "lists", "code,term,source\n38341003,Hypertension,\n1201005,Benign essential,\n",
                         '[demo]\nsystem = "snomedct"\nreferences = ["national.csv"]\n')
    (lists / "exclusions").mkdir()
    (lists / "exclusions" / "demo.csv").write_text(
        "code,term,reference,reason\n10725009,Benign hypertension,national.csv,not wanted here\n"
        "38341003,Hypertension,national.csv,stale: the list has it\n")
    cov = coverage(load_codelists(lists)["demo"], refs, lists)
    assert cov.undocumented_gaps == ("59621000",)
    assert cov.unsourced == ("1201005",)
    assert cov.stale_exclusions == ("38341003",)
    assert (cov.reference_codes, cov.included, cov.excluded) == (3, 1, 1)
    assert not cov.complete


def test_ethnicity_maps_every_code_to_a_category_or_not_stated_or_not_known():
    cl = project_codelists()["ethnicity"]
    allowed = set(NHS_ETHNIC_CATEGORIES) | {NOT_STATED, NOT_KNOWN}
    assert set(cl.codes.values()) == allowed  # all 16 categories, Z and 99 are represented
    for code, category in cl.codes.items():
        assert broad_group(category) in set(BROAD_GROUPS) | {"Not stated", "Not known"}, code


def test_ethnicity_categories_agree_with_opensafely_and_primis(reference_dir):
    cl = project_codelists()["ethnicity"]
    letters = list(NHS_ETHNIC_CATEGORIES)  # A..S in Data Dictionary order = Grouping_16 1..16
    for code, row in _reference_rows(reference_dir, "opensafely-ethnicity-snomed-0removed.csv").items():
        assert cl.codes[code] == letters[int(row["Grouping_16"]) - 1], code
    for name in ("primis-covid19-vacc-uptake-eth_notstated.csv", "primis-covid19-vacc-uptake-eth_notgiptref.csv"):
        assert {cl.codes[c] for c in _reference_rows(reference_dir, name)} == {NOT_STATED}, name
    assert {cl.codes[c] for c in _reference_rows(reference_dir, "primis-covid19-vacc-uptake-eth_norecord.csv")} == {NOT_KNOWN}


def test_ethnicity_has_2001_and_2011_census_codes_for_every_category():
    cl = project_codelists()["ethnicity"]
    for census in ("2001 census", "2011 census"):
        categories = {cat for code, cat in cl.codes.items() if census in cl.terms[code].lower()}
        assert set(NHS_ETHNIC_CATEGORIES) <= categories, f"{census}: {set(NHS_ETHNIC_CATEGORIES) - categories}"


def test_retired_dmd_ids_count_with_their_successors(reference_dir):
    """dm+d ids change: the corticosteroid list keeps each previous VMP id beside its successor."""
    cl = project_codelists()["corticosteroids"]
    previous = {code: row["term"].split()[-1]
                for code, row in _reference_rows(reference_dir, "user-markdrussell-corticosteroids-oral-im-or-iv-dmd.csv").items()
                if row["term"].startswith("VMP previous to")}
    assert previous
    for old, successor in previous.items():
        assert (old in cl.codes) == (successor in cl.codes), (old, successor)
    # the project's first prednisolone ids are the retired ones; both they and the current ids count
    assert {"325427002", "325426006"} <= set(cl.codes)
    statins = project_codelists()["statins"]
    assert {"319996000", "42381911000001105"} <= set(statins.codes)  # simvastatin 10 mg: old and new VMP id


def test_no_wrong_medicines_in_the_drug_lists():
    antipsychotics = project_codelists()["atypical_antipsychotics"]
    assert "321614001" in antipsychotics.codes  # olanzapine 10 mg tablets
    assert not {"321740003", "322038001", "321617005"} & set(antipsychotics.codes)  # the old, wrong ids
    steroids = project_codelists()["corticosteroids"]
    assert not any("fludrocortisone" in steroids.terms[c].lower() or "injection" in steroids.terms[c].lower()
                   for c in steroids.codes)
    statins = project_codelists()["statins"]
    assert all("statin" in statins.terms[c].lower() or statins.terms[c].split()[0] in STATIN_BRANDS
               for c in statins.codes), [statins.terms[c] for c in statins.codes
                                         if "statin" not in statins.terms[c].lower()][:10]


def test_the_antiplatelet_list_holds_the_secondary_prevention_drugs_and_nothing_else():
    cl = project_codelists()["antiplatelets"]
    # BNF 2.9 products: generic names, or the brands of the same list
    generic = ("aspirin", "clopidogrel", "prasugrel", "ticagrelor", "dipyridamole")
    drugs = {next((g for g in generic if g in cl.terms[c].lower()), cl.terms[c].split()[0]) for c in cl.codes}
    assert set(generic) <= drugs
    assert not any("injection" in cl.terms[c].lower() for c in cl.codes)  # stress imaging, not prevention
    # the commonest products, first in the list as the generator's code picker expects
    assert list(cl.codes)[:2] == ["319773006", "319799004"]  # aspirin 75 mg dispersible, clopidogrel 75 mg
    assert all(cl.sources[c].startswith("OpenCodelists opensafely/antiplatelets/15eb3bfc") for c in cl.codes)


def test_smoking_categories_cover_never_ex_light_moderate_heavy():
    assert {"never", "ex", "light", "moderate", "heavy"} <= set(project_codelists()["smoking"].codes.values())


def test_measurements_have_units_and_plausible_ranges():
    for concept in ("systolic_bp", "diastolic_bp", "bmi", "total_cholesterol", "hdl_cholesterol",
                    "cholesterol_hdl_ratio", "hba1c", "fasting_glucose"):
        cl = project_codelists()[concept]
        assert cl.unit and cl.plausible_min < cl.plausible_max


def _write_lists(tmp_path, csv_text, manifest='[demo]\nsystem = "snomedct"\n'):
    tmp_path.mkdir(parents=True, exist_ok=True)
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
