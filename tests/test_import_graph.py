"""The import graph of ``calib_sweep`` has no cycle, and the report imports in one direction (issue 25).

The graph is read from the source with the standard library's :mod:`ast`, never by importing: every
``import`` / ``from ... import`` statement of every module counts, including those inside functions, under
``if TYPE_CHECKING:`` and in ``try`` blocks (a lazy import hides a cycle from Python, not from the design).

Edges:

* ``import a.b.c`` -> the module ``a.b.c`` (the longest prefix that is a module of the package);
* ``from a.b import x`` -> ``a.b.x`` when ``x`` is a submodule; else, when ``a.b`` is a package whose
  ``__init__`` binds ``x`` by ``from <module> import x`` (a face re-exporting a submodule's name), the
  module that defines ``x`` (followed through faces); else ``a.b`` itself (its ``__init__``);
* relative imports are resolved against the importing module's package;
* the parent packages Python initialises before a submodule are not edges: a face importing its
  submodules and a submodule importing a sibling are not a cycle; a submodule taking a name that its
  package's ``__init__`` itself defines is an edge to that ``__init__`` (and a cycle when the face imports
  the submodule).
"""

from __future__ import annotations

import ast
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "calib_sweep"

#: Packages outside calib_sweep/report/ in which a cycle (all its modules inside one of them) is tolerated
#: while they are restructured. Empty since issue 25 item 1 (methods/ as a registry; llmc and diagnostics
#: take parse_structure / target_linears from calib_sweep.methods.targets, not from the face).
ALLOWED_CYCLE_PACKAGES: tuple[str, ...] = ()

#: calib_sweep/report/ from the bottom up (issue 25 item 3): a module may import modules of its own layer
#: or of a lower one, never of a higher one. A new report module must be placed here.
REPORT_LAYERS: tuple[tuple[str, ...], ...] = (
    ("collect",),
    ("aggregate",),
    ("statistics",),
    ("evidence",),
    ("display", "evidence_tables", "layers", "tables", "figures", "predictors", "variance", "paired", "adaptive"),
    ("html", "wandb_upload"),
    ("__init__", "__main__"),
)


def find_modules(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file under ``root/package`` (``__init__.py`` names the package)."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _is_package(modules: dict[str, Path], name: str) -> bool:
    return modules[name].name == "__init__.py"


def _base(modules: dict[str, Path], importer: str, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` reads from (relative imports resolved against ``importer``)."""
    if not node.level:
        return node.module or ""
    package = importer.split(".") if _is_package(modules, importer) else importer.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _top_level(tree: ast.Module):
    """Module-level statements, including those inside top-level ``if`` / ``try`` blocks."""
    stack = list(tree.body)
    while stack:
        node = stack.pop(0)
        if isinstance(node, ast.If):
            stack[:0] = node.body + node.orelse
        elif isinstance(node, ast.Try):
            stack[:0] = node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body]
        else:
            yield node


def face_reexports(modules: dict[str, Path], trees: dict[str, ast.Module]) -> dict[str, dict[str, tuple[str, str]]]:
    """Per package: name bound in its ``__init__`` by ``from M import n [as name]`` -> (M, n)."""
    out: dict[str, dict[str, tuple[str, str]]] = {}
    for name, tree in trees.items():
        if not _is_package(modules, name):
            continue
        bound = out.setdefault(name, {})
        for node in _top_level(tree):
            if isinstance(node, ast.ImportFrom):
                base = _base(modules, name, node)
                for alias in node.names:
                    if alias.name != "*":
                        bound[alias.asname or alias.name] = (base, alias.name)
    return out


def _owner(modules: dict[str, Path], dotted: str) -> str | None:
    """The longest prefix of ``dotted`` that is a module of the package, or None (outside it)."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def _resolve_name(modules, faces, base: str, name: str, seen: frozenset = frozenset()) -> str | None:
    """The module ``from base import name`` depends on (see the module docstring)."""
    if f"{base}.{name}" in modules:
        return f"{base}.{name}"
    if base in faces and name in faces[base] and (base, name) not in seen:
        origin, original = faces[base][name]
        if origin in modules and _is_package(modules, origin):
            return _resolve_name(modules, faces, origin, original, seen | {(base, name)})
        if origin in modules:
            return origin
        if f"{origin}.{original}" in modules:  # `from . import x` in a face
            return f"{origin}.{original}"
    return _owner(modules, base)


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports (edges as in the module docstring; no self-edges)."""
    modules = find_modules(root, package)
    trees = {name: ast.parse(path.read_text(encoding="utf-8"), filename=str(path)) for name, path in modules.items()}
    faces = face_reexports(modules, trees)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, tree in trees.items():
        for node in ast.walk(tree):
            targets: list[str | None] = []
            if isinstance(node, ast.Import):
                targets = [_owner(modules, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _base(modules, name, node)
                targets = [_owner(modules, base) if alias.name == "*" else _resolve_name(modules, faces, base, alias.name)
                           for alias in node.names]
            graph[name].update(t for t in targets if t is not None and t != name)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (each sorted), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def one_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest cycle through the component's first module, as a path ``[a, b, ..., a]``."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & members):
            if w == start:
                return paths[v] + [start]
            if w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    raise AssertionError(f"{component} is not a cycle")


def describe_cycles(graph: dict[str, set[str]], components: list[list[str]]) -> str:
    return "\n".join(f"{' -> '.join(one_cycle(graph, c))}   (component: {', '.join(c)})" for c in components)


# ------------------------------------------------------------------------------------------------ tests

def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_graph_finds_lazy_relative_and_face_cycles(tmp_path):
    """The walker on a toy package: a cycle through a lazy relative import and a face's re-export is found,
    a face importing its submodules is not a cycle, and a name the face itself defines is an edge to it."""
    _write(tmp_path, {
        "pkg/__init__.py": "from pkg.low import helper\nfrom .mid import thing as public\nDEFINED = 1\n",
        "pkg/low.py": "import json\n\ndef helper():\n    return json\n",
        "pkg/mid.py": "from pkg import helper\n\ndef thing():\n    from . import top\n    return top\n",
        "pkg/top.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import public\n",
        "pkg/sub/__init__.py": "from ..low import helper\n",
        "pkg/sub/leaf.py": "from pkg import DEFINED\nimport pkg.sub\n",
    })
    graph = import_graph(tmp_path, "pkg")
    assert graph == {
        "pkg": {"pkg.low", "pkg.mid"},
        "pkg.low": set(),
        "pkg.mid": {"pkg.low", "pkg.top"},  # `from pkg import helper` is pkg.low's name, re-exported
        "pkg.top": {"pkg.mid"},  # `public` is pkg.mid's `thing`: the TYPE_CHECKING import counts
        "pkg.sub": {"pkg.low"},
        "pkg.sub.leaf": {"pkg", "pkg.sub"},  # DEFINED is the face's own name
    }
    components = strongly_connected(graph)
    assert components == [["pkg.mid", "pkg.top"]]
    assert one_cycle(graph, components[0]) == ["pkg.mid", "pkg.top", "pkg.mid"]
    # the face's own name taken by a module the face imports: a real cycle
    _write(tmp_path, {"pkg/low.py": "def helper():\n    from pkg import DEFINED\n    return DEFINED\n"})
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.low"] == {"pkg"}
    assert [c for c in strongly_connected(graph) if {"pkg", "pkg.low"} <= set(c)]


def test_calib_sweep_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 50 and "calib_sweep.report.aggregate" in graph  # the walk found the package
    components = strongly_connected(graph)
    unexpected = [c for c in components if not any(all(_inside(m, p) for m in c) for p in ALLOWED_CYCLE_PACKAGES)]
    assert not unexpected, "import cycles in calib_sweep:\n" + describe_cycles(graph, unexpected)


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_allow_list_never_covers_the_report():
    assert not [p for p in ALLOWED_CYCLE_PACKAGES if _inside(f"{PACKAGE}.report", p) or _inside(p, f"{PACKAGE}.report")]


def test_report_imports_only_downwards():
    """collect -> aggregate -> statistics -> evidence -> tables / figures / layers -> html / W&B (issue 25 item 3)."""
    graph = import_graph()
    prefix = f"{PACKAGE}.report"
    layer = {(prefix if name == "__init__" else f"{prefix}.{name}"): i for i, names in enumerate(REPORT_LAYERS) for name in names}
    report = sorted(m for m in graph if m == prefix or m.startswith(prefix + "."))
    assert sorted(layer) == report, "place every report module in REPORT_LAYERS"
    upward = [f"{m} (layer {layer[m]}) imports {t} (layer {layer[t]})"
              for m in report for t in sorted(graph[m]) if t in layer and layer[t] > layer[m]]
    assert not upward, "report modules importing a higher layer:\n" + "\n".join(upward)
    assert "calib_sweep.report.evidence" in graph["calib_sweep.report.evidence_tables"]  # edges are seen
