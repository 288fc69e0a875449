"""Mamba-3 SISO with mamba_ssm's signature (`mamba3_siso_combined`), run as the declared graph.

Per head: an angle state θ_t = (θ_{t-1} + tanh(Angles_t)·π·DT_t) mod 2π over the first A pairs of
dims (2i, 2i+1) of q and k (biases added first), which it rotates; the exponential-trapezoidal update
S_t = α_t S_{t-1} + β_t v_{t-1} k_{t-1}ᵀ + γ_t v_t k_tᵀ with α = exp(ADT), λ = sigmoid(Trap),
β = (1 - λ)·DT·α, γ = λ·DT; y = S_t q_t + D v, gated by silu(Z).

The graph (the library's `mamba3_siso` variant, `ssmc.ir.variants`) holds q and k as complex pairs:
the state is v ⊗ conj(k) and the readout Re Σ S q, so the rotation of both is one complex product
each; the angle recurrence is a scan whose mod 2π is taken only on the returned state (the rotation
is 2π-periodic).  This module converts mamba_ssm's
real layouts to and from those pairs.  No chunked (tensor-core) lowering yet: it runs as stages of
recurrent kernels; `cu_seqlens` is refused.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from ssmc.ir.variants import mamba3_siso as mamba3_graph
from ssmc.runtime import compile_ssm
from ssmc.runtime.arrays import is_torch

from .arguments import arrays, expect, flag, shape


@lru_cache(maxsize=16)
def _compiled(has_D: bool, has_Z: bool, has_states: bool, backend: str):
    return compile_ssm(mamba3_graph(has_D, has_Z, has_states), backend=backend)  # (the library's variant)


def _pairs(x):
    """(..., N) real -> (..., N/2) complex: dims 2i, 2i+1 as re, im."""
    return x[..., 0::2] + 1j * x[..., 1::2]


def _dims(c):
    """(..., N/2) complex -> (..., N) real, pair i at dims 2i, 2i+1."""
    if is_torch(c):
        import torch
        return torch.stack([c.real, c.imag], -1).flatten(-2)
    return np.stack([c.real, c.imag], -1).reshape(c.shape[:-1] + (2 * c.shape[-1],))


def _pad_last(x, n: int):
    """x zero-padded along its last axis to n."""
    if is_torch(x):
        import torch
        return torch.nn.functional.pad(x, (0, n - x.shape[-1]))
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, n - x.shape[-1])])


def _float(x):
    """A real array in the arithmetic the graph runs: float32 torch (float64 stays), float64 NumPy."""
    if is_torch(x):
        import torch
        return x if x.dtype == torch.float64 else x.float()
    return np.asarray(x, np.float64)


def mamba3_siso(Q, K, V, ADT, DT, Trap, Q_bias, K_bias, Angles, D=None, Z=None, Input_States=None,
                chunk_size: int = 64, return_final_states: bool = False, cu_seqlens=None, *, backend: str = "auto"):
    """mamba_ssm's `mamba3_siso_combined` (see the module docstring for what it computes).

    Q, K: (batch, L, nheads_qk, N), shared by nheads / nheads_qk consecutive heads; V: (batch, L, nheads, P);
    ADT, DT, Trap: (batch, nheads, L); Q_bias, K_bias: (nheads, N); Angles: (batch, L, nheads, A), A ≤ N/2
    and even (pairs past A are not rotated); D: (nheads,); Z: (batch, L, nheads, P).  Input_States:
    (angle (batch, nheads, A), ssm (batch, nheads, P, N), k (batch, nheads, N), the last step's rotated
    k, v (batch, nheads, P)), or None (all zero).  Returns out (batch, L, nheads, P), in V's dtype, and
    with return_final_states also (angle, ssm, k, v) after the last step.  `chunk_size` is accepted
    for the signature (the result does not depend on it); `cu_seqlens` (packed sequences) is refused.
    On the Triton backend it is differentiable with torch autograd.
    """
    if cu_seqlens is not None:
        raise NotImplementedError("mamba3_siso: cu_seqlens (packed sequences) is not supported yet; pass each "
                                  "sequence as its own batch row")
    arrays(Q=Q, K=K, V=V, ADT=ADT, DT=DT, Trap=Trap, Q_bias=Q_bias, K_bias=K_bias, Angles=Angles, D=D, Z=Z)
    if len(shape(V)) != 4:
        raise ValueError(f"V: expected shape (batch, L, nheads, P), got {shape(V)}")
    batch, L, H, P = shape(V)
    if len(shape(Q)) != 4:
        raise ValueError(f"Q: expected shape (batch, L, nheads_qk, N), got {shape(Q)}")
    Hqk, N = shape(Q)[2:]
    if N % 2 or H % Hqk:
        raise ValueError(f"Q: expected an even N dividing into rotary pairs and nheads_qk dividing nheads={H}, "
                         f"got shape {shape(Q)}")
    expect("Q", Q, (batch, L, Hqk, N), "(batch, L, nheads_qk, N)")
    expect("K", K, (batch, L, Hqk, N), "(batch, L, nheads_qk, N)")
    for name, x in (("ADT", ADT), ("DT", DT), ("Trap", Trap)):
        expect(name, x, (batch, H, L), "(batch, nheads, L)")
    expect("Q_bias", Q_bias, (H, N), "(nheads, N)")
    expect("K_bias", K_bias, (H, N), "(nheads, N)")
    if len(shape(Angles)) != 4 or shape(Angles)[:3] != (batch, L, H) or shape(Angles)[3] > N // 2 \
            or shape(Angles)[3] % 2:
        raise ValueError(f"Angles: expected shape (batch, L, nheads, A) = ({batch}, {L}, {H}, A) with A even and "
                         f"at most N/2 = {N // 2}, got {shape(Angles)}")
    A = shape(Angles)[3]
    if D is not None:
        expect("D", D, (H,), "(nheads,)")
    if Z is not None:
        expect("Z", Z, (batch, L, H, P), "(batch, L, nheads, P)")
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive int, got {chunk_size!r}")
    return_final_states = flag("return_final_states", return_final_states)
    args = dict(Q=_pairs(_float(Q)), K=_pairs(_float(K)), V=V, ADT=ADT, DT=DT, Trap=Trap,
                Q_bias=_pairs(_float(Q_bias)), K_bias=_pairs(_float(K_bias)), Angles=_pad_last(Angles, N // 2))
    if D is not None:
        args["D"] = D
    if Z is not None:
        args["Z"] = Z
    if Input_States is not None:
        if not isinstance(Input_States, (tuple, list)) or len(Input_States) != 4:
            raise ValueError("Input_States: expected a tuple (angle, ssm, k, v) of 4 arrays, got "
                             f"{type(Input_States).__name__}")
        angle, ssm, k, v = Input_States
        arrays(**{"Input_States[0]": angle, "Input_States[1]": ssm, "Input_States[2]": k, "Input_States[3]": v})
        expect("Input_States[0]", angle, (batch, H, A), "(batch, nheads, A)")
        expect("Input_States[1]", ssm, (batch, H, P, N), "(batch, nheads, P, N)")
        expect("Input_States[2]", k, (batch, H, N), "(batch, nheads, N)")
        expect("Input_States[3]", v, (batch, H, P), "(batch, nheads, P)")
        ssm, k_conj = _float(ssm), _pairs(_float(k)).conj()  # the state's form: v ⊗ conj(k)
        args.update(angle_state=_pad_last(_float(angle), N // 2), ssm_state=ssm[..., 0::2] - 1j * ssm[..., 1::2],
                    vk_state=_float(v)[..., :, None] * k_conj[..., None, :])
    res = _compiled(D is not None, Z is not None, Input_States is not None, backend)(**args)
    out = res["out"]
    out = out.to(V.dtype) if is_torch(out) else out.astype(np.asarray(V).dtype, copy=False)
    if not return_final_states:
        return out
    theta = res["angle"] % (2 * math.pi)
    k_pairs = _repeat_heads(_pairs(_float(K[:, -1])), H // Hqk)  # the last step's k, biased and rotated
    k_last = _dims((k_pairs + _pairs(_float(K_bias))) * _exp_i(theta))
    return out, theta[..., :A], _dims(res["ssm"].conj()), k_last, V[:, -1]  # (ssm: S[2j] = Re, S[2j+1] = -Im)


def _repeat_heads(x, times: int):
    """(batch, Hqk, ...) -> (batch, Hqk·times, ...): each qk head read by `times` consecutive heads."""
    if is_torch(x):
        return x.repeat_interleave(times, dim=1)
    return np.repeat(x, times, axis=1)


def _exp_i(theta):
    if is_torch(theta):
        import torch
        return torch.polar(torch.ones_like(theta), theta)
    return np.exp(1j * theta)


__all__ = ["mamba3_siso"]
