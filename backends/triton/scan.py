"""The recurrence of a recurrent kernel, one chunk at a time: h_t = Ā_t h_{t-1} + x_t.

The chunk's (Ā, x) tiles are scanned with `tl.associative_scan` (or step by step with chunk 1 and for
MIMO states) from the state carried in fp32 registers between chunks; complex states as (re, im)
pairs.  The backward kernel (backward.py) runs the same chunk scan to recompute states.
"""
from __future__ import annotations

from .tiles import at_step, broadcast_tile, pointers, tile_shape


def lower_scan(em, i, n, out):
    """Scan node i over the chunk in `out`, from the state carried in registers (zeros or h0, set before
    the loop); its value is the chunk's tile of states, the carry its last step."""
    sched = em.schedule
    h = state_names(i, n.type.complex)
    state_shape = tile_shape(em.ax, n.type, "1")
    # initial state: zeros or h0, before the loop
    if n.attr("has_h0"):
        h0 = em.names[n.args[2]]
        for k, part in enumerate(h):
            src = h0[k] if k < len(h0) else "0.0"
            em.out("pre", f"{part} = tl.zeros({state_shape}, {em.acc}) + {src}  # initial state")
    else:
        for part in h:
            em.out("pre", f"{part} = tl.zeros({state_shape}, {em.acc})")
    a_t, x_t = scan_operands(em, i, n, out)
    hs = scan_chunk(em, i, n, out, a_t, x_t, h, sched)
    for k in range(len(h)):  # carry the state at the chunk's last step
        out(f"{h[k]} = {at_step(em.ax, hs[k], 'CHUNK - 1')}")
    em.names[i] = tuple(hs)


def state_names(i, cplx):
    return (f"h{i}_re", f"h{i}_im") if cplx else (f"h{i}",)


def scan_operands(em, i, n, out):
    """Lines computing the chunk's (Ā', x) tiles of scan node i; returns their names.

    Padding steps past L are the identity (Ā = 1, x = 0), so the carried state is untouched;
    where seq_idx changes, Ā' = 0 (a new sequence starts from nothing).
    """
    g, ta = em.g, em.ax
    a, x = em.names[n.args[0]], em.names[n.args[1]]
    parts = 2 if n.type.complex else 1
    vt, kt = f"valid{ta.bc('t')}", f"(k > 0){ta.bc('t')}"
    shape = tile_shape(ta, n.type, "CHUNK")
    a_t = [f"a{i}_{k}" for k in range(parts)]
    x_t = [f"x{i}_{k}" for k in range(parts)]
    for k in range(parts):
        one = "1.0" if k == 0 else "0.0"
        out(f"{a_t[k]} = tl.where({vt}, {broadcast_tile(em, a, k, shape)}, {one})")
        out(f"{x_t[k]} = tl.where({vt}, {broadcast_tile(em, x, k, shape)}, 0.0)")
    if n.attr("reset"):
        seq = g[seq_id(g, n)]
        s = seq.attr("name")
        prev, _ = pointers(ta, s, seq.attr("axes"), tp="tq")
        out(f"prev{i} = tl.load({prev}, mask={vt} & {kt}, other=0)")
        out(f"reset{i} = {kt} & (prev{i} != {em.names[seq_id(g, n)][0]})  # a new sequence starts")
        for k in range(parts):
            out(f"{a_t[k]} = tl.where(reset{i}, 0.0, {a_t[k]})")
    return a_t, x_t


def scan_chunk(em, i, n, out, a_t, x_t, h, sched):
    """Lines scanning one chunk from the carried state h; returns the names of the states tile."""
    ta, cplx = em.ax, n.type.complex
    hs = [f"hs{i}_{k}" for k in range(len(h))]
    if sched.chunk == 1 or n.attr("io") == "mimo":  # MIMO: see the launcher's CHUNK comment
        if cplx:
            out(f"{hs[0]} = {a_t[0]} * {h[0]} - {a_t[1]} * {h[1]} + {x_t[0]}")
            out(f"{hs[1]} = {a_t[0]} * {h[1]} + {a_t[1]} * {h[0]} + {x_t[1]}")
        else:
            out(f"{hs[0]} = {a_t[0]} * {h[0]} + {x_t[0]}")
        return hs
    # The carried state enters as part of the chunk's first input, x_0 + Ā_0·h, so the scan's x are
    # the states themselves; the products of Ā are then dead after the scan and compiled away
    # (applying h as (∏Ā)·h + Σ afterwards cost more instructions per element in Mamba-1's loop;
    # BENCHMARKS.md, "Mamba-1 schedules").
    first = f"(tl.arange(0, CHUNK) == 0){ta.bc('t')}"
    xh = [f"xh{i}_{k}" for k in range(len(h))]
    if cplx:
        out(f"{xh[0]} = tl.where({first}, {a_t[0]} * {h[0]} - {a_t[1]} * {h[1]} + {x_t[0]}, {x_t[0]})")
        out(f"{xh[1]} = tl.where({first}, {a_t[0]} * {h[1]} + {a_t[1]} * {h[0]} + {x_t[1]}, {x_t[1]})")
    else:
        out(f"{xh[0]} = tl.where({first}, {a_t[0]} * {h[0]} + {x_t[0]}, {x_t[0]})")
    cum = [f"ac{i}_{k}" for k in range(len(h))]
    comb = "_combine_complex" if cplx else "_combine_real"
    out(f"{', '.join(cum + hs)} = tl.associative_scan(({', '.join(a_t + xh)}), axis={ta.ax('t')}, combine_fn={comb})")
    return hs


def seq_id(g, scan_node):
    """The seq_idx operand of a resetting scan: after Ā, x and the initial state, before a gather index."""
    return scan_node.args[2 + bool(scan_node.attr("has_h0"))]
