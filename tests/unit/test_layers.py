"""Floors that hold: a module imports only from its own floor or the floors below it.

Bottom to top: ``phm`` (the core library), ``features``, ``models``, ``flows`` (Prefect flows
and the run-level modules: configuration, run record, lock, publish), ``cli`` (the command line).
And a private module (``_name.py``) is imported only from its own floor: what another floor
needs from it is made public by its package (``models.fairness.AuditSettings``).
Every ``import`` and ``from ... import`` in the project's code is read with :mod:`ast`, the ones
inside functions too (a lazy import is still an upward dependency).

What fails: add to phm/disclosure.py the line ::

    from models.scores import qrisk3

and ``test_no_module_imports_from_a_floor_above_its_own`` fails with ::

    phm/disclosure.py:12 imports models.scores (floor models is above phm)

The same for ``from cli.main import main`` anywhere in flows/, models/, features/ or phm/.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FLOORS = ("phm", "features", "models", "flows", "cli")  # bottom to top

# Upward imports that remain to be removed (issue 17). The list only shrinks: an entry that no
# longer happens fails the second test, so it is taken out when the import is.
NOT_YET: set[tuple[str, str]] = set()


def project_imports():
    """(file, line, imported module) for every import of a project package."""
    for floor in FLOORS:
        for path in sorted((ROOT / floor).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue  # relative imports stay inside their own package
                for name in names:
                    if name.split(".")[0] in FLOORS:
                        yield path.relative_to(ROOT).as_posix(), node.lineno, name


def upward_imports() -> list[tuple[str, int, str]]:
    found = []
    for file, line, module in project_imports():
        here, there = FLOORS.index(file.split("/")[0]), FLOORS.index(module.split(".")[0])
        if there > here:
            found.append((file, line, module))
    return found


def test_no_module_imports_from_a_floor_above_its_own():
    upward = [f"{file}:{line} imports {module} (floor {module.split('.')[0]} is above {file.split('/')[0]})"
              for file, line, module in upward_imports() if (file, module) not in NOT_YET]
    assert upward == [], "\n".join(upward)


def test_the_list_of_upward_imports_still_to_remove_only_shrinks():
    still_there = {(file, module) for file, _, module in upward_imports()}
    assert NOT_YET <= still_there, f"remove from NOT_YET: {sorted(NOT_YET - still_there)}"


def test_private_modules_are_imported_only_from_their_own_floor():
    """E.g. ``from models.fairness._settings import AuditSettings`` in flows/config.py fails:
    flows/config.py:39 imports models.fairness._settings (private to models)."""
    private = []
    for file, line, module in project_imports():
        floor = module.split(".")[0]
        if any(part.startswith("_") for part in module.split(".")) and file.split("/")[0] != floor:
            private.append(f"{file}:{line} imports {module} (private to {floor})")
    assert private == [], "\n".join(private)


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The check itself: a core module that imports the command line is reported."""
    package = tmp_path / "phm"
    package.mkdir()
    (package / "bad.py").write_text("def f():\n    from cli.main import main\n    return main\n")
    for floor in FLOORS[1:]:
        (tmp_path / floor).mkdir()
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path)
    assert upward_imports() == [("phm/bad.py", 2, "cli.main")]


def test_one_database_gateway():
    """Only phm/db.py opens DuckDB files, knows where sql/ is and says 'no such database': e.g. a
    ``duckdb.connect(path)`` in models/train.py fails with models/train.py:NN calls duckdb.connect."""
    found = []
    for floor in FLOORS:
        for path in sorted((ROOT / floor).rglob("*.py")):
            file = path.relative_to(ROOT).as_posix()
            if file == "phm/db.py":
                continue
            text = path.read_text(encoding="utf-8")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                        node.func.attr == "connect" and getattr(node.func.value, "id", None) == "duckdb":
                    found.append(f"{file}:{node.lineno} calls duckdb.connect")
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and (
                        node.value == "sql" or "no such database" in node.value):
                    found.append(f"{file}:{node.lineno} has {node.value!r}")
    assert found == [], "\n".join(found)
