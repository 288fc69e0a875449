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
  * "multi_order_scan" (sizes K, dim, N; KD = K·dim): ssmc.ops.multi_order_scan with D, z,
    delta_bias and delta_softplus; `merge` picks sum (the default), mean, concat or gated.
    Inputs u, delta (batch, KD, L), A (KD, N), B, C, orders (K, L) int64, D, z, delta_bias (KD,),
    gate (batch, KD, L) when gated; output out.  The orders stay an input: any K permutations at
    run time (not checked in the graph: an index out of range fails in the runtime's Gather, a
    repeated one gives wrong results).  No state in/out and no step form (each order spans the
    whole sequence).  `ssmc.orders.multi_order_graph` gives the graph of the other variants.
Complex inputs and outputs are real tensors with a trailing axis of 2 (re, im); `onnx_inputs` turns
NumPy arrays into a model's feed that way.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from ssmc import library
from ssmc.backends.onnx import DEFAULT_OPSET, to_onnx
from ssmc.ir import Graph, IRError
from ssmc.ir.bind import check_sizes
from ssmc.ir.indexmap import spans_sequence
from ssmc.ir.passes.step import STATE, single_step, stateful
from ssmc.ir.spec import Spec, layout
from ssmc.ir.stages import needs_stages
from ssmc.ops import multi_order_graph
from ssmc.ops.arguments import flag
from ssmc.runtime import Compiled

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


MULTI_ORDER = "multi_order_scan"
MULTI_ORDER_INPUTS = ("u", "delta", "A", "B", "C", "orders", "D", "z", "delta_bias", "gate")  # the op's order


def onnx_inputs(model, arrays: dict, fp16: bool = False) -> dict:
    """The feed of an exported model from NumPy arrays by input name: complex arrays as a trailing
    (re, im) axis, floating-point ones as fp32 (fp16 for a model exported with fp16 I/O)."""
    feed = {}
    for v in model.graph.input:
        x = np.asarray(arrays[v.name])
        if np.iscomplexobj(x):
            x = np.stack([x.real, x.imag], -1)
        feed[v.name] = x.astype(np.float16 if fp16 else np.float32) if x.dtype.kind == "f" else x
    return feed


def exportable_names() -> list:
    return sorted(library.ENTRIES) + sorted(library.VARIANTS) + sorted(OP_FORMS) + [MULTI_ORDER]


def _multi_order(sizes, merge):
    """(graph, sizes with KD = K·dim, input order) of the multi_order_scan form."""
    sizes = dict(sizes or {})
    missing = [k for k in ("K", "dim", "N") if k not in sizes]
    if missing:
        raise ValueError(f"sizes: exporting {MULTI_ORDER!r} needs ['K', 'dim', 'N'], missing {missing}")
    kd = sizes["K"] * sizes["dim"]
    if sizes.setdefault("KD", kd) != kd:
        raise ValueError(f"sizes: KD is K·dim = {kd} (the K blocks of dim channels), got KD={sizes['KD']}")
    return multi_order_graph(sizes["K"], merge), sizes, MULTI_ORDER_INPUTS


def _resolve(decl, sizes, merge=None):
    """(Spec or Graph, sizes, input order) for a name, a Spec, a Graph or a compiled graph."""
    if sizes is not None and not isinstance(sizes, dict):
        raise TypeError(f"sizes: expected a dict of symbol -> int, got {type(sizes).__name__}")
    if merge is not None and decl != MULTI_ORDER:
        raise ValueError(f"merge: only the {MULTI_ORDER!r} form takes a merge, not {decl!r}")
    if decl == MULTI_ORDER:
        return _multi_order(sizes, merge or "sum")
    if isinstance(decl, Compiled):
        decl = decl.graph
    if isinstance(decl, str):
        if decl in OP_FORMS:
            spec, order, need = OP_FORMS[decl]
            missing = [k for k in need if k not in (sizes or {})]
            if missing:
                raise ValueError(f"sizes: exporting {decl!r} needs {list(need)}, missing {missing}")
            return spec, dict(sizes), order
        spec = library.get(decl)
        spec = spec.build() if decl in library.VARIANTS else spec  # (a Graph)
        base = dict(library.VARIANTS[decl].sizes if decl in library.VARIANTS else library.DEFAULT_SIZES[decl])
        return spec, {**base, **(sizes or {})}, ()
    if isinstance(decl, (Spec, Graph)):
        return decl, dict(sizes or {}), ()
    raise TypeError(f"export_onnx() takes a Spec, a Graph (or a compiled one), a library entry or an op name "
                    f"({exportable_names()}), got {type(decl).__name__}")


def stateful_graph(decl, step: bool):
    """(graph with state in/out, {graph name: ONNX name}) for a Spec or a raw Graph."""
    if isinstance(decl, Spec):
        names = layout(decl)["names"]
        full = decl.with_(h0=True, final_state=True).build()
        if not step:
            return full, {}
        return single_step(full), {STATE: names["h0"], ("out", STATE): names["hT"]}
    g = decl
    if needs_stages(g):  # several scans or lags: no single state to carry
        if step:
            raise IRError(f"{g.name}: a graph with several scans or lags has no decode (step) form yet; "
                          f"export it with step=False")
        return g, {}
    gather = [i for i in g.ids("scan") if spans_sequence(g[i].attr("order"))]
    if gather:  # a multi-order scan: no pieces to stream, the orders span the whole sequence
        if step:
            raise IRError(f"node %{gather[0]} (scan): a gather (multi-order) scan has no single-step form "
                          f"(its steps follow the orders through the whole sequence); export it with step=False")
        return g, {}
    has_state = any(g[i].attr("has_h0") for i in g.ids("scan")) and any(
        g[g[i].args[0]].op == "last" for i in g.ids("output"))
    if not step and has_state:
        return g, {}
    g = single_step(g) if step else stateful(g)
    return g, {("out", STATE): f"{STATE}_out"}


def export_onnx(decl, path=None, *, sizes: dict | None = None, opset: int = DEFAULT_OPSET,
                fp16: bool = False, step: bool = False, lti: str = "scan", chunk_size: int = 64,
                force_scan: bool = False, check: bool = True, merge: str | None = None) -> onnx.ModelProto:
    """Export `decl` (a library entry or op name, a Spec, a Graph or a `ssmc.compile` result) as
    ONNX; write it to `path` if given and return the model.  Options: `opset` (18–23), `fp16` (fp16
    inputs/outputs, fp32 arithmetic inside), `step` (the single-token decode graph), `lti` ("scan"
    or "dft": DFT convolution for time-invariant diagonal scans), `chunk_size` (Mamba-2's SSD
    chunks), `force_scan` (every scan as a per-token Scan, e.g. to compare with the SSD form),
    `merge` (only for "multi_order_scan": sum, mean, concat or gated).  Graphs with a gather
    (multi-order) scan export without state in/out."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"chunk_size: expected a positive int, got {chunk_size!r}")
    decl, sizes, order = _resolve(decl, sizes, merge)
    graph, rename = stateful_graph(decl, flag("step", step))
    sizes = check_sizes(stateful_graph(decl, False)[0] if step else graph, sizes)  # (a step has no L)
    fixed = {k: v for k, v in sizes.items() if k not in ("batch", "L")}
    model = to_onnx(graph, fixed, opset=opset, fp16=flag("fp16", fp16), lti=lti, chunk=chunk_size, rename=rename,
                    input_order=order, force_scan=flag("force_scan", force_scan))
    if flag("check", check):
        onnx.checker.check_model(model, full_check=True)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(path))
    return model
