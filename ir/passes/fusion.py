"""Fusion grouping: partition the graph into kernel regions with networkx.

Each weakly connected component of non-input nodes that contains a scan becomes one region:
Δ pre-ops, discretization, the recurrence, readout, skip and gate all land in one fused kernel.
A region holds at most one scan, and reductions over channels (MIMO, S5) make the channel axis
a reduction axis of the region rather than a parallel one.  A component with several scans (or
time operators) is cut into stages (`ssmc.ir.stages`), each lowered as a graph of its own; here
its nodes are marked with the component's region, for listings and the ONNX lowering.
"""
from __future__ import annotations

import networkx as nx

from ..graph import Graph


def fuse_regions(g: Graph) -> Graph:
    view = g.to_networkx()
    view.remove_nodes_from([i for i in g.ids("input") + g.ids("const")])
    region_of = {}
    comps = sorted(nx.weakly_connected_components(view), key=min)
    if not g.ids("scan") and comps:  # elementwise only (a decode step, a gradient): one kernel computes it all
        comps = [set().union(*comps)]
    for k, comp in enumerate(comps):
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
