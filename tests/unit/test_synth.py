"""The synthetic population: deterministic, in the contract layout, and realistic where it matters."""

from __future__ import annotations

import datetime as dt
import json
import math

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from scipy.stats import chi2

from phm.codelists import project_codelists
from phm.contract import TABLES
from phm.ethnicity import NHS_ETHNIC_CATEGORIES
from phm.exceptions import ConfigError
from phm.synth import SynthConfig, generate
from phm.synth_profiles import ETHNICITY_PROFILES


@pytest.fixture(scope="module")
def population(tmp_path_factory):
    """60,000 patients: large enough for practice/PCN sizes and group shares to be checked (with
    hospital records too, which change no other table, so every contract table is there)."""
    out = tmp_path_factory.mktemp("pop") / "extract"
    generate(SynthConfig(patients=60_000, seed=11, hospital_ethnicity=0.3), out)
    tables = {name: pl.read_parquet(out / f"{name}.parquet") for name in TABLES}
    tables["truth"] = pl.read_parquet(out / "truth" / "patients.parquet")
    return out, tables


def _codes(concept):
    return list(project_codelists()[concept].codes)


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path):
    generate(SynthConfig(patients=2_000, seed=3), tmp_path / "a")
    generate(SynthConfig(patients=2_000, seed=3), tmp_path / "b")
    generate(SynthConfig(patients=2_000, seed=4), tmp_path / "c")
    assert not (tmp_path / "a" / "hospital_ethnicity.parquet").exists()  # optional: only with its knob
    for name in (n for n, t in TABLES.items() if not t.optional):
        a = pl.read_parquet(tmp_path / "a" / f"{name}.parquet")
        assert_frame_equal(a, pl.read_parquet(tmp_path / "b" / f"{name}.parquet"))
    events_a = pl.read_parquet(tmp_path / "a" / "clinical_events.parquet")
    events_c = pl.read_parquet(tmp_path / "c" / "clinical_events.parquet")
    assert not events_a.equals(events_c)


def test_tables_follow_the_contract(population):
    out, tables = population
    types = {"integer": pl.Int64, "string": pl.String, "date": pl.Date, "float": pl.Float64}
    for name, spec in TABLES.items():
        assert tables[name].columns == spec.column_names
        for column in spec.columns:
            assert tables[name].schema[column.name] == types[column.type], (name, column.name)
            if not column.nullable:
                assert tables[name][column.name].null_count() == 0, (name, column.name)
    assert json.loads((out / "extract.json").read_text())["imd_version"] == "IMD2019"


def test_practices_of_5_to_15_thousand_in_pcns_of_30_to_50_thousand(population):
    _, t = population
    current = t["practice_registrations"].sort("start_date").group_by("patient_id").last()
    sizes = current.join(t["practices"], on="practice_pseudo_id").group_by("practice_pseudo_id", "pcn_code").len()
    assert sizes["len"].min() >= 4_000 and sizes["len"].max() <= 16_000  # movers shift a few
    pcn = sizes.group_by("pcn_code").agg(pl.col("len").sum())
    assert pcn["len"].min() >= 25_000 and pcn["len"].max() <= 52_000
    assert t["practices"]["icb_code"].n_unique() == 1


def test_ethnicity_mix_follows_the_2021_census_profile(population):
    _, t = population
    shares = t["truth"]["ethnicity_true"].value_counts(normalize=True)
    share = dict(zip(shares["ethnicity_true"], shares["proportion"], strict=True))
    profile = ETHNICITY_PROFILES["england"]
    white = sum(share.get(c, 0) for c in "ABC")
    assert white == pytest.approx(sum(profile[c] for c in "ABC") / 100, abs=0.04)
    assert set(share) == set(profile)  # all 16 categories occur


def test_ethnicity_is_recorded_as_in_real_records(population):
    _, t = population
    eth = project_codelists()["ethnicity"].codes
    coded = (t["clinical_events"].filter(pl.col("snomedct_code").is_in(list(eth)))
             .with_columns(pl.col("snomedct_code").replace_strict(eth).alias("category")))
    not_recorded_codes = coded.filter(pl.col("category") == "99")["patient_id"].n_unique()
    assert not_recorded_codes > 0.02 * t["patients"].height  # 'ethnic group not recorded' and the like
    coded = coded.filter(pl.col("category") != "99")  # they carry no category: not known
    per_patient = coded.group_by("patient_id").agg(pl.col("category").n_unique().alias("n"),
                                                   (pl.col("category") == "Z").any().alias("z"))
    n = t["patients"].height
    unrecorded = 1 - per_patient.height / n
    assert 0.10 <= unrecorded <= 0.20
    assert per_patient["z"].sum() > 0.01 * n          # some 'not stated'
    assert (per_patient["n"] > 1).sum() > 0.02 * n     # some conflicting codes


def test_codes_spread_over_each_list_as_in_real_records(population):
    """Several codes per concept, most records on a few common codes and a share on the rest
    (older, inactive and legacy codes); ethnicity in 2001- and 2011-census codes."""
    _, t = population
    lists = project_codelists()
    for concept, table, column in (("hypertension", "clinical_events", "snomedct_code"),
                                   ("systolic_bp", "clinical_events", "snomedct_code"),
                                   ("smoking", "clinical_events", "snomedct_code"),
                                   ("statins", "medications", "dmd_code"),
                                   ("antihypertensives", "medications", "dmd_code")):
        counts = (t[table].filter(pl.col(column).is_in(list(lists[concept].codes)))[column]
                  .value_counts().sort("count", descending=True)["count"])
        top_share = counts[0] / counts.sum()
        assert counts.len() >= 5 and 0.1 <= top_share <= 0.6, (concept, counts.len(), top_share)
        assert counts[5:].sum() / counts.sum() > 0.1, concept  # the long tail is there
    eth = lists["ethnicity"]
    used = t["clinical_events"].filter(pl.col("snomedct_code").is_in(list(eth.codes)))["snomedct_code"]
    census = used.map_elements(lambda c: "2001" if "2001 census" in eth.terms[c].lower()
                               else "2011" if "2011 census" in eth.terms[c].lower() else "other",
                               return_dtype=pl.String).value_counts()
    share = dict(zip(census["snomedct_code"], census["count"] / census["count"].sum(), strict=True))
    assert share["2001"] > 0.4 and share["2011"] > 0.15 and share["other"] > 0.03, share


def test_practices_record_decisions_monitoring_and_checks(population):
    """Statin declined or unsuitable, ABPM or home monitoring, NHS Health Checks and coded NDH
    appear, so the lists' set-aside rules meet them on the synthetic extract."""
    _, t = population
    n = t["patients"].height
    for concept, low, high in (("statin_exclusion", 0.005, 0.05), ("nhs_health_check", 0.05, 0.3),
                               ("non_diabetic_hyperglycaemia", 0.002, 0.05), ("abpm", 0.001, 0.05),
                               ("home_bp", 0.001, 0.05)):
        patients = t["clinical_events"].filter(pl.col("snomedct_code").is_in(_codes(concept)))["patient_id"].n_unique()
        assert low * n < patients < high * n, (concept, patients / n)


def test_other_codes_are_in_no_project_codelist():
    from phm.synth_profiles import OTHER_CODES
    listed = {c for cl in project_codelists().values() for c in cl.codes}
    assert not set(OTHER_CODES) & listed


def test_minority_groups_live_in_more_deprived_areas_and_carry_more_diabetes(population):
    _, t = population
    truth = t["truth"]
    by = truth.group_by(pl.col("ethnicity_true").is_in(["J", "K"]).alias("pak_bang")).agg(
        pl.col("imd_decile").mean())
    decile = dict(zip(by["pak_bang"], by["imd_decile"], strict=True))
    assert decile[True] < decile[False] - 1  # decile 1 = most deprived
    adults = truth.join(t["patients"], on="patient_id").filter(
        pl.col("date_of_birth") < pl.date(1976, 1, 1))
    diab = adults.group_by(pl.col("ethnicity_true").is_in(["H", "J", "K", "L"]).alias("sa")).agg(
        pl.col("t2d_true_past_index").mean())
    rate = dict(zip(diab["sa"], diab["t2d_true_past_index"], strict=True))
    assert rate[True] > 1.3 * rate[False]
    htn = adults.group_by(pl.col("ethnicity_true").is_in(["M", "N", "P"]).alias("black")).agg(
        pl.col("hypertension_true_past_index").mean())
    rate = dict(zip(htn["black"], htn["hypertension_true_past_index"], strict=True))
    assert rate[True] > 1.2 * rate[False]


def test_measurements_repeat_over_years_and_registrations_move_and_end(population):
    _, t = population
    sbp = t["clinical_events"].filter(pl.col("snomedct_code").is_in(_codes("systolic_bp")))
    per = sbp.group_by("patient_id").len()
    assert per["len"].median() >= 3
    span = sbp["date"].max() - sbp["date"].min()
    assert span.days > 9 * 365
    regs = t["practice_registrations"]
    assert regs["patient_id"].n_unique() == t["patients"].height
    assert regs.height > t["patients"].height  # some moved practice
    assert regs["end_date"].null_count() < regs.height  # some ended
    assert t["patients"]["date_of_death"].null_count() < t["patients"].height


def test_outcome_recording_knob_under_records_one_group_only(tmp_path):
    out = tmp_path / "biased"
    generate(SynthConfig(patients=40_000, seed=5, profile="diverse_urban",
                         outcome_recording={"N": 0.5}), out)
    truth = pl.read_parquet(out / "truth" / "patients.parquet")
    rates = (truth.filter(pl.col("htn_event") | pl.col("cvd_event"))
             .group_by(pl.col("ethnicity_true") == "N")
             .agg(pl.col("cvd_event_recorded").sum() / pl.col("cvd_event").sum()))
    ratio = dict(zip(rates["ethnicity_true"], rates["cvd_event_recorded"], strict=True))
    # recorded share relative to everyone else's (who lose only events after leaving the practice)
    assert ratio[True] / ratio[False] == pytest.approx(0.5, abs=0.15)
    assert ratio[False] > 0.85
    # a coding failure, not a failure of care: hypertension known and treated but not coded is
    # on antihypertensives with no hypertension code (the record's "treated without a diagnosis")
    treated = pl.read_parquet(out / "medications.parquet").filter(
        pl.col("dmd_code").is_in(_codes("antihypertensives")))["patient_id"].unique()
    uncoded = (truth.filter(pl.col("patient_id").is_in(treated.implode()) & pl.col("hypertension_true_past_index")
                            & ~pl.col("hypertension_diagnosed_past_index"))
               .group_by(pl.col("ethnicity_true") == "N").len())
    uncoded = dict(zip(uncoded["ethnicity_true"], uncoded["len"], strict=True))
    assert uncoded.get(True, 0) > 50 and uncoded.get(False, 0) == 0  # everyone else: the coded are the treated
    on_drugs = pl.read_parquet(out / "medications.parquet").filter(
        pl.col("dmd_code").is_in(_codes("glucose_lowering")))["patient_id"].unique()
    pcos = pl.read_parquet(out / "clinical_events.parquet").filter(
        pl.col("snomedct_code").is_in(_codes("pcos")))["patient_id"].unique()  # metformin for PCOS
    uncoded = (truth.filter(pl.col("patient_id").is_in(on_drugs.implode()) & ~pl.col("t2d_coded_by_extract")
                            & ~pl.col("patient_id").is_in(pcos.implode()))
               .group_by(pl.col("ethnicity_true") == "N").len())
    uncoded = dict(zip(uncoded["ethnicity_true"], uncoded["len"], strict=True))
    assert uncoded.get(True, 0) > 20 and uncoded.get(False, 0) == 0
    # an unrecorded CVD event the practice knows of leaves its antiplatelet behind; elsewhere the
    # antiplatelets without a CVD code are the baseline (primary prevention), alike in every group
    on_antiplatelets = pl.read_parquet(out / "medications.parquet").filter(
        pl.col("dmd_code").is_in(_codes("antiplatelets")))["patient_id"].unique()
    treated = truth.filter(pl.col("patient_id").is_in(on_antiplatelets.implode()))
    cvd_known = pl.col("cvd_true_past_index") | (pl.col("cvd_event") & pl.col("cvd_event_date").is_not_null())
    cvd_uncoded = cvd_known & ~pl.col("cvd_diagnosed_past_index") & ~pl.col("cvd_event_recorded")
    share = (treated.group_by(pl.col("ethnicity_true") == "N")
             .agg(cvd_uncoded.sum().alias("uncoded"), pl.len()))
    share = {r["ethnicity_true"]: r for r in share.iter_rows(named=True)}
    assert share[True]["uncoded"] > 10
    assert share[True]["uncoded"] / share[True]["len"] > 3 * share[False]["uncoded"] / share[False]["len"]
    planted = json.loads((out / "truth" / "planted.json").read_text())
    assert planted["outcome_recording"] == {"N": 0.5}


def test_measurement_access_knob_reduces_one_groups_readings(tmp_path):
    counts = {}
    for label, knob in (("none", {}), ("gap", {"Black": 0.4})):
        out = tmp_path / label
        generate(SynthConfig(patients=20_000, seed=9, profile="diverse_urban", measurement_access=knob), out)
        truth = pl.read_parquet(out / "truth" / "patients.parquet")
        events = pl.read_parquet(out / "clinical_events.parquet").filter(
            pl.col("snomedct_code").is_in(_codes("systolic_bp")))
        black = truth.filter(pl.col("ethnicity_true").is_in(["M", "N", "P"]))["patient_id"]
        counts[label] = events.filter(pl.col("patient_id").is_in(black.implode())).height / black.len()
    assert counts["gap"] == pytest.approx(0.4 * counts["none"], rel=0.15)


@pytest.mark.parametrize("kwargs,message", [
    ({"patients": 0}, "--patients must be at least 1"),
    ({"profile": "mars"}, "--profile must be one of"),
    ({"outcome_recording": {"Purple": 0.5}}, "unknown group 'Purple'"),
    ({"measurement_access": {"N": 1.5}}, r"measurement_access\[N\] must be a probability"),
])
def test_invalid_settings_are_rejected_with_the_option_named(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        generate(SynthConfig(**kwargs), tmp_path / "x")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_generated_dates_are_consistent_for_any_seed(tmp_path, seed):
    """What ingest would quarantine must never be generated: the synthetic extract is clean."""
    out = tmp_path / "x"
    generate(SynthConfig(patients=15_000, seed=seed), out)
    extract_date = pl.date(2026, 3, 31)
    patients = pl.read_parquet(out / "patients.parquet")
    for name in ("clinical_events", "medications"):
        events = pl.read_parquet(out / f"{name}.parquet").join(patients, on="patient_id")
        assert events.filter((pl.col("date") > extract_date) | (pl.col("date") < pl.col("date_of_birth"))
                             | (pl.col("date") > pl.col("date_of_death"))).height == 0, name
    for name in ("addresses", "practice_registrations"):
        periods = pl.read_parquet(out / f"{name}.parquet")
        assert periods.filter((pl.col("end_date") < pl.col("start_date"))
                              | (pl.col("start_date") > extract_date)
                              | (pl.col("end_date") > extract_date)).height == 0, name


BROAD_GROUP = {c: NHS_ETHNIC_CATEGORIES[c][1] for c in ETHNICITY_PROFILES["england"]}


@pytest.mark.parametrize("profile", ["england", "diverse_urban"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_each_groups_events_sit_within_chance_of_its_stated_risks(tmp_path, seed, profile):
    """The answer key agrees with itself: per broad group and outcome, the simulated events are the
    sum of the stated cumulative incidences give or take chance (z within +-3.5; jointly, the
    20 squared z's a chi-square on 20 degrees of freedom with p above 0.001), and the expected need
    for type 2 diabetes is what its draws gave, give or take chance. Before death was
    taken into account, White patients had 2,069 CVD events against 2,747 stated (z = -13)."""
    out = tmp_path / "x"
    generate(SynthConfig(patients=40_000, seed=seed, profile=profile), out)
    truth = pl.read_parquet(out / "truth" / "patients.parquet").with_columns(
        pl.col("ethnicity_true").replace_strict(BROAD_GROUP).alias("group"))
    z = []
    for outcome in ("cvd", "t2d", "htn"):
        stated = pl.col(f"true_cuminc_{outcome}_horizon")
        per_group = truth.group_by("group").agg(
            pl.col(f"{outcome}_event").sum().alias("observed"), stated.sum().alias("expected"),
            (stated * (1 - stated)).sum().alias("variance"))
        assert per_group.height == 5
        for row in per_group.iter_rows(named=True):
            z.append((row["observed"] - row["expected"]) / math.sqrt(row["variance"]))
            assert abs(z[-1]) < 3.5, (outcome, row)
        # the net risk (had nobody died) is above the cumulative incidence, never below
        assert truth.select((pl.col(f"true_risk_{outcome}_horizon") >= stated - 1e-12).all()).item()
    # the expected need for type 2 diabetes (the tracking's key) against what the draws gave the
    # patients with no code at T0: undiagnosed diabetes at T0 counted 1, else the onset risk. Its
    # variance per patient is q (1 - q) (1 - r)^2, at most e (1 - e) for the expected need e.
    uncoded = truth.filter(~pl.col("t2d_diagnosed_past_index"))
    expected = pl.col("t2d_expected_need_horizon")
    realised = pl.when(pl.col("t2d_true_past_index")).then(1.0).otherwise(pl.col("true_risk_t2d_horizon"))
    per_group = uncoded.group_by("group").agg(realised.sum().alias("observed"), expected.sum().alias("expected"),
                                              (expected * (1 - expected)).sum().alias("variance"))
    for row in per_group.iter_rows(named=True):
        z.append((row["observed"] - row["expected"]) / math.sqrt(row["variance"]))
        assert abs(z[-1]) < 3.5, ("t2d expected need", row)
    # free of diabetes at T0, the expected need is the onset risk plus the chance of the draw at T0
    free = uncoded.filter(~pl.col("t2d_true_past_index"))
    assert free.select((expected >= pl.col("true_risk_t2d_horizon") - 1e-12).all() & (expected <= 1).all()).item()
    assert chi2.sf(sum(v * v for v in z), len(z)) > 0.001


def test_conditions_present_at_the_index_date_are_coded_before_it_at_any_adult_age(population):
    """A 20-year-old diagnosed with type 2 diabetes is coded before T0 (it used to be coded at 25,
    after T0, so the pipeline saw a new diagnosis or an 'undiagnosed' HbA1c of 50-80), and the
    truth says what each patient has by the extract date and whether the record shows it."""
    out, t = population
    index_date = dt.date.fromisoformat(json.loads((out / "truth" / "planted.json").read_text())["past_index_date"])
    t2d_codes = t["clinical_events"].filter(pl.col("snomedct_code").is_in(_codes("diabetes_type2")))
    first_code = t2d_codes.group_by("patient_id").agg(pl.col("date").min().alias("first_t2d_code"))
    registered_at_index = t["practice_registrations"].filter(
        (pl.col("start_date") < index_date) & (pl.col("end_date").is_null() | (pl.col("end_date") > index_date)))
    diagnosed = (t["truth"].filter(pl.col("t2d_diagnosed_past_index"))
                 .join(t["patients"], on="patient_id")
                 .filter(pl.col("patient_id").is_in(registered_at_index["patient_id"].implode()))
                 .join(first_code, on="patient_id", how="left")
                 .with_columns(((pl.lit(index_date) - pl.col("date_of_birth")).dt.total_days() / 365.25)
                               .alias("age_at_index")))
    young = diagnosed.filter(pl.col("age_at_index") < 25)
    assert young.height > 10
    assert (diagnosed["first_t2d_code"] < index_date).all()
    # the truth's 'coded by the extract date' is exactly who has a code in the extract
    coded = t["truth"].join(first_code, on="patient_id", how="left").select(
        pl.col("t2d_coded_by_extract") == pl.col("first_t2d_code").is_not_null())
    assert coded.to_series().all()
    assert t["truth"].select((pl.col("t2d_coded_by_extract") <= pl.col("t2d_true_at_extract")).all()).item()


def test_each_practice_has_its_own_lookup_to_test_nhs_numbers_that_ingest_does_not_read(tmp_path):
    """practice_side/<practice>/patients.csv: the patients registered with the practice at the
    extract date, each with one NHS number from the 999 testing range, valid and unique."""
    from phm.ingest import unknown_files
    from phm.reidentify import nhs_number_is_valid, read_lookup

    out = tmp_path / "extract"
    generate(SynthConfig(patients=25_000, seed=5, pcns=1), out)  # 2-3 practices: movers between them
    practices = pl.read_parquet(out / "practices.parquet")
    assert practices["ods_code"].str.contains(r"^[A-Z][0-9]{5}$").all() and practices["ods_code"].is_unique().all()
    assert practices["practice_name"].str.starts_with("Synthetic ").all() and practices["practice_name"].is_unique().all()
    registrations = pl.read_parquet(out / "practice_registrations.parquet")
    current = registrations.filter(pl.col("start_date") <= dt.date(2026, 3, 31),
                                   pl.col("end_date").is_null() | (pl.col("end_date") >= dt.date(2026, 3, 31)))
    numbers = {}
    for practice in practices["practice_pseudo_id"].to_list():
        lookup = read_lookup(out / "practice_side" / str(practice) / "patients.csv")  # validates every number
        expected = current.filter(pl.col("practice_pseudo_id") == practice)["patient_id"].cast(pl.String)
        assert sorted(lookup["patient_id"].to_list()) == sorted(expected.to_list())
        for patient, number in lookup.iter_rows():
            assert numbers.setdefault(patient, number) == number  # a patient has one number everywhere
    assert all(n.startswith("999") and nhs_number_is_valid(n) for n in numbers.values())
    assert len(set(numbers.values())) == len(numbers)
    assert "practice_side/" in unknown_files(out)  # named, not read, by ingest


def test_repeated_ethnicity_codes_only_add_codes_of_a_category_already_recorded(tmp_path):
    generate(SynthConfig(patients=2_000, seed=3), tmp_path / "off")
    generate(SynthConfig(patients=2_000, seed=3, ethnicity_repeat_codes=1.0), tmp_path / "on")
    for name, table in TABLES.items():
        if name != "clinical_events" and not table.optional:
            assert_frame_equal(pl.read_parquet(tmp_path / "off" / f"{name}.parquet"),
                               pl.read_parquet(tmp_path / "on" / f"{name}.parquet"))
    off = pl.read_parquet(tmp_path / "off" / "clinical_events.parquet")
    on = pl.read_parquet(tmp_path / "on" / "clinical_events.parquet")
    assert_frame_equal(on.head(off.height), off)  # every row the knob-off extract has, unchanged
    eth = project_codelists()["ethnicity"].codes
    added = on.slice(off.height).with_columns(pl.col("snomedct_code").replace_strict(eth, default=None).alias("category"))
    assert added.height > 1_000 and added["category"].is_not_null().all()
    recorded = off.with_columns(pl.col("snomedct_code").replace_strict(eth, default=None).alias("category")) \
        .filter(pl.col("category").is_not_null()).select("patient_id", "category").unique()
    assert added.join(recorded, on=["patient_id", "category"], how="anti").is_empty()


def test_hospital_records_are_an_optional_table_with_their_own_errors_and_change_nothing_else(tmp_path):
    generate(SynthConfig(patients=4_000, seed=3), tmp_path / "off")
    generate(SynthConfig(patients=4_000, seed=3, hospital_ethnicity=0.4), tmp_path / "on")
    for name, table in TABLES.items():
        if not table.optional:
            assert_frame_equal(pl.read_parquet(tmp_path / "off" / f"{name}.parquet"),
                               pl.read_parquet(tmp_path / "on" / f"{name}.parquet"))
    hospital = pl.read_parquet(tmp_path / "on" / "hospital_ethnicity.parquet")
    truth = pl.read_parquet(tmp_path / "on" / "truth" / "patients.parquet").select("patient_id", "ethnicity_true")
    patients = hospital["patient_id"].n_unique()
    assert 0.35 * 4_000 < patients < 0.45 * 4_000
    joined = hospital.join(truth, on="patient_id")
    right = (joined["ethnic_category"] == joined["ethnicity_true"]).mean()
    assert 0.75 < right < 0.90  # the hospital's own recording errors (HOSPITAL_RECORDING: 19% of records)
    assert set(hospital["ethnic_category"]) >= {"Z", "99", "X"}


def test_synth_replaces_only_a_new_or_empty_folder_or_its_own_output(tmp_path, capsys):
    """--out is replaced whole: an ICB's output folder or a real extract given by mistake is
    refused, naming it, and left as it was."""
    from cli.main import main
    from phm.exceptions import ConfigError
    from phm.synth import check_replaceable

    real = tmp_path / "QXX"
    real.mkdir()
    (real / "phm.duckdb").write_bytes(b"an ICB's database")
    assert main(["synth", "--patients", "50", "--out", str(real)]) == 2
    assert f"--out {real}: the folder exists and is not a synthetic extract" in capsys.readouterr().err
    assert (real / "phm.duckdb").read_bytes() == b"an ICB's database"
    (tmp_path / "empty").mkdir()
    check_replaceable(tmp_path / "empty")
    check_replaceable(tmp_path / "new")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        check_replaceable(tmp_path / "file")
    generate(SynthConfig(patients=50, seed=1), tmp_path / "synthetic")
    generate(SynthConfig(patients=50, seed=2), tmp_path / "synthetic")  # its own output: replaced
    assert SynthConfig.planted_in(tmp_path / "synthetic").seed == 2


def test_demo_refuses_a_folder_that_holds_a_real_run(tmp_path, capsys):
    from cli.main import main

    real = tmp_path / "QXX"
    real.mkdir()
    (real / "phm.duckdb").write_bytes(b"an ICB's database")
    assert main(["demo", "--out", str(real), "--patients", "50"]) == 2
    assert "holds a phm run that is not a demo's" in capsys.readouterr().err
    assert sorted(p.name for p in real.iterdir()) == ["phm.duckdb"]
