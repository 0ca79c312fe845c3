"""The floors a newcomer sees: core at the bottom, then services, then the domains, the command line on top.

Read from the source (every import statement, those inside functions and under TYPE_CHECKING too), so a
circle cannot hide in a function body or behind a module `__getattr__`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "services", "pipeline", "training", "serving", "monitoring", "btcflow")
DOMAINS = ("pipeline", "training", "serving", "monitoring")
# What each floor may import from btcflow's own packages (its own package always).
ALLOWED = {
    "core": set(),
    "services": {"core"},
    "pipeline": {"core", "services"},
    "training": {"core", "services"},
    # training.specs only (the model card: plain data, no pyspark; test_cli checks what --help loads);
    # services.processes for a free port where the gateway is started as a child
    "serving": {"core", "services", "training"},
    "monitoring": {"core", "services", "pipeline", "training", "serving"},
    "btcflow": {"core", "services", *DOMAINS},
    "bench": {"core", "services", *DOMAINS, "btcflow", "bench"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module `path` imports: `from a.b import c` counts a.b, a.b.c when that is a module, and the
    packages above them (a), whose `__init__` runs first."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found | {name.rsplit(".", k)[0] for name in found for k in range(1, name.count(".") + 1)}


def sources(*tops: str) -> dict[str, Path]:
    return {module_name(p): p for top in tops for p in sorted((REPO / top).rglob("*.py"))}


MODULES = sources(*PACKAGES)
GRAPH = {name: {m for m in imports(path) if m in MODULES and m != name} for name, path in MODULES.items()}


@pytest.mark.parametrize("floor", [*PACKAGES, "bench"])
def test_each_floor_imports_only_the_floors_below_it(floor: str) -> None:
    wrong = [
        f"{name} imports {m}"
        for name, path in sources(floor).items()
        for m in sorted(imports(path))
        if m.split(".")[0] in {*PACKAGES, "tests", "bench"}
        and m.split(".")[0] not in ALLOWED[floor] | {floor}
    ]
    assert not wrong, "\n".join(wrong)


def test_no_import_circle() -> None:
    """Tarjan's strongly connected components: any with two modules or more is a circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not circles, circles


def test_no_module_level_getattr_shims() -> None:
    shims = [
        name
        for name, path in MODULES.items()
        for node in ast.parse(path.read_text()).body
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__"
    ]
    assert not shims


def test_the_checks_can_fail() -> None:
    """The circle finder and the import reader on a made-up graph, so a green run means something."""
    global GRAPH
    saved = GRAPH
    GRAPH = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    try:
        with pytest.raises(AssertionError, match=r"\['a', 'b', 'c'\]"):
            test_no_import_circle()
    finally:
        GRAPH = saved
    assert "core.errors" in imports(REPO / "services" / "spark" / "cluster.py")
