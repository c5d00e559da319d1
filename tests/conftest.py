from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")  # slow when busy

REFERENCE_DIR = Path(__file__).resolve().parents[2] / "shared" / "reference"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not REFERENCE_DIR.is_dir():
        pytest.fail(f"reference material not found at {REFERENCE_DIR} (CI has ../shared beside the repo)")
    return REFERENCE_DIR


@pytest.fixture(scope="session")
def small_synthetic_extract(tmp_path_factory) -> Path:
    """3,000 synthetic patients in 2 PCNs, fixed seed, CSV (the format most sources send)."""
    from phm.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("synth") / "extract"
    generate(SynthConfig(patients=3_000, seed=7, pcns=2, format="csv"), out)
    return out


def pytest_terminal_summary(terminalreporter):
    """Print how the project's codelists compare with the reference lists (coverage report)."""
    from tests.unit.test_codelists import COVERAGE

    if not COVERAGE:
        return
    terminalreporter.section("codelist coverage against shared/reference/codelists")
    terminalreporter.write_line(f"{'concept':<26}{'project codes':>14}{'reference codes':>17}")
    for concept, ours, theirs in sorted(COVERAGE):
        terminalreporter.write_line(f"{concept:<26}{ours:>14}{theirs:>17}")
    from phm.codelists import project_codelists

    unchecked = sorted(c for c, cl in project_codelists().items() if not cl.references)
    terminalreporter.write_line(f"no reference here (review on OpenCodelists): {', '.join(unchecked)}")


@pytest.fixture(autouse=True)
def no_inherited_tracking_uri(monkeypatch):
    """mlflow.set_tracking_uri also sets MLFLOW_TRACKING_URI in the environment, so a test that
    used a (since stopped) MLflow server would send every later subprocess's run to it."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
