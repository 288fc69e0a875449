"""Scan orders: Vision Mamba (forward + reverse), VMamba's SS2D (four 2-D orders), RSMamba (a random
path) and S5 with episode resets — on the NumPy reference and the Triton backend.

    python examples/scan_orders.py

`ssmc.ops.multi_order_scan` runs K selective scans of one sequence, each along its own order with its
own parameters, and sums them: one generated kernel, the orders folded into its time index (no
permuted copies).  Exits non-zero if the backends disagree.
"""
import os
import sys

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # Triton's CPU interpreter; set before any kernel exists

import numpy as np

import ssmc
from ssmc import library
from ssmc.inits import random_inputs
from ssmc.ops import multi_order_scan, scan_orders_2d

TOL = 1e-5
device = "cuda" if torch.cuda.is_available() else "cpu"
rng = np.random.default_rng(0)
H, W, batch, dim, N = 5, 7, 2, 8, 4  # an image of 5×7 patches
L = H * W
families = {
    "Vision Mamba (forward, reverse; untied)": [np.arange(L), np.arange(L)[::-1].copy()],
    "VMamba SS2D (row, col, row_rev, col_rev)": scan_orders_2d(H, W, ["row", "col", "row_rev", "col_rev"]),
    "RSMamba (forward, reverse, random path)": [np.arange(L), np.arange(L)[::-1].copy(), rng.permutation(L)],
}
print(f"snake_row order of a 2x3 grid: {scan_orders_2d(2, 3, 'snake_row')[0].tolist()}\n")
worst = 0.0
for name, orders in families.items():
    K = len(orders)
    x = dict(u=rng.standard_normal((batch, dim, L)), delta=rng.uniform(-3, 0.5, (batch, K, dim, L)),
             A=-rng.uniform(0.5, 3, (K, dim, N)), B=rng.standard_normal((batch, K, N, L)),
             C=rng.standard_normal((batch, K, N, L)), D=rng.standard_normal((K, dim)),
             z=rng.standard_normal((batch, dim, L)), delta_bias=0.1 * rng.standard_normal((K, dim)))
    want = multi_order_scan(**x, orders=orders, delta_softplus=True, backend="numpy")
    t = {k: torch.tensor(v, dtype=torch.float32, device=device) for k, v in x.items()}
    got = multi_order_scan(**t, orders=[torch.tensor(o, device=device) for o in orders], delta_softplus=True,
                           backend="triton").double().cpu().numpy()
    err = float(np.linalg.norm(got - want) / np.linalg.norm(want))
    worst = max(worst, err)
    print(f"{name}: K={K}, out {got.shape}; NumPy vs Triton rel. error {err:.1e}")

# S5 for reinforcement learning: the state resets at episode starts (seq_idx changes)
spec = library.get("s5").with_(name="s5_episodes", seq_idx=True)
ref, tri = ssmc.compile(spec, backend="numpy"), ssmc.compile(spec, backend="triton")
x = random_inputs(ref.graph, dict(batch=2, L=40, H=5, N=4), seed=1)
x["seq_idx"] = np.repeat([0, 1, 2], [9, 20, 11])[None].repeat(2, 0)
want = ref(**x)["out"]
got = tri(**x)["out"]
err = float(np.linalg.norm(got - want) / np.linalg.norm(want))
worst = max(worst, err)
print(f"S5 with episode resets at steps 9 and 29: NumPy vs Triton rel. error {err:.1e}")
print("ok" if worst < TOL else "DISAGREE")
sys.exit(0 if worst < TOL else 1)
