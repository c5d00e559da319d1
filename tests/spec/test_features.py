"""Spec tests for features: tiny hand-made tables, the expected value per patient."""

from __future__ import annotations

import datetime as dt
import random

import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from features.build import build
from phm.contract import DUCKDB_TYPES, TABLES
from phm.ingest import insert_rows

INDEX = dt.date(2026, 3, 31)
WHITE_BRITISH, INDIAN, OTHER_ASIAN, NOT_STATED = "494131000000105", "110751000000108", "92481000000101", "1024701000000100"
NOT_RECORDED = "312861003"  # Ethnic group not recorded (category 99)


def d(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def database(**tables: list[tuple]) -> duckdb.DuckDBPyConnection:
    """An in-memory database with the contract tables; unspecified tables are empty, and so are
    optional columns a row leaves out (they come last)."""
    con = duckdb.connect()
    for name, spec in TABLES.items():
        columns = ", ".join(f"{c.name} {DUCKDB_TYPES[c.type]}" for c in spec.columns)
        con.execute(f"create table main.{name} ({columns})")
        insert_rows(con, f"main.{name}", [(*r, *[None] * (len(spec.columns) - len(r))) for r in tables.get(name, [])])
    return con


PRACTICES = [(1, "U1", "PCN one", "QXX"), (2, "U2", "PCN two", "QXX")]


def registered(con) -> pl.DataFrame:
    return con.sql("select patient_id, age_years, practice_pseudo_id, pcn_code "
                   "from intermediate.int_patients_registered order by patient_id").pl()


def test_registered_at_the_index_date_alive_with_age_in_whole_years():
    con = database(
        practices=PRACTICES,
        patients=[(1, "female", d("1960-04-01"), None),   # 65 on the index date (birthday tomorrow)
                  (2, "male", d("1960-03-01"), None),     # 66
                  (3, "female", d("1950-01-01"), d("2025-01-01")),  # dead before the index date
                  (4, "male", d("1990-01-01"), None),     # registration ended before the index date
                  (5, "female", d("2000-01-01"), None)],  # registers after the index date
        practice_registrations=[(1, d("2010-01-01"), None, 1), (2, d("2010-01-01"), d("2026-03-31"), 2),
                                (3, d("2010-01-01"), None, 1), (4, d("2010-01-01"), d("2026-03-30"), 1),
                                (5, d("2026-04-01"), None, 2)])
    build(con, INDEX, "IMD2019")
    expected = pl.DataFrame({"patient_id": [1, 2], "age_years": [65, 66], "practice_pseudo_id": [1, 2],
                             "pcn_code": ["U1", "U2"]})
    assert_frame_equal(registered(con), expected, check_dtypes=False)


def test_overlapping_registrations_the_most_recently_started_wins():
    con = database(
        practices=PRACTICES,
        patients=[(1, "female", d("1970-01-01"), None), (2, "male", d("1970-01-01"), None)],
        practice_registrations=[(1, d("2010-01-01"), None, 1), (1, d("2020-06-01"), None, 2),
                                # same start day: the higher practice id, so the choice is stable
                                (2, d("2015-01-01"), None, 2), (2, d("2015-01-01"), None, 1)])
    build(con, INDEX, "IMD2019")
    assert registered(con)["practice_pseudo_id"].to_list() == [2, 2]


def ethnicity(con) -> dict[int, tuple[str, bool]]:
    rows = con.execute("select patient_id, ethnicity_category, has_conflicting_codes "
                       "from intermediate.int_patient_ethnicity").fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def test_ethnicity_latest_stated_code_with_not_stated_and_conflicts_kept_apart():
    patients = [(i, "female", d("1970-01-01"), None) for i in range(1, 7)]
    events = [
        (1, d("2015-01-01"), WHITE_BRITISH, None),                     # one code
        (2, d("2015-01-01"), INDIAN, None), (2, d("2020-01-01"), OTHER_ASIAN, None),  # latest wins, conflict
        (3, d("2015-01-01"), INDIAN, None), (3, d("2021-01-01"), NOT_STATED, None),   # Z never beats a stated code
        (4, d("2019-01-01"), NOT_STATED, None),                        # only Z: not stated
        (5, d("2015-01-01"), INDIAN, None), (5, d("2026-05-01"), WHITE_BRITISH, None),  # after the index date: ignored
        (6, d("2015-01-01"), "38341003", None),                        # no ethnicity code: not in the table (99)
    ]
    con = database(practices=PRACTICES, patients=patients, clinical_events=events)
    build(con, INDEX, "IMD2019")
    assert ethnicity(con) == {1: ("A", False), 2: ("L", True), 3: ("H", False), 4: ("Z", False),
                              5: ("H", False)}


def latest_rule(con) -> dict[int, str]:
    return dict(con.execute("select patient_id, latest_category from intermediate.int_patient_ethnicity").fetchall())


def test_conflicting_codes_the_most_frequent_stated_category_then_the_latest():
    patients = [(i, "female", d("1970-01-01"), None) for i in range(1, 7)]
    events = [
        # Indian twice, then one later 'any other Asian': the most frequent wins over the latest
        (1, d("2012-01-01"), INDIAN, None), (1, d("2016-01-01"), INDIAN, None), (1, d("2024-01-01"), OTHER_ASIAN, None),
        # one each: a tie in count goes to the latest
        (2, d("2012-01-01"), OTHER_ASIAN, None), (2, d("2023-01-01"), WHITE_BRITISH, None),
        # two each: the tie goes to the category recorded latest (Indian on 2022, British on 2021)
        (3, d("2010-01-01"), WHITE_BRITISH, None), (3, d("2021-01-01"), WHITE_BRITISH, None),
        (3, d("2011-01-01"), INDIAN, None), (3, d("2022-01-01"), INDIAN, None),
        # 'not stated' three times never outnumbers one stated category
        (4, d("2015-01-01"), INDIAN, None), (4, d("2020-01-01"), NOT_STATED, None),
        (4, d("2021-01-01"), NOT_STATED, None), (4, d("2022-01-01"), NOT_STATED, None),
        # 'not recorded' codes (category 99) neither count nor conflict
        (5, d("2015-01-01"), WHITE_BRITISH, None), (5, d("2020-01-01"), NOT_RECORDED, None),
        (5, d("2021-01-01"), NOT_RECORDED, None),
        # codes after the index date do not count, however many
        (6, d("2015-01-01"), OTHER_ASIAN, None), (6, d("2026-04-01"), INDIAN, None), (6, d("2026-05-01"), INDIAN, None),
    ]
    con = database(practices=PRACTICES, patients=patients, clinical_events=events)
    build(con, INDEX, "IMD2019")
    assert ethnicity(con) == {1: ("H", True), 2: ("A", True), 3: ("H", True), 4: ("H", False), 5: ("A", False),
                              6: ("L", False)}
    # the latest-code rule, kept beside it for comparison, differs only for patient 1
    assert latest_rule(con) == {1: "L", 2: "A", 3: "H", 4: "H", 5: "A", 6: "L"}


def test_same_day_conflicting_codes_give_a_stable_answer_and_the_conflict_flag():
    events = [(1, d("2015-01-01"), INDIAN, None), (1, d("2015-01-01"), WHITE_BRITISH, None)]
    con = database(practices=PRACTICES, patients=[(1, "male", d("1970-01-01"), None)], clinical_events=events)
    build(con, INDEX, "IMD2019")
    first = ethnicity(con)
    con2 = database(practices=PRACTICES, patients=[(1, "male", d("1970-01-01"), None)],
                    clinical_events=list(reversed(events)))
    build(con2, INDEX, "IMD2019")
    assert first == ethnicity(con2) == {1: ("H", True)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_registration_rule_agrees_with_an_independent_python_computation(seed):
    """Property check: the SQL rule against a plain-Python oracle on random registrations."""
    import random

    rng = random.Random(seed)
    patients, regs = [], []
    for pid in range(1, 301):
        patients.append((pid, "female", d("1960-01-01"), None))
        for _ in range(rng.randint(0, 3)):
            start = INDEX - dt.timedelta(days=rng.randint(-30, 4000))
            end = None if rng.random() < 0.5 else start + dt.timedelta(days=rng.randint(0, 3000))
            regs.append((pid, start, end, rng.choice([1, 2])))
    con = database(practices=PRACTICES, patients=patients, practice_registrations=regs)
    build(con, INDEX, "IMD2019")
    oracle = {}
    for pid, start, end, practice in regs:
        if start <= INDEX and (end is None or end >= INDEX):
            best = oracle.get(pid)
            if best is None or (start, practice) > best:
                oracle[pid] = (start, practice)
    got = dict(con.execute("select patient_id, practice_pseudo_id from intermediate.int_patients_registered").fetchall())
    assert got == {pid: practice for pid, (_, practice) in oracle.items()}


def test_deprivation_from_the_current_address_with_deciles_quintiles_core20_and_townsend():
    n = 32_844  # LSOAs in IMD 2019
    patients = [(i, "female", d("1970-01-01"), None) for i in range(1, 6)]
    addresses = [
        (1, d("2000-01-01"), None, "E01000001", 0, -1.5),            # rank 1-49 rounds to 0: most deprived
        (2, d("2000-01-01"), d("2020-01-01"), "E01000002", 32800, 5.0),  # moved: the current address counts
        (2, d("2020-01-02"), None, "E01000003", 6500, 2.0),          # decile 2, quintile 1
        (3, d("2000-01-01"), None, "E01000004", 32800, None),        # least deprived, Townsend approximated
        (4, d("2000-01-01"), None, None, None, None),                # no area: unknown
        (5, d("2027-01-01"), None, "E01000005", 100, 1.0),           # address after the index date: none
    ]
    con = database(practices=PRACTICES, patients=patients, addresses=addresses)
    build(con, INDEX, "IMD2019")
    got = con.sql("select * from intermediate.int_patient_deprivation order by patient_id").pl()
    expected = pl.DataFrame({
        "patient_id": [1, 2, 3, 4], "lsoa_code": ["E01000001", "E01000003", "E01000004", None],
        "imd_version": ["IMD2019"] * 4,
        "imd_decile": [1, 2, 10, None], "imd_quintile": [1, 1, 5, None], "core20": [True, True, False, None],
        "townsend_score": [-1.5, 2.0, 9.0 - 15.0 * 32800 / n, None],
        "townsend_is_approximated": [False, False, True, False],
    })
    assert_frame_equal(got, expected, check_dtypes=False)


def test_the_imd_version_comes_from_the_ingested_extract_and_must_be_known():
    from phm.exceptions import ConfigError

    con = database(practices=PRACTICES)
    with pytest.raises(ConfigError, match="ingest an extract first"):
        build(con, INDEX)
    con.execute("create schema ingest; create table ingest.run_parameters as select date '2026-03-31' as extract_date, 'IMD2025' as imd_version")
    build(con, INDEX)
    assert con.execute("select imd_lsoa_count from features.parameters").fetchone()[0] == 33_755
    with pytest.raises(ConfigError, match="IMD version must be one of"):
        build(con, INDEX, "IMD2010")


SBP, DBP, BMI, TC, HDL, RATIO, HBA1C, FPG = ("271649006", "271650006", "60621009", "1005671000000105",
                                             "1005681000000107", "166842003", "999791000000106", "1010611000000107")


def one_patient(events=(), medications=(), born="1960-01-01", sex="female"):
    con = database(practices=PRACTICES, patients=[(1, sex, d(born), None)],
                   practice_registrations=[(1, d("2000-01-01"), None, 1)],
                   clinical_events=list(events), medications=list(medications))
    build(con, INDEX, "IMD2019")
    return con


def row(con, table, columns):
    return dict(zip(columns, con.execute(f"select {', '.join(columns)} from {table} where patient_id = 1").fetchone(), strict=True))


def test_latest_measurements_within_their_windows_with_dates():
    con = one_patient([
        (1, d("2024-01-01"), BMI, 31.0), (1, d("2025-06-01"), BMI, 29.5),
        (1, d("2020-01-01"), SBP, 150.0),                  # outside 5 years: ignored
        (1, d("2025-01-01"), SBP, 140.0), (1, d("2026-01-01"), SBP, 160.0),
        (1, d("2026-01-01"), SBP, 150.0),                  # same day: the higher reading
        (1, d("2023-01-01"), HBA1C, 44.0),                 # outside 2 years: ignored
        (1, d("2026-02-01"), FPG, 5.6),
        (1, d("2026-04-02"), BMI, 40.0),                   # after the index date: ignored
    ])
    got = row(con, "intermediate.int_patient_measurements",
              ["bmi", "bmi_date", "sbp_mmhg", "sbp_date", "hba1c_mmol_mol", "fasting_glucose_mmol_l"])
    assert got == {"bmi": 29.5, "bmi_date": d("2025-06-01"), "sbp_mmhg": 160.0, "sbp_date": d("2026-01-01"),
                   "hba1c_mmol_mol": None, "fasting_glucose_mmol_l": 5.6}


def test_sbp_standard_deviation_needs_two_readings_in_5_years():
    readings = [140.0, 150.0, 160.0]
    con = one_patient([(1, d(f"202{4 + i}-01-0{i + 1}"), SBP, v) for i, v in enumerate(readings)])
    assert row(con, "intermediate.int_patient_measurements", ["sbp_sd_5y"])["sbp_sd_5y"] == pytest.approx(10.0)
    con = one_patient([(1, d("2025-01-01"), SBP, 140.0)])
    assert row(con, "intermediate.int_patient_measurements", ["sbp_sd_5y"])["sbp_sd_5y"] is None


def test_sbp_variability_has_the_bits_of_stddev_samp_over_the_readings_in_date_order():
    """The model runs stddev_samp's own update step by step over the readings sorted by date, then
    value (DuckDB's ordered aggregate is twice the cost): every patient's value must be DuckDB's
    stddev_samp(value order by date, value) to the last bit, same-day readings and all."""
    rng = random.Random(21)
    events = [(p, INDEX - dt.timedelta(days=rng.randrange(1, 1800)), SBP, round(rng.uniform(95, 200), rng.choice((0, 1, 3))))
              for p in range(1, 41) for _ in range(rng.randrange(2, 15))]
    events += [(p, day, SBP, value + 7.25) for p, day, _, value in events[::5]]  # same-day readings
    con = database(practices=PRACTICES, patients=[(p, "female", d("1960-01-01"), None) for p in range(1, 41)],
                   practice_registrations=[(p, d("2000-01-01"), None, 1) for p in range(1, 41)],
                   clinical_events=events)
    build(con, INDEX, "IMD2019")
    expected = con.execute("select patient_id, stddev_samp(numeric_value order by date, numeric_value) "
                           "from main.clinical_events group by patient_id order by patient_id").fetchall()
    got = con.execute("select patient_id, sbp_sd_5y from intermediate.int_patient_measurements "
                      "order by patient_id").fetchall()
    assert got == expected  # exact floats, not approx


def test_cholesterol_ratio_measured_or_derived_from_the_same_days_total_and_hdl():
    columns = ["cholesterol_ratio", "cholesterol_ratio_is_derived"]
    derived = one_patient([(1, d("2025-01-01"), TC, 6.0), (1, d("2025-01-01"), HDL, 1.5),
                           (1, d("2024-01-01"), RATIO, 3.0)])  # an older lab ratio loses
    assert row(derived, "intermediate.int_patient_measurements", columns) == {
        "cholesterol_ratio": pytest.approx(4.0), "cholesterol_ratio_is_derived": True}
    measured = one_patient([(1, d("2025-01-01"), TC, 6.0), (1, d("2025-01-01"), HDL, 1.5),
                            (1, d("2025-01-01"), RATIO, 4.1)])
    assert row(measured, "intermediate.int_patient_measurements", columns) == {
        "cholesterol_ratio": 4.1, "cholesterol_ratio_is_derived": False}


def test_a_derived_ratio_from_two_same_day_results_is_the_highest_whatever_the_row_order():
    """Two total cholesterol and two HDL results on one day: the ratio was whichever pair DuckDB met
    last, so two runs of one extract could score a patient differently (seen at 20,000 patients)."""
    same_day = [(1, d("2025-01-01"), TC, 6.0), (1, d("2025-01-01"), TC, 5.0),
                (1, d("2025-01-01"), HDL, 1.5), (1, d("2025-01-01"), HDL, 1.2)]
    for events in (same_day, same_day[::-1]):
        got = row(one_patient(events), "intermediate.int_patient_measurements", ["cholesterol_ratio"])
        assert got["cholesterol_ratio"] == pytest.approx(6.0 / 1.2)


@pytest.mark.parametrize("codes,expected", [
    ([("2020-01-01", "266919005")], 0),                                   # never
    ([("2020-01-01", "160604004"), ("2024-01-01", "8517006")], 1),        # moderate, then ex
    ([("2024-01-01", "160605003")], 4),                                   # heavy
    ([("2024-01-01", "77176002")], 3),                                    # current, amount unknown
    ([("2015-01-01", "160603005"), ("2024-01-01", "266919005")], 1),      # smoked, later 'never': ex
])
def test_smoking_category_in_qrisk3_coding(codes, expected):
    con = one_patient([(1, d(day), code, None) for day, code in codes])
    assert row(con, "intermediate.int_patient_smoking", ["smoke_cat"])["smoke_cat"] == expected


def test_conditions_treatments_and_the_resolved_hypertension_rule():
    con = one_patient(
        events=[(1, d("2015-01-01"), "38341003", None),            # hypertension ...
                (1, d("2018-01-01"), "162659009", None),           # ... resolved ...
                (1, d("2021-01-01"), "59621000", None),            # ... and diagnosed again
                (1, d("2019-01-01"), "44054006", None),            # type 2 diabetes
                (1, d("2010-01-01"), "69896004", None)],           # rheumatoid arthritis
        medications=[(1, d("2026-02-01"), "319283006"),            # amlodipine in the last 6 months
                     (1, d("2026-01-10"), "325427002")])           # one steroid issue: not regular
    got = row(con, "intermediate.int_patient_conditions",
              ["hypertension", "treated_hypertension", "type2_diabetes", "rheumatoid_arthritis",
               "on_corticosteroids", "cvd", "long_term_conditions"])
    assert got == {"hypertension": True, "treated_hypertension": True, "type2_diabetes": True,
                   "rheumatoid_arthritis": True, "on_corticosteroids": False, "cvd": False,
                   "long_term_conditions": 3}
    resolved = one_patient(events=[(1, d("2015-01-01"), "38341003", None), (1, d("2018-01-01"), "162659009", None)])
    assert row(resolved, "intermediate.int_patient_conditions", ["hypertension"]) == {"hypertension": False}


def test_the_mart_has_every_registered_patient_with_not_known_ethnicity_and_eligibility():
    con = one_patient([(1, d("2019-01-01"), "22298006", None)])  # an MI: QRISK3 does not apply
    got = row(con, "marts.mart_patient_features",
              ["ethnicity_category", "ethnicity_group", "qrisk3_ethrisk", "qrisk3_eligible", "qdiabetes_eligible"])
    assert got == {"ethnicity_category": "99", "ethnicity_group": "Not known", "qrisk3_ethrisk": 1,
                   "qrisk3_eligible": False, "qdiabetes_eligible": True}


def test_scores_for_the_mart_match_phm_calc_on_the_same_inputs_and_say_what_was_defaulted():
    from models.score_patients import score_patients
    from models.scores import qrisk3

    con = one_patient([(1, d("2025-06-01"), BMI, 29.5), (1, d("2025-01-01"), SBP, 150.0),
                       (1, d("2026-01-01"), SBP, 160.0), (1, d("2025-01-01"), RATIO, 4.5),
                       (1, d("2024-01-01"), "160604004", None), (1, d("2020-01-01"), INDIAN, None)],
                      born="1961-01-01", sex="male")
    score_patients(con)
    got = con.execute("select qrisk3_10y_pct, qrisk3_notes, qdiabetes_model from marts.patient_scores").fetchone()
    direct = qrisk3(pl.DataFrame({"sex": ["M"], "age": [65], "bmi": [29.5], "rati": [4.5], "sbp": [160.0],
                                  "sbps5": [7.0710678118654755], "ethrisk": [2], "smoke_cat": [3]}))
    assert got[0] == pytest.approx(direct["risk_10y_pct"][0])
    assert got[1] == "defaulted: town"          # no address: Townsend unknown
    assert got[2] == "A"                        # no blood glucose test: model A


def bp(day, systolic, diastolic):
    return [(1, d(day), SBP, float(systolic)), (1, d(day), DBP, float(diastolic))]


def finding(con):
    return con.execute("select finding, finding_reason, bp_stage, urgent from marts.mart_hypertension_case_finding "
                       "where patient_id = 1").fetchone()


HYPERTENSION = [(1, d("2015-01-01"), "38341003", None)]


def ABPM(day, systolic, diastolic):  # noqa: N802 - reads like the other reading builders
    return [(1, d(day), "314449000", float(systolic)), (1, d(day), "314462001", float(diastolic))]  # 24 h averages


def HOME(day, systolic, diastolic):  # noqa: N802
    return [(1, d(day), "413606001", float(systolic)), (1, d(day), "413605002", float(diastolic))]


@pytest.mark.parametrize("case,events,born,expected", [
    ("two raised readings, no diagnosis", bp("2025-06-01", 150, 85) + bp("2026-01-10", 142, 88), "1970-01-01",
     ("possible_undiagnosed", "two readings at or above 140/90 in the last 12 months and no hypertension diagnosis", "stage_1", False)),
    ("only the latest raised", bp("2025-06-01", 130, 80) + bp("2026-01-10", 150, 85), "1970-01-01",
     (None, None, "stage_1", False)),
    ("a raised reading over 12 months ago does not count", bp("2024-06-01", 150, 95) + bp("2026-01-10", 145, 80), "1970-01-01",
     (None, None, "stage_1", False)),
    ("diastolic alone is enough", bp("2025-06-01", 130, 95) + bp("2026-01-10", 135, 92), "1970-01-01",
     ("possible_undiagnosed", "two readings at or above 140/90 in the last 12 months and no hypertension diagnosis", "stage_1", False)),
    ("one severe reading", bp("2026-01-10", 185, 100), "1970-01-01",
     ("possible_undiagnosed_urgent", "latest reading at or above 180/120 (in the last 12 months) and no hypertension diagnosis: urgent", "severe", True)),
    # urgency is the latest reading's: a severe reading followed by normal ones is not urgent
    ("severe, then normal", bp("2025-12-01", 190, 125) + bp("2026-01-10", 130, 80), "1970-01-01",
     (None, None, "normal", False)),
    ("severe over 12 months ago", bp("2025-03-01", 190, 125), "1970-01-01", (None, None, "severe", False)),
    # ABPM or home readings confirm (NICE NG136: mean >= 135/85); a clinic pair does not
    ("ABPM mean 136/80 confirms, not coded", bp("2026-01-10", 150, 85) + ABPM("2026-02-01", 136, 80), "1970-01-01",
     ("confirmed_not_coded", "ambulatory or home blood pressure at or above 135/85 in the last 12 months (NICE NG136 confirms hypertension) and no hypertension diagnosis coded", "stage_1", False)),
    ("home mean 130/84 does not confirm", bp("2025-06-01", 150, 85) + bp("2026-01-10", 142, 88) + HOME("2026-02-01", 130, 84), "1970-01-01",
     ("possible_undiagnosed", "two readings at or above 140/90 in the last 12 months and no hypertension diagnosis", "stage_1", False)),
    ("ABPM readings are not clinic readings: no clinic stage, not urgent", ABPM("2026-02-01", 182, 100), "1990-01-01",
     ("confirmed_not_coded", "ambulatory or home blood pressure at or above 135/85 in the last 12 months (NICE NG136 confirms hypertension) and no hypertension diagnosis coded", None, False)),
    ("diagnosed, above target under 80", HYPERTENSION + bp("2026-01-10", 145, 85), "1970-01-01",
     ("above_target", "hypertension with the latest reading above the target of 140/90", "stage_1", False)),
    ("diagnosed, 80 and over, 145 is on target", HYPERTENSION + bp("2026-01-10", 145, 85), "1940-01-01",
     (None, None, "stage_1", False)),
    ("diagnosed, no reading in 12 months", HYPERTENSION + bp("2024-01-10", 130, 80), "1970-01-01",
     ("no_recent_reading", "hypertension with no blood pressure reading in the last 12 months", "normal", False)),
    ("45 and over, never measured", [], "1975-01-01",
     ("no_bp_in_5_years", "aged 45 or over with no blood pressure reading in the last 5 years", None, False)),
    ("under 45, never measured", [], "1990-01-01", (None, None, None, False)),
    ("stage 2", bp("2026-01-10", 165, 90), "1990-01-01", (None, None, "stage_2", False)),
])
def test_hypertension_case_finding(case, events, born, expected):
    assert finding(one_patient(events, born=born)) == expected


@pytest.mark.parametrize("seed", [0, 1])
def test_measurements_and_ethnicity_agree_with_an_independent_polars_computation(seed):
    """Property check on random records: the SQL against the same rules written in polars."""
    import random

    rng = random.Random(seed)
    concepts = {SBP: "systolic_bp", BMI: "bmi", HBA1C: "hba1c"}
    eth_codes = {WHITE_BRITISH: "A", INDIAN: "H", OTHER_ASIAN: "L", NOT_STATED: "Z"}
    patients, events = [], []
    for pid in range(1, 201):
        patients.append((pid, "male", d("1960-01-01"), None))
        for _ in range(rng.randint(0, 8)):
            code = rng.choice(list(concepts) + list(eth_codes))
            day = INDEX - dt.timedelta(days=rng.randint(-100, 2500))
            events.append((pid, day, code, float(rng.randint(20, 200)) if code in concepts else None))
    con = database(practices=PRACTICES, patients=patients,
                   practice_registrations=[(p[0], d("2000-01-01"), None, 1) for p in patients],
                   clinical_events=events)
    build(con, INDEX, "IMD2019")
    frame = pl.DataFrame(events, schema=["patient_id", "date", "code", "value"], orient="row")
    window = {"systolic_bp": 5, "bmi": 5, "hba1c": 2}
    for code, concept in concepts.items():
        years = window[concept]
        start = INDEX.replace(year=INDEX.year - years)
        expected = (frame.filter((pl.col("code") == code) & (pl.col("date") <= INDEX) & (pl.col("date") > start))
                    .sort("date", "value").group_by("patient_id").agg(pl.col("value").last(), pl.col("date").last())
                    .sort("patient_id"))
        column = {"systolic_bp": "sbp_mmhg", "bmi": "bmi", "hba1c": "hba1c_mmol_mol"}[concept]
        got = con.sql(f"select patient_id, {column} as value, {column.replace('_mmhg', '').replace('_mmol_mol', '')}_date as date "
                      f"from intermediate.int_patient_measurements where {column} is not null order by patient_id").pl()
        assert_frame_equal(got, expected, check_dtypes=False)
    coded = frame.filter(pl.col("code").is_in(list(eth_codes)) & (pl.col("date") <= INDEX)).with_columns(
        pl.col("code").replace_strict(eth_codes).alias("category"))
    # most frequent stated category, then the latest, then the last letter
    per_category = coded.filter(pl.col("category") != "Z").group_by("patient_id", "category").agg(
        pl.len().alias("codes"), pl.col("date").max().alias("latest"))
    stated = per_category.sort("codes", "latest", "category").group_by("patient_id").agg(
        pl.col("category").last(), (pl.len() > 1).alias("conflict"))
    expected_eth = {pid: ("Z", False) for pid in coded["patient_id"].unique()}
    expected_eth.update({r[0]: (r[1], r[2]) for r in stated.iter_rows()})
    assert ethnicity(con) == expected_eth


@pytest.mark.parametrize("flag,code,sex", [
    ("type1_diabetes", "46635009", "female"), ("cvd", "194828000", "female"), ("cvd", "22298006", "male"),
    ("cvd", "230690007", "female"), ("cvd", "266257000", "male"), ("atrial_fibrillation", "49436004", "female"),
    ("ckd_3_5", "433144002", "female"), ("sle", "55464009", "female"), ("migraine", "37796009", "female"),
    ("severe_mental_illness", "58214004", "male"), ("erectile_dysfunction", "860914002", "male"),
    ("family_history_cvd", "266894000", "female"), ("family_history_diabetes", "160303001", "female"),
    ("gestational_diabetes", "11687002", "female"), ("pcos", "237055002", "female"),
    ("learning_disability", "110359009", "male"), ("palliative_care", "103735009", "male"),
    ("care_home", "160734000", "female"),
])
def test_each_condition_flag_is_set_by_its_codelist_and_only_before_the_index_date(flag, code, sex):
    before = one_patient([(1, d("2025-01-01"), code, None)], sex=sex)
    after = one_patient([(1, d("2026-04-01"), code, None)], sex=sex)
    assert row(before, "marts.mart_patient_features", [flag]) == {flag: True}
    assert row(after, "marts.mart_patient_features", [flag]) == {flag: False}


@pytest.mark.parametrize("flag,code,issues,expected", [
    ("on_antihypertensives", "319283006", ["2026-03-01"], True),
    ("on_antihypertensives", "319283006", ["2025-09-01"], False),   # over 6 months ago
    ("on_statins", "320000009", ["2026-01-01"], True),
    ("on_glucose_lowering", "325278007", ["2026-01-01"], True),  # metformin 500mg tablets
    ("on_antiplatelets", "319799004", ["2026-01-01"], True),  # clopidogrel 75mg tablets
    ("on_antiplatelets", "319773006", ["2025-09-01"], False),  # aspirin 75mg, over 6 months ago
    # QRISK3's 'regular' use: two issues or more, the latest within 28 days of the index date
    ("on_atypical_antipsychotics", "321614001", ["2026-03-01", "2026-03-30"], True),
    ("on_atypical_antipsychotics", "321614001", ["2026-03-30"], False),              # one issue
    ("on_atypical_antipsychotics", "321614001", ["2026-02-01", "2026-03-03"], True),   # 28 days
    ("on_atypical_antipsychotics", "321614001", ["2026-02-01", "2026-03-02"], False),  # 29 days
    ("on_corticosteroids", "325427002", ["2026-02-01", "2026-03-03"], True),         # 28 days
    ("on_corticosteroids", "42086511000001108", ["2026-02-01", "2026-03-02"], False),  # 29 days
    ("on_corticosteroids", "325427002", ["2026-03-20"], False),      # one course is not regular
    ("on_corticosteroids", "325427002", ["2025-09-01", "2026-03-20"], False),  # first over 6 months ago
])
def test_each_treatment_flag_uses_the_last_6_months(flag, code, issues, expected):
    con = one_patient(medications=[(1, d(day), code) for day in issues])
    assert row(con, "marts.mart_patient_features", [flag]) == {flag: expected}


def test_abpm_or_home_monitoring_in_12_months_is_flagged_for_the_lists():
    con = one_patient(bp("2025-06-01", 150, 85) + bp("2026-01-10", 142, 88) + [(1, d("2026-02-01"), "413153004", None)])
    assert con.execute("select finding, monitoring_12_months from marts.mart_hypertension_case_finding").fetchone() \
        == ("possible_undiagnosed", True)
    old = one_patient(bp("2025-06-01", 150, 85) + bp("2026-01-10", 142, 88) + [(1, d("2025-03-01"), "413153004", None)])
    assert old.execute("select monitoring_12_months from marts.mart_hypertension_case_finding").fetchone() == (False,)


CKD3, CKD4, CKD2, EGFR = "433144002", "431857002", "431856006", "1011481000000105"
CKD_RESOLVED = "939211000000104"


@pytest.mark.parametrize("case,events,expected", [
    ("stage 3 code", [(1, d("2020-01-01"), CKD3, None)], (True, 3, "code")),
    ("stage 3 then stage 4: the latest", [(1, d("2020-01-01"), CKD3, None), (1, d("2022-01-01"), CKD4, None)], (True, 4, "code")),
    ("stage 3 revised to stage 2", [(1, d("2020-01-01"), CKD3, None), (1, d("2022-01-01"), CKD2, None)], (False, None, None)),
    ("same day 2 and 4: the higher", [(1, d("2022-01-01"), CKD2, None), (1, d("2022-01-01"), CKD4, None)], (True, 4, "code")),
    ("a later code after the index date does not count", [(1, d("2020-01-01"), CKD3, None), (1, d("2026-04-02"), CKD2, None)], (True, 3, "code")),
    ("no code, two eGFR under 60, 90 days apart", [(1, d("2025-10-01"), EGFR, 52.0), (1, d("2025-12-30"), EGFR, 28.0)], (True, 4, "egfr")),
    ("no code, two eGFR under 60, 89 days apart", [(1, d("2025-10-02"), EGFR, 52.0), (1, d("2025-12-30"), EGFR, 28.0)], (False, None, None)),
    ("no code, latest eGFR 60", [(1, d("2025-06-01"), EGFR, 45.0), (1, d("2025-12-30"), EGFR, 60.0)], (False, None, None)),
    ("no code, eGFR under 15", [(1, d("2025-06-01"), EGFR, 14.0), (1, d("2025-12-30"), EGFR, 12.0)], (True, 5, "egfr")),
    ("stage 3 then resolved", [(1, d("2020-01-01"), CKD3, None), (1, d("2022-01-01"), CKD_RESOLVED, None)], (False, None, None)),
    ("resolved then stage 4", [(1, d("2020-01-01"), CKD_RESOLVED, None), (1, d("2022-01-01"), CKD4, None)], (True, 4, "code")),
    ("resolved, then two low eGFRs", [(1, d("2024-01-01"), CKD3, None), (1, d("2025-01-01"), CKD_RESOLVED, None),
                                      (1, d("2025-06-01"), EGFR, 40.0), (1, d("2025-12-30"), EGFR, 40.0)], (True, 3, "egfr")),
    ("a stage 2 code outranks a low eGFR", [(1, d("2019-01-01"), CKD2, None), (1, d("2025-06-01"), EGFR, 40.0),
                                            (1, d("2025-12-30"), EGFR, 40.0)], (False, None, None)),
])
def test_ckd_3_to_5_is_the_latest_stage_code_else_the_stage_from_egfr(case, events, expected):
    got = row(one_patient(events), "marts.mart_patient_features", ["ckd_3_5", "ckd_stage", "ckd_stage_source"])
    assert tuple(got.values()) == expected, case


def test_diabetes_of_unstated_type_is_type_2_and_a_type_1_code_makes_it_type_1():
    unspecified = one_patient([(1, d("2020-01-01"), "73211009", None)])  # 'Diabetes mellitus'
    assert row(unspecified, "marts.mart_patient_features", ["type1_diabetes", "type2_diabetes"]) == \
        {"type1_diabetes": False, "type2_diabetes": True}
    type1 = one_patient([(1, d("2020-01-01"), "73211009", None), (1, d("2021-01-01"), "46635009", None)])
    assert row(type1, "marts.mart_patient_features", ["type1_diabetes", "type2_diabetes"]) == \
        {"type1_diabetes": True, "type2_diabetes": False}


def test_severe_mental_illness_in_remission():
    remission = one_patient([(1, d("2015-01-01"), "58214004", None), (1, d("2022-01-01"), "31373002", None)])
    got = row(remission, "marts.mart_patient_features", ["severe_mental_illness", "smi_in_remission", "long_term_conditions"])
    assert got == {"severe_mental_illness": True, "smi_in_remission": True, "long_term_conditions": 0}
    relapse = one_patient([(1, d("2015-01-01"), "31373002", None), (1, d("2022-01-01"), "58214004", None)])
    assert row(relapse, "marts.mart_patient_features", ["smi_in_remission", "long_term_conditions"]) == \
        {"smi_in_remission": False, "long_term_conditions": 1}


def test_palliative_care_ends_with_a_later_not_clinically_indicated_code():
    ended = one_patient([(1, d("2025-01-01"), "103735009", None), (1, d("2025-06-01"), "1048611000000104", None)])
    assert row(ended, "marts.mart_patient_features", ["palliative_care"]) == {"palliative_care": False}
    again = one_patient([(1, d("2025-01-01"), "1048611000000104", None), (1, d("2025-06-01"), "103735009", None)])
    assert row(again, "marts.mart_patient_features", ["palliative_care"]) == {"palliative_care": True}


@pytest.mark.parametrize("events,expected", [
    ([(1, d("2021-04-01"), "134396000", None)], "declined"),                 # declined 5 years ago to the day
    ([(1, d("2021-03-31"), "134396000", None)], None),                       # declined over 5 years ago
    ([(1, d("2010-01-01"), "134391005", None)], "not_indicated"),            # not indicated: no window
    ([(1, d("2010-01-01"), "152166006", None)], "contraindicated"),
    ([(1, d("2010-01-01"), "413174003", None)], "not_tolerated"),
    ([(1, d("2025-01-01"), "134396000", None), (1, d("2010-01-01"), "413174003", None)], "not_tolerated"),
])
def test_statin_exclusions_and_the_5_year_window_for_a_declined_statin(events, expected):
    assert row(one_patient(events), "marts.mart_patient_features", ["statin_exclusion"]) == {"statin_exclusion": expected}


def test_nhs_health_check_counts_for_5_years_and_ndh_codes_are_read():
    con = one_patient([(1, d("2021-04-01"), "523221000000100", None), (1, d("2019-01-01"), "700449008", None)])
    assert row(con, "marts.mart_patient_features", ["nhs_health_check_5y", "ndh_coded"]) == \
        {"nhs_health_check_5y": True, "ndh_coded": True}
    old = one_patient([(1, d("2021-03-31"), "523221000000100", None)])
    assert row(old, "marts.mart_patient_features", ["nhs_health_check_5y", "ndh_coded"]) == \
        {"nhs_health_check_5y": False, "ndh_coded": False}


def test_hospital_records_fill_a_gap_in_the_gp_record_and_never_override_a_gp_code():
    patients = [(i, "female", d("1970-01-01"), None) for i in range(1, 9)]
    events = [
        (1, d("2015-01-01"), INDIAN, None),        # a GP category: hospital's differs, GP wins
        (2, d("2015-01-01"), NOT_STATED, None),    # declined at the practice: stays not stated
        (4, d("2015-01-01"), NOT_RECORDED, None),  # only 'not recorded' at the practice: filled
    ]
    hospital = [
        (1, d("2020-01-01"), "N"), (1, d("2021-01-01"), "N"),
        (2, d("2020-01-01"), "A"),
        (3, d("2018-01-01"), "M"), (3, d("2019-01-01"), "M"), (3, d("2024-01-01"), "N"),  # most frequent, then latest
        (4, d("2019-01-01"), "K"),
        (5, d("2019-01-01"), "Z"), (5, d("2020-01-01"), "99"), (5, d("2021-01-01"), "X"),  # nothing stated
        (6, d("2019-01-01"), "R"), (6, d("2026-04-01"), "S"), (6, d("2026-05-01"), "S"),  # later ones ignored
        (7, d("2019-01-01"), "F"), (7, d("2022-01-01"), "Z"), (7, d("2023-01-01"), "Z"),  # Z never outnumbers
    ]
    con = database(practices=PRACTICES, patients=patients, clinical_events=events, hospital_ethnicity=hospital)
    build(con, INDEX, "IMD2019")
    got = {r[0]: r[1:] for r in con.execute(
        "select patient_id, ethnicity_category, ethnicity_source from intermediate.int_patient_ethnicity").fetchall()}
    assert got == {1: ("H", "primary_care"), 2: ("Z", "primary_care"), 3: ("M", "hospital"),
                   4: ("K", "hospital"), 6: ("R", "hospital"), 7: ("F", "hospital")}
    # patients 5 and 8 have no stated category anywhere: not known in the mart, with no source
    con.execute("insert into main.practice_registrations select patient_id, date '2010-01-01', null, 1 "
                "from main.patients")
    build(con, INDEX, "IMD2019")
    mart = {r[0]: r[1:] for r in con.execute(
        "select patient_id, ethnicity_category, ethnicity_group, ethnicity_source "
        "from marts.mart_patient_features").fetchall()}
    assert mart[5] == mart[8] == ("99", "Not known", None)
    assert mart[3] == ("M", "Black", "hospital") and mart[2] == ("Z", "Not stated", "primary_care")
