"""LTI detection: mark what does not vary over time, so lowerings compute it once per sequence.

A scan is linear time-invariant (S4D) when Ā is fixed in time and its input is a fixed scale
times exactly one time-varying input (the sequence u): x_t = B̄·u_t.  Every time-invariant node
is marked `hoist=True`, which the Triton lowering turns into code before its time loop.
"""
from __future__ import annotations

from ..graph import Graph


def detect_lti(g: Graph) -> Graph:
    nodes = []
    for n in g.nodes:
        if n.op == "scan":
            n = n.with_attrs(lti=not g.nodes[n.args[0]].type.time_varying and _linear_in_one_input(g, n.args[1]))
        elif n.op not in ("input", "output", "const", "last"):
            n = n.with_attrs(hoist=not n.type.time_varying)
        nodes.append(n)
    return Graph(g.name, tuple(nodes))


def _linear_in_one_input(g: Graph, x: int) -> bool:
    """x is a product whose only time-varying factor is a single input tensor."""
    factors, stack = [], [x]
    while stack:
        n = g.nodes[stack.pop()]
        if n.op == "mul":
            stack.extend(n.args)
        else:
            factors.append(n)
    varying = [f for f in factors if f.type.time_varying]
    return len(varying) == 1 and varying[0].op == "input"
