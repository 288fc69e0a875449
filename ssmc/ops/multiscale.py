"""MSVMamba's multi-scale 2-D scan: one order at full resolution plus K-1 orders on the stride-2
subsampled grid, upsampled (nearest) and added.  With named orders one graph: the coarse orders are
strided views of the grid order (ssmc.ir.grid), read back through an `upsample` node.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ssmc.ir.grid import NAMED_2D
from ssmc.runtime.arrays import is_torch, needs_grad

from .arguments import expect, shape
from .dispatch import multi_order_scan
from .multi_order import orders_array, run_multi_order, scan_orders_2d, tracing


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
    if not is_torch(like):
        return make(*key)
    return device_copies(make, key, str(like.device))


@lru_cache(maxsize=64)
def device_copies(make, key: tuple, device: str) -> tuple:
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
    """orders_array's checks, its errors naming `arg` (the argument the orders came from) and the grid."""
    try:
        orders_array(orders, K, L, like)
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
    if len(shape(u)) != 3:
        raise ValueError(f"u: expected shape (batch, dim, L), got {shape(u)}")
    batch, dim, L = shape(u)
    if H * W != L:
        raise ValueError(f"grid: H×W = {H}×{W} = {H * W} is not the length L={L} of u")
    if isinstance(coarse_orders, str) or len(coarse_orders) < 1:
        raise ValueError(f"coarse_orders: expected a list of orders of the coarse grid, got {coarse_orders!r}")
    K = 1 + len(coarse_orders)
    expect("delta", delta, (batch, K, dim, L), "(batch, K, dim, L) with K = 1 + len(coarse_orders)")
    if len(shape(A)) != 3:
        raise ValueError(f"A: expected shape (K, dim, N), got {shape(A)}")
    N = shape(A)[2]
    expect("A", A, (K, dim, N), "(K, dim, N) with K = 1 + len(coarse_orders)")
    for name, x in (("B", B), ("C", C)):
        expect(name, x, (batch, K, N, L), "(batch, K, N, L)")
    for name, x in (("D", D), ("delta_bias", delta_bias)):
        if x is not None:
            expect(name, x, (K, dim), "(K, dim)")
    if z is not None:
        expect("z", z, (batch, dim, L), "(batch, dim, L)")
    Hc, Wc = (H + 1) // 2, (W + 1) // 2
    names = [full_order, *coarse_orders]
    tensors = dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias)
    if all(isinstance(o, str) and o in NAMED_2D for o in names) and \
            not (is_torch(u) and (tracing() or needs_grad(tensors))):
        # one graph: the coarse orders are stride-2 views of the grid, their sum upsampled in the kernel
        grid_key = f"{H}x{W}:{','.join(names)}:1{',2' * (K - 1)}"
        return run_multi_order(u, delta, A, B, C, None, D, z, delta_bias, None, delta_softplus, "sum", backend,
                               grid_key)
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
