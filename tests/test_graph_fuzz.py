"""A graph fuzzer: hypothesis draws Builder graphs — not Specs — and holds every backend to the NumPy
interpreter.

A drawn graph has inputs over any roles (batch, time, channel as h, g or r, head position, state) in any
axis order; Ā and the scan input built from every elementwise op (a discretization rule among them),
real or complex; a scan along a forward, reverse, gather or grid order, with or without resets and an
initial state; a readout with sums over any legal axes; outputs in any legal layout (extra broadcast
axes, a group or shared-block axis that sums channels) and the final state.  The rule it enforces:
every graph the verifier accepts either agrees on every backend — NumPy (float64), Triton, ONNX, and the
derived backward (against central differences of the NumPy forward, and its Triton kernel against
NumPy's) — or is refused with an IRError or NotImplementedError before any kernel runs.

Triton runs on the GPU where there is one.  SSMC_FUZZ_EXAMPLES sets the number of graphs (a few in CI;
thousands by hand: `SSMC_FUZZ_EXAMPLES=2000 python -m pytest tests/test_graph_fuzz.py`).
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import ssmc
from ssmc.backends.onnx import to_onnx
from ssmc.export import onnx_inputs
from ssmc.ir import IRError
from ssmc.ir import builder as d
from ssmc.ir.grid import NAMED_2D
from ssmc.ir.indexmap import grid_order

from conftest import rel_err

ort = pytest.importorskip("onnxruntime")

REFUSALS = (IRError, NotImplementedError)  # what a graph the backends do not lower may raise
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # Triton: the GPU where there is one, else the interpreter
SYMBOL = {"b": "batch", "t": "L", "h": "H", "p": "P", "n": "N", "g": "G:g", "r": "R:r"}


class Draft:
    """A graph being drawn: its Builder, sizes, the inputs declared so far and how to fill them."""

    def __init__(self, draw, sizes):
        self.draw, self.sizes = draw, sizes
        self.m = ssmc.Builder("fuzz")
        self.inputs = {}  # name -> (roles, complex, kind)

    def input(self, roles, complex_=False, kind="float"):
        """An input over `roles` (value roles; a channel axis drawn as h, g or r), axes in a random order."""
        roles = list(roles)
        channel = [r for r in ("g", "r") if self.sizes.get(r.upper())]
        if "h" in roles and channel and kind == "float" and self.draw(st.booleans()):
            roles[roles.index("h")] = self.draw(st.sampled_from(channel))
        order = self.draw(st.permutations(roles))
        name = f"x{len(self.inputs)}"
        self.inputs[name] = (tuple(order), complex_, kind)
        return self.m.input(name, [SYMBOL[r] for r in order], complex=complex_, integer=kind != "float")

    def roles(self, must=(), pool=("b", "t", "h", "p", "n")):
        pool = [r for r in pool if self.sizes.get(SYMBOL[r]) or r not in ("p", "n")]
        return set(must) | {r for r in pool if self.draw(st.booleans())}


def _bounded(draft, v, depth):
    """(value, roles): a real value of moderate size built from v = (value, roles) by a random elementwise op."""
    value, roles = v
    op = draft.draw(st.sampled_from(["id", "neg", "sigmoid", "silu", "softplus", "clip", "exp", "sqrt", "add",
                                     "sub", "mul", "div"]))
    if op in ("add", "sub", "mul", "div"):
        w, more = _real_expr(draft, depth - 1)
        return {"add": value + w, "sub": value - w, "mul": value * w,
                "div": value / (1.0 + d.softplus(w))}[op], roles | more
    return {"id": lambda: value, "neg": lambda: -value, "sigmoid": lambda: d.sigmoid(value),
            "silu": lambda: d.silu(value), "softplus": lambda: d.softplus(value),
            "clip": lambda: d.clip(value, -1.5, 1.5), "exp": lambda: d.exp(d.clip(value, -2.0, 1.0)),
            "sqrt": lambda: d.sqrt(d.softplus(value) + 0.5)}[op](), roles


def _real_expr(draft, depth, must=()):
    """(value, roles) of a random real expression over fresh inputs."""
    roles = draft.roles(must)
    leaf = (draft.input(roles), roles)
    return _bounded(draft, leaf, depth) if depth > 0 else leaf


def _decay(draft, roles, complex_):
    """(Ā over `roles` with |Ā| < 1, the B̄ scale or None): a sigmoid, e^{-softplus}, or a discretization
    rule of a negative A."""
    kind = draft.draw(st.sampled_from(["sigmoid", "exp", "rule"]))
    if not complex_ and kind == "sigmoid":
        return d.sigmoid(draft.input(roles)), None
    if kind == "rule":
        delta = 0.2 * d.sigmoid(draft.input(roles))
        re = -(d.softplus(draft.input(roles)) + 0.1)
        A = d.complex_(re, draft.input(roles)) if complex_ else re
        rule = draft.draw(st.sampled_from(["zoh", "bilinear", "zoh_euler"]))
        return draft.m.discretize(delta, A, rule)
    re = -d.softplus(draft.input(roles))
    return d.exp(d.complex_(re, draft.input(roles)) if complex_ else re), None


@st.composite
def cases(draw):
    sizes = dict(batch=draw(st.integers(1, 2)), H=draw(st.integers(1, 4)))
    if draw(st.booleans()):
        sizes["P"] = draw(st.integers(1, 3))
    if draw(st.booleans()):
        sizes["N"] = draw(st.integers(1, 3))
    divisors = [k for k in range(1, sizes["H"] + 1) if sizes["H"] % k == 0]
    if draw(st.booleans()):
        sizes["G"] = draw(st.sampled_from(divisors))
    if draw(st.booleans()):
        sizes["R"] = draw(st.sampled_from(divisors))
    order = draw(st.sampled_from(["forward", "reverse", "gather", "grid"]))
    if order == "grid":
        sizes["Hg"], sizes["Wg"] = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        sizes["L"] = sizes["Hg"] * sizes["Wg"]
    else:
        sizes["L"] = draw(st.integers(1, 6))
    draft = Draft(draw, sizes)
    complex_ = draw(st.booleans())

    # the scan: x over the state's roles (time among them), Ā over some of them
    x, state = _real_expr(draft, 1, must={"b", "t", "h"})
    decay, b_scale = _decay(draft, {r for r in state if draw(st.booleans())}, complex_)
    if b_scale is not None:
        x = b_scale * x
    if complex_ and draw(st.booleans()):
        re_roles, im_roles = draft.roles(), draft.roles()
        x = x * d.complex_(draft.input(re_roles), draft.input(im_roles))
        state = state | re_roles | im_roles
    h0 = draft.input(state - {"t"}, complex_) if draw(st.booleans()) else None
    seq = draft.input(("b", "t"), kind="reset") if draw(st.booleans()) else None
    index = None
    if order == "grid":
        order = grid_order(sizes["Hg"], sizes["Wg"], draw(st.sampled_from(NAMED_2D)))
    elif order == "gather":
        index = draft.input(("g", "t") if sizes.get("G") and draw(st.booleans()) else ("t",), kind="index")
    h = draft.m.scan(decay, x, h0=h0, seq_idx=seq, order=order, index=index)

    # the readout and the outputs
    y, dims = h, set(state)
    if draw(st.booleans()):
        c_roles = draft.roles()
        y, dims = y * draft.input(c_roles), dims | c_roles
    summed = {r for r in ("n", "h", "p") if r in dims and draw(st.booleans())}
    if summed:
        y, dims = y.sum(*sorted(summed)), dims - summed
    complex_out = complex_
    if complex_ and draw(st.booleans()):
        y, complex_out = (d.real(y) if draw(st.booleans()) else d.abs2(y)), False
    if not complex_out:
        y, dims = _bounded(draft, (y, dims), 1)
    _output(draft, "y", y, dims)
    if draw(st.booleans()):
        _output(draft, "h_last", draft.m.last(h), state - {"t"}, summing=False)
    return draft.m, draft, sizes


def _output(draft, name, value, dims, summing=True):
    """An output of `value` (varying over `dims`) laid out over those roles, maybe more (broadcast), its
    channel axis maybe a group or shared-block one (which sums channels)."""
    roles = set(dims) | draft.roles()
    if "h" in roles and summing:
        channel = [r for r in ("g", "r") if draft.sizes.get(r.upper())]
        if channel and draft.draw(st.booleans()):
            roles = (roles - {"h"}) | {draft.draw(st.sampled_from(channel))}
    order = draft.draw(st.permutations(sorted(roles)))
    draft.m.output(name, value, [SYMBOL[r] for r in order])


def _arrays(draft, sizes, rng) -> dict:
    """Fresh random inputs: normal floats (complex ones too), sorted reset ids, a permutation per group."""
    out = {}
    for name, (roles, complex_, kind) in draft.inputs.items():
        shape = tuple(sizes[SYMBOL[r].split(":")[0]] for r in roles)
        if kind == "reset":
            out[name] = np.sort(rng.integers(0, 3, shape), axis=roles.index("t"))
        elif kind == "index":
            t = roles.index("t")
            perm = np.stack([rng.permutation(sizes["L"]) for _ in range(int(np.prod(shape)) // sizes["L"])])
            out[name] = np.moveaxis(perm.reshape(shape[:t] + shape[t + 1:] + (sizes["L"],)), -1, t)
        else:
            x = rng.standard_normal(shape)
            out[name] = x + 1j * rng.standard_normal(shape) if complex_ else x
    return out


def _torch(arrays, dtype=torch.float32) -> dict:
    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    return {k: torch.from_numpy(v).to(DEVICE, cdtype if np.iscomplexobj(v) else dtype if v.dtype.kind == "f"
                                      else torch.int64) for k, v in arrays.items()}


def _refused_or(check, what):
    """Run `check`; a refusal (IRError/NotImplementedError naming the construct) is allowed, nothing else."""
    try:
        check()
    except REFUSALS as e:
        assert str(e), f"{what}: refused without saying why"


def _forward_agrees(graph, arrays, want):
    got = ssmc.compile(graph, backend="triton")(**_torch(arrays))
    for k in want:
        assert rel_err(got[k], want[k]) < 1e-4, f"Triton output {k}"


def _onnx_agrees(graph, sizes, arrays, want):
    fixed = {k: sizes[k] for k, role in graph.symbols().items() if role not in ("b", "t")}
    model = to_onnx(graph, fixed)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    complex_ = next((p.value.split(",") for p in model.metadata_props if p.key == "ssmc.complex_outputs"), [])
    for v, r in zip(model.graph.output, sess.run(None, onnx_inputs(model, arrays))):
        r = np.asarray(r, np.float64)
        got = r[..., 0] + 1j * r[..., 1] if v.name in complex_ else r
        assert rel_err(got, want[v.name]) < 1e-4, f"ONNX output {v.name}"


def _backward_agrees(graph, fn, arrays, want, rng):
    """<w, J v> from the derived backward against central differences of the forward, then the Triton
    backward kernel against NumPy's."""
    cts = {k: rng.standard_normal(w.shape) + (1j * rng.standard_normal(w.shape) if np.iscomplexobj(w) else 0)
           for k, w in want.items()}
    grads = fn.grad(arrays, cts)
    floats = [k for k, v in arrays.items() if v.dtype.kind in "fc"]
    v = {k: rng.standard_normal(arrays[k].shape) + (1j * rng.standard_normal(arrays[k].shape)
                                                    if np.iscomplexobj(arrays[k]) else 0) for k in floats}

    def loss(eps):
        out = fn(**{k: (a + eps * v[k] if k in v else a) for k, a in arrays.items()})
        return sum(np.real(np.sum(np.conj(cts[k]) * out[k])) for k in out)
    eps = 1e-6
    numeric = (loss(eps) - loss(-eps)) / (2 * eps)
    derived = sum(np.real(np.sum(np.conj(grads[f"grad_{k}"]) * v[k])) for k in floats)
    assert abs(numeric - derived) <= 1e-5 * (1 + abs(numeric)), f"backward: {derived} vs differences {numeric}"
    tri = ssmc.compile(graph, backend="triton").grad(_torch(arrays, torch.float64),
                                                        {k: torch.from_numpy(c).to(DEVICE) for k, c in cts.items()})
    for k, g in grads.items():
        assert np.linalg.norm(g) < 1e-12 or rel_err(tri[k], g) < 1e-8, f"Triton backward {k}"


@settings(max_examples=int(os.environ.get("SSMC_FUZZ_EXAMPLES", 12)), deadline=None, derandomize=False,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(case=cases(), seed=st.integers(0, 2**32 - 1))
def test_every_accepted_graph_agrees_or_is_refused(case, seed):
    m, draft, sizes = case
    try:
        graph = m.build()
        fn = ssmc.compile(graph, backend="numpy")
    except REFUSALS:
        assume(False)  # the verifier refused it: nothing to hold the backends to
    rng = np.random.default_rng(seed)
    arrays = _arrays(draft, sizes, rng)
    want = fn(**arrays)
    assume(all(np.isfinite(w).all() and np.linalg.norm(w) > 1e-6 for w in want.values()))
    _refused_or(lambda: _forward_agrees(graph, arrays, want), "Triton")
    _refused_or(lambda: _onnx_agrees(graph, sizes, arrays, want), "ONNX")
    _refused_or(lambda: _backward_agrees(graph, fn, arrays, want, rng), "backward")
