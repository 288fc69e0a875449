"""The high-level declaration: an SSM sequence mixer as a handful of choices.

A Spec names the state structure, the parameterization of A, the discretization rule, which of
Δ/B/C vary in time, the scan direction, the skip and the gate; `Spec.build()` turns it into an
IR graph with the declaration DSL.  The library entries and the drop-in ops are Specs.

Layouts (argument names and axes) follow the kernels people already call:
  * SISO diagonal (Mamba-1, S4D):  u, delta, z (batch, dim, L); A (dim, N); B, C (batch, N, L),
    (batch, G, N, L) or (dim, N) when time-invariant; D, delta_bias (dim,); Δ of an LTI spec is
    (dim,).  Final state (batch, dim, N).
  * scalar per head (Mamba-2/SSD): x, z (batch, L, H, P); dt (batch, L, H); A (H,);
    B, C (batch, L, G, N); D (H,) or (H, P); initial_states/final_states (batch, H, P, N);
    seq_idx (batch, L).
  * MIMO (S5, LRU): u (batch, L, H); Λ and Δ (N,); B (N, H); C (H, N); D (H,).
Any spec may take seq_idx (batch, L) (integer): the state resets where it changes (packed
sequences, episode starts).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from . import builder as d
from .graph import Graph
from .symbolic import Rule, get_rule

STATES = ("diag_real", "diag_complex", "scalar_head")
A_FORMS = ("neg_exp", "direct", "s4d", "lru")
DT_FORMS = ("softplus", "exp", "raw")


@dataclass(frozen=True)
class Spec:
    name: str
    state: str = "diag_real"
    io: str = "siso"  # "siso": a state per channel; "mimo": one state shared by all channels (S5)
    A: str = "neg_exp"  # neg_exp: A = -exp(A_log); direct; s4d: -exp(A_log_re) + i·A_im; lru
    rule: "str | Rule" = "zoh_euler"
    selective: frozenset = frozenset({"dt", "B", "C"})  # which of Δ, B, C vary in time
    dt: str = "softplus"  # transform of the Δ input: softplus, exp (log-Δ param) or raw
    dt_bias: bool = False
    dt_limit: tuple | None = None  # clamp Δ after its transform (Mamba-2's dt_limit)
    groups: bool = False  # time-varying B, C carry a group axis shared by H // G channels
    direction: str = "forward"
    skip: str | None = None  # None, "h" (D per channel/head) or "hp" (D per head × P)
    gate: str | None = None  # None or "silu": y · silu(z)
    h0: bool = False
    final_state: bool = False
    seq_idx: bool = False
    complex_BC: frozenset = field(default=None)  # which of B, C are complex (default: all, for complex states)
    readout: str | None = None  # "re" or "2re" for complex states (default: 2re SISO, re MIMO)
    description: str = ""

    def __post_init__(self):
        _check_choice("state", self.state, STATES)
        _check_choice("io", self.io, ("siso", "mimo"))
        _check_choice("A", self.A, A_FORMS)
        _check_choice("dt", self.dt, DT_FORMS)
        _check_choice("direction", self.direction, ("forward", "reverse"))
        _check_choice("skip", self.skip, (None, "h", "hp"))
        _check_choice("gate", self.gate, (None, "silu"))
        _check_choice("readout", self.readout, (None, "re", "2re"))
        get_rule(self.rule)
        object.__setattr__(self, "selective", frozenset(self.selective))
        if not self.selective <= {"dt", "B", "C"}:
            raise ValueError(f"selective must be a subset of {{'dt', 'B', 'C'}}, got {set(self.selective)}")
        if self.complex_BC is None:
            object.__setattr__(self, "complex_BC", frozenset({"B", "C"} if self.is_complex else ()))
        object.__setattr__(self, "complex_BC", frozenset(self.complex_BC))
        if self.A in ("s4d", "lru") and not self.is_complex:
            raise ValueError(f"A={self.A!r} gives a complex A; use state='diag_complex'")
        if self.is_complex and self.A == "neg_exp" and "B" not in self.complex_BC:
            # nothing would make the state complex, yet h0 and the final state are declared complex
            raise ValueError("state='diag_complex' with a real A (A='neg_exp') needs a complex B "
                             "(complex_BC containing 'B'); with a real B the state is real: use state='diag_real'")
        if self.state == "scalar_head" and (self.io != "siso" or self.A not in ("direct", "neg_exp")):
            raise ValueError("scalar_head states are SISO with a real A per head")
        if self.io == "mimo" and (self.selective or self.groups or self.skip == "hp"):
            raise ValueError("MIMO specs are time-invariant (selective=()), ungrouped, with D per channel")
        if self.groups and not ({"B", "C"} & self.selective):
            raise ValueError("groups=True needs a time-varying B or C")
        if self.skip == "hp" and self.state != "scalar_head":
            raise ValueError("skip='hp' (D per head × P) is for scalar_head states")

    @property
    def is_complex(self) -> bool:
        return self.state == "diag_complex"

    def with_(self, **changes) -> "Spec":
        return replace(self, **changes)

    def build(self) -> Graph:
        return _build(self)


def _check_choice(what, value, allowed):
    if value not in allowed:
        raise ValueError(f"Spec.{what} must be one of {allowed}, got {value!r}")


def layout(spec: Spec) -> dict:
    """Axes of every argument, by the conventions in the module docstring."""
    if spec.state == "scalar_head":
        seq = lambda *inner: ("batch", "L") + inner  # noqa: E731
        return dict(u=seq("H", "P"), dt=seq("H"), dt_lti=("H",), A=("H",), state=("batch", "H", "P", "N"),
                    BC=seq("G", "N") if spec.groups else seq("N"), BC_lti=("H", "N"),
                    D={"h": ("H",), "hp": ("H", "P")}.get(spec.skip), bias=("H",), seq_idx=("batch", "L"),
                    names=dict(u="x", dt="dt", bias="dt_bias", h0="initial_states", hT="final_states"))
    if spec.io == "mimo":
        return dict(u=("batch", "L", "H"), dt_lti=("N",), A=("N",), state=("batch", "N"), seq_idx=("batch", "L"),
                    B_lti=("N", "H"), C_lti=("H", "N"), D=("H",), bias=("N",),
                    names=dict(u="u", dt="log_dt" if spec.dt == "exp" else "delta", bias="delta_bias",
                               h0="initial_state", hT="last_state"))
    return dict(u=("batch", "dim", "L"), dt=("batch", "dim", "L"), dt_lti=("dim",), A=("dim", "N"),
                BC=("batch", "G", "N", "L") if spec.groups else ("batch", "N", "L"), BC_lti=("dim", "N"),
                D=("dim",), bias=("dim",), state=("batch", "dim", "N"), seq_idx=("batch", "L"),
                names=dict(u="u", dt="log_dt" if spec.dt == "exp" and not {"dt"} & spec.selective else "delta",
                           bias="delta_bias", h0="initial_state", hT="last_state"))


def _A(m: d.Builder, spec: Spec, axes) -> d.Value:
    if spec.A == "neg_exp":
        return -d.exp(m.input("A_log", axes))
    if spec.A == "direct":
        return m.input("A", axes, complex=spec.is_complex)
    if spec.A == "s4d":  # S4D-Lin/Inv: real part kept negative through -exp
        return d.complex_(-d.exp(m.input("A_log_re", axes)), m.input("A_im", axes))
    # lru: λ = exp(-exp(ν) + i·exp(θ)), the discrete eigenvalue itself
    return d.exp(d.complex_(-d.exp(m.input("nu_log", axes)), d.exp(m.input("theta_log", axes))))


def _build(spec: Spec) -> Graph:
    m, lay = d.Builder(spec.name), layout(spec)
    names = lay["names"]
    u = m.input(names["u"], lay["u"])
    rule_ = get_rule(spec.rule)
    if any(s.name == "dt" for part in "AB" for s in rule_.part(part).free_symbols):
        delta = m.input(names["dt"], lay["dt"] if "dt" in spec.selective else lay["dt_lti"])
        if spec.dt_bias:
            delta = delta + m.input(names["bias"], lay["bias"])
        delta = {"softplus": d.softplus, "exp": d.exp, "raw": lambda v: v}[spec.dt](delta)
        if spec.dt_limit is not None:
            delta = d.clip(delta, *spec.dt_limit)
    else:  # a rule without Δ (LRU's direct rule) takes no Δ input
        delta = m.const(1.0)
    A = _A(m, spec, lay["A"])
    A_bar, B_scale = m.discretize(delta, A, rule_)

    def bc(name):
        axes = lay["BC"] if name in spec.selective else lay.get(f"{name}_lti", lay.get("BC_lti"))
        return m.input(name, axes, complex=name in spec.complex_BC)

    B, C = bc("B"), bc("C")
    if spec.A == "lru":  # LRU normalizes the input by γ = √(1 - |λ|²)
        B_scale = B_scale * d.sqrt(1.0 - d.abs2(A_bar))
    x = B_scale * B * u
    if spec.io == "mimo":
        x = x.sum("h")
    h0 = m.input(names["h0"], lay["state"], complex=spec.is_complex) if spec.h0 else None
    seq = m.input("seq_idx", lay["seq_idx"], integer=True) if spec.seq_idx else None
    h = m.scan(A_bar, x, h0=h0, seq_idx=seq, order=spec.direction)
    y = (C * h).sum("n")
    if spec.is_complex:
        readout = spec.readout or ("re" if spec.io == "mimo" else "2re")
        y = d.real(y) * 2.0 if readout == "2re" else d.real(y)
    if spec.skip:
        y = y + m.input("D", lay["D"]) * u
    if spec.gate == "silu":
        y = y * d.silu(m.input("z", lay["u"]))
    m.output("out", y, lay["u"])
    if spec.final_state:
        m.output(names["hT"], m.last(h), lay["state"])
    return m.build()
