"""The garbage collector's freezes (phm/collector.py): for good in the phm command's own
process only, and a block's freeze undone after it unless the process froze for good.

What fails: drop the ``if not _frozen_for_good`` in ``frozen_meanwhile`` and the command's
freeze is undone by ingest's validation (every module's objects back in the collector's walks),
which ``test_a_freeze_for_good_outlives_a_blocks_freeze`` catches; make ``cli.main`` freeze
without checking ``_OWN_PROCESS`` and a test process (which runs many commands in-process)
keeps every object alive at the time for the rest of the session, which
``test_commands_called_in_process_leave_the_collector_as_it_was`` catches.
"""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import pytest

from phm import collector

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def collector_restored(monkeypatch):
    """Whatever a test freezes or pauses is undone after it, as the suite's other tests expect."""
    monkeypatch.setattr(collector, "_frozen_for_good", False)
    yield
    gc.unfreeze()
    gc.enable()


def test_a_blocks_freeze_is_undone_after_it(collector_restored):
    kept = []
    with collector.frozen_meanwhile():
        assert gc.get_freeze_count() > 0
        kept.append([])  # made inside the block: not frozen, so the block's collections see it
        assert gc.is_tracked(kept[-1])
    assert gc.get_freeze_count() == 0


def test_a_freeze_for_good_outlives_a_blocks_freeze(collector_restored):
    gc.disable()
    collector.freeze_for_good()
    assert gc.isenabled()  # collection resumes once the imports are frozen
    frozen = gc.get_freeze_count()
    assert frozen > 0
    with collector.frozen_meanwhile():
        pass
    assert gc.get_freeze_count() >= frozen  # still frozen: ingest's validation does not undo it


def test_commands_called_in_process_leave_the_collector_as_it_was(collector_restored, monkeypatch):
    import cli.main as cli_main

    monkeypatch.setattr(cli_main, "_OWN_PROCESS", False)  # as in any test calling main()
    gc.unfreeze()
    cli_main._collect_after_imports()
    cli_main._freeze_imported_objects()
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0
    assert collector._frozen_for_good is False


def test_the_command_exits_cleanly_with_its_objects_frozen():
    """``before_exit`` freezes everything before the interpreter's shutdown: the command's own
    output and exit code are as before (the pipeline's subprocess tests run whole runs this way)."""
    done = subprocess.run([sys.executable, "-m", "cli", "contract"], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "patients" in done.stdout and done.stderr == ""


def test_a_scheduled_runs_process_freezes_the_stages_modules_for_good():
    """A scheduled run's process (the Prefect worker starts one per flow run) imports what the
    stages need and freezes it, as ``phm run`` does (flows/deployments.py)."""
    probe = ("import gc, sys; from flows.deployments import _freeze_stage_imports; from phm import collector; "
             "_freeze_stage_imports(); "
             "print(gc.isenabled(), gc.get_freeze_count() > 100_000, collector._frozen_for_good, "
             "'mlflow.sklearn' in sys.modules, 'sklearn.ensemble' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True"] * 5
