"""The IR graph: frozen, hashable nodes in topological order, verified on construction.

A Graph is a tuple of Nodes in SSA form (node i refers only to nodes < i).  Passes never
mutate a graph; they build a new one with `Rebuilder`, which hash-conses nodes so that equal
subexpressions are shared.  networkx is only a derived view (`to_networkx`).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Iterable

import networkx as nx

from .indexmap import strided
from .opset import ALL_OPS, IRError
from .types import Axis, ValueType


def freeze_attrs(attrs: dict) -> tuple:
    """Node attributes as stored: sorted (name, value) pairs, hashable."""
    return tuple(sorted(attrs.items()))


@dataclass(frozen=True)
class Node:
    op: str
    args: tuple = ()
    attrs: tuple = ()  # sorted (name, value) pairs; values are hashable
    type: ValueType | None = None

    @property
    def a(self) -> dict:
        return dict(self.attrs)

    def attr(self, name: str, default: Any = None) -> Any:
        for k, v in self.attrs:
            if k == name:
                return v
        return default

    def with_attrs(self, **changes) -> "Node":
        return replace(self, attrs=freeze_attrs({**self.a, **changes}))


@dataclass(frozen=True)
class Graph:
    name: str
    nodes: tuple = field(default=())

    def __post_init__(self):
        verify(self)

    # --- queries -----------------------------------------------------------------
    def __getitem__(self, i: int) -> Node:
        return self.nodes[i]

    # Queries below are cached on the instance (graphs are immutable): the ops call them per launch.
    @cached_property
    def _by_op(self) -> dict:
        out = {}
        for i, n in enumerate(self.nodes):
            out.setdefault(n.op, []).append(i)
        return out

    def ids(self, op: str) -> list:
        return list(self._by_op.get(op, ()))

    @cached_property
    def inputs(self) -> dict:
        """name -> node id of every input, in declaration order."""
        return {self.nodes[i].attr("name"): i for i in self.ids("input")}

    @cached_property
    def outputs(self) -> dict:
        return {self.nodes[i].attr("name"): i for i in self.ids("output")}

    def ancestors(self, i: int) -> set:
        """Ids of every node that node `i` depends on (not `i` itself)."""
        seen, todo = set(), list(self.nodes[i].args)
        while todo:
            a = todo.pop()
            if a not in seen:
                seen.add(a)
                todo.extend(self.nodes[a].args)
        return seen

    def users(self) -> dict:
        out = {i: [] for i in range(len(self.nodes))}
        for i, n in enumerate(self.nodes):
            for a in n.args:
                out[a].append(i)
        return out

    @property
    def typed(self) -> bool:
        return all(n.type is not None for n in self.nodes)

    def symbols(self) -> dict:
        """symbol -> role for every symbolic dimension named by an input or output."""
        return dict(self._symbols)

    def role_symbols(self) -> dict:
        """role -> the symbol that names it (the first one declared; one per role, groups aside)."""
        out = {}
        for sym, role in self._symbols.items():
            out.setdefault(role, sym)
        return out

    @cached_property
    def _symbols(self) -> dict:
        out = {}
        for n in self.nodes:
            for ax in n.attr("axes", ()) if n.op in ("input", "output") else ():
                out.setdefault(ax.symbol, ax.role)
        return out

    # --- views -------------------------------------------------------------------
    def text(self) -> str:
        lines = [f"ssm {self.name}"]
        for i, n in enumerate(self.nodes):
            lines.append("  " + format_node(i, n))
        return "\n".join(lines) + "\n"

    __str__ = text

    def to_networkx(self):
        g = nx.DiGraph(name=self.name)
        for i, n in enumerate(self.nodes):
            g.add_node(i, op=n.op, label=f"%{i} {n.op}" + (f" {n.attr('name')}" if n.attr("name") else ""),
                       region=n.attr("region"))
            for a in n.args:
                g.add_edge(a, i)
        return g

    def to_dot(self) -> str:
        lines = [f'digraph "{self.name}" {{', "  rankdir=TB; node [shape=box, fontname=monospace];"]
        regions = {}
        for i, n in enumerate(self.nodes):
            regions.setdefault(n.attr("region"), []).append(i)
        for region, ids in regions.items():
            if region is not None:
                lines.append(f'  subgraph cluster_{region} {{ label="kernel region {region}"; style=dashed;')
            for i in ids:
                n = self.nodes[i]
                label = f"%{i} {n.op}" + (f" {n.attr('name')}" if n.attr("name") else "")
                if n.type is not None:
                    label += f"\\n{n.type}"
                lines.append(f'    n{i} [label="{label}"];')
            if region is not None:
                lines.append("  }")
        for i, n in enumerate(self.nodes):
            for a in n.args:
                lines.append(f"  n{a} -> n{i};")
        lines.append("}")
        return "\n".join(lines) + "\n"


def _fmt_attr(v) -> str:
    if isinstance(v, tuple) and v and isinstance(v[0], Axis):
        return "(" + ", ".join(str(a) for a in v) + ")"
    if isinstance(v, tuple):
        return "(" + ", ".join(map(str, v)) + ")"
    return str(v)


def format_node(i: int, n: Node) -> str:
    args = ", ".join(f"%{a}" for a in n.args)
    # Falsy flags are the defaults and only clutter the listing; `lti` is worth seeing either way.
    shown = {k: v for k, v in n.attrs
             if k not in ("name", "symbols", "hoist") and not (k == "axes" and n.op in ("input", "output"))
             and (v or k == "lti" or v == 0 and k == "region")}
    attrs = " {" + ", ".join(f"{k}={_fmt_attr(v)}" for k, v in shown.items()) + "}" if shown else ""
    head = n.op
    if n.op in ("input", "output"):
        head += f" {n.attr('name')} {_fmt_attr(n.attr('axes'))}"
    ty = f" : {n.type}" if n.type is not None else ""
    if n.attr("hoist"):
        ty += "  # hoisted: time-invariant"
    return f"%{i} = {head}{' ' + args if args else ''}{attrs}{ty}"


def verify(g: Graph) -> None:
    """Structural and type checks; raises IRError naming the node."""
    names = set()
    for i, n in enumerate(g.nodes):
        where = f"node %{i} ({n.op})"
        spec = ALL_OPS.get(n.op)
        if spec is None:
            raise IRError(f"{where}: unknown op")
        lo, hi = spec.arity
        if not lo <= len(n.args) <= hi:
            raise IRError(f"{where}: takes {lo}..{hi} operands, got {len(n.args)}")
        if any(not (0 <= a < i) for a in n.args):
            raise IRError(f"{where}: operands {n.args} must refer to earlier nodes")
        attrs = n.a
        want_arg0 = {"last": "scan", "prev": "scan", "adjoint": "scan", "carry": "adjoint"}.get(n.op)
        if want_arg0 and g.nodes[n.args[0]].op != want_arg0:
            raise IRError(f"{where}: operand must be a {want_arg0}, got {g.nodes[n.args[0]].op}")
        if want_arg0 == "scan" and g.nodes[n.args[0]].attr("along") == "h":
            raise IRError(f"{where}: a scan along channels has no {n.op} (not derived)")
        missing = [k for k in spec.attrs if k not in attrs]
        if missing:
            raise IRError(f"{where}: missing attributes {missing}")
        if n.op in ("input", "output"):
            key = (n.op, attrs["name"])
            if key in names:
                raise IRError(f"{where}: duplicate {n.op} name {attrs['name']!r}")
            names.add(key)
        if n.type is not None:
            arg_types = [g.nodes[a].type for a in n.args]
            if any(t is None for t in arg_types):
                raise IRError(f"{where}: typed node has untyped operands")
            try:
                want = spec.type_rule(arg_types, attrs)
            except IRError as e:
                raise IRError(f"{where}: {e}") from None
            if want != n.type:
                raise IRError(f"{where}: type {n.type} disagrees with its rule, which gives {want}")
    if not g.ids("output"):
        raise IRError(f"graph {g.name!r} has no outputs")
    _verify_strided(g)


def _verify_strided(g: Graph) -> None:
    """A strided grid view's state is 0 off its cells' anchors: its values reach outputs only
    through an `upsample` of the same order, and it has no final state (`last`)."""
    scans = [i for i in g.ids("scan") if strided(g[i].attr("order"))]
    for i in g.ids("upsample"):
        if getattr(g[i].attr("order"), "kind", None) != "grid":
            raise IRError(f"node %{i} (upsample): its order must be a grid order (a scan's strided view), "
                          f"got {g[i].attr('order')}")
        if not any(g[s].attr("order") == g[i].attr("order") for s in g.ids("scan")):
            raise IRError(f"node %{i} (upsample): no scan has its order {g[i].attr('order')}")
    if not scans:
        return
    for i in g.ids("last"):
        if g[i].args[0] in scans:
            raise IRError(f"node %{i} (last): a strided grid view has no final state")
    for i in g.ids("output"):  # walk back from each output, stopping at upsamples
        seen, todo = set(), [i]
        while todo:
            j = todo.pop()
            if j in scans:
                raise IRError(f"node %{i} (output): reads the strided grid scan %{j} without an upsample")
            if j not in seen and g.nodes[j].op != "upsample":
                seen.add(j)
                todo.extend(g.nodes[j].args)


class Rebuilder:
    """Builds a new node list, sharing equal nodes (hash-consing)."""

    def __init__(self):
        self.nodes: list = []
        self._index: dict = {}

    def emit(self, op: str, args: Iterable[int] = (), type: ValueType | None = None, **attrs) -> int:
        node = Node(op, tuple(args), freeze_attrs(attrs), type)
        return self.add(node)

    def add(self, node: Node) -> int:
        key = node if node.op not in ("input", "output") else (node.op, node.attr("name"))
        if key in self._index:
            return self._index[key]
        self.nodes.append(node)
        self._index[key] = len(self.nodes) - 1
        return len(self.nodes) - 1

    def finish(self, name: str) -> Graph:
        return Graph(name, tuple(self.nodes))


def prune(g: Graph) -> Graph:
    """Drop nodes no output depends on (inputs are kept: they are the interface)."""
    live = set()
    stack = list(g.ids("output")) + list(g.ids("input"))
    while stack:
        i = stack.pop()
        if i not in live:
            live.add(i)
            stack.extend(g.nodes[i].args)
    remap, rb = {}, Rebuilder()
    for i, n in enumerate(g.nodes):
        if i in live:
            remap[i] = rb.add(replace(n, args=tuple(remap[a] for a in n.args)))
    return rb.finish(g.name)
