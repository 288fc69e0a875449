"""Reverse mode: the backward graph of a pipelined forward graph, built as IR.

`adjoint(g)` returns a graph whose inputs are the forward inputs plus one cotangent per forward
output (`grad_<output>`), and whose outputs are the gradients of every floating-point input
(`grad_<input>`, laid out like the input).  It recomputes the forward values it needs (the
backends decide how: the Triton kernel recomputes the state from chunk checkpoints) and then,
in reverse order:

* applies each op's row of `ssmc.ir.vjp.VJP` (elementwise ops' derivatives as IR ops, `sympy.diff`
  of `expr` nodes);
* the scan h_t = Ā_t h_{t-1} + x_t: its adjoint is the reverse recurrence
  g_t = dh_t + conj(Ā_{t+1}) g_{t+1} (op `adjoint`, started by the final-state cotangent), with
  dx_t = g_t, dĀ_t = g_t · conj(h_{t-1}) (op `prev`) and dh0 = conj(Ā_first) g_first (op `carry`);
* a value that broadcasts over axes its cotangent varies over (A, D, Δ-bias, LTI or grouped B/C)
  gets the cotangent summed over them (op `reduce`, over any of b, t, h, p, n); an output with a
  group axis sums the heads of each group.

With `defer_reduce` (graphs without a scan only), no cotangent is summed over an axis its value
broadcasts over (unless a forward `sum` of the graph runs over that axis: then it is summed at once,
as a forward `sum`): each `grad_<input>` keeps those axes, after the input's own, for the caller to
sum.  That is exact for such graphs: a derivative factor of a value varies only over the value's own
axes, so it commutes with the sum, and only a `sum`'s adjoint maps a value without an axis to one with
it.  Where two contributions to one value keep different axes, their sum would count one of them
too often: `DeferredSumsDisagree` is raised, and the caller takes the gradient another way.  It
leaves a graph of forward ops, which the Triton forward generator lowers: the backward of a
multi-stage graph's scan-less steps (`ssmc.runtime.staged`).

Complex gradients follow PyTorch's convention (see `ssmc.ir.vjp`).
"""
from __future__ import annotations

from ..graph import Graph, Node, freeze_attrs, prune
from ..indexmap import spans_sequence
from ..opset import IRError
from ..types import ROLES, Axis
from ..vjp import VJP, TypedBuilder

SKIP_ATTRS = ("region", "hoist", "lti")
DRIVER_OPS = frozenset({"input", "const", "scan", "last", "output"})  # the pass's own; the others are VJP rows


class DeferredSumsDisagree(NotImplementedError):
    """defer_reduce cannot hold: two cotangent contributions of one value broadcast over different axes
    (their sum would count the narrower one once per element of the other's extra axes)."""


def adjoint(g: Graph, defer_reduce: bool = False) -> Graph:
    """The backward graph of a typed, pipelined forward graph (see the module docstring)."""
    scans = g.ids("scan")
    if defer_reduce and scans:
        raise NotImplementedError(f"{g.name}: sums over broadcast axes are deferred only in graphs without a scan")
    if len(scans) > 1:  # (a multi-stage graph's steps have one each: ssmc.ir.stages)
        raise NotImplementedError(f"{g.name}: backward is derived for graphs with at most one scan, "
                                  f"found {len(scans)}")
    if scans and spans_sequence(g[scans[0]].attr("order")):
        raise NotImplementedError(f"{g.name}: backward of a gather-order or grid-order (multi-order) scan is not "
                                  f"derived yet")
    # (an axis some forward sum runs over is summed at once: a deferred copy of it would pass through that
    # sum's adjoint, a broadcast over the same axis, and be taken for the operand's own)
    summed = {r for i in g.ids("sum") for r in g[i].attr("axes")}
    b = TypedBuilder(frozenset({"b", "t", "h", "p", "n"} - summed) if defer_reduce else frozenset())
    new = {}  # forward node id -> its recomputation in the backward graph
    for i, n in enumerate(g.nodes):
        if n.op == "output":
            continue
        attrs = {k: v for k, v in n.attrs if k not in SKIP_ATTRS}
        new[i] = b.rb.add(Node(n.op, tuple(new[a] for a in n.args), freeze_attrs(attrs), n.type))

    contrib: dict = {}  # forward node id -> [cotangent contributions, each of the node's type]
    last_ct: dict = {}  # scan id -> cotangents of its final state

    def acc(i, c):
        contrib.setdefault(i, []).append(b.to_type(c, g[i].type))

    def total(parts):
        if not parts:
            return None
        if b.defer and len({b.type(p).dims for p in parts}) > 1:  # a sum over the broadcast axes of one part
            raise DeferredSumsDisagree(f"{g.name}: cotangents with different deferred axes meet at one value")
        out = parts[0]
        for p in parts[1:]:
            out = b.emit("add", [out, p])
        return out

    for name in g.outputs:
        if name in g.inputs:
            raise IRError(f"{g.name}: output {name!r} is also an input (a decode form); it has no backward")
    for i in reversed(range(len(g.nodes))):
        n = g[i]
        if n.op == "output":
            ct = b.emit("input", name=f"grad_{n.attr('name')}", axes=n.attr("axes"), complex=n.type.complex)
            acc(n.args[0], ct)
            continue
        if n.op == "last":
            c = total(contrib.get(i, []))
            if c is not None:
                last_ct.setdefault(n.args[0], []).append(c)
            continue
        if n.op in ("input", "const"):
            continue
        c = total(contrib.get(i, []))
        if n.op == "scan":
            _scan_rule(b, g, i, n, new, c, total(last_ct.get(i, [])), acc)
        elif c is not None:
            _local_rule(b, g, n, new[i], [new[a] for a in n.args], c, acc)

    for name, i in g.inputs.items():
        n = g[i]
        if n.attr("integer") or n.attr("derived"):  # (an index; a value the runtime derives from one)
            continue
        c = total(contrib.get(i, []))
        if c is None:
            c = b.const(0.0)
        if n.attr("complex") and not b.type(c).complex:
            c = b.emit("complex", [c, b.const(0.0)])
        axes = n.attr("axes")
        extra = [r for r in ROLES if r in b.type(c).dims - g[i].type.dims]  # (only with defer_reduce)
        if any(r not in g.role_symbols() for r in extra):
            raise IRError(f"{g.name}: grad_{name}: no input names an axis of role {extra} to size it")
        axes += tuple(Axis(g.role_symbols()[r], r) for r in extra)
        b.emit("output", [c], name=f"grad_{name}", axes=axes)
    return prune(b.rb.finish(g.name + "_bwd"))


def _scan_rule(b, g, i, n, new, dh, dlast, acc):
    if dh is None and dlast is None:
        return
    z = new[i]
    args = [z, dh if dh is not None else b.const(0.0)] + ([dlast] if dlast is not None else [])
    gz = b.emit("adjoint", args, order=n.attr("order"), has_dlast=dlast is not None)
    a, x = n.args[0], n.args[1]
    acc(x, gz)
    acc(a, b.emit("mul", [gz, b.conj(b.emit("prev", [z]))]))
    if n.attr("has_h0"):
        acc(n.args[2], b.emit("carry", [gz]))


def _local_rule(b, g, n, z, args, c, acc):
    """Accumulate the cotangents of node n's operands, given its cotangent c (its VJP row)."""
    b.const(1.0)  # first, as it always has been: the backward graph's node numbering stays the same
    if n.op not in VJP:
        raise NotImplementedError(f"backward: no derivative rule for op {n.op!r} "
                                  f"(node {n.op}{' ' + n.attr('name') if n.attr('name') else ''})")
    VJP[n.op](b, n, z, args, c, lambda k, v: acc(n.args[k], v))


__all__ = ["DeferredSumsDisagree", "adjoint"]
