"""Grid orders (ssmc.ir.grid): named 2-D orders as an IR index map, no index tensor.

The NumPy interpreter's grid order equals the same scan read through the permutation as a gather;
the Triton lowering (rows: computed time indices; columns: lanes over columns, two passes) equals
the NumPy gather form across schedules, including several tiles of columns and grids that do not
fill a tile; multi_order_scan recognizes scan_orders_2d's permutations and nothing else.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import ssmc
from ssmc.backends.triton import Schedule
from ssmc.ir.grid import NAMED_2D, grid_permutation, match_grid
from ssmc.ir.indexmap import IndexMap, grid_order
from ssmc.ops import scan_orders_2d
from ssmc.ops.multi_order import multi_order_compiled, orders_array

from conftest import DEVICES, assert_close

ORDER_SETS = [("row", "col", "row_rev", "col_rev"), ("snake_row", "snake_col"), ("col",),
              ("col_rev", "snake_col", "row")]


def order_inputs(rng, batch, dim, N, L, K):
    return dict(u=rng.standard_normal((batch, dim, L)), delta=rng.uniform(-3.0, 0.5, (batch, K * dim, L)),
                A=-rng.uniform(0.5, 3.0, (K * dim, N)), B=rng.standard_normal((batch, K, N, L)),
                C=rng.standard_normal((batch, K, N, L)), D=rng.standard_normal(K * dim),
                z=rng.standard_normal((batch, dim, L)), delta_bias=0.1 * rng.standard_normal(K * dim))


def _key(H, W, names):
    return f"{H}x{W}:{','.join(names)}"


@pytest.mark.parametrize("grid", [(5, 7), (1, 6), (4, 4), (3, 9)])
def test_numpy_grid_order_equals_its_gather(grid, rng):
    H, W = grid
    for names in ORDER_SETS:
        x = order_inputs(rng, 2, 3, 4, H * W, len(names))
        gather = multi_order_compiled(True, True, True, True, "numpy")(
            **x, orders=np.stack(scan_orders_2d(H, W, names)))
        got = multi_order_compiled(True, True, True, True, "numpy", grid=_key(H, W, names))(**x)
        assert_close(got["out"], gather["out"], 1e-13, f"{names} on {H}x{W}")


# (grid, orders, schedule): chunks of 2 and 4 split 7 and 9 columns over several tiles (the carry
# between tiles); chunk 1 makes one lane per tile; block_d 8 > dim keeps blocks inside a group
CASES = [((5, 7), ORDER_SETS[0], Schedule()), ((5, 7), ORDER_SETS[0], Schedule(chunk=2, block_d=2)),
         ((5, 7), ORDER_SETS[3], Schedule(chunk=4, block_d=1, layout="tdn")),
         ((3, 9), ORDER_SETS[1], Schedule(chunk=4, block_d=4, layout="tnd", num_warps=1)),
         ((3, 9), ORDER_SETS[2], Schedule(chunk=1, block_d=8)), ((1, 6), ORDER_SETS[0], Schedule()),
         ((4, 4), ORDER_SETS[1], Schedule(chunk=2, block_d=1, layout="tdn")), ((4, 4), ORDER_SETS[0], Schedule()),
         ((3, 5), ORDER_SETS[0], Schedule(chunk=4, block_d=4, layout="tdn", full_tiles=True))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("grid, names, sched", CASES)
def test_triton_grid_orders_match_numpy_across_schedules(grid, names, sched, device, rng):
    H, W = grid
    x = order_inputs(rng, 2, 3, 4, H * W, len(names))
    want = multi_order_compiled(True, True, True, True, "numpy")(
        **x, orders=np.stack(scan_orders_2d(H, W, names)))["out"]
    graph = multi_order_compiled(True, True, True, True, "numpy", grid=_key(H, W, names)).graph
    t = {k: torch.tensor(v, device=device, dtype=torch.float32) for k, v in x.items()}
    got = ssmc.compile(graph, backend="triton", schedule=sched)(**t, out=torch.full_like(t["u"], float("nan")))
    assert_close(got["out"], want, 2e-5, f"{names} on {H}x{W}, {sched}, {device}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["col", "col_rev", "snake_col"])
def test_triton_column_order_of_a_decay_that_is_no_exponential(name, device, rng):
    """Ā given as an input (no e^{c·x} to sum in the exponent): the column passes multiply the
    column's decays step by step instead."""
    m = ssmc.Builder("grid_scan")
    a, x = m.input("a", ("batch", "dim", "L")), m.input("x", ("batch", "dim", "L"))
    m.output("h", m.scan(a, x, order=grid_order(5, 7, name)), ("batch", "dim", "L"))
    graph = m.build()
    arrays = dict(a=rng.uniform(0.5, 1.0, (2, 3, 35)), x=rng.standard_normal((2, 3, 35)))
    want = ssmc.compile(graph, backend="numpy")(**arrays)["h"]
    fn = ssmc.compile(graph, backend="triton", schedule=Schedule(chunk=4, block_d=2))
    assert "pc2 = pc2 * v0" in fn.source and "tl.exp(" not in fn.source
    t = {k: torch.tensor(v, device=device, dtype=torch.float32) for k, v in arrays.items()}
    got = fn(**t, h=torch.full_like(t["x"], float("nan")))["h"]
    assert_close(got, want, 2e-6, f"{name}, {device}")


def test_grid_kernel_reads_no_index_and_is_one_launch():
    fn = multi_order_compiled(True, True, True, True, "triton", grid="5x7:row,col,row_rev,col_rev")
    src = fn.source
    launcher = src.split("def launch")[1]
    assert "orders_ptr" not in src and "orders" not in src.split("def launch")[1].split(":")[0]
    assert launcher.count("[grid](") == 1
    assert launcher.count("torch.zeros(") + launcher.count("torch.empty(") == 1  # the merged output only
    # a branch per order, its index map static (the last one the else)
    assert ("if (g_blk == 0):" in src and "elif (g_blk == 1):" in src and "elif (g_blk == 2):" in src
            and "    else:" in src)
    assert "# ---- col of the 5x7 grid" in src and "# ---- col_rev of the 5x7 grid" in src
    assert src.count("tl.associative_scan((pc") == 2  # the carries between columns (col, col_rev)
    assert "combine_fn=_combine_real, reverse=True)" in src  # col_rev: lanes over ascending columns
    # ZOH's Ā = e^{A·Δ}: a column's total decay is one exp of A·ΣΔ, not a product over its steps
    assert src.count("tl.exp(v5 * sc11)") == 2 and "pc11 = pc11 *" not in src


def test_multi_order_scan_uses_the_grid_order_for_named_orders(rng):
    from ssmc.ops.multi_order import grid_key
    L = 35
    assert grid_key(np.stack(scan_orders_2d(5, 7, ["row", "col", "row_rev", "col_rev"]))) == \
        "5x7:row,col,row_rev,col_rev"
    assert grid_key(np.stack([np.arange(L), np.arange(L)[::-1]])) == "35x1:row,row_rev"  # Vim: any grid's rows
    assert grid_key(np.stack([np.arange(L), rng.permutation(L)])) == ""  # a random path: a gather
    x = rng.standard_normal((1, 2, L))
    _, key = orders_array(scan_orders_2d(5, 7, ["col", "snake_row"]), 2, L, x)
    assert key == "5x7:col,snake_row"


@pytest.mark.parametrize("H, W", [(5, 7), (7, 5), (1, 6), (6, 1), (4, 4), (2, 3)])
def test_match_grid_recognizes_every_named_order(H, W):
    for name in NAMED_2D:
        got = match_grid(grid_permutation(H, W, name)[None])
        assert got is not None
        gH, gW, (gname,) = got
        assert np.array_equal(grid_permutation(gH, gW, gname), grid_permutation(H, W, name))
    mixed = np.stack([grid_permutation(H, W, n) for n in NAMED_2D])
    gH, gW, names = match_grid(mixed)
    assert all(np.array_equal(grid_permutation(gH, gW, n), o) for n, o in zip(names, mixed))


def test_grid_order_in_the_ir_text_and_its_errors():
    m = ssmc.Builder("grid_scan")
    a, x = m.input("a", ("batch", "dim", "L")), m.input("x", ("batch", "dim", "L"))
    m.output("h", m.scan(a, x, order=grid_order(2, 3, "col")), ("batch", "dim", "L"))
    g = ssmc.compile(m.build(), backend="numpy")
    assert "order=grid2x3[col]" in g.graph.text()
    a_, x_ = np.full((1, 1, 6), 0.5), np.arange(6.0)[None, None]
    h, want = 0.0, np.empty(6)
    for t in grid_permutation(2, 3, "col"):
        h = 0.5 * h + t
        want[t] = h
    assert_close(g(a=a_, x=x_)["h"][0, 0], want, 1e-15, "grid col")
    with pytest.raises(ValueError, match="H×W = 6 is not the length L=7"):
        g(a=np.ones((1, 1, 7)), x=np.ones((1, 1, 7)))
    with pytest.raises(ValueError, match="grid order: expected names among"):
        IndexMap("grid", (2, 3), ("diagonal",))
    with pytest.raises(ValueError, match=r"grid order: expected grid=\(H, W\)"):
        IndexMap("grid", (0, 3), ("row",))


def test_grid_orders_need_one_per_group(rng):
    """Three named orders for inputs grouped in two: refused by name, not scanned with a wrong order."""
    graph = multi_order_compiled(True, True, True, True, "numpy", grid="5x7:row,col,row_rev").graph
    x = order_inputs(rng, 1, 2, 4, 35, 2)
    with pytest.raises(ssmc.ir.IRError, match="3 orders, one per group, but the inputs have 2 groups"):
        ssmc.compile(graph, backend="numpy")(**x)
    t = {k: torch.tensor(v, dtype=torch.float32) for k, v in x.items()}
    with pytest.raises(ValueError, match="3 orders, one per group, but the inputs have 2 groups"):
        ssmc.compile(graph, backend="triton")(**t)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("grid, dtype", [((6, 1), torch.float32), ((1, 1), torch.float32), ((7, 3), torch.float64)])
def test_triton_grid_orders_on_degenerate_grids_and_in_float64(grid, dtype, device, rng):
    """One column, one cell, and float64 arithmetic: the lane shift and the per-column decay totals
    hold at the edges (the schedule is CUDA's default for grid orders)."""
    H, W = grid
    for names in (ORDER_SETS[0], ("snake_col", "col_rev")):
        x = order_inputs(rng, 2, 3, 4, H * W, len(names))
        want = multi_order_compiled(True, True, True, True, "numpy")(
            **x, orders=np.stack(scan_orders_2d(H, W, names)))["out"]
        graph = multi_order_compiled(True, True, True, True, "numpy", grid=_key(H, W, names)).graph
        t = {k: torch.tensor(v, dtype=dtype, device=device) for k, v in x.items()}
        fn = ssmc.compile(graph, backend="triton", schedule=Schedule(layout="tdn", block_d=2, chunk=64, num_warps=1))
        got = fn(**t, out=torch.full_like(t["u"], float("nan")))["out"]
        assert_close(got, want, 2e-5 if dtype == torch.float32 else 1e-12, f"{names} on {H}x{W}, {dtype}, {device}")


def test_triton_grid_kernel_refuses_another_length(rng):
    graph = multi_order_compiled(True, True, True, True, "numpy", grid="5x7:row,col").graph
    t = {k: torch.tensor(v, dtype=torch.float32) for k, v in order_inputs(rng, 1, 2, 4, 36, 2).items()}
    with pytest.raises(ValueError, match=r"the sequence length L=36 is not H×W = 35"):
        ssmc.compile(graph, backend="triton")(**t)


def test_grid_graph_has_no_onnx_lowering_and_says_what_exports():
    graph = multi_order_compiled(True, True, True, True, "numpy", grid="5x7:row,col").graph
    with pytest.raises(NotImplementedError, match="order='gather'"):
        ssmc.export_onnx(graph, sizes={"K": 2, "dim": 3, "KD": 6, "N": 4})


def test_grid_kernel_launches_the_longest_orders_first():
    # column orders (two passes) before row orders, a reversed walk before its forward one, full-resolution
    # views before strided ones (grid.COLUMN_COST, REVERSED_COST); the schedule-sweeping tests above check that
    # results do not depend on it
    src = multi_order_compiled(True, True, True, True, "triton", grid="5x7:row,col,row_rev,col_rev").source
    assert "blk = tl.where(rank == 0, 3, tl.where(rank == 1, 1, tl.where(rank == 2, 2, 0))) * bpg" in src
    src = multi_order_compiled(True, True, True, True, "triton", grid="56x56:row,col,row_rev,col_rev:1,2,2,2").source
    assert "blk = tl.where(rank == 0, 0, tl.where(rank == 1, 3, tl.where(rank == 2, 1, 2))) * bpg" in src
    src = multi_order_compiled(True, True, True, True, "triton", grid="5x7:row,snake_row").source
    assert "blk = tl.program_id(1)" in src and "rank" not in src  # equal costs: launched as given


def test_every_named_order_has_a_launch_rank():
    # col_rev, then col and snake_col (equal: as given), row_rev, then row and snake_row
    src = multi_order_compiled(True, True, True, True, "triton",
                               grid="5x7:row,col,row_rev,col_rev,snake_row,snake_col").source
    assert ("blk = tl.where(rank == 0, 3, tl.where(rank == 1, 1, tl.where(rank == 2, 5, tl.where(rank == 3, 2, "
            "tl.where(rank == 4, 0, 4))))) * bpg") in src


def test_cost_model_gives_grid_orders_two_channels_per_program_on_cuda():
    from ssmc.backends.triton import strategy
    graph = multi_order_compiled(True, True, True, True, "numpy", grid="56x56:row,col,row_rev,col_rev").graph
    roles = {"n": 16, "t": 3136, "h": 1536}
    want = Schedule(layout="tdn", block_d=2, chunk=64, num_warps=1)
    assert strategy.choose_schedule(graph, roles, "cuda") == want
    assert repr(want) in strategy.choose(graph, roles, "cuda")[1]  # the reason names the schedule it runs
    assert strategy.choose_schedule(graph, roles, "cpu") == Schedule()
    strided = multi_order_compiled(True, True, True, True, "numpy", grid="56x56:row,col,row_rev,col_rev:1,2,2,2").graph
    assert strategy.choose_schedule(strided, roles, "cuda") == Schedule(layout="tdn", block_d=4, chunk=32, num_warps=1)


@pytest.mark.parametrize("device", DEVICES)
def test_tied_b_and_c_on_grid_orders_take_the_grid_kernel(device, rng, monkeypatch):
    """B and C both tied: no input is grouped by order, so B reaches the grid graph as a stride-0
    (batch, K, N, L) view (not the gather graph, not a copy); the result is the gather form's."""
    import ssmc.ops.multi_order as so
    H, W, names = 4, 5, ORDER_SETS[0]
    K, L = len(names), H * W
    x = order_inputs(rng, 2, 3, 4, L, K)
    x["B"], x["C"] = x["B"][:, 0], x["C"][:, 0]
    want = multi_order_compiled(True, True, True, True, "numpy", "sum", 1, frozenset({"B", "C"}))(
        **x, orders=np.stack(scan_orders_2d(H, W, names)))["out"]
    grids = []
    real = so.multi_order_compiled
    monkeypatch.setattr(so, "multi_order_compiled",
                        lambda *a, **k: grids.append(a[8] if len(a) > 8 else k.get("grid", "")) or real(*a, **k))
    t = {k: torch.tensor(v, device=device, dtype=torch.float32) for k, v in x.items()}
    got = ssmc.ops.multi_order_scan(t["u"], t["delta"].reshape(2, K, 3, L), t["A"].reshape(K, 3, 4), t["B"], t["C"],
                                    scan_orders_2d(H, W, names), D=t["D"].reshape(K, 3), z=t["z"],
                                    delta_bias=t["delta_bias"].reshape(K, 3), delta_softplus=True, tie=("B", "C"),
                                    backend="triton")
    assert grids == [_key(H, W, names)]
    assert_close(got, want, 2e-5, f"tied B, C on {device}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("grid, names", [((3, 4), ("row", "col", "row_rev", "col_rev")), ((2, 5), ("snake_col",))])
def test_gradients_of_grid_orders_equal_those_of_their_gathers(grid, names, device, rng):
    """A grid order's gradient is derived on its unfolded form, its permutations an input the runtime
    derives; it equals the gradient of the same scan read through the permutations as a gather order
    (whose gradient tests/test_orders_unfolded.py holds to float64 autograd)."""
    H, W = grid
    x = order_inputs(rng, 2, 3, 4, H * W, len(names))
    ct = {"out": rng.standard_normal((2, 3, H * W))}
    gather = multi_order_compiled(True, True, True, True, "numpy")
    want = gather.grad(dict(x, orders=np.stack(scan_orders_2d(H, W, names))), ct)
    graph = multi_order_compiled(True, True, True, True, "numpy", grid=_key(H, W, names)).graph
    got = ssmc.compile(graph, backend="numpy").grad(x, ct)
    assert set(got) == {f"grad_{k}" for k in x}
    for k in x:
        assert_close(got[f"grad_{k}"], want[f"grad_{k}"], 1e-12, f"numpy grad {k}")
    leaves = {k: torch.tensor(v, device=device, requires_grad=True) for k, v in x.items()}
    out = ssmc.compile(graph, backend="triton")(**leaves)["out"]
    grads = torch.autograd.grad((out * torch.tensor(ct["out"], device=device)).sum(), list(leaves.values()))
    for k, g in zip(leaves, grads):
        assert_close(g, want[f"grad_{k}"], 1e-10, f"triton grad {k}")


def test_a_strided_grid_order_has_no_gradient_yet(rng):
    x = order_inputs(rng, 2, 3, 4, 16, 2)
    graph = multi_order_compiled(True, True, True, True, "numpy", grid="4x4:row,col:1,2").graph
    with pytest.raises(NotImplementedError, match=r"a strided grid order \(a multi-scale view, grid4x4\[row,col/2\]\) "
                                                  r"is not unfolded"):
        ssmc.compile(graph, backend="numpy").grad(x, {"out": np.ones((2, 3, 16))})
