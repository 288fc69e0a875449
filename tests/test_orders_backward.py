"""Gradients of multi-order scans (ssmc.ops.multi_order_backward): torch autograd through ssmc.ops.multi_order_scan
on the Triton backend against an independent float64 PyTorch loop (permute, scan, unpermute, merge),
every merge, named 2-D and random orders on odd grids; gradcheck of the multi-scale scan; and a
torch.compile(fullgraph=True) trace of forward and backward.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssmc import ops

from conftest import DEVICES, assert_close, seed_of

MERGES = ("sum", "mean", "concat", "gated")


def _inputs(rng, b, dim, L, N, K, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed_of(rng) % 2**31)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    a = dict(u=r(b, dim, L), delta=r(b, K, dim, L) * 0.5, A=-torch.exp(r(K, dim, N) * 0.5), B=r(b, K, N, L),
             C=r(b, K, N, L), D=r(K, dim), z=r(b, dim, L), delta_bias=r(K, dim) * 0.1, gate=r(b, K, dim, L))
    return {k: v.to(dtype) for k, v in a.items()}


def _loop(a, orders, merge, softplus=True):
    """Each order: gather its inputs along the order, a plain recurrence, scatter back; then merge."""
    ys = []
    b, K, dim, L = a["delta"].shape
    for k in range(K):
        o = torch.as_tensor(np.asarray(orders[k]), device=a["u"].device)
        d = a["delta"][:, k] + (a["delta_bias"][k][:, None] if a.get("delta_bias") is not None else 0)
        d = (F.softplus(d) if softplus else d)[..., o]
        u, Bk, Ck = a["u"][..., o], a["B"][:, k][..., o], a["C"][:, k][..., o]
        h, y = torch.zeros(b, dim, a["A"].shape[2], dtype=u.dtype, device=u.device), []
        for t in range(L):
            h = torch.exp(d[..., t, None] * a["A"][k]) * h + (d[..., t] * u[..., t])[..., None] * Bk[:, None, :, t]
            y.append((h * Ck[:, None, :, t]).sum(-1))
        y = torch.stack(y, -1)
        if a.get("D") is not None:
            y = y + a["D"][k][:, None] * u
        out = torch.empty_like(y)
        out[..., o] = y
        ys.append(out)
    Y = torch.stack(ys, 1)
    gz = F.silu(a["z"]) if a.get("z") is not None else torch.ones_like(a["u"])
    if merge == "concat":
        return gz[:, None] * Y
    merged = {"sum": lambda: Y.sum(1), "mean": lambda: Y.mean(1), "gated": lambda: (a["gate"] * Y).sum(1)}[merge]()
    return gz * merged


def _check_grads(a, orders, merge, device, tol, drop=()):
    a = {k: (None if k in drop else v) for k, v in a.items()}
    if merge != "gated":
        a["gate"] = None
    leaves = {k: v.detach().clone().to(device).requires_grad_() if v is not None else None for k, v in a.items()}
    refs = {k: v.detach().double().to(device).requires_grad_() if v is not None else None for k, v in a.items()}
    y = ops.multi_order_scan(leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"], orders,
                             leaves["D"], leaves["z"], leaves["delta_bias"], True, merge=merge, gate=leaves["gate"],
                             backend="triton")
    yr = _loop(refs, orders, merge)
    w = torch.randn(yr.shape, dtype=torch.float64, device=device)
    (y.double() * w).sum().backward()
    (yr * w).sum().backward()
    assert_close(y, yr, tol, f"{merge} out")
    for k, x in leaves.items():
        if x is not None:
            assert x.grad is not None and x.grad.dtype == x.dtype, k
            assert_close(x.grad, refs[k].grad, tol, f"{merge} d{k}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("merge", MERGES)
def test_gradients_match_the_loop(merge, device, rng):
    H, W = 3, 5  # odd grid: the snakes and column orders are not reversals of each other
    orders = ops.scan_orders_2d(H, W, ["row", "col_rev", "snake_col"])
    _check_grads(_inputs(rng, 2, 3, H * W, 4, 3), orders, merge, device, 1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_gradients_random_paths_without_optional_inputs(device, rng):
    L = 7
    orders = [np.arange(L), np.arange(L)[::-1].copy(), rng.permutation(L)]  # RSMamba: identity, reverse, random
    _check_grads(_inputs(rng, 1, 2, L, 3, 3), orders, "sum", device, 1e-5, drop=("D", "z", "delta_bias"))


def test_multiscale_scan_gradcheck():
    """multiscale_scan_2d (gathers around two multi-order scans) against finite differences, float64."""
    g = torch.Generator().manual_seed(0)
    H, W, dim, N, K = 3, 3, 1, 2, 2
    L = H * W
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    A, B, C = -torch.exp(r(K, dim, N)), r(1, K, N, L), r(1, K, N, L)

    def f(u, delta, z):
        return ops.multiscale_scan_2d(u, delta, A, B, C, (H, W), z=z, delta_softplus=True,
                                      coarse_orders=("col",), backend="triton")
    args = (r(1, dim, L).requires_grad_(), (r(1, K, dim, L) * 0.5).requires_grad_(), r(1, dim, L).requires_grad_())
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-6)


def test_compiled_fullgraph_forward_and_backward(rng):
    orders = ops.scan_orders_2d(2, 3, ["row", "col"])
    a = _inputs(rng, 1, 2, 6, 3, 2)
    a.pop("gate")
    idx = [torch.as_tensor(o) for o in orders]

    def loss(u, delta, A, B, C, D, z, delta_bias):
        return ops.multi_order_scan(u, delta, A, B, C, idx, D, z, delta_bias, True, backend="triton").square().sum()
    eager = {k: v.clone().requires_grad_() for k, v in a.items()}
    loss(**eager).backward()
    torch._dynamo.reset()
    leaves = {k: v.clone().requires_grad_() for k, v in a.items()}
    torch.compile(loss, fullgraph=True, backend="aot_eager")(**leaves).backward()
    for k in a:
        assert_close(leaves[k].grad, eager[k].grad, 1e-6, k)


@pytest.mark.gpu
def test_bf16_gradients_on_cuda(rng):
    """VMamba-like SS2D, bf16 sequences: gradients against the float64 loop on the same rounded values."""
    H, W = 7, 9
    orders = ops.scan_orders_2d(H, W, ["row", "col", "row_rev", "col_rev"])
    a = _inputs(rng, 2, 16, H * W, 16, 4)
    a = {k: (v.to(torch.bfloat16) if k in ("u", "z", "B", "C") else v) for k, v in a.items()}
    _check_grads(a, orders, "sum", "cuda", 1e-2)


def test_compiled_call_still_checks_the_orders(rng):
    """Under torch.compile the permutation check runs on the device (no host read, no graph break)."""
    a = _inputs(rng, 1, 2, 6, 3, 2)
    bad = [torch.arange(6), torch.tensor([0, 1, 2, 3, 4, 4])]

    def f(u, delta, A, B, C):
        return ops.multi_order_scan(u, delta, A, B, C, bad, backend="triton")
    torch._dynamo.reset()
    with pytest.raises(RuntimeError, match="permutation"):
        torch.compile(f, fullgraph=True, backend="aot_eager")(a["u"], a["delta"], a["A"], a["B"], a["C"])


TIED_SHAPES = dict(delta=lambda a: a["delta"][:, 0], A=lambda a: a["A"][0], B=lambda a: a["B"][:, 0],
                   C=lambda a: a["C"][:, 0], D=lambda a: a["D"][0], delta_bias=lambda a: a["delta_bias"][0])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("tie", [("A", "D", "delta_bias"), ("delta", "A", "B", "C", "D", "delta_bias"), ("B",)],
                         ids=lambda t: "+".join(t))
def test_tied_parameters(tie, device, rng):
    """tie=: a parameter given once (no K axis) is read by every order — a bidirectional layer with tied
    parameters (forward + reverse) — and its gradient sums the orders; the loop gets it repeated K times."""
    L, K = 7, 2
    orders = [np.arange(L), np.arange(L)[::-1].copy()]
    a = _inputs(rng, 2, 3, L, 4, K)
    a.pop("gate")
    shared = {k: TIED_SHAPES[k](a).clone() for k in tie}
    args = {**a, **shared}
    want_np = _loop({k: v.double() for k, v in {**a, **{k: _repeat(k, v, K) for k, v in shared.items()}}.items()},
                    orders, "sum")
    got_np = ops.multi_order_scan(*(args[k].numpy() for k in ("u", "delta", "A", "B", "C")), orders,
                                  args["D"].numpy(), args["z"].numpy(), args["delta_bias"].numpy(), True, tie=tie,
                                  backend="numpy")
    assert_close(got_np, want_np, 1e-5, "numpy forward")
    leaves = {k: v.detach().clone().to(device).requires_grad_() for k, v in args.items()}
    refs = {k: v.detach().double().to(device).requires_grad_() for k, v in args.items()}
    y = ops.multi_order_scan(*(leaves[k] for k in ("u", "delta", "A", "B", "C")), orders, leaves["D"], leaves["z"],
                             leaves["delta_bias"], True, tie=tie, backend="triton")
    yr = _loop({k: _repeat(k, v, K) if k in tie else v for k, v in refs.items()}, orders, "sum")
    w = torch.randn(yr.shape, dtype=torch.float64, device=device)
    (y.double() * w).sum().backward()
    (yr * w).sum().backward()
    assert_close(y, yr, 1e-5, "triton forward")
    for k, x in leaves.items():
        assert x.grad.shape == x.shape, k
        assert_close(x.grad, refs[k].grad, 1e-5, f"d{k}")


def _repeat(name, x, K):
    """A tied parameter as the per-order layout the loop reads: the same values for every order."""
    axis = 1 if name in ("delta", "B", "C") else 0
    return x.unsqueeze(axis).expand(*x.shape[:axis], K, *x.shape[axis:])


def test_tie_errors_name_the_argument(rng):
    a = _inputs(rng, 1, 2, 5, 3, 2)
    orders = [np.arange(5), np.arange(5)[::-1].copy()]
    call = lambda **kw: ops.multi_order_scan(*(kw.get(k, a[k]) for k in ("u", "delta", "A", "B", "C")), orders,  # noqa: E731
                                             tie=kw.pop("tie"), backend="numpy")
    with pytest.raises(ValueError, match="tie: expected names"):
        call(tie=("u",))
    with pytest.raises(ValueError, match=r"A: expected shape \(dim, N\)"):
        call(tie=("A",))  # a per-order A given while tied
    with pytest.raises(ValueError, match=r"B: expected shape .*\(batch, N, L\), tied"):
        call(tie=("B",))
