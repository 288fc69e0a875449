"""mamba_ssm's selective_state_update, as serving engines (vLLM, SGLang) call it: one decode step of
Mamba-1 (state (·, dim, N)) or Mamba-2 (state (·, H, P, N)), the state updated in place.

The step is a sequence declaration (x_t → h_t → y_t) reduced to one step by the IR's single_step pass
and compiled for the backend.  Serving adds, around it:
  * state_batch_indices (batch,): batch row b reads and writes state row state_batch_indices[b]
    (continuous batching: the cache holds more slots than the step has rows); rows whose index is
    pad_slot_id are skipped — their state is not touched and their output is computed from a zero
    state;
  * a state in its own dtype (fp16, bf16, fp32 or fp64): the step computes in fp32 (fp64 for fp64
    tensors) and the updated rows are written back in the state's dtype;
  * complex A (and B, C): a complex state, y = 2·Re(C·h) as in selective_scan;
  * dt_limit: Δ clamped after its bias and softplus, as in ssd.
When the state is an fp32 (complex64) contiguous tensor addressed row for row, the kernel updates it
directly; otherwise the step runs on a gathered working copy, scattered back afterwards.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from ssmc.ir import builder as d
from ssmc.ir.bind import is_complex
from ssmc.ir.passes.step import single_step
from ssmc.runtime import compile_ssm
from ssmc.runtime.arrays import is_torch

from .arguments import shape


@lru_cache(maxsize=64)
def state_update(heads: bool, has_D: bool, has_z: bool, has_bias: bool, softplus: bool, limit, complex_: frozenset,
                 backend: str):
    """The compiled step: `limit` (lo, hi) or None; `complex_` the complex ones of A, B, C."""
    m = d.Builder("selective_state_update")
    ch = ("H", "P") if heads else ("dim",)
    seq = ("batch",) + ch + ("L",)
    x, dt = m.input("x", seq), m.input("dt", seq)
    if has_bias:
        dt = dt + m.input("dt_bias", ch)
    if softplus:
        dt = d.softplus(dt)
    if limit is not None:
        dt = d.clip(dt, *limit)
    A = m.input("A", ch + ("N",), complex="A" in complex_)
    A_bar, B_scale = m.discretize(dt, A, "zoh_euler")
    bc = ("batch", "G", "N", "L") if heads else ("batch", "N", "L")
    B, C = (m.input(k, bc, complex=k in complex_) for k in ("B", "C"))
    h = m.scan(A_bar, B_scale * B * x)
    y = (C * h).sum("n")
    if "A" in complex_:
        y = d.real(y) * 2.0
    if has_D:
        y = y + m.input("D", ch) * x
    if has_z:
        y = y * d.silu(m.input("z", seq))
    m.output("out", y, seq)
    m.output("state", m.last(h), ("batch",) + ch + ("N",))
    return compile_ssm(single_step(m.build()), backend=backend)


def run_state_update(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, dt_limit, state_batch_indices,
                     pad_slot_id, backend):
    """selective_state_update on checked flags: `state` updated in place; returns out."""
    nd = len(shape(state))
    if nd not in (3, 4):
        raise ValueError(f"state: expected shape (cache_batch, dim, N) or (cache_batch, H, P, N), got {shape(state)}")
    cplx = is_complex(A)
    _check_state_dtype(state, cplx)
    if cplx:
        complex_ = frozenset(k for k, v in (("A", A), ("B", B), ("C", C)) if is_complex(v))
    elif is_complex(B) or is_complex(C):
        raise TypeError("B, C: complex B or C need a complex A (a complex state)")
    else:
        complex_ = frozenset()
    limit = None if dt_limit == (0.0, math.inf) else dt_limit
    step = state_update(nd == 4, D is not None, z is not None, dt_bias is not None, dt_softplus, limit, complex_,
                        backend)
    args = dict(x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias)
    batch = shape(x)[0] if shape(x) else None
    rows = _rows(state_batch_indices, pad_slot_id, state, batch)
    if rows is None and _in_place(state, args):
        return step.run({**args, "state": state}, {"state": state})["out"]
    return _gathered(step, state, args, rows, pad_slot_id, batch)


def _check_state_dtype(state, cplx: bool):
    kind = "complex" if cplx else "float"
    if is_torch(state):
        ok = state.is_complex() if cplx else (state.is_floating_point() and not state.is_complex())
    else:
        ok = isinstance(state, np.ndarray) and state.dtype.kind == ("c" if cplx else "f")
    if not ok:
        raise TypeError(f"state: expected a {kind} {'tensor' if is_torch(state) else 'NumPy array'} "
                        f"({'A is complex' if cplx else 'A is real'}), got {type(state).__name__} of dtype "
                        f"{getattr(state, 'dtype', None)}")
    if not is_torch(state) and not state.flags.writeable:
        raise ValueError("state: must be writable to be updated in place")


def _in_place(state, args) -> bool:
    """Can the kernel update `state` itself: its dtype is the step's arithmetic one, and it is dense?"""
    if not is_torch(state):
        return state.dtype in (np.float32, np.float64, np.complex64, np.complex128) and state.flags.c_contiguous
    return state.dtype == _acc(state, args) and state.is_contiguous()


def _acc(state, args):
    """The step's arithmetic dtype for a torch state: fp32 (complex64), or fp64 (complex128) where a float64
    tensor comes in, as for every compiled graph."""
    import torch  # (a torch tensor is in hand)
    wide = (torch.float64, torch.complex128)
    if state.dtype in wide or any(v is not None and v.dtype in wide for v in args.values()):
        return torch.complex128 if state.is_complex() else torch.float64
    return torch.complex64 if state.is_complex() else torch.float32


def _rows(indices, pad_slot_id, state, batch):
    """The checked state_batch_indices as a host integer array (None when not given)."""
    if indices is None:
        return None
    if is_torch(indices):
        import torch  # (a torch tensor is in hand)
        if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
            raise TypeError(f"state_batch_indices: expected an integer tensor, got {indices.dtype}")
        host = indices.detach().cpu().numpy()  # (a sync: out-of-range indices would fault on the device)
    else:
        host = np.asarray(indices)
        if host.dtype.kind not in "iu":
            raise TypeError(f"state_batch_indices: expected an integer array, got {host.dtype}")
    if host.shape != (batch,):
        raise ValueError(f"state_batch_indices: expected shape (batch,) = ({batch},), got {host.shape}")
    if isinstance(pad_slot_id, bool) or not isinstance(pad_slot_id, (int, np.integer)):
        raise TypeError(f"pad_slot_id: expected an int, got {type(pad_slot_id).__name__} {pad_slot_id!r}")
    used = host[host != pad_slot_id]
    slots = shape(state)[0]
    bad = used[(used < 0) | (used >= slots)]
    if bad.size:
        raise ValueError(f"state_batch_indices: expected indices in [0, {slots}) (the state's rows) or "
                         f"pad_slot_id={pad_slot_id}, got {bad.tolist()[:8]}")
    if np.unique(used).size != used.size:
        raise ValueError(f"state_batch_indices: two batch rows update the same state row, got {host.tolist()[:16]}")
    return host


def _gathered(step, state, args, rows, pad_slot_id, batch):
    """The step on a working copy of the addressed state rows (zeros for padded ones), in the step's
    arithmetic dtype; the updated rows written back in the state's dtype."""
    if rows is None:  # row for row
        rows = np.arange(shape(state)[0])
        if rows.size != batch:
            raise ValueError(f"state: expected {batch} rows (x's batch) without state_batch_indices, "
                             f"got shape {shape(state)}")
        live = rows
    else:
        live = np.flatnonzero(rows != pad_slot_id)
    if is_torch(state):
        import torch  # (a torch tensor is in hand)
        acc = _acc(state, args)
        work = torch.zeros((batch,) + tuple(state.shape[1:]), dtype=acc, device=state.device)
        src = torch.as_tensor(rows[live], device=state.device)
        dst = torch.as_tensor(live, device=state.device)
        work[dst] = state[src].to(acc)
        out = step.run({**args, "state": work}, {"state": work})["out"]
        state[src] = work[dst].to(state.dtype)
        return out
    acc = np.complex128 if state.dtype.kind == "c" else np.float64
    work = np.zeros((batch,) + state.shape[1:], acc)
    work[live] = state[rows[live]]
    out = step.run({**args, "state": work}, {"state": work})["out"]
    state[rows[live]] = work[live].astype(state.dtype)
    return out
