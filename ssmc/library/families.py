"""Scan-order families: vision, bidirectional and packed-sequence layers as ready calls of the ops.

Each entry names a published family, how its scan orders are made, how the orders' results merge,
which parameters the orders share, and `run`, which calls the op with that family's arguments
(the op does the work; nothing here computes).  Entries are listed by `ssmc list` and got with
`ssmc.library.family(name)`; `ssmc.library.get(name)` stays the accessor of the Spec entries.

    from ssmc.library import family
    y = family("vmamba_ss2d").run(u, delta, A, B, C, grid=(14, 14), D=D, z=z, delta_bias=bias)

Layouts are the ops': `ssmc.ops.multi_order_scan` (u, z (batch, dim, L); delta (batch, K, dim, L);
A (K, dim, N); B, C (batch, K, N, L); D, delta_bias (K, dim); a tied parameter without its K axis),
`multiscale_scan_2d`, `hydra`, `ssd`, `tied_bidirectional`, and the S5 Spec (u (batch, L, H); Λ, Δ
(N,); B (N, H); C (H, N); D (H,)).  Every `run` takes `backend=` ("auto", "numpy" or "triton");
softplus on Δ is on by default, as in these models.  The u of the selective families is one tensor read
along every order: where a model gives each order its own short convolution before the scan (Vim's
conv1d_b) or convolves each permuted sequence (RSMamba), that differs from the model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ssmc import ops
from ssmc.ir.entries import ENTRIES
from ssmc.runtime import cached_compile


@dataclass(frozen=True)
class OrderFamily:
    name: str
    description: str
    orders: str  # how the scan orders (or directions, or resets) are made
    merge: str  # how the orders' results combine into one output
    tying: str  # which parameters the orders share
    op: str  # the op `run` calls
    run: Callable


def _length(u, axis: int = -1) -> int:
    shape = tuple(getattr(u, "shape", ()))
    if len(shape) != 3:
        raise ValueError(f"u: expected a 3-D array, got shape {shape}")
    return shape[axis]


def _grid(grid, L: int) -> tuple:
    """(H, W) of an H×W grid of length L, checked here so the error names `grid`."""
    ok = isinstance(grid, (tuple, list)) and len(grid) == 2 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in grid)
    if not ok or grid[0] * grid[1] != L:
        raise ValueError(f"grid: expected (H, W), positive integers with H×W = L = {L}, got {grid!r}")
    return tuple(int(v) for v in grid)


def _forward_reverse(L: int) -> list:
    return [np.arange(L), np.arange(L)[::-1].copy()]


def _vim(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True, *, backend="auto"):
    return ops.multi_order_scan(u, delta, A, B, C, _forward_reverse(_length(u)), D, z, delta_bias, delta_softplus,
                                merge="mean", backend=backend)


def _vmamba(u, delta, A, B, C, grid, D=None, z=None, delta_bias=None, delta_softplus=True, *, backend="auto"):
    orders = ops.scan_orders_2d(*_grid(grid, _length(u)), ["row", "col", "row_rev", "col_rev"])
    return ops.multi_order_scan(u, delta, A, B, C, orders, D, z, delta_bias, delta_softplus, backend=backend)


def _msvmamba(u, delta, A, B, C, grid, D=None, z=None, delta_bias=None, delta_softplus=True, *, backend="auto"):
    return ops.multiscale_scan_2d(u, delta, A, B, C, _grid(grid, _length(u)), D, z, delta_bias, delta_softplus,
                                  backend=backend)


def _hydra(x, dt, A, B, C, D=None, diag=None, dt_bias=None, dt_softplus=True, *, backend="auto"):
    return ops.hydra(x, dt, A, B, C, D, diag, dt_bias, dt_softplus, backend=backend)


def _bidirectional(entry: str):
    def run(u, log_dt, A_log_re, A_im, B, C, D=None, *, backend="auto", out=None):
        return ops.tied_bidirectional(entry, u=u, log_dt=log_dt, A_log_re=A_log_re, A_im=A_im, B=B, C=C, D=D,
                                      backend=backend, out=out)
    return run


def _pointcloud(u, delta, A, B, C, orders, D=None, z=None, delta_bias=None, delta_softplus=True, *,
                backend="auto"):
    return ops.multi_order_scan(u, delta, A, B, C, orders, D, z, delta_bias, delta_softplus, backend=backend)


def _rsmamba(u, delta, A, B, C, gate, D=None, z=None, delta_bias=None, delta_softplus=True, *, seed=0,
             backend="auto"):
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    L = _length(u)
    orders = _forward_reverse(L) + [np.random.default_rng(int(seed)).permutation(L)]
    return ops.multi_order_scan(u, delta, A, B, C, orders, D, z, delta_bias, delta_softplus, merge="gated",
                                gate=gate, tie=("A", "D", "delta_bias"), backend=backend)


_S5_EPISODES = ENTRIES["s5"].with_(name="s5_episodes", seq_idx=True)


def _s5_episodes(u, log_dt, A_log_re, A_im, B, C, seq_idx, D=None, *, backend="auto", out=None):
    if seq_idx is None:
        raise ValueError("seq_idx: required, (batch, L) integer: the state resets where it changes")
    fn = cached_compile(_S5_EPISODES, backend)
    return fn(u=u, log_dt=log_dt, A_log_re=A_log_re, A_im=A_im, B=B, C=C, D=D, seq_idx=seq_idx, out=out)["out"]


def _mamba2_varlen(x, dt, A, B, C, seq_idx, D=None, z=None, dt_bias=None, dt_softplus=True, *, chunk_size=256,
                   backend="auto"):
    if seq_idx is None:
        raise ValueError("seq_idx: required, (batch, L) integer: sequence k of a packed row has seq_idx k")
    return ops.ssd(x, dt, A, B, C, chunk_size, D, z, dt_bias, seq_idx=seq_idx, dt_softplus=dt_softplus,
                   backend=backend)


_MULTI = "ssmc.ops.multi_order_scan"
FAMILIES = {f.name: f for f in [
    OrderFamily("vim", "Vision Mamba (Zhu et al. 2024): a forward and a backward selective scan of the patch "
                "sequence, each with its own parameters (u and z shared by both)",
                orders="identity and reverse", merge="mean (Vim's if_devide_out: (y_fwd + y_bwd) / 2)",
                tying="none: Δ, A, B, C, D, Δ-bias per direction", op=_MULTI, run=_vim),
    OrderFamily("vmamba_ss2d", "VMamba's SS2D (Liu et al. 2024): four selective scans of an H×W grid",
                orders="scan_orders_2d(H, W, [row, col, row_rev, col_rev])", merge="sum",
                tying="none: Δ, A, B, C, D, Δ-bias per order", op=_MULTI, run=_vmamba),
    OrderFamily("msvmamba", "MSVMamba (Shi et al. 2024): one scan of the full grid plus three scans of the "
                "stride-2 half-resolution grid", orders="row at full resolution; col, row_rev, col_rev on the "
                "⌈H/2⌉×⌈W/2⌉ grid", merge="the half-resolution sum upsampled (nearest) and added",
                tying="none: each of the 4 scans its own parameters", op="ssmc.ops.multiscale_scan_2d",
                run=_msvmamba),
    OrderFamily("hydra", "Hydra (Hwang et al. 2024): quasiseparable bidirectional mixer on Mamba-2's SSD state",
                orders="forward and reverse SSD", merge="each direction shifted one step along itself, summed, "
                "plus (D + diag) ⊙ x with diag the input-dependent diagonal",
                tying="x, A and dt_bias shared; Δ, B, C per direction", op="ssmc.ops.hydra", run=_hydra),
    OrderFamily("s4d_bidirectional", "bidirectional S4D (state-spaces/s4 FFTConv with bidirectional=True, "
                "backward term inclusive): the s4d_zoh Spec run both ways as one kernel",
                orders="identity and reverse (two blocks of channels, one graph)", merge="sum, D·u once",
                tying="Δ, A, B, D shared; C per direction (C (2, dim, N)) or shared (C (dim, N))",
                op="ssmc.ops.tied_bidirectional", run=_bidirectional("s4d_zoh")),
    OrderFamily("s5_bidirectional", "bidirectional S5 (lindermanlab/S5 with bidirectional=True): the s5 Spec "
                "run both ways", orders="forward Spec and its reverse direction (two runs)",
                merge="sum, D·u once", tying="Λ, Δ, B, D shared; C per direction (C (2, H, N)) or shared (C (H, N))",
                op="ssmc.ops.tied_bidirectional", run=_bidirectional("s5")),
    OrderFamily("pointcloud_mamba", "Point Cloud Mamba: selective scans along serializations of a point set",
                orders="given by the caller as index inputs (K permutations of the points, e.g. sorted by a "
                "coordinate or a space-filling-curve code)", merge="sum",
                tying="none: each serialization its own parameters", op=_MULTI, run=_pointcloud),
    OrderFamily("rsmamba", "RSMamba (Chen et al. 2024): one Mamba mixer applied along three paths, merged by "
                "path weights (its dynamic multi-path activation)",
                orders="identity, reverse and a random permutation drawn from `seed` (RSMamba draws a new one "
                "per forward pass: pass a new seed)",
                merge="gated: Σ_k gate[:, k] ⊙ y_k (gate (batch, 3, dim, L), e.g. softmax path weights broadcast)",
                tying="A, D, Δ-bias shared (one mixer); Δ, B, C per path (each path's projections of its input)",
                op=_MULTI, run=_rsmamba),
    OrderFamily("s5_episodes", "S5 for reinforcement learning: the state resets at episode starts",
                orders="forward; the state resets where seq_idx (batch, L) changes",
                merge="none (one scan)", tying="one set of parameters", op="ssmc.compile(Spec s5 + seq_idx)",
                run=_s5_episodes),
    OrderFamily("mamba2_varlen", "packed variable-length Mamba-2: several sequences in one row, no padding",
                orders="forward; the state resets where seq_idx (batch, L) changes (sequence k has seq_idx k)",
                merge="none (one scan)", tying="one set of parameters", op="ssmc.ops.ssd(..., seq_idx=)",
                run=_mamba2_varlen),
]}


def family(name: str) -> OrderFamily:
    if name not in FAMILIES:
        raise ValueError(f"no scan-order family {name!r}; families are {sorted(FAMILIES)}")
    return FAMILIES[name]
