"""Triton code generation for backward graphs (made by ssmc.ir.passes.adjoint): one kernel each.

A program owns one batch element and a block of channels, like the forward kernel, and runs:

  pre   time-invariant values (forward and backward) and accumulators;
  fwd   the forward recurrence, a chunk at a time, storing the state at each chunk start in a
        checkpoint buffer (batch, chunks, channels, N, parts): the state of every step is never stored;
  rev   the chunks in reverse: the chunk's states recomputed from its checkpoint (associative scan),
        every time-varying node of the backward graph on the chunk tile, the adjoint recurrence as a
        reverse associative scan carried from chunk to chunk, and sums over time accumulated in
        registers;
  post  values reduced over time (parameter gradients) and the initial state's cotangent.

`prev` (h_{t-1}) and the adjoint's Ā'_{t+1} are the chunk tile shifted by one step (`tl.gather`),
with the neighbouring chunk's value at the edge.  A `reduce` over n or t is done in the kernel; over
b, h or p it is not: the value stays a per-program (per-lane) partial and the output it reaches is
written with atomic adds into a zeroed buffer, which finishes the sum.  That is exact because a
backward graph uses every cotangent linearly (checked below).
"""
from __future__ import annotations

from ssmc.ir import Graph, IRError
from ssmc.ir.opset import LINEAR, with_trait
from ssmc.ir.types import value_role

from .emitter import RELAXED, ident, param_name, tensor_params, var, with_acc_literals
from .module import Launch, launch_source, output_buffer, output_shape, recurrent_module
from .recurrent import TileEmitter, channel_mask
from .scan import scan_chunk, scan_operands
from .schedule import Schedule
from .tiles import TileAxes, at_step, broadcast_tile, store_pointers, tile_shape
from .time_loop import has_repeat_axis, kernel_prologue, time_maps

LINEAR_OPS = with_trait(LINEAR)  # a sum of partial sums stays a partial sum through these


def _phases(g: Graph) -> dict:
    phase = {}
    for i, n in enumerate(g.nodes):
        if n.op == "carry" or (n.op == "reduce" and "t" in n.attr("axes")):
            phase[i] = "post"
        elif any(phase[a] == "post" for a in n.args):
            if n.type.time_varying:
                raise IRError(f"node %{i} ({n.op}): time-varying use of a value reduced over time")
            phase[i] = "post"
        elif n.op in ("scan", "prev", "adjoint") or n.type.time_varying:
            phase[i] = "loop"
        elif n.op == "output":
            phase[i] = phase[n.args[0]]
        else:
            phase[i] = "pre"
    return phase


def _exact_roles(g: Graph, n) -> set:
    """Roles reduce node n sums inside the kernel: n and t always; h and p too when one program holds
    every channel (a MIMO region) and the sum keeps no channel role (a tile's channel lanes hold head and
    position together: a sum over one of them alone is left to the output's atomic adds)."""
    mimo = any(g[i].attr("io") == "mimo" for i in g.ids("scan"))
    channels = set(n.attr("axes")) & {"h", "p"}
    kept = g[n.args[0]].type.dims & {"h", "p"} - channels
    return {"n", "t"} | (channels if mimo and not kept else set())


def _extents(g: Graph) -> dict:
    """Which tile axes (d, n, t) each value's tile has.  A partial (see the module docstring)
    keeps the channel axis its IR type has summed away."""
    ext = {}
    for i, n in enumerate(g.nodes):
        args = [ext[a] for a in n.args]
        if n.op == "input":
            roles = {a.role for a in n.attr("axes")}
            e = (bool(roles & {"h", "p", "g", "r"}), "n" in roles, "t" in roles)
        elif n.op == "const":
            e = (False, False, False)
        elif n.op in ("scan", "prev", "adjoint", "carry"):
            e = (bool(n.type.dims & {"h", "p"}), "n" in n.type.dims, n.op != "carry")
        elif n.op in ("reduce", "sum"):
            axes = set(n.attr("axes"))
            d, nn, t = args[0]
            keep_d = not axes & {"h", "p"} or (n.op == "reduce" and not axes & {"h", "p"} & _exact_roles(g, n))
            e = (d and keep_d, nn and "n" not in axes, t and "t" not in axes)
        else:
            e = tuple(any(a[k] for a in args) for k in range(3))
        ext[i] = e
    return ext


def _partials(g: Graph) -> dict:
    """Roles (b, h, p) over which a value is an unfinished per-program sum."""
    part = {}
    for i, n in enumerate(g.nodes):
        ps = [part[a] for a in n.args]
        if n.op not in LINEAR_OPS and sum(bool(p) for p in ps) > 1:
            raise IRError(f"node %{i} ({n.op}): a product of two partial sums cannot be lowered")
        if n.op in ("scan", "prev", "adjoint") and any(ps):
            raise IRError(f"node %{i} ({n.op}): a recurrence over a partial sum cannot be lowered")
        p = frozenset().union(*ps) if ps else frozenset()
        for a, pa in zip(n.args, ps):  # another operand over a pending role, or added once per program or lane
            mixed = (p - pa) & (g[a].type.dims if n.op not in LINEAR_OPS else {"b", "h", "p"})
            if mixed and n.op != "output":
                raise IRError(f"node %{i} ({n.op}): combines a partial sum over {', '.join(sorted(mixed))} with "
                              f"a value that is not one; it cannot be lowered")
        if n.op == "reduce":
            p |= set(n.attr("axes")) & {"b", "h", "p"} - _exact_roles(g, n)
        part[i] = frozenset(p)
    return part


def _lanes(g: Graph, partial: dict) -> dict:
    """The channel roles (h, p) the lanes of each value's tile vary over: its type's, and for a partial sum
    those it has yet to sum (its lanes hold the terms)."""
    return {i: (n.type.dims | partial[i]) & {"h", "p"} for i, n in enumerate(g.nodes)}


def _shape(ta: TileAxes, e) -> str:
    d, n, t = e
    return ta.shape("BLOCK_D" if d else "1", "BLOCK_N" if n else "1", "CHUNK" if t else "1")


def _mask(ta: TileAxes, e) -> str:
    terms = [f"mask_d{ta.bc('d')}"] * e[0] + [f"mask_n{ta.bc('n')}"] * e[1] + [f"valid{ta.bc('t')}"] * e[2]
    return " & ".join(terms)


class BackwardLowering:
    """The backward kernel's nodes: the recurrence, its adjoint and the reductions here, every other
    node through the recurrent emitter (in the forward sweep too, where the scan needs it)."""

    def __init__(self, graph: Graph, schedule: Schedule, acc: str):
        self.g, self.sched = graph, schedule
        self.em = TileEmitter(graph, schedule, acc)
        self.ta = self.em.ax
        self.phase = self.em.phase = _phases(graph)  # the emitter's phases: exp of a hoisted factor as exp2
        self.ext = _extents(graph)
        self.partial = _partials(graph)
        self.lanes = _lanes(graph, self.partial)
        self.atomic = set()  # names of outputs written with atomic adds
        self.blocks = set()  # names of outputs written per block of channels (schedule.partials)
        self.scan_tiles = {}  # scan id -> (Ā' tile names, checkpoint state names, reset flag)

    def out(self, phase, line):
        self.em.out(phase, line)

    # --- the recurrence and its adjoint ------------------------------------------------------
    def scan_fwd(self, i, n):
        """Checkpoint pass: the forward scan, storing the state at the start of every chunk."""
        em, ta = self.em, self.ta
        parts = 2 if n.type.complex else 1
        hf = [f"hf{i}_{k}" for k in range(parts)]
        state = tile_shape(ta, n.type, "1")
        h0 = em.names[n.args[2]] if n.attr("has_h0") else ()
        for k, part in enumerate(hf):
            src = f" + {h0[k]}" if k < len(h0) else ""
            self.out("pre", f"{part} = tl.zeros({state}, {em.acc}){src}")
        self.fwd_state = hf
        out = lambda line: self.out("fwd", line)
        a_t, x_t = scan_operands(em, i, n, out)
        hs = scan_chunk(em, i, n, out, a_t, x_t, hf, self.sched)
        for k in range(parts):
            out(f"{hf[k]} = {at_step(ta, hs[k], 'CHUNK - 1')}")

    def scan_rev(self, i, n):
        em = self.em
        parts = 2 if n.type.complex else 1
        hc = [f"hc{i}_{k}" for k in range(parts)]
        for k, part in enumerate(hc):
            self.out("loop", f"{part} = tl.load(sc_ptrs + {k}, mask=ck_mask, other=0.0)  # the chunk's start state")
        out = lambda line: self.out("loop", line)
        a_t, x_t = scan_operands(em, i, n, out)
        em.names[i] = tuple(scan_chunk(em, i, n, out, a_t, x_t, hc, self.sched))
        self.scan_tiles[i] = (a_t, hc, bool(n.attr("reset")))

    def shift_lines(self, name, src, edge, step):
        """name = src shifted by `step` (-1: the previous step, +1: the next) along time; `edge`
        fills the position that falls outside the chunk."""
        ta = self.ta
        t = f"tl.arange(0, CHUNK){ta.bc('t')}"
        if step < 0:
            idx, at_edge = f"tl.maximum({t} - 1, 0)", f"({t} == 0)"
        else:
            idx, at_edge = f"tl.minimum({t} + 1, CHUNK - 1)", f"({t} == CHUNK - 1)"
        return [f"{name} = tl.where({at_edge}, {edge}, "
                f"tl.gather({src}, tl.broadcast_to({idx}, {src}.shape), axis={ta.ax('t')}))"]

    def prev(self, i, n):
        scan = n.args[0]
        hs = self.em.names[scan]
        _, hc, reset = self.scan_tiles[scan]
        names = []
        for k, (src, edge) in enumerate(zip(hs, hc)):
            name = f"{var(i)}_{k}"
            for line in self.shift_lines(name, src, f"{edge} + 0.0 * {src}", -1):
                self.out("loop", line)
            if reset:
                self.out("loop", f"{name} = tl.where(reset{scan}, 0.0, {name})")
            names.append(name)
        self.em.names[i] = tuple(names)

    def adjoint(self, i, n):
        em, ta = self.em, self.ta
        scan = n.args[0]
        a_t, _, _ = self.scan_tiles[scan]
        parts = len(a_t)
        state = tile_shape(ta, self.g[scan].type, "1")
        shape = tile_shape(ta, self.g[scan].type, "CHUNK")
        gc = [f"gc{i}_{k}" for k in range(parts)]  # g at the first step of the chunk after this one
        an = [f"an{i}_{k}" for k in range(parts)]  # Ā' at that step (1 past the end: g_L = dlast)
        dlast = em.names[n.args[2]] if n.attr("has_dlast") else ()
        for k in range(parts):
            src = f" + {dlast[k]}" if k < len(dlast) else ""
            self.out("pre", f"{gc[k]} = tl.zeros({state}, {em.acc}){src}")
            self.out("pre", f"{an[k]} = tl.zeros({state}, {em.acc}) + {'1.0' if k == 0 else '0.0'}")
        bn = [f"bn{i}_{k}" for k in range(parts)]
        for k in range(parts):  # conj(Ā'_{t+1})
            for line in self.shift_lines(bn[k], a_t[k], f"{an[k]} + 0.0 * {a_t[k]}", +1):
                self.out("loop", line)
        if parts == 2:
            self.out("loop", f"{bn[1]} = -{bn[1]}")
        dh = em.names[n.args[1]]
        dx = [f"dh{i}_{k}" for k in range(parts)]
        for k in range(parts):
            self.out("loop", f"{dx[k]} = tl.where(valid{ta.bc('t')}, {broadcast_tile(em, dh, k, shape)}, 0.0)")
        cb = [f"cb{i}_{k}" for k in range(parts)]
        sg = [f"sg{i}_{k}" for k in range(parts)]
        comb = "_combine_complex" if parts == 2 else "_combine_real"
        self.out("loop", f"{', '.join(cb + sg)} = tl.associative_scan(({', '.join(bn + dx)}), axis={ta.ax('t')}, "
                         f"combine_fn={comb}, reverse=True)  # g_t = dh_t + conj(Ā'_t+1) g_t+1")
        g = [f"g{i}_{k}" for k in range(parts)]
        if parts == 2:
            self.out("loop", f"{g[0]} = {cb[0]} * {gc[0]} - {cb[1]} * {gc[1]} + {sg[0]}")
            self.out("loop", f"{g[1]} = {cb[0]} * {gc[1]} + {cb[1]} * {gc[0]} + {sg[1]}")
        else:
            self.out("loop", f"{g[0]} = {cb[0]} * {gc[0]} + {sg[0]}")
        for k in range(parts):  # carried to the chunk before
            self.out("loop", f"{gc[k]} = {at_step(ta, g[k], '0')}")
            self.out("loop", f"{an[k]} = {at_step(ta, a_t[k], '0')}")
        em.names[i] = tuple(g)
        self.carry_of = getattr(self, "carry_of", {})
        self.carry_of[i] = (an, gc)

    def carry(self, i, n):
        an, gc = self.carry_of[n.args[0]]
        name = (f"{var(i)}_re", f"{var(i)}_im") if len(an) == 2 else (var(i),)
        if len(an) == 2:  # conj(Ā'_first) · g_first
            self.out("post", f"{name[0]} = {an[0]} * {gc[0]} + {an[1]} * {gc[1]}")
            self.out("post", f"{name[1]} = {an[0]} * {gc[1]} - {an[1]} * {gc[0]}")
        else:
            self.out("post", f"{name[0]} = {an[0]} * {gc[0]}")
        self.em.names[i] = name

    def clip_grad(self, i, n):
        c = self.em.names[n.args[1]]
        self.em.elementwise(i, n, lambda line: self.out(self.phase[i], line),
                            names=tuple(f"{var(i)}_{k}" for k in range(len(c))))

    # --- reductions and outputs -----------------------------------------------------------------
    def reduce(self, i, n):
        em, ta = self.em, self.ta
        axes = set(n.attr("axes"))
        src, e = em.names[n.args[0]], self.ext[n.args[0]]
        exact = _exact_roles(self.g, n)
        tile_axes = [ta.ax(c) for c, roles, has in (("d", {"h", "p"}, e[0]), ("n", {"n"}, e[1]), ("t", {"t"}, e[2]))
                     if axes & roles & exact and has]
        names = tuple(f"{var(i)}_{k}" for k in range(len(src)))
        em.names[i] = names
        if not tile_axes:  # over b, h or p only: a per-program partial, finished by the output's atomics
            for name, s in zip(names, src):
                self.out(self.phase[i], f"{name} = {s}")
            return
        mask = _mask(ta, e)
        if ta.ax("d") in tile_axes:  # every channel lane once: P (or H) copies of a value constant over p (or h)
            mask = mask.replace(f"mask_d{ta.bc('d')}", channel_mask(em, self.lanes[n.args[0]]))
        for name, s in zip(names, src):
            expr = f"tl.where({mask}, {s}, 0.0)" if mask else s
            for ax in sorted(tile_axes, reverse=True):
                expr = f"tl.sum({expr}, axis={ax}, keep_dims=True)"
            if "t" in axes:  # accumulated over the chunks in registers
                self.out("pre", f"{name} = tl.zeros({_shape(ta, self.ext[i])}, {em.acc})")
                self.out("loop", f"{name} += {expr}")
            else:
                self.out(self.phase[i], f"{name} = {expr}")

    def output(self, i, n):
        em, ta, g = self.em, self.ta, self.g
        phase = self.phase[i]
        p = param_name(g, n)
        axes = n.attr("axes")
        ptrs, masks = store_pointers(ta, p, axes)
        src, e = em.names[n.args[0]], self.ext[n.args[0]]
        atomic = bool(self.partial[n.args[0]]) or any(a.role in ("g", "r") for a in axes)  # channels merged
        if atomic and e[0]:  # lanes added up by the atomics: each channel lane once
            roles = self.lanes[n.args[0]] | {value_role(a.role) for a in axes}
            masks = [channel_mask(em, roles) if m.startswith("mask_d") else m for m in masks]
        mask = " & ".join(masks) if masks else None
        self.out(phase, f"{p}_ptrs = {ptrs}")
        summed_here = atomic and e[0] and not any(a.role in "hpgr" for a in axes)  # over every channel
        grouped = atomic and e[0] and any(a.role == "g" for a in axes) and not any(a.role in "hp" for a in axes)
        per_block = ((summed_here or grouped) and self.sched.partials and "t" in {a.role for a in axes}
                     and not self.partial[n.args[0]] - {"h", "p"})
        for k, part in enumerate(src):
            tgt = f"{p}_ptrs" if k == 0 else f"{p}_ptrs + {p}_si"
            if summed_here or per_block:  # a group's channels: the launcher keeps a block in one group
                lanes = channel_mask(em, self.lanes[n.args[0]])
                part = f"tl.sum(tl.where({lanes}, {part}, 0.0), axis={ta.ax('d')}, keep_dims=True)"
            val = f"tl.broadcast_to({part}, {p}_ptrs.shape).to({p}_ptr.dtype.element_ty)"
            if per_block:  # this block's slice of the (blocks, ...) buffer; the launcher sums it
                blk = "(tl.program_id(1) % ((P * HG) // BLOCK_D))" if grouped else "tl.program_id(1)"
                self.out(phase, f"tl.store({tgt} + {blk} * {p}_sblk, {val}{', mask=' + mask if mask else ''})")
                continue
            fn = "tl.atomic_add" if atomic else "tl.store"
            sem = RELAXED if atomic else ""
            val = f"_dense({val})" if atomic else val
            self.out(phase, f"{fn}({tgt}, {val}{', mask=' + mask if mask else ''}{sem})")
        if per_block:
            self.blocks.add(n.attr("name"))
        elif atomic:
            self.atomic.add(n.attr("name"))

    # --- driver ---------------------------------------------------------------------------------
    def lower(self):
        g = self.g
        (scan,) = g.ids("scan")
        need = _scan_ancestors(g, scan, self.phase)
        for i, n in enumerate(g.nodes):
            if i in need and n.op != "scan":
                self.em.lower_node(i, "fwd")
            if n.op in BACKWARD_RULES:
                BACKWARD_RULES[n.op](self, i, n)
            else:
                self.em.lower_node(i, self.phase[i])

    def scan(self, i, n):
        self.scan_fwd(i, n)
        self.scan_rev(i, n)


BACKWARD_RULES = {op: getattr(BackwardLowering, op) for op in ("scan", "prev", "adjoint", "carry", "reduce", "output",
                                                                "clip_grad")}
"""op -> its lowering in a backward kernel; the others lower as in the forward kernel (recurrent.STRUCTURAL,
elementwise.TRITON)."""


def _scan_ancestors(g: Graph, scan: int, phase: dict) -> set:
    """Time-varying nodes the scan's operands depend on: what the checkpoint pass computes."""
    need, stack = set(), list(g[scan].args)
    while stack:
        j = stack.pop()
        if j in need or phase[j] != "loop":
            continue
        need.add(j)
        stack.extend(g[j].args)
    return need


def generate_backward(graph: Graph, schedule: Schedule, acc: str = "float32") -> str:
    scans = graph.ids("scan")
    if len(scans) != 1 or len(graph.ids("adjoint")) != 1:
        raise IRError(f"{graph.name}: the Triton backward lowers one scan and its adjoint")
    bw = BackwardLowering(graph, schedule, acc)
    bw.lower()
    ta, lines = bw.ta, bw.em.lines
    state = graph[scans[0]].type
    kname = f"{ident(graph.name)}_kernel"
    inputs = [graph[i] for i in graph.ids("input")]
    outputs = [graph[i] for i in graph.ids("output")]
    repeats = has_repeat_axis(graph)
    params = tensor_params(graph, inputs + outputs) + ["ck_ptr", "sc_ptr", "L", "NCH", "P", "N", "HG", "NCK",
                                                       "M", "NSEG"] + (["R"] if repeats else [])
    params += [f"{param_name(graph, n)}_sblk" for n in outputs if n.attr("name") in bw.blocks]
    consts = ["BLOCK_D: tl.constexpr", "BLOCK_N: tl.constexpr", "CHUNK: tl.constexpr",
              "EVEN_D: tl.constexpr", "EVEN_N: tl.constexpr"]
    parts = 2 if state.complex else 1
    d, n = ta.bc("d"), ta.bc("n")
    # a MIMO state has no channel axis: its slots use channel 0 (one program holds every channel)
    # and a state constant over n (a scan of x_t alone, summed with an n-wide C later) its slot 0: the
    # checkpoint tile has the state's shape, which the loop carries unchanged
    chan = f"offs_d{d}" if state.dims & {"h", "p"} else "0"
    col = f"offs_n{n}" if "n" in state.dims else "0"
    ck_mask = " & ".join(m for m, on in ((f"mask_d{d}", chan != "0"), (f"mask_n{n}", col != "0")) if on) or "None"
    slot = lambda buf, count, index: (f"{buf}_ptr + (((pid_b * {count} + {index}) * NCH + {chan}) * N"
                                      f" + {col}) * {parts}")
    head = ["k = c * CHUNK + tl.arange(0, CHUNK)  # position along the scan order", "valid = k < L",
            *time_maps(graph, schedule)]
    hf = bw.fwd_state
    ind = lambda lines, depth=1: ["    " * depth + x for x in lines]
    body = [
        *kernel_prologue(),
        *(["idx_r = idx_h % R  # inputs shared by every block of R heads"] if repeats else []),
        f"ck_mask = {ck_mask}",
        "# ---- time-invariant values, accumulators",
        *lines["pre"],
        "# ---- forward sweep: the state at the start of every segment of M chunks (a checkpoint)",
        "for c in range(0, NCK):",
        *ind(head),
        f"    ck_ptrs = {slot('ck', 'NSEG', 'c // M')}",
        "    if c % M == 0:  # the segment's first chunk: its start state is the checkpoint",
        *[f"        tl.store(ck_ptrs + {k}, {h}, mask=ck_mask)" for k, h in enumerate(hf)],
        *ind(lines["fwd"]),
        "tl.debug_barrier()  # checkpoints are read back by other threads of this program",
        "# ---- segments in reverse: their chunk start states from the checkpoint, then the chunks in reverse",
        "for si in range(0, NSEG):",
        "    s = NSEG - 1 - si",
        f"    ck_ptrs = {slot('ck', 'NSEG', 's')}",
        *[f"    {h} = tl.load(ck_ptrs + {k}, mask=ck_mask, other=0.0)" for k, h in enumerate(hf)],
        "    for j in range(0, M):",
        "        c = s * M + j  # chunks past the end are all padding: identity steps, masked writes",
        *ind(head, 2),
        f"        sc_ptrs = {slot('sc', 'M', 'j')}",
        *[f"        tl.store(sc_ptrs + {k}, {h}, mask=ck_mask)" for k, h in enumerate(hf)],
        *ind(lines["fwd"], 2),
        "    tl.debug_barrier()",
        "    for ji in range(0, M):",
        "        j = M - 1 - ji",
        "        c = s * M + j",
        *ind(head, 2),
        f"        sc_ptrs = {slot('sc', 'M', 'j')}",
        *ind(lines["loop"], 2),
        "    tl.debug_barrier()  # the next segment overwrites the chunk start states",
        "# ---- reduced over time: parameter gradients, the initial state's",
        *lines["post"],
    ]
    kernel = "\n".join(["@triton.jit", f"def {kname}(", *[f"    {p}," for p in params + consts], "):",
                        *["    " + x for x in body]])
    launch = launch_source(graph, inputs, outputs, _launch(graph, kname, outputs, bw.atomic, parts, acc, bw.blocks))
    mimo = any(graph[i].attr("io") == "mimo" for i in scans)
    return recurrent_module(graph, inputs, outputs, schedule, mimo, with_acc_literals(kernel, acc), launch)


def _launch(graph, kname, outputs, atomic, parts, acc, blocks) -> Launch:
    """The backward kernel's launch: gradients in the arithmetic dtype (fp32, or fp64 for float64
    inputs); those finished by atomic adds start from zeros; those in `blocks` are written per block of
    channels into a (blocks, ...) buffer and summed after; a checkpoint buffer of one state per chunk
    (batch, chunks, channels, N, parts)."""
    real = f"torch.{acc}"
    cplx = "torch.complex128" if acc == "float64" else "torch.complex64"
    grouped = any(a.role == "g" for n in outputs if n.attr("name") in blocks for a in n.attr("axes"))
    buffers, per_block = {}, []
    for n in outputs:
        p, shape = param_name(graph, n), output_shape(n)
        dtype = cplx if n.type.complex else real
        if n.attr("name") in blocks:  # per block of channels: a (blocks, ...) buffer, summed below
            per_block.append(p)
            buffers[p] = [f"    {p}_given = {p}",
                          f"    {p}_blocks = torch.empty({output_shape(n, 'NBLK')}, device=device, dtype={dtype})",
                          f"    {p} = {p}_blocks[0]"]
        else:
            buffers[p] = output_buffer(p, shape, dtype, zeroed=n.attr("name") in atomic)
    return Launch(
        doc="Run the backward kernel on torch tensors of one device; returns {gradient name: tensor}.",
        kernel=kname, buffers=buffers,
        before=[
            "    BLOCK_N = triton.next_power_of_2(N)",
            "    BLOCK_D = triton.next_power_of_2(NCH) if MIMO else min(sched['block_d'], triton.next_power_of_2(NCH))",
            *(["    while (HG * P) % BLOCK_D:  # per-block gradients of a B/C group: keep each block in one group",
               "        BLOCK_D //= 2"] if grouped else []),
            # blocks writing one slice of a per-block buffer: all of them, or those of one group
            f"    NBLK = {'(HG * P) // BLOCK_D' if grouped else 'triton.cdiv(NCH, BLOCK_D)'}",
        ],
        after=[
            "    CHUNK = 1 if MIMO else min(sched['chunk'], triton.next_power_of_2(L))"
            "  # MIMO: see the forward's launcher",
            "    NCK = triton.cdiv(L, CHUNK)",
            "    # a checkpoint every M chunks; chunk start states of one segment at a time in `scratch`",
            "    T = sched.get('checkpoint') or triton.next_power_of_2(int((L * CHUNK) ** 0.5))",
            "    M = max(1, min(T // CHUNK, NCK))",
            "    NSEG = triton.cdiv(NCK, M)",
            f"    ckpt = torch.empty((batch, NSEG, NCH, N, {parts}), device=device, dtype={real})",
            f"    scratch = torch.empty((batch, M, NCH, N, {parts}), device=device, dtype={real})",
            "    grid = (batch, triton.cdiv(NCH, BLOCK_D))",
        ],
        globals_=("LAST_WORKSPACE",),
        workspace=["    LAST_WORKSPACE = dict(checkpoints=NSEG, chunk_states=M, bytes=ckpt.nbytes + scratch.nbytes)"],
        call_args=[
            "        ckpt, scratch, L, NCH, P, N, HG, NCK, M, NSEG," + (" R," if has_repeat_axis(graph) else ""),
            *[f"        {p}_blocks.stride(0)," for p in per_block],
            "        BLOCK_D=BLOCK_D, BLOCK_N=BLOCK_N, CHUNK=CHUNK, EVEN_D=NCH % BLOCK_D == 0, EVEN_N=N == BLOCK_N,",
            "        num_warps=sched['num_warps'],",
        ],
        finish=[f"    {p} = {p}_blocks.sum(0) if {p}_given is None else torch.sum({p}_blocks, 0, out={p}_given)"
                for p in per_block])
