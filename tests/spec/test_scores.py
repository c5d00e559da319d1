"""QRISK3-2017 and QDiabetes-2018: every published vector, and the input handling."""

from __future__ import annotations

import polars as pl
import pytest

from cli.main import main
from models.scores import qdiabetes, qrisk3


def _decimals(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


def test_every_qrisk3_reference_vector_through_phm_calc(reference_dir, tmp_path):
    source = reference_dir / "scores" / "qrisk3_anchor_vectors.csv"
    out = tmp_path / "scored.csv"
    assert main(["calc", "qrisk3", "--input", str(source), "--output", str(out),
                 "--allow-extra-columns"]) == 0  # the vectors carry source, expected, tol
    scored = pl.read_csv(out)
    reference = pl.read_csv(source)
    assert scored.columns[: len(reference.columns)] == reference.columns
    assert scored.height == reference.height == 115
    diff = (scored["risk_10y_pct"] - scored["expected"]).abs()
    failing = scored.filter(diff.is_null() | (diff > scored["tol"]))
    assert failing.height == 0, failing.select("source", "sex", "age", "risk_10y_pct", "expected")


def test_every_qdiabetes_reference_vector_through_phm_calc(reference_dir, tmp_path):
    source = reference_dir / "scores" / "qdiabetes_anchor_vectors.csv"
    out = tmp_path / "scored.csv"
    assert main(["calc", "qdiabetes", "--input", str(source), "--output", str(out),
                 "--allow-extra-columns"]) == 0
    scored = pl.read_csv(out, infer_schema_length=0)
    assert scored.height == 16
    for row in scored.iter_rows(named=True):
        # published to a given number of decimals: match to half a unit of the last one
        tolerance = 0.5 * 10 ** -_decimals(row["expected"]) + 1e-9
        assert abs(float(row["risk_10y_pct"]) - float(row["expected"])) <= tolerance, row
        assert row["qdiabetes_model"] == row["model"]


def test_qrisk3_outside_25_to_84_or_without_sex_is_not_scored():
    frame = pl.DataFrame({"sex": ["F", "M", "F", "unknown"], "age": [24, 85, 25, 50]})
    out = qrisk3(frame)
    assert out["risk_10y_pct"].is_null().to_list() == [True, True, False, True]
    assert out["score_notes"][0] == "not applicable: age outside 25-84"
    assert out["score_notes"][3] == "not applicable: sex must be F or M"


def test_qrisk3_clamps_to_the_official_ranges_and_says_so():
    base = {"sex": ["M", "M"], "age": [60, 60], "rati": [4.0, 4.0], "sbps5": [8.0, 8.0],
            "town": [0.0, 0.0], "ethrisk": [1, 1], "smoke_cat": [0, 0]}
    extreme = qrisk3(pl.DataFrame({**base, "bmi": [55.0, 40.0], "sbp": [250.0, 210.0]}))
    assert extreme["risk_10y_pct"][0] == pytest.approx(extreme["risk_10y_pct"][1])
    assert extreme["score_notes"][0] == "clamped: bmi lowered to 40; clamped: sbp lowered to 210"
    assert extreme["score_notes"][1] == ""
    low = qrisk3(pl.DataFrame({**base, "bmi": [12.0, 20.0], "sbp": [60.0, 70.0],
                               "rati": [0.5, 1.0], "town": [-9.5, -8.0]}))
    assert low["risk_10y_pct"][0] == pytest.approx(low["risk_10y_pct"][1])
    assert "clamped: rati raised to 1" in low["score_notes"][0]
    assert "clamped: town raised to -8" in low["score_notes"][0]


def test_a_missing_continuous_input_defaults_to_the_model_mean_and_is_flagged():
    frame = pl.DataFrame({"sex": ["F", "F"], "age": [55, 55], "bmi": [None, 25.404], "rati": [3.476] * 2,
                          "sbp": [123.13] * 2, "sbps5": [9.0] * 2, "town": [0.39] * 2,
                          "ethrisk": [1, 1], "smoke_cat": [0, 0]})
    out = qrisk3(frame)
    assert out["risk_10y_pct"][0] == pytest.approx(out["risk_10y_pct"][1], rel=1e-4)
    assert out["score_notes"].to_list() == ["defaulted: bmi", ""]


def test_qdiabetes_picks_c_then_b_then_a_and_refuses_diabetic_blood_tests():
    frame = pl.DataFrame({"sex": ["F"] * 5, "age": [50] * 5, "bmi": [30.0] * 5, "town": [0.0] * 5,
                          "ethrisk": [1] * 5, "smoke_cat": [0] * 5,
                          "fbs": [5.5, 5.5, None, 7.1, None], "hba1c": [40.0, None, None, None, 50.0]})
    out = qdiabetes(frame)
    assert out["qdiabetes_model"].to_list() == ["C", "B", "A", "B", "C"]
    assert out["risk_10y_pct"].is_null().to_list() == [False, False, False, True, True]
    assert out["score_notes"][3] == "not applicable: blood test in the diabetic range"


def test_a_row_that_is_not_scored_says_why_and_nothing_was_defaulted_for_it():
    """Missing BMI and ethnicity on rows QDiabetes does not score (an HbA1c or fasting glucose
    already in the diabetic range, an ethnicity code out of range, age 90): the note says why, and
    no "defaulted" note claims a score rests on a default. Scored rows still say what was defaulted."""
    frame = pl.DataFrame({"sex": ["F", "F", "M", "F", "M"], "age": [60, 60, 60, 90, 60], "bmi": [None] * 5,
                          "town": [0.0] * 5, "ethrisk": [None, None, 12, None, None], "smoke_cat": [0] * 5,
                          "fbs": [None, 7.4, None, None, None], "hba1c": [50.0, None, None, None, 44.0]},
                         schema_overrides={"bmi": pl.Float64, "ethrisk": pl.Int64})
    notes = qdiabetes(frame)["score_notes"].to_list()
    assert notes[:4] == ["not applicable: blood test in the diabetic range",
                         "not applicable: blood test in the diabetic range",
                         "not applicable: ethrisk out of range", "not applicable: age outside 25-84"]
    assert notes[4] == "defaulted: bmi; defaulted: ethrisk"
    assert qrisk3(frame.drop("fbs", "hba1c"))["score_notes"][2] == "not applicable: ethrisk out of range"


def test_a_patient_with_diabetes_or_a_diabetic_range_test_is_not_asked_to_measure_for_qdiabetes():
    """The pipeline's scores (models/score_patients.py) on the feature mart's columns, through
    the list's ``to_measure``: QDiabetes does not apply to a patient with diabetes (noted as such)
    nor to one whose HbA1c is already 48 or more, and neither is asked for a BMI on its account."""
    from models.score_patients import QDIABETES_INPUTS, QRISK3_INPUTS, score_features
    from phm.lists import to_measure

    columns = dict.fromkeys([*QRISK3_INPUTS, *QDIABETES_INPUTS], 0.0)
    base = {**columns, "age_years": 60.0, "bmi": None, "townsend_score": 0.0, "qrisk3_ethrisk": 1.0,
            "cholesterol_ratio": 4.0, "sbp_mmhg": 130.0, "sbp_sd_5y": 8.0, "hba1c_mmol_mol": None,
            "fasting_glucose_mmol_l": None}
    features = pl.DataFrame([
        {**base, "patient_id": 1, "sex": "female", "cvd": True, "type1_diabetes": False, "type2_diabetes": True},
        {**base, "patient_id": 2, "sex": "male", "cvd": True, "type1_diabetes": False, "type2_diabetes": False,
         "hba1c_mmol_mol": 50.0},
        {**base, "patient_id": 3, "sex": "male", "cvd": True, "type1_diabetes": False, "type2_diabetes": False}],
        schema_overrides={"bmi": pl.Float64, "hba1c_mmol_mol": pl.Float64, "fasting_glucose_mmol_l": pl.Float64})
    scores = score_features(features)
    assert scores["qdiabetes_notes"].to_list() == ["not applicable: existing diabetes",
                                                   "not applicable: blood test in the diabetic range",
                                                   "defaulted: bmi"]
    assert scores["qrisk3_notes"].to_list() == ["not applicable: existing CVD"] * 3
    assert scores.select(to_measure())["to_measure"].to_list() == [None, None, ["BMI"]]


def test_calc_rejects_a_table_without_age_naming_the_column(tmp_path, capsys):
    bad = tmp_path / "in.csv"
    bad.write_text("sex,bmi\nF,25\n")
    assert main(["calc", "qrisk3", "--input", str(bad), "--output", str(tmp_path / "o.csv")]) == 2
    assert "column 'age' is required" in capsys.readouterr().err


def test_calc_names_the_row_and_column_of_a_non_number(tmp_path, capsys):
    bad = tmp_path / "in.csv"
    bad.write_text("sex,age,bmi\nF,50,25\nM,sixty,30\n")
    assert main(["calc", "qrisk3", "--input", str(bad), "--output", str(tmp_path / "o.csv")]) == 2
    assert "row 2, column 'age': not a number" in capsys.readouterr().err


def test_calc_refuses_a_misspelt_predictor_rather_than_score_it_as_absent(tmp_path, capsys):
    """b_af for b_AF was scored as no atrial fibrillation: 13.30% instead of 21.78%."""
    source = tmp_path / "in.csv"
    source.write_text("sex,age,bmi,b_af,patient_ref\nM,64,31,1,a1\n")
    out = tmp_path / "o.csv"
    assert main(["calc", "qrisk3", "--input", str(source), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "'b_af' (did you mean 'b_AF'?)" in err and "'patient_ref'" in err and "b_treatedhyp" in err
    assert not out.exists()
    fixed = tmp_path / "fixed.csv"
    fixed.write_text(source.read_text().replace("b_af", "b_AF"))
    assert main(["calc", "qrisk3", "--input", str(fixed), "--output", str(out), "--allow-extra-columns"]) == 0
    scored = pl.read_csv(out)
    assert scored["patient_ref"].to_list() == ["a1"]  # carried through, unscored
    with_af = scored["risk_10y_pct"][0]
    fixed.write_text("sex,age,bmi\nM,64,31\n")
    assert main(["calc", "qrisk3", "--input", str(fixed), "--output", str(out)]) == 0
    assert with_af > pl.read_csv(out)["risk_10y_pct"][0]


def test_the_fast_evaluator_is_the_published_equations_term_by_term():
    """scores.py evaluates each model from tables by code (smoking and every binary); that must be
    the equations of ``risk_percent`` within 1e-12 percentage points, for all eight models, with
    every binary and smoking category and inputs over their whole clamped range."""
    import numpy as np

    from models.clinrisk import risk_percent, risk_percent_coded
    from models.scores import _coded

    rng = np.random.default_rng(21)
    n = 4_000
    for score in ("qrisk3", "qdiabetes"):
        for key, coded_model in _coded(score).items():
            data = {"age": rng.uniform(25, 84, n), "bmi": rng.uniform(20, 40, n), "rati": rng.uniform(1, 12, n),
                    "sbp": rng.uniform(70, 210, n), "sbps5": rng.uniform(0, 30, n), "town": rng.uniform(-8, 12, n),
                    "fbs": rng.uniform(2, 7, n), "hba1c": rng.uniform(15, 48, n),
                    "ethrisk": rng.integers(0, 10, n), "smoke_cat": rng.integers(0, 5, n)}
            code = data["smoke_cat"].astype(np.int32) << len(coded_model.binaries)
            for i, name in enumerate(coded_model.binaries):
                data[name] = (rng.uniform(size=n) < 0.3).astype(np.float64)
                code |= data[name].astype(np.int32) << i
            expected = risk_percent(coded_model.model, data)
            got = risk_percent_coded(coded_model, data, data["ethrisk"], code)
            assert np.abs(got - expected).max() <= 1e-12, (score, key)
