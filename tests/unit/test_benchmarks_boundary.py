"""No benchmark reaches into tests/ (issue 21): what both share lives in the package or
in deploy/stack/flight_stack, and a benchmark runs in a checkout without its tests."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TEST_MODULES = {p.stem for p in (REPO / "tests").rglob("*.py")} | {"tests"}


def reaches_into_tests(source: str) -> list[str]:
    """The imports of test modules, and the string 'tests' used in code (a sys.path entry
    or a path built to the tests folder), of one module's source."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in TEST_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in TEST_MODULES:
                found.append(node.module)
        elif isinstance(node, ast.Constant) and node.value == "tests":
            found.append(f"'tests' on line {node.lineno}")
    return found


def test_no_benchmark_imports_from_tests():
    offenders = {
        path.name: found
        for path in sorted((REPO / "benchmarks").glob("*.py"))
        if (found := reaches_into_tests(path.read_text()))
    }
    assert offenders == {}


def test_the_check_finds_the_ways_in():
    assert reaches_into_tests("from stack_helpers import Stack") == ["stack_helpers"]
    assert reaches_into_tests("import compose_support") == ["compose_support"]
    assert reaches_into_tests("sys.path.insert(0, str(REPO / 'tests' / 'stack'))") == [
        "'tests' on line 1"
    ]
    assert reaches_into_tests("from flight_stack.handle import Stack  # tests use it") == []
