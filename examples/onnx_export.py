"""ONNX export: a Mamba-2 layer as a graph of fixed size, run in onnxruntime, fed in pieces.

    python examples/onnx_export.py

The graph is lowered from the IR with onnx.helper (no tracing): batch and L stay symbolic, the
scan becomes Mamba-2's chunked SSD form (MatMuls), and the state goes in and comes out, so a
long sequence can be streamed in pieces.  Everything is checked against the NumPy interpreter.
"""
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

import ssmc
import ssmc.export
from ssmc.backends import numpy_interp
from ssmc.ir.inits import random_inputs

TOL = 1e-4  # fp32 graph vs the float64 reference
sizes = dict(H=4, P=16, G=1, N=16)  # fixed at export; batch and L are not

path = Path(tempfile.mkdtemp()) / "ssd.onnx"
model = ssmc.export_onnx("ssd", path, sizes=sizes)  # mamba_chunk_scan_combined, full form
print(f"{path.name}: {len(model.graph.node)} nodes, {path.stat().st_size / 1024:.1f} KiB")
print("inputs:", [v.name for v in model.graph.input])
print(next(p.value for p in model.metadata_props if p.key == "ssmc.lowering"))

graph = ssmc.export.OP_FORMS["ssd"][0].build()
sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
ok = True


def run(arrays):
    feed = {v.name: np.asarray(arrays[v.name], np.float32) for v in model.graph.input}
    return dict(zip(["out", "final_states"], sess.run(None, feed)))


def err(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


for L in (1, 100, 777):  # one graph for every length
    x = random_inputs(graph, {**sizes, "batch": 2, "L": L}, seed=L)
    ref = numpy_interp.run(graph, x)
    got = run(x)
    e = max(err(got[k], ref[k]) for k in ref)
    ok &= e < TOL
    print(f"NumPy vs ONNX (onnxruntime), L={L:4d}: rel. error {e:.1e}")

# streaming: three pieces with the state carried equal one run over the whole sequence
x = random_inputs(graph, {**sizes, "batch": 2, "L": 300}, seed=1)
ref = numpy_interp.run(graph, x)
state, outs = x["initial_states"], []
for lo, hi in ((0, 1), (1, 130), (130, 300)):
    piece = {k: (v[:, lo:hi] if k in ("x", "dt", "B", "C", "z") else v) for k, v in x.items()}
    got = run({**piece, "initial_states": state})
    outs.append(got["out"])
    state = got["final_states"]
e = max(err(np.concatenate(outs, axis=1), ref["out"]), err(state, ref["final_states"]))
ok &= e < TOL
print(f"NumPy vs ONNX, streamed in 3 pieces: rel. error {e:.1e}")
print("ok" if ok else "DISAGREE")
sys.exit(0 if ok else 1)
