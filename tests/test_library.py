"""Every library entry: the generated Triton kernel against the NumPy interpreter (float64).

Odd channel and state counts exercise the masks; NaN-poisoned preallocated outputs prove every
element is written; a schedule sweep proves tiling never changes results; fp16/bf16 inputs are
checked against float64 NumPy on the same (rounded) values.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import ssmc
from ssmc import library
from ssmc.ir.inits import random_inputs

from conftest import DEVICES, as_numpy, assert_close, rel_err, seed_of

ENTRIES = sorted(library.ENTRIES)

# Odd channel counts (dim, H or H·P) and odd state sizes, so partial tiles are everywhere.
ODD_SIZES = {
    "mamba1": dict(batch=2, dim=5, N=3),
    "mamba2": dict(batch=2, H=3, P=3, G=1, N=5),  # 9 channels, 3 heads per group
    "s4d_zoh": dict(batch=2, dim=5, N=3),
    "s4d_bilinear": dict(batch=1, dim=7, N=5),
    "lru": dict(batch=2, H=5, N=3),
    "s5": dict(batch=2, H=7, N=5),
}
SCHEDULE = dict(block_d=4, chunk=8)  # several programs per batch and several chunks at L=33


def out_shapes(graph, sizes) -> dict:
    return {graph[i].attr("name"): tuple(sizes[a.symbol] for a in graph[i].attr("axes"))
            for i in graph.ids("output")}


def nan_buffers(graph, sizes, dtype, device="cpu") -> dict:
    """A NaN-filled tensor per output (complex outputs complex64), to catch unwritten elements."""
    bufs = {}
    for name, shape in out_shapes(graph, sizes).items():
        cplx = graph[graph.outputs[name]].type.complex
        bufs[name] = torch.full(shape, complex(np.nan, np.nan) if cplx else np.nan, device=device,
                                dtype=torch.complex64 if cplx else dtype)
    return bufs


def torch_inputs(x: dict, dtype=torch.float32, device="cpu") -> dict:
    """Real inputs in `dtype`, complex ones complex64 (what the kernels read)."""
    return {k: torch.from_numpy(v).to(device=device, dtype=torch.complex64 if np.iscomplexobj(v) else
                                      torch.int64 if v.dtype.kind == "i" else dtype) for k, v in x.items()}


def check_written(res: dict, bufs: dict) -> None:
    for name, buf in bufs.items():
        assert res[name] is buf, f"{name}: the preallocated output was not the one returned"
        assert torch.isfinite(torch.view_as_real(buf) if buf.is_complex() else buf).all(), \
            f"{name}: some elements were never written (still NaN)"


def differential(name, L, rng, device="cpu", schedule=SCHEDULE):
    spec = library.get(name)
    ref, tri = ssmc.compile(spec, backend="numpy"), ssmc.compile(spec, backend="triton", schedule=schedule)
    sizes = dict(library.DEFAULT_SIZES[name], **ODD_SIZES[name], L=L)
    x = torch_inputs(random_inputs(ref.graph, sizes, seed=seed_of(rng)), device=device)
    want = ref(**{k: as_numpy(v) for k, v in x.items()})  # float64 on exactly the kernel's inputs
    bufs = nan_buffers(tri.graph, sizes, torch.float32, device)
    got = tri(**x, **bufs)
    check_written(got, bufs)
    assert set(got) == set(want)
    for k in want:
        assert got[k].device.type == torch.device(device).type
        assert_close(got[k], want[k], 1e-5, f"{name} L={L} {k}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("L", [1, 7, 33])
@pytest.mark.parametrize("name", ENTRIES)
def test_triton_matches_numpy(name, L, device, rng):
    differential(name, L, rng, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["mamba1", "s5"])
def test_generated_launch_fills_preallocated_outputs(name, device, rng):
    """The generated module's own `launch` (no ssmc in the loop) writes every output element."""
    fn = ssmc.compile(library.get(name), backend="triton", schedule=SCHEDULE)
    sizes = dict(library.DEFAULT_SIZES[name], **ODD_SIZES[name], L=7)
    x = random_inputs(fn.graph, sizes, seed=seed_of(rng))
    bufs = nan_buffers(fn.graph, sizes, torch.float32, device)
    got = fn.kernel().module.launch(**torch_inputs(x, device=device), **bufs)
    check_written(got, bufs)
    want = ssmc.compile(library.get(name), backend="numpy")(**x)
    for k in want:
        assert_close(got[k], want[k], 1e-5, k)


@pytest.mark.parametrize("backend", ["numpy", "triton"])
def test_numpy_preallocated_outputs_are_filled(backend, rng):
    """NumPy arrays in, NumPy `out=` buffers filled in place and returned (as with torch)."""
    fn = ssmc.compile("mamba1", backend=backend)
    sizes = dict(library.DEFAULT_SIZES["mamba1"], L=7)
    x = random_inputs(fn.graph, sizes, seed=seed_of(rng))
    bufs = {k: np.full(s, np.nan) for k, s in out_shapes(fn.graph, sizes).items()}
    got = fn(**x, **bufs)
    want = ssmc.compile("mamba1", backend="numpy")(**x)
    for k, buf in bufs.items():
        assert got[k] is buf
        assert np.isfinite(buf).all()
        assert_close(buf, want[k], 1e-5, k)


SWEEP = [dict(block_d=bd, chunk=c) for bd in (1, 4, 16) for c in (1, 4, 16)] + [
    dict(block_d=4, chunk=4, layout="tdn"), dict(block_d=2, chunk=8, layout="ntd"),
    dict(block_d=8, chunk=4, layout="tdn", full_tiles=True),
    dict(block_d=8, chunk=4, layout="tdn", full_tiles=True, prefetch=True), dict(block_d=4, chunk=4, prefetch=True)]


@pytest.mark.parametrize("name", ["mamba1", "mamba2", "s5"])
def test_results_do_not_depend_on_schedule(name, rng):
    spec = library.get(name)
    sizes = dict(library.DEFAULT_SIZES[name], **dict(ODD_SIZES[name], batch=1), L=11)  # the interpreter is slow
    ref = ssmc.compile(spec, backend="numpy")
    x = random_inputs(ref.graph, sizes, seed=seed_of(rng))
    want = ref(**x)
    results = []
    for sched in SWEEP:
        got = ssmc.compile(spec, backend="triton", schedule=sched)(**x)
        for k in want:
            assert_close(got[k], want[k], 1e-5, f"{name} {sched} {k}")
        results.append(got)
    for got, sched in zip(results[1:], SWEEP[1:]):  # and against each other, tighter than vs fp64
        for k in want:
            assert rel_err(got[k], results[0][k]) <= 2e-6, f"{name} {sched} {k} differs from {SWEEP[0]}"


def test_full_tiles_load_shared_inputs_over_channels():
    """Schedule.full_tiles widens the loads of B and C (no channel axis) to the channel axis, and only those."""
    plain = ssmc.compile("mamba1", backend="triton", schedule=dict(layout="tdn", block_d=8, chunk=8)).source
    full = ssmc.compile("mamba1", backend="triton",
                        schedule=dict(layout="tdn", block_d=8, chunk=8, full_tiles=True)).source
    widened = [ln.split("#")[-1].strip() for ln in full.splitlines() if "offs_d[None, :, None] * 0" in ln]
    assert sorted(widened) == ["B", "C"]
    assert "offs_d[None, :, None] * 0" not in plain


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name, change", [("mamba1", dict(direction="reverse")), ("mamba1", dict(seq_idx=True)),
                                          ("s5", dict(seq_idx=True)), ("s4d_zoh", dict(direction="reverse"))])
def test_prefetch_loads_the_next_chunk(name, change, device, rng):
    """Schedule.prefetch: every chunk's inputs loaded one chunk ahead — both orders, resets (an integer input),
    complex states, a last chunk past L (L=11, chunk 4) — agree with the NumPy interpreter, NaN-poisoned."""
    spec = library.get(name).with_(name=f"{name}_prefetch", **change)
    sched = dict(block_d=4, chunk=4, layout="tdn", prefetch=True)
    src = ssmc.compile(spec, backend="triton", schedule=sched).source
    assert "_raw = tl.load(" in src and "validn = kn < L" in src
    sizes = dict(library.DEFAULT_SIZES[name], **ODD_SIZES[name], L=11)
    ref = ssmc.compile(spec, backend="numpy")
    x = torch_inputs(random_inputs(ref.graph, sizes, seed=seed_of(rng)), device=device)
    want = ref(**{k: v.cpu().numpy() if v.dtype == torch.int64 else as_numpy(v) for k, v in x.items()})  # float64
    bufs = nan_buffers(ref.graph, sizes, torch.float32, device)
    got = ssmc.compile(spec, backend="triton", schedule=sched)(**x, **bufs)
    check_written(got, bufs)
    for k in want:
        assert_close(got[k], want[k], 1e-5, f"{name} {change} {k}")


MAMBA1_CUDA_SCHEDULES = [dict(layout="tdn", block_d=1, chunk=64, num_warps=1),
                         dict(layout="tdn", block_d=8, chunk=8, num_warps=1, full_tiles=True),
                         dict(layout="tdn", block_d=8, chunk=8, num_warps=1, full_tiles=True, prefetch=True)]


@pytest.mark.gpu
@pytest.mark.parametrize("sched", MAMBA1_CUDA_SCHEDULES, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_mamba1_cuda_schedules_bf16(sched, rng):
    """The schedules the cost model gives Mamba-1 (N 16) on CUDA, at bf16, on partial channel blocks and
    chunks (dim 44, L 100), against the NumPy interpreter on the same bf16 values; NaN-poisoned."""
    ref = ssmc.compile("mamba1", backend="numpy")
    sizes = dict(library.DEFAULT_SIZES["mamba1"], batch=2, dim=44, N=16, L=100)
    x = torch_inputs(random_inputs(ref.graph, sizes, seed=seed_of(rng)), device="cuda")
    x = {k: v.to(torch.bfloat16) if v.dim() == 3 else v for k, v in x.items()}  # the sequences, as Mamba feeds them
    want = ref(**{k: as_numpy(v) for k, v in x.items()})
    bufs = {k: torch.full(s, float("nan"), device="cuda", dtype=torch.bfloat16 if k == "out" else torch.float32)
            for k, s in out_shapes(ref.graph, sizes).items()}  # y in u's dtype, the final state in fp32
    got = ssmc.compile("mamba1", backend="triton", schedule=sched)(**x, **bufs)
    check_written(got, bufs)
    for k in want:
        assert_close(got[k], want[k], 1e-2, f"{sched} {k}")


def test_prefetch_refuses_orders_read_from_an_index():
    """A gather order's time indices come from its index input: Schedule.prefetch says so, naming itself."""
    from ssmc.ops import multi_order_graph
    g = multi_order_graph(2)
    with pytest.raises(ValueError, match="Schedule.prefetch"):
        ssmc.compile(g, backend="triton", schedule=dict(prefetch=True)).source


def _flip_time(graph, x: dict) -> dict:
    """Reverse every time-varying input along its time axis."""
    out = {}
    for i in graph.ids("input"):
        n = graph[i]
        axes = [a.role for a in n.attr("axes")]
        v = x[n.attr("name")]
        out[n.attr("name")] = np.flip(v, axes.index("t")).copy() if "t" in axes else v
    return out


@pytest.mark.parametrize("name", ["mamba1", "s4d_zoh", "mamba2"])
def test_reverse_direction(name, rng):
    """A reverse scan is the forward scan of time-flipped inputs, flipped back; both backends."""
    fwd = library.get(name)
    rev = fwd.with_(direction="reverse")
    sizes = dict(library.DEFAULT_SIZES[name], **ODD_SIZES[name], L=11)
    np_rev, np_fwd = ssmc.compile(rev, backend="numpy"), ssmc.compile(fwd, backend="numpy")
    x = random_inputs(np_rev.graph, sizes, seed=seed_of(rng))
    want = np_rev(**x)
    flipped = np_fwd(**_flip_time(np_fwd.graph, x))
    for k, node in ((k, np_rev.graph[i]) for k, i in np_rev.graph.outputs.items()):
        roles = [a.role for a in node.attr("axes")]
        f = np.flip(flipped[k], roles.index("t")) if "t" in roles else flipped[k]
        assert_close(want[k], f, 1e-12, f"reverse {k} vs flipped forward")
    assert rel_err(want["out"], np_fwd(**x)["out"]) > 1e-2  # the direction does matter
    got = ssmc.compile(rev, backend="triton", schedule=SCHEDULE)(**x)
    for k in want:
        assert_close(got[k], want[k], 1e-5, f"{name} reverse triton {k}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("name", ENTRIES)
def test_half_precision_inputs(name, dtype, device, rng):
    """fp16/bf16 tensors in, same dtype out, within 1e-2 of float64 NumPy on the rounded inputs."""
    spec = library.get(name)
    tri = ssmc.compile(spec, backend="triton", schedule=SCHEDULE)
    sizes = dict(library.DEFAULT_SIZES[name], **ODD_SIZES[name], L=17)
    x = torch_inputs(random_inputs(tri.graph, sizes, seed=seed_of(rng)), dtype, device)
    got = tri(**x)
    assert all(v.device.type == device for v in got.values())
    want = ssmc.compile(spec, backend="numpy")(**{k: as_numpy(v) for k, v in x.items()})
    first = x[tri.graph[tri.graph.ids("input")[0]].attr("name")]
    assert got["out"].dtype == first.dtype  # out has the dtype of the input with its layout
    for k in want:
        assert_close(got[k], want[k], 1e-2, f"{name} {dtype} {k}")


@pytest.mark.parametrize("name", ENTRIES)
def test_numpy_outputs_are_writable_arrays(name, rng):
    """The caller owns its results: fresh, writable, C-contiguous arrays on both backends."""
    for backend in ("numpy", "triton"):
        fn = ssmc.compile(name, backend=backend, schedule=SCHEDULE)
        x = random_inputs(fn.graph, dict(library.DEFAULT_SIZES[name], L=3), seed=seed_of(rng))
        for k, v in fn(**x).items():
            assert isinstance(v, np.ndarray), (backend, k)
            assert v.flags.writeable and v.flags.c_contiguous, (backend, k)
            assert v.dtype in (np.float64, np.complex128, np.float32, np.complex64), (backend, k)
