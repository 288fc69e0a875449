"""Canonicalization: scan orders become index maps, and trivial arithmetic folds away.

A reverse scan is the forward recurrence read through the index map t ↦ L-1-t: the backends
fold the map into their index arithmetic, so no flipped copy of any tensor is made.  A gather
order (any permutation, e.g. a 2-D scan order) reads its map from an integer index operand.
"""
from __future__ import annotations

from dataclasses import replace

import sympy as sp

from ..graph import Graph
from ..indexmap import ORDERS
from .infer import infer_types
from .rewrite import rewrite


def _order_to_index_map(rb, i):
    n = rb.nodes[i]
    order = n.attr("order")
    if isinstance(order, str):
        return rb.add(n.with_attrs(order=ORDERS[order]))  # an IndexMap (a grid order) stays
    return None


def _const_value(rb, i):
    n = rb.nodes[i]
    return n.attr("value") if n.op == "const" else None


def _mul_by_one(rb, i):
    n = rb.nodes[i]
    for keep, other in ((0, 1), (1, 0)):
        if _const_value(rb, n.args[other]) == 1.0:
            return n.args[keep]
    return None


def _neg_neg(rb, i):
    inner = rb.nodes[rb.nodes[i].args[0]]
    return inner.args[0] if inner.op == "neg" else None


def _trivial_expr(rb, i):
    """expr(dt, A) = A, or a constant: use the operand, or a const node."""
    n = rb.nodes[i]
    e = n.attr("expr")
    if isinstance(e, sp.Symbol):  # a broadcast of one operand; types are re-inferred after
        return n.args[n.attr("symbols").index(e.name)]
    if e.is_number and e.is_real:  # the broadcast is implied: types are re-inferred after
        return rb.emit("const", (), value=float(e))
    return None


RULES = [
    ("scan", _order_to_index_map),
    ("mul", _mul_by_one),
    ("neg", _neg_neg),
    ("expr", _trivial_expr),
]


def canonicalize(g: Graph) -> Graph:
    # Rewrites may drop a broadcast (x·1 -> x, expr(dt, A) = A -> A) and so change types
    # downstream: rules work on untyped nodes and types are inferred again afterwards.
    untyped = Graph(g.name, tuple(replace(n, type=None) for n in g.nodes))
    return infer_types(rewrite(untyped, RULES))
