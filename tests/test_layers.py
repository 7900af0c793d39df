"""The package's architecture, checked from its source: layers that import only downwards, no import
circle, small modules and functions (docs/contributing.md's table is the same list)."""

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parents[1] / "bnbench"

# Lowest first: a module may import its own layer and those before it, never one after it.
LAYERS = ("errors", "options", "norm", "kernels", "data", "experiment", "models", "training", "engine", "results", "stats",
          "profiling", "sweeping", "reporting", "cli")
# The facade (lazy names, PEP 562) and ``python -m bnbench`` sit above every layer.
ABOVE_ALL = ("__init__", "__main__")
MAX_TOP_MODULES = 12
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str:
    """``bnbench.engine.blocks`` -> ``engine``; ``bnbench`` (the facade) -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> set[str]:
    """Every bnbench module ``path`` imports, at its top or inside a function (a lazy import is still a
    dependency)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update(f"{node.module}.{alias.name}" if _is_module(f"{node.module}.{alias.name}") else node.module
                         for alias in node.names)
    return {name for name in found if name == "bnbench" or name.startswith("bnbench.")}


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


SOURCES = sorted(PACKAGE.rglob("*.py"))
GRAPH = {_module_name(path): _imports(path) for path in SOURCES}


def test_every_module_belongs_to_a_layer():
    assert {_layer(m) for m in GRAPH} <= {*LAYERS, *ABOVE_ALL}


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if _layer(m) not in ABOVE_ALL))
def test_no_module_imports_a_layer_above_its_own(module):
    own = LAYERS.index(_layer(module))
    upward = sorted(name for name in GRAPH[module] if _layer(name) in ABOVE_ALL or LAYERS.index(_layer(name)) > own)
    assert not upward, f"{module} (layer {_layer(module)}) imports {upward}"


def test_no_import_circle():
    """Depth-first search over the module graph (a package's ``__init__`` counts as the package)."""
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for name in sorted(GRAPH.get(module, ())):
            if state.get(name) == 1:
                raise AssertionError("import circle: " + " -> ".join([*path[path.index(name):], name]))
            if name in GRAPH and name not in state:
                visit(name, [*path, name])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])


def test_the_top_folder_holds_few_modules():
    assert len(list(PACKAGE.glob("*.py"))) <= MAX_TOP_MODULES


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_functions_stay_short(path):
    text = path.read_text()
    lines = len(text.splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.name}: {lines} lines"
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(ast.parse(text))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{path.name}: {long}"
