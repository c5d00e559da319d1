"""QRISK3-2017 and QDiabetes-2018 on whole tables, with the engines' input handling.

Input columns use ClinRisk's argument names (``age``, ``sex`` as F/M, ``bmi``, ``rati``, ``sbp``,
``sbps5``, ``town``, ``ethrisk`` 1-9, ``smoke_cat`` 0-4, and the binaries ``b_*``/``fh_*``).
Every output row says how its score was reached (``score_notes``), so a list can show that a
score rests on missing data:

- not applicable (risk is null): age outside 25-84, sex not F/M, and for QDiabetes a blood
  test already in the diabetic range (fasting glucose >= 7 mmol/L or HbA1c >= 48 mmol/mol);
- clamped: a value outside the range the equations were fitted on is set to the nearest limit
  (QRISK3: BMI 20-40, cholesterol/HDL ratio 1-12, systolic BP 70-210 mmHg, Townsend -8 to 12;
  QDiabetes: BMI 20-40, Townsend -8 to 12, fasting glucose >= 2, HbA1c >= 15);
- defaulted: a missing continuous input takes the model's own centring value (the derivation
  cohort's mean, so the term contributes nothing); missing ethnicity is 1 (White or not
  stated), missing smoking 0 (non-smoker), a missing condition or treatment 0 (absent). Only the continuous inputs, ethnicity and smoking are noted when
  defaulted: for conditions and treatments no code means absent.

QDiabetes uses model C when HbA1c is given, else B when fasting glucose is, else A.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from models import qdiabetes_2018, qrisk3_2017
from models.clinrisk import ClinRiskModel, risk_percent

AGE_RANGE = (25, 84)
QRISK3_CLAMPS = {"bmi": (20.0, 40.0), "rati": (1.0, 12.0), "sbp": (70.0, 210.0), "town": (-8.0, 12.0)}
QDIABETES_CLAMPS = {"bmi": (20.0, 40.0), "town": (-8.0, 12.0), "fbs": (2.0, None), "hba1c": (15.0, None)}
DIABETIC_RANGE = {"fbs": 7.0, "hba1c": 48.0}
# Other spellings accepted for the QDiabetes blood tests (the reference vectors use these).
ALIASES = {"fpg_mmol_l": "fbs", "hba1c_mmol_mol": "hba1c"}


def input_columns(score: str) -> set[str]:
    """Every column ``qrisk3`` or ``qdiabetes`` reads (ClinRisk's argument names, plus ``sex``
    and the accepted spellings of the QDiabetes blood tests)."""
    models = ((qrisk3_2017.FEMALE, qrisk3_2017.MALE) if score == "qrisk3"
              else tuple(qdiabetes_2018.MODELS.values()))
    names = {name for model in models for name in model.inputs} | {"sex"}
    return names | set(ALIASES) if score == "qdiabetes" else names


def _column(frame: pl.DataFrame, name: str) -> np.ndarray:
    if name not in frame.columns:
        return np.full(frame.height, np.nan)
    return frame[name].cast(pl.Float64, strict=False).fill_null(np.nan).to_numpy()


def _centre_value(model: ClinRiskModel, source: str) -> float:
    """The input value at which the model's first transform of ``source`` is zero."""
    t = next(t for t in model.transforms if t.source == source)
    if t.times_log:
        raise ValueError(f"{source}: first transform has a log factor")
    inverse = np.exp(t.centre) if t.power == 0 else t.centre ** (1 / t.power)
    return float(inverse * t.scale)


class _Notes:
    """Per-row lists of what happened to the inputs, joined into one string column."""

    def __init__(self, n: int) -> None:
        self.parts: list[tuple[str, np.ndarray]] = []
        self.n = n

    def add(self, text: str, mask: np.ndarray) -> None:
        if mask.any():
            self.parts.append((text, mask))

    def series(self) -> pl.Series:
        if not self.parts:
            return pl.Series("score_notes", [""] * self.n)
        columns = [pl.when(pl.Series(mask)).then(pl.lit(text)) for text, mask in self.parts]
        return pl.select(pl.concat_str(columns, separator="; ", ignore_nulls=True)
                         .fill_null("").alias("score_notes")).to_series()


def _prepare(frame: pl.DataFrame, models: dict[str, ClinRiskModel], clamps: dict, notes: _Notes,
             continuous: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Inputs as arrays after defaults and clamps; the sex masks; a validity mask."""
    n = frame.height
    sex = (frame["sex"].cast(pl.String).str.to_uppercase().replace({"FEMALE": "F", "MALE": "M"}).to_numpy()
           if "sex" in frame.columns else np.full(n, None))
    female, male = sex == "F", sex == "M"
    age = _column(frame, "age")
    valid = (female | male) & (age >= AGE_RANGE[0]) & (age <= AGE_RANGE[1])
    notes.add("not applicable: sex must be F or M", ~(female | male))
    notes.add(f"not applicable: age outside {AGE_RANGE[0]}-{AGE_RANGE[1]}",
              (female | male) & ~((age >= AGE_RANGE[0]) & (age <= AGE_RANGE[1])))
    data = {"age": age}
    for name in continuous:
        values = _column(frame, name)
        missing = np.isnan(values)
        default = np.where(female, _centre_value(models["F"], name), _centre_value(models["M"], name))
        values = np.where(missing, default, values)
        notes.add(f"defaulted: {name}", missing & valid)
        low, high = clamps.get(name, (None, None))
        if low is not None:
            notes.add(f"clamped: {name} raised to {low:g}", valid & ~missing & (values < low))
            values = np.maximum(values, low)
        if high is not None:
            notes.add(f"clamped: {name} lowered to {high:g}", valid & ~missing & (values > high))
            values = np.minimum(values, high)
        data[name] = values
    for name, default in (("ethrisk", 1), ("smoke_cat", 0)):
        values = _column(frame, name)
        missing = np.isnan(values)
        notes.add(f"defaulted: {name}", missing & valid)
        values = np.where(missing, default, values)
        # ClinRisk's arrays take ethrisk 0-9 (0 and 1 both mean White or not stated)
        bad = valid & ~np.isin(values, np.arange(10 if name == "ethrisk" else 5))
        notes.add(f"not applicable: {name} out of range", bad)
        valid &= ~bad
        data[name] = np.where(bad, default, values).astype(np.int64)
    return data, female, male, valid


def _binaries(frame: pl.DataFrame, names: set[str]) -> dict[str, np.ndarray]:
    """Conditions and treatments: missing means absent (no code recorded), as in QRISK3 itself,
    so it is not noted as a default."""
    everything = _column(frame, "all_binaries_flag")  # the reference vectors' shorthand
    out = {}
    for name in sorted(names):
        values = _column(frame, name)
        values = np.where(np.isnan(values), everything, values)
        out[name] = np.where(np.isnan(values), 0.0, (values != 0).astype(np.float64))
    return out


def qrisk3(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` plus ``risk_10y_pct`` (QRISK3-2017 10-year CVD risk, %) and ``score_notes``.

    QRISK3 is not for people who already have CVD: leave them out before calling (the feature
    layer does), or their score will not mean anything.
    """
    models = {"F": qrisk3_2017.FEMALE, "M": qrisk3_2017.MALE}
    notes = _Notes(frame.height)
    data, female, male, valid = _prepare(frame, models, QRISK3_CLAMPS, notes,
                                         ["bmi", "rati", "sbp", "sbps5", "town"])
    binaries = {k for m in models.values() for k in m.coefficients if k.startswith(("b_", "fh_"))}
    data.update(_binaries(frame, binaries))
    risk = np.full(frame.height, np.nan)
    for mask, model in ((female & valid, models["F"]), (male & valid, models["M"])):
        if mask.any():
            risk[mask] = risk_percent(model, {k: v[mask] for k, v in data.items()})
    return frame.with_columns(pl.Series("risk_10y_pct", risk).fill_nan(None), notes.series())


def qdiabetes(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` plus ``risk_10y_pct`` (QDiabetes-2018 10-year type 2 diabetes risk, %),
    ``qdiabetes_model`` (A, B or C) and ``score_notes``."""
    frame = frame.rename({k: v for k, v in ALIASES.items() if k in frame.columns and v not in frame.columns})
    models_a = {"F": qdiabetes_2018.FEMALE_A, "M": qdiabetes_2018.MALE_A}
    notes = _Notes(frame.height)
    data, female, male, valid = _prepare(frame, models_a, QDIABETES_CLAMPS, notes, ["bmi", "town"])
    fbs, hba1c = _column(frame, "fbs"), _column(frame, "hba1c")
    use_c = ~np.isnan(hba1c)
    use_b = ~use_c & ~np.isnan(fbs)
    diabetic = (use_c & (hba1c >= DIABETIC_RANGE["hba1c"])) | (use_b & (fbs >= DIABETIC_RANGE["fbs"]))
    notes.add("not applicable: blood test in the diabetic range", valid & diabetic)
    valid &= ~diabetic
    for name, values, used in (("fbs", fbs, use_b), ("hba1c", hba1c, use_c)):
        low = QDIABETES_CLAMPS[name][0]
        notes.add(f"clamped: {name} raised to {low:g}", valid & used & (values < low))
        data[name] = np.where(used, np.maximum(values, low), np.nan)
    binaries = {k for m in qdiabetes_2018.MODELS.values() for k in m.coefficients if k.startswith(("b_", "fh_"))}
    data.update(_binaries(frame, binaries))
    model_letter = np.where(use_c, "C", np.where(use_b, "B", "A"))
    risk = np.full(frame.height, np.nan)
    for (sex, letter), model in qdiabetes_2018.MODELS.items():
        mask = valid & (female if sex == "F" else male) & (model_letter == letter)
        if mask.any():
            risk[mask] = risk_percent(model, {k: v[mask] for k, v in data.items()})
    return frame.with_columns(pl.Series("risk_10y_pct", risk).fill_nan(None),
                              pl.Series("qdiabetes_model", model_letter), notes.series())
