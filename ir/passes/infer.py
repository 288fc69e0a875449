"""Shape/type inference: give every node its ValueType and check symbolic dimensions agree."""
from __future__ import annotations

from dataclasses import replace

from ..graph import Graph
from ..opset import ALL_OPS as OPS
from ..opset import IRError
from ..types import value_role


def infer_types(g: Graph) -> Graph:
    _check_symbols(g)
    typed = []
    for i, n in enumerate(g.nodes):
        args = [typed[a].type for a in n.args]
        try:
            t = OPS[n.op].type_rule(args, n.a)
        except IRError as e:
            raise IRError(f"node %{i} ({n.op}{' ' + n.attr('name') if n.attr('name') else ''}): {e}") from None
        typed.append(replace(n, type=t))
    return Graph(g.name, tuple(typed))


def _check_symbols(g: Graph) -> None:
    """One role per symbol; at most one symbol per role (groups aside); one axis per value role in a
    layout; every size given by an input; a group or shared-block axis only beside a channel axis."""
    role_of, symbol_of = {}, {}
    given = {a.symbol for n in g.nodes if n.op == "input" for a in n.attr("axes")}
    for i, n in enumerate(g.nodes):
        if n.op not in ("input", "output"):
            continue
        where = f"node %{i} ({n.op} {n.attr('name')})"
        seen = {}
        for ax in n.attr("axes"):
            other = seen.setdefault(value_role(ax.role), ax)
            if other is not ax:
                raise IRError(f"{where}: axes {other} and {ax} both lie along the value role {value_role(ax.role)!r}")
            if n.op == "output" and ax.symbol not in given:
                raise IRError(f"{where}: no input has the axis {ax.symbol!r}, so its size is unknown")
            if role_of.setdefault(ax.symbol, ax.role) != ax.role:
                raise IRError(f"node %{i} ({n.op} {n.attr('name')}): symbol {ax.symbol!r} used as role "
                              f"{ax.role!r} here and {role_of[ax.symbol]!r} elsewhere")
            if symbol_of.setdefault(ax.role, ax.symbol) != ax.symbol:
                raise IRError(f"node %{i} ({n.op} {n.attr('name')}): role {ax.role!r} named {ax.symbol!r} "
                              f"here and {symbol_of[ax.role]!r} elsewhere")
            if ax.role in ("g", "r") and not any(
                    a.role == "h" for m in g.nodes if m.op == "input" for a in m.attr("axes")):
                kind = "group" if ax.role == "g" else "shared-block"
                raise IRError(f"node %{i}: {kind} axis {ax.symbol!r} needs a head/channel axis (role h) on an input")
