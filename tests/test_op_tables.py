"""Every op is one row per table: its traits in ssmc.ir.opset, its meaning in the NumPy interpreter, its
Triton and ONNX lowerings, its adjoint and its Builder helper.  Each table has a row for every op, or
refuses it by name; the refusals are tried here."""
from __future__ import annotations

import pytest

import ssmc
from ssmc.backends import numpy_interp
from ssmc.backends.onnx import lower as onnx_lower
from ssmc.backends.onnx import to_onnx
from ssmc.backends.onnx.elementwise import ONNX
from ssmc.backends.triton import generate
from ssmc.backends.triton.backward import BACKWARD_RULES
from ssmc.backends.triton.elementwise import TRITON
from ssmc.backends.triton.recurrent import STRUCTURAL
from ssmc.ir import ALL_OPS, IRError, Node, Rebuilder
from ssmc.ir.builder import HELPERS
from ssmc.ir.opset import ABSORBABLE, ADJOINT_OPS, ELEMENTWISE, LINEAR, OPS, with_trait
from ssmc.ir.passes.adjoint import DRIVER_OPS, adjoint
from ssmc.ir.vjp import VJP

FORWARD, BACKWARD = set(OPS), set(ADJOINT_OPS)


def test_the_op_set_is_split_by_a_trait():
    assert FORWARD | BACKWARD == set(ALL_OPS) and not FORWARD & BACKWARD
    assert with_trait(ELEMENTWISE) >= {"add", "exp", "expr", "clip_grad"}
    assert "sum" in with_trait(ABSORBABLE) and "discretize" not in with_trait(ABSORBABLE)
    assert "mul" not in with_trait(LINEAR) and {"add", "reduce", "output"} <= with_trait(LINEAR)


def test_numpy_defines_every_op():
    assert set(numpy_interp.SEMANTICS) == set(ALL_OPS)


def test_every_op_has_an_adjoint_row_or_the_driver_handles_it():
    assert set(VJP) | DRIVER_OPS == set(ALL_OPS)
    assert not set(VJP) & DRIVER_OPS


def test_triton_lowers_every_op():
    assert FORWARD <= set(TRITON) | set(STRUCTURAL)
    assert BACKWARD <= set(TRITON) | set(BACKWARD_RULES)
    assert with_trait(ELEMENTWISE) <= set(TRITON)


def test_onnx_lowers_every_op_or_refuses_it():
    handled = set(ONNX), onnx_lower.STRUCTURAL, set(onnx_lower.REFUSED)
    assert set().union(*handled) == set(ALL_OPS)
    assert sum(len(h) for h in handled) == len(ALL_OPS)  # each op once
    assert with_trait(ELEMENTWISE) - {"expr"} <= set(ONNX) | set(onnx_lower.REFUSED)


def test_every_declarable_op_has_a_builder_helper():
    assert FORWARD - {"expr"} == set(HELPERS)


def _mamba2():
    return ssmc.compile("mamba2", backend="numpy")


def test_adjoint_refusals_name_the_op():
    for op, rule in VJP.items():
        if hasattr(rule, "refusal"):
            with pytest.raises(NotImplementedError, match=rf"no derivative rule for op '{op}' \({rule.refusal}"):
                rule(None, Node(op), None, (), None, None)
    with pytest.raises(NotImplementedError, match="second derivatives are not derived"):  # no backward of a backward
        adjoint(_mamba2().backward_graph)


def test_triton_refusals_name_the_op():
    rb = Rebuilder()
    a, x = (rb.emit("input", name=n, axes=(ssmc.ir.Axis("batch", "b"), ssmc.ir.Axis("L", "t"))) for n in "ax")
    d = rb.emit("discretize", [a, x], rule=ssmc.ir.get_rule("zoh"), part="A")
    rb.emit("output", [d], name="y", axes=(ssmc.ir.Axis("batch", "b"), ssmc.ir.Axis("L", "t")))
    with pytest.raises(IRError, match=r"node %2 \(discretize\) has no Triton lowering: expand_discretization"):
        generate(rb.finish("raw"), ssmc.backends.triton.Schedule())


def test_onnx_refusals_name_the_op():
    with pytest.raises(IRError, match=r"\(reduce\) has no ONNX lowering: backward graphs are not exported"):
        to_onnx(_mamba2().backward_graph, dict(H=4, P=3, G=2, N=4))
