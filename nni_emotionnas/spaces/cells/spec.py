"""The cell description format shared by the search space's genotypes, the catalog and the importers.

A cell maps (x_t, h1_{t-1}, h2_{t-1}) to (h1_t, h2_t) through intermediate nodes, each one op applied to
earlier values. JSON form::

    {"nodes": [{"name": "i", "op": "linear", "inputs": ["x", "h1"]}, ...],
     "outputs": {"h1": "h", "h2": "c"}}

`outputs.h2` may be omitted (cells with one state, e.g. GRU): h2 then stays zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nni_emotionnas.errors import ConfigError
from nni_emotionnas.spaces.cells.ops import recurrent_op

CELL_INPUTS = ("x", "h1", "h2")


@dataclass(frozen=True)
class Node:
    name: str
    op: str
    inputs: tuple[str, ...]


@dataclass(frozen=True)
class CellSpec:
    """A validated cell: nodes in an order where every input is defined before use."""

    nodes: tuple[Node, ...]
    outputs: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodes": [{"name": n.name, "op": n.op, "inputs": list(n.inputs)} for n in self.nodes],
            "outputs": dict(self.outputs),
        }

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def used_nodes(self) -> tuple[Node, ...]:
        """Nodes the outputs depend on, in order (dead nodes cost nothing at run time)."""
        needed = set(self.outputs.values())
        for node in reversed(self.nodes):
            if node.name in needed:
                needed.update(node.inputs)
        return tuple(n for n in self.nodes if n.name in needed)

    def reads_of(self, state: str) -> set[str]:
        """The cell inputs (x, h1, h2) that the node giving `state` (h1 or h2) depends on within one step."""
        needed, read = {self.outputs[state]}, set[str]()
        for node in reversed(self.nodes):
            if node.name in needed:
                needed.update(node.inputs)
                read.update(name for name in node.inputs if name in CELL_INPUTS)
        return read

    def follows_input(self, state: str = "h1") -> bool:
        """Whether the `state` sequence depends on x at all: through x_t, or through a state that does (one step
        back). h1 is what the network reads; a cell whose h1 never depends on x scores chance."""
        follows: set[str] = set()
        while True:
            new = {s for s in self.outputs if s not in follows and self.reads_of(s) & ({"x"} | follows)}
            if not new:
                return state in follows
            follows |= new

    def inputs_read(self) -> tuple[str, ...]:
        """The cell inputs (x, h1, h2) the new states depend on: without h1 or h2 the cell is not recurrent."""
        read = {name for node in self.used_nodes() for name in node.inputs}
        return tuple(name for name in CELL_INPUTS if name in read)


def cell_from_dict(data: Any, where: str = "cell") -> CellSpec:
    """Parses and validates the JSON form; errors name the offending node and key."""
    if not isinstance(data, dict) or "nodes" not in data or "outputs" not in data:
        raise ConfigError(f"{where}: expected a mapping with 'nodes' and 'outputs'")
    if not isinstance(data["nodes"], list) or not data["nodes"]:
        raise ConfigError(f"{where}.nodes: expected a non-empty list of nodes")
    nodes = []
    for i, raw in enumerate(data["nodes"]):
        key = f"{where}.nodes[{i}]"
        if not isinstance(raw, dict) or set(raw) != {"name", "op", "inputs"}:
            raise ConfigError(f"{key}: expected a mapping with exactly 'name', 'op' and 'inputs'")
        inputs = raw["inputs"]
        if not isinstance(inputs, list) or not all(isinstance(v, str) for v in inputs):
            raise ConfigError(f"{key}.inputs: expected a list of node names")
        nodes.append(Node(str(raw["name"]), str(raw["op"]), tuple(inputs)))
    outputs = data["outputs"]
    if not isinstance(outputs, dict):
        raise ConfigError(f"{where}.outputs: expected a mapping like {{'h1': node, 'h2': node}}")
    return make_cell(nodes, {str(k): str(v) for k, v in outputs.items()}, where)


def make_cell(nodes: list[Node], outputs: dict[str, str], where: str = "cell") -> CellSpec:
    """Checks ops, arities, names and that inputs are defined earlier; the one gate every cell passes."""
    defined = set(CELL_INPUTS)
    for i, node in enumerate(nodes):
        key = f"{where}.nodes[{i}] ({node.name})"
        if node.name in defined:
            raise ConfigError(f"{key}: name is already used (cell inputs are {', '.join(CELL_INPUTS)})")
        low, high = recurrent_op(node.op, f"{key}.op").arity
        if len(node.inputs) < low or (high is not None and len(node.inputs) > high):
            expected = f"{low}" if low == high else f"at least {low}"
            raise ConfigError(f"{key}.inputs: {node.op} takes {expected} inputs, got {len(node.inputs)}")
        for name in node.inputs:
            if name not in defined:
                raise ConfigError(f"{key}.inputs: {name!r} is not a cell input or an earlier node")
        defined.add(node.name)
    if "h1" not in outputs:
        raise ConfigError(f"{where}.outputs.h1: required (the node giving the new hidden state)")
    for state, name in outputs.items():
        if state not in ("h1", "h2"):
            raise ConfigError(f"{where}.outputs.{state}: unknown state (known: h1, h2)")
        if name not in defined or name in CELL_INPUTS:
            raise ConfigError(f"{where}.outputs.{state}: {name!r} is not a node of the cell")
    return CellSpec(tuple(nodes), dict(outputs))


def topological_order(nodes: dict[str, Node], where: str) -> list[Node]:
    """Orders nodes given in any order (importers); cycles and undefined inputs raise `ConfigError`."""
    order: list[Node] = []
    state: dict[str, int] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in CELL_INPUTS or state.get(name) == 2:
            return
        if name not in nodes:
            raise ConfigError(f"{where}: node {path[-1]!r} reads {name!r}, which is not defined")
        if state.get(name) == 1:
            raise ConfigError(f"{where}: cycle through {' -> '.join(path + (name,))}")
        state[name] = 1
        for parent in nodes[name].inputs:
            visit(parent, path + (name,))
        state[name] = 2
        order.append(nodes[name])

    for name in nodes:
        visit(name, (name,))
    return order
