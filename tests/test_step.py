"""Decode forms: prefill + single steps equal the full scan; selective_state_update; state errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import ssmc
from ssmc import IRError, library, ops
from ssmc.ir.inits import random_inputs
from ssmc.ir.passes.step import single_step, stateful

from conftest import DEVICES, assert_close

ENTRIES = sorted(library.ENTRIES)


def _time_axis(graph, name):
    axes = graph[graph.inputs[name]].attr("axes") if name in graph.inputs else graph[graph.outputs[name]].attr("axes")
    return next((k for k, a in enumerate(axes) if a.role == "t"), None)


def _tokens(graph, x, a, b):
    """Inputs restricted to time steps [a, b); b = None gives the single step a, without the time axis."""
    out = {}
    for k, v in x.items():
        ax = _time_axis(graph, k)
        if ax is None:
            out[k] = v
        elif b is None:
            out[k] = np.take(v, a, axis=ax)
        else:
            out[k] = np.take(v, np.arange(a, b), axis=ax)
    return out


@pytest.mark.parametrize("backend", ["numpy", "triton"])
@pytest.mark.parametrize("name", ENTRIES)
def test_prefill_then_steps_equal_full_scan(name, backend, rng):
    """k tokens with the multi-token form, then single steps, against one full run on the other backend."""
    spec = library.get(name)
    f = ssmc.compile(spec, backend)
    L, k = 9, 5
    sizes = dict(library.DEFAULT_SIZES[name], L=L)
    x = random_inputs(f.graph, sizes, seed=int(rng.integers(2 ** 31)))
    full = ssmc.compile(spec, "triton" if backend == "numpy" else "numpy")(**x)
    st = stateful(f.trace[0][1])
    node = st[st.inputs["state"]]
    shape = tuple(sizes[a.symbol] for a in node.attr("axes"))
    dtype = (np.complex128 if node.attr("complex") else np.float64) if backend == "numpy" else (
        np.complex64 if node.attr("complex") else np.float32)
    h0 = x.pop("initial_states", None)
    state = np.zeros(shape, dtype) if h0 is None else h0.astype(dtype)
    ys = [f.step(state, **_tokens(f.graph, x, 0, k))["out"]]
    for t in range(k, L):
        ys.append(np.expand_dims(f.step(state, **_tokens(f.graph, x, t, None))["out"], _time_axis(f.graph, "out")))
    assert_close(np.concatenate(ys, axis=_time_axis(f.graph, "out")), full["out"], 1e-5, f"{name} out")
    final = full.get("last_state", full.get("final_states"))
    if final is not None:
        assert_close(state, final, 1e-5, f"{name} state")


def test_single_step_graph_has_no_time_axis_or_loop():
    g = single_step(library.get("mamba1").build())
    assert all(a.role != "t" for i in g.ids("input") + g.ids("output") for a in g[i].attr("axes"))
    assert not g.ids("scan")
    src = ssmc.compile(g, "triton").source
    assert "for k0 in range" not in src and "state_out_ptr" in src


def test_reverse_scan_has_no_decode_form():
    with pytest.raises(IRError, match="reverse.*no decode form"):
        stateful(library.get("mamba1").with_(direction="reverse").build())


def _ssu_reference(state, x, dt, A, B, C, D, z, dt_bias, softplus):
    """mamba_ssm's selective_state_update, written out in float64."""
    state, x, dt = state.astype(np.float64), x.astype(np.float64), dt.astype(np.float64)
    if dt_bias is not None:
        dt = dt + dt_bias
    if softplus:
        dt = np.logaddexp(0.0, dt)
    if state.ndim == 4:  # heads: B, C (batch, G, N) shared by H // G heads
        rep = A.shape[0] // B.shape[1]
        B, C = np.repeat(B, rep, axis=1)[:, :, None], np.repeat(C, rep, axis=1)[:, :, None]
    else:
        B, C = B[:, None], C[:, None]
    state = state * np.exp(dt[..., None] * A) + dt[..., None] * B * x[..., None]
    out = (state * C).sum(-1)
    if D is not None:
        out = out + D * x
    if z is not None:
        out = out * z / (1 + np.exp(-z))
    return out, state


@pytest.mark.parametrize("heads", [False, True])
@pytest.mark.parametrize("optional", [(True, True, True, True), (False, False, False, False),
                                      (True, False, True, False)])
@pytest.mark.parametrize("backend", ["numpy", "triton"])
def test_selective_state_update(heads, optional, backend, rng):
    has_D, has_z, has_bias, softplus = optional
    b, H, P, N, G = 3, 4, 3, 5, 2
    ch = (H, P) if heads else (7,)
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)
    state, x, dt = f32(b, *ch, N), f32(b, *ch), np.abs(f32(b, *ch)) * 0.3
    A = -np.exp(f32(*ch, N) * 0.5)
    B, C = (f32(b, G, N), f32(b, G, N)) if heads else (f32(b, N), f32(b, N))
    D, z, bias = (f32(*ch) if has_D else None), (f32(b, *ch) if has_z else None), (0.1 * f32(*ch) if has_bias else None)
    want_out, want_state = _ssu_reference(state, x, dt, A, B, C, D, z, bias, softplus)
    s = state.copy()
    out = ops.selective_state_update(s, x, dt, A, B, C, D, z, bias, softplus, backend=backend)
    assert_close(out, want_out, 1e-5, "out")
    assert_close(s, want_state, 1e-5, "state (in place)")


@pytest.mark.parametrize("device", DEVICES)
def test_selective_state_update_torch_in_place(device):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g).to(device)
    state, x, dt, A, B, C = r(2, 4, 3, 8), r(2, 4, 3), r(2, 4, 3).abs(), -r(4, 3, 8).abs(), r(2, 2, 8), r(2, 2, 8)
    before = state.clone()
    out = ops.selective_state_update(state, x, dt, A, B, C, dt_softplus=True, backend="triton")
    ref_out, ref_state = _ssu_reference(*(t.cpu().numpy() for t in (before, x, dt, A, B, C)), None, None, None, True)
    assert out.device == state.device and out.dtype == x.dtype
    assert_close(out.cpu(), ref_out, 1e-5, "out")
    assert_close(state.cpu(), ref_state, 1e-5, "state updated in place")


def test_state_errors_name_state():
    x, dt, A, B, C = (np.ones((2, 4), np.float32), np.ones((2, 4), np.float32), -np.ones((4, 8), np.float32),
                      np.ones((2, 8), np.float32), np.ones((2, 8), np.float32))
    with pytest.raises(ValueError, match=r"state: expected shape \(batch, dim, N\)"):
        ops.selective_state_update(np.zeros((2, 4, 7), np.float32), x, dt, A, B, C, backend="numpy")
    with pytest.raises(ValueError, match="state: expected shape"):
        ops.selective_state_update(np.zeros((2, 4), np.float32), x, dt, A, B, C, backend="numpy")
    with pytest.raises(TypeError, match="state: expected a float tensor"):
        ops.selective_state_update(torch.zeros(2, 4, 8, dtype=torch.int64), *map(torch.from_numpy, (x, dt, A, B, C)))
    read_only = np.zeros((2, 4, 8), np.float32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="state: must be writable"):
        ops.selective_state_update(read_only, x, dt, A, B, C, backend="numpy")


@pytest.mark.parametrize("backend", ["numpy", "triton"])
def test_strided_state_is_updated_through_its_view(backend):
    """A state that is a transposed view (no copy can be updated in place) is updated through the view."""
    rng = np.random.default_rng(3)
    x, dt, B, C = (rng.standard_normal(s).astype(np.float32) for s in ((2, 4), (2, 4), (2, 8), (2, 8)))
    A = -rng.uniform(0.1, 1, (4, 8)).astype(np.float32)
    args = [torch.from_numpy(v) for v in (x, np.abs(dt), A, B, C)]
    dense, strided = torch.ones(2, 4, 8), torch.ones(2, 8, 4).transpose(1, 2)
    want = ops.selective_state_update(dense, *args, backend=backend)
    got = ops.selective_state_update(strided, *args, backend=backend)
    assert torch.allclose(got, want) and torch.allclose(strided, dense)
    arr = np.ones((2, 8, 4), np.float32).transpose(0, 2, 1)
    ops.selective_state_update(arr, x, np.abs(dt), A, B, C, backend=backend)
    assert np.allclose(arr, dense.numpy(), atol=1e-6)
