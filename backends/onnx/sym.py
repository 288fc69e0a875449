"""sympy expressions (from `ssmc.ir.symbolic.lower`) emitted as ONNX nodes.

The ONNX counterpart of the NumPy and Triton printers: the same CSE'd, complex-split real
expressions, walked into Add/Mul/Exp/... nodes instead of printed as text.
"""
from __future__ import annotations

import sympy as sp

from ssmc.ir import IRError

_FUNCS = {sp.exp: "Exp", sp.log: "Log", sp.cos: "Cos", sp.sin: "Sin", sp.Abs: "Abs"}


def emit_expr(em, e: sp.Expr, env: dict) -> str:
    """ONNX name of expression `e`; `env` maps symbol names to ONNX tensor names."""
    if e.is_Symbol:
        return env[e.name]
    if e.is_Number:
        if not e.is_real:
            raise IRError(f"complex literal {e} reached the ONNX lowering (lower with split_complex=True)")
        return em.scalar(float(e))
    if e.is_Add:
        terms = [emit_expr(em, a, env) for a in e.args]
        return terms[0] if len(terms) == 1 else em.op("Sum", terms)
    if e.is_Mul:
        out = None
        for a in e.args:
            v = emit_expr(em, a, env)
            out = v if out is None else em.op("Mul", [out, v])
        return out
    if e.is_Pow:
        base, exp = e.args
        b = emit_expr(em, base, env)
        if exp == sp.Rational(1, 2):
            return em.op("Sqrt", [b])
        if exp == -1:
            return em.op("Reciprocal", [b])
        if exp.is_Integer and 1 < exp <= 4:
            out = b
            for _ in range(int(exp) - 1):
                out = em.op("Mul", [out, b])
            return out
        return em.op("Pow", [b, emit_expr(em, exp, env)])
    for fn, op in _FUNCS.items():
        if isinstance(e, fn):
            return em.op(op, [emit_expr(em, e.args[0], env)])
    raise IRError(f"no ONNX lowering for sympy {type(e).__name__} in {e}")


def emit_lowered(em, assigns, results, env: dict) -> list:
    """Emit CSE assignments then results; returns the results' ONNX names."""
    env = dict(env)
    for var, e in assigns:
        env[var] = emit_expr(em, e, env)
    return [emit_expr(em, r, env) for r in results]
