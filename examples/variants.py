"""Every published variant the library declares as one IR graph (`ssmc.library.VARIANTS`: Hydra, H3, Vim,
Point Cloud Mamba, Graph-Mamba, token-pruned SS2D, RSMamba, HiSS, Hyena, Liquid-S4, MambaMixer, GroupMamba,
GSS): each built, run on NumPy and Triton (the GPU when there is one, else Triton's interpreter) with a
gradient, and exported to ONNX.  `ssmc show NAME` prints one's graph and steps.

    python examples/variants.py
"""
import numpy as np
import torch

import ssmc
from ssmc.export import export_onnx
from ssmc.ir.inits import random_inputs

device = "cuda" if torch.cuda.is_available() else "cpu"
for name, variant in sorted(ssmc.library.VARIANTS.items()):
    graph = variant.build()
    sizes = dict(variant.sizes, L=min(variant.sizes["L"], 12))
    x = random_inputs(graph, sizes, seed=0)
    ref = ssmc.compile(graph, backend="numpy")(**x)
    fn = ssmc.compile(graph, backend="triton")
    leaves = {k: torch.tensor(v, device=device, requires_grad=v.dtype != np.int64) for k, v in x.items()}
    out = fn(**leaves)
    err = max(np.linalg.norm(out[k].detach().cpu().numpy() - ref[k]) / np.linalg.norm(ref[k]) for k in ref)
    sum((v.real if v.is_complex() else v).sum() for v in out.values()).backward()  # (a complex state too)
    assert err < 1e-6, (name, err)
    model = export_onnx(name, sizes={k: v for k, v in sizes.items() if k not in ("batch", "L")})
    print(f"{name:18s} {len(fn.staged.plan.steps):2d} steps   NumPy vs Triton {err:.1e}   "
          f"grads of {sum(v.grad is not None for v in leaves.values())} inputs   ONNX {len(model.graph.node)} nodes")
