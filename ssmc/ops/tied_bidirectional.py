"""Tied bidirectional LTI layers (bidirectional S4D, S5, LRU): one time-invariant SSM run forwards
and backwards over the same input, every parameter shared but the output map C,

    h_t = Ā h_{t-1} + B̄ u_t    (forward),        g_t = Ā g_{t+1} + B̄ u_t    (backward)
    y_t = Re(C_fwd h_t) + Re(C_bwd g_t) + D u_t

with the readout of the Spec (2·Re for SISO complex states, a conjugate pair in one entry; Re for
MIMO).  C is given as (2, ...) — [0] forward, [1] backward — or without that axis to share it too.

What the public models do, and what is followed here:
  * S5 (lindermanlab/S5, s5/ssm.py `apply_ssm` with bidirectional=True): the same Λ̄ and B̄ are
    scanned forwards and in reverse (the reverse scan includes step t itself); the two state
    sequences are concatenated and read out by [C1 | C2], two separate output matrices; D·u is
    added once.  Followed exactly.
  * S4 / S4D (state-spaces/s4, models/s4/s4.py `FFTConv` with bidirectional=True): the kernel is
    built with twice the channels — Δ, A and B shared, one C per direction — and the two kernels
    form one two-sided convolution; D·u is added once.  Its backward kernel is applied one step
    off (y_t receives Σ_{s>t} C_bwd Ā^{s-t-1} B̄ u_s, s = t excluded), which the code calls a
    deliberate choice that "should not affect any applications" and gives the inclusive form as
    the amendment.  Here the backward direction is the inclusive one (the forward recurrence read
    backwards, as in S5), so for S4D its term is that one-step shift of state-spaces/s4's.

Lowering:
  * SISO specs (S4D): one graph and one kernel.  The two directions are two blocks of channels
    (channel k·dim + d, the mechanism of `ssmc.orders`): u, Δ, A, B and D are one tensor read by
    both blocks (axis role `r`), C has one block per direction, the scan's order is a gather from
    the orders [0, …, L-1] and [L-1, …, 0] (group k = direction k), and the output sums the two
    blocks.  D enters each block halved, so the sum adds D·u once.  The backward pass is not derived
    for gather orders, so when a torch tensor requires grad the layer runs as the two Spec runs below
    (reverse is an index map with a derived backward): differentiable, two launches.
  * MIMO specs (S5, LRU): two runs of the Spec (forward with D, the Spec's reverse direction
    without it), summed into one output.  A graph with both scans would lower as two stages
    (`ssmc.ir.stages`: two kernels, as here); one kernel would need a per-block gather order,
    which a MIMO scan cannot have (the order's groups divide the
    channel axis, which a MIMO state sums over; the Triton generator refuses per-group orders on a
    MIMO scan: "a MIMO scan holds every channel in one program").
"""
from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import numpy as np

from ssmc.ir import Axis, Rebuilder
from ssmc.ir.entries import ENTRIES
from ssmc.ir.spec import Spec
from ssmc.runtime import compile_ssm
from ssmc.runtime.arrays import is_torch, needs_grad

from .arguments import shape


@lru_cache(maxsize=32)
def _siso_graph(spec: Spec):
    """The Spec's declared graph with its two directions as two blocks of channels (see the module
    docstring): a rewrite of the graph `spec.build()` gives, so every Spec field keeps its meaning."""
    g, rb, new = spec.build(), Rebuilder(), {}

    def blocks(axes, per_direction: bool):
        # the channel axis: one block per direction (C) or one tensor shared by both (role r)
        return tuple(Axis(f"K{a.symbol}", "h") if a.role == "h" and per_direction else
                     Axis(a.symbol, "r") if a.role == "h" else a for a in axes)

    for i, n in enumerate(g.nodes):
        n = replace(n, args=tuple(new[a] for a in n.args))
        if n.op == "input":
            j = rb.add(n.with_attrs(axes=blocks(n.attr("axes"), n.attr("name") == "C")))
            if n.attr("name") == "D":  # each block adds D·u / 2; the merge sums the two halves
                j = rb.emit("mul", [j, rb.emit("const", value=0.5)])
        elif n.op == "scan":
            index = rb.emit("input", name="orders", axes=(Axis("K", "g"), Axis("L", "t")), complex=False,
                            integer=True)
            j = rb.add(replace(n.with_attrs(order="gather"), args=n.args + (index,)))
        elif n.op == "output":
            j = rb.add(n.with_attrs(axes=blocks(n.attr("axes"), False)))
        else:
            j = rb.add(n)
        new[i] = j
    return rb.finish(f"{spec.name}_bidirectional")


@lru_cache(maxsize=32)
def tied_compiled(spec: Spec, backend: str, direction: str = ""):
    """The compiled SISO graph (direction ""), or one direction of a MIMO Spec."""
    if not direction:
        return compile_ssm(_siso_graph(spec), backend=backend)
    if direction == "reverse":  # D is added once, by the forward run
        spec = spec.with_(name=f"{spec.name}_reverse", direction="reverse", skip=None)
    return compile_ssm(spec, backend=backend)


def tied_bidirectional_graph(spec):
    """The (optimized) IR graph of a SISO LTI Spec's tied bidirectional layer (see the module
    docstring), e.g. to export it: `ssmc.export_onnx(tied_bidirectional_graph("s4d_zoh"), sizes={"dim":
    dim, "Kdim": 2 * dim, "K": 2, "N": N})`.  Inputs as the Spec's, but C (2·dim, N) — direction k's C
    in rows k·dim … — and `orders` (2, L) int64, [0 … L-1] and [L-1 … 0]."""
    spec = _check_spec(spec)
    if spec.io == "mimo":
        raise ValueError(f"spec: {spec.name!r} is MIMO: its tied bidirectional layer is two runs of the Spec, "
                         f"not one graph")
    return tied_compiled(spec, "numpy").graph


def _check_spec(spec) -> Spec:
    if isinstance(spec, str):
        if spec not in ENTRIES:
            raise ValueError(f"spec: no library entry {spec!r}; entries are {sorted(ENTRIES)}")
        spec = ENTRIES[spec]
    if not isinstance(spec, Spec):
        raise ValueError(f"spec: expected a Spec or a library entry name, got {type(spec).__name__}")
    why = ("it is selective (time-varying " + ", ".join(sorted(spec.selective)) + "); for selective scans use "
           "ssmc.ops.multi_order_scan(..., tie=...)" if spec.selective else
           "scalar_head (Mamba-2) states are not supported; see ssmc.ops.hydra" if spec.state == "scalar_head" else
           "it declares h0, final_state or seq_idx, which a bidirectional layer does not take"
           if spec.h0 or spec.final_state or spec.seq_idx else
           "its direction must be 'forward' (the layer runs both)" if spec.direction != "forward" else "")
    if why:
        raise ValueError(f"spec: {spec.name!r} cannot be made tied-bidirectional: {why}")
    return spec


def _orders(L: int, like):
    """[0, …, L-1] and [L-1, …, 0]: direction k reads time orders[k, step]."""
    o = np.stack([np.arange(L), np.arange(L)[::-1]]).astype(np.int64)
    if is_torch(like):
        import torch
        return torch.from_numpy(o).to(like.device)
    return o


def tied_bidirectional(spec, *, backend: str = "auto", out=None, **inputs):
    """A time-invariant Spec run forwards and backwards, all parameters shared but C (see the module
    docstring).  `spec`: a SISO or MIMO LTI Spec or library entry name ("s4d_zoh", "s4d_bilinear",
    "s5", "lru"); `inputs`: the Spec's inputs by name (u (batch, dim, L) SISO or (batch, L, H) MIMO,
    and its parameters), except C: (2, dim, N) / (2, H, N) — [0] forward, [1] backward — or
    (dim, N) / (H, N), shared by both directions.  `out`: an output buffer to write into (optional).
    Returns the output, shaped like u.  SISO specs run as one kernel; on the Triton backend they are
    differentiable as two Spec runs when a torch tensor requires grad (the derived backward refuses gather
    orders).  MIMO specs run as two Spec runs and are differentiable where the Spec is.
    """
    spec = _check_spec(spec)
    u, C = inputs.get("u"), inputs.get("C")
    if len(shape(u)) != 3:
        raise ValueError(f"u: expected shape {'(batch, L, H)' if spec.io == 'mimo' else '(batch, dim, L)'}, "
                         f"got {shape(u)}")
    channels = shape(u)[2] if spec.io == "mimo" else shape(u)[1]
    label = "H" if spec.io == "mimo" else "dim"
    if len(shape(C)) not in (2, 3) or shape(C)[-2] != channels or (len(shape(C)) == 3 and shape(C)[0] != 2):
        raise ValueError(f"C: expected shape (2, {label}, N) (one per direction) or ({label}, N) (shared) with "
                         f"{label}={channels}, got {shape(C)}")
    per_direction = len(shape(C)) == 3
    if spec.io == "mimo" or needs_grad(inputs):
        fwd, rev = (C[0], C[1]) if per_direction else (C, C)
        y = tied_compiled(spec, backend, "forward")(**{**inputs, "C": fwd}, out=out)["out"]
        y_rev = tied_compiled(spec, backend, "reverse")(**{**inputs, "C": rev, "D": None})["out"]
        if out is None:
            return y + y_rev  # not in place: y may be saved for autograd
        y += y_rev
        return y
    if not per_direction:  # the graph reads C in blocks: both directions' copies (2·dim×N, small)
        C = C[None].expand(2, *shape(C)) if is_torch(C) else np.broadcast_to(C[None], (2,) + shape(C))
    C = C.reshape(2 * channels, shape(C)[-1])  # a view when contiguous
    return tied_compiled(spec, backend)(**{**inputs, "C": C}, orders=_orders(shape(u)[2], u), out=out)["out"]
