"""Do no harm against the standard (models/fairness/_standard.py) on small hand-made tables: a
trained model worse than QDiabetes for one group on the same validation patients does not become
champion, and the validated score ranks that outcome's list."""

from __future__ import annotations

import numpy as np
import polars as pl

from models.fairness import AuditSettings
from models.fairness._decision import decide
from models.fairness._gate import GateResult
from models.fairness._standard import compare

SETTINGS = AuditSettings(replicates=300, seed=1)


def validation(model_factor: dict[str, float], n: int = 12_000, seed: int = 2) -> pl.DataFrame:
    """Patients whose outcome is drawn from the standard's risk (the standard is right); the
    model's risk is the standard's, divided by ``model_factor[group]`` for some groups."""
    rng = np.random.default_rng(seed)
    group = rng.choice(np.array(["White", "Asian", "Black"]), n, p=[0.6, 0.25, 0.15])
    standard = np.clip(rng.beta(2, 25, n), 1e-4, 0.9)
    outcome = (rng.random(n) < standard).astype(np.int8)
    model = standard.copy()
    for g, factor in model_factor.items():
        model = np.where(group == g, model / factor, model)
    return pl.DataFrame({"group": group, "score": model, "standard": standard, "outcome": outcome})


def test_a_model_worse_than_the_standard_for_one_group_is_not_used_and_the_report_says_why():
    comparison = compare({"t2d": validation({"Black": 4.0})}, SETTINGS)["t2d"]
    assert comparison.model_is_worse and comparison.ranks_list == "QDiabetes-2018"
    worse = {g.group: g.worse for g in comparison.groups}
    assert worse["Black"] and not worse["White"] and not worse["Asian"]
    assert any("for Black, the trained model's" in r for r in comparison.reasons())
    decision = decide([GateResult("t2d")], (), {"t2d": comparison})
    assert decision.may_publish("t2d")  # the list goes out ...
    assert not decision.becomes_champion("t2d")  # ... ranked by QDiabetes, not the model
    assert decision.ranks_list("t2d") == "QDiabetes-2018"


def test_a_model_as_good_as_the_standard_ranks_its_list():
    comparison = compare({"t2d": validation({})}, SETTINGS)["t2d"]
    assert not comparison.model_is_worse and comparison.ranks_list == "model"
    decision = decide([GateResult("t2d")], (), {"t2d": comparison})
    assert decision.becomes_champion("t2d")
