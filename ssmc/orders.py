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

`multiscale_scan_2d` (MSVMamba) scans an H×W grid along one order at full resolution and the others
on the stride-2 subsampled grid, upsampled (nearest) and added: with named orders one graph, the
coarse orders strided views of the grid order read back through an `upsample` node.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from .compiler import _is_torch, _needs_grad, compile

from .ir.grid import NAMED_2D, grid_permutation, match_grid
from .ir.indexmap import grid_order


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
def _compiled(has_D: bool, has_z: bool, has_bias: bool, softplus: bool, backend: str, merge: str = "sum",
              K: int = 1, tied: frozenset = frozenset(), grid: str = ""):
    """The graph: per-order parameters are K blocks of channels (axis KD, role h) or grouped by order
    (B, C: axis K, role g); a tied one is shared by every block (role r, like u) or ungrouped.  The
    order is a gather from an `orders` input, or, when `grid` ("HxW:name,…", see grid_key) names
    the K orders, the IR's grid order (no index input); "HxW:name,…:stride,…" gives each order a
    view stride (multiscale_scan_2d), the strided orders' results read back through an upsample."""
    from ssmc.ir import builder as d
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
    return compile(m.build(), backend=backend)


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
    return _compiled(bool(D), bool(z), bool(delta_bias), bool(delta_softplus), "numpy", merge,
                     int(K) if merge == "mean" else 1).graph


def _shape(x) -> tuple:
    return tuple(getattr(x, "shape", ()))


def _expect(name, x, want: tuple, labels: str):
    if _shape(x) != want:
        raise ValueError(f"{name}: expected shape {labels} = {want}, got {_shape(x)}")


_CHECKED: dict = {}  # id of each torch order -> (the tensors, their versions, (stacked tensor, grid key))


def grid_of_key(key: str):
    """The IR grid order a key names: "HxW:name,…" (grid_key's), or "HxW:name,…:stride,…" (strided views)."""
    shape, names, *strides = key.split(":")
    H, W = (int(v) for v in shape.split("x"))
    return grid_order(H, W, names.split(","), [int(v) for v in strides[0].split(",")] if strides else ())


def grid_key(stacked: np.ndarray) -> str:
    """"HxW:name,…" when every order is a named order of one H×W grid (ssmc.ir.grid), else ""."""
    match = match_grid(stacked)
    return "" if match is None else f"{match[0]}x{match[1]}:{','.join(match[2])}"


def _orders_array(orders, K: int, L: int, like):
    """(the K orders as one (K, L) int64 array, or tensor on u's device, each checked to be a
    permutation of range(L); their grid key, see grid_key).  Torch orders are checked once (the
    check reads them on the host) and remembered — holding the tensors, so their memory is not
    reused — until one changes (its version counter), so repeated calls and CUDA graph captures
    neither sync nor copy."""
    is_torch = type(like).__module__.startswith("torch")
    rows = list(orders) if isinstance(orders, (list, tuple)) else None
    if is_torch and _tracing():
        return _orders_traced(orders if rows is None else rows, K, L, like)
    key = None
    if is_torch and rows is not None and all(type(o).__module__.startswith("torch") for o in rows):
        key = tuple(id(o) for o in rows)
        hit = _CHECKED.get(key)
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
        if len(_CHECKED) > 256:
            _CHECKED.clear()
        _CHECKED[key] = (tuple(orders), tuple(o._version for o in orders), out)
    return out


def _tracing() -> bool:
    import torch
    return torch.compiler.is_compiling()


def _orders_traced(orders, K: int, L: int, like):
    """_orders_array under torch.compile: shapes checked while tracing, the permutations on the
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


def multi_order_scan(u, delta, A, B, C, orders, D=None, z=None, delta_bias=None, delta_softplus=False, *,
                     merge: str = "sum", gate=None, tie=(), backend: str = "auto", _direct: bool = False):
    """K selective scans of one sequence along K orders, summed (see the module docstring).

    u, z: (batch, dim, L), shared by every order; delta: (batch, K, dim, L); A: (K, dim, N);
    B, C: (batch, K, N, L); D, delta_bias: (K, dim); orders: K permutations of range(L) (NumPy or
    torch integer arrays, or one (K, L) array).  Each B_k, C_k, delta_k is given in sequence
    positions and read along order k.  `merge`: "sum" (the default) or "mean" of the K results, shape
    (batch, dim, L); "concat", shape (batch, K, dim, L); or "gated": Σ_k gate[:, k] ⊙ result_k, shape
    (batch, dim, L), with `gate` (batch, K, dim, L) in sequence positions (only with merge="gated").
    `tie`: the parameters shared by every order (any of "delta", "A", "B", "C", "D", "delta_bias"),
    given without their K axis — delta (batch, dim, L), A (dim, N), B/C (batch, N, L), D/delta_bias
    (dim,) — as a bidirectional S4/S5-style layer ties them; Vision Mamba ties none.  A tied
    parameter is one tensor in the IR read by every order (no copies; except that when Δ, A, D and the
    bias are all tied, A is repeated K times — K·dim×N — so the graph keeps its K blocks of channels,
    and that with B and C both tied on named grid orders B enters as a view repeating it along K with
    stride 0, so the grid kernel can tell the orders' blocks apart); its gradient sums the orders.
    On the Triton backend it is differentiable (torch autograd; the backward is
    `ssmc.orders_backward`).
    """
    if merge not in MERGES:
        raise ValueError(f"merge: expected one of {MERGES}, got {merge!r}")
    if (merge == "gated") != (gate is not None):
        raise ValueError("gate: merge='gated' takes a gate of shape (batch, K, dim, L)" if gate is None else
                         f"gate: given with merge={merge!r}; a gate is only used with merge='gated'")
    tied = frozenset([tie] if isinstance(tie, str) else tie)
    if not tied <= set(TIEABLE):
        raise ValueError(f"tie: expected names among {TIEABLE}, got {sorted(tied - set(TIEABLE))}")
    if len(_shape(u)) != 3:
        raise ValueError(f"u: expected shape (batch, dim, L), got {_shape(u)}")
    batch, dim, L = _shape(u)
    K = len(orders) if isinstance(orders, (list, tuple)) else _shape(orders)[0] if _shape(orders) else 0
    if "delta" not in tied:  # K as delta gives it (the orders are then checked against it)
        if len(_shape(delta)) != 4:
            raise ValueError(f"delta: expected shape (batch, K, dim, L), got {_shape(delta)}")
        K = _shape(delta)[1]
    a_rank = 2 if "A" in tied else 3
    if len(_shape(A)) != a_rank:
        raise ValueError(f"A: expected shape {'(dim, N)' if a_rank == 2 else '(K, dim, N)'}, got {_shape(A)}")
    N = _shape(A)[-1]
    per_order = dict(delta=((batch, K, dim, L), "(batch, K, dim, L)"), A=((K, dim, N), "(K, dim, N)"),
                     B=((batch, K, N, L), "(batch, K, N, L)"), C=((batch, K, N, L), "(batch, K, N, L)"),
                     D=((K, dim), "(K, dim)"), delta_bias=((K, dim), "(K, dim)"))
    shared = dict(delta=((batch, dim, L), "(batch, dim, L), tied"), A=((dim, N), "(dim, N), tied"),
                  B=((batch, N, L), "(batch, N, L), tied"), C=((batch, N, L), "(batch, N, L), tied"),
                  D=((dim,), "(dim,), tied"), delta_bias=((dim,), "(dim,), tied"))
    for name, x in (("delta", delta), ("A", A), ("B", B), ("C", C), ("D", D), ("delta_bias", delta_bias)):
        if x is not None:
            _expect(name, x, *(shared if name in tied else per_order)[name])
    if z is not None:
        _expect("z", z, (batch, dim, L), "(batch, dim, L)")
    if gate is not None:
        _expect("gate", gate, (batch, K, dim, L), "(batch, K, dim, L)")
    orders, grid = _orders_array(orders, K, L, u)
    from .ops import _custom_op
    op = _custom_op(backend, _direct, u, delta, A, B, C, D, z, delta_bias, gate)
    if op is not None:  # torch tensors on Triton: one custom op, with autograd (ssmc.torch_ops)
        return op.multi_order_scan(u, delta, A, B, C, orders, D, z, delta_bias, gate, bool(delta_softplus), merge,
                                   grid)
    return _run(u, delta, A, B, C, orders, D, z, delta_bias, gate, delta_softplus, merge, backend, grid)


def tied_of(delta, A, B, C, D, delta_bias) -> frozenset:
    """Which parameters of checked multi_order_scan arguments are tied (given without their K axis)."""
    ranks = dict(delta=(delta, 3), A=(A, 2), B=(B, 3), C=(C, 3), D=(D, 1), delta_bias=(delta_bias, 1))
    return frozenset(k for k, (x, r) in ranks.items() if x is not None and len(_shape(x)) == r)


def _run(u, delta, A, B, C, orders, D, z, delta_bias, gate, delta_softplus, merge, backend, grid=""):
    """multi_order_scan on arguments already checked, `orders` the (K, L) int64 array or tensor;
    `grid` their grid key (grid_key) when they are named orders of a grid, which then need no index."""
    batch, dim, L = _shape(u)
    K, N = len(grid_of_key(grid).names) if grid else _shape(orders)[0], _shape(A)[-1]
    tied = tied_of(delta, A, B, C, D, delta_bias)
    channel_params = {k for k, x in (("delta", delta), ("A", A), ("D", D), ("delta_bias", delta_bias)) if x is not None}
    if channel_params <= tied and gate is None:  # the K blocks of channels need one per-order input to exist:
        tied = tied - {"A"}  # A, repeated (K·dim×N, small)
        A = A[None].expand(K, dim, N) if hasattr(A, "expand") else np.broadcast_to(A[None], (K, dim, N))
    if {"B", "C"} <= tied and grid:  # no input grouped by order would tell the grid kernel's blocks apart:
        tied = tied - {"B"}  # B as a (batch, K, N, L) view repeating it with stride 0 along K (no copy)
        B = B[:, None].expand(batch, K, N, L) if hasattr(B, "expand") else np.broadcast_to(B[:, None], (batch, K, N, L))
    fn = _compiled(D is not None, z is not None, delta_bias is not None, bool(delta_softplus), backend, merge,
                   K if merge == "mean" else 1, tied, grid)

    def flat(name, x, *shape):  # per-order (K, dim, ...) -> (K·dim, ...): a view when contiguous
        return x if x is None or name in tied else x.reshape(*shape)
    out = fn(u=u, delta=flat("delta", delta, batch, K * dim, L), A=flat("A", A, K * dim, N), B=B, C=C,
             **({} if grid else {"orders": orders}), D=flat("D", D, K * dim), z=z,
             delta_bias=flat("delta_bias", delta_bias, K * dim), gate=None if gate is None else
             gate.reshape(batch, K * dim, L))["out"]
    return out.reshape(batch, K, dim, L) if merge == "concat" else out


def _grid_order(order, H: int, W: int, arg: str, like):
    """A named 2-D order of the H×W grid (on `like`'s device), or a given permutation of range(H·W)
    (checked later)."""
    if isinstance(order, str):
        if order not in NAMED_2D:
            raise ValueError(f"{arg}: unknown 2-D order {order!r}; orders are {list(NAMED_2D)}")
        return _on_device_of(like, scan_orders_2d, H, W, order)[0]
    return order


def _on_device_of(like, make, *key):
    """make(*key) — NumPy index arrays — as they are, or for a torch `like` as tensors on its device,
    made and copied once per (key, device) and then reused: the same tensor objects every call, so
    _orders_array's check is remembered and no call after the first copies from the host."""
    if not _is_torch(like):
        return make(*key)
    return _device_copies(make, key, str(like.device))


@lru_cache(maxsize=64)
def _device_copies(make, key: tuple, device: str) -> tuple:
    import torch
    return tuple(torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in make(*key))


def _coarse_maps(H: int, W: int) -> tuple:
    """(sub, up) of the stride-2 view of an H×W grid: the full-grid position of each coarse cell
    (row-major), and the coarse cell of each full-grid position (nearest upsampling)."""
    Wc = (W + 1) // 2
    rows, cols = np.meshgrid(np.arange(0, H, 2), np.arange(0, W, 2), indexing="ij")
    sub = (rows * W + cols).ravel()
    rows, cols = np.meshgrid(np.arange(H) // 2, np.arange(W) // 2, indexing="ij")
    return sub, (rows * Wc + cols).ravel()


def _check_orders(arg: str, orders, K: int, L: int, like, where: str) -> None:
    """_orders_array's checks, its errors naming `arg` (the argument the orders came from) and the grid."""
    try:
        _orders_array(orders, K, L, like)
    except ValueError as e:
        prefix = "orders[0]" if arg == "full_order" else "orders"
        raise ValueError(f"{arg}{str(e)[len(prefix):]} (the {where})") from None


def _silu(z):
    if type(z).__module__.startswith("torch"):
        import torch
        return torch.nn.functional.silu(z)
    return 0.5 * z * (1.0 + np.tanh(0.5 * z))  # z·sigmoid(z), without overflow


def multiscale_scan_2d(u, delta, A, B, C, grid, D=None, z=None, delta_bias=None, delta_softplus=False, *,
                       full_order="row", coarse_orders=("col", "row_rev", "col_rev"), backend: str = "auto"):
    """MSVMamba's multi-scale 2-D scan: one order at full resolution plus K-1 orders on the
    half-resolution grid, upsampled and added.

    The sequence is an H×W grid (`grid` = (H, W), L = H·W, row-major).  Branch 0 scans the full
    grid along `full_order`; branches 1…K-1 scan the stride-2 subsampled grid — the cells (2i, 2j),
    an ⌈H/2⌉×⌈W/2⌉ grid, odd H and W included — along `coarse_orders` (named orders of the coarse
    grid, or permutations of its row-major positions), and their sum is upsampled back to H×W by
    nearest neighbour (cell (i, j) takes coarse cell (i//2, j//2), which equals torch's
    interpolate(mode="nearest") to size (H, W)):

        out = silu(z) · (scan_0(u) + upsample(Σ_{k≥1} scan_k(subsample(u))))

    Layouts are multi_order_scan's with K = 1 + len(coarse_orders), every per-position input at
    full resolution: u, z (batch, dim, L); delta (batch, K, dim, L); A (K, dim, N);
    B, C (batch, K, N, L); D, delta_bias (K, dim).  The coarse branches read u, delta, B and C at
    the subsampled cells (so their values elsewhere are unused).  Each scan_k is a selective scan
    with its own Δ, A, B, C, D.  With named orders both scales are one graph (one launch on Triton):
    the coarse orders are stride-2 views of the grid (ssmc.ir.grid), which read the inputs at the
    anchors in place, and an `upsample` node writes their results to each 2×2 cell.  A coarse order
    given as a permutation, torch tensors that require grad (the views' backward is not derived) and
    torch.compile tracing take two multi_order_scan calls around gathers instead (differentiable on the
    Triton backend, as multi_order_scan is).  Returns (batch, dim, L).
    """
    if not (isinstance(grid, (tuple, list)) and len(grid) == 2):
        raise ValueError(f"grid: expected (H, W), got {grid!r}")
    H, W = grid
    for arg, v in (("H", H), ("W", W)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"grid: {arg} must be a positive integer, got {v!r}")
    if len(_shape(u)) != 3:
        raise ValueError(f"u: expected shape (batch, dim, L), got {_shape(u)}")
    batch, dim, L = _shape(u)
    if H * W != L:
        raise ValueError(f"grid: H×W = {H}×{W} = {H * W} is not the length L={L} of u")
    if isinstance(coarse_orders, str) or len(coarse_orders) < 1:
        raise ValueError(f"coarse_orders: expected a list of orders of the coarse grid, got {coarse_orders!r}")
    K = 1 + len(coarse_orders)
    _expect("delta", delta, (batch, K, dim, L), "(batch, K, dim, L) with K = 1 + len(coarse_orders)")
    if len(_shape(A)) != 3:
        raise ValueError(f"A: expected shape (K, dim, N), got {_shape(A)}")
    N = _shape(A)[2]
    _expect("A", A, (K, dim, N), "(K, dim, N) with K = 1 + len(coarse_orders)")
    for name, x in (("B", B), ("C", C)):
        _expect(name, x, (batch, K, N, L), "(batch, K, N, L)")
    for name, x in (("D", D), ("delta_bias", delta_bias)):
        if x is not None:
            _expect(name, x, (K, dim), "(K, dim)")
    if z is not None:
        _expect("z", z, (batch, dim, L), "(batch, dim, L)")
    Hc, Wc = (H + 1) // 2, (W + 1) // 2
    names = [full_order, *coarse_orders]
    tensors = dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias)
    if all(isinstance(o, str) and o in NAMED_2D for o in names) and \
            not (_is_torch(u) and (_tracing() or _needs_grad(tensors))):
        # one graph: the coarse orders are stride-2 views of the grid, their sum upsampled in the kernel
        grid_key = f"{H}x{W}:{','.join(names)}:1{',2' * (K - 1)}"
        return _run(u, delta, A, B, C, None, D, z, delta_bias, None, delta_softplus, "sum", backend, grid_key)
    # checked here, so that errors name the argument; multi_order_scan gets the same row objects, whose
    # check (for torch rows) it finds remembered
    full = [_grid_order(full_order, H, W, "full_order", u)]
    coarse = [_grid_order(o, Hc, Wc, f"coarse_orders[{k}]", u) for k, o in enumerate(coarse_orders)]
    _check_orders("full_order", full, 1, L, u, f"{H}×{W} grid")
    _check_orders("coarse_orders", coarse, K - 1, Hc * Wc, u, f"{Hc}×{Wc} coarse grid")
    sub, up = _on_device_of(u, _coarse_maps, H, W)
    first, rest = slice(0, 1), slice(1, K)  # slices of the K axis: views
    part = lambda x, ks: None if x is None else x[ks]  # noqa: E731  ((K, dim) parameters)
    y = multi_order_scan(u, delta[:, first], A[first], B[:, first], C[:, first], full, part(D, first), z,
                         part(delta_bias, first), delta_softplus, backend=backend)
    yc = multi_order_scan(u[..., sub], delta[:, rest][..., sub], A[rest], B[:, rest][..., sub],
                          C[:, rest][..., sub], coarse, part(D, rest), None, part(delta_bias, rest),
                          delta_softplus, backend=backend)[..., up]
    return y + (yc if z is None else _silu(z) * yc)
