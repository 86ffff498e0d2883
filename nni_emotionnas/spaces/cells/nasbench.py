"""Importer of NAS-Bench-NLP recurrent-cell descriptions ("recipes") into the cell format.

A recipe maps node names to `{"op": ..., "input": [...]}` (or `[op, *inputs]`); inputs `x`, `h_prev_0`,
`h_prev_1`; the new states are the nodes `h_new_0` and `h_new_1`. Op names: `linear`, `blend`,
`elementwise_prod`, `elementwise_sum`, `activation_tanh`, `activation_sigm`, `activation_leaky_relu`.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any, Union

from nni_emotionnas.errors import ConfigError
from nni_emotionnas.spaces.cells.spec import CellSpec, Node, make_cell, topological_order

OP_NAMES = {
    "linear": "linear", "blend": "blend", "elementwise_prod": "product", "elementwise_sum": "sum",
    "activation_tanh": "tanh", "activation_sigm": "sigmoid", "activation_leaky_relu": "leaky_relu",
}
INPUT_NAMES = {"x": "x", "h_prev_0": "h1", "h_prev_1": "h2"}
OUTPUT_NAMES = {"h_new_0": "h1", "h_new_1": "h2"}


def _entry(name: str, raw: Any, where: str) -> tuple[str, list[str]]:
    if isinstance(raw, dict) and "op" in raw and "input" in raw:
        op, inputs = raw["op"], raw["input"]
    elif isinstance(raw, (list, tuple)) and raw and isinstance(raw[0], str):
        op, inputs = raw[0], list(raw[1:])
    else:
        raise ConfigError(f"{where}.{name}: expected {{'op': ..., 'input': [...]}} or [op, *inputs]")
    if op not in OP_NAMES:
        raise ConfigError(f"{where}.{name}: unknown NAS-Bench-NLP op {op!r} (known: {', '.join(OP_NAMES)})")
    if not isinstance(inputs, (list, tuple)) or not all(isinstance(i, str) for i in inputs):
        raise ConfigError(f"{where}.{name}: inputs must be a list of node names")
    return op, list(inputs)


def import_recipe(recipe: dict[str, Any], where: str = "recipe") -> CellSpec:
    """Converts one recipe; cells with a third state (`h_prev_2`/`h_new_2`) do not fit this space."""
    if not isinstance(recipe, dict) or "h_new_0" not in recipe:
        raise ConfigError(f"{where}: a NAS-Bench-NLP recipe is a mapping with at least the node 'h_new_0'")
    nodes: dict[str, Node] = {}
    for name, raw in recipe.items():
        op, inputs = _entry(name, raw, where)
        if name in INPUT_NAMES or name == "h_new_2" or "h_prev_2" in inputs:
            raise ConfigError(f"{where}.{name}: the space has states h1, h2 only (h_prev_0/1, h_new_0/1)")
        nodes[name] = Node(name, OP_NAMES[op], tuple(INPUT_NAMES.get(i, i) for i in inputs))
    ordered = topological_order(nodes, where)
    outputs = {state: name for name, state in OUTPUT_NAMES.items() if name in nodes}
    return make_cell(ordered, outputs, where)


def load_recipes(path: Union[str, Path]) -> dict[str, CellSpec]:
    """Reads a file holding one recipe or a mapping name -> recipe, as JSON or as a Python literal
    (NAS-Bench-NLP ships its recipes as Python dict strings)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: NAS-Bench-NLP recipe file not found")
    text = path.read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        try:
            data = ast.literal_eval(text)
        except (ValueError, SyntaxError) as exc:
            raise ConfigError(f"{path}: neither JSON nor a Python dict literal ({exc})") from exc
    if isinstance(data, dict) and "h_new_0" in data:
        return {path.stem: import_recipe(data, str(path))}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a recipe or a mapping of name -> recipe")
    return {str(name): import_recipe(recipe, f"{path}:{name}") for name, recipe in data.items()}
