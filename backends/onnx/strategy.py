"""Which ONNX lowering each scan gets, and why: a pure pass over the optimized graph.

Three lowerings:
  * "scan"    — one ONNX Scan whose small body steps the state and the readout; works for every
                state kind, order and reset (the default);
  * "chunked" — Mamba-2's SSD form for scalar-per-head states: within a chunk a masked
                (C·Bᵀ ∘ decay)·X MatMul, between chunks a short Scan over chunk states;
  * "dft"     — for time-invariant (LTI) diagonal scans, on request: the readout's impulse
                response as a kernel and a DFT convolution.
The choice is stored on the scan node (`onnx_lowering`, `onnx_reason`) so `ssmc onnx --explain`
and tests can see it.
"""
from __future__ import annotations

from dataclasses import dataclass

from ssmc.ir import Graph

ABSORBABLE = {"neg", "exp", "sqrt", "softplus", "sigmoid", "silu", "clip", "real", "abs2", "add", "sub",
              "mul", "div", "complex", "expr", "sum"}
LTI_CHOICES = ("scan", "dft")


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
        if n.op in ABSORBABLE and any(a in inside and "n" in g[a].type.dims for a in n.args):
            inside.add(i)
            body.append(i)
    users = g.users()
    frontier = tuple(i for i in [scan, *body]
                     if any(u not in inside and g[u].op != "last" for u in users[i]))
    last = tuple(u for u in users[scan] if g[u].op == "last")
    return Region(scan, tuple(body), frontier, last)


def _ssd_reason(g: Graph, r: Region):
    """None when the scan has Mamba-2's SSD structure, else why not."""
    s = g[r.scan]
    a, x = g[s.args[0]], g[s.args[1]]
    if s.type.complex:
        return "complex state"
    if a.type.dims & {"p", "n"} or "p" not in s.type.dims or "n" not in s.type.dims:
        return "not a scalar-per-head state (Ā must vary over neither p nor n; the state over both)"
    if s.attr("order").kind != "identity":
        return f"{s.attr('order')} order"
    if s.attr("reset"):
        return "state resets (seq_idx)"
    if x.op != "mul" or not _outer(g, x):
        return "the scan input is not an outer product (B̄ over n) · (x over p)"
    if not _readout(g, r):
        return "the readout is not sum over n of C · h"
    return None


def _outer(g: Graph, x) -> tuple | None:
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


def _dft_reason(g: Graph, r: Region):
    s = g[r.scan]
    a, x = g[s.args[0]], g[s.args[1]]
    if a.type.time_varying:
        return "Ā varies in time (selective): no convolution kernel"
    if s.attr("reset"):
        return "state resets"
    if s.attr("order").kind != "identity":
        return f"{s.attr('order')} order"
    if _lti_factor(g, x) is None:
        return "the scan input is not (time-invariant B̄) · (input without the state axis)"
    for i in r.body:
        n = g[i]
        outside = [a for a in n.args if a not in r.body and a != r.scan]
        if n.op not in ("mul", "sum", "real", "neg") or any(g[a].type.time_varying for a in outside):
            return f"the readout (node %{i} {n.op}) is not linear and time-invariant"
    return None


def _lti_factor(g: Graph, x) -> tuple | None:
    """(b, u) ids when x = b·u, b time-invariant and u time-varying without the state axis n."""
    if x.op != "mul":
        return None
    for b, u in (x.args, x.args[::-1]):
        if not g[b].type.time_varying and g[u].type.time_varying and "n" not in g[u].type.dims:
            return b, u
    return None


def choose_lowering(g: Graph, lti: str = "scan", force_scan: bool = False) -> Graph:
    """Annotate every scan with its ONNX lowering and the reason for it (`force_scan`: always a Scan)."""
    if lti not in LTI_CHOICES:
        raise ValueError(f"lti: expected one of {LTI_CHOICES}, got {lti!r}")
    nodes = list(g.nodes)
    for i in g.ids("scan"):
        r = scan_region(g, i)
        ssd_why = _ssd_reason(g, r)
        if force_scan:
            kind, why = "scan", "one Scan step per token (forced)"
        elif ssd_why is None:
            kind, why = "chunked", "scalar-per-head state with an outer-product input and a C·h readout: SSD chunks"
        elif lti == "dft" and _dft_reason(g, r) is None:
            kind, why = "dft", "time-invariant diagonal scan with a linear readout: DFT convolution (requested)"
        else:
            kind = "scan"
            why = f"one Scan step per token ({'no DFT form: ' + _dft_reason(g, r) if lti == 'dft' else 'not SSD: ' + ssd_why})"
        nodes[i] = nodes[i].with_attrs(onnx_lowering=kind, onnx_reason=why)
    return Graph(g.name, tuple(nodes))


def ssd_parts(g: Graph, scan: int) -> dict:
    """Operand ids of an SSD-shaped scan: decay a, outer factors k (over n) and v (over p), readout C."""
    s = g[scan]
    k, v = _outer(g, g[s.args[1]])
    mul, sm, c = _readout(g, scan_region(g, scan))
    return dict(a=s.args[0], k=k, v=v, c=c, readout=sm)


def dft_parts(g: Graph, scan: int) -> dict:
    b, u = _lti_factor(g, g[g[scan].args[1]])
    return dict(a=g[scan].args[0], b=b, u=u)

