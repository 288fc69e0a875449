"""Gather orders through their unfolded form (ssmc.ir.passes.unfold): gradients of gather-order scans, orders
that differ per sample, and `permute` written by hand, against a float64 torch loop written from the
recurrence (one permutation per batch element and channel group), whose autograd gives the reference
gradients."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import ssmc
from ssmc.backends.onnx import to_onnx
from ssmc.ir import builder as d
from ssmc.runtime.compiled import optimize

from conftest import DEVICES, assert_close

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # Triton: the GPU where there is one
NAMES = ("u", "dt", "A", "B", "C")


def gather_graph(index_axes, h0=False, partial=False):
    """y = C·h + u and the final state of a selective scan along a gather order (partial: rows of positions
    then -1, the unlisted positions seeing the initial state, ssmc.ir.passes.partial)."""
    m = ssmc.Builder("gathered")
    u, dt = m.input("u", ("batch", "L", "dim")), m.input("dt", ("batch", "L", "dim"))
    A, B, C = m.input("A", ("dim", "N")), m.input("B", ("batch", "L", "N")), m.input("C", ("batch", "L", "N"))
    idx = m.input("order", index_axes, integer=True)
    init = m.input("h0", ("batch", "dim", "N")) if h0 else None
    h = m.scan(d.exp(dt * A), dt * B * u, h0=init, order="gather", index=idx,
               unvisited="initial" if partial else None)
    m.output("y", (C * h).sum("n") + u, ("batch", "L", "dim"))
    m.output("last", m.last(h), ("batch", "dim", "N"))
    return m.build()


def loop_ref(u, dt, A, B, C, order, h0=None, per_sample=False):
    """h visits time order[b, g, k] at step k (channel c in group g = c // (dim / G)) until a -1; y = C·h + u,
    a position never visited holding the initial state h0 (or 0)."""
    batch, L, D = u.shape
    order = order.reshape(batch if per_sample else 1, -1, L)
    G = order.shape[1]
    a = torch.exp(dt[..., None] * A)
    x = (dt * u)[..., None] * B[:, :, None]
    ys, lasts = [], []
    for b in range(batch):
        rows, ends = [], []
        for c in range(D):
            o = order[b if order.shape[0] > 1 else 0, c // (D // G)]
            h = h0[b, c] if h0 is not None else torch.zeros_like(A[c])
            col = [(C[b, t] * h).sum() + u[b, t, c] for t in range(L)]  # (a full order overwrites each)
            for t in o.tolist():
                if t < 0:
                    break
                h = a[b, t, c] * h + x[b, t, c]
                col[t] = (C[b, t] * h).sum() + u[b, t, c]
            rows.append(torch.stack(col))
            ends.append(h)
        ys.append(torch.stack(rows, 1))
        lasts.append(torch.stack(ends))
    return {"y": torch.stack(ys), "last": torch.stack(lasts)}


def inputs(rng, index_axes, batch=2, L=7, dim=4, N=3, G=2, h0=False, partial=False):
    """Random inputs; partial: each row keeps a number of positions (none, all, some, then random), then -1."""
    x = {"u": rng.standard_normal((batch, L, dim)), "dt": rng.uniform(0.1, 0.5, (batch, L, dim)),
         "A": -rng.uniform(0.5, 2.0, (dim, N)), "B": rng.standard_normal((batch, L, N)),
         "C": rng.standard_normal((batch, L, N))}
    lead = {("L",): (), ("G", "L"): (G,), ("batch", "G", "L"): (batch, G), ("batch", "L"): (batch,)}[index_axes]
    rows = [rng.permutation(L) for _ in range(int(np.prod(lead, dtype=int)))]
    if partial:
        kept = [[L, 0, int(rng.integers(1, L))][r] if r < 3 else int(rng.integers(0, L + 1)) for r in range(len(rows))]
        rows = [np.where(np.arange(L) < k, row, -1) for row, k in zip(rows, kept)]
    x["order"] = np.stack(rows).reshape(lead + (L,)).astype(np.int64)
    if h0:
        x["h0"] = rng.standard_normal((batch, dim, N))
    return x


AXES = [("L",), ("G", "L"), ("batch", "L"), ("batch", "G", "L")]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("index_axes", AXES)
@pytest.mark.parametrize("partial", [False, True])
def test_gather_orders_forward_and_gradients(rng, device, index_axes, partial):
    h0 = index_axes in (("G", "L"), ("batch", "L")) if partial else index_axes == ("G", "L")
    x = inputs(rng, index_axes, L=int(rng.integers(4, 9)), h0=h0, partial=partial)
    g = gather_graph(index_axes, h0=h0, partial=partial)
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


def test_numpy_backend_gradient_of_a_gather_order(rng):
    x = inputs(rng, ("G", "L"))
    fn = ssmc.compile(gather_graph(("G", "L")), backend="numpy")
    leaves = {k: torch.tensor(v, requires_grad=v.dtype != np.int64) for k, v in x.items()}
    want = loop_ref(**leaves)
    cts = {k: rng.standard_normal(v.shape) for k, v in want.items()}
    want_g = torch.autograd.grad(sum((want[k] * torch.from_numpy(cts[k])).sum() for k in want),
                                 [leaves[k] for k in NAMES])
    got = fn.grad(x, cts)
    for k, w in zip(NAMES, want_g):
        assert_close(got[f"grad_{k}"], w, 1e-10, k)


def test_per_sample_orders_export_to_onnx(rng):
    ort = pytest.importorskip("onnxruntime")  # (optional: the GPU machine may lack it)
    x = inputs(rng, ("batch", "G", "L"))
    g = gather_graph(("batch", "G", "L"))
    want = loop_ref(**{k: torch.from_numpy(v) for k, v in x.items()}, per_sample=True)
    sess = ort.InferenceSession(to_onnx(g, sizes={"dim": 4, "N": 3, "G": 2}).SerializeToString())
    feed = {k: v if v.dtype == np.int64 else v.astype(np.float32) for k, v in x.items()}
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))
    for k in want:
        assert_close(outs[k], want[k], 2e-6, k)


def test_only_per_sample_orders_are_unfolded_by_the_pipeline():
    shared, _ = optimize(gather_graph(("G", "L")))
    per_sample, _ = optimize(gather_graph(("batch", "G", "L")))
    assert not shared.ids("permute") and len(shared.ids("scan")) == 1
    assert per_sample.ids("permute") and per_sample[per_sample.ids("scan")[0]].attr("order").kind == "identity"


def test_permute_by_hand_equals_the_gather_order(rng):
    m = ssmc.Builder("by_hand")
    u, a = m.input("u", ("batch", "L", "dim")), m.input("a", ("batch", "L", "dim"))
    idx = m.input("order", ("batch", "G", "L"), integer=True)
    h = m.scan(m.permute(d.sigmoid(a), idx), m.permute(u, idx))
    m.output("y", m.permute(h, idx, inverse=True), ("batch", "L", "dim"))
    m2 = ssmc.Builder("as_order")
    u2, a2 = m2.input("u", ("batch", "L", "dim")), m2.input("a", ("batch", "L", "dim"))
    m2.output("y", m2.scan(d.sigmoid(a2), u2, order="gather",
                           index=m2.input("order", ("batch", "G", "L"), integer=True)), ("batch", "L", "dim"))
    x = {"u": rng.standard_normal((3, 6, 4)), "a": rng.standard_normal((3, 6, 4)),
         "order": np.stack([np.stack([rng.permutation(6) for _ in range(2)]) for _ in range(3)])}
    for backend in ("numpy", "triton"):
        assert_close(ssmc.compile(m.build(), backend=backend)(**x)["y"],
                     ssmc.compile(m2.build(), backend="numpy")(**x)["y"], 1e-6, backend)


@pytest.mark.parametrize("index_axes", AXES)
def test_an_index_that_is_not_a_permutation_is_refused(rng, index_axes):
    """Per-sample orders (unfolded into permutes) and shared ones (read in place by the fused kernel) alike:
    a repeated index would leave a position unwritten."""
    x = inputs(rng, index_axes)
    flat = x["order"].reshape(-1, 7)
    flat[-1, 2] = flat[-1, 3]
    for backend in ("numpy", "triton"):
        fn = ssmc.compile(gather_graph(index_axes), backend=backend)
        with pytest.raises(ValueError, match=r"order: expected a permutation of 0..6 along L in every row"):
            fn(**x)
        with pytest.raises(ValueError, match=r"order: expected a permutation of 0..6 along L in every row"):
            fn.grad(x, {"y": np.ones((2, 7, 4))})


def test_a_torch_order_is_checked_again_once_it_changes(rng):
    x = {k: torch.tensor(v) for k, v in inputs(rng, ("L",)).items()}
    fn = ssmc.compile(gather_graph(("L",)), backend="triton")
    fn(**x)  # checked, and remembered
    x["order"][2] = x["order"][3]  # an in-place change bumps its version: checked again
    with pytest.raises(ValueError, match=r"order: expected a permutation"):
        fn(**x)


def test_gather_with_resets_has_no_backward_yet(rng):
    m = ssmc.Builder("gather_resets")
    u, a = m.input("u", ("batch", "L", "dim")), m.input("a", ("dim",))
    seq = m.input("seq_idx", ("batch", "L"), integer=True)
    idx = m.input("order", ("L",), integer=True)
    m.output("y", m.scan(d.sigmoid(a), u, seq_idx=seq, order="gather", index=idx), ("batch", "L", "dim"))
    fn = ssmc.compile(m.build(), backend="numpy")
    x = {"u": rng.standard_normal((2, 5, 3)), "a": rng.standard_normal(3), "seq_idx": np.zeros((2, 5), np.int64),
         "order": rng.permutation(5)}
    with pytest.raises(NotImplementedError, match=r"a gather- or grid-order scan with resets is not unfolded"):
        fn.grad(x, {"y": np.ones((2, 5, 3))})


@pytest.mark.parametrize("device", DEVICES)
def test_multi_order_graph_gradients_match_central_differences(rng, device):
    """multi_order_scan's graph (inputs shared by the orders' blocks over a role-r axis, per-group gather
    orders): its derived gradient, through the unfolded orders, against central differences of the
    float64 interpreter, and on Triton."""
    from ssmc.ir.inits import random_inputs
    from ssmc.ops import multi_order_graph

    from conftest import seed_of
    K, dim, N, L = 2, 3, 4, int(rng.integers(4, 8))
    g = multi_order_graph(K, "sum")
    x = random_inputs(g, dict(batch=2, dim=dim, KD=K * dim, N=N, L=L, K=K), seed_of(rng))
    fn = ssmc.compile(g, backend="numpy")
    cts = {k: rng.standard_normal(v.shape) for k, v in fn(**x).items()}
    got = fn.grad(x, cts)
    eps = 1e-6
    for name, v in x.items():
        if v.dtype == np.int64:
            continue
        for _ in range(3):
            at = tuple(int(rng.integers(s)) for s in v.shape)
            plus, minus = dict(x), dict(x)
            plus[name], minus[name] = v.copy(), v.copy()
            plus[name][at] += eps
            minus[name][at] -= eps
            fd = sum(((fn(**plus)[o] - fn(**minus)[o]) * cts[o]).sum() for o in cts) / (2 * eps)
            assert abs(fd - got[f"grad_{name}"][at]) <= 1e-6 * (1 + abs(fd)), (name, at, fd, got[f"grad_{name}"][at])
    leaves = {k: torch.tensor(v, device=device, requires_grad=v.dtype != np.int64) for k, v in x.items()}
    out = ssmc.compile(g, backend="triton")(**leaves)
    floats = [k for k in leaves if leaves[k].requires_grad]
    tri = torch.autograd.grad(sum((out[k] * torch.tensor(cts[k], device=device)).sum() for k in out),
                              [leaves[k] for k in floats])
    for k, gg in zip(floats, tri):
        assert_close(gg, got[f"grad_{k}"], 1e-10, f"triton grad {k}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("merged", [True, False])
def test_gradients_of_inputs_shared_by_blocks_of_channels(rng, device, merged):
    """Inputs over a role-r axis (read by channel h as h % R, as multi-order layers share u) and an output
    that merges the blocks: their gradients sum the blocks (Triton: atomic adds per shared channel),
    against central differences of the float64 interpreter."""
    m = ssmc.Builder("shared_blocks")
    u, w = m.input("u", ("batch", "dim:r", "L")), m.input("w", ("dim:r",))
    dt, A = m.input("dt", ("batch", "KD:h", "L")), m.input("A", ("KD:h", "N"))
    B, C = m.input("B", ("batch", "N", "L")), m.input("C", ("batch", "N", "L"))
    h = m.scan(d.exp(d.softplus(dt) * A), d.softplus(dt) * B * u * w)
    m.output("y", (C * h).sum("n"), ("batch", "dim:r", "L") if merged else ("batch", "KD:h", "L"))
    g = m.build()
    L = int(rng.integers(3, 8))
    x = {"u": rng.standard_normal((2, 3, L)), "w": rng.standard_normal(3), "dt": rng.standard_normal((2, 6, L)),
         "A": -rng.uniform(0.5, 1.0, (6, 4)), "B": rng.standard_normal((2, 4, L)), "C": rng.standard_normal((2, 4, L))}
    fn = ssmc.compile(g, backend="numpy")
    ct = {"y": rng.standard_normal(fn(**x)["y"].shape)}
    want = fn.grad(x, ct)
    eps = 1e-6
    for name in ("u", "w"):
        at = tuple(int(rng.integers(s)) for s in x[name].shape)
        plus, minus = dict(x), dict(x)
        plus[name], minus[name] = x[name].copy(), x[name].copy()
        plus[name][at] += eps
        minus[name][at] -= eps
        fd = ((fn(**plus)["y"] - fn(**minus)["y"]) * ct["y"]).sum() / (2 * eps)
        assert abs(fd - want[f"grad_{name}"][at]) <= 1e-6 * (1 + abs(fd)), name
    leaves = {k: torch.tensor(v, device=device, requires_grad=True) for k, v in x.items()}
    out = ssmc.compile(g, backend="triton")(**leaves)["y"]
    got = torch.autograd.grad((out * torch.tensor(ct["y"], device=device)).sum(), list(leaves.values()))
    for k, gg in zip(leaves, got):
        assert_close(gg, want[f"grad_{k}"], 1e-10, k)


def test_gradient_of_a_time_invariant_sum_of_a_shared_block_cotangent(rng):
    """Found by the fuzzer: a cotangent over a role-r axis summed over everything (the gradient of a scalar
    added to the output) must be summed over the channel lanes it is loaded into."""
    m = ssmc.Builder("shared_sum")
    x0 = m.input("x0", ("L", "batch", "R:r"))
    a = d.exp(d.complex_(-d.softplus(m.input("x1", ())), m.input("x2", ())))
    h = m.scan(a, x0, h0=m.input("x3", ("batch", "H"), complex=True))
    m.output("y", 2.0 * d.real(h) + m.input("x4", ()), ("batch", "R:r", "L"))
    g = m.build()
    B, L, H, R = 2, int(rng.integers(1, 7)), 4, 2
    x = {"x0": rng.standard_normal((L, B, R)), "x1": np.array(rng.standard_normal()),
         "x2": np.array(rng.standard_normal()), "x3": rng.standard_normal((B, H)) + 1j * rng.standard_normal((B, H)),
         "x4": np.array(rng.standard_normal())}
    fn = ssmc.compile(g, backend="numpy")
    ct = {"y": rng.standard_normal(fn(**x)["y"].shape)}
    want = fn.grad(x, ct)
    got = ssmc.compile(g, backend="triton").grad({k: torch.tensor(v, device=DEVICE) for k, v in x.items()},
                                                 {"y": torch.tensor(ct["y"], device=DEVICE)})
    for k in want:
        assert_close(got[k], want[k], 1e-10, k)
    plus, minus = dict(x), dict(x)
    plus["x4"], minus["x4"] = x["x4"] + 1e-6, x["x4"] - 1e-6
    fd = ((fn(**plus)["y"] - fn(**minus)["y"]) * ct["y"]).sum() / 2e-6
    assert abs(fd - want["grad_x4"]) <= 1e-6 * (1 + abs(fd))


@pytest.mark.parametrize("device", DEVICES)
def test_gather_scan_whose_decay_and_input_share_parameters(rng, device):
    """Found by the fuzzer: Ā and B̄ from one discretization (Δ over (L, H)), a gather order.  Unfolded, the
    step that computes them takes cotangents over (t, h) from Ā and over (b, t, h, p) from B̄·x; a sum of
    both must count the first once (its Triton gradient: the step on the interpreter)."""
    m = ssmc.Builder("shared_params")
    dt = 0.2 * d.sigmoid(m.input("x1", ("H", "L")))
    A = d.complex_(-(d.softplus(m.input("x2", ("H", "L"))) + 0.1), m.input("x3", ("H", "L")))
    A_bar, B_scale = m.discretize(dt, A, "bilinear")
    x = B_scale * d.softplus(m.input("x0", ("H", "L", "batch"))) * m.input("x5", ("P", "L"))
    h = m.scan(A_bar, x, order="gather", index=m.input("x6", ("L",), integer=True))
    m.output("y", d.real(h * m.input("x7", ("H", "L", "P"))).sum("h"), ("P", "batch", "L"))
    g = m.build()
    H, L, B, P = 3, int(rng.integers(2, 7)), 2, 2
    arrays = {"x0": rng.standard_normal((H, L, B)), "x1": rng.standard_normal((H, L)),
              "x2": rng.standard_normal((H, L)), "x3": rng.standard_normal((H, L)), "x5": rng.standard_normal((P, L)),
              "x6": rng.permutation(L), "x7": rng.standard_normal((H, L, P))}
    fn = ssmc.compile(g, backend="numpy")
    ct = {"y": rng.standard_normal(fn(**arrays)["y"].shape)}
    want = fn.grad(arrays, ct)
    eps = 1e-6
    for name in ("x1", "x2", "x3", "x0"):
        v = rng.standard_normal(arrays[name].shape)
        plus, minus = dict(arrays), dict(arrays)
        plus[name], minus[name] = arrays[name] + eps * v, arrays[name] - eps * v
        fd = ((fn(**plus)["y"] - fn(**minus)["y"]) * ct["y"]).sum() / (2 * eps)
        assert abs(fd - np.sum(want[f"grad_{name}"] * v)) <= 1e-6 * (1 + abs(fd)), name
    got = ssmc.compile(g, backend="triton").grad({k: torch.tensor(v, device=device) for k, v in arrays.items()},
                                                 {"y": torch.tensor(ct["y"], device=device)})
    for k in want:
        assert_close(got[k], want[k], 1e-10, k)
