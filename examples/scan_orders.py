"""Scan orders: Vision Mamba (forward + reverse), VMamba's SS2D (four 2-D orders, summed or gated),
RSMamba (a random path), MSVMamba (two scales), Hydra (bidirectional quasiseparable) and S5 with
episode resets — on the NumPy reference and the Triton backend.

    python examples/scan_orders.py

`ssmc.ops.multi_order_scan` runs K selective scans of one sequence, each along its own order with its
own parameters, and merges them: one generated kernel, the orders folded into its time index (no
permuted copies).  `multiscale_scan_2d` adds a half-resolution branch (with named orders the same one
kernel: the coarse orders are stride-2 views of the grid, upsampled as they are written); `hydra` mixes a sequence in
both directions with Mamba-2's SSD and is differentiable on Triton.  Exits non-zero if the backends
disagree.
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
from ssmc.ops import hydra, multi_order_scan, multiscale_scan_2d, scan_orders_2d

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


def compare(name, want, got):
    global worst
    got = got.detach().double().cpu().numpy() if isinstance(got, torch.Tensor) else got
    err = float(np.linalg.norm(got - want) / np.linalg.norm(want))
    worst = max(worst, err)
    print(f"{name}: out {got.shape}; NumPy vs Triton rel. error {err:.1e}")


def on_device(x):
    return {k: torch.tensor(v, dtype=torch.float32, device=device) for k, v in x.items()}


def scan_inputs(K):
    """Random inputs of a K-order scan of (batch, dim, L) with state size N."""
    return dict(u=rng.standard_normal((batch, dim, L)), delta=rng.uniform(-3, 0.5, (batch, K, dim, L)),
                A=-rng.uniform(0.5, 3, (K, dim, N)), B=rng.standard_normal((batch, K, N, L)),
                C=rng.standard_normal((batch, K, N, L)), D=rng.standard_normal((K, dim)),
                z=rng.standard_normal((batch, dim, L)), delta_bias=0.1 * rng.standard_normal((K, dim)))


for name, orders in families.items():
    x = scan_inputs(len(orders))
    want = multi_order_scan(**x, orders=orders, delta_softplus=True, backend="numpy")
    got = multi_order_scan(**on_device(x), orders=[torch.tensor(o, device=device) for o in orders],
                           delta_softplus=True, backend="triton")
    compare(f"{name}: K={len(orders)}", want, got)

# VMamba with a gated merge: out = silu(z) · Σ_k gate_k ⊙ result_k, the gate in sequence positions
x = scan_inputs(4)
t = on_device(x)
orders = scan_orders_2d(H, W, ["row", "col", "row_rev", "col_rev"])
gate = rng.uniform(0, 1, (batch, 4, dim, L))
want = multi_order_scan(**x, orders=orders, delta_softplus=True, merge="gated", gate=gate, backend="numpy")
got = multi_order_scan(**t, orders=[torch.tensor(o, device=device) for o in orders], delta_softplus=True,
                       merge="gated", gate=torch.tensor(gate, dtype=torch.float32, device=device), backend="triton")
compare("VMamba SS2D, gated merge", want, got)

# MSVMamba: row order at full resolution + three orders on the 3×4 stride-2 grid, upsampled and added
# (one graph: the coarse orders scan every other row and column in place; no subsampled or upsampled copy)
want = multiscale_scan_2d(**x, grid=(H, W), delta_softplus=True, backend="numpy")
got = multiscale_scan_2d(**t, grid=(H, W), delta_softplus=True, backend="triton")
compare("MSVMamba multi-scale (row | col, row_rev, col_rev at half resolution)", want, got)

# Hydra: forward + backward SSD (tied x and A, untied Δ, B, C), one-step shifts, D + fc_D(x) diagonal
b, seqlen, nh, p, g, n = 1, 16, 2, 2, 1, 4  # (batch, L, heads, head dim, groups, state)
hx = dict(x=rng.standard_normal((b, seqlen, nh, p)), dt=rng.uniform(-3, 0.5, (b, seqlen, 2, nh)),
          A=-rng.uniform(0.5, 2, nh), B=rng.standard_normal((b, seqlen, 2, g, n)),
          C=rng.standard_normal((b, seqlen, 2, g, n)), D=rng.standard_normal(nh),
          diag=rng.standard_normal((b, seqlen, nh)), dt_bias=0.1 * rng.standard_normal(nh))
want = hydra(**hx, dt_softplus=True, backend="numpy")
ht = {k: v.requires_grad_() for k, v in on_device(hx).items()}
got = hydra(**ht, dt_softplus=True, backend="triton")
got.square().sum().backward()  # autograd through the generated backward kernels
assert all(v.grad is not None and torch.isfinite(v.grad).all() for v in ht.values())
compare("Hydra (bidirectional, quasiseparable; gradients of all 8 inputs)", want, got)

# S5 for reinforcement learning: the state resets at episode starts (seq_idx changes)
spec = library.get("s5").with_(name="s5_episodes", seq_idx=True)
ref, tri = ssmc.compile(spec, backend="numpy"), ssmc.compile(spec, backend="triton")
x = random_inputs(ref.graph, dict(batch=2, L=40, H=5, N=4), seed=1)
x["seq_idx"] = np.repeat([0, 1, 2], [9, 20, 11])[None].repeat(2, 0)
want = ref(**x)["out"]
compare("S5 with episode resets at steps 9 and 29", want, tri(**x)["out"])
print("ok" if worst < TOL else "DISAGREE")
sys.exit(0 if worst < TOL else 1)
