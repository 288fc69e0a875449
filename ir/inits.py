"""Initializers: valid, well-conditioned random inputs for any declared graph.

Parameters get the inits of the papers that introduced them (S4D-Lin imaginary parts, the LRU
ring, log-uniform Δ); data tensors are standard normal.  Used by tests, `ssmc check`, the demo
and the examples; fresh random values every call unless a seed is given.
"""
from __future__ import annotations

import numpy as np

from .graph import Graph


def _s4d_lin_imag(shape, rng):
    n = np.arange(shape[-1])
    return np.broadcast_to(np.pi * n, shape) + 0.01 * rng.standard_normal(shape)


def _lru_ring(shape, rng, r_min=0.4, r_max=0.99):
    u = rng.uniform(size=shape)
    return np.log(-0.5 * np.log(u * (r_max ** 2 - r_min ** 2) + r_min ** 2))


INITS = {
    # name: (real-valued init, complex-valued init or None)
    "A_log": lambda s, r, spec: np.log(r.uniform(1.0, 16.0, s)),  # A = -exp(A_log): S4D-Real-like decay
    "A_log_re": lambda s, r, spec: np.log(0.5 + 0.05 * r.standard_normal(s) ** 2),  # S4D-Lin: Re A = -1/2
    "A_im": lambda s, r, spec: _s4d_lin_imag(s, r),
    "nu_log": lambda s, r, spec: _lru_ring(s, r),
    "theta_log": lambda s, r, spec: np.log(r.uniform(0.0, np.pi / 10, s) + 1e-3),
    "log_dt": lambda s, r, spec: r.uniform(np.log(1e-3), np.log(1e-1), s),
    "seq_idx": lambda s, r, spec: np.sort(r.integers(0, 3, s), axis=-1),
    "ADT": lambda s, r, spec: -r.uniform(0.01, 1.0, s),  # Mamba-3's A·dt: a decay
    "DT": lambda s, r, spec: r.uniform(0.01, 0.5, s),
}


def random_inputs(graph: Graph, sizes: dict, seed=None, dtype=np.float64) -> dict:
    """Random inputs for every input of `graph`, with symbolic sizes from `sizes`."""
    rng = np.random.default_rng(seed)
    out = {}
    for i in graph.ids("input"):
        n = graph[i]
        name = n.attr("name")
        shape = tuple(sizes[a.symbol] for a in n.attr("axes"))
        if n.attr("integer") and name not in INITS and _is_order(graph, i):  # a permutation along L per row
            t = [a.role for a in n.attr("axes")].index("t")
            rows = np.argsort(rng.random(shape), axis=t)
            if _is_partial(graph, i):  # each row keeps a random number of positions (2 or more, so that
                # every parameter takes part), then -1 padding
                kept = rng.integers(min(2, shape[t]), shape[t] + 1, shape[:t] + (1,) + shape[t + 1:])
                rows = np.where(np.arange(shape[t]).reshape([-1 if k == t else 1 for k in range(len(shape))]) < kept,
                                rows, -1)
            out[name] = rows.astype(np.int64)
            continue
        if name in INITS:
            x = INITS[name](shape, rng, n)
            out[name] = np.asarray(x, dtype=np.int64 if n.attr("integer") else dtype)
            continue
        if name == "A":  # a direct A: negative real part
            x = -rng.uniform(0.5, 4.0, shape)
            if n.attr("complex"):
                x = -0.5 + 1j * _s4d_lin_imag(shape, rng)
        elif name in ("delta", "dt"):
            x = rng.uniform(-4.0, 1.0, shape)  # raw Δ: softplus gives 0.02..1.3; also fine used directly
            x = np.abs(x) * 0.1 if _raw_dt(graph, i) else x
        elif name in ("delta_bias", "dt_bias"):
            x = 0.1 * rng.standard_normal(shape)
        else:
            x = rng.standard_normal(shape)
            if n.attr("complex"):
                x = (x + 1j * rng.standard_normal(shape)) / np.sqrt(2.0)
        out[name] = np.asarray(x).astype(np.result_type(dtype, np.complex64) if n.attr("complex") else dtype)
    return out


def _is_order(graph: Graph, i: int) -> bool:
    """Is input i a scan order's index (a gather scan's last operand, or a permute's index)?"""
    return any((n.op == "permute" and n.args[1] == i) or (n.op == "scan" and n.args[-1] == i and
                                                          getattr(n.attr("order"), "kind", n.attr("order")) == "gather")
               for n in graph.nodes)


def _is_partial(graph: Graph, i: int) -> bool:
    """Is input i the index of partial gather orders only (scans with `unvisited`, no permute)?"""
    users = [n for n in graph.nodes if i in n.args]
    return all(n.op == "scan" and n.attr("unvisited") for n in users)


def _raw_dt(graph: Graph, i: int) -> bool:
    """Is input i used as Δ directly (no softplus/exp), so it must be positive already?"""
    for n in graph.nodes:
        if i in n.args and n.op in ("softplus", "exp"):
            return False
        if i in n.args and n.op == "add":  # a bias first: follow the sum
            j = graph.nodes.index(n)
            return _raw_dt(graph, j)
    return True
