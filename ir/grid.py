"""Named scan orders of an H×W grid (VMamba's cross-scan and its snake variants), defined once.

Each order is a permutation of the grid's row-major positions: step k of the scan visits position
order[k].  `row`/`col` walk rows/columns, `*_rev` are those reversed, and `snake_row`/`snake_col`
reverse every other row (column) so consecutive steps stay neighbours.

Orders that walk columns ("transposed": col, col_rev, snake_col) are, seen from memory, a walk
with a stride of W; the Triton backend lowers them with the lanes across columns instead
(`backends/triton/grid.py`), so it needs each order's parts: which axis it walks first and
in which directions.

A strided view (multi-scale orders, MSVMamba) scans the ⌈H/s⌉×⌈W/s⌉ grid of every s-th row and
column along a named order; an `upsample` node then writes each coarse value to its s×s block.
"""
from __future__ import annotations

import numpy as np

NAMED_2D = ("row", "col", "row_rev", "col_rev", "snake_row", "snake_col")
TRANSPOSED = frozenset({"col", "col_rev", "snake_col"})  # walk columns: consecutive steps are W apart


def grid_permutation(H: int, W: int, name: str, stride: int = 1) -> np.ndarray:
    """The named order of an H×W grid as an int64 permutation of range(H·W).

    With a stride s > 1 (a strided view, see coarse_shape) the order walks the coarse grid: its
    first ⌈H/s⌉·⌈W/s⌉ steps visit the cells' anchors (s·i, s·j) in the named order of the coarse
    grid, and the remaining positions follow in row-major order (steps a scan of the view never
    takes: they only make the map a permutation)."""
    if name not in NAMED_2D:
        raise ValueError(f"unknown 2-D order {name!r}; orders are {list(NAMED_2D)}")
    Hc, Wc = coarse_shape(H, W, stride)
    grid = (stride * np.arange(Hc, dtype=np.int64))[:, None] * W + stride * np.arange(Wc, dtype=np.int64)
    lines = grid.T if name in TRANSPOSED else grid  # the rows (or columns) the order walks
    if name.startswith("snake"):
        lines = np.stack([r[::-1] if i % 2 else r for i, r in enumerate(lines)])
    order = lines.ravel()
    order = order[::-1] if name.endswith("_rev") else order
    if stride > 1:
        order = np.concatenate([order, np.setdiff1d(np.arange(H * W), order)])
    return np.ascontiguousarray(order)


def kept_orders(keep, H: int, W: int, names=("row", "row_rev", "col", "col_rev")) -> np.ndarray:
    """Partial gather orders (a scan with unvisited="initial") over the tokens `keep` marks: keep is
    (batch, H·W) boolean, row-major; row (b, k) lists sample b's kept positions in the named order k
    of the grid, then -1 padding.  Returns (batch, len(names), H·W) int64 — VMamba's four SS2D
    directions by default, as token pruning leaves them."""
    keep = np.asarray(keep, dtype=bool)
    if keep.ndim != 2 or keep.shape[1] != H * W:
        raise ValueError(f"keep: expected a (batch, H·W={H * W}) boolean mask, got shape {keep.shape}")
    out = np.full((keep.shape[0], len(names), H * W), -1, np.int64)
    for k, name in enumerate(names):
        perm = grid_permutation(H, W, name)
        for b in range(keep.shape[0]):
            kept = perm[keep[b, perm]]
            out[b, k, :len(kept)] = kept
    return out


def coarse_shape(H: int, W: int, stride: int) -> tuple:
    """(⌈H/s⌉, ⌈W/s⌉): the grid of a stride-s view of an H×W grid.  Coarse cell (i, j) is the s×s
    block of positions (s·i + a, s·j + b) inside the grid; its anchor (s·i, s·j) is where the view
    reads, and every position of the block is where an upsampled value of the cell is written
    (nearest-neighbour upsampling, as torch's interpolate(mode="nearest") to (H, W))."""
    return -(-H // stride), -(-W // stride)


def anchors(H: int, W: int, stride: int) -> np.ndarray:
    """The anchor of every position of an H×W grid in its stride-s view (int64, length H·W)."""
    rows, cols = np.meshgrid(np.arange(H) // stride * stride, np.arange(W) // stride * stride, indexing="ij")
    return (rows * W + cols).ravel()


def match_grid(orders: np.ndarray):
    """(H, W, names) if every row of the (K, L) array `orders` is a named order of one H×W grid,
    else None.  The candidate widths come from each order's first steps, so this is a few
    comparisons of length L, not a search over every factorization of L."""
    K, L = orders.shape
    widths = set()
    for o in orders:
        if L > 1:
            widths.update(int(w) for w in (o[1], o[0] - o[1]) if 0 < w <= L)
        breaks = np.flatnonzero(np.diff(o) != 1)  # snake_row / row: the first row's end
        if len(breaks):
            widths.add(int(breaks[0]) + 1)
    for W in sorted(widths):
        if L % W:
            continue
        H = L // W
        names = []
        for o in orders:
            name = next((n for n in NAMED_2D if np.array_equal(o, grid_permutation(H, W, n))), None)
            if name is None:
                break
            names.append(name)
        else:
            return H, W, tuple(names)
    return None
