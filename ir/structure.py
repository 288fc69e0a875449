"""Structure of a scan region, shared by the lowerings that need more than elementwise code.

`scan_region` finds the nodes evaluated with a scan, step by step (the readout up to the sum
over the state); `ssd_reason` / `ssd_parts` recognize Mamba-2's SSD structure — a scalar decay
per head, an outer-product input k·v (k over the state n, v over the head's positions p) and a
readout Σ_n C·h, in forward order (the Triton chunked kernels also take reverse), with or without seq_idx
resets — which the chunked (matmul) lowerings of the ONNX and Triton backends need.
"""
from __future__ import annotations

from dataclasses import dataclass

from .graph import Graph
from .ops import ABSORBABLE, with_trait

REGION_OPS = with_trait(ABSORBABLE)  # the ops a scan's region may take in after the recurrence


@dataclass(frozen=True)
class Region:
    """A scan and the nodes evaluated with it, per step: those that still carry the state axis n
    (the readout up to the sum over the state).  `frontier` are the region's values used outside."""

    scan: int
    body: tuple  # absorbed node ids, in order (the scan itself excluded)
    frontier: tuple  # ids (the scan or absorbed nodes) read by nodes outside the region
    last: tuple  # ids of `last` nodes of this scan


def scan_region(g: Graph, scan: int) -> Region:
    inside = {scan}
    body = []
    for i in range(scan + 1, len(g.nodes)):
        n = g[i]
        if n.op in REGION_OPS and any(a in inside and "n" in g[a].type.dims for a in n.args):
            inside.add(i)
            body.append(i)
    users = g.users()
    frontier = tuple(i for i in [scan, *body]
                     if any(u not in inside and g[u].op != "last" for u in users[i]))
    last = tuple(u for u in users[scan] if g[u].op == "last")
    return Region(scan, tuple(body), frontier, last)


def ssd_reason(g: Graph, r: Region, orders=("identity",)):
    """None when the scan has Mamba-2's SSD structure, along one of `orders` (the index-map kinds
    the caller's lowering follows), else why not."""
    s = g[r.scan]
    a, x = g[s.args[0]], g[s.args[1]]
    if s.type.complex:
        return "complex state"
    if a.type.dims & {"p", "n"} or "p" not in s.type.dims or "n" not in s.type.dims:
        return "not a scalar-per-head state (Ā must vary over neither p nor n; the state over both)"
    if s.attr("order").kind not in orders:
        return f"{s.attr('order')} order"
    if x.op != "mul" or not outer_factors(g, x):
        return "the scan input is not an outer product (B̄ over n) · (x over p)"
    if not _readout(g, r):
        return "the readout is not sum over n of C · h"
    return None


def outer_factors(g: Graph, x) -> tuple | None:
    """(k, v) operand ids when x = k·v with k over n (not p) and v over p (not n)."""
    for k, v in (x.args, x.args[::-1]):
        kd, vd = g[k].type.dims, g[v].type.dims
        if "n" in kd and "p" not in kd and "p" in vd and "n" not in vd:
            return k, v
    return None


def _readout(g: Graph, r: Region) -> tuple | None:
    """(mul id, sum id, C id) when the region is exactly y = sum_n(C · h)."""
    if len(r.body) != 2 or r.frontier != (r.body[1],):
        return None
    mul, sm = g[r.body[0]], g[r.body[1]]
    if mul.op != "mul" or sm.op != "sum" or sm.attr("axes") != ("n",) or sm.args != (r.body[0],):
        return None
    c = [a for a in mul.args if a != r.scan]
    if len(c) != 1 or "p" in g[c[0]].type.dims or g[c[0]].type.complex:
        return None
    return r.body[0], r.body[1], c[0]


def ssd_parts(g: Graph, scan: int) -> dict:
    """Operand ids of an SSD-shaped scan: decay a, outer factors k (over n) and v (over p), readout C,
    and the seq_idx input when the state resets (else None)."""
    s = g[scan]
    k, v = outer_factors(g, g[s.args[1]])
    mul, sm, c = _readout(g, scan_region(g, scan))
    seq = s.args[2 + bool(s.attr("has_h0"))] if s.attr("reset") else None
    return dict(a=s.args[0], k=k, v=v, c=c, readout=sm, seq=seq)
