"""The shape of the code: imports flow one way (no cycle among fastvit's modules, function-level
imports included; no module imports its own package's ``__init__``), kernels/ never imports fastvit,
and no module outside kernels/ grows past 450 lines."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 450


def modules(package: str) -> dict[str, Path]:
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Modules of ``known`` that ``path`` (module ``name``) imports anywhere in its body."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for a in node.names:  # `from pkg import submodule` imports the submodule, else pkg itself
                found.add(f"{target}.{a.name}" if f"{target}.{a.name}" in known else target)
    return {m for m in found if m in known and m != name}


FASTVIT = modules("fastvit")
GRAPH = {name: imports(path, name, set(FASTVIT)) for name, path in FASTVIT.items()}


def test_graph_is_not_empty():
    assert len(GRAPH) > 20 and any(GRAPH.values())


def test_no_import_cycle():
    state, stack = {}, []

    def visit(node):
        state[node] = "active"
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == "active":
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(GRAPH):
        if node not in state:
            visit(node)


@pytest.mark.parametrize("name", sorted(n for n, p in FASTVIT.items() if p.name != "__init__.py"))
def test_no_module_imports_its_own_package(name):
    parents = {".".join(name.split(".")[:i]) for i in range(2, len(name.split(".")))}
    own = GRAPH[name] & parents
    assert not own, f"{name} imports its own package's __init__: {sorted(own)}"


def test_kernels_never_import_fastvit():
    for name, path in modules("kernels").items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(t == "fastvit" or t.startswith("fastvit.") for t in targets), f"{name} imports fastvit"


@pytest.mark.parametrize("package", ["fastvit", "benchmarks", "tests"])
def test_files_stay_small(package):
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / package).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"over {MAX_LINES} lines: {long}"
