"""The Triton backend: generated source, cached on disk by a hash of (IR, schedule, versions),
loaded as a real module so Triton can read its source.

Without CUDA the kernels run under Triton's interpreter: TRITON_INTERPRET must be set before a
kernel is defined, and generated modules are defined lazily, so `ensure_runtime` sets it first.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ssmc.ir import Graph

from .codegen import CODEGEN_VERSION, Schedule, generate
from .ssd import ChunkedSchedule, generate_chunked
from .ssd_backward import chunked_backward_reason, generate_chunked_backward
from . import strategy  # noqa: E402  (imports default_schedule from this module lazily)


def cache_dir() -> Path:
    root = os.environ.get("SSMC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "ssmc")
    path = Path(root) / "kernels"
    path.mkdir(parents=True, exist_ok=True)
    return path


def ensure_runtime(device_type: str) -> None:
    """Kernels on CPU tensors need Triton's interpreter, which is a process-wide switch."""
    if device_type != "cpu" or os.environ.get("TRITON_INTERPRET") == "1":
        return
    import torch
    if torch.cuda.is_available():  # flipping it now would also interpret every later CUDA kernel
        raise ValueError("backend='triton' got CPU tensors on a machine with CUDA: pass CUDA tensors, "
                         "or set TRITON_INTERPRET=1 before running to use Triton's CPU interpreter")
    os.environ["TRITON_INTERPRET"] = "1"


def default_schedule(roles: dict, device_type: str, stepwise: bool = False) -> Schedule:
    """A schedule for sizes `roles` (role -> size), from sweeps on an H100 (BENCHMARKS.md).

    States (N >= 2): time first, the lanes over the state, one channel per program and a chunk of
    steps scanned in registers.  For Mamba-1's N = 16 this beat one channel per lane (tnd, 128
    channels per program) at every batch × channels measured: 0.49 vs 0.57 ms at 4 × 4096 channels
    and 3-4x when there are few channels (0.13 vs 0.42 ms at 1 × 4096, 0.16 vs 0.65 ms at 8 × 384),
    where programs of 128 channels leave most SMs idle.  A first-order scan (no state axis) is
    memory-bound and wants long chunks.  The CPU interpreter wants few, large programs.
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
    gradients added atomically: 6.1 ms at the Mamba-1 shape on an H100, the best of a 24-schedule
    sweep (7.2 ms with per-block partials, which also take 4x the gradient memory; 8.2 ms for 64
    channels over 4 warps; BENCHMARKS.md).  `Schedule(partials=True)` gives a deterministic
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


@dataclass(frozen=True)
class Kernel:
    graph: Graph
    schedule: Schedule
    source: str
    path: Path
    module: object

    def __call__(self, **tensors):
        return self.module.launch(**tensors)


_LOADED: dict = {}


def _key(graph: Graph, schedule: Schedule, acc: str) -> str:
    import triton
    text = "\n".join([graph.text(), repr(schedule), acc, CODEGEN_VERSION, triton.__version__,
                      os.environ.get("TRITON_INTERPRET", "0")])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def build(graph: Graph, schedule: Schedule | None = None, acc: str = "float32") -> Kernel:
    """Generate (or find in the cache) and load the kernel module of a pipelined graph (or of a
    backward graph made by ssmc.ir.passes.adjoint); `acc` is the arithmetic dtype."""
    schedule = schedule or Schedule()
    backward = bool(graph.ids("adjoint"))
    if isinstance(schedule, ChunkedSchedule) and backward and chunked_backward_reason(graph):
        schedule = Schedule()  # this backward graph has no chunked lowering: the stepwise one
    key = _key(graph, schedule, acc)
    if key in _LOADED:
        return _LOADED[key]
    if isinstance(schedule, ChunkedSchedule):
        source = (generate_chunked_backward if backward else generate_chunked)(graph, schedule)
    else:
        source = generate(graph, schedule, acc)
    path = cache_dir() / f"ssmc_{graph.name}_{key}.py"
    if not path.exists() or path.read_text() != source:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(source)
        os.replace(tmp, path)  # atomic: concurrent builders never see half a file
    mod_name = f"ssmc_kernels.{graph.name}_{key}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)
    kernel = Kernel(graph, schedule, source, path, module)
    _LOADED[key] = kernel
    return kernel


__all__ = ["ChunkedSchedule", "Kernel", "Schedule", "build", "cache_dir", "default_backward_schedule",
           "default_schedule", "ensure_runtime", "generate"]
