"""Autotuning: time candidate schedules on the real inputs once per (graph, sizes, GPU), keep the
fastest in an on-disk cache, and print a progress line while tuning.

    fn = ssmc.compile("mamba2", backend="triton", schedule="autotune")
    fn(**cuda_tensors)      # first call at these sizes tunes (stderr: "ssmc: tuning ... 7/24"), then runs

A schedule never changes results (tests sweep them), so tuning only picks among equals; every
candidate's output is still compared with the cost model's choice, and one that disagrees, or
fails to compile (registers, shared memory), is dropped.
"""
from __future__ import annotations

import hashlib
import json
import statistics
import sys
import time
from dataclasses import asdict

from ssmc.ir import Graph

from . import cache
from .build import build
from .schedule import ChunkedSchedule, Schedule
from .strategy import choose, choose_schedule
from .time_loop import prefetchable

TABLE = "tuning.json"  # in the cache root: key -> the schedule that won


def candidates(graph: Graph, roles: dict, device_type: str, acc: str = "float32") -> list:
    """Schedules worth timing for this graph: the cost model's lowering, its parameters swept."""
    kind, _ = choose(graph, roles, device_type, acc)
    first = choose_schedule(graph, roles, device_type, acc)
    if kind == "chunked":
        p = roles.get("p", 1)
        grid = [ChunkedSchedule(chunk=q, block_p=bp, num_warps=w, num_stages=s)
                for q in (16, 32, 64) for bp in (32, 64) if bp <= max(32, p)
                for w in (4, 8) for s in (1, 2, 3)]
    elif kind == "step":
        grid = [Schedule(block_d=bd, chunk=1, num_warps=w) for bd in (4, 8, 16, 32, 64) for w in (2, 4, 8)]
    else:
        grid = ([Schedule(layout="tnd", block_d=bd, chunk=c, num_warps=w)
                 for bd in (64, 128, 256) for c in (2, 4, 8) for w in (4, 8)]
                + [Schedule(layout="tdn", block_d=bd, chunk=c, num_warps=w)
                   for bd in (1, 2, 4) for c in (16, 32, 64) for w in (1, 2, 4)]
                + [Schedule(layout="tdn", block_d=bd, chunk=c, num_warps=1, full_tiles=True, prefetch=pf)
                   for bd in (8, 16) for c in (4, 8) for pf in (False, True)
                   if not pf or prefetchable(graph)]
                + [Schedule(layout="dnt", block_d=bd, chunk=c, num_warps=4) for bd in (4, 16) for c in (16, 32)])
        if any(graph[i].attr("io") == "mimo" for i in graph.ids("scan")):
            grid = [Schedule(block_d=1, chunk=1, num_warps=w) for w in (1, 2, 4, 8)]
    grid = [s for s in grid if s != first]
    if device_type != "cuda":  # the CPU interpreter: timings mean little, keep it short
        grid = grid[:2]
    return [first] + grid


def _key(graph: Graph, sizes: dict, device_name: str, acc: str) -> str:
    import triton
    text = "\n".join([graph.text(), repr(sorted(sizes.items())), device_name, acc, triton.__version__])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _schedule_from(d: dict):
    kind = d.pop("kind")
    return ChunkedSchedule(**d) if kind == "chunked" else Schedule(**d)


def autotune(graph: Graph, sizes: dict, roles: dict, device, acc: str, tensors: dict):
    """The fastest correct kernel for these tensors (from the disk cache when tuned before)."""
    import torch  # (a CUDA tensor or the CPU interpreter's: torch is there when tuning runs)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    key = _key(graph, sizes, name, acc)
    table = cache.read_json(TABLE)
    if key in table:
        try:
            return build(graph, _schedule_from(dict(table[key]["schedule"])), acc)
        except (KeyError, TypeError, ValueError):  # a damaged or foreign entry: tune again, replace it
            pass
    cands = candidates(graph, roles, device.type, acc)
    ref = build(graph, cands[0], acc)(**tensors)
    best, timings = None, []
    for k, sched in enumerate(cands):
        print(f"\rssmc: tuning {graph.name} {dict(sorted(sizes.items()))} on {name}: {k + 1}/{len(cands)}",
              end="", file=sys.stderr, flush=True)
        try:
            kern = build(graph, sched, acc)
            out = kern(**tensors)
            if not all(_close(out[n], ref[n]) for n in ref):
                continue
            ms = _time(lambda: kern(**tensors), device)
        except Exception:  # noqa: BLE001 - a candidate that does not compile or launch is skipped
            continue
        timings.append(ms)
        if best is None or ms < best[0]:
            best = (ms, sched, kern)
    if best is None:  # nothing else ran: the cost model's choice, which produced `ref`
        best = (float("nan"), cands[0], build(graph, cands[0], acc))
    print(f"\rssmc: tuned {graph.name}: {best[1]} at {best[0]:.3f} ms ({len(timings)} of {len(cands)} ran)",
          file=sys.stderr, flush=True)
    table[key] = {"graph": graph.name, "sizes": sizes, "device": name, "ms": best[0],
                  "schedule": {"kind": "chunked" if isinstance(best[1], ChunkedSchedule) else "recurrent",
                               **asdict(best[1])}}
    cache.write(TABLE, json.dumps(table, indent=1))
    return best[2]


def _time(fn, device) -> float:
    """Median milliseconds of a call: do_bench on CUDA, a wall clock under the interpreter."""
    if device.type == "cuda":
        from triton.testing import do_bench
        return do_bench(fn, warmup=5, rep=30, return_mode="median")
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _close(a, b, tol=2e-2) -> bool:
    a, b = a.float(), b.float()
    return bool(((a - b).norm() <= tol * b.norm() + 1e-6).item())
