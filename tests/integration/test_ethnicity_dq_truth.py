"""The ethnicity data-quality report's flags against the generator's truth: with the per-practice
knobs set for some practices (one records no ethnicity for 35% of its patients, one misrecords 30%
of categories), the report flags exactly those practices, for the right reason, on several seeds
and both profiles; on an extract with no practice planted it flags none.

Each extract has 20,000 patients in 4 PCNs (8 practices of about 2,500) and hospital records for
half the patients: misrecording a category can only be seen against a second source (or a local
census table), docs/ethnicity.md. The rates over 20 seeds x 2 profiles are measured by
benchmarks/bench_ethnicity_dq.py (docs/ethnicity.md has the table).
"""

from __future__ import annotations

import pytest

from features.ethnicity_benchmark import census_benchmark
from features.ethnicity_truth import dq_frame, planted_practices
from phm.ethnicity_dq import assess
from phm.synth import SynthConfig, generate

pytestmark = pytest.mark.slow  # four extracts of 20,000 patients: about 8 s

PLANTED = {"ethnicity_unrecorded_practice": {"Z10002": 0.35}, "ethnicity_misrecording_practice": {"Z10005": 0.3}}
REASON = {"Z10002": "not_known_99", "Z10005": "hospital_disagrees"}


@pytest.mark.parametrize("seed,profile,planted", [(11, "england", True), (12, "diverse_urban", True),
                                                  (13, "england", True), (14, "diverse_urban", False)])
def test_the_report_flags_the_planted_practices_and_no_other(tmp_path, seed, profile, planted):
    out = tmp_path / "extract"
    generate(SynthConfig(patients=20_000, seed=seed, profile=profile, pcns=4, hospital_ethnicity=0.5,
                         **(PLANTED if planted else {})), out)
    frame, labels = dq_frame(out)
    benchmark, source = census_benchmark()
    dq = assess(frame, benchmark, source, labels)
    assert dq.judged and len(labels) >= 8
    flagged = {(labels[j.unit], j.indicator) for j in dq.flags}
    truth = planted_practices(out)
    assert {code for code, _ in flagged} == truth
    assert flagged == {(code, REASON[code]) for code in truth}
