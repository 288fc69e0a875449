"""ONNX export of a declaration: `export_onnx(spec_or_name, path, **options)`.

Every exported graph takes the state in and gives it out (the Spec's initial/final-state names,
or `state` / `state_out` for a raw Graph), so a sequence can be fed in pieces; `step=True`
exports the single-token decode graph instead.  batch and L stay symbolic; every other size is
fixed from `sizes` (library entries default to their DEFAULT_SIZES).

Names accepted besides library entries are the two drop-in ops in their full form:
  * "selective_scan" (sizes dim, N): inputs u, delta, A, B, C, D, z, delta_bias, initial_state,
    B and C (batch, N, L), delta_softplus on; outputs out, last_state.
  * "ssd" (sizes H, P, G, N): inputs x, dt, A, B, C, D, z, dt_bias, initial_states, D (H,),
    dt_softplus on; outputs out, final_states.
Complex inputs and outputs are real tensors with a trailing axis of 2 (re, im).
"""
from __future__ import annotations

from pathlib import Path

import onnx

from ssmc.backends.onnx import DEFAULT_OPSET, to_onnx
from ssmc.ir import Graph
from ssmc.ir.passes.step import STATE, single_step, stateful

from . import library
from .spec import Spec, _layout

OP_FORMS = {
    "selective_scan": (
        Spec("selective_scan", state="diag_real", A="direct", rule="zoh_euler", dt="softplus", dt_bias=True,
             skip="h", gate="silu", h0=True, final_state=True,
             description="mamba_ssm's selective_scan_fn, full form"),
        ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state"), ("dim", "N")),
    "ssd": (
        Spec("ssd", state="scalar_head", A="direct", rule="zoh_euler", dt="softplus", dt_bias=True,
             groups=True, skip="h", gate="silu", h0=True, final_state=True,
             description="mamba_ssm's mamba_chunk_scan_combined, full form"),
        ("x", "dt", "A", "B", "C", "D", "z", "dt_bias", "initial_states"), ("H", "P", "G", "N")),
}


def exportable_names() -> list:
    return sorted(library.ENTRIES) + sorted(OP_FORMS)


def _resolve(decl, sizes):
    """(Spec or Graph, sizes, input order) for a name, a Spec or a Graph."""
    if isinstance(decl, str):
        if decl in OP_FORMS:
            spec, order, need = OP_FORMS[decl]
            missing = [k for k in need if k not in (sizes or {})]
            if missing:
                raise ValueError(f"sizes: exporting {decl!r} needs {list(need)}, missing {missing}")
            return spec, dict(sizes), order
        spec = library.get(decl)
        base = {k: v for k, v in library.DEFAULT_SIZES[decl].items()}
        return spec, {**base, **(sizes or {})}, ()
    if isinstance(decl, (Spec, Graph)):
        return decl, dict(sizes or {}), ()
    raise TypeError(f"export_onnx() takes a Spec, a Graph, a library entry or an op name "
                    f"({exportable_names()}), got {type(decl).__name__}")


def _stateful_graph(decl, step: bool):
    """(graph with state in/out, {graph name: ONNX name}) for a Spec or a raw Graph."""
    if isinstance(decl, Spec):
        names = _layout(decl)["names"]
        full = decl.with_(h0=True, final_state=True).build()
        if not step:
            return full, {}
        return single_step(full), {STATE: names["h0"], ("out", STATE): names["hT"]}
    g = decl
    has_state = any(g[i].attr("has_h0") for i in g.ids("scan")) and any(
        g[g[i].args[0]].op == "last" for i in g.ids("output"))
    if not step and has_state:
        return g, {}
    g = single_step(g) if step else stateful(g)
    return g, {("out", STATE): f"{STATE}_out"}


def export_onnx(decl, path=None, *, sizes: dict | None = None, opset: int = DEFAULT_OPSET,
                fp16: bool = False, step: bool = False, lti: str = "scan", chunk_size: int = 64,
                force_scan: bool = False, check: bool = True) -> onnx.ModelProto:
    """Export `decl` (a library entry or op name, a Spec or a Graph) as ONNX; write it to `path`
    if given and return the model.  Options: `opset` (18–23), `fp16` (fp16 inputs/outputs, fp32
    arithmetic inside), `step` (the single-token decode graph), `lti` ("scan" or "dft": DFT
    convolution for time-invariant diagonal scans), `chunk_size` (Mamba-2's SSD chunks),
    `force_scan` (every scan as a per-token Scan, e.g. to compare with the SSD form)."""
    decl, sizes, order = _resolve(decl, sizes)
    graph, rename = _stateful_graph(decl, bool(step))
    fixed = {k: v for k, v in sizes.items() if k not in ("batch", "L")}
    model = to_onnx(graph, fixed, opset=opset, fp16=bool(fp16), lti=lti, chunk=chunk_size, rename=rename,
                    input_order=order, force_scan=force_scan)
    if check:
        onnx.checker.check_model(model, full_check=True)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(path))
    return model
