"""Reassociation: in a product of three factors, multiply the pair with the fewest axes first.

Mamba-1's scan input is Δ·B·u: Δ and u vary over (batch, time, channel), B over (batch, time,
state).  Written (Δ·B)·u it costs two multiplies per (channel, state, step) element; as (Δ·u)·B one
per element and one per (channel, step).  Only real products whose inner product has no other user
are regrouped (the other user would keep the old product alive); ties keep the declared order.
"""
from __future__ import annotations

from dataclasses import replace

from ..graph import Graph, Rebuilder, prune


def reassociate(g: Graph) -> Graph:
    users = g.users()
    rb, remap = Rebuilder(), {}
    for i, n in enumerate(g.nodes):
        node = replace(n, args=tuple(remap[a] for a in n.args))
        grouping = _cheaper_grouping(g, n, users) if n.op == "mul" else None
        if grouping is not None:
            (p, q), r, inner = grouping
            pair = rb.add(replace(inner, args=(remap[p], remap[q]), type=g.nodes[p].type.join(g.nodes[q].type)))
            node = replace(n, args=(pair, remap[r]))
        remap[i] = rb.add(node)
    return prune(rb.finish(g.name))


def _cheaper_grouping(g: Graph, n, users):
    """((p, q), r, inner node) when p·q·r costs less grouped as (p·q)·r than as declared, else None."""
    if n.type.complex:
        return None
    for side in (0, 1):
        a, r = n.args[side], n.args[1 - side]
        inner = g.nodes[a]
        if inner.op != "mul" or inner.type.complex or len(users[a]) != 1:
            continue
        p, q = inner.args
        width = lambda x, y: len(g.nodes[x].type.dims | g.nodes[y].type.dims)  # noqa: E731
        best = min(((p, q, r), (p, r, q), (q, r, p)), key=lambda c: width(c[0], c[1]))  # first on ties
        if best[:2] == (p, q):
            return None
        return (best[0], best[1]), best[2], inner
    return None
