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



# --- Imports: no module cycle, and no import inside a function but the lazy loading of a heavy package ---

# Packages a module may import inside a function, so that importing the module stays cheap: torch (the
# facade, the configs, the CLI's --help and the pytest plugin load without it), ONNX and ONNX Runtime, the
# widget stack, Hugging Face, and the optional or slow-to-import libraries.
LAZY_PACKAGES = {
    "torch", "torch_pruning", "onnx", "onnxruntime", "onnxscript", "plotly", "ipywidgets", "anywidget", "IPython",
    "transformers", "tokenizers", "safetensors", "sklearn", "scipy", "pandas", "tqdm", "dask", "distributed",
    "nbformat", "nbclient", "tomli_w",
}
# Modules that must import without torch (tests/test_lean_import.py; the CLI's --help): they may import
# squeezelab's engine modules (which load torch) and numpy inside a function.
LEAN_MODULES = ("squeezelab.cli", "squeezelab._cmd_", "squeezelab.widgets.", "squeezelab.checks.")
LEAN_LAZY = {"squeezelab", "numpy"}
# Imports inside functions that are neither heavy nor lean-module lazy loads, each with its reason: a module ->
# the modules it imports in a function. The test fails on an entry that is no longer needed.
KNOWN_FUNCTION_IMPORTS: dict[str, set[str]] = {
    "squeezelab.engine.runtime.stages": {"resource"},  # POSIX only: reached where /proc is missing
}
# Import cycles allowed, each the sorted modules in it: none.
KNOWN_CYCLES: set[tuple[str, ...]] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts if parts[0] == "squeezelab" else ["squeezelab", *parts])


MODULES = {_module_name(p): p for p in _modules()}


def _imported(node: ast.Import | ast.ImportFrom) -> list[str]:
    """The modules an import statement names (for ``from a import b``: ``a``, and ``a.b`` when b is a module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level or not node.module:
        return []
    return [node.module, *(f"{node.module}.{alias.name}" for alias in node.names if f"{node.module}.{alias.name}" in MODULES)]


def _imports(path: Path) -> tuple[list[tuple[ast.AST, str]], list[tuple[ast.AST, str]]]:
    """(every import with the module it names, the imports inside functions), ``if TYPE_CHECKING:`` blocks left out."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
                   for stmt in block.body for n in ast.walk(stmt)}
    every, inside = [], []
    for fn in [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))]:
        body = fn.body if fn is tree else [fn]
        for node in (n for stmt in body for n in ast.walk(stmt)):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in typing_only:
                for name in _imported(node):
                    (every if fn is tree else inside).append((node, name))
    return every, inside


def _import_graph() -> dict[str, set[str]]:
    return {name: {m for _, m in _imports(path)[0] if m in MODULES and m != name} for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[tuple[str, ...]] = set()
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.add(tuple(sorted(component)))
    return found


def test_the_cycle_finder_finds_a_cycle_through_three_modules():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert _cycles(graph) == {("a", "b", "c")}


def test_no_module_imports_itself_back():
    cycles = _cycles(_import_graph())
    assert cycles - KNOWN_CYCLES == set(), "import cycles (imports inside functions included): " + str(sorted(cycles - KNOWN_CYCLES))
    assert KNOWN_CYCLES - cycles == set(), "these cycles are gone: remove them from KNOWN_CYCLES"


def test_imports_inside_functions_only_load_heavy_packages_lazily():
    found: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        for node, module in _imports(path)[1]:
            top = module.split(".")[0]
            if top in LAZY_PACKAGES or (top in LEAN_LAZY and name.startswith(LEAN_MODULES)):
                continue
            if isinstance(node, ast.ImportFrom) and module != node.module:
                continue  # `from a import b`: judged by a
            found.setdefault(name, set()).add(module)
    unexpected = {m: sorted(names - KNOWN_FUNCTION_IMPORTS.get(m, set())) for m, names in found.items()}
    assert {m: n for m, n in unexpected.items() if n} == {}, "move these imports to the top of the module"
    stale = {m: sorted(names - found.get(m, set())) for m, names in KNOWN_FUNCTION_IMPORTS.items() if m in MODULES}
    assert {m: n for m, n in stale.items() if n} == {}, "these imports moved up: remove them from KNOWN_FUNCTION_IMPORTS"
