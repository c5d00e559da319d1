from __future__ import annotations

import functools
import gc
import os
import re
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
def prefect_test_server(tmp_path_factory):
    """One Prefect test harness (a temporary Prefect server) for every in-process flow of the
    session, as Prefect's testing guide has it, rather than one per module. Its value is the
    server's API URL, for a ``phm run`` in a subprocess to use as an ICS's runs use their server
    (PREFECT_API_URL) instead of starting a temporary server of its own (about 12 s each). Its
    database is copied as soon as it has started, for ``migrated_prefect_home``."""
    import prefect.settings

    from tests.servers import keep_migrated_database, prefect_harness

    with prefect_harness():
        keep_migrated_database(tmp_path_factory.getbasetemp() / MIGRATED_PREFECT_DB)
        yield prefect.settings.PREFECT_API_URL.value()


MIGRATED_PREFECT_DB = "prefect-migrated.db"  # in this worker's own folder


@pytest.fixture(scope="session")
def migrated_prefect_home(prefect_test_server, tmp_path_factory):
    """``make(folder)``: ``folder`` made a PREFECT_HOME of its own whose database (``prefect.db``,
    Prefect's default file name there) is a copy of the session's harness database as it started:
    migrated, no runs. A server started on it (a ``phm run``'s temporary server, ``prefect server
    start``) skips Prefect's SQLite migrations, about 8 s of CPU each on a 2-core machine; the
    tests that keep a home truly fresh (test_orphans, test_temporary_server) do not use it. Each
    worker starts the harness anyway (the kill test, the Dask run, the CLI tests need it)."""
    import shutil

    template = tmp_path_factory.getbasetemp() / MIGRATED_PREFECT_DB

    def make(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, folder / "prefect.db")
        return folder

    return make


def made_once(tmp_path_factory, name: str, make, in_folder: str = "shared-run") -> Path:
    """``make(folder)`` (``name``: what it makes) run once for the whole session, by whichever
    pytest-xdist worker asks first, in a folder beside the workers' own; a worker that asks while it is being made waits
    for it, and one that asks later reads it. (Each worker is its own process with its own
    session fixtures: without this, two workers reading the shared run would make it twice.)
    A failure is kept, so the other worker fails at once rather than making it again."""
    import fcntl

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, whose popen-gw<N> are the workers' own
    folder, done, failed = root / in_folder, root / f"{name}.done", root / f"{name}.failed"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        if failed.exists():
            pytest.fail(f"{name} could not be made (in another worker): {failed.read_text()[-3000:]}")
        if not done.exists():
            try:
                make(folder)
            except BaseException as exc:
                failed.write_text(f"{type(exc).__name__}: {exc}")
                raise
            done.touch()
    return folder


@pytest.fixture(scope="session")
def shared_extract(tmp_path_factory) -> Path:
    """The shared run's extract (tests/shared_run.py): 12,000 patients, 3 PCNs, seed 11, ids
    remapped. Read it; copy it to change it."""
    from tests.shared_run import make_extract

    return made_once(tmp_path_factory, "shared-extract", lambda folder: make_extract(folder / "extract")) / "extract"


@pytest.fixture(scope="session")
def finished_run(shared_extract, migrated_prefect_home, tmp_path_factory):  # shared_extract: made first, same folder
    """The whole pipeline, run once for the session on ``shared_extract`` as ``phm demo`` runs it
    (tests/shared_run.py), whichever worker asks first (``made_once``), its Prefect home given a
    migrated database (``migrated_prefect_home``). Read it; never write into it."""
    from tests.shared_run import FinishedRun, run_like_the_demo

    def make(folder: Path) -> FinishedRun:
        migrated_prefect_home(folder / "prefect-home")  # the home run_like_the_demo gives the run
        return run_like_the_demo(folder)

    return FinishedRun(made_once(tmp_path_factory, "shared-run", make))


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


SHARED_RUN_FIXTURES = re.compile(r"\b(finished_run|shared_extract)\b")
MODULE_FIXTURE = re.compile(r'@pytest\.fixture\(scope="module"(, params=)?')


@functools.cache
def reads_the_shared_run(test_file: Path) -> bool:
    return bool(SHARED_RUN_FIXTURES.search(test_file.read_text(encoding="utf-8")))


@functools.cache
def module_fixtures(test_file: Path) -> tuple[bool, bool]:
    """(has module-scoped fixtures, some of them parametrised)."""
    found = MODULE_FIXTURE.findall(test_file.read_text(encoding="utf-8"))
    return bool(found), any(found)


# Seconds each of the longest units took (a module's, a module's shared out over its units, or one
# test's; the suite of 2026-11-30 11:50 with CI=true, docs/benchmarks.md "The test suite"): handed
# out first, longest first, so that no long unit starts when the other worker is nearly done (a
# 190 s unit started last leaves a core idle for 190 s). Every other unit counts as one second a
# test.
FAIRNESS = "tests/integration/test_fairness_pipeline.py::test_"
LONGEST_UNITS = {
    "tests/integration/test_faults.py": 300, "tests/integration/test_gate_truth.py": 200,
    "tests/property/test_malformed_extracts.py": 150, "tests/integration/test_scheduling.py": 105,
    "tests/integration/test_scale_out.py": 90, "tests/integration/test_alerts.py": 65,
    "tests/integration/test_training.py": 50, "tests/integration/test_full_disk.py": 15,
    "tests/integration/test_clinical_meaning.py": 15,
    FAIRNESS + "reviewer_finds_the_audit_in_mlflow_and_reads_the_report_in_a_browser": 55,
    FAIRNESS + "under_recorded_outcomes_fail_naming_the_group_and_the_label_choice_check": 40,
    FAIRNESS + "a_measurement_access_gap_is_flagged_in_the_report": 30,
}
SHARED_RUN_SECONDS = 90  # making the session's shared run (tests/shared_run.py), paid by its first reader


def unit_seconds(scope: str, tests: int) -> float:
    """A unit's expected seconds: its own figure, else its module's shared out over the units of
    that module (a parametrised fixture's units, a module's tests), else one second a test."""
    module = scope.split("::", 1)[0].split("[", 1)[0]
    return LONGEST_UNITS.get(scope, LONGEST_UNITS.get(module, tests) / UNITS_PER_MODULE.get(module, 1))


UNITS_PER_MODULE: dict[str, int] = {}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist (pyproject.toml: -n 2) handing out units of work longest first (LONGEST_UNITS):
    a module with module-scoped fixtures (a pipeline run, a server) is one unit, so they are
    made once, or one unit per parameter where those fixtures are parametrised (the truth
    tests' seeds); every other test is a unit of its own. The session's shared run
    (tests/shared_run.py) is made once for both workers (``made_once``): its first reader is
    handed out early, and no other reader goes to the other worker until a reader has finished,
    so that worker never waits for it while there is other work. (xdist's own ``--dist
    loadgroup`` marks do not reach pytest 9's node ids.)"""
    if config.getoption("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    made = config._tmp_path_factory.getbasetemp()  # the workers' folders are in it, and made_once's

    class LongestFirst(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            fixtures, parametrised = module_fixtures(config.rootpath / module)
            if not fixtures:
                return nodeid
            if parametrised and nodeid.endswith("]"):
                return module + "[" + nodeid.rsplit("[", 1)[1]
            return module

        def _reads_the_shared_run(self, scope: str) -> bool:
            return reads_the_shared_run(config.rootpath / scope.split("::", 1)[0].split("[", 1)[0])

        def _assign_work_unit(self, node) -> None:
            if not UNITS_PER_MODULE:
                for scope in self.workqueue:
                    module = scope.split("::", 1)[0].split("[", 1)[0]
                    UNITS_PER_MODULE[module] = UNITS_PER_MODULE.get(module, 0) + 1
            elsewhere = any(self._reads_the_shared_run(scope) for other, work in self.assigned_work.items()
                            if other is not node for scope in work)
            started = elsewhere or any(self._reads_the_shared_run(scope) for scope in self.assigned_work.get(node, {}))

            def seconds(scope: str) -> float:
                own = unit_seconds(scope, len(self.workqueue[scope]))
                return own + SHARED_RUN_SECONDS if self._reads_the_shared_run(scope) and not started else own

            units = list(self.workqueue)
            if elsewhere and not (made / "shared-run.done").exists():  # being made there: do not wait here
                units = [scope for scope in units if not self._reads_the_shared_run(scope)] or units
            self.workqueue.move_to_end(max(units, key=seconds), last=False)
            super()._assign_work_unit(node)

    return LongestFirst(config, log)


@pytest.fixture(autouse=True)
def no_inherited_tracking_uri(monkeypatch):
    """mlflow.set_tracking_uri also sets MLFLOW_TRACKING_URI in the environment, so a test that
    used a (since stopped) MLflow server would send every later subprocess's run to it."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
