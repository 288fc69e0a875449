"""Strided grid views (multi-scale orders): a grid order whose group scans every s-th row and column,
read back at every position by `upsample` — MSVMamba's coarse branch in the same graph and kernel.

The reference is written from grid coordinates, independently of ssmc.ir.grid: each group walks
the cells of its ⌈H/s⌉×⌈W/s⌉ grid in its named order, reads the inputs at the anchors (s·a, s·b),
runs Mamba-1's loop, and its result at cell (a, b) is added at every position (i, j) with
(i // s, j // s) = (a, b), gated there by silu(z).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from test_grid_orders import order_inputs
from test_orders import cells

import ssmc
from ssmc.backends.triton import Schedule
from ssmc.ir import IRError
from ssmc.ir.indexmap import grid_order
from ssmc.ops import multiscale_scan_2d
from ssmc.ops.multi_order import multi_order_compiled

from conftest import DEVICES, assert_close
from reference_forms import selective_scan_loop, silu


def _reference(x, H, W, names, strides):
    batch, dim, L = x["u"].shape
    total = np.zeros((batch, dim, L))
    for k, (name, s) in enumerate(zip(names, strides)):
        Hc, Wc = -(-H // s), -(-W // s)
        visited = cells(name, Hc, Wc)
        pos = [s * a * W + s * b for a, b in visited]
        ch = slice(k * dim, (k + 1) * dim)
        y = selective_scan_loop(x["u"][..., pos], x["delta"][:, ch][..., pos], x["A"][ch], x["B"][:, k][..., pos],
                                x["C"][:, k][..., pos], D=x["D"][ch], delta_bias=x["delta_bias"][ch],
                                delta_softplus=True)
        at_cell = {c: y[..., n] for n, c in enumerate(visited)}
        for i in range(H):
            for j in range(W):
                total[..., i * W + j] += at_cell[(i // s, j // s)]
    return total * silu(x["z"])


def _key(H, W, names, strides):
    return f"{H}x{W}:{','.join(names)}:{','.join(map(str, strides))}"


VIEWS = [(("row", "col", "row_rev", "col_rev"), (1, 2, 2, 2)),  # MSVMamba
         (("snake_col", "snake_row", "col_rev"), (2, 3, 1)),
         (("col",), (2,)), (("row_rev", "snake_col"), (3, 2))]


@pytest.mark.parametrize("grid", [(5, 7), (1, 6), (4, 4), (7, 3), (1, 1)])
def test_numpy_strided_views_match_the_coordinate_loop(grid, rng):
    H, W = grid
    for names, strides in VIEWS:
        x = order_inputs(rng, 2, 3, 4, H * W, len(names))
        got = multi_order_compiled(True, True, True, True, "numpy", grid=_key(H, W, names, strides))(**x)["out"]
        assert_close(got, _reference(x, H, W, names, strides), 1e-12, f"{names} {strides} on {H}x{W}")


# chunk 2 / 4 split the coarse grids' rows and columns over several chunks and tiles; block_d 8 > dim
CASES = [((5, 7), VIEWS[0], Schedule()), ((5, 7), VIEWS[0], Schedule(chunk=2, block_d=2)),
         ((7, 3), VIEWS[1], Schedule(chunk=4, block_d=1, layout="tdn")),
         ((4, 4), VIEWS[3], Schedule(chunk=2, block_d=4, layout="tnd", num_warps=1)),
         ((1, 6), VIEWS[0], Schedule(chunk=1, block_d=8)), ((6, 5), VIEWS[2], Schedule(chunk=2, block_d=2))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("grid, view, sched", CASES)
def test_triton_strided_views_match_numpy(grid, view, sched, device, rng):
    (H, W), (names, strides) = grid, view
    x = order_inputs(rng, 2, 3, 4, H * W, len(names))
    fn = multi_order_compiled(True, True, True, True, "numpy", grid=_key(H, W, names, strides))
    want = fn(**x)["out"]
    t = {k: torch.tensor(v, device=device, dtype=torch.float32) for k, v in x.items()}
    got = ssmc.compile(fn.graph, backend="triton", schedule=sched)(**t, out=torch.full_like(t["u"], float("nan")))
    assert_close(got["out"], want, 2e-5, f"{names} {strides} on {H}x{W}, {sched}, {device}")


@pytest.mark.parametrize("device", DEVICES)
def test_strided_kernel_launched_at_another_chunk(device, rng):
    """The generated module's launch takes a schedule: whether chunks tile a view's anchors is decided
    by the kernel's CHUNK (a constexpr), not by the chunk it was generated with."""
    from ssmc.backends.triton import build
    H, W, names, strides = 5, 7, ("row", "row_rev"), (1, 2)  # row_rev/2: 12 anchors, 4 | 12, 16 ∤ 12
    x = order_inputs(rng, 2, 3, 4, H * W, 2)
    fn = multi_order_compiled(True, True, True, True, "numpy", grid=_key(H, W, names, strides))
    want = fn(**x)["out"]
    t = {k: torch.tensor(v, device=device, dtype=torch.float32) for k, v in x.items()}
    kernel = build(fn.graph, Schedule(chunk=4))
    for chunk in (4, 16):
        assert_close(kernel.module.launch(**t, schedule={"chunk": chunk})["out"], want, 2e-5, f"chunk {chunk}")


def _upsampled_state_graph(names, strides, H=5, W=7):
    """The scan's state itself upsampled (no readout), one order per group."""
    order = grid_order(H, W, names, strides=strides)
    m = ssmc.Builder("upstate")
    a, x = m.input("a", ("batch", "dim", "L")), m.input("x", ("batch", "dim", "L"))
    h = m.scan(a, x * m.input("b", ("batch", "K:g", "L")), order=order)
    m.output("h", m.upsample(h, order), ("batch", "dim", "L"))
    return m.build()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("names, strides", [(("col", "row"), (2, 2)), (("col", "row"), (1, 2)),
                                            (("row", "col_rev"), (2, 3)), (("col", "row"), (1, 1))])
def test_upsampled_state_with_column_and_row_branches(names, strides, device, rng):
    """Each branch lowers the nodes after the upsample from the names the main pass gave (a column
    branch renames the scan's state for its passes); stride 1 everywhere: upsample is the identity."""
    graph = _upsampled_state_graph(names, strides)
    x = dict(a=rng.uniform(0.5, 0.9, (2, 4, 35)), x=rng.standard_normal((2, 4, 35)), b=rng.standard_normal((2, 2, 35)))
    want = ssmc.compile(graph, backend="numpy")(**x)["h"]
    t = {k: torch.tensor(v, device=device, dtype=torch.float32) for k, v in x.items()}
    got = ssmc.compile(graph, backend="triton", schedule=Schedule(chunk=4, block_d=2))(**t)["h"]
    assert_close(got, want, 2e-5, f"{names} {strides} on {device}")


@pytest.mark.parametrize("device", DEVICES)
def test_hoisted_factor_after_the_upsample(device, rng):
    """An expression after the upsample whose time-invariant factor is hoisted before the loop
    (exp(c·z): c·log2(e) computed once) keeps that line."""
    from ssmc.ir import builder as d
    order = grid_order(5, 3, "col", strides=(2,))
    m = ssmc.Builder("hoist")
    u = m.input("u", ("batch", "dim", "L"))
    A_bar, B_scale = m.discretize(d.softplus(m.input("delta", ("batch", "dim", "L"))), m.input("A", ("dim", "N")),
                                  "zoh_euler")
    h = m.scan(A_bar, B_scale * m.input("B", ("batch", "N", "L")) * u, order=order)
    y = m.upsample((m.input("C", ("batch", "N", "L")) * h).sum("n"), order)
    gate, _ = m.discretize(m.input("z", ("batch", "dim", "L")), m.input("c", ("dim",)), "zoh_euler")
    m.output("y", y * gate, ("batch", "dim", "L"))
    graph = m.build()
    x = dict(u=rng.standard_normal((2, 3, 15)), delta=rng.standard_normal((2, 3, 15)), A=-rng.uniform(0.5, 2, (3, 4)),
             B=rng.standard_normal((2, 4, 15)), C=rng.standard_normal((2, 4, 15)), c=rng.standard_normal(3),
             z=rng.standard_normal((2, 3, 15)))
    want = ssmc.compile(graph, backend="numpy")(**x)["y"]
    t = {k: torch.tensor(v, device=device, dtype=torch.float32) for k, v in x.items()}
    assert_close(ssmc.compile(graph, backend="triton")(**t)["y"], want, 2e-5, device)


def test_multiscale_kernel_is_one_launch_reading_no_index():
    """MSVMamba's four scans: one kernel, the coarse ones walking the anchors of the 3×4 grid of a 5×7
    grid, the gate and the merged output per position of each cell (a static loop of 2×2 offsets)."""
    src = multi_order_compiled(True, True, True, True, "triton", grid="5x7:row,col,row_rev,col_rev:1,2,2,2").source
    launcher = src.split("def launch")[1]
    assert launcher.count("[grid](") == 1 and "orders_ptr" not in src
    assert launcher.count("torch.zeros(") + launcher.count("torch.empty(") == 1  # the merged output only
    assert "# ---- col of the 3x4 grid" in src and "# ---- col_rev of the 3x4 grid" in src
    assert "for k0 in range(0, 12, CHUNK):" in src  # row_rev: the 12 anchors, not the 35 positions
    assert src.count("for o in tl.static_range(4):") == 3  # the coarse branches' upsampling
    assert "tl.gather(" not in src.replace("tl.gather(hc11", "")  # the only gather: the column carries


def test_multiscale_scan_2d_takes_one_graph_for_named_orders(rng, monkeypatch):
    """Named orders: one call of the strided-view graph (no subsampled or upsampled copies); a random
    coarse path or a tensor requiring grad: the two multi-order scans around gathers."""
    import ssmc.ops.multiscale as multiscale
    H, W = 5, 7
    K, dim, N = 4, 3, 4
    x = order_inputs(rng, 2, dim, N, H * W, K)
    args = dict(u=x["u"], delta=x["delta"].reshape(2, K, dim, H * W), A=x["A"].reshape(K, dim, N), B=x["B"],
                C=x["C"], D=x["D"].reshape(K, dim), z=x["z"], delta_bias=x["delta_bias"].reshape(K, dim))
    calls = []
    run = multiscale.run_multi_order
    monkeypatch.setattr(multiscale, "run_multi_order", lambda *a: calls.append(a[-1]) or run(*a))
    want = _reference(x, H, W, ("row", "col", "row_rev", "col_rev"), (1, 2, 2, 2))
    got = multiscale_scan_2d(**args, grid=(H, W), delta_softplus=True, backend="numpy")
    assert calls == ["5x7:row,col,row_rev,col_rev:1,2,2,2"]
    assert_close(got, want, 1e-12, "fused")
    t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=k == "u") for k, v in args.items()}
    calls.clear()
    got = multiscale_scan_2d(**t, grid=(H, W), delta_softplus=True, backend="numpy")
    assert_close(got.detach(), want, 1e-12, "requires grad")
    assert "5x7:row,col,row_rev,col_rev:1,2,2,2" not in calls
    hits = multiscale.device_copies.cache_info().hits
    again = multiscale_scan_2d(**t, grid=(H, W), delta_softplus=True, backend="numpy")
    assert torch.equal(again, got)
    assert multiscale.device_copies.cache_info().hits == hits + 5  # 4 named orders, the sub/up maps: reused


def _graph(order, upsample=True, last=False, other=None):
    m = ssmc.Builder("view")
    a, x = m.input("a", ("batch", "dim", "L")), m.input("x", ("batch", "dim", "L"))
    h = m.scan(a, x, order=order)
    m.output("h", m.upsample(h, other or order) if upsample else h, ("batch", "dim", "L"))
    if last:
        m.output("h_last", m.last(h), ("batch", "dim"))
    return m.build()


def test_strided_view_errors_name_the_node():
    view = grid_order(5, 3, "col", strides=(2,))
    _graph(view)  # the well-formed graph
    with pytest.raises(IRError, match=r"reads the strided grid scan %2 without an upsample"):
        _graph(view, upsample=False)
    with pytest.raises(IRError, match=r"\(last\): a strided grid view has no final state"):
        _graph(view, last=True)
    with pytest.raises(IRError, match=r"\(upsample\): no scan has its order grid5x3\[row/2\]"):
        _graph(view, other=grid_order(5, 3, "row", strides=(2,)))
    for names, strides in ((["row", "col"], (2,)), (["row", "col"], (1,)), (["row"], (2.7,)), (["row"], (True,)),
                           (["row"], (0,))):  # one int >= 1 per name (all-1 strides too)
        with pytest.raises(ValueError, match=r"one positive int stride per name"):
            grid_order(5, 3, names, strides=strides)
    assert grid_order(5, 3, "row", strides=(1,)) == grid_order(5, 3, "row")  # stride 1: the plain order
    m = ssmc.Builder("bad")
    v = m.input("a", ("batch", "dim", "L"))
    with pytest.raises(IRError, match=r"\(upsample\): its order must be a grid order"):
        m.output("y", m.upsample(v, "forward"), ("batch", "dim", "L"))
        m.build()


def test_strided_view_does_not_export_to_onnx():
    graph = multi_order_compiled(True, True, True, True, "numpy", grid="5x7:row,col:1,2").graph
    with pytest.raises(NotImplementedError, match=r"grid5x7\[row,col/2\] scan \(a strided grid view"):
        ssmc.export_onnx(graph, sizes={"K": 2, "dim": 3, "KD": 6, "N": 4})
