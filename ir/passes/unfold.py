"""Unfold gather orders: a scan along a gather order becomes permute → forward scan → inverse permute.

    h = scan(Ā, x, order=gather, index)         ⇒   Ā' = permute(Ā, index), x' = permute(x, index)
    y = Σ_n C · h                                    h' = scan(Ā', x')               (forward order)
                                                     y' = Σ_n permute(C, index) · h'
                                                     y  = permute(y', index, inverse=True)

The scan's region (its readout up to the sum over the state) moves into the permuted time with it, so
only values without the state axis are permuted back.  The result is a multi-stage graph
(`ssmc.ir.stages`): its gradient is derived step by step, which is how a gather-order scan gets a
backward.  Orders that differ per sample (an index over batch), which no fused kernel reads, are
unfolded by the pipeline's `unfold_per_sample_orders`; the others only for their gradient (their
forward keeps the fused gather kernel, which reads the order in place).
"""
from __future__ import annotations

from dataclasses import replace

from ..graph import Graph, Rebuilder, prune
from ..indexmap import ORDERS, is_gather
from ..opset import IRError
from ..structure import scan_region
from .infer import infer_types

SKIP_ATTRS = ("region", "io", "hoist", "lti")


def unfold_orders(g: Graph, per_sample_only: bool = False) -> Graph:
    """Every gather-order scan of a typed graph unfolded (see the module docstring); with
    `per_sample_only`, those whose index varies over batch, which no fused kernel reads."""
    rb, remap = Rebuilder(), {}
    permuted = {}  # node id in the permuted time of its scan -> its id in the new graph
    regions = {}
    for s in g.ids("scan"):
        if is_gather(g[s].attr("order")) and (not per_sample_only or "b" in g[g[s].args[-1]].type.dims):
            if g[s].attr("reset"):
                raise NotImplementedError(f"{g.name}: node %{s} (scan): a gather-order scan with resets is not "
                                          f"unfolded (its backward is not derived)")
            idx = g[s].args[-1]
            region = scan_region(g, s, channels_apart="h" in g[idx].type.dims)
            regions[s] = (idx, set(region.body), set(region.frontier))
    body_of = {i: s for s, (_, body, _) in regions.items() for i in body}

    def emit(n, args):
        attrs = tuple((k, v) for k, v in n.attrs if k not in SKIP_ATTRS)
        return rb.add(replace(n, args=tuple(args), attrs=attrs, type=None))

    def into_time(a, s):
        """Operand a as seen in scan s's permuted time."""
        if a in permuted:
            return permuted[a]
        if "t" not in g[a].type.dims:
            return remap[a]
        return rb.emit("permute", [remap[a], remap[regions[s][0]]], inverse=False)

    for i, n in enumerate(g.nodes):
        if n.op == "scan" and i in regions:
            idx = regions[i][0]
            args = [into_time(a, i) for a in n.args[:2]] + [remap[a] for a in n.args[2:-1]]
            permuted[i] = emit(n.with_attrs(order=ORDERS["forward"]), args)
        elif i in body_of:
            permuted[i] = emit(n, [into_time(a, body_of[i]) for a in n.args])
        elif n.op == "last" and n.args[0] in permuted:
            remap[i] = emit(n, [permuted[n.args[0]]])
            continue
        else:
            if n.op == "upsample" and any(a in permuted for a in n.args):
                raise IRError(f"node %{i} (upsample): a strided grid view is not unfolded")
            remap[i] = emit(n, [remap[a] for a in n.args])
            continue
        s = i if i in regions else body_of[i]
        if i in regions[s][2]:  # read outside the region: back to time order
            remap[i] = rb.emit("permute", [permuted[i], remap[regions[s][0]]], inverse=True)
    return infer_types(prune(rb.finish(g.name)))


def has_gather(g: Graph) -> bool:
    return any(is_gather(g[s].attr("order")) for s in g.ids("scan"))


def unfold_per_sample_orders(g: Graph) -> Graph:
    """The pass: gather orders that differ per sample (an index over batch) unfolded; others kept."""
    if not any(is_gather(g[s].attr("order")) and "b" in g[g[s].args[-1]].type.dims for s in g.ids("scan")):
        return g
    return unfold_orders(g, per_sample_only=True)


__all__ = ["has_gather", "unfold_orders", "unfold_per_sample_orders"]
