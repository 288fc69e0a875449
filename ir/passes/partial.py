"""Partial gather orders: a scan over a subset of the positions, lowered to one over all of them.

A gather-order scan with `unvisited="initial"` takes an index whose rows list the positions to visit, in
scan order, then -1 padding (a list shorter than the sequence, e.g. the tokens pruning kept).  Positions
not listed are not stepped: they see the initial state (h0, or 0 without one), and the final state is the
one after the last listed position.  Every backend runs it as a scan over a full permutation that visits
the unlisted positions first, holding the state there:

    h = scan(Ā, x, order=gather, index, unvisited)   ⇒   h = scan(v·Ā + (1 - v), v·x, order=gather, index')

with v = 1 at listed positions, 0 elsewhere, and index' the unlisted positions (ascending), then the listed
ones.  v and index' come from the user's index on each call (`ssmc.runtime.arrays.complete_order`): v is
an input node marked `derived` (the name of the index it is derived from), which no caller passes and no
gradient is taken of.  The NumPy interpreter runs the declared form directly: it is the reference.
"""
from __future__ import annotations

from dataclasses import replace

from ..graph import Graph, Rebuilder, prune
from ..indexmap import is_gather
from .infer import infer_types

SUFFIX = "__visited"  # the derived input's name: the index's name + SUFFIX


def has_partial_orders(g: Graph) -> bool:
    return any(g[s].attr("unvisited") for s in g.ids("scan"))


def complete_partial_orders(g: Graph) -> Graph:
    """The pass: every scan with `unvisited` rewritten over a completed order (see the module docstring)."""
    if not has_partial_orders(g):
        return g
    rb, remap, visited = Rebuilder(), {}, {}
    for i, n in enumerate(g.nodes):
        args = [remap[a] for a in n.args]
        if n.op == "scan" and n.attr("unvisited"):
            assert is_gather(n.attr("order"))  # (the type rule refuses it elsewhere)
            idx = g[n.args[-1]]
            name = idx.attr("name") + SUFFIX
            if name in g.inputs:
                raise ValueError(f"{g.name}: an input may not be named {name!r}: the partial order "
                                 f"{idx.attr('name')!r} derives an input of that name")
            if name not in visited:
                visited[name] = rb.emit("input", (), name=name, axes=idx.attr("axes"), derived=idx.attr("name"))
            v = visited[name]
            one = rb.emit("const", (), value=1.0)
            args[0] = rb.emit("add", [rb.emit("mul", [v, args[0]]), rb.emit("sub", [one, v])])
            args[1] = rb.emit("mul", [v, args[1]])
            n = replace(n, attrs=tuple((k, v) for k, v in n.attrs if k != "unvisited"))
        remap[i] = rb.add(replace(n, args=tuple(args), type=None))
    return infer_types(prune(rb.finish(g.name)))


__all__ = ["SUFFIX", "complete_partial_orders", "has_partial_orders"]
