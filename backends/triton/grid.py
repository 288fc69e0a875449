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

Pass 1 computes only the values the scan's operands need (no readout, no stores).  A multi-order
scan's K orders are K groups of channels: each program's channels lie in one group (the launcher
keeps blocks inside a group), so a program branches once, on its group, to the row-wise or the
column-wise loop.
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


def _select(cases: list, default: str) -> str:
    """tl.where chain picking expression e_k for the program's group k (`cases` = [(k, e_k)])."""
    expr = default
    for k, e in cases:
        expr = f"tl.where(g_blk == {k}, {e}, {expr})"
    return expr


def _groups(names: tuple, pick) -> list:
    """The groups whose order is in `pick`, or [None] (every program) for a single order."""
    if len(names) == 1:
        return [None] if names[0] in pick else []
    return [k for k, name in enumerate(names) if name in pick]


def _flag(names: tuple, pick) -> str:
    """A scalar (or Python) boolean: does this program's order lie in `pick`?"""
    ks = _groups(names, pick)
    if ks == [None]:
        return "True"
    return " | ".join(f"(g_blk == {k})" for k in ks) if ks else "False"


def _row_time_map(order, wide: str) -> list:
    """tp: the time index of scan position k for the row-walking orders."""
    H, W = order.grid
    exprs = {"row": "k", "row_rev": "L - 1 - k",
             "snake_row": f"(k // {W}) * {W} + tl.where((k // {W}) % 2 == 1, {W - 1} - k % {W}, k % {W})"}
    present = [n for n in dict.fromkeys(order.names) if n in exprs]
    first, rest = present[0], present[1:]
    cases = [(k, exprs[name]) for name in rest for k in _groups(order.names, {name})]
    return [f"tp = ({_select(cases, exprs[first])}){wide}  # {order}: the time index of position k"]


def _column_time_map(order, p: str) -> list:
    """tp and valid for lanes visiting columns p (in visit order) at row step ri."""
    H, W = order.grid
    rev, snake = _flag(order.names, {"col_rev"}), _flag(order.names, {"snake_col"})
    col = {"False": p, "True": f"{W - 1} - ({p})"}.get(rev, f"tl.where({rev}, {W - 1} - ({p}), {p})")
    flip = [f for f in (rev if rev != "False" else None,
                        None if snake == "False" else "(cc % 2 == 1)" if snake == "True" else f"(({snake}) & (cc % 2 == 1))")
            if f]
    row = "ri" if not flip else f"{H - 1} - ri" if flip == ["True"] else f"tl.where({' | '.join(flip)}, {H - 1} - ri, ri)"
    return [f"valid = (({p}) >= 0) & (({p}) < {W})  # lanes holding a column",
            f"cc = {col}  # the column",
            f"tp = ({row}) * {W} + cc  # its row at step ri"]


def body(em, graph: Graph, schedule, loop_phase: list) -> list:
    """The time loops of a grid-order kernel (after the time-invariant lines).  `em` holds the
    chunked loop's lines already; the column-wise passes are lowered here."""
    from .codegen import _time_loop
    check(graph)
    order = grid_map(graph)
    wide = ".to(tl.int64)" if schedule.wide else ""
    rows = _groups(order.names, set(order.names) - TRANSPOSED)
    cols = _groups(order.names, TRANSPOSED)
    row_loop = _time_loop(graph, schedule, em.lines["loads"] + em.lines["loop"], _row_time_map(order, wide)) \
        if rows else []
    if not cols:
        return row_loop
    scan = graph.ids("scan")[0]
    needed = _ancestors(graph, scan)
    passes = {}
    for mode in ("pass1", "pass2"):
        em.mode, em.lines["loads"], em.lines["loop"] = mode, [], []
        for i in loop_phase:
            if mode == "pass2" or i in needed or i == scan:
                _lower_node(em, i, graph[i], "loop", schedule)
        passes[mode] = em.lines["loads"] + em.lines["loop"]
    em.mode = "chunk"
    H, W = order.grid
    n = graph[scan]
    shape = _tile(em.ax, n.type, "CHUNK")
    t = em.ax.bc("t")
    h, hc, pc = f"h{scan}", f"hc{scan}", f"pc{scan}"
    col_loop = [
        f"# ---- {order}: lanes over CHUNK columns, the loop over the {H} rows (see backends/triton/grid.py)",
        "lane = tl.arange(0, CHUNK)",
        f"for c0 in range(0, {W}, CHUNK):",
        *["    " + s for s in [
            "# pass 1: lane j runs column c0+j-1 from a zero state: its end state and total decay",
            f"{hc} = tl.zeros({shape}, {em.acc})",
            f"{pc} = tl.full({shape}, 1.0, {em.acc})",
            f"for ri in range(0, {H}):",
            *["    " + s for s in _column_time_map(order, "c0 + lane - 1") + wide_tp(wide) + passes["pass1"]],
            "# lane 0 holds the state entering the tile; scanning the lanes gives each column's entry state",
            f"{pc} = tl.where((lane == 0){t}, 0.0, {pc})",
            f"{hc} = tl.where((lane == 0){t}, tl.broadcast_to({h}, {shape}), {hc})",
            f"_, {hc} = tl.associative_scan(({pc}, {hc}), axis={em.ax.ax('t')}, combine_fn=_combine_real)",
            "# pass 2: every column from its entry state, with the readout",
            f"for ri in range(0, {H}):",
            *["    " + s for s in _column_time_map(order, "c0 + lane") + wide_tp(wide) + passes["pass2"]],
            f"{h} = {at_step(em.ax, hc, f'tl.minimum(CHUNK, {W} - c0) - 1')}  # the state entering the next tile",
        ]],
    ]
    if not rows:
        return col_loop
    return [f"if {_flag(order.names, TRANSPOSED)}:", *["    " + s for s in col_loop],
            "else:", *["    " + s for s in row_loop]]


def wide_tp(wide: str) -> list:
    return [f"tp = tp{wide}"] if wide else []


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
