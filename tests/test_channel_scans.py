"""Scans along the channels (`m.scan(..., along="channels")`): the recurrence runs over the channel axis,
each time step with its own state (MambaMixer's channel mixer).  A step of its own on Triton, whose roles
t and h trade places (ssmc.ir.stages); against a float64 torch loop over the channels, whose autograd gives
the reference gradients."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import ssmc
from ssmc.backends.onnx import to_onnx
from ssmc.ir import builder as d

from conftest import DEVICES, assert_close


def channel_graph(order="forward", time_scan=False):
    m = ssmc.Builder("channels")
    u = m.input("u", ("batch", "L", "dim"))
    if time_scan:  # a time scan first: its output feeds the channel scan
        u = m.scan(d.sigmoid(m.input("a_t", ("batch", "L", "dim"))), u)
    dt = d.softplus(m.input("dt", ("batch", "L", "dim")))
    A = -d.exp(m.input("A_log", ("L", "N")))
    B, C = m.input("B", ("batch", "dim", "N")), m.input("C", ("batch", "dim", "N"))
    h = m.scan(d.exp(dt * A), dt * B * u, order=order, along="channels")
    m.output("y", (C * h).sum("n") + u, ("batch", "L", "dim"))
    return m.build()


def loop_ref(u, dt, A_log, B, C, order="forward", a_t=None):
    """h over channels c (ascending, or descending for "reverse"), one per (batch, time step):
    h = e^{Δ A_t} h + Δ B_c u_c, y_c = C_c·h + u_c; with a_t, u is first h_t = σ(a_t) h_{t-1} + u_t."""
    if a_t is not None:
        acc, rows = torch.zeros_like(u[:, 0]), []
        for t in range(u.shape[1]):
            acc = torch.sigmoid(a_t[:, t]) * acc + u[:, t]
            rows.append(acc)
        u = torch.stack(rows, 1)
    dt = torch.nn.functional.softplus(dt)
    A = -torch.exp(A_log)
    channels = range(u.shape[2]) if order == "forward" else range(u.shape[2] - 1, -1, -1)
    h, cols = torch.zeros(u.shape[0], u.shape[1], A.shape[1], dtype=u.dtype), {}
    for c in channels:
        h = torch.exp(dt[:, :, c, None] * A) * h + (dt[:, :, c] * u[:, :, c])[..., None] * B[:, None, c]
        cols[c] = (C[:, None, c] * h).sum(-1) + u[:, :, c]
    return torch.stack([cols[c] for c in range(u.shape[2])], -1)


def inputs(rng, batch=2, L=5, dim=7, N=3, time_scan=False):
    x = {"u": rng.standard_normal((batch, L, dim)), "dt": rng.standard_normal((batch, L, dim)),
         "A_log": rng.uniform(-1.0, 1.0, (L, N)), "B": rng.standard_normal((batch, dim, N)),
         "C": rng.standard_normal((batch, dim, N))}
    if time_scan:
        x["a_t"] = rng.standard_normal((batch, L, dim))
    return x


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("order, time_scan", [("forward", False), ("reverse", False), ("forward", True)])
def test_channel_scans_forward_and_gradients(rng, device, order, time_scan):
    # (L or dim 1 would leave a or A unused, its reference gradient zero)
    x = inputs(rng, L=int(rng.integers(2, 7)), dim=int(rng.integers(2, 9)), time_scan=time_scan)
    g = channel_graph(order, time_scan)
    leaves = {k: torch.tensor(v, device=device, requires_grad=True) for k, v in x.items()}
    want = loop_ref(**leaves, order=order)
    ct = torch.randn_like(want)
    want_g = torch.autograd.grad((want * ct).sum(), list(leaves.values()))
    assert_close(ssmc.compile(g, backend="numpy")(**x)["y"], want.detach(), 1e-12, "numpy")
    out = ssmc.compile(g, backend="triton")(**leaves)["y"]
    assert_close(out.detach(), want.detach(), 1e-10, "triton")
    for k, got, w in zip(leaves, torch.autograd.grad((out * ct).sum(), list(leaves.values())), want_g):
        assert_close(got, w, 1e-9, f"grad {k}")


def test_float32_and_a_nan_poisoned_output(rng):
    x = inputs(rng, L=4, dim=33)
    want = loop_ref(**{k: torch.from_numpy(v) for k, v in x.items()})
    t = {k: torch.tensor(v, dtype=torch.float32) for k, v in x.items()}
    y = torch.full((2, 4, 33), float("nan"))
    assert ssmc.compile(channel_graph(), backend="triton")(**t, y=y)["y"] is y
    assert_close(y, want, 1e-5, "y")


def test_the_step_scans_time_with_roles_traded():
    fn = ssmc.compile(channel_graph(), backend="triton")
    (step,) = [st.graph for st in fn.staged.plan.steps]
    assert {n.attr("name"): tuple(a.role for a in n.attr("axes")) for n in step.nodes if n.op == "input"} == \
        {"u": ("b", "h", "t"), "dt": ("b", "h", "t"), "A_log": ("h", "n"), "B": ("b", "t", "n"), "C": ("b", "t", "n")}
    assert all(n.attr("along") is None for n in step.nodes if n.op == "scan")


def test_what_a_channel_scan_refuses():
    m = ssmc.Builder("bad")
    u = m.input("u", ("batch", "L", "dim"))
    with pytest.raises(ValueError, match=r"along must be 'time' or 'channels', got 'heads'"):
        m.scan(d.sigmoid(u), u, along="heads")
    with pytest.raises(ValueError, match=r"scan along channels: order must be 'forward' or 'reverse', without h0 "
                                         r"or seq_idx; got order='forward', h0"):
        m.scan(d.sigmoid(u), u, h0=m.input("h0", ("batch", "L")), along="channels")
    h = m.scan(d.sigmoid(u), u, along="channels")
    with pytest.raises(ValueError, match=r"last: a scan along channels has no final state"):
        m.last(h)
    m2 = ssmc.Builder("heads")
    x = m2.input("x", ("batch", "L", "H", "P"))
    m2.output("y", m2.scan(d.sigmoid(x), x, along="channels"), ("batch", "L", "H", "P"))
    with pytest.raises(ssmc.IRError, match=r"no h0, resets or index, and values without a head-dim \(p\) axis"):
        ssmc.compile(m2.build(), backend="numpy")


@pytest.mark.parametrize("order, time_scan", [("forward", False), ("reverse", True)])
def test_onnx_scans_along_axis_h(rng, order, time_scan):
    ort = pytest.importorskip("onnxruntime")  # (optional: the GPU machine may lack it)
    x = inputs(rng, time_scan=time_scan)
    want = loop_ref(**{k: torch.from_numpy(v) for k, v in x.items()}, order=order)
    model = to_onnx(channel_graph(order, time_scan), sizes={"dim": 7, "N": 3, "L": 5})
    sess = ort.InferenceSession(model.SerializeToString())
    assert_close(sess.run(None, {k: v.astype(np.float32) for k, v in x.items()})[0], want, 2e-6, "onnx")


@pytest.mark.parametrize("device", DEVICES)
def test_a_sum_over_the_channels_of_a_channel_scan(rng, device):
    """The sum runs after the scan's step, where h is a channel axis again (in ONNX: outside the Scan)."""
    m = ssmc.Builder("channel_sum")
    u, a = m.input("u", ("batch", "L", "dim")), m.input("a", ("batch", "L", "dim"))
    m.output("y", m.scan(d.sigmoid(a), u, along="channels").sum("h"), ("batch", "L"))
    x = {"u": rng.standard_normal((2, 5, 4)), "a": rng.standard_normal((2, 5, 4))}
    h, rows = torch.zeros(2, 5, dtype=torch.float64), []
    for c in range(4):
        h = torch.sigmoid(torch.from_numpy(x["a"][:, :, c])) * h + torch.from_numpy(x["u"][:, :, c])
        rows.append(h)
    want = sum(rows)
    assert_close(ssmc.compile(m.build(), backend="numpy")(**x)["y"], want, 1e-12, "numpy")
    got = ssmc.compile(m.build(), backend="triton")(**{k: torch.tensor(v, device=device) for k, v in x.items()})
    assert_close(got["y"], want, 1e-12, "triton")
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(to_onnx(m.build(), sizes={"dim": 4}).SerializeToString())
    assert_close(sess.run(None, {k: v.astype(np.float32) for k, v in x.items()})[0], want, 2e-6, "onnx")


def test_a_channel_scan_agrees_with_the_time_scan_of_the_transposed_input(rng):
    """Declared along time on (batch, dim, L)-laid-out inputs whose axes name the other roles, the same
    recurrence: the interpreter's channel scan is the time scan with t and h traded."""
    x = inputs(rng)
    m = ssmc.Builder("transposed")
    u = m.input("u", ("batch", "dim:t", "L:h"))  # the channels as time, the tokens as channels
    dt = d.softplus(m.input("dt", ("batch", "dim:t", "L:h")))
    A = -d.exp(m.input("A_log", ("L:h", "N")))
    B, C = m.input("B", ("batch", "dim:t", "N")), m.input("C", ("batch", "dim:t", "N"))
    m.output("y", (C * m.scan(d.exp(dt * A), dt * B * u)).sum("n") + u, ("batch", "dim:t", "L:h"))
    tr = {k: np.swapaxes(v, 1, 2) if k in ("u", "dt") else v for k, v in x.items()}
    want = np.swapaxes(ssmc.compile(m.build(), backend="numpy")(**tr)["y"], 1, 2)
    assert_close(ssmc.compile(channel_graph(), backend="numpy")(**x)["y"], want, 1e-13, "transposed")
