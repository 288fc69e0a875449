"""A time-invariant diagonal scan as a DFT convolution (the `lti="dft"` option).

With Ā and B̄ constant in time, x_t = B̄·u_t and a readout f that is linear and time-invariant
(products with constant C, sums over the state, Re), the output is a convolution:

    f(h_t) = Σ_{s≤t} K_{t-s} u_s + f(Ā^{t+1} h0),        K_k = f(Ā^k B̄)

K is built from Ā^k = r^k (cos kθ + i sin kθ) for k = 0..L-1 (no loop), and the convolution
runs as DFT → product → inverse DFT with the length padded to a power of two ≥ 2L (no wrap-around).
The final state is Ā^L h0 + Σ_s Ā^{L-1-s} x_s, a weighted sum over time.
"""
from __future__ import annotations

import math

import numpy as np
import sympy as sp
from onnx import TensorProto

from ssmc.ir.symbolic import lower as lower_expr

from .elementwise import cmul
from .emitter import END
from .strategy import dft_parts
from .sym import emit_lowered

T = 1


def _polar(lw, a_id: int) -> tuple:
    """(log r, θ) of Ā: from the exponent when Ā = exp(E), else from Ā's (re, im) parts."""
    em, n = lw.em, lw.g[a_id]
    if n.op == "expr" and isinstance(n.attr("expr"), sp.exp):
        names = n.attr("symbols")
        flags = tuple(lw.g[j].type.complex for j in n.args)
        env = {}
        for sym, j, f in zip(names, n.args, flags):
            parts = lw.val(j)
            if f:
                env[f"{sym}_re"], env[f"{sym}_im"] = parts
            else:
                env[sym] = parts[0]
        assigns, res = lower_expr(n.attr("expr").args[0], names, flags, split_complex=True, prefix=f"p{a_id}_")
        res = emit_lowered(em, assigns, res, env)
        return res[0], (res[1] if len(res) > 1 else em.scalar(0.0))
    parts = lw.val(a_id)
    re, im = parts[0], (parts[1] if len(parts) > 1 else em.scalar(0.0))
    log_r = em.op("Mul", [em.scalar(0.5), em.op("Log", [em.op("Add", [em.op("Mul", [re, re]),
                                                                      em.op("Mul", [im, im])])])])
    return log_r, atan2(em, im, re)


def atan2(em, y: str, x: str) -> str:
    """atan2(y, x) from Atan and Where (ONNX has no Atan2)."""
    base = em.op("Atan", [em.op("Div", [y, x])])  # x = 0 gives ±inf -> ±π/2, as atan2 does
    shift = em.op("Where", [em.op("Less", [x, em.scalar(0.0)]),
                            em.op("Where", [em.op("GreaterOrEqual", [y, em.scalar(0.0)]),
                                            em.scalar(math.pi), em.scalar(-math.pi)]),
                            em.scalar(0.0)])
    return em.op("Add", [base, shift])


def _power(em, polar: tuple, k: str) -> tuple:
    """Ā^k as (re, im) for exponents k (a tensor along t)."""
    log_r, theta = polar
    mag = em.op("Exp", [em.op("Mul", [k, log_r])])
    angle = em.op("Mul", [k, theta])
    return em.op("Mul", [mag, em.op("Cos", [angle])]), em.op("Mul", [mag, em.op("Sin", [angle])])


def _as_complex(em, parts: tuple) -> str:
    """(re,) or (re, im) -> a tensor with a trailing axis of 1 or 2, as DFT takes it."""
    return em.op("Concat", [em.op("Unsqueeze", [p, em.ints([-1])]) for p in parts], axis=-1)


# DFTs run over axis 4 of (b, h, p, n, t, re/im), time just before the complex axis, on signals
# zero-padded to the FFT length with Pad: onnxruntime's shape inference for opset-20 DFT ignores
# dft_length and would size the output like the input.
TO_SIGNAL, FROM_SIGNAL = [0, 2, 3, 4, 1, 5], [0, 4, 1, 2, 3, 5]


def _dft(lw, x: str, inverse: bool) -> str:
    em = lw.em
    if lw.opset >= 20:
        return em.op("DFT", [x, "", em.const(4, np.int64)], inverse=int(inverse), onesided=0)
    return em.op("DFT", [x], axis=4, inverse=int(inverse), onesided=0)


def _padded(lw, x: str, pad: str) -> str:
    em = lw.em
    x = em.op("Transpose", [x], perm=TO_SIGNAL)
    return em.op("Pad", [x, em.op("Concat", [em.ints([0]), pad], axis=0), em.scalar(0.0), em.ints([4])])


def _convolve(lw, kernel: tuple, signal: tuple, L: str, nfft: str) -> tuple:
    """Causal convolution along t of a kernel and a signal ((re,) or (re, im) each), first L steps."""
    em = lw.em
    pad = em.op("Sub", [nfft, L])  # both have L steps
    k = _dft(lw, _padded(lw, _as_complex(em, kernel), pad), False)
    s = _dft(lw, _padded(lw, _as_complex(em, signal), pad), False)

    def part(x, i):
        return em.op("Gather", [x, em.const(i, np.int64)], axis=-1)

    kr, ki, sr, si = part(k, 0), part(k, 1), part(s, 0), part(s, 1)
    prod = (em.op("Sub", [em.op("Mul", [kr, sr]), em.op("Mul", [ki, si])]),
            em.op("Add", [em.op("Mul", [kr, si]), em.op("Mul", [ki, sr])]))
    y = em.op("Transpose", [_dft(lw, _as_complex(em, prod), True)], perm=FROM_SIGNAL)
    y = em.op("Slice", [y, em.ints([0]), L, em.ints([T])])
    return part(y, 0), part(y, 1)


def causal_conv(lw, kernel: tuple, signal: tuple) -> tuple:
    """Σ_{k≤t} kernel_k signal_{t-k} of two rank-5 values ((re,) or (re, im) each), by DFT."""
    em = lw.em
    L = lw.dim("t")
    Lf = em.op("Cast", [L], to=TensorProto.FLOAT)
    nfft = em.op("Cast", [em.op("Pow", [em.scalar(2.0), em.op("Ceil", [em.op("Div", [
        em.op("Log", [em.op("Mul", [Lf, em.scalar(2.0)])]), em.scalar(math.log(2.0))])])])], to=TensorProto.INT64)
    return _convolve(lw, kernel, signal, L, nfft)


def _readout(lw, region, state: tuple) -> dict:
    """The region's body evaluated on a state-shaped value (rank 5): frontier id -> parts."""
    g = lw.g
    vals = {region.scan: state}
    for i in region.body:
        vals[i] = lw.lower_node(i, g[i], [vals[j] if j in vals else lw.val(j) for j in g[i].args], rank=5)
    return {f: vals[f] for f in region.frontier}


def _width(parts: tuple, complex_: bool) -> tuple:
    return parts if complex_ else parts[:1]


def _split_readout(g, region, u_id):
    """(pre, sum, post) when the readout is post(Σ_n pre(h)) with `pre` products by time-invariant
    values and `post` real parts, negations or such products — so the per-step state never needs
    to exist: the sum over n becomes a MatMul with the powers of Ā.  Also needs a state without p
    and a real input u over (b, t, h).  Else None (the elementwise form is used)."""
    state = g[region.scan].type
    if len(region.frontier) != 1 or state.dims - {"b", "t", "h", "n"} or g[u_id].type.complex \
            or g[u_id].type.dims - {"b", "t", "h"}:
        return None
    body = list(region.body)
    sums = [i for i in body if g[i].op == "sum"]
    if len(sums) != 1 or g[sums[0]].attr("axes") != ("n",) or region.frontier[0] != body[-1]:
        return None
    k = body.index(sums[0])
    chain = region.scan
    for i in body:
        n = g[i]
        others = [a for a in n.args if a != chain]
        allowed = ("mul", "neg") if i != sums[0] and body.index(i) < k else ("mul", "neg", "real", "sum")
        if n.op not in allowed or chain not in n.args or any(g[a].type.time_varying for a in others):
            return None
        chain = i
    return body[:k], sums[0], body[k + 1:]


def _to_hln(em, x: str) -> str:
    """(1, L', h, 1, n) -> (h, L', n)."""
    return em.op("Transpose", [em.op("Squeeze", [x, em.ints([0, 3])])], perm=[1, 0, 2])


def _contract(lw, powers: tuple, w: tuple, roles: set) -> tuple:
    """Σ_n Ā^k_n · w_n for every k: (h, L', n) @ (h, n, B) MatMuls, returned as (B, L', h, 1, 1) parts."""
    em = lw.em
    w = [em.op("Transpose", [em.op("Squeeze", [em.op("Expand", [p, lw.shape_of(roles)]), em.ints([1, 3])])],
               perm=[1, 2, 0]) for p in w]  # (h, n, B)
    pr, pi = powers
    if len(w) == 1:
        parts = (em.op("MatMul", [pr, w[0]]), em.op("MatMul", [pi, w[0]]))
    else:
        parts = (em.op("Sub", [em.op("MatMul", [pr, w[0]]), em.op("MatMul", [pi, w[1]])]),
                 em.op("Add", [em.op("MatMul", [pr, w[1]]), em.op("MatMul", [pi, w[0]])]))
    return tuple(em.op("Unsqueeze", [em.op("Transpose", [p], perm=[2, 1, 0]), em.ints([3, 4])]) for p in parts)


def _contracted(lw, s, region, split, b, u, h0, powers, L, Lf, nfft) -> None:
    """The DFT form without any (L, state)-sized product: kernel and initial-state term as MatMuls
    of the powers of Ā with pre(B̄) and pre(h0), the final state as a MatMul with the reversed input."""
    g, em = lw.g, lw.em
    pre, sum_id, post = split
    cplx = g[s].type.complex
    one = em.ints([1])

    def pre_of(v):  # the time-invariant products before the sum, applied to v
        vals = {region.scan: v}
        for i in pre:
            vals[i] = lw.lower_node(i, g[i], [vals[j] if j in vals else lw.val(j) for j in g[i].args], rank=5)
        return vals[pre[-1]] if pre else v

    def post_of(v):
        vals = {sum_id: v}
        for i in post:
            vals[i] = lw.lower_node(i, g[i], [vals[j] if j in vals else lw.val(j) for j in g[i].args], rank=5)
        return vals[post[-1]] if post else v

    def window(start, end):
        return tuple(_to_hln(em, em.op("Slice", [p, start, end, em.ints([T])])) for p in powers)

    first = window(em.ints([0]), L)  # Ā^k, k = 0..L-1, as (h, L, n)
    kernel = post_of(_contract(lw, first, pre_of(b), {"h", "n"}))  # K_k = post(Σ_n pre(Ā^k B̄))
    y = _convolve(lw, kernel, u, L, nfft)
    if h0 is not None:  # + post(Σ_n Ā^{t+1} pre(h0))
        carried = post_of(_contract(lw, window(one, em.op("Add", [L, one])), pre_of(h0), {"b", "h", "n"}))
        carried = carried + (em.scalar(0.0),) * (2 - len(carried))
        y = tuple(em.op("Add", [p, q]) for p, q in zip(y, carried))
    f = region.frontier[0]
    lw.vals[f] = _width(y, g[f].type.complex)
    if region.last:  # h_{L-1} = B̄ ⊙ Σ_j Ā^j u_{L-1-j} + Ā^L h0
        ur = em.op("Squeeze", [u[0], em.ints([3, 4])])  # (b, L, h)
        ur = em.op("Slice", [ur, em.op("Sub", [L, one]), em.ints([-END]), em.ints([T]), em.ints([-1])])
        ur = em.op("Transpose", [ur], perm=[2, 0, 1])  # (h, b, L)
        summed = tuple(em.op("Unsqueeze", [em.op("Transpose", [em.op("MatMul", [ur, p])], perm=[1, 0, 2]),
                                           em.ints([1, 3])]) for p in first)  # (b, 1, h, 1, n)
        final = cmul(em, summed, b)
        if h0 is not None:
            last = tuple(em.op("Slice", [p, L, em.op("Add", [L, one]), em.ints([T])]) for p in powers)
            final = tuple(em.op("Add", [p, q]) for p, q in zip(final, cmul(em, last, h0)))
        state = lw.initial_state(s, _width(final, cplx), rank5=True)
        for i in region.last:
            lw.vals[i] = state


def lower(lw, s: int) -> None:
    g, em = lw.g, lw.em
    n = g[s]
    region = lw.regions[s]
    parts = dft_parts(g, s)
    cplx = n.type.complex
    h0 = lw.val(n.args[2]) if n.attr("has_h0") else None
    polar = _polar(lw, parts["a"])
    b, u = lw.val(parts["b"]), lw.val(parts["u"])

    L = lw.dim("t")
    Lf = em.op("Cast", [L], to=TensorProto.FLOAT)
    k = em.op("Reshape", [em.op("Range", [em.scalar(0.0), em.op("Squeeze", [em.op("Add", [Lf, em.scalar(1.0)])]),
                                          em.scalar(1.0)]), em.ints([1, -1, 1, 1, 1])])
    powers = _power(em, polar, k)  # Ā^k for k = 0..L along t, computed once

    def steps(start, end, reverse=False):  # Ā^k for k in [start, end), or reversed
        if reverse:
            return tuple(em.op("Slice", [p, em.op("Sub", [L, em.ints([1])]), em.ints([-END]), em.ints([T]),
                                         em.ints([-1])]) for p in powers)
        return tuple(em.op("Slice", [p, start, end, em.ints([T])]) for p in powers)

    zero, one = em.ints([0]), em.ints([1])
    # FFT length: the power of two >= 2L, so the circular convolution does not wrap
    nfft = em.op("Cast", [em.op("Pow", [em.scalar(2.0), em.op("Ceil", [em.op("Div", [
        em.op("Log", [em.op("Mul", [Lf, em.scalar(2.0)])]), em.scalar(math.log(2.0))])])])], to=TensorProto.INT64)

    split = _split_readout(g, region, parts["u"])
    if split is not None:
        _contracted(lw, s, region, split, b, u, h0, powers, L, Lf, nfft)
        return
    impulse = _width(cmul(em, steps(zero, L), b), cplx)  # Ā^k B̄, k = 0..L-1
    kernels = _readout(lw, region, impulse)
    out = {f: _convolve(lw, kernels[f], u, L, nfft) for f in region.frontier}
    if h0 is not None:  # the initial state decays through the sequence: f(Ā^{t+1} h0)
        carried = _readout(lw, region, _width(cmul(em, steps(one, em.op("Add", [L, one])), h0), cplx))
        for f in out:
            c = carried[f] + (em.scalar(0.0),) * (2 - len(carried[f]))  # a real readout: im = 0
            out[f] = tuple(em.op("Add", [p, q]) for p, q in zip(out[f], c))
    for f in region.frontier:
        lw.vals[f] = _width(out[f], g[f].type.complex)
    if region.last:  # h_{L-1} = Σ_s Ā^{L-1-s} x_s + Ā^L h0
        x = lw.val(n.args[1])
        weighted = cmul(em, steps(None, None, reverse=True), x)
        final = tuple(em.op("ReduceSum", [p, em.ints([T])], keepdims=1) for p in weighted)
        if h0 is not None:
            final = tuple(em.op("Add", [p, q]) for p, q in zip(final, cmul(em, steps(L, em.op("Add", [L, one])), h0)))
        final = _width(final, cplx)
        state = lw.initial_state(s, final, rank5=True)  # broadcast to the state's full shape
        for i in region.last:
            lw.vals[i] = state
