"""Structure of a scan region, shared by the lowerings that need more than elementwise code.

`scan_region` finds the nodes evaluated with a scan, step by step (the readout up to the sum
over the state); `ssd_reason` / `ssd_parts` recognize Mamba-2's SSD structure — a scalar decay
per head, an outer-product input k·v (k over the state n, v over the head's positions p) and a
readout Σ_n C·h, in forward order (the Triton chunked kernels also take reverse), with or without seq_idx
resets — which the chunked (matmul) lowerings of the ONNX and Triton backends need;
`ssd_backward_parts` the same structure in a backward graph (the Triton chunked backward's).
"""
from __future__ import annotations

from dataclasses import dataclass

from .graph import Graph
from .opset import ABSORBABLE, IRError, with_trait

REGION_OPS = with_trait(ABSORBABLE)  # the ops a scan's region may take in after the recurrence


@dataclass(frozen=True)
class Region:
    """A scan and the nodes evaluated with it, per step: those that still carry the state axis n
    (the readout up to the sum over the state).  `frontier` are the region's values used outside."""

    scan: int
    body: tuple  # absorbed node ids, in order (the scan itself excluded)
    frontier: tuple  # ids (the scan or absorbed nodes) read by nodes outside the region
    last: tuple  # ids of `last` nodes of this scan


def scan_region(g: Graph, scan: int, channels_apart: bool = False) -> Region:
    """`channels_apart`: the channels step through time in different orders (a gather order per group),
    so a sum over channels cannot be taken per step: it and what depends on it stay outside."""
    inside, apart = {scan}, set()
    body = []
    scans = scans_read(g)
    for i in range(scan + 1, len(g.nodes)):
        n = g[i]
        if channels_apart and (any(a in apart for a in n.args) or (n.op == "sum" and "h" in n.attr("axes"))):
            apart.add(i)
            continue
        if scans[i] - {scan} or any(scan in scans[a] for a in n.args if a not in inside):
            continue  # it reads another scan's result, or this one's through a time operator: not per step
        if n.op in REGION_OPS and any(a in inside and "n" in g[a].type.dims for a in n.args):
            inside.add(i)
            body.append(i)
    users = g.users()
    frontier = tuple(i for i in [scan, *body]
                     if any(u not in inside and g[u].op != "last" for u in users[i]))
    last = tuple(u for u in users[scan] if g[u].op == "last")
    return Region(scan, tuple(body), frontier, last)


def scans_read(g: Graph) -> list:
    """For each node, the scans it reads, directly or through other nodes."""
    out = []
    for n in g.nodes:
        out.append(set().union(*(out[a] | ({a} if g[a].op == "scan" else set()) for a in n.args)))
    return out


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


def _outer_of(g, i):
    """(factor over n, factor over p) when node i is their product, else None."""
    return outer_factors(g, g[i]) if g[i].op == "mul" else None


def _pn(g, i) -> bool:
    return {"p", "n"} <= g[i].type.dims


def _sole_user(g, users, i, ops, axes=None):
    """The one user of node i when it is one of `ops` (summing exactly `axes`), else None."""
    us = users[i]
    if len(us) != 1 or g[us[0]].op not in ops:
        return None
    if axes is not None and set(g[us[0]].attr("axes")) != set(axes):
        return None
    return us[0]


def _vector(g, i, role) -> bool:
    """A value over `role` (p or n) but not the other, real."""
    other = "n" if role == "p" else "p"
    d = g[i].type.dims
    return role in d and other not in d and not g[i].type.complex


def ssd_backward_parts(g: Graph) -> dict:
    """The structure of an SSD-shaped backward graph, or IRError saying why it has none.

    Returns scan/adjoint ids, the forward factors a, k, v, the cotangent factors U, c, the inputs
    h0, dlast, seq (or None), and `core`: {node id: (kind, operand)} for the nodes computed by the
    chunk forms (kinds Yh, Ph, Pg, Ng, dA, carry), `internal`: node ids folded into them.
    """
    scans, adjs = g.ids("scan"), g.ids("adjoint")
    if len(scans) != 1 or len(adjs) != 1:
        raise IRError(f"{len(scans)} scans and {len(adjs)} adjoints (one of each is lowered)")
    s, a_id = scans[0], adjs[0]
    sn, an = g[s], g[a_id]
    if sn.type.complex:
        raise IRError("complex state")
    if g[sn.args[0]].type.dims & {"p", "n"} or not _pn(g, s):
        raise IRError("not a scalar-per-head state")
    if sn.attr("order").kind not in ("identity", "reverse"):
        raise IRError(f"{sn.attr('order')} order")
    if any(ax.role == "r" for i in g.ids("input") + g.ids("output") for ax in g[i].attr("axes")):
        raise IRError("an input shared by blocks of channels (role r)")
    fwd = _outer_of(g, sn.args[1])
    ct = _outer_of(g, an.args[1])
    if fwd is None or ct is None:
        raise IRError("the scan input or the adjoint's cotangent is not an outer product (over n)·(over p)")
    users = g.users()
    info = dict(scan=s, adj=a_id, a=sn.args[0], k=fwd[0], v=fwd[1], c=ct[0], u=ct[1],
                h0=sn.args[2] if sn.attr("has_h0") else None,
                dlast=an.args[2] if an.attr("has_dlast") else None,
                seq=sn.args[2 + bool(sn.attr("has_h0"))] if sn.attr("reset") else None)
    core, internal = {}, {s, a_id, sn.args[1], an.args[1]}
    if users[sn.args[1]] != [s] or users[an.args[1]] != [a_id]:
        raise IRError("an outer product is used outside the recurrence")
    for state, kinds in ((s, ("Yh", "Ph")), (a_id, ("Ng", "Pg"))):
        for u in users[state]:
            n = g[u]
            if u == a_id or u in internal:
                continue
            if n.op == "prev" and state == s:
                (m,) = users[u] if len(users[u]) == 1 else (None,)
                r = _sole_user(g, users, m, ("reduce",), ("p", "n")) if m is not None else None
                if r is None or g[m].op != "mul" or set(g[m].args) != {u, a_id}:
                    raise IRError(f"node %{u}: h_(t-1) is used other than in the decay's gradient")
                internal |= {u, m}
                core[r] = ("dA", None)
            elif n.op == "carry" and state == a_id:
                core[u] = ("carry", None)
            elif n.op == "mul":
                (other,) = [x for x in n.args if x != state] or (None,)
                for role, kind, axis in (("n", kinds[0], "n"), ("p", kinds[1], "p")):
                    if other is not None and _vector(g, other, role):
                        r = _sole_user(g, users, u, ("reduce", "sum"), (axis,))
                        if r is None:
                            raise IRError(f"node %{u}: a product with the state not summed over {axis}")
                        internal.add(u)
                        core[r] = (kind, other)
                        break
                else:
                    raise IRError(f"node %{u}: the state times a value over neither p nor n alone")
            else:
                raise IRError(f"node %{u} ({n.op}) reads the state")
    for i, n in enumerate(g.nodes):
        if i in internal or i in core or n.op in ("input", "output"):
            continue
        if _pn(g, i):
            raise IRError(f"node %{i} ({n.op}) varies over both p and n")
        if n.type and n.type.complex:
            raise IRError(f"node %{i}: complex values")
        if n.op == "reduce" and {"b", "h"} & set(n.attr("axes")) and "t" not in n.attr("axes"):
            raise IRError(f"node %{i}: a sum over {n.attr('axes')} that keeps time")
        if n.op in ("prev", "carry", "last", "scan", "adjoint"):
            raise IRError(f"node %{i} ({n.op}) outside the recurrence's structure")
    info.update(core=core, internal=internal)
    return info
