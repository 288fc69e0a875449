"""Decode forms of a declaration: state in/out, and a single time step.

`stateful(g)` makes the scan's initial state an input named `state` and its final state an
output named `state`, so a sequence can be fed in pieces (k tokens per call, the state carried).
`single_step(g)` then drops the time axis: the scan becomes h = Ā·state + x, one step, with no
loop — the graph a decode kernel runs token by token.  Both are pure Graph -> Graph functions on
declared (untyped or typed) graphs; the usual pipeline runs after them.
"""
from __future__ import annotations

from dataclasses import replace

from ..graph import Graph, Rebuilder
from ..opset import IRError
from ..types import ROLES, Axis
from .infer import infer_types

STATE = "state"


def _scan_id(g: Graph) -> int:
    scans = g.ids("scan")
    if len(scans) != 1:
        raise IRError(f"{g.name}: a decode form needs exactly one scan, found {len(scans)}")
    return scans[0]


def _state_axes(g: Graph, scan: int) -> tuple:
    """Layout of the state: that of an existing final-state output or initial state, else canonical."""
    for i in g.ids("output"):
        if g[g[i].args[0]].op == "last" and g[g[i].args[0]].args[0] == scan:
            return g[i].attr("axes")
    if g[scan].attr("has_h0"):
        return g[g[scan].args[2]].attr("axes")
    symbol = {}
    for sym, role in g.symbols().items():
        if role != "g":
            symbol.setdefault(role, sym)
    state = infer_types(g)[scan].type
    return tuple(Axis(symbol[r], r) for r in ROLES if r in state.dims and r != "t")


def stateful(g: Graph) -> Graph:
    """The scan reads its initial state from input `state` and writes its final state to output `state`."""
    scan = _scan_id(g)
    if str(g[scan].attr("order")) not in ("forward", "t"):  # declared, or canonicalized to an index map
        raise IRError(f"node %{scan} (scan): a {g[scan].attr('order')} scan has no decode form "
                      f"(its first output depends on the last input)")
    axes = _state_axes(g, scan)
    old_h0 = g[scan].args[2] if g[scan].attr("has_h0") else None
    rb, remap = Rebuilder(), {}
    complex_ = infer_types(g)[scan].type.complex
    for i, n in enumerate(g.nodes):
        if i == old_h0:
            continue
        if n.op == "output" and g[n.args[0]].op == "last":
            continue  # replaced by the `state` output
        args = [remap[a] for a in n.args if a != old_h0]
        if i == scan:  # declared here, after the other inputs: shape errors then name `state`
            state = rb.emit("input", name=STATE, axes=axes, complex=complex_)
            a, x, *rest = args
            n = n.with_attrs(has_h0=True)
            args = [a, x, state, *rest]
        remap[i] = rb.add(replace(n, args=tuple(args), type=None))
    last = rb.emit("last", [remap[scan]])
    rb.emit("output", [last], name=STATE, axes=axes)
    return rb.finish(g.name + "_stateful")


def single_step(g: Graph) -> Graph:
    """One time step of a stateful graph: no time axis, h = Ā·state + x, no loop."""
    if STATE not in g.inputs:
        g = stateful(g)
    scan = _scan_id(g)
    rb, remap = Rebuilder(), {}
    for i, n in enumerate(g.nodes):
        if n.op in ("input", "output"):
            axes = tuple(a for a in n.attr("axes") if a.role != "t")
            if n.op == "input" and n.attr("integer"):  # seq_idx: resets do not apply to a single step
                continue
            n = n.with_attrs(axes=axes)
        if i == scan:
            a, x, h = (remap[j] for j in n.args[:3])
            remap[i] = rb.emit("add", [rb.emit("mul", [a, h]), x])
            continue
        if n.op == "last":
            remap[i] = remap[n.args[0]]
            continue
        remap[i] = rb.add(replace(n, args=tuple(remap[a] for a in n.args), type=None))
    return rb.finish(g.name.removesuffix("_stateful") + "_step")
