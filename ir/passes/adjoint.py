"""Reverse mode: the backward graph of a pipelined forward graph, built as IR.

`adjoint(g)` returns a graph whose inputs are the forward inputs plus one cotangent per forward
output (`grad_<output>`), and whose outputs are the gradients of every floating-point input
(`grad_<input>`, laid out like the input).  It recomputes the forward values it needs (the
backends decide how: the Triton kernel recomputes the state from chunk checkpoints) and then
applies one local rule per op, in reverse order:

* elementwise ops: their derivatives as IR ops (softplus' = sigmoid, silu' = s + x·s·(1-s), ...);
* `expr` nodes (sympy discretization rules): `sympy.diff`, printed by the same printers;
* the scan h_t = Ā_t h_{t-1} + x_t: its adjoint is the reverse recurrence
  g_t = dh_t + conj(Ā_{t+1}) g_{t+1} (op `adjoint`, started by the final-state cotangent), with
  dx_t = g_t, dĀ_t = g_t · conj(h_{t-1}) (op `prev`) and dh0 = conj(Ā_first) g_first (op `carry`);
* a value that broadcasts over axes its cotangent varies over (A, D, Δ-bias, LTI or grouped B/C)
  gets the cotangent summed over them (op `reduce`, over any of b, t, h, p, n); an output with a
  group axis sums the heads of each group.

Complex values follow PyTorch's convention (the gradient is ∂L/∂Re + i ∂L/∂Im): for z = f(w)
holomorphic, dw = dz · conj(f'(w)); a real operand of a complex op takes the real part.
"""
from __future__ import annotations

import sympy as sp

from ..graph import Graph, Node, Rebuilder, _freeze, prune
from ..ops import ALL_OPS, IRError, spans_sequence
from ..types import ROLES, ValueType

SKIP_ATTRS = ("region", "hoist", "lti")


class _Builder:
    """A Rebuilder that types every node as it is emitted (the rules need operand types)."""

    def __init__(self):
        self.rb = Rebuilder()

    def type(self, i) -> ValueType:
        return self.rb.nodes[i].type

    def emit(self, op, args=(), **attrs) -> int:
        t = ALL_OPS[op].type_rule([self.type(a) for a in args], attrs)
        return self.rb.add(Node(op, tuple(args), _freeze(attrs), t))

    def const(self, v) -> int:
        return self.emit("const", value=float(v))

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
        if extra:
            c = self.emit("reduce", [c], axes=tuple(r for r in ROLES if r in extra))
        return c


def adjoint(g: Graph) -> Graph:
    """The backward graph of a typed, pipelined forward graph (see the module docstring)."""
    scans = g.ids("scan")
    if len(scans) != 1:
        raise NotImplementedError(f"{g.name}: backward is derived for graphs with exactly one scan, "
                                  f"found {len(scans)}")
    if spans_sequence(g[scans[0]].attr("order")) or any(
            a.role == "r" for i in g.ids("input") + g.ids("output") for a in g[i].attr("axes")):
        raise NotImplementedError(f"{g.name}: backward of a gather-order or grid-order (multi-order) scan is not "
                                  f"derived yet")
    b = _Builder()
    new = {}  # forward node id -> its recomputation in the backward graph
    for i, n in enumerate(g.nodes):
        if n.op == "output":
            continue
        attrs = {k: v for k, v in n.attrs if k not in SKIP_ATTRS}
        new[i] = b.rb.add(Node(n.op, tuple(new[a] for a in n.args), _freeze(attrs), n.type))

    contrib: dict = {}  # forward node id -> [cotangent contributions, each of the node's type]
    last_ct: dict = {}  # scan id -> cotangents of its final state

    def acc(i, c):
        contrib.setdefault(i, []).append(b.to_type(c, g[i].type))

    def total(parts):
        if not parts:
            return None
        out = parts[0]
        for p in parts[1:]:
            out = b.emit("add", [out, p])
        return out

    for name in g.outputs:
        if name in g.inputs:
            raise IRError(f"{g.name}: output {name!r} is also an input (a decode form); it has no backward")
    for i in reversed(range(len(g.nodes))):
        n = g[i]
        if n.op == "output":
            ct = b.emit("input", name=f"grad_{n.attr('name')}", axes=n.attr("axes"), complex=n.type.complex)
            acc(n.args[0], ct)
            continue
        if n.op == "last":
            c = total(contrib.get(i, []))
            if c is not None:
                last_ct.setdefault(n.args[0], []).append(c)
            continue
        if n.op in ("input", "const"):
            continue
        c = total(contrib.get(i, []))
        if n.op == "scan":
            _scan_rule(b, g, i, n, new, c, total(last_ct.get(i, [])), acc)
        elif c is not None:
            _local_rule(b, g, n, new[i], [new[a] for a in n.args], c, acc)

    for name, i in g.inputs.items():
        n = g[i]
        if n.attr("integer"):
            continue
        c = total(contrib.get(i, []))
        if c is None:
            c = b.const(0.0)
        if n.attr("complex") and not b.type(c).complex:
            c = b.emit("complex", [c, b.const(0.0)])
        b.emit("output", [c], name=f"grad_{name}", axes=n.attr("axes"))
    return prune(b.rb.finish(g.name + "_bwd"))


def _scan_rule(b, g, i, n, new, dh, dlast, acc):
    if dh is None and dlast is None:
        return
    z = new[i]
    args = [z, dh if dh is not None else b.const(0.0)] + ([dlast] if dlast is not None else [])
    gz = b.emit("adjoint", args, order=n.attr("order"), has_dlast=dlast is not None)
    a, x = n.args[0], n.args[1]
    acc(x, gz)
    acc(a, b.emit("mul", [gz, b.conj(b.emit("prev", [z]))]))
    if n.attr("has_h0"):
        acc(n.args[2], b.emit("carry", [gz]))


def _local_rule(b, g, n, z, args, c, acc):
    """Accumulate the cotangents of node n's operands, given its cotangent c."""
    op, x = n.op, args[0]
    y = args[1] if len(args) > 1 else None
    one = b.const(1.0)
    mul = lambda p, q: b.emit("mul", [p, q])
    if op == "neg":
        acc(n.args[0], b.emit("neg", [c]))
    elif op == "exp":
        acc(n.args[0], mul(c, b.conj(z)))
    elif op == "sqrt":
        acc(n.args[0], b.emit("div", [c, mul(b.const(2.0), z)]))
    elif op == "softplus":
        acc(n.args[0], mul(c, b.emit("sigmoid", [x])))
    elif op == "sigmoid":
        acc(n.args[0], mul(c, mul(z, b.emit("sub", [one, z]))))
    elif op == "silu":
        s = b.emit("sigmoid", [x])
        acc(n.args[0], mul(c, b.emit("add", [s, mul(x, mul(s, b.emit("sub", [one, s])))])))
    elif op == "clip":  # 1 inside [lo, hi] (ends included, as torch.clamp), 0 outside
        acc(n.args[0], b.emit("clip_grad", [x, c], lo=n.attr("lo"), hi=n.attr("hi")))
    elif op == "real":
        acc(n.args[0], c)
    elif op == "abs2":
        acc(n.args[0], mul(mul(c, b.const(2.0)), x))
    elif op == "add":
        acc(n.args[0], c)
        acc(n.args[1], c)
    elif op == "sub":
        acc(n.args[0], c)
        acc(n.args[1], b.emit("neg", [c]))
    elif op == "mul":
        acc(n.args[0], mul(c, b.conj(y)))
        acc(n.args[1], mul(c, b.conj(x)))
    elif op == "div":
        acc(n.args[0], b.emit("div", [c, b.conj(y)]))
        acc(n.args[1], b.emit("neg", [mul(c, b.conj(b.emit("div", [z, y])))]))
    elif op == "complex":
        acc(n.args[0], b.emit("real", [c]) if b.type(c).complex else c)
        if b.type(c).complex:
            acc(n.args[1], b.imag(c))
    elif op == "sum":
        acc(n.args[0], c)
    elif op == "expr":
        _expr_rule(b, g, n, z, args, c, acc)
    else:
        raise NotImplementedError(f"backward: no derivative rule for op {op!r} "
                                  f"(node {n.op}{' ' + n.attr('name') if n.attr('name') else ''})")


def _expr_rule(b, g, n, z, args, c, acc):
    """d operand += c · conj(∂e/∂operand): the derivative is an expr node of its own (holomorphic,
    so its lowering splits into (re, im) like the rule itself), the conjugate and product are ops.
    Where e itself appears in its derivative (∂e^{AΔ}/∂Δ = A·e^{AΔ}) it is read from the forward
    value z, not evaluated again: a special-function call less per element in the backward kernel."""
    e = sp.sympify(n.attr("expr"))
    by_name = {s.name: s for s in e.free_symbols}
    # a complex value is a plain symbol, like the rules' A: the lowering splits it into (re, im)
    value = None if e.is_Symbol else sp.Symbol(_VALUE) if n.type.complex else sp.Symbol(_VALUE, real=True)
    for name, a in zip(n.attr("symbols"), n.args):
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
        acc(a, b.emit("mul", [c, b.conj(dn)]))


_VALUE = "value"  # the symbol of an expr's own (forward) value in its derivatives


__all__ = ["adjoint"]
