"""Independent float64 PyTorch loop references for gradient tests (torch autograd differentiates them).

Written from the model definitions (mamba_ssm's selective_scan_fn and mamba_chunk_scan_combined
semantics), one time step at a time, sharing no code with ssmc.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _per_step(M, t, batch, dim):
    """B or C at step t as (batch, dim, N): (dim, N), (batch, N, L) or (batch, G, N, L)."""
    if M.dim() == 2:
        return M[None].expand(batch, -1, -1)
    if M.dim() == 3:
        return M[:, None, :, t].expand(-1, dim, -1)
    return M[:, :, :, t].repeat_interleave(dim // M.shape[1], dim=1)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, h0=None,
                   reverse=False):
    """Mamba-1: u, delta, z (batch, dim, L); A (dim, N) real or complex; returns (out, last_state)."""
    batch, dim, L = u.shape
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
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
    """Mamba-2: x, z (batch, L, H, P); dt (batch, L, H); A (H,); B, C (batch, L, G, N); D (H,) or (H, P);
    initial_states (batch, H, P, N); seq_idx (batch, L).  Returns (out, final_states)."""
    batch, L, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    if dt_bias is not None:
        dt = dt + dt_bias
    if dt_softplus:
        dt = F.softplus(dt)
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
