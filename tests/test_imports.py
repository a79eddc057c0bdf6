"""Imports point one way, down the flow of DESIGN.md section 2, and never in a circle."""

from __future__ import annotations

import ast
from collections import deque
from fnmatch import fnmatchcase
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Where each source folder installs (pyproject's [tool.setuptools.package-dir]).
SOURCE_DIRS = {
    "wmrobot": "wmrobot",
    "envs": "wmrobot.envs",
    "datasets": "wmrobot.datasets",
    "planners": "wmrobot.planners",
    "configs": "wmrobot.configs",
}

# layer: (its modules as fnmatch patterns, the layers it may import). Every module of ours is in
# exactly one layer. The leaves import nothing of ours, and every layer may import them.
LAYERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "leaves": (("wmrobot", "wmrobot.errors", "wmrobot.files", "wmrobot.provenance"), ()),
    "envs": (("wmrobot.envs", "wmrobot.envs.*"), ("envs", "leaves")),
    "datasets": (("wmrobot.datasets", "wmrobot.datasets.*"), ("datasets", "envs", "leaves")),
    "model/train": (
        ("wmrobot.model", "wmrobot.model.*", "wmrobot.train", "wmrobot.train.*"),
        ("model/train", "datasets", "envs", "leaves"),
    ),
    # Planners see a model only through their own Dynamics protocol.
    "planners": (("wmrobot.planners", "wmrobot.planners.*"), ("planners", "leaves")),
    "composition": (
        (
            "wmrobot.agent*",
            "wmrobot.eval*",
            "wmrobot.rl*",
            "wmrobot.learn*",
            "wmrobot.bench*",
            "wmrobot.distill*",
            "wmrobot.cli*",
            "wmrobot.*_cli",
            "wmrobot.config*",  # config and configs
            "wmrobot.steps",
        ),
        ("composition", "model/train", "planners", "datasets", "envs", "leaves"),
    ),
}

Edges = dict[tuple[str, str], list[str]]


def module_files(source_dirs: dict[Path, str]) -> dict[str, Path]:
    """Every module of ours, by its installed name, with its file."""
    modules = {}
    for folder, package in source_dirs.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([package, *parts])] = path
    return modules


def ancestors(module: str) -> list[str]:
    """The packages that importing `module` imports first: `a.b.c` -> [`a`, `a.b`]."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(source_dirs: dict[Path, str]) -> Edges:
    """Edges (importer, imported) between our modules, each with the lines that make it.

    Every import statement counts, those inside functions included. Importing `a.b.c` also runs
    `a` and `a.b`, except where the importer lives inside them (they are already running then).
    """
    modules = module_files(source_dirs)
    edges: Edges = {}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    package = module if is_package else module.rpartition(".")[0]
                    base = package.rsplit(".", node.level - 1)[0]
                    base = f"{base}.{node.module}" if node.module else base
                else:
                    base = node.module or ""
                # `from m import n` imports the submodule m.n where there is one, else m.
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            else:
                continue
            shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
            where = f"{shown}:{node.lineno}"
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if not target:
                    continue
                implied = [p for p in ancestors(target) if p not in ancestors(module)]
                for imported in {target, *implied} - {module}:
                    lines = edges.setdefault((module, imported), [])
                    if where not in lines:
                        lines.append(where)
    return edges


def layer_of(module: str) -> str:
    """The one layer whose patterns match `module`."""
    layers = [
        name
        for name, (patterns, _) in LAYERS.items()
        if any(fnmatchcase(module, p) for p in patterns)
    ]
    assert len(layers) == 1, f"{module} is in layers {layers}: give it exactly one in LAYERS"
    return layers[0]


def cycle_through(edge: tuple[str, str], edges: Edges) -> list[str] | None:
    """The shortest cycle that takes `edge`, as modules in import order, or None."""
    importer, imported = edge
    graph: dict[str, list[str]] = {}
    for a, b in edges:
        graph.setdefault(a, []).append(b)
    came_from = {imported: imported}
    queue = deque([imported])
    while queue:
        module = queue.popleft()
        if module == importer:
            path = [module]
            while path[-1] != imported:
                path.append(came_from[path[-1]])
            return [importer, *reversed(path)]
        for nxt in sorted(graph.get(module, [])):
            if nxt not in came_from:
                came_from[nxt] = module
                queue.append(nxt)
    return None


def violations(edges: Edges) -> dict[tuple[str, str], str]:
    """Each edge that lies on a cycle or points against the flow, with the reason."""
    found = {}
    for edge in sorted(edges):
        importer, imported = edge
        cycle = cycle_through(edge, edges)
        if cycle:
            found[edge] = "cycle " + " -> ".join(cycle)
        allowed = LAYERS[layer_of(importer)][1]
        if layer_of(imported) not in allowed:
            reason = f"{layer_of(importer)} may not import {layer_of(imported)}"
            found[edge] = f"{found[edge]}; {reason}" if edge in found else reason
    return found


def test_imports_follow_the_flow_without_cycles():
    source_dirs = {ROOT / folder: package for folder, package in SOURCE_DIRS.items()}
    for module in module_files(source_dirs):
        layer_of(module)
    edges = import_graph(source_dirs)
    assert len(edges) > 100, "the parser found too few imports to be reading the tree"
    found = violations(edges)
    bad = [
        f"{a} -> {b}: {reason} (at {', '.join(edges[a, b])})" for (a, b), reason in found.items()
    ]
    # An edge against the flow often closes many cycles: show those edges first.
    bad.sort(key=lambda line: "may not import" not in line)
    assert not bad, "imports against DESIGN.md section 2:\n" + "\n".join(bad)


def test_the_checker_catches_a_cycle_and_a_back_edge(tmp_path):
    envs, datasets, planners = (tmp_path / name for name in ("envs", "datasets", "planners"))
    for folder in (envs, datasets, planners):
        folder.mkdir()
        (folder / "__init__.py").write_text("")
    # A back edge inside a function, from the lower layer to the higher one.
    (envs / "make.py").write_text("def make():\n    from wmrobot.datasets import store\n")
    (datasets / "store.py").write_text("from wmrobot.envs.make import make\n")
    # A cycle through relative imports, and an import of the package from two levels up.
    (planners / "cem.py").write_text("from . import mppi\n")
    (planners / "mppi.py").write_text("from .cem import CEM\nfrom .. import planners\n")
    edges = import_graph(
        {envs: "wmrobot.envs", datasets: "wmrobot.datasets", planners: "wmrobot.planners"}
    )
    assert edges.keys() == {
        ("wmrobot.envs.make", "wmrobot.datasets"),
        ("wmrobot.envs.make", "wmrobot.datasets.store"),
        ("wmrobot.datasets.store", "wmrobot.envs"),
        ("wmrobot.datasets.store", "wmrobot.envs.make"),
        ("wmrobot.planners.cem", "wmrobot.planners.mppi"),
        ("wmrobot.planners.mppi", "wmrobot.planners.cem"),
        ("wmrobot.planners.mppi", "wmrobot.planners"),
    }
    assert violations(edges) == {
        ("wmrobot.envs.make", "wmrobot.datasets"): "envs may not import datasets",
        ("wmrobot.envs.make", "wmrobot.datasets.store"): (
            "cycle wmrobot.envs.make -> wmrobot.datasets.store -> wmrobot.envs.make; "
            "envs may not import datasets"
        ),
        ("wmrobot.datasets.store", "wmrobot.envs.make"): (
            "cycle wmrobot.datasets.store -> wmrobot.envs.make -> wmrobot.datasets.store"
        ),
        ("wmrobot.planners.cem", "wmrobot.planners.mppi"): (
            "cycle wmrobot.planners.cem -> wmrobot.planners.mppi -> wmrobot.planners.cem"
        ),
        ("wmrobot.planners.mppi", "wmrobot.planners.cem"): (
            "cycle wmrobot.planners.mppi -> wmrobot.planners.cem -> wmrobot.planners.mppi"
        ),
    }
