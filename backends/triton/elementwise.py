"""The Triton lowering of each elementwise op: one row per op, keyed by its name.

A row `rule(em, i, node, names, args)` returns the lines computing node i into the variables `names`
from its operands' variables `args` (each a tuple: (re,) for a real value, (re, im) for a complex
one).  Most rows are a real form (one expression) and, for ops that can have a complex result, a
complex form (lines for re and im); `expr` nodes (sympy rules) are printed by `lower_expr`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import sympy as sp

from ssmc.ir import IRError
from ssmc.ir.symbolic import LOG2E, exp2_form, lower, print_triton

LN2 = 0.6931471805599453


@dataclass(frozen=True)
class Row:
    """An elementwise op's real form (x, y, node, acc) -> expression, and its complex form
    (re, im, x, y) -> lines, or None where the op never has a complex result."""

    real: Callable
    complex: Callable | None = None

    def __call__(self, em, i, n, names, args):
        x, y = args[0], (args[1] if len(args) > 1 else None)
        if len(names) == 1:
            return [f"{names[0]} = {self.real(x, y, n, em.acc)}"]
        if self.complex is None:
            raise IRError(f"op {n.op}: no complex Triton lowering")
        return self.complex(*names, x, y)


def _softplus(x, y, n, acc):
    # log(1 + e^x) without overflow: max(x, 0) + log(1 + e^-|x|), through log2/exp2 (tl.log is a long
    # polynomial on the GPU); in fp32 the log2 is the special-function unit's (FAST_MATH)
    log2 = "_log2_approx" if acc == "tl.float32" else "tl.log2"
    return f"tl.maximum({x[0]}, 0.0) + {LN2!r} * {log2}(1.0 + tl.exp2({-LOG2E!r} * tl.abs({x[0]})))"


def _clip(x, y, n, acc):
    e, lo, hi = x[0], n.attr("lo"), n.attr("hi")
    if lo != float("-inf"):
        e = f"tl.maximum({e}, {lo!r})"
    if hi != float("inf"):
        e = f"tl.minimum({e}, {hi!r})"
    return e


def _abs2(x, y, n, acc):
    return f"{x[0]} * {x[0]} + {x[1]} * {x[1]}" if len(x) == 2 else f"{x[0]} * {x[0]}"


def _complex_exp(re, im, x, y):
    return [f"{re}_m = tl.exp({x[0]})", f"{re} = {re}_m * tl.cos({x[1]})", f"{im} = {re}_m * tl.sin({x[1]})"]


def _complex_add_sub(s):
    def rule(re, im, x, y):
        xr, xi = x[0], (x[1] if len(x) == 2 else None)
        yr, yi = y[0], (y[1] if len(y) == 2 else None)
        im_expr = f"{xi} {s} {yi}" if xi and yi else xi if xi else f"{'-' if s == '-' else ''}{yi}"
        return [f"{re} = {xr} {s} {yr}", f"{im} = {im_expr}"]
    return rule


def _complex_mul(re, im, x, y):
    xr, xi = x[0], (x[1] if len(x) == 2 else None)
    yr, yi = y[0], (y[1] if len(y) == 2 else None)
    if xi and yi:
        return [f"{re} = {xr} * {yr} - {xi} * {yi}", f"{im} = {xr} * {yi} + {xi} * {yr}"]
    if xi:
        return [f"{re} = {xr} * {yr}", f"{im} = {xi} * {yr}"]
    return [f"{re} = {xr} * {yr}", f"{im} = {xr} * {yi}"]


def _complex_div(re, im, x, y):
    xr, xi = x[0], (x[1] if len(x) == 2 else None)
    yr, yi = y[0], (y[1] if len(y) == 2 else None)
    if yi is None:
        return [f"{re} = {xr} / {yr}", f"{im} = {xi} / {yr}"]
    xi = xi or "0.0"
    return [f"{re}_d = {yr} * {yr} + {yi} * {yi}",
            f"{re} = ({xr} * {yr} + {xi} * {yi}) / {re}_d",
            f"{im} = ({xi} * {yr} - {xr} * {yi}) / {re}_d"]


def _clip_grad(em, i, n, names, args):
    """The cotangent (operand 1) where lo <= x (operand 0) <= hi, else 0."""
    x, c = args
    lo, hi = n.attr("lo"), n.attr("hi")
    inside = " & ".join([f"({x[0]} >= {lo!r})"] * (lo != float("-inf"))
                        + [f"({x[0]} <= {hi!r})"] * (hi != float("inf")))
    return [f"{name} = tl.where({inside}, {part}, 0.0)" if inside else f"{name} = {part}"
            for name, part in zip(names, c)]


def lower_expr(em, i, n, names=None, args=None) -> list:
    """The lines of `expr` node i: its sympy expression, CSE'd and split into (re, im) for complex
    operands, printed into Triton.  In the time loop, exp(c·x) with c computed before it becomes
    exp2(c_l2e·x), c_l2e emitted once into the "pre" phase (`em.hoisted` remembers which)."""
    names = names or em.names[i]
    symbols = n.attr("symbols")
    flags = tuple(em.g[a].type.complex for a in n.args)
    # the rule's symbols become the operands' own variables: no shared names such as `dt` or `a_re`,
    # which Triton would see as one loop-carried variable when two expressions sit inside and
    # outside the time loop
    subs = {}
    for sym, a, f in zip(symbols, n.args, flags):
        parts = em.names[a]
        keys = (f"{sym}_re", f"{sym}_im") if f else (sym,)
        subs.update({sp.Symbol(k, real=True): sp.Symbol(v, real=True) for k, v in zip(keys, parts)})
    assigns, results = lower(n.attr("expr"), symbols, flags, split_complex=True, prefix=f"e{i}_")
    invariant = {p for a in n.args if em.phase.get(a) == "pre" for p in em.names[a]} \
        if em.phase.get(i) == "loop" else set()
    lines = []

    def line(var, e):
        e, used = exp2_form(e.xreplace(subs), invariant)
        for c in sorted(used - em.hoisted):
            em.out("pre", f"{c}_l2e = {c} * {LOG2E!r}  # log2(e) folded in: exp(c·x) = exp2(c·log2(e)·x)")
            em.hoisted.add(c)
        lines.append(f"{var} = {print_triton(e)}")
    for var, e in assigns:
        line(var, e)
    # a real-typed result of complex operands has imaginary part 0: zip keeps the real part
    for var, e in zip(names, results):
        line(var, e)
    return lines


def refused(why: str):
    """A row for an op with no Triton lowering: it raises, naming the op and why."""
    def rule(em, i, n, names, args):
        raise IRError(f"node %{i} ({n.op}) has no Triton lowering: {why}")
    rule.refusal = why
    return rule


TRITON = {
    "neg": Row(lambda x, y, n, acc: f"-{x[0]}", lambda re, im, x, y: [f"{re} = -{x[0]}", f"{im} = -{x[1]}"]),
    "exp": Row(lambda x, y, n, acc: f"tl.exp({x[0]})", _complex_exp),
    "sqrt": Row(lambda x, y, n, acc: f"tl.sqrt({x[0]})"),
    "softplus": Row(_softplus),
    "sigmoid": Row(lambda x, y, n, acc: f"tl.sigmoid({x[0]})"),
    "silu": Row(lambda x, y, n, acc: f"{x[0]} * tl.sigmoid({x[0]})"),
    "clip": Row(_clip),
    "real": Row(lambda x, y, n, acc: x[0]),
    "abs2": Row(_abs2),
    "add": Row(lambda x, y, n, acc: f"{x[0]} + {y[0]}", _complex_add_sub("+")),
    "sub": Row(lambda x, y, n, acc: f"{x[0]} - {y[0]}", _complex_add_sub("-")),
    "mul": Row(lambda x, y, n, acc: f"{x[0]} * {y[0]}", _complex_mul),
    "div": Row(lambda x, y, n, acc: f"{x[0]} / {y[0]}", _complex_div),
    "complex": Row(None, lambda re, im, x, y: [f"{re} = {x[0]} + 0.0 * {y[0]}", f"{im} = {y[0]} + 0.0 * {x[0]}"]),
    "expr": lower_expr,
    "clip_grad": _clip_grad,
    **{op: refused("a time operator: it is lowered between kernels (ssmc.ir.stages), never inside one")
       for op in ("lag", "permute", "pool", "causal_conv")},
    "discretize": refused("expand_discretization makes it an expr before lowering"),
}
"""op name -> its Triton lowering (elementwise ops; the kernel generators lower the others)."""
