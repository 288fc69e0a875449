"""mamba_ssm's selective_scan_fn as a Spec: which Spec the arguments describe,
run it, and its gradients.  The public entry points (argument checks, the torch custom ops) are in
`dispatch.py`; this is what they run.
"""
from __future__ import annotations

import numpy as np

from ssmc.ir.bind import is_complex
from ssmc.ir.spec import Spec
from ssmc.runtime import cached_compile

from .arguments import rank, shape


def unsqueeze_group(x, groups):
    """(batch, N, L) -> (batch, G, N, L): one group shared by every channel, seen as `groups`
    equal groups so that it agrees with a grouped partner (a broadcast view, no copy)."""
    x = x[:, None]
    full = (x.shape[0], groups) + tuple(x.shape[2:])
    return x.expand(*full) if hasattr(x, "expand") else np.broadcast_to(x, full)


def scan_spec(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
    """(Spec, its keyword arguments, the B/C ranks given) for selective_scan's arguments."""
    shapes = ("(dim, N)", "(batch, N, L)", "(batch, G, N, L)")
    nb, nc = rank("B", B, (2, 3, 4), shapes), rank("C", C, (2, 3, 4), shapes)
    grouped = 4 in (nb, nc)
    if grouped:
        groups = (B if nb == 4 else C).shape[1]
        B = unsqueeze_group(B, groups) if nb == 3 else B
        C = unsqueeze_group(C, groups) if nc == 3 else C
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


def run_selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, backend):
    """selective_scan on checked arguments: (out, last_state) or out."""
    spec, args, _ = scan_spec(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    res = cached_compile(spec, backend)(**args)
    return (res["out"], res["last_state"]) if return_last_state else res["out"]


def grads_like(grads: dict, given: dict, ranks: dict = None):
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
        raise ValueError(f"dout: expected the shape of u {tuple(u.shape)}, got {shape(dout)}")
    spec, args, ranks = scan_spec(u, delta, A, B, C, D, z, delta_bias, delta_softplus, dlast is not None)
    cts = {"out": dout, **({"last_state": dlast} if dlast is not None else {})}
    grads = cached_compile(spec, backend).grad(args, cts)
    given = dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias)
    return grads_like(grads, given, ranks)
