"""The package's layout as a rule: stages import only from stages below them, and no module loops.

Layers, lowest first (docs/layout.md): the shared vocabulary, then each stage in the
order data flows through it, then what runs and starts them. A module may import from its own layer
and any lower one, at the top of the file or inside a function alike; imports under TYPE_CHECKING are
type hints only and do not count.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parents[2] / "include" / "candlelake"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("util", "trade", "price", "candle", "exchanges", "config", "coverage"),
    ("sources",),
    ("analytics",),
    ("ingest",),
    ("spark",),
    ("lake",),
    ("stream",),
    ("alerts",),
    ("nightly",),
    ("serve",),
    ("platform",),
    ("runs",),
    ("cli",),
)
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The candlelake modules `path` imports, wherever in the file, except under `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text())
    hints = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in hints:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "candlelake":
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                is_module = (PACKAGE.parent / f"{child.replace('.', '/')}.py").exists() or (
                    PACKAGE.parent / child.replace(".", "/")
                ).is_dir()
                found.add(child if is_module else node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "candlelake"}
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(path): imports(path) - {module_name(path)} for path in sorted(PACKAGE.rglob("*.py"))}


def part(module: str) -> str:
    """`candlelake.nightly.chain` -> `nightly`; the package itself is its own vocabulary."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else "util"


def test_every_top_level_part_has_a_layer() -> None:
    parts = {part(module) for module in graph()} - {"util"}
    assert parts <= set(RANK), f"give these a layer in LAYERS: {sorted(parts - set(RANK))}"


def test_no_import_runs_back_up_a_layer() -> None:
    upward = [
        f"{module} imports {target} ({part(module)} is below {part(target)})"
        for module, targets in graph().items()
        for target in sorted(targets)
        if RANK[part(target)] > RANK[part(module)]
    ]
    assert upward == []


def test_no_module_imports_itself_round_a_loop() -> None:
    edges = graph()
    loops: list[list[str]] = []
    state: dict[str, str] = defaultdict(str)  # "" unseen, "open" on the path, "done"
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = "open"
        path.append(module)
        for target in sorted(edges.get(module, ())):
            if state[target] == "open":
                loops.append([*path[path.index(target) :], target])
            elif state[target] == "":
                visit(target)
        path.pop()
        state[module] = "done"

    for module in sorted(edges):
        if state[module] == "":
            visit(module)
    assert loops == []
