"""The layer drawing in docs/architecture.md is the code's: every module of the package
is on exactly one layer, and in the folder the drawing gives it; each sub-package (a
folder) is wholly on one layer; a module imports only its layer and those below; the
folders that share a layer do not import each other; the modules of one layer import
each other without a circle; and no module imports Airflow."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "src" / "flight_delays"


def module_name(path: Path) -> str:
    """``path``'s module, dotted from the package: ``cli``, ``store.registry``,
    ``store.migrations`` (a sub-package's ``__init__``)."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if p != PACKAGE / "__init__.py"}
FOLDERS = {name for name, path in MODULES.items() if path.name == "__init__.py"}


def folder_of(module: str) -> str:
    """The sub-package a module sits in ("" for the top of the package); a sub-package's
    own ``__init__`` sits in itself."""
    if module in FOLDERS:
        return module
    return module.rpartition(".")[0]


def drawn_layers() -> list[tuple[str, set[str]]]:
    """The drawing's layers, top first: (name, its modules). A line
    ``name : [folder/] a, b, c/`` opens a layer, an indented line without `` : `` goes on
    with it; ``folder/`` puts the names after it in that sub-package (none: the top of the
    package), and a name ending in ``/`` is a sub-package with every module in it."""
    text = (REPO / "docs" / "architecture.md").read_text()
    block = re.search(r"<!-- layers, top first.*?-->\n```text\n(.*?)```", text, re.S)
    assert block, "docs/architecture.md lost its layer drawing"
    layers: list[tuple[str, set[str]]] = []
    for line in block.group(1).splitlines():
        name, sep, members = line.partition(" : ")
        if sep:
            layers.append((name.strip(), set()))
        elif layers and line.startswith(" ") and line.strip():
            members = line
        else:
            continue
        first, _, rest = members.strip().partition(" ")
        folder, names = ("", members)
        if first.endswith("/"):
            folder, names = first[:-1].replace("/", "."), rest
        drawn = layers[-1][1]
        for member in (m.strip() for m in names.split(",")):
            module = f"{folder}.{member}" if folder else member
            if module.endswith("/"):
                sub = module.rstrip("/").replace("/", ".")
                inside = [m for m in MODULES if m == sub or m.startswith(f"{sub}.")]
                assert inside, f"drawn {module!r}: no such sub-package"
                for inner in inside:
                    assert inner not in drawn, f"{inner} drawn twice"
                    drawn.add(inner)
            else:
                assert module not in drawn, f"{module} drawn twice"
                drawn.add(module)
        if folder and folder not in MODULES:
            pytest.fail(f"drawn folder {folder.replace('.', '/')}/ is not a sub-package")
        if folder:
            drawn.add(folder)  # the sub-package's own __init__
    return layers


def imports(module: str) -> set[str]:
    """The package's modules that ``module`` imports (absolute or relative; ``from
    flight_delays.store import io`` is store.io, ``from flight_delays.store.io import x``
    too), each resolved to the longest module name it starts with."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                prefix = ".".join([*base, *([node.module] if node.module else [])])
                targets = [f"{prefix}.{a.name}".lstrip(".") for a in node.names]
            elif node.module == "flight_delays":
                targets = [a.name for a in node.names]
            elif node.module and node.module.startswith("flight_delays."):
                inner = node.module.removeprefix("flight_delays.")
                targets = [f"{inner}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [
                a.name.removeprefix("flight_delays.")
                for a in node.names
                if a.name.startswith("flight_delays.")
            ]
        for target in targets:
            parts = target.split(".")
            for end in range(len(parts), 0, -1):
                if ".".join(parts[:end]) in MODULES:
                    found.add(".".join(parts[:end]))
                    break
    return found - {module}


def levels() -> dict[str, int]:
    layers = drawn_layers()
    return {m: len(layers) - i for i, (_name, drawn) in enumerate(layers) for m in drawn}


def layer_name(module: str) -> str:
    layers = drawn_layers()
    return layers[len(layers) - levels()[module]][0]


def test_every_module_is_on_one_drawn_layer():
    drawn: set[str] = set()
    for _name, modules in drawn_layers():
        assert not drawn & modules, f"drawn on two layers: {sorted(drawn & modules)}"
        drawn |= modules
    assert set(drawn) == set(MODULES), (
        f"not drawn: {sorted(set(MODULES) - set(drawn))}; "
        f"drawn but gone: {sorted(set(drawn) - set(MODULES))}"
    )


def test_each_folder_is_wholly_on_one_layer():
    level = levels()
    spread = {
        folder: sorted(
            {layer_name(m) for m in MODULES if f"{folder_of(m)}.".startswith(f"{folder}.")}
        )
        for folder in FOLDERS
    }
    assert all(len(layers) == 1 for layers in spread.values()), spread
    top = {layer_name(m) for m in MODULES if not folder_of(m)}
    lowest_top = min(level[m] for m in MODULES if not folder_of(m))
    assert all(level[f] < lowest_top for f in FOLDERS), (
        f"the top of the package ({sorted(top)}) must stand above every sub-package"
    )


def test_no_module_imports_a_layer_above_its_own():
    level = levels()
    upward = [
        f"{module} ({layer_name(module)}) imports {dep} ({layer_name(dep)})"
        for module in sorted(MODULES)
        for dep in sorted(imports(module))
        if level[dep] > level[module]
    ]
    assert not upward, upward


def test_the_folders_that_share_a_layer_do_not_import_each_other():
    level = levels()

    def top_folder(module: str) -> str:
        return folder_of(module).split(".")[0]

    across = [
        f"{module} imports {dep}"
        for module in sorted(MODULES)
        for dep in sorted(imports(module))
        if level[dep] == level[module] and top_folder(dep) != top_folder(module)
    ]
    assert not across, across


@pytest.mark.parametrize("layer", [name for name, _modules in drawn_layers()])
def test_the_modules_of_a_layer_import_each_other_without_a_circle(layer):
    modules = set(dict(drawn_layers())[layer])
    edges = {m: imports(m) & modules for m in modules}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"circle: {' -> '.join((*path, module))}"
        if module in done:
            return
        for dep in sorted(edges[module]):
            visit(dep, (*path, module))
        done.add(module)

    for module in sorted(modules):
        visit(module, ())


def test_no_module_imports_airflow():
    found = []
    for module, path in sorted(MODULES.items()):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            found += [f"{module}: {n}" for n in names if n.split(".")[0] == "airflow"]
    assert not found, found


def test_no_step_imports_another_step():
    """What two steps share lives below them (issue 21): a step imports no step."""
    steps = dict(drawn_layers())["steps"]
    found = {step: sorted(imports(step) & steps) for step in steps}
    assert not any(found.values()), {step: got for step, got in found.items() if got}
