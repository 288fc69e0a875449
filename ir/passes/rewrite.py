"""One fixpoint engine for local rewrites: rules are data, `(op, fn)` pairs.

`fn(rb, i)` looks at node `rb.nodes[i]` of the graph being rebuilt and returns the id of a
replacement (emitted through `rb`), or None to keep it.
"""
from __future__ import annotations

from dataclasses import replace

from ..graph import Graph, Rebuilder, prune


def rewrite(g: Graph, rules, max_rounds: int = 16) -> Graph:
    for _ in range(max_rounds):
        g, changed = _one_round(g, rules)
        if not changed:
            return g
    raise RuntimeError(f"rewrite rules did not reach a fixpoint on {g.name!r} in {max_rounds} rounds")


def _one_round(g: Graph, rules):
    by_op = {}
    for op, fn in rules:
        by_op.setdefault(op, []).append(fn)
    rb, remap, changed = Rebuilder(), {}, False
    for i, n in enumerate(g.nodes):
        new_id = rb.add(replace(n, args=tuple(remap[a] for a in n.args)))
        for fn in by_op.get(n.op, ()):
            out = fn(rb, new_id)
            if out is not None and out != new_id:
                new_id, changed = out, True
                break
        remap[i] = new_id
    return prune(rb.finish(g.name)), changed
