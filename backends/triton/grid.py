"""Lowering of scans along named 2-D orders of an H×W grid (`IndexMap` kind "grid", ssmc.ir.grid).

An order that walks rows (row, row_rev, snake_row) is the usual chunked time loop with its time
index computed from the scan position: no index tensor is read.

An order that walks columns (col, col_rev, snake_col) visits positions W apart, so the chunked
loop would read a new 32-byte sector for every step of every input.  It is lowered transposed
instead: the chunk's lanes hold CHUNK consecutive columns and the loop walks the rows, so every
load reads contiguous pieces of grid rows.  Each column's scan needs the state left by the one
before it, hence two passes over the rows per tile of CHUNK columns:

  1. every lane scans its column from a zero state, keeping its end state E_j and its total decay
     P_j = ∏ Ā (the column maps h ↦ P_j·h + E_j; for Ā = e^{c·x}, P_j = e^{c·Σx});
  2. an associative scan of the (P, E) pairs across the lanes composes the columns in visiting
     order; applied to the state entering the tile it gives the state after every column, and
     shifted by one lane the state entering every column.  A second pass over the rows runs the
     columns from those states and computes every output.

Pass 1 computes only the values the scan's operands need (no readout, no stores).  col_rev keeps
its lanes in ascending columns (contiguous loads) and scans the lanes from the last one down.
Both passes issue a row's loads one row ahead.
A multi-order scan's K orders are K groups of channels: each program's channels lie in one
group (the launcher keeps blocks inside a group), and the kernel has one branch per named order,
its index arithmetic static, so a program branches once, on its group.

A strided view (stride s > 1, MSVMamba's coarse scans) is the same lowering on the ⌈H/s⌉×⌈W/s⌉
grid of anchors: only the cell → position arithmetic changes (position s·i·W + s·j), so the scan
reads its inputs at the anchors where they lie, with no subsampled copy.  The nodes after the
`upsample` (the gate, the merged output) then run once for every position of the cell's s×s block
(a static loop of s² offsets), which writes the upsampled result with no upsampled copy either.
"""
from __future__ import annotations

import math
import re
from functools import partial

import sympy as sp

from ssmc.ir import Graph, IRError
from ssmc.ir.grid import TRANSPOSED, coarse_shape

from .tiles import at_step, load_lines, tile_shape
from .time_loop import BLOCK_OF_PROGRAM, grid_map, time_loop


def check(g: Graph) -> None:
    """What the grid lowering does not cover, refused by name."""
    scans = g.ids("scan")
    if len(scans) != 1:
        raise IRError(f"{g.name}: a grid-order region lowers with exactly one scan, found {len(scans)}")
    n = g[scans[0]]
    if n.attr("reset"):
        raise IRError(f"{g.name}: a {n.attr('order')} scan with state resets (seq_idx) has no Triton lowering")
    if n.attr("io") == "mimo":
        raise IRError(f"{g.name}: a MIMO scan with a grid order has no Triton lowering")
    if n.type.complex and set(n.attr("order").names) & TRANSPOSED:
        raise IRError(f"{g.name}: a complex state along a column order has no Triton lowering")


def _row_map(name: str, H: int, W: int, stride: int, wide: str) -> list:
    """tp for the chunk of scan positions k of a row-walking order (of the stride-s view's anchors)."""
    if stride > 1:
        Hc, Wc = coarse_shape(H, W, stride)
        k = f"({Hc * Wc - 1} - k)" if name == "row_rev" else "k"
        col = f"tl.where(({k} // {Wc}) % 2 == 1, {Wc - 1} - {k} % {Wc}, {k} % {Wc})" if name == "snake_row" \
            else f"{k} % {Wc}"
        return [f"tp = ({stride * W} * ({k} // {Wc}) + {stride} * ({col})){wide}  # cell -> its anchor"]
    if name == "row_rev":  # lanes in descending time: ascending lanes scanned with reverse=True were
        return [f"tp = (L - 1 - k){wide}"]  # slower (BENCHMARKS.md, "Tried and rejected")
    if name == "row":
        return [f"tp = k{wide}"]
    return [f"tp = ((k // {W}) * {W} + tl.where((k // {W}) % 2 == 1, {W - 1} - k % {W}, k % {W})){wide}"
            "  # snake_row: odd rows reversed"]


def _row_loop(em, graph: Graph, H: int, cell, inputs: list, lines: list) -> list:
    """The loop over the grid's rows of a column-wise pass; `cell(ri)` is the time index of row step
    ri in every lane (`tp`, for the pass's stores).  Each step issues the next row's loads before its
    own arithmetic, so their latency is spent on this row's: SS2D ran faster with it, and slower with
    Triton's own pipelining of the loop instead (BENCHMARKS.md, "Tried and rejected")."""
    ahead = {i: tuple(f"{v}_n" for v in em.names[i]) for i in inputs}
    loads = lambda when: [line for i in inputs  # noqa: E731
                          for line in load_lines(em, graph[i], ahead[i], tp="tp_n", when=when)]
    return [
        f"tp_n = {cell('0')}",
        *loads(""),
        f"for ri in range(0, {H}):",
        *["    " + s for s in [
            *[f"{v} = {a}" for i in inputs for v, a in zip(em.names[i], ahead[i])],
            *([f"tp = {cell('ri')}  # the cell at row step ri"] if any(re.search(r"\btp\b", x) for x in lines) else []),
            f"tp_n = {cell('ri + 1')}",
            *loads(f"(ri + 1 < {H})"),
            *lines,
        ]],
    ]


def _column_loops(em, graph: Graph, loop_phase: list, schedule, name: str, stride: int) -> list:
    """The column-wise lowering of one column-walking order (see the module docstring).  Lanes hold
    ascending columns cs+j; col_rev visits them right to left, so its lane scan runs reversed.
    H and W here are the walked grid's (the anchors' of a strided view)."""
    order = grid_map(graph)
    full_w = order.grid[1]
    H, W = coarse_shape(*order.grid, stride)
    wide = ".to(tl.int64)" if schedule.wide else ""
    scan = graph.ids("scan")[0]
    back = name == "col_rev"
    cs = f"({W} - CHUNK - c0)" if back else "c0"  # the tile's first column
    step = "tl.minimum(lane + 1, CHUNK - 1)" if back else "tl.maximum(lane - 1, 0)"  # the column before
    carry_lane = "CHUNK - 1" if back else "0"  # the lane whose column comes first: it enters with the carry
    last_lane = f"tl.maximum(0, CHUNK + c0 - {W})" if back else f"tl.minimum(CHUNK, {W} - c0) - 1"
    row = {"col": lambda r: r, "col_rev": lambda r: f"{H - 1} - ({r})",
           "snake_col": lambda r: f"tl.where(cc % 2 == 1, {H - 1} - ({r}), {r})"}[name]
    cell = lambda r: f"(({row(r)}) * {W} + cc){wide}" if stride == 1 else \
        f"({stride * full_w} * ({row(r)}) + {stride} * cc){wide}"  # noqa: E731
    n = graph[scan]
    needed = graph.ancestors(scan) | {scan}
    pass1 = em.relower([i for i in loop_phase if i in needed], partial(transposed_scan, pass1=True))
    total = decay_total(em, n.args[0])  # (after lowering: it names pass 1's variables)
    inputs, lines = em.relower([i for i in loop_phase if i not in em.skip], transposed_scan)
    pass2 = inputs, lines + fine_block(em, graph, schedule, stride)
    shape = tile_shape(em.ax, n.type, "CHUNK")
    t = em.ax.bc("t")
    h, hc, pc, sc = f"h{scan}", f"hc{scan}", f"pc{scan}", f"sc{scan}"
    rev = ", reverse=True" if back else ""
    if total:  # Ā = e^{c·x}: the column's decay is e^{c·Σx}, one exp per column instead of a product per step
        init = [f"{sc} = tl.zeros({total[2]}, {em.acc})"]
        product = [f"{pc} = tl.broadcast_to(tl.exp({total[1]} * {sc}), {shape})  # the column's total decay"]
    else:
        init, product = [f"{pc} = tl.full({shape}, 1.0, {em.acc})"], []
    return [
        f"# ---- {name} of the {H}x{W} grid: lanes over CHUNK columns, the loop over its rows"
        " (backends/triton/grid.py)",
        "lane = tl.arange(0, CHUNK)",
        f"for c0 in range(0, {W}, CHUNK):",
        *["    " + s for s in [
            f"cc = {cs} + lane",
            f"valid = (cc >= 0) & (cc < {W})  # lanes holding a column; the others' values reach no valid lane",
            "# pass 1: each column from a zero state: its end state and total decay (h -> P·h + E)",
            f"{hc} = tl.zeros({shape}, {em.acc})",
            *init,
            *_row_loop(em, graph, H, cell, *pass1),
            *product,
            "# composing the columns in visiting order (a scan over the lanes) and applying them to the state",
            "# entering the tile gives the state after each column; the one before a column's is its entry state",
            f"{pc}, {hc} = tl.associative_scan(({pc}, {hc}), axis={em.ax.ax('t')}, combine_fn=_combine_real{rev})",
            f"{hc} = {pc} * {h} + {hc}",
            f"{hc} = tl.gather({hc}, tl.broadcast_to({step}{t}, {shape}), axis={em.ax.ax('t')})",
            f"{hc} = tl.where((lane == {carry_lane}){t}, tl.broadcast_to({h}, {shape}), {hc})",
            "# pass 2: every column from its entry state, with the readout",
            *_row_loop(em, graph, H, cell, *pass2),
            f"{h} = {at_step(em.ax, hc, last_lane)}  # the state after the tile's last column",
        ]],
    ]


def body(em, graph: Graph, schedule, loop_phase: list) -> list:
    """The time loops of a grid-order kernel (after the time-invariant lines): one branch per named
    order (a program takes its group's), each with its index arithmetic static, so the compiler sees
    contiguous lanes wherever the order has them."""
    check(graph)
    order = grid_map(graph)
    H, W = order.grid
    wide = ".to(tl.int64)" if schedule.wide else ""
    chunk = em.lines["loads"] + em.lines["loop"]  # generate() lowered the chunk lines: row orders share them
    keys = [(name, order.stride(k)) for k, name in enumerate(order.names)]
    branches = []
    for name, stride in dict.fromkeys(keys):
        with em.branch():  # each branch starts from the variables generate() lowered
            if name in TRANSPOSED:
                loops = _column_loops(em, graph, loop_phase, schedule, name, stride)
            else:
                Hc, Wc = coarse_shape(H, W, stride)
                steps = dict(length=str(Hc * Wc), even=f"({Hc * Wc} % CHUNK == 0)") if stride > 1 else {}
                loops = time_loop(graph, schedule, chunk + fine_block(em, graph, schedule, stride),
                                  _row_map(name, H, W, stride, wide), **steps)
        groups = [k for k, key in enumerate(keys) if key == (name, stride)]
        branches.append((" | ".join(f"(g_blk == {k})" for k in groups), loops))
    if len(branches) == 1:
        return branches[0][1]
    out = []
    for k, (cond, loops) in enumerate(branches):
        head = "if" if k == 0 else "elif"
        out += [f"{head} {cond}:" if k < len(branches) - 1 else "else:", *["    " + s for s in loops]]
    return out


# A column order's time over a row order's, measured at VMamba's shape
# (BENCHMARKS.md, "VMamba SS2D (multi-order scan, grid orders)").
COLUMN_COST = 1.28
# A reversed walk (`*_rev`) over its forward one; only the ranks it gives matter.  All 24 launch orders of SS2D
# timed in one process put col_rev, col, row_rev, row first, ahead of col, col_rev, row, row_rev, what equal
# costs within each pair gave before (BENCHMARKS.md, "VMamba SS2D (multi-order scan, grid orders)").  Snake
# orders are not reversed walks.
REVERSED_COST = 1.05


def launch_order(order) -> list:
    """The lines defining `blk`, the program's block of channels, launched longest order first.

    The GPU starts programs in launch order; the programs of the last wave set the end of the
    kernel, so putting the slow orders (column-walking ones, which also scan twice, a reversed walk
    before its forward one, full-resolution views before strided ones) first leaves short programs
    for the tail.  A program's group, hence its order, follows from its block, so remapping the
    block id is all it takes.
    """
    K = len(order.names)
    cost = [math.prod(coarse_shape(*order.grid, order.stride(k))) * (COLUMN_COST if name in TRANSPOSED else 1.0)
            * (REVERSED_COST if name.endswith("_rev") else 1.0) for k, name in enumerate(order.names)]
    ranked = sorted(range(K), key=lambda k: -cost[k])  # stable: equal costs keep their order
    if ranked == list(range(K)):
        return BLOCK_OF_PROGRAM
    group = str(ranked[-1])
    for r in reversed(range(K - 1)):
        group = f"tl.where(rank == {r}, {ranked[r]}, {group})"
    return ["bpg = (P * HG) // BLOCK_D  # blocks per group: the launcher keeps each block in one group",
            "rank = tl.program_id(1) // bpg  # launched longest order first (grid.launch_order)",
            f"blk = {group} * bpg + tl.program_id(1) % bpg  # this program's block of channels"]


def upsampled(graph: Graph, phase: dict) -> tuple:
    """(the nodes to evaluate at every position of a cell, in order; those of them not needed at the
    anchors too).  They are what the outputs read back to the upsamples: the nodes after them and
    the inputs (the gate) only they use.  graph.verify made sure the strided scan is not among them."""
    fine, todo = set(), list(graph.ids("output"))
    while todo:
        j = todo.pop()
        if j not in fine and graph[j].op != "upsample" and phase[j] == "loop":
            fine.add(j)
            todo.extend(graph[j].args)
    anchored = set().union(*(graph.ancestors(i) for i in graph.ids("upsample")))  # the upsamples' operands, up
    return sorted(fine), fine - anchored


def fine_block(em, graph: Graph, schedule, stride: int) -> list:
    """The nodes after the upsamples (em.fine), for a group of view stride `stride`: each chunk step
    (a cell) evaluates them at the s×s positions of its block — a static loop over the offsets, its
    time index tp_f and mask valid_f — loads and stores included.  No lines when nothing is strided."""
    if not em.fine:
        return []
    H, W = grid_map(graph).grid
    lines = em.lower_apart(em.fine, *(("tp_f", "valid_f") if stride > 1 else ("tp", "valid")))
    if stride == 1:
        return lines
    return [f"for o in tl.static_range({stride * stride}):  # the cell's {stride}x{stride} block: nearest upsampling",
            *["    " + x for x in [f"tp_f = tp + (o // {stride}) * {W} + o % {stride}",
                                  f"valid_f = valid & (tp // {W} + o // {stride} < {H})"
                                  f" & (tp % {W} + o % {stride} < {W})",
                                  *lines]]]


def transposed_scan(em, i, n, phase, out, pass1: bool = False) -> None:
    """Scan node i in a column-wise pass (the first with `pass1`): every lane (column) steps its own
    state one row.  No padding selects: a lane past the grid's edge feeds only lanes past it (its scan
    direction)."""
    a, x = em.names[n.args[0]][0], em.names[n.args[1]][0]
    hc = f"hc{i}"
    out(f"{hc} = {a} * {hc} + {x}")
    if pass1:
        total = decay_total(em, n.args[0])
        out(f"sc{i} = sc{i} + {total[0]}" if total else f"pc{i} = pc{i} * {a}")
    em.names[i] = (hc,)


def decay_total(em, a: int):
    """(x, c, x's tile) when node a is Ā = e^{c·x}, c computed before the time loop and x a single
    time-varying value (ZOH's e^{A·Δ}): a product of such Ā over steps is e^{c·Σx}.  Else None."""
    g = em.g
    n = g[a]
    if n.op != "expr" or any(g[k].type.complex for k in (a, *n.args)):
        return None
    sym = {sp.Symbol(s, real=True): k for s, k in zip(n.attr("symbols"), n.args)}
    e = sp.sympify(n.attr("expr")).xreplace({sp.Symbol(v.name): v for v in sym})
    if not isinstance(e, sp.exp):
        return None
    const, var = [], []  # the exponent's factors: numbers (as text) and time-invariant nodes; time-varying nodes
    for f in sp.Mul.make_args(e.args[0]):
        if f.is_number:
            const.append(repr(float(f)))
        elif f in sym:
            (const if em.phase.get(sym[f]) == "pre" else var).append(sym[f])
        else:
            return None
    if len(var) != 1 or not const:
        return None
    c = " * ".join(k if isinstance(k, str) else em.names[k][0] for k in const)
    return em.names[var[0]][0], c, tile_shape(em.ax, g[var[0]].type, "CHUNK")

