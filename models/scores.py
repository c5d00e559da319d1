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

A row that is not scored carries only why (its "not applicable" notes): what would have been
defaulted or clamped is not noted, since no score rests on it.

QDiabetes uses model C when HbA1c is given, else B when fasting glucose is, else A.
"""

from __future__ import annotations

import functools

import numpy as np
import polars as pl

from models import qdiabetes_2018, qrisk3_2017
from models.clinrisk import ClinRiskModel, CodedModel, coded, risk_percent_coded

AGE_RANGE = (25, 84)
QRISK3_CLAMPS = {"bmi": (20.0, 40.0), "rati": (1.0, 12.0), "sbp": (70.0, 210.0), "town": (-8.0, 12.0)}
QDIABETES_CLAMPS = {"bmi": (20.0, 40.0), "town": (-8.0, 12.0), "fbs": (2.0, None), "hba1c": (15.0, None)}
DIABETIC_RANGE = {"fbs": 7.0, "hba1c": 48.0}
BLOCK_ROWS = 16_384  # rows scored at a time (128 KB per float column)
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
    """``name`` as float64, NaN where missing. Read-only: a float column without nulls is not copied."""
    if name not in frame.columns:
        return np.full(frame.height, np.nan)
    series = frame[name]
    if series.dtype != pl.Float64:
        series = series.cast(pl.Float64, strict=False)
    return series.to_numpy()  # nulls come out as NaN


def _centre_value(model: ClinRiskModel, source: str) -> float:
    """The input value at which the model's first transform of ``source`` is zero."""
    t = next(t for t in model.transforms if t.source == source)
    if t.times_log:
        raise ValueError(f"{source}: first transform has a log factor")
    inverse = np.exp(t.centre) if t.power == 0 else t.centre ** (1 / t.power)
    return float(inverse * t.scale)


class _Notes:
    """What happened to the inputs of each row, as one string column.

    Each kind of note that occurs gets a bit (in the order the notes are added); a row's notes are
    an integer, and each distinct integer's text is joined once, not once per row.
    """

    def __init__(self, n: int) -> None:
        self.texts: list[str] = []
        self.codes = np.zeros(n, dtype=np.uint32)
        self.n = n

    def add(self, text: str, mask: np.ndarray) -> None:
        if mask.any():
            bit = len(self.texts)
            self.texts.append(text)
            self.codes |= np.left_shift(mask, bit, dtype=np.uint32)

    def only_why_not(self, scored: np.ndarray) -> None:
        """A row that is not scored keeps only the notes that say why ("not applicable: ..."):
        "defaulted" or "clamped" on a row with no risk read as if a score rested on them (a list
        asked to measure a BMI for a QDiabetes that was never computed)."""
        why = sum((1 << i for i, text in enumerate(self.texts) if text.startswith("not applicable")), 0)
        self.codes = np.where(scored, self.codes, self.codes & np.uint32(why)).astype(np.uint32)

    def series(self) -> pl.Series:
        if not self.texts:
            return pl.repeat("", self.n, eager=True, dtype=pl.String).alias("score_notes")
        present = np.flatnonzero(np.bincount(self.codes))
        texts = ["; ".join(t for i, t in enumerate(self.texts) if code >> i & 1) for code in present]
        index = np.zeros(int(present[-1]) + 1, dtype=np.uint32)
        index[present] = np.arange(present.size, dtype=np.uint32)
        return pl.Series("score_notes", texts, dtype=pl.String).gather(index[self.codes])


def _sexes(frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Masks of female and male rows (``F``/``M``, ``female``/``male`` in any case)."""
    if "sex" not in frame.columns:
        return np.zeros(frame.height, dtype=bool), np.zeros(frame.height, dtype=bool)
    sex = frame["sex"].cast(pl.String)
    female = np.array((sex == "F").fill_null(False).to_numpy(), dtype=bool)
    male = np.array((sex == "M").fill_null(False).to_numpy(), dtype=bool)
    rest = np.flatnonzero(~(female | male))
    if rest.size:  # other spellings: only the rows that have them are upper-cased
        other = sex.gather(rest).str.to_uppercase()
        female[rest] = other.is_in(["F", "FEMALE"]).fill_null(False).to_numpy()
        male[rest] = other.is_in(["M", "MALE"]).fill_null(False).to_numpy()
    return female, male


def _prepare(frame: pl.DataFrame, models: dict[str, ClinRiskModel], clamps: dict, notes: _Notes,
             continuous: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Inputs as arrays after defaults and clamps; the sex masks; a validity mask."""
    female, male = _sexes(frame)
    age = _column(frame, "age")
    known = female | male
    in_range = (age >= AGE_RANGE[0]) & (age <= AGE_RANGE[1])
    valid = known & in_range
    notes.add("not applicable: sex must be F or M", ~known)
    notes.add(f"not applicable: age outside {AGE_RANGE[0]}-{AGE_RANGE[1]}", known & ~in_range)
    data = {"age": age}
    for name in continuous:
        values = _column(frame, name)
        missing = np.isnan(values)
        if missing.any():
            values = np.where(missing, np.where(female, _centre_value(models["F"], name),
                                                _centre_value(models["M"], name)), values)
            notes.add(f"defaulted: {name}", missing & valid)
        low, high = clamps.get(name, (None, None))
        if low is not None:
            below = values < low
            if below.any():
                notes.add(f"clamped: {name} raised to {low:g}", valid & ~missing & below)
                values = np.maximum(values, low)
        if high is not None:
            above = values > high
            if above.any():
                notes.add(f"clamped: {name} lowered to {high:g}", valid & ~missing & above)
                values = np.minimum(values, high)
        data[name] = values
    for name, default in (("ethrisk", 1), ("smoke_cat", 0)):
        values = _column(frame, name)
        missing = np.isnan(values)
        notes.add(f"defaulted: {name}", missing & valid)
        # ClinRisk's arrays take ethrisk 0-9 (0 and 1 both mean White or not stated)
        top = 9 if name == "ethrisk" else 4
        with np.errstate(invalid="ignore"):
            bad = ~missing & ~((values >= 0) & (values <= top) & (values == np.floor(values)))
        notes.add(f"not applicable: {name} out of range", valid & bad)
        valid &= ~bad
        data[name] = np.where(missing | bad, default, values).astype(np.int64)
    return data, female, male, valid


def _present(frame: pl.DataFrame, name: str) -> np.ndarray:
    """A condition or treatment column as a mask: non-zero and not missing."""
    series = frame[name]
    if series.null_count() == 0 and (series.dtype.is_integer() or series.dtype == pl.Boolean):
        return series.to_numpy() != 0
    return np.abs(_column(frame, name)) > 0  # NaN (missing, or not a number) is absent


def _binary_code(frame: pl.DataFrame, names: tuple[str, ...], smoke: np.ndarray) -> np.ndarray:
    """Conditions and treatments with smoking as one integer per row: bit i is ``names[i]``
    present, ``smoke_cat`` above them. Missing means absent (no code recorded), as in QRISK3
    itself, so it is not noted as a default."""
    code = smoke.astype(np.int32) << len(names)
    everything = (_column(frame, "all_binaries_flag")  # the reference vectors' shorthand
                  if "all_binaries_flag" in frame.columns else None)
    for i, name in enumerate(names):
        if everything is not None:
            values = _column(frame, name)
            present = np.abs(np.where(np.isnan(values), everything, values)) > 0
        elif name in frame.columns:
            present = _present(frame, name)
        else:
            continue
        code |= np.left_shift(present, i, dtype=np.int32)
    return code


def _score(risk: np.ndarray, groups: list[tuple[np.ndarray, CodedModel]], data: dict[str, np.ndarray],
           code: np.ndarray) -> None:
    """Fill ``risk`` for each group of rows (a mask) with its model, a block of rows at a time:
    a block's temporary arrays stay in the processor's cache (twice as fast as whole columns)."""
    for mask, model in groups:
        rows = np.flatnonzero(mask)
        sources = {t.source for t, _ in model.age} | {t.source for t, _, _ in model.continuous}
        for start in range(0, rows.size, BLOCK_ROWS):
            block = rows[start:start + BLOCK_ROWS]
            risk[block] = risk_percent_coded(model, {name: data[name][block] for name in sources},
                                             data["ethrisk"][block], code[block])


@functools.cache
def _coded(score: str) -> dict:
    models = ({"F": qrisk3_2017.FEMALE, "M": qrisk3_2017.MALE} if score == "qrisk3" else qdiabetes_2018.MODELS)
    binaries = tuple(sorted({k for m in models.values() for k in m.coefficients if k.startswith(("b_", "fh_"))}))
    return {key: coded(model, binaries) for key, model in models.items()}


def qrisk3(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` plus ``risk_10y_pct`` (QRISK3-2017 10-year CVD risk, %) and ``score_notes``.

    QRISK3 is not for people who already have CVD: leave them out before calling (the feature
    layer does), or their score will not mean anything.
    """
    models = {"F": qrisk3_2017.FEMALE, "M": qrisk3_2017.MALE}
    notes = _Notes(frame.height)
    data, female, male, valid = _prepare(frame, models, QRISK3_CLAMPS, notes,
                                         ["bmi", "rati", "sbp", "sbps5", "town"])
    coded_models = _coded("qrisk3")
    code = _binary_code(frame, coded_models["F"].binaries, data["smoke_cat"])
    risk = np.full(frame.height, np.nan)
    _score(risk, [(female & valid, coded_models["F"]), (male & valid, coded_models["M"])], data, code)
    notes.only_why_not(valid)
    return frame.with_columns(pl.Series("risk_10y_pct", risk).fill_nan(None), notes.series())


def qdiabetes(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` plus ``risk_10y_pct`` (QDiabetes-2018 10-year type 2 diabetes risk, %),
    ``qdiabetes_model`` (A, B or C) and ``score_notes``."""
    frame = frame.rename({k: v for k, v in ALIASES.items() if k in frame.columns and v not in frame.columns})
    models_a = {"F": qdiabetes_2018.FEMALE_A, "M": qdiabetes_2018.MALE_A}
    notes = _Notes(frame.height)
    data, female, male, valid = _prepare(frame, models_a, QDIABETES_CLAMPS, notes, ["bmi", "town"])
    fbs, hba1c = _column(frame, "fbs"), _column(frame, "hba1c")
    letter = qdiabetes_model_index(hba1c, fbs)
    use_c, use_b = letter == 2, letter == 1
    diabetic = (use_c & (hba1c >= DIABETIC_RANGE["hba1c"])) | (use_b & (fbs >= DIABETIC_RANGE["fbs"]))
    notes.add("not applicable: blood test in the diabetic range", valid & diabetic)
    valid &= ~diabetic
    for name, values, used in (("fbs", fbs, use_b), ("hba1c", hba1c, use_c)):
        low = QDIABETES_CLAMPS[name][0]
        notes.add(f"clamped: {name} raised to {low:g}", valid & used & (values < low))
        data[name] = np.where(used, np.maximum(values, low), np.nan)
    coded_models = _coded("qdiabetes")
    code = _binary_code(frame, coded_models["F", "A"].binaries, data["smoke_cat"])
    risk = np.full(frame.height, np.nan)
    _score(risk, [(valid & (female if sex == "F" else male) & (letter == "ABC".index(model_letter)), model)
                  for (sex, model_letter), model in coded_models.items()], data, code)
    notes.only_why_not(valid)  # e.g. an HbA1c already in the diabetic range: why, and nothing "defaulted"
    return frame.with_columns(pl.Series("risk_10y_pct", risk).fill_nan(None),
                              pl.Series("qdiabetes_model", ["A", "B", "C"]).gather(letter), notes.series())


def qdiabetes_model_index(hba1c: np.ndarray, fbs: np.ndarray) -> np.ndarray:
    """Which QDiabetes-2018 model scores a row: 2 (C) when HbA1c is given, else 1 (B) when
    fasting glucose is, else 0 (A)."""
    hba1c, fbs = np.asarray(hba1c, dtype=float), np.asarray(fbs, dtype=float)
    return np.where(~np.isnan(hba1c), 2, np.where(~np.isnan(fbs), 1, 0)).astype(np.uint32)


def ethnic_log_hr(score: str) -> np.ndarray:
    """A validated score's published ethnicity terms, indexed [male, QDiabetes model (A, B, C),
    ethrisk 0-9]: each is the log hazard ratio against White (ethrisk 0 and 1), added to the
    score's log hazard (models/clinrisk.py). QRISK3's are the same for every QDiabetes model."""
    terms = np.zeros((2, 3, 10))
    for male, sex in enumerate("FM"):
        for index, letter in enumerate("ABC"):
            model = ((qrisk3_2017.MALE if male else qrisk3_2017.FEMALE) if score == "qrisk3"
                     else qdiabetes_2018.MODELS[sex, letter])
            terms[male, index] = model.ethrisk
    return terms
