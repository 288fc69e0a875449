"""Forward kernels of the scan orders and the chunked SSD (reverse order included) compile for a GPU
(sm_90) — checked without one.

As test_grad_sm90 does for the backward kernels: the CPU tier's interpreter accepts code the GPU
compiler rejects, so a subprocess without TRITON_INTERPRET compiles the kernels through Triton's real
pipeline (TTIR -> TTGIR -> LLVM -> PTX -> ptxas) for an H100.  Here each generated module's own
`launch` runs on meta tensors (shapes and dtypes, no memory) under a stand-in driver that only names
the target, and its kernel call becomes `JITFunction.warmup`: the arguments, their specialization
and the constexprs are exactly the launcher's, and nothing runs.
"""
from __future__ import annotations

from conftest import needs_ptxas, run_compiled_triton

SCRIPT = r'''
import importlib.util, os, sys, tempfile
import torch
import triton
from triton.backends.compiler import GPUTarget
import ssmc
from ssmc import library
from ssmc.backends.triton import ChunkedSchedule, Schedule, generate
from ssmc.backends.triton.strategy import choose_schedule
from ssmc.ir.bind import role_sizes
from ssmc.export import OP_FORMS
from ssmc.ops.multi_order import multi_order_compiled


class Target:  # the driver calls warmup makes: an H100, device 0, no stream
    def get_current_target(self):
        return GPUTarget("cuda", 90, 32)

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0


triton.runtime.driver.set_active(Target())
tmp, compiled, ptx = tempfile.mkdtemp(), [], {}


class Warmup:  # kernel[grid](*args, **consts) -> kernel.warmup(...): compiled, not run
    def __init__(self, fn, tag):
        self.fn, self.tag = fn, tag

    def __getitem__(self, grid):
        def call(*args, **kwargs):
            args = [a.dtype if isinstance(a, torch.Tensor) else a for a in args]  # warmup's mock tensors
            k = self.fn.warmup(*args, grid=grid, **kwargs)
            assert "cubin" in k.asm
            compiled.append(self.fn.__name__)
            ptx[self.tag] = k.asm["ptx"]
            return k
        return call


def launch(src, tag, sizes, bf16=()):
    path = os.path.join(tmp, tag + ".py")
    open(path, "w").write(src)
    spec = importlib.util.spec_from_file_location(tag, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for k, v in list(vars(mod).items()):
        if isinstance(v, triton.runtime.jit.JITFunction) and not k.startswith("_"):
            setattr(mod, k, Warmup(v, tag))
    return mod.launch(**meta_inputs(sizes, bf16, tag))


GRAPHS = {}


def meta_inputs(sizes, bf16, tag):
    g = GRAPHS[tag]
    out = {}
    for i in g.ids("input"):
        n = g[i]
        dtype = torch.int64 if n.attr("integer") else torch.bfloat16 if n.attr("name") in bf16 else torch.float32
        out[n.attr("name")] = torch.empty([sizes[a.symbol] for a in n.attr("axes")], device="meta", dtype=dtype)
    return out


failed = []


def check(tag, graph, src_of, sizes, bf16=()):
    GRAPHS[tag] = graph
    try:
        launch(src_of(), tag, sizes, bf16)
    except Exception as e:
        failed.append(f"{tag}: {type(e).__name__}: {str(e).strip().splitlines()[-1][:300]}")


# VMamba's SS2D (grid orders) and MSVMamba (strided views, upsampled), at CUDA's schedule and the default
seqs = {"u", "delta", "B", "C", "z"}
for key in ("56x56:row,col,row_rev,col_rev", "56x56:row,col,row_rev,col_rev:1,2,2,2",
            "7x5:snake_col,snake_row,col_rev:2,3,1"):
    g = multi_order_compiled(True, True, True, True, "numpy", "sum", 1, frozenset(), key).graph
    K, (H, W) = len(key.split(":")[1].split(",")), map(int, key.split(":")[0].split("x"))
    sizes = dict(batch=2, dim=384, K=K, KD=K * 384, N=16, L=H * W)
    cuda = choose_schedule(g, role_sizes(g, sizes), "cuda")
    for sched in (cuda, Schedule()):
        check(f"grid_{key}_{sched.layout}_{sched.chunk}".replace(",", "_").replace(":", "_"), g,
              lambda: generate(g, sched), sizes, seqs)
# the chunked SSD along both orders, forward and backward, with resets
ssd = dict(batch=2, L=300, H=4, P=64, G=1, N=64)
for name, spec in (("ssd", OP_FORMS["ssd"][0]),
                   ("ssd_reverse", OP_FORMS["ssd"][0].with_(name="ssd_reverse", direction="reverse")),
                   ("packed_reverse", library.get("mamba2").with_(name="packed_reverse", seq_idx=True,
                                                                 direction="reverse"))):
    fn = ssmc.compile(spec, backend="numpy")
    for sched in (ChunkedSchedule(), ChunkedSchedule(chunk=64, num_warps=8)):
        check(f"{name}_fwd_{sched.chunk}", fn.graph, lambda: generate(fn.graph, sched), ssd,
              {"x", "B", "C", "z"})
        check(f"{name}_bwd_{sched.chunk}", fn.backward_graph, lambda: generate(fn.backward_graph, sched),
              ssd, {"x", "B", "C", "z", "grad_out"})
# fp32 sequences: the dots' tf32x3 path (DOT=0) instead of bf16's
fn = ssmc.compile(OP_FORMS["ssd"][0].with_(name="ssd_reverse", direction="reverse"), backend="numpy")
check("ssd_reverse_fp32_fwd", fn.graph, lambda: generate(fn.graph, ChunkedSchedule()), ssd)
check("ssd_reverse_fp32_bwd", fn.backward_graph, lambda: generate(fn.backward_graph, ChunkedSchedule()),
      ssd)
# the recurrent and chunked forward kernels widen bf16 loads by their bits (module.FAST_MATH), not by
# Triton's conversion
failed += [f"{tag}: a bf16 load widened by cvt.f32.bf16" for tag, text in ptx.items()
           if (tag.startswith("grid_") or "_fwd_" in tag) and "cvt.f32.bf16" in text]
print("\n".join(failed) if failed else f"all compiled: {len(compiled)} kernels")
sys.exit(1 if failed or len(compiled) != 20 else 0)
'''



@needs_ptxas
def test_order_and_chunked_kernels_compile_for_sm90():
    res = run_compiled_triton(SCRIPT)
    assert "all compiled: 20 kernels" in res.stdout
