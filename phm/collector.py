"""The cyclic garbage collector in a long command: what is frozen out of its view, and when.

CPython's full collections walk every container object alive. A run imports about 490,000 of
them (Prefect, MLflow, Great Expectations, scikit-learn...) that live as long as the process,
so each full collection walked them again: a 2,000-patient ``phm run`` spent about 3 s of CPU in
collections, and 2-3 s more in the interpreter's collections at exit (perf: ``gc_collect_main``),
after its work was done (``before_exit``).

``freeze_for_good`` is for a process of the run's own (``phm``'s entry point, cli/main.py; a
scheduled run's, flows/deployments.py), once the modules a run needs are imported: everything
alive is frozen (``gc.freeze``) for the rest of the process. Objects freed by reference counting
are freed as before; only cyclic garbage among the frozen would be kept, and the frozen are
mostly the modules. A test's process runs many commands and must not keep their objects, so it
never calls it.

``frozen_meanwhile`` freezes what is alive for a block that collects what it made (ingest's
validation finds Great Expectations' DuckDB connections that way, phm/validation.py) and
unfreezes after it, unless the process froze for good: then what was frozen stays frozen.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_frozen_for_good = False


def freeze_for_good() -> None:
    """Freeze every object alive for the rest of the process; collection resumes
    (``collect_later`` may have paused it). Not collected first: the imports leave about 1,500
    objects of garbage, and a collection to find them walks all 500,000 (0.45 s)."""
    global _frozen_for_good
    gc.freeze()
    gc.enable()
    _frozen_for_good = True


def collect_later() -> None:
    """No cyclic collection until ``freeze_for_good``: while a run imports its modules, objects
    that will live as long as the process arrive by the hundred thousand, and collecting as they
    come walked them again and again (9 full collections, 1.4 s of a 2,000-patient run's CPU)."""
    gc.disable()


def before_exit() -> None:
    """The phm command's last step: the interpreter's shutdown then runs full collections over
    every object still alive, 2-3 s of CPU after a run, to free memory that the system takes
    back anyway when the process ends. Frozen, those collections find nothing to walk. Exit
    handlers (Prefect's, the temporary files') run as before."""
    gc.freeze()


@contextmanager
def frozen_meanwhile() -> Iterator[None]:
    """Everything alive now frozen for the block, so the block's collections walk only what it
    made; unfrozen after it unless the process froze for good."""
    gc.freeze()
    try:
        yield
    finally:
        if not _frozen_for_good:
            gc.unfreeze()
