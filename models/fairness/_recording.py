"""The diagnosis-gap check: are a group's diagnoses recorded as often as its readings show them?

The models learn from *recorded* outcomes, and the label-choice check at the same score
(_need.py) compares their scores with QRISK3's and QDiabetes's. A model built on the published
ethnic effects (models/train.py) does not learn a group's under-recorded outcomes, so that check
cannot see them; and the recorded outcomes themselves are the list's need measure elsewhere
(need-adjusted selection). Where a group's diagnoses go unrecorded, its patients also carry
readings that meet the diagnostic threshold without the diagnosis. This check counts them: a
measure of recording that does not depend on the labels.

For each outcome with a diagnostic reading, among adults (18+) whose latest reading meets the
diagnostic threshold:

- hypertension: clinic blood pressure >= 140/90 mmHg (NICE NG136 stage 1; stage 2 from
  160/100); no current hypertension code (QOF HYP_COD, not resolved);
- type 2 diabetes: HbA1c >= 48 mmol/mol (NICE NG28, WHO 2011; band from 58); no diabetes code
  of any type;
- CVD: none (an event leaves no reading behind; its recording is judged only through calibration).

the group's count without a diagnosis is compared with the count expected at the population's
rate in the same stratum of reading band x age band (indirect standardisation, as the
label-choice check does). Above 1: the group's high readings go undiagnosed more often, its
recorded outcomes under-state its need, and a model trained on them would under-rate it. The
interval is from the binomial variance of the count under the population's rates. The gate
judges the ratio against ``need_ratio_limit`` (harm above), in the same family as every other
check, under the name "label choice (diagnosis gap)".

The treatment check ("label choice (treated, no diagnosis)", ``treated_counts``) is the
standard "treated without a diagnosis" search of real-world register validation (QOF and
CVDPREVENT register searches; the UCLPartners proactive care "find and treat" searches look for
patients on antihypertensives with no hypertension code): where a diagnosis is known and treated
but its code is not entered (a coding failure: a hospital letter, a diagnosis made and never
coded), the treatment is in the record and the diagnosis is not. Among adults (18+) issued the
condition's treatment in the 6 months before the index date (the features' ``on_*`` flags), the
group's count without the diagnosis code is compared with the count expected at the population's
rate in the same age band, with the same exact Poisson interval, as its own check (a separate
family: pooled with the readings, the few treated patients would be drowned by the many high
readings):

- hypertension: on antihypertensives (``on_antihypertensives``); no current hypertension code.
  Antihypertensives are also given for heart failure, angina or migraine, so every group has a
  baseline; the ratio compares groups at the same age, so a baseline shared alike is no excess;
- type 2 diabetes: on a non-insulin glucose-lowering drug (``on_glucose_lowering``, BNF 6.1.2,
  metformin first) and no PCOS code (metformin's common other use); no diabetes code of any type.
  GLP-1 agonists and SGLT2 inhibitors are also given for weight, heart failure and kidney disease:
  a baseline shared alike;
- CVD: on an antiplatelet (``on_antiplatelets``, BNF 2.9: low-dose aspirin, clopidogrel,
  prasugrel, ticagrelor, dipyridamole); no CVD code (CHD, MI, stroke or TIA: the codes the CVD
  labels and QRISK3's eligibility use, ``cvd``). After an MI, an acute coronary syndrome, an
  ischaemic stroke or a TIA an antiplatelet is given for life (NICE NG185, NG128), so an
  unrecorded event the practice knows of leaves one behind: the secondary-prevention search of
  CVDPREVENT and QOF register validation. Antiplatelets are also given for primary prevention
  (no longer advised) and peripheral arterial disease (not a CVD code here): a baseline shared
  alike. Atrial fibrillation is not excluded: it is treated with anticoagulants, not antiplatelets
  (NICE NG196). Statins are not the marker: they are mostly primary prevention given by QRISK,
  which differs by group, so "a statin without a CVD code" would call a group with higher QRISK3
  under-recorded (measured: a weak signal even with CVD recorded at 60%, docs/fairness.md).

A single reading over the threshold is not a diagnosis (NICE asks for ambulatory or home
readings, or a second HbA1c): the ratio compares groups, and the standardisation by reading
band keeps a group with higher pressures from looking better diagnosed only because more of its
high readings are real.
"""

from __future__ import annotations

import polars as pl
from scipy import stats

from models.fairness._audit import Estimate, Figure
from models.fairness._cells import age_band


def _evidence(outcome: str) -> tuple[pl.Expr, pl.Expr, pl.Expr] | None:
    """(reading meets the threshold, reading band 0/1, not diagnosed) for the outcome."""
    if outcome == "hypertension":
        sbp, dbp = pl.col("sbp_mmhg"), pl.col("dbp_mmhg")
        high = ((sbp >= 140) | (dbp >= 90)).fill_null(False)
        band = ((sbp >= 160) | (dbp >= 100)).fill_null(False).cast(pl.Int8)
        undiagnosed = ~pl.col("hypertension").fill_null(False)
    elif outcome == "t2d":
        hba1c = pl.col("hba1c_mmol_mol")
        high = (hba1c >= 48).fill_null(False)
        band = (hba1c >= 58).fill_null(False).cast(pl.Int8)
        undiagnosed = ~(pl.col("type2_diabetes").fill_null(False) | pl.col("type1_diabetes").fill_null(False))
    else:
        return None
    return high, band, undiagnosed


def gap_counts(features: pl.DataFrame, outcome: str) -> pl.DataFrame | None:
    """Per group and stratum (reading band x age band): patients with a diagnostic reading and
    how many of them have no diagnosis. Aggregates only; None where the outcome has no reading."""
    parts = _evidence(outcome)
    if parts is None:
        return None
    high, band, undiagnosed = parts
    return (features.filter(pl.col("age_years") >= 18)
            .filter(high)
            .select(pl.col("ethnicity_group").cast(pl.String).fill_null("Not known").alias("group"),
                    (band * 10 + age_band(pl.col("age_years"))).alias("stratum"),
                    undiagnosed.cast(pl.Int64).alias("undiagnosed"))
            .group_by("group", "stratum").agg(pl.len().alias("patients"), pl.col("undiagnosed").sum()))


def treated_counts(features: pl.DataFrame, outcome: str) -> pl.DataFrame | None:
    """Per group and age band: adults on the outcome's treatment and how many of them have no
    diagnosis code (the schema of ``gap_counts``). None where no treatment shows the outcome."""
    if outcome == "hypertension":
        treated = pl.col("on_antihypertensives").fill_null(False)
        undiagnosed = ~pl.col("hypertension").fill_null(False)
    elif outcome == "t2d":
        # metformin is also given for PCOS: a woman with a PCOS code is not counted
        treated = pl.col("on_glucose_lowering").fill_null(False) & ~pl.col("pcos").fill_null(False)
        undiagnosed = ~(pl.col("type2_diabetes").fill_null(False) | pl.col("type1_diabetes").fill_null(False))
    elif outcome == "cvd":
        treated = pl.col("on_antiplatelets").fill_null(False)
        undiagnosed = ~pl.col("cvd").fill_null(False)
    else:
        return None
    return (features.filter(pl.col("age_years") >= 18)
            .filter(treated)
            .select(pl.col("ethnicity_group").cast(pl.String).fill_null("Not known").alias("group"),
                    age_band(pl.col("age_years")).alias("stratum"),
                    undiagnosed.cast(pl.Int64).alias("undiagnosed"))
            .group_by("group", "stratum").agg(pl.len().alias("patients"), pl.col("undiagnosed").sum()))


def gap_ratios(counts: pl.DataFrame, level: float = 0.95) -> dict[str, tuple[Estimate, int, int]]:
    """group -> (undiagnosed over expected with its interval, patients with a high reading,
    undiagnosed among them)."""
    population = counts.group_by("stratum").agg(pl.col("patients").sum().alias("n_all"),
                                                 pl.col("undiagnosed").sum().alias("u_all"))
    joined = counts.join(population, on="stratum").with_columns(
        (pl.col("u_all") / pl.col("n_all")).alias("rate"))
    per_group = joined.group_by("group").agg(
        pl.col("patients").sum(), pl.col("undiagnosed").sum(),
        (pl.col("patients") * pl.col("rate")).sum().alias("expected"))
    out = {}
    for r in per_group.iter_rows(named=True):
        expected, observed = r["expected"], int(r["undiagnosed"])
        if expected <= 0:
            continue
        out[r["group"]] = (standardised_ratio(observed, expected, level), int(r["patients"]), observed)
    return out


def standardised_ratio(observed: int, expected: float, level: float = 0.95) -> Estimate:
    """A count over the count expected, with the exact (Garwood) Poisson interval of the count: the
    standard interval of a standardised ratio, honest for a handful of patients (3 undiagnosed where
    0.9 were expected is 3.5, 0.7-10.1, not a sure excess). The estimate keeps both counts, and the
    gate tests them exactly (_gate.exact_p_value)."""
    alpha = 1 - level
    low = stats.chi2.ppf(alpha / 2, 2 * observed) / 2 if observed else 0.0
    high = stats.chi2.ppf(1 - alpha / 2, 2 * observed + 2) / 2
    return Estimate(max(observed, 0.5) / expected, low / expected, high / expected, float(observed), float(expected))


def exact_p_value(observed: float, expected: float, margin: float) -> float:
    """One-sided exact Poisson p of "the count is no more than ``margin`` times the expected": the
    test that matches the exact interval. The normal test on the log scale, taken from that interval,
    is several times too small for a handful of patients (4 where 0.62 were expected, against 1.25:
    0.002 by the normal, 0.008 exactly)."""
    return float(stats.poisson.sf(observed - 1, margin * expected)) if observed > 0 else 1.0


def add_gap_figures(audit, counts: pl.DataFrame | None, level: float = 0.95,
                    figure: Figure = Figure.DIAGNOSIS_GAP) -> None:
    """Put each broad group's ratio (from ``gap_counts``, or ``treated_counts`` as
    ``Figure.TREATED_UNDIAGNOSED``) into the audit's selection figures (ethnicity grouping),
    where the gate and the report read it."""
    if counts is None or counts.is_empty() or not audit.audited("selection"):
        return
    ratios = gap_ratios(counts, level)
    audit.add_figure("selection", "ethnicity", figure,
                     {group: estimate for group, (estimate, _, _) in ratios.items()})
