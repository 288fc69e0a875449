"""The emitter every Triton lowering writes through: the graph, a variable name per value, and the
kernel's lines by phase.

A lowering asks the emitter for the variables of a node's operands (`names`), emits the lines that
compute the node into a phase ("pre": before the time loop, "loop": per chunk, "post": after it, and
whatever phases its kernel has), and records the node's own variables.  Elementwise ops go through
their rows of `elementwise.TRITON`; the kernel generators (recurrent.py, backward.py, ssd.py,
ssd_backward.py) lower the structural ops themselves.  A complex value is a pair of variables
(re, im); a real one a single variable.
"""
from __future__ import annotations

import re

import numpy as np

from ssmc.ir import Graph

from .elementwise import TRITON

ACC_DTYPES = {"float32": "tl.float32", "float64": "tl.float64"}
RELAXED = ", sem='relaxed'"  # atomic adds need no ordering: only the sums they finish are read, after the kernel


class Emitter:
    """Variables and lines of one kernel.

    graph: the graph lowered; acc: the arithmetic type (tl.float32, or tl.float64 for float64 inputs);
    names: node id -> its variables; lines: phase -> lines; phase: node id -> the phase it is computed
    in (empty for kernels with no time loop to hoist out of); hoisted: time-invariant factors already
    given a log2(e)-scaled copy before the loop (see `elementwise.lower_expr`)."""

    def __init__(self, graph: Graph, acc: str = "float32", names: dict | None = None,
                 lines: dict | None = None, phases=("pre", "loop", "post")):
        self.g = graph
        self.acc = ACC_DTYPES[acc]
        self.names = {} if names is None else names
        self.lines = {p: [] for p in phases} if lines is None else lines
        self.phase = {}
        self.hoisted = set()

    def out(self, phase: str, line: str) -> None:
        """Emit one line into `phase`."""
        self.lines[phase].append(line)

    def elementwise(self, i: int, n, out, names: tuple | None = None) -> None:
        """Lower elementwise node i (n) through its TRITON row into `out`, under `names` (default: v<i>,
        or v<i>_re, v<i>_im for a complex value), and record them."""
        names = names or value_names(i, n.type.complex)
        self.names[i] = names
        for line in TRITON[n.op](self, i, n, names, [self.names.get(a) for a in n.args]):
            out(line)


def value_names(i: int, complex_: bool) -> tuple:
    """The default variables of node i's value."""
    return (var(i, "re"), var(i, "im")) if complex_ else (var(i),)


def var(i, part=None) -> str:
    return f"v{i}" if part is None else f"v{i}_{part}"


def ident(name: str) -> str:
    """A graph name as an ASCII Python identifier (Triton's GPU compiler takes no other kernel names)."""
    return "".join(c if c.isascii() and c.isalnum() else "_" for c in name)


def param_name(g: Graph, n) -> str:
    """Kernel/launcher name of an input or output; an output named like an input (a decode step's
    `state`, updated in place) gets an `_out` suffix."""
    name = n.attr("name")
    return f"{name}_out" if n.op == "output" and name in g.inputs else name


def tensor_params(graph: Graph, nodes) -> list:
    """Kernel parameters of input/output tensors: pointer, strides, imaginary-part stride."""
    params = []
    for n in nodes:
        p = param_name(graph, n)
        params.append(f"{p}_ptr")
        params += [f"{p}_s{k}" for k in range(len(n.attr("axes")))]
        if n.attr("complex") or (n.op == "output" and n.type.complex):
            params.append(f"{p}_si")  # stride to the imaginary part of the real view
    return params


def widened(load: str, integer: bool, acc: str = "tl.float32") -> str:
    """A load's value in the arithmetic type: integers as loaded, fp32 through FAST_MATH's `_widen`."""
    if integer:
        return load
    return f"_widen({load})" if acc == "tl.float32" else f"{load}.to({acc})"


def as_tile(expr: str, shape: str) -> str:
    """`expr` (a tile, a broadcastable tile or a scalar) as a tile of `shape`.  The `- 0.0` makes a
    scalar a tensor and then folds away: x - 0.0 is x for every x, -0 included, while x + 0.0 is not
    (-0 + 0 = +0), so that form cost an add per element (counted in the SSD kernel's instructions;
    BENCHMARKS.md, "Mamba-2 SSD (forward)")."""
    return f"tl.broadcast_to({expr} - 0.0, {shape})"


_FLOAT_LITERAL = re.compile(r"(?<![\w.])(\d+\.\d*(?:e[-+]?\d+)?)(?![\w.])")


def with_acc_literals(kernel: str, acc: str) -> str:
    """Triton types a Python float literal as fp32, so in a float64 kernel 0.3 would be 0.30000001192:
    literals that fp32 cannot hold exactly become float64 constants."""
    if acc != "float64":
        return kernel

    def fix(m):
        v = float(m.group(1))
        return m.group(1) if float(np.float32(v)) == v else f"tl.full([], {m.group(1)}, tl.float64)"
    return _FLOAT_LITERAL.sub(fix, kernel)
