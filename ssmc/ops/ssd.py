"""mamba_ssm's mamba_chunk_scan_combined (Mamba-2 SSD) as a Spec: which Spec the arguments describe,
run it (forward, or read backwards in time for Hydra), and its gradients.  The public entry point is
in `dispatch.py`.
"""
from __future__ import annotations

import math

from ssmc.ir.spec import Spec
from ssmc.runtime import cached_compile

from .arguments import rank, shape
from .selective_scan import grads_like


def check_chunk_size(chunk_size) -> None:
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive integer, got {chunk_size!r}")


def ssd_spec(D, z, dt_bias, initial_states, seq_idx, dt_softplus, lo, hi, return_final_states):
    """The Spec of ssd's arguments (which optional ones are given, and how)."""
    skip = None
    if D is not None:
        skip = {1: "h", 2: "hp"}.get(rank("D", D, (1, 2), ("(H,)", "(H, P)")))
    return Spec(
        "ssd", state="scalar_head", A="direct", rule="zoh_euler", dt="softplus" if dt_softplus else "raw",
        dt_bias=dt_bias is not None, dt_limit=None if (lo, hi) == (0.0, math.inf) else (lo, hi),
        groups=True, skip=skip, gate="silu" if z is not None else None, h0=initial_states is not None,
        seq_idx=seq_idx is not None, final_state=bool(return_final_states),
    )


def run_ssd(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, seq_idx, dt_softplus, dt_limit,
            return_final_states, backend):
    """ssd on checked arguments: (out, final_states) or out."""
    check_chunk_size(chunk_size)
    lo, hi = (float(v) for v in dt_limit)
    spec = ssd_spec(D, z, dt_bias, initial_states, seq_idx, dt_softplus, lo, hi, return_final_states)
    res = cached_compile(spec, backend)(x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias,
                                       initial_states=initial_states, seq_idx=seq_idx)
    return (res["out"], res["final_states"]) if return_final_states else res["out"]


def run_reverse_ssd(x, dt, A, B, C, dt_bias, dt_softplus, dt_limit, backend):
    """ssd read backwards in time (h_t = exp(Δ_t A) h_{t+1} + Δ_t B_t x_t; y_t = C_t·h_t): the drop-in
    op's Spec with direction="reverse", differentiable through the compiled graph's autograd on the
    Triton backend."""
    lo, hi = dt_limit
    spec = ssd_spec(None, None, dt_bias, None, None, dt_softplus, lo, hi, False)
    spec = spec.with_(name="ssd_reverse", direction="reverse")
    return cached_compile(spec, backend)(x=x, dt=dt, A=A, B=B, C=C, dt_bias=dt_bias)["out"]


def ssd_backward(dout, dfinal, x, dt, A, B, C, D=None, z=None, dt_bias=None, initial_states=None, seq_idx=None,
                 dt_softplus=False, dt_limit=(0.0, float("inf")), *, backend="triton"):
    """Gradients of ssd (torch tensors) for the cotangents `dout` of out and `dfinal` of final_states
    (None: no final state).  Returns [dx, ddt, dA, dB, dC, dD, dz, ddt_bias, dinitial_states], None
    where the argument was None, each in its argument's layout and dtype."""
    lo, hi = (float(v) for v in dt_limit)
    if dout is None or tuple(dout.shape) != tuple(x.shape):
        raise ValueError(f"dout: expected the shape of x {tuple(x.shape)}, got {shape(dout)}")
    spec = ssd_spec(D, z, dt_bias, initial_states, seq_idx, dt_softplus, lo, hi, dfinal is not None)
    args = dict(x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias, initial_states=initial_states,
                seq_idx=seq_idx)
    cts = {"out": dout, **({"final_states": dfinal} if dfinal is not None else {})}
    grads = cached_compile(spec, backend).grad(args, cts)
    args.pop("seq_idx")
    return grads_like(grads, args)
