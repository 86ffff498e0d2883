"""The package's layout is the pipeline: stages import only earlier stages, and no module imports in a circle."""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nni_emotionnas"
# Stages in pipeline order; a module may import its own stage and earlier ones (foundation first).
STAGES = ["errors", "threads", "locks", "workers", "nni_compat", "config", "corpora", "features", "spaces", "training",
          "search", "models", "evaluation", "nni_support", "cli"]


def module_name(path: Path) -> str:
    parts = ["nni_emotionnas", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Every package module `path` imports, at top level or inside functions (lazy imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {name for name in found if name in known}


@lru_cache(maxsize=1)
def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(path, set(mods)) - {name} for name, path in mods.items()}


def stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "errors"


def find_cycle(edges: dict[str, set[str]]) -> list[str]:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def test_no_module_imports_in_a_circle() -> None:
    assert find_cycle(graph()) == []


def test_cycle_finder_finds_a_planted_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


@pytest.mark.parametrize("module", sorted(modules()))
def test_stages_import_only_earlier_stages(module: str) -> None:
    if module == "nni_emotionnas":
        return
    assert stage(module) in STAGES, f"{module}: not in a known stage; add its package to STAGES"
    later = sorted(m for m in graph()[module] if STAGES.index(stage(m)) > STAGES.index(stage(module)))
    assert later == [], f"{module} imports a later stage: {later}"


# NNI's documented public API; anything else of NNI (and any `_name`) is reached only through nni_compat.py
NNI_PUBLIC = {"nni", "nni.mutable", "nni.nas.nn.pytorch", "nni.nas.space", "nni.nas.strategy", "nni.nas.experiment",
              "nni.nas.evaluator", "nni.nas.evaluator.pytorch"}
NNI_DOOR = "nni_emotionnas.nni_compat"


def private_nni_imports(source: str) -> list[str]:
    """The NNI paths and names `source` imports that are not NNI's public API (lazy imports count too)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "nni" and a.name not in NNI_PUBLIC]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "nni":
            if node.module not in NNI_PUBLIC:
                found.append(node.module)
            found += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    return found


@pytest.mark.parametrize("module", sorted(set(modules()) - {NNI_DOOR}))
def test_nni_internals_are_reached_only_through_the_nni_door(module: str) -> None:
    assert private_nni_imports(modules()[module].read_text()) == [], f"{module}: import it from {NNI_DOOR}"


def test_the_nni_door_rule_finds_private_paths_and_names() -> None:
    source = ("import nni\nimport nni.trial\nfrom nni.nas.strategy import DARTS, _private\n"
              "def lazy():\n    from nni.nas.nn.pytorch.cell import preprocess_cell_inputs\n")
    assert private_nni_imports(source) == ["nni.trial", "nni.nas.strategy._private", "nni.nas.nn.pytorch.cell"]
    assert private_nni_imports(modules()[NNI_DOOR].read_text())  # the door itself does reach inside
