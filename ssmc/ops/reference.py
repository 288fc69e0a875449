"""The drop-in ops as plain PyTorch loops, one time step at a time: the reference.

Written from the model definitions (mamba_ssm's selective_scan_fn and mamba_chunk_scan_combined), sharing
no code with ssmc's IR.  Tests run them in float64 (NumPy inputs through tests/reference_forms.py) and
differentiate them with torch autograd; `ssmc bench` times them on the GPU as what users fall back to.
Nothing in ssmc imports this module.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def softplus(x):
    """log(1 + e^x) with no overflow and no threshold (torch's softplus returns x above 20)."""
    return torch.logaddexp(x, torch.zeros_like(x))


def _per_step(M, t, batch, dim):
    """B or C at step t as (batch, dim, N): from (dim, N), (batch, N, L) or (batch, G, N, L), channel d of
    group d // (dim // G)."""
    if M.dim() == 2:
        return M[None].expand(batch, -1, -1)
    if M.dim() == 3:
        return M[:, None, :, t].expand(-1, dim, -1)
    return M[:, :, :, t].repeat_interleave(dim // M.shape[1], dim=1)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, h0=None,
                   reverse=False):
    """Mamba-1.  u, delta, z (batch, dim, L); A (dim, N) real or complex; B, C (dim, N), (batch, N, L) or
    (batch, G, N, L); D, delta_bias (dim,); h0 (batch, dim, N).  Returns (out, last state):

        delta <- softplus(delta + delta_bias)     (the bias and softplus when given)
        h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t          (t descending with `reverse`)
        y_t = C_t · h_t    (2 Re(C_t · h_t) for a complex A)
        out = (y + D u) silu(z)
    """
    batch, dim, L = u.shape
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = softplus(delta)
    cplx = A.is_complex()
    h = torch.zeros(batch, dim, A.shape[1], dtype=A.dtype if cplx else u.dtype, device=u.device) if h0 is None else h0
    ys = [None] * L
    for t in (reversed(range(L)) if reverse else range(L)):
        dt = delta[:, :, t, None]
        h = torch.exp(dt * A) * h + dt * _per_step(B, t, batch, dim) * u[:, :, t, None]
        y = (_per_step(C, t, batch, dim) * h).sum(-1)
        ys[t] = 2 * y.real if cplx else y
    y = torch.stack(ys, -1)
    if D is not None:
        y = y + D[:, None] * u
    if z is not None:
        y = y * F.silu(z)
    return y, h


def ssd(x, dt, A, B, C, D=None, z=None, dt_bias=None, initial_states=None, seq_idx=None, dt_softplus=False,
        dt_limit=None):
    """Mamba-2.  x, z (batch, L, H, P); dt (batch, L, H); A (H,); B, C (batch, L, G, N), head h of group
    h // (H // G); D (H,) or (H, P); initial_states (batch, H, P, N); seq_idx (batch, L).  Returns
    (out, final states):

        dt <- clamp(softplus(dt + dt_bias), dt_limit)     (each when given)
        h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_tᵀ,   h_{t-1} = 0 where seq_idx changes at t
        out = (C_t · h_t + D x_t) silu(z_t)
    """
    batch, L, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    if dt_bias is not None:
        dt = dt + dt_bias
    if dt_softplus:
        dt = softplus(dt)
    if dt_limit is not None:
        dt = dt.clamp(*dt_limit)
    h = x.new_zeros(batch, H, P, N) if initial_states is None else initial_states
    ys = []
    for t in range(L):
        if seq_idx is not None and t > 0:
            keep = (seq_idx[:, t] == seq_idx[:, t - 1]).to(x.dtype)[:, None, None, None]
            h = h * keep
        Bt = B[:, t].repeat_interleave(H // G, dim=1)  # (batch, H, N)
        Ct = C[:, t].repeat_interleave(H // G, dim=1)
        dA = torch.exp(dt[:, t] * A)  # (batch, H)
        h = dA[:, :, None, None] * h + (dt[:, t, :, None, None] * x[:, t, :, :, None]) * Bt[:, :, None, :]
        ys.append((h * Ct[:, :, None, :]).sum(-1))
    y = torch.stack(ys, 1)
    if D is not None:
        y = y + (D[:, None] if D.dim() == 1 else D) * x
    if z is not None:
        y = y * F.silu(z)
    return y, h
