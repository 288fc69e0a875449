"""S5: one complex diagonal state shared by all channels (MIMO), per-state Δ, ZOH; NumPy vs Triton.

    python examples/s5.py

    Λ = -exp(A_log_re) + i·A_im,  Δ = exp(log_dt)           (N,)
    Λ̄ = exp(ΔΛ),  B̄ = (Λ̄ - 1)/Λ ⊙ B                        B: (N, H)
    h_t = Λ̄ ⊙ h_{t-1} + B̄ u_t,   y_t = Re(C h_t) + D ⊙ u_t   C: (H, N)
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


def s5_loop(x):
    """The S5 recurrence, step by step, from the equations in the docstring."""
    lam = -np.exp(x["A_log_re"]) + 1j * x["A_im"]
    dt = np.exp(x["log_dt"])
    lam_bar = np.exp(dt * lam)
    B_bar = ((lam_bar - 1) / lam)[:, None] * x["B"]
    h = np.zeros((x["u"].shape[0], lam.size), complex)
    ys = []
    for t in range(x["u"].shape[1]):
        h = lam_bar * h + x["u"][:, t] @ B_bar.T
        ys.append((h @ x["C"].T).real + x["D"] * x["u"][:, t])
    return np.stack(ys, axis=1)


spec = library.get("s5")
print(f"{spec.name}: {spec.description}\n")
ref, tri = ssmc.compile(spec, backend="numpy"), ssmc.compile(spec, backend="triton")
print(ref.graph.text())

worst, ok_loop = 0.0, True
for L in (1, 40):
    x = random_inputs(ref.graph, dict(batch=2, H=6, N=8, L=L), seed=L)
    want, got = ref(**x)["out"], tri(**x)["out"]
    e_tri, e_loop = rel(got, want), rel(s5_loop(x), want)
    worst, ok_loop = max(worst, e_tri), ok_loop and e_loop <= 1e-10
    print(f"L={L:<3} NumPy vs Triton: {e_tri:.1e}   NumPy vs the loop above: {e_loop:.1e}")

ok = worst <= TOL and ok_loop
print(f"\nNumPy vs Triton: max relative error {worst:.1e} ({'ok' if ok else 'DISAGREE'})")
sys.exit(0 if ok else 1)
