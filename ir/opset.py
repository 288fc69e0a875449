"""The closed set of IR ops: one row each (arity, attributes, type rule, traits).

Everything else about an op is one row in a table keyed by its name: its meaning in the NumPy
interpreter (`ssmc.backends.numpy_interp.SEMANTICS`), its Triton and ONNX lowerings
(`ssmc.backends.triton.elementwise.TRITON`, `ssmc.backends.onnx.elementwise.ONNX`) and its adjoint
(`ssmc.ir.vjp.VJP`).  `tests/test_op_tables.py` fails until every table has every op, or refuses it
by name.  The sets of ops that passes need are derived from the traits below, never restated.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .indexmap import is_gather
from .types import ValueType, value_role

# Traits: what passes and lowerings may assume about an op.
ELEMENTWISE = "elementwise"  # each output element depends only on the operands' elements at its index
ABSORBABLE = "absorbable"  # may run per step inside a scan's region (the readout after the recurrence)
LINEAR = "linear"  # jointly linear in its operands: a sum of partial sums stays a partial sum
BACKWARD = "backward"  # made by the adjoint pass only, never declared
TIME = "time"  # reads other steps of time: cuts a graph into stages (ssmc.ir.stages), lowered between kernels


UNVISITED = ("initial",)  # what a partial gather order's unlisted positions see: the initial state (h0, or 0)


class IRError(ValueError):
    """A malformed or unlowerable IR; the message names the node and the reason."""


def _join(types):
    out = ValueType.of(())
    for t in types:
        out = out.join(t)
    return out


def _input_type(args, attrs):
    return ValueType.of((value_role(a.role) for a in attrs["axes"]), attrs.get("complex", False))


def _real_only(name):
    def rule(args, attrs):
        if args[0].complex:
            raise IRError(f"{name} takes a real operand, got {args[0]}")
        return args[0]
    return rule


def _same(args, attrs):
    return args[0]


def _real_part(args, attrs):
    return ValueType(args[0].dims, False)


def _complex_of(args, attrs):
    if any(a.complex for a in args):
        raise IRError("complex(re, im) takes real operands")
    return ValueType(_join(args).dims, True)


def _discretize(args, attrs):
    delta, a = args
    if delta.complex:
        raise IRError("discretize: Δ must be real")
    return _join(args)


def _expr(args, attrs):
    return ValueType(_join(args).dims, attrs["complex"])


def _sum(args, attrs):
    axes = set(attrs["axes"])
    missing = axes - args[0].dims
    if missing:
        raise IRError(f"sum over {sorted(missing)}, which the operand {args[0]} does not vary over")
    if "t" in axes or "b" in axes:
        raise IRError("sum may reduce only over h, p, n")
    return ValueType(args[0].dims - axes, args[0].complex)


def _scan(args, attrs):
    a, x = args[0], args[1]
    state = a.join(x)
    if "t" not in state.dims:
        raise IRError("scan: neither Ā nor the input varies over time")
    if not a.dims <= x.dims | {"t"}:
        raise IRError(f"scan: Ā {a} varies over axes the input {x} does not")
    rest = list(args[2:])
    if attrs.get("has_h0"):
        h0 = rest.pop(0)
        if "t" in h0.dims or not h0.dims <= state.dims:
            raise IRError(f"scan: initial state {h0} must vary only over the state's axes {state}")
        if h0.complex and not state.complex:
            raise IRError("scan: complex initial state for a real scan")
    if attrs.get("reset"):
        seq = rest.pop(0)
        if seq.dims - {"b", "t"}:
            raise IRError(f"scan: reset index must vary only over (b, t), got {seq}")
    if is_gather(attrs.get("order")):
        if not rest:
            raise IRError("scan: a gather order needs its index operand (position k reads time index[k])")
        idx = rest.pop(0)
        if "t" not in idx.dims or idx.dims - {"b", "t", "h"}:
            raise IRError(f"scan: a gather order's index must vary over time, and at most over batch and channels, "
                          f"got {idx}")
    if attrs.get("along") and attrs["along"] != "t":
        if attrs["along"] != "h":
            raise IRError(f"scan: along must be 't' (time) or 'h' (channels), got {attrs['along']!r}")
        if "h" not in state.dims:
            raise IRError(f"scan: a scan along channels needs a value that varies over them, got {state}")
        if attrs.get("has_h0") or attrs.get("reset") or is_gather(attrs.get("order")) or \
                getattr(attrs.get("order"), "kind", None) == "grid" or state.dims & {"p"}:
            raise IRError("scan: a scan along channels takes a forward or reverse order, no h0, resets or index, "
                          "and values without a head-dim (p) axis")
    if attrs.get("unvisited"):
        if attrs["unvisited"] not in UNVISITED:
            raise IRError(f"scan: unvisited must be one of {UNVISITED}, got {attrs['unvisited']!r}")
        if not is_gather(attrs.get("order")):
            raise IRError("scan: unvisited (a partial order) needs a gather order")
        if attrs.get("reset"):
            raise IRError("scan: a partial gather order (unvisited) with resets (seq_idx) is not supported")
    if rest:
        raise IRError("scan: too many operands for its attributes")
    return state


def _upsample(args, attrs):
    order = attrs["order"]
    if getattr(order, "kind", None) != "grid":
        raise IRError(f"upsample: its order must be a grid order (the scan's strided view), got {order}")
    return args[0]


def _lag(args, attrs):
    k = attrs["k"]
    if not isinstance(k, int) or isinstance(k, bool) or k == 0:
        raise IRError(f"lag: k must be a nonzero int (k > 0: k steps earlier, k < 0: later), got {k!r}")
    dims = args[0].dims | {"t"}
    if attrs.get("reset"):
        if len(args) != 2 or args[1].dims - {"b", "t"} or args[1].complex:
            raise IRError("lag: a reset needs its index operand, varying only over (b, t)")
        dims |= args[1].dims
    elif len(args) != 1:
        raise IRError("lag: a second operand (the reset index) needs reset=True")
    return ValueType(frozenset(dims), args[0].complex)


def _permute(args, attrs):
    x, idx = args
    if not isinstance(attrs["inverse"], bool):
        raise IRError(f"permute: inverse must be a bool, got {attrs['inverse']!r}")
    if "t" not in idx.dims or idx.dims - {"b", "t", "h"} or idx.complex:
        raise IRError(f"permute: the index must vary over time, and at most over batch and channels, got {idx}")
    return ValueType(x.dims | idx.dims, x.complex)


def _causal_conv(args, attrs):
    x, w = args
    if x.complex or w.complex:
        raise IRError(f"causal_conv: takes real operands, got {x} and {w}")
    if "t" not in w.dims:
        raise IRError(f"causal_conv: the filter {w} must vary over time (its taps: w[k] at step k)")
    return ValueType(x.dims | w.dims, False)


def _pool(args, attrs):
    if not isinstance(attrs["mean"], bool):
        raise IRError(f"pool: mean must be a bool, got {attrs['mean']!r}")
    if "t" not in args[0].dims:
        raise IRError(f"pool: the operand {args[0]} does not vary over time (its pool is itself, or L times it)")
    return ValueType(args[0].dims - {"t"}, args[0].complex)


def _last(args, attrs):
    return ValueType(args[0].dims - {"t"}, args[0].complex)


def _output(args, attrs):
    want = {value_role(a.role) for a in attrs["axes"]}
    if not args[0].dims <= want:
        raise IRError(f"output {attrs['name']!r}: value {args[0]} varies over axes the layout "
                      f"{tuple(str(a) for a in attrs['axes'])} lacks")
    return args[0]


@dataclass(frozen=True)
class OpSpec:
    name: str
    arity: tuple  # (min, max) number of operands
    attrs: tuple  # required attribute names
    type_rule: Callable
    doc: str
    traits: frozenset = frozenset()


def _op(name, arity, attrs, rule, doc, traits=()):
    lo, hi = (arity, arity) if isinstance(arity, int) else arity
    return OpSpec(name, (lo, hi), tuple(attrs), rule, doc, frozenset(traits))


def _reduce(args, attrs):
    axes = set(attrs["axes"])
    missing = axes - args[0].dims
    if missing:
        raise IRError(f"reduce over {sorted(missing)}, which the operand {args[0]} does not vary over")
    return ValueType(args[0].dims - axes, args[0].complex)


def _adjoint(args, attrs):
    scan, dh = args[0], args[1]
    if not dh.dims <= scan.dims:
        raise IRError(f"adjoint: cotangent {dh} varies over axes the state {scan} does not")
    if attrs.get("has_dlast") and not args[2].dims <= scan.dims - {"t"}:
        raise IRError(f"adjoint: final-state cotangent {args[2]} must vary only over the state's axes")
    return scan


def _carry(args, attrs):
    return ValueType(args[0].dims - {"t"}, args[0].complex)


_EW = (ELEMENTWISE, ABSORBABLE)
_JOIN = lambda a, t: _join(a)  # noqa: E731

ALL_OPS = {s.name: s for s in [
    _op("input", 0, ("name", "axes"), _input_type, "a user tensor, laid out along `axes`"),
    _op("const", 0, ("value",), lambda a, t: ValueType.of(()), "a real scalar"),
    _op("neg", 1, (), _same, "-x", _EW + (LINEAR,)),
    _op("exp", 1, (), _same, "e^x (complex too)", _EW),
    _op("sqrt", 1, (), _real_only("sqrt"), "√x", _EW),
    _op("softplus", 1, (), _real_only("softplus"), "log(1 + e^x)", _EW),
    _op("sigmoid", 1, (), _real_only("sigmoid"), "1 / (1 + e^-x)", _EW),
    _op("silu", 1, (), _real_only("silu"), "x · sigmoid(x)", _EW),
    _op("clip", 1, ("lo", "hi"), _real_only("clip"), "min(max(x, lo), hi)", _EW),
    _op("real", 1, (), _real_part, "Re(x)", _EW + (LINEAR,)),
    _op("abs2", 1, (), _real_part, "|x|²", _EW),
    _op("add", 2, (), _JOIN, "x + y (broadcasting)", _EW + (LINEAR,)),
    _op("sub", 2, (), _JOIN, "x - y", _EW + (LINEAR,)),
    _op("mul", 2, (), _JOIN, "x · y", _EW),
    _op("div", 2, (), _JOIN, "x / y", _EW),
    _op("complex", 2, (), _complex_of, "re + i·im", _EW + (LINEAR,)),
    # expanded into `expr` nodes by expand_discretization: elementwise, but never inside a region
    _op("discretize", 2, ("rule", "part"), _discretize,
        "Ā (part A) or the B̄ scale (part B) of a discretization rule, from (Δ, A)", (ELEMENTWISE,)),
    _op("expr", (1, 8), ("expr", "symbols", "complex"), _expr,
        "a simplified sympy expression of its operands (made by expand_discretization)", _EW),
    _op("sum", 1, ("axes",), _sum, "sum over state/channel axes", (ABSORBABLE, LINEAR)),
    _op("scan", (2, 5), ("order",), _scan,
        "h_t = Ā_t h_{t-1} + x_t along `order`; optional h0, reset on seq_idx change, gather-order index "
        "(with unvisited='initial': rows end in -1 padding, unlisted positions see the initial state); "
        "along='h': the recurrence runs over the channels instead of time"),
    _op("last", 1, (), _last, "the scan's state after its final step"),
    _op("lag", (1, 2), ("k",), _lag,
        "x_{t-k}: the value k steps earlier in time (k < 0: -k steps later), 0 where t-k falls outside "
        "the sequence or, with reset and a seq_idx operand, in another sequence", (TIME,)),
    _op("permute", 2, ("inverse",), _permute,
        "x read along an order per (batch, channel): step k holds x at time index[k] (inverse=True: puts "
        "step k back at time index[k]); the index (an integer input) is a permutation of 0..L-1", (TIME,)),
    _op("causal_conv", 2, (), _causal_conv,
        "Σ_{k≤t} w_k x_{t-k}: a causal convolution along time with a filter over time (tap k at step k; a "
        "short filter is zero past its taps), per channel where w varies over channels", (TIME,)),
    _op("pool", 1, ("mean",), _pool,
        "the sum (mean=True: the mean) over time of x, broadcast to every step first", (TIME,)),
    _op("upsample", 1, ("order",), _upsample,
        "a value of a grid order's strided view at every position: position t of a channel whose order has "
        "stride s takes the value at its cell's anchor (nearest upsampling); stride 1 is the identity"),
    _op("output", 1, ("name", "axes"), _output, "a user-visible result, laid out along `axes`", (LINEAR,)),
    # --- backward graphs only (made by ssmc.ir.passes.adjoint) ---
    _op("reduce", 1, ("axes",), _reduce,
        "sum over any axes (b and t too): the gradient of a value that broadcasts over them", (BACKWARD, LINEAR)),
    _op("prev", 1, (), _same,
        "the state a scan step decays from: h_{t-1} in scan order, h0 (or 0) at the first step, 0 at a reset",
        (BACKWARD,)),
    _op("adjoint", (2, 3), ("order",), _adjoint,
        "g_t = dh_t + conj(Ā'_{t+1}) g_{t+1} in reverse scan order, for scan operand 0 (Ā' = 0 at a "
        "reset); optional final-state cotangent dlast starts it: g_L = dlast", (BACKWARD,)),
    _op("clip_grad", 2, ("lo", "hi"), _JOIN,
        "the gradient through clip: the cotangent (operand 1) where lo ≤ x (operand 0) ≤ hi, else 0",
        (BACKWARD, ELEMENTWISE)),
    _op("carry", 1, (), _carry,
        "the adjoint one step past its end: conj(Ā'_first) g_first, the initial state's cotangent", (BACKWARD,)),
]}
"""Every op a graph may hold: the declarable ones and those of backward graphs."""


def with_trait(trait: str) -> frozenset:
    """The names of the ops that have `trait`."""
    return frozenset(name for name, spec in ALL_OPS.items() if trait in spec.traits)


OPS = {name: spec for name, spec in ALL_OPS.items() if BACKWARD not in spec.traits}
"""The ops a declaration may use."""
ADJOINT_OPS = {name: spec for name, spec in ALL_OPS.items() if BACKWARD in spec.traits}
"""The ops only the adjoint pass makes."""
