"""The layer drawing in docs/architecture.md is the code's: every module of the package
is on exactly one layer, imports only its layer and those below, and the modules of one
layer import each other without a circle."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "src" / "flight_delays"


def drawn_layers() -> list[tuple[str, set[str]]]:
    text = (REPO / "docs" / "architecture.md").read_text()
    block = re.search(r"<!-- layers, top first.*?-->\n```\n(.*?)```", text, re.S)
    assert block, "docs/architecture.md lost its layer drawing"
    layers = []
    for line in block.group(1).splitlines():
        name, sep, modules = line.partition(" : ")
        if sep:
            layers.append((name.strip(), {m.strip() for m in modules.split(",")}))
    return layers


def imports(path: Path) -> set[str]:
    """The package's modules ``path`` imports (from flight_delays import x; import
    flight_delays.x; from flight_delays.x import y)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "flight_delays":
                found |= {alias.name for alias in node.names}
            elif node.module.startswith("flight_delays."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {
                a.name.split(".")[1] for a in node.names if a.name.startswith("flight_delays.")
            }
    return found - {path.stem}


def test_every_module_is_on_one_drawn_layer():
    drawn = [m for _name, modules in drawn_layers() for m in modules]
    assert len(drawn) == len(set(drawn)), "a module is drawn on two layers"
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert set(drawn) == modules, (
        f"not drawn: {sorted(modules - set(drawn))}; drawn but gone: {sorted(set(drawn) - modules)}"
    )


def test_no_module_imports_a_layer_above_its_own():
    layers = drawn_layers()
    level = {m: len(layers) - i for i, (_name, modules) in enumerate(layers) for m in modules}
    upward = [
        f"{module} ({layers[len(layers) - level[module]][0]}) imports {dep} "
        f"({layers[len(layers) - level[dep]][0]})"
        for module in level
        for dep in sorted(imports(PACKAGE / f"{module}.py"))
        if dep in level and level[dep] > level[module]
    ]
    assert not upward, upward


@pytest.mark.parametrize("layer", [name for name, _modules in drawn_layers()])
def test_the_modules_of_a_layer_import_each_other_without_a_circle(layer):
    modules = dict(drawn_layers())[layer]
    edges = {m: imports(PACKAGE / f"{m}.py") & modules for m in modules}
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
