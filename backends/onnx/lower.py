"""ONNX lowering of an optimized IR graph, built with `onnx.helper` (no tracing).

Values live in the canonical (b, t, h, p, n) space as rank-5 float32 tensors with size-1 axes
where they do not vary, exactly as in the NumPy interpreter, so ONNX broadcasting does the
rest.  Complex values are (re, im) pairs of real tensors; complex graph inputs and outputs carry
a trailing axis of 2.  batch and L stay symbolic; the other sizes are fixed at export (they are
the model's weights' shapes).  Each scan becomes the lowering `strategy.choose_lowering` picked.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from ssmc.ir import ROLES, Graph, IRError
from ssmc.ir.indexmap import is_gather
from ssmc.ir.structure import scan_region
from ssmc.ir.symbolic import lower as lower_expr
from ssmc.ir.types import value_role

from . import chunked, dft
from .elementwise import cmul_add, elementwise
from .emitter import END, Emitter, float_info
from .sym import emit_lowered

T = 1  # the time axis of a canonical value

# Ops the Lowering handles itself; the elementwise ones are rows of `elementwise.ONNX`.
STRUCTURAL = frozenset({"input", "const", "sum", "expr", "lag", "permute", "pool", "causal_conv", "scan", "last",
                        "output"})
REFUSED = {  # op -> why it has no ONNX lowering (checked before lowering: `refusal`)
    "discretize": "expand_discretization makes it an expr before lowering",
    "upsample": "a strided grid view exports only through its gather form",
    **{op: "backward graphs are not exported" for op in ("reduce", "prev", "adjoint", "clip_grad", "carry")},
}


def refusal(g: Graph) -> None:
    """Raise an IRError naming the first node whose op has no ONNX lowering."""
    for i, n in enumerate(g.nodes):
        if n.op in REFUSED:
            raise IRError(f"{g.name}: node %{i} ({n.op}) has no ONNX lowering: {REFUSED[n.op]}")


class Lowering:
    def __init__(self, g: Graph, sizes: dict, roles: dict, fp16: bool, rename: dict, chunk: int, opset: int):
        self.g, self.sizes, self.roles, self.fp16, self.rename = g, sizes, roles, fp16, rename
        self.chunk = chunk  # SSD chunk length
        self.opset = opset
        self.em = Emitter()
        self.vals = {}
        self.graph_inputs, self.graph_outputs = [], []
        self._dyn = {}  # role -> (raw input name, axis) for the symbolic roles b and t
        self._dims = {}
        self.owner = {}  # node id -> the scan whose lowering produces it
        self._busy = set()
        self._orders = {}  # gather-index node id -> its flat indices (gather_order)
        self._partial = {g[i].attr("derived") for i in g.ids("input") if g[i].attr("derived")}  # partial orders
        self._completed = {}  # partial order's index node id -> (completed index, visited), canonical layout
        self.regions = {s: scan_region(g, s, channels_apart=g[s].attr("along") == "h" or (
            is_gather(g[s].attr("order")) and "h" in g[g[s].args[-1]].type.dims)) for s in g.ids("scan")}
        for s, r in self.regions.items():
            for i in (s, *r.body, *r.last):
                self.owner[i] = s

    # --- values ------------------------------------------------------------------------------
    def val(self, i: int) -> tuple:
        if i not in self.vals:
            n = self.g[i]
            if i in self.owner:
                s = self.owner[i]
                if s in self._busy:
                    raise IRError(f"node %{i} ({n.op}): the readout of scan %{s} depends on its own output")
                self._busy.add(s)
                self.lower_scan(s)
                self._busy.discard(s)
            elif n.op == "input" and (n.attr("derived") or n.attr("name") in self._partial):
                full, visited = self.complete_order(self.g.inputs[n.attr("derived") or n.attr("name")])
                self.vals[i] = (visited,) if n.attr("derived") else (full,)
            elif n.op == "input":
                self.vals[i] = self.lower_input(n)
            else:
                self.vals[i] = self.lower_node(i, n, [self.val(a) for a in n.args], rank=5)
        return self.vals[i]

    def dim(self, role: str) -> str:
        """A 1-element int64 tensor holding the size of `role`."""
        if role not in self._dims:
            if role in ("b", "t"):
                if role not in self._dyn:
                    raise IRError(f"{self.g.name}: no input carries the {role} axis")
                name, axis = self._dyn[role]
                self._dims[role] = self.em.op("Shape", [name], start=axis, end=axis + 1)
            else:
                self._dims[role] = self.em.ints([self.roles[role]])
        return self._dims[role]

    def shape_of(self, roles_wanted, rank5=True, scanned="t") -> str:
        """Shape tensor with the sizes of `roles_wanted` and 1 elsewhere (rank 5, or 4 without the
        `scanned` axis: t, or h for a scan along the channels)."""
        parts = [self.dim(r) if r in roles_wanted else self.em.ints([1])
                 for r in ROLES if rank5 or r != scanned]
        return self.em.op("Concat", parts, axis=0)

    # --- inputs and outputs -------------------------------------------------------------------
    def lower_input(self, n) -> tuple:
        name, axes = n.attr("name"), n.attr("axes")
        gname = self.rename.get(name, name)
        dims = [{"b": "batch", "t": "L"}.get(a.role, self.sizes.get(a.symbol)) for a in axes]
        if n.attr("integer"):
            elem = TensorProto.INT64
        else:
            elem = TensorProto.FLOAT16 if self.fp16 else TensorProto.FLOAT
        if n.attr("complex"):
            dims = dims + [2]
        self.graph_inputs.append(helper.make_tensor_value_info(gname, elem, dims))
        for k, a in enumerate(axes):
            if a.role in ("b", "t"):
                self._dyn.setdefault(a.role, (gname, k))
        x = gname
        if elem == TensorProto.FLOAT16:  # arithmetic, Δ and the state stay fp32 inside the graph
            x = self.em.op("Cast", [x], to=TensorProto.FLOAT)
        parts = ((self.em.op("Gather", [x, self.em.const(0, np.int64)], axis=-1),
                  self.em.op("Gather", [x, self.em.const(1, np.int64)], axis=-1))
                 if n.attr("complex") else (x,))
        return tuple(self._to_canonical(p, axes) for p in parts)

    def _to_canonical(self, x: str, axes) -> str:
        em = self.em
        for k, a in enumerate(axes):
            if a.role == "g":  # channel h reads group h // (H // G): repeat each group H/G times
                if any(b.role == "b" for b in axes[1:]):
                    raise IRError("grouped inputs need batch as their first axis")
                rep = self.roles["h"] // self.roles["g"]
                x = em.op("Unsqueeze", [x, em.ints([k + 1])])
                x = em.op("Expand", [x, em.ints([rep if j == k + 1 else 1 for j in range(len(axes) + 1)])])
                target = [0 if b.role == "b" else -1 if b.role == "t" else
                          self.roles["h"] if b.role == "g" else self.roles[value_role(b.role)] for b in axes]
                x = em.op("Reshape", [x, em.ints(target)])
            if a.role == "r":  # channel h reads h % R (shared by every block of R channels): one Gather
                x = em.op("Gather", [x, self._block_channels(self.sizes[a.symbol])], axis=k)
        have = [value_role(a.role) for a in axes]
        perm = [have.index(r) for r in ROLES if r in have]
        if perm != list(range(len(perm))):
            x = em.op("Transpose", [x], perm=perm)
        missing = [k for k, r in enumerate(ROLES) if r not in have]
        return em.op("Unsqueeze", [x, em.ints(missing)]) if missing else x

    def _block_channels(self, size: int) -> str:
        """The int64 constant [h % size for h < H]: the shared channel each of the H channels reads."""
        H = self.roles["h"]
        if H % size:
            raise IRError(f"{self.g.name}: a shared (role r) axis of {size} must divide the {H} channels")
        return self.em.ints(np.arange(H) % size)

    def _merge_blocks(self, p: str, role: str, size: int, dims: set) -> str:
        """A canonical value over all H channels summed to `size` channels: for role r (a multi-order
        scan's merge) the blocks h = block·size + j are added; for role g the heads of each group.
        `dims`: the roles p is full along (size 1 along the others)."""
        em, H = self.em, self.roles["h"]
        if H % size:
            raise IRError(f"{self.g.name}: an output axis of role {role} and size {size} must divide "
                          f"the {H} channels")
        blocks = H // size
        split = [blocks, size] if role == "r" else [size, blocks]
        rest = [self.roles[r] if r in dims else 1 for r in "pn"]
        x = em.op("Reshape", [p, em.ints([0, 0, *split, -1])])
        x = em.op("ReduceSum", [x, em.ints([2 if role == "r" else 3])], keepdims=0)
        return em.op("Reshape", [x, em.ints([0, 0, size, *rest])])

    def lower_output(self, i: int) -> None:
        n = self.g[i]
        em = self.em
        axes = n.attr("axes")
        want = [value_role(a.role) for a in axes]
        merged = next((a for a in axes if a.role in ("g", "r")), None)
        value = self.g[n.args[0]]
        parts = []
        for p in self.val(n.args[0]):
            if set(want) - value.type.dims:  # the layout has an axis the value is constant along
                p = em.op("Expand", [p, self.shape_of(set(want))])
            if merged is not None:  # channels sharing the output's h % R (or group) are summed
                p = self._merge_blocks(p, merged.role, self.sizes[merged.symbol], set(want))
            drop = [k for k, r in enumerate(ROLES) if r not in want]
            if drop:
                p = em.op("Squeeze", [p, em.ints(drop)])
            kept = [r for r in ROLES if r in want]
            perm = [kept.index(r) for r in want]
            if perm != list(range(len(perm))):
                p = em.op("Transpose", [p], perm=perm)
            parts.append(p)
        if len(parts) == 2:
            parts = [em.op("Concat", [em.op("Unsqueeze", [p, em.ints([-1])]) for p in parts], axis=-1)]
        out = parts[0]
        elem = TensorProto.FLOAT16 if self.fp16 else TensorProto.FLOAT
        gname = self.rename.get(("out", n.attr("name")), n.attr("name"))
        if self.fp16:
            em.op("Cast", [out], [gname], to=TensorProto.FLOAT16)
        else:
            em.op("Identity", [out], [gname])
        dims = [{"b": "batch", "t": "L"}.get(a.role, self.sizes.get(a.symbol)) for a in axes]
        if value.type.complex:
            dims = dims + [2]
        self.graph_outputs.append(helper.make_tensor_value_info(gname, elem, dims))

    # --- nodes ---------------------------------------------------------------------------------
    def lower_node(self, i: int, n, args: list, rank: int) -> tuple:
        """One op over (re,) / (re, im) tuples; rank 5 outside scans, 4 inside a Scan body (no t)."""
        em, op = self.em, n.op
        if op == "const":
            return (em.scalar(n.attr("value")),)
        if op == "sum":
            axes = [ROLES.index(r) - (1 if rank == 4 and ROLES.index(r) > T else 0) for r in n.attr("axes")]
            return tuple(em.op("ReduceSum", [p, em.ints(axes)], keepdims=1) for p in args[0])
        if op == "expr":
            return self._expr(i, n, args)
        if op == "lag":
            return self._lag(n, args)
        if op == "permute":
            return self._permute(n, args)
        if op == "causal_conv":  # (real operands: the type rule says so)
            return dft.causal_conv(self, args[1], args[0])[:1]
        if op == "pool":  # (its operand varies over time: the type rule says so)
            reduce = "ReduceMean" if n.attr("mean") else "ReduceSum"
            return tuple(em.op(reduce, [p, em.ints([T])], keepdims=1) for p in args[0])
        return elementwise(em, n, args)

    def _permute(self, n, args) -> tuple:
        """GatherElements along time (inverse: ScatterElements into zeros), value and index expanded to
        the result's shape: one permutation per (batch, channel)."""
        em = self.em
        full = self.shape_of(n.type.dims)
        idx = em.op("Expand", [args[1][0], full])
        out = []
        for p in args[0]:
            p = em.op("Expand", [p, full])
            if n.attr("inverse"):
                zeros = em.op("ConstantOfShape", [em.op("Shape", [p])],
                              value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]))
                out.append(em.op("ScatterElements", [zeros, idx, p], axis=T))
            else:
                out.append(em.op("GatherElements", [p, idx], axis=T))
        return tuple(out)

    def _lag(self, n, args) -> tuple:
        """Pad k zeros on one end of the time axis, slice L steps from the other; a reset compares
        seq_idx with its own lag (a step whose source lies in another sequence reads 0)."""
        em, k = self.em, n.attr("k")
        full = self.shape_of(n.type.dims)
        pads = em.ints([0, max(k, 0), 0, 0, 0, 0, max(-k, 0), 0, 0, 0])
        start, stop = (em.ints([0]), self.dim("t")) if k > 0 else (em.ints([-k]), em.ints([END]))

        def shift(p, zero):
            p = em.op("Pad", [em.op("Expand", [p, full]), pads, zero])
            return em.op("Slice", [p, start, stop, em.ints([T])])
        out = tuple(shift(p, em.scalar(0.0)) for p in args[0])
        if n.attr("reset"):
            seq = em.op("Expand", [args[1][0], self.shape_of({"b", "t"})])
            same = em.op("Equal", [seq, shift(seq, em.const(-1, np.int64))])
            out = tuple(em.op("Where", [same, p, em.scalar(0.0)]) for p in out)
        return out

    def _expr(self, i, n, args) -> tuple:
        names = n.attr("symbols")
        flags = tuple(self.g[a].type.complex for a in n.args)
        env = {}
        for sym, parts, f in zip(names, args, flags):
            if f:
                env[f"{sym}_re"], env[f"{sym}_im"] = parts
            else:
                env[sym] = parts[0]
        assigns, results = lower_expr(n.attr("expr"), names, flags, split_complex=True, prefix=f"e{i}_")
        try:
            out = emit_lowered(self.em, assigns, results, env)
        except IRError as e:
            raise IRError(f"node %{i} (expr {n.attr('expr')}): {e}") from None
        return tuple(out[:2 if n.type.complex else 1])

    # --- scans ----------------------------------------------------------------------------------
    def lower_scan(self, s: int) -> None:
        kind = self.g[s].attr("onnx_lowering", "scan")
        if kind == "chunked":
            chunked.lower(self, s)
        elif kind == "dft":
            dft.lower(self, s)
        else:
            self.lower_stepwise(s)

    def scan_operands(self, s: int):
        """(Ā parts with resets applied, x parts, h0 parts or None) of scan s, rank 5; for a gather
        order, Ā, x and seq_idx are read in the scan's own (permuted) time: step k at axis 1."""
        n = self.g[s]
        rest = list(n.args[2:])
        h0 = self.val(rest.pop(0)) if n.attr("has_h0") else None
        a, x = self.val(n.args[0]), self.val(n.args[1])
        seq = rest.pop(0) if n.attr("reset") else None
        gather = self.gather_order(rest.pop(0)) if is_gather(n.attr("order")) else None
        if gather is not None:
            a, x = self.permute(a, n.args[0], gather), self.permute(x, n.args[1], gather)
        if seq is not None:
            seq_val = self.val(seq) if gather is None else self.permute(self.val(seq), seq, gather)
            a = self._reset(a, seq_val[0], n.attr("order").kind == "reverse")
        return a, x, h0

    # --- gather (permutation) orders --------------------------------------------------------------
    def complete_order(self, idx: int) -> tuple:
        """(index', visited) of a partial order (ssmc.ir.passes.partial), computed in the graph from the
        user's index, rows of listed positions then -1: a key per position, its own position if unlisted
        and L + its rank if listed (the padding steps written past L), sorted ascending by TopK."""
        if idx not in self._completed:
            em = self.em
            raw = self.lower_input(self.g[idx])[0]  # (b or 1, L, H or 1, 1, 1) int64
            L = self.dim("t")
            steps = em.op("Reshape", [em.op("Range", [em.const(0, np.int64), em.op("Squeeze", [L, em.ints([0])]),
                                                      em.const(1, np.int64)]), em.ints([1, -1, 1, 1, 1])])
            after = em.op("Expand", [em.op("Add", [steps, L]), em.op("Shape", [raw])])  # L + k at step k
            slots = em.op("Where", [em.op("Less", [raw, em.const(0, np.int64)]), after, raw])
            wide = em.op("Concat", [em.op("Shape", [raw], end=1), em.op("Mul", [L, em.ints([2])]),
                                    em.op("Shape", [raw], start=2)], axis=0)
            keys = em.op("Expand", [em.op("Concat", [steps, em.op("Add", [steps, L])], axis=1), wide])
            keys = em.op("ScatterElements", [keys, slots, after], axis=1)
            keys = em.op("Slice", [keys, em.ints([0]), L, em.ints([1])])
            full = em.op("TopK", [keys, L], outputs=2, axis=1, largest=0, sorted=1)[1]
            visited = em.op("Cast", [em.op("Not", [em.op("Less", [keys, L])])], to=TensorProto.FLOAT)
            self._completed[idx] = (full, visited)
        return self._completed[idx]

    def gather_order(self, idx: int) -> tuple:
        """(forward, inverse, G, flat shape) for a gather order's index operand.

        forward and inverse are flat int64 indices into a value reshaped to `flat shape`
        (b, L·G, rest) — G the groups the index has (1, its g axis, or every channel), rest a block
        of H/G channels — so that one batch-free Gather on axis 1 reads step k of group j at time
        index[j, k] (forward) or puts it back (inverse: time t of group j from the step that
        visited it).  The inverse permutation is computed in the graph (ScatterElements), so the
        orders stay a graph input, any permutations at run time."""
        if idx in self._orders:
            return self._orders[idx]
        em, node, H = self.em, self.g[idx], self.roles["h"]
        if "h" not in node.type.dims:
            G = 1
        elif node.op == "input" and any(a.role == "g" for a in node.attr("axes")):
            G = self.sizes[next(a.symbol for a in node.attr("axes") if a.role == "g")]
        else:
            G = H
        order = self.val(idx)[0]  # (1, L, H or 1, 1, 1) int64: channel h's step k visits time order[k, h]
        if G < H and "h" in node.type.dims:  # one channel per group: the first of each block of H/G
            order = em.op("Gather", [order, em.ints(np.arange(G) * (H // G))], axis=2)
        order = em.op("Reshape", [order, em.ints([-1, G])])  # (L, G)
        groups = em.ints(np.arange(G))
        G_ = em.const(G, np.int64)
        length = em.op("Squeeze", [em.op("Shape", [order], start=0, end=1), em.ints([0])])
        steps = em.op("Range", [em.const(0, np.int64), length, em.const(1, np.int64)])  # (L,)
        steps = em.op("Expand", [em.op("Unsqueeze", [steps, em.ints([1])]), em.op("Shape", [order])])
        inverse = em.op("ScatterElements", [order, order, steps], axis=0)  # inverse[order[k, j], j] = k

        def flat(m):  # (L, G) times -> flat positions t·G + j of a (L·G) axis
            return em.op("Reshape", [em.op("Add", [em.op("Mul", [m, G_]), groups]), em.ints([-1])])

        forward = flat(order)
        flat_shape = em.op("Concat", [em.ints([0]), em.op("Shape", [forward]), em.ints([-1])], axis=0)
        self._orders[idx] = (forward, flat(inverse), G, flat_shape)
        return self._orders[idx]

    def _regather(self, parts: tuple, dims: set, index: str, gather: tuple) -> tuple:
        """Each part (rank 5, time on axis 1) read at the flat time indices `index` per group."""
        if "t" not in dims:  # the same at every step
            return parts
        em, out = self.em, []
        G, flat_shape = gather[2], gather[3]
        for p in parts:
            if G > 1 and "h" not in dims:  # the groups read it at different times: one copy per channel
                p = em.op("Expand", [p, em.ints([1, 1, self.roles["h"], 1, 1])])
            flat = em.op("Reshape", [p, flat_shape])  # (b, L·G, H/G·p·n)
            out.append(em.op("Reshape", [em.op("Gather", [flat, index], axis=1), em.op("Shape", [p])]))
        return tuple(out)

    def permute(self, parts: tuple, i: int, gather: tuple) -> tuple:
        """Value i (its parts) in the scan's permuted time."""
        return self._regather(parts, self.g[i].type.dims, gather[0], gather)

    def unpermute(self, parts: tuple, i: int, gather: tuple) -> tuple:
        """A per-step result of a gather-order scan put back at the times its steps visited."""
        dims = set(self.g[i].type.dims) | ({"h"} if gather[2] > 1 else set())
        return self._regather(parts, dims, gather[1], gather)

    def _reset(self, a: tuple, seq: str, reverse: bool) -> tuple:
        """Ā = 0 where seq_idx differs from the previous step's (in scan order): the state restarts."""
        em = self.em

        def sl(start, end):
            return em.op("Slice", [seq, em.ints([start]), em.ints([end]), em.ints([T])])

        prev = (em.op("Concat", [sl(1, END), sl(-1, END)], axis=T) if reverse
                else em.op("Concat", [sl(0, 1), sl(0, -1)], axis=T))
        same = em.op("Equal", [seq, prev])
        zero = em.scalar(0.0)
        return tuple(em.op("Where", [same, p, zero]) for p in a)

    def initial_state(self, s: int, h0, rank5: bool) -> tuple:
        """The state before the first step, broadcast to the state's full shape."""
        em = self.em
        n = self.g[s]
        scanned = n.attr("along") or "t"
        dims = n.type.dims - {scanned}
        shape = self.shape_of(dims, rank5=rank5, scanned=scanned)
        parts = []
        for k in range(2 if n.type.complex else 1):
            if h0 is not None and k < len(h0):
                p = h0[k] if rank5 else em.op("Squeeze", [h0[k], em.ints([T])])
            else:
                p = em.scalar(0.0)
            parts.append(em.op("Expand", [p, shape]))
        return tuple(parts)

    def lower_stepwise(self, s: int) -> None:
        """One ONNX Scan: the body steps the state and evaluates the region's readout per token (per channel
        for a scan along the channels: the Scan runs over axis h, the body's values are (b, t, p, n))."""
        g, em = self.g, self.em
        n = g[s]
        region = self.regions[s]
        scanned = n.attr("along") or "t"
        axis = ROLES.index(scanned)
        varies = lambda j: scanned in g[j].type.dims  # noqa: E731  (sliced per step, else squeezed)
        a, x, h0 = self.scan_operands(s)
        state0 = self.initial_state(s, h0, rank5=False)
        inside = {s, *region.body}
        outside = []
        for i in region.body:
            outside += [j for j in g[i].args if j not in inside and j not in outside]
        gather = self.gather_order(n.args[-1]) if is_gather(n.attr("order")) else None
        outer = {j: self.val(j) if gather is None else self.permute(self.val(j), j, gather) for j in outside}
        outer["a"], outer["x"] = a, x

        scan_in, body_name = [], {}  # outer names sliced per step, and what the body calls them
        squeezed = {}

        def per_step(key, parts, varying):
            if varying:
                names = []
                for p in parts:
                    body_name[p] = body_name.get(p) or em.fresh("slice")
                    if p not in scan_in:
                        scan_in.append(p)
                    names.append(body_name[p])
                return tuple(names)
            if key not in squeezed:
                squeezed[key] = tuple(em.op("Squeeze", [p, em.ints([axis])]) for p in parts)
            return squeezed[key]

        a_b = a if g[n.args[0]].op == "const" and not n.attr("reset") else \
            per_step("a", a, varies(n.args[0]) or n.attr("reset"))  # (a constant Ā is a scalar: no squeeze)
        x_b = per_step("x", x, varies(n.args[1]))
        ops_b = {j: per_step(j, outer[j], varies(j)) if g[j].op != "const" else outer[j] for j in outside}
        h_in = tuple(em.fresh("h") for _ in state0)
        with em.body() as body_nodes:
            vals = dict(ops_b)
            h_new = cmul_add(em, a_b, h_in, x_b)
            vals[s] = h_new
            for i in region.body:
                vals[i] = self.lower_node(i, g[i], [vals[j] for j in g[i].args], rank=4)
            state_out = tuple(em.op("Identity", [p], hint="h_next") for p in h_new)
            stacked = [em.op("Identity", [p], hint="y") for f in region.frontier for p in vals[f]]
        reverse = int(n.attr("order").kind == "reverse")
        body = helper.make_graph(
            body_nodes, em.fresh("scan_body"),
            [float_info(h, 4) for h in h_in] + [float_info(body_name[p], 4) for p in scan_in],
            [float_info(h, 4) for h in state_out] + [float_info(y, 4) for y in stacked])
        outs = em.op("Scan", list(state0) + scan_in, len(state_out) + len(stacked), hint="scan",
                     body=body, num_scan_inputs=len(scan_in),
                     scan_input_axes=[axis] * len(scan_in), scan_input_directions=[reverse] * len(scan_in),
                     scan_output_axes=[axis] * len(stacked), scan_output_directions=[reverse] * len(stacked))
        outs = [outs] if isinstance(outs, str) else list(outs)
        final, ys = outs[:len(state_out)], outs[len(state_out):]
        for f in region.frontier:
            k = len(vals[f])
            self.vals[f], ys = tuple(ys[:k]), ys[k:]
            if gather is not None:  # step k back at the time it visited
                self.vals[f] = self.unpermute(self.vals[f], f, gather)
        if region.last:
            last = tuple(em.op("Unsqueeze", [p, em.ints([T])]) for p in final)
            for i in region.last:
                self.vals[i] = last


def build_model(lw: Lowering) -> onnx.ModelProto:
    for i in lw.g.ids("output"):
        lw.lower_output(i)
    declared = {lw.rename.get(name, name): k for k, name in enumerate(lw.g.inputs)}
    inputs = sorted(lw.graph_inputs, key=lambda v: declared[v.name])  # declaration order
    graph = helper.make_graph(lw.em.nodes, lw.g.name, inputs, lw.graph_outputs,
                              initializer=lw.em.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", lw.opset)],
                              producer_name="ssmc")
    model.ir_version = min(model.ir_version, 10)  # readable by released onnxruntime builds
    return model
