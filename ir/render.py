"""A picture of a graph: PNG through Graphviz's `dot` when installed, else networkx + matplotlib.

(`Graph.to_dot` gives the DOT source without either.)
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import networkx as nx

from .graph import Graph


class RenderError(RuntimeError):
    """A PNG could not be made: no renderer, the renderer failed, or the file cannot be written."""


def png_renderer() -> str:
    """'dot' when Graphviz is installed, else 'matplotlib' when importable; else a RenderError saying what
    to install."""
    if shutil.which("dot"):
        return "dot"
    try:
        import matplotlib  # noqa: F401  (optional: only for PNGs without Graphviz)
    except ImportError:
        raise RenderError("a PNG needs Graphviz's `dot` program (e.g. `apt-get install graphviz`) or matplotlib "
                          "(`pip install matplotlib`); neither was found") from None
    return "matplotlib"


def _writable(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    except OSError as e:
        raise RenderError(f"cannot write {path}: {e.strerror or e}") from None


def render_png(graph: Graph, path, renderer: str | None = None) -> str:
    """Write a PNG of the IR to `path`; returns what rendered it."""
    path = Path(path)
    renderer = renderer or png_renderer()
    _writable(path)
    if renderer == "dot":
        res = subprocess.run([shutil.which("dot"), "-Tpng", "-o", str(path)], input=graph.to_dot(), text=True,
                             capture_output=True)
        if res.returncode:
            raise RenderError(f"dot failed: {res.stderr.strip()}")
        return "Graphviz dot"
    import matplotlib  # (optional, see png_renderer)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    g = graph.to_networkx()
    for i in g.nodes:  # layers by depth: the longest path from an input
        preds = list(g.predecessors(i))
        g.nodes[i]["layer"] = 1 + max((g.nodes[p]["layer"] for p in preds), default=-1)
    pos = {}
    for layer, ids in sorted(_by_layer(g).items()):  # order each layer by its operands' mean x
        if layer:
            ids.sort(key=lambda i: sum(pos[p][0] for p in g.predecessors(i)) / max(1, g.in_degree(i)))
        for k, i in enumerate(ids):
            pos[i] = (k - (len(ids) - 1) / 2, -layer)
    depth = 1 + max(nx.get_node_attributes(g, "layer").values())
    width = max(len(ids) for ids in _by_layer(g).values())
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * width), max(4, 0.9 * depth)))
    fill = {"input": "#cde", "output": "#cde", "scan": "#fdb"}
    nx.draw_networkx_edges(g, pos, ax=ax, arrows=True, arrowsize=8, edge_color="#888")
    texts = nx.draw_networkx_labels(g, pos, labels=nx.get_node_attributes(g, "label"), ax=ax, font_size=7,
                                    font_family="monospace")
    for i, text in texts.items():
        text.set_bbox(dict(boxstyle="round,pad=0.2", fc=fill.get(g.nodes[i]["op"], "#eee"), ec="#666"))
    ax.set_title(f"ssm {graph.name}")
    ax.axis("off")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "networkx + matplotlib"


def _by_layer(g) -> dict:
    out = {}
    for i in g.nodes:
        out.setdefault(g.nodes[i]["layer"], []).append(i)
    return out
