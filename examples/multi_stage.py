"""A graph with two scans and lags, declared once and run on every backend: Hydra's bidirectional mixer
(the library's `hydra_graph` variant), checked against its NumPy reference and exported to ONNX.

    python examples/multi_stage.py
"""
import numpy as np

import ssmc
from ssmc.export import export_onnx
from ssmc.ir.inits import random_inputs

variant = ssmc.library.get("hydra_graph")
graph = variant.build()
print(graph.text())

sizes = dict(variant.sizes, L=24)
x = random_inputs(graph, sizes, seed=0)
ref = ssmc.compile(graph, backend="numpy")
tri = ssmc.compile(graph, backend="triton")  # the GPU when there is one, else Triton's interpreter
for k, step in enumerate(tri.staged.plan.steps):
    print(f"step {k}:", f"kernel with {len(step.graph.ids('scan'))} scan(s)" if step.graph is not None
          else f"{step.target} = {step.op.op}({', '.join(step.sources)}, k={step.op.attr('k')})")
y_ref, y_tri = ref(**x)["y"], tri(**x)["y"]
err = np.linalg.norm(y_tri - y_ref) / np.linalg.norm(y_ref)
print(f"NumPy vs Triton: relative error {err:.2e}")
assert err < 1e-5

model = export_onnx("hydra_graph", sizes=sizes)
print(f"ONNX: {len(model.graph.node)} nodes; the lags are Pad + Slice, each scan its own lowering")
