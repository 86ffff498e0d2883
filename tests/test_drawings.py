"""Searched-cell drawings are readable: no op label on top of a node or of another label."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import matplotlib.pyplot as plt

from nni_emotionnas.spaces.cells.spec import cell_from_dict
from nni_emotionnas.spaces.deep_draw import cell_figure as recurrent_figure
from nni_emotionnas.spaces.spectrogram_draw import NODE_GID, OP_GID, box, cell_figure, draw_cells

# 4 nodes, 2 edges each, inputs reused across nodes: the case where labels used to pile up mid-figure
DARTS_4_NODES = {
    "normal": [["sep_conv_3x3", 0], ["sep_conv_5x5", 1], ["dil_conv_3x3", 0], ["skip_connect", 2],
               ["max_pool_3x3", 1], ["sep_conv_3x3", 3], ["dil_conv_5x5", 2], ["avg_pool_3x3", 0]],
    "normal_concat": [2, 3, 4, 5],
    "reduce": [["max_pool_3x3", 0], ["max_pool_3x3", 1], ["skip_connect", 2], ["max_pool_3x3", 0],
               ["avg_pool_3x3", 0], ["skip_connect", 3], ["sep_conv_5x5", 4], ["dil_conv_3x3", 1]],
    "reduce_concat": [2, 3, 4, 5],
}


def boxes_by_kind(fig, kinds: tuple[str, ...]) -> dict[str, list]:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    found: dict[str, list] = {kind: [] for kind in kinds}
    for ax in fig.axes:
        for text in ax.texts:
            if text.get_gid() in found:
                found[text.get_gid()].append((ax, text.get_text(), box(text, renderer)))
    return found


def overlapping(items: list) -> list[tuple[str, str]]:
    return [(a[1], b[1]) for a, b in combinations(items, 2) if a[0] is b[0] and a[2].overlaps(b[2])]


def test_darts_cell_labels_overlap_neither_nodes_nor_each_other(tmp_path: Path) -> None:
    fig = cell_figure(DARTS_4_NODES)
    found = boxes_by_kind(fig, (NODE_GID, OP_GID))
    ops, nodes = found[OP_GID], found[NODE_GID]
    assert len(ops) == 16 and len(nodes) == 2 * (2 + 4 + 1)
    assert overlapping(ops) == []
    assert [(op[1], node[1]) for op in ops for node in nodes if op[0] is node[0] and op[2].overlaps(node[2])] == []
    assert overlapping(nodes) == []
    plt.close(fig)
    assert draw_cells(DARTS_4_NODES, tmp_path / "cells.png").read_bytes()[:4] == b"\x89PNG"


def test_recurrent_cell_boxes_do_not_overlap() -> None:
    cell = cell_from_dict({"nodes": [
        {"name": "n1", "op": "linear", "inputs": ["x", "h1", "h2"]},
        {"name": "n2", "op": "blend", "inputs": ["n1", "x", "h1"]},
        {"name": "n3", "op": "tanh", "inputs": ["n1"]},
        {"name": "n4", "op": "product", "inputs": ["n2", "n3", "h2"]},
    ], "outputs": {"h1": "n4", "h2": "n2"}})
    fig = recurrent_figure(cell)
    nodes = boxes_by_kind(fig, ("node",))["node"]
    assert len(nodes) == 3 + 4 + 2 and overlapping(nodes) == []
    plt.close(fig)
