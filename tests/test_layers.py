"""The package's layers (docs/ARCHITECTURE.md): each module imports only from its own layer and the
layers below, and no import, not even one made for type checking or inside a function, closes a
circle. Read from the ``ast`` of every module of src/llamahost."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "llamahost"

# bottom to top: a module may import its own layer and those before it
LAYERS = [
    ("errors", "_version"),
    ("core",),
    ("gguf",),
    ("planning",),
    ("models",),
    ("chat",),
    ("engine",),
    ("serving",),
    ("bench",),  # the runtime never imports it: everything below is the runtime
    ("cli",),
    ("__init__", "__main__"),  # the facade: `import llamahost as lh`, `python -m llamahost`
]


def modules() -> dict[str, Path]:
    """Dotted name -> source, for every module of the package (the Cython binding too)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*")):
        if path.suffix not in (".py", ".pyx") or "__pycache__" in path.parts:
            continue
        parts = ["llamahost", *path.relative_to(PACKAGE).with_suffix("").parts]
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def layer_of(module: str) -> int:
    parts = module.split(".")
    first = parts[1] if len(parts) > 1 else "__init__"
    return next(i for i, names in enumerate(LAYERS) if first in names)


def imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that ``module`` imports, anywhere in its code."""
    if path.suffix == ".pyx":
        return set()  # the binding imports nothing of the package
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "llamahost")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != "llamahost":
                continue
            for alias in node.names:  # `from .core import config`: the module config, not the package
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return found - {module}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {module: imports(module, path, known) for module, path in known.items()}


def upward(edges: dict[str, set[str]]) -> list[str]:
    """Each import from a module to a layer above its own."""
    return sorted(f"{a} -> {b}" for a, targets in edges.items() for b in targets if layer_of(b) > layer_of(a))


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected sets of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_every_module_belongs_to_a_layer():
    for module in modules():
        layer_of(module)  # StopIteration for a module outside every layer


def test_imports_run_downward_only():
    assert upward(graph()) == []


def test_no_import_circles():
    assert circles(graph()) == []


def test_the_checks_find_what_they_look_for():
    edges = {"llamahost.core.config": {"llamahost.serving.pool"}, "llamahost.serving.pool": {"llamahost.core.config"},
             "llamahost.engine.server": {"llamahost.core.config"}}
    assert upward(edges) == ["llamahost.core.config -> llamahost.serving.pool"]
    assert circles(edges) == [["llamahost.core.config", "llamahost.serving.pool"]]
    known = modules()
    assert imports("llamahost.engine.server", known["llamahost.engine.server"], known) >= {
        "llamahost.core._native", "llamahost.core.config", "llamahost.engine.client", "llamahost.models.resolve"}
