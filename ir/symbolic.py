"""All sympy lives here: discretization rules, simplification, CSE, and the two printers.

A rule gives Ā and the B̄ scale (B̄ = scale · B) as sympy expressions in the symbols `dt` (Δ,
real) and `A` (real or complex).  `expand_discretization` stores the simplified expression in
an `expr` node; each backend then asks `lower(expr, ...)` for CSE'd assignment lines printed by
its printer.  Complex values reach Triton as (re, im) pairs: `lower` splits the one expression
into real and imaginary parts with sympy before CSE, so the Triton code is plain real arithmetic.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import sympy as sp
from sympy.printing.numpy import NumPyPrinter
from sympy.printing.pycode import PythonCodePrinter

dt = sp.Symbol("dt", real=True)
A = sp.Symbol("A")  # complex unless the rule is used with a real A


@dataclass(frozen=True)
class Rule:
    """A discretization rule: Ā(dt, A) and the scale s(dt, A) with B̄ = s · B."""

    name: str
    A_bar: sp.Expr
    B_scale: sp.Expr

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"rule name: expected a non-empty str, got {self.name!r}")
        for part in ("A_bar", "B_scale"):
            e = _expression(self.name, part, getattr(self, part))
            object.__setattr__(self, part, e)
            extra = e.free_symbols - {dt, A}
            if extra:
                raise ValueError(f"rule {self.name!r}: {part} may use only ssmc.dt and ssmc.A, "
                                 f"found {sorted(map(str, extra))}")

    def part(self, which: str) -> sp.Expr:
        return sp.sympify(self.A_bar if which == "A" else self.B_scale)

    def __str__(self):
        return self.name


def _expression(name, part, value) -> sp.Expr:
    """A rule's part as a sympy expression: one given, or a Python number.  Strings are refused, not
    parsed: sympify evaluates a string as Python code, and its `dt` would not be ssmc.dt anyway."""
    if isinstance(value, sp.Expr):
        return value
    if isinstance(value, (int, float, complex)) and not isinstance(value, bool):
        return sp.sympify(value)
    raise TypeError(f"rule {name!r}: {part}: expected a sympy expression in ssmc.dt and ssmc.A (e.g. "
                    f"sympy.exp(ssmc.dt * ssmc.A)) or a number, got {type(value).__name__} {value!r}")


def rule(name: str, A_bar, B_scale) -> Rule:
    """Declare a new discretization rule from sympy expressions in `ssmc.dt` and `ssmc.A`."""
    return Rule(name, A_bar, B_scale)


_half = sp.Rational(1, 2)
RULES = {r.name: r for r in [
    Rule("zoh", sp.exp(dt * A), (sp.exp(dt * A) - 1) / A),
    Rule("bilinear", (1 + _half * dt * A) / (1 - _half * dt * A), dt / (1 - _half * dt * A)),
    Rule("euler", 1 + dt * A, dt),
    Rule("zoh_euler", sp.exp(dt * A), dt),  # Mamba: Ā = e^{ΔA}, B̄ = ΔB
    Rule("direct", A, sp.Integer(1)),  # LRU: A is already the discrete Ā
]}


def generalized_bilinear(alpha) -> Rule:
    """The generalized bilinear transform (GBT): α=0 Euler, α=½ bilinear, α=1 backward Euler."""
    if isinstance(alpha, str) and re.fullmatch(r"\s*[-+]?\d+(\.\d+)?(\s*/\s*\d+)?\s*", alpha):
        alpha = sp.Rational(alpha.replace(" ", ""))  # "2/3": an exact fraction (parsed, never evaluated)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, sp.Rational)):
        raise TypeError(f"alpha: expected a real number or a fraction like '2/3', got {type(alpha).__name__} "
                        f"{alpha!r}")
    alpha = sp.nsimplify(alpha)
    return rule(f"gbt_{alpha}", (1 + (1 - alpha) * dt * A) / (1 - alpha * dt * A), dt / (1 - alpha * dt * A))


def get_rule(r) -> Rule:
    if isinstance(r, Rule):
        return r
    if r not in RULES:
        raise ValueError(f"unknown discretization rule {r!r}; built-in rules are {sorted(RULES)}, "
                         f"or pass ssmc.rule(name, A_bar, B_scale)")
    return RULES[r]


def simplify(expr: sp.Expr) -> sp.Expr:
    # cancel() keeps rational rules rational (no spurious expansion); exp terms are untouched.
    return sp.cancel(sp.simplify(expr))


def expand(rule_: Rule, which: str) -> sp.Expr:
    """The simplified expression of one part of a rule, in symbols dt and A."""
    return simplify(rule_.part(which))


# --- lowering: expression -> CSE'd assignments, real or (re, im) ------------------

def _real_symbols(names, complex_flags):
    """sympy symbols for operands: real ones as is, complex ones as re + i·im."""
    subs, parts = {}, {}
    for name, is_complex in zip(names, complex_flags):
        if is_complex:
            re_, im_ = sp.Symbol(f"{name}_re", real=True), sp.Symbol(f"{name}_im", real=True)
            subs[sp.Symbol(name)] = re_ + sp.I * im_
            parts[name] = (re_, im_)
        else:
            r = sp.Symbol(name, real=True)
            subs[sp.Symbol(name)] = r
            subs[sp.Symbol(name, real=True)] = r
            parts[name] = (r,)
    return subs, parts


def lower(expr: sp.Expr, names, complex_flags, split_complex: bool, prefix: str = "_x"):
    """CSE an expression over operands `names`.

    Returns (assignments, results): assignments is a list of (symbol name, sympy expr) and
    results a tuple with one expression (real, or complex when not split) or two (re, im).
    """
    if split_complex:
        subs, _ = _real_symbols(names, complex_flags)
    else:  # complex operands stay whole: the NumPy printer computes in complex arithmetic
        subs = {sp.Symbol(n, real=True): sp.Symbol(n) for n in names}
    e = sp.sympify(expr).xreplace(subs)
    if split_complex and any(complex_flags):
        re_, im_ = e.as_real_imag()
        if any(x.has(sp.re, sp.im, sp.I) for x in (re_, im_)):  # as_real_imag can stop early (exp(z)/z)
            re_, im_ = sp.expand_complex(e).as_real_imag()
        outs = [sp.simplify(re_), sp.simplify(im_)]
    else:
        outs = [e]
    symbols = sp.numbered_symbols(prefix)
    assignments, reduced = sp.cse(outs, symbols=symbols, optimizations="basic")
    return [(str(s), v) for s, v in assignments], tuple(reduced)


class NumpyPrinter(NumPyPrinter):
    """Prints into NumPy (complex-valued where operands are complex); the module is `numpy`."""

    def _print_Symbol(self, e):
        return e.name

    def _print_Float(self, e):
        return repr(float(e))

    def _print_Rational(self, e):
        return repr(float(e))

    def _print_conjugate(self, e):  # gradients of complex rules (ssmc.ir.passes.adjoint)
        return f"numpy.conjugate({self._print(e.args[0])})"


class exp2(sp.Function):
    """2**x, for the Triton printer only: `exp2_form` rewrites e^x into it where the kernel can fold the
    log2(e) scale into a time-invariant factor (the GPU's special-function unit computes 2**x)."""


LOG2E = 1.4426950408889634


def exp2_form(e: sp.Expr, invariant: set) -> tuple:
    """e with every exp(c·x), c a symbol in `invariant` (a factor computed once, outside the time
    loop), rewritten to exp2(c_l2e·x) where c_l2e = c·log2(e).  Returns (expression, the symbols c
    used).  tl.exp is ex2(x·log2(e)) on the GPU: this saves the multiply on every element."""
    used = set()

    def fold(arg):
        c = next((f for f in arg.args if isinstance(f, sp.Symbol) and f.name in invariant), None)
        if not arg.is_Mul or c is None:
            return sp.exp(arg)
        used.add(c.name)
        return exp2(arg.xreplace({c: sp.Symbol(f"{c.name}_l2e", real=True)}))
    return e.replace(sp.exp, fold), used


class TritonPrinter(PythonCodePrinter):
    """Prints real arithmetic into Triton (`tl.` special functions, float literals)."""

    _funcs = {"exp": "tl.exp", "exp2": "tl.exp2", "log": "tl.log", "cos": "tl.cos", "sin": "tl.sin",
              "sqrt": "tl.sqrt", "Abs": "tl.abs"}

    def _print_Function(self, e):
        name = type(e).__name__
        if name not in self._funcs:
            raise ValueError(f"no Triton lowering for sympy function {name}")
        return f"{self._funcs[name]}({', '.join(self._print(a) for a in e.args)})"

    # sympy routes these through its own known-function printers (math.*): take them back
    _print_exp = _print_log = _print_cos = _print_sin = _print_Abs = _print_Function

    def _print_Symbol(self, e):
        return e.name

    def _print_Pow(self, e, rational=False):
        base, exp = e.args
        b = self._print(base)
        if exp.is_Integer and exp > 0 and exp <= 4:
            return "(" + " * ".join([f"({b})"] * int(exp)) + ")"
        if exp.is_Integer and exp < 0 and exp >= -4:
            return "(1.0 / (" + " * ".join([f"({b})"] * int(-exp)) + "))"
        if exp == sp.Rational(1, 2):
            return f"tl.sqrt({b})"
        if exp == sp.Rational(-1, 2):
            return f"(1.0 / tl.sqrt({b}))"
        return f"tl.exp(({self._print(exp)}) * tl.log({b}))"

    def _print_Float(self, e):
        return repr(float(e))

    def _print_Rational(self, e):
        return repr(float(e))

    def _print_Integer(self, e):
        return repr(float(e))

    def _print_ImaginaryUnit(self, e):
        raise ValueError("complex literal reached the Triton printer; lower with split_complex=True")


def print_numpy(e) -> str:
    return NumpyPrinter().doprint(e)


def print_triton(e) -> str:
    return TritonPrinter().doprint(e)
