"""Checks of the drop-in ops' arguments, each error naming the argument, the shape expected and given."""
from __future__ import annotations


def shape(x) -> tuple:
    return tuple(getattr(x, "shape", ()))


def expect(name, x, want: tuple, labels: str):
    """x must have shape `want` (written `labels` in the error)."""
    if shape(x) != want:
        raise ValueError(f"{name}: expected shape {labels} = {want}, got {shape(x)}")


def rank(name, x, allowed, shapes) -> int:
    """x's number of dimensions, one of `allowed` (the shapes they stand for: `shapes`)."""
    nd = len(shape(x))
    if nd not in allowed:
        raise ValueError(f"{name}: expected shape {' or '.join(shapes)}, got {shape(x)}")
    return nd
