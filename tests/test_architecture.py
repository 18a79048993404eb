"""The package's import graph follows the layers of docs/ARCHITECTURE.md.

Every ``from lift3d... import`` / ``import lift3d...`` in src/lift3d, at module level and inside
functions, is read with `ast`; the test fails on an import circle, on an import into a higher
layer, on the forbidden directions between packages of one layer, and on a lift3d import inside
a function outside the CLI (where lazy imports keep ``lift3d --help`` fast).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import lift3d

SRC = Path(lift3d.__file__).resolve().parent

# Layer of each module prefix (the longest matching prefix wins). Lower layers never import
# higher ones; see docs/ARCHITECTURE.md for what each layer holds.
LAYERS: dict[str, int] = {
    "lift3d.errors": 0,
    "lift3d.utils": 0,
    "lift3d.constants": 0,
    "lift3d.version": 0,
    "lift3d.config": 0,
    "lift3d.configs": 0,
    "lift3d": 1,  # the package root re-exports lift3d.data.volume
    "lift3d.data": 1,
    "lift3d.models": 1,
    "lift3d.losses": 1,
    "lift3d.metrics": 1,
    "lift3d.report": 1,
    "lift3d.model_folder": 2,
    "lift3d.training.engine": 2,
    "lift3d.training.checkpoint": 2,
    "lift3d.training": 3,
    "lift3d.inference": 3,
    "lift3d.evaluation": 3,
    "lift3d.bench": 3,
    "lift3d.commands": 4,
    "lift3d.cli": 4,
    "lift3d.demo": 4,
    "lift3d.__main__": 4,
}

# Imports between packages of one layer that are not allowed (source prefix, target prefix).
FORBIDDEN: list[tuple[str, str]] = [
    ("lift3d.metrics", "lift3d.data"),
    ("lift3d.metrics", "lift3d.models"),
    ("lift3d.metrics", "lift3d.losses"),
    ("lift3d.metrics", "lift3d.report"),
    ("lift3d.metrics", "lift3d"),
    ("lift3d.models", "lift3d.data"),
    ("lift3d.models", "lift3d.losses"),
    ("lift3d.models", "lift3d.metrics"),
    ("lift3d.models", "lift3d.report"),
    ("lift3d.models", "lift3d"),
    ("lift3d.losses", "lift3d.data"),
    ("lift3d.losses", "lift3d.metrics"),
    ("lift3d.losses", "lift3d.report"),
    ("lift3d.losses", "lift3d"),
    ("lift3d.data", "lift3d.models"),
    ("lift3d.data", "lift3d.losses"),
    ("lift3d.data", "lift3d.metrics"),
    ("lift3d.data", "lift3d.report"),
    ("lift3d.inference", "lift3d.training"),
    ("lift3d.inference", "lift3d.evaluation"),
    ("lift3d.training", "lift3d.inference"),
    ("lift3d.training", "lift3d.evaluation"),
    ("lift3d.evaluation", "lift3d.training"),
    ("lift3d.evaluation", "lift3d.inference"),
]

# Where a lift3d import may sit inside a function: the CLI, so that `lift3d --help` and
# argument errors do not import torch and the models.
LAZY_ALLOWED = ("lift3d.commands", "lift3d.cli", "lift3d.demo", "lift3d.__main__")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def resolve(name: str) -> str:
    """The module an imported dotted name refers to (``lift3d.data.volume.Volume`` -> the
    module ``lift3d.data.volume``)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def imports_of(module: str) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for every lift3d import of `module`."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] == "lift3d":
                        out.append((resolve(alias.name), child.lineno, in_function))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (child.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                if base.split(".")[0] != "lift3d":
                    continue
                for alias in child.names:
                    out.append((resolve(f"{base}.{alias.name}"), child.lineno, in_function))
            visit(child, inside)

    visit(tree, False)
    return [(t, line, f) for t, line, f in out if t != module]


GRAPH = {m: imports_of(m) for m in MODULES}


def prefix_of(module: str, table: dict[str, int] | tuple[str, ...]) -> str | None:
    keys = table if isinstance(table, tuple) else tuple(table)
    hits = [k for k in keys if module == k or module.startswith(k + ".")]
    return max(hits, key=len) if hits else None


def layer(module: str) -> int:
    prefix = prefix_of(module, LAYERS)
    assert prefix is not None, f"{module} has no layer in LAYERS: add it (and to ARCHITECTURE.md)"
    return LAYERS[prefix]


def test_every_module_has_a_layer():
    for module in MODULES:
        layer(module)


def test_imports_go_down_the_layers():
    bad = [
        f"{m} (layer {layer(m)}) imports {t} (layer {layer(t)}) at line {line}"
        for m, edges in GRAPH.items()
        for t, line, _ in edges
        if layer(t) > layer(m)
    ]
    assert not bad, "\n".join(bad)


def test_no_forbidden_direction_within_a_layer():
    bad = []
    for m, edges in GRAPH.items():
        for t, line, _ in edges:
            for src, dst in FORBIDDEN:
                src_hit = m == src or m.startswith(src + ".")
                # "lift3d" as a target means the package root itself, not every submodule.
                dst_hit = t == dst if dst == "lift3d" else (t == dst or t.startswith(dst + "."))
                if src_hit and dst_hit:
                    bad.append(f"{m} imports {t} at line {line} ({src} must not import {dst})")
    assert not bad, "\n".join(bad)


def test_no_import_circle():
    graph = {m: sorted({t for t, _, _ in edges if t in MODULES}) for m, edges in GRAPH.items()}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def walk(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for t in graph[m]:
            if state.get(t) == 1:
                return path[path.index(t) :] + [t]
            if t not in state and (cycle := walk(t)):
                return cycle
        path.pop()
        state[m] = 2
        return None

    for m in graph:
        if m not in state and (cycle := walk(m)):
            pytest.fail("import circle: " + " -> ".join(cycle))


def test_lift3d_imports_sit_at_module_level_outside_the_cli():
    bad = [
        f"{m} line {line}: imports {t} inside a function"
        for m, edges in GRAPH.items()
        if prefix_of(m, LAZY_ALLOWED) is None
        for t, line, in_function in edges
        if in_function
    ]
    assert not bad, "\n".join(bad)


def test_the_checker_reads_function_level_imports():
    """The graph reader finds function-level and relative imports (guards the guard)."""
    edges = dict.fromkeys(t for t, _, _ in imports_of("lift3d.commands.train"))
    assert any(t.startswith("lift3d.training") for t in edges)
    assert layer("lift3d.commands.train") > layer("lift3d.training.translate")
