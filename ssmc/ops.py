"""Drop-in ops with mamba_ssm's signatures, built from Specs (no hand-written kernels).

`selective_scan` is `selective_scan_fn`; `ssd` is `mamba_chunk_scan_combined`.  Each picks the
Spec its arguments describe, compiles it once (cached) and runs it on the chosen backend:
"numpy", "triton", or "auto" (Triton for CUDA tensors, the NumPy reference otherwise).
On the Triton backend both are differentiable (torch autograd through ssmc.torch_ops): their
backward is the generated backward kernel of the same Spec (`selective_scan_backward`,
`ssd_backward` call it directly).
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from ssmc.ir.bind import is_complex
from .compiler import compile
from ssmc.ir.spec import Spec


def _custom_op(backend: str, direct: bool, *tensors):
    """torch.ops.ssmc when torch tensors run on the Triton backend and the call needs it — under
    torch.compile (so the call traces as one op) or when autograd records it (a tensor requires grad
    and grad mode is on: the op's autograd)
    — else None: the caller runs the kernel directly.  The custom op's dispatch took host time: a
    Mamba-1 forward call (batch 4 × 4096 channels) took 0.41 ms of host time through it and 0.23 ms
    without, on the H100 machine (torch 2.11) — about a batch-1 forward's GPU time.  The custom op
    calls back here with direct=True."""
    if direct:
        return None
    given = [t for t in tensors if t is not None]
    if not given or not all(type(t).__module__.startswith("torch") for t in given):
        return None
    if backend == "triton" or (backend == "auto" and given[0].device.type == "cuda"):
        import torch
        if not torch.compiler.is_compiling() and not (torch.is_grad_enabled() and any(t.requires_grad for t in given)):
            return None

        from . import torch_ops  # noqa: F401  (registers the ops)
        return torch.ops.ssmc
    return None


@lru_cache(maxsize=512)
def _compiled(spec: Spec, backend: str):
    return compile(spec, backend=backend)


def _ndim(name, x, allowed, shapes):
    nd = len(getattr(x, "shape", ()))
    if nd not in allowed:
        raise ValueError(f"{name}: expected shape {' or '.join(shapes)}, got {tuple(getattr(x, 'shape', ()))}")
    return nd


def _unsqueeze_group(x, groups):
    """(batch, N, L) -> (batch, G, N, L): one group shared by every channel, seen as `groups`
    equal groups so that it agrees with a grouped partner (a broadcast view, no copy)."""
    x = x[:, None]
    shape = (x.shape[0], groups) + tuple(x.shape[2:])
    return x.expand(*shape) if hasattr(x, "expand") else np.broadcast_to(x, shape)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, *, backend="auto", _direct=False):
    """mamba_ssm's selective_scan_fn.

    u, delta, z: (batch, dim, L); A: (dim, N), real or complex; B, C: (dim, N) time-invariant,
    (batch, N, L) or (batch, G, N, L); D, delta_bias: (dim,).  With a complex A the output is
    2·Re(C·h).  Returns out (batch, dim, L), and last_state (batch, dim, N) if asked.
    """
    op = _custom_op(backend, _direct, u, delta, A, B, C, D, z, delta_bias)
    if op is not None:
        out, last = op.selective_scan(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus),
                                      bool(return_last_state))
        return (out, last) if return_last_state else out
    spec, args, _ = _scan_spec(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    res = _compiled(spec, backend)(**args)
    return (res["out"], res["last_state"]) if return_last_state else res["out"]


def _scan_spec(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
    """(Spec, its keyword arguments, the B/C ranks given) for selective_scan's arguments."""
    shapes = ("(dim, N)", "(batch, N, L)", "(batch, G, N, L)")
    nb, nc = _ndim("B", B, (2, 3, 4), shapes), _ndim("C", C, (2, 3, 4), shapes)
    grouped = 4 in (nb, nc)
    if grouped:
        groups = (B if nb == 4 else C).shape[1]
        B = _unsqueeze_group(B, groups) if nb == 3 else B
        C = _unsqueeze_group(C, groups) if nc == 3 else C
    cplx = is_complex(A)
    spec = Spec(
        "selective_scan", state="diag_complex" if cplx else "diag_real", A="direct", rule="zoh_euler",
        selective=frozenset({"dt"} | ({"B"} if nb > 2 else set()) | ({"C"} if nc > 2 else set())),
        dt="softplus" if delta_softplus else "raw", dt_bias=delta_bias is not None, groups=grouped,
        skip="h" if D is not None else None, gate="silu" if z is not None else None,
        final_state=bool(return_last_state),
        complex_BC=frozenset(k for k, v in (("B", B), ("C", C)) if cplx and is_complex(v)),
    )
    args = dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias)
    return spec, args, dict(B=nb, C=nc)


def _grads_like(grads: dict, given: dict, ranks: dict = None):
    """Gradients in the arguments' layouts and dtypes: a (batch, N, L) B or C that was seen as
    (batch, G, N, L) sums its group axis back; None where the argument was None."""
    out = []
    for name, x in given.items():
        if x is None:
            out.append(None)
            continue
        g = grads[f"grad_{name}"]
        if ranks and ranks.get(name) == 3 and g.dim() == 4:
            g = g.sum(1)
        out.append(g.to(x.dtype) if g.dtype != x.dtype else g)
    return out


def selective_scan_backward(dout, dlast, u, delta, A, B, C, D=None, z=None, delta_bias=None,
                            delta_softplus=False, *, backend="triton"):
    """Gradients of selective_scan (torch tensors) for the cotangents `dout` of out and `dlast` of
    last_state (None: no last state).  Returns [du, ddelta, dA, dB, dC, dD, dz, ddelta_bias], None
    where the argument was None, each in its argument's layout and dtype."""
    if dout is None or tuple(dout.shape) != tuple(u.shape):
        raise ValueError(f"dout: expected the shape of u {tuple(u.shape)}, got {tuple(getattr(dout, 'shape', ()))}")
    spec, args, ranks = _scan_spec(u, delta, A, B, C, D, z, delta_bias, delta_softplus, dlast is not None)
    cts = {"out": dout, **({"last_state": dlast} if dlast is not None else {})}
    grads = _compiled(spec, backend).grad(args, cts)
    given = dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias)
    return _grads_like(grads, given, ranks)


def ssd(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None, seq_idx=None,
        dt_softplus=False, dt_limit=(0.0, float("inf")), return_final_states=False, *, backend="auto",
        _direct=False):
    """mamba_ssm's mamba_chunk_scan_combined (Mamba-2 SSD).

    x, z: (batch, L, H, P); dt: (batch, L, H); A: (H,); B, C: (batch, L, G, N); D: (H,) or (H, P);
    dt_bias: (H,); initial_states: (batch, H, P, N); seq_idx: (batch, L) integer, the state resets
    where it changes.  `chunk_size` is accepted for compatibility: this lowering is sequential
    in time and its result does not depend on it.  Returns out (batch, L, H, P), and
    final_states (batch, H, P, N) if asked.
    """
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive integer, got {chunk_size!r}")
    lo, hi = (float(v) for v in dt_limit)
    op = _custom_op(backend, _direct, x, dt, A, B, C, D, z, dt_bias, initial_states, seq_idx)
    if op is not None:
        out, final = op.ssd(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, seq_idx,
                            bool(dt_softplus), lo, hi, bool(return_final_states))
        return (out, final) if return_final_states else out
    spec = _ssd_spec(D, z, dt_bias, initial_states, seq_idx, dt_softplus, lo, hi, return_final_states)
    res = _compiled(spec, backend)(x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias,
                                   initial_states=initial_states, seq_idx=seq_idx)
    return (res["out"], res["final_states"]) if return_final_states else res["out"]


def _ssd_spec(D, z, dt_bias, initial_states, seq_idx, dt_softplus, lo, hi, return_final_states):
    skip = None
    if D is not None:
        skip = {1: "h", 2: "hp"}.get(_ndim("D", D, (1, 2), ("(H,)", "(H, P)")))
    return Spec(
        "ssd", state="scalar_head", A="direct", rule="zoh_euler", dt="softplus" if dt_softplus else "raw",
        dt_bias=dt_bias is not None, dt_limit=None if (lo, hi) == (0.0, math.inf) else (lo, hi),
        groups=True, skip=skip, gate="silu" if z is not None else None, h0=initial_states is not None,
        seq_idx=seq_idx is not None, final_state=bool(return_final_states),
    )


def ssd_backward(dout, dfinal, x, dt, A, B, C, D=None, z=None, dt_bias=None, initial_states=None, seq_idx=None,
                 dt_softplus=False, dt_limit=(0.0, float("inf")), *, backend="triton"):
    """Gradients of ssd (torch tensors) for the cotangents `dout` of out and `dfinal` of final_states
    (None: no final state).  Returns [dx, ddt, dA, dB, dC, dD, dz, ddt_bias, dinitial_states], None
    where the argument was None, each in its argument's layout and dtype."""
    lo, hi = (float(v) for v in dt_limit)
    if dout is None or tuple(dout.shape) != tuple(x.shape):
        raise ValueError(f"dout: expected the shape of x {tuple(x.shape)}, got {tuple(getattr(dout, 'shape', ()))}")
    spec = _ssd_spec(D, z, dt_bias, initial_states, seq_idx, dt_softplus, lo, hi, dfinal is not None)
    args = dict(x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias, initial_states=initial_states,
                seq_idx=seq_idx)
    cts = {"out": dout, **({"final_states": dfinal} if dfinal is not None else {})}
    grads = _compiled(spec, backend).grad(args, cts)
    args.pop("seq_idx")
    return _grads_like(grads, args)


@lru_cache(maxsize=64)
def _state_update(heads: bool, has_D: bool, has_z: bool, has_bias: bool, softplus: bool, backend: str):
    """mamba_ssm's selective_state_update, declared as a sequence and reduced to one step."""
    from ssmc.ir.passes.step import single_step

    from ssmc.ir import builder as d
    from ssmc.ir.builder import Builder

    m = Builder("selective_state_update")
    ch = ("H", "P") if heads else ("dim",)
    seq = ("batch",) + ch + ("L",)
    x, dt = m.input("x", seq), m.input("dt", seq)
    if has_bias:
        dt = dt + m.input("dt_bias", ch)
    if softplus:
        dt = d.softplus(dt)
    A = m.input("A", ch + ("N",))
    A_bar, B_scale = m.discretize(dt, A, "zoh_euler")
    bc = ("batch", "G", "N", "L") if heads else ("batch", "N", "L")
    B, C = m.input("B", bc), m.input("C", bc)
    h = m.scan(A_bar, B_scale * B * x)
    y = (C * h).sum("n")
    if has_D:
        y = y + m.input("D", ch) * x
    if has_z:
        y = y * d.silu(m.input("z", seq))
    m.output("out", y, seq)
    m.output("state", m.last(h), ("batch",) + ch + ("N",))
    return compile(single_step(m.build()), backend=backend)


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False, *,
                           backend="auto", _direct=False):
    """mamba_ssm's selective_state_update: one decode step, `state` updated in place.

    Without heads: state (batch, dim, N); x, dt, z (batch, dim); A (dim, N); B, C (batch, N);
    D, dt_bias (dim,).  With heads: state (batch, H, P, N); x, dt, z (batch, H, P); A (H, P, N);
    B, C (batch, G, N); D, dt_bias (H, P).  Returns out, shaped like x.
    """
    op = _custom_op(backend, _direct, state, x, dt, A, B, C, D, z, dt_bias)
    if op is not None:
        return op.selective_state_update(state, x, dt, A, B, C, D, z, dt_bias, bool(dt_softplus))
    nd = len(getattr(state, "shape", ()))
    if nd not in (3, 4):
        raise ValueError(f"state: expected shape (batch, dim, N) or (batch, H, P, N), "
                         f"got {tuple(getattr(state, 'shape', ()))}")
    step = _state_update(nd == 4, D is not None, z is not None, dt_bias is not None, bool(dt_softplus), backend)
    from .compiler import _check_state
    _check_state(step.graph, state)
    args = dict(x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias, state=state)
    return step.run(args, {"state": state})["out"]


# Multi-order scans (Vision Mamba, VMamba's SS2D, RSMamba, Point Cloud Mamba, MSVMamba): see ssmc/orders.py.
from .orders import multi_order_scan, multiscale_scan_2d, scan_orders_2d  # noqa: E402,F401
# Hydra's bidirectional quasiseparable mixer on the SSD state: see ssmc/bidirectional.py.
from .bidirectional import hydra  # noqa: E402,F401
# Tied bidirectional LTI layers (bidirectional S4D, S5): see ssmc/tied_bidirectional.py.
from . import tied_bidirectional as _tied  # noqa: E402
tied_bidirectional = _tied.tied_bidirectional
