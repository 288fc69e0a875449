"""Hydra (Hwang et al. 2024): a bidirectional quasiseparable matrix mixer on Mamba-2's SSD state.

Hydra mixes a sequence with a quasiseparable matrix M: a causal SSD below the diagonal, an
anti-causal SSD above it, and a free input-dependent diagonal,

    y = shift(SSD_fwd(x)) + flip(shift(SSD_bwd(flip(x)))) + δ ⊙ x

The two directions share x and A (tied) and have their own Δ, B, C (untied).  `shift` moves each
direction's output one step along its own direction (y_t takes the forward output at t-1, zero at
t = 0; the backward output at t+1, zero at t = L-1), so neither scan's own diagonal term
(C_t·B_t)Δ_t x_t reaches the output.  The diagonal is δ_t = D + diag_t: a static skip D per head
plus a per-token, per-head term (Hydra's `fc_D(x)`, a linear map of the layer's input, computed by
the caller since its weights belong to the layer).  This follows the public Hydra module
(goombalab/hydra, hydra/modules/hydra.py): it runs the SSD without D and adds
x ⊙ (fc_D(x) + D) after the shifts.  Entry by entry, for head h (group g of h) and s ≠ t:

    M[t, s] = (C_fwd[t-1] · B_fwd[s]) Δ_fwd[s] Π_{r=s+1}^{t-1} exp(Δ_fwd[r] A)      (s < t)
    M[t, s] = (C_bwd[t+1] · B_bwd[s]) Δ_bwd[s] Π_{r=t+1}^{s-1} exp(Δ_bwd[r] A)      (s > t)
    M[t, t] = D + diag[t]

Both directions are `ssmc.ops.ssd` scans: the forward one is the drop-in op, the backward one
the same Spec with the IR's reverse order (the index map t ↦ L-1-t folded into the kernel, so x,
Δ, B and C are never flipped or copied).  The shifts and the diagonal are elementwise NumPy/torch
around them, so on the Triton backend the whole mixer is differentiable with torch autograd.
"""
from __future__ import annotations

import numpy as np

from ssmc.runtime.arrays import is_torch

from .arguments import arrays, expect, flag, limits, real_floats, shape
from .dispatch import ssd
from .ssd import run_reverse_ssd


def _combine(fwd, bwd, x, D, diag):
    """shift(fwd, +1) + shift(bwd, -1) + D·x + diag·x (a term None is absent), in the SSD outputs'
    dtype (x's, as mamba_ssm returns with an fp32 D).  One output buffer written by a slice copy and
    in-place adds: shifted copies made with torch.cat and then summed (in fp32, promoted by D) took
    several times as long as an SSD launch (BENCHMARKS.md, "Hydra")."""
    if is_torch(fwd):
        import torch
        y = torch.empty_like(fwd)
        y[:, :1] = 0
    else:
        y = np.zeros_like(fwd)
    y[:, 1:] = fwd[:, :-1]  # y_t takes the forward output at t-1 ...
    y[:, :-1] += bwd[:, 1:]  # ... and the backward output at t+1
    weights = [] if D is None else [D[:, None] if len(shape(D)) == 1 else D]
    weights += [] if diag is None else [diag[..., None]]
    for w in weights:
        if is_torch(y):
            y.addcmul_(w, x)  # w·x in fp32, rounded once into y
        else:
            y += (w * x).astype(y.dtype)
    return y


def hydra(x, dt, A, B, C, D=None, diag=None, dt_bias=None, dt_softplus=False, dt_limit=(0.0, float("inf")), *,
          chunk_size: int = 256, backend: str = "auto"):
    """Hydra's bidirectional mixer (see the module docstring for the matrix it applies).

    x: (batch, L, H, P), shared by both directions; A: (H,), shared.
    dt: (batch, L, 2, H); B, C: (batch, L, 2, G, N): [:, :, 0] the forward direction's, [:, :, 1]
    the backward direction's, both in sequence positions (a view of an in_proj output split as
    (…, 2, H) needs no copy).  dt_bias: (H,), shared by both directions (as in Hydra); then
    softplus if `dt_softplus`, then clamped to `dt_limit`.
    D: (H,) or (H, P), the static diagonal; diag: (batch, L, H), the input-dependent diagonal
    (Hydra's fc_D(x)).  Either may be None (no such term).
    `chunk_size` is passed to the SSD (its result does not depend on it).
    Returns y (batch, L, H, P) in x's dtype (an fp32 D is applied in fp32 and rounded once, as mamba_ssm
    does).  On the Triton backend, differentiable with torch autograd.
    """
    arrays(x=x, dt=dt, A=A, B=B, C=C, D=D, diag=diag, dt_bias=dt_bias)
    real_floats(D=D, diag=diag)  # (applied here, outside the scans that check the rest)
    if len(shape(x)) != 4:
        raise ValueError(f"x: expected shape (batch, L, H, P), got {shape(x)}")
    batch, L, H, P = shape(x)
    expect("A", A, (H,), "(H,)")
    expect("dt", dt, (batch, L, 2, H), "(batch, L, 2, H)")
    if len(shape(B)) != 5:
        raise ValueError(f"B: expected shape (batch, L, 2, G, N), got {shape(B)}")
    G, N = shape(B)[3:]
    if H % G:
        raise ValueError(f"B: {G} groups do not divide the H={H} heads of x")
    expect("B", B, (batch, L, 2, G, N), "(batch, L, 2, G, N)")
    expect("C", C, (batch, L, 2, G, N), "(batch, L, 2, G, N)")
    if D is not None and shape(D) not in ((H,), (H, P)):
        raise ValueError(f"D: expected shape (H,) = {(H,)} or (H, P) = {(H, P)}, got {shape(D)}")
    if diag is not None:
        expect("diag", diag, (batch, L, H), "(batch, L, H)")
    if dt_bias is not None:
        expect("dt_bias", dt_bias, (H,), "(H,)")
    scan = dict(dt_bias=dt_bias, dt_softplus=flag("dt_softplus", dt_softplus), dt_limit=limits("dt_limit", dt_limit))
    fwd = ssd(x, dt[:, :, 0], A, B[:, :, 0], C[:, :, 0], chunk_size, **scan, backend=backend)
    # (chunk_size: checked by ssd)
    bwd = run_reverse_ssd(x, dt[:, :, 1], A, B[:, :, 1], C[:, :, 1], **scan, backend=backend)
    return _combine(fwd, bwd, x, D, diag)
