"""The cost model: which Triton lowering a graph gets on a device, at given sizes, and why.

  * "step"        — a decode step: no time axis, no loop;
  * "chunked"     — Mamba-2's SSD form on tensor cores (`ssd.py`): scalar-per-head states whose
                    P×N state per head is large enough that the matmuls pay (P, N ≥ 16) and
                    sequences of at least one chunk, on CUDA;
  * "associative" — a chunk of steps scanned with `tl.associative_scan`, the state carried in
                    registers between chunks (`recurrent.py`);
  * "sequential"  — the same kernel with chunk 1: a plain recurrence (first-order scans, MIMO
                    states, the CPU interpreter).
`ssmc show NAME --passes` prints the choice; passing a schedule to `compile` forces one
(a `ChunkedSchedule`, or a `Schedule` whose chunk is 1 or more).
"""
from __future__ import annotations

from ssmc.ir import Graph

from .schedule import ChunkedSchedule, Schedule
from .ssd import chunked_reason
from .ssd_backward import MAX_P, chunked_backward_reason
from .tiles import channel_shared
from .time_loop import gather_index, grid_map

MIN_CHUNKED = 16  # P and N below this leave most of a tl.dot tile empty
CHUNK = 32  # the best of a chunk x block_p x warps x stages sweep (BENCHMARKS.md, "Mamba-2 SSD (forward)")


def choose(graph: Graph, roles: dict, device_type: str, acc: str = "float32") -> tuple:
    """(lowering, reason) for `graph` at role sizes `roles` on `device_type`, arithmetic in `acc`."""
    if not any(n.type.time_varying for n in graph.nodes):
        return "step", "no time axis: one step per call, no loop"
    why_not = chunked_reason(graph) or _no_tensor_cores(roles, device_type, acc)
    if why_not is None:
        p, n, L = roles.get("p", 1), roles.get("n", 1), roles.get("t", 1)
        if L < CHUNK:
            why_not = f"L={L} is shorter than one chunk ({CHUNK})"
        else:
            return "chunked", f"scalar-per-head state of {p}×{n} per head: SSD chunks of {CHUNK} on tensor cores"
    if any(graph[i].attr("io") == "mimo" for i in graph.ids("scan")):
        return "sequential", f"not chunked ({why_not}); a MIMO state is scanned step by step"
    sched = _recurrent_schedule(graph, roles, device_type)
    kind = "sequential" if sched.chunk == 1 else "associative"
    return kind, f"not chunked ({why_not}); {kind} scan, schedule {sched}"


def _no_tensor_cores(roles: dict, device_type: str, acc: str) -> str | None:
    """Why a chunked (tl.dot) lowering does not pay or cannot run here, else None."""
    p, n = roles.get("p", 1), roles.get("n", 1)
    if acc != "float32":
        return f"{acc} arithmetic (the chunked kernel computes in fp32)"
    if device_type != "cuda":
        return "chunked needs tensor cores (CUDA); the CPU interpreter runs the recurrence"
    if min(p, n) < MIN_CHUNKED:
        return f"P={p}, N={n}: below {MIN_CHUNKED}, most of each tl.dot tile would be padding"
    return None


def default_schedule(roles: dict, device_type: str, stepwise: bool = False) -> Schedule:
    """A schedule for sizes `roles` (role -> size), from sweeps on the GPU.

    States (N >= 2): time first, the lanes over the state, one channel per program and a chunk of
    steps scanned in registers.  For Mamba-1's N = 16 this beat one channel per lane (tnd, 128
    channels per program) at every batch × channels measured, by several times when there are few
    channels, where programs of 128 channels leave most SMs idle (BENCHMARKS.md, "Mamba-1 schedules").
    A first-order scan (no state axis) is memory-bound and wants long chunks.  The CPU interpreter
    wants few, large programs.
    """
    if device_type != "cuda":
        return Schedule()
    n = 1 << max(0, (roles.get("n", 1) - 1).bit_length())
    if stepwise:  # a decode step: no time loop, just a state tile to stream; ~2K elements per program
        return Schedule(block_d=max(1, 2048 // n), chunk=1, num_warps=4)
    if n == 1:
        return Schedule(block_d=1, chunk=1024, num_warps=8)
    if n <= 16:
        return Schedule(layout="tdn", block_d=1, chunk=64, num_warps=1)
    return Schedule(layout="tdn", block_d=1, chunk=16, num_warps=max(1, min(8, n // 32)))


def default_backward_schedule(roles: dict, device_type: str) -> Schedule:
    """A schedule for a backward kernel (ssmc.ir.passes.adjoint) at sizes `roles`.

    The backward keeps a dozen chunk tiles live (states, Ā', the adjoint, its shifted operands,
    the recomputed forward values), so its tiles are smaller than the forward's.  For N <= 16 one
    warp of 16 channels (two lanes per channel, so the sums over channels for B's and C's gradients
    stay inside the warp, no shared-memory round trip), one time step at a time (chunk 1), those
    gradients added atomically: the fastest of a sweep of about two dozen schedules at the Mamba-1
    shape, ahead of per-block partials (which also take more gradient memory) and of 64 channels over
    4 warps (BENCHMARKS.md, "Backward kernels").  `Schedule(partials=True)` gives a deterministic
    summation order.  Larger states keep about 2K elements over 8 warps, untuned.  (SSD-shaped scans
    on CUDA take the chunked backward.)
    """
    if device_type != "cuda":
        return Schedule()
    n = 1 << max(0, (roles.get("n", 1) - 1).bit_length())
    if 1 < n <= 16:
        return Schedule(layout="tnd", block_d=16, chunk=1, num_warps=1)
    chunk = 16 if n <= 128 else 8
    block_d = max(1, 2048 // (n * chunk))
    return Schedule(layout="dnt" if n <= 16 else "tdn", block_d=block_d, chunk=chunk, num_warps=8)


def _order_schedule(graph: Graph, roles: dict, device_type: str):
    """The schedule of a gather or grid order of small states on CUDA (else None): the best of sweeps
    at VMamba's SS2D shape (BENCHMARKS.md, "VMamba SS2D (multi-order scan, grid orders)")."""
    if device_type != "cuda" or roles.get("n", 1) > 16:
        return None
    if gather_index(graph) is not None:  # a dependent index load per chunk: more, smaller programs hide it
        return Schedule(layout="tnd", block_d=32, chunk=4, num_warps=4)
    if grid_map(graph) is not None and roles.get("n", 1) > 1:
        # two channels per program share each step's B and C tiles (loads, conversions): faster than one
        # channel per program (BENCHMARKS.md, "VMamba SS2D (multi-order scan, grid orders)")
        if graph.ids("upsample"):  # strided views (MSVMamba): 4/32/1, the fastest of the schedules timed
            # (BENCHMARKS.md, "MSVMamba (strided grid views)")
            return Schedule(layout="tdn", block_d=4, chunk=32, num_warps=1)
        return Schedule(layout="tdn", block_d=2, chunk=64, num_warps=1)
    return None


def _recurrent_schedule(graph: Graph, roles: dict, device_type: str) -> Schedule:
    return (_order_schedule(graph, roles, device_type) or _selective_schedule(graph, roles, device_type)
            or default_schedule(roles, device_type))


# Mamba-1 at its benchmark shape: tdn 8/8/1 with full tiles was the fastest of the schedules timed, faster than
# 1/64/1 (BENCHMARKS.md, "Mamba-1 schedules").  It runs 8 channels per one-warp program, so it needs 8x the
# channels of 1/64/1 to give the GPU as many warps.  Across batch x channels 1/64/1 wins up to 8192 and 8/8/1
# from 16384: the threshold is the smallest size measured where it wins
# (BENCHMARKS.md, "Mamba-1 threshold across batch × channels").
SELECTIVE_MIN_CHANNELS = 16384


def _selective_schedule(graph: Graph, roles: dict, device_type: str):
    """The schedule of a selective scan of a small real state (B, C vary over time, shared by the channels)
    on CUDA with enough channels (batch x channels) to fill the GPU with 8-channel programs, else None."""
    n, channels = roles.get("n", 1), roles.get("b", 1) * roles.get("h", 1) * roles.get("p", 1)
    if device_type != "cuda" or not 1 < n <= 16 or channels < SELECTIVE_MIN_CHANNELS:
        return None
    if any(graph[i].type.complex for i in graph.ids("scan")):  # measured on real states only
        return None
    if not any(channel_shared(graph[i], one_group=False) for i in graph.ids("input")):
        return None
    return Schedule(layout="tdn", block_d=8, chunk=8, num_warps=1, full_tiles=True)


def choose_schedule(graph: Graph, roles: dict, device_type: str, acc: str = "float32"):
    """The schedule that realizes `choose`."""
    kind, _ = choose(graph, roles, device_type, acc)
    if kind == "chunked":
        # 3 stages: with B and C fed to the tensor cores as loaded, the kernel has room to stage one more
        # chunk of loads, faster than 2 stages or chunk 64 at 1 stage (BENCHMARKS.md, "Mamba-2 SSD (forward)")
        return ChunkedSchedule(chunk=CHUNK, block_p=64 if roles.get("p", 1) >= 64 else 32, num_warps=4, num_stages=3)
    if kind == "associative":
        return _recurrent_schedule(graph, roles, device_type)
    return default_schedule(roles, device_type, stepwise=kind == "step")


# 4 warps, 2 stages: close to a sweep's best (chunk 16) at half its workspace (BENCHMARKS.md, "Backward kernels")
BWD_CHUNK = 32


def choose_backward(graph: Graph, roles: dict, device_type: str, acc: str = "float32") -> tuple:
    """(lowering, reason) for a backward graph (ssmc.ir.passes.adjoint): "chunked" (`ssd_backward.py`)
    for an SSD-shaped scan on CUDA, else the stepwise backward kernel (`backward.py`)."""
    p, n = roles.get("p", 1), roles.get("n", 1)
    why_not = chunked_backward_reason(graph) or _no_tensor_cores(roles, device_type, acc)
    if why_not is None and p > MAX_P:
        why_not = f"P={p}: above {MAX_P}, a head's state and adjoint do not fit one program's registers"
    if why_not is None:
        return "chunked", f"scalar-per-head state of {p}×{n}: SSD chunks of {BWD_CHUNK} forward, then in reverse"
    return "stepwise", f"not chunked ({why_not}); the reverse recurrence with chunk checkpoints"


def choose_backward_schedule(graph: Graph, roles: dict, device_type: str, acc: str = "float32"):
    """The schedule that realizes `choose_backward`."""
    kind, _ = choose_backward(graph, roles, device_type, acc)
    if kind == "chunked":
        return ChunkedSchedule(chunk=BWD_CHUNK, block_p=64, num_warps=4, num_stages=2)
    return default_backward_schedule(roles, device_type)


SHOW_SIZES = {"b": 4, "t": 2048, "h": 64, "p": 64, "n": 128, "g": 1}  # Mamba-2's benchmark shape


def explain(graph: Graph, backward: Graph | None = None, no_backward: str | None = None) -> str:
    """The cost model's choices at a large and a small shape, for a forward graph and, when given, its
    backward graph (`no_backward`: why it has none) — what `ssmc show NAME --passes` prints."""
    small = {"b": 2, "t": 33, "h": 4, "p": 3, "n": 4, "g": 2}
    cases = (("CUDA, batch 4, L 2048, 64 channels/heads, P 64, N 128", SHOW_SIZES, "cuda"),
             ("CUDA, the test sizes (L 33, P 3, N 4)", small, "cuda"),
             ("CPU (interpreter)", SHOW_SIZES, "cpu"))
    rows = ["=== lowering (Triton cost model) ==="]
    rows += [f"{label}: {' — '.join(choose(graph, roles, device))}" for label, roles, device in cases]
    if no_backward is not None:
        rows.append(f"=== backward: none ({no_backward}) ===")
    elif backward is not None:
        rows.append("=== backward lowering (Triton cost model) ===")
        rows += [f"{label}: {' — '.join(choose_backward(backward, roles, device))}" for label, roles, device in cases]
    return "\n".join(rows)
