"""Serving-grade decode (selective_state_update as vLLM and SGLang call it): L decode steps equal the
sequence op's float64 loop (ssmc.ops.reference), with state_batch_indices and padded slots, a state in
its own dtype, complex A, dt_limit — and clear errors for every new argument."""
from __future__ import annotations

import pytest
import torch

from ssmc import ops
from ssmc.ops import reference

from conftest import assert_close

BACKENDS = ["numpy", "triton"]
DEV = "cuda" if torch.cuda.is_available() else "cpu"  # Triton: the GPU where there is one
TOL = {torch.float32: 2e-5, torch.float64: 2e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}


def _gen(seed):
    g = torch.Generator().manual_seed(seed)
    return lambda *s, **k: torch.randn(*s, generator=g, dtype=torch.float64, **k)


def _cache(batch_rows, shape, dtype, seed=0):
    """A cache of 7 slots, NaN everywhere: the rows of `batch_rows` zeroed (a fresh sequence in each)."""
    cache = torch.full((7,) + shape, float("nan"), dtype=dtype, device=DEV)
    idx = torch.tensor(batch_rows, device=DEV)
    cache[idx[idx >= 0]] = 0
    return cache, idx


def _steps(cache, idx, per_step, L, **kw):
    on = lambda v: v.to(DEV) if torch.is_tensor(v) else v  # noqa: E731
    return torch.stack([ops.selective_state_update(cache, *map(on, per_step(t)), state_batch_indices=idx, **kw)
                        for t in range(L)], -1).cpu()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("state_dtype", [torch.float32, torch.bfloat16, torch.float16, torch.complex64,
                                         torch.complex128], ids=str)
def test_mamba1_steps_equal_the_scan(backend, state_dtype):
    complex_A = state_dtype.is_complex
    r = _gen(1)
    batch, dim, N, L = 4, 5, 3, 6  # batch row 2 is padding
    u, delta, z = r(batch, dim, L), r(batch, dim, L), r(batch, dim, L)
    A = -torch.rand(dim, N, dtype=torch.float64) - 0.1
    B, C = r(batch, N, L), r(batch, N, L)
    if complex_A:
        A, B, C = torch.complex(A, r(dim, N)), torch.complex(B, r(batch, N, L)), torch.complex(C, r(batch, N, L))
    D, bias = r(dim), r(dim)
    want, last = reference.selective_scan(u, delta, A, B, C, D, z, bias, True)
    cache, idx = _cache([6, 0, -1, 3], (dim, N), state_dtype)
    f32 = lambda x: x.to(torch.complex64 if x.is_complex() else torch.float32)  # noqa: E731
    step = lambda t: (f32(u[..., t]), f32(delta[..., t]), f32(A), f32(B[..., t]), f32(C[..., t]), f32(D),  # noqa: E731
                      f32(z[..., t]), f32(bias), True)
    got = _steps(cache, idx, step, L, backend=backend)
    live = [0, 1, 3]
    tol = TOL.get(state_dtype, 2e-5)
    assert_close(got[live], want[live], tol, "out")
    assert_close(cache[idx[live]].cpu(), last[live], tol, "state")
    untouched = [k for k in range(7) if k not in (6, 0, 3)]
    assert cache[untouched].isnan().all(), "padded or unaddressed slots were written"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("state_dtype", [torch.float32, torch.bfloat16], ids=str)
def test_mamba2_steps_equal_ssd_with_dt_limit(backend, state_dtype):
    r = _gen(2)
    batch, L, H, P, G, N = 3, 5, 4, 2, 2, 3
    x, dt, z = r(batch, L, H, P), r(batch, L, H), r(batch, L, H, P)
    A = -torch.rand(H, dtype=torch.float64) - 0.1
    B, C, D, bias = r(batch, L, G, N), r(batch, L, G, N), r(H), r(H)
    limit = (0.05, 0.6)
    want, final = reference.ssd(x, dt, A, B, C, D, z, bias, dt_softplus=True, dt_limit=limit)
    cache, idx = _cache([2, 5, 0], (H, P, N), state_dtype)
    f = lambda v: v.float()  # noqa: E731
    per_head = lambda v: f(v)[:, :, None].expand(-1, -1, P)  # noqa: E731  (mamba_ssm's tie_hdim form)
    step = lambda t: (f(x[:, t]), per_head(dt[:, t]), f(A)[:, None, None].expand(H, P, N), f(B[:, t]), f(C[:, t]),  # noqa: E731
                      f(D)[:, None].expand(H, P), f(z[:, t]), f(bias)[:, None].expand(H, P), True)
    got = _steps(cache, idx, step, L, dt_limit=limit, backend=backend)
    tol = TOL[state_dtype]
    assert_close(got.permute(0, 3, 1, 2), want, tol, "out")
    assert_close(cache[idx].cpu(), final, tol, "state")


def test_in_place_fp32_state_is_the_same_tensor():
    """An fp32 state addressed row for row is updated by the kernel itself (no copy)."""
    r = _gen(3)
    state = torch.zeros(2, 3, 4, device=DEV)
    ptr = state.data_ptr()
    args = (r(2, 3).float(), r(2, 3).float().abs(), -torch.rand(3, 4), r(2, 4).float(), r(2, 4).float())
    ops.selective_state_update(state, *(a.to(DEV) for a in args), backend="triton")
    assert state.data_ptr() == ptr and state.abs().sum() > 0


def test_compile_traces_decode_with_indices():
    r = _gen(4)
    cache = torch.zeros(5, 3, 4, device=DEV)
    idx = torch.tensor([4, 1], device=DEV)
    args = tuple(a.to(DEV) for a in (r(2, 3).float(), r(2, 3).float().abs(), -torch.rand(3, 4), r(2, 4).float(),
                                     r(2, 4).float()))
    eager = cache.clone()
    want = ops.selective_state_update(eager, *args, state_batch_indices=idx, backend="triton")
    f = lambda s: ops.selective_state_update(s, *args, state_batch_indices=idx, backend="triton")  # noqa: E731
    got = torch.compile(f, fullgraph=True, backend="aot_eager")(cache)
    assert_close(got, want, 1e-6)
    assert_close(cache, eager, 1e-6)


def _bad_args():
    r = _gen(5)
    return dict(state=torch.zeros(4, 3, 2), x=r(2, 3).float(), dt=r(2, 3).float(), A=-torch.rand(3, 2),
                B=r(2, 2).float(), C=r(2, 2).float())


@pytest.mark.parametrize("change, exc, msg", [
    (dict(state_batch_indices=torch.tensor([0, 4])), ValueError, r"state_batch_indices: expected indices in \[0, 4\)"),
    (dict(state_batch_indices=torch.tensor([1, 1])), ValueError, r"two batch rows update the same state row"),
    (dict(state_batch_indices=torch.tensor([0.0, 1.0])), TypeError, r"state_batch_indices: expected an integer"),
    (dict(state_batch_indices=torch.tensor([0, 1, 2])), ValueError, r"state_batch_indices: expected shape \(batch,\)"),
    (dict(state_batch_indices=torch.tensor([0, 1]), pad_slot_id=0.5), TypeError, r"pad_slot_id: expected an int"),
    (dict(state=torch.zeros(4, 3, 2, dtype=torch.int32), state_batch_indices=torch.tensor([0, 1])), TypeError,
     r"state: expected a float tensor"),
    (dict(B=torch.zeros(2, 2, dtype=torch.complex64)), TypeError, r"B, C: complex B or C need a complex A"),
    (dict(dt_limit=(1.0, 0.5)), ValueError, r"dt_limit: expected 0 <= low <= high"),
    (dict(state=torch.zeros(3, 3, 2)), ValueError, r"state"),
])
def test_decode_arguments_are_checked(change, exc, msg):
    args = {**_bad_args(), **change}
    with pytest.raises(exc, match=msg):
        ops.selective_state_update(**args, backend="triton")
