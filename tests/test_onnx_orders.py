"""ONNX export of gather-order (multi-order) scans: onnxruntime (CPU, fp32) against the NumPy
interpreter (float64) for every merge, K = 1, 2, 4, 2-D orders of odd grids and random
permutations, the same exported model run at several lengths; raw graphs with a per-channel or a
shared order, resets, an initial state, the final state and complex states; the API and CLI
entry points, and the errors.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest

import ssmc
from ssmc.backends import numpy_interp
from ssmc.export import MULTI_ORDER_INPUTS, export_onnx, onnx_inputs
from ssmc.ir import IRError
from ssmc.ir import builder as d
from ssmc.ir.inits import random_inputs
from ssmc.ops import multi_order_graph, multi_order_scan, scan_orders_2d

from conftest import assert_close, seed_of

ort = pytest.importorskip("onnxruntime")

TOL = 1e-5  # fp32 onnxruntime vs the float64 interpreter, relative
NAMES_2D = ("row", "col", "row_rev", "col_rev", "snake_row", "snake_col")


def session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def run(model, arrays, sess=None) -> dict:
    complex_ = next(p.value for p in model.metadata_props if p.key == "ssmc.complex_outputs").split(",")
    res = (sess or session(model)).run(None, onnx_inputs(model, arrays))
    out = {}
    for v, r in zip(model.graph.output, res):
        r = np.asarray(r, np.float64)
        out[v.name] = r[..., 0] + 1j * r[..., 1] if v.name in complex_ else r
    return out


def grid_orders(K, H, W):
    """K named orders of an H×W grid (cycling through the names when K > 6)."""
    return np.stack(scan_orders_2d(H, W, [NAMES_2D[k % len(NAMES_2D)] for k in range(K)]))


def random_orders(K, L, rng):
    return np.stack([rng.permutation(L) for _ in range(K)])


def lowering(model) -> str:
    return next(p.value for p in model.metadata_props if p.key == "ssmc.lowering")


# --- the multi_order_scan form ----------------------------------------------------------------

@pytest.mark.parametrize("K", [1, 2, 4])
@pytest.mark.parametrize("merge", ["sum", "mean", "concat", "gated"])
def test_multi_order_matches_interpreter(merge, K, rng):
    """One exported model, run at L = 35 (a 5×7 grid's orders), 6 (1×6) and 13 (random orders)."""
    sizes = dict(K=K, dim=3, N=4)
    model = export_onnx("multi_order_scan", sizes=sizes, merge=merge)  # full_check on export
    assert [v.name for v in model.graph.input] == [n for n in MULTI_ORDER_INPUTS if n != "gate" or merge == "gated"]
    graph, sess = multi_order_graph(K, merge), session(model)
    for L, orders in ((35, grid_orders(K, 5, 7)), (6, grid_orders(K, 1, 6)), (13, random_orders(K, 13, rng))):
        x = random_inputs(graph, {**sizes, "KD": K * 3, "batch": 2, "L": L}, seed=seed_of(rng))
        x["orders"] = orders
        got, want = run(model, x, sess)["out"], numpy_interp.run(graph, x)["out"]
        assert got.shape == want.shape == (2, K * 3 if merge == "concat" else 3, L)
        assert_close(got, want, TOL, f"merge={merge} K={K} L={L}")


def test_layouts_match_the_op(rng):
    """The exported inputs are multi_order_scan's with the (K, dim) axes flattened (channel k·dim + d)."""
    batch, K, dim, N, H, W = 2, 4, 3, 4, 5, 7
    L = H * W
    model = export_onnx("multi_order_scan", sizes=dict(K=K, dim=dim, N=N), merge="gated")
    r = lambda *s: rng.standard_normal(s)  # noqa: E731
    u, z, B, C = r(batch, dim, L), r(batch, dim, L), r(batch, K, N, L), r(batch, K, N, L)
    delta, gate = 0.5 * r(batch, K, dim, L), r(batch, K, dim, L)
    A, D, bias = -np.exp(r(K, dim, N)), r(K, dim), 0.1 * r(K, dim)
    orders = grid_orders(K, H, W)
    want = multi_order_scan(u, delta, A, B, C, orders, D, z, bias, True, merge="gated", gate=gate,
                            backend="numpy")
    got = run(model, dict(u=u, delta=delta.reshape(batch, K * dim, L), A=A.reshape(K * dim, N), B=B, C=C,
                          orders=orders, D=D.reshape(-1), z=z, delta_bias=bias.reshape(-1),
                          gate=gate.reshape(batch, K * dim, L)))["out"]
    assert_close(got, want, TOL, "gated SS2D vs multi_order_scan")


def test_ss2d_graph_structure():
    """VMamba's SS2D shape: batch and L symbolic, orders an int64 input, one Scan, a size
    independent of the sizes, the lowering and its reason in the metadata."""
    small = export_onnx("multi_order_scan", sizes=dict(K=4, dim=3, N=4))
    big = export_onnx("multi_order_scan", sizes=dict(K=4, dim=96, N=16))
    ins = {v.name: v.type.tensor_type for v in big.graph.input}
    assert ins["orders"].elem_type == onnx.TensorProto.INT64
    assert [x.dim_value or x.dim_param for x in ins["orders"].shape.dim] == [4, "L"]
    assert [x.dim_value or x.dim_param for x in ins["u"].shape.dim] == ["batch", 96, "L"]
    ops = [n.op_type for n in big.graph.node]
    assert len(ops) == len(small.graph.node) < 120
    assert ops.count("Scan") == 1 and "ScatterElements" in ops and "ReduceSum" in ops
    assert ops.count("Gather") >= 4  # u and z tiled to the K blocks, Ā, x, C read along the orders, ...
    assert "gather order's permuted time" in lowering(big) and "ScatterElements" in lowering(big)
    body = next(a.g for n in big.graph.node if n.op_type == "Scan" for a in n.attribute if a.name == "body")
    assert len(body.node) < 12


@pytest.mark.parametrize("opset", [18, 23])
def test_opsets_and_fp16(opset, rng):
    sizes = dict(K=2, dim=3, N=4)
    graph = multi_order_graph(2)
    for fp16 in (False, True):
        model = export_onnx("multi_order_scan", sizes=sizes, opset=opset, fp16=fp16, check=False)
        onnx.checker.check_model(model, full_check=True)
        x = random_inputs(graph, {**sizes, "KD": 6, "batch": 1, "L": 10}, seed=seed_of(rng))
        x["orders"] = random_orders(2, 10, rng)
        sess = session(model)
        got = sess.run(None, {k: (v.astype(np.float16) if fp16 and v.dtype == np.float32 else v)
                              for k, v in onnx_inputs(model, x).items()})[0]
        assert_close(np.asarray(got, np.float64), numpy_interp.run(graph, x)["out"], 1e-2 if fp16 else TOL,
                     f"opset {opset} fp16={fp16}")


def test_graph_and_compiled_entry_points(rng):
    """multi_order_graph (any variant) and a ssmc.compile result export like the named form."""
    graph = multi_order_graph(2, "mean", D=False, z=False, delta_bias=False, delta_softplus=False)
    sizes = dict(K=2, dim=3, KD=6, N=4)
    x = random_inputs(graph, {**sizes, "batch": 2, "L": 12}, seed=seed_of(rng))
    x["orders"] = random_orders(2, 12, rng)
    want = numpy_interp.run(graph, x)["out"]
    for decl in (graph, ssmc.compile(graph, backend="numpy")):
        model = export_onnx(decl, sizes=sizes)
        assert {v.name for v in model.graph.input} == {"u", "delta", "A", "B", "C", "orders"}
        assert [v.name for v in model.graph.output] == ["out"]  # no state in/out for a gather scan
        assert_close(run(model, x)["out"], want, TOL, type(decl).__name__)


# --- raw graphs ----------------------------------------------------------------------------------

def _selective(name, index_axes, reset=False, h0=False, u_axes=("batch", "dim", "L")):
    m = d.Builder(name)
    u = m.input("u", u_axes)
    delta = d.softplus(m.input("delta", ("batch", "dim", "L")))
    A_bar, B_scale = m.discretize(delta, m.input("A", ("dim", "N")), "zoh_euler")
    index = m.input("idx", index_axes, integer=True)
    seq = m.input("seq_idx", ("batch", "L"), integer=True) if reset else None
    state = m.input("h0", ("batch", "dim", "N")) if h0 else None
    h = m.scan(A_bar, B_scale * m.input("B", ("batch", "N", "L")) * u, h0=state, seq_idx=seq, order="gather",
               index=index)
    m.output("out", (m.input("C", ("batch", "N", "L")) * h).sum("n"), u_axes)
    m.output("last", m.last(h), ("batch", "dim", "N"))
    return m.build()


def _check_raw(graph, sizes, lengths, fill, rng):
    model = export_onnx(graph, sizes=sizes)
    sess = session(model)
    for L in lengths:
        x = random_inputs(graph, {**sizes, "batch": 2, "L": L}, seed=seed_of(rng))
        fill(x, L)
        want, got = numpy_interp.run(graph, x), run(model, x, sess)
        assert set(got) == set(want)
        for k in want:
            assert_close(got[k], want[k], TOL, f"{graph.name} L={L} {k}")


def test_per_channel_orders_with_resets_and_initial_state(rng):
    """An order per channel (no groups), packed sequences reset in the permuted order, h0, the final state."""
    graph = _selective("per_channel", ("dim", "L"), reset=True, h0=True)

    def fill(x, L):
        x["idx"] = random_orders(4, L, rng)
        x["seq_idx"] = np.sort(rng.integers(0, 3, (2, L)), axis=1)
    _check_raw(graph, dict(dim=4, N=3), (9, 16), fill, rng)


def test_one_shared_order(rng):
    """An index over (L,) only: every channel follows the same permutation (time-major layouts)."""
    graph = _selective("shared", ("L",), u_axes=("batch", "L", "dim"))
    _check_raw(graph, dict(dim=4, N=3), (7, 12), lambda x, L: x.__setitem__("idx", rng.permutation(L)), rng)


def test_complex_state_with_grouped_orders(rng):
    """A complex diagonal (S4D-like) state, time-invariant B and C, two orders shared u (role r)."""
    m = d.Builder("complex_orders")
    u = m.input("u", ("batch", "dim:r", "L"))
    delta = d.softplus(m.input("delta", ("batch", "KD:h", "L")))
    A_bar, B_scale = m.discretize(delta, m.input("A", ("KD:h", "N"), complex=True), "zoh")
    h = m.scan(A_bar, B_scale * m.input("B", ("KD:h", "N"), complex=True) * u, order="gather",
               index=m.input("orders", ("K:g", "L"), integer=True))
    m.output("out", d.real(m.input("C", ("KD:h", "N"), complex=True) * h).sum("n"), ("batch", "dim:r", "L"))
    m.output("last", m.last(h), ("batch", "KD:h", "N"))
    graph = m.build()
    _check_raw(graph, dict(K=2, dim=3, KD=6, N=3), (8, 15),
               lambda x, L: x.__setitem__("orders", random_orders(2, L, rng)), rng)


def test_group_axis_output_sums_each_group(rng):
    """An output with a group axis (role g) sums the heads of each group, as the interpreter does."""
    m = d.Builder("group_out")
    u = m.input("u", ("batch", "H:h", "L"))
    A_bar, B_scale = m.discretize(d.softplus(m.input("delta", ("batch", "H:h", "L"))), m.input("A", ("H:h", "N")),
                                  "zoh_euler")
    h = m.scan(A_bar, B_scale * m.input("B", ("batch", "G:g", "N", "L")) * u, h0=m.input("h0", ("batch", "H:h", "N")))
    m.output("out", (m.input("C", ("batch", "G:g", "N", "L")) * h).sum("n"), ("batch", "G:g", "L"))
    m.output("last", m.last(h), ("batch", "H:h", "N"))
    _check_raw(m.build(), dict(H=6, G=2, N=3), (5,), lambda x, L: None, rng)


# --- errors ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, error, match", [
    (dict(sizes=dict(K=2, dim=3, N=4), step=True), IRError, r"node %\d+ \(scan\): a gather .* has no single-step"),
    (dict(sizes=dict(K=2, dim=3)), ValueError, r"needs \['K', 'dim', 'N'\], missing \['N'\]"),
    (dict(sizes=dict(K=2, dim=3, N=4, KD=5)), ValueError, r"KD is K·dim = 6"),
    (dict(sizes=dict(K=2, dim=3, N=4), merge="max"), ValueError, r"merge: expected one of"),
    (dict(sizes=dict(K=0, dim=3, N=4)), ValueError, r"K: expected a positive integer"),
])
def test_bad_multi_order_exports(kwargs, error, match):
    with pytest.raises(error, match=match):
        export_onnx("multi_order_scan", **kwargs)


def test_bad_sizes_and_options_on_graphs():
    with pytest.raises(ValueError, match=r"sizes: K=4 groups must divide KD=6"):
        export_onnx(multi_order_graph(4), sizes=dict(K=4, dim=3, KD=6, N=2))
    with pytest.raises(ValueError, match=r"sizes: dim=4 \(shared by every block of channels\) must divide KD=6"):
        export_onnx(multi_order_graph(2), sizes=dict(K=2, dim=4, KD=6, N=2))
    with pytest.raises(ValueError, match=r"merge: only the 'multi_order_scan' form takes a merge"):
        export_onnx("mamba1", merge="sum")


def test_out_of_range_orders_fail_at_run_time(rng):
    """The orders are not checked in the graph, but an index past L is the runtime's error, not a silent read."""
    model = export_onnx("multi_order_scan", sizes=dict(K=2, dim=3, N=4))
    x = random_inputs(multi_order_graph(2), dict(K=2, dim=3, KD=6, N=4, batch=1, L=6), seed=seed_of(rng))
    x["orders"] = np.stack([np.arange(6), np.arange(1, 7)])
    with pytest.raises(Exception, match=r"(?i)indices|out of|bounds"):
        session(model).run(None, onnx_inputs(model, x))


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ssmc", "onnx", *args], capture_output=True, text=True, cwd=cwd)


def test_cli(tmp_path):
    path = tmp_path / "ss2d.onnx"
    r = _cli("multi_order_scan", "-o", str(path), "--K", "4", "--dim", "8", "--d-state", "4", "--merge", "gated")
    assert r.returncode == 0, r.stderr
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert [v.name for v in model.graph.input][-1] == "gate" and "permuted time" in r.stdout
    r = _cli("mamba2", "-o", str(tmp_path / "x.onnx"), "--merge", "sum")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "options of multi_order_scan" in r.stderr
    r = _cli("multi_order_scan", "-o", str(tmp_path / "x.onnx"), "--K", "2", "--dim", "8")
    assert r.returncode == 2 and "missing ['N']" in r.stderr


def test_tied_bidirectional_s4d_exports_as_one_graph(rng):
    """The tied bidirectional S4D graph (two blocks of channels, gather orders) through onnxruntime equals
    ssmc.ops.tied_bidirectional on NumPy, at two lengths of one exported model; MIMO specs are refused."""
    from ssmc.ops.tied_bidirectional import tied_bidirectional, tied_bidirectional_graph
    dim, N = 3, 4
    graph = tied_bidirectional_graph("s4d_zoh")
    model = export_onnx(graph, sizes={"dim": dim, "Kdim": 2 * dim, "K": 2, "N": N})
    sess = session(model)
    for L in (7, 12):
        x = random_inputs(graph, dict(batch=2, dim=dim, Kdim=2 * dim, K=2, N=N, L=L), seed=seed_of(rng))
        x["orders"] = np.stack([np.arange(L), np.arange(L)[::-1]]).astype(np.int64)
        want = tied_bidirectional("s4d_zoh", backend="numpy", **dict({k: v for k, v in x.items() if k != "orders"},
                                                                       C=x["C"].reshape(2, dim, N)))
        assert_close(run(model, x, sess)["out"], want, TOL, f"L={L}")
    with pytest.raises(ValueError, match="spec: 's5' is MIMO"):
        tied_bidirectional_graph("s5")


@pytest.mark.parametrize("complex_", [False, True])
def test_sum_over_channels_of_per_group_orders_with_a_state_axis(complex_, rng):
    """Channels of different groups visit time in different orders: a sum over them that keeps n (C·h
    summed over heads first) cannot be taken inside the Scan per step — it was absorbed there, and
    onnxruntime failed on the reshape back to sequence time; it is now taken after the unpermute."""
    m = ssmc.Builder("group_orders_sum_h")
    u, a = m.input("u", ["batch", "L", "H"]), m.input("a", ["batch"])
    decay = d.exp(d.complex_(-d.softplus(a), m.input("w", ["batch"]))) if complex_ else d.sigmoid(a)
    b = m.input("b", ["batch", "L", "H", "N"])
    h = m.scan(decay, u * (d.complex_(b, b) if complex_ else b), order="gather",
               index=m.input("idx", ["G", "L"], integer=True))
    y = h.sum("h")
    m.output("y", d.softplus(d.real(y) if complex_ else y), ["batch", "L", "N"])
    m.output("h_last", m.last(h), ["batch", "H", "N"])
    g = m.build()
    sizes = dict(batch=2, L=5, H=4, N=3, G=2)
    x = random_inputs(g, sizes, seed=seed_of(rng))
    x["idx"] = np.stack([rng.permutation(5), rng.permutation(5)])
    model = ssmc.export_onnx(g, sizes={k: v for k, v in sizes.items() if k not in ("batch", "L")})
    got, want = run(model, x), numpy_interp.run(g, x)
    for k in want:
        assert_close(got[k], want[k], TOL, k)
