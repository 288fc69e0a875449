"""Discretization expansion: `discretize(rule, part)` nodes become simplified sympy `expr` nodes."""
from __future__ import annotations

from dataclasses import replace

from ..graph import Graph
from ..symbolic import A, dt, expand, get_rule
from .infer import infer_types


def expand_discretization(g: Graph) -> Graph:
    nodes = []
    for n in g.nodes:
        if n.op == "discretize":
            e = expand(get_rule(n.attr("rule")), n.attr("part"))
            a_complex = g.nodes[n.args[1]].type.complex
            used = e.free_symbols
            is_complex = a_complex and any(s.name == "A" for s in used)
            n = replace(n, op="expr", attrs=(("complex", is_complex), ("expr", e), ("symbols", ("dt", "A"))))
        nodes.append(replace(n, type=None))
    # A rule part may be real for a complex A (the direct rule's B̄ = B): types change downstream.
    return infer_types(Graph(g.name, tuple(nodes)))


__all__ = ["expand_discretization", "dt", "A"]
