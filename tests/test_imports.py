"""The project's import graph: no cycles between its modules, no private names imported across them."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("scenes", "vldm", "distill", "baselines", "pipelines")


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project's packages."""
    out = {}
    for pkg in PACKAGES:
        for file in (ROOT / pkg).rglob("*.py"):
            parts = file.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = file
    return out


def _imports(name: str, file: Path, modules: dict) -> list[tuple[str, list[str]]]:
    """(imported project module, names taken from it) for every import in the file, lazy ones included."""
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name in modules]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:  # `from . import x` imports the module x
                sub = f"{base}.{alias.name}"
                if sub in modules:
                    found.append((sub, []))
                elif base in modules:
                    found.append((base, [alias.name]))
    return found


def _graph() -> tuple[dict[str, set[str]], list[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    private = []
    for name, file in modules.items():
        for target, names in _imports(name, file, modules):
            if target != name and not name.startswith(target + "."):  # a package's own submodules import it freely
                graph[name].add(target)
            private += [f"{name} imports {target}.{n}" for n in names if n.startswith("_") and n != "__version__"]
    return graph, private


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected component of more than one module (Tarjan)."""
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v), on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return comps


def test_the_cycle_finder_finds_a_planted_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_the_projects_modules():
    graph, _ = _graph()
    assert len(graph) > 50 and graph["pipelines.harness.compare"]  # the walk saw the project
    assert _cycles(graph) == []


def test_no_private_names_imported_across_modules():
    assert _graph()[1] == []


def test_no_module_over_the_size_limit_without_a_reason():
    """~400 lines per module, unless its docstring says why (``size:`` in it)."""
    over = []
    for name, file in _modules().items():
        text = file.read_text()
        if text.count("\n") > 420 and "size:" not in (ast.get_docstring(ast.parse(text)) or ""):
            over.append(f"{name} ({text.count(chr(10))} lines)")
    assert over == []


# Which of pipelines' subpackages each one may import: a layering, so no two depend on each other.
LAYERS = {
    "common": set(),
    "training": {"common"},
    "reconstruction": {"common"},
    "harness": {"common", "reconstruction"},
    "tools": {"common", "training", "reconstruction", "harness"},
    "cli": {"common"},  # commands are named as strings and imported only when one runs
}


def test_pipelines_subpackages_import_only_the_layers_below_them():
    graph, _ = _graph()
    subpackage = {m: m.split(".")[1] for m in graph if m.startswith("pipelines.") and m.count(".") >= 1}
    assert set(subpackage.values()) - {"__main__"} == set(LAYERS)  # every subpackage has a layer
    wrong = sorted(f"{m} imports {t}" for m, targets in graph.items() if m in subpackage and subpackage[m] in LAYERS
                   for t in targets if t in subpackage and subpackage[t] not in LAYERS[subpackage[m]] | {subpackage[m]})
    assert wrong == []
