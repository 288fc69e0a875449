"""The adjoint (vector-Jacobian product) of each op, as IR: one row per op, keyed by its name.

A row `rule(b, n, z, args, c, acc)` is given the typed builder `b` of the backward graph, the forward
node `n`, its recomputed value `z` and operands `args` (ids in the backward graph), and its cotangent
`c`; it calls `acc(k, v)` to add the contribution `v` to the cotangent of operand k.  Complex values
follow PyTorch's convention (the gradient is ∂L/∂Re + i ∂L/∂Im): for z = f(w) holomorphic,
dw = dz · conj(f'(w)); a real operand of a complex op takes the real part (`acc` does that, and sums
over the axes an operand broadcasts over).

The scan, its final state and the graph's inputs and outputs are the adjoint pass's own
(`ssmc.ir.passes.adjoint`); ops it has no rule for are refused by name.
"""
from __future__ import annotations

import sympy as sp

from .graph import Node, Rebuilder, freeze_attrs
from .opset import ALL_OPS
from .types import ROLES, ValueType


class TypedBuilder:
    """A Rebuilder that types every node as it is emitted (the rules need operand types)."""

    def __init__(self, defer: frozenset = frozenset()):
        self.rb = Rebuilder()
        self.defer = defer  # axes whose sums are left to the caller (ssmc.ir.passes.adjoint's defer_reduce)

    def type(self, i) -> ValueType:
        return self.rb.nodes[i].type

    def emit(self, op, args=(), **attrs) -> int:
        t = ALL_OPS[op].type_rule([self.type(a) for a in args], attrs)
        return self.rb.add(Node(op, tuple(args), freeze_attrs(attrs), t))

    def const(self, v) -> int:
        return self.emit("const", value=float(v))

    def mul(self, p, q) -> int:
        return self.emit("mul", [p, q])

    def conj(self, v) -> int:
        if not self.type(v).complex:
            return v
        a = sp.Symbol("a")
        return self.emit("expr", [v], expr=sp.conjugate(a), symbols=("a",), complex=True)

    def imag(self, v) -> int:
        a = sp.Symbol("a")
        return self.emit("expr", [v], expr=sp.im(a), symbols=("a",), complex=False)

    def to_type(self, c, want: ValueType) -> int:
        """A cotangent contribution for a value of type `want`: summed over the axes `want`
        broadcasts over, and its real part for a real value."""
        if self.type(c).complex and not want.complex:
            c = self.emit("real", [c])
        extra = self.type(c).dims - want.dims
        if extra and self.defer:  # the deferred axes left for the caller; the others summed now, forward
            now = tuple(r for r in ROLES if r in extra - self.defer)
            return self.emit("sum", [c], axes=now) if now else c
        if extra:
            c = self.emit("reduce", [c], axes=tuple(r for r in ROLES if r in extra))
        return c


def _neg(b, n, z, args, c, acc):
    acc(0, b.emit("neg", [c]))


def _exp(b, n, z, args, c, acc):
    acc(0, b.mul(c, b.conj(z)))


def _sqrt(b, n, z, args, c, acc):
    acc(0, b.emit("div", [c, b.mul(b.const(2.0), z)]))


def _softplus(b, n, z, args, c, acc):
    acc(0, b.mul(c, b.emit("sigmoid", [args[0]])))


def _sigmoid(b, n, z, args, c, acc):
    acc(0, b.mul(c, b.mul(z, b.emit("sub", [b.const(1.0), z]))))


def _silu(b, n, z, args, c, acc):  # s + x·s·(1 - s)
    x = args[0]
    s = b.emit("sigmoid", [x])
    acc(0, b.mul(c, b.emit("add", [s, b.mul(x, b.mul(s, b.emit("sub", [b.const(1.0), s])))])))


def _clip(b, n, z, args, c, acc):  # 1 inside [lo, hi] (ends included, as torch.clamp), 0 outside
    acc(0, b.emit("clip_grad", [args[0], c], lo=n.attr("lo"), hi=n.attr("hi")))


def _identity(b, n, z, args, c, acc):  # real (a real cotangent), sum (broadcast back by acc)
    acc(0, c)


def _abs2(b, n, z, args, c, acc):
    acc(0, b.mul(b.mul(c, b.const(2.0)), args[0]))


def _add(b, n, z, args, c, acc):
    acc(0, c)
    acc(1, c)


def _sub(b, n, z, args, c, acc):
    acc(0, c)
    acc(1, b.emit("neg", [c]))


def _mul(b, n, z, args, c, acc):
    x, y = args
    acc(0, b.mul(c, b.conj(y)))
    acc(1, b.mul(c, b.conj(x)))


def _div(b, n, z, args, c, acc):
    y = args[1]
    acc(0, b.emit("div", [c, b.conj(y)]))
    acc(1, b.emit("neg", [b.mul(c, b.conj(b.emit("div", [z, y])))]))


def _complex(b, n, z, args, c, acc):
    acc(0, b.emit("real", [c]) if b.type(c).complex else c)
    if b.type(c).complex:
        acc(1, b.imag(c))


_VALUE = "value"  # the symbol of an expr's own (forward) value in its derivatives


def _expr(b, n, z, args, c, acc):
    """d operand += c · conj(∂e/∂operand): the derivative is an expr node of its own (holomorphic,
    so its lowering splits into (re, im) like the rule itself), the conjugate and product are ops.
    Where e itself appears in its derivative (∂e^{AΔ}/∂Δ = A·e^{AΔ}) it is read from the forward
    value z, not evaluated again: a special-function call less per element in the backward kernel."""
    e = sp.sympify(n.attr("expr"))
    by_name = {s.name: s for s in e.free_symbols}
    # a complex value is a plain symbol, like the rules' A: the lowering splits it into (re, im)
    value = None if e.is_Symbol else sp.Symbol(_VALUE) if n.type.complex else sp.Symbol(_VALUE, real=True)
    for k, name in enumerate(n.attr("symbols")):
        if name not in by_name:
            continue
        d = sp.diff(e, by_name[name])
        if d == 0:
            continue
        operands, symbols = list(args), n.attr("symbols")
        if value is not None and d.has(e):
            d = d.subs(e, value)
            operands, symbols = operands + [z], tuple(symbols) + (_VALUE,)
        dn = b.emit("expr", operands, expr=d, symbols=symbols, complex=n.type.complex)
        acc(k, b.mul(c, b.conj(dn)))


def _lag(b, n, z, args, c, acc):
    """x_{t-k} is read by step t, so x_s's cotangent is c_{s+k}: a lag by -k, with the same resets."""
    acc(0, b.emit("lag", [c, *args[1:]], k=-n.attr("k"), reset=n.attr("reset", False)))


def refused(why: str):
    """A row for an op that has no adjoint: it raises, naming the op and why."""
    def rule(b, n, z, args, c, acc):
        raise NotImplementedError(f"backward: no derivative rule for op {n.op!r} ({why})")
    rule.refusal = why
    return rule


VJP = {
    "neg": _neg,
    "exp": _exp,
    "sqrt": _sqrt,
    "softplus": _softplus,
    "sigmoid": _sigmoid,
    "silu": _silu,
    "clip": _clip,
    "real": _identity,
    "abs2": _abs2,
    "add": _add,
    "sub": _sub,
    "mul": _mul,
    "div": _div,
    "complex": _complex,
    "sum": _identity,
    "expr": _expr,
    "lag": _lag,
    **{op: refused("a time operator: a multi-stage graph's gradient is taken step by step, "
                   "by ssmc.runtime.staged") for op in ("permute", "pool", "causal_conv")},
    "discretize": refused("expand_discretization makes it an expr before the adjoint pass runs"),
    "upsample": refused("the backward of a strided grid view is not derived"),
    **{op: refused("a backward-graph op: second derivatives are not derived")
       for op in ("reduce", "prev", "adjoint", "clip_grad", "carry")},
}
"""op name -> its adjoint rule; the adjoint pass handles input, const, scan, last and output itself."""
