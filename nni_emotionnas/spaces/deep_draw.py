"""PNG picture of a recurrent cell (matplotlib only): inputs on the left, nodes by depth, new states right."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nni_emotionnas.spaces.cells.spec import CELL_INPUTS, CellSpec

COLORS = {"input": "#cde8c4", "node": "#dde6f5", "output": "#f7d9b8"}


def _layout(cell: CellSpec) -> dict[str, tuple[float, float]]:
    depth = {name: 0 for name in CELL_INPUTS}
    for node in cell.nodes:
        depth[node.name] = 1 + max(depth[i] for i in node.inputs)
    last = max(depth.values()) + 1
    for state in cell.outputs:
        depth[f"{state}_t"] = last
    columns: dict[int, list[str]] = {}
    for name, d in depth.items():
        columns.setdefault(d, []).append(name)
    return {name: (d * 2.2, -(k - (len(names) - 1) / 2) * 1.3) for d, names in columns.items()
            for k, name in enumerate(names)}


def cell_figure(cell: CellSpec) -> Any:
    """The cell as a matplotlib figure: one box per input, node (name and op) and new state."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pos = _layout(cell)
    width = max(x for x, _ in pos.values()) + 2
    height = max(abs(y) for _, y in pos.values()) * 2 + 2
    fig, ax = plt.subplots(figsize=(max(6.0, width * 1.1), max(3.0, height * 0.9)))
    labels = {name: f"{name}_{{t-1}}" if name != "x" else "x_t" for name in CELL_INPUTS}
    kinds = {name: "input" for name in CELL_INPUTS}
    for node in cell.nodes:
        labels[node.name], kinds[node.name] = f"{node.name}\n{node.op}", "node"
    for state in cell.outputs:
        labels[f"{state}_t"], kinds[f"{state}_t"] = f"{state}_t", "output"
    edges = [(i, n.name, k) for n in cell.nodes for k, i in enumerate(n.inputs)]
    edges += [(source, f"{state}_t", 0) for state, source in cell.outputs.items()]
    for src, dst, k in edges:
        ax.annotate("", xy=pos[dst], xytext=pos[src],
                    arrowprops=dict(arrowstyle="->", color="#555555", shrinkA=18, shrinkB=18,
                                    connectionstyle=f"arc3,rad={0.12 * k}"))
    for name, (x, y) in pos.items():
        ax.text(x, y, labels[name].replace("_{t-1}", "(t-1)"), ha="center", va="center", fontsize=8, gid="node",
                bbox=dict(boxstyle="round,pad=0.4", fc=COLORS[kinds[name]], ec="#333333"))
    ax.set_xlim(-1.2, width)
    ax.set_ylim(-height / 2 - 0.5, height / 2 + 0.5)
    ax.axis("off")
    ax.set_title("recurrent cell (blend inputs: z, a, b)", fontsize=9)
    return fig


def draw_cell(cell: CellSpec, png_path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = cell_figure(cell)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=110, bbox_inches="tight")
    plt.close(fig)
