"""ONNX backend: the optimized IR lowered to an ONNX model with `onnx.helper` (no torch tracing).

    model = to_onnx(graph, sizes={"dim": 64, "N": 16})   # batch and L stay symbolic

Each scan is lowered as `strategy.choose_lowering` decides (a Scan, Mamba-2's chunked SSD form,
or an optional DFT convolution for LTI scans); the graph's size does not depend on L.  Gather
(multi-order) scans run as a Scan in the orders' permuted time, the orders an int64 graph input.
"""
from __future__ import annotations

import onnx

from ssmc.ir import Graph
from ssmc.ir.bind import role_sizes
from ssmc.ir.passes import run_pipeline

from .lower import Lowering, build_model, refusal
from .strategy import LTI_CHOICES, choose_lowering

DEFAULT_OPSET = 20
OPSETS = range(18, 24)  # Pad/ReduceSum/Squeeze take axes as inputs from 18; onnxruntime runs up to 23


def prepare(graph: Graph, lti: str = "scan", force_scan: bool = False) -> Graph:
    """The pipeline (if not run yet), then the lowering choice for each scan."""
    if not graph.typed or not any(n.attr("region") is not None for n in graph.nodes):
        graph = run_pipeline(graph)
    graph = choose_lowering(graph, lti, force_scan)
    refusal(graph)
    return graph


def to_onnx(graph: Graph, sizes: dict, *, opset: int = DEFAULT_OPSET, fp16: bool = False, lti: str = "scan",
            chunk: int = 64, rename: dict | None = None, input_order: tuple = (),
            force_scan: bool = False) -> onnx.ModelProto:
    """An ONNX model of `graph`. `sizes` fixes every dimension but batch and L; `rename` maps input
    names (and ("out", name) for outputs) to graph names; `input_order` orders the graph inputs;
    `force_scan` lowers every scan as a Scan (the baseline the SSD form is measured against)."""
    if opset not in OPSETS:
        raise ValueError(f"opset: expected one of {list(OPSETS)}, got {opset!r}")
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk: expected a positive integer, got {chunk!r}")
    g = prepare(graph, lti, force_scan)
    roles = g.symbols()
    sizes = {k: v for k, v in sizes.items() if roles.get(k) not in ("b", "t")}  # those stay symbolic
    free = {s for s, r in roles.items() if r not in ("b", "t")}
    missing = sorted(free - set(sizes))
    if missing:
        raise ValueError(f"sizes: the ONNX graph fixes every size but batch and L; give {missing} "
                         f"(sizes given: {dict(sizes)})")
    heads = next((s for s, r in roles.items() if r == "h"), None)
    for s, r in roles.items():
        if r in ("g", "r") and heads is not None and sizes[heads] % sizes[s]:
            what = "groups" if r == "g" else "(shared by every block of channels)"
            raise ValueError(f"sizes: {s}={sizes[s]} {what} must divide {heads}={sizes[heads]}")
    lw = Lowering(g, dict(sizes), role_sizes(g, sizes), fp16, dict(rename or {}), chunk, opset)
    model = build_model(lw)
    onnx.helper.set_model_props(model, {
        "ssmc.lowering": "; ".join(f"scan %{i}: {g[i].attr('onnx_lowering')} ({g[i].attr('onnx_reason')})"
                                   for i in g.ids("scan")),
        # complex outputs are real tensors with a trailing (re, im) axis
        "ssmc.complex_outputs": ",".join(lw.rename.get(("out", g[i].attr("name")), g[i].attr("name"))
                                         for i in g.ids("output") if g[i].type.complex)})
    if input_order:
        rank = {name: k for k, name in enumerate(input_order)}
        ins = sorted(model.graph.input, key=lambda v: rank.get(v.name, len(rank)))
        del model.graph.input[:]
        model.graph.input.extend(ins)
    return model


__all__ = ["DEFAULT_OPSET", "LTI_CHOICES", "OPSETS", "choose_lowering", "prepare", "to_onnx"]
