"""GPU benchmark for the backward (issue 4): forward+backward of the generated kernels, their memory,
and mamba_ssm where it can be imported, side by side in one run.

    python benchmarks/bench_backward.py [--quick] [--json FILE]
    python benchmarks/bench_backward.py --smoke     # CPU, Triton interpreter, tiny shapes: the script runs

Shapes (bf16 sequences, fp32 parameters):
  * Mamba-1 selective scan: batch 4, dim 4096, L 2048, N 16; softplus(Δ + bias), D skip, silu(z) gate
    (ssmc.ops.selective_scan; mamba_ssm's selective_scan_fn when importable);
  * Mamba-2 SSD: batch 4, L 2048, H 64, P 64, G 1, N 128; softplus(dt + bias), D per head
    (ssmc.ops.ssd; mamba_ssm's mamba_chunk_scan_combined when importable);
  * VMamba SS2D: batch 8, dim 384, a 56×56 grid, N 16, K 4 orders (ssmc.ops.multi_order_scan, its
    backward ssmc.ops.multi_order_backward) against the unfused pipeline a user writes today (permuted copies,
    ssmc.ops.selective_scan per order, unpermute, sum), whose float64 run is also its check.
Before timing, every gradient is checked at a reduced shape against torch autograd through a float64
PyTorch loop (tests/reference.py) on the GPU: the CPU tests run Triton's interpreter, so this is
where GPU-only lowering problems (tl.gather, reverse scans, atomics) would show.
Times are triton.testing.do_bench medians.  Memory: the peak allocated during forward+backward
above what was allocated before (inputs, cotangent), minus the gradients and outputs themselves,
against the bytes of the inputs; and the backward kernel's own workspace (checkpoints + one
segment of chunk states).  A sweep of backward schedules (bwd kernel alone) follows each shape.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

if "--smoke" in sys.argv:  # Triton's interpreter must be on before any kernel is defined
    os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402
from triton.testing import do_bench  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

import ssmc  # noqa: E402
from ssmc import ops  # noqa: E402
from ssmc.backends.triton import ChunkedSchedule  # noqa: E402
from ssmc.ir.bind import bind  # noqa: E402
from ssmc.ops import reference  # noqa: E402
from ssmc.ops.selective_scan import scan_spec  # noqa: E402
from ssmc.ops.ssd import ssd_spec  # noqa: E402

DEVICE = "cuda"  # --smoke: "cpu" (Triton's interpreter), tiny shapes, one call instead of do_bench


def rel(a, b) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def nbytes(ts) -> int:
    return sum(t.numel() * t.element_size() for t in ts if t is not None)


# --- inputs ------------------------------------------------------------------------------

def scan_inputs(b, d, L, N, seed=0):
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    r = lambda *s, dtype=torch.bfloat16: torch.randn(*s, device=DEVICE, generator=g).to(dtype)
    return dict(u=r(b, d, L), delta=r(b, d, L) * 0.5 - 1.0, A=-torch.exp(r(d, N, dtype=torch.float32) * 0.5),
                B=r(b, N, L), C=r(b, N, L), D=r(d, dtype=torch.float32), z=r(b, d, L),
                delta_bias=r(d, dtype=torch.float32) * 0.1)


def ssd_inputs(b, L, H, P, G, N, seed=0):
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    r = lambda *s, dtype=torch.bfloat16: torch.randn(*s, device=DEVICE, generator=g).to(dtype)
    return dict(x=r(b, L, H, P), dt=r(b, L, H, dtype=torch.float32) * 0.5 - 2.0,
                A=-torch.exp(r(H, dtype=torch.float32) * 0.5), B=r(b, L, G, N), C=r(b, L, G, N),
                D=r(H, dtype=torch.float32), dt_bias=r(H, dtype=torch.float32) * 0.1)


def ssmc_scan(a):
    return ops.selective_scan(a["u"], a["delta"], a["A"], a["B"], a["C"], a["D"], a["z"], a["delta_bias"],
                              delta_softplus=True, backend="triton")


def ssmc_ssd(a):
    return ops.ssd(a["x"], a["dt"], a["A"], a["B"], a["C"], 256, D=a["D"], dt_bias=a["dt_bias"], dt_softplus=True,
                   backend="triton")


def mamba_scan():
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception as e:  # noqa: BLE001 - any import failure means "not available"
        return None, f"{type(e).__name__}: {e}"
    return (lambda a: selective_scan_fn(a["u"], a["delta"], a["A"], a["B"], a["C"], a["D"], a["z"], a["delta_bias"],
                                        delta_softplus=True)), None


def mamba_ssd():
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except Exception as e:  # noqa: BLE001
        return None, f"{type(e).__name__}: {e}"
    return (lambda a: mamba_chunk_scan_combined(a["x"], a["dt"], a["A"], a["B"], a["C"], 256, D=a["D"],
                                                dt_bias=a["dt_bias"], dt_softplus=True)), None


def ss2d_inputs(b, d, H, W, N, K=4, seed=0):
    """VMamba's SS2D: K = 4 orders (row, col and their reverses) of an H×W grid, per-order Δ, A, B, C, D."""
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    r = lambda *s, dtype=torch.bfloat16: torch.randn(*s, device=DEVICE, generator=g).to(dtype)
    L = H * W
    orders = [torch.as_tensor(o, device=DEVICE) for o in ops.scan_orders_2d(H, W, ["row", "col", "row_rev", "col_rev"])]
    ORDERS[L] = orders
    return dict(u=r(b, d, L), delta=r(b, K, d, L) * 0.5 - 1.0, A=-torch.exp(r(K, d, N, dtype=torch.float32) * 0.5),
                B=r(b, K, N, L), C=r(b, K, N, L), D=r(K, d, dtype=torch.float32), z=r(b, d, L),
                delta_bias=r(K, d, dtype=torch.float32) * 0.1)


ORDERS: dict = {}  # L -> the SS2D orders of the grid, torch tensors (checked once by ssmc, then remembered)


def _orders_of(a):
    return ORDERS[a["u"].shape[-1]]


def ssmc_ss2d(a):
    return ops.multi_order_scan(a["u"], a["delta"], a["A"], a["B"], a["C"], _orders_of(a), a["D"], a["z"],
                                a["delta_bias"], delta_softplus=True, backend="triton")


def unfused_ss2d(a):
    """The pipeline a user writes today: a permuted copy per order, ssmc's single-order scan, unpermute, sum."""
    y = 0
    for k, o in enumerate(_orders_of(a)):
        inv = torch.argsort(o)
        yk = ops.selective_scan(a["u"][..., o], a["delta"][:, k][..., o], a["A"][k], a["B"][:, k][..., o],
                                a["C"][:, k][..., o], a["D"][k], None, a["delta_bias"][k], delta_softplus=True,
                                backend="triton")
        y = y + yk[..., inv]
    return y * torch.nn.functional.silu(a["z"])


def unfused():
    return unfused_ss2d, None


# --- checks ------------------------------------------------------------------------------

def check(kind, smoke=False):
    """Gradients at a reduced shape against torch autograd through a float64 loop, on the GPU.

    bf16 sequences are compared with the reference run on the same bf16-rounded values."""
    L = 37 if smoke else 300
    if kind == "mamba1":
        a, f = scan_inputs(2, 8 if smoke else 64, L, 16, seed=1), ssmc_scan
        ref = lambda t: reference.selective_scan(t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], t["z"],
                                                 t["delta_bias"], delta_softplus=True)[0]
    elif kind == "ss2d":  # the fused multi-order backward against the unfused pipeline's (float64)
        a, f = ss2d_inputs(2, 8 if smoke else 32, 5, 7, 16, seed=1), ssmc_ss2d
        ref = unfused_ss2d
    else:
        a, f = ssd_inputs(2, L, 4, 8 if smoke else 64, 1, 16 if smoke else 128, seed=1), ssmc_ssd
        ref = lambda t: reference.ssd(t["x"], t["dt"], t["A"], t["B"], t["C"], t["D"], None, t["dt_bias"],
                                      dt_softplus=True)[0]
    leaves = {k: v.clone().requires_grad_() for k, v in a.items()}
    refs = {k: v.double().clone().requires_grad_() for k, v in a.items()}
    y = f(leaves)
    w = torch.randn(y.shape, device=DEVICE, dtype=torch.float64)
    (y.double() * w).sum().backward()
    yr = ref(refs)
    (yr * w).sum().backward()
    errs = {"out": rel(y, yr)}
    errs.update({f"d{k}": rel(leaves[k].grad, refs[k].grad) for k in a})
    return errs


# --- timing ------------------------------------------------------------------------------

def bench(fn, **kw):
    if DEVICE != "cuda":
        fn()
        return float("nan")
    return do_bench(fn, **kw)


def fwd_bwd(f, a, quick):
    leaves = {k: v.clone().requires_grad_() for k, v in a.items()}
    y = f(leaves)
    gy = torch.randn_like(y)
    params = list(leaves.values())

    def step():
        for p in params:
            p.grad = None
        f(leaves).backward(gy)

    rep = 50 if quick else 200
    step()
    with torch.no_grad():
        t_fwd = bench(lambda: f(leaves), warmup=10, rep=rep, return_mode="median")
    t_all = bench(step, warmup=5, rep=rep, return_mode="median", grad_to_none=params)
    if DEVICE != "cuda":
        return t_fwd, t_all, 0
    # memory: peak above inputs + cotangent, less the gradients and the output themselves
    for p in params:
        p.grad = None
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    extra = peak - nbytes([p.grad for p in params]) - y.numel() * y.element_size()
    return t_fwd, t_all, extra


def sweep(kind, a, scheds):
    """The backward kernel alone (Compiled.grad) under several schedules: ms, or the error."""
    if kind == "mamba1":
        spec, args, _ = scan_spec(a["u"], a["delta"], a["A"], a["B"], a["C"], a["D"], a["z"],
                                       a["delta_bias"], True, False)
    else:
        spec = ssd_spec(a["D"], None, a["dt_bias"], None, None, True, 0.0, float("inf"), False)
        args = dict(x=a["x"], dt=a["dt"], A=a["A"], B=a["B"], C=a["C"], D=a["D"], dt_bias=a["dt_bias"])
    out = torch.randn(a["u" if kind == "mamba1" else "x"].shape, device=DEVICE, dtype=torch.bfloat16)
    rows = []
    for s in scheds:
        fn = ssmc.compile(spec, backend="triton", schedule=s)
        try:
            fn.grad(args, {"out": out})
            ms = bench(lambda: fn.grad(args, {"out": out}), warmup=3, rep=50, return_mode="median")
            kernel = fn.backward_kernel(bind(fn.graph, args), DEVICE)
            rows.append((s, f"{ms:.3f}", kernel.module.LAST_WORKSPACE["bytes"]))
        except Exception as e:  # noqa: BLE001 - a schedule that does not compile is reported, not fatal
            rows.append((s, f"failed: {type(e).__name__}: {str(e).splitlines()[0][:80]}", 0))
    return rows


SWEEPS = {
    "mamba1": [None,  # the cost model's choice: tnd, 16 channels, chunk 1, 1 warp, atomics (6.1 ms on an H100)
               dict(layout="tnd", block_d=16, chunk=1, num_warps=1, partials=True),  # deterministic B/C sums
               dict(layout="tnd", block_d=64, chunk=1, num_warps=4, partials=True),  # the default before
               dict(layout="tnd", block_d=32, chunk=1, num_warps=2, partials=True),
               dict(layout="tnd", block_d=32, chunk=4, num_warps=4, partials=True),
               dict(layout="tnd", block_d=16, chunk=8, num_warps=4)],  # the first tuned default (atomics)
    # the chunked (tensor-core) backward by chunk length and warps (None: the cost model's choice)
    "mamba2": [None] + [ChunkedSchedule(chunk=q, num_warps=w, num_stages=st)
                        for q, w, st in ((16, 4, 2), (32, 4, 2), (32, 8, 1), (32, 8, 3), (64, 4, 2), (64, 8, 2))],
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, no schedule sweep")
    ap.add_argument("--json", help="write the results here too")
    ap.add_argument("--smoke", action="store_true", help="CPU interpreter, tiny shapes, no timing")
    args = ap.parse_args()
    global DEVICE
    if args.smoke:
        DEVICE = "cpu"
        shapes = {"mamba1": ("Mamba-1 (smoke) B1 D8 L40 N4", scan_inputs(1, 8, 40, 4), ssmc_scan, mamba_scan),
                  "mamba2": ("Mamba-2 (smoke) B1 L40 H2 P4 G1 N8", ssd_inputs(1, 40, 2, 4, 1, 8), ssmc_ssd, mamba_ssd),
                  "ss2d": ("SS2D (smoke) B1 D4 3x4 N4 K4", ss2d_inputs(1, 4, 3, 4, 4), ssmc_ss2d, unfused)}
        print("# ssmc backward benchmark — smoke run on CPU (no timings)\n")
    else:
        shapes = {"mamba1": ("Mamba-1 selective scan B4 D4096 L2048 N16 bf16", scan_inputs(4, 4096, 2048, 16),
                             ssmc_scan, mamba_scan),
                  "mamba2": ("Mamba-2 SSD B4 L2048 H64 P64 G1 N128 bf16", ssd_inputs(4, 2048, 64, 64, 1, 128),
                             ssmc_ssd, mamba_ssd),
                  "ss2d": ("VMamba SS2D B8 D384 56x56 N16 K4 bf16", ss2d_inputs(8, 384, 56, 56, 16), ssmc_ss2d,
                           unfused)}
        print(f"# ssmc backward benchmark — {torch.cuda.get_device_name()}, torch {torch.__version__}\n")
    results = {}
    table = ["| shape | impl | fwd ms | fwd+bwd ms | bwd ms (diff) | extra memory fwd+bwd | inputs | extra / inputs |",
             "|---|---|---|---|---|---|---|---|"]
    for kind, (title, a, f, other) in shapes.items():
        try:  # a failure here is reported and the timings still run: one GPU run should tell everything
            errs = check(kind, args.smoke)
            print(f"{title}: gradient check at a reduced shape (rel. err vs float64 loop): "
                  + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()))
        except Exception as e:  # noqa: BLE001
            errs = {"failed": f"{type(e).__name__}: {e}"}
            print(f"{title}: gradient check FAILED: {type(e).__name__}: {e}")
        results[kind] = {"check": errs}
        inb = nbytes(a.values())
        impls = [("ssmc", f)]
        mf, why = other()
        if mf is not None:
            impls.append(("unfused pipeline" if kind == "ss2d" else "mamba_ssm", mf))
        else:
            print(f"  mamba_ssm not importable: {why}")
        for name, fn in impls:
            try:
                t_fwd, t_all, extra = fwd_bwd(fn, a, args.quick)
            except Exception as e:  # noqa: BLE001
                table.append(f"| {title} | {name} | failed: {type(e).__name__}: {str(e).splitlines()[0][:60]} |||||")
                continue
            results[kind][name] = dict(fwd_ms=t_fwd, fwd_bwd_ms=t_all, extra_bytes=extra, input_bytes=inb)
            table.append(f"| {title} | {name} | {t_fwd:.3f} | {t_all:.3f} | {t_all - t_fwd:.3f} | "
                         f"{extra / 2**20:.0f} MiB | {inb / 2**20:.0f} MiB | {extra / inb:.2f} |")
        if not args.quick and kind in SWEEPS:
            rows = sweep(kind, a, SWEEPS[kind])
            results[kind]["sweep"] = [(str(s), ms, ws) for s, ms, ws in rows]
            print(f"\n{title}: backward kernel alone, by schedule (None = the cost model's choice)\n")
            print("| schedule | bwd ms | workspace |\n|---|---|---|")
            for s, ms, ws in rows:
                print(f"| {s} | {ms} | {ws / 2**20:.1f} MiB |")
        print()
    print("\n".join(table))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1, default=str)


if __name__ == "__main__":
    main()
