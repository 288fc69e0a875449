"""Named scan orders of an H×W grid (VMamba's cross-scan and its snake variants), defined once.

Each order is a permutation of the grid's row-major positions: step k of the scan visits position
order[k].  `row`/`col` walk rows/columns, `*_rev` are those reversed, and `snake_row`/`snake_col`
reverse every other row (column) so consecutive steps stay neighbours.

Orders that walk columns ("transposed": col, col_rev, snake_col) are, seen from memory, a walk
with a stride of W; the Triton backend lowers them with the lanes across columns instead
(`backends/triton/grid.py`), so it needs each order's parts: which axis it walks first and
in which directions.
"""
from __future__ import annotations

import numpy as np

NAMED_2D = ("row", "col", "row_rev", "col_rev", "snake_row", "snake_col")
TRANSPOSED = frozenset({"col", "col_rev", "snake_col"})  # walk columns: consecutive steps are W apart


def grid_permutation(H: int, W: int, name: str) -> np.ndarray:
    """The named order of an H×W grid as an int64 permutation of range(H·W)."""
    if name not in NAMED_2D:
        raise ValueError(f"unknown 2-D order {name!r}; orders are {list(NAMED_2D)}")
    grid = np.arange(H * W, dtype=np.int64).reshape(H, W)
    lines = grid.T if name in TRANSPOSED else grid  # the rows (or columns) the order walks
    if name.startswith("snake"):
        lines = np.stack([r[::-1] if i % 2 else r for i, r in enumerate(lines)])
    order = lines.ravel()
    return np.ascontiguousarray(order[::-1] if name.endswith("_rev") else order)


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
