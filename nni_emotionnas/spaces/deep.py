"""The deep-feature stream's search space: a recurrent cell shared across timesteps, as an NNI ModelSpace.

Cell inputs x_t (projected to H), h1_{t-1}, h2_{t-1}; `nodes` intermediate nodes each pick operands among
their predecessors (`InputChoice` per operand slot) and an op (`LayerChoice` over `ops`); h1_t and h2_t
are each an `InputChoice` over the intermediate nodes. The h1 sequence goes through attention pooling
over valid frames and a classifier. With `cells` set, the space is instead one choice among given cells
(catalog names or NAS-Bench-NLP recipes) for the `catalog` strategy. Either way `freeze(arch)` gives the
fast fixed network (`nni_emotionnas.spaces.cells.fixed`). Implements the protocol of `nni_emotionnas.spaces`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import torch
from nni.mutable import Constraint, ConstraintViolation, LabeledMutable, SampleMissingError, label_scope
from nni.nas.nn.pytorch import InputChoice, LayerChoice, ModelSpace
from nni.nas.space import current_model
from torch import nn

from nni_emotionnas.spaces.cells.fixed import FixedRecurrent, bound_state
from nni_emotionnas.spaces.cells.ops import LINEAR, OPS, SLOTS, recurrent_op
from nni_emotionnas.spaces.cells.refs import expand_refs, resolve_cell
from nni_emotionnas.spaces.cells.spec import CellSpec, Node, cell_from_dict, make_cell
from nni_emotionnas.spaces.kernels.recurrent_mixture import layer_mixture, run_mixture
from nni_emotionnas.spaces.pooling import PooledSequenceMixin, build_pooling
from nni_emotionnas.spaces.size_limits import MAX_LAYERS, MAX_NODES, check_count, check_parameters

_logger = logging.getLogger(__name__)

DEFAULT_CONFIG_FILE = "recurrent_cell.yml"
CELL_LABEL = "cell"
STATE_LABELS = ("h1", "h2")
# Choice labels name what they choose (the web UI shows them): `n1/op`, `n1/operand_a` (an input of node n1's op),
# `new_h1` (the node giving h1_t); an input choice's values are the names of its candidates (`input_names`).
OUTPUT_LABELS = {"h1": "new_h1", "h2": "new_h2"}
READS_INPUT_LABEL = "reads_x"


def operand_label(slot: str) -> str:
    return f"operand_{slot}"


def upgrade_architecture(architecture: dict[str, Any]) -> dict[str, Any]:
    """Genotype files written before the labels named what they choose (`n1/a`, `h1`) load unchanged."""
    upgraded = {}
    for label, value in architecture.items():
        node, _, slot = label.partition("/")
        if slot in SLOTS:
            label = f"{node}/{operand_label(slot)}"
        upgraded[OUTPUT_LABELS.get(label, label)] = value
    return upgraded


@dataclass
class RecurrentSpaceConfig:
    """Knobs of `search_spaces/recurrent_cell.yml` (H=`hidden_size`, L=`num_layers`)."""

    input_dim: int = 512
    hidden_size: int = 256
    num_layers: int = 1
    nodes: int = 8
    ops: list[str] = field(default_factory=lambda: list(OPS))  # every op of the table (cells.ops)
    leaky_slope: float = 0.01
    attention_dim: int = 128
    pooling: Literal["attention", "statistics"] = "attention"  # `statistics`: mean+std over valid frames
    # also append the mean and std of the input frames to the pooled embedding: a skip path around the
    # recurrent cell (what the stream's linear probe reads), so the cell adds to those statistics
    input_statistics: bool = False
    dropout: float = 0.2
    state_bound: Optional[float] = 5.0
    cells: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        unknown = [op for op in self.ops if op not in OPS]
        if unknown:
            raise ValueError(f"ops: unknown recurrent op {unknown[0]!r} (known: {', '.join(OPS)})")
        if not self.ops:
            raise ValueError("ops: needs at least one op")
        if self.state_bound is not None and self.state_bound <= 0:
            raise ValueError(f"state_bound: must be positive or null, got {self.state_bound}")
        for name in ("input_dim", "hidden_size", "num_layers", "nodes", "attention_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1, got {getattr(self, name)}")
        check_count("nodes", self.nodes, MAX_NODES, "nodes per cell")
        check_count("num_layers", self.num_layers, MAX_LAYERS, "layers")
        largest = max(("hidden_size", "input_dim", "attention_dim"), key=lambda name: getattr(self, name))
        check_parameters(largest, getattr(self, largest), self.least_parameters())

    def least_parameters(self) -> int:
        """Weights a fixed network of this config has at least: each layer's projection of its input to H
        (the frames' width for the first), then the attention pooling."""
        h = self.hidden_size
        return (self.input_dim + (self.num_layers - 1) * h) * h + h * self.attention_dim


CONFIG_CLASS = RecurrentSpaceConfig


def upgrade_config(data: dict[str, Any], where: str, recorded: bool) -> dict[str, Any]:
    return data  # no key was removed


def node_name(index: int) -> str:
    return f"n{index + 1}"


def candidate_names(index: int) -> list[str]:
    """What node `index`'s operand choices choose from: the cell inputs, then earlier nodes."""
    return ["x", "h1", "h2"] + [node_name(i) for i in range(index)]


class SlotOp(nn.Module):
    """A candidate op of a supernet node: every op takes the node's operands (a, b, z) and reads its own slots."""

    def __init__(self, op: str, hidden_size: int, leaky_slope: float) -> None:
        super().__init__()
        recurrent_op(op, "ops")  # an op missing from the table fails here, naming it
        self.op, self.leaky_slope = op, leaky_slope
        self.linear = nn.Linear(hidden_size, hidden_size) if op == LINEAR else None

    def forward(self, operands: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        if self.linear is not None:
            return self.linear(operands[0])
        entry, chosen = recurrent_op(self.op), dict(zip(SLOTS, operands))
        return entry.apply([chosen[slot] for slot in entry.slots], self.leaky_slope)


class SearchNode(nn.Module):
    def __init__(self, index: int, config: RecurrentSpaceConfig) -> None:
        super().__init__()
        slots = [s for s in SLOTS if any(s in OPS[op].slots for op in config.ops)]
        self.slots = slots
        with label_scope(node_name(index)):  # labels `n1/operand_a`, `n1/op`, ...
            self.operands = nn.ModuleDict(
                {s: InputChoice(3 + index, n_chosen=1, label=operand_label(s)) for s in slots}
            )
            self.op = LayerChoice(
                {op: SlotOp(op, config.hidden_size, config.leaky_slope) for op in config.ops}, label="op"
            )

    def forward(self, candidates: list[torch.Tensor]) -> torch.Tensor:
        chosen = {s: self.operands[s](candidates) for s in self.slots}
        a = chosen["a"]
        return self.op((a, chosen.get("b", a), chosen.get("z", a)))  # one argument: LayerChoice takes one


class SearchLayer(nn.Module):
    """One recurrent layer of the supernet; x is projected to H once for all frames, outside the loop."""

    def __init__(self, input_dim: int, config: RecurrentSpaceConfig) -> None:
        super().__init__()
        self.hidden_size, self.state_bound = config.hidden_size, config.state_bound
        self.leaky_slope = config.leaky_slope
        self.x_proj = nn.Linear(input_dim, config.hidden_size)
        self.nodes = nn.ModuleList(SearchNode(i, config) for i in range(config.nodes))
        self.outputs = nn.ModuleDict(
            {s: InputChoice(config.nodes, n_chosen=1, label=OUTPUT_LABELS[s]) for s in STATE_LABELS}
        )

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        projected = self.x_proj(frames)
        mixture = layer_mixture(self)  # DARTS: the same function in far fewer ops (kernels.recurrent_mixture)
        if mixture is not None:
            return run_mixture(self, projected, mixture, self.leaky_slope)
        steps = projected.unbind(1)
        h1 = h2 = frames.new_zeros(frames.shape[0], self.hidden_size)
        outputs = []
        for x in steps:
            values = [x, h1, h2]
            for node in self.nodes:
                values.append(node(values))
            h1 = bound_state(self.outputs["h1"](values[3:]), self.state_bound)
            h2 = bound_state(self.outputs["h2"](values[3:]), self.state_bound)
            outputs.append(h1)
        return torch.stack(outputs, dim=1)


def fixed_recurrent(cell: CellSpec, config: RecurrentSpaceConfig) -> FixedRecurrent:
    return FixedRecurrent(cell, config.input_dim, config.hidden_size, config.num_layers, config.leaky_slope,
                          config.dropout, config.state_bound)


class RecurrentNetwork(PooledSequenceMixin, nn.Module):
    """The fixed network: a fixed cell (fast runtime), attention pooling, classifier."""

    def __init__(self, cell: CellSpec, config: RecurrentSpaceConfig, num_classes: int) -> None:
        super().__init__()
        self.cell, self.input_dim, self.embedding_dim = cell, config.input_dim, config.hidden_size
        self.recurrent = fixed_recurrent(cell, config)
        self.pool, self.input_statistics, self.embedding_dim = build_pooling(config)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(self.embedding_dim, num_classes)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        return self.recurrent(frames)


class RecurrentSpace(PooledSequenceMixin, ModelSpace):
    """The supernet (DARTS) or, with `config.cells`, a choice among known cells."""

    def __init__(self, config: RecurrentSpaceConfig, num_classes: int, constrained: bool = True) -> None:
        super().__init__()
        self.config, self.num_classes = config, num_classes
        self.input_dim, self.embedding_dim = config.input_dim, config.hidden_size
        if config.cells:
            refs = expand_refs(list(config.cells), "space.cells")
            self.recurrent = LayerChoice(
                {ref: fixed_recurrent(resolve_cell(ref, "space.cells"), config) for ref in refs},
                label=CELL_LABEL,
            )
        else:
            self.recurrent = nn.ModuleList(
                SearchLayer(config.input_dim if i == 0 else config.hidden_size, config)
                for i in range(config.num_layers)
            )
            if constrained and current_model() is None:  # NNI builds a trial's network under a frozen sample
                self.add_mutable(ReadsInput(self.recurrent[0]))
        self.pool, self.input_statistics, self.embedding_dim = build_pooling(config)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(self.embedding_dim, num_classes)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        if isinstance(self.recurrent, nn.ModuleList):
            for i, layer in enumerate(self.recurrent):
                frames = layer(self.dropout(frames) if i else frames)
            return frames
        return self.recurrent(frames)

    def freeze(self, sample: dict[str, Any]) -> RecurrentNetwork:
        """The fixed network of an architecture dict (new weights: `emotionnas train` retrains it)."""
        return RecurrentNetwork(cell_of(sample), self.config, self.num_classes)


def build_space(space_config: RecurrentSpaceConfig, num_classes: int) -> RecurrentSpace:
    return RecurrentSpace(space_config, num_classes)


def build_oneshot_space(space_config: RecurrentSpaceConfig, num_classes: int) -> RecurrentSpace:
    """The supernet for one-shot strategies, which accept choices only (NNI's DARTS raises on a `Constraint`):
    they train every cell at once and export one, which `derive_architecture` makes read x_t."""
    return RecurrentSpace(space_config, num_classes, constrained=False)


def _index(value: Any) -> int:
    """InputChoice values come as `[k]` (NNI's sample) or `k`."""
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise ValueError(f"expected one chosen input, got {value!r}")
        value = value[0]
    return int(value)


class ReadsInput(Constraint):
    """The space's validity rule: the output h1 must depend on x (through x_t, or through h2 when h2 reads x_t).
    A cell whose states ignore the input scores chance whatever it is trained on, so NNI's sampling (`random`,
    `grid`), mutation and `freeze` refuse it like any other invalid sample (strategies resample)."""

    def __init__(self, layer: SearchLayer) -> None:
        self.label = READS_INPUT_LABEL
        self.choices: list[LabeledMutable] = [
            *(choice for node in layer.nodes
              for choice in (node.op.choice, *(c.choice for c in node.operands.values()))),
            *(layer.outputs[s].choice for s in STATE_LABELS),
        ]

    def leaf_mutables(self, is_leaf: Any) -> Any:
        for choice in self.choices:
            yield from choice.leaf_mutables(is_leaf)
        yield self

    def random(self, memo: Optional[dict[str, Any]] = None, random_state: Any = None) -> None:
        """As NNI's `Constraint.random` (samples what is not in `memo` yet, then validates), minus its per-call
        `simplify()` of the whole space, a fifth of the sampling time."""
        memo = {} if memo is None else memo
        for choice in self.choices:
            choice.random(memo, random_state)
        return self.freeze(memo)

    def check_contains(self, sample: dict[str, Any]) -> Optional[Exception]:
        for choice in self.choices:
            if choice.label not in sample:
                return SampleMissingError(choice.label, list(sample))
        return blind_cell_error(cell_of(sample))

    def extra_repr(self) -> str:
        return f"label={self.label!r}"


def blind_cell_error(cell: CellSpec) -> Optional[ConstraintViolation]:
    """Why a cell is refused (its output h1 never depends on x), or None when it follows its input."""
    if cell.follows_input("h1"):
        return None
    states = ", ".join(f"{state}_t = {node} reads {'/'.join(sorted(cell.reads_of(state))) or 'nothing'}"
                       for state, node in cell.outputs.items())
    return ConstraintViolation(f"the cell's output h1 never depends on x_t ({states}): it would ignore the input "
                               "frames")


def input_names(label: str, count: int) -> Optional[list[str]]:
    """What an input choice's values 0..count-1 stand for (`n2/operand_a`: x, h1, h2, n1; `new_h1`: n1, n2, ...)."""
    if label in OUTPUT_LABELS.values():
        return [node_name(i) for i in range(count)]
    node, _, slot = label.partition("/")
    if slot.startswith("operand_") and node.startswith("n") and node[1:].isdigit():
        return candidate_names(int(node[1:]) - 1)[:count]
    return None


def cell_of(arch: dict[str, Any]) -> CellSpec:
    """The cell an architecture dict describes: a catalog/recipe choice or the supernet's labels."""
    if CELL_LABEL in arch:
        value = arch[CELL_LABEL]
        return cell_from_dict(value, "architecture.cell") if isinstance(value, dict) else resolve_cell(value)
    count = 0
    while f"{node_name(count)}/op" in arch:
        count += 1
    nodes = []
    for i in range(count):
        op = arch[f"{node_name(i)}/op"]
        names = candidate_names(i)
        slots = recurrent_op(op, f"architecture.{node_name(i)}/op").slots
        inputs = tuple(names[_index(arch[f"{node_name(i)}/{operand_label(slot)}"])] for slot in slots)
        nodes.append(Node(node_name(i), op, inputs))
    outputs = {s: node_name(_index(arch[OUTPUT_LABELS[s]])) for s in STATE_LABELS if OUTPUT_LABELS[s] in arch}
    return make_cell(nodes, outputs, "architecture")


def derive_architecture(arch: dict[str, Any], probs: dict[str, dict[str, float]], space_config: Any) -> dict[str, Any]:
    """DARTS' export, made to follow x: a cell whose output h1 ignores the input is useless (the space's
    `ReadsInput` rule), so when the argmax cell breaks it, the operand h1 depends on whose weight on x is highest
    is rewired to x. A cell that reads no hidden state is kept (it is what the search found) but logged: it is
    not recurrent."""
    arch = dict(arch)
    if CELL_LABEL in arch:
        return arch
    cell = cell_of(arch)
    if not cell.follows_input("h1"):
        used = {node.name for node in CellSpec(cell.nodes, {"h1": cell.outputs["h1"]}).used_nodes()}
        operands = [
            label for name in used for slot in OPS[arch[f"{name}/op"]].slots
            if (label := f"{name}/{operand_label(slot)}") in arch
        ]
        weight = {label: float(probs.get(label, {}).get("0", 0.0)) for label in operands}
        arch[max(sorted(operands), key=lambda label: weight[label])] = [0]
        cell = cell_of(arch)
    if not {"h1", "h2"} & set(cell.inputs_read()):
        _logger.warning("the derived recurrent cell reads neither h1 nor h2, so it is not recurrent: frames are "
                        "combined by the attention pooling only")
    return arch


def readable_genotype(arch: dict[str, Any], probs: Optional[dict[str, dict[str, float]]] = None) -> dict[str, Any]:
    """`{"cell": {"nodes": [...], "outputs": {...}}}` with only the nodes the new states depend on."""
    cell = cell_of(arch)
    used = CellSpec(cell.used_nodes(), cell.outputs)
    out: dict[str, Any] = {"cell": used.to_dict(), "reads": list(cell.inputs_read())}
    if CELL_LABEL in arch and not isinstance(arch[CELL_LABEL], dict):
        out["source"] = arch[CELL_LABEL]
    return out


def draw(genotype: dict[str, Any], png_path: Path) -> None:
    from nni_emotionnas.spaces.deep_draw import draw_cell

    draw_cell(cell_from_dict(genotype["cell"], "genotype.cell"), Path(png_path))
