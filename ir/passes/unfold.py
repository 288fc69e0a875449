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

from ..graph import Graph, Node, Rebuilder, freeze_attrs, prune
from ..indexmap import ORDERS, is_gather, spans_sequence, strided
from ..opset import IRError
from ..structure import scan_region
from ..types import Axis
from .infer import infer_types

SKIP_ATTRS = ("region", "io", "hoist", "lti")


def unfold_orders(g: Graph, per_sample_only: bool = False) -> Graph:
    """Every gather- or grid-order scan of a typed graph unfolded (see the module docstring); with
    `per_sample_only`, the gather orders whose index varies over batch, which no fused kernel reads.
    A grid order's permutation becomes an input the runtime derives from the order (`derived`)."""
    rb, remap = Rebuilder(), {}
    permuted = {}  # node id in the permuted time of its scan -> its id in the new graph
    regions = {}
    for s in g.ids("scan"):
        order = g[s].attr("order")
        if per_sample_only and not (is_gather(order) and "b" in g[g[s].args[-1]].type.dims):
            continue
        if not spans_sequence(order):
            continue
        where = f"{g.name}: node %{s} (scan)"
        if g[s].attr("reset"):
            raise NotImplementedError(f"{where}: a gather- or grid-order scan with resets is not unfolded (its "
                                      f"backward is not derived)")
        if strided(order):
            raise NotImplementedError(f"{where}: a strided grid order (a multi-scale view, {order}) is not "
                                      f"unfolded (its backward is not derived)")
        index = g[s].args[-1] if is_gather(order) else _grid_index(g, order, len(regions))
        apart = "h" in g[index].type.dims if is_gather(order) else len(order.names) > 1
        region = scan_region(g, s, channels_apart=apart)
        regions[s] = (index, set(region.body), set(region.frontier))
    body_of = {i: s for s, (_, body, _) in regions.items() for i in body}

    def emit(n, args):
        attrs = tuple((k, v) for k, v in n.attrs if k not in SKIP_ATTRS)
        return rb.add(replace(n, args=tuple(args), attrs=attrs, type=None))

    def index_of(s):
        """Scan s's order as an index node of the new graph (a grid order's: a derived input)."""
        index = regions[s][0]
        return remap[index] if isinstance(index, int) else rb.add(index)

    def into_time(a, s):
        """Operand a as seen in scan s's permuted time."""
        if a in permuted:
            return permuted[a]
        if "t" not in g[a].type.dims:
            return remap[a]
        return rb.emit("permute", [remap[a], index_of(s)], inverse=False)

    for i, n in enumerate(g.nodes):
        if n.op == "scan" and i in regions:
            rest = n.args[2:-1] if is_gather(n.attr("order")) else n.args[2:]  # (h0, without the index)
            args = [into_time(a, i) for a in n.args[:2]] + [remap[a] for a in rest]
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
            remap[i] = rb.emit("permute", [permuted[i], index_of(s)], inverse=True)
    return infer_types(prune(rb.finish(g.name)))


def _grid_index(g: Graph, order, k: int) -> Node:
    """An input node holding grid order's permutations, (L,) or (groups, L): derived from the order by
    the runtime (`IndexMap.permutations`), so no caller passes it."""
    symbols = g.role_symbols()
    axes = ((Axis(symbols["g"], "g"),) if len(order.names) > 1 else ()) + (Axis(symbols["t"], "t"),)
    name = f"grid_order{k}__"
    if name in g.inputs:
        raise ValueError(f"{g.name}: an input may not be named {name!r}: a grid order's unfolded form derives "
                         f"an input of that name")
    return Node("input", (), freeze_attrs(dict(name=name, axes=axes, integer=True, derived=order)))


def has_permuted_orders(g: Graph) -> bool:
    """Does a scan run along a gather or grid order (whose gradient is derived on the unfolded form)?"""
    return any(spans_sequence(g[s].attr("order")) for s in g.ids("scan"))


def unfold_per_sample_orders(g: Graph) -> Graph:
    """The pass: gather orders that differ per sample (an index over batch) unfolded; others kept."""
    if not any(is_gather(g[s].attr("order")) and "b" in g[g[s].args[-1]].type.dims for s in g.ids("scan")):
        return g
    return unfold_orders(g, per_sample_only=True)


__all__ = ["has_permuted_orders", "unfold_orders", "unfold_per_sample_orders"]
