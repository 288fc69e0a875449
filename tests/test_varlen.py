"""Packed variable-length batches (cu_seqlens, return_varlen_states): each sequence's outputs and end state
equal the float64 reference loop run on that sequence alone, on both backends, through autograd too."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ssmc import ops
from ssmc.ops import reference

from conftest import assert_close

BACKENDS = ["numpy", "triton"]
DEV = "cuda" if torch.cuda.is_available() else "cpu"  # Triton: the GPU where there is one
LENGTHS = [5, 1, 0, 9, 3]  # an empty sequence and a one-step one among them


def _gen(seed):
    g = torch.Generator().manual_seed(seed)
    return lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).to(DEV)


def _cu(lengths):
    return torch.tensor(np.concatenate([[0], np.cumsum(lengths)]), dtype=torch.int32, device=DEV)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ssd_varlen_states_and_outputs(backend):
    r = _gen(0)
    T, H, P, G, N = sum(LENGTHS), 4, 2, 2, 3
    x, dt, z, B, C = r(1, T, H, P), r(1, T, H), r(1, T, H, P), r(1, T, G, N), r(1, T, G, N)
    A, D, bias = -torch.rand(H, dtype=torch.float64, device=DEV) - 0.1, r(H), r(H)
    kw = dict(D=D, z=z, dt_bias=bias, dt_softplus=True, dt_limit=(0.01, 2.0))
    f32 = {k: v.float() if torch.is_tensor(v) else v for k, v in kw.items()}
    out, final, states = ops.ssd(x.float(), dt.float(), A.float(), B.float(), C.float(), 16, cu_seqlens=_cu(LENGTHS),
                                 return_final_states=True, return_varlen_states=True, backend=backend, **f32)
    assert states.shape == (len(LENGTHS), H, P, N)
    start = 0
    for s, n in enumerate(LENGTHS):
        sl = slice(start, start + n)
        start += n
        if not n:  # an empty sequence ends in the zero state
            assert not states[s].any()
            continue
        part = {k: (v[:, sl] if k == "z" else v) for k, v in kw.items()}
        want, h = reference.ssd(x[:, sl], dt[:, sl], A, B[:, sl], C[:, sl], **part)
        assert_close(out[:, sl], want, 2e-5, f"out of sequence {s}")
        assert_close(states[s], h[0], 2e-5, f"state of sequence {s}")
    assert_close(final[0], states[-1], 2e-5, "final state: the last sequence's")
    packed = ops.ssd(x.float(), dt.float(), A.float(), B.float(), C.float(), 16, cu_seqlens=_cu(LENGTHS),
                     backend=backend, **f32)
    assert_close(packed, out, 2e-5, "the packed run (resets) and the padded run agree")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("grouped", [False, True])
def test_selective_scan_varlen(backend, grouped):
    r = _gen(1)
    T, dim, N = sum(LENGTHS), 4, 3
    u, delta, z = r(1, dim, T), r(1, dim, T), r(1, dim, T)
    bc = (1, 2, N, T) if grouped else (1, N, T)
    B, C = r(*bc), r(*bc)
    A, D, bias = -torch.rand(dim, N, dtype=torch.float64, device=DEV) - 0.1, r(dim), r(dim)
    out, last, states = ops.selective_scan(u, delta, A, B, C, D, z, bias, True, True, cu_seqlens=_cu(LENGTHS),
                                           return_varlen_states=True, backend=backend)
    start = 0
    for s, n in enumerate(LENGTHS):
        sl = slice(start, start + n)
        start += n
        if not n:
            assert not states[s].any()
            continue
        want, h = reference.selective_scan(u[..., sl], delta[..., sl], A, B[..., sl], C[..., sl], D, z[..., sl], bias,
                                           True)
        assert_close(out[..., sl], want, 1e-10, f"out of sequence {s}")
        assert_close(states[s], h[0], 1e-10, f"state of sequence {s}")
    assert_close(last[0], states[-1], 1e-10)


def test_varlen_gradients_flow_to_the_packed_inputs():
    r = _gen(2)
    T, dim, N = sum(LENGTHS), 3, 2
    u = r(1, dim, T).requires_grad_()
    delta, B, C = r(1, dim, T).abs(), r(1, N, T), r(1, N, T)
    A = -torch.rand(dim, N, dtype=torch.float64, device=DEV) - 0.1
    out, states = ops.selective_scan(u, delta, A, B, C, cu_seqlens=_cu(LENGTHS), return_varlen_states=True,
                                     backend="triton")
    (out.sin().sum() + states.square().sum()).backward()
    want = torch.zeros_like(u)
    start = 0
    for n in LENGTHS:
        if n:
            piece = u.detach()[..., start:start + n].clone().requires_grad_()
            y, h = reference.selective_scan(piece, delta[..., start:start + n], A, B[..., start:start + n],
                                            C[..., start:start + n])
            (y.sin().sum() + h.square().sum()).backward()
            want[..., start:start + n] = piece.grad
        start += n
    assert_close(u.grad, want, 1e-9)


@pytest.mark.parametrize("change, exc, msg", [
    (dict(cu_seqlens=torch.tensor([0, 3, 2, 18])), ValueError, r"cu_seqlens: expected offsets from 0 to the packed"),
    (dict(cu_seqlens=torch.tensor([0, 3, 17])), ValueError, r"cu_seqlens: expected offsets from 0 to the packed"),
    (dict(cu_seqlens=torch.tensor([0.0, 18.0])), TypeError, r"cu_seqlens: expected an integer"),
    (dict(cu_seqlens=torch.tensor([18])), ValueError, r"cu_seqlens: expected shape \(num_seqs \+ 1,\)"),
    (dict(return_varlen_states=True), ValueError, r"return_varlen_states: the states of packed sequences need"),
    (dict(cu_seqlens=torch.tensor([0, 18]), initial_states=torch.zeros(1, 4, 2, 3)), ValueError,
     r"initial_states: not taken with cu_seqlens"),
    (dict(cu_seqlens=torch.tensor([0, 5, 18]), seq_idx=torch.zeros(1, 18, dtype=torch.int32)), ValueError,
     r"seq_idx: must change exactly where cu_seqlens starts a sequence"),
])
def test_varlen_arguments_are_checked(change, exc, msg):
    r = _gen(3)
    args = dict(x=r(1, 18, 4, 2).float(), dt=r(1, 18, 4).float(), A=-torch.rand(4), B=r(1, 18, 2, 3).float(),
                C=r(1, 18, 2, 3).float(), chunk_size=16)
    with pytest.raises(exc, match=msg):
        ops.ssd(**args, **change, backend="numpy")


def test_varlen_needs_a_batch_of_one():
    r = _gen(4)
    with pytest.raises(ValueError, match=r"cu_seqlens: the sequences are packed in a batch of one, got batch 2"):
        ops.selective_scan(r(2, 3, 6), r(2, 3, 6), -torch.rand(3, 2, dtype=torch.float64), r(2, 2, 6), r(2, 2, 6),
                           cu_seqlens=torch.tensor([0, 6]), backend="numpy")
