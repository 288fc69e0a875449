"""Multi-stage graphs on a GPU: the cost of running a graph with two scans as steps, against its two
single-scan kernels alone, and the one-graph Hydra against ssmc.ops.hydra (two SSD calls and torch glue).

    python benchmarks/bench_stages.py        # prints one JSON line per case (ms, median of 7 loops of 20)
"""
from __future__ import annotations

import json
import statistics

import torch

import ssmc
from ssmc.ir import builder as d
from ssmc.library import VARIANTS
from ssmc.ops import hydra

DEV = "cuda" if torch.cuda.is_available() else "cpu"  # (timings only mean something on the GPU)


def rand(*shape, scale=1.0, shift=0.0):
    return (torch.randn(*shape, device=DEV) * scale + shift).contiguous()


def timed(fn, reps=7, calls=20) -> float:
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    per = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        torch.cuda.synchronize()
        per.append(start.elapsed_time(end) / calls)
    return statistics.median(per)


def one_scan(name):
    """h = scan(exp(Δ A), Δ B u); y = Σ_n C h: one of the chain's scans as a graph of its own."""
    m = ssmc.Builder(name)
    u, dt = m.input("u", ("batch", "L", "dim")), m.input("dt", ("batch", "L", "dim"))
    A, B, C = m.input("A", ("dim", "N")), m.input("B", ("batch", "L", "N")), m.input("C", ("batch", "L", "N"))
    m.output("y", (C * m.scan(d.exp(dt * A), dt * B * u)).sum("n"), ("batch", "L", "dim"))
    return m.build()


def chain():
    """Two such scans, the second reading the first's readout one step late."""
    m = ssmc.Builder("chain2")
    u, dt = m.input("u", ("batch", "L", "dim")), m.input("dt", ("batch", "L", "dim"))
    A, B, C = m.input("A", ("dim", "N")), m.input("B", ("batch", "L", "N")), m.input("C", ("batch", "L", "N"))
    y1 = (C * m.scan(d.exp(dt * A), dt * B * u)).sum("n")
    m.output("y", (C * m.scan(d.exp(dt * A), dt * B * m.lag(y1, 1))).sum("n"), ("batch", "L", "dim"))
    return m.build()


def fwd_bwd(fn, args):
    leaves = {k: v.detach().requires_grad_(v.is_floating_point()) for k, v in args.items()}
    out = fn(**leaves)["y"]
    ct = torch.randn_like(out)
    return lambda: torch.autograd.grad((fn(**leaves)["y"] * ct).sum(), [v for v in leaves.values() if v.requires_grad])


def bench_chain(batch=4, L=2048, dim=1024, N=16):
    x = {"u": rand(batch, L, dim), "dt": rand(batch, L, dim, scale=0.02, shift=0.05).abs(),
         "A": -rand(dim, N).abs() - 0.5, "B": rand(batch, L, N), "C": rand(batch, L, N)}
    whole = ssmc.compile(chain(), backend="triton")
    first = ssmc.compile(one_scan("first"), backend="triton")
    second = ssmc.compile(one_scan("second"), backend="triton")
    res = {"case": f"chain of two scans, batch {batch}, L {L}, dim {dim}, N {N}, fp32"}
    res["two_scan_graph_fwd"] = timed(lambda: whole(**x))
    res["scan1_alone_fwd"] = timed(lambda: first(**x))
    res["scan2_alone_fwd"] = timed(lambda: second(**x))
    res["ratio_fwd"] = res["two_scan_graph_fwd"] / (res["scan1_alone_fwd"] + res["scan2_alone_fwd"])
    res["two_scan_graph_fwd_bwd"] = timed(fwd_bwd(whole, x))
    res["scan1_alone_fwd_bwd"] = timed(fwd_bwd(first, x))
    res["scan2_alone_fwd_bwd"] = timed(fwd_bwd(second, x))
    res["ratio_fwd_bwd"] = res["two_scan_graph_fwd_bwd"] / (res["scan1_alone_fwd_bwd"] + res["scan2_alone_fwd_bwd"])
    return res


def bench_hydra(batch=4, L=2048, H=32, P=64, G=1, N=64):
    x = {"x": rand(batch, L, H, P), "A": -rand(H).abs() - 0.5, "D": rand(H), "dt_bias": rand(H, scale=0.1),
         "diag": rand(batch, L, H)}
    for k in ("fwd", "bwd"):
        x[f"dt_{k}"] = rand(batch, L, H, scale=0.5, shift=-2.0)
        x[f"B_{k}"], x[f"C_{k}"] = rand(batch, L, G, N), rand(batch, L, G, N)
    graph = ssmc.compile(VARIANTS["hydra_graph"], backend="triton")

    def op(**a):
        st = lambda f, b: torch.stack([a[f], a[b]], 2)
        return {"y": hydra(a["x"], st("dt_fwd", "dt_bwd"), a["A"], st("B_fwd", "B_bwd"), st("C_fwd", "C_bwd"),
                           D=a["D"], diag=a["diag"], dt_bias=a["dt_bias"], dt_softplus=True, backend="triton")}
    res = {"case": f"hydra, batch {batch}, L {L}, H {H}, P {P}, G {G}, N {N}, fp32"}
    res["graph_fwd"], res["op_fwd"] = timed(lambda: graph(**x)), timed(lambda: op(**x))
    res["graph_fwd_bwd"], res["op_fwd_bwd"] = timed(fwd_bwd(graph, x)), timed(fwd_bwd(op, x))
    return res


if __name__ == "__main__":
    torch.manual_seed(0)
    print(json.dumps({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
                      "triton": __import__("triton").__version__}))
    for case in (bench_chain, bench_hydra):
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in case().items()}), flush=True)
