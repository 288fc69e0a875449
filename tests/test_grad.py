"""Backward: the adjoint IR (NumPy semantics) against torch autograd through independent float64
PyTorch loops, and the generated Triton backward kernels against the NumPy backward."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import ssmc
from ssmc import library
from ssmc.ir.inits import random_inputs
from ssmc.ir.opset import ADJOINT_OPS
from ssmc.ir.spec import Spec
from ssmc.ops import reference

from conftest import as_numpy, assert_close, seed_of

SISO = ["mamba1", "mamba2", "s4d_zoh", "s4d_bilinear"]


def _cotangents(outs, rng):
    return {k: rng.standard_normal(v.shape) + (1j * rng.standard_normal(v.shape) if np.iscomplexobj(v) else 0)
            for k, v in outs.items()}


def _torch64(x):
    t = torch.from_numpy(np.ascontiguousarray(x))
    return t.to(torch.float64) if t.is_floating_point() else t


def _close(got, want, tol, what):
    """assert_close, except for a gradient that is 0 analytically (with L = 1 and no h0, A's; LRU's
    phase θ, which then reaches the output only through |λ|): rounding noise on both sides."""
    if np.linalg.norm(as_numpy(want)) < 1e-12:
        assert np.linalg.norm(as_numpy(got)) < 1e-12, f"{what}: nonzero where the reference gradient is 0"
        return
    assert_close(got, want, tol, what)


def _torch32(x):
    t = torch.from_numpy(np.ascontiguousarray(x))
    return t.to(torch.complex64 if t.is_complex() else torch.float32) if t.is_floating_point() or t.is_complex() else t


def _library_reference(name, x):
    """The library entry written out in torch (float64), from its parameterization."""
    if name == "mamba1":
        return reference.selective_scan(x["u"], x["delta"], -torch.exp(x["A_log"]), x["B"], x["C"], x["D"], x["z"],
                                        x["delta_bias"], delta_softplus=True)
    if name == "mamba2":
        return reference.ssd(x["x"], x["dt"], x["A"], x["B"], x["C"], x["D"], x["z"], x["dt_bias"],
                             x["initial_states"], dt_softplus=True)
    if name in ("s5", "lru"):  # MIMO: one complex state (batch, N) shared by all channels, y = Re(C h) + D u
        if name == "s5":
            A = torch.complex(-torch.exp(x["A_log_re"]), x["A_im"])
            dt = torch.exp(x["log_dt"])
            Ab, Bb = torch.exp(dt * A), ((torch.exp(dt * A) - 1) / A)[:, None] * x["B"]
        else:
            Ab = torch.exp(torch.complex(-torch.exp(x["nu_log"]), torch.exp(x["theta_log"])))
            Bb = torch.sqrt(1 - Ab.abs() ** 2)[:, None] * x["B"]
        u = x["u"]  # (batch, L, H)
        h = torch.zeros(u.shape[0], Ab.shape[0], dtype=Ab.dtype)
        ys = []
        for t in range(u.shape[1]):
            h = Ab * h + (Bb * u[:, t, None, :]).sum(-1)
            ys.append((x["C"] * h[:, None, :]).sum(-1).real)
        return torch.stack(ys, 1) + x["D"] * u, None
    # S4D: LTI complex diagonal, Δ = exp(log_dt), y = 2 Re(C h) + D u
    A = torch.complex(-torch.exp(x["A_log_re"]), x["A_im"])
    dt = torch.exp(x["log_dt"])[:, None]
    if name == "s4d_zoh":
        Ab, s = torch.exp(dt * A), (torch.exp(dt * A) - 1) / A
    else:
        Ab, s = (1 + dt * A / 2) / (1 - dt * A / 2), dt / (1 - dt * A / 2)
    u = x["u"]
    h = torch.zeros(u.shape[0], u.shape[1], A.shape[1], dtype=A.dtype)
    ys = []
    for t in range(u.shape[2]):
        h = Ab * h + s * x["B"] * u[:, :, t, None]
        ys.append(2 * (x["C"] * h).sum(-1).real)
    return torch.stack(ys, -1) + x["D"][:, None] * u, None


@pytest.mark.parametrize("name", SISO + ["s5", "lru"])
def test_numpy_backward_matches_torch_autograd(name, rng):
    fn = ssmc.compile(name, backend="numpy")
    sizes = dict(library.DEFAULT_SIZES[name], L=7)
    x = random_inputs(fn.graph, sizes, seed=seed_of(rng))
    outs = fn(**x)
    cts = _cotangents(outs, rng)
    grads = fn.grad(x, cts)
    leaves = {k: _torch64(v).requires_grad_() for k, v in x.items()}
    out, last = _library_reference(name, leaves)
    assert_close(out, outs["out"], 1e-10, "forward reference")
    pairs = [(out, cts["out"])] + ([(last, cts[k]) for k in outs if k != "out"] if last is not None else [])
    torch.autograd.backward([p for p, _ in pairs], [_torch64(c) for _, c in pairs])
    for k, leaf in leaves.items():
        assert_close(grads[f"grad_{k}"], leaf.grad, 1e-9, f"{name} grad_{k}")


@pytest.mark.parametrize("name", SISO + ["s5", "lru"])
@pytest.mark.parametrize("L", [1, 7, 33])
def test_triton_backward_matches_numpy_float64(name, L, rng):
    """Float64 tensors are computed in float64: the kernels agree with the NumPy backward to rounding."""
    fn = ssmc.compile(name, backend="numpy")
    sizes = dict(library.DEFAULT_SIZES[name], L=L)
    x = random_inputs(fn.graph, sizes, seed=seed_of(rng))
    cts = _cotangents(fn(**x), rng)
    want = fn.grad(x, cts)
    tri = ssmc.compile(name, backend="triton", schedule=dict(chunk=8, block_d=4))
    got = tri.grad({k: _torch64(v) for k, v in x.items()}, {k: torch.from_numpy(v) for k, v in cts.items()})
    assert set(got) == set(want)
    for k in want:
        assert got[k].dtype in (torch.float64, torch.complex128)
        _close(got[k], want[k], _zoh_tol(name, k, x, want[k], 1e-10, 2.0 ** -53), f"{name} L={L} {k}")


def _zoh_tol(name, k, x, grad, base, unit):
    """`base`, or for A's gradient under ZOH (S4D-ZOH, S5) the rounding its formula allows when that is
    more: B̄ = (e^{ΔA} - 1)/A is computed with e^{ΔA} - 1 (there is no expm1 in the IR), whose absolute
    rounding error is ~unit, while the derivative in A is O(|ΔA|²) of its terms — so entry j of the
    gradient is good to ~2·unit/|ΔA_j|² relative in any implementation (S4D's init has Δ down to 1e-3).
    Kernel and reference each carry it, so twice that, summed as rel_err sums (norm-wise over the
    entries), with a factor 2 of margin."""
    if name not in ("s4d_zoh", "s5") or k not in ("grad_A_log_re", "grad_A_im"):
        return base
    dt = np.exp(x["log_dt"])
    A = np.abs(-np.exp(x["A_log_re"]) + 1j * x["A_im"])
    dtA = dt.reshape(dt.shape + (1,) * (A.ndim - dt.ndim)) * A
    g = np.abs(grad)
    return max(base, 8 * unit * float(np.linalg.norm(g / dtA ** 2) / np.linalg.norm(g)))


# checkpoint: a stored state every 4 chunks; every chunk; automatic; one segment for the whole sequence
SCHEDULES = [dict(chunk=1, block_d=4, checkpoint=4), dict(chunk=4, block_d=16, layout="tdn", checkpoint=4),
             dict(chunk=16, block_d=4, layout="tnd"), dict(chunk=2, block_d=2, layout="ndt", checkpoint=64),
             dict(chunk=1, block_d=2, layout="tnd", partials=True)]  # B/C gradients per block of channels
# S4D-ZOH's and S5's A gradients: at least these, more where the draw's ΔA makes them ill-conditioned (_zoh_tol)
FP32_TOL = {"mamba1": 2e-5, "mamba2": 2e-5, "s4d_zoh": 2e-3, "s5": 2e-3}


@pytest.mark.parametrize("name", ["mamba1", "mamba2", "s4d_zoh"])
@pytest.mark.parametrize("sched", SCHEDULES, ids=lambda s: "-".join(f"{k}{v}" for k, v in s.items()))
def test_triton_backward_float32_schedules(name, sched, rng):
    """fp32 arithmetic, odd sizes (5 channels, L = 13 not a multiple of the chunk), every schedule."""
    fn = ssmc.compile(name, backend="numpy")
    sizes = dict(library.DEFAULT_SIZES[name], L=13, **(dict(H=4, P=2) if name == "mamba2" else {}))
    x = random_inputs(fn.graph, sizes, seed=seed_of(rng))
    cts = _cotangents(fn(**x), rng)
    want = fn.grad(x, cts)
    tri = ssmc.compile(name, backend="triton", schedule=sched)
    got = tri.grad({k: _torch32(v) for k, v in x.items()}, {k: _torch32(v) for k, v in cts.items()})
    for k in want:
        assert_close(got[k], want[k], _zoh_tol(name, k, x, want[k], FP32_TOL[name], 2.0 ** -24), f"{name} {sched} {k}")


@pytest.mark.parametrize("name", ["mamba1", "mamba2", "s4d_zoh", "s5"])
def test_nan_poisoned_gradient_buffers_are_written_everywhere(name, rng):
    """Gradients written with plain stores go straight into the caller's buffers: poisoned with NaN,
    every element must come back finite; those finished by atomic adds are zeroed first."""
    fn = ssmc.compile(name, backend="triton", schedule=dict(chunk=4, block_d=2))
    sizes = dict(library.DEFAULT_SIZES[name], L=11)
    x = {k: _torch32(v) for k, v in random_inputs(fn.graph, sizes, seed=seed_of(rng)).items()}
    outs = fn(**x)
    cts = {k: torch.randn(v.shape, dtype=v.dtype) for k, v in outs.items()}
    bufs = {f"grad_{k}": torch.full(v.shape, float("nan"), dtype=v.dtype) for k, v in x.items()}
    got = fn.grad(x, cts, outs=bufs)
    for k, v in got.items():
        assert v is bufs[k], k
        assert torch.isfinite(v).all(), f"{k}: unwritten (NaN) elements"
    arrays = {k: as_numpy(v) for k, v in x.items()}
    want = ssmc.compile(name, backend="numpy").grad(arrays, {k: as_numpy(v) for k, v in cts.items()})
    for k in want:
        assert_close(got[k], want[k], _zoh_tol(name, k, arrays, want[k], FP32_TOL[name], 2.0 ** -24), k)


def test_reverse_scan_and_resets_backward(rng):
    """A reverse-order scan and seq_idx resets: both backends against each other, and the NumPy
    backward against torch autograd of a loop (resets)."""
    spec = Spec("ssd_reset", state="scalar_head", A="direct", rule="zoh_euler", dt="softplus", dt_bias=True,
                groups=True, skip="hp", gate="silu", h0=True, seq_idx=True, final_state=True)
    fn = ssmc.compile(spec, backend="numpy")
    b, L, H, P, G, N = 2, 10, 4, 2, 2, 3
    r = lambda *s: rng.standard_normal(s)
    seq = np.sort(rng.integers(0, 3, (b, L)), axis=1)
    x = dict(x=r(b, L, H, P), dt=r(b, L, H) * 0.5, dt_bias=r(H), A=-np.abs(r(H)), B=r(b, L, G, N),
             C=r(b, L, G, N), D=r(H, P), z=r(b, L, H, P), initial_states=r(b, H, P, N))
    outs = fn(**x, seq_idx=seq)
    cts = _cotangents(outs, rng)
    grads = fn.grad({**x, "seq_idx": seq}, cts)
    leaves = {k: _torch64(v).requires_grad_() for k, v in x.items()}
    y, last = reference.ssd(**leaves, seq_idx=torch.from_numpy(seq), dt_softplus=True)
    torch.autograd.backward([y, last], [_torch64(cts["out"]), _torch64(cts["final_states"])])
    for k, leaf in leaves.items():
        assert_close(grads[f"grad_{k}"], leaf.grad, 1e-9, k)
    tri = ssmc.compile(spec, backend="triton", schedule=dict(chunk=4, block_d=2))
    got = tri.grad({**{k: _torch64(v) for k, v in x.items()}, "seq_idx": torch.from_numpy(seq)},
                   {k: torch.from_numpy(v) for k, v in cts.items()})
    for k in grads:
        assert_close(got[k], grads[k], 1e-10, k)

    rev = Spec("rev", state="diag_real", A="neg_exp", rule="bilinear", dt="softplus", direction="reverse",
               groups=True, skip="h", gate="silu", h0=True, final_state=True)
    fn = ssmc.compile(rev, backend="numpy")
    x = random_inputs(fn.graph, dict(batch=2, dim=6, G=3, N=3, L=9), seed=seed_of(rng))
    cts = _cotangents(fn(**x), rng)
    want = fn.grad(x, cts)
    got = ssmc.compile(rev, backend="triton", schedule=dict(chunk=4, block_d=4)).grad(
        {k: _torch64(v) for k, v in x.items()}, {k: torch.from_numpy(v) for k, v in cts.items()})
    for k in want:
        assert_close(got[k], want[k], 1e-10, f"reverse {k}")


def test_backward_graphs_use_every_adjoint_op():  # (each op's rows: test_op_tables.py)
    clipped = library.get("mamba2").with_(dt_limit=(0.01, 0.5))  # clip_grad: the gradient through dt_limit
    g = ssmc.compile(clipped, backend="numpy").backward_graph
    assert {n.op for n in g.nodes} >= set(ADJOINT_OPS)


def test_grad_bad_cotangents_name_the_argument(rng):
    fn = ssmc.compile("mamba1", backend="numpy")
    x = random_inputs(fn.graph, library.DEFAULT_SIZES["mamba1"], seed=seed_of(rng))
    with pytest.raises(ValueError, match="grads"):
        fn.grad(x, {"nope": np.zeros(3)})
    with pytest.raises(ValueError, match="'out'"):
        fn.grad(x, {"out": np.zeros((1, 2, 3))})


@pytest.mark.parametrize("checkpoint, slots", [(16, (4, 4)), (0, (4, 4)), (4, (16, 1))])
def test_backward_stores_states_per_segment_not_per_step(checkpoint, slots, rng):
    """L = 64, chunk 4: a checkpoint every `checkpoint` steps (automatic: √(64·4) = 16) plus one
    segment's chunk start states, never a state per step (64)."""
    fn = ssmc.compile("mamba1", backend="numpy")
    x = random_inputs(fn.graph, dict(batch=1, dim=2, N=2, L=64), seed=seed_of(rng))
    cts = _cotangents(fn(**x), rng)
    tri = ssmc.compile("mamba1", backend="triton", schedule=dict(chunk=4, block_d=2, checkpoint=checkpoint))
    got = tri.grad({k: _torch64(v) for k, v in x.items()}, {k: torch.from_numpy(v) for k, v in cts.items()})
    ws = tri.backward_kernel(acc="float64").module.LAST_WORKSPACE
    assert (ws["checkpoints"], ws["chunk_states"]) == slots
    assert ws["bytes"] == sum(slots) * 1 * 2 * 2 * 8  # (batch, slots, dim, N) float64
    want = fn.grad(x, cts)
    for k in want:
        assert_close(got[k], want[k], 1e-10, k)
