"""Partial gather orders (`unvisited="initial"`, ssmc.ir.passes.partial): a scan over a subset of the
positions, each row of the index listing them in scan order, then -1 padding, as token pruning keeps a
subset of a vision model's tokens.  Against a float64 torch loop written from the recurrence (unlisted
positions see the initial state; the final state is the one after the last listed position), whose
autograd gives the reference gradients."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import ssmc
from ssmc.backends import numpy_interp
from ssmc.backends.onnx import to_onnx
from ssmc.ir import builder as d
from ssmc.ir.passes import infer_types, run_pipeline

from conftest import DEVICES, assert_close

AXES = [("L",), ("G", "L"), ("batch", "L"), ("batch", "G", "L")]


def partial_graph(index_axes, h0=False):
    m = ssmc.Builder("partial")
    u, dt = m.input("u", ("batch", "L", "dim")), m.input("dt", ("batch", "L", "dim"))
    A, B, C = m.input("A", ("dim", "N")), m.input("B", ("batch", "L", "N")), m.input("C", ("batch", "L", "N"))
    idx = m.input("keep", index_axes, integer=True)
    init = m.input("h0", ("batch", "dim", "N")) if h0 else None
    h = m.scan(d.exp(dt * A), dt * B * u, h0=init, order="gather", index=idx, unvisited="initial")
    m.output("y", (C * h).sum("n") + u, ("batch", "L", "dim"))
    m.output("last", m.last(h), ("batch", "dim", "N"))
    return m.build()


def loop_ref(u, dt, A, B, C, keep, h0=None, per_sample=False):
    """Channel c of sample b steps through the positions keep[b, g] lists (g = c's group), in that order;
    every position's state is h0 (or 0) until it is stepped; y = C·h + u."""
    batch, L, D = u.shape
    keep = keep.reshape(batch if per_sample else 1, -1, L)
    G = keep.shape[1]
    ys, lasts = [], []
    for b in range(batch):
        cols, ends = [], []
        for c in range(D):
            start = h0[b, c] if h0 is not None else torch.zeros_like(A[c])
            states = [start] * L
            h = start
            for t in keep[b if keep.shape[0] > 1 else 0, c // (D // G)].tolist():
                if t < 0:
                    break
                h = torch.exp(dt[b, t, c] * A[c]) * h + dt[b, t, c] * u[b, t, c] * B[b, t]
                states[t] = h
            cols.append(torch.stack([(C[b, t] * states[t]).sum() + u[b, t, c] for t in range(L)]))
            ends.append(h)
        ys.append(torch.stack(cols, 1))
        lasts.append(torch.stack(ends))
    return {"y": torch.stack(ys), "last": torch.stack(lasts)}


def inputs(rng, index_axes, batch=2, L=7, dim=4, N=3, G=2, h0=False):
    x = {"u": rng.standard_normal((batch, L, dim)), "dt": rng.uniform(0.1, 0.5, (batch, L, dim)),
         "A": -rng.uniform(0.5, 2.0, (dim, N)), "B": rng.standard_normal((batch, L, N)),
         "C": rng.standard_normal((batch, L, N))}
    lead = {("L",): (), ("G", "L"): (G,), ("batch", "L"): (batch,), ("batch", "G", "L"): (batch, G)}[index_axes]
    rows = []
    for r in range(int(np.prod(lead, dtype=int))):  # kept counts 0..L across the rows: none, some, all
        k = [L, 0, int(rng.integers(1, L))][r % 3] if r < 3 else int(rng.integers(0, L + 1))
        rows.append(np.concatenate([rng.permutation(L)[:k], np.full(L - k, -1)]))
    x["keep"] = np.stack(rows).reshape(lead + (L,)).astype(np.int64)
    if h0:
        x["h0"] = rng.standard_normal((batch, dim, N))
    return x


def loop(x, axes):
    return loop_ref(**{k: torch.as_tensor(v) for k, v in x.items()}, per_sample="batch" in axes)


@pytest.mark.parametrize("h0", [False, True])
@pytest.mark.parametrize("index_axes", AXES)
def test_the_interpreter_runs_the_declared_partial_order(rng, index_axes, h0):
    x = inputs(rng, index_axes, L=int(rng.integers(3, 9)), h0=h0)
    want = loop(x, index_axes)
    got = numpy_interp.run(infer_types(partial_graph(index_axes, h0)), x)  # the declared form, not its lowering
    for k in want:
        assert_close(got[k], want[k], 1e-12, k)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("index_axes", AXES)
def test_partial_orders_forward_and_gradients(rng, device, index_axes):
    h0 = index_axes in (("G", "L"), ("batch", "L"))
    x = inputs(rng, index_axes, L=int(rng.integers(4, 9)), h0=h0)
    g = partial_graph(index_axes, h0=h0)
    leaves = {k: torch.tensor(v, device=device, requires_grad=v.dtype != np.int64) for k, v in x.items()}
    want = loop_ref(**leaves, per_sample="batch" in index_axes)
    cts = {k: torch.randn_like(v) for k, v in want.items()}
    floats = [v for v in leaves.values() if v.requires_grad]
    want_g = torch.autograd.grad(sum((want[k] * cts[k]).sum() for k in want), floats)
    for k, v in ssmc.compile(g, backend="numpy")(**x).items():
        assert_close(v, want[k].detach(), 1e-12, f"numpy {k}")
    out = ssmc.compile(g, backend="triton")(**leaves)
    for k in want:
        assert_close(out[k].detach(), want[k].detach(), 1e-10, f"triton {k}")
    got = torch.autograd.grad(sum((out[k] * cts[k]).sum() for k in out), floats)
    for k, gg, ww in zip([k for k in leaves if leaves[k].requires_grad], got, want_g):
        assert_close(gg, ww, 1e-9, f"grad {k}")


def test_float32_inputs_and_a_nan_poisoned_output_buffer(rng):
    """Every position of the output is written, the unlisted ones too."""
    x = inputs(rng, ("L",), L=9)
    x["keep"] = np.array([5, 0, 7, -1, -1, -1, -1, -1, -1])
    want = loop(x, ("L",))
    fn = ssmc.compile(partial_graph(("L",)), backend="triton")
    args = {k: torch.tensor(v, dtype=torch.int64 if v.dtype == np.int64 else torch.float32) for k, v in x.items()}
    y = torch.full((2, 9, 4), float("nan"))
    out = fn(**args, y=y)
    assert out["y"] is y
    assert_close(y, want["y"], 1e-5, "y")
    assert_close(out["last"], want["last"], 1e-5, "last")


@pytest.mark.parametrize("bad, why", [
    ([3, -1, 0, -1, -1], "-1 before a position"),
    ([3, 3, -1, -1, -1], "repeated"),
    ([5, 0, -1, -1, -1], "out of range"),
    ([-2, -1, -1, -1, -1], "below -1"),
])
def test_a_malformed_partial_order_is_refused(rng, bad, why):
    x = inputs(rng, ("L",), L=5)
    x["keep"] = np.array(bad)
    for backend in ("numpy", "triton"):
        fn = ssmc.compile(partial_graph(("L",)), backend=backend)
        with pytest.raises(ValueError, match=r"keep: expected in every row along L distinct positions of 0..4, "
                                             r"then -1 padding"):
            fn(**x)
        with pytest.raises(ValueError, match=r"keep: expected in every row"):
            fn.grad(x, {"y": np.ones((2, 5, 4))})


def test_a_torch_partial_order_is_completed_again_once_it_changes(rng):
    x = {k: torch.tensor(v) for k, v in inputs(rng, ("L",)).items()}
    fn = ssmc.compile(partial_graph(("L",)), backend="triton")
    fn(**x)
    x["keep"][:] = -1  # nothing visited now: every position sees the initial state 0
    assert_close(fn(**x)["y"], x["u"], 1e-12, "y = u")


def test_without_the_attribute_a_padded_index_is_not_a_permutation(rng):
    m = ssmc.Builder("full")
    u, a = m.input("u", ("batch", "L", "dim")), m.input("a", ("batch", "L", "dim"))
    m.output("y", m.scan(d.sigmoid(a), u, order="gather", index=m.input("keep", ("L",), integer=True)),
             ("batch", "L", "dim"))
    x = {"u": rng.standard_normal((2, 4, 3)), "a": rng.standard_normal((2, 4, 3)), "keep": np.array([2, 0, -1, -1])}
    with pytest.raises(ValueError, match=r"keep: expected a permutation of 0..3"):
        ssmc.compile(m.build(), backend="numpy")(**x)


def test_the_attribute_is_checked_where_declared():
    m = ssmc.Builder("bad")
    u = m.input("u", ("batch", "L", "dim"))
    with pytest.raises(ValueError, match=r"unvisited must be one of \('initial',\), with order='gather'; got "
                                         r"unvisited='zero'"):
        m.scan(d.sigmoid(u), u, order="gather", index=m.input("i", ("L",), integer=True), unvisited="zero")
    with pytest.raises(ValueError, match=r"with order='gather'; got unvisited='initial', order='forward'"):
        m.scan(d.sigmoid(u), u, unvisited="initial")
    seq = m.input("seq_idx", ("batch", "L"), integer=True)
    m.output("y", m.scan(d.sigmoid(u), u, seq_idx=seq, order="gather", index=m.input("j", ("L",), integer=True),
                         unvisited="initial"), ("batch", "L", "dim"))
    with pytest.raises(ValueError, match=r"a partial gather order \(unvisited\) with resets"):
        run_pipeline(m.build())


def test_the_derived_input_is_not_part_of_the_interface():
    fn = ssmc.compile(partial_graph(("L",)), backend="numpy")
    assert fn.input_names == ("u", "dt", "A", "B", "C", "keep")
    assert "keep__visited" in fn.graph.inputs  # the lowering's, filled in on each call


def test_partial_orders_export_to_onnx(rng):
    ort = pytest.importorskip("onnxruntime")  # (optional: the GPU machine may lack it)
    for axes in (("L",), ("batch", "G", "L")):
        x = inputs(rng, axes)
        want = loop(x, axes)
        sess = ort.InferenceSession(to_onnx(partial_graph(axes), sizes={"dim": 4, "N": 3, "G": 2})
                                    .SerializeToString())
        assert [i.name for i in sess.get_inputs()] == ["u", "dt", "A", "B", "C", "keep"]
        feed = {k: v if v.dtype == np.int64 else v.astype(np.float32) for k, v in x.items()}
        outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))
        for k in want:
            assert_close(outs[k], want[k], 2e-6, f"{axes} {k}")
