"""PNG picture of searched DARTS cells (matplotlib only, no graphviz binary): inputs left, nodes, output right."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

INPUT_NAMES = ("c_{k-2}", "c_{k-1}")


def _node_positions(num_nodes: int) -> dict[int, tuple[float, float]]:
    """Inputs on the left, intermediate nodes in a column zig-zag, output on the right."""
    positions = {0: (0.0, 0.25), 1: (0.0, 0.75)}
    for node in range(num_nodes):
        positions[node + 2] = (1.0 + node, 0.15 + 0.7 * (node % 2))
    positions[-1] = (num_nodes + 1.0, 0.5)
    return positions


def _draw_cell(ax: Any, title: str, pairs: Sequence[Sequence[Any]], concat: Sequence[int]) -> None:
    per_node = max(1, len(pairs) // max(1, len(concat)))
    pos = _node_positions(len(concat))
    for index, (op, source) in enumerate(pairs):
        target = concat[index // per_node]
        (x0, y0), (x1, y1) = pos[int(source)], pos[target]
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops=dict(arrowstyle="->", color="tab:blue", lw=1.2))
        offset = 0.04 * (index % per_node)
        ax.text((x0 + x1) / 2, (y0 + y1) / 2 + offset, op, fontsize=7, ha="center", color="tab:red")
    for node in concat:
        (x0, y0), (x1, y1) = pos[node], pos[-1]
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops=dict(arrowstyle="->", color="0.6", lw=0.8))
    labels = {0: INPUT_NAMES[0], 1: INPUT_NAMES[1], -1: "c_{k}"}
    for node, (x, y) in pos.items():
        name = labels.get(node, str(node - 2))
        color = "lightgreen" if node in (0, 1) else ("lightyellow" if node == -1 else "lightblue")
        ax.text(x, y, f"${name}$" if "_" in name else name, ha="center", va="center", fontsize=9,
                bbox=dict(boxstyle="round", fc=color, ec="0.3"))
    ax.set_title(title)
    ax.set_xlim(-0.5, len(concat) + 1.5)
    ax.set_ylim(-0.1, 1.1)
    ax.axis("off")


def draw_cells(genotype: dict[str, Any], png_path: Path, cells: Sequence[str] = ("normal", "reduce")) -> Path:
    """One panel per DARTS cell type of a readable genotype (`{cell: [[op, input], ...], cell_concat: [...]}`)."""
    cells = [c for c in cells if c in genotype]
    if not cells:
        raise ValueError("genotype has none of the cells to draw")
    fig, axes = plt.subplots(len(cells), 1, figsize=(9, 3.2 * len(cells)), squeeze=False)
    for ax, cell in zip(axes[:, 0], cells):
        _draw_cell(ax, f"{cell} cell", genotype[cell], genotype[f"{cell}_concat"])
    fig.tight_layout()
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return png_path
