"""The named declarations of the common SSM families: one Spec each, and the small sizes tests and
exports use by default.  `ssmc.library` is their public face (with the scan-order families, which are
calls of the ops); they live in the IR layer because every layer may look a declaration up by name.
"""
from __future__ import annotations

from .spec import Spec
from .variants import VARIANTS, Variant

ENTRIES = {s.name: s for s in [
    Spec("mamba1", state="diag_real", A="neg_exp", rule="zoh_euler", dt="softplus", dt_bias=True,
         skip="h", gate="silu", final_state=True,
         description="Mamba-1 (S6): selective Δ, B, C; A = -exp(A_log); Ā = e^{ΔA}, B̄ = ΔB; D skip, silu(z) gate"),
    Spec("mamba2", state="scalar_head", A="direct", rule="zoh_euler", dt="softplus", dt_bias=True,
         groups=True, skip="h", gate="silu", h0=True, final_state=True,
         description="Mamba-2 (SSD): scalar A per head, P×N state per head, grouped B/C, initial/final state"),
    Spec("s4d_zoh", state="diag_complex", A="s4d", rule="zoh", dt="exp", selective=(), skip="h",
         description="S4D (LTI, complex diagonal, ZOH): A = -exp(A_log_re) + i·A_im, Δ = exp(log_dt)"),
    Spec("s4d_bilinear", state="diag_complex", A="s4d", rule="bilinear", dt="exp", selective=(), skip="h",
         description="S4D with the bilinear (Tustin) rule"),
    Spec("lru", state="diag_complex", io="mimo", A="lru", rule="direct", dt="raw", selective=(), skip="h",
         readout="re",
         description="LRU: λ = exp(-exp(ν) + i·exp(θ)), γ-normalized complex B (N×H), y = Re(C h) + D u"),
    Spec("s5", state="diag_complex", io="mimo", A="s4d", rule="zoh", dt="exp", selective=(), skip="h",
         readout="re",
         description="S5: one complex diagonal MIMO state shared by all channels, per-state Δ, ZOH"),
]}


def get(name: str) -> "Spec | Variant":
    """A Spec entry, or a declared multi-stage variant (`ssmc.ir.variants`), by name."""
    if name in VARIANTS:
        return VARIANTS[name]
    if name not in ENTRIES:
        raise ValueError(f"no library entry {name!r}; entries are {sorted(ENTRIES) + sorted(VARIANTS)}")
    return ENTRIES[name]


DEFAULT_SIZES = {
    "mamba1": dict(batch=2, dim=5, L=33, N=4),
    "mamba2": dict(batch=2, L=33, H=4, P=3, G=2, N=4),
    "s4d_zoh": dict(batch=2, dim=5, L=33, N=4),
    "s4d_bilinear": dict(batch=2, dim=5, L=33, N=4),
    "lru": dict(batch=2, L=33, H=5, N=4),
    "s5": dict(batch=2, L=33, H=5, N=4),
}
