"""The layout stays the architecture: short functions, focused modules, dependencies pointing one way.

Read statically (``ast``), so nothing here imports torch: the rules hold for every import, those
inside functions included, which is where a back-edge usually hides.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("engine", "widgets", "checks", "squeezelab")
# The engine's sub-packages, lowest first: a module may import from its own package and those before it.
ENGINE_ORDER = ("core", "runtime", "quantization", "pruning", "pipeline", "measurement", "train", "explore", "zoo")
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80


def _modules() -> list[Path]:
    return sorted(p for folder in SOURCES for p in (ROOT / folder).rglob("*.py"))


def _engine_package(path: Path) -> str | None:
    parts = path.relative_to(ROOT).parts
    return parts[1] if parts[0] == "engine" and len(parts) > 2 else None


def _imported_package(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if module.startswith("squeezelab.engine.") and len(parts) > 3 else None


def _engine_imports(path: Path) -> list[ast.ImportFrom]:
    tree = ast.parse(path.read_text())
    return [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("squeezelab.engine.")]


def test_no_module_is_longer_than_the_limit():
    long = {str(p.relative_to(ROOT)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}, f"split these modules (over {MAX_MODULE_LINES} lines): {long}"


def test_no_function_is_longer_than_the_limit():
    long = {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(ROOT)}::{node.name}"] = length
    assert long == {}, f"split these functions (over {MAX_FUNCTION_LINES} lines): {long}"


def test_engine_sub_packages_are_the_listed_ones():
    found = {p.name for p in (ROOT / "engine").iterdir() if (p / "__init__.py").exists()}
    assert found == set(ENGINE_ORDER)


def test_engine_dependencies_point_one_way():
    upward = []
    for path in (ROOT / "engine").rglob("*.py"):
        here = _engine_package(path)
        if here is None:
            continue
        for node in _engine_imports(path):
            there = _imported_package(node.module)
            if there is not None and ENGINE_ORDER.index(there) > ENGINE_ORDER.index(here):
                upward.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {node.module}")
    assert upward == [], "imports against the order " + " -> ".join(ENGINE_ORDER) + ":\n" + "\n".join(upward)


@pytest.mark.parametrize("folder", SOURCES)
def test_no_private_name_is_imported_across_packages(folder):
    crossing = []
    for path in (ROOT / folder).rglob("*.py"):
        here = _engine_package(path) if folder == "engine" else folder
        for node in _engine_imports(path):
            if _imported_package(node.module) == here:
                continue
            crossing += [f"{path.relative_to(ROOT)} imports {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert crossing == []

