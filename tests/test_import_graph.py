"""The import graph of leaklab, built from its source: no module imports itself back through others.

What counts as an edge ``a -> b`` (``a`` imports ``b``):

- every ``import leaklab.x`` / ``from leaklab.x import y`` / ``from .x import y`` /
  ``from . import y`` statement anywhere in ``a``'s file: at module level, inside a
  function or a method, under ``if``/``try``. An import inside a function runs later,
  so it cannot fail at start-up, but it still says that ``a`` needs ``b``: a ring made
  of function-level imports is the same tangle of concepts, and the layering (an import
  goes down, never up or around) has to hold for all of them;
- ``from p import y`` points to the submodule ``p.y`` when there is one, else to ``p``
  (a package means its ``__init__``);
- a submodule importing its own package (``from . import name`` for a name the
  package's ``__init__`` re-exports) is an edge to the package, and so a ring when the
  package's ``__init__`` imports that submodule.

Not counted: the parent packages Python imports implicitly before a submodule (every
submodule would otherwise be in a ring with its package's re-exports), and dynamic
imports by string (``importlib.import_module``: the package's lazy attributes).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "leaklab"


def module_files(root: Path = ROOT) -> dict[str, tuple[Path, bool]]:
    """``{dotted name: (file, is_package)}`` for every module of the package under ``root``."""
    mods = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        mods[".".join(parts)] = (path, is_pkg)
    return mods


def _nearest(name: str, mods) -> str | None:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(name: str, path: Path, is_pkg: bool, mods, top: str = "leaklab") -> set[str]:
    """The leaklab modules that the file ``path`` (module ``name``) imports, anywhere in it."""
    package = name if is_pkg else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == top or alias.name.startswith(top + "."):
                    out.add(_nearest(alias.name, mods))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                full = ".".join(base + ([node.module] if node.module else []))
            else:
                full = node.module or ""
            if not (full == top or full.startswith(top + ".")):
                continue
            for alias in node.names:
                sub = f"{full}.{alias.name}"
                out.add(sub if sub in mods else _nearest(full, mods))
    out.discard(None)
    out.discard(name)
    return out


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    mods = module_files(root)
    return {name: imports_of(name, path, is_pkg, mods, top=root.name) for name, (path, is_pkg) in mods.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (iterative)."""
    index, low, on_stack, stack, comps = {}, {}, set(), [], []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        comps.append(sorted(comp))
    return comps


def a_cycle(graph: dict[str, set[str]], comp: list[str]) -> list[str]:
    """One shortest cycle through the first module of the component, as a path ``a -> ... -> a``."""
    inside = set(comp)
    start = comp[0]
    parents, frontier = {start: None}, [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & inside):
                if w == start:
                    path = [v]
                    while parents[path[-1]] is not None:
                        path.append(parents[path[-1]])
                    return path[::-1] + [start]
                if w not in parents:
                    parents[w] = v
                    nxt.append(w)
        frontier = nxt
    return comp + [comp[0]]


def describe(graph, comps) -> str:
    lines = []
    for comp in comps:
        lines.append(f"{len(comp)} modules in a ring: {' -> '.join(a_cycle(graph, comp))}")
        for m in comp:
            lines.append(f"    {m} imports {sorted(graph[m] & set(comp))}")
    return "\n".join(lines)


def test_the_graph_sees_every_kind_of_import(tmp_path):
    # a scratch package with a ring through a function-level relative import, a ring through
    # "from . import name" (a submodule and its package), and a chain that is not a ring
    pkg = tmp_path / "leaklab"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .low import f\n")
    (pkg / "low.py").write_text("import math\n")
    (pkg / "a.py").write_text("from .b import g\n")
    (pkg / "b.py").write_text("def g():\n    from leaklab import a\n    return a\n")
    (pkg / "sub" / "__init__.py").write_text("from .c import h\n")
    (pkg / "sub" / "c.py").write_text("from .. import low\nfrom . import h2\n")
    graph = import_graph(pkg)
    assert graph["leaklab.a"] == {"leaklab.b"}
    assert graph["leaklab.b"] == {"leaklab.a"}
    assert graph["leaklab.sub.c"] == {"leaklab.low", "leaklab.sub"}
    assert graph["leaklab"] == {"leaklab.low"}
    comps = strongly_connected(graph)
    assert sorted(comps) == [["leaklab.a", "leaklab.b"], ["leaklab.sub", "leaklab.sub.c"]]
    assert "leaklab.a -> leaklab.b -> leaklab.a" in describe(graph, comps)


def test_the_graph_covers_the_package():
    graph = import_graph()
    assert len(graph) > 50
    # known downward edges are seen (module-level and function-level)
    assert "leaklab.release" in graph["leaklab.fl.gradients"] and "leaklab.fl.gradients" in graph["leaklab.fl"]
    assert "leaklab.games.adversaries" in graph["leaklab.games.protocol"]


def test_no_import_cycles():
    graph = import_graph()
    comps = strongly_connected(graph)
    if comps:
        pytest.fail("leaklab has import cycles (imports inside functions count):\n" + describe(graph, comps))


def with_parents(graph: dict[str, set[str]], mods) -> dict[str, set[str]]:
    """The graph with the parent packages Python imports before a submodule: ``a`` importing
    ``p.b`` from outside ``p`` also imports ``p`` (its ``__init__``)."""
    out = {}
    for a, targets in graph.items():
        extra = set()
        for b in targets:
            parts = b.split(".")
            for i in range(1, len(parts)):
                pkg = ".".join(parts[:i])
                if pkg in mods and mods[pkg][1] and not (a == pkg or a.startswith(pkg + ".")):
                    extra.add(pkg)
        out[a] = targets | extra
    return out


def test_modules_in_a_ring_through_a_package_import_first():
    # The graph above leaves out the parent packages Python imports before a submodule. A ring
    # through them (leaklab.spn.model needs leaklab.defenses.base, so leaklab.defenses runs first,
    # which registers SPN by importing leaklab.spn.model) is harmless only if every order of
    # import works: import each module of such a ring first, in a fresh leaklab (torch stays
    # loaded), and every submodule of a package in it.
    import subprocess
    import sys

    mods = module_files()
    rings = strongly_connected(with_parents(import_graph(), mods))
    inside = {m for comp in rings for m in comp}
    packages = {m for m in inside if mods[m][1]}
    names = sorted(n for n in mods if n in inside or any(n.startswith(p + ".") for p in packages))
    if not names:
        return
    code = (
        "import importlib, sys\n"
        f"names = {names!r}\n"
        "bad = []\n"
        "for n in names:\n"
        "    for m in [m for m in sys.modules if m == 'leaklab' or m.startswith('leaklab.')]:\n"
        "        del sys.modules[m]\n"
        "    try:\n"
        "        importlib.import_module(n)\n"
        "    except Exception as e:\n"
        "        bad.append(f'{n}: {type(e).__name__}: {e}')\n"
        "print('\\n'.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                         cwd=ROOT.parent)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "", "modules that fail when imported first:\n" + out.stdout


def test_modules_stay_readable():
    # a module holds one concept: at most about 500 lines, never more than 550 (split it along its concepts)
    long = {str(path.relative_to(ROOT.parent)): n for path, _ in module_files().values()
            if (n := len(path.read_text().splitlines())) > 550}
    assert not long, f"modules over 550 lines: {long}"
