"""Mamba-1 (S6 selective scan) from the ssmc library, on the NumPy reference and the Triton backend.

    python examples/mamba1.py

Prints the optimized IR, then the relative error of the generated Triton kernel (fp32) against
the float64 NumPy interpreter for a few lengths, and exits non-zero if they disagree.
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

TOL = 1e-5  # fp32 kernel vs float64 reference


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


spec = library.get("mamba1")
print(f"{spec.name}: {spec.description}\n")
ref = ssmc.compile(spec, backend="numpy")  # the float64 NumPy interpreter
tri = ssmc.compile(spec, backend="triton")  # one generated, fused Triton kernel
print(ref.graph.text())

worst = 0.0
for L in (1, 16, 50):
    x = random_inputs(ref.graph, dict(batch=2, dim=8, N=4, L=L), seed=L)
    want, got = ref(**x), tri(**x)
    errs = {k: rel(got[k], want[k]) for k in want}
    worst = max([worst, *errs.values()])
    print(f"L={L:<3} " + "  ".join(f"{k}: {e:.1e}" for k, e in errs.items()))

print(f"\nNumPy vs Triton: max relative error {worst:.1e} ({'ok' if worst <= TOL else 'DISAGREE'})")
sys.exit(0 if worst <= TOL else 1)
