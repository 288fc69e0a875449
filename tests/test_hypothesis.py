"""Property test over the Spec space: any valid declaration runs the same on both backends.

Hypothesis draws a Spec (state, A form, rule, direction, gate, skip, Δ transform, selective
subset, groups, h0, final state, ...) with small random sizes and a schedule; the generated
Triton kernel must match the float64 NumPy interpreter.  Parameters are drawn in a range where
every rule is stable (|ΔA| ≲ 1.5), so a mismatch is a lowering bug, not conditioning.
"""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import ssmc
from ssmc import Spec
from ssmc.ir.inits import random_inputs
from ssmc.library import generalized_bilinear

from conftest import assert_close

A_FORMS = {"diag_real": ["neg_exp", "direct"], "diag_complex": ["neg_exp", "direct", "s4d", "lru"],
           "scalar_head": ["neg_exp", "direct"]}
RULES = ["zoh", "bilinear", "euler", "zoh_euler", generalized_bilinear(1 / 3)]


def _subset(draw, items):
    return frozenset(x for x in items if draw(st.booleans()))


@st.composite
def specs(draw) -> Spec:
    state = draw(st.sampled_from(sorted(A_FORMS)))
    io = draw(st.sampled_from(["siso", "mimo"])) if state != "scalar_head" else "siso"
    A = draw(st.sampled_from(A_FORMS[state]))
    rule = "direct" if A == "lru" else draw(st.sampled_from(RULES))  # λ is already discrete
    selective = frozenset() if io == "mimo" else _subset(draw, ["dt", "B", "C"])
    groups = bool({"B", "C"} & selective) and draw(st.booleans())
    skips = [None, "h"] + (["hp"] if state == "scalar_head" else [])
    complex_ = state == "diag_complex"
    kw = dict(state=state, io=io, A=A, rule=rule, selective=selective, groups=groups,
        dt=draw(st.sampled_from(["softplus", "exp", "raw"])), dt_bias=draw(st.booleans()),
        dt_limit=draw(st.sampled_from([None, (0.1, 0.4)])),
        direction=draw(st.sampled_from(["forward", "reverse"])), skip=draw(st.sampled_from(skips)),
        gate=draw(st.sampled_from([None, "silu"])), h0=draw(st.booleans()), final_state=draw(st.booleans()),
        seq_idx=state == "scalar_head" and draw(st.booleans()),
        complex_BC=_subset(draw, ["B", "C"]) if complex_ else frozenset(),
        readout=draw(st.sampled_from([None, "re", "2re"])) if complex_ else None,
    )
    try:
        return Spec("prop", **kw)
    except ValueError:  # an invalid combination, refused by Spec.__post_init__ as it should be
        assume(False)


@st.composite
def sizes_for(draw, spec: Spec) -> dict:
    s = dict(batch=draw(st.integers(1, 2)), L=draw(st.integers(1, 9)), N=draw(st.integers(1, 4)))
    if spec.state == "scalar_head":
        s.update(H=draw(st.integers(1, 4)), P=draw(st.integers(1, 3)))
        heads, channels = "H", s["H"] * s["P"]
    elif spec.io == "mimo":
        s.update(H=draw(st.integers(1, 4)))
        heads, channels = "H", s["H"]
        s["N"] = max(s["N"], 4 // s["batch"])  # the final state (batch, N) is not one number
    else:
        s.update(dim=draw(st.integers(1, 5)))
        heads, channels = "dim", s["dim"]
    # A single output number can cancel to ~0 and make any relative error meaningless: at least 6.
    s["L"] = max(s["L"], -(-6 // (s["batch"] * channels)))
    s["G"] = draw(st.sampled_from([g for g in range(1, s[heads] + 1) if s[heads] % g == 0]))
    return s


def stable_inputs(graph, spec: Spec, sizes: dict, rng) -> dict:
    """random_inputs, with A and Δ redrawn so that |ΔA| stays small for every rule."""
    x = random_inputs(graph, sizes, seed=int(rng.integers(2**63)))
    for name, v in x.items():
        shape = v.shape
        if name == "A_log":
            x[name] = np.log(rng.uniform(0.5, 2.0, shape))
        elif name == "A":
            x[name] = -rng.uniform(0.5, 2.0, shape) if not np.iscomplexobj(v) else \
                -rng.uniform(0.3, 1.0, shape) + 1j * rng.uniform(-2.0, 2.0, shape)
        elif name == "A_log_re":
            x[name] = np.log(rng.uniform(0.3, 1.0, shape))
        elif name == "A_im":
            x[name] = rng.uniform(-2.0, 2.0, shape)
        elif name in ("delta", "dt", "log_dt"):  # Δ after its transform in about [0.05, 0.5]
            x[name] = {"softplus": rng.uniform(-3.0, -0.5, shape), "exp": np.log(rng.uniform(0.05, 0.5, shape)),
                       "raw": rng.uniform(0.05, 0.5, shape)}[spec.dt]
        elif name in ("delta_bias", "dt_bias"):
            x[name] = 0.02 * rng.standard_normal(shape)
    return x


@settings(max_examples=int(__import__("os").environ.get("SSMC_HYPOTHESIS_EXAMPLES", 15)), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_random_specs_agree_across_backends(data):
    spec = data.draw(specs(), label="spec")
    sizes = data.draw(sizes_for(spec), label="sizes")
    schedule = data.draw(st.fixed_dictionaries(
        dict(block_d=st.sampled_from([1, 2, 4, 16]), chunk=st.sampled_from([1, 2, 4, 8]))), label="schedule")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32), label="seed"))
    ref = ssmc.compile(spec, backend="numpy")
    x = stable_inputs(ref.graph, spec, sizes, rng)
    want = ref(**x)
    got = ssmc.compile(spec, backend="triton", schedule=schedule)(**x)
    assert set(got) == set(want) == {"out"} | ({"last_state", "final_states"} & set(got) if spec.final_state else set())
    for k in want:
        assert np.isfinite(want[k]).all(), f"{k}: the reference is not finite (inputs out of range)"
        assert got[k].shape == want[k].shape
        assert_close(got[k], want[k], 1e-5, f"{spec} {sizes} {schedule} {k}")

