"""The chunked (tensor-core) lowering of the backward of an SSD-shaped scan, generated from the
backward graph (ssmc.ir.passes.adjoint) as `ssd.py` generates the forward.

In the backward graph of a scalar-per-head scan h_t = Ā_t h_{t-1} + k_t v_tᵀ, every value that
varies over both p and n is one of a few contractions of the state h or of its adjoint g (the
reverse recurrence g_t = U_t c_tᵀ + Ā_{t+1} g_{t+1}, U over p and c over n the cotangent's outer
factors).  Each has a chunk form on tensor cores, with ℓ = log Ā, cum its running sum in the chunk,
D[s,j] = e^{cum_s - cum_j}[s ≥ j], H the state before the chunk and G the adjoint flowing into the
chunk from its end:

    Σ_n c·h   = ((C Kᵀ) ∘ D) V + e^{cum} ∘ (C Hᵀ)          (the forward readout, for the epilogue)
    Σ_p u·h   = ((U' Vᵀ) ∘ D) K + e^{cum} ∘ (U' H)
    Σ_p w·g   = ((U Wᵀ) ∘ D)ᵀ C + e^{total-cum} ∘ (W G)
    Σ_n k'·g  = ((C K'ᵀ) ∘ D)ᵀ U + e^{total-cum} ∘ (K' Gᵀ)
    g·h_{t-1} (the decay's gradient): with ∂/∂ℓ_t = Ā_t ∂/∂Ā_t, ∂ℓ_t sums W[s,r] =
              ⟨U_s c_sᵀ, e^{cum_s - cum_r} k_r v_rᵀ⟩ over outputs s ≥ t and inputs r < t: the
              chunk's own Q×Q block ((U Vᵀ) ∘ (C Kᵀ) ∘ D, a cumsum each way), inputs before the
              chunk through H, outputs after it through G — sums of like terms, no difference of
              large row and column sums that bf16 rounding would swamp
    G        <- e^{total} G + (U ∘ e^{cum})ᵀ C

The decay's gradient reaches Ā's own parameters through sympy: d(Ā)·E = d(ℓ)·(E / Ā), simplified
symbolically (A·e^{AΔ} / e^{AΔ} = A), so nothing is divided by an Ā that may underflow.

One program per (batch, head) runs two sweeps: forward, storing the state at each chunk start in
a scratch buffer (one P×N state per chunk, never per step), then the chunks in reverse with every
node of the backward graph on (Q, p) or (Q, n) tiles — the recomputed forward prologue, the
epilogue's adjoint, the contractions above — and G carried in registers.  Sums over time
accumulate in registers; outputs shared by several programs (B/C groups, parameters summed over
the batch) are finished with atomic adds into zeroed buffers.  A reverse scan is the same kernel with
"forward" and "reverse" read along its scan order: every chunk's time indices are t = L-1-k.
"""
from __future__ import annotations

import sympy as sp

from ssmc.ir import Graph, IRError, Node
from ssmc.ir.graph import freeze_attrs
from ssmc.ir.structure import ssd_backward_parts

from .elementwise import lower_expr
from .emitter import RELAXED, Emitter, as_tile, ident, param_name, tensor_params, widened
from .module import Launch, chunked_module, dot_type_line, launch_source, output_buffer, output_shape
from .ssd import input_load, log_decay, scan_position, segments, state_load, state_tile, steps, tile_load

MAX_P = 128  # one program holds the head's whole P×N state and adjoint in registers


class _Gen:
    def __init__(self, g: Graph, info: dict):
        self.g, self.info = g, info
        self.pre, self.fwd, self.loop, self.tail, self.post = [], [], [], [], []
        self.names = {}  # node id -> (variable,) for the reverse sweep (pre values shared)
        self.cache = {}  # per-chunk products and tiles already emitted
        self.atomic = set()
        self.phase = self._phases()

    # --- phases ----------------------------------------------------------------------------------
    def _phases(self) -> dict:
        g, core, ph = self.g, self.info["core"], {}
        for i, n in enumerate(g.nodes):
            if (n.op == "reduce" and "t" in n.attr("axes")) or (i in core and core[i][0] == "carry"):
                ph[i] = "post"
            elif any(ph.get(a) == "post" for a in n.args):
                if n.type.time_varying:
                    raise IRError(f"node %{i} ({n.op}): time-varying use of a value summed over time")
                ph[i] = "post"
            elif n.type.time_varying or i in core or i in self.info["internal"]:
                ph[i] = "loop"
            elif n.op == "output":
                ph[i] = ph[n.args[0]]
            else:
                ph[i] = "pre"
        return ph

    # --- emitting nodes --------------------------------------------------------------------------
    def node(self, i, out, names):
        """Emit plain node i (input, const, expr, elementwise) with `names` as the name table."""
        n = self.g[i]
        if n.op == "input":
            out(f"{names[i][0]} = {widened(input_load(n), n.attr('integer'))}  # {n.attr('name')}")
        elif n.op == "const":
            out(f"{names[i][0]} = {float(n.attr('value'))!r}")
        else:  # elementwise, expr and clip_grad included
            self._em(names, None).elementwise(i, n, out, names=names[i])

    def _em(self, names, loop):
        """An emitter over a name table and this kernel's line lists (no phases to hoist out of)."""
        return Emitter(self.g, names=names, lines={"pre": self.pre, "loop": loop})

    def forward_sweep(self):
        """The forward prologue's time-varying nodes (those that Ā, k, v need) into `fwd`, under
        their own names, then the state update storing each chunk's start state."""
        g, info = self.g, self.info
        need, stack = set(), [info["a"], info["k"], info["v"]]
        while stack:
            i = stack.pop()
            if i in need or self.phase[i] == "pre":
                continue
            need.add(i)
            stack.extend(g[i].args)
        names = {i: v for i, v in self.names.items() if self.phase.get(i) == "pre"}
        for i in sorted(need):
            names[i] = (f"f{i}",)
            self.node(i, self.fwd.append, names)
        self._chunk_decay(self._em(names, self.fwd), self.fwd.append)
        k, v = names[info["k"]][0], names[info["v"]][0]
        out = self.fwd.append
        out(f"kf = tl.where(valid[:, None] & mask_n[None, :], {as_tile(k, '[Q, BLOCK_N]')}, 0.0)")
        out(f"vf = tl.where(valid[:, None] & mask_p[None, :], {as_tile(v, '[Q, BLOCK_P]')}, 0.0)")
        out("tl.store(st_base + (c0 // Q) * BLOCK_P * BLOCK_N + st_tile, state.to(st_ptr.dtype.element_ty))")
        out("state = carry * state + _dot(tl.trans(vf * wend[:, None]), kf, DOT)")

    def _chunk_decay(self, em, out):
        """la, cum, total (and the reset segments) of the chunk."""
        la = log_decay(self.g, self.info["a"], em)
        out(f"la = tl.sum(tl.where(valid[:, None], {as_tile(la, '[Q, 1]')}, 0.0), axis=1)")
        out("cum = tl.cumsum(la, axis=0)")
        out("total = tl.sum(la, axis=0)")
        if self.info["seq"] is not None:
            segments(em, self.g, self.info["seq"])
            out("ecum = tl.where(seg == 0, tl.exp(cum), 0.0)  # weight of the state before the chunk")
            out("wend = tl.where(seg == last_seg, tl.exp(total - cum), 0.0)  # to the chunk's end")
            out("carry = tl.where(last_seg == 0, tl.exp(total), 0.0)")
            mask = "causal & (seg[:, None] == seg[None, :])"
        else:
            out("ecum = tl.exp(cum)")
            out("wend = tl.exp(total - cum)")
            out("carry = tl.exp(total)")
            mask = "causal"
        out(f"decay = tl.exp(tl.where({mask}, cum[:, None] - cum[None, :], float('-inf')))  # mask before exp")

    # --- the chunk forms ---------------------------------------------------------------------------
    def _tile(self, i, role) -> str:
        """Node i as a masked (Q, p) or (Q, n) tile."""
        key = ("tile", i)
        if key not in self.cache:
            name, cols = f"t{i}", "BLOCK_P" if role == "p" else "BLOCK_N"
            self.loop.append(f"{name} = tl.where(valid[:, None] & mask_{role}[None, :], "
                             f"{as_tile(self.names[i][0], f'[Q, {cols}]')}, 0.0)")
            self.cache[key] = name
        return self.cache[key]

    def _mm(self, a, b, ta=False, tb=False, decay=False) -> str:
        """_dot(a, b) (transposed operands where asked), times the decay mask if asked; emitted once."""
        key = ("mm", a, ta, b, tb, decay)
        if key not in self.cache:
            if decay:
                raw = self._mm(a, b, ta, tb)
                name = f"m{len(self.cache)}"
                self.loop.append(f"{name} = {raw} * decay")
            else:
                name = f"m{len(self.cache)}"
                op = lambda x, t: f"tl.trans({x})" if t else x  # noqa: E731
                self.loop.append(f"{name} = _dot({op(a, ta)}, {op(b, tb)}, DOT)")
            self.cache[key] = name
        return self.cache[key]

    def _begin_core(self):
        if "core" in self.cache:
            return
        self.cache["core"] = True
        self.loop.append("# ---- the chunk's SSD forms (tensor cores)")
        self._chunk_decay(self._em(self.names, self.loop), self.loop.append)

    def y_h(self, c) -> str:
        """Σ_n c·h per step: (Q, p)."""
        k, v, ct = self._tile(self.info["k"], "n"), self._tile(self.info["v"], "p"), self._tile(c, "n")
        return f"({self._mm(self._mm(ct, k, tb=True, decay=True), v)} + ecum[:, None] * {self._mm(ct, 'H', tb=True)})"

    def p_h(self, u) -> str:
        """Σ_p u·h per step: (Q, n)."""
        k, v, ut = self._tile(self.info["k"], "n"), self._tile(self.info["v"], "p"), self._tile(u, "p")
        return f"({self._mm(self._mm(ut, v, tb=True, decay=True), k)} + ecum[:, None] * {self._mm(ut, 'H')})"

    def p_g(self, w) -> str:
        """Σ_p w·g per step: (Q, n)."""
        U, C, wt = self._tile(self.info["u"], "p"), self._tile(self.info["c"], "n"), self._tile(w, "p")
        return f"({self._mm(self._mm(U, wt, tb=True, decay=True), C, ta=True)} + wend[:, None] * {self._mm(wt, 'G')})"

    def n_g(self, kk) -> str:
        """Σ_n kk·g per step: (Q, p)."""
        U, C, kt = self._tile(self.info["u"], "p"), self._tile(self.info["c"], "n"), self._tile(kk, "n")
        return (f"({self._mm(self._mm(C, kt, tb=True, decay=True), U, ta=True)}"
                f" + wend[:, None] * {self._mm(kt, 'G', tb=True)})")

    def d_log_decay(self) -> str:
        """∂ℓ per step, (Q,): the sum of W[s, r] = ⟨ct_s, e^{cum_s - cum_r} x_r⟩ over rows s ≥ t and
        columns r < t, by blocks — inside the chunk (the Q×Q matrix), rows inside and columns before
        it (through H), rows after it (through G) — each a sum of its own terms, so nothing cancels
        in bf16 as a difference of row and column sums would."""
        info, out = self.info, self.loop.append
        U, v = self._tile(info["u"], "p"), self._tile(info["v"], "p")
        k, c = self._tile(info["k"], "n"), self._tile(info["c"], "n")
        out(f"w_in = {self._mm(U, v, tb=True, decay=True)} * {self._mm(c, k, tb=True)}  # W within the chunk")
        out("d_in = tl.sum(tl.where(causal, tl.cumsum(w_in, axis=1) - w_in, 0.0), axis=0)")
        out(f"d_h = tl.cumsum(ecum * tl.sum({U} * {self._mm(c, 'H', tb=True)}, axis=1), axis=0, reverse=True)")
        out(f"w_g = wend * tl.sum({v} * {self._mm(k, 'G', tb=True)}, axis=1)")
        out("d_g = tl.cumsum(w_g, axis=0) - w_g + carry * tl.sum(tl.sum(G * H, axis=1), axis=0)")
        k = scan_position(self.g[info["scan"]].attr("order").kind)
        keep = f"valid & ({k} > 0)" if info["h0"] is None else "valid"
        if info["seq"] is not None:
            keep += f" & (({k} == 0) | (sq == sq_prev))"  # a reset step drops the previous state: no gradient
        out(f"dla = tl.where({keep}, d_in + d_h + d_g, 0.0)")
        return "dla"

    def core_node(self, i, kind, operand):
        self._begin_core()
        if kind == "Yh":
            expr = self.y_h(operand)
        elif kind == "Ph":
            expr = self.p_h(operand)
        elif kind == "Pg":
            expr = self.p_g(operand)
        elif kind == "Ng":
            expr = self.n_g(operand)
        else:  # dA: dĀ = dℓ / Ā, folded into its users where sympy can (see `decay_user`)
            dla = self.d_log_decay()
            self.loop.append(f"v{i} = ({dla} * tl.exp(-la))[:, None]")
            return
        self.loop.append(f"v{i} = {expr}")

    def decay_user(self, i) -> bool:
        """Emit node i = dĀ · E as dℓ · (E / Ā) when Ā and E are sympy rules of the same operands."""
        g, n = self.g, self.g[i]
        dA = [r for r, (kind, _) in self.info["core"].items() if kind == "dA"]
        if n.op != "mul" or not dA or dA[0] not in n.args:
            return False
        e, a = g[[x for x in n.args if x != dA[0]][0]], g[self.info["a"]]
        if e.op != "expr" or a.op != "expr" or not set(a.args) <= set(e.args):
            return False
        esym = {j: sp.Symbol(s, real=True) for j, s in zip(e.args, e.attr("symbols"))}
        to_e = {sp.Symbol(s, real=True): esym[j] for j, s in zip(a.args, a.attr("symbols"))}
        a_expr = a.attr("expr").xreplace(to_e)
        # E may read Ā's own value (the adjoint writes d e^{AΔ} as A·Ā): Ā's expression, so that it cancels
        e_expr = e.attr("expr").xreplace({esym[j]: a_expr for j in e.args if j == self.info["a"]})
        ratio = sp.simplify(e_expr / a_expr)
        key = f"{i}q"
        self.names[key] = (f"v{key}",)
        ratio_node = Node("expr", e.args, freeze_attrs(dict(e.attrs, expr=ratio)), e.type)
        self.loop.extend(lower_expr(self._em(self.names, self.loop), key, ratio_node))
        self.loop.append(f"v{i} = dla[:, None] * v{key}")
        return True

    # --- reductions and outputs ----------------------------------------------------------------------
    def reduce(self, i, n):
        g, axes = self.g, set(n.attr("axes"))
        src = self.names[n.args[0]][0]
        dims = g[n.args[0]].type.dims
        col = "p" if "p" in dims else "n" if "n" in dims else None
        cols = {"p": "BLOCK_P", "n": "BLOCK_N", None: "1"}[col]
        mask = f"valid[:, None]{f' & mask_{col}[None, :]' if col else ''}"
        val = f"tl.where({mask}, {as_tile(src, f'[Q, {cols}]')}, 0.0)"
        if col in axes:
            val, cols = f"tl.sum({val}, axis=1, keep_dims=True)", "1"
        if "t" not in axes:
            self.loop.append(f"v{i} = {val}")
            return
        acc = f"acc{i}"
        self.pre.append(f"{acc} = tl.zeros([1, {cols}], tl.float32)")
        self.loop.append(f"{acc} += tl.sum({val}, axis=0, keep_dims=True)")
        self.names[i] = (acc,)

    def output(self, n):
        g = self.g
        p = param_name(g, n)
        src, axes = self.names[n.args[0]][0], n.attr("axes")
        roles = {a.role for a in axes}
        atomic = "b" not in roles or "g" in roles
        fn = "tl.atomic_add" if atomic else "tl.store"
        sem = RELAXED if atomic else ""
        if atomic:
            self.atomic.add(n.attr("name"))
        if {"p", "n"} <= roles:  # the initial state's gradient: the adjoint carried out of the sequence
            ptr, mask = state_tile(n.with_attrs(name=p))
            self.post.append(f"{fn}({ptr}, {src}, mask={mask}{sem})")
            return
        ptr, mask = tile_load(n.with_attrs(name=p))
        cols = "BLOCK_P" if "p" in roles else "BLOCK_N" if "n" in roles else None
        dense = (lambda v: f"_dense({v})") if atomic else (lambda v: v)
        if "t" in roles:
            shape = f"[Q, {cols or 1}]"
            line = f"{fn}({ptr}, {dense(as_tile(src, shape))}{', mask=' + mask if mask else ''}{sem})"
            self.loop.append(line)
        elif cols:
            value = dense(as_tile(src, f"[1, {cols}]"))
            self.post.append(f"{fn}({ptr}, {value}{', mask=' + mask if mask else ''}{sem})")
        else:
            self.post.append(f"{fn}({ptr}, tl.sum(tl.sum({as_tile(src, '[1, 1]')}, axis=1), axis=0){sem})")

    # --- the whole kernel ----------------------------------------------------------------------------
    def body(self):
        g, info = self.g, self.info
        skip = set(info["internal"]) | {x for x in (info["h0"], info["dlast"], info["seq"]) if x is not None}
        for i, n in enumerate(g.nodes):
            if i in skip:
                continue
            ph = self.phase[i]
            self.names.setdefault(i, (f"v{i}",))
            if n.op == "output":
                self.output(n)
            elif i in info["core"]:
                kind, operand = info["core"][i]
                if kind == "carry":
                    self.names[i] = ("G",)
                else:
                    self.core_node(i, kind, operand)
            elif n.op == "reduce":
                self.reduce(i, n)
            elif ph == "post":
                self.node(i, self.post.append, self.names)
            elif not (ph == "loop" and self.decay_user(i)):
                self.node(i, (self.loop if ph == "loop" else self.pre).append, self.names)
        self._begin_core()  # the adjoint's carry needs the chunk's decays even if nothing else does
        U, C = self._tile(info["u"], "p"), self._tile(info["c"], "n")
        self.tail.append(f"G = carry * G + _dot(tl.trans({U} * ecum[:, None]), {C}, DOT)")


def generate_chunked_backward(graph: Graph, schedule) -> str:
    try:
        info = ssd_backward_parts(graph)
    except IRError as e:
        raise IRError(f"{graph.name}: no chunked backward: {e}") from None
    g = graph
    gen = _Gen(g, info)
    gen.body()
    gen.forward_sweep()
    h0 = info["h0"]
    h0_load = "state = tl.zeros([BLOCK_P, BLOCK_N], tl.float32)"
    if h0 is not None:
        h0_load = f"state = {state_load(g[h0])}  # initial state"
    g_load = "G = tl.zeros([BLOCK_P, BLOCK_N], tl.float32)"
    if info["dlast"] is not None:
        g_load = f"G = {state_load(g[info['dlast']])}  # final state's cotangent"
    order = steps(g[info["scan"]].attr("order").kind)  # t_idx in scan order: L-1-k for a reverse scan
    timeline = lambda lines: ["    " + x for x in [*order, *lines]]  # noqa: E731
    body = [
        "pid_b = tl.program_id(0).to(tl.int64)",
        "pid_h = tl.program_id(1)",
        "offs_p = tl.arange(0, BLOCK_P)",
        "mask_p = offs_p < P",
        "offs_n = tl.arange(0, BLOCK_N)",
        "mask_n = offs_n < N",
        f"offs_q = tl.arange(0, Q){'.to(tl.int64)' if schedule.wide else ''}",
        "causal = offs_q[:, None] >= offs_q[None, :]",
        "NC = tl.cdiv(L, Q)",
        "st_base = st_ptr + (pid_b * NH + pid_h) * NC * BLOCK_P * BLOCK_N  # this program's chunk states",
        "st_tile = offs_p[:, None] * BLOCK_N + offs_n[None, :]",
        "# ---- time-invariant values, accumulators",
        *gen.pre,
        h0_load,
        "# ---- forward: the state at every chunk start",
        "for c0 in range(0, L, Q):",
        *timeline(gen.fwd),
        "tl.debug_barrier()  # the chunk states were written by other threads of this program",
        g_load,
        "# ---- backward: the chunks in reverse",
        "for cr in range(0, NC):",
        "    c0 = (NC - 1 - cr) * Q",
        # H by Triton's conversion, not _widen: two dots take it back to its stored 16-bit type, a round trip
        # Triton folds away
        *timeline(["H = tl.load(st_base + (c0 // Q) * BLOCK_P * BLOCK_N + st_tile).to(tl.float32)",
                   *gen.loop, *gen.tail]),
        "# ---- sums over time, the initial state's gradient",
        *gen.post,
    ]
    kname = f"{ident(g.name)}_ssd_bwd"
    inputs = [g[i] for i in g.ids("input")]
    outputs = [g[i] for i in g.ids("output")]
    params = tensor_params(g, inputs + outputs)
    consts = ["Q: tl.constexpr", "BLOCK_P: tl.constexpr", "BLOCK_N: tl.constexpr", "DOT: tl.constexpr"]
    kernel = "\n".join(["@triton.jit", f"def {kname}(",
                        *[f"    {p}," for p in params + ["st_ptr", "L", "P", "N", "HG", "NH"] + consts],
                        "):", *["    " + line for line in body]])
    launch = launch_source(g, inputs, outputs, _launch(g, kname, inputs, outputs, gen.atomic))
    return chunked_module(g, "Chunked (SSD) backward Triton kernel", "gradients", inputs, outputs, schedule, kernel,
                          launch, extra_globals=("LAST_WORKSPACE",))


def chunked_backward_reason(g: Graph) -> str | None:
    """None when a backward graph can take the chunked lowering, else why not."""
    if not g.ids("adjoint"):
        return "not a backward graph"
    try:
        ssd_backward_parts(g)
    except IRError as e:
        return str(e)
    return None


def _launch(g, kname, inputs, outputs, atomic) -> Launch:
    return Launch(
        doc=("Run the chunked backward kernel on CUDA (or interpreted CPU) tensors; returns {gradient name: tensor}"
             " in fp32."),
        kernel=kname, grid="(batch, H)",
        buffers={param_name(g, n): output_buffer(param_name(g, n), output_shape(n), "torch.float32",
                                                 zeroed=n.attr("name") in atomic) for n in outputs},
        after=[
            "    H = NCH // P",
            "    Q = sched['chunk']",
            "    BLOCK_P = max(16, triton.next_power_of_2(P))",
            "    BLOCK_N = max(16, triton.next_power_of_2(N))",
            dot_type_line(inputs),
            "    # one P×N state per chunk and program (the forward sweep's checkpoints), never one per step; in the",
            "    # tensor cores' operand type, which is all the state's precision the chunk products use",
            "    st_dtype = {1: torch.bfloat16, 2: torch.float16}.get(DOT, torch.float32)",
            "    states = torch.empty((batch, H, triton.cdiv(L, Q), BLOCK_P, BLOCK_N), device=device, dtype=st_dtype)",
        ],
        globals_=("LAST_WORKSPACE",),
        workspace=["    LAST_WORKSPACE = dict(chunk_states=states.shape[2], bytes=states.nbytes)"],
        call_args=[
            "        states, L, P, N, HG, H,",
            "        Q=Q, BLOCK_P=BLOCK_P, BLOCK_N=BLOCK_N, DOT=DOT,",
            "        num_warps=sched['num_warps'], num_stages=sched['num_stages'],",
        ])
