"""Synthetic GP extracts: the stand-in for real data in the demo, the tests and every benchmark.

``generate(SynthConfig(...), out_dir)`` writes the contract tables (see ``phm.contract``) and a
separate ``truth/`` folder that the pipeline never reads: each patient's true ethnicity, true
risk factors, true risks from the documented risk model below, true and recorded outcomes, and
``truth/planted.json`` with every setting (including the bias knobs) that produced the extract,
and a ``practice_side/`` folder that stands for what each practice holds in its own clinical
system and the ICB never sees: ``practice_side/<practice_pseudo_id>/patients.csv``, the practice's
lookup from extract ``patient_id`` to NHS number for the patients registered with it at the
extract date (NHS numbers from the 999 range NHS England reserves for testing, with a valid
modulus-11 check digit, unique per patient). ``phm reidentify`` reads it (docs/lists.md).
Ingest reads neither folder (it names them as not in the contract).

Time line: ``extract_date`` E; the past index date T0 = E - ``horizon_years``. Conditions present
at T0 are coded before T0 (at any adult age: a 20-year-old with type 2 diabetes is coded as one);
outcomes (incident CVD event, type 2 diabetes, hypertension) happen in (T0, E] at a constant
yearly hazard exp(lp) from the true model, for patients aged 25+ at T0 and free of the outcome.
Death is a constant yearly hazard 0.002 exp(0.09 (age - 45)) from E - ``history_years``, and
comes first for some: nobody has an event after death. Leaving the practice stops the recording
of events, not the events. Measurements are recorded over the ``history_years`` before E.

The truth's columns per outcome (cvd, t2d, htn), for patients alive and free of it at T0 (0 for
everyone else):
- ``true_risk_<o>_horizon``: net risk over the horizon, 1 - exp(-h exp(lp)): the risk had the
  patient not died first. QRISK3, QDiabetes and the trained models (which censor at death)
  estimate this.
- ``true_cuminc_<o>_horizon``: cumulative incidence with death as a competing risk, the chance
  that the event happens within the horizon before death. Its sum over a group is the expected
  number of that group's ``<o>_event``: the answer key agrees with itself (tests/unit/test_synth.py).
- ``<o>_event`` (and ``_date``): the event happened in (T0, E], before death;
  ``<o>_event_recorded``: it was also coded, while the patient was registered.
- ``t2d_true_at_extract`` / ``t2d_coded_by_extract`` (and hypertension's): what each patient
  really has by E, whatever the age, and whether the record says so (true and not coded =
  undiagnosed).
- ``t2d_expected_need_horizon``: for a patient with no diabetes code at T0, the chance of having
  type 2 diabetes by the horizon's end, taken before the generator's draws decide it: diabetes
  present and uncoded at T0, or its onset in the horizon (``_expected_t2d_need``). A probability
  like ``true_risk_t2d_horizon``; ``t2d_true_past_index`` is the draw itself.

True risk model (5-year net risk = 1 - exp(-5 * exp(lp)); 10-year uses 10), per outcome, with
age in years, z the latent deprivation score (sd ~1, higher = more deprived):
- CVD: lp = -9.1 + 0.072 age + 0.45 male + 0.017 (sbp - 130) + 0.55 smoker + 0.65 t2d
  + 0.14 (chol_ratio - 4) + 0.55 af + 0.3 ckd + 0.3 fh_cvd + 0.1 z + ethnic effect
- Type 2 diabetes: lp = -7.9 + 0.035 age + 0.11 (bmi - 27) + 0.2 (hba1c - 36)
  + ethnic effect + 0.45 fh_diabetes + 0.4 steroids + 0.12 z
  (the ethnic effects: QRISK3-2017's and QDiabetes-2018 model C's published ones, by sex,
  ``synth_profiles.TRUE_ETHNIC_LOG_HR``; sbp is treated sbp, 12 lower, where hypertension is
  present at T0)
- Hypertension: lp = -6.1 + 0.045 age + 0.045 (sbp - 125) + 0.45 black + 0.04 (bmi - 27)
  + 0.08 z
Undiagnosed hypertension and diabetes present at T0 (a national diagnosis gap of 30% and 15%)
are found in (T0, E] for half of those people and coded then as a new diagnosis.

Bias knobs (all off by default; keys are NHS category letters such as "N" or broad groups such as
"Black"; a letter wins over its group):
- ``measurement_access``: probability that a scheduled measurement is actually taken.
- ``outcome_recording``: probability that a true diagnosis or event is coded (under-recording,
  the label-choice bias of Obermeyer et al.). It is a coding failure, not a failure of care: the
  diagnosis is made at the national rate (or the event's discharge letter reaches the practice),
  treatment follows as for the coded (antihypertensives, statins, glucose-lowering drugs, antiplatelets), and only the code is missing,
  so the record shows "treated without a diagnosis" as a real one does (docs/fairness.md). With
  the knob unset the known and the coded are the same patients: the default extract is unchanged.
- ``ethnicity_misrecording``: probability that the recorded ethnicity is another category.
``ethnicity_unrecorded`` (default 0.15) is the share with no ethnicity code at all.

Per-practice ethnicity knobs (off by default; keys are the practices' ODS codes, ``Z10001`` for the
first practice, ``Z10002`` for the second, as ``practice_ods_code`` names them): a practice that
records ethnicity badly, for the ethnicity data-quality report's truth tests (docs/ethnicity.md).
- ``ethnicity_unrecorded_practice``: the share of that practice's patients with no ethnicity code
  (instead of ``ethnicity_unrecorded``).
- ``ethnicity_misrecording_practice``: the probability that the practice records another category
  (drawn as ``ethnicity_misrecording`` draws it), on top of any group's misrecording.
Both use the draws the generator makes anyway, so with neither set the extract is byte-identical.

``ethnicity_repeat_codes`` (default 0, off): the mean number (Poisson) of further codes of a
patient's usual recorded category, dated within their registration, as real records repeat a
patient's ethnicity at later registrations and reviews (OpenSAFELY found the latest and the most
frequent category to agree for 98.7% of patients with several records: BMC Med 2024;22:288).
With it on, a conflicting code is usually outnumbered, which is what tells a "most frequent"
rule from a "latest" one. Its draws come from their own random streams, so turning it on adds
codes and changes nothing else; off, the extract is byte-identical to one made without it.

``hospital_ethnicity`` (default 0, off: no file): the share of patients with hospital records
(SUS/HES style), written to the optional ``hospital_ethnicity`` table, whatever their GP record
says. Each has 1 + Poisson(1) records dated within their registration, with the hospital's own
recording errors (``HOSPITAL_RECORDING``: the true letter, else 'any other' of its group, another
category, Z, 99 or X). Own random stream; no other table changes.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cache
from pathlib import Path

import numpy as np
import polars as pl

from phm import synth_profiles as prof
from phm.codelists import project_codelists
from phm.contract import TABLES, ExtractMetadata
from phm.ethnicity import NHS_ETHNIC_CATEGORIES, NOT_KNOWN, NOT_STATED, QRISK3_ETHRISK
from phm.exceptions import ConfigError

EPOCH = dt.date(1970, 1, 1)
YEAR = 365.25
PRACTICE_SIDE = "practice_side"  # what each practice holds (its lookup to NHS numbers): never read by ingest


@dataclass(frozen=True)
class SynthConfig:
    patients: int = 10_000
    seed: int = 42
    extract_date: dt.date = dt.date(2026, 3, 31)
    profile: str = "england"
    pcns: int | None = None  # default: ceil(patients / 40,000)
    format: str = "parquet"  # or "csv"
    history_years: int = 10
    horizon_years: int = 5
    ethnicity_unrecorded: float = 0.15
    measurement_access: dict[str, float] = field(default_factory=dict)
    outcome_recording: dict[str, float] = field(default_factory=dict)
    ethnicity_misrecording: dict[str, float] = field(default_factory=dict)
    ethnicity_repeat_codes: float = 0.0
    hospital_ethnicity: float = 0.0
    icb_code: str = "QXX"
    # practice ODS code (Z10001, ...) -> share unrecorded / probability misrecorded at that practice
    ethnicity_unrecorded_practice: dict[str, float] = field(default_factory=dict)
    ethnicity_misrecording_practice: dict[str, float] = field(default_factory=dict)

    @classmethod
    def planted_in(cls, extract: Path) -> SynthConfig:
        """The settings an extract was made with, read back from its ``truth/planted.json``: the
        same settings make the same extract again (``generate``)."""
        planted = json.loads((Path(extract) / "truth" / "planted.json").read_text())
        settings = {f.name: planted[f.name] for f in fields(cls) if f.name in planted}
        settings["extract_date"] = dt.date.fromisoformat(settings["extract_date"])
        return cls(**settings)

    def validate(self) -> None:
        if self.patients < 1:
            raise ConfigError(f"--patients must be at least 1 (got {self.patients})")
        if self.profile not in prof.ETHNICITY_PROFILES:
            raise ConfigError(f"--profile must be one of {sorted(prof.ETHNICITY_PROFILES)}, "
                              f"not {self.profile!r}")
        if self.format not in ("parquet", "csv"):
            raise ConfigError(f"--format must be parquet or csv, not {self.format!r}")
        if self.pcns is not None and not 1 <= self.pcns <= self.patients:
            raise ConfigError(f"--pcns must be between 1 and the number of patients (got {self.pcns})")
        if not 0 <= self.ethnicity_unrecorded < 1:
            raise ConfigError("ethnicity_unrecorded must be in [0, 1)")
        if not 0 <= self.ethnicity_repeat_codes <= 20:
            raise ConfigError("ethnicity_repeat_codes must be a mean number of codes in [0, 20]")
        if not 0 <= self.hospital_ethnicity <= 1:
            raise ConfigError("hospital_ethnicity must be a share of patients in [0, 1]")
        groups = set(prof.CATEGORIES) | {"White", "Mixed", "Asian", "Black", "Other"}
        for knob in ("measurement_access", "outcome_recording", "ethnicity_misrecording"):
            for key, value in getattr(self, knob).items():
                if key not in groups:
                    raise ConfigError(f"{knob}: unknown group {key!r}; use an NHS category "
                                      f"letter (A-S) or one of White, Mixed, Asian, Black, Other")
                if not 0 <= value <= 1:
                    raise ConfigError(f"{knob}[{key}] must be a probability in [0, 1], not {value}")
        for knob in ("ethnicity_unrecorded_practice", "ethnicity_misrecording_practice"):
            for key, value in getattr(self, knob).items():
                if not (len(key) == 6 and key[0] == "Z" and key[1:].isdigit() and int(key[1:]) > 10_000):
                    raise ConfigError(f"{knob}: {key!r} is not a practice of the generator: use its ODS code, "
                                      f"Z10001 for the first practice, Z10002 for the second, ...")
                if not 0 <= value <= 1:
                    raise ConfigError(f"{knob}[{key}] must be a probability in [0, 1], not {value}")


def _knob(values: dict[str, float], cats: np.ndarray, default: float) -> np.ndarray:
    """Per-patient value of a bias knob given each patient's true category index."""
    per_cat = np.full(len(prof.CATEGORIES), default)
    for i, c in enumerate(prof.CATEGORIES):
        broad = NHS_ETHNIC_CATEGORIES[c][1]
        if c in values:
            per_cat[i] = values[c]
        elif broad in values:
            per_cat[i] = values[broad]
    return per_cat[cats]


def _days(d: dt.date) -> int:
    return (d - EPOCH).days


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class _Events:
    """Collects event columns as numpy arrays, concatenated once at the end."""

    def __init__(self) -> None:
        self.pid: list[np.ndarray] = []
        self.day: list[np.ndarray] = []
        self.code: list[np.ndarray] = []
        self.value: list[np.ndarray] = []
        self.codes: list[str] = []
        self._code_index: dict[str, int] = {}

    def code_id(self, code: str) -> int:
        if code not in self._code_index:
            self._code_index[code] = len(self.codes)
            self.codes.append(code)
        return self._code_index[code]

    def add(self, pid: np.ndarray, day: np.ndarray, code: str | np.ndarray,
            value: np.ndarray | None = None) -> None:
        n = len(pid)
        if n == 0:
            return
        self.pid.append(pid.astype(np.int64, copy=False))
        self.day.append(day.astype(np.int32, copy=False))
        if isinstance(code, str):
            self.code.append(np.full(n, self.code_id(code), dtype=np.int32))
        else:
            self.code.append(code.astype(np.int32, copy=False))
        self.value.append(np.full(n, np.nan) if value is None else value.astype(np.float64))

    def frame(self, code_column: str, with_value: bool) -> pl.DataFrame:
        codes = pl.Series(self.codes, dtype=pl.String)
        data = {
            "patient_id": np.concatenate(self.pid),
            "date": pl.Series(np.concatenate(self.day)).cast(pl.Date),
            code_column: codes.gather(pl.Series(np.concatenate(self.code))),
        }
        if with_value:
            data["numeric_value"] = pl.Series(np.concatenate(self.value)).fill_nan(None)
        return pl.DataFrame(data)


class _CodePicker:
    """Which code of a concept's list each record carries: a realistic spread, not one code.

    GP records concentrate on the few codes the clinical systems' templates offer, with a long tail
    of older, inactive and legacy codes (retired dm+d ids, 2001-census ethnicity, CTV3-era
    concepts). Each record's code is drawn with weight 1 / rank ** ZIPF over the list's own order
    (each list keeps its commonest codes first), so most records use a handful of codes and a
    share use the rest. Ethnicity is recorded with 2001-census codes (60%), 2011-census codes (30%)
    and other codes of the category (10%). The picker has its own random stream, seeded from the
    extract's seed, so choosing codes moves no other draw of the generator.
    """

    ZIPF = 1.1
    ETHNICITY_CENSUS_SHARES = (("2001 census", 0.6), ("2011 census", 0.3), (None, 0.1))
    # A code in two lists means both ('CKD stage 3 due to type 2 diabetes'): a record is drawn
    # only from codes that imply nothing the patient does not have. These lists nest instead.
    NESTED = {"diabetes_type1": {"diabetes"}, "diabetes_type2": {"diabetes"}, "mi": {"chd"}, "chd": {"mi"}}

    def __init__(self, seed: int, events: _Events, stream: int = 15) -> None:
        self.rng = np.random.default_rng([seed, stream])
        self.events = events
        self._tables: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def _table(self, concept: str, category: str | None, among: frozenset[str] | None) -> tuple[np.ndarray, np.ndarray]:
        key = (concept, category, among)
        if key not in self._tables:
            lists = project_codelists()
            cl = lists[concept]
            elsewhere = {c for other, ol in lists.items()
                         if other != concept and other not in self.NESTED.get(concept, ()) for c in ol.codes}
            codes = [c for c, cat in cl.codes.items()
                     if (category is None or cat == category) and (among is None or c in among)
                     and c not in elsewhere]
            if concept == "ethnicity":
                weights = np.zeros(len(codes))
                census = [next((k for k, _ in self.ETHNICITY_CENSUS_SHARES[:-1] if k in cl.terms[c].lower()), None)
                          for c in codes]
                for kind, share in self.ETHNICITY_CENSUS_SHARES:
                    members = np.flatnonzero([k == kind for k in census])
                    if len(members):
                        w = 1.0 / np.arange(1, len(members) + 1) ** self.ZIPF
                        weights[members] = share * w / w.sum()
            else:
                weights = 1.0 / np.arange(1, len(codes) + 1) ** self.ZIPF
            ids = np.array([self.events.code_id(c) for c in codes], dtype=np.int32)
            self._tables[key] = (ids, weights / weights.sum())
        return self._tables[key]

    def pick(self, concept: str, size: int, category: str | None = None,
             among: frozenset[str] | None = None) -> np.ndarray:
        """``size`` code ids (of this picker's ``_Events``) for records of ``concept`` (of ``category``,
        and only codes in ``among`` when given)."""
        ids, p = self._table(concept, category, among)
        return ids[self.rng.choice(len(ids), size=size, p=p)]


def _diastolic_of(systolic_code: str) -> str:
    """The diastolic code of the same kind of reading as a systolic code (sitting, lying, ...)."""
    return _bp_code_pairs()[systolic_code]


@cache
def _bp_code_pairs() -> dict[str, str]:
    """systolic code -> diastolic code, paired by term ('Sitting systolic ...' -> 'Sitting
    diastolic ...'); systolic codes with no diastolic twin (e.g. 'on admission') are not drawn."""
    lists = project_codelists()
    diastolic = {lists["diastolic_bp"].terms[c].lower(): c for c in lists["diastolic_bp"].codes}
    pairs = {c: diastolic.get(lists["systolic_bp"].terms[c].lower().replace("systolic", "diastolic"))
             for c in lists["systolic_bp"].codes}
    return {s: d for s, d in pairs.items() if d is not None}


def generate(config: SynthConfig, out_dir: Path) -> dict:
    """Write a synthetic extract to ``out_dir`` and return a summary of what was written.

    Each step below draws from the one random stream in a fixed order (the code pickers have
    their own streams), so the same config always gives byte-identical files: reordering the
    steps, or the draws within one, changes every extract made after it."""
    config.validate()
    check_replaceable(Path(out_dir))  # before the work: a mistyped --out must not lose a real folder
    out_dir = Path(out_dir)
    ctx = _Context.of(config)
    practices = _practices(ctx)
    people = _people(ctx, practices)
    deprivation = _deprivation(ctx, practices, people)
    health = _health_at_index(ctx, people, deprivation)
    outcomes = _outcomes(ctx, people, deprivation, health)
    registrations = _registrations(ctx, people, practices)
    patient_id = ctx.rng.permutation(ctx.n).astype(np.int64) + 1  # ids: a shuffle of 1..n
    outcomes = _censored_at_death(outcomes, registrations)
    record = _Record.start(ctx, people, registrations, patient_id)
    coding = _outcome_coding(ctx, people, outcomes, registrations)
    _record_readings(ctx, record, people, health, outcomes, coding)
    _record_smoking_and_other_codes(ctx, record, people, health)
    diagnosed = _record_diagnoses(ctx, record, people, health, outcomes, coding)
    _record_end_of_life_and_residence(ctx, record, people)
    _record_practice_decisions(ctx, record, people, health, outcomes, coding)
    _record_ethnicity(ctx, record, people, registrations)
    _record_medications(ctx, record, people, health, outcomes, coding, diagnosed)
    _fresh_folder(out_dir)
    summary = _write_extract(ctx, out_dir, practices, people, deprivation, registrations, record)
    _write_truth(ctx, out_dir, people, deprivation, health, outcomes, registrations, coding, diagnosed,
                 patient_id)
    _write_practice_side(ctx, out_dir, practices, registrations, patient_id)
    return summary


@dataclass(frozen=True)
class _Context:
    """The config, the generator's one random stream, and the time line in days since 1970."""

    config: SynthConfig
    rng: np.random.Generator
    n: int
    E: int  # the extract date
    T0: int  # the past index date, E - horizon_years
    W0: int  # the start of the history window, E - history_years

    @classmethod
    def of(cls, config: SynthConfig) -> _Context:
        E = _days(config.extract_date)
        return cls(config, np.random.default_rng(config.seed), config.patients, E,
                   E - int(round(config.horizon_years * YEAR)), E - int(round(config.history_years * YEAR)))

    def u(self) -> np.ndarray:
        """One uniform per patient: the draw most steps make, always in a fixed order."""
        return self.rng.uniform(size=self.n)


@dataclass(frozen=True)
class _Practices:
    n_pcn: int
    sizes: np.ndarray  # patients per practice
    pcn: np.ndarray  # each practice's PCN (index)
    ids: np.ndarray  # practice_pseudo_id
    deprivation: np.ndarray
    diversity: np.ndarray  # relative weight of the minority groups, before scaling to the profile

    @property
    def count(self) -> int:
        return len(self.sizes)


def _practices(ctx: _Context) -> _Practices:
    """PCNs of 30-50k patients, practices of about 10,000 each, with their deprivation and ethnic mix."""
    rng, n = ctx.rng, ctx.n
    n_pcn = ctx.config.pcns or max(1, math.ceil(n / 40_000))
    pcn_w = rng.uniform(30, 50, n_pcn)
    pcn_sizes = np.maximum(1, np.floor(n * pcn_w / pcn_w.sum()).astype(np.int64))
    pcn_sizes[-1] = n - pcn_sizes[:-1].sum()
    practice_sizes, practice_pcn = [], []
    for p, size in enumerate(pcn_sizes):
        k = max(1, min(int(size), max(2, round(size / 10_000))))
        # about 10,000 each, +-30%: with 30-50k per PCN every practice stays within 5-15k
        w = rng.uniform(0.7, 1.3, k)
        s = np.maximum(1, np.floor(size * w / w.sum()).astype(np.int64))
        s[-1] = size - s[:-1].sum()
        practice_sizes += list(s)
        practice_pcn += [p] * k
    practice_sizes = np.array(practice_sizes)
    practice_pcn = np.array(practice_pcn)
    n_prac = len(practice_sizes)
    practice_ids = rng.choice(np.arange(10_000, 100_000), n_prac, replace=False)
    pcn_dep = rng.normal(0, 0.8, n_pcn)
    practice_dep = pcn_dep[practice_pcn] + rng.normal(0, 0.5, n_prac)
    practice_diversity = np.exp(rng.normal(0, 0.5, n_prac) + 0.3 * practice_dep)
    return _Practices(n_pcn, practice_sizes, practice_pcn, practice_ids, practice_dep, practice_diversity)


@dataclass(frozen=True)
class _People:
    prac: np.ndarray  # each patient's current practice (index)
    cat: np.ndarray  # true ethnic category (index into synth_profiles.CATEGORIES)
    letter: np.ndarray  # true ethnic category (NHS letter)
    south_asian: np.ndarray
    black: np.ndarray
    chinese: np.ndarray
    age: np.ndarray  # at the extract date
    age0: np.ndarray  # at the past index date
    sex: np.ndarray
    male: np.ndarray
    female: np.ndarray
    dob: np.ndarray  # day


def _people(ctx: _Context, practices: _Practices) -> _People:
    """Patients: practice, ethnicity, age, sex."""
    rng, n, config = ctx.rng, ctx.n, ctx.config
    practice_sizes, n_prac = practices.sizes, practices.count
    prac = np.repeat(np.arange(n_prac), practice_sizes)
    base = np.array([prof.ETHNICITY_PROFILES[config.profile][c] for c in prof.CATEGORIES])
    white = np.array([c in ("A", "B") for c in prof.CATEGORIES])
    # Practices differ in ethnic mix; scale the differences so the whole population still
    # matches the profile (bisection on one multiplier of the minority weights).
    minority = base[~white].sum() / base.sum()
    lo, hi = 1e-3, 1e3
    for _ in range(60):
        scale = math.sqrt(lo * hi)
        d = scale * practices.diversity
        share = (practice_sizes * minority * d / (minority * d + 1 - minority)).sum() / n
        lo, hi = (scale, hi) if share < minority else (lo, scale)
    practice_diversity = practices.diversity * math.sqrt(lo * hi)
    cat = np.empty(n, dtype=np.int64)
    for j in range(n_prac):
        w = base * np.where(white, 1.0, practice_diversity[j])
        members = np.flatnonzero(prac == j)
        cat[members] = rng.choice(len(base), size=len(members), p=w / w.sum())
    cats = np.array(prof.CATEGORIES)
    letter = cats[cat]
    south_asian = np.isin(letter, prof.SOUTH_ASIAN)
    black = np.isin(letter, prof.BLACK)
    chinese = letter == "R"

    mids = prof.AGE_BANDS + 2.5
    age = np.empty(n)
    for i, c in enumerate(prof.CATEGORIES):
        members = np.flatnonzero(cat == i)
        tilt = prof.AGE_TILT.get(c, prof.AGE_TILT_DEFAULT)
        w = prof.AGE_SHARES * np.exp(tilt * (mids - 40) / 10)
        band = rng.choice(len(w), size=len(members), p=w / w.sum())
        width = np.where(prof.AGE_BANDS[band] == 90, 10, 5)
        age[members] = prof.AGE_BANDS[band] + rng.uniform(0, 1, len(members)) * width
    p_female = 0.5 + 0.15 * np.clip(age - 70, 0, 30) / 30
    draw = rng.uniform(size=n)
    sex = np.where(draw < 0.0005, "unknown", np.where(draw < 0.0005 + p_female * 0.9995, "female", "male"))
    dob = ctx.E - (age * YEAR).astype(np.int64)
    # ehrQL gives dates of birth as the first of the month.
    dob_dates = pl.Series(dob.astype(np.int32)).cast(pl.Date).dt.truncate("1mo")
    dob = dob_dates.cast(pl.Int32).to_numpy().astype(np.int64)
    age = (ctx.E - dob) / YEAR
    age0 = age - config.horizon_years  # age at the past index date
    return _People(prac, cat, letter, south_asian, black, chinese, age, age0, sex, sex == "male", sex == "female", dob)


@dataclass(frozen=True)
class _Deprivation:
    z: np.ndarray  # latent score, sd 1, higher = more deprived
    imd_rank: np.ndarray  # 1 = most deprived LSOA
    imd_decile: np.ndarray
    townsend: np.ndarray


def _deprivation(ctx: _Context, practices: _Practices, people: _People) -> _Deprivation:
    rng, n = ctx.rng, ctx.n
    shift = np.array([prof.DEPRIVATION_SHIFT[c] for c in prof.CATEGORIES])[people.cat]
    z = practices.deprivation[people.prac] + shift + rng.normal(0, 0.7, n)
    z = (z - z.mean()) / z.std()
    n_lsoa = 32_844
    # rank 1 = most deprived: the most deprived latent score gets the lowest rank
    order = np.argsort(-z, kind="stable")
    pct = np.empty(n)
    pct[order] = (np.arange(n) + rng.uniform(0, 1, n)) / n
    imd_rank = np.clip((pct * n_lsoa).astype(np.int64) + 1, 1, n_lsoa)
    imd_decile = np.minimum(10, (imd_rank - 1) * 10 // n_lsoa + 1)
    townsend = np.clip(7.0 - 14.0 * imd_rank / n_lsoa + rng.normal(0, 1.5, n), -8, 14)
    return _Deprivation(z, imd_rank, imd_decile, townsend)


@dataclass(frozen=True)
class _Health:
    """Latent risk factors and conditions at the past index date T0 (readings drift after)."""

    bmi: np.ndarray
    smoker: np.ndarray
    ex_smoker: np.ndarray
    smoke_amount: np.ndarray
    fh_cvd: np.ndarray
    fh_diab: np.ndarray
    sbp: np.ndarray
    dbp_offset: np.ndarray
    tchol: np.ndarray
    hdl: np.ndarray
    hba1c: np.ndarray
    # the HbA1c drawn before diabetes at T0 (the same as ``hba1c`` for the patients without it): the
    # truth's expected need reads the onset risk a patient would have had without it
    hba1c_without_diabetes: np.ndarray
    t1d: np.ndarray
    t2d0: np.ndarray
    t2d0_probability: np.ndarray  # the chance of the draw that gave ``t2d0``
    htn0: np.ndarray
    af: np.ndarray
    ckd: np.ndarray
    cvd0: np.ndarray
    ra: np.ndarray
    sle: np.ndarray
    migraine: np.ndarray
    smi: np.ndarray
    ed: np.ndarray
    gdm: np.ndarray
    pcos: np.ndarray
    ld: np.ndarray
    steroids: np.ndarray
    antipsychotic: np.ndarray


def _health_at_index(ctx: _Context, people: _People, deprivation: _Deprivation) -> _Health:
    rng, n, u = ctx.rng, ctx.n, ctx.u
    age, age0, z = people.age, people.age0, deprivation.z
    south_asian, black, chinese = people.south_asian, people.black, people.chinese
    male, female = people.male, people.female
    adult0 = age0 >= 18
    bmi = (27.0 + 0.08 * (np.clip(age, 18, 70) - 40) + 0.9 * z - 1.0 * south_asian
           + 1.2 * (black & female) - 3.0 * chinese + rng.normal(0, 4.5, n))
    bmi = np.clip(bmi, 15, 60)
    p_smoke = np.clip(0.13 + 0.06 * z, 0.03, 0.4) * np.where((south_asian | chinese) & female, 0.3, 1.0)
    draw = rng.uniform(size=n)
    smoker = (draw < p_smoke) & (age >= 18)
    ex_smoker = ~smoker & (draw < p_smoke + 0.22 * (age > 35)) & (age >= 18)
    smoke_amount = rng.choice(np.array(["light", "moderate", "heavy"]), size=n, p=[0.35, 0.4, 0.25])
    fh_cvd = rng.uniform(size=n) < 0.12
    fh_diab = rng.uniform(size=n) < np.where(south_asian, 0.28, 0.15)
    sbp = (116 + 0.55 * np.clip(age0 - 30, 0, None) + 0.35 * (bmi - 27) + 7 * black + 1.5 * z
           + 4 * (male & (age0 < 60)) + rng.normal(0, 13, n))
    dbp_offset = rng.normal(0, 6, n)
    tchol = np.clip(5.1 + 0.012 * (np.clip(age0, 20, 70) - 40) + rng.normal(0, 1.0, n), 2.5, 12)
    hdl = np.clip(np.where(female, 1.55, 1.25) - 0.02 * (bmi - 27) - 0.1 * south_asian
                  + rng.normal(0, 0.3, n), 0.5, 3.5)
    hba1c = 35 + 0.08 * (np.clip(age0, 18, 90) - 40) + 0.25 * (bmi - 27) + 2 * south_asian + 1.5 * black + rng.normal(0, 3, n)

    # conditions present at T0 (adults), with ages of onset before T0
    t1d = u() < 0.004
    t2d0_probability = np.where(adult0 & ~t1d, _sigmoid(-3.9 + 0.05 * (age0 - 40) + 0.13 * (bmi - 27) + 1.0 * south_asian
                                                        + 0.55 * black + 0.2 * z + 0.5 * fh_diab), 0.0)
    t2d0 = adult0 & ~t1d & (u() < t2d0_probability)
    hba1c_without_diabetes = hba1c
    hba1c = np.where(t2d0 | t1d, rng.uniform(50, 80, n), hba1c)
    htn0 = adult0 & (sbp >= 140)
    af = adult0 & (u() < np.clip(0.0005 + 0.0009 * np.clip(age0 - 50, 0, None) ** 1.35 / 10, 0, 0.2))
    ckd = adult0 & (u() < np.clip(0.002 + 0.0025 * np.clip(age0 - 50, 0, None), 0, 0.3))
    cvd0 = adult0 & (u() < _sigmoid(-7.6 + 0.075 * age0 + 0.5 * male + 0.5 * smoker + 0.6 * t2d0 + 0.01 * (sbp - 130)))
    ra = adult0 & (u() < np.where(female, 0.011, 0.005))
    sle = adult0 & (u() < np.where(female, 0.0018, 0.0002))
    migraine = adult0 & (u() < np.where(female, 0.12, 0.04))
    smi = adult0 & (u() < 0.01)
    ed = male & adult0 & (u() < np.clip(0.002 * np.clip(age0 - 35, 0, None), 0, 0.2))
    gdm = female & (age0 >= 25) & (u() < np.where(south_asian, 0.06, 0.025))
    pcos = female & (age0 >= 18) & (u() < 0.04)
    ld = u() < 0.005
    steroids = adult0 & (u() < 0.015)
    antipsychotic = smi & (u() < 0.6)
    return _Health(bmi, smoker, ex_smoker, smoke_amount, fh_cvd, fh_diab, sbp, dbp_offset, tchol, hdl, hba1c,
                   hba1c_without_diabetes, t1d, t2d0, t2d0_probability, htn0, af, ckd, cvd0, ra, sle, migraine, smi, ed, gdm, pcos, ld, steroids, antipsychotic)


@dataclass(frozen=True)
class _TrueRiskModel:
    """The documented true risk model (module docstring): each outcome's yearly log hazard for
    these patients, at a given age and reading."""

    people: _People
    deprivation: _Deprivation
    health: _Health

    @property
    def cholesterol_ratio(self) -> np.ndarray:
        return self.health.tchol / self.health.hdl

    def ethnic_log_hr(self, outcome: str) -> np.ndarray:
        """The published ethnic effects (synth_profiles.TRUE_ETHNIC_LOG_HR), by sex."""
        effects = prof.TRUE_ETHNIC_LOG_HR[outcome]
        ethrisk = np.array([QRISK3_ETHRISK[c] for c in prof.CATEGORIES])[self.people.cat]
        return np.where(self.people.female, np.array(effects["female"])[ethrisk - 1],
                        np.array(effects["male"])[ethrisk - 1])

    def lp_cvd(self, a, s, t2d):
        p, h, z = self.people, self.health, self.deprivation.z
        return (-9.1 + 0.072 * a + 0.45 * p.male + 0.017 * (s - 130) + 0.55 * h.smoker + 0.65 * t2d
                + 0.14 * (self.cholesterol_ratio - 4) + 0.55 * h.af + 0.3 * h.ckd + 0.3 * h.fh_cvd + 0.1 * z
                + self.ethnic_log_hr("cvd"))

    def lp_t2d(self, a, hba1c):
        # HbA1c acts with QDiabetes-2018 model C's slope near normal values (about 0.2 log hazard
        # per mmol/mol at 36-42): the groups' higher HbA1c then carries the part of their excess
        # risk that model A (no HbA1c) gives as a larger ethnic effect, so the truth agrees with
        # QDiabetes whether a patient's HbA1c is known (model C) or not (model A)
        h, z = self.health, self.deprivation.z
        return (-7.9 + 0.035 * a + 0.11 * (h.bmi - 27) + 0.2 * (hba1c - 36) + self.ethnic_log_hr("t2d")
                + 0.45 * h.fh_diab + 0.4 * h.steroids + 0.12 * z)

    def lp_htn(self, a, s):
        h, z = self.health, self.deprivation.z
        return -6.1 + 0.045 * a + 0.045 * (s - 125) + 0.45 * self.people.black + 0.04 * (h.bmi - 27) + 0.08 * z


def _risk(lp, years):
    return 1.0 - np.exp(-years * np.exp(lp))


@dataclass(frozen=True)
class _Outcomes:
    """Outcomes in (T0, E] from the true risk model: each patient's yearly hazard, whether the
    event happened (``ev_*``) and its day (``d_*``), and the readings after it."""

    model: _TrueRiskModel
    hazard_cvd: np.ndarray
    hazard_t2d: np.ndarray
    hazard_htn: np.ndarray
    ev_cvd: np.ndarray
    ev_t2d: np.ndarray
    ev_htn: np.ndarray
    d_cvd: np.ndarray
    d_t2d: np.ndarray
    d_htn: np.ndarray
    hba1c_after: np.ndarray
    sbp_after: np.ndarray


def _outcomes(ctx: _Context, people: _People, deprivation: _Deprivation, health: _Health) -> _Outcomes:
    rng, n, u, E, T0 = ctx.rng, ctx.n, ctx.u, ctx.E, ctx.T0
    model = _TrueRiskModel(people, deprivation, health)
    age0, sbp, hba1c, htn0 = people.age0, health.sbp, health.hba1c, health.htn0
    h = ctx.config.horizon_years
    adult0 = age0 >= 18
    old_enough = adult0 & (age0 >= 25)
    treated_sbp = np.where(htn0, sbp - 12, sbp)
    # Each outcome has a constant yearly hazard exp(lp) from T0; a patient's latent time to it is
    # drawn by inversion, -log(1 - U) / hazard (in years after T0), so "event within the horizon"
    # has exactly the stated risk 1 - exp(-h * hazard). Death (_registrations) can come first.
    hazard_cvd = np.where(old_enough & ~health.cvd0, np.exp(model.lp_cvd(age0, treated_sbp, health.t2d0)), 0.0)
    hazard_t2d = np.where(old_enough & ~health.t2d0 & ~health.t1d, np.exp(model.lp_t2d(age0, hba1c)), 0.0)
    hazard_htn = np.where(old_enough & ~htn0, np.exp(model.lp_htn(age0, sbp)), 0.0)

    def years_to(hazard: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return -np.log1p(-u()) / hazard  # inf where there is no hazard

    t_cvd, t_t2d, t_htn = years_to(hazard_cvd), years_to(hazard_t2d), years_to(hazard_htn)
    ev_cvd, ev_t2d, ev_htn = t_cvd < h, t_t2d < h, t_htn < h  # before death: _censored_at_death
    d_cvd = np.minimum(E, T0 + 1 + (np.where(ev_cvd, t_cvd, 0) * YEAR).astype(np.int64))
    d_t2d = np.minimum(E, T0 + 1 + (np.where(ev_t2d, t_t2d, 0) * YEAR).astype(np.int64))
    d_htn = np.minimum(E, T0 + 1 + (np.where(ev_htn, t_htn, 0) * YEAR).astype(np.int64))
    # the biology follows the outcome
    hba1c_after = np.where(ev_t2d, np.maximum(hba1c, rng.uniform(49, 75, n)), hba1c)
    sbp_after = np.where(ev_htn, np.maximum(sbp, 142 + rng.exponential(8, n)), sbp)
    return _Outcomes(model, hazard_cvd, hazard_t2d, hazard_htn, ev_cvd, ev_t2d, ev_htn, d_cvd, d_t2d, d_htn,
                     hba1c_after, sbp_after)


@dataclass(frozen=True)
class _Registrations:
    first_start: np.ndarray  # first day registered at the current practice (or its predecessor)
    death_hazard: np.ndarray  # yearly
    died: np.ndarray
    death: np.ndarray  # day, -1 if alive at E
    end: np.ndarray  # last registered day, -1 if still registered
    table: pl.DataFrame  # practice_registrations, by patient index and practice index
    last_day: np.ndarray  # last day the practice records anything

    def alive_at(self, day) -> np.ndarray:
        return (self.death < 0) | (self.death > day)


def _registrations(ctx: _Context, people: _People, practices: _Practices) -> _Registrations:
    """Registrations, deaths, leavers and movers between practices."""
    rng, n, u, E, W0 = ctx.rng, ctx.n, ctx.u, ctx.E, ctx.W0
    dob, prac, n_prac = people.dob, people.prac, practices.count
    years_registered = rng.exponential(14, n)
    first_start = np.maximum(dob, E - (years_registered * YEAR).astype(np.int64))
    # death: a constant yearly hazard from the start of the history window W0, by inversion as
    # for the outcomes, so a patient alive at T0 dies within the horizon with 1 - exp(-h * hazard)
    death_h = 0.002 * np.exp(0.09 * (np.clip(people.age, 0, 105) - 45))
    t_death = -np.log1p(-u()) / death_h  # years after W0
    died = t_death < ctx.config.history_years
    death = np.where(died, np.maximum(W0 + (np.where(died, t_death, 0) * YEAR).astype(np.int64), dob + 1), -1)
    # nobody registers after they have died
    first_start = np.where(died, np.maximum(dob, np.minimum(first_start, death - 1)), first_start)
    left = ~died & (u() < 0.03)
    leave_day = np.where(left, np.minimum(E, np.maximum(W0 + (u() * (E - W0)).astype(np.int64), first_start + 30)), -1)
    mover = (u() < 0.08) & (first_start < E - 60) & (n_prac > 1)
    move_day = np.where(mover, first_start + 1 + (u() * (E - 30 - first_start)).astype(np.int64), -1)
    overlap = mover & (u() < 0.1)
    end = np.where(died, death, np.where(left, leave_day, -1))
    end = np.where((end >= 0) & (end < first_start), first_start, end)
    move_day = np.where(mover & (end >= 0) & (move_day >= end), -1, move_day)
    mover = move_day >= 0
    overlap &= mover
    old_practice = (prac + 1 + rng.integers(0, max(1, n_prac - 1), n)) % n_prac

    reg_pid_parts = [np.flatnonzero(~mover), np.flatnonzero(mover), np.flatnonzero(mover)]
    reg = pl.DataFrame({
        "patient_id": np.concatenate(reg_pid_parts),
        "start_date": np.concatenate([first_start[~mover], first_start[mover],
                                      move_day[mover] - np.where(overlap[mover], rng.integers(1, 30, mover.sum()), 0)]),
        "end_date": np.concatenate([end[~mover], move_day[mover] - 1, end[mover]]),
        "practice": np.concatenate([prac[~mover], old_practice[mover], prac[mover]]),
    })
    last_day = np.where(end >= 0, end, E)
    return _Registrations(first_start, death_h, died, death, end, reg, last_day)


def _censored_at_death(outcomes: _Outcomes, registrations: _Registrations) -> _Outcomes:
    """Nobody has an event after they have died; events after leaving happen but go unrecorded."""
    alive_at = registrations.alive_at
    return replace(outcomes, ev_cvd=outcomes.ev_cvd & alive_at(outcomes.d_cvd),
                   ev_t2d=outcomes.ev_t2d & alive_at(outcomes.d_t2d), ev_htn=outcomes.ev_htn & alive_at(outcomes.d_htn))


@dataclass(frozen=True)
class _Record:
    """The practice record being written: event and medication rows, the code pickers (each on
    its own random stream), and each patient's recording window."""

    events: _Events
    medications: _Events
    event_codes: _CodePicker
    medication_codes: _CodePicker
    patient_id: np.ndarray
    win_start: np.ndarray  # measurements are recorded over [win_start, win_start + win_len)
    win_len: np.ndarray
    last_day: np.ndarray
    access: np.ndarray  # the measurement_access knob per patient

    @classmethod
    def start(cls, ctx: _Context, people: _People, registrations: _Registrations,
              patient_id: np.ndarray) -> _Record:
        ev, med = _Events(), _Events()
        last_day = registrations.last_day
        win_start = np.maximum.reduce([registrations.first_start, np.full(ctx.n, ctx.W0),
                                       people.dob + int(18 * YEAR)])
        win_len = np.clip(last_day - win_start, 0, None)
        return cls(ev, med, _CodePicker(ctx.config.seed, ev), _CodePicker(ctx.config.seed + 1, med), patient_id,
                   win_start, win_len, last_day, _knob(ctx.config.measurement_access, people.cat, 1.0))


@dataclass(frozen=True)
class _Coding:
    """What the record says of each outcome: diagnosed before T0 (``*_dx0``), the event coded
    (``rec_*``), treatment started, and undiagnosed conditions found during follow-up."""

    htn_dx0: np.ndarray
    htn_tx0: np.ndarray
    t2d_dx0: np.ndarray
    cvd_dx0: np.ndarray
    rec_cvd: np.ndarray
    rec_t2d: np.ndarray
    rec_htn: np.ndarray
    tx_start: np.ndarray  # antihypertensives from this day (-1: before T0; int64 max: never)
    found_htn: np.ndarray
    found_t2d: np.ndarray
    d_found_htn: np.ndarray
    d_found_t2d: np.ndarray
    # known to the practice, coded or not (``outcome_recording`` is a coding failure: the
    # diagnosis was made or the event's discharge letter came, care was given, the code not entered)
    htn_known0: np.ndarray
    t2d_known0: np.ndarray
    cvd_known: np.ndarray  # a CVD event in (T0, E] while alive and registered
    t2d_known: np.ndarray  # a type 2 diabetes diagnosis in (T0, E] while alive and registered


def _outcome_coding(ctx: _Context, people: _People, outcomes: _Outcomes, registrations: _Registrations) -> _Coding:
    u, E, T0 = ctx.u, ctx.E, ctx.T0
    o, last_day, alive_at = outcomes, registrations.last_day, registrations.alive_at
    htn0, t2d0, cvd0 = o.model.health.htn0, o.model.health.t2d0, o.model.health.cvd0
    recording = _knob(ctx.config.outcome_recording, people.cat, 1.0)
    # ``outcome_recording`` is a coding failure, not a failure of care: the diagnosis is made at
    # the national rate (or the event happens and its discharge letter reaches the practice), care
    # follows it, and the code is entered with probability ``recording``. One uniform draw decides
    # both, so the coded are a subset of the known and, with no knob set, the two are the same
    # patients (the default extract is unchanged).
    u_htn = u()
    htn_known0 = htn0 & (u_htn < 0.7)  # a national diagnosis gap
    htn_dx0 = htn0 & (u_htn < 0.7 * recording)  # ... plus any planted coding failure
    htn_tx0 = htn_known0 & (u() < 0.8)
    u_t2d = u()
    t2d_known0 = t2d0 & (u_t2d < 0.85)
    t2d_dx0 = t2d0 & (u_t2d < 0.85 * recording)
    cvd_dx0 = cvd0 & (u() < recording)
    rec_cvd = o.ev_cvd & (u() < recording)
    rec_t2d = o.ev_t2d & (u() < recording)
    u_rec_htn = u()
    known_htn = o.ev_htn & (u_rec_htn < 0.8)
    rec_htn = o.ev_htn & (u_rec_htn < 0.8 * recording)
    cvd_known = o.ev_cvd & alive_at(o.d_cvd) & (o.d_cvd <= last_day)
    rec_cvd &= cvd_known
    t2d_known = o.ev_t2d & alive_at(o.d_t2d) & (o.d_t2d <= last_day)
    rec_t2d &= t2d_known
    in_record_htn = alive_at(o.d_htn) & (o.d_htn <= last_day)
    rec_htn &= in_record_htn
    known_htn &= in_record_htn
    # treatment follows the known diagnosis, coded or not
    tx_start = np.where(htn_tx0, -1, np.where(known_htn & (u() < 0.7), o.d_htn + 14, np.iinfo(np.int64).max))
    # Undiagnosed hypertension and diabetes present at T0 are found during follow-up (NHS Health
    # Checks, case-finding) and coded then as a new diagnosis: half of them within the horizon,
    # fewer where the recording knob is planted. Without this, the people with the highest blood
    # pressure or HbA1c and no diagnosis would never get one, and every model would learn that.
    found_htn = htn0 & ~htn_dx0 & (u() < 0.5 * recording)
    found_t2d = t2d0 & ~t2d_dx0 & (u() < 0.5 * recording)
    d_found_htn = T0 + (u() * (E - T0)).astype(np.int64)
    d_found_t2d = T0 + (u() * (E - T0)).astype(np.int64)
    found_htn &= alive_at(d_found_htn) & (d_found_htn <= last_day)
    found_t2d &= alive_at(d_found_t2d) & (d_found_t2d <= last_day)
    return _Coding(htn_dx0, htn_tx0, t2d_dx0, cvd_dx0, rec_cvd, rec_t2d, rec_htn, tx_start,
                   found_htn, found_t2d, d_found_htn, d_found_t2d, htn_known0, t2d_known0, cvd_known,
                   t2d_known)


def _rate_events(ctx: _Context, record: _Record, rate_per_year: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Poisson-many events per patient spread over their window: (patient index, day)."""
    rng = ctx.rng
    counts = rng.poisson(np.clip(rate_per_year, 0, None) * record.win_len / YEAR)
    idx = np.repeat(np.arange(ctx.n), counts)
    day = record.win_start[idx] + (rng.uniform(size=len(idx)) * record.win_len[idx]).astype(np.int64)
    return idx, day


def _measured(ctx: _Context, record: _Record, rate_per_year: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scheduled measurements (``_rate_events``) that were taken (the measurement_access knob)."""
    i, d = _rate_events(ctx, record, rate_per_year)
    keep = ctx.rng.uniform(size=len(i)) < record.access[i]
    return i[keep], d[keep]


def _record_readings(ctx: _Context, record: _Record, people: _People, health: _Health, outcomes: _Outcomes,
                     coding: _Coding) -> None:
    """Blood pressure, BMI, lipids, HbA1c and fasting glucose over the history window."""
    rng, T0 = ctx.rng, ctx.T0
    ev, ev_code, patient_id = record.events, record.event_codes, record.patient_id
    age, h, o = people.age, health, outcomes
    t2d_dx0, cvd_dx0 = coding.t2d_dx0, coding.cvd_dx0

    # blood pressure: systolic and diastolic on the same day
    bp_rate = 0.5 + 0.6 * (age >= 45) + 1.0 * coding.htn_dx0 + 0.5 * t2d_dx0 + 0.4 * cvd_dx0
    i, d = _measured(ctx, record, bp_rate)
    true_s = np.where(d > o.d_htn[i], o.sbp_after[i], h.sbp[i]) + 0.5 * (d - T0) / YEAR
    true_s = true_s - np.where(d >= coding.tx_start[i], 12, 0)
    s_read = np.round(np.clip(true_s + rng.normal(0, 8, len(i)), 70, 240))
    d_read = np.round(np.clip(0.45 * s_read + 20 + h.dbp_offset[i] + rng.normal(0, 4, len(i)), 40, 140))
    # one reading is a systolic and a diastolic code of the same kind (sitting, lying, ...)
    sys_codes = ev_code.pick("systolic_bp", len(i), among=frozenset(_bp_code_pairs()))
    dia_codes = np.array([ev.code_id(_diastolic_of(ev.codes[c])) for c in sys_codes], dtype=np.int32)
    ev.add(patient_id[i], d, sys_codes, s_read)
    ev.add(patient_id[i], d, dia_codes, d_read)

    # BMI
    i, d = _measured(ctx, record, 0.35 + 0.3 * t2d_dx0)
    ev.add(patient_id[i], d, ev_code.pick("bmi", len(i)),
           np.round(h.bmi[i] + 0.05 * (d - T0) / YEAR + rng.normal(0, 0.8, len(i)), 1))

    # lipids: total cholesterol and HDL together, the laboratory ratio half of the time
    i, d = _measured(ctx, record, 0.12 + 0.25 * (age >= 40) + 0.5 * (t2d_dx0 | cvd_dx0))
    tc = np.round(np.clip(h.tchol[i] + rng.normal(0, 0.35, len(i)), 1.5, 15), 1)
    hd = np.round(np.clip(h.hdl[i] + rng.normal(0, 0.1, len(i)), 0.3, 4), 2)
    ev.add(patient_id[i], d, ev_code.pick("total_cholesterol", len(i)), tc)
    ev.add(patient_id[i], d, ev_code.pick("hdl_cholesterol", len(i)), hd)
    with_ratio = rng.uniform(size=len(i)) < 0.5
    ev.add(patient_id[i[with_ratio]], d[with_ratio], ev_code.pick("cholesterol_hdl_ratio", int(with_ratio.sum())),
           np.round(tc[with_ratio] / hd[with_ratio], 1))

    # HbA1c and fasting glucose
    i, d = _measured(ctx, record, 0.08 + 0.12 * (age >= 40) + 1.8 * (t2d_dx0 | h.t1d) + 0.3 * (h.bmi > 30))
    true_h = np.where(d > o.d_t2d[i], o.hba1c_after[i], h.hba1c[i])
    ev.add(patient_id[i], d, ev_code.pick("hba1c", len(i)), np.round(np.clip(true_h + rng.normal(0, 2, len(i)), 20, 140)))
    i, d = _measured(ctx, record, 0.03 + 0.05 * (h.bmi > 30))
    true_h = np.where(d > o.d_t2d[i], o.hba1c_after[i], h.hba1c[i])
    ev.add(patient_id[i], d, ev_code.pick("fasting_glucose", len(i)),
           np.round(np.clip(5.0 + 0.09 * (true_h - 36) + rng.normal(0, 0.4, len(i)), 2.5, 30), 1))


def _record_smoking_and_other_codes(ctx: _Context, record: _Record, people: _People, health: _Health) -> None:
    rng, n = ctx.rng, ctx.n
    ev, patient_id = record.events, record.patient_id
    smoker, ex_smoker, smoke_amount = health.smoker, health.ex_smoker, health.smoke_amount
    # smoking status: the latest code tells the truth; ex-smokers were once recorded smoking
    i, d = _rate_events(ctx, record, np.full(n, 0.45))
    status = np.where(smoker[i], smoke_amount[i], np.where(ex_smoker[i], "ex", "never"))
    earlier = ex_smoker[i] & (d < record.win_start[i] + record.win_len[i] // 3)
    status = np.where(earlier, smoke_amount[i], status)
    codes = np.zeros(len(i), dtype=np.int32)
    for s in ("never", "ex", "light", "moderate", "heavy"):
        codes[status == s] = record.event_codes.pick("smoking", int((status == s).sum()), category=s)
    ev.add(patient_id[i], d, codes)

    # other codes no project list uses
    i, d = _rate_events(ctx, record, np.full(n, 3.2))
    other = np.array([ev.code_id(c) for c in prof.OTHER_CODES])
    ev.add(patient_id[i], d, other[rng.integers(0, len(other), len(i))])


def _diagnosis_days(ctx: _Context, dob: np.ndarray, min_age: float) -> np.ndarray:
    """A day before T0 for every patient, on which a condition present at T0 is coded (history
    may predate registration)."""
    # A condition present at T0 is coded before T0 whatever the patient's age: someone younger
    # than the usual age of onset is coded the day before T0 rather than after it, where the
    # pipeline would see a prevalent condition as new or never see it at all.
    T0 = ctx.T0
    lo = np.minimum(np.maximum(dob + int(min_age * YEAR), T0 - int(20 * YEAR)), T0 - 1)
    return lo + (ctx.rng.uniform(size=ctx.n) * np.clip(T0 - 1 - lo, 0, None)).astype(np.int64)


@dataclass(frozen=True)
class _Diagnosed:
    """The days on which hypertension, type 2 diabetes and CVD present at T0 were (or, for CVD
    known to the practice but not coded, would have been) coded."""

    htn_day: np.ndarray
    t2d_day: np.ndarray
    cvd_day: np.ndarray


def _record_diagnoses(ctx: _Context, record: _Record, people: _People, health: _Health, outcomes: _Outcomes,
                      coding: _Coding) -> _Diagnosed:
    """Diagnoses present at T0, coded before T0, and the outcomes coded in (T0, E]."""
    rng, n, u, T0 = ctx.rng, ctx.n, ctx.u, ctx.T0
    ev, ev_code, patient_id, last_day = record.events, record.event_codes, record.patient_id, record.last_day
    age, dob, h, c, o = people.age, people.dob, health, coding, outcomes

    def add_dx(mask: np.ndarray, concept: str, min_age: float = 18, days: np.ndarray | None = None) -> np.ndarray:
        days = _diagnosis_days(ctx, dob, min_age) if days is None else days
        idx = np.flatnonzero(mask & (days <= last_day) & (days >= dob))
        ev.add(patient_id[idx], days[idx], ev_code.pick(concept, len(idx)))
        return days

    # hypertension and type 2 diabetes are diagnosed from adulthood (young-onset type 2 diabetes
    # is recognised; NICE NG28, NG136 cover adults from 18)
    htn_day = add_dx(c.htn_dx0, "hypertension", 18)
    resolved = c.htn_dx0 & (u() < 0.03)
    add_dx(resolved, "hypertension_resolved", days=np.minimum(htn_day + int(2 * YEAR), T0 - 1))
    t2d_day = add_dx(c.t2d_dx0, "diabetes_type2", 18)
    add_dx(h.t1d, "diabetes_type1", 1)
    cvd_kind = rng.choice(np.array(["chd", "mi", "stroke", "tia"]), size=n, p=[0.45, 0.25, 0.18, 0.12])
    cvd_day = np.full(n, T0 - 1)
    for kind in ("chd", "mi", "stroke", "tia"):
        days = add_dx(c.cvd_dx0 & (cvd_kind == kind), kind, 30)
        cvd_day = np.where(cvd_kind == kind, days, cvd_day)
    for mask, concept, min_age in ((h.af, "atrial_fibrillation", 30), (h.ckd, "ckd_3_5", 30),
                                   (h.ra, "rheumatoid_arthritis", 18), (h.sle, "sle", 18),
                                   (h.migraine, "migraine", 12), (h.smi, "severe_mental_illness", 16),
                                   (h.ed, "erectile_dysfunction", 30), (h.fh_cvd & (age >= 18), "family_history_cvd", 18),
                                   (h.fh_diab & (age >= 18), "family_history_diabetes", 18),
                                   (h.gdm, "gestational_diabetes", 18), (h.pcos, "pcos", 16),
                                   (h.ld, "learning_disability", 5)):
        add_dx(mask, concept, min_age)
    # outcomes coded in (T0, E]
    for kind in ("chd", "mi", "stroke", "tia"):
        idx = np.flatnonzero(c.rec_cvd & (cvd_kind == kind))
        ev.add(patient_id[idx], o.d_cvd[idx], ev_code.pick(kind, len(idx)))
    idx = np.flatnonzero(c.rec_t2d)
    ev.add(patient_id[idx], o.d_t2d[idx], ev_code.pick("diabetes_type2", len(idx)))
    idx = np.flatnonzero(c.rec_htn)
    ev.add(patient_id[idx], o.d_htn[idx], ev_code.pick("hypertension", len(idx)))
    idx = np.flatnonzero(c.found_htn)
    ev.add(patient_id[idx], c.d_found_htn[idx], ev_code.pick("hypertension", len(idx)))
    idx = np.flatnonzero(c.found_t2d)
    ev.add(patient_id[idx], c.d_found_t2d[idx], ev_code.pick("diabetes_type2", len(idx)))
    return _Diagnosed(htn_day, t2d_day, cvd_day)


def _record_end_of_life_and_residence(ctx: _Context, record: _Record, people: _People) -> None:
    """Palliative care and care homes, recent."""
    rng, u, E = ctx.rng, ctx.u, ctx.E
    ev, ev_code, patient_id, last_day = record.events, record.event_codes, record.patient_id, record.last_day
    age = people.age
    palliative = (age >= 60) & (u() < np.clip(0.0004 * np.exp(0.08 * (age - 60)), 0, 0.2)) & (last_day > E - 700)
    idx = np.flatnonzero(palliative)
    ev.add(patient_id[idx], last_day[idx] - rng.integers(0, 700, len(idx)), ev_code.pick("palliative_care", len(idx)))
    care_home = (age >= 70) & (u() < np.clip(0.002 * np.exp(0.1 * (age - 70)), 0, 0.3))
    idx = np.flatnonzero(care_home & (last_day > E - 1500))
    ev.add(patient_id[idx], last_day[idx] - rng.integers(0, 1500, len(idx)), ev_code.pick("care_home", len(idx)))


def _record_practice_decisions(ctx: _Context, record: _Record, people: _People, health: _Health,
                               outcomes: _Outcomes, coding: _Coding) -> None:
    """What practices record that changes who is invited: statin declined or unsuitable, ABPM or
    home monitoring, NHS Health Checks, coded non-diabetic hyperglycaemia. Drawn on the code
    picker's own stream, so no other draw of the generator moves."""
    n, E = ctx.n, ctx.E
    ev, ev_code, patient_id, last_day = record.events, record.event_codes, record.patient_id, record.last_day
    win_start, age, c = record.win_start, people.age, coding
    cr = ev_code.rng

    def record_between(mask: np.ndarray, concept: str, start: np.ndarray, end: np.ndarray,
                       category: str | None = None, value: np.ndarray | None = None) -> np.ndarray:
        """A code of ``concept`` on a day in [start, end) for each patient in ``mask``; returns the days."""
        end = np.minimum(end, last_day + 1)
        idx = np.flatnonzero(mask & (end > start))
        days = start[idx] + (cr.uniform(size=len(idx)) * (end[idx] - start[idx])).astype(np.int64)
        ev.add(patient_id[idx], days, ev_code.pick(concept, len(idx), category=category),
               None if value is None else value[idx])
        return days

    adult = age >= 18
    recent_5y = np.maximum(win_start, E - int(5 * YEAR))
    record_between(adult & (age >= 40) & (cr.uniform(size=n) < 0.04), "statin_exclusion", win_start, np.full(n, E))
    record_between((age >= 40) & (age < 75) & (cr.uniform(size=n) < 0.3), "nhs_health_check", recent_5y, np.full(n, E))
    true_hba1c_now = outcomes.hba1c_after
    record_between(adult & (true_hba1c_now >= 42) & (true_hba1c_now < 48) & (cr.uniform(size=n) < 0.4),
                   "non_diabetic_hyperglycaemia", win_start, np.full(n, E))
    # ABPM or home monitoring: when hypertension was found after the index date (the NG136 step
    # before the diagnosis), and, coded as readings only, for a tenth of the hypertensives the
    # record never diagnoses (monitoring done, the diagnosis not coded)
    found_day = np.where(c.found_htn, c.d_found_htn, np.where(c.rec_htn, outcomes.d_htn, -1))
    monitored = (found_day >= 0) & (cr.uniform(size=n) < 0.6)
    ambulatory = cr.uniform(size=n) < 0.5
    record_between(monitored & ambulatory, "abpm", found_day - 28, found_day, category="procedure")
    record_between(monitored & ~ambulatory, "home_bp", found_day - 28, found_day, category="procedure")
    uncoded = health.htn0 & ~c.htn_dx0 & ~c.found_htn & adult & (cr.uniform(size=n) < 0.1)
    mean_sbp = np.round(outcomes.sbp_after - 8 + cr.normal(0, 4, n))
    year_ago = np.full(n, E - 365)
    days = record_between(uncoded, "abpm", year_ago, np.full(n, E), category="systolic", value=mean_sbp)
    idx = np.flatnonzero(uncoded & (np.minimum(np.full(n, E), last_day + 1) > year_ago))
    ev.add(patient_id[idx], days, ev_code.pick("abpm", len(idx), category="diastolic"),
           np.round(0.45 * mean_sbp[idx] + 22 + health.dbp_offset[idx]))


def _record_ethnicity(ctx: _Context, record: _Record, people: _People, registrations: _Registrations) -> None:
    """Ethnicity codes: absent for some, 'not stated' for some, 'any other' over-used, conflicts."""
    rng, n, u, config = ctx.rng, ctx.n, ctx.u, ctx.config
    ev, ev_code, patient_id, last_day = record.events, record.event_codes, record.patient_id, record.last_day
    cat, first_start = people.cat, registrations.first_start
    misrec = _knob(config.ethnicity_misrecording, cat, 0.0)
    unrecorded: float | np.ndarray = config.ethnicity_unrecorded
    if config.ethnicity_unrecorded_practice or config.ethnicity_misrecording_practice:
        unrecorded = _per_practice(config.ethnicity_unrecorded_practice, people.prac, config.ethnicity_unrecorded)
        # misrecorded by the group's knob or by the practice's: 1 - (1 - p_group)(1 - p_practice)
        misrec = 1 - (1 - misrec) * (1 - _per_practice(config.ethnicity_misrecording_practice, people.prac, 0.0))
    recorded = u() >= unrecorded
    not_stated = recorded & (u() < 0.03)
    rec_cat = cat.copy()
    any_other = np.array([prof.CATEGORIES.index(prof.ANY_OTHER_OF[c]) for c in prof.CATEGORIES])
    rec_cat = np.where(u() < 0.06, any_other[cat], rec_cat)
    rec_cat = np.where(u() < misrec, rng.integers(0, len(prof.CATEGORIES), n), rec_cat)

    def eth_codes_for(cat_index: np.ndarray) -> np.ndarray:
        """One ethnicity code per record of the given category indices (2001 and 2011 census codes)."""
        chosen = np.zeros(len(cat_index), dtype=np.int32)
        for j, letter_j in enumerate(prof.CATEGORIES):
            members = np.flatnonzero(cat_index == j)
            chosen[members] = ev_code.pick("ethnicity", len(members), category=letter_j)
        return chosen

    eth_choice = eth_codes_for(rec_cat)
    eth_day = first_start + (u() * np.clip(last_day - first_start, 0, None)).astype(np.int64)
    idx = np.flatnonzero(recorded & ~not_stated)
    ev.add(patient_id[idx], eth_day[idx], eth_choice[idx])
    idx = np.flatnonzero(not_stated)
    ev.add(patient_id[idx], eth_day[idx], ev_code.pick("ethnicity", len(idx), category=NOT_STATED))
    # a third of the people with no ethnicity have a code that carries none ('not recorded'):
    # they stay 'not known' (99), apart from the people who declined (Z)
    only_not_recorded = ~recorded & (ev_code.rng.uniform(size=n) < 1 / 3)
    idx = np.flatnonzero(only_not_recorded)
    ev.add(patient_id[idx], eth_day[idx], ev_code.pick("ethnicity", len(idx), category=NOT_KNOWN))
    conflict = recorded & ~not_stated & (u() < 0.05)
    idx = np.flatnonzero(conflict)
    other_cat = np.where(u()[idx] < 0.5, any_other[cat[idx]], rng.integers(0, len(prof.CATEGORIES), len(idx)))
    ev.add(patient_id[idx], first_start[idx] + (u()[idx] * np.clip(last_day[idx] - first_start[idx], 0, None)).astype(np.int64),
           eth_codes_for(other_cat))
    if config.ethnicity_repeat_codes > 0:
        _repeat_ethnicity_codes(ctx, record, rec_cat, recorded & ~not_stated, first_start)


def _per_practice(values: dict[str, float], prac: np.ndarray, default: float) -> np.ndarray:
    """Per-patient value of a per-practice knob (keys: ODS codes) given each patient's practice."""
    count = int(prac.max()) + 1 if len(prac) else 0
    per_practice = np.full(count, default)
    for code, value in values.items():
        index = int(code[1:]) - 10_001
        if index >= count:
            raise ConfigError(f"practice {code} does not exist: this extract has {count} practices "
                              f"(Z10001 to {practice_ods_code(count - 1)})")
        per_practice[index] = value
    return per_practice[prac]


# the repeats' own random streams (the extract's seed with these), so the knob moves no other draw
_REPEAT_STREAM, _REPEAT_CODE_STREAM = 20, 21


def _repeat_ethnicity_codes(ctx: _Context, record: _Record, rec_cat: np.ndarray, coded: np.ndarray,
                            first_start: np.ndarray) -> None:
    """``ethnicity_repeat_codes``: further codes of each coded patient's usual recorded category."""
    rng = np.random.default_rng([ctx.config.seed, _REPEAT_STREAM])
    picker = _CodePicker(ctx.config.seed, record.events, stream=_REPEAT_CODE_STREAM)
    repeats = np.where(coded, rng.poisson(ctx.config.ethnicity_repeat_codes, ctx.n), 0)
    idx = np.repeat(np.arange(ctx.n), repeats)
    span = np.clip(record.last_day[idx] - first_start[idx], 0, None)
    day = first_start[idx] + (rng.uniform(size=len(idx)) * span).astype(np.int64)
    codes = np.zeros(len(idx), dtype=np.int32)
    for j, letter in enumerate(prof.CATEGORIES):
        members = np.flatnonzero(rec_cat[idx] == j)
        codes[members] = picker.pick("ethnicity", len(members), category=letter)
    record.events.add(record.patient_id[idx], day, codes)


def _record_medications(ctx: _Context, record: _Record, people: _People, health: _Health, outcomes: _Outcomes,
                        coding: _Coding, diagnosed: _Diagnosed) -> None:
    """Repeat issues every ~8 weeks over the history window."""
    rng, n, u, W0 = ctx.rng, ctx.n, ctx.u, ctx.W0
    med, med_code, patient_id, last_day = record.medications, record.medication_codes, record.patient_id, record.last_day
    c, h = coding, health

    def repeats(mask: np.ndarray, start: np.ndarray, concept: str, interval: int = 56,
                jitter: np.random.Generator = rng) -> None:
        first = np.maximum(start, record.win_start)
        span = np.where(mask, np.clip(last_day - first, 0, None), 0)
        counts = span // interval
        idx = np.repeat(np.arange(n), counts)
        k = np.arange(len(idx)) - np.repeat(np.cumsum(counts) - counts, counts)
        day = first[idx] + k * interval + jitter.integers(0, 7, len(idx))
        per_patient = med_code.pick(concept, n)  # one product per patient, repeated
        med.add(patient_id[idx], np.minimum(day, last_day[idx]), per_patient[idx])

    def dx_day(min_age: float) -> np.ndarray:
        return _diagnosis_days(ctx, people.dob, min_age)

    repeats(c.htn_tx0 | (c.tx_start < np.iinfo(np.int64).max), np.where(c.htn_tx0, diagnosed.htn_day + 14, c.tx_start),
            "antihypertensives")
    # treatment follows what the practice knows, coded or not (the planted coding failure leaves
    # the care in place: a real record's "treated without a diagnosis" search finds it)
    on_statin = (health.cvd0 & (u() < 0.7)) | (c.t2d_known0 & (u() < 0.5)) | ((people.age >= 60) & (u() < 0.12))
    repeats(on_statin, np.maximum(dx_day(40), W0 - 1), "statins")
    after_event_statin = c.cvd_known & (u() < 0.8)
    repeats(after_event_statin, outcomes.d_cvd + 7, "statins")
    repeats(h.steroids, dx_day(18), "corticosteroids", 30)
    repeats(h.antipsychotic, dx_day(18), "atypical_antipsychotics", 28)
    # Non-insulin glucose-lowering drugs (BNF 6.1.2, metformin first): for 70% of type 2 diabetes
    # known at the index date (about the share of people with type 2 diabetes on them, National
    # Diabetes Audit), from 3 months after the diagnosis; for half of those diagnosed later (NICE
    # NG28: lifestyle first), coded or not, as care follows what the practice knows; metformin
    # for a third of women with PCOS (off-label, common in UK practice). Drawn from their own
    # stream, last, so every other table and draw is as before they were added.
    own = np.random.default_rng([ctx.config.seed, _GLUCOSE_STREAM])
    later = np.where(c.t2d_known, outcomes.d_t2d, np.where(c.found_t2d, c.d_found_t2d, ctx.E))
    prevalent = c.t2d_known0 & (own.uniform(size=n) < 0.7)
    new = (c.t2d_known | c.found_t2d) & ~c.t2d_known0 & (own.uniform(size=n) < 0.5)
    pcos = h.pcos & (own.uniform(size=n) < 1 / 3)
    pcos_day = W0 + (own.uniform(size=n) * (ctx.E - W0)).astype(np.int64)
    start = np.where(prevalent, diagnosed.t2d_day + 90, np.where(new, later + 90, pcos_day))
    repeats(prevalent | new | pcos, start, "glucose_lowering", jitter=own)
    _issue_antiplatelets(ctx, people, health, outcomes, coding, diagnosed, repeats)


def _issue_antiplatelets(ctx: _Context, people: _People, health: _Health, outcomes: _Outcomes, coding: _Coding,
                         diagnosed: _Diagnosed, repeats) -> None:
    """Antiplatelets (BNF 2.9: low-dose aspirin, clopidogrel, ticagrelor, prasugrel, dipyridamole).

    Secondary prevention after CHD, MI, stroke or TIA (NICE NG185, which replaced CG172, and NG128:
    an antiplatelet for life after an acute coronary syndrome, an ischaemic stroke or a TIA; QOF's
    former antiplatelet-or-anticoagulant indicators for CHD and stroke reached about 90% of the
    registers, some of them anticoagulated): 80% of CVD known at the index date, from a week after its diagnosis, and
    80% of those with an event during follow-up, from a week after it; 20% where atrial
    fibrillation is coded (anticoagulated instead, NICE NG196). Coded or not: care follows what the
    practice knows, so a planted coding failure leaves the antiplatelet in place (as for
    antihypertensives, statins and glucose-lowering drugs). A baseline drawn without regard to
    CVD, alike in every group: 3% of those aged 50 and over (aspirin for primary prevention, no
    longer advised but still issued to about 2%, and peripheral arterial disease, about 1%, which
    is not a CVD code here), from a day in the history window. Drawn from their own stream, after everything else, so every other table and
    draw is as before they were added.
    """
    own = np.random.default_rng([ctx.config.seed, _ANTIPLATELET_STREAM])
    n, W0, E = ctx.n, ctx.W0, ctx.E
    rate = np.where(health.af, 0.2, 0.8)
    prevalent = health.cvd0 & (own.uniform(size=n) < rate)
    new = coding.cvd_known & ~prevalent & (own.uniform(size=n) < rate)
    baseline = (people.age >= 50) & (own.uniform(size=n) < 0.03)
    baseline_day = W0 + (own.uniform(size=n) * (E - W0)).astype(np.int64)
    start = np.where(prevalent, diagnosed.cvd_day + 7, np.where(new, outcomes.d_cvd + 7, baseline_day))
    repeats(prevalent | new | baseline, start, "antiplatelets", jitter=own)


def check_replaceable(out_dir: Path) -> None:
    """The output folder is replaced whole, so it must be new, empty, or an extract this
    generator wrote (its ``truth/`` folder): never, say, an ICB's output folder or a real
    extract given by mistake."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir}: not a folder")
    if any(out_dir.iterdir()) and not (out_dir / "truth").is_dir():  # (made first: an interrupted one has it)
        raise ConfigError(f"--out {out_dir}: the folder exists and is not a synthetic extract (no truth/), and "
                          "phm synth replaces its output folder whole: give a new or empty folder")


def _fresh_folder(out_dir: Path) -> None:
    if out_dir.exists():
        shutil.rmtree(out_dir)
    (out_dir / "truth").mkdir(parents=True)


def _write_extract(ctx: _Context, out_dir: Path, practices: _Practices, people: _People, deprivation: _Deprivation,
                   registrations: _Registrations, record: _Record) -> dict:
    """The contract tables and extract.json; returns each table's rows."""
    config, n = ctx.config, ctx.n
    patient_id, practice_ids = record.patient_id, practices.ids
    died, death = registrations.died, registrations.death
    pcn_codes = [f"U{10000 + 37 * p:05d}" for p in range(practices.n_pcn)]
    tables = {
        "practices": pl.DataFrame({
            "practice_pseudo_id": practice_ids.astype(np.int64),
            "pcn_code": [pcn_codes[p] for p in practices.pcn],
            "pcn_name": [f"Synthetic PCN {p + 1}" for p in practices.pcn],
            "icb_code": [config.icb_code] * practices.count,
            "ods_code": [practice_ods_code(i) for i in range(practices.count)],
            "practice_name": [practice_name(i) for i in range(practices.count)],
        }),
        "patients": pl.DataFrame({
            "patient_id": patient_id,
            "sex": people.sex,
            "date_of_birth": pl.Series(people.dob.astype(np.int32)).cast(pl.Date),
            "date_of_death": pl.Series(np.where(died, death, 0).astype(np.int32)).cast(pl.Date),
        }).with_columns(pl.when(pl.Series(died)).then(pl.col("date_of_death")).alias("date_of_death")),
        "practice_registrations": registrations.table.select(
            pl.col("patient_id").map_batches(lambda s: pl.Series(patient_id[s.to_numpy()])),
            pl.col("start_date").cast(pl.Int32).cast(pl.Date),
            pl.when(pl.col("end_date") >= 0).then(pl.col("end_date")).cast(pl.Int32).cast(pl.Date).alias("end_date"),
            pl.col("practice").map_batches(lambda s: pl.Series(practice_ids[s.to_numpy()].astype(np.int64))).alias("practice_pseudo_id"),
        ),
        "addresses": _addresses(ctx.rng, n, patient_id, registrations.first_start, registrations.end,
                                deprivation.imd_rank, deprivation.townsend, ctx.E),
        "clinical_events": record.events.frame("snomedct_code", with_value=True),
        "medications": record.medications.frame("dmd_code", with_value=False),
    }
    if config.hospital_ethnicity > 0:
        tables["hospital_ethnicity"] = _hospital_ethnicity(ctx, people, registrations, patient_id)
    for name, frame in tables.items():
        frame = frame.select(TABLES[name].column_names)
        if config.format == "csv":
            frame.write_csv(out_dir / f"{name}.csv", date_format="%Y-%m-%d")
        else:
            frame.write_parquet(out_dir / f"{name}.parquet")
    ExtractMetadata(config.extract_date, "IMD2019",
                    f"phm synth (seed {config.seed}, {n} patients, profile {config.profile})").write(out_dir)
    return {name: frame.height for name, frame in tables.items()}


# How hospital records get a patient's ethnic category wrong (shares of records; the rest carry the
# true letter). Hospital recording is less consistent than GP recording (Mathur et al., J Public
# Health 2014;36:684: over 90% consistent within GP data, less within HES inpatients).
HOSPITAL_RECORDING = {"any_other": 0.05, "other_category": 0.04, "Z": 0.04, "99": 0.04, "X": 0.02}
_HOSPITAL_STREAM = 22
_GLUCOSE_STREAM = 23
_ANTIPLATELET_STREAM = 24


def _hospital_ethnicity(ctx: _Context, people: _People, registrations: _Registrations,
                        patient_id: np.ndarray) -> pl.DataFrame:
    """``hospital_ethnicity``: records for a share ``hospital_ethnicity`` of patients (own stream)."""
    rng = np.random.default_rng([ctx.config.seed, _HOSPITAL_STREAM])
    has = rng.uniform(size=ctx.n) < ctx.config.hospital_ethnicity
    records = np.where(has, 1 + rng.poisson(1.0, ctx.n), 0)
    idx = np.repeat(np.arange(ctx.n), records)
    start, last = registrations.first_start[idx], registrations.last_day[idx]
    day = start + (rng.uniform(size=len(idx)) * np.clip(last - start, 0, None)).astype(np.int64)
    any_other = np.array([prof.ANY_OTHER_OF[c] for c in prof.CATEGORIES])
    category = np.array(prof.CATEGORIES, dtype=object)[people.cat[idx]]
    draw = rng.uniform(size=len(idx))
    wrong = rng.choice(np.array(prof.CATEGORIES, dtype=object), len(idx))
    edges = np.cumsum(list(HOSPITAL_RECORDING.values()))
    kinds = np.searchsorted(edges, draw, side="right")  # index into HOSPITAL_RECORDING, len = true letter
    for k, kind in enumerate(HOSPITAL_RECORDING):
        chosen = kinds == k
        if kind == "any_other":
            category[chosen] = any_other[people.cat[idx][chosen]]
        elif kind == "other_category":
            category[chosen] = wrong[chosen]
        else:
            category[chosen] = kind
    return pl.DataFrame({"patient_id": patient_id[idx], "date": pl.Series(day.astype(np.int32)).cast(pl.Date),
                         "ethnic_category": pl.Series(category, dtype=pl.String)})


_PLACES = ("Riverside", "Oak Lane", "Hill View", "Market Street", "Church Road", "Park Side", "Mill Lane",
           "Station Road", "Orchard", "Meadow Bank", "Castle View", "Brookfield", "Elm Grove", "Canal Side")
_KINDS = ("Surgery", "Medical Centre", "Health Centre", "Medical Practice", "Family Practice")


def practice_ods_code(index: int) -> str:
    """A fictional ODS practice code: Z and five digits (the pattern of real ones, A12345; no GP
    practice in England has a Z code)."""
    return f"Z{10001 + index:05d}"


def practice_name(index: int) -> str:
    """A fictional practice name, e.g. "Synthetic Riverside Surgery" (no random draw: the
    extract's other values do not move)."""
    place = _PLACES[index % len(_PLACES)]
    kind = _KINDS[(index // len(_PLACES) + index) % len(_KINDS)]
    suffix = f" {index // (len(_PLACES) * len(_KINDS)) + 1}" if index >= len(_PLACES) * len(_KINDS) else ""
    return f"Synthetic {place} {kind}{suffix}"


# NHS numbers NHS England keeps for testing: 999 000 0000 to 999 999 9999 (never issued to a patient)
TEST_NHS_NUMBER_PREFIX = 999


def synthetic_nhs_numbers(count: int, seed: int) -> np.ndarray:
    """``count`` distinct 10-digit NHS numbers (as int64) from the testing range, each with a valid
    modulus-11 check digit, drawn from their own random stream (``[seed, 999]``) so the extract's
    other values do not move. About 909,000 exist; a ConfigError for more."""
    bases = TEST_NHS_NUMBER_PREFIX * 1_000_000 + np.arange(1_000_000, dtype=np.int64)  # the first nine digits
    total = np.zeros(bases.size, dtype=np.int64)
    rest = bases.copy()
    for weight in range(2, 11):  # the ninth digit has weight 2, the first weight 10
        total += (rest % 10) * weight
        rest //= 10
    check = (11 - total % 11) % 11  # 11 becomes 0; 10 means no valid number with these digits
    valid = check != 10
    numbers = bases[valid] * 10 + check[valid]
    if count > numbers.size:
        raise ConfigError(f"only {numbers.size:,} test NHS numbers exist; cannot give {count:,} patients one each")
    return np.random.default_rng([seed, 999]).choice(numbers, size=count, replace=False)


def _write_practice_side(ctx: _Context, out_dir: Path, practices: _Practices, registrations: _Registrations,
                         patient_id: np.ndarray) -> None:
    """practice_side/<practice_pseudo_id>/patients.csv: each practice's own lookup from extract
    patient_id to NHS number, for the patients registered with it at the extract date (what a
    practice's clinical system exports; the ICB never holds it). More patients than there are
    test NHS numbers: a README.txt says why there are no lookups."""
    folder = out_dir / PRACTICE_SIDE
    folder.mkdir()
    readme = ("What each practice holds in its own clinical system, never sent to the ICB: for each\n"
              "practice (folder = practice_pseudo_id), patients.csv maps the extract's patient_id to\n"
              "the patient's NHS number (synthetic: NHS England's 999 testing range). phm reidentify\n"
              "reads it with the practice's key (docs/lists.md). phm ingest does not read this folder.\n")
    try:
        nhs = synthetic_nhs_numbers(ctx.n, ctx.config.seed)
    except ConfigError as exc:
        (folder / "README.txt").write_text(readme + f"\nNo lookups were written: {exc}.\n")
        return
    E = ctx.E  # nhs[i]: patient i's NHS number (a random draw, unrelated to the extract's id)
    current = registrations.table.filter((pl.col("start_date") <= E) & ((pl.col("end_date") < 0) | (pl.col("end_date") >= E)))
    index, practice = current["patient_id"].to_numpy(), current["practice"].to_numpy()
    lookup = pl.DataFrame({"practice": practice, "patient_id": patient_id[index],
                           "nhs_number": pl.Series(nhs[index]).cast(pl.String)})
    for p in range(practices.count):
        own = folder / str(int(practices.ids[p]))
        own.mkdir()
        lookup.filter(pl.col("practice") == p).drop("practice").sort("patient_id").write_csv(own / "patients.csv")
    (folder / "README.txt").write_text(readme)


def _stated_risks(outcomes: _Outcomes, registrations: _Registrations, h: int, T0: int) -> dict[str, tuple]:
    """Per outcome, (net risk, cumulative incidence) over the horizon, for patients alive and free
    of the outcome at T0 (0 for everyone else):
    - net risk 1 - exp(-h * hazard): the risk had they not died first, the quantity QRISK3,
      QDiabetes and the trained models estimate (they censor at death);
    - cumulative incidence with death as a competing risk, hazard / (hazard + death hazard)
      * (1 - exp(-h * (hazard + death hazard))): the chance that the event happens in the
      horizon before death, so its sum over a group is the expected count of that group's events."""
    alive0 = registrations.alive_at(T0)

    def stated(hazard: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        both = hazard + registrations.death_hazard
        net = np.where(alive0, _risk(np.log(np.maximum(hazard, 1e-300)), h), 0.0)
        cumulative = np.where(alive0, hazard / both * (1 - np.exp(-h * both)), 0.0)
        return np.where(hazard > 0, net, 0.0), np.where(hazard > 0, cumulative, 0.0)

    return {"cvd": stated(outcomes.hazard_cvd), "t2d": stated(outcomes.hazard_t2d), "htn": stated(outcomes.hazard_htn)}


def _expected_t2d_need(ctx: _Context, people: _People, health: _Health, model: _TrueRiskModel,
                       registrations: _Registrations) -> np.ndarray:
    """Per patient alive at T0, the chance of having type 2 diabetes by the horizon's end given no
    diabetes code at T0, before the draws that decide it: q + (1 - q) * r, where q is the chance of
    diabetes present at T0 among the patients with no code (p (1 - d) / (1 - p d): p the chance of
    the draw at T0, d = 0.85 x the recording knob its chance of being coded, _outcome_coding) and r
    the horizon's onset risk with the HbA1c the patient would have had without diabetes. The
    truth's tracking reads this, a probability like every other risk in the key, so that the ~1
    in 80 patients whose draw gave them undiagnosed diabetes do not move a small group's key by
    tens of per cent (models/fairness/truth.py)."""
    p = health.t2d0_probability
    coded = 0.85 * _knob(ctx.config.outcome_recording, people.cat, 1.0)
    q = p * (1 - coded) / (1 - p * coded)
    onset = np.where((people.age0 >= 25) & ~health.t1d,
                     _risk(model.lp_t2d(people.age0, health.hba1c_without_diabetes), ctx.config.horizon_years), 0.0)
    return np.where(registrations.alive_at(ctx.T0), q + (1 - q) * onset, 0.0)


def _write_truth(ctx: _Context, out_dir: Path, people: _People, deprivation: _Deprivation, health: _Health,
                 outcomes: _Outcomes, registrations: _Registrations, coding: _Coding, diagnosed: _Diagnosed,
                 patient_id: np.ndarray) -> None:
    """truth/patients.parquet (the answer key) and truth/planted.json (every setting)."""
    config, T0 = ctx.config, ctx.T0
    h, o, c, model = health, outcomes, coding, outcomes.model
    age, last_day = people.age, registrations.last_day
    stated = _stated_risks(outcomes, registrations, config.horizon_years, T0)
    (r_cvd, ci_cvd), (r_t2d, ci_t2d), (r_htn, ci_htn) = stated["cvd"], stated["t2d"], stated["htn"]

    def opt_day(mask: np.ndarray, day: np.ndarray) -> pl.Series:
        """Dates where ``mask`` holds, null elsewhere."""
        days = pl.Series(day.astype(np.int32)).cast(pl.Date)
        return pl.select(pl.when(pl.Series(mask)).then(days)).to_series()

    truth = pl.DataFrame({
        "patient_id": patient_id,
        "ethnicity_true": people.letter,
        "imd_decile": deprivation.imd_decile.astype(np.int8),
        "deprivation_latent": deprivation.z,
        "sbp_true_past_index": h.sbp, "bmi_true": h.bmi, "cholesterol_ratio_true": model.cholesterol_ratio,
        "hba1c_true_past_index": h.hba1c, "smoker": h.smoker,
        "hypertension_true_past_index": h.htn0, "hypertension_diagnosed_past_index": c.htn_dx0,
        "t2d_true_past_index": h.t2d0, "t2d_diagnosed_past_index": c.t2d_dx0,
        "t2d_expected_need_horizon": _expected_t2d_need(ctx, people, h, model, registrations),
        "hypertension_found_after_index": c.found_htn, "t2d_found_after_index": c.found_t2d,
        # what each patient really has by the extract date (or death), whatever their age, and
        # whether the record says so: true and not coded = undiagnosed
        "t2d_true_at_extract": h.t2d0 | o.ev_t2d,
        "t2d_coded_by_extract": (c.t2d_dx0 & (diagnosed.t2d_day <= last_day)) | c.rec_t2d | c.found_t2d,
        "hypertension_true_at_extract": h.htn0 | o.ev_htn,
        "hypertension_coded_by_extract": (c.htn_dx0 & (diagnosed.htn_day <= last_day)) | c.rec_htn | c.found_htn,
        "cvd_true_past_index": h.cvd0, "cvd_diagnosed_past_index": c.cvd_dx0,
        "true_risk_cvd_horizon": r_cvd, "true_risk_t2d_horizon": r_t2d, "true_risk_htn_horizon": r_htn,
        "true_cuminc_cvd_horizon": ci_cvd, "true_cuminc_t2d_horizon": ci_t2d,
        "true_cuminc_htn_horizon": ci_htn,
        "cvd_event": o.ev_cvd, "cvd_event_recorded": c.rec_cvd, "cvd_event_date": opt_day(o.ev_cvd, o.d_cvd),
        "t2d_event": o.ev_t2d, "t2d_event_recorded": c.rec_t2d, "t2d_event_date": opt_day(o.ev_t2d, o.d_t2d),
        "htn_event": o.ev_htn, "htn_event_recorded": c.rec_htn, "htn_event_date": opt_day(o.ev_htn, o.d_htn),
        "true_risk_cvd_10y_at_extract": np.where(age >= 25, _risk(model.lp_cvd(age, np.where(h.htn0 | o.ev_htn, o.sbp_after - 12, o.sbp_after), h.t2d0 | o.ev_t2d), 10), np.nan),
        "true_risk_t2d_10y_at_extract": np.where(age >= 25, _risk(model.lp_t2d(age, o.hba1c_after), 10), np.nan),
        "true_risk_htn_10y_at_extract": np.where(age >= 25, _risk(model.lp_htn(age, o.sbp_after), 10), np.nan),
    })
    truth = truth.with_columns(pl.col(pl.Float64).fill_nan(None))
    truth.write_parquet(out_dir / "truth" / "patients.parquet")
    planted = {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in asdict(config).items()
               if not (k.endswith("_practice") and not v)}  # per-practice knobs only when set
    planted["past_index_date"] = (EPOCH + dt.timedelta(days=T0)).isoformat()
    planted["note"] = ("The pipeline never reads this folder. Bias knobs are probabilities per "
                       "group; groups not named are unaffected (1.0, or 0.0 for misrecording).")
    (out_dir / "truth" / "planted.json").write_text(json.dumps(planted, indent=2) + "\n")


def _addresses(rng, n, patient_id, first_start, end, imd_rank, townsend, extract_day) -> pl.DataFrame:
    """One address per patient; 10% moved, their earlier address a nearby area; 1% unknown area."""
    moved = rng.uniform(size=n) < 0.10
    last_day = np.where(end >= 0, end, -1)
    move = first_start + 1 + (rng.uniform(size=n) * 3000).astype(np.int64)
    moved &= ((last_day < 0) | (move < last_day)) & (move < extract_day)
    unknown = rng.uniform(size=n) < 0.01
    old_rank = np.clip(imd_rank + rng.integers(-3000, 3000, n), 1, 32_844)
    has_townsend = rng.uniform(size=n) >= 0.02

    def rounded(rank):
        return (np.round(rank / 100) * 100).astype(np.int64)

    cur_start = np.where(moved, move, first_start)
    frames = [
        pl.DataFrame({
            "patient_id": patient_id, "start_date": cur_start, "end_date": last_day,
            "lsoa": imd_rank, "imd": rounded(imd_rank), "townsend_score": np.round(townsend, 2),
            "unknown": unknown, "has_townsend": has_townsend,
        }),
        pl.DataFrame({
            "patient_id": patient_id[moved], "start_date": first_start[moved], "end_date": move[moved] - 1,
            "lsoa": old_rank[moved], "imd": rounded(old_rank[moved]),
            "townsend_score": np.round(townsend[moved] + rng.normal(0, 0.5, moved.sum()), 2),
            "unknown": unknown[moved], "has_townsend": has_townsend[moved],
        }),
    ]
    return pl.concat(frames).select(
        "patient_id",
        pl.col("start_date").cast(pl.Int32).cast(pl.Date),
        pl.when(pl.col("end_date") >= 0).then(pl.col("end_date")).cast(pl.Int32).cast(pl.Date).alias("end_date"),
        # a synthetic LSOA code per IMD rank, so one LSOA always has one rank
        pl.when(~pl.col("unknown")).then(pl.format("E01{}", pl.col("lsoa").cast(pl.String).str.pad_start(6, "0"))).alias("lsoa_code"),
        pl.when(~pl.col("unknown")).then(pl.col("imd")).alias("imd_rounded"),
        pl.when(~pl.col("unknown") & pl.col("has_townsend")).then(pl.col("townsend_score")).alias("townsend_score"),
    )
