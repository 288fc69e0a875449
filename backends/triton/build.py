"""Building a kernel: the one place a graph's lowering is picked, and the on-disk cache of generated
modules, keyed by a hash of (IR, schedule, versions) and loaded as real modules so Triton can read
their source.

Without CUDA the kernels run under Triton's CPU interpreter.  Triton reads TRITON_INTERPRET when a
@triton.jit function is defined, its own library's (tl.sigmoid, tl.cumsum, ...) when triton is imported,
so ssmc throws the switch as it loads (`switch_on_interpreter`).
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssmc.ir import Graph, IRError

from . import cache
from .backward import BACKWARD_RULES, generate_backward
from .elementwise import TRITON
from .emitter import ident
from .module import CODEGEN_VERSION
from .recurrent import STRUCTURAL, generate_recurrent
from .schedule import ChunkedSchedule, Schedule
from .ssd import generate_chunked
from .ssd_backward import chunked_backward_reason, generate_chunked_backward


def lowered_schedule(graph: Graph, schedule):
    """The schedule a graph is generated with: a ChunkedSchedule asked of a backward graph that has no
    chunked lowering gives way to the stepwise one."""
    if isinstance(schedule, ChunkedSchedule) and graph.ids("adjoint") and chunked_backward_reason(graph):
        return Schedule()
    return schedule


def generate(graph: Graph, schedule, acc: str = "float32") -> str:
    """The generated module of a pipelined graph (or of a backward graph made by ssmc.ir.passes.adjoint):
    a ChunkedSchedule takes the chunked (tensor-core) lowering, a Schedule the recurrent one; `acc` is
    the arithmetic dtype of the recurrent kernels."""
    for i, n in enumerate(graph.nodes):
        if n.op not in STRUCTURAL and n.op not in BACKWARD_RULES and n.op not in TRITON:
            raise IRError(f"{graph.name}: node %{i} ({n.op}) has no Triton lowering")
        if n.op in TRITON and hasattr(TRITON[n.op], "refusal"):
            raise IRError(f"{graph.name}: node %{i} ({n.op}) has no Triton lowering: {TRITON[n.op].refusal}")
    backward = bool(graph.ids("adjoint"))
    if isinstance(schedule, ChunkedSchedule):
        return (generate_chunked_backward if backward else generate_chunked)(graph, schedule)
    return (generate_backward if backward else generate_recurrent)(graph, schedule, acc)


def switch_on_interpreter() -> None:
    """Without CUDA, switch on Triton's CPU interpreter (unless TRITON_INTERPRET is set either way).
    Where triton was imported first (torch.compile imports it), its library's @jit functions were
    defined for a GPU: they are defined again, in place, so that every holder of `tl` sees the new ones."""
    if "TRITON_INTERPRET" in os.environ:
        return
    import torch  # (only torch can tell whether there is a GPU)
    if torch.cuda.is_available():
        return
    os.environ["TRITON_INTERPRET"] = "1"
    if "triton.language" in sys.modules:
        from triton.runtime.jit import JITFunction
        for name, module in sorted(sys.modules.items()):
            if name.startswith("triton.language.") and module is not None and any(
                    isinstance(v, JITFunction) and v.fn.__module__ == name for v in vars(module).values()):
                importlib.reload(module)
        importlib.reload(sys.modules["triton.language"])


switch_on_interpreter()


def ensure_runtime(device_type: str) -> None:
    """Kernels on CPU tensors need Triton's interpreter, a process-wide switch thrown as ssmc loads."""
    if device_type != "cpu":
        return
    if os.environ.get("TRITON_INTERPRET") != "1":  # CUDA is there: interpreting would take every kernel
        raise ValueError("backend='triton' got CPU tensors on a machine with CUDA: pass CUDA tensors, "
                         "or set TRITON_INTERPRET=1 before running to use Triton's CPU interpreter")


@dataclass(frozen=True)
class Kernel:
    graph: Graph
    schedule: Schedule
    source: str
    path: Path
    module: object

    def __call__(self, **tensors):
        try:
            return self.module.launch(**tensors)
        except Exception as e:
            if "only 0-dimensional arrays can be converted" in str(e):  # Triton 3.6's interpreter, numpy >= 2.3
                import triton
                raise RuntimeError(f"Triton {triton.__version__}'s CPU interpreter does not run with numpy "
                                   f"{np.__version__}: install numpy<2.3 or Triton 3.9") from e
            raise


_LOADED: dict = {}


def _key(graph: Graph, schedule: Schedule, acc: str) -> str:
    import triton  # (heavy: imported when the first kernel is built)
    text = "\n".join([graph.text(), repr(schedule), acc, CODEGEN_VERSION, triton.__version__,
                      os.environ.get("TRITON_INTERPRET", "0")])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def loaded_kernels() -> list:
    """The kernels built and loaded in this process."""
    return list(_LOADED.values())


def build(graph: Graph, schedule: Schedule | None = None, acc: str = "float32") -> Kernel:
    """Generate (or find in the cache) and load the kernel module of a pipelined graph (or of a
    backward graph made by ssmc.ir.passes.adjoint); `acc` is the arithmetic dtype."""
    schedule = lowered_schedule(graph, schedule or Schedule())
    key = _key(graph, schedule, acc)
    if key in _LOADED:
        return _LOADED[key]
    source = generate(graph, schedule, acc)
    stem = f"{ident(graph.name)[:64]}_{key}"  # any Spec name (slashes, spaces) makes a file and module name
    path = cache.write(f"ssmc_{stem}.py", source, "kernels")
    mod_name = f"ssmc_kernels.{stem}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)
    kernel = Kernel(graph, schedule, source, path, module)
    _LOADED[key] = kernel
    return kernel


