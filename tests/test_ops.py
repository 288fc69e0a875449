"""The drop-in ops on the Triton backend against the NumPy backend, with NumPy and torch inputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ssmc import ops

import reference_forms as rf
from conftest import DEVICES, as_numpy, assert_close


def _to_torch(a: dict, dtype=torch.float32, device="cpu") -> dict:
    def conv(v):
        if v is None or not isinstance(v, np.ndarray):
            return v
        if np.iscomplexobj(v):
            return torch.from_numpy(v).to(device=device, dtype=torch.complex64)
        return torch.from_numpy(v).to(device=device, dtype=torch.int64 if v.dtype.kind == "i" else dtype)
    return {k: conv(v) for k, v in a.items()}


def _as_ref(a: dict) -> dict:
    """float64 NumPy copies of (possibly torch) arguments: the reference sees the kernel's inputs."""
    return {k: v.cpu().numpy() if isinstance(v, torch.Tensor) and not (v.is_floating_point() or v.is_complex())
            else as_numpy(v) if isinstance(v, torch.Tensor) else v for k, v in a.items()}


def _selective_scan_args(rng, *, complex_A, grouped, lti_B=False, complex_BC=None, dim=5, L=7, N=3, G=1, batch=2):
    complex_BC = complex_A if complex_BC is None else complex_BC
    A = -rng.uniform(0.5, 3.0, (dim, N))
    if complex_A:
        A = A + 1j * rng.uniform(-3.0, 3.0, (dim, N))

    def bc():
        shape = (dim, N) if lti_B else (batch, G, N, L) if grouped else (batch, N, L)
        x = rng.standard_normal(shape)
        return x + 1j * rng.standard_normal(shape) if complex_BC else x

    return dict(u=rng.standard_normal((batch, dim, L)), delta=rng.uniform(-3.0, 0.5, (batch, dim, L)), A=A,
                B=bc(), C=bc(), D=rng.standard_normal(dim), z=rng.standard_normal((batch, dim, L)),
                delta_bias=0.2 * rng.standard_normal(dim))


SELECTIVE_CASES = [
    dict(complex_A=False, grouped=False),
    dict(complex_A=False, grouped=True, dim=6, G=2),
    dict(complex_A=True, grouped=False, dim=5, L=9),
    dict(complex_A=True, grouped=True, dim=4, G=2, N=2),
    dict(complex_A=True, grouped=False, complex_BC=False, dim=3),  # mamba_ssm's usual complex case
    dict(complex_A=False, grouped=False, lti_B=True, L=1),
]


@pytest.mark.parametrize("case", SELECTIVE_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_selective_scan_numpy_inputs(case, rng):
    a = _selective_scan_args(rng, **case)
    got, last = ops.selective_scan(**a, delta_softplus=True, return_last_state=True, backend="triton")
    want, want_last = ops.selective_scan(**a, delta_softplus=True, return_last_state=True, backend="numpy")
    assert isinstance(got, np.ndarray) and isinstance(last, np.ndarray)
    assert got.shape == want.shape and last.shape == want_last.shape
    assert np.iscomplexobj(last) == case["complex_A"]
    assert_close(got, want, 1e-5, "out")
    assert_close(last, want_last, 1e-5, "last_state")
    assert_close(want, rf.selective_scan_loop(**a, delta_softplus=True), 1e-10, "numpy vs textbook")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16], ids=str)
@pytest.mark.parametrize("complex_A", [False, True], ids=["realA", "complexA"])
def test_selective_scan_torch_inputs(complex_A, dtype, device, rng):
    a = _to_torch(_selective_scan_args(rng, complex_A=complex_A, grouped=True, dim=6, G=3, L=7), dtype, device)
    tol = 1e-2 if dtype == torch.float16 else 1e-5
    got, last = ops.selective_scan(**a, delta_softplus=True, return_last_state=True, backend="triton")
    want, want_last = ops.selective_scan(**a, delta_softplus=True, return_last_state=True, backend="numpy")
    for t in (got, last, want, want_last):
        assert isinstance(t, torch.Tensor) and t.device == a["u"].device
    assert got.dtype == want.dtype == dtype  # torch in, torch out, the dtype of u
    assert last.dtype == want_last.dtype
    ref = rf.selective_scan_loop(**_as_ref(a), delta_softplus=True, return_last_state=True)
    assert_close(got, ref[0], tol, "triton out")
    # the NumPy backend computes in float64 and rounds only its result to u's dtype
    assert_close(want, ref[0], {torch.float64: 1e-10, torch.float32: 1e-7}.get(dtype, 1e-2), "numpy out")
    assert_close(last, ref[1], 1e-5 if dtype != torch.float16 else 1e-2, "triton last_state")


@pytest.mark.parametrize("as_torch", [False, *DEVICES], ids=["numpy", "torch-cpu", "torch-cuda"])
def test_selective_scan_grouped_B_with_shared_C(as_torch, rng):
    """B per group (batch, G, N, L) with C shared by all channels (batch, N, L)."""
    a = _selective_scan_args(rng, complex_A=False, grouped=True, dim=6, G=3, L=5)
    a["C"] = rng.standard_normal((2, 3, 5))
    want = rf.selective_scan_loop(**a, delta_softplus=True)
    if as_torch:
        a = _to_torch(a, torch.float64, as_torch)  # a stride-0 group axis reaches the kernel
    for backend in ("numpy", "triton"):
        got = ops.selective_scan(**a, delta_softplus=True, backend=backend)
        assert_close(got, want, 1e-5, backend)


def _ssd_args(rng, batch=2, L=7, H=4, P=3, G=2, N=5):
    return dict(x=rng.standard_normal((batch, L, H, P)), dt=rng.uniform(-3.0, 0.5, (batch, L, H)),
                A=-rng.uniform(0.5, 3.0, H), B=rng.standard_normal((batch, L, G, N)),
                C=rng.standard_normal((batch, L, G, N)), D=rng.standard_normal(H),
                z=rng.standard_normal((batch, L, H, P)), dt_bias=0.2 * rng.standard_normal(H),
                initial_states=rng.standard_normal((batch, H, P, N)),
                seq_idx=np.sort(rng.integers(0, 3, (batch, L)), axis=1))


SSD_CASES = [
    dict(),
    dict(H=3, P=5, G=1, N=3, L=9),
    dict(H=6, P=1, G=3, N=2, L=1, batch=1),
]


@pytest.mark.parametrize("case", SSD_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()) or "default")
def test_ssd_numpy_inputs(case, rng):
    a = _ssd_args(rng, **case)
    kw = dict(chunk_size=4, dt_softplus=True, return_final_states=True, dt_limit=(0.0, 1.0))
    got, final = ops.ssd(**a, **kw, backend="triton")
    want, want_final = ops.ssd(**a, **kw, backend="numpy")
    assert isinstance(got, np.ndarray)
    assert_close(got, want, 1e-5, "out")
    assert_close(final, want_final, 1e-5, "final_states")


def test_ssd_D_per_head_and_position(rng):
    a = _ssd_args(rng, H=3, P=3, G=3)
    a["D"] = rng.standard_normal((3, 3))
    got = ops.ssd(**a, chunk_size=8, backend="triton")
    assert_close(got, ops.ssd(**a, chunk_size=8, backend="numpy"), 1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_ssd_torch_inputs(dtype, device, rng):
    a = _to_torch(_ssd_args(rng, H=3, P=3, G=1, L=9), dtype, device)
    kw = dict(chunk_size=4, dt_softplus=True, return_final_states=True)
    got, final = ops.ssd(**a, **kw, backend="triton")
    want, want_final = ops.ssd(**a, **kw, backend="numpy")
    assert isinstance(got, torch.Tensor) and got.dtype == want.dtype == dtype and got.device == a["x"].device
    assert final.dtype == want_final.dtype
    tol = 1e-2 if dtype == torch.bfloat16 else 1e-5
    ref, ref_final = rf.ssd_loop(**_as_ref(a), dt_softplus=True, return_final_states=True)
    assert_close(got, ref, tol, "triton out")
    assert_close(final, ref_final, tol, "triton final_states")
    assert_close(want_final, ref_final, tol, "numpy final_states")


def test_ssd_chunk_size_does_not_change_results(rng):
    a = _ssd_args(rng)
    outs = [ops.ssd(**a, chunk_size=c, backend="triton") for c in (1, 3, 64)]
    for o in outs[1:]:
        assert_close(o, outs[0], 1e-6)


def test_auto_backend_on_cpu_tensors_is_the_reference(rng):
    a = _to_torch(_selective_scan_args(rng, complex_A=False, grouped=False), torch.float64)
    got = ops.selective_scan(**a, delta_softplus=True)  # auto: CPU tensors -> NumPy interpreter
    assert_close(got, rf.selective_scan_loop(**_as_ref(a), delta_softplus=True), 1e-10)


@pytest.mark.gpu
def test_auto_backend_on_cuda_tensors_is_triton(rng):
    from ssmc.backends import triton as tb
    a = _to_torch(_selective_scan_args(rng, complex_A=False, grouped=False, dim=7, L=33), torch.float32, "cuda")
    got = ops.selective_scan(**a, delta_softplus=True)  # auto: CUDA tensors -> the generated kernel
    assert got.device.type == "cuda" and got.dtype == torch.float32
    assert any(k.graph.name == "selective_scan" and k.module.SCHEDULE for k in tb.loaded_kernels())
    assert_close(got, rf.selective_scan_loop(**_as_ref(a), delta_softplus=True), 1e-5)
