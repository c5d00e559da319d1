"""The fairness gate against the generator's truth, on three seeds and both ethnicity profiles.

Each case generates a 20,000-patient extract (one PCN) and takes it through ingest, features,
validated scores, training and the audit (models/fairness/truth.py, the same function the
simulation study in benchmarks/bench_gate_error_rates.py uses). The truth says, for each outcome
and true group, whether the published ranking harms the group: its risk relative to White
under-rates the true ratio by more than 25%; at the same score the group's true risk is more than
1.25 times the expected; or its outcomes are recorded worse than White's by more than 1.25 times.

- with no bias planted, the gate FAILs nothing; every group the model under-rates by more than 25%
  against the truth (a group with at least 200 validation patients, or with 1,000 eligible
  patients ranked at the extract date, 500 on the 'england' profile) is named in the gate's findings;
- with no bias planted, 'Not stated' and 'Not known' patients' true risk at the same score is
  within 15% of the expected (they are read as the recorded mix, docs/models.md);
- with Black patients' diagnoses and events recorded at 60%, the gate FAILs, naming the Black
  group and a label-choice check.

The simulation study measures how often each happens over many seeds (docs/fairness.md).
"""

from __future__ import annotations

import pytest

from models.fairness.truth import scenario_run

pytestmark = pytest.mark.slow
PATIENTS = 20_000
FAIR = [(1, "england"), (2, "diverse_urban"), (3, "diverse_urban")]
# The smallest group whose ranking is judged against the truth (eligible patients ranked at the
# extract date). At 20,000 patients no 'england' minority reaches 1,000, so there it is 500: see
# the test that uses it for the rate measured at that size.
RANKED_FLOOR = {"diverse_urban": 1_000, "england": 500}
# Under-recording shows in treatment without a diagnosis (antihypertensives or glucose-lowering
# drugs with no code) and in the T2D diagnosis gap (a diabetic HbA1c and no diagnosis). With the
# Black group's outcomes coded at 60%, 20,000 patients suffice on both profiles: on seed 5
# 'england' (4% Black) the hypertension treatment ratio was 5.9 (3.5-9.5) even at 80%; the
# diagnosis gap alone needed 40,000 'england' patients. The issue's own example, Black African
# patients alone at 60%, is the pipeline test's (40,000 'diverse_urban' patients,
# tests/integration/test_fairness_pipeline.py).
BIASED = [(4, "diverse_urban", PATIENTS), (5, "england", PATIENTS), (6, "diverse_urban", PATIENTS)]


@pytest.fixture(scope="module", params=FAIR, ids=lambda c: f"seed{c[0]}-{c[1]}")
def fair_run(request, tmp_path_factory):
    seed, profile = request.param
    return scenario_run(tmp_path_factory.mktemp("fair"), seed, profile, "no bias", PATIENTS)


@pytest.fixture(scope="module", params=BIASED, ids=lambda c: f"seed{c[0]}-{c[1]}-{c[2]}")
def biased_run(request, tmp_path_factory):
    seed, profile, patients = request.param
    return scenario_run(tmp_path_factory.mktemp("biased"), seed, profile, "outcome under-recording", patients)


def test_with_no_bias_planted_nothing_fails_and_a_group_under_rated_is_named(fair_run):
    """On the validation patients, a group under-rated by more than 25% (the truth's harm,
    ``Tracking.harmed``) must be named. Over-rating is no harm to the group (the published ranking's
    test below bounds it on 1,000 or more patients); here, in groups of a few hundred, the truth's
    need moves with the undiagnosed disease the extract happened to hold at T0 (need 1 each): seed 2
    'diverse_urban' Asian hypertension tracks at 1.35 (3.8% of its 572 validation patients had it
    undiagnosed against White's 8.6%), and 4 of 181 cells over 1.25 in the study's seeds 121-130 runs
    with no recording planted (docs/fairness.md, "The answer key counts undiagnosed disease as need")."""
    assert not any(gate["fails"] for gate in fair_run.gates.values()), fair_run.as_dict()
    for t in fair_run.tracking:
        print(t.outcome, t.group, t.patients, round(t.tracking, 3))  # shown with -rA
        if t.patients >= 200 and t.tracking < 0.75:  # named by a check, not only as too small to judge
            assert t.group in fair_run.named_for_rating(t.outcome), (t, fair_run.as_dict())


def test_with_no_bias_planted_the_ranking_tracks_the_true_ratio_to_white_or_the_group_is_named(fair_run):
    """Every eligible patient at the extract date, ranked by what ranks the outcome's list (the
    candidate, or QRISK3/QDiabetes where do no harm put it in the model's place): each broad group
    of 1,000 or more ranked (500 or more on 'england'), as a ratio of mean risk to White's, tracks
    the truth's ratio within 25%, or a finding of one of the gate's checks names the group (issue
    22: "Where it cannot, the gate refuses and the report names the group"). Over-rating is held
    to the same 25% (until 2026-12-03 it was allowed up to 1.35): on the simulation study's 40 runs
    with no bias planted on the unseen seeds 241-260 (both profiles), the 157 cells judged at these
    floors tracked at 0.83-1.21, none past either line, and the three cases here at 0.97-1.21.

    Why 500 on 'england': at 20,000 patients no 'england' minority reaches 1,000 eligible patients,
    so the case judged nothing. Measured on the simulation study's 50 'england' runs with no bias
    planted (20,000 patients, seeds 151-200: benchmarks/bench_gate_error_rates.py), per group and
    outcome (600 cells): Asian is the only group of 500 or more (632-814 patients, every run, all
    three outcomes: 150 cells), tracking at 0.753-1.241 (nearest the line: cvd on seed 158, 0.753,
    738 patients, named by the gate); no other group passed 423. Of the 444 cells of 200-499
    patients, 5 tracked over 1.35 (T2D, Mixed or Other, 249-295 patients, up to 1.60) and none
    under 0.75. So at 500 every 'england' run judged three cells and none of the 50 would have
    failed this test (0/50; by the rule of three, a false-failure rate under 6% at 95%). This
    test's seed 1 judges Asian's three cells (648-719 patients), tracking at 0.94-1.15.
    'diverse_urban' keeps the issue's 1,000: 248 cells on its 50 runs of the same seeds, none
    under 0.75 or over 1.35."""
    floor = RANKED_FLOOR[fair_run.profile]
    # what ranks each list: the candidate, or the validated score where the candidate did worse
    judged = [{"outcome": outcome, **r} for outcome in fair_run.gates for r in fair_run.ranking_tracks(outcome)
              if r["patients"] >= floor]
    assert judged, fair_run.as_dict()  # every study run judged some group at its profile's floor
    for r in judged:
        print(r)  # shown with -rA: the measured figures
        if not 0.75 <= r["tracks"] <= 1.25:  # beyond 25% either way: the gate must name it, by a check
            assert r["group"] in fair_run.named_for_rating(r["outcome"]), (r, fair_run.as_dict())


def test_with_no_bias_planted_an_unknown_ethnicity_is_read_as_the_recorded_mix(fair_run):
    """'Not stated' and 'Not known' patients, read as the extract's recorded mix (docs/models.md):
    at the same score the truth's risk is within 15% of the expected, for every outcome. Read as
    White, their T2D statistic was 1.18 (seed 1 'england', Not stated) and 1.21 (seed 3
    'diverse_urban'); with the mix 1.10 and 1.11, and 0.91-1.11 over the 18 cells of the three seeds."""
    unknown = [t for t in fair_run.tracking if t.group in ("Not stated", "Not known") and t.true_at_same_score > 0]
    assert unknown, fair_run.as_dict()
    for t in unknown:
        print(t.outcome, t.group, round(t.true_at_same_score, 3))  # shown with -rA
        assert 0.85 <= t.true_at_same_score <= 1.15, (t, fair_run.as_dict())


def test_under_recorded_outcomes_fail_naming_the_group_and_the_label_choice_check(biased_run):
    assert any(biased_run.failed(outcome, "label choice", "Black") for outcome in biased_run.gates), \
        biased_run.as_dict()
