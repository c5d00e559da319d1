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


def test_the_report_shows_each_groups_comparison_and_what_ranks_the_list(tmp_path):
    """The fairness report's do-no-harm section (issue 22: "show the per-group comparison with
    QRISK3 and QDiabetes in the report, on the same patients"): per group, both scores' figures,
    their difference with its interval, and the group the model is worse for; counts suppressed."""
    import json

    from models.fairness._report import AuditReport

    comparison = compare({"t2d": validation({"Black": 4.0})}, SETTINGS)["t2d"]
    gate = GateResult("t2d")
    report = AuditReport("Test audit", SETTINGS, [], [gate], None, {}, {},
                         decision=decide([gate], (), {"t2d": comparison}))
    json_path, html_path = report.write(tmp_path)
    data, page = json.loads(json_path.read_text()), html_path.read_text()

    assert data["compared_with_standard"]["t2d"]["ranks_list"] == "QDiabetes-2018"
    assert "the list is ranked by <b>QDiabetes-2018</b>" in page
    black = next(g for g in comparison.groups if g.group == "Black")
    figure = black.figures["calibration error |log O/E|"]
    # counts rounded to 5 (disclosure control), figures to 3 significant digits
    row = (f"<td>Black</td><td>{round(black.patients / 5) * 5:,}</td><td>{round(black.events / 5) * 5:,}</td>"
           f"<td>calibration error |log O/E|</td><td>{figure['model']:.3g}</td><td>{figure['standard']:.3g}</td>"
           f"<td>{figure['difference']:.3g} <span class=note>({figure['low']:.3g} to {figure['high']:.3g})</span></td>"
           "<td>yes</td><td><b>yes</b></td></tr>")
    assert row in page, page[page.find("Do no harm"):][:3000]
    for group in ("White", "Asian"):
        assert f"<td>{group}</td>" in page
