"""The package's layers import downward only, and no modules import each other in a cycle.

Bottom to top: ``tailmix.io`` (atomic writes, file lock, leakage checks) -> ``classifiers`` -> ``generators``
-> ``envs`` -> ``agents`` -> ``tailmix.pipeline`` and its neighbours ``runs``, ``policies``, ``preflight`` (data,
banks, run folders, policy loading) -> ``tailmix.suite`` (the benchmark suite: tasks, protocol, runner, reference
scores) -> ``tailmix.mainjob`` and its neighbours ``configs``, ``commands``, ``budget`` (the application: the main
job runs the suite's strongest protocol on a user's data) -> ``tailmix.train_agents`` (the CLI).
Every ``import`` of every module counts, at module level and inside functions (a lazy import is still a
dependency); only ``if TYPE_CHECKING:`` blocks, which never run, are skipped.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Layers from the bottom up, and where each one's source lives in the repository.
LAYERS = ("io", "classifiers", "generators", "envs", "agents", "pipeline", "suite", "application", "train_agents")
SOURCES = {"io": ROOT / "tailmix" / "io", "classifiers": ROOT / "classifiers", "generators": ROOT / "generators",
           "envs": ROOT / "envs", "agents": ROOT / "agents", "pipeline": ROOT / "tailmix" / "pipeline.py",
           "runs": ROOT / "tailmix" / "runs.py", "policies": ROOT / "tailmix" / "policies.py",
           "configs": ROOT / "tailmix" / "configs.py", "commands": ROOT / "tailmix" / "commands.py",
           "budget": ROOT / "tailmix" / "budget.py", "suite": ROOT / "tailmix" / "suite",
           "preflight": ROOT / "tailmix" / "preflight.py", "mainjob": ROOT / "tailmix" / "mainjob.py",
           "train_agents": ROOT / "tailmix" / "train_agents.py"}
#: Modules beside ``tailmix.pipeline`` (below the suite, which builds its tasks' banks through the pipeline).
PIPELINE = ("runs", "policies", "preflight")
#: The application layer above the suite (the main job uses the suite's protocol; the CLI imports them).
APPLICATION = ("mainjob", "configs", "commands", "budget")
#: ``tailmix/__init__.py`` registers the env ids (it imports ``tailmix.envs``); it sits on top, with the CLI.
PACKAGE_ROOT = ROOT / "tailmix" / "__init__.py"


def package_modules() -> dict[str, str]:
    """``{dotted module name: source}`` of every module of the installed package."""
    out = {"tailmix": PACKAGE_ROOT.read_text()}
    for layer, where in SOURCES.items():
        files = [where] if where.is_file() else sorted(where.rglob("*.py"))
        for f in files:
            rel = [] if where.is_file() else [p for p in f.relative_to(where).with_suffix("").parts if p != "__init__"]
            out[".".join(["tailmix", layer, *rel])] = f.read_text()
    return out


def layer_of(module: str) -> int:
    """Rank of ``module``'s layer (0 = bottom); the package root ranks with the top."""
    parts = module.split(".")
    if len(parts) == 1:
        return len(LAYERS) - 1
    return LAYERS.index("pipeline" if parts[1] in PIPELINE else "application" if parts[1] in APPLICATION
                        else parts[1])


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(module: str, source: str, known: set[str]) -> set[str]:
    """The package modules ``module`` imports anywhere in ``source`` (``if TYPE_CHECKING:`` blocks excepted)."""
    found: set[str] = set()

    def resolve(name: str) -> None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != module:
            found.add(name)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                resolve(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssertionError(f"{module}: relative import (line {node.lineno}); tailmix imports absolutely")
            base = node.module or ""
            for alias in node.names:
                resolve(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return found


def import_graph(modules: dict[str, str]) -> dict[str, set[str]]:
    known = set(modules)
    return {name: imports_of(name, src, known) for name, src in modules.items()}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} imports {b} (layer {LAYERS[layer_of(b)]} is above {LAYERS[layer_of(a)]})"
                  for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


@pytest.fixture(scope="module")
def graph():
    return import_graph(package_modules())


def test_every_module_of_the_package_belongs_to_a_layer():
    """A new folder or module under tailmix/ must be placed in LAYERS (or it escapes this test)."""
    placed = {p.resolve() for where in SOURCES.values() for p in ([where] if where.is_file() else where.rglob("*.py"))}
    unplaced = [str(p.relative_to(ROOT)) for p in (ROOT / "tailmix").rglob("*.py")
                if p.resolve() not in placed and p.resolve() != PACKAGE_ROOT]
    assert not unplaced, f"add these to LAYERS/SOURCES in tests/test_layers.py: {unplaced}"


def test_the_graph_sees_lazy_imports(graph):
    # A function-level import (the pipeline imports the generators' factory lazily) is an edge.
    assert "tailmix.generators.base" in graph["tailmix.pipeline"]
    assert "tailmix.io.atomic" in graph["tailmix.generators.bank"]


def test_no_module_imports_a_layer_above_its_own(graph):
    assert upward_imports(graph) == []


def test_no_import_cycle(graph):
    assert cycles(graph) == []


def test_the_checks_catch_an_upward_import_and_a_cycle():
    modules = {"tailmix.generators.bad": "def f():\n    from tailmix.envs.core import RatioCore\n",
               "tailmix.envs.core": "import numpy\n",
               "tailmix.envs.a": "from tailmix.envs import b\n",
               "tailmix.envs.b": "def g():\n    import tailmix.envs.a\n",
               "tailmix.envs.c": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import tailmix.agents.x\n",
               "tailmix.agents.x": ""}
    g = import_graph(modules)
    assert upward_imports(g) == ["tailmix.generators.bad imports tailmix.envs.core (layer envs is above generators)"]
    assert cycles(g) == [["tailmix.envs.a", "tailmix.envs.b"]]


def test_no_cycle_or_upward_import_even_counting_type_annotations():
    """Imports made only for annotations (``if TYPE_CHECKING:``) count here: LongTailDataset's own module keeps the
    loaders, the long-tail builder and the leakage checks from naming each other (issue 25 item 4)."""
    modules = package_modules()
    known = set(modules)
    graph = {name: imports_of(name, src.replace("if TYPE_CHECKING:", "if True:"), known)
             for name, src in modules.items()}
    assert cycles(graph) == [] and upward_imports(graph) == []


def test_each_name_has_one_home():
    """The compatibility shims are gone: no module re-exports another's names."""
    import importlib

    for old in ("tailmix.envs.atomic", "tailmix.envs.leakage"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(old)
    from tailmix import train_agents
    from tailmix.envs import core, engine

    assert not hasattr(engine, "metrics_from_confusion") and not hasattr(train_agents, "prepare_run_dir")
    assert core.__dict__.get("build_engine") is not None  # used by the core, not re-exported for others
    from tailmix.io.dataset import LongTailDataset
    from tailmix.io.leakage import SPLITS

    assert SPLITS == ("train", "val", "test") and LongTailDataset.__module__ == "tailmix.io.dataset"
