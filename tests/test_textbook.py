"""The NumPy interpreter against independent textbook forms (tests/reference_forms.py).

The interpreter is the project's definition of semantics, so it is checked against code that
shares nothing with it: per-step loops written from the papers, SSD's quadratic matrix form,
S4D's convolution kernel (an FFT convolution, no recurrence at all) and the S5/LRU MIMO loop.
"""
from __future__ import annotations

import numpy as np
import pytest

import ssmc
from ssmc import library, ops
from ssmc.ir.inits import random_inputs

import reference_forms as rf
from conftest import assert_close, seed_of

TOL = 1e-10  # float64 against float64: only rounding separates the two


# --- Mamba-1 selective scan -------------------------------------------------------------------

def _bc(rng, kind, batch, dim, N, L, G, cplx):
    shape = {"lti": (dim, N), "tv": (batch, N, L), "grouped": (batch, G, N, L)}[kind]
    x = rng.standard_normal(shape)
    return x + 1j * rng.standard_normal(shape) if cplx else x


@pytest.mark.parametrize("complex_A", [False, True], ids=["realA", "complexA"])
@pytest.mark.parametrize("B_kind,C_kind", [("lti", "lti"), ("tv", "tv"), ("grouped", "grouped"),
                                           ("lti", "grouped"), ("tv", "lti"), ("tv", "grouped"), ("grouped", "tv")])
def test_selective_scan(B_kind, C_kind, complex_A, rng):
    batch, dim, N, L, G = 2, 6, 3, 9, 3
    u, z = rng.standard_normal((2, batch, dim, L))
    delta = rng.uniform(-3.0, 0.5, (batch, dim, L))
    A = -rng.uniform(0.5, 3.0, (dim, N))
    if complex_A:
        A = A + 1j * rng.uniform(-3.0, 3.0, (dim, N))
    B = _bc(rng, B_kind, batch, dim, N, L, G, complex_A)
    C = _bc(rng, C_kind, batch, dim, N, L, G, complex_A)
    D, delta_bias = rng.standard_normal(dim), 0.3 * rng.standard_normal(dim)
    got, last = ops.selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True,
                                   return_last_state=True, backend="numpy")
    want, want_last = rf.selective_scan_loop(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True,
                                             return_last_state=True)
    assert_close(got, want, TOL, "out")
    assert_close(last, want_last, TOL, "last_state")


@pytest.mark.parametrize("complex_A", [False, True], ids=["realA", "complexA"])
@pytest.mark.parametrize("with_D,with_z,with_bias,softplus", [
    (False, False, False, False), (True, False, False, True), (False, True, True, False), (True, True, True, True)])
def test_selective_scan_options(with_D, with_z, with_bias, softplus, complex_A, rng):
    """Each optional argument on and off (raw Δ must be positive: it is used as is)."""
    batch, dim, N, L = 1, 3, 4, 7
    u, z = rng.standard_normal((2, batch, dim, L))
    delta = rng.uniform(-3.0, 0.5, (batch, dim, L)) if softplus else rng.uniform(0.05, 0.8, (batch, dim, L))
    A = -rng.uniform(0.5, 3.0, (dim, N)) + (1j * rng.uniform(-2, 2, (dim, N)) if complex_A else 0)
    B, C = rng.standard_normal((2, batch, N, L))  # real B, C with a complex A: they are promoted
    kw = dict(D=rng.standard_normal(dim) if with_D else None, z=z if with_z else None,
              delta_bias=0.1 * rng.uniform(size=dim) if with_bias else None, delta_softplus=softplus)
    got = ops.selective_scan(u, delta, A, B, C, backend="numpy", **kw)
    assert_close(got, rf.selective_scan_loop(u, delta, A, B, C, **kw), TOL)


def test_selective_scan_float32_precision(rng):
    """precision='float32' in the interpreter stays within fp32 tolerance of float64."""
    fn = ssmc.compile("mamba1", backend="numpy", precision="float32")
    x = random_inputs(fn.graph, dict(library.DEFAULT_SIZES["mamba1"], L=13), seed=seed_of(rng))
    got = fn(**x)
    want = rf.selective_scan_loop(x["u"], x["delta"], -np.exp(x["A_log"]), x["B"], x["C"], x["D"], x["z"],
                                  x["delta_bias"], delta_softplus=True, return_last_state=True)
    assert_close(got["out"], want[0], 1e-5)
    assert_close(got["last_state"], want[1], 1e-5)


# --- Mamba-2 SSD -------------------------------------------------------------------------------

def _ssd_inputs(rng, batch=2, L=11, H=4, P=3, G=2, N=5):
    return dict(x=rng.standard_normal((batch, L, H, P)), dt=rng.uniform(-3.0, 0.5, (batch, L, H)),
                A=-rng.uniform(0.5, 3.0, H), B=rng.standard_normal((batch, L, G, N)),
                C=rng.standard_normal((batch, L, G, N)))


@pytest.mark.parametrize("D_shape", ["none", "H", "HP"])
@pytest.mark.parametrize("with_z,with_bias,with_h0,with_seq", [
    (False, False, False, False), (True, True, True, True), (True, False, True, False), (False, True, False, True)])
def test_ssd_vs_loop(D_shape, with_z, with_bias, with_h0, with_seq, rng):
    a = _ssd_inputs(rng)
    batch, L, H, P = a["x"].shape
    N = a["B"].shape[-1]
    kw = dict(
        D={"none": None, "H": rng.standard_normal(H), "HP": rng.standard_normal((H, P))}[D_shape],
        z=rng.standard_normal((batch, L, H, P)) if with_z else None,
        dt_bias=0.2 * rng.standard_normal(H) if with_bias else None,
        initial_states=rng.standard_normal((batch, H, P, N)) if with_h0 else None,
        seq_idx=np.sort(rng.integers(0, 3, (batch, L)), axis=1) if with_seq else None,
        dt_softplus=True)
    got, final = ops.ssd(**a, chunk_size=4, return_final_states=True, backend="numpy", **kw)
    want, want_final = rf.ssd_loop(**a, return_final_states=True, **kw)
    assert_close(got, want, TOL, "out")
    assert_close(final, want_final, TOL, "final_states")


def test_ssd_reset_actually_resets(rng):
    """With seq_idx, the output after a boundary is that of the second sequence alone."""
    a = _ssd_inputs(rng, batch=1, L=10)
    seq = np.array([[0] * 4 + [1] * 6])
    got = ops.ssd(**a, chunk_size=4, seq_idx=seq, backend="numpy")
    tail = {k: v[:, 4:] if k in ("x", "dt", "B", "C") else v for k, v in a.items()}
    assert_close(got[:, 4:], ops.ssd(**tail, chunk_size=4, backend="numpy"), TOL)
    assert_close(got[:, 4:], rf.ssd_loop(**tail), TOL)


def test_ssd_dt_limit(rng):
    a = _ssd_inputs(rng)
    bias = 0.2 * rng.standard_normal(a["A"].shape)
    lo, hi = 0.1, 0.4
    got = ops.ssd(**a, chunk_size=8, dt_bias=bias, dt_softplus=True, dt_limit=(lo, hi), backend="numpy")
    dt_eff = np.clip(rf.softplus(a["dt"] + bias), lo, hi)
    assert (dt_eff == lo).any() and (dt_eff == hi).any()  # both bounds bite
    want = rf.ssd_loop(**dict(a, dt=dt_eff))
    assert_close(got, want, TOL)


@pytest.mark.parametrize("D_shape", ["none", "H", "HP"])
def test_ssd_vs_quadratic_form(D_shape, rng):
    """SSD's matrix ('attention') form: no recurrence at all; Δ is used as given."""
    a = _ssd_inputs(rng, L=13, H=6, G=3)
    a["dt"] = rng.uniform(0.05, 0.8, a["dt"].shape)
    H, P = a["x"].shape[2:]
    D = {"none": None, "H": rng.standard_normal(H), "HP": rng.standard_normal((H, P))}[D_shape]
    got = ops.ssd(**a, chunk_size=16, D=D, backend="numpy")
    assert_close(got, rf.ssd_quadratic(**a, D=D), TOL)


# --- S4D: the recurrence against its convolution kernel ---------------------------------------

@pytest.mark.parametrize("name,rule", [("s4d_zoh", "zoh"), ("s4d_bilinear", "bilinear")])
def test_s4d_vs_convolution_kernel(name, rule, rng):
    fn = ssmc.compile(name, backend="numpy")
    sizes = dict(library.DEFAULT_SIZES[name], L=40)
    x = random_inputs(fn.graph, sizes, seed=seed_of(rng))
    A = -np.exp(x["A_log_re"]) + 1j * x["A_im"]
    dt = np.exp(x["log_dt"])
    K = rf.s4d_kernel(A, x["B"], x["C"], dt, sizes["L"], rule)
    want = rf.lti_conv(x["u"], K, x["D"])
    got = fn(**x)["out"]
    assert_close(got, want, 1e-9, "interpreter vs FFT convolution")
    assert_close(got, rf.s4d_recurrence(x["u"], A, x["B"], x["C"], dt, rule, x["D"]), TOL)


# --- MIMO: LRU and S5 against the MIMO loop ---------------------------------------------------

def test_lru_vs_mimo_loop(rng):
    fn = ssmc.compile("lru", backend="numpy")
    x = random_inputs(fn.graph, dict(library.DEFAULT_SIZES["lru"], L=21), seed=seed_of(rng))
    lam = np.exp(-np.exp(x["nu_log"]) + 1j * np.exp(x["theta_log"]))  # λ = exp(-e^ν + i·e^θ)
    gamma = np.sqrt(1.0 - np.abs(lam) ** 2)  # the LRU's input normalization
    want = rf.mimo_loop(x["u"], lam, gamma[:, None] * x["B"], x["C"], x["D"])
    assert_close(fn(**x)["out"], want, TOL)


def test_s5_vs_mimo_loop(rng):
    fn = ssmc.compile("s5", backend="numpy")
    x = random_inputs(fn.graph, dict(library.DEFAULT_SIZES["s5"], L=21), seed=seed_of(rng))
    lam = -np.exp(x["A_log_re"]) + 1j * x["A_im"]
    dt = np.exp(x["log_dt"])
    A_bar = np.exp(dt * lam)  # ZOH, per state
    B_bar = ((A_bar - 1.0) / lam)[:, None] * x["B"]
    want = rf.mimo_loop(x["u"], A_bar, B_bar, x["C"], x["D"])
    assert_close(fn(**x)["out"], want, TOL)


# --- a user rule -----------------------------------------------------------------------------

@pytest.mark.parametrize("alpha", [0.0, 1.0 / 3.0, 0.5, 1.0])
def test_generalized_bilinear_rule(alpha, rng):
    """GBT(α): Ā = (1 + (1-α)ΔA)/(1 - αΔA), B̄ = Δ/(1 - αΔA)·B, against a hand-written loop."""
    spec = library.get("mamba1").with_(rule=library.generalized_bilinear(alpha), name="gbt")
    fn = ssmc.compile(spec, backend="numpy")
    x = random_inputs(fn.graph, dict(batch=2, dim=3, L=9, N=4), seed=seed_of(rng))
    x["A_log"] = np.log(rng.uniform(0.5, 2.0, x["A_log"].shape))  # |ΔA| < 3: the rule stays stable
    A = -np.exp(x["A_log"])
    dt = rf.softplus(x["delta"] + x["delta_bias"][:, None])
    h = np.zeros(x["A_log"].shape)[None].repeat(2, 0)
    y = np.empty_like(x["u"])
    for t in range(x["u"].shape[-1]):
        dA = dt[:, :, t, None] * A
        h = (1 + (1 - alpha) * dA) / (1 - alpha * dA) * h + \
            (dt[:, :, t, None] / (1 - alpha * dA)) * x["B"][:, None, :, t] * x["u"][:, :, t, None]
        y[:, :, t] = (h * x["C"][:, None, :, t]).sum(-1)
    want = (y + x["D"][:, None] * x["u"]) * rf.silu(x["z"])
    got = fn(**x)
    assert_close(got["out"], want, TOL, "out")
    assert_close(got["last_state"], h, TOL, "last_state")
