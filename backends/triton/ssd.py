"""The chunked (tensor-core) lowering of a scalar-per-head scan: Mamba-2's SSD form, generated.

For a region with the SSD structure (`ssmc.ir.structure.ssd_reason` is None) — per head a
scalar decay Ā_t, an input k_t·v_tᵀ (k over the state n, v over the head's positions p) and a
readout y_t = Σ_n c_t,n h_t — one program per (batch, head, block of p) walks the sequence a chunk
of Q steps at a time, with ℓ = log Ā and cum its running sum inside the chunk:

    y      = ((C Kᵀ) ∘ e^{cum_i - cum_j} [i ≥ j]) V  +  e^{cum} ∘ (C Hᵀ)     three tl.dot
    H     <- e^{cum_Q} H + (V ∘ e^{cum_Q - cum})ᵀ K                          one tl.dot

H (P×N per head) stays in fp32 registers between chunks.  A reverse scan (Hydra's backward
direction) is the same kernel with its time index t = L-1-k folded into every load and store.
The causal mask is applied to cum_i - cum_j before the exponential (the factorized
e^{cum_i}·e^{-cum_j} overflows).  Every
other node of the region — Δ's bias and softplus, the discretization, the skip, the gate — is
lowered from the IR onto (Q, p) or (Q, n) tiles with the elementwise code of `codegen`.
"""
from __future__ import annotations

import sympy as sp

from ssmc.ir import Graph, IRError
from ssmc.ir.structure import scan_region, ssd_parts, ssd_reason
from ssmc.ir.symbolic import lower, print_triton

from .emitter import Emitter, as_tile, ident, param_name, tensor_params, widened
from .module import Launch, chunked_module, dot_type_line, launch_source, out_dtype, output_buffer, output_shape


def chunked_reason(g: Graph) -> str | None:
    """None when the graph's one scan can take the chunked lowering, else why not."""
    if g.ids("adjoint"):
        return "a backward graph"
    scans = g.ids("scan")
    if len(scans) != 1:
        return f"{len(scans)} scans"
    s = scans[0]
    region = scan_region(g, s)
    why = ssd_reason(g, region, orders=("identity", "reverse"))
    if why:
        return why
    users = g.users()
    x = g[s].args[1]
    if users[x] != [s]:
        return "the scan input k·v is used elsewhere"
    if any(g[u].op not in ("last",) for u in users[s] if u not in region.body):
        return "the state is read outside the readout"
    for i, n in enumerate(g.nodes):
        if i in (s, x, *region.body):
            continue
        if n.op == "sum":
            return f"node %{i}: a reduction outside the readout"
        if n.type and n.type.complex:
            return f"node %{i}: complex values"
        if n.type and {"p", "n"} <= n.type.dims and n.op != "input" and n.op != "last" and n.op != "output":
            return f"node %{i} ({n.op}) varies over both p and n"
    return None


def _tile_axes(dims) -> str:
    """Broadcast suffix of a value's 2-D tile: rows are time steps, columns p or n."""
    col = ":" if dims & {"p", "n"} else "None"
    return f"[:, {col}]" if "t" in dims else f"[None, {col}]"


def tile_load(n) -> tuple:
    """(pointer expression, mask) of input `n` as a 2-D tile of (time steps, p or n)."""
    p = n.attr("name")
    axes = n.attr("axes")
    idx = {"t": "t_idx[:, None]", "h": "pid_h", "g": "(pid_h // HG)", "p": "offs_p[None, :]",
           "n": "offs_n[None, :]"}
    masks = {"t": "valid[:, None]", "p": "mask_p[None, :]", "n": "mask_n[None, :]"}
    base = f"{p}_ptr" + "".join(f" + pid_b * {p}_s{k}" for k, a in enumerate(axes) if a.role == "b")
    offs = [f"{idx[a.role]} * {p}_s{k}" for k, a in enumerate(axes) if a.role != "b"]
    mask = " & ".join(masks[a.role] for a in axes if a.role in masks)
    return f"({base})" + "".join(f" + {o}" for o in offs), mask or None


def input_load(n) -> str:
    """The load of input n as a tile of (time steps, p or n), as stored."""
    ptr, mask = tile_load(n)
    return f"tl.load({ptr}{f', mask={mask}, other=0' if mask else ''})"


def state_tile(n) -> tuple:
    """(pointer expression, mask) of n, a (p, n) state, as the program's [BLOCK_P, BLOCK_N] state tile."""
    return tile_load(n)[0].replace("offs_p[None, :]", "offs_p[:, None]"), "mask_p[:, None] & mask_n[None, :]"


def state_load(n) -> str:
    """Input n, a (p, n) state (the initial state, the final state's cotangent), loaded as the fp32 state tile."""
    ptr, mask = state_tile(n)
    return widened(f"tl.load({ptr}, mask={mask}, other=0)", False)


def log_decay(g, a_id, em) -> str:
    """The name of log Ā: the expression's own log when Ā = exp(...), no Log of an Exp."""
    n = g[a_id]
    if n.op == "exp":
        return em.names[n.args[0]][0]
    if n.op != "expr":
        return f"tl.log({em.names[a_id][0]})"
    names = n.attr("symbols")
    flags = tuple(g[j].type.complex for j in n.args)
    subs = {sp.Symbol(sym, real=True): sp.Symbol(em.names[j][0], real=True) for sym, j in zip(names, n.args)}
    assigns, (res,) = lower(sp.log(n.attr("expr")), names, flags, split_complex=True, prefix=f"l{a_id}_")
    lines = [f"{v} = {print_triton(e.xreplace(subs))}" for v, e in assigns]
    em.lines["loop" if g[a_id].type.time_varying else "pre"].extend(lines)
    return f"({print_triton(res.xreplace(subs))})"


def generate_chunked(graph: Graph, schedule) -> str:
    why = chunked_reason(graph)
    if why:
        raise IRError(f"{graph.name}: no chunked lowering: {why}")
    g = graph
    s = g.ids("scan")[0]
    parts = ssd_parts(g, s)
    region = scan_region(g, s)
    skip = {s, g[s].args[1], *region.body}
    if parts["seq"] is not None:  # loaded with its previous step in the SSD block
        skip.add(parts["seq"])
    em = Emitter(g)
    parts = _move_step_factor(g, parts, skip)
    raw = _dot_only_inputs(g, parts, skip)
    h0 = g[s].args[2] if g[s].attr("has_h0") else None
    for i, n in enumerate(g.nodes):
        if i in skip and i != parts["readout"]:
            continue
        phase = "loop" if (n.type and n.type.time_varying) or n.op == "scan" else "pre"
        out = em.lines[phase].append
        if n.op == "input":
            if i == h0:
                continue  # loaded as the state tile
            load = input_load(n)
            note = ", as stored: only tensor cores read it" if i in raw else ""
            out(f"v{i} = {load if i in raw else widened(load, n.attr('integer'))}  # {n.attr('name')}{note}")
            em.names[i] = (f"v{i}",)
        elif n.op == "const":
            out(f"v{i} = {float(n.attr('value'))!r}")
            em.names[i] = (f"v{i}",)
        elif n.op == "sum":  # the readout: the chunk's SSD block
            em.names[i] = ("y",)
            _ssd_block(em, g, parts)
        elif n.op == "last":
            em.names[i] = ("state",)
        elif n.op == "output":
            _store(em, g, n)
        else:  # elementwise, expr included
            em.elementwise(i, n, out)
    kname = f"{ident(g.name)}_ssd"
    inputs = [g[i] for i in g.ids("input")]
    outputs = [g[i] for i in g.ids("output")]
    params = tensor_params(g, inputs + outputs)
    h0_load = []
    if h0 is not None:
        h0_load = [f"state = {state_load(g[h0])}  # initial state"]
    body = [
        "pid_b = tl.program_id(0).to(tl.int64)",
        "pid_h = tl.program_id(1)",
        "offs_p = tl.program_id(2) * BLOCK_P + tl.arange(0, BLOCK_P)",
        "mask_p = (offs_p < P) | EVEN_P  # all-true when the blocks tile P: the masks fold away",
        "offs_n = tl.arange(0, BLOCK_N)",
        "mask_n = (offs_n < N) | EVEN_N",
        f"offs_q = tl.arange(0, Q){'.to(tl.int64)' if schedule.wide else ''}",
        "causal = offs_q[:, None] >= offs_q[None, :]",
        *(h0_load or ["state = tl.zeros([BLOCK_P, BLOCK_N], tl.float32)"]),
        "# ---- time-invariant values",
        *em.lines["pre"],
        "# ---- the sequence, Q steps at a time",
        "for c0 in range(0, L, Q):",
        *["    " + line for line in [*steps(g[s].attr("order").kind, even=True), *em.lines["loop"]]],
        "# ---- final state",
        *em.lines["post"],
    ]
    consts = ["Q: tl.constexpr", "BLOCK_P: tl.constexpr", "BLOCK_N: tl.constexpr", "DOT: tl.constexpr",
              "EVEN_L: tl.constexpr", "EVEN_P: tl.constexpr", "EVEN_N: tl.constexpr"]
    kernel = "\n".join(["@triton.jit", f"def {kname}(", *[f"    {p}," for p in params + ["L", "P", "N", "HG"] + consts],
                        "):", *["    " + line for line in body]])
    launch = launch_source(g, inputs, outputs, _launch(g, kname, inputs, outputs))
    return chunked_module(g, "Chunked (SSD) Triton kernel", "outputs", inputs, outputs, schedule, kernel, launch)


def steps(order: str, even: bool = False) -> list:
    """t_idx (the chunk's time indices, in scan order) and valid.  A reverse scan is the same chunked
    recurrence read through t = L-1-k: its chunks hold descending times, nothing is flipped.
    With `even`, valid is all-true when the kernel's EVEN_L says the chunks tile L."""
    k = "k_idx" if order == "reverse" else "t_idx"
    valid = f"valid = ({k} < L) | EVEN_L" if even else f"valid = {k} < L"
    if order == "reverse":
        return ["k_idx = c0 + offs_q  # position along the scan order", valid,
                "t_idx = L - 1 - k_idx  # index map t = L-1-k: a reverse scan, no flipped copy"]
    return ["t_idx = c0 + offs_q", valid]


def scan_position(order: str) -> str:
    """The variable of `steps` holding each step's position along the scan (0 at its first step)."""
    return "k_idx" if order == "reverse" else "t_idx"


def _move_step_factor(g, parts, skip) -> dict:
    """k = f·B with f a per-step scalar (Δ): f moves onto v, y and the state are unchanged
    ((C (f∘B)ᵀ) x = (C Bᵀ)(f∘x), (x)ᵀ(f∘B) = (f∘x)ᵀ B), so B reaches the tensor cores as loaded
    and the product is a Q×P tile instead of Q×N.  The product node is then not emitted."""
    k = g[parts["k"]]
    if k.op != "mul" or len(g.users()[parts["k"]]) != 1:
        return parts
    for f, b in (k.args, k.args[::-1]):
        if g[f].type.dims <= {"b", "t", "h"} and "n" in g[b].type.dims and not g[f].type.complex:
            skip.add(parts["k"])
            return dict(parts, k=b, step_factor=f)
    return parts


def _dot_only_inputs(g, parts, skip) -> set:
    """Inputs read only as tensor-core operands (k, c): loaded in their own dtype, not through fp32
    (the dot takes bf16/fp16 as stored; the fp32 round trip only costs instructions)."""
    users = g.users()
    return {i for i in (parts["k"], parts["c"]) if g[i].op == "input" and all(u in skip for u in users[i])}


def _ssd_block(em, g, parts):
    """y for the chunk from ℓ (log Ā), k, v, c tiles; then the state update (the chunk's lines)."""
    out = em.lines["loop"].append
    la = log_decay(g, parts["a"], em)
    k, v, c = (em.names[parts[x]][0] for x in ("k", "v", "c"))
    if "step_factor" in parts:  # Δ applied to v (Q×P) rather than to B (see _move_step_factor)
        v = f"{v} * {em.names[parts['step_factor']][0]}"
    out("# ---- SSD: masked C·Kᵀ within the chunk, the carried state across chunks (tensor cores)")
    out(f"la = tl.sum(tl.where(valid[:, None], {as_tile(la, '[Q, 1]')}, 0.0), axis=1)"
        "  # log Ā; 0 on padding steps")
    out("cum = tl.cumsum(la, axis=0)")
    out("total = tl.sum(la, axis=0)")
    if parts["seq"] is not None:
        segments(em, g, parts["seq"])
    out(f"k = tl.where(valid[:, None] & mask_n[None, :], {as_tile(k, '[Q, BLOCK_N]')}, 0.0)")
    out(f"v = tl.where(valid[:, None] & mask_p[None, :], {as_tile(v, '[Q, BLOCK_P]')}, 0.0)")
    out(f"c = {as_tile(c, '[Q, BLOCK_N]')}")
    reset = parts["seq"] is not None
    mask = "causal & (seg[:, None] == seg[None, :])" if reset else "causal"
    out(f"decay = tl.exp(tl.where({mask}, cum[:, None] - cum[None, :], float('-inf')))  # mask before exp")
    out("scores = _dot(c, tl.trans(k), DOT) * decay")
    carried = "tl.where(seg == 0, tl.exp(cum), 0.0)" if reset else "tl.exp(cum)"
    out(f"y = _dot(scores, v, DOT) + {carried}[:, None] * _dot(c, tl.trans(state), DOT)")
    if reset:  # only the chunk's last segment reaches its end; the carried state only if no reset
        out("w = tl.where(seg == last_seg, tl.exp(total - cum), 0.0)")
        out("state = tl.where(last_seg == 0, tl.exp(total), 0.0) * state + _dot(tl.trans(v * w[:, None]), k, DOT)")
    else:
        out("w = tl.exp(total - cum)  # decay from each step to the chunk's end")
        out("state = tl.exp(total) * state + _dot(tl.trans(v * w[:, None]), k, DOT)")


def segments(em, g, seq_id):
    """seg: per step of the chunk, how many resets (seq_idx changes) precede it within the chunk
    (0 = the segment the carried state belongs to); last_seg: that of the chunk's last step."""
    out = em.lines["loop"].append
    n = g[seq_id]
    ptr, _ = tile_load(n)
    order = g[g.ids("scan")[0]].attr("order").kind
    prev = ptr.replace("t_idx[:, None]", f"(t_idx {'+' if order == 'reverse' else '-'} 1)[:, None]")  # scan order
    first = f"{scan_position(order)} > 0"  # not the scan's first step
    out(f"sq = tl.sum(tl.load({ptr}, mask=valid[:, None], other=0), axis=1)  # seq_idx")
    out(f"sq_prev = tl.sum(tl.load({prev}, mask=(valid & ({first}))[:, None], other=0), axis=1)")
    out(f"seg = tl.cumsum((({first}) & valid & (sq != sq_prev)).to(tl.int32), axis=0)")
    out("last_seg = tl.max(seg, axis=0)")


def _store(em, g, n):
    src = em.names[n.args[0]][0]
    p = param_name(g, n)
    if g[n.args[0]].op == "last":
        ptr, mask = state_tile(n.with_attrs(name=p))
        em.lines["post"].append(f"tl.store({ptr}, state.to({p}_ptr.dtype.element_ty), mask={mask})")
        return
    ptr, mask = tile_load(n.with_attrs(name=p))
    phase = "loop" if "t" in {a.role for a in n.attr("axes")} else "post"
    em.lines[phase].append(f"tl.store({ptr}, {as_tile(src, '[Q, BLOCK_P]')}.to({p}_ptr.dtype.element_ty)"
                           f"{', mask=' + mask if mask else ''})")


def _launch(g, kname, inputs, outputs) -> Launch:
    return Launch(
        doc="Run the chunked kernel on CUDA (or interpreted CPU) tensors; returns {output: tensor}.",
        kernel=kname, views=False,
        buffers={param_name(g, n): output_buffer(param_name(g, n), output_shape(n), out_dtype(g, n, inputs))
                 for n in outputs},
        after=[
            "    H = NCH // P",
            "    BLOCK_P = max(16, min(sched['block_p'], triton.next_power_of_2(P)))",
            "    BLOCK_N = max(16, triton.next_power_of_2(N))",
            dot_type_line(inputs),
            "    grid = (batch, H, triton.cdiv(P, BLOCK_P))",
        ],
        call_args=[
            "        L, P, N, HG,",
            "        Q=sched['chunk'], BLOCK_P=BLOCK_P, BLOCK_N=BLOCK_N, DOT=DOT,",
            "        EVEN_L=L % sched['chunk'] == 0, EVEN_P=P % BLOCK_P == 0, EVEN_N=N == BLOCK_N,",
            "        num_warps=sched['num_warps'], num_stages=sched['num_stages'],",
        ])
