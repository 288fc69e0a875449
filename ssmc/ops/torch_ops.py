"""The drop-in ops as torch custom ops, so torch.compile(fullgraph=True) and torch.export trace them.

`dispatch.py` routes torch tensors through these when torch.compile traces the call or autograd records it,
on any backend (the op's last argument).  Each op has a fake (meta)
implementation giving output shapes and dtypes without running anything.  `selective_scan` and
`ssd` have registered autograd: their backward is a custom op of its own (`*_bwd`, with a fake
implementation too) running the generated backward kernel (ssmc.ir.passes.adjoint), so a compiled
forward+backward stays whole; `multi_order_scan`'s backward is `multi_order_backward.py`.
selective_state_update (a decode step, in place) has no backward.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ssmc.runtime.autograd import EMPTY

from .decode import run_state_update
from .multi_order import run_multi_order
from .multi_order_backward import multi_order_scan_backward
from .selective_scan import run_selective_scan, selective_scan_backward
from .ssd import run_ssd, ssd_backward


def _state_dtype(A: Tensor, *tensors) -> torch.dtype:
    # float64 tensors in are computed in float64, and the state comes back in double precision
    wide = any(t is not None and t.dtype in (torch.float64, torch.complex128) for t in (A,) + tensors)
    if A.is_complex():
        return torch.complex128 if wide else torch.complex64
    return torch.float64 if wide else torch.float32


def _out_dtype(x: Tensor) -> torch.dtype:
    # the kernels return the input's dtype (mamba_ssm's convention); float64 inputs stay float64
    return x.dtype


@torch.library.custom_op("ssmc::selective_scan", mutates_args=())
def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                   z: Optional[Tensor], delta_bias: Optional[Tensor], delta_softplus: bool,
                   return_last_state: bool, backend: str) -> tuple[Tensor, Tensor]:
    res = run_selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, backend)
    if return_last_state:
        return res
    return res, u.new_empty(EMPTY, dtype=_state_dtype(A, u, delta, B, C, D, z, delta_bias))


@selective_scan.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, backend):
    dtype = _state_dtype(A, u, delta, B, C, D, z, delta_bias)
    last = (u.new_empty((u.shape[0], u.shape[1], A.shape[1]), dtype=dtype) if return_last_state
            else u.new_empty(EMPTY, dtype=dtype))
    return u.new_empty(u.shape, dtype=_out_dtype(u)), last


@torch.library.custom_op("ssmc::ssd", mutates_args=())
def ssd(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int, D: Optional[Tensor],
        z: Optional[Tensor], dt_bias: Optional[Tensor], initial_states: Optional[Tensor],
        seq_idx: Optional[Tensor], dt_softplus: bool, dt_min: float, dt_max: float,
        return_final_states: bool, backend: str) -> tuple[Tensor, Tensor]:
    res = run_ssd(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, seq_idx, dt_softplus, (dt_min, dt_max),
                  return_final_states, backend)
    if return_final_states:
        return res
    return res, x.new_empty(EMPTY, dtype=_state_dtype(A, x, dt, B, C, D, z, dt_bias, initial_states))


@ssd.register_fake
def _(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, seq_idx, dt_softplus, dt_min, dt_max,
      return_final_states, backend):
    b, _, h, p = x.shape
    dtype = _state_dtype(A, x, dt, B, C, D, z, dt_bias, initial_states)
    final = (x.new_empty((b, h, p, B.shape[-1]), dtype=dtype) if return_final_states
             else x.new_empty(EMPTY, dtype=dtype))
    return x.new_empty(x.shape, dtype=_out_dtype(x)), final


@torch.library.custom_op("ssmc::selective_state_update", mutates_args=("state",))
def selective_state_update(state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
                           D: Optional[Tensor], z: Optional[Tensor], dt_bias: Optional[Tensor],
                           dt_softplus: bool, dt_lo: float, dt_hi: float, state_batch_indices: Optional[Tensor],
                           pad_slot_id: int, backend: str) -> Tensor:
    return run_state_update(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, (dt_lo, dt_hi), state_batch_indices,
                            pad_slot_id, backend)


@selective_state_update.register_fake
def _(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, dt_lo, dt_hi, state_batch_indices, pad_slot_id, backend):
    return x.new_empty(x.shape, dtype=_out_dtype(x))


# --- backward ----------------------------------------------------------------------------------

def _none_if_empty(ts, given):
    return [g if x is not None else None for g, x in zip(ts, given)]


def _empty_for_none(grads, given, like):
    return [g if g is not None else like.new_empty(EMPTY) for g, x in zip(grads, given)]


@torch.library.custom_op("ssmc::selective_scan_bwd", mutates_args=())
def selective_scan_bwd(dout: Tensor, dlast: Optional[Tensor], u: Tensor, delta: Tensor, A: Tensor, B: Tensor,
                       C: Tensor, D: Optional[Tensor], z: Optional[Tensor], delta_bias: Optional[Tensor],
                       delta_softplus: bool, backend: str) -> list[Tensor]:
    """[du, ddelta, dA, dB, dC, dD, dz, ddelta_bias]; an empty tensor where the argument was None."""
    grads = selective_scan_backward(dout, dlast, u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                    backend=backend)
    return _empty_for_none(grads, (u, delta, A, B, C, D, z, delta_bias), u)


@selective_scan_bwd.register_fake
def _(dout, dlast, u, delta, A, B, C, D, z, delta_bias, delta_softplus, backend):
    return [torch.empty_like(x) if x is not None else u.new_empty(EMPTY)
            for x in (u, delta, A, B, C, D, z, delta_bias)]


def _scan_setup_context(ctx, inputs, output):
    u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, backend = inputs
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias)
    ctx.delta_softplus, ctx.return_last_state, ctx.backend = delta_softplus, return_last_state, backend


def _scan_backward(ctx, dout, dlast):
    given = ctx.saved_tensors
    grads = torch.ops.ssmc.selective_scan_bwd(dout, dlast if ctx.return_last_state else None, *given,
                                              ctx.delta_softplus, ctx.backend)
    return (*_none_if_empty(grads, given), None, None, None)


selective_scan.register_autograd(_scan_backward, setup_context=_scan_setup_context)


@torch.library.custom_op("ssmc::ssd_bwd", mutates_args=())
def ssd_bwd(dout: Tensor, dfinal: Optional[Tensor], x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
            D: Optional[Tensor], z: Optional[Tensor], dt_bias: Optional[Tensor], initial_states: Optional[Tensor],
            seq_idx: Optional[Tensor], dt_softplus: bool, dt_min: float, dt_max: float,
            backend: str) -> list[Tensor]:
    """[dx, ddt, dA, dB, dC, dD, dz, ddt_bias, dinitial_states]; empty where the argument was None."""
    grads = ssd_backward(dout, dfinal, x, dt, A, B, C, D, z, dt_bias, initial_states, seq_idx, dt_softplus,
                         (dt_min, dt_max), backend=backend)
    return _empty_for_none(grads, (x, dt, A, B, C, D, z, dt_bias, initial_states), x)


@ssd_bwd.register_fake
def _(dout, dfinal, x, dt, A, B, C, D, z, dt_bias, initial_states, seq_idx, dt_softplus, dt_min, dt_max, backend):
    return [torch.empty_like(v) if v is not None else x.new_empty(EMPTY)
            for v in (x, dt, A, B, C, D, z, dt_bias, initial_states)]


def _ssd_setup_context(ctx, inputs, output):
    (x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, seq_idx, dt_softplus, dt_min, dt_max,
     return_final_states, backend) = inputs
    ctx.save_for_backward(x, dt, A, B, C, D, z, dt_bias, initial_states, seq_idx)
    ctx.flags = (dt_softplus, dt_min, dt_max, return_final_states, backend)


def _ssd_backward(ctx, dout, dfinal):
    x, dt, A, B, C, D, z, dt_bias, initial_states, seq_idx = ctx.saved_tensors
    dt_softplus, dt_min, dt_max, return_final_states, backend = ctx.flags
    given = (x, dt, A, B, C, D, z, dt_bias, initial_states)
    grads = torch.ops.ssmc.ssd_bwd(dout, dfinal if return_final_states else None, *given, seq_idx, dt_softplus,
                                   dt_min, dt_max, backend)
    dx, ddt, dA, dB, dC, dD, dz, dbias, dh0 = _none_if_empty(grads, given)
    return dx, ddt, dA, dB, dC, None, dD, dz, dbias, dh0, None, None, None, None, None, None


ssd.register_autograd(_ssd_backward, setup_context=_ssd_setup_context)


# --- multi-order scans (multi_order.py) ----------------------------------------------------------------

@torch.library.custom_op("ssmc::multi_order_scan", mutates_args=())
def multi_order_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, orders: Tensor,
                     D: Optional[Tensor], z: Optional[Tensor], delta_bias: Optional[Tensor], gate: Optional[Tensor],
                     delta_softplus: bool, merge: str, grid: str, backend: str) -> Tensor:
    return run_multi_order(u, delta, A, B, C, orders, D, z, delta_bias, gate, delta_softplus, merge, backend, grid)


@multi_order_scan.register_fake
def _(u, delta, A, B, C, orders, D, z, delta_bias, gate, delta_softplus, merge, grid, backend):
    if merge != "concat":  # the merges have u's layout and dtype
        return u.new_empty(u.shape)
    # concat keeps the K blocks: delta's dtype when delta has that layout (the launcher's rule), else fp32
    batch, dim, L = u.shape
    return u.new_empty((batch, orders.shape[0], dim, L), dtype=delta.dtype if delta.dim() == 4 else torch.float32)


@torch.library.custom_op("ssmc::multi_order_scan_bwd", mutates_args=())
def multi_order_scan_bwd(dout: Tensor, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, orders: Tensor,
                         D: Optional[Tensor], z: Optional[Tensor], delta_bias: Optional[Tensor],
                         gate: Optional[Tensor], delta_softplus: bool, merge: str, backend: str) -> list[Tensor]:
    """[du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dgate]; an empty tensor where the argument was None."""
    grads = multi_order_scan_backward(dout, u, delta, A, B, C, orders, D, z, delta_bias, gate, delta_softplus,
                                      merge, backend)
    return _empty_for_none(grads, (u, delta, A, B, C, D, z, delta_bias, gate), u)


@multi_order_scan_bwd.register_fake
def _(dout, u, delta, A, B, C, orders, D, z, delta_bias, gate, delta_softplus, merge, backend):
    return [torch.empty_like(x) if x is not None else u.new_empty(EMPTY)
            for x in (u, delta, A, B, C, D, z, delta_bias, gate)]


def _orders_setup_context(ctx, inputs, output):
    u, delta, A, B, C, orders, D, z, delta_bias, gate, delta_softplus, merge, _grid, backend = inputs  # (a gather)
    ctx.save_for_backward(u, delta, A, B, C, orders, D, z, delta_bias, gate)
    ctx.flags = (delta_softplus, merge, backend)


def _orders_backward(ctx, dout):
    u, delta, A, B, C, orders, D, z, delta_bias, gate = ctx.saved_tensors
    given = (u, delta, A, B, C, D, z, delta_bias, gate)
    grads = torch.ops.ssmc.multi_order_scan_bwd(dout, u, delta, A, B, C, orders, D, z, delta_bias, gate, *ctx.flags)
    du, ddelta, dA, dB, dC, dD, dz, dbias, dgate = _none_if_empty(grads, given)
    return du, ddelta, dA, dB, dC, None, dD, dz, dbias, dgate, None, None, None, None


multi_order_scan.register_autograd(_orders_backward, setup_context=_orders_setup_context)
