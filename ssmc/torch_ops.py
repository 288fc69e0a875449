"""The drop-in ops as torch custom ops, so torch.compile(fullgraph=True) and torch.export trace them.

`ssmc.ops` routes torch tensors on the Triton backend through these.  Each op has a fake (meta)
implementation giving output shapes and dtypes without running anything.  Gradients are not
registered yet: calling backward through them raises torch's "autograd not implemented" error.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
from torch import Tensor

# Custom ops run under torch._dynamo, and Triton's interpreter breaks ("Cannot call @triton.jit'd
# outside of the scope of a kernel") when TRITON_INTERPRET is switched on after dynamo loads:
# without CUDA, switch it on now, before the ops below are registered.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

_EMPTY = (0,)  # an output that was not asked for


def _state_dtype(A: Tensor) -> torch.dtype:
    return torch.complex64 if A.is_complex() else torch.float32


def _out_dtype(x: Tensor) -> torch.dtype:
    # the kernels return the input's dtype (mamba_ssm's convention); float64 inputs stay float64
    return x.dtype


@torch.library.custom_op("ssmc::selective_scan", mutates_args=())
def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                   z: Optional[Tensor], delta_bias: Optional[Tensor], delta_softplus: bool,
                   return_last_state: bool) -> tuple[Tensor, Tensor]:
    from . import ops
    res = ops.selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state,
                             backend="triton", _direct=True)
    if return_last_state:
        return res
    return res, u.new_empty(_EMPTY, dtype=_state_dtype(A))


@selective_scan.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
    last = (u.new_empty((u.shape[0], u.shape[1], A.shape[1]), dtype=_state_dtype(A)) if return_last_state
            else u.new_empty(_EMPTY, dtype=_state_dtype(A)))
    return u.new_empty(u.shape, dtype=_out_dtype(u)), last


@torch.library.custom_op("ssmc::ssd", mutates_args=())
def ssd(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int, D: Optional[Tensor],
        z: Optional[Tensor], dt_bias: Optional[Tensor], initial_states: Optional[Tensor],
        seq_idx: Optional[Tensor], dt_softplus: bool, dt_min: float, dt_max: float,
        return_final_states: bool) -> tuple[Tensor, Tensor]:
    from . import ops
    res = ops.ssd(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, seq_idx, dt_softplus,
                  (dt_min, dt_max), return_final_states, backend="triton", _direct=True)
    if return_final_states:
        return res
    return res, x.new_empty(_EMPTY, dtype=torch.float32)


@ssd.register_fake
def _(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, seq_idx, dt_softplus, dt_min, dt_max,
      return_final_states):
    b, _, h, p = x.shape
    final = (x.new_empty((b, h, p, B.shape[-1]), dtype=torch.float32) if return_final_states
             else x.new_empty(_EMPTY, dtype=torch.float32))
    return x.new_empty(x.shape, dtype=_out_dtype(x)), final


@torch.library.custom_op("ssmc::selective_state_update", mutates_args=("state",))
def selective_state_update(state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
                           D: Optional[Tensor], z: Optional[Tensor], dt_bias: Optional[Tensor],
                           dt_softplus: bool) -> Tensor:
    from . import ops
    return ops.selective_state_update(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, backend="triton",
                                      _direct=True)


@selective_state_update.register_fake
def _(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus):
    return x.new_empty(x.shape, dtype=_out_dtype(x))
