"""The package's layout holds: the science never imports the runner, no module imports itself back through
others, and the runner's one list of environment-only keys is the one Hydra uses to name sweep jobs."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from stablenets.runner.overrides import ENVIRONMENT_KEYS, SWEEP_KEYS

PACKAGE = Path(__file__).resolve().parent.parent / "stablenets"
ENTRY_POINTS = {"stablenets.api", "stablenets.train", "stablenets.eval", "stablenets.collect"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(name: str) -> set[str]:
    """The project modules ``name`` imports anywhere in its file (top level or inside functions)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # ``from pkg import mod`` imports the module pkg.mod; ``from mod import name`` imports mod
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in MODULES and t != name}
    return found


# The root package is a facade: ``stablenets.compose`` etc. import the API on first attribute access
# (``__getattr__``), once the package is loaded, so its own edges cannot take part in an import-time cycle.
GRAPH = {name: imports(name) if name != "stablenets" else set() for name in MODULES}


def test_the_science_never_imports_the_runner():
    science = [
        m for m in MODULES if not m.startswith("stablenets.runner") and m not in ENTRY_POINTS and m != "stablenets"
    ]
    offenders = {m: sorted(t for t in GRAPH[m] if t.startswith("stablenets.runner")) for m in science}
    assert not {m: t for m, t in offenders.items() if t}, offenders
    assert len(science) > 40  # the walk found the package


def test_the_graph_walk_sees_relative_and_nested_imports():
    assert "stablenets.runner.config" in GRAPH["stablenets.train"]  # from .runner.config import ...
    assert "stablenets.train" in GRAPH["stablenets.runner.rank_worker"]  # from ..train import train (in main)
    assert "stablenets.contracts" in GRAPH["stablenets.nn.bounds"]  # from ..contracts import ...
    assert "stablenets.runner.progress" in GRAPH["stablenets.runner.fit"]  # from . import progress


def test_no_import_cycle():
    """Tarjan's strongly connected components of the import graph: every one is a single module."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
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
                cycles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_root_holds_only_entry_points_and_shared_contracts():
    root = {p.stem for p in PACKAGE.glob("*.py")}
    assert root == {"__init__", "api", "train", "eval", "collect", "contracts", "checks", "losses", "ranks"}


def test_sweep_job_names_leave_out_exactly_the_environment_keys():
    hydra_cfg = yaml.safe_load((PACKAGE.parent / "conf" / "hydra" / "default.yaml").read_text())
    excluded = hydra_cfg["job"]["config"]["override_dirname"]["exclude_keys"]
    assert sorted(excluded) == sorted({*ENVIRONMENT_KEYS, *SWEEP_KEYS})
    assert len(excluded) == len(set(excluded))
