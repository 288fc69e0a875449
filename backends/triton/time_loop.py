"""The time loop of a recurrent kernel: program indices, the scan order's time indices, and the
loop that walks the sequence a chunk of CHUNK steps at a time.

A scan order is an index map folded into the time offsets: position k of the scan reads time
k (identity), L-1-k (reverse), index[k] (a gather order, loaded from the index input) or a grid
order's computed position (grid.py), so nothing is flipped or copied.
"""
from __future__ import annotations

from ssmc.ir import Graph, IRError

from .schedule import Schedule
from .tiles import raw_loads

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


def time_loop(graph: Graph, schedule: Schedule, lines: list, maps: list | None = None, length: str = "L",
               even: str = "EVEN_L", first: list = ()) -> list:
    """The chunked time loop around a chunk's `lines`; `maps` (lines giving tp) default to the scan's order.
    The scan takes `length` steps (a strided grid view fewer than L); `even` is true when CHUNK divides
    them (a constexpr); `first` are lines before the loop (the first chunk's prefetched loads)."""
    ahead, maps = prefetched_gather(graph, schedule) if gather_index(graph) is not None \
        else ([], maps or time_maps(graph, schedule))
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
    return gather_index(g) is None and grid_map(g) is None


def prefetched_loads(em, g: Graph, sched: Schedule) -> tuple:
    """(lines before the loop, lines in it) of Schedule.prefetch: the raw loads of the first chunk, and
    the next chunk's, issued once this chunk's are widened so that they are in flight while it computes.
    The next chunk's mask is never folded by EVEN_L: after the last chunk it is all false."""
    first = ["k = tl.arange(0, CHUNK)  # the first chunk's loads, before the loop",
             "valid = (k < L) | EVEN_L", f"tp = {time_index(g, sched)}"]
    ahead = ["kn = k + CHUNK  # the next chunk's loads, in flight while this chunk computes",
             "validn = kn < L", f"tpn = {time_index(g, sched, 'kn')}"]
    for n, name in em.prefetched:
        first += [f"{v}_raw = {load}" for v, load in raw_loads(em, n, name, "tp", "valid")]
        ahead += [f"{v}_raw = {load}" for v, load in raw_loads(em, n, name, "tpn", "validn")]
    return first, ahead


def prefetched_gather(g: Graph, sched: Schedule) -> tuple:
    """(lines before the loop, lines in it) of a gather order whose time indices are loaded one chunk
    ahead: every data load of a chunk waits on its indices, so their latency is spent during the
    previous chunk.  Indices are int32 (orders hold positions < L) unless offsets must be 64-bit."""
    base, st = gather_pointer(g)
    width = ".to(tl.int64)" if sched.wide else ".to(tl.int32)"
    ahead = [f"tp_next = tl.load({base} + tl.arange(0, CHUNK) * {st}, mask=tl.arange(0, CHUNK) < L, other=0){width}"]
    maps = ["tp = tp_next  # step k visits time index[k]",
            f"tp_next = tl.load({base} + (k + CHUNK) * {st}, mask=(k + CHUNK) < L, other=0){width}",
            f"tq = tl.load({base} + (k - 1) * {st}, mask=valid & (k > 0), other=0){width}"
            "  # the previous step in scan order"]
    return ahead, maps


def gather_pointer(g: Graph) -> tuple:
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
    index, grid = gather_index(g), grid_map(g)
    if index is not None:
        return any(a.role == "g" for a in index.attr("axes"))
    return grid is not None and len(grid.names) > 1


def gather_index(g: Graph):
    """The index input of the graph's gather-order scan, or None."""
    for i in g.ids("scan"):
        if g[i].attr("order").kind == "gather":
            return g[g[i].args[-1]]
    return None


def time_maps(g: Graph, sched: Schedule) -> list:
    wide = ".to(tl.int64)" if sched.wide else ""
    orders = {g[i].attr("order").kind for i in g.ids("scan")} or {"identity"}
    if len(orders) > 1:
        raise IRError(f"{g.name}: one region with two scan orders")
    if orders == {"gather"}:  # read from the index input; the launcher keeps a block in one group
        base, st = gather_pointer(g)
        return [GROUP_OF_BLOCK,
                f"tp = tl.load({base} + k * {st}, mask=valid, other=0){wide}  # step k visits time index[k]",
                f"tq = tl.load({base} + (k - 1) * {st}, mask=valid & (k > 0), other=0){wide}"
                "  # the previous step in scan order"]
    if orders == {"reverse"}:
        return [f"tp = {time_index(g, sched)}  # index map t = L-1-k: a reverse scan, no flipped copy",
                "tq = tp + 1  # the previous step in scan order"]
    return [f"tp = {time_index(g, sched)}", "tq = tp - 1  # the previous step in scan order"]


def time_index(g: Graph, sched: Schedule, k: str = "k") -> str:
    """The time index of scan position `k` in an identity or reverse order (computed, not loaded)."""
    wide = ".to(tl.int64)" if sched.wide else ""
    reverse = any(g[i].attr("order").kind == "reverse" for i in g.ids("scan"))
    return f"(L - 1 - {k}){wide}" if reverse else f"{k}{wide}"


def grid_map(g: Graph):
    """The graph's grid-order IndexMap, or None."""
    for i in g.ids("scan"):
        order = g[i].attr("order")
        if getattr(order, "kind", None) == "grid":
            return order
    return None
