"""ssmc.ops.mamba3_siso (mamba_ssm's mamba3_siso_combined) against a float64 loop written from Mamba-3's
equations in mamba_ssm's real layout — θ mod 2π per step on the first A pairs, dims (2i, 2i+1) rotated,
biases added first, S (P, N) updated with the lagged v kᵀ term, y = S q + D v gated by silu(Z) — with
initial states, GQA heads and final states; its autograd gives the reference gradients."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ssmc.ops import mamba3_siso

from conftest import DEVICES, assert_close


def loop_ref(Q, K, V, ADT, DT, Trap, Q_bias, K_bias, Angles, D=None, Z=None, Input_States=None):
    batch, L, H, P = V.shape
    N, A = Q.shape[-1], Angles.shape[-1]
    rep = H // Q.shape[2]
    if Input_States is None:
        theta = torch.zeros(batch, H, A, dtype=V.dtype)
        S, k_prev, v_prev = (torch.zeros(batch, H, P, N, dtype=V.dtype), torch.zeros(batch, H, N, dtype=V.dtype),
                             torch.zeros(batch, H, P, dtype=V.dtype))
    else:
        theta, S, k_prev, v_prev = Input_States
    out = []
    for t in range(L):
        theta = torch.remainder(theta + torch.tanh(Angles[:, t]) * math.pi * DT[:, :, t, None], 2 * math.pi)
        c, s = torch.cos(theta), torch.sin(theta)

        def rotate(x):  # the first A pairs (2i, 2i+1) by θ_i
            a, b = x[..., 0:2 * A:2], x[..., 1:2 * A:2]
            turned = torch.stack([a * c - b * s, a * s + b * c], -1).flatten(-2)
            return torch.cat([turned, x[..., 2 * A:]], -1)
        q = rotate(Q[:, t].repeat_interleave(rep, 1) + Q_bias)
        k = rotate(K[:, t].repeat_interleave(rep, 1) + K_bias)
        alpha, lam, dt = torch.exp(ADT[:, :, t]), torch.sigmoid(Trap[:, :, t]), DT[:, :, t]
        beta, gamma = ((1 - lam) * dt * alpha)[..., None, None], (lam * dt)[..., None, None]
        outer_prev, outer = v_prev[..., None] * k_prev[:, :, None], V[:, t, ..., None] * k[:, :, None]  # v kᵀ
        S = alpha[..., None, None] * S + beta * outer_prev + gamma * outer
        y = (S * q[:, :, None]).sum(-1)
        if D is not None:
            y = y + D[:, None] * V[:, t]
        if Z is not None:
            y = y * torch.nn.functional.silu(Z[:, t])
        out.append(y)
        k_prev, v_prev = k, V[:, t]
    return torch.stack(out, 1), (theta, S, k_prev, v_prev)


def inputs(rng, batch=2, L=6, H=4, Hqk=2, P=3, N=8, A=2, states=False, D=True, Z=True):
    x = dict(Q=rng.standard_normal((batch, L, Hqk, N)), K=rng.standard_normal((batch, L, Hqk, N)),
             V=rng.standard_normal((batch, L, H, P)), ADT=-rng.uniform(0.05, 1.0, (batch, H, L)),
             DT=rng.uniform(0.05, 0.5, (batch, H, L)), Trap=rng.standard_normal((batch, H, L)),
             Q_bias=rng.standard_normal((H, N)), K_bias=rng.standard_normal((H, N)),
             Angles=rng.standard_normal((batch, L, H, A)))
    if D:
        x["D"] = rng.standard_normal(H)
    if Z:
        x["Z"] = rng.standard_normal((batch, L, H, P))
    if states:
        x["Input_States"] = (rng.uniform(0, 2 * math.pi, (batch, H, A)), rng.standard_normal((batch, H, P, N)),
                             rng.standard_normal((batch, H, N)), rng.standard_normal((batch, H, P)))
    return x


def as_torch(x, device="cpu", grad=False):
    conv = lambda v: torch.tensor(v, device=device, requires_grad=grad)  # noqa: E731
    return {k: tuple(conv(s) for s in v) if k == "Input_States" else conv(v) for k, v in x.items()}


@pytest.mark.parametrize("states, D, Z, A", [(False, True, True, 2), (True, False, True, 4), (True, True, False, 0)])
def test_numpy_forward_and_final_states(rng, states, D, Z, A):
    x = inputs(rng, L=int(rng.integers(2, 8)), A=A, states=states, D=D, Z=Z)
    want, want_states = loop_ref(**as_torch(x))
    out, *got_states = mamba3_siso(**x, return_final_states=True, backend="numpy")
    assert_close(out, want, 1e-11, "out")
    for name, g, w in zip(("angle", "ssm", "k", "v"), got_states, want_states):
        if w.numel():
            assert_close(g, w, 1e-11, name)
    assert_close(mamba3_siso(**x, backend="numpy"), want, 1e-11, "out alone")


@pytest.mark.parametrize("device", DEVICES)
def test_triton_forward_and_gradients(rng, device):
    x = inputs(rng, states=True)
    leaves = as_torch(x, device, grad=True)
    flat = [v for k, v in leaves.items() if k != "Input_States"] + list(leaves["Input_States"])
    want, want_states = loop_ref(**leaves)
    ct = torch.randn_like(want)
    want_g = torch.autograd.grad((want * ct).sum() + want_states[1].sum(), flat)
    out, angle, ssm, k, v = mamba3_siso(**leaves, return_final_states=True, backend="triton")
    assert_close(out.detach(), want.detach(), 1e-10, "out")
    assert_close(ssm.detach(), want_states[1].detach(), 1e-10, "ssm")
    got = torch.autograd.grad((out * ct).sum() + ssm.sum(), flat)
    for k_, g, w in zip(list(leaves)[:-1] + ["angle0", "ssm0", "k0", "v0"], got, want_g):
        assert_close(g, w, 1e-9, f"grad {k_}")


def test_bad_arguments_are_named(rng):
    x = inputs(rng)
    with pytest.raises(ValueError, match=r"Angles: expected shape \(batch, L, nheads, A\) = \(2, 6, 4, A\) with A even "
                                         r"and at most N/2 = 4, got \(2, 6, 4, 6\)"):
        mamba3_siso(**dict(x, Angles=np.zeros((2, 6, 4, 6))), backend="numpy")
    with pytest.raises(ValueError, match=r"K_bias: expected shape \(nheads, N\)"):
        mamba3_siso(**dict(x, K_bias=np.zeros((3, 8))), backend="numpy")
    with pytest.raises(NotImplementedError, match=r"cu_seqlens \(packed sequences\) is not supported yet"):
        mamba3_siso(**x, cu_seqlens=np.array([0, 6], np.int32), backend="numpy")
    with pytest.raises(ValueError, match=r"Input_States: expected a tuple \(angle, ssm, k, v\) of 4 arrays"):
        mamba3_siso(**x, Input_States=(np.zeros((2, 4, 2)),), backend="numpy")


def test_two_calls_chained_by_their_states_equal_one_call(rng):
    """The final states of a prefix, passed as Input_States, continue the sequence exactly."""
    x = inputs(rng, L=7, A=4)
    full, *end = mamba3_siso(**x, return_final_states=True, backend="numpy")
    timed = {"Q": 1, "K": 1, "V": 1, "Angles": 1, "Z": 1, "ADT": 2, "DT": 2, "Trap": 2}

    def part(sl):
        return {k: (v[:, sl] if timed.get(k) == 1 else v[:, :, sl]) if k in timed else v for k, v in x.items()}
    first, *mid = mamba3_siso(**part(slice(0, 3)), return_final_states=True, backend="numpy")
    second, *last = mamba3_siso(**part(slice(3, 7)), Input_States=tuple(mid), return_final_states=True,
                                backend="numpy")
    assert_close(np.concatenate([first, second], 1), full, 1e-12, "out")
    for name, g, w in zip(("angle", "ssm", "k", "v"), last, end):
        assert_close(g, w, 1e-12, name)


def test_bf16_inputs_as_mamba_ssm_takes_them(rng):
    """Q, K, V, Angles, Trap and Z in bf16 (ADT, DT, biases, states in fp32): fp32 arithmetic, out in bf16."""
    x = inputs(rng, states=True)
    low = ("Q", "K", "V", "Z", "Angles", "Trap")
    t = {k: tuple(torch.tensor(s, dtype=torch.float32) for s in v) if k == "Input_States" else
         torch.tensor(v, dtype=torch.bfloat16 if k in low else torch.float32) for k, v in x.items()}
    out, angle, ssm, k, v = mamba3_siso(**t, return_final_states=True, backend="triton")
    want, want_states = loop_ref(**{n: tuple(s.double() for s in a) if n == "Input_States" else a.double()
                                    for n, a in t.items()})
    assert out.dtype == torch.bfloat16 and ssm.dtype == torch.float32
    assert_close(out.double(), want, 1e-2, "out (bf16 rounding)")
    assert_close(ssm, want_states[1], 1e-5, "ssm")
