"""Hydra's bidirectional quasiseparable mixer (ssmc.ops.hydra) against two independent references:
the full L×L quasiseparable matrix built entry by entry in float64 and multiplied, and Hydra's
own formulation (roll/flip around a per-step SSD loop).  NumPy backend, Triton (CPU interpreter;
CUDA under -m gpu), and gradients on Triton against torch autograd through the explicit matrix.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ssmc.ops import hydra
from ssmc.ops.ssd import ssd_spec
from ssmc.runtime import cached_compile

from conftest import DEVICES, as_numpy, assert_close
from reference_forms import softplus, ssd_loop


def _inputs(rng, batch, L, H, P, G, N, D="h", diag=True, bias=True):
    x = dict(x=rng.standard_normal((batch, L, H, P)), dt=rng.uniform(-3.0, 0.5, (batch, L, 2, H)),
             A=-rng.uniform(0.5, 2.0, (H,)), B=rng.standard_normal((batch, L, 2, G, N)),
             C=rng.standard_normal((batch, L, 2, G, N)))
    if D:
        x["D"] = rng.standard_normal((H,) if D == "h" else (H, P))
    if diag:
        x["diag"] = rng.standard_normal((batch, L, H))
    if bias:
        x["dt_bias"] = 0.2 * rng.standard_normal((H,))
    return x


def _delta(dt, dt_bias, dt_softplus, dt_limit, lib=np):
    dt = dt if dt_bias is None else dt + dt_bias
    if dt_softplus:
        dt = softplus(dt) if lib is np else torch.nn.functional.softplus(dt)
    return lib.clip(dt, *dt_limit) if lib is np else dt.clamp(*dt_limit)


def _matrix(dt, A, B, C, D, diag, b, h, P, lib=np):
    """The L×L (×P on the diagonal) quasiseparable matrix of batch b, head h:
    M[t, s] = C_f[t-1]·B_f[s] Δ_f[s] Π_{s<r<t} exp(Δ_f[r] A)   (s < t)
    M[t, s] = C_b[t+1]·B_b[s] Δ_b[s] Π_{t<r<s} exp(Δ_b[r] A)   (s > t)
    and the diagonal D + diag[t] (per p when D is (H, P)): returned as a list of P matrices."""
    L, H, G = dt.shape[1], dt.shape[3], B.shape[3]
    g = h // (H // G)
    a = [lib.exp(dt[b, :, k, h] * A[h]) for k in (0, 1)]
    rows = []
    for t in range(L):
        row = []
        for s in range(L):
            if s < t:
                decay = 1.0
                for r in range(s + 1, t):
                    decay = decay * a[0][r]
                row.append((C[b, t - 1, 0, g] * B[b, s, 0, g]).sum() * dt[b, s, 0, h] * decay)
            elif s > t:
                decay = 1.0
                for r in range(t + 1, s):
                    decay = decay * a[1][r]
                row.append((C[b, t + 1, 1, g] * B[b, s, 1, g]).sum() * dt[b, s, 1, h] * decay)
            else:
                row.append(None)
        rows.append(row)
    mats = []
    for p in range(P):
        dd = [0.0 if D is None else (D[h] if D.ndim == 1 else D[h, p])] * L
        if diag is not None:
            dd = [dd[t] + diag[b, t, h] for t in range(L)]
        entries = [[dd[t] if rows[t][s] is None else rows[t][s] for s in range(L)] for t in range(L)]
        if lib is np:
            mats.append(np.array(entries, dtype=np.float64))
        else:
            mats.append(torch.stack([torch.stack([torch.as_tensor(e, dtype=torch.float64) for e in r])
                                     for r in entries]))
    return mats


def _matrix_reference(inp, dt_softplus=True, dt_limit=(0.0, np.inf), lib=np):
    """y[b, :, h, p] = M(b, h, p) @ x[b, :, h, p], in float64."""
    x, A, B, C = inp["x"], inp["A"], inp["B"], inp["C"]
    dt = _delta(inp["dt"], inp.get("dt_bias"), dt_softplus, dt_limit, lib)
    batch, L, H, P = x.shape
    cols = []
    for b in range(batch):
        for h in range(H):
            for p, M in enumerate(_matrix(dt, A, B, C, inp.get("D"), inp.get("diag"), b, h, P, lib)):
                cols.append(M @ x[b, :, h, p])
    y = np.stack(cols) if lib is np else torch.stack(cols)
    y = y.reshape(batch, H, P, L)
    return y.transpose(0, 3, 1, 2) if lib is np else y.permute(0, 3, 1, 2)


def _roll_flip_reference(inp, dt_softplus=True):
    """Hydra's formulation: one SSD per direction (the backward one on flipped inputs), each output
    rolled one step with its first row zeroed, the backward one flipped back, plus x·(D + diag)."""
    x, A = inp["x"], inp["A"]
    flip = lambda v: v[:, ::-1]  # noqa: E731
    ys = []
    for k, f in ((0, lambda v: v), (1, flip)):
        y = ssd_loop(f(x), f(inp["dt"][:, :, k]), A, f(inp["B"][:, :, k]), f(inp["C"][:, :, k]),
                     dt_bias=inp.get("dt_bias"), dt_softplus=dt_softplus)
        y = np.roll(y, 1, axis=1)
        y[:, 0] = 0.0
        ys.append(f(y))
    D = inp.get("D")
    dd = 0.0 if D is None else (D[:, None] if D.ndim == 1 else D)
    dd = dd + (0.0 if inp.get("diag") is None else inp["diag"][..., None])
    return ys[0] + ys[1] + x * dd


@pytest.mark.parametrize("L", [1, 2, 7, 12])
@pytest.mark.parametrize("shape, terms", [((2, 3, 2, 1, 4), dict(D="h")), ((1, 4, 3, 2, 3), dict(D="hp")),
                                          ((2, 2, 1, 2, 2), dict(D=None, diag=False, bias=False))])
def test_numpy_matches_quasiseparable_matrix(L, shape, terms, rng):
    batch, H, P, G, N = shape
    inp = _inputs(rng, batch, L, H, P, G, N, **terms)
    got = hydra(**inp, dt_softplus=True, backend="numpy")
    assert got.shape == (batch, L, H, P)
    if L == 1 and "D" not in inp and "diag" not in inp:  # one token and no diagonal: nothing mixes
        assert not got.any()
        return
    assert_close(got, _matrix_reference(inp), 1e-12, f"L={L} {shape} {terms}")
    assert_close(got, _roll_flip_reference(inp), 1e-12, "Hydra's roll/flip form")


def test_dt_limit_and_raw_dt(rng):
    inp = _inputs(rng, 2, 9, 2, 2, 1, 3)
    inp["dt"] = rng.uniform(0.01, 0.8, inp["dt"].shape)
    inp["dt_bias"] = 0.05 * np.abs(inp["dt_bias"])
    got = hydra(**inp, dt_limit=(0.1, 0.5), backend="numpy")
    assert_close(got, _matrix_reference(inp, dt_softplus=False, dt_limit=(0.1, 0.5)), 1e-12, "dt_limit")


def test_directions_are_strictly_lower_and_upper(rng):
    """The forward direction reaches only later positions, the backward only earlier ones: with
    no diagonal, x at s moves y at t ≠ s only, forward Δ/B/C changes move only t > s, and C_fwd
    at the last step (which the shift drops) moves nothing."""
    inp = _inputs(rng, 1, 8, 2, 2, 1, 3, D=None, diag=False)
    y = hydra(**inp, dt_softplus=True, backend="numpy")
    x2 = dict(inp, x=inp["x"].copy())
    x2["x"][:, 3] += 1.0
    dy = np.abs(hydra(**x2, dt_softplus=True, backend="numpy") - y).sum(axis=(0, 2, 3))
    assert dy[3] == 0 and (dy[[2, 4]] > 0).all()
    c2 = dict(inp, C=inp["C"].copy())
    c2["C"][:, 7, 0] += 1.0  # the forward C at t = L-1 feeds only y at L, shifted out
    c2["C"][:, 0, 1] += 1.0  # the backward C at t = 0 likewise
    assert np.array_equal(hydra(**c2, dt_softplus=True, backend="numpy"), y)


@pytest.mark.parametrize("device", DEVICES)
def test_triton_matches_quasiseparable_matrix(device, rng):
    for L, shape, terms in ((7, (2, 4, 3, 2, 4), dict(D="h")), (1, (1, 2, 2, 1, 3), dict(D="hp")),
                            (5, (1, 2, 3, 1, 2), dict(D=None, diag=False))):
        inp = _inputs(rng, L=L, **dict(zip(("batch", "H", "P", "G", "N"), shape)), **terms)
        want = _matrix_reference(inp)
        t = {k: torch.tensor(v, device=device, dtype=torch.float32) for k, v in inp.items()}
        got = hydra(**t, dt_softplus=True, backend="triton")
        assert got.shape == want.shape and got.dtype == torch.float32 and got.device.type == device
        assert_close(got, want, 1e-5, f"L={L} {shape} on {device}")


@pytest.mark.parametrize("device", DEVICES)
def test_output_takes_x_dtype_with_an_fp32_diagonal(device, rng):
    # as mamba_ssm's ops return x's dtype with an fp32 D; D·x is added in fp32 and rounded once
    inp = _inputs(rng, L=6, batch=1, H=2, P=2, G=1, N=2, D="h")
    want = _matrix_reference(inp)
    t = {k: torch.tensor(v, device=device, dtype=torch.float32 if k in ("A", "D", "dt_bias") else torch.bfloat16)
         for k, v in inp.items()}
    got = hydra(**t, dt_softplus=True, backend="triton")
    assert got.dtype == torch.bfloat16
    assert_close(got.float(), want, 3e-2, f"bf16 on {device}")


@pytest.mark.parametrize("device", DEVICES)
def test_triton_gradients_match_the_matrix_autograd(device, rng):
    """Every input's gradient (x, Δ, A, B, C, D, diag, dt_bias) through the Triton backward kernels
    equals torch autograd through the explicit float64 matrix."""
    _against_matrix_autograd(_inputs(rng, 1, 6, 2, 2, 1, 3), device, torch.float64, 1e-10, 1e-9, rng)


def _against_matrix_autograd(inp, device, dtype, tol, grad_tol, rng):
    """hydra on Triton in `dtype` and its gradients for a random cotangent, against the float64 matrix
    and torch autograd through it."""
    names = list(inp)
    ref = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in inp.items()}
    want = _matrix_reference(ref, lib=torch)
    w = torch.tensor(rng.standard_normal(tuple(want.shape)), dtype=torch.float64)
    want_grads = torch.autograd.grad((want * w).sum(), [ref[k] for k in names])
    t = {k: torch.tensor(v, device=device, dtype=dtype, requires_grad=True) for k, v in inp.items()}
    got = hydra(**t, dt_softplus=True, backend="triton")
    assert_close(got, want.detach(), tol, f"forward on {device}")
    got_grads = torch.autograd.grad((got * w.to(device, dtype)).sum(), [t[k] for k in names])
    for k, g, wg in zip(names, got_grads, want_grads):
        assert_close(as_numpy(g), wg, grad_tol, f"grad {k} on {device}")


def test_auto_on_numpy_arrays_and_torch_cpu(rng):
    inp = _inputs(rng, 1, 5, 2, 2, 1, 2)
    want = _matrix_reference(inp)
    assert_close(hydra(**inp, dt_softplus=True), want, 1e-12, "auto, NumPy arrays")
    t = {k: torch.tensor(v) for k, v in inp.items()}
    got = hydra(**t, dt_softplus=True, backend="numpy")
    assert isinstance(got, torch.Tensor)
    assert_close(got, want, 1e-12, "numpy backend, torch tensors")


@pytest.mark.parametrize("change, match", [
    (dict(x=np.zeros((1, 6, 2))), r"x: expected shape \(batch, L, H, P\), got \(1, 6, 2\)"),
    (dict(dt=np.zeros((1, 6, 2))), r"dt: expected shape \(batch, L, 2, H\) = \(1, 6, 2, 2\), got \(1, 6, 2\)"),
    (dict(dt=np.zeros((1, 6, 3, 2))), r"dt: expected shape \(batch, L, 2, H\)"),
    (dict(A=np.zeros((3,))), r"A: expected shape \(H,\) = \(2,\), got \(3,\)"),
    (dict(B=np.zeros((1, 6, 3, 4))), r"B: expected shape \(batch, L, 2, G, N\), got \(1, 6, 3, 4\)"),
    (dict(B=np.zeros((1, 6, 2, 3, 4))), r"B: 3 groups do not divide the H=2 heads"),
    (dict(C=np.zeros((1, 6, 2, 1, 5))), r"C: expected shape \(batch, L, 2, G, N\) = \(1, 6, 2, 1, 4\)"),
    (dict(D=np.zeros((2, 2))), r"D: expected shape \(H,\) = \(2,\) or \(H, P\) = \(2, 3\), got \(2, 2\)"),
    (dict(diag=np.zeros((1, 6, 2, 3))), r"diag: expected shape \(batch, L, H\) = \(1, 6, 2\)"),
    (dict(dt_bias=np.zeros((1, 2))), r"dt_bias: expected shape \(H,\) = \(2,\)"),
    (dict(chunk_size=0), r"chunk_size: expected a positive integer"),
])
def test_bad_input_names_the_argument(change, match):
    args = dict(x=np.zeros((1, 6, 2, 3)), dt=np.zeros((1, 6, 2, 2)), A=-np.ones(2), B=np.zeros((1, 6, 2, 1, 4)),
                C=np.zeros((1, 6, 2, 1, 4)))
    args.update(change)
    with pytest.raises(ValueError, match=match):
        hydra(**args, backend="numpy")


@pytest.mark.gpu
def test_hydra_at_chunked_sizes_on_cuda(rng):
    """P = N = 32 on CUDA: both directions take the chunked kernels, forward and backward (the reverse
    one with its time index L-1-k), and agree with the float64 matrix and its autograd."""
    from ssmc.backends.triton.strategy import choose, choose_backward
    rev = cached_compile(ssd_spec(None, None, True, None, None, True, 0.0, float("inf"), False)
                        .with_(name="ssd_reverse", direction="reverse"), "triton")
    roles = dict(b=1, t=80, h=2, p=32, n=32, g=1)
    assert choose(rev.graph, roles, "cuda")[0] == "chunked"
    assert choose_backward(rev.backward_graph, roles, "cuda")[0] == "chunked"
    _against_matrix_autograd(_inputs(rng, 1, 80, 2, 32, 1, 32), "cuda", torch.float32, 1e-4, 1e-3, rng)
