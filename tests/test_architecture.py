"""The house: imports flow one way (no circles, counting imports inside functions), clot/ stands alone,
and modules and functions stay small. Walks the source with ``ast``; imports nothing of hti_rl."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hti_rl"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
LONG_FUNCTIONS = {"hti_rl.clot.fit.fit_clot"}  # the training loop reads as the algorithm, step by step
# The stages in data-flow order; a module may import its own stage, the shared modules, and earlier stages.
SHARED = ("hti_rl", "hti_rl.errors", "hti_rl.io", "hti_rl.weights", "hti_rl.seeds", "hti_rl.threads")
STAGES = ("envs", "components", "spec", "runs", "layers", "actors", "evaluate", "sb3io", "training", "dataset", "cross_eval", "quality_report", "quality", "clot",
          "methods", "deploy", "refine", "compare", "cli")


def modules() -> dict[str, Path]:
    """Module name -> file, for every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every hti_rl module ``name`` imports, at top level or inside functions (``from a import b`` counts
    ``a.b`` when that is a module, else ``a``)."""
    out = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "hti_rl")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] != "hti_rl":
                continue
            for alias in node.names:
                out.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {m for m in out if m in known and m != name}


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(name, path, set(found)) for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
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
                out.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def stage(module: str) -> int | None:
    """Position of a module's stage in :data:`STAGES` (``None`` for the shared modules)."""
    if module in SHARED:
        return None
    return STAGES.index(module.split(".")[1])


def test_no_import_circles():
    assert cycles(graph()) == []


def test_a_detected_circle_is_reported():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_clot_imports_only_clot_errors_and_io():
    for name, deps in graph().items():
        if name.startswith("hti_rl.clot"):
            outside = {d for d in deps if not d.startswith("hti_rl.clot") and d not in ("hti_rl.errors", "hti_rl.io")}
            assert not outside, f"{name} imports {sorted(outside)}"


def test_data_flows_one_way():
    for name, deps in graph().items():
        here = stage(name)
        for dep in deps:
            there = stage(dep)
            assert there is None or (here is not None and there <= here), f"{name} (stage {here}) imports the later {dep}"
    for shared in SHARED:  # the shared modules import nothing but each other
        later = {d for d in graph().get(shared, set()) if d not in SHARED}
        assert not later, f"{shared} imports {sorted(later)}"


def test_modules_and_functions_are_small(capsys):
    sizes = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    with capsys.disabled():
        print("\nmodule sizes (lines): " + ", ".join(f"{n.removeprefix('hti_rl.')} {s}" for n, s in sorted(sizes.items(), key=lambda x: -x[1])))
    assert {n: s for n, s in sizes.items() if s > MAX_MODULE_LINES} == {}
    long = {}
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                if f"{name}.{node.name}" not in LONG_FUNCTIONS:
                    long[f"{name}.{node.name}"] = node.end_lineno - node.lineno + 1
    assert long == {}
