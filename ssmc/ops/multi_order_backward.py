"""The backward of `multi_order_scan` (multi_order.py): the K orders as one grouped selective scan.

Each order k is a selective scan of its inputs read along orders[k]; in that order's own time
(step j at position orders[k, j]) it is a plain forward scan.  So the gradients are those of one
selective scan over K·dim channels — B and C grouped by order (G = K), u and z tiled — with every
time-varying input gathered into its order's time, run by the generated backward kernel
(`selective_scan.selective_scan_backward`), and the gradients gathered back to sequence positions with
the inverse permutations; the gradients of the shared u sum over the orders.

Each order's result is silu(z)·y_k (z tiled like u, so the kernel also gives z's gradient per order);
the merge sets its cotangent: dout (sum), dout/K (mean), dout_k (concat) or dout·gate_k (gated).  The
gate's gradient needs the y_k themselves, which one more launch of the fused forward recomputes.

Unlike the forward, this materializes order-time copies of the inputs (u, z and the cotangent K
times, Δ, B, C once): a gather-order backward kernel is not generated yet.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .multi_order import run_multi_order, tied_of
from .selective_scan import selective_scan_backward


def multi_order_scan_backward(dout, u, delta, A, B, C, orders, D=None, z=None, delta_bias=None, gate=None,
                              delta_softplus=False, merge="sum", backend="triton"):
    """Gradients of multi_order_scan for the cotangent `dout` of its output (torch tensors, on `backend`).
    `orders` is the checked (K, L) int64 tensor.  Returns
    [du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dgate], None where the argument was None."""
    batch, dim, L = u.shape
    K, N = orders.shape[0], A.shape[-1]
    # tied parameters (no K axis) take part as K identical views; their gradients sum the orders
    tied = tied_of(delta, A, B, C, D, delta_bias)
    given = dict(delta=delta, A=A, B=B, C=C, D=D, delta_bias=delta_bias)
    if "delta" in tied:
        delta = delta[:, None].expand(batch, K, dim, L)
    if "A" in tied:
        A = A[None].expand(K, dim, N)
    B, C = (x[:, None].expand(batch, K, N, L) if name in tied else x for name, x in (("B", B), ("C", C)))
    D, delta_bias = (x[None].expand(K, dim) if name in tied else x
                     for name, x in (("D", D), ("delta_bias", delta_bias)))
    idx = orders.to(u.device, torch.int64)
    inv = torch.argsort(idx, dim=1)

    def along(x, index):  # (batch, K, X, L): gather each order's block along time with its own index
        return x.gather(3, index[None, :, None, :].expand(x.shape[0], K, x.shape[2], L))

    def in_order_time(x):  # (batch, K, X, L) in sequence positions -> each order's time
        return along(x, idx)

    def to_positions(x):  # each order's time -> sequence positions
        return along(x, inv)

    def blocks(x):  # (batch, dim, L) shared by the orders -> (batch, K, dim, L)
        return x[:, None].expand(batch, K, dim, L)

    d = dout.float()
    if merge == "concat":  # the cotangent of each order's gated result silu(z)·y_k
        dy = d
    else:
        dy = blocks(d) / K if merge == "mean" else blocks(d)
        if merge == "gated":
            dy = dy * gate.float()
    flat = lambda x: x.reshape(batch, K * dim, L)  # noqa: E731
    in_time = lambda x: flat(in_order_time(x)).contiguous()  # noqa: E731
    grads = selective_scan_backward(
        in_time(dy), None, in_time(blocks(u)), in_time(delta), A.reshape(K * dim, N), in_order_time(B).contiguous(),
        in_order_time(C).contiguous(), None if D is None else D.reshape(K * dim),
        None if z is None else in_time(blocks(z)), None if delta_bias is None else delta_bias.reshape(K * dim),
        delta_softplus, backend=backend)
    du_k, ddelta_k, dA, dB_k, dC_k, dD, dz_k, dbias = grads
    unflat = lambda x: to_positions(x.reshape(batch, K, dim, L))  # noqa: E731
    du = unflat(du_k).sum(1).to(u.dtype)
    ddelta = unflat(ddelta_k).to(delta.dtype)
    dB, dC = to_positions(dB_k), to_positions(dC_k)
    dA = dA.reshape(A.shape)
    dD = None if dD is None else dD.reshape(D.shape)
    dbias = None if dbias is None else dbias.reshape(delta_bias.shape)
    dz = None if z is None else unflat(dz_k).sum(1).to(z.dtype)
    dgate = None
    if gate is not None:  # each order's result itself: one more launch of the fused forward
        y = run_multi_order(u, *(given[k] for k in ("delta", "A", "B", "C")), idx, given["D"], None,
                            given["delta_bias"], None, delta_softplus, "concat", backend).float()
        w = d * F.silu(z.float()) if z is not None else d
        dgate = (w[:, None] * y).to(gate.dtype)
    grads = dict(delta=ddelta, A=dA, B=dB, C=dC, D=dD, delta_bias=dbias)
    for name in tied:  # summed over the orders, back in the tied argument's layout and dtype
        g = grads[name]
        grads[name] = g.sum(1 if name in ("delta", "B", "C") else 0).to(given[name].dtype)
    return [du, grads["delta"], grads["A"], grads["B"], grads["C"], grads["D"], dz, grads["delta_bias"], dgate]
