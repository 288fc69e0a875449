"""Scan orders: named 2-D orders, multi-order scans (Vim, VMamba SS2D, RSMamba, Point Cloud Mamba)
and state resets on any state kind — NumPy interpreter vs an independent permute-scan-unpermute
formulation, and Triton (interpreter on CPU, CUDA under -m gpu) vs NumPy.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import ssmc
from ssmc import library
from ssmc.ir.inits import random_inputs
from ssmc.ops import multi_order_scan, multiscale_scan_2d, scan_orders_2d
from ssmc.ops.multi_order import multi_order_compiled

from conftest import DEVICES, assert_close, seed_of
from reference_forms import selective_scan_loop, silu


def test_named_2d_orders():
    row, col, row_rev, col_rev, snake_row, snake_col = scan_orders_2d(2, 3, ["row", "col", "row_rev", "col_rev",
                                                                              "snake_row", "snake_col"])
    assert row.tolist() == [0, 1, 2, 3, 4, 5]
    assert col.tolist() == [0, 3, 1, 4, 2, 5]
    assert row_rev.tolist() == [5, 4, 3, 2, 1, 0]
    assert col_rev.tolist() == [5, 2, 4, 1, 3, 0]
    assert snake_row.tolist() == [0, 1, 2, 5, 4, 3]
    assert snake_col.tolist() == [0, 3, 4, 1, 2, 5]
    for H, W in ((5, 7), (1, 6), (4, 4)):
        for o in scan_orders_2d(H, W, ["row", "col", "snake_row", "snake_col", "col_rev"]):
            assert sorted(o.tolist()) == list(range(H * W))


def _loop_reference(x, orders, gate=None):
    """Each order on its own: permute the sequence, run Mamba-1's loop, unpermute, then sum (each
    order weighted by its gate, when given) and gate by silu(z)."""
    total = 0.0
    for k, o in enumerate(orders):
        inv = np.argsort(o)
        y = selective_scan_loop(x["u"][..., o], x["delta"][:, k][..., o], x["A"][k], x["B"][:, k][..., o],
                                x["C"][:, k][..., o], D=None if x.get("D") is None else x["D"][k],
                                delta_bias=None if x.get("delta_bias") is None else x["delta_bias"][k],
                                delta_softplus=True)
        total = total + (y[..., inv] if gate is None else gate[:, k] * y[..., inv])
    return total * silu(x["z"]) if x.get("z") is not None else total


def _inputs(rng, batch, dim, N, L, K, D=True, z=True, bias=True):
    x = dict(u=rng.standard_normal((batch, dim, L)), delta=rng.uniform(-3.0, 0.5, (batch, K, dim, L)),
             A=-rng.uniform(0.5, 3.0, (K, dim, N)), B=rng.standard_normal((batch, K, N, L)),
             C=rng.standard_normal((batch, K, N, L)))
    if D:
        x["D"] = rng.standard_normal((K, dim))
    if z:
        x["z"] = rng.standard_normal((batch, dim, L))
    if bias:
        x["delta_bias"] = 0.1 * rng.standard_normal((K, dim))
    return x


def _families(H, W, rng):
    L = H * W
    return {
        "vim (forward, reverse)": [np.arange(L), np.arange(L)[::-1].copy()],
        "vmamba ss2d (4 orders)": scan_orders_2d(H, W, ["row", "col", "row_rev", "col_rev"]),
        "rsmamba (identity, reverse, random)": [np.arange(L), np.arange(L)[::-1].copy(), rng.permutation(L)],
        "point cloud (serializations)": [rng.permutation(L), rng.permutation(L)],
        "snakes": scan_orders_2d(H, W, ["snake_row", "snake_col"]),
    }


@pytest.mark.parametrize("grid", [(5, 7), (1, 6), (4, 4)])
def test_numpy_matches_permute_scan_unpermute(grid, rng):
    H, W = grid
    for family, orders in _families(H, W, rng).items():
        x = _inputs(rng, 2, 3, 4, H * W, len(orders), D=family != "snakes", z=family != "point cloud (serializations)")
        got = multi_order_scan(**x, orders=orders, delta_softplus=True, backend="numpy")
        assert_close(got, _loop_reference(x, orders), 1e-12, family)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("grid", [(5, 7), (1, 6), (4, 4)])
def test_triton_matches_numpy(grid, device, rng):
    H, W = grid
    for family, orders in _families(H, W, rng).items():
        x = _inputs(rng, 2, 5, 4, H * W, len(orders))
        want = multi_order_scan(**x, orders=orders, delta_softplus=True, backend="numpy")
        t = {k: torch.tensor(v, device=device, dtype=torch.float32) for k, v in x.items()}
        got = multi_order_scan(**t, orders=[torch.tensor(o, device=device) for o in orders], delta_softplus=True,
                               backend="triton")
        assert got.shape == (2, 5, H * W) and got.dtype == torch.float32
        assert_close(got, want, 1e-5, f"{family} on {device}")


def test_one_launch_and_no_permuted_copies(rng):
    """K orders are one kernel launch; the launcher allocates only the merged output (no permuted
    inputs); the (K, dim) parameters reach the kernel as views of the caller's tensors."""
    fn = multi_order_compiled(True, True, True, True, "triton")
    src = fn.source
    launcher = src.split("def launch")[1]
    assert launcher.count("[grid](") == 1
    assert launcher.count("torch.zeros(") + launcher.count("torch.empty(") == 1  # the merged output
    assert "tl.atomic_add(" in src and "tp_next = tl.load(orders_ptr + g_blk" in src  # order folded into the time index
    delta = torch.randn(2, 3, 4, 10)
    assert delta.reshape(2, 12, 10).data_ptr() == delta.data_ptr()


def test_numpy_interpreter_defines_gather_orders_plainly(rng):
    """The IR-level order: a Builder scan with order='gather' equals scanning a permuted copy."""
    m = ssmc.Builder("gathered")
    a, x = m.input("a", ("batch", "dim", "L")), m.input("x", ("batch", "dim", "L"))
    m.output("h", m.scan(a, x, order="gather", index=m.input("perm", ("L",), integer=True)), ("batch", "dim", "L"))
    g = ssmc.compile(m.build(), backend="numpy")
    a_, x_ = rng.uniform(0.5, 1.0, (2, 3, 11)), rng.standard_normal((2, 3, 11))
    perm = rng.permutation(11)
    h = np.zeros((2, 3))
    want = np.empty_like(x_)
    for t in perm:
        h = a_[..., t] * h + x_[..., t]
        want[..., t] = h
    assert_close(g(a=a_, x=x_, perm=perm)["h"], want, 1e-12, "gather")
    assert "order=index[t]" in g.graph.text()


@pytest.mark.parametrize("kwargs, match", [
    (dict(orders=[np.arange(12), np.r_[0, 0, np.arange(2, 12)]]), r"orders\[1\]: not a permutation of range\(L=12\)"),
    (dict(orders=[np.arange(12)]), r"orders: expected K=2 orders"),
    (dict(orders=scan_orders_2d(3, 3, ["row", "col"])),
     r"orders\[0\]: expected an integer permutation of range\(L=12\)"),
    (dict(orders=[np.arange(12.0), np.arange(12.0)]), r"orders\[0\]: expected an integer permutation"),
    (dict(A=np.zeros((3, 4, 2))), r"A: expected shape \(K, dim, N\) = \(2, 4, 2\), got \(3, 4, 2\)"),
    (dict(B=np.zeros((1, 3, 2, 12))), r"B: expected shape \(batch, K, N, L\) = \(1, 2, 2, 12\)"),
    (dict(D=np.zeros((4,))), r"D: expected shape \(K, dim\) = \(2, 4\), got \(4,\)"),
    (dict(delta=np.zeros((1, 4, 12))), r"delta: expected shape \(batch, K, dim, L\), got \(1, 4, 12\)"),
])
def test_bad_input_names_the_argument(kwargs, match):
    x = dict(u=np.zeros((1, 4, 12)), delta=np.zeros((1, 2, 4, 12)), A=-np.ones((2, 4, 2)),
             B=np.zeros((1, 2, 2, 12)), C=np.zeros((1, 2, 2, 12)), orders=[np.arange(12), np.arange(12)[::-1]])
    x.update(kwargs)
    with pytest.raises(ValueError, match=match):
        multi_order_scan(**x, backend="numpy")


@pytest.mark.parametrize("bad, match", [((0, 3, ["row"]), "H: expected a positive integer"),
                                        ((2, 3, ["diagonal"]), "names: unknown 2-D order 'diagonal'")])
def test_bad_grid(bad, match):
    with pytest.raises(ValueError, match=match):
        scan_orders_2d(*bad)


def test_backward_of_gather_orders_is_refused():
    with pytest.raises(NotImplementedError, match="gather-order"):
        multi_order_compiled(False, False, False, False, "numpy").backward_graph


@pytest.mark.parametrize("name", ["s5", "mamba1", "s4d_zoh"])
@pytest.mark.parametrize("device", DEVICES)
def test_episode_resets_equal_separate_episodes(name, device, rng):
    """State resets on any state kind (S5 for RL episode starts): one run over episodes with
    seq_idx equals running every episode on its own from a zero state."""
    spec = library.get(name).with_(name=f"{name}_resets", seq_idx=True)
    ref = ssmc.compile(spec, backend="numpy")
    sizes = {**library.DEFAULT_SIZES[name], "L": 30}
    x = random_inputs(ref.graph, sizes, seed=seed_of(rng))
    cuts = [0, 7, 8, 19, 30]
    x["seq_idx"] = np.repeat(np.arange(len(cuts) - 1), np.diff(cuts))[None].repeat(sizes["batch"], 0)
    got = ref(**x)["out"]
    plain = ssmc.compile(library.get(name), backend="numpy")
    t_axis = [a.role for a in ref.graph[ref.graph.outputs["out"]].attr("axes")].index("t")
    pieces = []
    for lo, hi in zip(cuts, cuts[1:]):
        piece = {}
        for i in plain.graph.ids("input"):
            n = plain.graph[i]
            axes = [a.role for a in n.attr("axes")]
            v = x[n.attr("name")]
            piece[n.attr("name")] = np.take(v, range(lo, hi), axis=axes.index("t")) if "t" in axes else v
        pieces.append(plain(**piece)["out"])
    assert_close(got, np.concatenate(pieces, axis=t_axis), 1e-12, f"{name} episodes")
    tri = ssmc.compile(spec, backend="triton")
    t = {k: torch.tensor(v, device=device) if v.dtype.kind == "i" else
         torch.tensor(v, device=device, dtype=torch.complex64 if np.iscomplexobj(v) else torch.float32)
         for k, v in x.items()}
    assert_close(tri(**t)["out"], got, 1e-5, f"{name} resets on {device}")


def test_torch_orders_are_checked_once_and_rechecked_after_a_change(rng):
    from ssmc.ops.multi_order import CHECKED
    x = _inputs(rng, 1, 2, 3, 6, 2)
    t = {k: torch.tensor(v, dtype=torch.float32) for k, v in x.items()}
    orders = [torch.arange(6), torch.arange(5, -1, -1)]
    multi_order_scan(**t, orders=orders, delta_softplus=True, backend="numpy")
    n = len(CHECKED)
    multi_order_scan(**t, orders=orders, delta_softplus=True, backend="numpy")
    assert len(CHECKED) == n  # remembered
    orders[1][0] = 0  # changed in place: no longer a permutation, and checked again
    with pytest.raises(ValueError, match=r"orders\[1\]: not a permutation"):
        multi_order_scan(**t, orders=orders, delta_softplus=True, backend="numpy")


def test_fresh_order_tensors_are_never_mistaken_for_remembered_ones(rng):
    """New order tensors may land where freed ones lived (same address, version 0): the orders
    remembered from an earlier call must not be used for them."""
    x = _inputs(rng, 1, 2, 3, 16, 2)
    t = {k: torch.tensor(v, dtype=torch.float64) for k, v in x.items()}
    for names in (["row", "col"], ["snake_row", "snake_col"], ["col_rev", "row"]):
        orders = scan_orders_2d(4, 4, names)
        want = multi_order_scan(**x, orders=orders, delta_softplus=True, backend="numpy")
        got = multi_order_scan(**t, orders=[torch.tensor(o) for o in orders], delta_softplus=True, backend="numpy")
        assert_close(got, want, 1e-12, str(names))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("merge", ["mean", "concat"])
def test_merge_rules(merge, device, rng):
    """mean: the sum over orders divided by K; concat: each order's result, (batch, K, dim, L)."""
    orders = scan_orders_2d(3, 5, ["row", "col", "snake_col"])
    x = _inputs(rng, 2, 4, 3, 15, 3)
    total = multi_order_scan(**x, orders=orders, delta_softplus=True, backend="numpy")
    got = multi_order_scan(**x, orders=orders, delta_softplus=True, merge=merge, backend="numpy")
    if merge == "mean":
        assert_close(got, total / 3, 1e-12, "mean")
    else:
        assert got.shape == (2, 3, 4, 15)
        assert_close(got.sum(axis=1), total, 1e-12, "concat sums to the merge")
        one = {k: (v[:, :1] if k in ("delta", "B", "C") else v[:1] if k in ("A", "D", "delta_bias") else v)
               for k, v in x.items()}
        assert_close(got[:, 0], multi_order_scan(**one, orders=orders[:1], delta_softplus=True, backend="numpy"),
                     1e-12, "concat block 0 is order 0 alone")
    t = {k: torch.tensor(v, device=device, dtype=torch.float32) for k, v in x.items()}
    tri = multi_order_scan(**t, orders=[torch.tensor(o, device=device) for o in orders], delta_softplus=True,
                           merge=merge, backend="triton")
    assert_close(tri, got, 1e-5, f"{merge} on {device}")
    with pytest.raises(ValueError, match="merge: expected one of"):
        multi_order_scan(**x, orders=orders, merge="max", backend="numpy")


@pytest.mark.parametrize("grid", [(5, 7), (1, 6), (4, 4)])
def test_gated_merge_numpy_matches_loop(grid, rng):
    """merge="gated": silu(z) · Σ_k gate_k ⊙ unpermute_k(scan_k(...)), the gate in sequence positions."""
    H, W = grid
    for family, orders in _families(H, W, rng).items():
        x = _inputs(rng, 2, 3, 4, H * W, len(orders), D=family != "snakes", z=family != "vim (forward, reverse)")
        gate = rng.standard_normal((2, len(orders), 3, H * W))
        got = multi_order_scan(**x, orders=orders, delta_softplus=True, merge="gated", gate=gate, backend="numpy")
        assert got.shape == (2, 3, H * W)
        assert_close(got, _loop_reference(x, orders, gate), 1e-12, family)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("grid", [(5, 7), (1, 6)])
def test_gated_merge_triton_matches_loop(grid, device, rng):
    H, W = grid
    orders = scan_orders_2d(H, W, ["row", "col_rev", "snake_col"]) + [rng.permutation(H * W)]
    x = _inputs(rng, 2, 5, 3, H * W, len(orders))
    gate = rng.uniform(-1.5, 1.5, (2, len(orders), 5, H * W))
    want = _loop_reference(x, orders, gate)
    t = {k: torch.tensor(v, device=device, dtype=torch.float32) for k, v in x.items()}
    got = multi_order_scan(**t, orders=[torch.tensor(o, device=device) for o in orders], delta_softplus=True,
                           merge="gated", gate=torch.tensor(gate, device=device, dtype=torch.float32),
                           backend="triton")
    assert got.shape == (2, 5, H * W) and got.dtype == torch.float32
    assert_close(got, want, 1e-5, f"gated on {device}")


def test_gated_merge_is_one_launch_with_the_gate_in_the_graph():
    """The gate is an input of the graph, multiplied onto each order's output inside the kernel;
    the K gated outputs are accumulated by the same single launch."""
    fn = multi_order_compiled(True, True, True, True, "triton", "gated")
    assert "input gate (batch, KD:h, L)" in fn.graph.text()
    launcher = fn.source.split("def launch")[1]
    assert launcher.count("[grid](") == 1
    assert launcher.count("torch.zeros(") + launcher.count("torch.empty(") == 1
    assert "tl.atomic_add(" in fn.source and "gate_ptr" in fn.source


@pytest.mark.parametrize("merge, gate, match", [
    ("gated", None, r"gate: merge='gated' takes a gate of shape \(batch, K, dim, L\)"),
    ("sum", np.ones((1, 2, 4, 12)), r"gate: given with merge='sum'"),
    ("concat", np.ones((1, 2, 4, 12)), r"gate: given with merge='concat'"),
    ("gated", np.ones((1, 4, 12)), r"gate: expected shape \(batch, K, dim, L\) = \(1, 2, 4, 12\), got \(1, 4, 12\)"),
    ("gated", np.ones((1, 3, 4, 12)), r"gate: expected shape \(batch, K, dim, L\) = \(1, 2, 4, 12\)"),
])
def test_bad_gate_names_the_argument(merge, gate, match):
    x = dict(u=np.zeros((1, 4, 12)), delta=np.zeros((1, 2, 4, 12)), A=-np.ones((2, 4, 2)),
             B=np.zeros((1, 2, 2, 12)), C=np.zeros((1, 2, 2, 12)), orders=[np.arange(12), np.arange(12)[::-1]])
    with pytest.raises(ValueError, match=match):
        multi_order_scan(**x, merge=merge, gate=gate, backend="numpy")


def cells(name, h, w):
    """A named order of an h×w grid as a list of (row, col) cells, written out independently."""
    row = [(i, j) for i in range(h) for j in range(w)]
    col = [(i, j) for j in range(w) for i in range(h)]
    return {"row": row, "col": col, "row_rev": row[::-1], "col_rev": col[::-1],
            "snake_row": [(i, j if i % 2 == 0 else w - 1 - j) for i in range(h) for j in range(w)],
            "snake_col": [(i if j % 2 == 0 else h - 1 - i, j) for j in range(w) for i in range(h)]}[name]


def _multiscale_loop(x, H, W, full_order, coarse_orders):
    """MSVMamba's two scales, by grid coordinates: branch 0 visits the full grid's cells in its
    order; branch k ≥ 1 visits the cells (2a, 2b) of the coarse grid in its order; each runs
    Mamba-1's loop on the gathered sequence and writes back per cell; the coarse sum is upsampled
    with torch's nearest interpolation; then silu(z)."""
    Hc, Wc = (H + 1) // 2, (W + 1) // 2
    batch, dim, _ = x["u"].shape

    def branch(k, cells):  # cells: full-grid (row, col) visited in order -> {cell: output (batch, dim)}
        pos = [i * W + j for i, j in cells]
        y = selective_scan_loop(x["u"][..., pos], x["delta"][:, k][..., pos], x["A"][k], x["B"][:, k][..., pos],
                                x["C"][:, k][..., pos], D=None if x.get("D") is None else x["D"][k],
                                delta_bias=None if x.get("delta_bias") is None else x["delta_bias"][k],
                                delta_softplus=True)
        return {c: y[..., n] for n, c in enumerate(cells)}

    fine = branch(0, full_order if isinstance(full_order, list) else cells(full_order, H, W))
    coarse = np.zeros((batch, dim, Hc, Wc))
    for k, order in enumerate(coarse_orders, start=1):
        visited = order if isinstance(order, list) else cells(order, Hc, Wc)
        for (a, b), v in branch(k, [(2 * a, 2 * b) for a, b in visited]).items():
            coarse[..., a // 2, b // 2] += v
    up = torch.nn.functional.interpolate(torch.from_numpy(coarse), size=(H, W), mode="nearest").numpy()
    out = np.zeros((batch, dim, H * W))
    for i in range(H):
        for j in range(W):
            out[..., i * W + j] = fine[(i, j)] + up[..., i, j]
    return out * silu(x["z"]) if x.get("z") is not None else out


def _coarse_path(rng, H, W):
    """A random permutation of the coarse grid, as cells (for the loop) and as positions (for the op)."""
    Wc = (W + 1) // 2
    cells = [divmod(int(p), Wc) for p in rng.permutation(((H + 1) // 2) * Wc)]
    return cells, np.array([a * Wc + b for a, b in cells])


@pytest.mark.parametrize("grid", [(5, 7), (1, 6), (4, 4), (6, 3), (1, 1)])
def test_multiscale_numpy_matches_loop(grid, rng):
    H, W = grid
    x = _inputs(rng, 2, 3, 4, H * W, 4)
    got = multiscale_scan_2d(**x, grid=grid, delta_softplus=True, backend="numpy")
    assert got.shape == (2, 3, H * W)
    assert_close(got, _multiscale_loop(x, H, W, "row", ["col", "row_rev", "col_rev"]), 1e-12, "default orders")
    cells, path = _coarse_path(rng, H, W)
    x = _inputs(rng, 1, 2, 3, H * W, 3, D=False, z=False)
    got = multiscale_scan_2d(**x, grid=grid, delta_softplus=True, full_order="snake_col",
                             coarse_orders=["snake_row", path], backend="numpy")
    assert_close(got, _multiscale_loop(x, H, W, "snake_col", ["snake_row", cells]), 1e-12, "custom orders")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("grid", [(5, 7), (4, 3)])
def test_multiscale_triton_matches_loop(grid, device, rng):
    H, W = grid
    x = _inputs(rng, 2, 5, 3, H * W, 4)
    want = _multiscale_loop(x, H, W, "row", ["col", "row_rev", "col_rev"])
    t = {k: torch.tensor(v, device=device, dtype=torch.float32) for k, v in x.items()}
    got = multiscale_scan_2d(**t, grid=grid, delta_softplus=True, backend="triton")
    assert got.shape == (2, 5, H * W) and got.dtype == torch.float32 and got.device.type == device
    assert_close(got, want, 1e-5, f"multiscale on {device}")


@pytest.mark.parametrize("change, match", [
    (dict(grid=(3, 5)), r"grid: H×W = 3×5 = 15 is not the length L=12 of u"),
    (dict(grid=(0, 12)), r"grid: H must be a positive integer"),
    (dict(grid=12), r"grid: expected \(H, W\)"),
    (dict(coarse_orders=["col"]), r"delta: expected shape \(batch, K, dim, L\) with K = 1 \+ len\(coarse_orders\) "
                                  r"= \(1, 2, 2, 12\), got \(1, 4, 2, 12\)"),
    (dict(A=-np.ones((3, 2, 2))), r"A: expected shape \(K, dim, N\) with K = 1 \+ len\(coarse_orders\) = \(4, 2, 2\)"),
    (dict(B=np.zeros((1, 4, 3, 12))), r"B: expected shape \(batch, K, N, L\) = \(1, 4, 2, 12\)"),
    (dict(D=np.zeros((3, 2))), r"D: expected shape \(K, dim\) = \(4, 2\)"),
    (dict(z=np.zeros((1, 2, 6))), r"z: expected shape \(batch, dim, L\) = \(1, 2, 12\)"),
    (dict(full_order="diagonal"), r"full_order: unknown 2-D order 'diagonal'"),
    (dict(full_order=np.arange(11)),
     r"full_order: expected an integer permutation of range\(L=12\).* \(the 3×4 grid\)"),
    (dict(coarse_orders=["col", "row", "zigzag"]), r"coarse_orders\[2\]: unknown 2-D order 'zigzag'"),
    (dict(coarse_orders=["col", np.array([0, 0, 1, 2]), "row"]),
     r"coarse_orders\[1\]: not a permutation of range\(L=4\) \(the 2×2 coarse grid\)"),
    (dict(coarse_orders=["col", np.arange(6), "row"]),
     r"coarse_orders\[1\]: expected an integer permutation of range\(L=4\), got shape \(6,\).*"
     r" \(the 2×2 coarse grid\)"),
    (dict(coarse_orders="col"), r"coarse_orders: expected a list of orders"),
])
def test_multiscale_bad_input_names_the_argument(change, match):
    x = dict(u=np.zeros((1, 2, 12)), delta=np.zeros((1, 4, 2, 12)), A=-np.ones((4, 2, 2)), B=np.zeros((1, 4, 2, 12)),
             C=np.zeros((1, 4, 2, 12)), grid=(3, 4))
    x.update(change)
    with pytest.raises(ValueError, match=match):
        multiscale_scan_2d(**x, backend="numpy")
