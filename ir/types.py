"""Types of IR values: which logical axes a value varies over, and whether it is complex.

Every value lives in one canonical index space with five roles:

    b  batch        t  time (the scanned axis)
    h  head/channel p  position inside a head (Mamba-2's P; absent elsewhere)
    n  state

A value's type lists the roles it varies over; it is constant (broadcast) along the others.
Inputs may also carry a `g` (group) axis: channel h reads group h // (H // G), so after
loading a grouped input varies over `h`; and an `r` (repeat) axis of size R: channel h reads
h % R (one tensor shared by H / R blocks of channels — the orders of a multi-order scan).  An
output with an `r` axis sums the H / R channels that map to each of its R (the orders' merge).
Keeping the space fixed is what lets one NumPy interpreter and one Triton code generator serve
every state kind: Mamba-2's scalar-per-head state is simply a diagonal state whose Ā does not
vary over p and n.
"""
from __future__ import annotations

from dataclasses import dataclass

ROLES = ("b", "t", "h", "p", "n")  # canonical axis order of values
INPUT_ROLES = ROLES + ("g", "r")

# Default role of a symbolic dimension, by its name; "name:role" overrides.
DEFAULT_ROLES = {
    "batch": "b", "B": "b",
    "L": "t", "seqlen": "t",
    "dim": "h", "D": "h", "H": "h", "nheads": "h",
    "P": "p", "headdim": "p",
    "N": "n", "d_state": "n",
    "G": "g", "ngroups": "g",
}


@dataclass(frozen=True)
class Axis:
    """One axis of an input or output: its symbolic size and its role."""

    symbol: str
    role: str

    def __post_init__(self):
        if self.role not in INPUT_ROLES:
            raise ValueError(f"axis {self.symbol!r}: role must be one of {INPUT_ROLES}, got {self.role!r}")

    @staticmethod
    def parse(spec: "str | Axis") -> "Axis":
        if isinstance(spec, Axis):
            return spec
        symbol, _, role = spec.partition(":")
        role = role or DEFAULT_ROLES.get(symbol)
        if role is None:
            raise ValueError(f"axis {symbol!r} has no default role; write it as '{symbol}:<role>' "
                             f"with role in {INPUT_ROLES}")
        return Axis(symbol, role)

    def __str__(self):
        default = DEFAULT_ROLES.get(self.symbol)
        return self.symbol if default == self.role else f"{self.symbol}:{self.role}"


def value_role(role: str) -> str:
    """Role an input axis takes in the canonical space (groups and repeats resolve to heads)."""
    return "h" if role in ("g", "r") else role


@dataclass(frozen=True)
class ValueType:
    dims: frozenset  # subset of ROLES
    complex: bool = False

    def __post_init__(self):
        bad = set(self.dims) - set(ROLES)
        if bad:
            raise ValueError(f"unknown value roles {sorted(bad)}")

    @staticmethod
    def of(dims, complex: bool = False) -> "ValueType":
        return ValueType(frozenset(dims), complex)

    def ordered(self) -> tuple:
        return tuple(r for r in ROLES if r in self.dims)

    def join(self, other: "ValueType") -> "ValueType":
        return ValueType(self.dims | other.dims, self.complex or other.complex)

    @property
    def time_varying(self) -> bool:
        return "t" in self.dims

    def __str__(self):
        return f"{'c' if self.complex else 'r'}[{','.join(self.ordered())}]"
