"""Checks of the drop-in ops' arguments, each error naming the argument, the shape expected and given."""
from __future__ import annotations


def arrays(**given) -> None:
    """Each given argument (None: left out) is an array — a NumPy array or a torch tensor, not a list or str."""
    for name, x in given.items():
        if x is not None and not (hasattr(x, "shape") and hasattr(x, "dtype")):
            raise TypeError(f"{name}: expected a NumPy array or torch tensor, got {type(x).__name__}")


def real_floats(**given) -> None:
    """Each given array (None: left out) has a real floating-point dtype."""
    for name, x in given.items():
        if x is None:
            continue
        kind = getattr(x.dtype, "kind", None)  # NumPy's; torch dtypes have none
        ok = kind == "f" if kind is not None else (x.is_floating_point() and not x.is_complex())
        if not ok:
            raise TypeError(f"{name}: expected a real floating-point array, got dtype {x.dtype}")


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


def flag(name, value) -> bool:
    """A bool argument: bool or NumPy bool only — a truthy string ("no") or number must not switch it on."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    raise TypeError(f"{name}: expected a bool, got {type(value).__name__} {value!r}")


def limits(name, value) -> tuple[float, float]:
    """A (low, high) clamp of dt: two real numbers, 0 <= low <= high (high may be inf), as mamba_ssm's dt_limit."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a pair (low, high) of real numbers, got {value!r}") from None
    if not 0.0 <= lo <= hi:  # (NaN fails too)
        raise ValueError(f"{name}: expected 0 <= low <= high, got {value!r}")
    return lo, hi
