"""Triton code generation: one fused kernel per scan region, as readable Python source.

Every value of a region is a register tile over the kernel axes channels, state and time chunk
(`[BLOCK_D, BLOCK_N, CHUNK]` in the default layout "dnt", with size-1 axes where it does not vary;
layout "tdn" puts time first so each thread walks its own steps); the batch index is the
first program id.  A value's IR type says which axes it has, so each op lowers to one line of
tile arithmetic.  Time-invariant nodes (marked by `detect_lti`) are computed before the time
loop; the loop walks the sequence a chunk at a time, scans each chunk with
`tl.associative_scan` on (Ā, x) pairs and carries the state between chunks in fp32 registers.
A scan order is an index map folded into the time offsets, so nothing is flipped or copied.
Complex values are (re, im) pairs of real tiles.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import sympy as sp

import numpy as np

from ssmc.ir import Graph, IRError
from ssmc.ir.symbolic import LOG2E, exp2_form, lower, print_triton

LN2 = 0.6931471805599453

CODEGEN_VERSION = "5"
AXIS_OF_ROLE = {"h": 0, "p": 0, "g": 0, "n": 1, "t": 2}
RELAXED = ", sem='relaxed'"  # atomic adds need no ordering: only the sums they finish are read, after the kernel


@dataclass(frozen=True)
class Schedule:
    """How to run a kernel; never changes results (tests sweep it)."""

    block_d: int = 16  # channels per program (SISO); MIMO regions take all channels
    chunk: int = 16  # time steps per associative scan; 1 = a plain sequential recurrence
    num_warps: int = 4
    layout: str = "dnt"  # order of the tile axes: d(channels) n(state) t(time); "tdn" keeps time per thread
    wide: bool = False  # int64 offsets inside a batch slab; set automatically for tensors of >= 2^31 elements
    # backward: time steps between states stored by the forward sweep (a power of two; 0 = about
    # √(L·chunk), which balances the checkpoints against the per-segment chunk states)
    checkpoint: int = 0
    # backward: a gradient summed over the channel blocks (B, C shared by every channel) written per
    # block and summed after the kernel, instead of atomic adds of every block into one buffer
    partials: bool = False
    # inputs shared by the channels (B, C: state and time axes only) loaded as full tiles with a
    # channel stride of 0.  Triton takes a chunk's layout from its loads; these then set it, so that in
    # layout "tdn" a thread keeps its chunk of steps and the lanes split channels and states (Mamba-1,
    # tdn 8/8/1: 96 registers and 11.4 SASS per element in the loop, against 128 and 16.4 at 1/64/1;
    # 0.312 vs 0.380 ms on an H100, the cost model's choice with enough channels: strategy.py)
    full_tiles: bool = False
    # the time-varying inputs of the next chunk loaded while this one computes (a register prefetch,
    # forward kernels of identity or reverse orders): a program waits on its loads only once.  An autotuning
    # candidate: on an H100 it slowed Mamba-1's tdn 8/8/1 full tiles (0.385 vs 0.317 ms: 156 registers
    # against 96, fewer warps); where it sped a schedule up, the cost model's schedule without it was as fast
    # or faster (within 0.1%) at every batch x channels measured (BENCHMARKS.md, 2026-12-07)
    prefetch: bool = False

    def __post_init__(self):
        if sorted(self.layout) != ["d", "n", "t"]:
            raise ValueError(f"Schedule.layout must order the letters d, n, t, got {self.layout!r}")
        for k in ("block_d", "chunk"):
            v = getattr(self, k)
            if v < 1 or v & (v - 1):
                raise ValueError(f"Schedule.{k} must be a power of two, got {v}")
        if self.checkpoint < 0 or self.checkpoint & (self.checkpoint - 1):
            raise ValueError(f"Schedule.checkpoint must be 0 (automatic) or a power of two, got {self.checkpoint}")


class TileAxes:
    """Where each kernel axis (d: channels, n: state, t: time) sits in a 3-D register tile."""

    def __init__(self, layout: str):
        self.layout = layout

    def ax(self, letter: str) -> int:
        return self.layout.index(letter)

    def bc(self, letter: str) -> str:
        """Broadcast suffix putting a 1-D vector on axis `letter`, e.g. '[:, None, None]'."""
        return "[" + ", ".join(":" if c == letter else "None" for c in self.layout) + "]"

    def shape(self, d: str, n: str, t: str) -> str:
        return "[" + ", ".join({"d": d, "n": n, "t": t}[c] for c in self.layout) + "]"


ACC_DTYPES = {"float32": "tl.float32", "float64": "tl.float64"}


class _Emitter:
    def __init__(self, graph: Graph, axes: TileAxes, acc: str = "float32"):
        self.g = graph
        self.ax = axes
        self.acc = ACC_DTYPES[acc]  # arithmetic dtype: fp32, or fp64 for float64 inputs (gradcheck)
        self.lines = {"pre": [], "loads": [], "loop": [], "post": [], "fwd": []}
        self.early_loads = False  # time-varying inputs into "loads", emitted at the top of the time loop
        self.names = {}  # node id -> (re,) or (re, im) variable names
        self.phase = {}  # node id -> pre / loop / post (see _phases)
        self.hoisted = set()  # time-invariant factors with log2(e) folded in (see _lower_expr)
        self.one_group = False  # every program's channels in one group, g_blk (see _pointers)
        self.full_tiles = False  # channel-shared time-varying inputs loaded over the channel axis too
        self.prefetched = []  # (input node, variable names) of the loads Schedule.prefetch issues a chunk ahead
        self.mode = "chunk"  # how a scan lowers: "chunk", or a column-wise pass of a grid order (grid.py)
        self.tp, self.valid = "tp", "valid"  # the time index and mask that loads and stores use
        self.fine = []  # nodes evaluated after an upsample, at every position of a cell (grid.py)
        self.skip = set()  # of those, the ones not also needed at the anchors

    def out(self, phase, line):
        self.lines[phase].append(line)


def _phases(g: Graph) -> dict:
    """pre: before the time loop; loop: per chunk; post: after it (final states)."""
    phase = {}
    for i, n in enumerate(g.nodes):
        if n.op == "last":
            phase[i] = "post"
        elif any(phase.get(a) == "post" for a in n.args):
            if n.type.time_varying:
                raise IRError(f"node %{i} ({n.op}): time-varying use of a final state cannot be lowered")
            phase[i] = "post"
        elif n.op == "scan" or n.type.time_varying:
            phase[i] = "loop"
        elif n.op == "output":
            phase[i] = phase.get(n.args[0], "pre")
        else:
            phase[i] = "pre"
    return phase


def _pointers(ta: TileAxes, p: str, axes, tp="tp", one_group=False, valid="valid"):
    """(pointer expression, mask terms) for tensor `p` laid out along `axes` (strides p_s0, p_s1, ...).

    The batch offset is added to the base pointer as an int64 scalar, so the per-element
    offsets stay 32-bit (cheaper index arithmetic) unless the schedule is `wide`.  With
    `one_group` every channel of the program is in group g_blk: a grouped input (B, C per order)
    is then one tile shared by the channels, not a per-channel gather.
    """
    d, n, t = ta.bc("d"), ta.bc("n"), ta.bc("t")
    idx = {"t": f"{tp}{t}", "h": f"idx_h{d}", "p": f"idx_p{d}", "g": "g_blk" if one_group else f"idx_g{d}",
           "r": f"idx_r{d}", "n": f"offs_n{n}"}
    mask = {"t": f"{valid}{t}", "h": f"mask_d{d}", "p": f"mask_d{d}", "r": f"mask_d{d}", "n": f"mask_n{n}",
            **({} if one_group else {"g": f"mask_d{d}"})}
    base = f"{p}_ptr" + "".join(f" + pid_b * {p}_s{k}" for k, a in enumerate(axes) if a.role == "b")
    offs = [f"{idx[a.role]} * {p}_s{k}" for k, a in enumerate(axes) if a.role != "b"]
    masks = sorted({mask[a.role] for a in axes if a.role in mask})
    return (f"({base}) + " + " + ".join(offs) if offs else base), masks


def generate(graph: Graph, schedule: Schedule, acc: str = "float32") -> str:
    """Python source of a module holding the kernel and a `launch` function."""
    from .grid import body as grid_body, grid_map, launch_order, upsampled
    if graph.ids("adjoint"):  # a backward graph (ssmc.ir.passes.adjoint)
        from .backward import generate_backward
        return generate_backward(graph, schedule, acc)
    regions = {n.attr("region") for n in graph.nodes if n.attr("region") is not None}
    if len(regions) != 1:
        raise IRError(f"{graph.name}: the Triton backend lowers graphs of exactly one kernel region, "
                      f"found {len(regions)}")
    scans = graph.ids("scan")
    mimo = any(graph[i].attr("io") == "mimo" for i in scans)
    index = gather_index(graph)
    if mimo and index is not None and any(a.role == "g" for a in index.attr("axes")):
        raise IRError(f"{graph.name}: a MIMO scan holds every channel in one program: it takes one gather "
                      f"order for all channels, not one per group")
    em = _Emitter(graph, TileAxes(schedule.layout), acc)
    phase = em.phase = _phases(graph)
    grid = grid_map(graph)
    em.one_group = per_group_order(graph)  # the launcher keeps a block's channels inside one group
    em.full_tiles = schedule.full_tiles
    em.early_loads = True
    if schedule.prefetch and not prefetchable(graph):
        raise ValueError(f"{graph.name}: Schedule.prefetch computes the next chunk's time indices ahead, "
                         f"which a gather or grid order reads from its index map; use prefetch=False")
    if grid is not None and grid.strides:  # nodes after an upsample are lowered per cell by grid.body
        em.fine, em.skip = upsampled(graph, phase)
    kname = f"{_ident(graph.name)}_fwd"
    inputs = [graph[i] for i in graph.ids("input")]
    outputs = [graph[i] for i in graph.ids("output")]
    params = tensor_params(graph, inputs + outputs)
    repeats = has_repeat_axis(graph)
    symbols = ["L", "NCH", "P", "N", "HG"] + (["R"] if repeats else [])
    consts = ["BLOCK_D: tl.constexpr", "BLOCK_N: tl.constexpr", "CHUNK: tl.constexpr",
              "EVEN_D: tl.constexpr", "EVEN_N: tl.constexpr", "EVEN_L: tl.constexpr"]

    for i, n in enumerate(graph.nodes):
        if i not in em.skip:
            _lower_node(em, i, n, phase[i], schedule)

    # the loops first: a grid order lowers nodes again per branch, which may hoist values into "pre"
    if grid:
        loops = grid_body(em, graph, schedule, [i for i in phase if phase[i] == "loop"])
    elif em.lines["loop"]:
        first, ahead = _prefetched_loads(em, graph, schedule) if schedule.prefetch else ([], [])
        loops = _time_loop(graph, schedule, em.lines["loads"] + ahead + em.lines["loop"], first=first)
    else:
        loops = []
    body = [
        *kernel_prologue(launch_order(grid) if grid else BLOCK_OF_PROGRAM),
        *(["idx_r = offs_d % R  # inputs shared by every block of R channels"] if repeats else []),
        *([GROUP_OF_BLOCK] if em.one_group else []),
        "# ---- time-invariant values: computed once per sequence",
        *em.lines["pre"],
        *loops,
        "# ---- final states",
        *em.lines["post"],
    ]
    kernel = "\n".join([
        "@triton.jit",
        f"def {kname}(",
        *[f"    {p}," for p in params + symbols + consts],
        "):",
        *["    " + line for line in body],
    ])
    from .launcher import launcher_source
    launcher = launcher_source(graph, kname, inputs, outputs, acc)
    return _module(graph, kname, with_acc_literals(kernel, acc), inputs, outputs, schedule, mimo, launcher)


_FLOAT_LITERAL = re.compile(r"(?<![\w.])(\d+\.\d*(?:e[-+]?\d+)?)(?![\w.])")


def with_acc_literals(kernel: str, acc: str) -> str:
    """Triton types a Python float literal as fp32, so in a float64 kernel 0.3 would be 0.30000001192:
    literals that fp32 cannot hold exactly become float64 constants."""
    if acc != "float64":
        return kernel

    def fix(m):
        v = float(m.group(1))
        return m.group(1) if float(np.float32(v)) == v else f"tl.full([], {m.group(1)}, tl.float64)"
    return _FLOAT_LITERAL.sub(fix, kernel)


def tensor_params(graph: Graph, nodes) -> list:
    """Kernel parameters of input/output tensors: pointer, strides, imaginary-part stride."""
    params = []
    for n in nodes:
        p = param_name(graph, n)
        params.append(f"{p}_ptr")
        params += [f"{p}_s{k}" for k in range(len(n.attr("axes")))]
        if n.attr("complex") or (n.op == "output" and n.type.complex):
            params.append(f"{p}_si")  # stride to the imaginary part of the real view
    return params


BLOCK_OF_PROGRAM = ["blk = tl.program_id(1)  # this program's block of channels"]


def kernel_prologue(block: list = BLOCK_OF_PROGRAM) -> list:
    """The kernel's first lines: batch and channel indices and masks; `block` defines `blk`, the
    program's block of channels (grid.launch_order remaps it)."""
    return ["pid_b = tl.program_id(0).to(tl.int64)", *block, *KERNEL_INDICES]


KERNEL_INDICES = [
    "offs_d = blk * BLOCK_D + tl.arange(0, BLOCK_D)  # channel = head * P + p",
    "mask_d = (offs_d < NCH) | EVEN_D  # all-true when blocks tile the channels: masks fold away",
    "idx_h = offs_d // P",
    "idx_p = offs_d % P",
    "idx_g = idx_h // HG  # heads share B/C groups",
    "offs_n = tl.arange(0, BLOCK_N)",
    "mask_n = (offs_n < N) | EVEN_N",
]


GROUP_OF_BLOCK = "g_blk = (blk * BLOCK_D) // (P * HG)  # this block's group (and order)"


def _time_loop(graph: Graph, schedule: Schedule, lines: list, maps: list | None = None, length: str = "L",
               even: str = "EVEN_L", first: list = ()) -> list:
    """The chunked time loop around a chunk's `lines`; `maps` (lines giving tp) default to the scan's order.
    The scan takes `length` steps (a strided grid view fewer than L); `even` is true when CHUNK divides
    them (a constexpr); `first` are lines before the loop (the first chunk's prefetched loads)."""
    ahead, maps = _prefetched_gather(graph, schedule) if gather_index(graph) is not None \
        else ([], maps or _time_maps(graph, schedule))
    return [
        "# ---- the sequence, CHUNK steps at a time",
        *ahead,
        *first,
        f"for k0 in range(0, {length}, CHUNK):",
        *["    " + line for line in [
            "k = k0 + tl.arange(0, CHUNK)  # position along the scan order",
            f"valid = (k < {length}) | {even}  # all-true when chunks tile L: the padding selects fold away",
            *maps,
            *lines,
        ]],
    ]


def prefetchable(g: Graph) -> bool:
    """Can Schedule.prefetch apply: are the scan's time indices computed (identity or reverse order)?"""
    from .grid import grid_map
    return gather_index(g) is None and grid_map(g) is None


def _prefetched_loads(em: _Emitter, g: Graph, sched: Schedule) -> tuple:
    """(lines before the loop, lines in it) of Schedule.prefetch: the raw loads of the first chunk, and
    the next chunk's, issued once this chunk's are widened so that they are in flight while it computes.
    The next chunk's mask is never folded by EVEN_L: after the last chunk it is all false."""
    first = ["k = tl.arange(0, CHUNK)  # the first chunk's loads, before the loop",
             "valid = (k < L) | EVEN_L", f"tp = {_time_index(g, sched)}"]
    ahead = ["kn = k + CHUNK  # the next chunk's loads, in flight while this chunk computes",
             "validn = kn < L", f"tpn = {_time_index(g, sched, 'kn')}"]
    for n, name in em.prefetched:
        first += [f"{v}_raw = {load}" for v, load in raw_loads(em, n, name, "tp", "valid")]
        ahead += [f"{v}_raw = {load}" for v, load in raw_loads(em, n, name, "tpn", "validn")]
    return first, ahead


def _prefetched_gather(g: Graph, sched: Schedule) -> tuple:
    """(lines before the loop, lines in it) of a gather order whose time indices are loaded one chunk
    ahead: every data load of a chunk waits on its indices, so their latency is spent during the
    previous chunk.  Indices are int32 (orders hold positions < L) unless offsets must be 64-bit."""
    base, st = _gather_pointer(g)
    width = ".to(tl.int64)" if sched.wide else ".to(tl.int32)"
    ahead = [f"tp_next = tl.load({base} + tl.arange(0, CHUNK) * {st}, mask=tl.arange(0, CHUNK) < L, other=0){width}"]
    maps = ["tp = tp_next  # step k visits time index[k]",
            f"tp_next = tl.load({base} + (k + CHUNK) * {st}, mask=(k + CHUNK) < L, other=0){width}",
            f"tq = tl.load({base} + (k - 1) * {st}, mask=valid & (k > 0), other=0){width}"
            "  # the previous step in scan order"]
    return ahead, maps


def _gather_pointer(g: Graph) -> tuple:
    """(pointer to this block's order, its time stride) in the gather index input."""
    idx = gather_index(g)
    p = idx.attr("name")
    base = f"{p}_ptr" + "".join(f" + g_blk * {p}_s{k}" for k, a in enumerate(idx.attr("axes")) if a.role == "g")
    st = next(f"{p}_s{k}" for k, a in enumerate(idx.attr("axes")) if a.role == "t")
    return base, st


def has_repeat_axis(g: Graph) -> bool:
    """Does an input or output have an axis of role r (shared by every block of channels)?"""
    return any(a.role == "r" for i in g.ids("input") + g.ids("output") for a in g[i].attr("axes"))


def per_group_order(g: Graph) -> bool:
    """Does each B/C group have its own scan order (a gather index over groups, or grid orders)?"""
    from .grid import grid_map
    index, grid = gather_index(g), grid_map(g)
    return index is not None or (grid is not None and len(grid.names) > 1)


def gather_index(g: Graph):
    """The index input of the graph's gather-order scan, or None."""
    for i in g.ids("scan"):
        if g[i].attr("order").kind == "gather":
            return g[g[i].args[-1]]
    return None


def _time_maps(g: Graph, sched: Schedule) -> list:
    wide = ".to(tl.int64)" if sched.wide else ""
    orders = {g[i].attr("order").kind for i in g.ids("scan")} or {"identity"}
    if len(orders) > 1:
        raise IRError(f"{g.name}: one region with two scan orders")
    if orders == {"gather"}:  # read from the index input; the launcher keeps a block in one group
        base, st = _gather_pointer(g)
        return [GROUP_OF_BLOCK,
                f"tp = tl.load({base} + k * {st}, mask=valid, other=0){wide}  # step k visits time index[k]",
                f"tq = tl.load({base} + (k - 1) * {st}, mask=valid & (k > 0), other=0){wide}"
                "  # the previous step in scan order"]
    if orders == {"reverse"}:
        return [f"tp = {_time_index(g, sched)}  # index map t = L-1-k: a reverse scan, no flipped copy",
                "tq = tp + 1  # the previous step in scan order"]
    return [f"tp = {_time_index(g, sched)}", "tq = tp - 1  # the previous step in scan order"]


def _time_index(g: Graph, sched: Schedule, k: str = "k") -> str:
    """The time index of scan position `k` in an identity or reverse order (computed, not loaded)."""
    wide = ".to(tl.int64)" if sched.wide else ""
    reverse = any(g[i].attr("order").kind == "reverse" for i in g.ids("scan"))
    return f"(L - 1 - {k}){wide}" if reverse else f"{k}{wide}"


def _ident(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def _v(i, part=None):
    return f"v{i}" if part is None else f"v{i}_{part}"


def _lower_node(em: _Emitter, i: int, n, phase: str, sched: Schedule) -> None:
    g, out = em.g, (lambda line: em.out(phase, line))
    args = [em.names.get(a) for a in n.args]
    cplx = n.type.complex
    name = (_v(i, "re"), _v(i, "im")) if cplx else (_v(i),)
    em.names[i] = name
    op = n.op
    if op == "input":
        if gather_index(g) is n:  # read by the time map, not as a value
            return
        if phase == "loop" and em.early_loads and sched.prefetch:  # loaded a chunk ahead (_prefetched_loads)
            em.prefetched.append((n, name))
            for v in name:
                em.out("loads", f"{v} = {widened(f'{v}_raw', n.attr('integer'), em.acc)}  # {n.attr('name')}")
            return
        for line in load_lines(em, n, name):  # a chunk's loads first: none waits after the scan
            em.out("loads" if phase == "loop" and em.early_loads else phase, line)
        return
    if op == "const":
        out(f"{name[0]} = {float(n.attr('value'))!r}")
        return
    if op == "scan":
        _lower_scan(em, i, n, phase, sched)
        return
    if op == "last":
        em.names[i] = tuple(f"h{n.args[0]}{s}" for s in ("_re", "_im")) if cplx else (f"h{n.args[0]}",)
        return
    if op == "upsample":  # the value at the anchor; the nodes after it run per position (grid.fine_block)
        em.names[i] = args[0]
        return
    if op == "output":
        _lower_output(em, i, n, phase)
        return
    if op == "sum":
        axes = sorted({em.ax.ax("d" if r in "hp" else "n") for r in n.attr("axes")})
        src = args[0]
        for ax in axes:
            mask = f"mask_d{em.ax.bc('d')}" if ax == em.ax.ax("d") else f"mask_n{em.ax.bc('n')}"
            src = tuple(f"tl.sum(tl.where({mask}, {s}, 0.0), axis={ax}, keep_dims=True)" for s in src)
            if ax != axes[-1]:
                tmp = tuple(f"{x}_s{ax}" for x in name)
                for t_, s in zip(tmp, src):
                    out(f"{t_} = {s}")
                src = tmp
        for t_, s in zip(name, src):
            out(f"{t_} = {s}")
        return
    if op == "expr":
        _lower_expr(em, i, n, out)
        return
    for line in _elementwise(op, n, name, args, em.acc):
        out(line)


def load_lines(em: _Emitter, n, name: tuple, tp=None, valid=None, when: str = "") -> list:
    """The loads of input node n into variables `name` (one, or re and im), at time indices `tp`
    where `valid` (and the scalar condition `when`) holds; by default the emitter's em.tp, em.valid."""
    integer, p = n.attr("integer"), n.attr("name")
    lines = [f"{v} = {widened(load, integer, em.acc)}" for v, load in raw_loads(em, n, name, tp, valid, when)]
    return [lines[0] + f"  # {p}", *lines[1:]]


def raw_loads(em: _Emitter, n, name: tuple, tp=None, valid=None, when: str = "") -> list:
    """[(variable, load expression)] of input node n as stored, before any widening (see load_lines)."""
    p = n.attr("name")
    tp, valid = tp or em.tp, valid or em.valid
    ptr, masks = _pointers(em.ax, p, n.attr("axes"), tp=tp, one_group=em.one_group, valid=valid)
    if em.full_tiles and channel_shared(n, em.one_group):
        ptr += f" + offs_d{em.ax.bc('d')} * 0"  # a full tile: its layout becomes the chunk's
    masks = ([when] if when else []) + masks
    m = f", mask={' & '.join(masks)}, other=0" if masks else ""
    loads = [(name[0], f"tl.load({ptr}{m})")]
    if len(name) == 2:
        loads.append((name[1], f"tl.load({ptr} + {p}_si{m})"))
    return loads


def widened(load: str, integer: bool, acc: str = "tl.float32") -> str:
    """A load's value in the arithmetic type: integers as loaded, fp32 through FAST_MATH's `_widen`."""
    if integer:
        return load
    return f"_widen({load})" if acc == "tl.float32" else f"{load}.to({acc})"


def channel_shared(n, one_group: bool) -> bool:
    """Does input n vary over time and state but not over the program's channels (B and C)?"""
    roles = {a.role for a in n.attr("axes")}
    per_channel = roles & {"h", "p", "r"} or ("g" in roles and not one_group)
    return {"t", "n"} <= roles and not per_channel


def _elementwise(op, n, name, args, acc: str = "tl.float32"):
    x = args[0]
    log2 = "_log2_approx" if acc == "tl.float32" else "tl.log2"
    y = args[1] if len(args) > 1 else None
    real = {
        "neg": lambda: f"-{x[0]}",
        "exp": lambda: f"tl.exp({x[0]})",
        "sqrt": lambda: f"tl.sqrt({x[0]})",
        # log(1 + e^x) without overflow: max(x, 0) + log(1 + e^-|x|), through log2/exp2 (tl.log is a
        # polynomial of ~20 instructions on the GPU; SS2D on an H100 1.05 vs 1.10 ms); in fp32 the log2
        # is the special-function unit's (FAST_MATH)
        "softplus": lambda: f"tl.maximum({x[0]}, 0.0) + {LN2!r} * {log2}(1.0 + tl.exp2({-LOG2E!r} * tl.abs({x[0]})))",
        "sigmoid": lambda: f"tl.sigmoid({x[0]})",
        "silu": lambda: f"{x[0]} * tl.sigmoid({x[0]})",
        "clip": lambda: _clip(x[0], n.attr("lo"), n.attr("hi")),
        "real": lambda: x[0],
        "abs2": lambda: f"{x[0]} * {x[0]} + {x[1]} * {x[1]}" if len(x) == 2 else f"{x[0]} * {x[0]}",
        "add": lambda: f"{x[0]} + {y[0]}",
        "sub": lambda: f"{x[0]} - {y[0]}",
        "mul": lambda: f"{x[0]} * {y[0]}",
        "div": lambda: f"{x[0]} / {y[0]}",
    }
    if len(name) == 1:
        return [f"{name[0]} = {real[op]()}"]
    re, im = name
    if op == "complex":
        return [f"{re} = {x[0]} + 0.0 * {y[0]}", f"{im} = {y[0]} + 0.0 * {x[0]}"]
    if op == "neg":
        return [f"{re} = -{x[0]}", f"{im} = -{x[1]}"]
    if op == "exp":
        return [f"{re}_m = tl.exp({x[0]})", f"{re} = {re}_m * tl.cos({x[1]})", f"{im} = {re}_m * tl.sin({x[1]})"]
    xr, xi = (x[0], x[1] if len(x) == 2 else None)
    yr, yi = (y[0], y[1] if len(y) == 2 else None)
    if op in ("add", "sub"):
        s = "+" if op == "add" else "-"
        im_expr = (f"{xi} {s} {yi}" if xi and yi else xi if xi else f"{'-' if s == '-' else ''}{yi}")
        return [f"{re} = {xr} {s} {yr}", f"{im} = {im_expr}"]
    if op == "mul":
        if xi and yi:
            return [f"{re} = {xr} * {yr} - {xi} * {yi}", f"{im} = {xr} * {yi} + {xi} * {yr}"]
        if xi:
            return [f"{re} = {xr} * {yr}", f"{im} = {xi} * {yr}"]
        return [f"{re} = {xr} * {yr}", f"{im} = {xr} * {yi}"]
    if op == "div":
        if yi is None:
            return [f"{re} = {xr} / {yr}", f"{im} = {xi} / {yr}"]
        xi = xi or "0.0"
        return [f"{re}_d = {yr} * {yr} + {yi} * {yi}",
                f"{re} = ({xr} * {yr} + {xi} * {yi}) / {re}_d",
                f"{im} = ({xi} * {yr} - {xr} * {yi}) / {re}_d"]
    raise IRError(f"op {op}: no complex Triton lowering")


def _clip(x, lo, hi):
    e = x
    if lo != float("-inf"):
        e = f"tl.maximum({e}, {lo!r})"
    if hi != float("inf"):
        e = f"tl.minimum({e}, {hi!r})"
    return e


def _lower_expr(em, i, n, out):
    names = n.attr("symbols")
    flags = tuple(em.g[a].type.complex for a in n.args)
    # the rule's symbols become the operands' own variables: no shared names such as `dt` or `a_re`,
    # which Triton would see as one loop-carried variable when two expressions sit inside and
    # outside the time loop
    subs = {}
    for sym, a, f in zip(names, n.args, flags):
        parts = em.names[a]
        keys = (f"{sym}_re", f"{sym}_im") if f else (sym,)
        subs.update({sp.Symbol(k, real=True): sp.Symbol(v, real=True) for k, v in zip(keys, parts)})
    assigns, results = lower(n.attr("expr"), names, flags, split_complex=True, prefix=f"e{i}_")
    # in the time loop, exp(c·x) with c computed before it becomes exp2(c_l2e·x), c_l2e hoisted
    phase = getattr(em, "phase", {})
    invariant = {p for a in n.args if phase.get(a) == "pre" for p in em.names[a]} \
        if phase.get(i) == "loop" else set()
    hoisted = getattr(em, "hoisted", set())

    def line(var, e):
        e, used = exp2_form(e.xreplace(subs), invariant)
        for c in sorted(used - hoisted):
            em.out("pre", f"{c}_l2e = {c} * {LOG2E!r}  # log2(e) folded in: exp(c·x) = exp2(c·log2(e)·x)")
            hoisted.add(c)
        out(f"{var} = {print_triton(e)}")
    for var, e in assigns:
        line(var, e)
    # a real-typed result of complex operands has imaginary part 0: zip keeps the real part
    for var, e in zip(em.names[i], results):
        line(var, e)


def _lower_scan(em, i, n, phase, sched):
    out = lambda line: em.out("loop", line)
    if em.mode != "chunk":  # a column-wise pass of a grid order: its states are set up by grid.body
        from .grid import transposed_scan
        return transposed_scan(em, i, n, out)
    h = _state_names(i, n.type.complex)
    state_shape = _tile(em.ax, n.type, "1")
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


def _state_names(i, cplx):
    return (f"h{i}_re", f"h{i}_im") if cplx else (f"h{i}",)


def at_step(ta: TileAxes, tile: str, step: str) -> str:
    """The slice of a chunk tile at one step (keeping the time axis, of size 1)."""
    return (f"tl.sum(tl.where((tl.arange(0, CHUNK) == {step}){ta.bc('t')}, {tile}, 0.0), "
            f"axis={ta.ax('t')}, keep_dims=True)")


def as_tile(expr: str, shape: str) -> str:
    """`expr` (a tile, a broadcastable tile or a scalar) as a tile of `shape`.  The `- 0.0` makes a
    scalar a tensor and then folds away: x - 0.0 is x for every x, -0 included, while x + 0.0 is not
    (-0 + 0 = +0), so that form cost an add per element (SSD: 104 of 1440 SASS instructions)."""
    return f"tl.broadcast_to({expr} - 0.0, {shape})"


def broadcast_tile(em, v, k, shape):
    """Part k of a value as a full tile; a real value's imaginary part is a zero tile.
    (tl.broadcast_to rejects a bare float literal, so the zero is a tile of its own.)"""
    return as_tile(v[k], shape) if k < len(v) else f"tl.zeros({shape}, {em.acc})"


def scan_operands(em, i, n, out):
    """Lines computing the chunk's (Ā', x) tiles of scan node i; returns their names.

    Padding steps past L are the identity (Ā = 1, x = 0), so the carried state is untouched;
    where seq_idx changes, Ā' = 0 (a new sequence starts from nothing).
    """
    g, ta = em.g, em.ax
    a, x = em.names[n.args[0]], em.names[n.args[1]]
    parts = 2 if n.type.complex else 1
    vt, kt = f"valid{ta.bc('t')}", f"(k > 0){ta.bc('t')}"
    shape = _tile(ta, n.type, "CHUNK")
    a_t = [f"a{i}_{k}" for k in range(parts)]
    x_t = [f"x{i}_{k}" for k in range(parts)]
    for k in range(parts):
        one = "1.0" if k == 0 else "0.0"
        out(f"{a_t[k]} = tl.where({vt}, {broadcast_tile(em, a, k, shape)}, {one})")
        out(f"{x_t[k]} = tl.where({vt}, {broadcast_tile(em, x, k, shape)}, 0.0)")
    if n.attr("reset"):
        seq = g[seq_id(g, n)]
        s = seq.attr("name")
        prev, _ = _pointers(ta, s, seq.attr("axes"), tp="tq")
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
    # (applying h as (∏Ā)·h + Σ afterwards cost two instructions per element: Mamba-1 840 -> 752 SASS).
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


def _tile(ta: TileAxes, t, time: str) -> str:
    """Tile shape of a value of type t (the state of a MIMO scan has no channel axis)."""
    return ta.shape("BLOCK_D" if t.dims & {"h", "p"} else "1", "BLOCK_N" if "n" in t.dims else "1", time)


def seq_id(g, scan_node):
    """The seq_idx operand of a resetting scan: after Ā, x and the initial state, before a gather index."""
    return scan_node.args[2 + bool(scan_node.attr("has_h0"))]


def param_name(g: Graph, n) -> str:
    """Kernel/launcher name of an input or output; an output named like an input (a decode step's
    `state`, updated in place) gets an `_out` suffix."""
    name = n.attr("name")
    return f"{name}_out" if n.op == "output" and name in g.inputs else name


def _lower_output(em, i, n, phase):
    g = em.g
    p = param_name(g, n)
    ptrs, masks = _pointers(em.ax, p, n.attr("axes"), tp=em.tp, valid=em.valid)
    mask = " & ".join(masks) if masks else None
    src = em.names[n.args[0]]
    em.out(phase, f"{p}_ptrs = {ptrs}")
    merge = any(a.role == "r" for a in n.attr("axes"))  # blocks of channels summed: atomic adds (arithmetic dtype)
    for k, part in enumerate(src):
        tgt = f"{p}_ptrs" if k == 0 else f"{p}_ptrs + {p}_si"
        if merge:
            em.out(phase, f"tl.atomic_add({tgt}, tl.broadcast_to({part}, {p}_ptrs.shape).to({em.acc})"
                          f"{', mask=' + mask if mask else ''}{RELAXED})")
            continue
        val = f"tl.broadcast_to({part}, {p}_ptrs.shape).to({p}_ptr.dtype.element_ty)"
        em.out(phase, f"tl.store({tgt}, {val}{', mask=' + mask if mask else ''})")


# The generated modules' fp32 log2: on the GPU the special-function unit's (MUFU.LG2, absolute error
# ~2^-22), where tl.log2 is libdevice's polynomial of ~25 instructions, and softplus takes one per
# channel and step: Mamba-1's loop 606 -> 554 SASS for 32 elements a thread (tdn 1/64/1, offline).  The
# CPU interpreter has no libdevice; there it is tl.log2.
# And loads widened from bf16 to fp32 by their bits (exact: a bf16 is the top half of an fp32).  Two
# bf16 share a 32-bit register; written as a shift, LLVM widens the low one with a shift and the high
# one with a mask, where Triton's conversion moves each high half down (PRMT) and back up: 1 SASS per
# element against 1.5 (Mamba-1 tdn 1/64/1: 555 -> 524 in the loop; 8/8/1 full tiles 401 -> 366; offline).
FAST_MATH = '''
if os.environ.get("TRITON_INTERPRET", "0") == "1":
    @triton.jit
    def _log2_approx(x):
        return tl.log2(x)
else:
    from triton.language.extra import libdevice

    @triton.jit
    def _log2_approx(x):
        return libdevice.fast_log2f(x)


@triton.jit
def _widen(x):
    if x.dtype == tl.bfloat16:
        return (x.to(tl.uint16, bitcast=True).to(tl.uint32) << 16).to(tl.float32, bitcast=True)
    else:
        return x.to(tl.float32)
'''


def _module(graph, kname, kernel, inputs, outputs, sched, mimo, launcher: str | None = None):
    from .launcher import launcher_source
    if launcher is None:
        launcher = launcher_source(graph, kname, inputs, outputs)
    header = f'''"""Fused Triton kernel generated by ssmc {CODEGEN_VERSION} for the SSM `{graph.name}`.

Needs only torch and triton.  Call `launch(**tensors)`; it returns a dict of outputs.
{_usage(inputs, outputs)}
IR:
{graph.text()}"""
import os

import torch
import triton
import triton.language as tl

SCHEDULE = {dict(block_d=sched.block_d, chunk=sched.chunk, num_warps=sched.num_warps, checkpoint=sched.checkpoint)!r}  # layout {sched.layout}, wide={sched.wide}, full_tiles={sched.full_tiles}, prefetch={sched.prefetch}
MIMO = {mimo!r}  # all channels in one program: the state is shared across channels
LAST_COMPILED = None


@triton.jit
def _combine_real(a1, x1, a2, x2):
    # (Ā1, x1) then (Ā2, x2): h -> Ā2 (Ā1 h + x1) + x2
    return a1 * a2, x1 * a2 + x2


@triton.jit
def _combine_complex(a1r, a1i, x1r, x1i, a2r, a2i, x2r, x2i):
    return (a1r * a2r - a1i * a2i, a1r * a2i + a1i * a2r,
            x1r * a2r - x1i * a2i + x2r, x1r * a2i + x1i * a2r + x2i)

{FAST_MATH}
'''
    return header + kernel + "\n\n\n" + launcher + "\n"


def _usage(inputs, outputs):
    def fmt(n):
        kind = "complex" if n.attr("complex") or (n.op == "output" and n.type.complex) else (
            "int" if n.attr("integer") else "float")
        return f"  {n.attr('name')}: {kind} ({', '.join(a.symbol for a in n.attr('axes'))})"
    return "\nInputs:\n" + "\n".join(fmt(n) for n in inputs) + "\nOutputs:\n" + "\n".join(fmt(n) for n in outputs) + "\n"
