"""PNG picture of searched DARTS cells (matplotlib only, no graphviz binary): inputs left, nodes, output right.

Each op label sits on its own edge, at the point along it where its box touches neither a node nor another
label and, where possible, no other edge (measured with the renderer, so font and DPI are accounted for).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

INPUT_NAMES = ("c_{k-2}", "c_{k-1}")
# where along an edge (0 = source, 1 = target) a label may sit, best first
LABEL_POSITIONS = (0.5, 0.4, 0.6, 0.3, 0.7, 0.25, 0.75, 0.2, 0.8, 0.15, 0.85, 0.1, 0.9)
NODE_GID, OP_GID = "node", "op"


def _node_positions(num_nodes: int) -> dict[int, tuple[float, float]]:
    """Inputs on the left, intermediate nodes left to right alternating high and low, output on the right."""
    positions = {0: (0.0, 0.8), 1: (0.0, 0.2)}
    for node in range(num_nodes):
        positions[node + 2] = (1.0 + node, 0.05 + 0.9 * (node % 2))
    positions[-1] = (num_nodes + 1.0, 0.5)
    return positions


def box(text: Text, renderer: Any) -> Bbox:
    """Display-space extent of a text including its rounded box (what a reader sees as the label)."""
    text.update_bbox_position_size(renderer)
    patch = text.get_bbox_patch()
    return patch.get_window_extent(renderer) if patch is not None else text.get_window_extent(renderer)


def _overlap(a: Bbox, others: Sequence[Bbox]) -> float:
    area = 0.0
    for b in others:
        width = min(a.x1, b.x1) - max(a.x0, b.x0)
        height = min(a.y1, b.y1) - max(a.y0, b.y0)
        area += max(width, 0.0) * max(height, 0.0)
    return area


def _crossings(a: Bbox, segments: Sequence[tuple[Any, Any]]) -> int:
    """How many other edges pass through a label box (a label on a crossing is ambiguous)."""
    steps = [i / 40 for i in range(41)]
    return sum(any(a.contains(p0[0] + t * (p1[0] - p0[0]), p0[1] + t * (p1[1] - p0[1])) for t in steps)
               for p0, p1 in segments)


def _place_label(ax: Any, op: str, edge: tuple[Any, Any], others: list[tuple[Any, Any]], taken: list[Bbox],
                 renderer: Any) -> None:
    """Puts `op` on its edge where it overlaps no node or label, preferring spots no other edge crosses."""
    start, end = edge
    to_data = ax.transData.inverted()
    text = ax.text(0, 0, op, fontsize=7, ha="center", va="center", color="tab:red", gid=OP_GID, zorder=3,
                   bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.9))
    ranked = []
    for order, t in enumerate(LABEL_POSITIONS):
        xy = to_data.transform((start[0] + t * (end[0] - start[0]), start[1] + t * (end[1] - start[1])))
        text.set_position(xy)
        extent = box(text, renderer)
        ranked.append((_overlap(extent, taken), _crossings(extent, others), order, tuple(xy)))
    text.set_position(min(ranked)[3])
    taken.append(box(text, renderer))


def _draw_cell(ax: Any, title: str, pairs: Sequence[Sequence[Any]], concat: Sequence[int], renderer: Any) -> None:
    per_node = max(1, len(pairs) // max(1, len(concat)))
    pos = _node_positions(len(concat))
    ax.set_title(title)
    ax.set_xlim(-0.4, len(concat) + 1.4)
    ax.set_ylim(-0.1, 1.1)
    ax.axis("off")
    labels = {0: INPUT_NAMES[0], 1: INPUT_NAMES[1], -1: "c_{k}"}
    taken = []
    for node, (x, y) in pos.items():
        name = labels.get(node, str(node - 2))
        color = "lightgreen" if node in (0, 1) else ("lightyellow" if node == -1 else "lightblue")
        text = ax.text(x, y, f"${name}$" if "_" in name else name, ha="center", va="center", fontsize=9,
                       gid=NODE_GID, zorder=4, bbox=dict(boxstyle="round", fc=color, ec="0.3"))
        taken.append(box(text, renderer))
    arrow = dict(arrowstyle="->", shrinkA=12, shrinkB=12)
    for node in concat:
        ax.annotate("", xy=pos[-1], xytext=pos[node], arrowprops=dict(arrow, color="0.6", lw=0.8))
    edges = [(pos[int(source)], pos[concat[index // per_node]]) for index, (_, source) in enumerate(pairs)]
    for start, end in edges:
        ax.annotate("", xy=end, xytext=start, arrowprops=dict(arrow, color="tab:blue", lw=1.2))
    edges += [(pos[node], pos[-1]) for node in concat]
    segments = [(ax.transData.transform(start), ax.transData.transform(end)) for start, end in edges]
    for index, (op, _) in enumerate(pairs):
        _place_label(ax, op, segments[index], segments[:index] + segments[index + 1:], taken, renderer)


def cell_figure(genotype: dict[str, Any], cells: Sequence[str] = ("normal", "reduce")) -> Figure:
    """One panel per DARTS cell type of a readable genotype (`{cell: [[op, input], ...], cell_concat: [...]}`)."""
    cells = [c for c in cells if c in genotype]
    if not cells:
        raise ValueError("genotype has none of the cells to draw")
    widest = max(len(genotype[f"{cell}_concat"]) for cell in cells)
    fig, axes = plt.subplots(len(cells), 1, figsize=(2.2 * (widest + 2), 3.6 * len(cells)), squeeze=False)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.93, hspace=0.15)  # fixed: labels are measured
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]  # Agg's canvas (matplotlib.use above)
    for ax, cell in zip(axes[:, 0], cells):
        _draw_cell(ax, f"{cell} cell", genotype[cell], genotype[f"{cell}_concat"], renderer)
    return fig


def draw_cells(genotype: dict[str, Any], png_path: Path, cells: Sequence[str] = ("normal", "reduce")) -> Path:
    """Writes `cell_figure` as a PNG."""
    fig = cell_figure(genotype, cells)
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return png_path
