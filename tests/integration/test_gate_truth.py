"""The fairness gate against the generator's truth, on three seeds and both ethnicity profiles.

Each case generates a 20,000-patient extract (one PCN) and takes it through ingest, features,
training and the audit (models/fairness/truth.py, the same function the simulation study in
benchmarks/bench_gate_error_rates.py uses). The truth says, for each outcome and group, whether
the model harms the group (its risk relative to White under-rates the true ratio by more than
25%, or at the same score the group's true risk is more than 1.25 times the expected):

- with no bias planted, a FAIL is only ever where the truth shows harm for that outcome; and
  where the model does not track the truth at the same score, the report names the group;
- with Black African patients' diagnoses and events recorded at 60%, the gate FAILs, naming the
  Black group and the label-choice check.

The simulation study measures how often each happens over many seeds (docs/fairness.md).
"""

from __future__ import annotations

import pytest

from models.fairness.truth import scenario_run

pytestmark = pytest.mark.slow
PATIENTS = 20_000
FAIR = [(1, "england"), (2, "diverse_urban"), (3, "england")]
BIASED = [(4, "diverse_urban"), (5, "england"), (6, "diverse_urban")]


@pytest.fixture(scope="module", params=FAIR, ids=lambda c: f"seed{c[0]}-{c[1]}")
def fair_run(request, tmp_path_factory):
    seed, profile = request.param
    return scenario_run(tmp_path_factory.mktemp("fair"), seed, profile, "no bias", PATIENTS)


@pytest.fixture(scope="module", params=BIASED, ids=lambda c: f"seed{c[0]}-{c[1]}")
def biased_run(request, tmp_path_factory):
    seed, profile = request.param
    return scenario_run(tmp_path_factory.mktemp("biased"), seed, profile, "outcome under-recording", PATIENTS)


def test_with_no_bias_planted_a_fail_is_only_where_the_truth_shows_harm(fair_run):
    for outcome, gate in fair_run.gates.items():
        if gate["fails"]:
            assert fair_run.harmed(outcome), (outcome, gate["fails"], fair_run.as_dict()["tracking"])


def test_under_recorded_outcomes_fail_naming_the_group_and_the_label_choice_check(biased_run):
    assert any(biased_run.failed(outcome, "label choice", "Black") for outcome in biased_run.gates), \
        biased_run.as_dict()
