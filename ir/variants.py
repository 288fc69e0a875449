"""Published SSM variants that need several scans or lags, declared as one IR graph each with the
Builder.  Each lowers as stages (`ssmc.ir.stages`): one kernel per scan, time operators between them.
A `_graph` suffix marks the one-graph form of a family that `ssmc.library.family` also runs as calls of
the ops (hydra, vim, pointcloud_mamba).

    hydra_graph       Hydra's quasiseparable mixer (Hwang et al. 2024) in one graph
    h3                H3 (Fu et al. 2023), one channel per head: a shift SSM on k (a short causal filter
                      of lags), k̄ ⊙ v, a diagonal complex SSM on it, gated by q
    vim_graph         Vision Mamba's bidirectional block (Zhu et al. 2024): forward and backward selective
                      scans, each direction with its own u, Δ, A, B, C, D, summed and gated by silu(z)
    pointcloud_graph  a selective scan along a serialization order that differs per point cloud (Point
                      Cloud Mamba, Zhang et al. 2024; Graph Mamba's per-graph orderings likewise)
    graph_mamba       Graph-Mamba (Wang et al. 2024): a per-graph node order over a padded batch of graphs,
                      the padding slots not visited (a partial gather order)
    ss2d_pruned       VMamba's SS2D (Liu et al. 2024) over the tokens pruning kept (Zhan et al. 2024):
                      partial gather orders, one per direction and sample
    mambamixer        MambaMixer (Behrouz et al. 2024): a token mixer along time, then a channel mixer with
                      scans along the channels (scan(..., along="channels"))
    groupmamba        GroupMamba (Shaker et al. 2024): a scan per channel group along its own order, then
                      channel affinity modulation (pool over time, a dense bottleneck, sigmoid)
    gss               Gated State Spaces (Mehta et al. 2022): a diagonal SSM, its dense layer fused, gated
    mamba3_siso       Mamba-3 SISO (Lahoti et al. 2026): angle scan, rotary, trapezoidal update with a lagged
                      term, matrix state (the IR form; no drop-in op or chunked lowering yet)
    liquid_s4         Liquid-S4's kernel form (Hasani et al. 2023): convolutions of u and of products of
                      consecutive inputs with kernels the graph computes by scans
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from . import builder as d
from .builder import Builder
from .graph import Graph


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    declare: Callable  # () -> Graph
    sizes: dict  # small sizes for tests and `ssmc check`

    def build(self) -> Graph:
        return self.declare()


def _direction(m: Builder, x, dt, A, dt_bias, B, C, order):
    """One SSD direction of Hydra, without D: Σ_n C · h with h = scan(exp(ΔA), Δ B x), Δ = softplus(dt + bias)."""
    delta = d.softplus(dt + dt_bias)
    return (C * m.scan(d.exp(delta * A), delta * B * x, order=order)).sum("n")


def hydra() -> Graph:
    """y = shift(SSD_fwd(x)) + flip(shift(SSD_bwd(flip(x)))) + (D + diag) ⊙ x: each direction's readout
    moved one step along its own direction (so neither scan's diagonal term reaches y), x and A shared,
    Δ, B, C per direction, as `ssmc.ops.hydra` computes by composing two SSD calls."""
    m = Builder("hydra_graph")
    x = m.input("x", ("batch", "L", "H", "P"))
    A, D, bias = m.input("A", ("H",)), m.input("D", ("H",)), m.input("dt_bias", ("H",))
    diag = m.input("diag", ("batch", "L", "H"))
    ys = []
    for k, (name, order) in enumerate((("fwd", "forward"), ("bwd", "reverse"))):
        dt = m.input(f"dt_{name}", ("batch", "L", "H"))
        B, C = (m.input(f"{v}_{name}", ("batch", "L", "G", "N")) for v in "BC")
        ys.append(m.lag(_direction(m, x, dt, A, bias, B, C, order), 1, order=order))
    m.output("y", ys[0] + ys[1] + (D + diag) * x, ("batch", "L", "H", "P"))
    return m.build()


def h3(taps: int = 4) -> Graph:
    """H3 with one channel per head: k̄_t = Σ_j w_j k_{t-j} (the shift SSM as its `taps`-tap causal
    filter), then a diagonal complex SSM on k̄ ⊙ v — h_t = e^{ΔA} h_{t-1} + (e^{ΔA} - 1)/A · B (k̄ ⊙ v)_t
    (ZOH), Δ = exp(log_dt) — read out as 2·Re(Σ_n C h) + D (k̄ ⊙ v), and gated by q."""
    m = Builder("h3")
    q, k, v = (m.input(n, ("batch", "L", "dim")) for n in "qkv")
    shifted = m.input("shift_w0", ("dim",)) * k
    for j in range(1, taps):
        shifted = shifted + m.input(f"shift_w{j}", ("dim",)) * m.lag(k, j)
    kv = shifted * v
    log_dt, D = m.input("log_dt", ("dim",)), m.input("D", ("dim",))
    A, B, C = (m.input(n, ("dim", "N"), complex=True) for n in "ABC")
    A_bar, B_scale = m.discretize(d.exp(log_dt), A, "zoh")
    h = m.scan(A_bar, B_scale * B * kv)
    m.output("y", q * (2.0 * d.real((C * h).sum("n")) + D * kv), ("batch", "L", "dim"))
    return m.build()


def _selective(m: Builder, tag: str, order="forward", index=None, seq_idx=None, unvisited=None):
    """Mamba-1's selective scan with its own u, Δ (+ bias, softplus), A = -exp(A_log), B, C and D skip,
    inputs suffixed `tag`: y = Σ_n C h + D u, h_t = e^{Δ_t A} h_{t-1} + Δ_t B_t u_t along `order`."""
    u = m.input(f"u{tag}", ("batch", "dim", "L"))
    delta = d.softplus(m.input(f"delta{tag}", ("batch", "dim", "L")) + m.input(f"delta_bias{tag}", ("dim",)))
    A = -d.exp(m.input(f"A_log{tag}", ("dim", "N")))
    B, C = m.input(f"B{tag}", ("batch", "N", "L")), m.input(f"C{tag}", ("batch", "N", "L"))
    h = m.scan(d.exp(delta * A), delta * B * u, order=order, index=index, seq_idx=seq_idx, unvisited=unvisited)
    return (C * h).sum("n") + m.input(f"D{tag}", ("dim",)) * u


def vim() -> Graph:
    """out = (y_fwd + y_bwd) · silu(z): Vim's two directions, each its own conv1d (given here as its own
    u, the conv's output), projections, A and D; the backward one scans the sequence reversed."""
    m = Builder("vim_graph")
    y = _selective(m, "_fwd") + _selective(m, "_bwd", order="reverse")
    m.output("out", y * d.silu(m.input("z", ("batch", "dim", "L"))), ("batch", "dim", "L"))
    return m.build()


def pointcloud_mamba() -> Graph:
    """A selective scan in each cloud's own serialization: step k of cloud b visits point order[b, k]
    (a space-filling-curve order computed per cloud); out in point order, gated by silu(z)."""
    m = Builder("pointcloud_graph")
    y = _selective(m, "", order="gather", index=m.input("order", ("batch", "L"), integer=True))
    m.output("out", y * d.silu(m.input("z", ("batch", "dim", "L"))), ("batch", "dim", "L"))
    return m.build()


def graph_mamba() -> Graph:
    """A selective scan over each graph of a padded batch in its own node order (Graph-Mamba's node
    prioritization: by degree, ties at random): order[b] lists graph b's nodes, then -1 for the padding
    slots, which are not visited (their state is zero: out = D u ⊙ silu(z) there); gated by silu(z)."""
    m = Builder("graph_mamba")
    order = m.input("order", ("batch", "L"), integer=True)
    y = _selective(m, "", order="gather", index=order, unvisited="initial")
    m.output("out", y * d.silu(m.input("z", ("batch", "dim", "L"))), ("batch", "dim", "L"))
    return m.build()


def rsmamba() -> Graph:
    """out = Σ_k gate_k ⊙ y_k over the paths forward, reverse and shuffled (step j of sample b visits
    order[b, j]): y_k = Σ_n C_k h_k + D u with A, D and the Δ bias shared by the paths (one mixer) and
    Δ, B, C per path (each path's projections)."""
    m = Builder("rsmamba_graph")
    u = m.input("u", ("batch", "dim", "L"))
    A = -d.exp(m.input("A_log", ("dim", "N")))
    D, bias = m.input("D", ("dim",)), m.input("delta_bias", ("dim",))
    order = m.input("order", ("batch", "L"), integer=True)
    out = None
    for path, how in (("fwd", "forward"), ("bwd", "reverse"), ("shuf", "gather")):
        delta = d.softplus(m.input(f"delta_{path}", ("batch", "dim", "L")) + bias)
        B, C = m.input(f"B_{path}", ("batch", "N", "L")), m.input(f"C_{path}", ("batch", "N", "L"))
        h = m.scan(d.exp(delta * A), delta * B * u, order=how, index=order if how == "gather" else None)
        y = m.input(f"gate_{path}", ("batch", "dim", "L")) * ((C * h).sum("n") + D * u)
        out = y if out is None else out + y
    m.output("out", out, ("batch", "dim", "L"))
    return m.build()


def ss2d_pruned() -> Graph:
    """VMamba's SS2D after token pruning: K directions over an H×W grid (row-major, column-major and their
    reverses), each a block of `dim` channels with its own Δ (+ bias, softplus), A = -exp(A_log), B, C and
    D, all reading one u.  Direction k of sample b steps through order[b, k] — the kept tokens in its
    traversal order, then -1 (`ssmc.ir.grid.kept_orders`) — so the pruned tokens see the zero state (their
    y is D u).  The directions are summed (u's shared axis) and gated by silu(z)."""
    m = Builder("ss2d_pruned")
    u = m.input("u", ("batch", "dim:r", "L"))
    delta = d.softplus(m.input("delta", ("batch", "KD:h", "L")) + m.input("delta_bias", ("KD:h",)))
    A = -d.exp(m.input("A_log", ("KD:h", "N")))
    B, C = (m.input(n, ("batch", "K:g", "N", "L")) for n in "BC")
    order = m.input("order", ("batch", "K:g", "L"), integer=True)
    h = m.scan(d.exp(delta * A), delta * B * u, order="gather", index=order, unvisited="initial")
    y = (C * h).sum("n") + m.input("D", ("KD:h",)) * u
    m.output("out", y * d.silu(m.input("z", ("batch", "dim:r", "L"))), ("batch", "dim:r", "L"))
    return m.build()


def hiss() -> Graph:
    """Two levels of S6 scans (see `_selective`).  The low level scans each chunk on its own (it resets
    where `seq_idx`, the chunk index, changes); its output at a chunk's last step is the chunk's summary.
    The high level scans the summaries: at a chunk's last step it steps as S6 on the summary, elsewhere
    it holds (Ā = 1, input 0).  `out` at a chunk's last step is the high level's output for that chunk
    (the published model's output sequence, one per chunk), and 0 at the other steps."""
    m = Builder("hiss")
    seq = m.input("seq_idx", ("batch", "L"), integer=True)
    end = 1.0 - m.lag(m.const(1.0), 1, order="reverse", seq_idx=seq)  # 1 at each chunk's last step
    low = _selective(m, "", seq_idx=seq)
    delta = d.softplus(m.input("delta_high", ("batch", "dim", "L")) + m.input("delta_bias_high", ("dim",)))
    A = -d.exp(m.input("A_log_high", ("dim", "N")))
    B, C = m.input("B_high", ("batch", "N", "L")), m.input("C_high", ("batch", "N", "L"))
    h = m.scan(end * d.exp(delta * A) + (1.0 - end), end * delta * B * low)
    m.output("out", end * ((C * h).sum("n") + m.input("D_high", ("dim",)) * low), ("batch", "dim", "L"))
    return m.build()


def hyena() -> Graph:
    """y = x2 ⊙ (h2 * z + D2 z), z = x1 ⊙ (h1 * v + D1 v): `*` a causal convolution along time with the
    filters h1, h2 over (dim, L) (Hyena's implicit filters, given as their values), D the filters' bias."""
    m = Builder("hyena")
    z = m.input("v", ("batch", "L", "dim"))
    for k in (1, 2):
        h, D = m.input(f"h{k}", ("dim", "L")), m.input(f"D{k}", ("dim",))
        z = m.input(f"x{k}", ("batch", "L", "dim")) * (m.causal_conv(z, h) + D * z)
    m.output("y", z, ("batch", "L", "dim"))
    return m.build()


def hyena_modal() -> Graph:
    """Hyena with modal filters h_t = 2·Re Σ_n R_n λ_n^t, λ = exp(Δ A), A = -exp(A_log_re) + i·A_im,
    Δ = exp(log_dt): the convolution h * z is the scan s_t = λ s_{t-1} + R z_t read out as 2·Re Σ_n s_t."""
    m = Builder("hyena_modal")
    z = m.input("v", ("batch", "L", "dim"))
    for k in (1, 2):
        A = d.complex_(-d.exp(m.input(f"A_log_re{k}", ("dim", "N"))), m.input(f"A_im{k}", ("dim", "N")))
        lam = d.exp(d.exp(m.input(f"log_dt{k}", ("dim",))) * A)
        R, D = m.input(f"R{k}", ("dim", "N"), complex=True), m.input(f"D{k}", ("dim",))
        conv = 2.0 * d.real(m.scan(lam, R * z).sum("n"))
        z = m.input(f"x{k}", ("batch", "L", "dim")) * (conv + D * z)
    m.output("y", z, ("batch", "L", "dim"))
    return m.build()


def mambamixer() -> Graph:
    """MambaMixer's block (Behrouz et al. 2024), its projections and convolution given: a selective token
    mixer — S6 along time on u (Δ = softplus(delta + bias), A = -exp(A_log), B, C over time, D), gated by
    silu(z) — then a selective channel mixer on its output y: S6 along the channels, forward and reverse,
    each direction with its own Δ (per token and channel), B and C (per channel), sharing A_ch (per token)
    and D_ch; then the weighted average of the block's input and both mixers' outputs:
    out = w_in ⊙ u + w_tok ⊙ y + w_ch ⊙ y_ch."""
    m = Builder("mambamixer")
    u = m.input("u", ("batch", "L", "dim"))
    delta = d.softplus(m.input("delta", ("batch", "L", "dim")) + m.input("delta_bias", ("dim",)))
    A = -d.exp(m.input("A_log", ("dim", "N")))
    B, C = m.input("B", ("batch", "L", "N")), m.input("C", ("batch", "L", "N"))
    h = m.scan(d.exp(delta * A), delta * B * u)
    y = ((C * h).sum("n") + m.input("D", ("dim",)) * u) * d.silu(m.input("z", ("batch", "L", "dim")))
    A_ch = -d.exp(m.input("A_log_ch", ("L", "N")))
    y_ch = m.input("D_ch", ("L",)) * y
    for tag, order in (("fwd", "forward"), ("bwd", "reverse")):
        dc = d.softplus(m.input(f"delta_ch_{tag}", ("batch", "L", "dim")))
        Bc, Cc = m.input(f"B_ch_{tag}", ("batch", "dim", "N")), m.input(f"C_ch_{tag}", ("batch", "dim", "N"))
        y_ch = y_ch + (Cc * m.scan(d.exp(dc * A_ch), dc * Bc * y, order=order, along="channels")).sum("n")
    w = {k: m.input(f"w_{k}", ("dim",)) for k in ("in", "tok", "ch")}
    m.output("out", w["in"] * u + w["tok"] * y + w["ch"] * y_ch, ("batch", "L", "dim"))
    return m.build()


def groupmamba() -> Graph:
    """GroupMamba's modulated group layer (Shaker et al. 2024), its projections given: the channels split
    into G groups, group g an S6 scan along its own order (order[g], e.g. one of four 2-D directions),
    with per-channel Δ (+ bias, softplus), A = -exp(A_log), D, and per-group B, C; then channel affinity
    modulation: a = sigmoid(W2 · relu(W1 · mean_t(u) + b1) + b2), a dense bottleneck (dim → R → dim,
    W1 and W2 over (dim, R)) on the input pooled over the tokens, scaling each channel's output."""
    m = Builder("groupmamba")
    u = m.input("u", ("batch", "dim", "L"))
    delta = d.softplus(m.input("delta", ("batch", "dim", "L")) + m.input("delta_bias", ("dim",)))
    A = -d.exp(m.input("A_log", ("dim", "N")))
    B, C = (m.input(n, ("batch", "G", "N", "L")) for n in "BC")
    h = m.scan(d.exp(delta * A), delta * B * u, order="gather", index=m.input("order", ("G", "L"), integer=True))
    y = (C * h).sum("n") + m.input("D", ("dim",)) * u
    hidden = (m.input("W1", ("dim", "R:p")) * m.pool(u, "mean")).sum("h") + m.input("b1", ("R:p",))
    hidden = d.clip(hidden, 0.0, float("inf"))  # relu
    affinity = d.sigmoid((m.input("W2", ("dim", "R:p")) * hidden).sum("p") + m.input("b2", ("dim",)))
    m.output("out", affinity * y, ("batch", "dim", "L"))
    return m.build()


def gss() -> Graph:
    """Gated State Spaces' mixer (Mehta et al. 2022) with its dense layer fused, the input projections (and
    their GELUs) given: a diagonal complex SSM over the F channels of v (ZOH, Δ = exp(log_dt), y =
    2·Re(Σ_n C h) + D v), then the dense layer uc = W · y (F → E, W over (F, E)), gated: out = uc ⊙ u."""
    m = Builder("gss")
    v = m.input("v", ("batch", "L", "F:h"))
    A, B, C = (m.input(n, ("F:h", "N"), complex=True) for n in "ABC")
    A_bar, B_scale = m.discretize(d.exp(m.input("log_dt", ("F:h",))), A, "zoh")
    y = 2.0 * d.real((C * m.scan(A_bar, B_scale * B * v)).sum("n")) + m.input("D", ("F:h",)) * v
    uc = (m.input("W", ("F:h", "E:p")) * y).sum("h")
    m.output("out", uc * m.input("u", ("batch", "L", "E:p")), ("batch", "L", "E:p"))
    return m.build()


def mamba3_siso(D: bool = True, Z: bool = True, states: bool = False) -> Graph:
    """Mamba-3 SISO (Lahoti et al. 2026; mamba_ssm's mamba3_siso_combined), its projections given.  Per head,
    with q, k the N/2 pairs of the real Q, K (shared by heads in GQA style, over G) as complex numbers
    (pair i = dims 2i, 2i+1 as re, im) plus per-head biases:
    an angle state θ_t = θ_{t-1} + tanh(Angles_t)·π·DT_t (a scan; rotations are 2π-periodic, so the mod
    2π of the recurrence is not taken), q and k rotated by e^{iθ_t}; the exponential-trapezoidal update
    S_t = α_t S_{t-1} + β_t v_{t-1} k_{t-1}ᵀ + γ_t v_t k_tᵀ with α = exp(ADT), λ = sigmoid(Trap),
    β = (1 - λ)·DT·α, γ = λ·DT (the lag of v and of the rotated k); y = S_t q_t + D v, gated by silu(Z).
    In pairs, k_tᵀ q_t = Re Σ conj(k) q: the state holds v ⊗ conj(k) and the readout is Re Σ_n S q.
    Without D or Z, no skip or gate; with `states`, initial states: angle_state (batch, H, N), ssm_state
    (batch, H, P, N) in the v ⊗ conj(k) form, and vk_state, step 0's lagged term v_{-1} ⊗ conj(k_{-1}).
    Outputs out and the final angle and ssm states (`ssmc.ops.mamba3_siso` converts mamba_ssm's layouts)."""
    m = Builder("mamba3_siso")
    Q, K = (m.input(n, ("batch", "L", "G", "N"), complex=True) for n in "QK")
    V = m.input("V", ("batch", "L", "H", "P"))
    ADT, DT, Trap = (m.input(n, ("batch", "H", "L")) for n in ("ADT", "DT", "Trap"))
    theta = m.scan(m.const(1.0), d.tanh(m.input("Angles", ("batch", "L", "H", "N"))) * math.pi * DT,
                   h0=m.input("angle_state", ("batch", "H", "N")) if states else None)
    q = (Q + m.input("Q_bias", ("H", "N"), complex=True)) * d.exp(d.complex_(m.const(0.0), theta))
    k = d.conj(K + m.input("K_bias", ("H", "N"), complex=True)) * d.exp(d.complex_(m.const(0.0), -theta))  # conj
    alpha, lam = d.exp(ADT), d.sigmoid(Trap)
    prev = m.lag(V, 1) * m.lag(k, 1)
    if states:  # step 0's lagged term: the state's last v and k
        prev = prev + (1.0 - m.lag(m.const(1.0), 1)) * m.input("vk_state", ("batch", "H", "P", "N"), complex=True)
    S = m.scan(alpha, (1.0 - lam) * DT * alpha * prev + lam * DT * V * k,
               h0=m.input("ssm_state", ("batch", "H", "P", "N"), complex=True) if states else None)
    y = d.real((S * q).sum("n"))
    if D:
        y = y + m.input("D", ("H",)) * V
    if Z:
        y = y * d.silu(m.input("Z", ("batch", "L", "H", "P")))
    m.output("out", y, ("batch", "L", "H", "P"))
    m.output("angle", m.last(theta), ("batch", "H", "N"))
    m.output("ssm", m.last(S), ("batch", "H", "P", "N"))
    return m.build()


def liquid_s4(degree: int = 2) -> Graph:
    """Liquid-S4's kernel form: y = K¹ * u + Σ_{p=2..degree} Kᵖ * u⁽ᵖ⁾ + D u, `*` a causal convolution,
    u⁽ᵖ⁾_t = u_t u_{t-1} ⋯ u_{t-p+1} (products of consecutive inputs: lags), and the kernels
    Kᵖ_j = 2·Re Σ_n C_n Ā_n^j B̄_n^p of a diagonal complex SSM (bilinear, Δ = exp(log_dt),
    A = -exp(A_log_re) + i·A_im), each computed in the graph as the impulse response of a scan."""
    m = Builder("liquid_s4")
    u = m.input("u", ("batch", "L", "dim"))
    A = d.complex_(-d.exp(m.input("A_log_re", ("dim", "N"))), m.input("A_im", ("dim", "N")))
    B, C = (m.input(n, ("dim", "N"), complex=True) for n in "BC")
    A_bar, B_scale = m.discretize(d.exp(m.input("log_dt", ("dim",))), A, "bilinear")
    impulse = 1.0 - m.lag(m.const(1.0), 1)  # 1 at t = 0, else 0: a scan of it is Ā^t times its input
    y, v, B_pow = m.input("D", ("dim",)) * u, u, B_scale * B
    for p in range(1, degree + 1):
        if p > 1:
            v, B_pow = v * m.lag(u, p - 1), B_pow * B_scale * B
        kernel = 2.0 * d.real((C * m.scan(A_bar, B_pow * impulse)).sum("n"))  # (L, dim): no batch axis
        y = y + m.causal_conv(v, kernel)
    m.output("y", y, ("batch", "L", "dim"))
    return m.build()


VARIANTS = {v.name: v for v in [
    Variant("hydra_graph", "Hydra (one graph): forward and reverse SSD scans, each readout shifted one step along its "
            "direction, plus (D + diag)·x", hydra, dict(batch=2, L=33, H=4, P=3, G=2, N=4)),
    Variant("h3", "H3 (one channel per head): 4-tap shift filter on k, k̄·v into a complex diagonal ZOH SSM, "
            "gated by q", h3, dict(batch=2, L=33, dim=5, N=4)),
    Variant("vim_graph", "Vision Mamba block: forward and backward selective scans, each direction with its own u, "
            "Δ, A, B, C, D, summed and gated by silu(z)", vim, dict(batch=2, L=33, dim=5, N=4)),
    Variant("pointcloud_graph", "Point Cloud Mamba: a selective scan along a serialization order that "
            "differs per cloud (order: (batch, L)), gated by silu(z)", pointcloud_mamba,
            dict(batch=2, L=33, dim=5, N=4)),
    Variant("graph_mamba", "Graph-Mamba: a selective scan over each graph's nodes in its own order (a partial "
            "order: -1 marks padding slots, not visited), gated by silu(z)", graph_mamba,
            dict(batch=2, L=33, dim=5, N=4)),
    Variant("rsmamba_graph", "RSMamba: one S6 mixer (A, D, Δ bias shared) along forward, reverse and per-sample "
            "shuffled paths (Δ, B, C per path), merged by path weights", rsmamba, dict(batch=2, L=33, dim=5, N=4)),
    Variant("ss2d_pruned", "VMamba SS2D after token pruning: four directions (channel blocks with their own Δ, A, "
            "B, C, D) each scanning the kept tokens in its order, per sample; pruned tokens see the zero state",
            ss2d_pruned, dict(batch=2, L=33, dim=3, K=4, KD=12, N=4)),
    Variant("hiss", "HiSS: an S6 scan within chunks (seq_idx: the chunk index), an S6 scan over the chunks' "
            "last outputs; out at each chunk's last step", hiss, dict(batch=2, L=33, dim=5, N=4)),
    Variant("mambamixer", "MambaMixer block: an S6 token mixer along time, gated, then a bidirectional S6 channel "
            "mixer along the channels, and the weighted average of input and mixers", mambamixer,
            dict(batch=2, L=9, dim=7, N=4)),
    Variant("groupmamba", "GroupMamba: channel groups each scanning its own order, modulated by channel affinity "
            "(a dense bottleneck on the input pooled over the tokens)", groupmamba,
            dict(batch=2, L=9, dim=8, G=4, N=3, R=2)),
    Variant("gss", "Gated State Spaces: a diagonal complex SSM, its dense layer (F → E) fused, gated by u",
            gss, dict(batch=2, L=33, F=5, N=4, E=3)),
    Variant("mamba3_siso", "Mamba-3 SISO: angle scan, rotary q/k (complex pairs), exponential-trapezoidal update "
            "with the lagged v kᵀ term, matrix state, D skip, silu gate", mamba3_siso,
            dict(batch=2, L=33, G=2, H=4, P=3, N=2)),
    Variant("liquid_s4", "Liquid-S4 (kernel form, degree 2): causal convolutions of u and of u_t·u_{t-1} with "
            "kernels 2·Re C Ā^j B̄^p computed in the graph by scans", liquid_s4, dict(batch=2, L=33, dim=5, N=4)),
    Variant("hyena", "Hyena operator, order 2, explicit long filters (dim, L): two causal convolutions, each "
            "gated by a projection", hyena, dict(batch=2, L=33, dim=5)),
    Variant("hyena_modal", "Hyena operator, order 2, modal filters 2·Re Σ R λ^t: two complex diagonal scans, "
            "each gated by a projection", hyena_modal, dict(batch=2, L=33, dim=5, N=4)),
]}
