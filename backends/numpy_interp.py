"""The NumPy interpreter: the one definition of what every IR op means.

Values are arrays in the canonical index space (b, t, h, p, n), with size-1 axes where a value
does not vary.  An input is permuted into that space (groups repeated out to heads); an output is
permuted back.  Scans are plain loops over time in their index map's order: permute, scan,
unpermute, with no cleverness to get wrong.
"""
from __future__ import annotations

import numpy as np

from ssmc.ir import ROLES, Graph, IRError
from ssmc.ir.bind import bind, role_sizes
from ssmc.ir.grid import anchors
from ssmc.ir.indexmap import ORDERS, index_map, is_gather, spans_sequence, strided
from ssmc.ir.passes import run_pipeline
from ssmc.ir.symbolic import expand, get_rule, lower, print_numpy
from ssmc.ir.types import value_role


def to_canonical(x: np.ndarray, axes, roles: dict) -> np.ndarray:
    """Permute a user array laid out along `axes` into the 5-axis canonical space."""
    for k, ax in enumerate(axes):
        if ax.role == "g":  # channel h reads group h // (H // G)
            x = np.repeat(x, roles["h"] // roles["g"], axis=k)
        if ax.role == "r":  # channel h reads h % R
            x = np.concatenate([x] * (roles["h"] // roles["r"]), axis=k)
    have = [value_role(a.role) for a in axes]
    x = np.transpose(x, [have.index(r) for r in ROLES if r in have])
    return x.reshape([roles[r] if r in have else 1 for r in ROLES])


def from_canonical(x: np.ndarray, axes, roles: dict) -> np.ndarray:
    """Broadcast a canonical value to the roles of `axes` and lay it out in that order."""
    want = [a.role for a in axes]
    full = np.broadcast_to(x, [roles[r] if r in want else 1 for r in ROLES])
    kept = [r for r in ROLES if r in want]
    full = full.reshape([roles[r] for r in kept])
    # a copy, not ascontiguousarray: that would hand back the read-only broadcast view whenever
    # the layout is already contiguous, and callers own (and may write) their outputs
    return np.transpose(full, [kept.index(r) for r in want]).copy()


def _softplus(x):
    return np.logaddexp(0.0, x)


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free logistic


EXPR_CACHE: dict = {}  # (expr, symbols, complex flags) -> its NumPy function: what the interpreter evaluates


def _expr_fn(node, complex_flags):
    key = (node.attr("expr"), node.attr("symbols"), complex_flags)
    if key not in EXPR_CACHE:
        assigns, (result,) = lower(node.attr("expr"), node.attr("symbols"), complex_flags, split_complex=False)
        body = [f"    {name} = {print_numpy(v)}" for name, v in assigns] + [f"    return {print_numpy(result)}"]
        src = f"def f({', '.join(node.attr('symbols'))}):\n" + "\n".join(body) + "\n"
        scope = {"numpy": np}
        exec(compile(src, "<ssmc expr>", "exec"), scope)
        EXPR_CACHE[key] = scope["f"]
    return EXPR_CACHE[key]


def _scan(args, node, ctx):
    a, x = args[0], args[1]
    rest = list(args[2:])
    h0 = rest.pop(0) if node.attr("has_h0") else None
    seq = rest.pop(0) if node.attr("reset") else None
    if node.attr("along") == "h":  # along channels: time and channels trade places, and back
        swap = lambda v: np.swapaxes(v, 1, 2)  # noqa: E731
        sub = dict(ctx, roles={**ctx["roles"], "t": ctx["roles"]["h"], "h": ctx["roles"]["t"]})
        return swap(_scan([swap(a), swap(x)], node.with_attrs(along=""), sub))
    if node.attr("unvisited"):  # a partial order: its -1 padding steps hold the state (Ā = 1, x = 0)
        index = _order_index(node, ctx)
        pad = index < 0
        a = np.where(pad, 1.0, _permute(a, np.maximum(index, 0)))
        x = np.where(pad, 0.0, _permute(x, np.maximum(index, 0)))
        forward = node.with_attrs(order=ORDERS["forward"], unvisited="")
        h = _scan([a, x] + ([h0] if h0 is not None else []), forward, ctx)
        start = np.zeros_like(h[:, :1]) if h0 is None else np.broadcast_to(h0, h[:, :1].shape).astype(h.dtype)
        out = np.broadcast_to(start, (h.shape[0], index.shape[1]) + h.shape[2:]).copy()  # the unlisted positions
        rows = np.broadcast_to(np.where(pad, index.shape[1], index), (h.shape[0],) + index.shape[1:])
        wide = np.concatenate([out, out[:, :1]], axis=1)  # padding steps land on a spare position L
        np.put_along_axis(wide, _gather_index(h, rows), h, axis=1)
        return wide[:, :-1]
    if spans_sequence(node.attr("order")):  # permute, scan forward, unpermute
        index = _order_index(node, ctx)
        a, x = _permute(a, index), _permute(x, index)
        seq = None if seq is None else _permute(seq, index)
        forward = node.with_attrs(order=ORDERS["forward"])
        h = _scan([a, x] + ([h0] if h0 is not None else []) + ([seq] if seq is not None else []),
                  forward.with_attrs(has_h0=h0 is not None), ctx)
        h = _unpermute(h, index)
        if strided(node.attr("order")):  # a strided view's state is 0 off its anchors (its steps past
            index = _anchors(node.attr("order"), ctx)  # the coarse grid only pad the permutation)
            h = np.where(index == np.arange(index.shape[1])[None, :, None, None, None], h, 0)
        return h
    L = ctx["roles"]["t"]
    shape = list(np.broadcast_shapes(a.shape, x.shape))
    shape[1] = L
    dtype = np.result_type(a, x, *( [h0] if h0 is not None else []))
    state_shape = shape[:1] + [1] + shape[2:]
    h = np.zeros(state_shape, dtype) if h0 is None else np.broadcast_to(h0, state_shape).astype(dtype)
    out = np.empty(shape, dtype)
    order = index_map(node.attr("order")).numpy(L)
    at = lambda v, t: v[:, t:t + 1] if v.shape[1] > 1 else v
    for k, t in enumerate(order):
        decay = at(a, t)
        if seq is not None and k > 0:  # a new sequence starts: forget the state
            decay = np.where(at(seq, t) != at(seq, order[k - 1]), 0.0, decay)
        h = decay * h + at(x, t)
        out[:, t:t + 1] = h
    return out


def _order_index(scan, ctx):
    """The time index of a whole-sequence order: a gather's index operand (its last), or a grid order's."""
    return ctx["values"][scan.args[-1]] if is_gather(scan.attr("order")) else _grid_index(scan, ctx)


def _grid_index(scan, ctx):
    """A grid order as a gather index (1, L, heads or 1, 1, 1): channel h takes its group's order."""
    order = index_map(scan.attr("order"))
    return _per_channel(order, order.permutations(ctx["roles"]["t"]), ctx)


def _per_channel(order, rows: np.ndarray, ctx) -> np.ndarray:
    """(groups, L) rows of a grid order, one per group, as (1, L, heads or 1, 1, 1): channel h takes
    its group's row, the group of h being h // (heads // groups), as for any grouped input."""
    if len(rows) == 1:
        return rows.T[None, :, :, None, None]
    heads, groups = ctx["roles"].get("h", 1), ctx["roles"].get("g", 1)
    if groups != len(rows):
        raise IRError(f"scan order {order}: {len(rows)} orders, one per group, but the inputs have {groups} groups")
    return np.repeat(rows, heads // groups, axis=0).T[None, :, :, None, None]


def _anchors(order, ctx) -> np.ndarray:
    """The anchor of every position of a grid order's strided views, per channel (1, L, heads or 1, 1, 1)."""
    H, W = order.grid
    return _per_channel(order, np.stack([anchors(H, W, order.stride(k)) for k in range(len(order.names))]), ctx)


def _upsample(args, node, ctx):
    v = args[0]
    if v.shape[1] == 1:  # time-invariant: the same at every anchor
        return v
    return _permute(v, _anchors(node.attr("order"), ctx))


def _gather_index(v, index):
    """index (1, L, H or 1, 1, 1) broadcast against v: one time index per (batch, step, channel, p, n)."""
    H = max(v.shape[2], index.shape[2])
    return np.broadcast_to(index, (v.shape[0], index.shape[1], H) + v.shape[3:])


def _permute(v, index):
    """v read along a gather order: step k of channel h holds v at time index[k, h]."""
    if v.shape[1] == 1:  # time-invariant: the same at every step
        return v
    v = np.broadcast_to(v, v.shape[:2] + (max(v.shape[2], index.shape[2]),) + v.shape[3:])
    return np.take_along_axis(v, _gather_index(v, index), axis=1)


def _unpermute(h, index):
    out = np.empty_like(h)
    np.put_along_axis(out, _gather_index(h, index), h, axis=1)
    return out


def _last(args, node, ctx):
    scan = ctx["graph"][node.args[0]]
    if scan.attr("unvisited"):  # the state after the last listed position (the initial state if none is)
        index = _order_index(scan, ctx)
        listed = (index >= 0).sum(axis=1, keepdims=True)
        at = np.take_along_axis(index, np.maximum(listed - 1, 0), axis=1)
        at = np.where(listed > 0, at, 0)  # none listed: every position holds the initial state
        return np.take_along_axis(args[0], _gather_index(args[0], at), axis=1)
    if spans_sequence(scan.attr("order")):  # the state after the last step: at time index[L-1] per channel
        h = args[0]
        return np.take_along_axis(h, _gather_index(h, _order_index(scan, ctx)[:, -1:]), axis=1)
    t = index_map(scan.attr("order")).numpy(ctx["roles"]["t"])[-1]
    return args[0][:, t:t + 1]


def _sum(args, node, ctx):
    return args[0].sum(axis=tuple(ROLES.index(r) for r in node.attr("axes")), keepdims=True)


def _expr(args, node, ctx):
    flags = tuple(bool(np.iscomplexobj(v)) for v in args)
    return _expr_fn(node, flags)(*args)


def _discretize(args, node, ctx):
    """A rule part, evaluated as the expr node expand_discretization would make of it."""
    e = expand(get_rule(node.attr("rule")), node.attr("part"))
    return _expr(args, node.with_attrs(expr=e, symbols=("dt", "A")), ctx)


def lag(x: np.ndarray, k: int, L: int, seq: np.ndarray | None = None) -> np.ndarray:
    """x_{t-k} along time of a canonical value (broadcast out to L first), 0 where t-k falls outside
    [0, L) or, given seq_idx `seq` (canonical, over b and t), lies in another sequence."""
    shape = list(np.broadcast_shapes(x.shape, seq.shape if seq is not None else (1,) * 5))
    shape[1] = L
    x = np.broadcast_to(x, shape)
    out = np.zeros(shape, x.dtype)
    lo, hi = max(k, 0), min(L, L + k)  # the steps t whose t - k lies in [0, L)
    if lo >= hi:
        return out
    out[:, lo:hi] = x[:, lo - k:hi - k]
    if seq is not None:
        same = np.zeros((shape[0], L) + (1,) * 3, bool)
        seq = np.broadcast_to(seq, same.shape)
        same[:, lo:hi] = seq[:, lo:hi] == seq[:, lo - k:hi - k]
        out = np.where(same, out, 0)
    return out


def permute(x: np.ndarray, index: np.ndarray, inverse: bool = False) -> np.ndarray:
    """x (canonical) along an order per (batch, channel): step k holds x at time index[b, k, h]; inverse:
    the value at step k goes back to time index[b, k, h]."""
    shape = list(np.broadcast_shapes(x.shape, index.shape[:1] + (1,) + index.shape[2:]))
    shape[1] = index.shape[1]
    x = np.broadcast_to(x, shape)
    idx = np.broadcast_to(index, shape[:3] + [1, 1])
    idx = np.broadcast_to(idx, shape)
    if not inverse:
        return np.take_along_axis(x, idx, axis=1)
    out = np.zeros(shape, x.dtype)
    np.put_along_axis(out, idx, x, axis=1)
    return out


def causal_conv(x: np.ndarray, w: np.ndarray, L: int) -> np.ndarray:
    """Σ_{k≤t} w_k x_{t-k} along time of canonical values, summed tap by tap."""
    shape = list(np.broadcast_shapes(x.shape, w.shape))
    shape[1] = L
    x, w = np.broadcast_to(x, shape), np.broadcast_to(w, shape)  # a time-invariant one: the same at every step
    out = np.zeros(shape, np.result_type(x, w))
    for k in range(L):
        out[:, k:] += w[:, k:k + 1] * x[:, :L - k]
    return out


def pool(x: np.ndarray, mean: bool, L: int) -> np.ndarray:
    """The sum (or mean) over time (axis 1) of a canonical value."""
    out = x.sum(axis=1, keepdims=True)
    return out / L if mean else out


def _lag(args, node, ctx):
    return lag(args[0], node.attr("k"), ctx["roles"]["t"], args[1] if node.attr("reset") else None)


# --- backward-only ops (ssmc.ir.passes.adjoint) ---------------------------------------------

def _decays(scan, ctx):
    """Ā'_k at scan position k (0 where the sequence resets), and the scan order."""
    vals = ctx["values"]
    a = vals[scan.args[0]]
    seq = vals[scan.args[-1]] if scan.attr("reset") else None
    order = index_map(scan.attr("order")).numpy(ctx["roles"]["t"])
    at = lambda v, t: v[:, t:t + 1] if v.shape[1] > 1 else v

    def decay(k):
        d = at(a, order[k])
        if seq is not None and k > 0:
            d = np.where(at(seq, order[k]) != at(seq, order[k - 1]), 0.0, d)
        return d
    return decay, order


def _prev(args, node, ctx):
    scan = ctx["graph"][node.args[0]]
    h, vals = args[0], ctx["values"]
    order = index_map(scan.attr("order")).numpy(ctx["roles"]["t"])
    seq = vals[scan.args[-1]] if scan.attr("reset") else None
    out = np.empty_like(h)
    h0 = vals[scan.args[2]] if scan.attr("has_h0") else 0.0
    out[:, order[0]:order[0] + 1] = np.broadcast_to(h0, out[:, :1].shape)
    for k in range(1, len(order)):
        t, s = order[k], order[k - 1]
        prev = h[:, s:s + 1]
        if seq is not None:  # a new sequence starts from nothing
            prev = np.where(seq[:, t:t + 1] != seq[:, s:s + 1], 0.0, prev)
        out[:, t:t + 1] = prev
    return out


def _adjoint(args, node, ctx):
    scan = ctx["graph"][node.args[0]]
    z, dh = args[0], args[1]
    decay, order = _decays(scan, ctx)
    dtype = np.result_type(z, dh, *args[2:])
    g = np.zeros(z[:, :1].shape, dtype)
    if node.attr("has_dlast"):
        g = g + args[2]
    out = np.empty(z.shape, dtype)
    at = lambda v, t: v[:, t:t + 1] if v.shape[1] > 1 else v
    for k in reversed(range(len(order))):
        if k < len(order) - 1:
            g = np.conj(decay(k + 1)) * g
        g = g + at(dh, order[k])
        out[:, order[k]:order[k] + 1] = g
    return out


def _carry(args, node, ctx):
    adj = ctx["graph"][node.args[0]]
    decay, order = _decays(ctx["graph"][adj.args[0]], ctx)
    return np.conj(decay(0)) * args[0][:, order[0]:order[0] + 1]


def _reduce(args, node, ctx):
    return args[0].sum(axis=tuple(ROLES.index(r) for r in node.attr("axes")), keepdims=True)


def output_value(x: np.ndarray, axes, roles: dict) -> np.ndarray:
    """An output laid out along `axes`; a group axis sums the heads of each group (a gradient), a
    repeat axis sums the channels h that share h % R (the merge of a multi-order scan)."""
    merged = next((a.role for a in axes if a.role in ("g", "r")), None)
    if merged is None:
        return from_canonical(x, axes, roles)
    k = ROLES.index("h")
    size = roles[merged]
    x = np.broadcast_to(x, x.shape[:k] + (roles["h"],) + x.shape[k + 1:])
    # channel h = group * (H/G) + j for groups, = block * R + j for repeats: sum the other factor
    split = (size, roles["h"] // size) if merged == "g" else (roles["h"] // size, size)
    x = x.reshape(x.shape[:k] + split + x.shape[k + 1:]).sum(axis=k + 1 if merged == "g" else k)
    return from_canonical(x, tuple(a if a.role != merged else type(a)(a.symbol, "h") for a in axes),
                          {**roles, "h": size})


SEMANTICS = {
    "input": lambda args, node, ctx: ctx["inputs"][node.attr("name")],
    "const": lambda args, node, ctx: np.array(node.attr("value"), ctx["real"]).reshape((1,) * 5),
    "neg": lambda args, node, ctx: -args[0],
    "exp": lambda args, node, ctx: np.exp(args[0]),
    "sqrt": lambda args, node, ctx: np.sqrt(args[0]),
    "softplus": lambda args, node, ctx: _softplus(args[0]),
    "sigmoid": lambda args, node, ctx: _sigmoid(args[0]),
    "silu": lambda args, node, ctx: args[0] * _sigmoid(args[0]),
    "clip": lambda args, node, ctx: np.clip(args[0], node.attr("lo"), node.attr("hi")),
    "real": lambda args, node, ctx: np.real(args[0]),
    "abs2": lambda args, node, ctx: np.real(args[0] * np.conj(args[0])),
    "add": lambda args, node, ctx: args[0] + args[1],
    "sub": lambda args, node, ctx: args[0] - args[1],
    "mul": lambda args, node, ctx: args[0] * args[1],
    "div": lambda args, node, ctx: args[0] / args[1],
    "complex": lambda args, node, ctx: args[0] + 1j * args[1],
    "discretize": _discretize,
    "expr": _expr,
    "sum": _sum,
    "scan": _scan,
    "last": _last,
    "lag": _lag,
    "permute": lambda args, node, ctx: permute(args[0], args[1], node.attr("inverse")),
    "causal_conv": lambda args, node, ctx: causal_conv(args[0], args[1], ctx["roles"]["t"]),
    "pool": lambda args, node, ctx: pool(args[0], node.attr("mean"), ctx["roles"]["t"]),
    "upsample": _upsample,
    "output": lambda args, node, ctx: args[0],
    "reduce": _reduce,
    "prev": _prev,
    "adjoint": _adjoint,
    "carry": _carry,
    "clip_grad": lambda args, node, ctx: np.where((args[0] >= node.attr("lo")) & (args[0] <= node.attr("hi")),
                                                  args[1], 0.0),
}


def run(graph: Graph, inputs: dict, precision: str = "float64", sizes: dict | None = None) -> dict:
    """Evaluate a (pipelined or raw) graph on NumPy arrays; returns {output name: array}."""
    if precision not in ("float64", "float32"):
        raise ValueError(f"precision must be 'float64' or 'float32', got {precision!r}")
    if not graph.typed:
        graph = run_pipeline(graph)
    real = np.float64 if precision == "float64" else np.float32
    cplx = np.complex128 if precision == "float64" else np.complex64
    arrays = {k: np.asarray(v) for k, v in inputs.items() if v is not None}
    sizes = sizes or bind(graph, arrays)
    roles = role_sizes(graph, sizes)
    canon = {}
    for i in graph.ids("input"):
        n = graph[i]
        x = arrays[n.attr("name")]
        x = x.astype(np.int64 if n.attr("integer") else cplx if n.attr("complex") else real)
        canon[n.attr("name")] = to_canonical(x, n.attr("axes"), roles)
    values, outs = [], {}
    ctx = {"inputs": canon, "roles": roles, "graph": graph, "real": real, "values": values}
    for i, n in enumerate(graph.nodes):
        if n.op not in SEMANTICS:
            raise IRError(f"node %{i} ({n.op}): no NumPy semantics")
        values.append(SEMANTICS[n.op]([values[a] for a in n.args], n, ctx))
        if n.op == "output":
            outs[n.attr("name")] = output_value(values[-1], n.attr("axes"), roles)
    return outs
