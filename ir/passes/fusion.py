"""Fusion grouping: partition the graph into kernel regions with networkx.

Each weakly connected component of non-input nodes that contains a scan becomes one region:
Δ pre-ops, discretization, the recurrence, readout, skip and gate all land in one fused kernel.
A region holds at most one scan, and reductions over channels (MIMO, S5) make the channel axis
a reduction axis of the region rather than a parallel one.
"""
from __future__ import annotations

import networkx as nx

from ..graph import Graph
from ..opset import IRError


def fuse_regions(g: Graph) -> Graph:
    view = g.to_networkx()
    view.remove_nodes_from([i for i in g.ids("input") + g.ids("const")])
    region_of = {}
    for k, comp in enumerate(sorted(nx.weakly_connected_components(view), key=min)):
        scans = sorted(i for i in comp if g.nodes[i].op == "scan")
        if len(scans) > 1:
            raise IRError(f"nodes %{scans[0]} and %{scans[1]} (scan): two scans feed one region; "
                          f"multi-scan graphs are not lowered yet")
        mimo = any(g.nodes[i].op == "sum" and set(g.nodes[i].attr("axes")) & {"h", "p"} for i in comp)
        for i in comp:
            region_of[i] = (k, "mimo" if mimo else "siso")
    nodes = []
    for i, n in enumerate(g.nodes):
        if i in region_of:
            k, io = region_of[i]
            n = n.with_attrs(region=k, **({"io": io} if n.op == "scan" else {}))
        nodes.append(n)
    return Graph(g.name, tuple(nodes))
