"""Passes: named pure functions Graph -> Graph, run as a flat list; each result is verified."""
from __future__ import annotations

from ..graph import Graph
from .canonicalize import canonicalize
from .discretize import expand_discretization
from .fusion import fuse_regions
from .infer import infer_types
from .lti import detect_lti
from .partial import complete_partial_orders
from .reassociate import reassociate
from .unfold import unfold_per_sample_orders

PIPELINE = (
    ("infer_types", infer_types),
    ("expand_discretization", expand_discretization),
    ("canonicalize", canonicalize),
    ("complete_partial_orders", complete_partial_orders),
    ("unfold_per_sample_orders", unfold_per_sample_orders),
    ("reassociate", reassociate),
    ("detect_lti", detect_lti),
    ("fuse_regions", fuse_regions),
)


def run_pipeline(g: Graph, trace: list | None = None) -> Graph:
    """Run every pass in order; append (pass name, graph) to `trace` after each when given."""
    if trace is not None:
        trace.append(("input", g))
    for name, fn in PIPELINE:
        g = fn(g)  # Graph() verifies on construction, so every step is checked
        if trace is not None:
            trace.append((name, g))
    return g


__all__ = ["PIPELINE", "run_pipeline", "canonicalize", "expand_discretization",
           "fuse_regions", "infer_types", "detect_lti"]
