"""Regressions for graphs the verifier accepted and the Triton backend computed wrong (issue 25), each
against a float64 loop written from its equations, on fresh random inputs and odd sizes."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import ssmc
from ssmc.ir import builder as d

from conftest import rel_err


def _scan_graph(name):
    """h[b,t,h,p] = sigmoid(a) h[b,t-1,h,p] + x over inputs a[b,t,h], x[b,t,h,p] (h_{-1} = 0)."""
    m = ssmc.Builder(name)
    a, x = m.input("a", ["batch", "L", "H"]), m.input("x", ["batch", "L", "H", "P"])
    return m, m.scan(d.sigmoid(a), x)


def _scan_loop(a, x):
    decay = 1 / (1 + np.exp(-a))
    h, hs = np.zeros(x.shape[:1] + x.shape[2:]), []
    for t in range(x.shape[1]):
        h = decay[:, t, :, None] * h + x[:, t]
        hs.append(h)
    return np.stack(hs, axis=1)  # (batch, L, H, P)


def _inputs(rng, batch=2, L=7, H=6, P=3):
    return {"a": rng.standard_normal((batch, L, H)), "x": rng.standard_normal((batch, L, H, P))}


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # Triton: the GPU where there is one


def _torch(arrays):
    return {k: torch.from_numpy(v).to(DEVICE) for k, v in arrays.items()}


def _triton(graph, arrays):
    return {k: v.cpu().numpy() for k, v in ssmc.compile(graph, backend="triton")(**_torch(arrays)).items()}


def _read_out(channel, size, seed):
    """y[b,t,<channel>,p] = sum over the channels h that map to each entry of c[b,t,<channel>] h[b,t,h,p]."""
    m, h = _scan_graph(f"merge_{channel}")
    symbol = f"{'G' if channel == 'g' else 'R'}:{channel}"
    c = m.input("c", ["batch", "L", symbol])
    m.output("y", h * c, ["batch", "L", symbol, "P"])
    rng = np.random.default_rng(seed)
    arrays = {**_inputs(rng), "c": rng.standard_normal((2, 7, size))}
    return m.build(), arrays, _scan_loop(arrays["a"], arrays["x"])


@pytest.mark.parametrize("G", [1, 2, 3])
def test_output_over_groups_sums_each_group(G):
    """An output over the group axis sums the H/G channels of each group (channel h is in group
    h // (H/G)); Triton kept only each group's last channel."""
    graph, arrays, hs = _read_out("g", G, G)
    c = np.repeat(arrays["c"], 6 // G, axis=2)
    want = (hs * c[..., None]).reshape(2, 7, G, 6 // G, 3).sum(axis=3)
    assert rel_err(_triton(graph, arrays)["y"], want) < 1e-5


@pytest.mark.parametrize("R", [1, 2, 3])
def test_output_over_shared_blocks_with_p_sums_the_blocks(R):
    """An output over the shared-block axis sums the channels h with h % R == r; with a p axis Triton's
    answer had relative error 1."""
    graph, arrays, hs = _read_out("r", R, 10 + R)
    c = np.concatenate([arrays["c"]] * (6 // R), axis=2)
    want = (hs * c[..., None]).reshape(2, 7, 6 // R, R, 3).sum(axis=2)
    assert rel_err(_triton(graph, arrays)["y"], want) < 1e-5


def test_channel_mixing_after_the_scan():
    """y[b,t,p] = sum_h W[h,p] h[b,t,h,p] (a dense mixing weight fused after a per-channel scan, as in GSS
    or ConvS5): Triton's answer had relative error 1.2-1.6."""
    m, h = _scan_graph("mix")
    w = m.input("W", ["H", "P"])
    m.output("y", (h * w).sum("h"), ["batch", "L", "P"])
    rng = np.random.default_rng(5)
    arrays = {**_inputs(rng, H=5), "W": rng.standard_normal((5, 3))}
    want = np.einsum("bthp,hp->btp", _scan_loop(arrays["a"], arrays["x"]), arrays["W"])
    assert rel_err(_triton(m.build(), arrays)["y"], want) < 1e-5


def test_group_symbol_only_in_an_output_is_refused_naming_it():
    """A group axis no input gives has no size: bind() raised KeyError: 'G'; now the verifier says so."""
    m = ssmc.Builder("orphan")
    a, x = m.input("a", ["batch", "L"]), m.input("x", ["batch", "L"])
    m.output("y", m.scan(d.sigmoid(a), x), ["batch", "L", "G:g"])
    with pytest.raises(ssmc.IRError, match="G"):
        ssmc.compile(m.build(), backend="numpy")


@pytest.mark.parametrize("first", ["import triton", "import torch; torch.compile(lambda x: x + 1)(torch.ones(2))"])
def test_triton_imported_before_ssmc_on_cpu(first):
    """On CPU, triton imported first (torch.compile imports it) had its library defined for a GPU, and
    every kernel failed under the interpreter; ssmc now redefines it for the interpreter as it loads."""
    if torch.cuda.is_available():
        pytest.skip("the interpreter switch is a CPU-only matter")
    code = f"""{first}
import torch, ssmc
from ssmc import ops
g = torch.Generator().manual_seed(0)
u, delta = torch.randn(2, 3, 7, generator=g, dtype=torch.float64), torch.rand(2, 3, 7, generator=g, dtype=torch.float64)
A = -torch.rand(3, 4, generator=g, dtype=torch.float64)
B, C = torch.randn(2, 4, 7, generator=g, dtype=torch.float64), torch.randn(2, 4, 7, generator=g, dtype=torch.float64)
u.requires_grad_()
y = ops.selective_scan(u, delta, A, B, C, backend="triton")
want = ops.selective_scan(u.detach(), delta, A, B, C, backend="numpy")
assert float((y - want).abs().max()) < 1e-12
y.sum().backward()
print("ok")
"""
    env = {k: v for k, v in __import__("os").environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


def test_channel_mixing_backward_matches_numpy():
    """The derived backward of the mixing graph (dW sums over batch and time) on Triton agrees with NumPy's,
    which the fuzzer holds to central differences."""
    m, h = _scan_graph("mix_grad")
    w = m.input("W", ["H", "P"])
    m.output("y", (h * w).sum("h"), ["batch", "L", "P"])
    rng = np.random.default_rng(6)
    arrays = {**_inputs(rng, H=5), "W": rng.standard_normal((5, 3))}
    cts = {"y": rng.standard_normal((2, 7, 3))}
    want = ssmc.compile(m.build(), backend="numpy").grad(arrays, cts)
    got = ssmc.compile(m.build(), backend="triton").grad(_torch(arrays), _torch(cts))
    for k in want:
        assert rel_err(got[k], want[k]) < 1e-10, k


def test_partial_channel_sum_broadcast_by_the_output_is_refused():
    """y[b,t,h,p] = sum_p h[b,t,h,p]: the output broadcasts the sum over p again, so no lane can write its
    part with an atomic add (that gave each p its own term); refused, naming the sum, before any kernel."""
    m, h = _scan_graph("rebroadcast")
    m.output("y", h.sum("p"), ["batch", "L", "H", "P"])
    arrays = _inputs(np.random.default_rng(7))
    want = np.broadcast_to(_scan_loop(**arrays).sum(axis=3, keepdims=True), (2, 7, 6, 3))
    assert rel_err(ssmc.compile(m.build(), backend="numpy")(**arrays)["y"], want) < 1e-12
    with pytest.raises(ssmc.IRError, match=r"sum over p"):
        ssmc.compile(m.build(), backend="triton")(**_torch(arrays))


def test_backward_of_a_state_without_n_read_out_over_n():
    """A reverse scan whose state has no n axis, read out by an n-wide C and summed over h, with an output
    that broadcasts over H: the backward kernel's checkpoints took an n axis the state lacks and the
    interpreter failed to broadcast; its gradients now agree with NumPy's."""
    m = ssmc.Builder("no_n_state")
    a, x = m.input("a", ["L", "batch"]), m.input("x", ["batch", "L", "H"])
    h = m.scan(d.exp(-d.softplus(a)), d.sigmoid(x), order="reverse")
    c = m.input("c", ["N", "batch"])
    m.output("y", (h * c).sum("h"), ["L", "N", "batch", "H"])
    rng = np.random.default_rng(8)
    arrays = {"a": rng.standard_normal((6, 2)), "x": rng.standard_normal((2, 6, 3)), "c": rng.standard_normal((5, 2))}
    cts = {"y": rng.standard_normal((6, 5, 2, 3))}
    want = ssmc.compile(m.build(), backend="numpy").grad(arrays, cts)
    got = ssmc.compile(m.build(), backend="triton").grad(_torch(arrays), _torch(cts))
    for k in want:
        assert rel_err(got[k], want[k]) < 1e-10, k
