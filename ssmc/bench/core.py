"""GPU benchmark of the recurrent kernels: generated kernels vs the copy-bandwidth floor, a PyTorch loop
and, when importable, the hand-written anchors.

    ssmc bench --suite core [--quick] [--json FILE]      (or python benchmarks/bench_core.py)

Measures, in one process on one GPU:
  * the device copy rate (2 GiB fp32 copy, bytes read + written), the bandwidth ceiling;
  * the generated Mamba-1 selective scan forward (batch 4, dim 4096, L 2048, N 16, bf16 u/delta/z/B/C,
    fp32 A/D/delta_bias, softplus, z gate) — ssmc.ops.selective_scan on the Triton backend;
  * a generated real diagonal first-order scan h_t = a_t h_{t-1} + x_t (fp32, batch 4, dim 4096, L 4096);
  * a PyTorch loop implementation of each (what users fall back to), timed in the same run.
Anchors, side by side when importable: accelerated-scan's Triton first-order scan
(`accelerated_scan.scalar.scan`), mamba_ssm's Triton `selective_state_update` and its CUDA
`selective_scan_fn`.  Each kernel is checked against the loop before it is timed.  Times are do_bench medians after
warm-up, on random data.  % of floor = (fewest bytes moved / copy rate) / measured time.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from triton.testing import do_bench

import ssmc
from ssmc import ops
from ssmc.ops import reference
from ssmc.runtime import compile_ssm

GB = 1e9


def copy_rate() -> float:
    x = torch.randn(2 ** 29, device="cuda")  # 2 GiB fp32
    y = torch.empty_like(x)
    ms = do_bench(lambda: y.copy_(x), warmup=50, rep=300, return_mode="median")
    return 2 * x.numel() * 4 / (ms * 1e-3)  # bytes/s


def loop_time(fn, reps=3) -> float:
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps * 1e3


def rel(a, b) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


# --- Mamba-1 selective scan -----------------------------------------------------------

def selective_scan_loop(u, delta, A, B, C, D, z, delta_bias):
    """The reference PyTorch loop over time (ssmc.ops.reference) in fp32, bf16 out: the fallback users run
    today."""
    out, _ = reference.selective_scan(u.float(), delta.float(), A, B.float(), C.float(), D, z.float(), delta_bias,
                                      delta_softplus=True)
    return out.to(torch.bfloat16)


def mamba1_inputs(batch=4, dim=4096, L=2048, N=16):
    g = torch.Generator(device="cuda").manual_seed(0)
    r = lambda *s: torch.randn(*s, device="cuda", generator=g)
    bf = torch.bfloat16
    return dict(u=r(batch, dim, L).to(bf), delta=(r(batch, dim, L) * 0.5 - 1.0).to(bf),
                A=-torch.exp(r(dim, N) * 0.5), B=r(batch, N, L).to(bf), C=r(batch, N, L).to(bf),
                D=r(dim), z=r(batch, dim, L).to(bf), delta_bias=r(dim) * 0.1)


def mamba1_bytes(x) -> int:
    read = sum(v.numel() * v.element_size() for v in x.values())
    return read + x["u"].numel() * 2  # + bf16 output written once


# --- first-order scan ---------------------------------------------------------------

def first_order_graph():
    m = ssmc.Builder("first_order_scan")
    a = m.input("a", ("batch", "dim", "L"))
    x = m.input("x", ("batch", "dim", "L"))
    m.output("h", m.scan(a, x), ("batch", "dim", "L"))
    return m.build()


def first_order_loop(a, x):
    h = torch.zeros_like(x[:, :, 0])
    out = torch.empty_like(x)
    for t in range(x.shape[2]):
        h = a[:, :, t] * h + x[:, :, t]
        out[:, :, t] = h
    return out


def sweep(make_call, configs, check):
    """Time every schedule (each checked first); return sorted [(ms, config)]."""
    results = []
    for cfg in configs:
        fn = make_call(cfg)
        err = check(fn())
        ms = do_bench(fn, warmup=25, rep=100, return_mode="median")
        results.append((ms, cfg, err))
        k = getattr(make_call.last_module, "LAST_COMPILED", None) if hasattr(make_call, "last_module") else None
        regs = f", {k.n_regs} regs, {k.n_spills} spills" if k is not None and hasattr(k, "n_regs") else ""
        print(f"    {cfg}: {ms:.4f} ms  (rel err {err:.1e}{regs})", flush=True)
    return sorted(results, key=lambda r: r[0])


def run(args, rate: float) -> dict:
    """The core suite; `rate` is the measured copy rate (bytes/s)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    report = {}

    # Mamba-1 selective scan
    x = mamba1_inputs()
    floor_ms = mamba1_bytes(x) / rate * 1e3
    print(f"\nMamba-1 selective scan fwd (4, 4096, 2048, N16, bf16): bandwidth floor {floor_ms:.4f} ms "
          f"({mamba1_bytes(x) / GB:.3f} GB)")
    ref = selective_scan_loop(**x)
    loop_ms = loop_time(lambda: selective_scan_loop(**x), reps=2)
    def spec_fn(cfg):
        f = compile_ssm(mamba1_spec(), backend="triton", schedule=cfg)
        make_mamba1.last_module = f.kernel().module
        return f

    def make_mamba1(cfg):
        f = spec_fn(cfg)
        return lambda: f(**x)["out"]
    # full tiles (Schedule.full_tiles: lanes over channels and states, each thread's steps in registers; 8/8/1 is
    # the cost model's choice here), with and without the next chunk's loads prefetched; 16/4/1, 16/8/2, 32/4/1
    # and 32/8/2 were slower and are not swept (BENCHMARKS.md, "Mamba-1 schedules")
    full = [dict(layout="tdn", block_d=bd, chunk=c, num_warps=1, full_tiles=True, prefetch=pf)
            for bd, c in ((8, 8), (4, 8), (16, 8), (8, 4)) for pf in (False, True)] + \
        [dict(layout="tdn", block_d=32, chunk=8, num_warps=1, full_tiles=True)]
    configs = [dict(layout="tdn", block_d=bd, chunk=c, num_warps=w) for bd in (1, 2, 4) for c in (32, 64)
               for w in (1, 2)] + [dict(layout="dnt", block_d=4, chunk=32, num_warps=4)] + full
    if args.quick:
        configs = [dict(layout=lay, block_d=bd, chunk=c, num_warps=w) for lay, bd, c, w in
                   [("tnd", 128, 4, 4), ("tdn", 1, 64, 1)]] + full
    print("  schedules:")
    res = sweep(make_mamba1, configs, lambda y: rel(y, ref))
    best_ms, best_cfg, best_err = res[0]
    drop_in = do_bench(lambda: ops.selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"],
                                                  x["delta_bias"], delta_softplus=True, backend="triton"),
                       warmup=25, rep=100, return_mode="median")
    print(f"  best {best_cfg}: {best_ms:.4f} ms = {floor_ms / best_ms * 100:.1f}% of floor; "
          f"PyTorch loop {loop_ms:.1f} ms ({loop_ms / best_ms:.0f}x slower); rel err vs loop {best_err:.1e}; "
          f"ssmc.ops.selective_scan (default schedule) {drop_in:.4f} ms")
    report["mamba1"] = dict(ms=best_ms, schedule=best_cfg, floor_ms=floor_ms, pct_floor=floor_ms / best_ms * 100,
                            loop_ms=loop_ms, speedup_vs_loop=loop_ms / best_ms, rel_err=best_err,
                            drop_in_default_ms=drop_in, all=[(m, c) for m, c, _ in res],
                            channels=channel_sweep(spec_fn, CHANNEL_SWEEP))

    # first-order scan
    batch, dim, L = 4, 4096, 4096
    a = torch.rand(batch, dim, L, device="cuda") * 0.5 + 0.5
    xs = torch.randn(batch, dim, L, device="cuda")
    fbytes = 3 * a.numel() * 4
    ffloor = fbytes / rate * 1e3
    print(f"\nfirst-order scan (4, 4096, 4096, fp32): bandwidth floor {ffloor:.4f} ms ({fbytes / GB:.3f} GB)")
    fref = first_order_loop(a, xs)
    floop = loop_time(lambda: first_order_loop(a, xs), reps=2)
    g = first_order_graph()
    configs = [dict(block_d=bd, chunk=c, num_warps=w) for bd in (1, 2, 4) for c in (256, 512, 1024) for w in (4, 8)]
    if args.quick:
        configs = [dict(block_d=bd, chunk=c, num_warps=w) for bd, c, w in [(1, 1024, 8), (1, 512, 4), (2, 512, 8)]]
    print("  schedules:")
    res = sweep(lambda cfg: (lambda f=compile_ssm(g, backend="triton", schedule=cfg): f(a=a, x=xs)["h"]), configs,
                lambda y: rel(y, fref))
    fms, fcfg, ferr = res[0]
    print(f"  best {fcfg}: {fms:.4f} ms = {ffloor / fms * 100:.1f}% of floor; PyTorch loop {floop:.1f} ms "
          f"({floop / fms:.0f}x slower); rel err vs loop {ferr:.1e}")
    report["first_order"] = dict(ms=fms, schedule=fcfg, floor_ms=ffloor, pct_floor=ffloor / fms * 100,
                                 loop_ms=floop, speedup_vs_loop=floop / fms, rel_err=ferr,
                                 all=[(m, c) for m, c, _ in res])
    report["first_order"]["anchor"] = anchor("accelerated_scan (Triton) scan", _accelerated_scan, (a, xs), fref,
                                             ffloor, fms)
    report["mamba1"]["anchor"] = anchor("mamba_ssm CUDA selective_scan_fn", _mamba_selective_scan, (x,), ref,
                                        floor_ms, best_ms)
    # decode step (Mamba-2 shape): selective_state_update, state updated in place
    report["decode"] = bench_decode(rate)
    report["lengths"] = length_sweep([int(v) for v in args.lengths.split(",")])
    print("\n| kernel | ms | % of bandwidth floor | PyTorch loop ms | speedup |")
    print("|---|---|---|---|---|")
    for k in ("mamba1", "first_order", "decode"):
        r = report[k]
        print(f"| {k} | {r['ms']:.4f} | {r['pct_floor']:.1f}% | {r['loop_ms']:.1f} | {r['speedup_vs_loop']:.0f}x |")
    return report


# the two schedules the cost model chooses between for Mamba-1 (strategy.SELECTIVE_MIN_CHANNELS), and full tiles
# with the next chunk prefetched
CHANNEL_SWEEP = [dict(layout="tdn", block_d=1, chunk=64, num_warps=1),
                 dict(layout="tdn", block_d=8, chunk=8, num_warps=1, full_tiles=True),
                 dict(layout="tdn", block_d=8, chunk=8, num_warps=1, full_tiles=True, prefetch=True)]


def channel_sweep(spec_fn, configs) -> list:
    """Mamba-1 schedules across batch x channels (L 2048): where the cost model's threshold should lie."""
    from triton.testing import do_bench_cudagraph
    fns = [spec_fn(c) for c in configs]
    print("  batch x channels: " + " | ".join(map(str, configs)))
    rows = []
    for b, d in ((1, 1024), (8, 384), (1, 4096), (2, 4096), (4, 4096)):
        x = mamba1_inputs(batch=b, dim=d)
        outs = [f(**x)["out"] for f in fns]
        ms = []
        for f, out in zip(fns, outs):
            err = rel(out, outs[0])
            if err > 1e-3:
                raise AssertionError(f"Mamba-1 at {b}x{d}: schedules disagree (rel. err {err:.1e})")
            ms.append(do_bench_cudagraph(lambda f=f: f(**x)["out"], rep=50, return_mode="median"))
        rows.append({"batch": b, "dim": d, "ms": ms})
        print(f"    {b} x {d}: " + " | ".join(f"{m:.4f} ms" for m in ms), flush=True)
    return rows


def length_sweep(lengths) -> list:
    """Time vs L of the recurrent lowerings at their default schedules: no cliff means ms/L stays flat."""
    from triton.testing import do_bench_cudagraph
    g = first_order_graph()
    first = compile_ssm(g, backend="triton")
    rows = []
    for L in lengths:
        x = mamba1_inputs(L=L)
        m1 = do_bench_cudagraph(lambda: ops.selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"],
                                                           x["delta_bias"], delta_softplus=True, backend="triton"),
                                rep=100, return_mode="median")
        a = torch.rand(4, 4096, L, device="cuda") * 0.5 + 0.5
        xs = torch.randn(4, 4096, L, device="cuda")
        fo = do_bench_cudagraph(lambda: first(a=a, x=xs)["h"], rep=100, return_mode="median")
        rows.append({"L": L, "mamba1 selective scan": m1, "first-order scan": fo})
        print(f"  L {L}: mamba1 {m1:.3f} ms ({m1 / L * 1e6:.0f} us per 1K steps), first-order {fo:.3f} ms "
              f"({fo / L * 1e6:.0f} us per 1K steps)", flush=True)
    return rows


def gpu_ms(fn, rep: int = 100) -> tuple:
    """(median ms, how): the GPU time of a CUDA graph of the call, or — where the call cannot be
    captured — its time as called (host included)."""
    from triton.testing import do_bench_cudagraph
    try:
        return do_bench_cudagraph(fn, rep=rep, return_mode="median"), "CUDA graph"
    except Exception:  # noqa: BLE001 - not capturable: timed as called
        return do_bench(fn, warmup=25, rep=rep, return_mode="median"), "do_bench"


def anchor(label, make, args, ref, floor, ssmc_ms) -> dict:
    """Time an anchor kernel if importable, after checking it against the reference."""
    try:
        fn = make(*args)
    except Exception as e:  # noqa: BLE001 - not installed here: say so
        print(f"  anchor {label}: not importable ({type(e).__name__}: {str(e)[:80]})")
        return {"name": label, "available": False}
    err = rel(fn(), ref)
    ms, how = gpu_ms(fn)  # as ssmc's decode kernel is timed
    print(f"  anchor {label}: {ms:.4f} ms ({how}) = {floor / ms * 100:.1f}% of floor; ssmc/anchor time "
          f"{ssmc_ms / ms:.2f}; rel err vs loop {err:.1e}")
    return {"name": label, "available": True, "ms": ms, "timed": how, "rel_err": err, "pct_floor": floor / ms * 100}


def _accelerated_scan(a, x):
    from accelerated_scan.scalar import scan
    return lambda: scan(a, x)


def _mamba_selective_scan(x):
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    return lambda: selective_scan_fn(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"],
                                     delta_softplus=True)


def decode_torch(state, x, dt, A, B, C, D, dt_bias):
    """mamba_ssm's selective_state_update written in PyTorch ops (what users fall back to)."""
    dt = F.softplus(dt + dt_bias)
    state.mul_(torch.exp(dt[..., None] * A)).add_(dt[..., None] * B[:, :, None] * x[..., None])
    return (state * C[:, :, None]).sum(-1) + D * x


def bench_decode(rate, batch=64, H=64, P=64, N=128):
    g = torch.Generator(device="cuda").manual_seed(0)
    r = lambda *s: torch.randn(*s, device="cuda", generator=g)
    # Mamba-2 decode passes per-head A, dt, D, dt_bias broadcast over P (and N) with stride 0.
    A = (-torch.exp(r(H) * 0.5))[:, None, None].expand(H, P, N)
    dt = r(batch, H)[:, :, None].expand(batch, H, P)
    D, bias = r(H)[:, None].expand(H, P), (0.1 * r(H))[:, None].expand(H, P)
    x, B, C = r(batch, H, P), r(batch, 1, N), r(batch, 1, N)
    state = r(batch, H, P, N)
    nbytes = 2 * state.numel() * 4 + 2 * x.numel() * 4  # state read + written, x read, out written
    floor = nbytes / rate * 1e3
    want_state = state.clone()
    want = decode_torch(want_state, x, dt, A, B, C, D, bias)
    s = state.clone()
    out = ops.selective_state_update(s, x, dt, A, B, C, D, None, bias, True, backend="triton")
    err = max(rel(out, want), rel(s, want_state))
    ms = do_bench(lambda: ops.selective_state_update(s, x, dt, A, B, C, D, None, bias, True, backend="triton"),
                  warmup=25, rep=200, return_mode="median")
    # The op's host work (argument checks, launch) can exceed the kernel at this size: time the
    # kernel alone too, replayed from a CUDA graph.
    from triton.testing import do_bench_cudagraph
    kms = do_bench_cudagraph(lambda: ops.selective_state_update(s, x, dt, A, B, C, D, None, bias, True,
                                                                backend="triton"), rep=200, return_mode="median")
    tms = do_bench(lambda: decode_torch(s, x, dt, A, B, C, D, bias), warmup=25, rep=200, return_mode="median")
    anchor_ = anchor("mamba_ssm Triton selective_state_update", _mamba_state_update,
                     (state.clone(), x, dt, A, B, C, D, bias), out, floor, kms)
    print(f"\ndecode step selective_state_update (B{batch} H{H} P{P} N{N}, fp32 state in place): kernel {kms:.4f} ms "
          f"(CUDA graph) = {floor / kms * 100:.1f}% of copy bandwidth (floor {floor:.4f} ms); op call from Python "
          f"{ms:.4f} ms; PyTorch ops {tms:.4f} ms; rel err {err:.1e}")
    return dict(ms=kms, op_call_ms=ms, floor_ms=floor, pct_floor=floor / kms * 100, loop_ms=tms,
                speedup_vs_loop=tms / kms, rel_err=err, anchor=anchor_)


def _mamba_state_update(state, x, dt, A, B, C, D, bias):
    from mamba_ssm.ops.triton.selective_state_update import selective_state_update
    return lambda: selective_state_update(state, x, dt, A, B, C, D, None, bias, True)


def mamba1_spec():
    return ssmc.Spec("selective_scan", state="diag_real", A="direct", rule="zoh_euler", dt="softplus",
                     dt_bias=True, skip="h", gate="silu")


