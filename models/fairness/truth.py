"""Synthetic extracts only: does the truth show that a model harms a group? (tests, benchmarks)

The generator's ``truth/patients.parquet`` holds each patient's true ethnic group, true risk over
the training horizon and now, and which true conditions and events were recorded. For each
outcome and true broad group the truth says the group is harmed when any of these holds:

- tracking: on the validation patients (at least ``min_patients``), the model's mean predicted
  risk relative to White under-rates the true mean need relative to White by more than 25%:

      tracking = (model mean, group / model mean, White) / (true mean, group / true mean, White)

  The true need over the horizon (``true_need_horizon``) is the chance of having the condition by
  its end (the validation patients have no diagnosis at T0): for CVD the generator's horizon risk
  of an event; for hypertension 1 where it was already present at T0 but not diagnosed (systolic
  140 or more: the patient's state, not a draw), else the horizon risk of its onset; for type 2
  diabetes the generator's expected need, the chance of diabetes present and uncoded at T0 or of
  its onset in the horizon, taken before the draw that decides whether it was present
  (``t2d_expected_need_horizon``, phm/synth.py). Every part of the key is then a probability
  given the patient's state; counting the draw at T0 as 1 made a small group's key move by tens
  of per cent with about 1 patient in 80 (docs/fairness.md, "The answer key reads the chance of
  undiagnosed diabetes, not its draw").

- at the same score: on the list's population now (eligible patients scored by the candidate),
  in the upper half of the scores where the list's decisions are made, the group's true need now
  (``true_need_now``: the 10-year risk, or 1 where type 2 diabetes or hypertension is present
  and uncoded) is more than 1.25 times the need expected at its scores within score decile and
  age band (in proportion to the score, as the gate's label-choice check standardises);
- recording: the group's outcomes are recorded worse than White's by more than 1.25 times: the
  share of true cases with no code, over White's (type 2 diabetes and hypertension: true cases at
  the extract date with no diagnosis code; CVD: true events in the horizon with no event code).
  One scale for every outcome, the scale the gate's recording checks measure (patients with the
  condition but not its code). CVD was once judged by the inverse, White's share recorded over the
  group's: recorded at 80% that is exactly the margin (1/0.8 = 1.25), so the same planted coding
  failure was harm for T2D and hypertension and a coin toss for CVD (docs/fairness.md).

The margins are the gate's own (``need_ratio_limit`` 1.25, the issue's "within 25%"). This is
the answer key the gate's error rates are measured against (benchmarks/bench_gate_error_rates.py,
tests/integration/test_gate_truth.py); the pipeline never reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from models.fairness._gate import CHECKS, POOLED_CHECK
from phm.ethnicity import BROAD_GROUPS, broad_group

# the scale of the recording statistic (``true_under_recording``), written with each study run: runs
# saved before 2026-12-01 (evening) judged CVD on White's share coded over the group's
RECORDING_SCALE = "uncoded share over White's, every outcome"
TRUE_RISK = {"cvd": "true_risk_cvd_horizon", "t2d": "true_risk_t2d_horizon", "hypertension": "true_risk_htn_horizon"}
# conditions that can be present at T0 without a diagnosis: the patient has it, so the list's
# need is 1; the generator's horizon risk is of a new onset and 0 for them (the hazard stops at
# onset). Before 2026-12-02 the tracking read the horizon risk alone, so a group with more
# hypertension undiagnosed at T0 (Black: 12-18% of its validation patients on seed 121, White's 8%)
# looked less in need than it is, and a model that rated it down looked right (docs/fairness.md,
# "The answer key counts undiagnosed disease as need").
PRESENT_AT_T0 = {"t2d": "t2d_true_past_index", "hypertension": "hypertension_true_past_index"}
# the need over the horizon as a chance given the patient's state, where the generator states one
# that differs from the above: type 2 diabetes at T0 is a draw (phm/synth.py, _expected_t2d_need).
# It wins over PRESENT_AT_T0 (which the realised key, bench_gate_error_rates' --key need, reads).
EXPECTED_AT_T0 = {"t2d": "t2d_expected_need_horizon"}
# written with each study run: the need key (runs saved before 2026-12-02 04:00 read the onset risk at
# T0, or at the extract date, or both; runs saved before 2026-12-02 13:00 counted type 2 diabetes
# present at T0 as 1, the draw, rather than its chance)
TRACKING_NEED = ("T2D at T0 as its chance given the patient's state; hypertension present and undiagnosed "
                 "at T0, and T2D and hypertension at the extract date, count as had")


def _need(risk: str, present: str | None) -> pl.Expr:
    """1 where the truth's ``present`` column says the condition is there, else the ``risk`` column
    (0 where the generator states none: dead, or too young for a 10-year risk)."""
    value = pl.col(risk).fill_null(0.0)
    return value if present is None else pl.when(pl.col(present).fill_null(False)).then(1.0).otherwise(value)


def true_need_horizon(outcome: str) -> pl.Expr:
    """The truth's need over the horizon for ``outcome`` (cvd, t2d, hypertension), per patient
    without a diagnosis at T0: the chance of having the condition by the horizon's end."""
    if outcome in EXPECTED_AT_T0:
        return pl.col(EXPECTED_AT_T0[outcome]).fill_null(0.0)
    return _need(TRUE_RISK[outcome], PRESENT_AT_T0.get(outcome))


@dataclass(frozen=True)
class Tracking:
    outcome: str
    group: str
    patients: int
    model_ratio: float
    true_ratio: float

    @property
    def tracking(self) -> float:
        return self.model_ratio / self.true_ratio

    true_at_same_score: float = float("nan")  # true risk at the same score, over expected (upper half)
    # how much worse the group's outcomes are recorded than White's (above 1: worse): the share of
    # true cases with no code, over White's (T2D and hypertension at the extract date, CVD events in
    # the horizon)
    true_under_recording: float = float("nan")

    def harmed(self, margin: float = 0.75, at_same_score: float = 1.25, recording_planted: bool = True) -> bool:
        """``recording_planted``: whether the scenario planted under-recording on this group. The
        recording statistic of a group with none planted is chance (a few dozen undiagnosed cases
        in a 20,000-patient extract), not harm: the generator records every group alike."""
        return self.harm_size(margin, at_same_score, recording_planted) > 0

    def harm_size(self, margin: float = 0.75, at_same_score: float = 1.25, recording_planted: bool = True) -> float:
        """How far past its line the group's largest harm is, as a ratio (1.1: 10% past it; the
        tracking's line read the other way, 0.75 / tracking), 0 when there is none. A gate whose
        tests put their null at the line can hardly see a harm just past it."""
        sizes = [0.0]
        if self.tracking < margin:  # under-rated against the truth's ratio to White
            sizes.append(margin / self.tracking if self.tracking > 0 else float("inf"))
        if self.true_at_same_score > at_same_score:  # sicker than the expected at the same score
            sizes.append(self.true_at_same_score / at_same_score)
        if recording_planted and self.true_under_recording > at_same_score:  # outcomes recorded worse
            sizes.append(self.true_under_recording / at_same_score)
        return max(sizes)


TRUE_RISK_NOW = {"cvd": "true_risk_cvd_10y_at_extract", "t2d": "true_risk_t2d_10y_at_extract",
                 "hypertension": "true_risk_htn_10y_at_extract"}
# conditions present at the extract date without a code: the list's need is 1 (the generator's
# 10-year risk reads the onset model, which gives an undiagnosed hypertensive about 0.7 and an
# undiagnosed diabetic about 0.95)
PRESENT_NOW = {"t2d": "t2d_true_at_extract", "hypertension": "hypertension_true_at_extract"}


def true_need_now(outcome: str) -> pl.Expr:
    """The truth's need at the extract date for ``outcome``, per eligible patient (no code now):
    1 where type 2 diabetes or hypertension is present undiagnosed, else the 10-year risk."""
    return _need(TRUE_RISK_NOW[outcome], PRESENT_NOW.get(outcome))


def _at_same_score(rows: pl.DataFrame, score: str, min_patients: int) -> dict[str, tuple[int, float]]:
    """Recorded group -> (patients, true risk over expected) in the upper half of ``score``: expected
    in proportion to the score within each score decile and age band, as the gate's check
    standardises (_metrics.need_ratio)."""
    from models.fairness._cells import age_band, score_bins

    rows = rows.with_columns(score_bins(pl.col(score), 10).alias("decile"), age_band(pl.col("age_years")).alias("band"))
    rows = rows.with_columns((pl.col(score) * pl.col("true").sum().over("decile", "band")
                              / pl.col(score).sum().over("decile", "band")).alias("expected")
                             ).filter(pl.col("decile") >= 5)
    return {r["ethnicity_group"]: (r["n"], r["true"] / r["expected"])
            for r in rows.group_by("ethnicity_group").agg(pl.len().alias("n"), pl.col("true").sum(),
                                                          pl.col("expected").sum()).iter_rows(named=True)
            if r["n"] >= min_patients and r["expected"] > 0 and r["ethnicity_group"] != "White"}


def true_risk_at_same_score(db_path: Path, truth: pl.DataFrame, tracking_uri: str,
                            min_patients: int = 20, published: list | None = None,
                            standard: list | None = None) -> dict[tuple[str, str], float]:
    """(outcome, group) -> true risk over the risk expected at the same score decile and age band,
    in the upper half of the candidate's scores on the eligible population now; by the group the
    audit sees (the recorded broad group), as the gate can only name that.

    ``standard`` (a list, filled): the same statistic on the same patients ranked by the
    validated score (QRISK3 for CVD, QDiabetes for T2D), so that a study can tell an offset the
    model carries from one it inherits from the score (hypertension has none)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from models.population import read_features
    from models.train import OUTCOMES, model_inputs, predict_risk, single_icb
    from phm.db import connect

    con = connect(db_path, read_only=True)
    try:
        icb, features = single_icb(read_features(con), None)
    finally:
        con.close()
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    out = {}
    published = [] if published is None else published
    for outcome in OUTCOMES:
        version = client.get_model_version_by_alias(f"phm-{icb}-{outcome.short}", "candidate")
        model = mlflow.sklearn.load_model(f"models:/phm-{icb}-{outcome.short}/{version.version}")
        rows = features.filter(outcome.eligible(features))
        rows = rows.with_columns(pl.Series("score", predict_risk(model, model_inputs(rows, version.tags["phm.variant"]))))
        rows = rows.join(truth.select("patient_id", "true_group", true_need_now(outcome.short).alias("true")),
                         on="patient_id")
        # the ranking's mean risk by true group relative to White's, against the truth's (every
        # eligible patient now: the population the list is drawn from)
        means = {r["true_group"]: r for r in rows.group_by("true_group").agg(
            pl.len().alias("n"), pl.col("score").mean().alias("model"), pl.col("true").mean().alias("true_mean")
        ).iter_rows(named=True)}
        # and the validated score's own, on the patients it scores: it ranks the list when the
        # candidate does worse than it for a group (do no harm, models/fairness/_decision.py)
        standard_means = {} if outcome.comparator is None else {r["true_group"]: r for r in rows.filter(
            pl.col(outcome.comparator).is_not_null()).group_by("true_group").agg(
            pl.len().alias("n"), pl.col(outcome.comparator).mean().alias("model"),
            pl.col("true").mean().alias("true_mean")).iter_rows(named=True)}
        white, standard_white = means.get("White"), standard_means.get("White")
        for group, r in sorted(means.items()):
            if white is not None and group != "White" and r["true_mean"] and white["true_mean"]:
                model_ratio, true_ratio = r["model"] / white["model"], r["true_mean"] / white["true_mean"]
                row = {"outcome": outcome.short, "group": group, "patients": r["n"],
                       "model_ratio": round(model_ratio, 4), "true_ratio": round(true_ratio, 4),
                       "tracks": round(model_ratio / true_ratio, 4),
                       "candidate_kind": version.tags.get("phm.model_kind")}
                by_score = standard_means.get(group)
                if by_score is not None and standard_white is not None and by_score["true_mean"] \
                        and standard_white["true_mean"] and standard_white["model"]:
                    standard_ratio = by_score["model"] / standard_white["model"]
                    standard_true = by_score["true_mean"] / standard_white["true_mean"]
                    row |= {"standard_patients": by_score["n"], "standard_ratio": round(standard_ratio, 4),
                            "standard_tracks": round(standard_ratio / standard_true, 4)}
                published.append(row)
        for group, (_, ratio) in _at_same_score(rows, "score", min_patients).items():
            out[(outcome.short, group)] = ratio
        if standard is not None and outcome.comparator is not None:
            scored = rows.filter(pl.col(outcome.comparator).is_not_null())
            for group, (n, ratio) in sorted(_at_same_score(scored, outcome.comparator, min_patients).items()):
                standard.append({"outcome": outcome.short, "group": group, "patients": n,
                                 "true_risk_at_same_score": round(ratio, 4)})
    return out


UNDIAGNOSED = {"t2d": ("t2d_true_at_extract", "t2d_coded_by_extract"),
               "hypertension": ("hypertension_true_at_extract", "hypertension_coded_by_extract")}


def true_under_recording(registered: pl.DataFrame, truth: pl.DataFrame, min_cases: int = 30) -> dict[tuple[str, str], float]:
    """(outcome, true group) -> how much worse the group's outcomes are recorded than White's.

    Type 2 diabetes and hypertension: among the patients registered at the extract date who
    truly have the condition, the share with no diagnosis code, over White's share. CVD: the share
    of true events in the horizon with no code, over White's (events after the patient died or left
    go uncoded in every group alike). Groups with fewer than ``min_cases`` true cases are left out."""
    rows = truth.join(registered.select("patient_id"), on="patient_id", how="semi")
    out = {}
    for outcome, (true, coded) in UNDIAGNOSED.items():
        shares = (rows.filter(pl.col(true)).group_by("true_group")
                  .agg(pl.len().alias("n"), (~pl.col(coded)).mean().alias("share")))
        out.update(_relative(outcome, shares, min_cases))
    shares = (truth.filter(pl.col("cvd_event")).group_by("true_group")
              .agg(pl.len().alias("n"), (~pl.col("cvd_event_recorded")).mean().alias("share")))
    out.update(_relative("cvd", shares, min_cases))
    return out


def _relative(outcome: str, shares: pl.DataFrame, min_cases: int) -> dict:
    """(outcome, group) -> the group's share of uncoded cases over White's. Where White has none
    (CVD events are coded whenever the practice hears of them), any uncoded case is worse without
    bound, and none is no worse."""
    by_group = {r["true_group"]: r for r in shares.iter_rows(named=True) if r["n"] >= min_cases}
    white = by_group.get("White")
    if white is None:
        return {}
    out = {}
    for group, r in by_group.items():
        if group != "White":
            out[(outcome, group)] = (r["share"] / white["share"] if white["share"]
                                     else float("inf") if r["share"] else 1.0)
    return out


def ratio_tracking(db_path: Path, truth_dir: Path, min_patients: int = 200, tracking_uri: str | None = None,
                   published: list | None = None, standard: list | None = None) -> list[Tracking]:
    from phm.db import connect

    con = connect(db_path, read_only=True)
    try:
        validation = con.execute("select patient_id, outcome, predicted_risk from models.validation_predictions "
                                 "where is_candidate").pl()
        registered = con.execute("select patient_id from marts.mart_patient_features").pl()
    finally:
        con.close()
    truth = pl.read_parquet(Path(truth_dir) / "patients.parquet").with_columns(
        pl.col("ethnicity_true").map_elements(broad_group, return_dtype=pl.String).alias("true_group"))
    at_same_score = (true_risk_at_same_score(db_path, truth, tracking_uri, published=published, standard=standard)
                     if tracking_uri else {})
    recording = true_under_recording(registered, truth)
    out = []
    for outcome in TRUE_RISK:
        joined = validation.filter(pl.col("outcome") == outcome).join(
            truth.select("patient_id", "true_group", true_need_horizon(outcome).alias("need")), on="patient_id",
            how="inner")
        means = joined.group_by("true_group").agg(pl.len().alias("n"), pl.col("predicted_risk").mean().alias("model"),
                                                  pl.col("need").mean().alias("true"))
        rows = {r["true_group"]: r for r in means.iter_rows(named=True)}
        white = rows.get("White")
        if white is None:
            continue
        for group, r in sorted(rows.items()):
            if group == "White" or not r["true"]:
                continue
            same = at_same_score.get((outcome, group), float("nan"))
            if r["n"] < min_patients:
                if not same > 0:
                    continue
                r = {**r, "model": white["model"], "true": white["true"]}  # too few to compare group means
            out.append(Tracking(outcome, group, int(r["n"]), r["model"] / white["model"], r["true"] / white["true"], same,
                                recording.get((outcome, group), float("nan"))))
        for (o, group), same in at_same_score.items():
            if o == outcome and group not in rows:  # recorded as Not stated / Not known: no true group of that name
                out.append(Tracking(outcome, group, 0, 1.0, 1.0, same))
    return out


def _validation_counts(audit) -> dict[str, dict]:
    """Group (and "population") -> validation patients, recorded outcomes, outcomes expected by the
    score and true positives at the list's operating point (synthetic extracts only)."""
    from models.fairness._gate import _expected_outcomes

    rows = [("population", r) for r in audit.by_group("population", "performance")]
    rows += [(r.labels["group"], r) for r in audit.by_group("ethnicity", "performance")]
    return {name: {"patients": r.counts.patients, "events": r.counts.events,
                   "expected": round(_expected_outcomes(r), 4), "true_positives": r.counts.true_positives}
            for name, r in rows}


def recording_planted(knobs: dict, group: str) -> bool:
    """Did the generator's ``outcome_recording`` knob lower the recording of any of the group's
    categories (knobs name a broad group or a category letter)?"""
    return any(value < 1 and (name == group or broad_group(name) == group)
               for name, value in (knobs or {}).get("outcome_recording", {}).items())


SCENARIOS = {
    "no bias": {},
    # the Black group's diagnoses and events coded at 60% (the example, Black African
    # patients alone, is the pipeline test's: tests/integration/test_fairness_pipeline.py)
    "outcome under-recording": {"outcome_recording": {"Black": 0.6}},
    "measurement-access gap": {"measurement_access": {"Black": 0.5}},  # half the readings for Black patients
}


# the findings that judge a group's rating: the gate's checks (models/fairness/_gate.py), not its
# notes on size, measurement or data quality
RATING_RULES = (*CHECKS, POOLED_CHECK)

# which of the gate's checks looks for each kind of harm the truth shows (ScenarioRun.visible)
HARM_SEEN_BY = {"tracking": ("calibration",), "same score": ("label choice",),
                "recording": ("label choice (diagnosis gap)", "label choice (treated, no diagnosis)")}


def detectable_ratio(check: str, se: float, settings=None) -> float:
    """The ratio on the harmful side that the gate's test of ``check`` detects with the settings'
    power, from the test's standard error: the smallest effect the report states a group could
    show (models.fairness._gate._detectable). Calibration is two-sided; here it is read on the
    side where the model under-predicts (observed over expected above the margin), which is the
    harm to the group."""
    from models.fairness import AuditSettings
    from models.fairness._gate import CHECKS, _detectable

    settings = settings or AuditSettings()
    side = CHECKS[check][3]
    margin = ((1 / settings.need_ratio_limit, settings.need_ratio_limit) if check.startswith("label choice")
              else settings.ratio_band)
    alpha = 1 - settings.level
    if side == "both":
        side, alpha = "above", alpha / 2
    return _detectable(se, side, margin, alpha, settings.power)


@dataclass
class ScenarioRun:
    """One synthetic extract through ingest, features, training and the audit, with its truth."""

    seed: int
    profile: str
    scenario: str
    knobs: dict
    gates: dict[str, dict]  # outcome -> status, FAIL findings (rule, group)
    tracking: list[Tracking]
    seconds: float
    # the ranking's mean risk by true group relative to White's, over every eligible patient at
    # the extract date, against the truth's: outcome, group, patients, model_ratio, true_ratio, tracks;
    # for CVD and T2D also the validated score's (standard_patients, standard_ratio, standard_tracks)
    published: list[dict] = field(default_factory=list)
    # the truth's statistic at the same score with the validated score ranking the same patients
    # (true_risk_at_same_score's ``standard``): outcome, group, patients, true_risk_at_same_score
    standard_at_same_score: list[dict] = field(default_factory=list)

    def harmed(self, outcome: str, margin: float = 0.75) -> list[str]:
        return [t.group for t in self.tracking if t.outcome == outcome
                and t.harmed(margin, recording_planted=recording_planted(self.knobs, t.group))]

    def harm_size(self, outcome: str, margin: float = 0.75) -> float:
        """The largest harm past its line among the outcome's groups (``Tracking.harm_size``)."""
        return max((t.harm_size(margin, recording_planted=recording_planted(self.knobs, t.group))
                    for t in self.tracking if t.outcome == outcome), default=0.0)

    def truth_cannot_judge(self, outcome: str) -> list[str]:
        """Groups whose recording was lowered by the scenario but whose recording statistic the
        truth cannot compute for ``outcome`` (fewer true cases than ``true_under_recording``'s
        minimum: a 20,000-patient ``england`` extract holds about 15 true CVD events of Black
        patients). The knob says the group is under-recorded; the run's own truth cannot say by
        how much, so such an outcome-run is neither harmed nor fair (``rates``)."""
        judged = {t.group for t in self.tracking if t.outcome == outcome and t.true_under_recording > 0}
        planted = {g for g in BROAD_GROUPS if recording_planted(self.knobs, g)}
        return sorted(planted - judged)

    def visible(self, outcome: str, settings=None, margin: float = 0.75) -> list[str]:
        """The groups whose harm for ``outcome`` (``Tracking.harm_size``) is at least the smallest
        effect the gate said it could detect for them (``detectable_ratio``): the harm "the data
        can see". Each kind of harm is set against the check that looks for it
        (``HARM_SEEN_BY``): under-rating against the truth's ratio (1 / tracking) against
        calibration's O/E on the side of under-prediction; the true risk over the expected at the
        same score against the label-choice check; planted under-recording against the smallest of
        the recording checks' (the pooled one and each outcome's own). A group the gate did not test
        for that check (no standard error) could show nothing."""
        gate = self.gates[outcome]
        evidence = {(e["check"], e["group"]): e["se"] for e in gate.get("evidence", []) + gate.get("recording_evidence", [])}
        pooled = {e["group"]: e["minimum_detectable_ratio"] for e in gate.get("pooled_recording", [])}

        def smallest(kind: str, group: str) -> float:
            found = [detectable_ratio(check, evidence[(check, group)], settings)
                     for check in HARM_SEEN_BY[kind] if (check, group) in evidence]
            if kind == "recording" and pooled.get(group) is not None:
                found.append(pooled[group])
            found = [f for f in found if f == f]  # NaN: no standard error
            return min(found, default=float("inf"))

        seen = []
        for t in self.tracking:
            planted = recording_planted(self.knobs, t.group)
            if t.outcome != outcome or not t.harmed(margin, recording_planted=planted):
                continue
            harms = [("tracking", 1 / t.tracking if t.tracking > 0 else float("inf"), t.tracking < margin),
                     ("same score", t.true_at_same_score, t.true_at_same_score > 1.25),
                     ("recording", t.true_under_recording, planted and t.true_under_recording > 1.25)]
            if any(harmed and size >= smallest(kind, t.group) for kind, size, harmed in harms):
                seen.append(t.group)
        return seen

    def named_for_rating(self, outcome: str) -> list[str]:
        """The groups a finding of one of the gate's checks names (``RATING_RULES``: calibration,
        sensitivity, need-adjusted selection, label choice), at WARN or FAIL. "Too small to judge"
        and "measurement gap" name a group without saying its ranking is wrong, so they do not
        count. A run saved before findings were recorded (2026-12-03) is read from its tests'
        verdicts, which are the findings of the gate's checks."""
        gate = self.gates[outcome]
        if "findings" in gate:
            return sorted({f["group"] for f in gate["findings"] if f["rule"] in RATING_RULES})
        tests = gate.get("evidence", []) + gate.get("recording_evidence", []) + gate.get("pooled_recording", [])
        return sorted({t["group"] for t in tests if t.get("verdict") in ("WARN", "FAIL")})

    def ranking_tracks(self, outcome: str) -> list[dict]:
        """What ranks the outcome's list (the candidate, or the validated score under do no harm),
        its mean risk by true group relative to White's against the truth's: group, patients,
        tracks, ranked_by. Empty for a validated score ranking a run saved before its tracking was
        recorded (2026-12-03)."""
        by_model = self.gates[outcome]["ranks_list"] == "model"
        return [{"group": r["group"], "patients": r["patients"] if by_model else r["standard_patients"],
                 "tracks": r["tracks"] if by_model else r["standard_tracks"],
                 "ranked_by": "model" if by_model else self.gates[outcome]["ranks_list"]}
                for r in self.published if r["outcome"] == outcome and (by_model or "standard_tracks" in r)]

    def failed(self, outcome: str, rule: str | None = None, group: str | None = None) -> bool:
        """Did the gate FAIL the outcome (naming ``group``, with a check whose name starts with
        ``rule``: "label choice" takes both label-choice checks)?"""
        return any((rule is None or f["rule"].startswith(rule)) and (group is None or f["group"] == group)
                   for f in self.gates[outcome]["fails"])

    def as_dict(self) -> dict:
        return {"seed": self.seed, "profile": self.profile, "scenario": self.scenario, "knobs": self.knobs,
                "seconds": round(self.seconds, 1), "gates": self.gates, "recording_scale": RECORDING_SCALE,
                "tracking_need": TRACKING_NEED,
                # six decimals: a study's summary is judged again from these figures, and at three
                # a statistic of 1.2504 was stored as 1.25, under the line it had passed
                "tracking": [{"outcome": t.outcome, "group": t.group, "patients": t.patients,
                              "model_ratio": round(t.model_ratio, 6), "true_ratio": round(t.true_ratio, 6),
                              "tracking": round(t.tracking, 6),
                              "true_risk_at_same_score": round(t.true_at_same_score, 6),
                              "true_under_recording": round(t.true_under_recording, 6)} for t in self.tracking],
                "published": self.published, "standard_at_same_score": self.standard_at_same_score}


def scenario_run(folder: Path, seed: int, profile: str, scenario: str, patients: int = 30_000,
                 knobs: dict | None = None, settings=None, min_patients: int = 200) -> ScenarioRun:
    """Generate, ingest, build features, train (MLflow in a local store) and audit one extract."""
    import time

    from features.run import run_features
    from models.audit_run import run_audit
    from models.fairness._settings import AuditSettings
    from models.score_patients import run_scores
    from models.tracking import tracking_location
    from models.train import TrainingConfig
    from models.training_run import run_training
    from phm.ingest import ingest
    from phm.synth import SynthConfig, generate

    started = time.perf_counter()
    knobs = SCENARIOS[scenario] if knobs is None else knobs
    folder = Path(folder)
    generate(SynthConfig(patients=patients, seed=seed, profile=profile, pcns=1, **knobs), folder / "extract")
    db = folder / "phm.duckdb"
    ingest(folder / "extract", db)
    run_features(db)
    run_scores(db)
    run_training(db, TrainingConfig(seed=seed))
    run = run_audit(db, settings or AuditSettings(), tracking_location(folder, None), folder / "audit")
    gates = gate_record(run)
    published: list[dict] = []
    standard: list[dict] = []
    tracking = ratio_tracking(db, folder / "extract" / "truth", min_patients,
                              tracking_location(folder, None).tracking_uri, published, standard)
    return ScenarioRun(seed, profile, scenario, knobs, gates, tracking, time.perf_counter() - started, published,
                       standard)


def gate_record(run) -> dict[str, dict]:
    """What a study keeps of an audit's gate (``models.audit_run.AuditRun``), per outcome."""
    from models.fairness._gate import POOLED_CHECK, RECORDING_CHECKS

    return {g.outcome: {"status": g.status, "fails": [{"rule": f.rule, "group": f.group} for f in g.findings
                                                       if f.level == "FAIL"],
                         "named": sorted({f.group for f in g.findings}),
                         # every finding's level, rule and group: a group named only as too small to
                         # judge, or for its measurement gap, is not named for its rating (``named_for_rating``)
                         "findings": [{"level": f.level, "rule": f.rule, "group": f.group} for f in g.findings],
                         "ranks_list": run.decision.ranks_list(g.outcome),
                         # the pooled recording check's tests (what it pooled, its verdict), for the study
                         "pooled_recording": [t.as_dict() for t in g.tests if t.check == POOLED_CHECK],
                         # every recording check's log ratio and standard error, to study other pools offline
                         "recording_evidence": [{"check": t.check, "group": t.group, "log_ratio": round(t.log_value, 6),
                                                 "se": round(t.se, 6), "verdict": t.verdict}
                                                for t in g.tests if t.check in RECORDING_CHECKS],
                         # every other test, and the validation counts behind calibration and
                         # need-adjusted selection, to study other tests of them offline
                         "evidence": [{"check": t.check, "group": t.group, "log_ratio": round(t.log_value, 6),
                                       "se": round(t.se, 6), "p_value": t.p_value, "verdict": t.verdict}
                                      for t in g.tests if t.check not in (*RECORDING_CHECKS, POOLED_CHECK)],
                         "validation_counts": _validation_counts(audit)}
            for g, audit in zip(run.report.gates, run.report.audits, strict=True)}


def _point_store_at(store: Path, original: Path) -> None:
    """A copied MLflow store's own paths (experiments' artifact locations, runs' artifact URIs,
    model versions' sources) point at the original's folder: made to point at the copy's, so that
    nothing written through the copy lands in the original."""
    import sqlite3

    databases = list(Path(store).glob("*.db"))
    if len(databases) != 1:
        raise RuntimeError(f"{store}: expected one MLflow SQLite store, found {len(databases)}")
    old, new = str(Path(original).resolve()), str(Path(store).resolve())
    con = sqlite3.connect(databases[0])
    try:
        tables = [t for (t,) in con.execute("select name from sqlite_master where type = 'table'")]
        for table in tables:
            for _, column, kind, *_ in con.execute(f'pragma table_info("{table}")').fetchall():  # noqa: S608 (names from the store's own schema)
                if "CHAR" in kind.upper() or "TEXT" in kind.upper():
                    con.execute(f'update "{table}" set "{column}" = replace("{column}", ?, ?) '  # noqa: S608
                                f'where instr("{column}", ?) > 0', (old, new, old))
        con.commit()
    finally:
        con.close()


def replay_audit(kept: Path, scratch: Path, settings=None) -> dict[str, dict]:
    """The gate record (``gate_record``) of the audit run again, with the code as it is now, on a
    copy of a study run's database and MLflow store (``--keep``): a change to the audit or the
    gate judged on the same trained models, without training them again. ``kept`` is not changed."""
    import shutil

    from models.audit_run import run_audit
    from models.fairness._settings import AuditSettings
    from models.tracking import tracking_location

    scratch = Path(scratch)
    scratch.mkdir(parents=True)
    shutil.copy(Path(kept) / "phm.duckdb", scratch / "phm.duckdb")
    shutil.copytree(Path(kept) / "mlflow", scratch / "mlflow")
    _point_store_at(scratch / "mlflow", Path(kept) / "mlflow")
    run = run_audit(scratch / "phm.duckdb", settings or AuditSettings(), tracking_location(scratch, None),
                    scratch / "audit")
    return gate_record(run)
