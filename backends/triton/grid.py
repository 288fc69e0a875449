"""Lowering of scans along named 2-D orders of an H×W grid (`IndexMap` kind "grid", ssmc.ir.grid).

An order that walks rows (row, row_rev, snake_row) is the usual chunked time loop with its time
index computed from the scan position: no index tensor is read.

An order that walks columns (col, col_rev, snake_col) visits positions W apart, so the chunked
loop would read a new 32-byte sector for every step of every input.  It is lowered transposed
instead: the chunk's lanes hold CHUNK consecutive columns and the loop walks the rows, so every
load reads contiguous pieces of grid rows.  Each column's scan needs the state left by the one
before it, hence two passes over the rows per tile of CHUNK columns:

  1. with lanes j = 1…CHUNK-1 holding columns c0+j-1, scan each column from a zero state, keeping
     its end state E_j and its total decay P_j = ∏ Ā (the column maps h ↦ P_j·h + E_j); lane 0
     holds the state entering the tile (P_0 = 0, E_0 = carry);
  2. an associative scan of the (P, E) pairs across the lanes gives, at lane j, the state entering
     column c0+j; a second pass over the rows runs the columns from those states and computes
     every output.

Pass 1 computes only the values the scan's operands need (no readout, no stores).  col_rev keeps
its lanes in ascending columns (contiguous loads) and scans the lanes from the last one down.
A multi-order scan's K orders are K groups of channels: each program's channels lie in one
group (the launcher keeps blocks inside a group), and the kernel has one branch per named order,
its index arithmetic static, so a program branches once, on its group.
"""
from __future__ import annotations

from ssmc.ir import Graph, IRError
from ssmc.ir.grid import TRANSPOSED

from .codegen import _lower_node, _tile, at_step, scan_operands


def grid_map(g: Graph):
    """The graph's grid-order IndexMap, or None."""
    for i in g.ids("scan"):
        order = g[i].attr("order")
        if getattr(order, "kind", None) == "grid":
            return order
    return None


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


def _groups_of(names: tuple, name: str) -> list:
    return [k for k, n in enumerate(names) if n == name]


def _row_map(name: str, W: int, wide: str) -> list:
    """tp for the chunk of scan positions k of a row-walking order."""
    if name == "row_rev":  # lanes in descending time: ascending lanes scanned with reverse=True were
        return [f"tp = (L - 1 - k){wide}"]  # slower on an H100 (SS2D 1.57 vs 1.33 ms, BENCHMARKS.md)
    if name == "row":
        return [f"tp = k{wide}"]
    return [f"tp = ((k // {W}) * {W} + tl.where((k // {W}) % 2 == 1, {W - 1} - k % {W}, k % {W})){wide}"
            "  # snake_row: odd rows reversed"]


def _relower(em, graph: Graph, loop_phase: list, schedule, mode: str, only=None) -> list:
    """The loop-phase nodes lowered again (all, or those in `only`) as `mode`; their lines."""
    em.mode, em.lines["loads"], em.lines["loop"] = mode, [], []
    for i in loop_phase:
        if only is None or i in only:
            _lower_node(em, i, graph[i], "loop", schedule)
    return em.lines["loads"] + em.lines["loop"]


def _column_loops(em, graph: Graph, loop_phase: list, schedule, name: str) -> list:
    """The column-wise lowering of one column-walking order (see the module docstring).  Lanes hold
    ascending columns cs+j; col_rev visits them right to left, so its lane scan runs reversed."""
    order = grid_map(graph)
    H, W = order.grid
    wide = ".to(tl.int64)" if schedule.wide else ""
    scan = graph.ids("scan")[0]
    back = name == "col_rev"
    cs = f"({W} - CHUNK - c0)" if back else "c0"  # the tile's first column
    prev = "+ 1" if back else "- 1"  # pass 1: each lane runs the column visited before its own
    carry_lane = "CHUNK - 1" if back else "0"  # the lane holding the state entering the tile
    last_lane = f"tl.maximum(0, CHUNK + c0 - {W})" if back else f"tl.minimum(CHUNK, {W} - c0) - 1"
    row = {"col": "ri", "col_rev": f"{H - 1} - ri", "snake_col": f"tl.where(cc % 2 == 1, {H - 1} - ri, ri)"}[name]

    def maps(col):
        return [f"cc = {col}", f"valid = (cc >= 0) & (cc < {W})  # lanes holding a column",
                f"tp = (({row}) * {W} + cc){wide}  # the cell at row step ri"]
    pass1 = _relower(em, graph, loop_phase, schedule, "pass1", _ancestors(graph, scan) | {scan})
    pass2 = _relower(em, graph, loop_phase, schedule, "pass2")
    n = graph[scan]
    shape = _tile(em.ax, n.type, "CHUNK")
    t = em.ax.bc("t")
    h, hc, pc = f"h{scan}", f"hc{scan}", f"pc{scan}"
    rev = ", reverse=True" if back else ""
    return [
        f"# ---- {name} of the {H}x{W} grid: lanes over CHUNK columns, the loop over its rows (backends/triton/grid.py)",
        "lane = tl.arange(0, CHUNK)",
        f"for c0 in range(0, {W}, CHUNK):",
        *["    " + s for s in [
            "# pass 1: each lane runs the column visited before its own from a zero state: end state, total decay",
            f"{hc} = tl.zeros({shape}, {em.acc})",
            f"{pc} = tl.full({shape}, 1.0, {em.acc})",
            f"for ri in range(0, {H}):",
            *["    " + s for s in maps(f"{cs} + lane {prev}") + pass1],
            "# the carry lane takes the state entering the tile; a scan over the lanes gives each column's",
            f"{pc} = tl.where((lane == {carry_lane}){t}, 0.0, {pc})",
            f"{hc} = tl.where((lane == {carry_lane}){t}, tl.broadcast_to({h}, {shape}), {hc})",
            f"_, {hc} = tl.associative_scan(({pc}, {hc}), axis={em.ax.ax('t')}, combine_fn=_combine_real{rev})",
            "# pass 2: every column from its entry state, with the readout",
            f"for ri in range(0, {H}):",
            *["    " + s for s in maps(f"{cs} + lane") + pass2],
            f"{h} = {at_step(em.ax, hc, last_lane)}  # the state after the tile's last column",
        ]],
    ]


def body(em, graph: Graph, schedule, loop_phase: list) -> list:
    """The time loops of a grid-order kernel (after the time-invariant lines): one branch per named
    order (a program takes its group's), each with its index arithmetic static, so the compiler sees
    contiguous lanes wherever the order has them."""
    from .codegen import _time_loop
    check(graph)
    order = grid_map(graph)
    wide = ".to(tl.int64)" if schedule.wide else ""
    chunk = em.lines["loads"] + em.lines["loop"]  # generate() lowered the chunk lines: row orders share them
    pre = list(em.lines["pre"])  # lowering again repeats the scan's state set-up: keep the first
    branches = []
    for name in dict.fromkeys(order.names):
        if name in TRANSPOSED:
            loops = _column_loops(em, graph, loop_phase, schedule, name)
        else:
            loops = _time_loop(graph, schedule, chunk, _row_map(name, order.grid[1], wide))
        groups = _groups_of(order.names, name)
        branches.append((" | ".join(f"(g_blk == {k})" for k in groups), loops))
    em.mode, em.lines["pre"] = "chunk", pre
    if len(branches) == 1:
        return branches[0][1]
    out = []
    for k, (cond, loops) in enumerate(branches):
        head = "if" if k == 0 else "elif"
        out += [f"{head} {cond}:" if k < len(branches) - 1 else "else:", *["    " + s for s in loops]]
    return out


def transposed_scan(em, i, n, out) -> None:
    """Scan node i in a column-wise pass: every lane (column) steps its own state one row."""
    a_t, x_t = scan_operands(em, i, n, out)
    hc, pc = f"hc{i}", f"pc{i}"
    out(f"{hc} = {a_t[0]} * {hc} + {x_t[0]}")
    if em.mode == "pass1":
        out(f"{pc} = {pc} * {a_t[0]}")
    em.names[i] = (hc,)


def _ancestors(g: Graph, i: int) -> set:
    seen, todo = set(), list(g[i].args)
    while todo:
        a = todo.pop()
        if a not in seen:
            seen.add(a)
            todo.extend(g[a].args)
    return seen
