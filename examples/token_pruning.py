"""Token pruning in a vision SSM: VMamba's four SS2D directions scan only the tokens a mask keeps, each
in its own traversal of the grid, as partial gather orders (`unvisited="initial"`); the pruned tokens
see the zero state.  Declared once (the library's `ss2d_pruned` variant), run on NumPy and Triton with
gradients, and exported to ONNX with the orders as a graph input.

    python examples/token_pruning.py
"""
import numpy as np
import torch

import ssmc
from ssmc.export import export_onnx
from ssmc.ir.grid import kept_orders
from ssmc.ir.inits import random_inputs

H, W = 4, 6
variant = ssmc.library.get("ss2d_pruned")
graph = variant.build()
sizes = dict(variant.sizes, L=H * W)
x = random_inputs(graph, sizes, seed=0)
keep = np.random.default_rng(0).random((sizes["batch"], H * W)) < 0.6  # which tokens each image keeps
x["order"] = kept_orders(keep, H, W)  # (batch, 4, H·W): kept positions per direction, then -1
print("image 0, row-major order of its kept tokens:", x["order"][0, 0])

ref = ssmc.compile(graph, backend="numpy")(**x)["out"]
leaves = {k: torch.tensor(v, requires_grad=v.dtype != np.int64) for k, v in x.items()}
out = ssmc.compile(graph, backend="triton")(**leaves)["out"]  # the GPU when there is one, else the interpreter
err = np.linalg.norm(out.detach().numpy() - ref) / np.linalg.norm(ref)
print(f"NumPy vs Triton: relative error {err:.2e}")
assert err < 1e-5
out.sum().backward()
print("grad of u:", tuple(leaves["u"].grad.shape), "finite:", bool(torch.isfinite(leaves["u"].grad).all()))

model = export_onnx("ss2d_pruned", sizes=sizes)
print(f"ONNX: {len(model.graph.node)} nodes; inputs {[i.name for i in model.graph.input]}")
