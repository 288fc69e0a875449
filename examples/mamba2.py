"""Mamba-2 (SSD): scalar A per head, grouped B/C, initial and final states; NumPy vs Triton.

    python examples/mamba2.py

Besides the backend comparison this shows state passing: running a sequence in two pieces,
the second starting from the first's `final_states`, gives the same output as one run.
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


spec = library.get("mamba2")
print(f"{spec.name}: {spec.description}\n")
ref, tri = ssmc.compile(spec, backend="numpy"), ssmc.compile(spec, backend="triton")
print("inputs: " + ", ".join(ref.graph.inputs) + "   outputs: " + ", ".join(ref.graph.outputs))

worst = 0.0
sizes = dict(batch=2, H=4, P=3, G=2, N=8)  # 4 heads read 2 groups of B/C
for L in (1, 24):
    x = random_inputs(ref.graph, dict(sizes, L=L), seed=L)
    want, got = ref(**x), tri(**x)
    errs = {k: rel(got[k], want[k]) for k in want}
    worst = max([worst, *errs.values()])
    print(f"L={L:<3} " + "  ".join(f"{k}: {e:.1e}" for k, e in errs.items()))

# State passing: [0, 10) then [10, 24) from the first piece's final state, on the Triton backend.
x = random_inputs(ref.graph, dict(sizes, L=24), seed=0)
full = ref(**x)
seq = {"x", "dt", "B", "C", "z"}  # the inputs with a time axis (axis 1)
first = tri(**{k: v[:, :10] if k in seq else v for k, v in x.items()})
rest = {k: v[:, 10:] if k in seq else v for k, v in x.items()}
second = tri(**dict(rest, initial_states=first["final_states"]))
pieces = np.concatenate([first["out"], second["out"]], axis=1)
err_split = max(rel(pieces, full["out"]), rel(second["final_states"], full["final_states"]))
print(f"two pieces chained by final_states -> initial_states vs one run: {err_split:.1e}")
worst = max(worst, err_split)

print(f"\nNumPy vs Triton: max relative error {worst:.1e} ({'ok' if worst <= TOL else 'DISAGREE'})")
sys.exit(0 if worst <= TOL else 1)
