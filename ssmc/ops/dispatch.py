"""The drop-in ops with mamba_ssm's signatures: each checks its arguments, then runs either the torch
custom op (`torch_ops.py`: under torch.compile, so the call traces as one op, or when autograd records
it) or the implementation directly (`selective_scan.py`, `ssd.py`, `multi_order.py`).

`selective_scan` is `selective_scan_fn`; `ssd` is `mamba_chunk_scan_combined`; `selective_state_update`
is mamba_ssm's decode step.  Each picks the Spec its arguments describe, compiles it once (cached) and
runs it on the chosen backend: "numpy", "triton", or "auto" (Triton for CUDA tensors, the NumPy
reference otherwise).  On the Triton backend they are differentiable (torch autograd): their backward
is the generated backward kernel of the same Spec.
"""
from __future__ import annotations

import numpy as np

from ssmc.runtime.arrays import is_torch

from .arguments import arrays, flag, limits, shape
from .decode import run_state_update
from .multi_order import prepare, run_multi_order
from .selective_scan import run_selective_scan
from .ssd import check_chunk_size, run_ssd
from .varlen import Padding, check_cu_seqlens, seq_idx_of


def custom_ops(*tensors):
    """torch.ops.ssmc when the call needs it — torch tensors under torch.compile (so the call traces as one
    op) or recorded by autograd (a tensor requires grad and grad mode is on: the op's autograd) — else None:
    the caller runs the implementation directly.  The custom op's dispatch costs host time (about a
    batch-1 Mamba-1 forward's GPU time, BENCHMARKS.md), so a call that needs neither does not pay it."""
    given = [t for t in tensors if t is not None]
    if not given or not all(type(t).__module__.startswith("torch") for t in given):
        return None
    import torch  # (torch tensors are in hand)
    if not torch.compiler.is_compiling() and not (torch.is_grad_enabled() and any(t.requires_grad for t in given)):
        return None
    from . import torch_ops  # noqa: F401  (torch glue, loaded with torch: registers the custom ops)
    return torch.ops.ssmc


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, *, cu_seqlens=None, return_varlen_states=False, backend="auto"):
    """mamba_ssm's selective_scan_fn.

    u, delta, z: (batch, dim, L); A: (dim, N), real or complex; B, C: (dim, N) time-invariant,
    (batch, N, L) or (batch, G, N, L); D, delta_bias: (dim,).  With a complex A the output is
    2·Re(C·h).  Returns out (batch, dim, L), and last_state (batch, dim, N) if asked.
    cu_seqlens (num_seqs + 1,): the batch of one packs sequences at these offsets (each starts from a
    zero state); return_varlen_states adds the state at each one's end, (num_seqs, dim, N), last.
    """
    arrays(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias)
    delta_softplus, return_last_state = flag("delta_softplus", delta_softplus), flag("return_last_state",
                                                                                     return_last_state)
    if _packed(cu_seqlens, return_varlen_states):
        cu = check_cu_seqlens(cu_seqlens, shape(u)[-1], shape(u)[0])
        pad = Padding(cu)
        bc = lambda x: x if len(shape(x)) == 2 else pad.pad(x, len(shape(x)) - 2)  # noqa: E731  (time-invariant: as is)
        out, states = selective_scan(pad.pad(u, 1), pad.pad(delta, 1), A, bc(B), bc(C), D, pad.pad(z, 1), delta_bias,
                                     delta_softplus, True, backend=backend)
        return _varlen_results(pad.unpad(out, 1), states, cu, return_last_state, return_varlen_states)
    op = custom_ops(u, delta, A, B, C, D, z, delta_bias)
    if op is not None:
        out, last = op.selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, backend)
        return (out, last) if return_last_state else out
    return run_selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, backend)


def ssd(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None, seq_idx=None,
        cu_seqlens=None, dt_softplus=False, dt_limit=(0.0, float("inf")), return_final_states=False,
        return_varlen_states=False, *, backend="auto"):
    """mamba_ssm's mamba_chunk_scan_combined (Mamba-2 SSD).

    x, z: (batch, L, H, P); dt: (batch, L, H); A: (H,); B, C: (batch, L, G, N); D: (H,) or (H, P);
    dt_bias: (H,); initial_states: (batch, H, P, N); seq_idx: (batch, L) integer, the state resets
    where it changes.  `chunk_size` is accepted for compatibility: the result does not depend on it
    (the Triton cost model picks the chunked kernel's own chunk).  Returns out (batch, L, H, P), and
    final_states (batch, H, P, N) if asked.  cu_seqlens (num_seqs + 1,): the batch of one packs
    sequences at these offsets (seq_idx, if given, must say the same); return_varlen_states adds the
    state at each one's end, (num_seqs, H, P, N), last.
    """
    arrays(x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias, initial_states=initial_states, seq_idx=seq_idx)
    check_chunk_size(chunk_size)
    lo, hi = limits("dt_limit", dt_limit)
    dt_softplus, return_final_states = flag("dt_softplus", dt_softplus), flag("return_final_states",
                                                                               return_final_states)
    if _packed(cu_seqlens, return_varlen_states):
        cu = check_cu_seqlens(cu_seqlens, shape(x)[1] if len(shape(x)) > 1 else 0, shape(x)[0] if shape(x) else 0)
        _check_packed_ssd(cu, seq_idx, initial_states)
        scan = dict(dt_softplus=dt_softplus, dt_limit=(lo, hi), backend=backend)
        if not return_varlen_states:  # resets at the sequence starts: one packed run
            return ssd(x, dt, A, B, C, chunk_size, D, z, dt_bias, seq_idx=seq_idx_of(cu, x),
                       return_final_states=return_final_states, **scan)
        pad = Padding(cu)
        out, states = ssd(pad.pad(x, 0), pad.pad(dt, 0), A, pad.pad(B, 0), pad.pad(C, 0), chunk_size, D,
                          pad.pad(z, 0), dt_bias, return_final_states=True, **scan)
        return _varlen_results(pad.unpad(out, 0), states, cu, return_final_states, True)
    op = custom_ops(x, dt, A, B, C, D, z, dt_bias, initial_states, seq_idx)
    if op is not None:
        out, final = op.ssd(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, seq_idx,
                            dt_softplus, lo, hi, return_final_states, backend)
        return (out, final) if return_final_states else out
    return run_ssd(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, seq_idx, dt_softplus, (lo, hi),
                   return_final_states, backend)


def _packed(cu_seqlens, return_varlen_states) -> bool:
    if flag("return_varlen_states", return_varlen_states) and cu_seqlens is None:
        raise ValueError("return_varlen_states: the states of packed sequences need cu_seqlens")
    return cu_seqlens is not None


def _check_packed_ssd(cu, seq_idx, initial_states):
    if initial_states is not None:
        raise ValueError("initial_states: not taken with cu_seqlens (each packed sequence starts from a zero "
                         "state); pass sequences that continue a state one per batch row instead")
    if seq_idx is not None:
        given = seq_idx.detach().cpu().numpy() if is_torch(seq_idx) else np.asarray(seq_idx)
        starts = lambda s: np.diff(s[0]) != 0  # noqa: E731
        if given.shape != (1, cu[-1]) or (starts(given) != starts(seq_idx_of(cu, given))).any():
            raise ValueError("seq_idx: must change exactly where cu_seqlens starts a sequence (or be left out)")


def _varlen_results(out, states, cu, final: bool, varlen: bool):
    """(out, [final state of the packed row: the last non-empty sequence's], [per-sequence states])."""
    res = [out]
    if final:
        last = int(np.flatnonzero(np.diff(cu))[-1]) if cu[-1] > 0 else states.shape[0] - 1
        res.append(states[last:last + 1])
    if varlen:
        res.append(states)
    return res[0] if len(res) == 1 else tuple(res)


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False,
                           state_batch_indices=None, *, dt_limit=(0.0, float("inf")), pad_slot_id=-1,
                           backend="auto"):
    """mamba_ssm's selective_state_update: one decode step, `state` updated in place (see ssmc.ops.decode).

    Without heads: state (cache_batch, dim, N); x, dt, z (batch, dim); A (dim, N); B, C (batch, N);
    D, dt_bias (dim,).  With heads: state (cache_batch, H, P, N); x, dt, z (batch, H, P); A (H, P, N);
    B, C (batch, G, N); D, dt_bias (H, P).  state_batch_indices (batch,): the state row of each batch
    row (entries equal to pad_slot_id are skipped); without it cache_batch = batch.  The state may be
    fp16/bf16/fp32/fp64 (complex with a complex A); the step computes in fp32 (fp64 for fp64 tensors).
    dt_limit clamps Δ after its bias and softplus.  Returns out, shaped like x.
    """
    arrays(state=state, x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias)
    dt_softplus, dt_limit = flag("dt_softplus", dt_softplus), limits("dt_limit", dt_limit)
    op = custom_ops(state, x, dt, A, B, C, D, z, dt_bias, state_batch_indices)
    if op is not None:
        return op.selective_state_update(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, dt_limit[0], dt_limit[1],
                                         state_batch_indices, pad_slot_id, backend)
    return run_state_update(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, dt_limit, state_batch_indices,
                            pad_slot_id, backend)


def multi_order_scan(u, delta, A, B, C, orders, D=None, z=None, delta_bias=None, delta_softplus=False, *,
                     merge: str = "sum", gate=None, tie=(), backend: str = "auto"):
    """K selective scans of one sequence along K orders, summed (see ssmc.ops.multi_order).

    u, z: (batch, dim, L), shared by every order; delta: (batch, K, dim, L); A: (K, dim, N);
    B, C: (batch, K, N, L); D, delta_bias: (K, dim); orders: K permutations of range(L) (NumPy or
    torch integer arrays, or one (K, L) array).  Each B_k, C_k, delta_k is given in sequence
    positions and read along order k.  `merge`: "sum" (the default) or "mean" of the K results, shape
    (batch, dim, L); "concat", shape (batch, K, dim, L); or "gated": Σ_k gate[:, k] ⊙ result_k, shape
    (batch, dim, L), with `gate` (batch, K, dim, L) in sequence positions (only with merge="gated").
    `tie`: the parameters shared by every order (any of "delta", "A", "B", "C", "D", "delta_bias"),
    given without their K axis — delta (batch, dim, L), A (dim, N), B/C (batch, N, L), D/delta_bias
    (dim,) — as a bidirectional S4/S5-style layer ties them; Vision Mamba ties none.  A tied
    parameter is one tensor in the IR read by every order (no copies; except that when Δ, A, D and the
    bias are all tied, A is repeated K times — K·dim×N — so the graph keeps its K blocks of channels,
    and that with B and C both tied on named grid orders B enters as a view repeating it along K with
    stride 0, so the grid kernel can tell the orders' blocks apart); its gradient sums the orders.
    On the Triton backend it is differentiable (torch autograd; the backward is
    `ssmc.ops.multi_order_backward`).
    """
    arrays(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias, gate=gate)
    delta_softplus = flag("delta_softplus", delta_softplus)
    orders, grid = prepare(u, delta, A, B, C, orders, D, z, delta_bias, gate, merge, tie)
    op = custom_ops(u, delta, A, B, C, D, z, delta_bias, gate)
    if op is not None:  # one custom op, with autograd (ssmc.ops.torch_ops)
        return op.multi_order_scan(u, delta, A, B, C, orders, D, z, delta_bias, gate, delta_softplus, merge,
                                   grid, backend)
    return run_multi_order(u, delta, A, B, C, orders, D, z, delta_bias, gate, delta_softplus, merge, backend, grid)
