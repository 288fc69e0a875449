"""The low-level declaration DSL: build an SSM graph with Python arithmetic.

    m = Builder("my_ssm")
    u = m.input("u", ("batch", "dim", "L"))
    ...
    h = m.scan(A_bar, B_bar * B * u)
    m.output("y", (C * h).sum("n") + D * u, ("batch", "dim", "L"))
    graph = m.build()

Every value is a handle on an IR node; nothing is computed here.  `ssmc.Spec` builds on this.
"""
from __future__ import annotations

from dataclasses import dataclass

from .graph import Graph, Rebuilder
from .opset import UNVISITED
from .symbolic import Rule, get_rule
from .types import Axis


@dataclass(frozen=True)
class Value:
    builder: "Builder"
    id: int

    def _bin(self, op, other, swap=False):
        other = self.builder._lift(other)
        a, b = (other, self) if swap else (self, other)
        return self.builder._emit(op, a, b)

    def __add__(self, o): return self._bin("add", o)
    def __radd__(self, o): return self._bin("add", o, swap=True)
    def __sub__(self, o): return self._bin("sub", o)
    def __rsub__(self, o): return self._bin("sub", o, swap=True)
    def __mul__(self, o): return self._bin("mul", o)
    def __rmul__(self, o): return self._bin("mul", o, swap=True)
    def __truediv__(self, o): return self._bin("div", o)
    def __rtruediv__(self, o): return self._bin("div", o, swap=True)
    def __neg__(self): return self.builder._emit("neg", self)

    def sum(self, *axes: str) -> "Value":
        """Sum over state or channel roles ('n', 'h', 'p')."""
        return self.builder._emit("sum", self, axes=tuple(axes))

    def __hash__(self):
        return hash(self.id)


def _unary(op):
    def f(x: Value, **attrs) -> Value:
        return x.builder._emit(op, x, **attrs)
    f.__name__ = op
    f.__doc__ = f"elementwise {op}"
    return f


exp = _unary("exp")
neg = _unary("neg")
sqrt = _unary("sqrt")
softplus = _unary("softplus")
sigmoid = _unary("sigmoid")
silu = _unary("silu")
real = _unary("real")
abs2 = _unary("abs2")


def clip(x: Value, lo: float, hi: float) -> Value:
    return x.builder._emit("clip", x, lo=float(lo), hi=float(hi))


def complex_(re: Value, im: Value) -> Value:
    return re.builder._emit("complex", re, im)


def conj(x: Value) -> Value:
    """The complex conjugate: Re x - i·Im x, Im x being Re(-i·x)."""
    m = x.builder
    return complex_(real(x), real(complex_(m.const(0.0), m.const(1.0)) * x))


def tanh(x: Value) -> Value:
    """tanh x = 2·sigmoid(2x) - 1."""
    return 2.0 * sigmoid(2.0 * x) - 1.0


class Builder:
    def __init__(self, name: str):
        self.name = name
        self._rb = Rebuilder()

    def _lift(self, x) -> Value:
        if isinstance(x, Value):
            if x.builder is not self:
                raise ValueError("values from two different builders cannot be combined")
            return x
        if isinstance(x, (int, float)):
            return Value(self, self._rb.emit("const", value=float(x)))
        raise TypeError(f"cannot use {type(x).__name__} in an SSM declaration")

    def _emit(self, op, *args, **attrs) -> Value:
        return Value(self, self._rb.emit(op, [self._lift(a).id for a in args], **attrs))

    def input(self, name: str, axes, complex: bool = False, integer: bool = False) -> Value:
        """A user tensor. `axes` are symbolic dims, e.g. ("batch", "L", "H", "P") or "dim:h".

        `integer` marks index inputs (seq_idx); the others are floating point.
        """
        if name in {n.attr("name") for n in self._rb.nodes if n.op == "input"}:
            raise ValueError(f"input {name!r} declared twice")
        return self._emit("input", name=name, axes=tuple(Axis.parse(a) for a in axes), complex=bool(complex),
                          **({"integer": True} if integer else {}))

    def const(self, value: float) -> Value:
        return self._lift(value)

    def discretize(self, delta: Value, A: Value, rule: "str | Rule") -> tuple:
        """(Ā, B̄ scale) of a rule; B̄ = scale · B."""
        r = get_rule(rule)
        return (self._emit("discretize", delta, A, rule=r, part="A"),
                self._emit("discretize", delta, A, rule=r, part="B"))

    def scan(self, A_bar: Value, x: Value, h0: Value | None = None, seq_idx: Value | None = None,
             order="forward", index: Value | None = None, unvisited: str | None = None,
             along: str = "time") -> Value:
        """h_t = Ā_t h_{t-1} + x_t along `order`: "forward", "reverse", or "gather" — step k visits
        time index[k] (`index` an integer input over (L,) or (groups, L): a permutation per group) —
        or named 2-D orders of an H×W grid, `ssmc.ir.indexmap.grid_order(H, W, names)`
        (one name, or one per B/C group), which need no index input.

        unvisited="initial" makes a gather order partial: each row of `index` lists the positions to
        visit, then -1 padding; the unlisted positions are not stepped and see the initial state (h0, or
        0), and `last` is the state after the last listed one (`ssmc.ir.passes.partial`).

        along="channels" runs the recurrence over the channel axis (role h) instead of time, forward or
        reverse (MambaMixer's channel mixer): each time step and state index has its own state, the
        channels are its steps.  It takes no h0, seq_idx or index, has no `last`, and lowers as a step of
        its own whose roles t and h trade places (`ssmc.ir.stages`)."""
        grid = getattr(order, "kind", None) == "grid"
        if not grid and order not in ("forward", "reverse", "gather"):
            raise ValueError(f"scan order must be 'forward', 'reverse', 'gather' or a grid_order, got {order!r}")
        if (order == "gather") != (index is not None):
            raise ValueError("scan: order='gather' takes an `index` input (and only it does)")
        if unvisited is not None and (order != "gather" or unvisited not in UNVISITED):
            raise ValueError(f"scan: unvisited must be one of {UNVISITED}, with order='gather'; got "
                             f"unvisited={unvisited!r}, order={order!r}")
        if along not in ("time", "channels"):
            raise ValueError(f"scan: along must be 'time' or 'channels', got {along!r}")
        if along == "channels" and (order not in ("forward", "reverse") or h0 is not None or seq_idx is not None):
            raise ValueError(f"scan along channels: order must be 'forward' or 'reverse', without h0 or seq_idx; "
                             f"got order={order!r}" + (", h0" if h0 is not None else "") +
                             (", seq_idx" if seq_idx is not None else ""))
        extra = [v for v in (h0, seq_idx, index) if v is not None]
        return self._emit("scan", A_bar, x, *extra, order=order, has_h0=h0 is not None,
                          reset="seq_idx" if seq_idx is not None else "",
                          **({"unvisited": unvisited} if unvisited else {}),
                          **({"along": "h"} if along == "channels" else {}))

    def upsample(self, value: Value, order) -> Value:
        """`value` at every position of the grid, for a scan along `order` (a grid_order with strides):
        a channel whose order has stride s takes, at each position, the value at its s×s cell's
        anchor (nearest upsampling).  A strided view's values reach outputs only through it."""
        return self._emit("upsample", value, order=order)

    def lag(self, x: Value, k: int = 1, order: str = "forward", seq_idx: Value | None = None) -> Value:
        """x k steps earlier along `order` ("forward": x_{t-k}; "reverse": x_{t+k}), 0 before the
        sequence starts and, given `seq_idx`, across a reset.  It cuts the graph into stages
        (`ssmc.ir.stages`): the lagged value is materialized between them."""
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"lag: k must be a positive int, got {k!r}")
        if order not in ("forward", "reverse"):
            raise ValueError(f"lag: order must be 'forward' or 'reverse', got {order!r}")
        extra = [seq_idx] if seq_idx is not None else []
        return self._emit("lag", x, *extra, k=k if order == "forward" else -k, reset=seq_idx is not None)

    def permute(self, x: Value, index: Value, inverse: bool = False) -> Value:
        """x read along an order: step k holds x at time index[k] (`index` an integer input over (L,), or
        with batch and channel (or group) axes: one permutation of 0..L-1 each); inverse=True puts step k
        back at time index[k].  A time operator: it cuts the graph into stages, as a lag does."""
        return self._emit("permute", x, index, inverse=bool(inverse))

    def causal_conv(self, x: Value, w: Value) -> Value:
        """Σ_{k≤t} w_k x_{t-k}: x convolved causally along time with the filter w, an input over time
        (tap k at step k: an explicit long filter as Hyena's or S4's kernel; a short one is zero past
        its taps) and per channel where it has a channel axis.  A time operator (stages)."""
        return self._emit("causal_conv", x, w)

    def pool(self, x: Value, how: str = "mean") -> Value:
        """The mean (how="mean") or sum (how="sum") of x over time: a value without the time axis.  It
        cuts the graph into stages (`ssmc.ir.stages`), as a lag does."""
        if how not in ("mean", "sum"):
            raise ValueError(f"pool: how must be 'mean' or 'sum', got {how!r}")
        return self._emit("pool", x, mean=how == "mean")

    def last(self, h: Value) -> Value:
        """The state after the scan's final step."""
        node = self._rb.nodes[h.id]
        if node.op == "scan" and node.attr("along") == "h":
            raise ValueError("last: a scan along channels has no final state (it is not derived)")
        return self._emit("last", h)

    def output(self, name: str, value: Value, axes) -> None:
        self._emit("output", value, name=name, axes=tuple(Axis.parse(a) for a in axes))

    def build(self) -> Graph:
        return self._rb.finish(self.name)


HELPERS = {
    "input": Builder.input, "const": Builder.const, "neg": neg, "exp": exp, "sqrt": sqrt, "softplus": softplus,
    "sigmoid": sigmoid, "silu": silu, "clip": clip, "real": real, "abs2": abs2, "add": Value.__add__,
    "sub": Value.__sub__, "mul": Value.__mul__, "div": Value.__truediv__, "complex": complex_,
    "discretize": Builder.discretize, "sum": Value.sum, "scan": Builder.scan, "last": Builder.last,
    "lag": Builder.lag, "pool": Builder.pool, "permute": Builder.permute,
    "causal_conv": Builder.causal_conv,
    "upsample": Builder.upsample, "output": Builder.output,
}
"""op -> how a declaration writes it (`expr` nodes are made by expand_discretization, never written)."""
