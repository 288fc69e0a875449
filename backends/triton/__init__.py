"""The Triton backend: fused kernels generated from the IR as readable Python source.

    build(graph, schedule)   the kernel module of a pipelined graph (generated once, cached on disk)
    strategy                 the cost model: which lowering and schedule a graph gets
    tune.autotune            the fastest of a few schedules, timed on the real inputs

Modules, bottom up: schedule (Schedule, ChunkedSchedule); elementwise (the op table) and emitter (the
interface every lowering writes through); tiles, time_loop, scan, grid, recurrent and backward (the
recurrent kernels); ssd and ssd_backward (the chunked, tensor-core kernels); module (the generated
module's header and `launch`); strategy, build, tune; standalone (checks a generated module alone).
"""
from . import strategy
from .build import Kernel, build, ensure_runtime, generate, loaded_kernels, lowered_schedule
from .cache import kernels as cache_dir
from .emitter import param_name
from .schedule import ChunkedSchedule, Schedule
from .strategy import default_backward_schedule, default_schedule

__all__ = ["ChunkedSchedule", "Kernel", "Schedule", "build", "cache_dir", "default_backward_schedule",
           "default_schedule", "ensure_runtime", "generate", "loaded_kernels", "lowered_schedule", "param_name",
           "strategy"]
