"""The generated backward kernels compile for a GPU (sm_90) — checked without one.

The CPU tier runs kernels under Triton's interpreter, which accepts code the GPU compiler rejects
(a loop-carried variable whose shape or dtype changes, a layout tl.gather cannot lower).  Here a
subprocess without TRITON_INTERPRET compiles each backward kernel through Triton's real pipeline
(TTIR -> TTGIR -> LLVM -> PTX -> ptxas) for an H100 target.  Nothing is run.
"""
from __future__ import annotations

from conftest import needs_ptxas, run_compiled_triton

SCRIPT = r'''
import importlib.util, os, sys, tempfile
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from ssmc import library
from ssmc.backends import triton as tb
from ssmc.backends.triton import Schedule, generate
from ssmc.ir.bind import role_sizes
import ssmc
from ssmc.ir.spec import Spec

tmp = tempfile.mkdtemp()


def kernel_of(src, tag):
    path = os.path.join(tmp, tag + ".py")
    open(path, "w").write(src)
    spec = importlib.util.spec_from_file_location(tag, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, next(v for k, v in vars(mod).items() if k.endswith("_kernel"))


def build(graph, sched, acc, roles, tag):
    mod, fn = kernel_of(generate(graph, sched, acc), tag)
    p2 = lambda v: 1 << max(0, (v - 1).bit_length())
    nch, n = roles.get("h", 1) * roles.get("p", 1), roles.get("n", 1)
    block_d = p2(nch) if mod.MIMO else min(sched.block_d, p2(nch))
    consts = dict(BLOCK_D=block_d, BLOCK_N=p2(n), CHUNK=1 if mod.MIMO else sched.chunk,
                  EVEN_D=nch % block_d == 0, EVEN_N=p2(n) == n)
    real = "fp64" if acc == "float64" else "fp32"
    inputs = {graph[i].attr("name"): graph[i] for i in graph.ids("input")}
    sig = {}
    for a in fn.arg_names:
        base = a[:-4] if a.endswith("_ptr") else None
        if a in consts:
            sig[a] = "constexpr"
        elif base is None:
            sig[a] = "i32"
        elif base in inputs and inputs[base].attr("integer"):
            sig[a] = "*i64"
        elif base in inputs and acc == "float32":
            sig[a] = "*bf16"  # bf16 sequences: loads convert to fp32
        else:
            sig[a] = "*" + real  # gradients, checkpoints, fp64 inputs
    triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts), target=GPUTarget("cuda", 90, 32),
                   options=dict(num_warps=sched.num_warps))


specs = dict(library.ENTRIES)
specs["ssd_op"] = Spec("ssd", state="scalar_head", A="direct", rule="zoh_euler", dt="softplus", dt_bias=True,
                       dt_limit=(0.01, 0.5), groups=True, skip="hp", gate="silu", h0=True, seq_idx=True,
                       final_state=True)
specs["scan_op_complex"] = Spec("ss", state="diag_complex", A="direct", rule="zoh_euler", selective={"dt", "C"},
                                dt="softplus", dt_bias=True, skip="h", gate="silu", final_state=True)
failed = []
for name, spec in specs.items():
    bwd = ssmc.compile(spec, backend="triton").backward_graph
    roles = role_sizes(bwd, dict(batch=4, dim=4096, L=2048, N=128 if spec.state == "scalar_head" else 16,
                                 H=64, P=64, G=1))
    for sched, acc in ((tb.default_backward_schedule(roles, "cuda"), "float32"),
                       (Schedule(layout="tnd", block_d=16, chunk=8, num_warps=4), "float32"),
                       (Schedule(block_d=4, chunk=1), "float64")):
        try:
            build(bwd, sched, acc, roles, f"{name}_{sched.layout}_{sched.chunk}_{acc}")
        except Exception as e:
            failed.append(f"{name} {sched} {acc}: {type(e).__name__}: {str(e).strip().splitlines()[-1][:300]}")
print("\n".join(failed) if failed else "all compiled")
sys.exit(1 if failed else 0)
'''



@needs_ptxas
def test_backward_kernels_compile_for_sm90():
    run_compiled_triton(SCRIPT)
