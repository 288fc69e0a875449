"""Schedules: how a generated kernel runs (tile sizes, chunk length, warps).  A schedule never changes
results (tests sweep them); `strategy.py` picks one per graph, sizes and device, `tune.py` times a few."""
from __future__ import annotations

from dataclasses import dataclass


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
    # tdn 8/8/1: fewer registers and fewer instructions per element in the loop than 1/64/1, and faster;
    # the cost model's choice with enough channels: strategy.py; BENCHMARKS.md, "Mamba-1 schedules")
    full_tiles: bool = False
    # the time-varying inputs of the next chunk loaded while this one computes (a register prefetch,
    # forward kernels of identity or reverse orders): a program waits on its loads only once.  An autotuning
    # candidate: it slowed Mamba-1's tdn 8/8/1 full tiles (more registers, so fewer warps); where it sped a
    # schedule up, the cost model's schedule without it was as fast or faster at every batch x channels
    # measured (BENCHMARKS.md, "Mamba-1 threshold across batch × channels" and "Tried and rejected")
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


@dataclass(frozen=True)
class ChunkedSchedule:
    """How to run the chunked lowering; never changes results (tests sweep it)."""

    chunk: int = 32  # Q, time steps per chunk (the tl.dot M/K size); 16..64
    block_p: int = 64  # head positions per program
    num_warps: int = 4
    num_stages: int = 2
    wide: bool = False  # int64 offsets, set automatically for tensors of >= 2^31 elements

    def __post_init__(self):
        for k in ("chunk", "block_p"):
            v = getattr(self, k)
            if v < 16 or v & (v - 1):
                raise ValueError(f"ChunkedSchedule.{k} must be a power of two >= 16 (tl.dot), got {v}")
        # chunk 128 hit an illegal memory access on the GPU (Triton 3.6), not understood yet
        # (BENCHMARKS.md, "Tried and rejected")
        if self.chunk > 64:
            raise ValueError(f"ChunkedSchedule.chunk must be at most 64, got {self.chunk}")
