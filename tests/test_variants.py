"""The declared variants (ssmc.ir.variants), each against an independent float64 reference written from its
paper's equations in another form than the IR's recurrence: Hydra as its quasiseparable matrix, H3's SSM
as its convolution kernel.  NumPy, Triton (forward and torch-autograd gradients) and ONNX."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

import ssmc
from ssmc.export import export_onnx, onnx_inputs
from ssmc.ir.grid import kept_orders
from ssmc.ir.inits import random_inputs
from ssmc.library import VARIANTS
from ssmc.ops import hydra as hydra_op
from ssmc.ops import multi_order_scan

from conftest import DEVICES, assert_close, seed_of


def hydra_matrix_ref(x, A, D, dt_bias, diag, dt_fwd, B_fwd, C_fwd, dt_bwd, B_bwd, C_bwd):
    """y[t] = Σ_s M[t, s] x[s] with M the quasiseparable matrix of Hwang et al. 2024 (eq. for Hydra):
    M[t,s] = (C_f[t-1]·B_f[s]) Δ_f[s] Π_{r=s+1}^{t-1} e^{Δ_f[r] A}   (s < t)
    M[t,s] = (C_b[t+1]·B_b[s]) Δ_b[s] Π_{r=t+1}^{s-1} e^{Δ_b[r] A}   (s > t)
    M[t,t] = D + diag[t]."""
    batch, L, H, P = x.shape
    G = B_fwd.shape[2]
    rep = lambda v: v.repeat_interleave(H // G, dim=2)  # (batch, L, G, N) -> (batch, L, H, N)
    df, db = torch.nn.functional.softplus(dt_fwd + dt_bias), torch.nn.functional.softplus(dt_bwd + dt_bias)
    Sf, Sb = torch.cumsum(df, 1), torch.cumsum(db, 1)  # (batch, L, H)
    t = torch.arange(L)[:, None]
    s = torch.arange(L)[None, :]
    # forward part, s < t: C_f[t-1]·B_f[s] Δ_f[s] exp(A (S_f[t-1] - S_f[s]))
    cb_f = torch.einsum("bthn,bshn->bhts", rep(C_fwd), rep(B_fwd))  # C[t]·B[s]
    cb_f = torch.roll(cb_f, 1, dims=2)  # row t holds C[t-1]·B[s]
    Sf_prev = torch.roll(Sf, 1, dims=1).permute(0, 2, 1)  # S_f[t-1], (batch, H, L)
    dec_f = torch.exp(A[None, :, None, None] * (Sf_prev[..., None] - Sf.permute(0, 2, 1)[:, :, None, :]))
    lower = (s < t).to(x.dtype)
    M = cb_f * df.permute(0, 2, 1)[:, :, None, :] * torch.where(lower.bool(), dec_f, torch.zeros_like(dec_f))
    # backward part, s > t: C_b[t+1]·B_b[s] Δ_b[s] exp(A (S_b[s-1] - S_b[t]))
    cb_b = torch.roll(torch.einsum("bthn,bshn->bhts", rep(C_bwd), rep(B_bwd)), -1, dims=2)
    Sb_prev = torch.roll(Sb, 1, dims=1).permute(0, 2, 1)  # S_b[s-1], (batch, H, L)
    dec_b = torch.exp(A[None, :, None, None] * (Sb_prev[:, :, None, :] - Sb.permute(0, 2, 1)[..., None]))
    upper = s > t
    M = M + cb_b * db.permute(0, 2, 1)[:, :, None, :] * torch.where(upper, dec_b, torch.zeros_like(dec_b))
    M = M + torch.diag_embed((D[None, :, None] + diag.permute(0, 2, 1)))
    return {"y": torch.einsum("bhts,bshp->bthp", M, x)}


def h3_kernel_ref(q, k, v, log_dt, D, A, B, C, **shift):
    """H3: k̄_t = Σ_j w_j k_{t-j}; y_t = q_t (Σ_{l≤t} K[l] (k̄v)_{t-l} + D (k̄v)_t) with the S4D-ZOH kernel
    K[l] = 2 Re Σ_n C_n (e^{ΔA_n} - 1)/A_n B_n e^{l Δ A_n}."""
    L = k.shape[1]
    kbar = torch.zeros_like(k)
    for j in range(len(shift)):
        kbar[:, j:] = kbar[:, j:] + shift[f"shift_w{j}"] * k[:, :L - j]
    kv = kbar * v
    dA = torch.exp(log_dt)[:, None] * A  # (dim, N)
    lags = torch.arange(L, dtype=k.dtype)
    K = 2 * torch.real(torch.einsum("dn,dnl->dl", C * (torch.exp(dA) - 1) / A * B,
                                    torch.exp(dA[..., None] * lags)))  # (dim, L)
    y = torch.zeros_like(kv)
    for t in range(L):
        y[:, t] = torch.einsum("dl,bld->bd", K[:, :t + 1].flip(1), kv[:, :t + 1])
    return {"y": q * (y + D * kv)}


def selective_loop(u, delta, delta_bias, A_log, B, C, D, orders):
    """Mamba-1 (S6) step by step: h = e^{ΔA} h + Δ B u, y = C·h + D u, Δ = softplus(delta + bias),
    A = -exp(A_log); cloud b visits time orders[b][k] at step k, until a -1 (a position never visited
    has h = 0: y = D u)."""
    dt = torch.nn.functional.softplus(delta + delta_bias[:, None])
    A = -torch.exp(A_log)
    y = torch.zeros_like(u)
    for b in range(u.shape[0]):
        h = torch.zeros_like(A)
        cols = {t: D * u[b, :, t] for t in range(u.shape[2])}
        for t in orders[b]:
            t = int(t)
            if t < 0:
                break
            h = torch.exp(dt[b, :, t, None] * A) * h + (dt[b, :, t] * u[b, :, t])[:, None] * B[b, :, t]
            cols[t] = (h * C[b, :, t]).sum(-1) + D * u[b, :, t]
        y[b] = torch.stack([cols[t] for t in range(u.shape[2])], -1)
    return y


def _direction(x, tag):
    return [x[f"{k}{tag}"] for k in ("u", "delta", "delta_bias", "A_log", "B", "C", "D")]


def vim_ref(z, **x):
    L, batch = x["u_fwd"].shape[2], x["u_fwd"].shape[0]
    fwd = selective_loop(*_direction(x, "_fwd"), [range(L)] * batch)
    bwd = selective_loop(*_direction(x, "_bwd"), [range(L - 1, -1, -1)] * batch)
    return {"out": (fwd + bwd) * torch.nn.functional.silu(z)}


def pointcloud_ref(z, order, **x):
    return {"out": selective_loop(*_direction(x, ""), list(order)) * torch.nn.functional.silu(z)}


def causal_conv_ref(u, h):
    """Σ_{k≤t} h[:, k] u[:, t-k] over (batch, L, dim) signals and (dim, L) filters, tap by tap."""
    L = u.shape[1]
    return torch.stack([sum(h[:, k] * u[:, t - k] for k in range(t + 1)) for t in range(L)], 1)


def hyena_ref(v, x1, x2, h1, h2, D1, D2):
    """The order-2 Hyena recurrence z_{n+1} = x_n ⊙ (h_n * z_n + D_n z_n), z_1 = v."""
    z = x1 * (causal_conv_ref(v, h1) + D1 * v)
    return {"y": x2 * (causal_conv_ref(z, h2) + D2 * z)}


def hyena_modal_ref(v, **p):
    """Hyena with the modal filters written out, h_k[t] = 2·Re Σ_n R_n λ_n^t, then convolved."""
    z, L = v, v.shape[1]
    for k in (1, 2):
        A = torch.complex(-torch.exp(p[f"A_log_re{k}"]), p[f"A_im{k}"])
        lam = torch.exp(torch.exp(p[f"log_dt{k}"])[:, None] * A)  # (dim, N)
        steps = torch.arange(L, dtype=torch.float64)
        h = 2 * torch.real((p[f"R{k}"][..., None] * lam[..., None] ** steps).sum(1))  # (dim, L)
        z = p[f"x{k}"] * (causal_conv_ref(z, h) + p[f"D{k}"] * z)
    return {"y": z}


def rsmamba_ref(u, A_log, D, delta_bias, order, **x):
    """Σ_k gate_k ⊙ S6_k(u), S6_k sharing A, D and the Δ bias; the paths visit 0..L-1, L-1..0 and order[b]."""
    batch, L = u.shape[0], u.shape[2]
    paths = {"fwd": [range(L)] * batch, "bwd": [range(L - 1, -1, -1)] * batch, "shuf": list(order)}
    return {"out": sum(x[f"gate_{k}"] * selective_loop(u, x[f"delta_{k}"], delta_bias, A_log, x[f"B_{k}"],
                                                       x[f"C_{k}"], D, visits) for k, visits in paths.items())}


def hiss_ref(seq_idx, **x):
    """HiSS as published: S6 over each chunk alone, its last output the chunk's summary s_j; S6 over the
    summaries, y_j = C_j·h_j + D s_j with its Δ, B, C read at the chunk's last step; y_j at that step."""
    u = x["u"]
    batch, dim, L = u.shape
    out = torch.zeros_like(u)
    for b in range(batch):
        ends = [t for t in range(L) if t == L - 1 or seq_idx[b, t + 1] != seq_idx[b, t]]
        starts = [0] + [t + 1 for t in ends[:-1]]
        summaries = []
        for s0, e in zip(starts, ends):  # the low level, one chunk at a time
            piece = {k: (x[k][b:b + 1, ..., s0:e + 1] if x[k].dim() == 3 else x[k]) for k in
                     ("u", "delta", "delta_bias", "A_log", "B", "C", "D")}
            summaries.append(selective_loop(*_direction(piece, ""), [range(e + 1 - s0)])[0, :, -1])
        dt = torch.nn.functional.softplus(x["delta_high"][b] + x["delta_bias_high"][:, None])  # (dim, L)
        A = -torch.exp(x["A_log_high"])
        h = torch.zeros_like(A)
        for e, s_j in zip(ends, summaries):  # the high level, one step per chunk
            h = torch.exp(dt[:, e, None] * A) * h + (dt[:, e] * s_j)[:, None] * x["B_high"][b, :, e]
            out[b, :, e] = (h * x["C_high"][b, :, e]).sum(-1) + x["D_high"] * s_j
    return {"out": out}


def ss2d_pruned_ref(u, z, delta, delta_bias, A_log, B, C, D, order):
    """Σ_k S6_k(u) ⊙ silu(z): direction k (channels k·dim..) with its own Δ, A, B, C, D visits the positions
    order[b, k] lists (-1: none); a position it does not visit has state 0, so y = D u there."""
    batch, dim, L = u.shape
    K = order.shape[1]
    out = torch.zeros_like(u)
    for k in range(K):
        ch = slice(k * dim, (k + 1) * dim)
        dt = torch.nn.functional.softplus(delta[:, ch] + delta_bias[ch, None])
        A = -torch.exp(A_log[ch])
        for b in range(batch):
            h = torch.zeros_like(A)
            cols = {t: D[ch] * u[b, :, t] for t in range(L)}
            for t in order[b, k].tolist():
                if t < 0:
                    break
                h = torch.exp(dt[b, :, t, None] * A) * h + (dt[b, :, t] * u[b, :, t])[:, None] * B[b, k, :, t]
                cols[t] = (h * C[b, k, :, t]).sum(-1) + D[ch] * u[b, :, t]
            out[b] = out[b] + torch.stack([cols[t] for t in range(L)], -1)
    return {"out": out * torch.nn.functional.silu(z)}


def liquid_s4_ref(u, A_log_re, A_im, B, C, log_dt, D):
    """Liquid-S4's kernel form from its equations: y_k = Σ_j K¹_j u_{k-j} + Σ_j K²_j u_{k-j} u_{k-j-1} + D u_k,
    Kᵖ_j = 2 Re Σ_n C_n Ā_n^j B̄_n^p, bilinear Ā = (1 + ΔA/2)/(1 - ΔA/2), B̄ = Δ B/(1 - ΔA/2)."""
    L = u.shape[1]
    dt = torch.exp(log_dt)[:, None]
    A = torch.complex(-torch.exp(A_log_re), A_im)
    A_bar, B_bar = (1 + dt * A / 2) / (1 - dt * A / 2), dt * B / (1 - dt * A / 2)
    powers = A_bar[None] ** torch.arange(L, dtype=torch.float64)[:, None, None]  # (L, dim, N)
    pair = torch.cat([torch.zeros_like(u[:, :1]), u[:, :-1]], 1) * u  # u_t u_{t-1}
    y = D * u
    for p, v in ((1, u), (2, pair)):
        K = 2 * (C * powers * B_bar ** p).sum(-1).real  # (L, dim)
        y = y + torch.stack([sum(K[j] * v[:, k - j] for j in range(k + 1)) for k in range(L)], 1)
    return {"y": y}


def mambamixer_ref(u, delta, delta_bias, A_log, B, C, D, z, A_log_ch, D_ch, w_in, w_tok, w_ch, **ch):
    """MambaMixer's block from its equations: the token mixer's S6 along time as its convolution form
    y_t = Σ_{s≤t} C_t·(Π_{r=s+1..t} e^{Δ_r A}) Δ_s B_s u_s + D u_t, gated; the channel mixer's S6 along the
    channels step by step, forward and reverse; their weighted average with u."""
    batch, L, dim = u.shape
    dt = torch.nn.functional.softplus(delta + delta_bias)  # (batch, L, dim)
    A = -torch.exp(A_log)
    cum = torch.cumsum(dt[..., None] * A, 1)  # (batch, L, dim, N)
    decay = torch.exp(cum[:, :, None] - cum[:, None])  # [b, t, s]: Π_{r=s+1..t}
    causal = (torch.arange(L)[:, None] >= torch.arange(L)[None]).to(u.dtype)[None, :, :, None, None]
    y = torch.einsum("btn,btsdn,bsdn->btd", C, decay * causal, (dt * u)[..., None] * B[:, :, None])
    y = (y + D * u) * torch.nn.functional.silu(z)
    A_ch = -torch.exp(A_log_ch)  # (L, N)
    y_ch = D_ch[:, None] * y
    for tag, channels in (("fwd", range(dim)), ("bwd", range(dim - 1, -1, -1))):
        dc = torch.nn.functional.softplus(ch[f"delta_ch_{tag}"])
        h = torch.zeros(batch, L, A_ch.shape[1], dtype=u.dtype)
        cols = {}
        for c in channels:
            h = torch.exp(dc[:, :, c, None] * A_ch) * h + (dc[:, :, c] * y[:, :, c])[..., None] * \
                ch[f"B_ch_{tag}"][:, None, c]
            cols[c] = (h * ch[f"C_ch_{tag}"][:, None, c]).sum(-1)
        y_ch = y_ch + torch.stack([cols[c] for c in range(dim)], -1)
    return {"out": w_in * u + w_tok * y + w_ch * y_ch}


def groupmamba_ref(u, delta, delta_bias, A_log, B, C, D, order, W1, b1, W2, b2):
    """Σ-free per-group S6 (group g = channels g·dim/G.. visit order[g]), scaled by the channel affinity
    sigmoid(W2 relu(W1ᵀ mean_t u + b1) + b2) written as matrix products."""
    batch, dim, L = u.shape
    G = order.shape[0]
    dt = torch.nn.functional.softplus(delta + delta_bias[:, None])
    A = -torch.exp(A_log)
    y = torch.zeros_like(u)
    for c in range(dim):
        g = c // (dim // G)
        h = torch.zeros(batch, A.shape[1], dtype=u.dtype)
        for t in order[g].tolist():
            h = torch.exp(dt[:, c, t, None] * A[c]) * h + (dt[:, c, t] * u[:, c, t])[:, None] * B[:, g, :, t]
            y[:, c, t] = (h * C[:, g, :, t]).sum(-1) + D[c] * u[:, c, t]
    hidden = torch.relu(u.mean(-1) @ W1 + b1)  # (batch, R)
    return {"out": torch.sigmoid(hidden @ W2.T + b2)[:, :, None] * y}


def gss_ref(v, A, B, C, log_dt, D, W, u):
    """GSS from its equations: the SSM as its convolution kernel K_l = 2 Re Σ_n C_n (e^{ΔA_n} - 1)/A_n B_n
    e^{lΔA_n}, y = K * v + D v, then uc = y W (the dense layer), out = uc ⊙ u."""
    L = v.shape[1]
    dA = torch.exp(log_dt)[:, None] * A
    K = 2 * (C * (torch.exp(dA) - 1) / A * B * torch.exp(dA[None] * torch.arange(L, dtype=v.dtype)[:, None, None])
             ).sum(-1).real  # (L, F)
    y = torch.stack([sum(K[j] * v[:, t - j] for j in range(t + 1)) for t in range(L)], 1) + D * v
    return {"out": (y @ W) * u}


def mamba3_siso_ref(Q, K, V, ADT, DT, Trap, Angles, Q_bias, K_bias, D, Z):
    """Mamba-3 SISO from its equations in real form: θ_t = (θ_{t-1} + tanh(Angles_t) π DT_t) mod 2π per pair;
    q = Q[g(h)] + Q_bias, k likewise, dims (2i, 2i+1) rotated by θ_i; S_t = α S_{t-1} + β v_{t-1} k_{t-1}ᵀ
    + γ v_t k_tᵀ (α = e^ADT, λ = σ(Trap), β = (1-λ) DT α, γ = λ DT); y = S_t q_t + D v, times silu(z).
    Q, K and the biases arrive as complex pairs (the graph's inputs) and are taken apart into real dims."""
    def real_dims(c):  # (..., N/2) complex -> (..., N) real, pair i at dims 2i, 2i+1
        return torch.stack([c.real, c.imag], -1).flatten(-2)

    batch, L, H, P = V.shape
    rep = H // Q.shape[2]
    q_all = real_dims(Q).repeat_interleave(rep, 2) + real_dims(Q_bias)
    k_all = real_dims(K).repeat_interleave(rep, 2) + real_dims(K_bias)
    N = q_all.shape[-1]
    theta = torch.zeros(batch, H, N // 2, dtype=V.dtype)
    S = torch.zeros(batch, H, P, N, dtype=V.dtype)
    prev = torch.zeros(batch, H, P, N, dtype=V.dtype)  # v_{t-1} k_{t-1}ᵀ
    out = []
    for t in range(L):
        theta = torch.remainder(theta + torch.tanh(Angles[:, t]) * math.pi * DT[:, :, t, None], 2 * math.pi)
        c, s = torch.cos(theta), torch.sin(theta)

        def rotate(v):
            a, b = v[..., 0::2], v[..., 1::2]
            return torch.stack([a * c - b * s, a * s + b * c], -1).flatten(-2)
        q, k = rotate(q_all[:, t]), rotate(k_all[:, t])
        alpha, lam = torch.exp(ADT[:, :, t]), torch.sigmoid(Trap[:, :, t])
        cur = V[:, t, :, :, None] * k[:, :, None, :]
        S = (alpha[..., None, None] * S + ((1 - lam) * DT[:, :, t] * alpha)[..., None, None] * prev
             + (lam * DT[:, :, t])[..., None, None] * cur)
        prev = cur
        y = (S * q[:, :, None, :]).sum(-1) + D[:, None] * V[:, t]
        out.append(y * torch.nn.functional.silu(Z[:, t]))
    return {"out": torch.stack(out, 1)}


REFS = {"rsmamba_graph": rsmamba_ref, "hiss": hiss_ref, "hyena": hyena_ref, "hyena_modal": hyena_modal_ref,
        "hydra_graph": hydra_matrix_ref, "h3": h3_kernel_ref, "vim_graph": vim_ref, "pointcloud_graph": pointcloud_ref,
        "ss2d_pruned": ss2d_pruned_ref, "liquid_s4": liquid_s4_ref, "graph_mamba": pointcloud_ref,
        "mambamixer": mambamixer_ref, "groupmamba": groupmamba_ref, "gss": gss_ref,
        "mamba3_siso": mamba3_siso_ref}
OUT = {"vim_graph": "out", "pointcloud_graph": "out", "hiss": "out", "rsmamba_graph": "out", "ss2d_pruned": "out",
       "graph_mamba": "out", "mambamixer": "out", "groupmamba": "out", "gss": "out",
       "mamba3_siso": "out"}


def _inputs(name, rng, L):
    v = VARIANTS[name]
    sizes = dict(v.sizes, L=L)
    return v.build(), random_inputs(v.build(), sizes, seed_of(rng)), sizes


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_numpy_and_onnx_match_the_papers_equations(rng, name):
    g, x, sizes = _inputs(name, rng, int(rng.integers(5, 15)))
    out = OUT.get(name, "y")
    want = REFS[name](**{k: torch.from_numpy(v) for k, v in x.items()})[out]
    assert_close(ssmc.compile(g, backend="numpy")(**x)[out], want, 1e-11, "numpy")
    ort = pytest.importorskip("onnxruntime")  # (optional: the GPU machine may lack it)
    model = export_onnx(name, sizes=sizes)
    sess = ort.InferenceSession(model.SerializeToString())
    assert_close(sess.run(None, onnx_inputs(model, x))[0], want, 2e-5, "onnx")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_triton_forward_and_gradients_match_float64_autograd(rng, name, device):
    g, x, _ = _inputs(name, rng, int(rng.integers(5, 12)))
    leaves = {k: torch.tensor(v, device=device, requires_grad=v.dtype != np.int64) for k, v in x.items()}
    floats = {k: v for k, v in leaves.items() if v.requires_grad}
    want = REFS[name](**leaves)[OUT.get(name, "y")]
    ct = torch.randn_like(want)
    ref_grads = torch.autograd.grad((want * ct).sum(), list(floats.values()))
    out = ssmc.compile(g, backend="triton")(**leaves)[OUT.get(name, "y")]
    assert_close(out.detach(), want.detach(), 1e-10, "out")
    grads = torch.autograd.grad((out * ct).sum(), list(floats.values()))
    for k, got, w in zip(floats, grads, ref_grads):
        assert_close(got, w, 1e-9, f"grad {k}")


def test_hydra_graph_equals_the_composed_op(rng):
    """The one-graph declaration and ssmc.ops.hydra (two SSD calls and torch glue) compute one thing."""
    g, x, _ = _inputs("hydra_graph", rng, 13)
    y = ssmc.compile(g, backend="numpy")(**x)["y"]
    stack = lambda f, b: np.stack([x[f], x[b]], 2)
    y_op = hydra_op(x["x"], stack("dt_fwd", "dt_bwd"), x["A"], stack("B_fwd", "B_bwd"), stack("C_fwd", "C_bwd"),
                    D=x["D"], diag=x["diag"], dt_bias=x["dt_bias"], dt_softplus=True, backend="numpy")
    assert_close(y, y_op, 1e-12, "hydra graph vs op")


def test_ss2d_pruned_on_a_grid_mask(rng):
    """Orders from a keep mask (kept_orders): with every token kept, VMamba's SS2D as ssmc.ops runs it
    (multi_order_scan on the four grid orders); with some pruned, the reference."""
    g, x, _ = _inputs("ss2d_pruned", rng, 12)
    fn = ssmc.compile(g, backend="numpy")
    orders = kept_orders(np.ones((2, 12), bool), 3, 4)
    y = fn(**dict(x, order=orders))["out"]
    K, dim, N = 4, 3, 4
    y_op = multi_order_scan(x["u"], x["delta"].reshape(2, K, dim, 12), -np.exp(x["A_log"]).reshape(K, dim, N),
                            x["B"], x["C"], orders[0], D=x["D"].reshape(K, dim), z=x["z"],
                            delta_bias=x["delta_bias"].reshape(K, dim), delta_softplus=True, backend="numpy")
    assert_close(y, y_op, 1e-12, "all kept vs multi_order_scan")
    keep = rng.random((2, 12)) < 0.5
    x["order"] = kept_orders(keep, 3, 4)
    want = ss2d_pruned_ref(**{k: torch.from_numpy(v) for k, v in x.items()})["out"]
    assert_close(fn(**x)["out"], want, 1e-12, "pruned")


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_cli_lists_and_checks_the_variants(name, tmp_path):
    listed = subprocess.run([sys.executable, "-m", "ssmc.cli", "list"], capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0 and f"  {name} " in listed.stdout
    res = subprocess.run([sys.executable, "-m", "ssmc.cli", "check", name, "--L", "1,9"], capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0 and res.stdout.rstrip().endswith("agree"), res.stdout + res.stderr
    res = subprocess.run([sys.executable, "-m", "ssmc.cli", "compile", name, "-o", str(tmp_path)],
                         capture_output=True, text=True,
                         timeout=300)
    assert res.returncode != 0 and "steps (several scans or lags)" in res.stderr
