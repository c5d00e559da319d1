"""A rule that compares BMI with a threshold uses NICE's lower thresholds by ethnicity (issue 22)."""

from __future__ import annotations

import re
from pathlib import Path

SQL = Path(__file__).resolve().parents[2] / "sql"
# bmi compared with a number, either way round: "bmi >= 30", "30 <= m.bmi", "bmi between 25 and 30"
COMPARISON = re.compile(r"\bbmi\s*(?:[<>]=?|between)\s*\d|\d\s*[<>]=?\s*(?:\w+\.)?bmi\b", re.IGNORECASE)


def bmi_rules_without_nice_thresholds(text: str) -> bool:
    return bool(COMPARISON.search(text)) and not ("27.5" in text and re.search(r"PH46|NG28", text))


def test_no_sql_compares_bmi_with_a_threshold_without_nice_lower_thresholds_by_ethnicity():
    offending = [str(p.relative_to(SQL)) for p in SQL.rglob("*.sql") if bmi_rules_without_nice_thresholds(p.read_text())]
    assert not offending, f"BMI thresholds without NICE PH46/NG28's lower values by ethnicity: {offending}"


def test_the_check_sees_a_rule_that_uses_one_threshold_for_everyone():
    assert bmi_rules_without_nice_thresholds("select bmi >= 30 as obese from t")
    assert bmi_rules_without_nice_thresholds("where 30 <= m.bmi")
    assert not bmi_rules_without_nice_thresholds(
        "-- NICE PH46: 27.5 for South Asian ...\\nselect bmi >= case when south_asian then 27.5 else 30 end")
    assert not bmi_rules_without_nice_thresholds("select m.bmi, m.bmi_date from m")
