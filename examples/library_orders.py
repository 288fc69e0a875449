"""The scan-order families of `ssmc.library` — Vim, VMamba SS2D, MSVMamba, Hydra, bidirectional S4D
and S5, Point Cloud Mamba, RSMamba, S5 with episode resets, packed variable-length Mamba-2 — each
run through its catalogue entry on the NumPy reference and on the Triton backend.

    python examples/library_orders.py

`ssmc.library.family(name)` says how a family makes its orders, merges them and ties its
parameters, and its `run` calls the op (`ssmc list` prints the table).  Exits non-zero if the
backends disagree.
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
from ssmc.runtime.arrays import as_torch

TOL = 1e-5
device = "cuda" if torch.cuda.is_available() else "cpu"
rng = np.random.default_rng(0)
H, W, batch, dim, N = 5, 7, 2, 8, 4  # an image of 5×7 patches; the 1-D families use L = 35 too
L = H * W


def scan(K, tied=()):
    """Inputs of K selective scans of one sequence; a tied parameter is given once (no K axis)."""
    k = lambda name: () if name in tied else (K,)  # noqa: E731
    return dict(u=rng.standard_normal((batch, dim, L)), delta=rng.uniform(-3, 0.5, (batch, K, dim, L)),
                A=-rng.uniform(0.5, 3, k("A") + (dim, N)), B=rng.standard_normal((batch, K, N, L)),
                C=rng.standard_normal((batch, K, N, L)), D=rng.standard_normal(k("D") + (dim,)),
                z=rng.standard_normal((batch, dim, L)), delta_bias=0.1 * rng.standard_normal(k("delta_bias") + (dim,)))


def lti(name, sizes, C_per_direction=True):
    """A library Spec's inputs; C stacked (forward, backward) for the bidirectional layers."""
    x = random_inputs(ssmc.compile(library.get(name), backend="numpy").graph, sizes, seed=1)
    if C_per_direction:
        x["C"] = np.stack([x["C"], rng.standard_normal(x["C"].shape) + 1j * rng.standard_normal(x["C"].shape)])
    return x


def ssd_like(backward_too):
    """Mamba-2 inputs (x (batch, L, heads, P)); Hydra's Δ, B, C carry a direction axis."""
    two = (2,) if backward_too else ()
    heads, P, G = 2, 4, 1
    return dict(x=rng.standard_normal((batch, L, heads, P)), dt=rng.uniform(-3, 0.5, (batch, L) + two + (heads,)),
                A=-rng.uniform(0.5, 2, heads), B=rng.standard_normal((batch, L) + two + (G, N)),
                C=rng.standard_normal((batch, L) + two + (G, N)), D=rng.standard_normal(heads),
                dt_bias=0.1 * rng.standard_normal(heads))


episodes = np.repeat([0, 1, 2], [9, 20, 6])[None].repeat(batch, 0)  # resets at steps 9 and 29
inputs = {
    "vim": scan(2),
    "vmamba_ss2d": dict(scan(4), grid=(H, W)),
    "msvmamba": dict(scan(4), grid=(H, W)),
    "hydra": dict(ssd_like(True), diag=rng.standard_normal((batch, L, 2))),
    "s4d_bidirectional": lti("s4d_zoh", dict(batch=batch, dim=dim, N=N, L=L)),
    "s5_bidirectional": lti("s5", dict(batch=batch, H=dim, N=N, L=L)),
    "pointcloud_mamba": dict(scan(3), orders=[np.argsort(rng.standard_normal(L)) for _ in range(3)]),  # serializations
    "rsmamba": dict(scan(3, tied=("A", "D", "delta_bias")), seed=7,
                    gate=np.broadcast_to(rng.dirichlet(np.ones(3), batch)[:, :, None, None],
                                         (batch, 3, dim, L)).copy()),
    "s5_episodes": dict(lti("s5", dict(batch=batch, H=dim, N=N, L=L), C_per_direction=False), seq_idx=episodes),
    "mamba2_varlen": dict(ssd_like(False), z=rng.standard_normal((batch, L, 2, 4)), seq_idx=episodes),
}
assert set(inputs) == set(library.FAMILIES)


worst = 0.0
for name, f in library.FAMILIES.items():
    x = inputs[name]
    want = f.run(**x, backend="numpy")
    got = f.run(**as_torch(x, device), backend="triton").double().cpu().numpy()
    err = float(np.linalg.norm(got - want) / np.linalg.norm(want))
    worst = max(worst, err)
    print(f"{name:<18} {f.op:<36} out {tuple(got.shape)}; NumPy vs Triton rel. error {err:.1e}")
print("ok" if worst < TOL else "DISAGREE")
sys.exit(0 if worst < TOL else 1)
