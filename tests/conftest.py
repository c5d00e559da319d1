from __future__ import annotations

import functools
import gc
import os
from pathlib import Path

import pytest

import tests.hypothesis_settings  # noqa: F401  (loads the Hypothesis profile: ci or dev)

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")  # slow when busy
# One OpenMP thread per process (scikit-learn's gradient boosting): the suite's processes (two
# pytest-xdist workers, servers, pipeline runs in subprocesses) already fill both cores, and
# OpenMP threads spinning against each other made one 3,000-row fit take 12 s instead of 1.3 s.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REFERENCE_DIR = Path(__file__).resolve().parents[2] / "shared" / "reference"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not REFERENCE_DIR.is_dir():
        pytest.fail(f"reference material not found at {REFERENCE_DIR} (CI has ../shared beside the repo)")
    return REFERENCE_DIR


@pytest.fixture(scope="session")
def prefect_test_server():
    """One Prefect test harness (a temporary Prefect server) for every in-process flow of the
    session, as Prefect's testing guide has it, rather than one per module. Its value is the
    server's API URL, for a ``phm run`` in a subprocess to use as an ICS's runs use their server
    (PREFECT_API_URL) instead of starting a temporary server of its own (about 12 s each)."""
    import prefect.settings

    from tests.servers import prefect_harness

    with prefect_harness():
        yield prefect.settings.PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def shared_extract(tmp_path_factory) -> Path:
    """The shared run's extract (tests/shared_run.py): 12,000 patients, 3 PCNs, seed 11, ids
    remapped. Read it; copy it to change it."""
    from tests.shared_run import make_extract

    return make_extract(tmp_path_factory.mktemp("shared-run") / "extract")


@pytest.fixture(scope="session")
def finished_run(shared_extract):
    """The whole pipeline, run once for the session on ``shared_extract`` as ``phm demo`` runs it
    (tests/shared_run.py). Read it; never write into it."""
    from tests.shared_run import run_like_the_demo

    return run_like_the_demo(shared_extract.parent)


@pytest.fixture(scope="session")
def small_synthetic_extract(tmp_path_factory) -> Path:
    """3,000 synthetic patients in 2 PCNs, fixed seed, CSV (the format most sources send)."""
    from phm.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("synth") / "extract"
    generate(SynthConfig(patients=3_000, seed=7, pcns=2, format="csv"), out)
    return out


CODELIST_COVERAGE: list[tuple[str, int, int]] = []


def pytest_runtest_logreport(report):
    """Collect what tests/unit/test_codelists.py records (reports reach this process from every
    pytest-xdist worker, module globals do not)."""
    if report.when == "call":
        CODELIST_COVERAGE.extend(tuple(value) for key, value in report.user_properties if key == "codelist coverage")


def pytest_terminal_summary(terminalreporter):
    """Print how the project's codelists compare with the reference lists (coverage report)."""
    if not CODELIST_COVERAGE:
        return
    terminalreporter.section("codelist coverage against shared/reference/codelists")
    terminalreporter.write_line(f"{'concept':<26}{'project codes':>14}{'reference codes':>17}")
    for concept, ours, theirs in sorted(CODELIST_COVERAGE):
        terminalreporter.write_line(f"{concept:<26}{ours:>14}{theirs:>17}")
    from phm.codelists import project_codelists

    unchecked = sorted(c for c, cl in project_codelists().items() if not cl.references)
    terminalreporter.write_line(f"no reference here (review on OpenCodelists): {', '.join(unchecked)}")


def pytest_collection_finish(session):
    """Freeze what collecting imported (Prefect, MLflow, Great Expectations, scikit-learn: about
    450,000 objects) out of the garbage collector's way. Each ingest asks for two full
    collections (phm/validation.py: GX's DuckDB connections are found and closed that way),
    which then walk only what the tests made: 20 ingests took 43.4 s of CPU instead of 47.3 s,
    and there are about seventy in the fast tier."""
    gc.collect()
    gc.freeze()


SHARED_RUN_FIXTURES = ("finished_run", "shared_extract")


@functools.cache
def reads_the_shared_run(test_file: Path) -> bool:
    text = test_file.read_text(encoding="utf-8")
    return any(name in text for name in SHARED_RUN_FIXTURES)


# Seconds each of the longest units took on an idle 2-core machine (docs/benchmarks.md, "The test
# suite"): handed out first, longest first, so that no long unit starts when the other worker is
# nearly done (a 190 s unit started last leaves a core idle for 190 s). Every other unit counts as
# one second a test.
LONGEST_UNITS = {
    "tests/integration/test_faults.py": 350, "shared run": 250, "tests/integration/test_gate_truth.py": 190,
    "tests/property/test_malformed_extracts.py": 190, "tests/integration/test_fairness_pipeline.py": 160,
    "tests/integration/test_scheduling.py": 130, "tests/integration/test_alerts.py": 90,
    "tests/integration/test_full_disk.py": 45,
}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist (pyproject.toml: -n 2) with every test of a module that reads the session's
    shared run (tests/shared_run.py) in one worker, so the run is made once, and every
    integration module in one worker, so its module-scoped fixtures (a pipeline run, a server)
    are made once; every other test goes to whichever worker is free. Units are handed out
    longest first (LONGEST_UNITS), the rest in collection order. (xdist's own ``--dist
    loadgroup`` marks do not reach pytest 9's node ids.)"""
    if config.getoption("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class LongestFirst(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            if reads_the_shared_run(config.rootpath / module):
                return "shared run"
            return module if module in LONGEST_UNITS or module.startswith("tests/integration/") else nodeid

        def _assign_work_unit(self, node) -> None:
            longest = max(self.workqueue, key=lambda scope: LONGEST_UNITS.get(scope, len(self.workqueue[scope])))
            self.workqueue.move_to_end(longest, last=False)
            super()._assign_work_unit(node)

    return LongestFirst(config, log)


@pytest.fixture(autouse=True)
def no_inherited_tracking_uri(monkeypatch):
    """mlflow.set_tracking_uri also sets MLFLOW_TRACKING_URI in the environment, so a test that
    used a (since stopped) MLflow server would send every later subprocess's run to it."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
