"""The package's layering, read from the source (``ast``; nothing of ``dvt_search`` is imported).

Every ``import`` statement of every module under ``dvt_search/`` counts, wherever it is: module level,
inside functions (lazy imports), under ``if TYPE_CHECKING:``; the one exception is the cycle rule, for
which type-only imports (under ``if TYPE_CHECKING:``) do not count, because they never execute and so
cannot take part in an import-time circle. Imports by string
(``importlib.import_module(name)``, as the CLI and the family registry do) are not seen: they are the
sanctioned way for a low room to load a plug-in it does not depend on.

How an import becomes an edge between modules:

* relative imports are resolved against the importing module's package (``__init__`` is its own package);
* ``import a.b.c`` is an edge to ``a.b.c``;
* ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, otherwise to ``pkg``
  (the package ``__init__``, where ``name`` is defined or re-exported);
* a name that is not a module of ``dvt_search`` (numpy, ray, ...) is kept only for the Ray rule.

A cycle is any strongly connected set of two or more modules. No edge is exempt, not even a
submodule's import of its own parent package: Python runs ``pkg/__init__`` before any ``pkg.sub``, so a
parent that imports a child which imports the parent either fails at import time ("partially
initialized module") or, when one side is a lazy function-level import, only works because of the order
the code happens to run in. The registry pattern (``families/__init__`` loads the family modules through
``importlib``; they import ``register`` from it) makes no edge back and so no cycle; a parent that is a
pure facade (re-exports only) makes none either as long as its children import their siblings directly
rather than through the facade.

Rooms: ``dvt_search.<room>...``; top-level modules (``cli``, ``demo``, ``cli_util``, ``fsutil``) are rooms
of their own, and the root package ``dvt_search`` (it holds the version) may be imported by all.

Rules: (a) Ray (``ray``, ``ray.*``) only in ``runtime``; (b) ``data`` imports only ``data`` and
``fsutil``; (c) no import cycle between modules; (d) a room imports only rooms listed for it in
:data:`ALLOWED`. Each rule is also run on a synthetic package written to ``tmp_path`` (it must catch the
bug it is about).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "dvt_search"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / PACKAGE

#: The root package ``dvt_search`` itself (``__version__``): importable from every room.
ROOT = PACKAGE

#: Which rooms each room may import (its own room always). Derived from the code, lowest first:
#: fsutil, cli_util (leaves) < data < engine < families < search < rundir < runtime;
#: stats uses engine; selection, report, deploy sit above stats; cli and demo are the top.
_LOW = {"fsutil", "cli_util"}
ALLOWED: dict[str, set[str]] = {
    ROOT: set(),
    "fsutil": set(),
    "cli_util": set(),
    "data": {"fsutil"},
    "engine": _LOW | {"data"},
    "families": _LOW | {"data", "engine"},
    "search": _LOW | {"data", "engine", "families"},
    "rundir": _LOW | {"data", "engine", "families", "search"},
    "runtime": _LOW | {"data", "engine", "families", "search", "rundir"},
    "stats": _LOW | {"engine"},
    "selection": _LOW | {"data", "engine", "families", "rundir", "stats"},
    "report": _LOW | {"data", "engine", "families", "rundir", "stats", "selection"},
    "deploy": _LOW | {"data", "engine", "families", "rundir", "stats", "selection"},
    "cli": _LOW
    | {"data", "engine", "families", "search", "rundir", "runtime", "stats", "selection", "report", "deploy"},
    "demo": _LOW
    | {
        "data",
        "engine",
        "families",
        "search",
        "rundir",
        "runtime",
        "stats",
        "selection",
        "report",
        "deploy",
        "cli",
    },
}

#: Violations in today's code, allowed here only until they are fixed (the lead empties this set; an
#: entry that no longer occurs fails ``test_known_violations_still_occur`` so it cannot linger).
KNOWN_VIOLATIONS: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Edge:
    """One import: ``source`` module imports ``target`` (a module of the package, or a foreign name)."""

    source: str
    target: str
    line: int
    internal: bool
    type_only: bool = False  # under ``if TYPE_CHECKING:``: never executed

    def where(self, graph: Graph) -> str:
        """``dvt_search/<path>.py:<line>`` of the import statement."""
        return f"{graph.paths[self.source].relative_to(graph.root).as_posix()}:{self.line}"


@dataclass
class Graph:
    """Modules of one package (name -> file) and every import edge between them."""

    root: Path
    paths: dict[str, Path]
    edges: list[Edge]

    def internal(self, *, executed_only: bool = False) -> dict[str, set[str]]:
        """Module -> the package modules it imports (``executed_only``: without type-only imports)."""
        out: dict[str, set[str]] = {m: set() for m in self.paths}
        for e in self.edges:
            if e.internal and e.target != e.source and not (executed_only and e.type_only):
                out[e.source].add(e.target)
        return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """``id`` of every node inside an ``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``) block."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                for child in node.body:
                    inside.update(id(n) for n in ast.walk(child))
    return inside


def _modules(package_dir: Path) -> dict[str, Path]:
    top = package_dir.name
    found = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = [top, *path.relative_to(package_dir).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _nearest_module(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def build_graph(package_dir: Path) -> Graph:
    """Parse every module under ``package_dir`` (a package directory) into an import graph."""
    top = package_dir.name
    modules = _modules(package_dir)
    edges = []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        type_only = _type_checking_nodes(tree)
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")
                    if node.level - 1 >= len(parts):
                        raise ValueError(
                            f"{path}:{node.lineno}: relative import beyond the top-level package"
                        )
                    base = ".".join(parts[: len(parts) - node.level + 1])
                    base = f"{base}.{node.module}" if node.module else base
                else:
                    base = node.module or ""
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            for target in targets:
                if target == top or target.startswith(top + "."):
                    resolved = _nearest_module(target, modules)
                    if resolved is None:
                        raise ValueError(
                            f"{path}:{node.lineno}: imports {target}, which is not in {package_dir}"
                        )
                    edges.append(Edge(name, resolved, node.lineno, True, id(node) in type_only))
                else:
                    edges.append(Edge(name, target, node.lineno, False, id(node) in type_only))
    return Graph(package_dir.parent, modules, edges)


def room_of(module: str) -> str:
    """``dvt_search.data.schema`` -> ``data``; ``dvt_search.cli`` -> ``cli``; ``dvt_search`` -> itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


# ------------------------------------------------------------------------------------------------ rules
def ray_outside_runtime(graph: Graph) -> list[str]:
    """(a) ``ray`` / ``ray.*`` imported by a module outside the ``runtime`` room."""
    return [
        f"ray: {e.source} imports {e.target} ({e.where(graph)})"
        for e in graph.edges
        if not e.internal
        and (e.target == "ray" or e.target.startswith("ray."))
        and room_of(e.source) != "runtime"
    ]


def data_imports_upward(graph: Graph) -> list[str]:
    """(b) the ``data`` room importing any room of the package but ``data`` and ``fsutil``."""
    return [
        f"data: {e.source} imports {e.target} ({e.where(graph)})"
        for e in graph.edges
        if e.internal and room_of(e.source) == "data" and room_of(e.target) not in {"data", "fsutil"}
    ]


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components of two or more nodes, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def _one_cycle(graph: Graph, component: list[str]) -> str:
    """A concrete import path around ``component``, with the file:line of each import."""
    members = set(component)
    start = component[0]
    paths: dict[str, list[Edge]] = {start: []}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for e in graph.edges:
            if e.source != node or not e.internal or e.type_only or e.target not in members:
                continue
            if e.target == start:
                hops = [*paths[node], e]
                return " -> ".join([start, *(f"{h.target} ({h.where(graph)})" for h in hops)])
            if e.target not in paths:
                paths[e.target] = [*paths[node], e]
                queue.append(e.target)
    raise AssertionError(f"no cycle through {component}")  # pragma: no cover - SCCs always have one


def import_cycles(graph: Graph) -> list[str]:
    """(c) every set of modules that import each other, directly or around a longer circle."""
    return [
        f"cycle: {', '.join(component)}\n    e.g. {_one_cycle(graph, component)}"
        for component in sorted(_strongly_connected(graph.internal(executed_only=True)))
    ]


def rooms_out_of_order(graph: Graph, allowed: dict[str, set[str]]) -> list[str]:
    """(d) a room importing a room not in its ``allowed`` set (or a room missing from the table)."""
    found = [
        f"room: {room} is not in the ALLOWED table"
        for room in sorted({room_of(m) for m in graph.paths} - set(allowed))
    ]
    for e in graph.edges:
        src, dst = room_of(e.source), room_of(e.target)
        if not e.internal or src == dst or dst == ROOT or src not in allowed:
            continue
        if dst not in allowed[src]:
            found.append(f"room: {e.source} ({src}) -> {e.target} ({dst}) ({e.where(graph)})")
    return found


def all_violations(graph: Graph, allowed: dict[str, set[str]]) -> list[str]:
    return [
        *ray_outside_runtime(graph),
        *data_imports_upward(graph),
        *import_cycles(graph),
        *rooms_out_of_order(graph, allowed),
    ]


def _key(violation: str) -> str:
    """A violation without its file:line and example path (what KNOWN_VIOLATIONS lists)."""
    head = violation.split("\n")[0]
    return head.rsplit(" (", 1)[0] if head.endswith(")") and ".py:" in head else head


def _unknown(violations: Iterable[str]) -> list[str]:
    return [v for v in violations if _key(v) not in KNOWN_VIOLATIONS]


# ------------------------------------------------------------------------------------ the real package
@pytest.fixture(scope="module")
def graph() -> Graph:
    return build_graph(PACKAGE_DIR)


def test_parser_sees_the_package_imports(graph: Graph) -> None:
    """Guards the rules below against a parser that finds nothing (they would all pass vacuously)."""
    edges = {(e.source, e.target) for e in graph.edges}
    assert len(graph.paths) > 50
    assert (
        "dvt_search.families.torch_family",
        "dvt_search.engine.loop",
    ) in edges  # `from ..engine import loop`
    assert (
        "dvt_search.demo",
        "dvt_search.data.phantom",
    ) in edges  # in a function: `from .data import phantom`
    assert any(room_of(e.source) == "runtime" and e.target.split(".")[0] == "ray" for e in graph.edges)


def test_ray_only_in_runtime(graph: Graph) -> None:
    assert _unknown(ray_outside_runtime(graph)) == []


def test_data_depends_only_on_data_and_fsutil(graph: Graph) -> None:
    assert _unknown(data_imports_upward(graph)) == []


def test_no_import_cycles(graph: Graph) -> None:
    found = _unknown(import_cycles(graph))
    assert found == [], "\n".join(found)


def test_rooms_import_only_rooms_below_them(graph: Graph) -> None:
    found = _unknown(rooms_out_of_order(graph, ALLOWED))
    assert found == [], "\n".join(found)


def test_known_violations_still_occur(graph: Graph) -> None:
    """An allow-list entry that no longer occurs must be deleted (the allow-list only shrinks)."""
    current = {_key(v) for v in all_violations(graph, ALLOWED)}
    assert sorted(KNOWN_VIOLATIONS - current) == []


def test_allowed_table_is_a_hierarchy() -> None:
    """No two rooms may each import the other, directly or around a circle of the table itself."""
    table = {room: set(deps) for room, deps in ALLOWED.items()}
    assert all(dep in table for deps in table.values() for dep in deps)
    assert _strongly_connected(table) == []


# ------------------------------------------------------------------------ each rule on a synthetic tree
def _package(root: Path, files: dict[str, str]) -> Path:
    """Write ``{relative path: source}`` as a package ``dvt_search`` under ``root``; returns its folder."""
    package = root / PACKAGE
    for rel, text in {"__init__.py": "", **files}.items():
        path = package / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(package).parents:
            (package / parent / "__init__.py").touch()
        path.write_text(text)
    return package


def test_rule_ray_catches_lazy_imports_outside_runtime(tmp_path: Path) -> None:
    package = _package(
        tmp_path,
        {
            "runtime/driver.py": "import ray\nfrom ray import tune\n",
            "stats/x.py": "def f():\n    import ray.tune\n",
            "deploy/y.py": "from ray.train import Checkpoint\n",
            "report/z.py": "import raylib\n",
        },
    )
    found = ray_outside_runtime(build_graph(package))
    assert found == [
        "ray: dvt_search.deploy.y imports ray.train (dvt_search/deploy/y.py:1)",
        "ray: dvt_search.stats.x imports ray.tune (dvt_search/stats/x.py:2)",
    ]


def test_rule_data_catches_imports_of_higher_rooms(tmp_path: Path) -> None:
    package = _package(
        tmp_path,
        {
            "fsutil.py": "",
            "families/base.py": "",
            "data/a.py": "from ..fsutil import x\nfrom . import b\n\n\ndef f():\n    from ..families import base\n",
            "data/b.py": "import dvt_search.data.a\n",
        },
    )
    assert data_imports_upward(build_graph(package)) == [
        "data: dvt_search.data.a imports dvt_search.families.base (dvt_search/data/a.py:6)"
    ]


def test_rule_cycles_catches_function_level_and_package_cycles(tmp_path: Path) -> None:
    package = _package(
        tmp_path,
        {
            # a <-> b, one side lazy
            "stats/a.py": "from . import b\n",
            "stats/b.py": "def f():\n    from .a import g\n",
            # a parent that imports a child which imports a name defined in the parent
            "engine/__init__.py": "from .loop import run\nVALUE = 1\n",
            "engine/loop.py": "from dvt_search.engine import VALUE\n",
            # the registry pattern: the child imports the parent, the parent loads it by name only
            "families/__init__.py": "import importlib\n\n\ndef register(c):\n    return c\n",
            "families/vgg.py": "from . import register\n",
            # a longer circle through three rooms
            "x/p.py": "import dvt_search.y.q\n",
            "y/q.py": "from dvt_search.z import r\n",
            "z/r.py": "from ..x.p import thing\n",
            # a lazy import one way, a type-only import back: never both executed, so no circle ...
            "report/t1.py": "def f():\n    from . import t2\n",
            "report/t2.py": "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from .t1 import X\n",
            # ... but an executed import next to a TYPE_CHECKING block still counts
            "deploy/u1.py": "from . import u2\n",
            "deploy/u2.py": "import typing\n\nif typing.TYPE_CHECKING:\n    pass\nfrom .u1 import Y\n",
        },
    )
    graph = build_graph(package)
    assert [c.split("\n")[0] for c in import_cycles(graph)] == [
        "cycle: dvt_search.deploy.u1, dvt_search.deploy.u2",
        "cycle: dvt_search.engine, dvt_search.engine.loop",
        "cycle: dvt_search.stats.a, dvt_search.stats.b",
        "cycle: dvt_search.x.p, dvt_search.y.q, dvt_search.z.r",
    ]
    assert ("dvt_search.families.vgg", "dvt_search.families") in {(e.source, e.target) for e in graph.edges}
    assert (
        "e.g. dvt_search.stats.a -> dvt_search.stats.b (dvt_search/stats/a.py:1) -> dvt_search.stats.a (dvt_search/stats/b.py:2)"
        in "".join(import_cycles(graph))
    )


def test_rule_rooms_catches_upward_imports_and_unlisted_rooms(tmp_path: Path) -> None:
    package = _package(
        tmp_path,
        {
            "fsutil.py": "",
            "selection/leaderboard.py": "from ..stats import measures\nfrom dvt_search import fsutil\n",
            "stats/measures.py": "import dvt_search\n\n\ndef f():\n    from dvt_search.selection import leaderboard\n",
            "newroom/__init__.py": "",
        },
    )
    allowed = {ROOT: set(), "fsutil": set(), "stats": {"fsutil"}, "selection": {"fsutil", "stats"}}
    assert rooms_out_of_order(build_graph(package), allowed) == [
        "room: newroom is not in the ALLOWED table",
        "room: dvt_search.stats.measures (stats) -> dvt_search.selection.leaderboard (selection) (dvt_search/stats/measures.py:5)",
    ]


def test_known_violation_keys_drop_only_the_location() -> None:
    assert _key("room: a.b (a) -> c.d (c) (loop.py:28)") == "room: a.b (a) -> c.d (c)"
    assert _key("cycle: a, b\n    e.g. a -> b (x.py:1) -> a (y.py:2)") == "cycle: a, b"
    assert _key("room: newroom is not in the ALLOWED table") == "room: newroom is not in the ALLOWED table"
