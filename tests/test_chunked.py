"""The chunked (SSD, tensor-core) Triton lowering against the NumPy interpreter, and the cost model.

On CPU the kernels run under Triton's interpreter (tl.dot in NumPy); `-m gpu` runs the same
checks on CUDA, where the dots run on tensor cores (3xTF32 for fp32 inputs, bf16 for bf16).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import ssmc
from ssmc import library
from ssmc.backends.triton import ChunkedSchedule
from ssmc.backends.triton.ssd import chunked_reason
from ssmc.backends.triton.strategy import choose
from ssmc.export import OP_FORMS
from ssmc.ir import IRError
from ssmc.ir.inits import random_inputs

from conftest import DEVICES, assert_close, seed_of

SPECS = {
    "mamba2": library.get("mamba2"),
    "ssd_full": OP_FORMS["ssd"][0],  # D (H,), z, dt_bias, softplus, initial state, final state
    "ssd_hp_limit": library.get("mamba2").with_(name="ssd_hp_limit", skip="hp", dt_limit=(0.01, 0.5), h0=False),
    "ssd_bare": library.get("mamba2").with_(name="ssd_bare", skip=None, gate=None, dt_bias=False, h0=False,
                                            final_state=False, groups=False),
    "ssd_packed": library.get("mamba2").with_(name="ssd_packed", seq_idx=True),  # resets where seq_idx changes
    # the reverse order (Hydra's backward direction): the time index L-1-k folded into every load and store
    "ssd_full_reverse": OP_FORMS["ssd"][0].with_(name="ssd_full_reverse", direction="reverse"),
    "ssd_packed_reverse": library.get("mamba2").with_(name="ssd_packed_reverse", seq_idx=True, direction="reverse"),
}
SIZES = dict(batch=2, H=3, P=20, G=3, N=9)  # P and N not multiples of the 16-wide tiles


def _run(spec, sizes, schedule, device, rng, dtype=torch.float32):
    ref = ssmc.compile(spec, backend="numpy")
    tri = ssmc.compile(spec, backend="triton", schedule=schedule)
    x = random_inputs(ref.graph, sizes, seed=seed_of(rng))
    want = ref(**x)
    t = {k: torch.tensor(v, device=device).to(dtype if v.dtype.kind == "f" else torch.int64) for k, v in x.items()}
    outs = {}
    for name, i in tri.graph.outputs.items():  # NaN-poisoned: every element must be written
        shape = tuple(sizes[a.symbol] for a in tri.graph[i].attr("axes"))
        last = tri.graph[tri.graph[i].args[0]].op == "last"
        outs[name] = torch.full(shape, float("nan"), device=device, dtype=torch.float32 if last else dtype)
    got = tri(**t, **outs)
    return got, want


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(SPECS))
@pytest.mark.parametrize("L", [1, 15, 16, 17, 45])
def test_chunked_matches_reference(name, L, device, rng):
    sizes = {**SIZES, "L": L}
    if name == "ssd_bare":
        sizes.pop("G")
    got, want = _run(SPECS[name], sizes, ChunkedSchedule(chunk=16, block_p=16), device, rng)
    for k, ref in want.items():
        assert_close(got[k], ref, 1e-5, f"{name} L={L} {k}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("schedule", [ChunkedSchedule(chunk=16, block_p=32), ChunkedSchedule(chunk=32, block_p=16),
                                      ChunkedSchedule(chunk=64, block_p=64, num_warps=8)])
def test_schedules_do_not_change_results(schedule, device, rng):
    got, want = _run(OP_FORMS["ssd"][0], {**SIZES, "L": 70}, schedule, device, rng)
    for k, ref in want.items():
        assert_close(got[k], ref, 1e-5, f"{schedule} {k}")


@pytest.mark.gpu
def test_chunked_bf16_on_cuda(rng):
    got, want = _run(OP_FORMS["ssd"][0], dict(batch=2, L=300, H=4, P=64, G=1, N=64), ChunkedSchedule(), "cuda",
                     rng, dtype=torch.bfloat16)
    for k, ref in want.items():
        assert_close(got[k], ref, 2e-2, f"bf16 {k}")


@pytest.mark.gpu
def test_ssd_op_takes_the_chunked_lowering_on_cuda(rng):
    """ssmc.ops.ssd on CUDA at a Mamba-2 shape goes through the chunked kernel and agrees."""
    from ssmc.ops import ssd
    spec = OP_FORMS["ssd"][0]
    sizes = dict(batch=2, L=200, H=4, P=64, G=2, N=32)
    ref = ssmc.compile(spec, backend="numpy")
    x = random_inputs(ref.graph, sizes, seed=seed_of(rng))
    want = ref(**x)
    t = {k: torch.tensor(v, device="cuda", dtype=torch.float32) for k, v in x.items()}
    out, final = ssd(t["x"], t["dt"], t["A"], t["B"], t["C"], 64, D=t["D"], z=t["z"], dt_bias=t["dt_bias"],
                     initial_states=t["initial_states"], dt_softplus=True, return_final_states=True)
    assert_close(out, want["out"], 1e-5, "out")
    assert_close(final, want["final_states"], 1e-5, "final_states")
    roles = dict(b=2, t=200, h=4, p=64, n=32, g=2)
    assert choose(ref.graph, roles, "cuda")[0] == "chunked"


def test_cost_model():
    big = dict(b=4, t=2048, h=64, p=64, n=128, g=1)
    g2 = ssmc.compile("mamba2").graph
    assert choose(g2, big, "cuda")[0] == "chunked"
    assert "tensor cores (CUDA)" in choose(g2, big, "cpu")[1]
    assert "below 16" in choose(g2, {**big, "p": 3}, "cuda")[1]
    assert "shorter than one chunk" in choose(g2, {**big, "t": 20}, "cuda")[1]
    assert "float64" in choose(g2, big, "cuda", acc="float64")[1]
    g1 = ssmc.compile("mamba1").graph
    kind, why = choose(g1, dict(b=4, t=2048, h=4096, n=16), "cuda")
    assert kind == "associative" and "not a scalar-per-head state" in why
    assert choose(ssmc.compile("s5").graph, big, "cuda")[0] == "sequential"
    packed = ssmc.compile(library.get("mamba2").with_(name="packed", seq_idx=True)).graph
    assert choose(packed, big, "cuda")[0] == "chunked"  # resets are masks inside the chunk
    rev = ssmc.compile(library.get("mamba2").with_(name="rev", direction="reverse"))
    assert choose(rev.graph, big, "cuda")[0] == "chunked"  # the time index L-1-k folded into the chunks
    from ssmc.backends.triton.strategy import choose_backward  # and into the chunked backward's
    assert choose_backward(rev.backward_graph, big, "cuda")[0] == "chunked"


def test_default_recurrent_schedule_on_cuda():
    import ssmc.backends.triton as tb
    for b, h in ((4, 4096), (1, 4096), (8, 384)):  # Mamba-1 sizes: one channel per program, time first
        s = tb.default_schedule(dict(b=b, t=2048, h=h, n=16), "cuda")
        assert (s.layout, s.block_d, s.chunk, s.num_warps) == ("tdn", 1, 64, 1)
    assert tb.default_schedule(dict(b=4, t=2048, h=64, n=1), "cuda").chunk == 1024  # first-order: long chunks


def test_selective_scans_with_many_channels_take_full_tiles_on_cuda():
    """8 channels per one-warp program, B and C loaded as full tiles, once batch x channels fill the GPU."""
    from ssmc.backends.triton.strategy import SELECTIVE_MIN_CHANNELS, choose_schedule
    g1 = ssmc.compile("mamba1").graph
    many = choose_schedule(g1, dict(b=4, t=2048, h=4096, n=16), "cuda")
    assert (many.layout, many.block_d, many.chunk, many.num_warps, many.full_tiles) == ("tdn", 8, 8, 1, True)
    assert 4 * 4096 >= SELECTIVE_MIN_CHANNELS > 1 * 4096
    for g, roles, device in ((g1, dict(b=1, t=2048, h=4096, n=16), "cuda"),  # few channels: one per program
                             (g1, dict(b=4, t=2048, h=4096, n=16), "cpu"),
                             (g1, dict(b=4, t=2048, h=4096, n=64), "cuda"),  # a large state
                             (ssmc.compile("s4d_zoh").graph, dict(b=4, t=2048, h=4096, n=16), "cuda"),  # LTI
                             (ssmc.compile(library.get("mamba1").with_(name="cplx", state="diag_complex",
                                                                       A="s4d")).graph,
                              dict(b=4, t=2048, h=4096, n=16), "cuda")):  # a complex state: not measured
        assert not choose_schedule(g, roles, device).full_tiles


def test_forcing_chunked_on_a_graph_without_the_structure_names_why():
    with pytest.raises(IRError, match="no chunked lowering: not a scalar-per-head state"):
        ssmc.compile("mamba1", backend="triton", schedule=ChunkedSchedule()).kernel()
    assert chunked_reason(ssmc.compile("s4d_zoh").graph) == "complex state"


@pytest.mark.parametrize("field, value", [("chunk", 8), ("block_p", 24)])
def test_schedule_checks(field, value):
    with pytest.raises(ValueError, match=f"ChunkedSchedule.{field} must be a power of two >= 16"):
        ChunkedSchedule(**{field: value})


def test_generated_source_reads_like_the_math():
    src = ssmc.compile("mamba2", backend="triton", schedule=ChunkedSchedule()).source
    assert "tl.exp(tl.where(causal, cum[:, None] - cum[None, :], float('-inf')))" in src  # mask before exp
    assert src.count("_dot(") >= 5 and "tl.log(tl.exp(" not in src  # log Ā taken from its expression
    assert all(w in src for w in ("tl.cumsum", "state = tl.exp(total) * state"))


def test_autotune_picks_a_schedule_and_caches_it(rng, capsys):
    """schedule="autotune": the first call at new sizes times candidates (progress on stderr) and
    stores the winner on disk; a new compile finds it there; results match the reference."""
    spec = library.get("mamba1")
    ref = ssmc.compile(spec, backend="numpy")
    x = random_inputs(ref.graph, dict(batch=1, dim=3, N=4, L=9), seed=seed_of(rng))
    t = {k: torch.tensor(v, dtype=torch.float32) for k, v in x.items()}
    got = ssmc.compile(spec, backend="triton", schedule="autotune")(**t)
    assert "ssmc: tuned mamba1" in capsys.readouterr().err
    for k, want in ref(**x).items():
        assert_close(got[k], want, 1e-5, k)
    again = ssmc.compile(spec, backend="triton", schedule="autotune")(**t)
    assert "tuning" not in capsys.readouterr().err  # from the cache
    assert_close(again["out"], got["out"], 1e-6, "cached")
    with pytest.raises(ValueError, match="schedule: expected a Schedule"):
        ssmc.compile(spec, backend="triton", schedule="fast")


@pytest.mark.parametrize("device", DEVICES)
def test_chunked_resets_at_chunk_edges_and_repeated_ids(device, rng):
    """seq_idx changes right at chunk edges, twice in one chunk, and back to an earlier id: each
    change starts a new sequence (the reference resets wherever seq_idx differs from the step before)."""
    spec = library.get("mamba2").with_(name="ssd_packed", seq_idx=True)
    ref = ssmc.compile(spec, backend="numpy")
    tri = ssmc.compile(spec, backend="triton", schedule=ChunkedSchedule(chunk=16, block_p=16))
    sizes = dict(batch=2, L=50, H=2, P=17, G=1, N=16)
    x = random_inputs(ref.graph, sizes, seed=seed_of(rng))
    seq = np.zeros((2, 50), np.int64)
    seq[0, 16:] = 1      # at a chunk edge
    seq[0, 20:23] = 2    # twice inside one chunk
    seq[0, 23:] = 1      # back to an earlier id: still a new sequence
    seq[1, 1:] = 5       # right after the first step
    seq[1, 32:] = 6      # at the next chunk edge
    x["seq_idx"] = seq
    want = ref(**x)
    got = tri(**{k: torch.tensor(v, device=device) if v.dtype.kind == "i" else
                 torch.tensor(v, device=device, dtype=torch.float32) for k, v in x.items()})
    for k, r in want.items():
        assert_close(got[k], r, 1e-5, k)
