"""Graphs with several scans and with lags (ssmc.ir.stages): every backend against float64 references
written from the equations with torch (whose autograd gives the reference gradients), on fresh random
inputs, odd sizes and NaN-poisoned outputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import ssmc
from ssmc.backends.onnx import to_onnx
from ssmc.ir import IRError
from ssmc.ir import builder as d
from ssmc.ir.stages import needs_stages, plan
from ssmc.runtime.compiled import optimize

from conftest import DEVICES, assert_close

# --- references, from the equations --------------------------------------------------------------

def scan_ref(a, x, reverse=False, seq=None):
    """h_t = a_t h_{t∓1} + x_t along time (axis 1), h = 0 before the start and at a reset."""
    L = x.shape[1]
    steps = range(L - 1, -1, -1) if reverse else range(L)
    h, out, prev = torch.zeros_like(x[:, 0]), [None] * L, None
    for t in steps:
        decay = a[:, t]
        if seq is not None and prev is not None:
            decay = decay * (seq[:, t] == seq[:, prev]).reshape((-1,) + (1,) * (decay.dim() - 1))
        h = decay * h + x[:, t]
        out[t], prev = h, t
    return torch.stack(out, 1)


def lag_ref(y, k, seq=None):
    """y_{t-k} (k < 0: y_{t+|k|}), 0 outside the sequence and across a reset."""
    L = y.shape[1]
    cols = []
    for t in range(L):
        s = t - k
        ok = 0 <= s < L
        v = y[:, s] if ok else torch.zeros_like(y[:, 0])
        if ok and seq is not None:
            v = v * (seq[:, t] == seq[:, s]).reshape((-1,) + (1,) * (v.dim() - 1))
        cols.append(v)
    return torch.stack(cols, 1)


# --- a chain: a forward scan whose lagged readout feeds a reverse scan -------------------------------

def chain_graph(seq_idx=False):
    m = ssmc.Builder("chain" + ("_resets" if seq_idx else ""))
    u, dt = m.input("u", ("batch", "L", "dim")), m.input("dt", ("batch", "L", "dim"))
    A, B, C = m.input("A", ("dim", "N")), m.input("B", ("batch", "L", "N")), m.input("C", ("batch", "L", "N"))
    seq = m.input("seq_idx", ("batch", "L"), integer=True) if seq_idx else None
    a = d.exp(dt * A)
    y1 = (C * m.scan(a, dt * B * u, seq_idx=seq)).sum("n")
    y2 = (C * m.scan(a, dt * B * m.lag(y1, 1, seq_idx=seq), order="reverse", seq_idx=seq)).sum("n")
    m.output("y", y2 + m.lag(y1, 1, order="reverse", seq_idx=seq) + m.lag(u, 2, seq_idx=seq), ("batch", "L", "dim"))
    m.output("y1", y1, ("batch", "L", "dim"))
    return m.build()


def chain_ref(u, dt, A, B, C, seq_idx=None):
    a = torch.exp(dt[..., None] * A)
    x1 = (dt * u)[..., None] * B[:, :, None]
    y1 = torch.einsum("bln,bldn->bld", C, scan_ref(a, x1, seq=seq_idx))
    x2 = (dt * lag_ref(y1, 1, seq_idx))[..., None] * B[:, :, None]
    y2 = torch.einsum("bln,bldn->bld", C, scan_ref(a, x2, reverse=True, seq=seq_idx))
    return {"y": y2 + lag_ref(y1, -1, seq_idx) + lag_ref(u, 2, seq_idx), "y1": y1}


def chain_inputs(rng, batch=2, L=11, dim=3, N=5, resets=False):
    x = {"u": rng.standard_normal((batch, L, dim)), "dt": rng.uniform(0.05, 0.6, (batch, L, dim)),
         "A": -rng.uniform(0.5, 2.0, (dim, N)), "B": rng.standard_normal((batch, L, N)),
         "C": rng.standard_normal((batch, L, N))}
    if resets:
        x["seq_idx"] = np.sort(rng.integers(0, 3, (batch, L)), axis=1)
    return x


def agrees_with_autograd(graph, arrays, ref, tol=1e-12):
    """Output y and the gradients of every input, on NumPy and Triton (float64 torch tensors on the CPU),
    against `ref(**tensors)` and its autograd."""
    t = {k: torch.tensor(v, requires_grad=True) for k, v in arrays.items()}
    want = ref(**t)
    ct = torch.randn_like(want)
    want_g = torch.autograd.grad((want * ct).sum(), list(t.values()))
    for backend in ("numpy", "triton"):
        out = ssmc.compile(graph, backend=backend)(**t)["y"]
        assert_close(out.detach(), want.detach(), tol, backend)
        for k, gg, ww in zip(t, torch.autograd.grad((out * ct).sum(), list(t.values())), want_g):
            assert_close(gg, ww, tol, f"{backend} grad {k}")


def _ref(fn, arrays):
    t = {k: torch.from_numpy(v) for k, v in arrays.items()}
    return {k: v.numpy() for k, v in fn(**t).items()}


@pytest.mark.parametrize("resets", [False, True])
def test_chain_numpy_and_onnx_match_the_equations(rng, resets):
    x = chain_inputs(rng, L=int(rng.integers(5, 14)), resets=resets)
    g = chain_graph(resets)
    ref = _ref(chain_ref, x)
    res = ssmc.compile(g, backend="numpy")(**x)
    for k in ref:
        assert_close(res[k], ref[k], 1e-12, f"numpy {k}")
    ort = pytest.importorskip("onnxruntime")  # (optional: the GPU machine may lack it)
    model = to_onnx(g, sizes={"dim": 3, "N": 5})
    sess = ort.InferenceSession(model.SerializeToString())
    feed = {k: v if v.dtype == np.int64 else v.astype(np.float32) for k, v in x.items()}
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))
    for k in ref:
        assert_close(outs[k], ref[k], 1e-5, f"onnx {k}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("resets", [False, True])
def test_chain_triton_forward_and_gradients_match_float64_autograd(rng, device, resets):
    x = chain_inputs(rng, batch=3, L=int(rng.integers(5, 14)), dim=3, N=5, resets=resets)
    g = chain_graph(resets)
    leaves = {k: torch.tensor(v, device=device, requires_grad=v.dtype != np.int64) for k, v in x.items()}
    ref = chain_ref(**leaves)
    ct = {k: torch.randn_like(v) for k, v in ref.items()}
    ref_grads = torch.autograd.grad(sum((ref[k] * ct[k]).sum() for k in ref),
                                    [v for v in leaves.values() if v.requires_grad])
    fn = ssmc.compile(g, backend="triton")
    out = fn(**leaves)
    for k in ref:
        assert_close(out[k].detach(), ref[k].detach(), 1e-10, f"triton {k}")
    grads = torch.autograd.grad(sum((out[k] * ct[k]).sum() for k in out),
                                [v for v in leaves.values() if v.requires_grad])
    for name, got, want in zip([k for k, v in leaves.items() if v.requires_grad], grads, ref_grads):
        assert_close(got, want, 1e-9, f"grad {name}")


@pytest.mark.parametrize("device", DEVICES)
def test_chain_triton_fp32_writes_every_output(rng, device):
    x = chain_inputs(rng, batch=2, L=9, dim=5, N=3)
    g = chain_graph()
    ref = _ref(chain_ref, x)
    t = {k: torch.tensor(v, dtype=torch.float32, device=device) for k, v in x.items()}
    outs = {k: torch.full(v.shape, float("nan"), device=device) for k, v in ref.items()}
    res = ssmc.compile(g, backend="triton")(**t, **outs)
    for k in ref:
        assert res[k] is outs[k]
        assert_close(outs[k], ref[k], 2e-5, k)


def test_numpy_backend_gradients_chain_the_steps(rng):
    x = chain_inputs(rng, L=7)
    fn = ssmc.compile(chain_graph(), backend="numpy")
    leaves = {k: torch.tensor(v, requires_grad=True) for k, v in x.items()}
    ref = chain_ref(**leaves)
    ct = {k: rng.standard_normal(v.shape) for k, v in ref.items()}
    want = torch.autograd.grad(sum((ref[k] * torch.from_numpy(ct[k])).sum() for k in ref), list(leaves.values()))
    got = fn.grad(x, ct)
    for name, w in zip(leaves, want):
        assert_close(got[f"grad_{name}"], w, 1e-10, name)


# --- the plan -------------------------------------------------------------------------------------

def test_the_plan_cuts_at_scans_and_lags():
    g, _ = optimize(chain_graph())
    steps = plan(g).steps
    kinds = ["kernel" if s.graph is not None else "lag" for s in steps]
    assert kinds == ["kernel", "lag", "lag", "lag", "kernel"]
    assert [len(s.graph.ids("scan")) for s in steps if s.graph is not None] == [1, 1]
    first = steps[0].graph
    assert set(first.outputs) == {"y1", "ssmc_v11"}  # the user's output and the readout later steps read


def test_single_scan_graphs_take_the_single_kernel_path():
    for name in ssmc.library.ENTRIES:
        g, _ = optimize(ssmc.library.get(name).build())
        assert not needs_stages(g)
        assert ssmc.compile(name, backend="numpy").staged is None


def test_a_value_read_by_two_later_steps_is_computed_once():
    """Two independent scans read one readout: it is materialized once, not recomputed."""
    m = ssmc.Builder("fan")
    u, a = m.input("u", ("batch", "L", "dim")), m.input("a", ("dim",))
    y = m.scan(d.sigmoid(a), u)
    m.output("p", m.scan(d.sigmoid(a), y), ("batch", "L", "dim"))
    m.output("q", m.scan(d.sigmoid(a), y * y, order="reverse"), ("batch", "L", "dim"))
    g, _ = optimize(m.build())
    steps = plan(g).steps
    assert [len(s.graph.ids("scan")) for s in steps] == [1, 1, 1]
    assert sum("ssmc_v" in " ".join(s.graph.outputs) for s in steps) == 1


# --- lags ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("k,order", [(1, "forward"), (3, "forward"), (2, "reverse"), (40, "forward")])
def test_lag_of_inputs_and_of_a_time_invariant_value(rng, k, order):
    m = ssmc.Builder("lags")
    u, w = m.input("u", ("batch", "L", "dim")), m.input("w", ("dim",))
    m.output("y", m.lag(u, k, order=order) * w + m.lag(w, k, order=order), ("batch", "L", "dim"))
    x = {"u": rng.standard_normal((2, 9, 4)), "w": rng.standard_normal(4)}
    kk = k if order == "forward" else -k
    u_t, w_t = torch.from_numpy(x["u"]), torch.from_numpy(x["w"])
    want = lag_ref(u_t, kk) * w_t + lag_ref(w_t.expand(2, 9, 4), kk)
    y_numpy = ssmc.compile(m.build(), backend="numpy")(**x)["y"]
    if k < 9:
        assert_close(y_numpy, want, 1e-12, "numpy")
    else:  # every source lies before the start: all zero
        assert not np.any(y_numpy)
    t = {kx: torch.tensor(v, requires_grad=True) for kx, v in x.items()}
    out = ssmc.compile(m.build(), backend="triton")(**t)["y"]
    if k < 9:
        assert_close(out.detach(), want, 1e-12, "triton")
    else:  # every source lies before the start: all zero
        assert torch.count_nonzero(out) == 0
    ct = torch.randn_like(out)
    got = torch.autograd.grad((out * ct).sum(), list(t.values()))
    tw = {kx: torch.tensor(v, requires_grad=True) for kx, v in x.items()}
    ref = lag_ref(tw["u"], kk) * tw["w"] + lag_ref(tw["w"].expand(2, 9, 4), kk)
    want_g = torch.autograd.grad((ref * ct).sum(), list(tw.values()), allow_unused=True)
    for gg, ww in zip(got, want_g):
        if ww is not None and torch.count_nonzero(ww):
            assert_close(gg, ww, 1e-12, "grad")
        else:
            assert torch.count_nonzero(gg) == 0


def test_hydra_like_graph_one_output_reads_two_scans(rng):
    """Forward and reverse scans of one input, each readout shifted along its own direction."""
    m = ssmc.Builder("two_way")
    u, a, D = m.input("u", ("batch", "L", "dim")), m.input("a", ("batch", "L", "dim")), m.input("D", ("dim",))
    f = m.scan(d.sigmoid(a), u)
    b = m.scan(d.sigmoid(a), u, order="reverse")
    m.output("y", m.lag(f, 1) + m.lag(b, 1, order="reverse") + D * u, ("batch", "L", "dim"))
    x = {"u": rng.standard_normal((2, 8, 3)), "a": rng.standard_normal((2, 8, 3)), "D": rng.standard_normal(3)}
    t = {k: torch.from_numpy(v) for k, v in x.items()}
    s = torch.sigmoid(t["a"])
    want = lag_ref(scan_ref(s, t["u"]), 1) + lag_ref(scan_ref(s, t["u"], reverse=True), -1) + t["D"] * t["u"]
    for backend in ("numpy", "triton"):
        assert_close(ssmc.compile(m.build(), backend=backend)(**x)["y"], want, 1e-6, backend)


# --- refusals -------------------------------------------------------------------------------------------

def test_lag_arguments_are_checked():
    m = ssmc.Builder("bad_lag")
    u = m.input("u", ("batch", "L", "dim"))
    for k in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=r"lag: k must be a positive int"):
            m.lag(u, k)
    with pytest.raises(ValueError, match=r"lag: order must be 'forward' or 'reverse', got 'gather'"):
        m.lag(u, 1, order="gather")


def test_names_like_the_materialized_values_do_not_collide(rng):
    """Inputs and outputs named like a plan's values (ssmc_v<id>) lengthen the plan's prefix."""
    m = ssmc.Builder("named_like_values")
    u, a = m.input("ssmc_v1", ("batch", "L", "dim")), m.input("ssmc_v2", ("batch", "L", "dim"))
    m.output("ssmc_v3", m.lag(m.scan(d.sigmoid(a), u), 1), ("batch", "L", "dim"))
    fn = ssmc.compile(m.build(), backend="triton")
    assert {s.target for s in fn.staged.plan.steps if s.target} == {"ssmc_v_4"}
    x = {"ssmc_v1": rng.standard_normal((2, 5, 3)), "ssmc_v2": rng.standard_normal((2, 5, 3))}
    assert_close(fn(**x)["ssmc_v3"], ssmc.compile(m.build(), backend="numpy")(**x)["ssmc_v3"], 1e-6, "y")


def test_multi_stage_decode_and_backward_graph_say_what_is_missing(rng):
    fn = ssmc.compile(chain_graph(), backend="numpy")
    with pytest.raises(NotImplementedError, match=r"decode \(step\) of a multi-stage graph"):
        fn.step(np.zeros((2, 3, 5)), u=np.zeros((2, 3)))
    with pytest.raises(NotImplementedError, match=r"multi-stage graph's backward is its steps'"):
        fn.backward_graph


def test_lag_of_a_scans_state(rng):
    """y_t = Σ_n B_t h_{t-1}: the state itself crosses steps (materialized over time)."""
    m = ssmc.Builder("lag_state")
    u, a, B = m.input("u", ("batch", "L", "dim")), m.input("a", ("dim", "N")), m.input("B", ("batch", "L", "N"))
    m.output("y", (m.lag(m.scan(d.sigmoid(a), u * B), 1) * B).sum("n"), ("batch", "L", "dim"))
    x = {"u": rng.standard_normal((2, 7, 3)), "a": rng.standard_normal((3, 4)), "B": rng.standard_normal((2, 7, 4))}
    t = {k: torch.tensor(v, requires_grad=True) for k, v in x.items()}
    h = scan_ref(torch.sigmoid(t["a"]).expand(2, 7, 3, 4), t["u"][..., None] * t["B"][:, :, None])
    want = (lag_ref(h, 1) * t["B"][:, :, None]).sum(-1)
    assert_close(ssmc.compile(m.build(), backend="numpy")(**x)["y"], want.detach(), 1e-12, "numpy")
    out = ssmc.compile(m.build(), backend="triton")(**t)["y"]
    assert_close(out.detach(), want.detach(), 1e-12, "triton")
    ct = torch.randn_like(out)
    for k, got, w in zip(t, torch.autograd.grad((out * ct).sum(), list(t.values())),
                         torch.autograd.grad((want * ct).sum(), list(t.values()))):
        assert_close(got, w, 1e-10, f"grad {k}")


@pytest.mark.parametrize("how", ["mean", "sum"])
def test_pool_over_time_modulates_a_scan(rng, how):
    """GroupMamba-style channel modulation: y = readout · sigmoid(w · pool_t(u)), with the pool over time."""
    m = ssmc.Builder("pooled")
    u, a, w = m.input("u", ("batch", "L", "dim")), m.input("a", ("batch", "L", "dim")), m.input("w", ("dim",))
    gate = d.sigmoid(w * m.pool(u, how))
    m.output("y", m.scan(d.sigmoid(a), u) * gate, ("batch", "L", "dim"))
    m.output("pooled", m.pool(u * u, how), ("batch", "dim"))
    L = int(rng.integers(3, 12))
    x = {"u": rng.standard_normal((2, L, 3)), "a": rng.standard_normal((2, L, 3)), "w": rng.standard_normal(3)}

    def ref(u, a, w):
        red = (lambda v: v.mean(1)) if how == "mean" else (lambda v: v.sum(1))
        return {"y": scan_ref(torch.sigmoid(a), u) * torch.sigmoid(w * red(u))[:, None], "pooled": red(u * u)}
    want = _ref(ref, x)
    g = m.build()
    for backend in ("numpy", "triton"):
        got = ssmc.compile(g, backend=backend)(**x)
        for k in want:
            assert_close(got[k], want[k], 1e-6, f"{backend} {k}")
    ort = pytest.importorskip("onnxruntime")  # (optional: the GPU machine may lack it)
    sess = ort.InferenceSession(to_onnx(g, sizes={"dim": 3}).SerializeToString())
    feed = {k: v.astype(np.float32) for k, v in x.items()}
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))
    for k in want:
        assert_close(outs[k], want[k], 1e-5, f"onnx {k}")
    t = {k: torch.tensor(v, requires_grad=True) for k, v in x.items()}
    out, r = ssmc.compile(g, backend="triton")(**t), ref(**t)
    cts = {k: torch.randn_like(v) for k, v in r.items()}
    got = torch.autograd.grad(sum((out[k] * cts[k]).sum() for k in out), list(t.values()))
    want_g = torch.autograd.grad(sum((r[k] * cts[k]).sum() for k in r), list(t.values()))
    for k, gg, ww in zip(t, got, want_g):
        assert_close(gg, ww, 1e-10, f"grad {k}")


def test_pool_of_a_time_invariant_value_is_refused():
    m = ssmc.Builder("bad_pool")
    w = m.input("w", ("dim",))
    m.output("y", m.pool(w) * m.input("u", ("batch", "L", "dim")), ("batch", "L", "dim"))
    with pytest.raises(IRError, match=r"pool: the operand r\[h\] does not vary over time"):
        ssmc.compile(m.build(), backend="numpy")
    with pytest.raises(ValueError, match=r"pool: how must be 'mean' or 'sum', got 'max'"):
        m.pool(w, "max")


def test_gradient_of_a_scan_less_step_that_sums_channels(rng):
    """A scan-less step with a sum over h and a group-merged output: its gradient (an elementwise Triton
    kernel, the sums over broadcast axes left to the runtime except those a forward sum also runs over)."""
    m = ssmc.Builder("merged")
    u, w, c = m.input("u", ("batch", "L", "H")), m.input("w", ("H",)), m.input("c", ("batch", "L", "G"))
    m.output("y", (m.lag(u, 1) * w).sum("h") * c, ("batch", "L", "G"))
    H, G, L = 4, 2, int(rng.integers(3, 9))
    x = {"u": rng.standard_normal((2, L, H)), "w": rng.standard_normal(H), "c": rng.standard_normal((2, L, G))}

    def ref(u, w, c):  # the output sums the H/G heads of each group, which all hold s · c_g
        return (H // G) * (lag_ref(u, 1) * w).sum(-1)[..., None] * c
    agrees_with_autograd(m.build(), x, ref)


def test_causal_conv_with_a_per_sample_filter(rng):
    """y_t = Σ_{k≤t} w_k x_{t-k}, the filter itself an input over (batch, L, dim), and a short filter (zero
    past its 3 taps): NumPy, Triton (FFT on the device) and gradients against a tap-by-tap loop."""
    m = ssmc.Builder("conv")
    x, w = m.input("x", ("batch", "L", "dim")), m.input("w", ("batch", "L", "dim"))
    m.output("y", m.causal_conv(x, w), ("batch", "L", "dim"))
    L = int(rng.integers(4, 12))
    arrays = {"x": rng.standard_normal((2, L, 3)), "w": rng.standard_normal((2, L, 3))}
    arrays["w"][:, 3:] = 0.0

    def ref(x, w):
        return torch.stack([sum(w[:, k] * x[:, t - k] for k in range(t + 1)) for t in range(L)], 1)
    agrees_with_autograd(m.build(), arrays, ref)


def test_causal_conv_refuses_a_filter_without_time():
    m = ssmc.Builder("bad_conv")
    x, w = m.input("x", ("batch", "L", "dim")), m.input("w", ("dim",))
    m.output("y", m.causal_conv(x, w), ("batch", "L", "dim"))
    with pytest.raises(IRError, match=r"causal_conv: the filter r\[h\] must vary over time"):
        ssmc.compile(m.build(), backend="numpy")
