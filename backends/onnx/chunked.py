"""Mamba-2's chunked SSD form for a scalar-per-head scan, as ONNX MatMuls.

With log-decays ℓ_t = log Ā_t (per head), inputs k_t (over n, B̄ with Δ folded in), v_t (over p)
and readout c_t, the sequence is cut into chunks of Q steps (zero-padded in the graph: ℓ = 0,
k = 0 leave the state untouched) and, with cum the within-chunk cumulative sum of ℓ,

    y_i   = Σ_{j≤i} (c_i·k_j) e^{cum_i - cum_j} v_j   +   e^{cum_i} c_i·H_chunk      (MatMuls)
    S_c   = Σ_j e^{cum_Q - cum_j} v_j k_jᵀ                                         (chunk state)
    H_c+1 = e^{cum_Q} H_c + S_c                                                    (a Scan over chunks)

The causal mask is applied to cum_i - cum_j with Where(-inf) before Exp: the factorized form
e^{cum_i}·e^{-cum_j} overflows for long chunks and is not used.
"""
from __future__ import annotations

import numpy as np
import sympy as sp
from onnx import TensorProto, helper

from ssmc.ir.structure import ssd_parts
from ssmc.ir.symbolic import lower as lower_expr

from .emitter import END, float_info
from .sym import emit_lowered

T = 1


def log_decay(lw, a_id: int) -> str:
    """log Ā as its own expression when Ā = exp(...) (no Log(Exp()) underflow), else Log(Ā)."""
    n = lw.g[a_id]
    if n.op == "expr":
        names = n.attr("symbols")
        flags = tuple(lw.g[j].type.complex for j in n.args)
        assigns, (res,) = lower_expr(sp.log(n.attr("expr")), names, flags, split_complex=True,
                                     prefix=f"l{a_id}_")
        env = {sym: lw.val(j)[0] for sym, j in zip(names, n.args)}
        return emit_lowered(lw.em, assigns, [res], env)[0]
    if n.op == "exp":
        return lw.val(n.args[0])[0]
    return lw.em.op("Log", [lw.val(a_id)[0]])


def _segments(lw, seq_id: int, pads: str, Q: int) -> str:
    """Per step, the number of seq_idx changes before it within its chunk, (b, 1, c, Q) float:
    0 is the sequence the carried state belongs to."""
    em = lw.em
    seq = em.op("Squeeze", [lw.val(seq_id)[0], em.ints([2, 3, 4])])  # (b, L)
    prev = em.op("Concat", [em.op("Slice", [seq, em.ints([0]), em.ints([1]), em.ints([T])]),
                            em.op("Slice", [seq, em.ints([0]), em.ints([-1]), em.ints([T])])], axis=T)
    change = em.op("Cast", [em.op("Not", [em.op("Equal", [seq, prev])])], to=1)  # 1.0 where a sequence starts
    change = em.op("Pad", [change, pads, em.scalar(0.0), em.ints([T])], mode="constant")
    change = em.op("Reshape", [change, em.ints([0, -1, Q])])  # (b, c, Q)
    seg = em.op("CumSum", [change, em.const(2, np.int64)])
    return em.op("Unsqueeze", [seg, em.ints([1])])


def lower(lw, s: int) -> None:
    g, em = lw.g, lw.em
    parts = ssd_parts(g, s)
    Q, H, P, N = lw.chunk, lw.roles["h"], lw.roles["p"], lw.roles["n"]
    n = g[s]
    h0 = lw.val(n.args[2]) if n.attr("has_h0") else None

    def full(v, roles, drop):  # broadcast to the full (b, t, ...) extent, then drop size-1 axes
        v = em.op("Expand", [v, lw.shape_of(roles)])
        return em.op("Squeeze", [v, em.ints(drop)])

    la = full(log_decay(lw, parts["a"]), {"b", "t", "h"}, [3, 4])  # (b, L, H)
    k = full(lw.val(parts["k"])[0], {"b", "t", "h", "n"}, [3])  # (b, L, H, N)
    v = full(lw.val(parts["v"])[0], {"b", "t", "h", "p"}, [4])  # (b, L, H, P)
    c = full(lw.val(parts["c"])[0], {"b", "t", "h", "n"}, [3])  # (b, L, H, N)

    # pad L up to a multiple of Q: padded steps have ℓ = 0 and k = 0, so they change nothing
    L = lw.dim("t")
    q = em.ints([Q])
    pad = em.op("Mod", [em.op("Sub", [q, em.op("Mod", [L, q])]), q])
    pads = em.op("Concat", [em.ints([0]), pad], axis=0)

    def chunks(x, width, perm):
        x = em.op("Pad", [x, pads, em.scalar(0.0), em.ints([T])], mode="constant")
        shape = [0, -1, Q, H] + ([width] if width else [])
        return em.op("Transpose", [em.op("Reshape", [x, em.ints(shape)])], perm=perm)

    la = chunks(la, None, [0, 3, 1, 2])  # (b, H, c, Q)
    k = chunks(k, N, [0, 3, 1, 2, 4])  # (b, H, c, Q, N)
    v = chunks(v, P, [0, 3, 1, 2, 4])  # (b, H, c, Q, P)
    c = chunks(c, N, [0, 3, 1, 2, 4])  # (b, H, c, Q, N)
    cum = em.op("CumSum", [la, em.const(3, np.int64)])
    seg = _segments(lw, parts["seq"], pads, Q) if parts["seq"] is not None else None  # (b, 1, c, Q)

    # within a chunk: (C Kᵀ ∘ decay) V with the causal mask applied before Exp
    diff = em.op("Sub", [em.op("Unsqueeze", [cum, em.ints([-1])]), em.op("Unsqueeze", [cum, em.ints([-2])])])
    mask = em.const(np.tril(np.ones((Q, Q), bool)), bool)
    if seg is not None:  # and within one sequence of a packed batch
        mask = em.op("And", [mask, em.op("Equal", [em.op("Unsqueeze", [seg, em.ints([-1])]),
                                                   em.op("Unsqueeze", [seg, em.ints([-2])])])])
    decay = em.op("Exp", [em.op("Where", [mask, diff, em.scalar(-np.inf)])])
    scores = em.op("MatMul", [c, em.op("Transpose", [k], perm=[0, 1, 2, 4, 3])])
    weights = em.op("Where", [mask, em.op("Mul", [scores, decay]), em.scalar(0.0)])  # a NaN in B stays causal
    y_intra = _causal_matmul(em, weights, v, mask if seg is not None else None)  # (b, H, c, Q, P)

    # each chunk's own contribution to the state at its end, and its total decay
    total = em.op("Slice", [cum, em.ints([-1]), em.ints([END]), em.ints([3])])  # (b, H, c, 1)
    to_end = em.op("Exp", [em.op("Sub", [total, cum])])
    total_decay = em.op("Exp", [total])
    if seg is not None:  # only the chunk's last sequence reaches its end; the carried state only if no reset
        last_seg = em.op("ReduceMax", [seg, em.ints([3])], keepdims=1)
        zero = em.scalar(0.0)
        to_end = em.op("Where", [em.op("Equal", [seg, last_seg]), to_end, zero])
        total_decay = em.op("Where", [em.op("Equal", [last_seg, em.scalar(0.0)]), total_decay, zero])
    weighted = em.op("Mul", [v, em.op("Unsqueeze", [to_end, em.ints([-1])])])
    states = em.op("MatMul", [em.op("Transpose", [weighted], perm=[0, 1, 2, 4, 3]), k])  # (b, H, c, P, N)
    chunk_decay = em.op("Squeeze", [total_decay, em.ints([3])])  # (b, H, c)

    # between chunks: a Scan over c carries the state (P×N per head)
    start = lw.initial_state(s, h0, rank5=False)[0]  # (b, H, P, N)
    h, d_c, s_c = em.fresh("h"), em.fresh("decay"), em.fresh("state")
    with em.body() as body_nodes:
        h_next = em.op("Add", [em.op("Mul", [em.op("Unsqueeze", [d_c, em.ints([2, 3])]), h]), s_c],
                       hint="h_next")
        h_start = em.op("Identity", [h], hint="h_start")
    body = helper.make_graph(body_nodes, em.fresh("chunk_body"),
                             [float_info(h, 4), float_info(d_c, 2), float_info(s_c, 4)],
                             [float_info(h_next, 4), float_info(h_start, 4)])
    final, starts = em.op("Scan", [start, chunk_decay, states], 2, hint="chunks", body=body,
                          num_scan_inputs=2, scan_input_axes=[2, 2], scan_output_axes=[2])

    # the carried state read out at every position of its chunk
    inter = em.op("MatMul", [c, em.op("Transpose", [starts], perm=[0, 1, 2, 4, 3])])  # (b, H, c, Q, P)
    carried = em.op("Exp", [cum])
    if seg is not None:  # the carried state reaches only the steps before the chunk's first reset
        carried = em.op("Where", [em.op("Equal", [seg, em.scalar(0.0)]), carried, em.scalar(0.0)])
    inter = em.op("Mul", [inter, em.op("Unsqueeze", [carried, em.ints([-1])])])
    y = em.op("Transpose", [em.op("Add", [y_intra, inter])], perm=[0, 2, 3, 1, 4])  # (b, c, Q, H, P)
    y = em.op("Reshape", [y, em.ints([0, -1, H, P])])
    y = em.op("Slice", [y, em.ints([0]), L, em.ints([T])])
    lw.vals[parts["readout"]] = (em.op("Unsqueeze", [y, em.ints([4])]),)
    last = (em.op("Unsqueeze", [final, em.ints([T])]),)
    for i in g.users()[s]:
        if g[i].op == "last":
            lw.vals[i] = last


def _causal_matmul(em, weights, v, mask):
    """weights @ v for causal weights (zero above the diagonal, and across sequences: `mask`, or None for
    the plain triangle), where a non-finite v_j reaches only the rows i >= j as the recurrence does, not
    every row through 0 * NaN: the product runs on the finite part of v, and rows that a causal count of
    v's non-finite entries reaches are NaN."""
    bad = em.op("Or", [em.op("IsNaN", [v]), em.op("IsInf", [v])])
    product = em.op("MatMul", [weights, em.op("Where", [bad, em.scalar(0.0), v])])
    bad = em.op("Cast", [bad], to=TensorProto.FLOAT)
    reached = (em.op("CumSum", [bad, em.const(3, np.int64)]) if mask is None
               else em.op("MatMul", [em.op("Cast", [mask], to=TensorProto.FLOAT), bad]))
    return em.op("Where", [em.op("Greater", [reached, em.scalar(0.0)]), em.scalar(np.nan), product])
