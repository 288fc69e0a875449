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

from .emitter import RELAXED, Emitter, ident, param_name, tensor_params, value_names, widened, with_acc_literals
from .grid import body as grid_body
from .grid import launch_order, upsampled
from .module import Launch, grid_check, launch_source, out_dtype, output_buffer, output_shape, recurrent_module
from .scan import lower_scan
from .schedule import Schedule
from .tiles import TileAxes, load_lines, pointers
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
    axes = sorted({em.ax.ax("d" if r in "hp" else "n") for r in n.attr("axes")})
    src = em.names.get(n.args[0])
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


def _output(em, i, n, phase, out):
    p = param_name(em.g, n)
    ptrs, masks = pointers(em.ax, p, n.attr("axes"), tp=em.tp, valid=em.valid)
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
    launch = launch_source(graph, inputs, outputs, _launch(graph, kname, inputs, outputs, acc))
    return recurrent_module(graph, inputs, outputs, schedule, mimo, with_acc_literals(kernel, acc), launch)


def _launch(graph, kname, inputs, outputs, acc) -> Launch:
    buffers, finish = {}, []
    for n in outputs:
        p, dtype = param_name(graph, n), out_dtype(graph, n, inputs, acc)
        if any(a.role == "r" for a in n.attr("axes")):  # summed over blocks of channels: zeros in the
            buffers[p] = [f"    {p}_given = {p}",  # arithmetic dtype, atomic adds, then the output's dtype
                          f"    {p} = torch.zeros(({output_shape(n)},), device=device, dtype=torch.{acc})"]
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
