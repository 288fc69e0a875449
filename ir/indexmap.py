"""Scan orders: which time index each step of a scan visits, as an index map.

A declared scan names its order ("forward", "reverse", "gather" or a grid order); the canonicalize
pass turns the name into an `IndexMap`, which the backends fold into their index arithmetic, so a
reverse scan reads its inputs through t = L-1-k and nothing is ever flipped or copied.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .grid import NAMED_2D, grid_permutation


@dataclass(frozen=True)
class IndexMap:
    """A scan order over the time axis: position k of the scan reads time index map(k).

    kind "grid": the time axis is an H×W grid (`grid`), scanned along named 2-D orders
    (`names`, see ssmc.ir.grid) — one for all channels, or one per B/C group (a multi-order scan's
    K orders), so no index tensor is read at all.  `strides` (one per name; empty = all 1) makes a
    group's order a strided view: it scans the anchors (s·i, s·j) of the ⌈H/s⌉×⌈W/s⌉ coarse grid
    only, its state is 0 at every other position, and an `upsample` node carries its values to
    the whole s×s block of each cell (ssmc.ir.grid.coarse_shape)."""

    kind: str  # "identity" | "reverse" | "gather" (t = index[k], the scan's last operand) | "grid"
    grid: tuple = ()  # (H, W) of a grid order
    names: tuple = ()  # a grid order's named orders, one per group (or one for every channel)
    strides: tuple = ()  # a grid order's view strides, one per name (empty: all 1)

    def __post_init__(self):
        if self.kind == "grid":
            if len(self.grid) != 2 or any(not isinstance(v, int) or v < 1 for v in self.grid):
                raise ValueError(f"grid order: expected grid=(H, W) of positive ints, got {self.grid!r}")
            if not self.names or any(n not in NAMED_2D for n in self.names):
                raise ValueError(f"grid order: expected names among {list(NAMED_2D)}, got {self.names!r}")
            strides = tuple(self.strides)
            if strides and (len(strides) != len(self.names) or any(
                    not isinstance(s, (int, np.integer)) or isinstance(s, bool) or s < 1 for s in strides)):
                raise ValueError(f"grid order: expected one positive int stride per name, got {strides!r} "
                                 f"for {self.names!r}")
            # all 1 is the plain order: one spelling, so equal orders compare (and hash) equal
            object.__setattr__(self, "strides", () if all(s == 1 for s in strides) else tuple(int(s) for s in strides))

    def stride(self, k: int) -> int:
        """The view stride of group k's order (1: the full grid)."""
        return self.strides[k] if self.strides else 1

    def __str__(self):
        if self.kind == "grid":
            names = [n + (f"/{s}" if s > 1 else "") for n, s in zip(self.names, self.strides or [1] * len(self.names))]
            return f"grid{self.grid[0]}x{self.grid[1]}[{','.join(names)}]"
        return {"identity": "t", "reverse": "L-1-t", "gather": "index[t]"}[self.kind]

    def permutations(self, L: int):
        """The order as a (groups, L) array of time indices (one row for identity/reverse)."""
        if self.kind == "gather":
            raise ValueError("a gather order is read from its index tensor, not computed from L")
        if self.kind == "grid":
            H, W = self.grid
            if H * W != L:
                raise ValueError(f"grid order {self}: H×W = {H * W} is not the length L={L}")
            return np.stack([grid_permutation(H, W, n, self.stride(k)) for k, n in enumerate(self.names)])
        k = np.arange(L)
        return (k if self.kind == "identity" else L - 1 - k)[None]

    def numpy(self, L: int):
        if self.kind == "grid" and len(self.names) > 1:
            raise ValueError(f"grid order {self} has one order per group")
        return self.permutations(L)[0]


def grid_order(H: int, W: int, names, strides=()) -> IndexMap:
    """The index map of named 2-D orders over an H×W grid: one name, or one per B/C group; `strides`
    (one per name) makes the orders with a stride s > 1 strided views (see IndexMap)."""
    return IndexMap("grid", (int(H), int(W)), (names,) if isinstance(names, str) else tuple(names), tuple(strides))


ORDERS = {"forward": IndexMap("identity"), "reverse": IndexMap("reverse"), "gather": IndexMap("gather")}


def spans_sequence(order) -> bool:
    """Is a scan order a permutation of the whole sequence (a gather, or a grid order), as opposed to
    forward/reverse, which a stream of pieces or a single step can follow?"""
    return is_gather(order) or getattr(order, "kind", None) == "grid"


def is_gather(order) -> bool:
    """Is a scan order (a declared name, or an IndexMap after canonicalize) read from an index tensor?"""
    return order == "gather" or getattr(order, "kind", None) == "gather"


def strided(order) -> bool:
    """Is a scan order a grid order with a strided view (multi-scale), read back through `upsample`?"""
    return bool(getattr(order, "strides", ()))


def index_map(order) -> IndexMap:
    """A scan's order as an IndexMap (graphs before canonicalize still name it "forward"/"reverse")."""
    return ORDERS[order] if isinstance(order, str) else order
