"""Known recurrent cells written in the cell format, so they can be trained and compared like searched ones."""

from __future__ import annotations

from nni_emotionnas.errors import ConfigError
from nni_emotionnas.spaces.cells.spec import CellSpec, Node, make_cell


def _n(name: str, op: str, *inputs: str) -> Node:
    return Node(name, op, inputs)


def vanilla_rnn() -> CellSpec:
    """h_t = tanh(W x_t + U h_{t-1} + b) (Elman)."""
    return make_cell([_n("pre", "linear", "x", "h1"), _n("h", "tanh", "pre")], {"h1": "h"}, "catalog.rnn")


def lstm() -> CellSpec:
    """`torch.nn.LSTMCell`: gates i, f, g, o from linear(x, h1); h1 is the hidden state, h2 the memory c."""
    gates = [_n(f"{g}_pre", "linear", "x", "h1") for g in "ifgo"]
    acts = [_n("i", "sigmoid", "i_pre"), _n("f", "sigmoid", "f_pre"), _n("g", "tanh", "g_pre"),
            _n("o", "sigmoid", "o_pre")]
    memory = [_n("keep", "product", "f", "h2"), _n("write", "product", "i", "g"), _n("c", "sum", "keep", "write"),
              _n("c_act", "tanh", "c"), _n("h", "product", "o", "c_act")]
    return make_cell(gates + acts + memory, {"h1": "h", "h2": "c"}, "catalog.lstm")


def gru() -> CellSpec:
    """`torch.nn.GRUCell`: r, z gates; n = tanh(W_n x + b_in + r * (U_n h + b_hn)); h = z*h + (1-z)*n."""
    nodes = [
        _n("r_pre", "linear", "x", "h1"), _n("z_pre", "linear", "x", "h1"),
        _n("r", "sigmoid", "r_pre"), _n("z", "sigmoid", "z_pre"),
        _n("xn", "linear", "x"), _n("hn", "linear", "h1"), _n("reset", "product", "r", "hn"),
        _n("n_pre", "sum", "xn", "reset"), _n("n", "tanh", "n_pre"), _n("h", "blend", "z", "h1", "n"),
    ]
    return make_cell(nodes, {"h1": "h"}, "catalog.gru")


CATALOG = {"rnn": vanilla_rnn, "lstm": lstm, "gru": gru}


def catalog_cell(name: str, where: str = "cells") -> CellSpec:
    if name not in CATALOG:
        raise ConfigError(f"{where}: unknown catalog cell {name!r} (known: {', '.join(CATALOG)})")
    return CATALOG[name]()
