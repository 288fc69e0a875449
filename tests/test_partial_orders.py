"""Partial gather orders (`unvisited="initial"`, ssmc.ir.passes.partial): a scan over a subset of the
positions, each row of the index listing them in scan order, then -1 padding, as token pruning keeps a
subset of a vision model's tokens.  Against a float64 torch loop written from the recurrence (unlisted
positions see the initial state; the final state is the one after the last listed position), whose
autograd gives the reference gradients."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from test_orders_unfolded import gather_graph, inputs, loop_ref

import ssmc
from ssmc.backends import numpy_interp
from ssmc.backends.onnx import to_onnx
from ssmc.ir import builder as d
from ssmc.ir.passes import infer_types, run_pipeline

from conftest import assert_close

AXES = [("L",), ("G", "L"), ("batch", "L"), ("batch", "G", "L")]
# (forward and gradients on every backend: test_orders_unfolded.test_gather_orders_forward_and_gradients)


def partial_graph(index_axes, h0=False):
    return gather_graph(index_axes, h0, partial=True)


def loop(x, axes):
    return loop_ref(**{k: torch.as_tensor(v) for k, v in x.items()}, per_sample="batch" in axes)


@pytest.mark.parametrize("h0", [False, True])
@pytest.mark.parametrize("index_axes", AXES)
def test_the_interpreter_runs_the_declared_partial_order(rng, index_axes, h0):
    x = inputs(rng, index_axes, L=int(rng.integers(3, 9)), h0=h0, partial=True)
    want = loop(x, index_axes)
    got = numpy_interp.run(infer_types(partial_graph(index_axes, h0)), x)  # the declared form, not its lowering
    for k in want:
        assert_close(got[k], want[k], 1e-12, k)


def test_float32_inputs_and_a_nan_poisoned_output_buffer(rng):
    """Every position of the output is written, the unlisted ones too."""
    x = inputs(rng, ("L",), L=9)
    x["order"] = np.array([5, 0, 7, -1, -1, -1, -1, -1, -1])
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
    x["order"] = np.array(bad)
    for backend in ("numpy", "triton"):
        fn = ssmc.compile(partial_graph(("L",)), backend=backend)
        with pytest.raises(ValueError, match=r"order: expected in every row along L distinct positions of 0..4, "
                                             r"then -1 padding"):
            fn(**x)
        with pytest.raises(ValueError, match=r"order: expected in every row"):
            fn.grad(x, {"y": np.ones((2, 5, 4))})


def test_a_torch_partial_order_is_completed_again_once_it_changes(rng):
    x = {k: torch.tensor(v) for k, v in inputs(rng, ("L",)).items()}
    fn = ssmc.compile(partial_graph(("L",)), backend="triton")
    fn(**x)
    x["order"][:] = -1  # nothing visited now: every position sees the initial state 0
    assert_close(fn(**x)["y"], x["u"], 1e-12, "y = u")


def test_without_the_attribute_a_padded_index_is_not_a_permutation(rng):
    m = ssmc.Builder("full")
    u, a = m.input("u", ("batch", "L", "dim")), m.input("a", ("batch", "L", "dim"))
    m.output("y", m.scan(d.sigmoid(a), u, order="gather", index=m.input("order", ("L",), integer=True)),
             ("batch", "L", "dim"))
    x = {"u": rng.standard_normal((2, 4, 3)), "a": rng.standard_normal((2, 4, 3)), "order": np.array([2, 0, -1, -1])}
    with pytest.raises(ValueError, match=r"order: expected a permutation of 0..3"):
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
    assert fn.input_names == ("u", "dt", "A", "B", "C", "order")
    assert "order__visited" in fn.graph.inputs  # the lowering's, filled in on each call


def test_partial_orders_export_to_onnx(rng):
    ort = pytest.importorskip("onnxruntime")  # (optional: the GPU machine may lack it)
    for axes in (("L",), ("batch", "G", "L")):
        x = inputs(rng, axes, partial=True)
        want = loop(x, axes)
        sess = ort.InferenceSession(to_onnx(partial_graph(axes), sizes={"dim": 4, "N": 3, "G": 2})
                                    .SerializeToString())
        assert [i.name for i in sess.get_inputs()] == ["u", "dt", "A", "B", "C", "order"]
        feed = {k: v if v.dtype == np.int64 else v.astype(np.float32) for k, v in x.items()}
        outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))
        for k in want:
            assert_close(outs[k], want[k], 2e-6, f"{axes} {k}")
