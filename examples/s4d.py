"""S4D (LTI, complex diagonal) with the ZOH and the bilinear rule; NumPy vs Triton, and vs a convolution.

    python examples/s4d.py

An LTI SSM is also a causal convolution with the kernel K_k = 2·Re(Σ_n C_n B̄_n Ā_n^k).  This
script checks the compiled scan (both backends) against that FFT convolution, written here
directly from the S4D equations, for both discretization rules.
"""
import os
import sys

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # Triton's CPU interpreter; set before any kernel exists

import numpy as np

import ssmc
from ssmc import library
from ssmc.ir.inits import random_inputs

TOL = 1e-5


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def s4d_conv(x, rule):
    """S4D as an FFT convolution: u (batch, dim, L); log_dt (dim,); A, B, C (dim, N)."""
    dt = np.exp(x["log_dt"])[:, None]
    A = -np.exp(x["A_log_re"]) + 1j * x["A_im"]
    if rule == "zoh":
        A_bar, B_bar = np.exp(dt * A), (np.exp(dt * A) - 1) / A * x["B"]
    else:  # bilinear (Tustin)
        A_bar, B_bar = (1 + dt * A / 2) / (1 - dt * A / 2), dt / (1 - dt * A / 2) * x["B"]
    L = x["u"].shape[-1]
    powers = A_bar[..., None] ** np.arange(L)  # (dim, N, L)
    K = 2 * np.einsum("dn,dnl->dl", x["C"] * B_bar, powers).real
    n = 2 * L  # zero-padded: a linear, not circular, convolution
    y = np.fft.irfft(np.fft.rfft(x["u"], n) * np.fft.rfft(K, n), n)[..., :L]
    return y + x["D"][:, None] * x["u"]


worst = 0.0
for name in ("s4d_zoh", "s4d_bilinear"):
    spec = library.get(name)
    print(f"{name}: {spec.description}")
    ref, tri = ssmc.compile(spec, backend="numpy"), ssmc.compile(spec, backend="triton")
    scan = next(ln for ln in ref.graph.text().splitlines() if "scan" in ln)
    print(f"  scan node: {scan.strip()}")  # lti=True: Ā and B̄ are computed once, before the time loop
    for L in (1, 32):
        x = random_inputs(ref.graph, dict(batch=2, dim=4, N=8, L=L), seed=L)
        want, got = ref(**x)["out"], tri(**x)["out"]
        conv = s4d_conv(x, spec.rule)
        e_tri, e_conv = rel(got, want), rel(conv, want)
        worst = max(worst, e_tri)
        ok_conv = e_conv <= 1e-10
        print(f"  L={L:<3} NumPy vs Triton: {e_tri:.1e}   NumPy scan vs FFT convolution: {e_conv:.1e}"
              f"{'' if ok_conv else '  DISAGREE'}")
        if not ok_conv:
            worst = float("inf")

print(f"\nNumPy vs Triton: max relative error {worst:.1e} ({'ok' if worst <= TOL else 'DISAGREE'})")
sys.exit(0 if worst <= TOL else 1)
