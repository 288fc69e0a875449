"""LRU (Linear Recurrent Unit): a complex diagonal MIMO recurrence; NumPy vs Triton, and vs a loop.

    python examples/lru.py

λ = exp(-exp(ν) + i·exp(θ)) is the discrete eigenvalue itself (rule "direct"); the input is
normalized by γ = √(1 - |λ|²); one state of size N is shared by all H channels (MIMO):
    h_t = λ ⊙ h_{t-1} + γ ⊙ (B u_t),   y_t = Re(C h_t) + D ⊙ u_t
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


def lru_loop(x):
    """The LRU recurrence, step by step: u (batch, L, H); ν, θ (N,); B (N, H); C (H, N); D (H,)."""
    lam = np.exp(-np.exp(x["nu_log"]) + 1j * np.exp(x["theta_log"]))
    gamma = np.sqrt(1 - np.abs(lam) ** 2)
    h = np.zeros((x["u"].shape[0], lam.size), complex)
    ys = []
    for t in range(x["u"].shape[1]):
        h = lam * h + gamma * (x["u"][:, t] @ x["B"].T)
        ys.append((h @ x["C"].T).real + x["D"] * x["u"][:, t])
    return np.stack(ys, axis=1)


spec = library.get("lru")
print(f"{spec.name}: {spec.description}\n")
ref, tri = ssmc.compile(spec, backend="numpy"), ssmc.compile(spec, backend="triton")
print("inputs: " + ", ".join(ref.graph.inputs))

worst, ok_loop = 0.0, True
for L in (1, 40):
    x = random_inputs(ref.graph, dict(batch=2, H=6, N=8, L=L), seed=L)
    want, got = ref(**x)["out"], tri(**x)["out"]
    e_tri, e_loop = rel(got, want), rel(lru_loop(x), want)
    worst, ok_loop = max(worst, e_tri), ok_loop and e_loop <= 1e-10
    print(f"L={L:<3} NumPy vs Triton: {e_tri:.1e}   NumPy vs the loop above: {e_loop:.1e}")
lam = np.abs(np.exp(-np.exp(x["nu_log"]) + 1j * np.exp(x["theta_log"])))
print(f"|λ| in [{lam.min():.2f}, {lam.max():.2f}] (the LRU ring init: stable)")

ok = worst <= TOL and ok_loop
print(f"\nNumPy vs Triton: max relative error {worst:.1e} ({'ok' if ok else 'DISAGREE'})")
sys.exit(0 if ok else 1)
