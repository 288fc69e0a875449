"""GPU benchmark: a VMamba-shaped SS2D (four 2-D scan orders) as one ssmc multi-order kernel, against
the unfused pipeline a user writes today — permuted copies of the inputs, four single-order scans
(ssmc's own `selective_scan`), un-permuting and summing the outputs.

    ssmc bench --suite orders

Shape: batch 8, dim 384, a 56×56 grid (L 3136), N 16, K 4, bf16 u/delta/B/C/z; softplus with a bias,
D, z gate.  Both are checked against each other first.  % of floor: each input read once, the
output written once, over the copy rate.  On the same inputs, MSVMamba (multiscale_scan_2d) as one
strided-view kernel against its two-launch gather form.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from triton.testing import do_bench_cudagraph

from ssmc import ops
from ssmc.backends.triton import Schedule
from ssmc.bench.core import gpu_ms
from ssmc.ops.multi_order import multi_order_compiled, orders_array, scan_orders_2d
from ssmc.runtime import compile_ssm


def inputs(batch=8, dim=384, H=56, W=56, N=16, K=4, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    L = H * W
    r = lambda *s: torch.randn(*s, device="cuda", generator=g)  # noqa: E731
    bf = torch.bfloat16
    return dict(u=r(batch, dim, L).to(bf), delta=(r(batch, K, dim, L) * 0.5 - 1.0).to(bf),
                A=-torch.exp(r(K, dim, N) * 0.5), B=r(batch, K, N, L).to(bf), C=r(batch, K, N, L).to(bf),
                D=r(K, dim), z=r(batch, dim, L).to(bf), delta_bias=0.1 * r(K, dim))


def fused(x, orders, schedule=None, gather=False):
    """The multi-order op (its default schedule), or its kernel at `schedule`: named grid orders
    read as the IR's grid order, or with `gather` as permutations read from the orders tensor."""
    if schedule is None and not gather:
        return lambda: ops.multi_order_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], orders, D=x["D"], z=x["z"],
                                            delta_bias=x["delta_bias"], delta_softplus=True, backend="triton")
    b, K, dim, L = x["delta"].shape
    index, grid = orders_array(orders, K, L, x["u"])
    return kernel_call(x, "" if gather else grid, schedule, index)


def kernel_call(x, grid, schedule, index=None):
    """The multi-order graph of grid key `grid` (ssmc.ops.multi_order.grid_of_key), or with grid "" the gather
    graph reading the orders `index`, compiled at `schedule`: a call on the inputs `x`."""
    b, K, dim, L = x["delta"].shape
    fn = compile_ssm(multi_order_compiled(True, True, True, True, "triton", "sum", 1, frozenset(), grid).graph,
                     backend="triton", schedule=schedule)
    args = dict(u=x["u"], delta=x["delta"].reshape(b, K * dim, L), A=x["A"].reshape(K * dim, -1), B=x["B"],
                C=x["C"], **({} if grid else {"orders": index}), D=x["D"].reshape(-1), z=x["z"],
                delta_bias=x["delta_bias"].reshape(-1))
    return lambda: fn(**args)["out"]


def unfused(x, orders):
    """What users write today: gather each order's inputs, scan, scatter back, sum, gate."""
    inv = [torch.argsort(o) for o in orders]

    def run():
        total = None
        for k, (o, i) in enumerate(zip(orders, inv)):
            y = ops.selective_scan(x["u"][..., o], x["delta"][:, k][..., o], x["A"][k], x["B"][:, k][..., o],
                                   x["C"][:, k][..., o], x["D"][k], None, x["delta_bias"][k], True,
                                   backend="triton")[..., i]
            total = y.float() if total is None else total + y.float()
        return (total * F.silu(x["z"].float())).to(x["u"].dtype)
    return run


def multiscale(x, H=56, W=56):
    """MSVMamba on the same inputs: (ms of the one-graph form with named orders, (ms, how timed) of the
    two-launch form the same orders take when the coarse ones are given as permutations, their rel. difference,
    [(schedule, ms, rel. difference)] of the one-graph kernel at other schedules)."""
    coarse = ["col", "row_rev", "col_rev"]
    perms = [torch.from_numpy(o).cuda() for o in scan_orders_2d((H + 1) // 2, (W + 1) // 2, coarse)]
    args = dict(D=x["D"], z=x["z"], delta_bias=x["delta_bias"], delta_softplus=True, backend="triton")

    def call(orders):
        return lambda: ops.multiscale_scan_2d(x["u"], x["delta"], x["A"], x["B"], x["C"], (H, W),
                                              coarse_orders=orders, **args)
    one, two = call(coarse), call(perms)
    a, b = one().float(), two().float()
    err = float((a - b).norm() / b.norm())
    sweep = []  # the one-graph kernel at other schedules (the default is tdn 4/32/1)
    for bd, c, w in ((1, 64, 1), (2, 64, 1), (2, 64, 2), (2, 32, 1)):
        f = kernel_call(x, f"{H}x{W}:row,{','.join(coarse)}:1,2,2,2",
                        Schedule(layout="tdn", block_d=bd, chunk=c, num_warps=w))
        e = float((f().float() - a).norm() / a.norm())
        ms = do_bench_cudagraph(f, rep=50, return_mode="median")
        sweep.append(((bd, c, w), ms, e))
        print(f"  MSVMamba one-graph kernel, tdn block_d {bd} chunk {c} warps {w}: {ms:.3f} ms (vs default {e:.1e})",
              flush=True)
    return do_bench_cudagraph(one, rep=100, return_mode="median"), gpu_ms(two), err, sweep


def run(args, rate: float) -> dict:
    x = inputs()
    orders = [torch.from_numpy(o).cuda() for o in scan_orders_2d(56, 56, ["row", "col", "row_rev", "col_rev"])]
    f, u = fused(x, orders), unfused(x, orders)
    a, b = f().float(), u().float()
    err = float((a - b).norm() / b.norm())
    nbytes = sum(v.numel() * v.element_size() for k, v in x.items() if k not in ("A", "D", "delta_bias"))
    nbytes += x["u"].numel() * 2  # bf16 out
    floor = nbytes / rate * 1e3
    fms = do_bench_cudagraph(f, rep=100, return_mode="median")
    ums = do_bench_cudagraph(u, rep=100, return_mode="median")
    gms = do_bench_cudagraph(fused(x, orders, gather=True), rep=100, return_mode="median")
    print(f"  the same orders read as permutations (gather order, its default schedule): {gms:.3f} ms", flush=True)
    sweep = []
    for sched in [Schedule(layout="tdn", block_d=bd, chunk=c, num_warps=w)  # (2, 64, 1): the default
                  for bd, c, w in ((1, 64, 1), (2, 64, 1), (4, 32, 1), (2, 32, 1), (2, 64, 2))]:
        fs = fused(x, orders, sched)
        e = float((fs().float() - a).norm() / a.norm())
        ms = do_bench_cudagraph(fs, rep=50, return_mode="median")
        sweep.append((ms, repr(sched), e))
        print(f"  fused {sched}: {ms:.3f} ms (vs default {e:.1e})", flush=True)
    for names in (["row", "row_rev", "row", "row_rev"], ["col", "col_rev", "col", "col_rev"]):
        o = [torch.from_numpy(v).cuda() for v in scan_orders_2d(56, 56, names)]
        print(f"  fused, orders {names}: {do_bench_cudagraph(fused(x, o), rep=50, return_mode='median'):.3f} ms",
              flush=True)
    best = min(s_ for s_ in sweep if s_[2] < 1e-2)
    print(f"\nVMamba SS2D (B8 D384 56x56 N16 K4, bf16): fused multi-order kernel {fms:.3f} ms "
          f"({floor / fms * 100:.1f}% of the {floor:.3f} ms floor); unfused pipeline (4 gathers + 4 ssmc scans + "
          f"scatter + sum) {ums:.3f} ms; speedup {ums / fms:.3f}x; rel. difference {err:.1e}", flush=True)
    print(f"  best fused schedule {best[1]}: {best[0]:.3f} ms ({floor / best[0] * 100:.1f}% of floor), "
          f"speedup over the unfused pipeline {ums / best[0]:.3f}x", flush=True)
    ms_fused, (ms_split, split_timed), ms_err, ms_sweep = multiscale(x)
    print(f"  MSVMamba (row | col, row_rev, col_rev on the 28x28 stride-2 view): one strided-view kernel "
          f"{ms_fused:.3f} ms (CUDA graph); two multi-order launches around gathers {ms_split:.3f} ms "
          f"({split_timed}) ({ms_split / ms_fused:.3f}x; rel. difference {ms_err:.1e})", flush=True)
    return dict(fused_ms=fms, unfused_ms=ums, gather_ms=gms, speedup=ums / fms, floor_ms=floor,
                msvmamba_fused_ms=ms_fused, msvmamba_split_ms=ms_split, msvmamba_split_timed=split_timed,
                msvmamba_sweep=ms_sweep,
                pct_floor=floor / fms * 100, rel_err=err, best_ms=best[0], best_schedule=best[1],
                best_speedup=ums / best[0], sweep=sweep)
