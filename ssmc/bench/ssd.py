"""GPU benchmark: the Mamba-2 SSD forward, ssmc's generated chunked kernel against the public anchors.

    ssmc bench --suite ssd [--quick] [--json FILE] [--lengths 512,...,16384]   (or benchmarks/bench_ssd.py)

One process, one GPU, side by side:
  * ssmc.ops.ssd (the cost model picks the chunked lowering) and a sweep of ChunkedSchedules;
  * ssmc's recurrent lowering of the same graph (associative scan, CUDA cores), for reference;
  * mamba_ssm's Triton `mamba_chunk_scan_combined`, if importable (only its Triton files are needed:
    put a folder holding mamba_ssm/ops/triton on PYTHONPATH);
  * flash-linear-attention's `chunk_simple_gla` on the same function (q=C, k=B, v=x·Δ, g=A·Δ), if
    importable.
Shape: batch 4, L 2048, H 64, P 64, N 128, G 1; x, z, B, C bf16, dt and A fp32; softplus(dt + bias),
D skip, z gate (the anchors get the same, or the part of it they compute: fla has no D, z, bias,
so it gets Δ precomputed and its output is checked against ssmc's y before D and z).
Then Hydra (ssmc.ops.hydra: a forward and a reverse chunked SSD) against Hydra's public module around
mamba_chunk_scan_combined (both directions as one batch, flipped copies), when importable.
Every contender is checked against ssmc's output first.  Times: medians of do_bench_cudagraph (the
GPU time of a CUDA graph of the call, no host overhead), and of do_bench on the Python call.
Also a length sweep (time vs L) for ssmc and the anchors: no cliff means time/L stays flat.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from triton.testing import do_bench

from ssmc import ops
from ssmc.backends.triton import ChunkedSchedule, Schedule
from ssmc.bench.core import gpu_ms
from ssmc.export import OP_FORMS
from ssmc.runtime import compile_ssm


def inputs(batch=4, L=2048, H=64, P=64, N=128, G=1, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    r = lambda *s, dt=torch.bfloat16: torch.randn(*s, device="cuda", generator=g).to(dt)  # noqa: E731
    return dict(x=r(batch, L, H, P), dt=r(batch, L, H, dt=torch.float32) - 1.0,
                A=-torch.rand(H, device="cuda", generator=g) * 4 - 0.5,
                B=r(batch, L, G, N), C=r(batch, L, G, N), D=torch.randn(H, device="cuda", generator=g),
                z=r(batch, L, H, P), dt_bias=0.1 * torch.randn(H, device="cuda", generator=g))


def ssmc_call(t, schedule=None):
    if schedule is None:
        return lambda: ops.ssd(t["x"], t["dt"], t["A"], t["B"], t["C"], 64, D=t["D"], z=t["z"],
                               dt_bias=t["dt_bias"], dt_softplus=True)
    spec = OP_FORMS["ssd"][0].with_(h0=False, final_state=False)
    fn = compile_ssm(spec, backend="triton", schedule=schedule)
    args = {k: t[k] for k in ("x", "dt", "A", "B", "C", "D", "z", "dt_bias")}
    return lambda: fn(**args)["out"]


def ssmc_y_no_gate(t):
    """ssmc's y = Σ C·h (no D, no z), the function fla computes, with Δ given: a call, compiled once."""
    spec = OP_FORMS["ssd"][0].with_(name="ssd_plain", h0=False, final_state=False, skip=None, gate=None,
                                    dt_bias=False, dt="raw")
    fn = compile_ssm(spec, backend="triton")
    return lambda: fn(x=t["x"], dt=t["delta"], A=t["A"], B=t["B"], C=t["C"])["out"]


def mamba_call(t):
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except Exception as e:  # noqa: BLE001
        return None, f"not importable: {type(e).__name__}: {e}"
    return (lambda: mamba_chunk_scan_combined(t["x"], t["dt"], t["A"], t["B"], t["C"], 256, D=t["D"], z=t["z"],
                                              dt_bias=t["dt_bias"], dt_softplus=True)), None


def fla_call(t):
    try:
        from fla.ops.simple_gla import chunk_simple_gla
    except Exception as e:  # noqa: BLE001
        return None, f"not importable: {type(e).__name__}: {e}"
    H = t["x"].shape[2]
    q = t["C"].expand(-1, -1, H, -1).contiguous()  # one group shared by every head
    k = t["B"].expand(-1, -1, H, -1).contiguous()
    v = (t["x"].float() * t["delta"][..., None]).to(t["x"].dtype)
    g = (t["A"] * t["delta"]).float()
    return (lambda: chunk_simple_gla(q, k, v, g=g, scale=1.0)[0]), None


def hydra_inputs(t):
    """Hydra's two directions on the SSD inputs: dt (batch, L, 2, H), B and C (batch, L, 2, G, N), the
    backward direction's a second draw."""
    g = torch.Generator(device=t["x"].device).manual_seed(1)
    other = lambda v: torch.randn(v.shape, device=v.device, generator=g).to(v.dtype)  # noqa: E731
    return dict(x=t["x"], dt=torch.stack([t["dt"], other(t["dt"]) - 1.0], 2), A=t["A"],
                B=torch.stack([t["B"], other(t["B"])], 2), C=torch.stack([t["C"], other(t["C"])], 2), D=t["D"],
                dt_bias=t["dt_bias"])


def hydra_call(h):
    return lambda: ops.hydra(h["x"], h["dt"], h["A"], h["B"], h["C"], D=h["D"], dt_bias=h["dt_bias"],
                             dt_softplus=True)


def hydra_composed(h, chunk_scan):
    """Hydra as its public module computes it around a chunked SSD (`chunk_scan`, e.g. mamba_ssm's
    mamba_chunk_scan_combined): both directions as one batch, the backward one on flipped copies,
    the outputs flipped back, shifted by padding and added with D·x."""
    b = h["x"].shape[0]
    both = lambda v, w: torch.cat([v, w.flip(1)], 0)  # noqa: E731
    y = chunk_scan(both(h["x"], h["x"]), both(h["dt"][:, :, 0], h["dt"][:, :, 1]), h["A"],
                   both(h["B"][:, :, 0], h["B"][:, :, 1]), both(h["C"][:, :, 0], h["C"][:, :, 1]), 256,
                   dt_bias=h["dt_bias"], dt_softplus=True)
    fwd, bwd = y[:b], y[b:].flip(1)
    return (F.pad(fwd[:, :-1], (0, 0, 0, 0, 1, 0)) + F.pad(bwd[:, 1:], (0, 0, 0, 0, 0, 1))
            + h["x"] * h["D"][:, None].to(h["x"].dtype))


def rel(a, b) -> float:
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm())


def floor_ms(t, rate) -> float:
    """Fewest bytes: read x, z, B, C, dt once, write out once (bf16 out)."""
    n = sum(t[k].numel() * t[k].element_size() for k in ("x", "z", "B", "C", "dt")) + t["x"].numel() * 2
    return n / rate * 1e3


def flops(t, Q=64) -> float:
    b, L, H, P = t["x"].shape
    N = t["B"].shape[-1]
    return 2.0 * b * H * L * (Q * N + Q * P + 2 * N * P)  # C·Kᵀ, (·)V, C·Hᵀ, state update


def run(args, rate: float) -> dict:
    """The SSD suite; `rate` is the measured copy rate (bytes/s)."""
    t = inputs()
    t["delta"] = F.softplus(t["dt"] + t["dt_bias"])
    report = {"rows": [], "sweep": [], "lengths": []}
    ref = ssmc_call(t, Schedule(layout="tdn", block_d=1, chunk=16, num_warps=4))()  # the recurrent lowering
    def ms_bench(f):
        return gpu_ms(f, rep=200)[0]

    def call_ms(f):
        return do_bench(f, warmup=25, rep=200, return_mode="median")
    fl, flo = flops(t), floor_ms(t, rate)

    def row(name, fn, check):
        err = rel(fn(), check)
        ms, called = ms_bench(fn), call_ms(fn)
        report["rows"].append(dict(name=name, ms=ms, call_ms=called, err=err))
        print(f"{name:58s} {ms:7.3f} ms (called from Python: {called:7.3f} ms)  {fl / ms / 1e9:6.1f} TFLOP/s  "
              f"{flo / ms * 100:5.1f}% of floor  rel.err {err:.1e}", flush=True)

    default = ssmc_call(t)
    row("ssmc.ops.ssd (cost model: chunked)", default, ref)
    row("ssmc recurrent lowering (associative scan, CUDA cores)", ssmc_call(t, Schedule(layout="tdn", block_d=1,
                                                                                        chunk=16, num_warps=4)), ref)
    m, why = mamba_call(t)
    if m:
        row("mamba_ssm Triton mamba_chunk_scan_combined (chunk 256)", m, ref)
    else:
        print("mamba_ssm:", why)
    f, why = fla_call(t)
    if f:
        plain = ssmc_y_no_gate(t)
        row("fla chunk_simple_gla (y without D, z)", f, plain())
        row("ssmc chunked, same function as fla (no D, z, bias)", plain, f())
    else:
        print("fla:", why)
    h = hydra_inputs(t)
    href = hydra_composed(h, ops.ssd)  # the reverse direction on flipped copies through ssmc's forward SSD
    row("ssmc.ops.hydra (forward + reverse chunked SSD, shifts, D)", hydra_call(h), href)
    if m:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
        row("Hydra's module around mamba_chunk_scan_combined (flipped copies)",
            lambda: hydra_composed(h, mamba_chunk_scan_combined), href)
    configs = [ChunkedSchedule(chunk=q, block_p=bp, num_warps=w, num_stages=s)
               for q in (16, 32, 64) for bp in (32, 64) for w in (4, 8) for s in (1, 2, 3)]
    if args.quick:
        configs = configs[::5]
    for c in configs:
        try:
            fn = ssmc_call(t, c)
            err = rel(fn(), ref)
            ms = ms_bench(fn)
            report["sweep"].append(dict(schedule=repr(c), ms=ms, err=err))
            print(f"  sweep {c}: {ms:.3f} ms (err {err:.1e})", flush=True)
        except Exception as e:  # noqa: BLE001 - a schedule that does not compile (registers, shared memory)
            print(f"  sweep {c}: failed: {type(e).__name__}: {str(e)[:120]}", flush=True)
    good = [s for s in report["sweep"] if s["err"] < 2e-2]
    if good:
        best = min(good, key=lambda s: s["ms"])
        print(f"best chunked schedule {best['schedule']}: {best['ms']:.3f} ms")
        report["best"] = best
    # time vs L: no cliff
    for L in [int(v) for v in args.lengths.split(",")]:
        tl_ = inputs(L=L, seed=L)
        line = {"L": L, "ssmc": ms_bench(ssmc_call(tl_))}
        mm, _ = mamba_call(tl_)
        if mm:
            line["mamba_ssm"] = ms_bench(mm)
        tl_["delta"] = F.softplus(tl_["dt"] + tl_["dt_bias"])
        ff, _ = fla_call(tl_)
        if ff:
            line["fla"] = ms_bench(ff)
        report["lengths"].append(line)
        print("  L", L, {k: round(v, 3) for k, v in line.items() if k != "L"},
              f"ssmc us per 1K steps {line['ssmc'] / L * 1e6:.1f}", flush=True)
        del tl_
    return report
