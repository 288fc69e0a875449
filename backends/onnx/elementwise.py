"""The ONNX lowering of each elementwise op: one row per op, keyed by its name.

Values are tuples of ONNX tensor names: (re,) for a real value, (re, im) for a complex one.  A row
gives the op's real form (the name of its one real result) and, where the op can have a complex
result, its complex form (a (re, im) pair); the Lowering picks by the node's type.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ssmc.ir import IRError


@dataclass(frozen=True)
class Row:
    real: Callable | None = None  # (em, node, x, y) -> name: the real result
    complex: Callable | None = None  # (em, node, x, y) -> (re, im): the complex result


def cmul(em, x: tuple, y: tuple) -> tuple:
    """x·y for real (1-tuple) or complex (2-tuple) operands."""
    if len(x) == 1 and len(y) == 1:
        return (em.op("Mul", [x[0], y[0]]),)
    if len(x) == 1 or len(y) == 1:
        r, c = (x, y) if len(x) == 1 else (y, x)
        return em.op("Mul", [r[0], c[0]]), em.op("Mul", [r[0], c[1]])
    return (em.op("Sub", [em.op("Mul", [x[0], y[0]]), em.op("Mul", [x[1], y[1]])]),
            em.op("Add", [em.op("Mul", [x[0], y[1]]), em.op("Mul", [x[1], y[0]])]))


def cmul_add(em, a: tuple, h: tuple, x: tuple) -> tuple:
    """a·h + x with the result as wide as the state h."""
    prod = cmul(em, a, h)
    out = []
    for k in range(len(h)):
        p = prod[k] if k < len(prod) else None
        xs = x[k] if k < len(x) else None
        out.append(em.op("Add", [p, xs]) if xs is not None else em.op("Identity", [p]))
    return tuple(out)


def _unary(op_type):
    return lambda em, n, x, y: em.op(op_type, [x[0]])


def _binary(op_type):
    return lambda em, n, x, y: em.op(op_type, [x[0], y[0]])


def _softplus(em, n, x, y):  # log(1 + e^x) without overflow: max(x, 0) + log(1 + e^-|x|)
    x = x[0]
    return em.op("Add", [em.op("Relu", [x]), em.op("Log", [em.op("Add", [
        em.scalar(1.0), em.op("Exp", [em.op("Neg", [em.op("Abs", [x])])])])])])


def _clip(em, n, x, y):
    v = x[0]
    if n.attr("lo") != float("-inf"):
        v = em.op("Max", [v, em.scalar(n.attr("lo"))])
    if n.attr("hi") != float("inf"):
        v = em.op("Min", [v, em.scalar(n.attr("hi"))])
    return v


def _abs2(em, n, x, y):
    sq = [em.op("Mul", [p, p]) for p in x]
    return sq[0] if len(sq) == 1 else em.op("Add", sq)


def _complex_exp(em, n, x, y):
    m = em.op("Exp", [x[0]])
    if len(x) == 1:
        return m, em.op("Mul", [m, em.scalar(0.0)])
    return em.op("Mul", [m, em.op("Cos", [x[1]])]), em.op("Mul", [m, em.op("Sin", [x[1]])])


def _complex_add_sub(op_type):
    def rule(em, n, x, y):
        re = em.op(op_type, [x[0], y[0]])
        if len(x) == 2 and len(y) == 2:
            return re, em.op(op_type, [x[1], y[1]])
        if len(x) == 2:
            return re, x[1]
        return re, (y[1] if op_type == "Add" else em.op("Neg", [y[1]]))
    return rule


def _complex_div(em, n, x, y):
    if len(y) == 1:
        return tuple(em.op("Div", [p, y[0]]) for p in x)
    den = em.op("Add", [em.op("Mul", [y[0], y[0]]), em.op("Mul", [y[1], y[1]])])
    conj = (y[0], em.op("Neg", [y[1]]))
    return tuple(em.op("Div", [p, den]) for p in cmul(em, x, conj))


ONNX = {
    "neg": Row(_unary("Neg"), lambda em, n, x, y: tuple(em.op("Neg", [p]) for p in x)),
    "exp": Row(_unary("Exp"), _complex_exp),
    "sqrt": Row(_unary("Sqrt")),
    "softplus": Row(_softplus),
    "sigmoid": Row(_unary("Sigmoid")),
    "silu": Row(lambda em, n, x, y: em.op("Mul", [x[0], em.op("Sigmoid", [x[0]])])),
    "clip": Row(_clip),
    "real": Row(lambda em, n, x, y: x[0]),
    "abs2": Row(_abs2),
    "add": Row(_binary("Add"), _complex_add_sub("Add")),
    "sub": Row(_binary("Sub"), _complex_add_sub("Sub")),
    "mul": Row(_binary("Mul"), lambda em, n, x, y: cmul(em, x, y)),
    "div": Row(_binary("Div"), _complex_div),
    "complex": Row(complex=lambda em, n, x, y: (x[0], y[0])),
}
"""op name -> its ONNX lowering (`expr` nodes go through sympy: `ssmc.backends.onnx.sym`)."""


def elementwise(em, n, args: list) -> tuple:
    """The parts of elementwise node n, from its operands' parts."""
    row = ONNX[n.op]
    x, y = args[0], (args[1] if len(args) > 1 else None)
    form = row.complex if n.type.complex else row.real
    if form is None:
        raise IRError(f"op {n.op}: no {'complex' if n.type.complex else 'real'} ONNX lowering")
    return form(em, n, x, y) if n.type.complex else (form(em, n, x, y),)
