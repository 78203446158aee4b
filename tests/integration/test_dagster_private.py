"""Every private Dagster name the project uses resolves in the installed Dagster.

`tenant_pipelines/runtime/dagster_private.py` is the only module that imports `dagster._*`. After
a Dagster upgrade, this test names everything that moved, all at once: each private import is
tried on its own (read from the module's source, so one that fails does not hide the next),
then each name of the module's `__all__`, then the private members its subclasses rely on.
"""

import ast
import importlib
import inspect
from pathlib import Path
from typing import Any

import pytest

import tenant_pipelines.runtime as runtime

pytestmark = pytest.mark.integration

MODULE = "tenant_pipelines.runtime.dagster_private"
SOURCE = Path(runtime.__file__).with_name("dagster_private.py").read_text()
# Where PRIVATE_MEMBERS's classes are found: the module itself, or the public packages.
CLASS_HOMES = (MODULE, "dagster", "dagster_postgres")


def private_imports(source: str) -> list[tuple[str, str]]:
    """(module, name) of every `from dagster._... import name` in `source`."""
    return [
        (node.module, alias.name)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dagster._")
        for alias in node.names
    ]


def assigned_literal(source: str, name: str) -> Any:
    """The literal assigned to module-level `name` in `source`, read without importing it."""
    for node in ast.parse(source).body:
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        if isinstance(target, ast.Name) and target.id == name and node.value is not None:
            return ast.literal_eval(node.value)
    raise LookupError(name)


def missing_imports(imports: list[tuple[str, str]]) -> list[str]:
    missing = []
    for module, name in imports:
        try:
            found = hasattr(importlib.import_module(module), name)
        except ImportError as error:
            missing.append(f"from {module} import {name}: {error}")
            continue
        if not found:
            missing.append(f"from {module} import {name}: no such name")
    return missing


def _find_class(name: str) -> type | None:
    for home in CLASS_HOMES:
        found = getattr(importlib.import_module(home), name, None)
        if isinstance(found, type):
            return found
    return None


def _has_member(cls: type, member: str) -> bool:
    """A class attribute, or an instance attribute that Dagster's own code of the class (or of
    a base) sets: `self.<member> =`."""
    if hasattr(cls, member):
        return True
    for base in cls.__mro__:
        try:
            if f"self.{member} =" in inspect.getsource(base):
                return True
        except (OSError, TypeError):
            continue
    return False


def missing_members(members: dict[str, tuple[str, ...]]) -> list[str]:
    missing = []
    for class_name, names in members.items():
        cls = _find_class(class_name)
        if cls is None:
            missing.append(f"{class_name}: no such class")
            continue
        missing.extend(f"{class_name}.{name}" for name in names if not _has_member(cls, name))
    return missing


def test_every_private_import_resolves() -> None:
    imports = private_imports(SOURCE)
    assert imports, "dagster_private.py imports no private Dagster name"
    missing = missing_imports(imports)
    assert not missing, "private Dagster names that moved:\n" + "\n".join(missing)


def test_every_name_of_the_module_imports() -> None:
    names = assigned_literal(SOURCE, "__all__")
    module = importlib.import_module(MODULE)
    missing = [name for name in names if not hasattr(module, name)]
    assert not missing, f"{MODULE}.__all__ names what it lacks: {missing}"
    assert sorted(names) == sorted(set(names)), "__all__ lists a name twice"


def test_every_private_member_exists() -> None:
    missing = missing_members(assigned_literal(SOURCE, "PRIVATE_MEMBERS"))
    assert not missing, "private members of Dagster's classes that moved:\n" + "\n".join(missing)


def test_a_failed_import_hides_none_of_the_others() -> None:
    """What an upgrade would show: every name that moved, in one failure."""
    source = SOURCE + (
        "\nfrom dagster._core.no_such_module import Gone\n"
        "from dagster._core.launcher import NoSuchLauncher\n"
    )
    missing = missing_imports(private_imports(source))
    assert [line.split(":")[0] for line in missing] == [
        "from dagster._core.no_such_module import Gone",
        "from dagster._core.launcher import NoSuchLauncher",
    ]
    assert missing_members({"RunLauncher": ("_gone",), "NoSuchClass": ()}) == [
        "RunLauncher._gone",
        "NoSuchClass: no such class",
    ]


def test_no_private_import_of_a_public_name() -> None:
    """A name `dagster` exports is imported from there: only what has no public home stays."""
    import dagster

    public = [name for _, name in private_imports(SOURCE) if hasattr(dagster, name)]
    assert not public, f"import these from dagster instead: {public}"
