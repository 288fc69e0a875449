"""CPU benchmark of the ONNX export: ssmc's graphs vs torch.onnx.export of a plain PyTorch loop.

    python benchmarks/bench_onnx.py [--lengths 256,1024,4096] [--repeats 5] [--md FILE]

For three layers (Mamba-2 SSD, Mamba-1 selective scan, S4D) and each L it reports, in
onnxruntime on the CPU: run time (median of `repeats` after one warm-up run), node count (main
graph; with subgraphs in brackets), file size, export time, and whether the sequence length
stayed dynamic (the same model run at L+13 gives the right answer).  Contenders:
  * ssmc's default lowering (Mamba-2: chunked SSD; others: one Scan), exported once for every L;
  * ssmc with every scan forced to a per-token Scan (the "Scan-per-step" baseline for Mamba-2);
  * ssmc's DFT convolution for S4D (`lti="dft"`);
  * torch.onnx.export of a PyTorch loop implementation, with the TorchScript exporter
    (dynamo=False, dynamic_axes on L) and the dynamo exporter (dynamic_shapes on L).
Every output is checked against ssmc's NumPy interpreter (float64) at that L.
Needs onnxscript for the dynamo exporter (pip install onnxscript); it is reported as failed
without it.
"""
from __future__ import annotations

import argparse
import io
import statistics
import time
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F

from ssmc.backends import numpy_interp
from ssmc.export import OP_FORMS, export_onnx, onnx_inputs, stateful_graph
from ssmc.ir.inits import random_inputs
from ssmc.library import get

LAYERS = {
    # name: (declaration, fixed sizes, batch)
    "mamba2 (ssd)": (OP_FORMS["ssd"][0], dict(H=8, P=64, G=1, N=64), 1),
    "mamba1 (selective_scan)": (OP_FORMS["selective_scan"][0], dict(dim=256, N=16), 1),
    "s4d_zoh": (get("s4d_zoh"), dict(dim=256, N=32), 1),
}


# --- the PyTorch loops users would export ---------------------------------------------------

class Mamba2Loop(torch.nn.Module):
    def forward(self, x, dt, A, B, C, D, z, dt_bias, h):
        dt = F.softplus(dt + dt_bias)  # (b, L, H)
        rep = x.shape[2] // B.shape[2]
        B, C = B.repeat_interleave(rep, 2), C.repeat_interleave(rep, 2)  # (b, L, H, N)
        ys = []
        for t in range(x.shape[1]):
            h = torch.exp(dt[:, t, :, None, None] * A[:, None, None]) * h + \
                (dt[:, t, :, None, None] * x[:, t, :, :, None]) * B[:, t, :, None, :]
            ys.append((h * C[:, t, :, None, :]).sum(-1))
        y = torch.stack(ys, 1) + D[:, None] * x
        return y * F.silu(z), h


class Mamba1Loop(torch.nn.Module):
    def forward(self, u, delta, A, B, C, D, z, delta_bias, h):
        delta = F.softplus(delta + delta_bias[:, None])  # (b, dim, L)
        ys = []
        for t in range(u.shape[2]):
            h = torch.exp(delta[:, :, t, None] * A) * h + (delta[:, :, t, None] * u[:, :, t, None]) * B[:, None, :, t]
            ys.append((h * C[:, None, :, t]).sum(-1))
        y = torch.stack(ys, -1) + D[:, None] * u
        return y * F.silu(z), h


class S4DLoop(torch.nn.Module):
    """ZOH S4D with complex numbers as (re, im) pairs (the exporters take no complex tensors)."""

    def forward(self, u, log_dt, A_log_re, A_im, B, C, h, D):
        dt = torch.exp(log_dt)[:, None]
        ar, ai = -torch.exp(A_log_re) * dt, A_im * dt  # ΔA
        mag = torch.exp(ar)
        abr, abi = mag * torch.cos(ai), mag * torch.sin(ai)  # Ā = exp(ΔA)
        den = torch.exp(A_log_re) ** 2 + A_im ** 2  # B̄ = (Ā - 1)/A · B
        sr = ((abr - 1) * -torch.exp(A_log_re) + abi * A_im) / den
        si = (abi * -torch.exp(A_log_re) - (abr - 1) * A_im) / den
        bbr, bbi = sr * B[..., 0] - si * B[..., 1], sr * B[..., 1] + si * B[..., 0]
        hr, hi = h[..., 0], h[..., 1]
        ys = []
        for t in range(u.shape[2]):
            ut = u[:, :, t, None]
            hr, hi = abr * hr - abi * hi + bbr * ut, abr * hi + abi * hr + bbi * ut
            ys.append(2 * (C[..., 0] * hr - C[..., 1] * hi).sum(-1))
        return torch.stack(ys, -1) + D[:, None] * u, torch.stack([hr, hi], -1)


LOOPS = {"mamba2 (ssd)": Mamba2Loop, "mamba1 (selective_scan)": Mamba1Loop, "s4d_zoh": S4DLoop}


# --- helpers ----------------------------------------------------------------------------------

def count_nodes(graph) -> int:
    n = 0
    for node in graph.node:
        n += 1
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                n += count_nodes(a.g)
    return n


def rel(a, b) -> float:
    b = np.stack([b.real, b.imag], -1) if np.iscomplexobj(b) else b
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def timed(sess, inputs, repeats) -> tuple:
    out = sess.run(None, inputs)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, inputs)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), out


def session(model_bytes):
    return ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])


def torch_export(layer, arrays, names, dynamo: bool, time_axis: dict) -> bytes:
    args = tuple(torch.from_numpy(np.asarray(_real_pairs(arrays[k]), np.float32)) for k in names)
    mod = LOOPS[layer]()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            L = torch.export.Dim("L", min=2)
            shapes = tuple({time_axis[k]: L} if k in time_axis else None for k in names)
            prog = torch.onnx.export(mod, args, dynamo=True, dynamic_shapes=shapes, input_names=list(names))
            return prog.model_proto.SerializeToString()
        torch.onnx.export(mod, args, buf, dynamo=False, input_names=list(names), output_names=["out", "state"],
                          dynamic_axes={k: {time_axis[k]: "L"} for k in names if k in time_axis}, opset_version=17)
    return buf.getvalue()


def _real_pairs(x):
    x = np.asarray(x)
    return np.stack([x.real, x.imag], -1) if np.iscomplexobj(x) else x


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", default="256,1024,4096")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--md", help="also write the table to this file")
    ap.add_argument("--dynamo-max-L", type=int, default=256,
                    help="skip the dynamo exporter above this L (its export time grows with L: minutes)")
    args = ap.parse_args(argv)
    lengths = [int(v) for v in args.lengths.split(",")]
    rows = ["| layer | L | graph | ms | vs ssmc | nodes (with subgraphs) | KiB | export s | L dynamic | rel. err |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    print(f"onnxruntime {ort.__version__}, onnx {onnx.__version__}, torch {torch.__version__}, "
          f"{ort.get_device()}, intra-op threads default")
    for layer, (decl, fixed, batch) in LAYERS.items():
        graph, _ = stateful_graph(decl, step=False)
        names = [graph[i].attr("name") for i in graph.ids("input")]
        order = OP_FORMS[decl.name][1] if decl.name in OP_FORMS else tuple(names)
        time_axis = {graph[i].attr("name"): k for i in graph.ids("input")
                     for k, a in enumerate(graph[i].attr("axes")) if a.role == "t"}
        contenders = {"ssmc": dict()}
        if decl.state == "scalar_head":
            contenders["ssmc, Scan per step (forced)"] = dict(force_scan=True)
        if decl.name == "s4d_zoh":
            contenders["ssmc, DFT convolution"] = dict(lti="dft")
        models = {}
        for label, opts in contenders.items():
            t0 = time.perf_counter()
            m = export_onnx(decl, sizes=fixed, **opts)
            models[label] = (m.SerializeToString(), time.perf_counter() - t0, m)
        for L in lengths:
            sizes = {**fixed, "batch": batch, "L": L}
            x = random_inputs(graph, sizes, seed=L)
            ref = numpy_interp.run(graph, x)
            x_other = random_inputs(graph, {**sizes, "L": L + 13}, seed=L + 1)
            ref_other = numpy_interp.run(graph, x_other)["out"]
            base = None
            results = {}
            for label, (blob, export_s, m) in models.items():
                sess = session(blob)
                ms, out = timed(sess, onnx_inputs(m, x), args.repeats)
                err = rel(out[0], ref["out"])
                dyn = rel(sess.run(None, onnx_inputs(m, x_other))[0], ref_other) < 1e-3
                results[label] = (ms, count_nodes(m.graph), len(m.graph.node), len(blob) / 1024, export_s, dyn, err)
            for dynamo in (False, True):
                label = f"torch.onnx.export loop ({'dynamo' if dynamo else 'TorchScript'})"
                if dynamo and L > args.dynamo_max_L:
                    results[label] = f"not run above L={args.dynamo_max_L} (export time)"
                    continue
                try:
                    t0 = time.perf_counter()
                    blob = torch_export(layer, x, order, dynamo, time_axis)
                    export_s = time.perf_counter() - t0
                    m = onnx.load_from_string(blob)
                    sess = session(blob)
                    inputs = {v.name: np.asarray(_real_pairs(x[v.name]), np.float32) for v in m.graph.input}
                    ms, out = timed(sess, inputs, args.repeats)
                    err = rel(out[0], ref["out"])
                    try:
                        other = {v.name: np.asarray(_real_pairs(x_other[v.name]), np.float32) for v in m.graph.input}
                        dyn = rel(sess.run(None, other)[0], ref_other) < 1e-3
                    except Exception:  # noqa: BLE001 - a fixed-length graph refuses another L
                        dyn = False
                    results[label] = (ms, count_nodes(m.graph), len(m.graph.node), len(blob) / 1024, export_s, dyn, err)
                except Exception as e:  # noqa: BLE001 - the row says why the exporter failed
                    results[label] = f"export failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
            base = results["ssmc"][0]
            for label, r in results.items():
                if isinstance(r, str):
                    rows.append(f"| {layer} | {L} | {label} | — | — | — | — | — | — | {r} |")
                    continue
                ms, total, main_nodes, kib, export_s, dyn, err = r
                rows.append(f"| {layer} | {L} | {label} | {ms:.2f} | {ms / base:.2f}× | {main_nodes} ({total}) | "
                            f"{kib:.0f} | {export_s:.2f} | {'yes' if dyn else 'no'} | {err:.1e} |")
            print("\n".join(rows[-len(results):]), flush=True)
    table = "\n".join(rows)
    print("\n" + table)
    if args.md:
        with open(args.md, "w") as f:
            f.write(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
