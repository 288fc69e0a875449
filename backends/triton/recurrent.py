"""The recurrent lowering: one fused kernel per scan region, as readable Python source.

Every value of a region is a register tile over the kernel axes channels, state and time chunk
(`tiles.py`); the batch index is the first program id.  A value's IR type says which axes it has,
so each op lowers to one line of tile arithmetic.  Time-invariant nodes (marked by `detect_lti`) are
computed before the time loop; the loop walks the sequence a chunk at a time (`time_loop.py`), scans
each chunk (`scan.py`) and carries the state between chunks in fp32 registers.  Grid orders lower
through `grid.py`; the backward kernel (`backward.py`) extends the emitter below.
"""
from __future__ import annotations

from contextlib import contextmanager

from ssmc.ir import Graph, IRError
from ssmc.ir.types import value_role

from .emitter import RELAXED, Emitter, ident, param_name, tensor_params, value_names, widened, with_acc_literals
from .grid import body as grid_body
from .grid import launch_order, upsampled
from .module import Launch, grid_check, launch_source, out_dtype, output_buffer, output_shape, recurrent_module
from .scan import lower_scan
from .schedule import Schedule
from .tiles import TileAxes, load_lines, store_pointers
from .time_loop import (
    BLOCK_OF_PROGRAM,
    GROUP_OF_BLOCK,
    gather_index,
    grid_map,
    has_repeat_axis,
    kernel_prologue,
    per_group_order,
    prefetchable,
    prefetched_loads,
    time_loop,
)


class TileEmitter(Emitter):
    """The emitter of the recurrent kernels: 3-D register tiles in the schedule's layout.

    Structural ops lower through `rules` (op -> rule(em, i, node, phase, out)), elementwise ones through
    their TRITON rows.  Besides the base emitter's fields: `ax` (the tile axes), `schedule`, and how
    inputs are read: `one_group` (every program's channels in one group, g_blk: see tiles.pointers),
    `full_tiles` (channel-shared time-varying inputs loaded over the channel axis too), `early_loads`
    (a chunk's loads emitted first, into "loads"), `prefetched` (the loads Schedule.prefetch issues a
    chunk ahead), `tp`/`valid` (the time index and mask that loads and stores use) and, for strided
    grid views (grid.py), `fine` (nodes evaluated at every position of a cell) and `skip` (those of
    them not also needed at the anchors)."""

    def __init__(self, graph: Graph, schedule: Schedule, acc: str = "float32", phases=("pre", "loads", "loop",
                                                                                       "post", "fwd")):
        super().__init__(graph, acc, phases=phases)
        self.ax = TileAxes(schedule.layout)
        self.schedule = schedule
        self.one_group = False
        self.full_tiles = False
        self.early_loads = False
        self.prefetched = []
        self.tp, self.valid = "tp", "valid"
        self.fine = []
        self.skip = set()
        self.rules = dict(STRUCTURAL)
        # the roles a tile's channel lanes carry: head, and position where the graph has one
        self.channel_roles = {"h"} | {value_role(r) for r in graph.symbols().values()} & {"p"}

    def lower_node(self, i: int, phase: str) -> None:
        """Emit node i into `phase` and record its variables."""
        n = self.g[i]
        out = lambda line: self.out(phase, line)  # noqa: E731
        rule = self.rules.get(n.op)
        if rule is None:
            self.elementwise(i, n, out)
            return
        self.names[i] = value_names(i, n.type.complex)
        rule(self, i, n, phase, out)

    def relower(self, nodes, scan_rule) -> tuple:
        """The loop-phase `nodes` lowered again into fresh chunk lines, the scan by `scan_rule` (a
        column-wise pass of a grid order): (the time-varying inputs among them, their arithmetic lines
        without the loads)."""
        self.lines["loads"], self.lines["loop"] = [], []
        self.rules["scan"] = scan_rule
        try:
            for i in nodes:
                self.lower_node(i, "loop")
        finally:
            self.rules["scan"] = STRUCTURAL["scan"]
        return [i for i in nodes if self.g[i].op == "input"], self.lines["loop"]

    def lower_apart(self, nodes, tp: str, valid: str) -> list:
        """The lines of `nodes` reading and writing at time indices `tp` where `valid` holds, loads in
        place: the per-position block of a strided grid view (grid.fine_block)."""
        saved = self.early_loads, self.tp, self.valid, self.lines["loop"]
        self.early_loads, self.lines["loop"], self.tp, self.valid = False, [], tp, valid
        try:
            for i in nodes:
                self.lower_node(i, "loop")
            return self.lines["loop"]
        finally:
            self.early_loads, self.tp, self.valid, self.lines["loop"] = saved

    @contextmanager
    def branch(self):
        """Lower a branch of the kernel (one grid order): the variables recorded inside are forgotten after."""
        names = dict(self.names)
        try:
            yield
        finally:
            self.names = names


def phases(g: Graph) -> dict:
    """pre: before the time loop; loop: per chunk; post: after it (final states).  An output over time is
    written in the loop, a time-invariant value broadcast to every step."""
    phase = {}
    for i, n in enumerate(g.nodes):
        if n.op == "output":
            phase[i] = phase[n.args[0]]
            if any(a.role == "t" for a in n.attr("axes")) and phase[i] != "loop":
                if phase[i] == "post":
                    raise IRError(f"node %{i} (output {n.attr('name')}): lays a final state out over time; the "
                                  f"Triton backend writes a value known only after the scan at no step")
                phase[i] = "loop"
        elif n.op == "last":
            phase[i] = "post"
        elif any(phase.get(a) == "post" for a in n.args):
            if n.type.time_varying:
                raise IRError(f"node %{i} ({n.op}): time-varying use of a final state cannot be lowered")
            phase[i] = "post"
        elif n.op == "scan" or n.type.time_varying:
            phase[i] = "loop"
        else:
            phase[i] = "pre"
    return phase


# --- structural ops --------------------------------------------------------------------------------------

def _input(em, i, n, phase, out):
    name = em.names[i]
    if gather_index(em.g) is n:  # read by the time map, not as a value
        return
    if phase == "loop" and em.early_loads and em.schedule.prefetch:  # loaded a chunk ahead (prefetched_loads)
        em.prefetched.append((n, name))
        for v in name:
            em.out("loads", f"{v} = {widened(f'{v}_raw', n.attr('integer'), em.acc)}  # {n.attr('name')}")
        return
    for line in load_lines(em, n, name):  # a chunk's loads first: none waits after the scan
        em.out("loads" if phase == "loop" and em.early_loads else phase, line)


def _const(em, i, n, phase, out):
    out(f"{em.names[i][0]} = {float(n.attr('value'))!r}")


def _scan(em, i, n, phase, out):
    lower_scan(em, i, n, lambda line: em.out("loop", line))


def _last(em, i, n, phase, out):
    scan = n.args[0]
    em.names[i] = (f"h{scan}_re", f"h{scan}_im") if n.type.complex else (f"h{scan}",)


def _upsample(em, i, n, phase, out):  # the value at the anchor; the nodes after it run per position (grid.py)
    em.names[i] = em.names.get(n.args[0])


def _sum(em, i, n, phase, out):
    name = em.names[i]
    summed, operand = set(n.attr("axes")), em.g[n.args[0]].type.dims
    kept = operand & {"h", "p"} - summed
    deferred = atomic_roles(em.g, i) is not None  # its channels summed by the output's atomic adds
    if summed & {"h", "p"} and kept and not deferred:  # the channel axis of a tile holds head and position together
        raise IRError(f"node %{i} (sum over {', '.join(sorted(summed))}): a sum over some channel roles that keeps "
                      f"{', '.join(sorted(kept))} has no Triton lowering unless an output takes it as it is")
    axes = sorted({em.ax.ax("d" if r in "hp" else "n") for r in summed if not (deferred and r in "hp")})
    src = em.names.get(n.args[0])
    for ax in axes:
        mask = channel_mask(em, operand) if ax == em.ax.ax("d") else f"mask_n{em.ax.bc('n')}"
        src = tuple(f"tl.sum(tl.where({mask}, {s}, 0.0), axis={ax}, keep_dims=True)" for s in src)
        if ax != axes[-1]:
            tmp = tuple(f"{x}_s{ax}" for x in name)
            for t_, s in zip(tmp, src):
                out(f"{t_} = {s}")
            src = tmp
    for t_, s in zip(name, src):
        out(f"{t_} = {s}")


def atomic_roles(g: Graph, i: int):
    """For a sum over some channel roles that keeps another (W[h, p] mixing heads after a scan) and feeds
    only an output: the roles of its operand, whose lanes the output's atomic adds sum; else None."""
    n = g[i]
    if n.op != "sum":
        return None
    summed, operand = set(n.attr("axes")), g[n.args[0]].type.dims
    users = g.users()[i]
    if not (summed & {"h", "p"} and operand & {"h", "p"} - summed) or len(users) != 1 or g[users[0]].op != "output":
        return None
    if summed & {value_role(a.role) for a in g[users[0]].attr("axes")}:
        return None  # the output broadcasts the sum along a summed role: no lane writes the whole sum
    return operand


def merged_roles(g: Graph, out):
    """The value roles whose channel lanes an output sums with atomic adds, or None for plain stores: a
    group or shared-block axis sums the channels mapping to it, a deferred channel sum its operand's."""
    deferred = atomic_roles(g, out.args[0])
    if deferred is not None:
        return deferred
    if any(a.role in ("r", "g") for a in out.attr("axes")):
        return {value_role(a.role) for a in out.attr("axes")}
    return None


def channel_mask(em, roles) -> str:
    """The mask of the channel lanes that hold one copy each of a value over `roles`: a lane holds the
    channel head·P + position, so a value constant over the positions (or heads) that the graph has
    is held by P (or H) lanes, of which a sum over the lanes must count one."""
    ax = em.ax.bc("d")
    copies = [f"(idx_{r}{ax} == 0)" for r in ("h", "p") if r in em.channel_roles and r not in roles]
    return " & ".join([f"mask_d{ax}", *copies])


def _output(em, i, n, phase, out):
    p = param_name(em.g, n)
    ptrs, masks = store_pointers(em.ax, p, n.attr("axes"), tp=em.tp, valid=em.valid)
    # channels summed (blocks of R heads, the heads of a group, a channel sum): atomic adds in the arithmetic
    # dtype, each channel once (a lane per head and position: those of a position the output lacks are copies)
    roles = merged_roles(em.g, n)
    merge = roles is not None
    if merge:
        masks = [channel_mask(em, roles) if m.startswith("mask_d") else m for m in masks]
    mask = " & ".join(masks) if masks else None
    src = em.names[n.args[0]]
    em.out(phase, f"{p}_ptrs = {ptrs}")
    for k, part in enumerate(src):
        tgt = f"{p}_ptrs" if k == 0 else f"{p}_ptrs + {p}_si"
        if merge:
            em.out(phase, f"tl.atomic_add({tgt}, _dense(tl.broadcast_to({part}, {p}_ptrs.shape).to({em.acc}))"
                          f"{', mask=' + mask if mask else ''}{RELAXED})")
            continue
        val = f"tl.broadcast_to({part}, {p}_ptrs.shape).to({p}_ptr.dtype.element_ty)"
        em.out(phase, f"tl.store({tgt}, {val}{', mask=' + mask if mask else ''})")


STRUCTURAL = {"input": _input, "const": _const, "scan": _scan, "last": _last, "upsample": _upsample,
              "sum": _sum, "output": _output}
"""op -> its lowering in a recurrent kernel (the elementwise ops are rows of elementwise.TRITON)."""


# --- the forward kernel -----------------------------------------------------------------------------------

def generate_recurrent(graph: Graph, schedule: Schedule, acc: str = "float32") -> str:
    """Python source of a module holding the forward kernel of a pipelined graph and its `launch`."""
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
    em = TileEmitter(graph, schedule, acc)
    phase = em.phase = phases(graph)
    grid = grid_map(graph)
    em.one_group = per_group_order(graph)  # the launcher keeps a block's channels inside one group
    em.full_tiles = schedule.full_tiles
    em.early_loads = True
    if schedule.prefetch and not prefetchable(graph):
        raise ValueError(f"{graph.name}: Schedule.prefetch computes the next chunk's time indices ahead, "
                         f"which a gather or grid order reads from its index map; use prefetch=False")
    if grid is not None and grid.strides:  # nodes after an upsample are lowered per cell by grid.body
        em.fine, em.skip = upsampled(graph, phase)
    kname = f"{ident(graph.name)}_fwd"
    inputs = [graph[i] for i in graph.ids("input")]
    outputs = [graph[i] for i in graph.ids("output")]
    params = tensor_params(graph, inputs + outputs)
    repeats = has_repeat_axis(graph)
    symbols = ["L", "NCH", "P", "N", "HG"] + (["R"] if repeats else [])
    consts = ["BLOCK_D: tl.constexpr", "BLOCK_N: tl.constexpr", "CHUNK: tl.constexpr",
              "EVEN_D: tl.constexpr", "EVEN_N: tl.constexpr", "EVEN_L: tl.constexpr"]

    for i in range(len(graph.nodes)):
        if i not in em.skip:
            em.lower_node(i, phase[i])

    # the loops first: a grid order lowers nodes again per branch, which may hoist values into "pre"
    if grid:
        loops = grid_body(em, graph, schedule, [i for i in phase if phase[i] == "loop"])
    elif em.lines["loop"]:
        first, ahead = prefetched_loads(em, graph, schedule) if schedule.prefetch else ([], [])
        loops = time_loop(graph, schedule, em.lines["loads"] + ahead + em.lines["loop"], first=first)
    else:
        loops = []
    body = [
        *kernel_prologue(launch_order(grid) if grid else BLOCK_OF_PROGRAM),
        *(["idx_r = idx_h % R  # inputs shared by every block of R heads"] if repeats else []),
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
    launch = launch_source(graph, inputs, outputs, _launch(graph, kname, inputs, outputs, acc))
    return recurrent_module(graph, inputs, outputs, schedule, mimo, with_acc_literals(kernel, acc), launch)


def _launch(graph, kname, inputs, outputs, acc) -> Launch:
    buffers, finish = {}, []
    for n in outputs:
        p, dtype = param_name(graph, n), out_dtype(graph, n, inputs, acc)
        if merged_roles(graph, n) is not None:
            # channels summed: atomic adds into zeros in the arithmetic precision, then the output's dtype
            zeros = dtype if n.type.complex else f"torch.{acc}"
            buffers[p] = [f"    {p}_given = {p}",
                          f"    {p} = torch.zeros({output_shape(n)}, device=device, dtype={zeros})"]
            finish.append(f"    {p} = {p}.to({dtype}) if {p}_given is None else {p}_given.copy_({p})")
        else:
            buffers[p] = output_buffer(p, output_shape(n), dtype)
    return Launch(
        doc="Run the fused kernel on torch tensors of one device; returns {output name: tensor}.",
        kernel=kname, buffers=buffers,
        after=[
            *grid_check(graph),
            "    BLOCK_N = triton.next_power_of_2(N)",
            "    BLOCK_D = triton.next_power_of_2(NCH) if MIMO else min(sched['block_d'], triton.next_power_of_2(NCH))",
            # MIMO regions scan step by step: on the GPU (Triton 3.6) tl.associative_scan over the
            # channel-reduced MIMO state gave wrong results that the CPU interpreter does not show.
            "    CHUNK = 1 if MIMO else min(sched['chunk'], triton.next_power_of_2(L))",
            *(["    while (HG * P) % BLOCK_D:  # an order per group: keep each block of channels in one group",
               "        BLOCK_D //= 2"] if per_group_order(graph) else []),
            "    grid = (batch, triton.cdiv(NCH, BLOCK_D))",
        ],
        global_note="  # the compiled kernel of the last launch (registers, spills) for tuning",
        call_args=[
            "        L, NCH, P, N, HG," + (" R," if has_repeat_axis(graph) else ""),  # as the kernel's symbols
            "        BLOCK_D=BLOCK_D, BLOCK_N=BLOCK_N, CHUNK=CHUNK, EVEN_D=NCH % BLOCK_D == 0, EVEN_N=N == BLOCK_N,",
            "        EVEN_L=L % CHUNK == 0, num_warps=sched['num_warps'],",
        ],
        finish=finish)
