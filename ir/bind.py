"""Binding user arrays to a graph's inputs: checks and symbolic sizes, before any kernel runs.

Every error names the argument, the expected shape in symbolic dims and the shape given.
"""
from __future__ import annotations

import numpy as np

from .graph import Graph


def _shape_str(axes) -> str:
    return "(" + ", ".join(a.symbol for a in axes) + ")"


def is_complex(x) -> bool:
    """Is x (a NumPy array or a torch tensor, which this layer does not import) complex?"""
    if type(x).__module__.startswith("torch"):
        return x.is_complex()
    return np.iscomplexobj(x)


def bind(graph: Graph, args: dict, fixed: dict | None = None) -> dict:
    """Check `args` against the graph's inputs; return symbol -> size.

    `fixed` pre-sets sizes (e.g. P=1 for layouts without a head dim).
    """
    sizes = dict(fixed or {})
    origin = {}
    inputs = {graph[i].attr("name"): graph[i] for i in graph.ids("input")
              if not graph[i].attr("derived") or args.get(graph[i].attr("name")) is not None}  # (see passes.partial)
    unknown = set(args) - set(inputs)
    if unknown:
        raise TypeError(f"{graph.name}: unexpected argument(s) {sorted(unknown)}; inputs are {list(inputs)}")
    for name, node in inputs.items():
        if name not in args or args[name] is None:
            raise TypeError(f"{graph.name}: missing argument {name!r} of shape {_shape_str(node.attr('axes'))}")
        x, axes = args[name], node.attr("axes")
        shape = tuple(x.shape)
        if len(shape) != len(axes):
            raise ValueError(f"{name}: expected shape {_shape_str(axes)} (rank {len(axes)}), got {shape}")
        if is_complex(x) and not node.attr("complex"):
            raise TypeError(f"{name}: expected a real array, got complex dtype {x.dtype}")
        kind = str(x.dtype)
        if node.attr("integer"):
            if "int" not in kind:
                raise TypeError(f"{name}: expected an integer array, got dtype {x.dtype}")
        elif not any(k in kind for k in ("float", "complex", "bfloat")):
            raise TypeError(f"{name}: expected a floating-point array, got dtype {x.dtype}")
        for ax, size in zip(axes, shape):
            if ax.symbol in sizes and sizes[ax.symbol] != size:
                where = f" (set by {origin[ax.symbol]})" if ax.symbol in origin else ""
                raise ValueError(f"{name}: expected shape {_shape_str(axes)} with {ax.symbol}={sizes[ax.symbol]}"
                                 f"{where}, got {shape}")
            sizes[ax.symbol] = size
            origin.setdefault(ax.symbol, name)
    for name, node in inputs.items():
        for ax in node.attr("axes"):
            if sizes[ax.symbol] == 0:
                raise ValueError(f"{name}: dimension {ax.symbol} is 0 in shape {tuple(args[name].shape)}")
    roles = graph.symbols()
    heads = next((s for s, r in roles.items() if r == "h"), None)
    for sym, role in roles.items():
        if role == "g" and heads is not None and sizes[heads] % sizes[sym]:
            raise ValueError(f"{origin[sym]}: {sym}={sizes[sym]} groups must divide {heads}={sizes[heads]}")
        if role == "r" and heads is not None and sizes[heads] % sizes[sym]:
            raise ValueError(f"{origin[sym]}: {sym}={sizes[sym]} (shared by every block of channels) must divide "
                             f"{heads}={sizes[heads]}")
    return sizes


def role_sizes(graph: Graph, sizes: dict) -> dict:
    """role -> size (missing roles are 1)."""
    out = {r: 1 for r in "bthpngr"}
    for sym, role in graph.symbols().items():
        if sym in sizes:
            out[role] = sizes[sym]
    return out


def check_sizes(graph: Graph, sizes: dict, free=("b", "t")) -> dict:
    """`sizes` for fixing a graph's symbols (an export): each key one of its symbols, each value a positive
    int, and every symbol of a role outside `free` given; the sizes, or a ValueError/TypeError naming the
    key, what is expected and what was given."""
    if not isinstance(sizes, dict):
        raise TypeError(f"sizes: expected a dict of symbol -> int, got {type(sizes).__name__}")
    symbols = graph.symbols()
    unknown = sorted(k for k in sizes if k not in symbols)
    if unknown:
        raise ValueError(f"sizes: {graph.name} has no symbol {', '.join(map(repr, unknown))}; its symbols are "
                         f"{sorted(symbols)}")
    for k, v in sizes.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"sizes[{k!r}]: expected a positive int, got {type(v).__name__} {v!r}")
        if v <= 0:
            raise ValueError(f"sizes[{k!r}]: expected a positive int, got {v}")
    missing = sorted(k for k, role in symbols.items() if role not in free and k not in sizes)
    if missing:
        raise ValueError(f"sizes: {graph.name} needs a size for {missing}, got {sorted(sizes)}")
    return {k: int(v) for k, v in sizes.items()}
