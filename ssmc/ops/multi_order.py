"""Scan orders as IR: multi-order scans (Vision Mamba, VMamba's SS2D, RSMamba, Point Cloud Mamba)
declared as one graph and run as one kernel, with no permuted copies.

`multi_order_scan` runs K selective scans over the same sequence, each along its own order (a
permutation of the positions) with its own Δ, A, B, C, D, and sums them:

    out = silu(z) · Σ_k unpermute_k(scan_k(permute_k(inputs_k)))

or, merged by a gate (merge="gated", a gate tensor given in sequence positions):

    out = silu(z) · Σ_k gate_k ⊙ unpermute_k(scan_k(permute_k(inputs_k)))

In the IR the K orders are K blocks of channels (channel h = k·dim + d): Δ, A, D and the bias are
laid out (K·dim, ...) — a reshape, not a copy; B, C and the orders are grouped by k (channel h
reads group h // dim); u and z are shared by every block (an axis of role `r`: channel h reads
h % dim); the output sums the K blocks (its `r` axis); and the scan's order is a gather from the
orders tensor (step k of channel h visits time orders[h // dim, k]) — or, when the orders are named
orders of one H×W grid (scan_orders_2d's), the IR's grid order, which reads no index at all
(ssmc.ir.grid; on Triton, column orders run with the lanes across columns).  The NumPy interpreter
defines it plainly (permute, scan, unpermute); the Triton kernel folds the order into its time
index arithmetic and accumulates the merged output (with a gate: gate_k · y_k, in the same single launch).

The public `multi_order_scan` (argument checks, the torch custom op) is in `dispatch.py`; this is what
it runs.  `multiscale.py` builds MSVMamba's multi-scale scan on it.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ssmc.ir import builder as d
from ssmc.ir.grid import NAMED_2D, grid_permutation, match_grid
from ssmc.ir.indexmap import grid_order
from ssmc.runtime import compile_ssm

from .arguments import expect, shape


def scan_orders_2d(H: int, W: int, names) -> list:
    """The named scan orders of an H×W grid as permutations of its row-major flattening.

    row / col: row-major / column-major; *_rev: the same reversed; snake_row / snake_col: every
    other row (column) reversed, so consecutive steps stay neighbours.  (multi_order_scan
    recognizes these permutations and scans them as the IR's grid orders, no index read.)
    """
    for arg, v in (("H", H), ("W", W)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{arg}: expected a positive integer, got {v!r}")
    if isinstance(names, str):
        names = [names]
    for name in names:
        if name not in NAMED_2D:
            raise ValueError(f"names: unknown 2-D order {name!r}; orders are {list(NAMED_2D)}")
    return [grid_permutation(int(H), int(W), name) for name in names]


MERGES = ("sum", "mean", "concat", "gated")


TIEABLE = ("delta", "A", "B", "C", "D", "delta_bias")


@lru_cache(maxsize=64)
def multi_order_compiled(has_D: bool, has_z: bool, has_bias: bool, softplus: bool, backend: str, merge: str = "sum",
              K: int = 1, tied: frozenset = frozenset(), grid: str = ""):
    """The graph: per-order parameters are K blocks of channels (axis KD, role h) or grouped by order
    (B, C: axis K, role g); a tied one is shared by every block (role r, like u) or ungrouped.  The
    order is a gather from an `orders` input, or, when `grid` ("HxW:name,…", see grid_key) names
    the K orders, the IR's grid order (no index input); "HxW:name,…:stride,…" gives each order a
    view stride (multiscale_scan_2d), the strided orders' results read back through an upsample."""
    m = d.Builder("multi_order_scan")
    ch = lambda name: "dim:r" if name in tied else "KD:h"  # noqa: E731
    u = m.input("u", ("batch", "dim:r", "L"))
    delta = m.input("delta", ("batch", ch("delta"), "L"))
    if has_bias:
        delta = delta + m.input("delta_bias", (ch("delta_bias"),))
    if softplus:
        delta = d.softplus(delta)
    A_bar, B_scale = m.discretize(delta, m.input("A", (ch("A"), "N")), "zoh_euler")
    B, C = (m.input(x, ("batch", "N", "L") if x in tied else ("batch", "K:g", "N", "L")) for x in ("B", "C"))
    order = grid_of_key(grid) if grid else None
    if order is not None:
        h = m.scan(A_bar, B_scale * B * u, order=order)
    else:
        h = m.scan(A_bar, B_scale * B * u, order="gather", index=m.input("orders", ("K:g", "L"), integer=True))
    y = (C * h).sum("n")
    if has_D:
        y = y + m.input("D", (ch("D"),)) * u
    if order is not None and order.strides:  # the strided views' outputs, written to their cells' blocks
        y = m.upsample(y, order)
    if has_z:
        y = y * d.silu(m.input("z", ("batch", "dim:r", "L")))
    if merge == "mean":  # the sum over the K blocks, scaled
        y = y * (1.0 / K)
    if merge == "gated":  # each block weighted by its gate (at sequence positions) before the sum
        y = y * m.input("gate", ("batch", "KD:h", "L"))
    # concat keeps the K blocks (channel k·dim + d); sum and mean add them up (the output's r axis)
    m.output("out", y, ("batch", "KD:h", "L") if merge == "concat" else ("batch", "dim:r", "L"))
    return compile_ssm(m.build(), backend=backend)


def multi_order_graph(K: int = 1, merge: str = "sum", *, D: bool = True, z: bool = True,
                      delta_bias: bool = True, delta_softplus: bool = True):
    """The (optimized) IR graph `multi_order_scan` runs, e.g. to export it with
    `ssmc.export_onnx(graph, sizes={"K": K, "dim": dim, "KD": K * dim, "N": N})`.

    Inputs: u, z (batch, dim, L); delta (batch, KD, L) — multi_order_scan's (batch, K, dim, L)
    flattened, channel k·dim + d; delta_bias, D (KD,); A (KD, N); B, C (batch, K, N, L); orders
    (K, L) integer; gate (batch, KD, L) with merge="gated".  Output `out` (batch, dim, L), or
    (batch, KD, L) with merge="concat".  D, z and delta_bias are inputs when True; K only
    matters for merge="mean" (the 1/K scale)."""
    if merge not in MERGES:
        raise ValueError(f"merge: expected one of {MERGES}, got {merge!r}")
    if not isinstance(K, (int, np.integer)) or isinstance(K, bool) or K < 1:
        raise ValueError(f"K: expected a positive integer, got {K!r}")
    return multi_order_compiled(bool(D), bool(z), bool(delta_bias), bool(delta_softplus), "numpy", merge,
                     int(K) if merge == "mean" else 1).graph


CHECKED: dict = {}  # id of each torch order -> (the tensors, their versions, (stacked tensor, grid key))


def grid_of_key(key: str):
    """The IR grid order a key names: "HxW:name,…" (grid_key's), or "HxW:name,…:stride,…" (strided views)."""
    shape, names, *strides = key.split(":")
    H, W = (int(v) for v in shape.split("x"))
    return grid_order(H, W, names.split(","), [int(v) for v in strides[0].split(",")] if strides else ())


def grid_key(stacked: np.ndarray) -> str:
    """"HxW:name,…" when every order is a named order of one H×W grid (ssmc.ir.grid), else ""."""
    match = match_grid(stacked)
    return "" if match is None else f"{match[0]}x{match[1]}:{','.join(match[2])}"


def orders_array(orders, K: int, L: int, like):
    """(the K orders as one (K, L) int64 array, or tensor on u's device, each checked to be a
    permutation of range(L); their grid key, see grid_key).  Torch orders are checked once (the
    check reads them on the host) and remembered — holding the tensors, so their memory is not
    reused — until one changes (its version counter), so repeated calls and CUDA graph captures
    neither sync nor copy."""
    is_torch = type(like).__module__.startswith("torch")
    rows = list(orders) if isinstance(orders, (list, tuple)) else None
    if is_torch and tracing():
        return _orders_traced(orders if rows is None else rows, K, L, like)
    key = None
    if is_torch and rows is not None and all(type(o).__module__.startswith("torch") for o in rows):
        key = tuple(id(o) for o in rows)
        hit = CHECKED.get(key)
        if hit is not None and all(a is b for a, b in zip(hit[0], rows)) and \
                hit[1] == tuple(o._version for o in rows):
            return hit[2]
    if rows is not None:
        if len(rows) != K:
            raise ValueError(f"orders: expected K={K} orders (one per delta[:, k]), got {len(rows)}")
        rows = [np.asarray(o.detach().cpu() if hasattr(o, "detach") else o) for o in rows]
    else:
        arr = np.asarray(orders.detach().cpu() if hasattr(orders, "detach") else orders)
        if arr.ndim != 2 or arr.shape[0] != K:
            raise ValueError(f"orders: expected K={K} orders of length L={L}, as a list or a (K, L) array; "
                             f"got shape {arr.shape}")
        rows = list(arr)
    for k, o in enumerate(rows):
        if o.ndim != 1 or o.shape[0] != L or o.dtype.kind not in "iu":
            raise ValueError(f"orders[{k}]: expected an integer permutation of range(L={L}), "
                             f"got shape {o.shape} dtype {o.dtype}")
        if not np.array_equal(np.sort(o), np.arange(L)):
            raise ValueError(f"orders[{k}]: not a permutation of range(L={L})")
    stacked = np.stack(rows).astype(np.int64)
    grid = grid_key(stacked)
    if not is_torch:
        return stacked, grid
    import torch
    out = torch.from_numpy(stacked).to(like.device), grid
    if key is not None:
        if len(CHECKED) > 256:
            CHECKED.clear()
        CHECKED[key] = (tuple(orders), tuple(o._version for o in orders), out)
    return out


def tracing() -> bool:
    import torch
    return torch.compiler.is_compiling()


def _orders_traced(orders, K: int, L: int, like):
    """orders_array under torch.compile: shapes checked while tracing, the permutations on the
    device (reading them on the host would break the graph)."""
    import torch
    stacked = torch.stack([torch.as_tensor(o) for o in orders]) if isinstance(orders, list) else torch.as_tensor(orders)
    if stacked.dim() != 2 or tuple(stacked.shape) != (K, L) or stacked.is_floating_point():
        raise ValueError(f"orders: expected K={K} integer permutations of range(L={L}), got shape "
                         f"{tuple(stacked.shape)} dtype {stacked.dtype}")
    stacked = stacked.to(like.device, torch.int64)
    ok = (stacked.sort(dim=1).values == torch.arange(L, device=like.device)).all()
    torch._assert_async(ok, "orders: not a permutation of range(L)")
    return stacked, ""  # the grid orders are not recognized while tracing: a gather


def prepare(u, delta, A, B, C, orders, D, z, delta_bias, gate, merge, tie) -> tuple:
    """multi_order_scan's arguments checked: (the orders as one checked (K, L) array or tensor, their grid
    key, see grid_key)."""
    if merge not in MERGES:
        raise ValueError(f"merge: expected one of {MERGES}, got {merge!r}")
    if (merge == "gated") != (gate is not None):
        raise ValueError("gate: merge='gated' takes a gate of shape (batch, K, dim, L)" if gate is None else
                         f"gate: given with merge={merge!r}; a gate is only used with merge='gated'")
    tied = frozenset([tie] if isinstance(tie, str) else tie)
    if not tied <= set(TIEABLE):
        raise ValueError(f"tie: expected names among {TIEABLE}, got {sorted(tied - set(TIEABLE))}")
    if len(shape(u)) != 3:
        raise ValueError(f"u: expected shape (batch, dim, L), got {shape(u)}")
    batch, dim, L = shape(u)
    K = len(orders) if isinstance(orders, (list, tuple)) else shape(orders)[0] if shape(orders) else 0
    if "delta" not in tied:  # K as delta gives it (the orders are then checked against it)
        if len(shape(delta)) != 4:
            raise ValueError(f"delta: expected shape (batch, K, dim, L), got {shape(delta)}")
        K = shape(delta)[1]
    a_rank = 2 if "A" in tied else 3
    if len(shape(A)) != a_rank:
        raise ValueError(f"A: expected shape {'(dim, N)' if a_rank == 2 else '(K, dim, N)'}, got {shape(A)}")
    N = shape(A)[-1]
    per_order = dict(delta=((batch, K, dim, L), "(batch, K, dim, L)"), A=((K, dim, N), "(K, dim, N)"),
                     B=((batch, K, N, L), "(batch, K, N, L)"), C=((batch, K, N, L), "(batch, K, N, L)"),
                     D=((K, dim), "(K, dim)"), delta_bias=((K, dim), "(K, dim)"))
    shared = dict(delta=((batch, dim, L), "(batch, dim, L), tied"), A=((dim, N), "(dim, N), tied"),
                  B=((batch, N, L), "(batch, N, L), tied"), C=((batch, N, L), "(batch, N, L), tied"),
                  D=((dim,), "(dim,), tied"), delta_bias=((dim,), "(dim,), tied"))
    for name, x in (("delta", delta), ("A", A), ("B", B), ("C", C), ("D", D), ("delta_bias", delta_bias)):
        if x is not None:
            expect(name, x, *(shared if name in tied else per_order)[name])
    if z is not None:
        expect("z", z, (batch, dim, L), "(batch, dim, L)")
    if gate is not None:
        expect("gate", gate, (batch, K, dim, L), "(batch, K, dim, L)")
    return orders_array(orders, K, L, u)


def tied_of(delta, A, B, C, D, delta_bias) -> frozenset:
    """Which parameters of checked multi_order_scan arguments are tied (given without their K axis)."""
    ranks = dict(delta=(delta, 3), A=(A, 2), B=(B, 3), C=(C, 3), D=(D, 1), delta_bias=(delta_bias, 1))
    return frozenset(k for k, (x, r) in ranks.items() if x is not None and len(shape(x)) == r)


def run_multi_order(u, delta, A, B, C, orders, D, z, delta_bias, gate, delta_softplus, merge, backend, grid=""):
    """multi_order_scan on arguments already checked, `orders` the (K, L) int64 array or tensor;
    `grid` their grid key (grid_key) when they are named orders of a grid, which then need no index."""
    batch, dim, L = shape(u)
    K, N = len(grid_of_key(grid).names) if grid else shape(orders)[0], shape(A)[-1]
    tied = tied_of(delta, A, B, C, D, delta_bias)
    channel_params = {k for k, x in (("delta", delta), ("A", A), ("D", D), ("delta_bias", delta_bias)) if x is not None}
    if channel_params <= tied and gate is None:  # the K blocks of channels need one per-order input to exist:
        tied = tied - {"A"}  # A, repeated (K·dim×N, small)
        A = A[None].expand(K, dim, N) if hasattr(A, "expand") else np.broadcast_to(A[None], (K, dim, N))
    if {"B", "C"} <= tied and grid:  # no input grouped by order would tell the grid kernel's blocks apart:
        tied = tied - {"B"}  # B as a (batch, K, N, L) view repeating it with stride 0 along K (no copy)
        B = B[:, None].expand(batch, K, N, L) if hasattr(B, "expand") else np.broadcast_to(B[:, None], (batch, K, N, L))
    fn = multi_order_compiled(D is not None, z is not None, delta_bias is not None, bool(delta_softplus), backend,
                              merge, K if merge == "mean" else 1, tied, grid)

    def flat(name, x, *shape):  # per-order (K, dim, ...) -> (K·dim, ...): a view when contiguous
        return x if x is None or name in tied else x.reshape(*shape)
    out = fn(u=u, delta=flat("delta", delta, batch, K * dim, L), A=flat("A", A, K * dim, N), B=B, C=C,
             **({} if grid else {"orders": orders}), D=flat("D", D, K * dim), z=z,
             delta_bias=flat("delta_bias", delta_bias, K * dim), gate=None if gate is None else
             gate.reshape(batch, K * dim, L))["out"]
    return out.reshape(batch, K, dim, L) if merge == "concat" else out
