"""Which ONNX lowering each scan gets, and why: a pure pass over the optimized graph.

Three lowerings:
  * "scan"    — one ONNX Scan whose small body steps the state and the readout; works for every
                state kind, order and reset (the default), and is the only one for gather
                (multi-order) scans: run in the orders' permuted time, the readout put back;
  * "chunked" — Mamba-2's SSD form for scalar-per-head states: within a chunk a masked
                (C·Bᵀ ∘ decay)·X MatMul, between chunks a short Scan over chunk states;
  * "dft"     — for time-invariant (LTI) diagonal scans, on request: the readout's impulse
                response as a kernel and a DFT convolution.
The choice is stored on the scan node (`onnx_lowering`, `onnx_reason`) so `ssmc onnx --explain`
and tests can see it.
"""
from __future__ import annotations

from ssmc.ir import Graph
from ssmc.ir.indexmap import strided
from ssmc.ir.structure import scan_region, ssd_reason

LTI_CHOICES = ("scan", "dft")


def _dft_reason(g: Graph, r) -> str | None:
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
        if strided(g[i].attr("order")):
            raise NotImplementedError(f"{g.name}: a {g[i].attr('order')} scan (a strided grid view, read back by "
                                      f"upsample) has no ONNX lowering")
        if g[i].attr("order").kind == "grid":  # the gather form exports: its orders are a graph input
            raise NotImplementedError(f"{g.name}: a {g[i].attr('order')} scan has no ONNX lowering; export the "
                                      f"same scan with order='gather' (ssmc.orders.multi_order_graph), the "
                                      f"permutations (ssmc.ops.scan_orders_2d) an input")
        r = scan_region(g, i)
        ssd_why = ssd_reason(g, r)
        if g[i].attr("along") == "h":
            kind, why = "scan", "one Scan step per channel (a scan along the channels: the Scan runs over axis h)"
        elif g[i].attr("order").kind == "gather":
            kind, why = "scan", ("one Scan step per token in the gather order's permuted time: Ā, x and the "
                                 "readout's time-varying operands read along the orders (one Gather each, per "
                                 "group), the readout put back with the inverse permutation (ScatterElements)")
        elif force_scan:
            kind, why = "scan", "one Scan step per token (forced)"
        elif ssd_why is None:
            kind, why = "chunked", "scalar-per-head state with an outer-product input and a C·h readout: SSD chunks"
        elif lti == "dft" and _dft_reason(g, r) is None:
            kind, why = "dft", "time-invariant diagonal scan with a linear readout: DFT convolution (requested)"
        else:
            kind = "scan"
            detail = "no DFT form: " + _dft_reason(g, r) if lti == "dft" else "not SSD: " + ssd_why
            why = f"one Scan step per token ({detail})"
        nodes[i] = nodes[i].with_attrs(onnx_lowering=kind, onnx_reason=why)
    return Graph(g.name, tuple(nodes))


def dft_parts(g: Graph, scan: int) -> dict:
    b, u = _lti_factor(g, g[g[scan].args[1]])
    return dict(a=g[scan].args[0], b=b, u=u)

