"""Independent reference implementations of state space model layers.

Plain, textbook float64 (NumPy in, NumPy out).  These are deliberately simple
(explicit loops over time, direct matrix forms) so that tests can use them
as ground truth for the project's own interpreter.  The two loops of the
drop-in ops are ssmc.ops.reference's (written with torch, so the gradient
tests and the benchmarks share them), run here in float64.

Contents
--------
selective_scan_loop  Mamba-1 selective scan (``selective_scan_fn`` semantics).
ssd_loop             Mamba-2 SSD (``mamba_chunk_scan_combined`` semantics),
                     one time step at a time.
ssd_quadratic        The same SSD map in its quadratic ("attention-like")
                     matrix form, with no recurrence.
s4d_kernel           Convolution kernel of a diagonal complex LTI SSM (S4D).
lti_conv             Causal FFT convolution with such a kernel, plus skip term.
s4d_recurrence       The same S4D layer run as a recurrence.
mimo_loop            S5 / LRU style MIMO diagonal complex recurrence.
"""

import numpy as np
import torch

from ssmc.ops import reference

__all__ = [
    "softplus",
    "silu",
    "selective_scan_loop",
    "ssd_loop",
    "ssd_quadratic",
    "s4d_kernel",
    "lti_conv",
    "s4d_recurrence",
    "mimo_loop",
]


# ---------------------------------------------------------------------------
# elementwise helpers
# ---------------------------------------------------------------------------

def softplus(x):
    """softplus(x) = log(1 + exp(x)), computed as logaddexp(0, x) (no overflow)."""
    return np.logaddexp(0.0, np.asarray(x, dtype=np.float64))


def sigmoid(x):
    """sigmoid(x) = 1 / (1 + exp(-x)), evaluated without overflow."""
    x = np.asarray(x, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -x))


def silu(x):
    """silu(x) = x * sigmoid(x)."""
    x = np.asarray(x, dtype=np.float64)
    return x * sigmoid(x)


def _f64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


# ---------------------------------------------------------------------------
# 1. Mamba-1 selective scan
# ---------------------------------------------------------------------------

def _torch64(a):
    """A NumPy array as a float64 (complex128) CPU tensor; None stays None."""
    if a is None:
        return None
    a = np.asarray(a)
    dtype = np.complex128 if np.iscomplexobj(a) else np.int64 if a.dtype.kind in "iu" else np.float64
    return torch.from_numpy(np.array(a, dtype))  # a fresh copy: torch takes no negative strides


def selective_scan_loop(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                        delta_softplus=False, return_last_state=False):
    """Mamba-1 selective scan, one time step at a time: `ssmc.ops.reference.selective_scan` (the one loop
    of the selective scan, shared with the gradient tests and the benchmarks) in float64 on NumPy arrays.

    Shapes: u, delta, z (batch, dim, L); A (dim, N) real or complex;
    B, C (dim, N) | (batch, N, L) | (batch, G, N, L); D, delta_bias (dim,).

        delta <- delta + delta_bias;  delta <- softplus(delta) if requested
        h_t[b,d,n] = exp(delta_t[b,d] A[d,n]) h_{t-1}[b,d,n]
                     + delta_t[b,d] B_t[b,d,n] u_t[b,d],        h_{-1} = 0
        y_t[b,d]   = sum_n C_t[b,d,n] h_t[b,d,n]        (real A)
        y_t[b,d]   = 2 Re sum_n C_t[b,d,n] h_t[b,d,n]   (complex A)
        out = (y + D u) * silu(z)

    Returns out (batch, dim, L) float64, or (out, last_state) where
    last_state = h_{L-1} of shape (batch, dim, N) (complex if A is complex).
    """
    out, h = reference.selective_scan(*map(_torch64, (u, delta, A, B, C, D, z, delta_bias)),
                                      delta_softplus=delta_softplus)
    out, h = out.numpy(), h.numpy()
    return (out, h) if return_last_state else out


# ---------------------------------------------------------------------------
# 2. Mamba-2 SSD as a loop
# ---------------------------------------------------------------------------

def _d_term(D, x):
    """Skip term D * x for x (..., H, P), with D (H,) or (H, P)."""
    D = _f64(D)
    if D.ndim == 1:
        return D[:, None] * x
    return D * x


def ssd_loop(x, dt, A, B, C, D=None, z=None, dt_bias=None, initial_states=None,
             seq_idx=None, dt_softplus=False, return_final_states=False):
    """Mamba-2 SSD (``mamba_chunk_scan_combined`` semantics), per time step.

    Shapes: x, z (batch, L, H, P); dt (batch, L, H); A (H,);
    B, C (batch, L, G, N), head h uses group g(h) = h // (H // G);
    D (H,) or (H, P); dt_bias (H,); initial_states (batch, H, P, N);
    seq_idx (batch, L) integer.

        dt <- dt + dt_bias;  dt <- softplus(dt) if requested
        h_{-1} = initial_states (or 0);  h_{t-1} <- 0 if seq_idx changes at t
        h_t[h,p,n] = exp(dt_t[h] A[h]) h_{t-1}[h,p,n]
                     + dt_t[h] B_t[g(h),n] x_t[h,p]
        y_t[h,p]   = sum_n C_t[g(h),n] h_t[h,p,n] + D x_t[h,p]
        out = y * silu(z)

    Returns out (batch, L, H, P), or (out, final_states (batch, H, P, N)).
    """
    out, h = reference.ssd(*map(_torch64, (x, dt, A, B, C, D, z, dt_bias, initial_states, seq_idx)),
                           dt_softplus=dt_softplus)
    out, h = out.numpy(), h.numpy()
    return (out, h) if return_final_states else out


# ---------------------------------------------------------------------------
# 3. SSD quadratic (matrix) form
# ---------------------------------------------------------------------------

def ssd_quadratic(x, dt, A, B, C, D=None):
    """SSD in its quadratic matrix form (no recurrence).

    For every batch b and head h, with a_r = dt_r[h] A[h] and
    S[t,s] = sum_{r=s+1..t} a_r = cumsum(a)[t] - cumsum(a)[s]:

        M[t,s] = exp(S[t,s]) if s <= t else 0   (masked with -inf before exp)
        Y[t,p] = sum_s (C_t[g(h)] . B_s[g(h)]) M[t,s] dt_s[h] x_s[h,p]
                 + D x_t[h,p]

    dt is used as given (no bias / softplus).  Returns (batch, L, H, P).
    """
    x = _f64(x)
    dt = _f64(dt)
    A = _f64(A)
    B = _f64(B)
    C = _f64(C)
    batch, L, H, P = x.shape
    G = B.shape[2]
    group_of_head = np.arange(H) // (H // G)
    causal = np.tril(np.ones((L, L), dtype=bool))

    y = np.zeros((batch, L, H, P))
    for b in range(batch):
        for hd in range(H):
            g = group_of_head[hd]
            a = dt[b, :, hd] * A[hd]                    # (L,)
            cs = np.cumsum(a)
            S = cs[:, None] - cs[None, :]               # S[t,s]
            S = np.where(causal, S, -np.inf)            # mask before exp
            M = np.exp(S)
            CB = C[b, :, g, :] @ B[b, :, g, :].T        # (L, L): C_t . B_s
            W = CB * M * dt[b, None, :, hd]             # weight on s
            y[b, :, hd, :] = W @ x[b, :, hd, :]
    if D is not None:
        y = y + _d_term(D, x)
    return y


# ---------------------------------------------------------------------------
# 4. S4D kernel + FFT convolution
# ---------------------------------------------------------------------------

def _discretize(A, B, dt, rule):
    """Return (log Abar, Bbar) for the ZOH or bilinear rule.

    zoh:      Abar = exp(dt A),                  Bbar = (exp(dt A) - 1) / A * B
    bilinear: Abar = (1 + dt A/2) / (1 - dt A/2), Bbar = dt / (1 - dt A/2) * B
    """
    A = np.asarray(A, dtype=np.complex128)
    B = np.asarray(B, dtype=np.complex128)
    dt = _f64(dt)[:, None]
    dtA = dt * A
    if rule == "zoh":
        log_Abar = dtA
        Bbar = (np.exp(dtA) - 1.0) / A * B
    elif rule == "bilinear":
        Abar = (1.0 + dtA / 2.0) / (1.0 - dtA / 2.0)
        log_Abar = np.log(Abar)
        Bbar = dt / (1.0 - dtA / 2.0) * B
    else:
        raise ValueError(f"unknown discretization rule {rule!r}")
    return log_Abar, Bbar


def s4d_kernel(A, B, C, dt, L, rule):
    """Convolution kernel of a diagonal complex LTI SSM (S4D).

    A, B, C (dim, N) complex; dt (dim,) real.

        K[d,l] = 2 Re sum_n C[d,n] Abar[d,n]^l Bbar[d,n],   l = 0..L-1

    Abar^l is taken from the Vandermonde exponent exp(l log Abar), not
    by iterating.  Returns K (dim, L) float64.
    """
    C = np.asarray(C, dtype=np.complex128)
    log_Abar, Bbar = _discretize(A, B, dt, rule)
    ell = np.arange(L, dtype=np.float64)
    V = np.exp(log_Abar[:, :, None] * ell[None, None, :])      # (dim, N, L)
    K = 2.0 * np.einsum("dn,dnl->dl", C * Bbar, V).real
    return K


def lti_conv(u, K, D=None):
    """Causal convolution y[b,d,t] = sum_{l<=t} K[d,l] u[b,d,t-l] + D[d] u[b,d,t].

    u (batch, dim, L), K (dim, L).  Uses a zero padded real FFT of
    length 2L, so the circular wrap-around never reaches indices < L.
    """
    u = _f64(u)
    K = _f64(K)
    L = u.shape[-1]
    n = 2 * L
    Uf = np.fft.rfft(u, n=n, axis=-1)
    Kf = np.fft.rfft(K, n=n, axis=-1)
    y = np.fft.irfft(Uf * Kf[None, :, :], n=n, axis=-1)[..., :L]
    if D is not None:
        y = y + _f64(D)[None, :, None] * u
    return y


# ---------------------------------------------------------------------------
# 5. S4D recurrence
# ---------------------------------------------------------------------------

def s4d_recurrence(u, A, B, C, dt, rule, D=None):
    """The S4D layer as a recurrence (reference for conv == recurrence).

        h_t = Abar h_{t-1} + Bbar u_t,  h_{-1} = 0
        y_t = 2 Re(sum_n C h_t) + D u_t

    u (batch, dim, L); A, B, C (dim, N) complex; dt (dim,).  Returns (batch, dim, L).
    """
    u = _f64(u)
    batch, dim, L = u.shape
    C = np.asarray(C, dtype=np.complex128)
    log_Abar, Bbar = _discretize(A, B, dt, rule)
    Abar = np.exp(log_Abar)
    h = np.zeros((batch, dim, Abar.shape[1]), dtype=np.complex128)
    y = np.zeros((batch, dim, L))
    for t in range(L):
        h = Abar[None] * h + Bbar[None] * u[:, :, t][:, :, None]
        y[:, :, t] = 2.0 * np.sum(C[None] * h, axis=-1).real
    if D is not None:
        y = y + _f64(D)[None, :, None] * u
    return y


# ---------------------------------------------------------------------------
# 6. S5 / LRU MIMO recurrence
# ---------------------------------------------------------------------------

def mimo_loop(u, Abar, Bbar, C, D=None):
    """S5 / LRU style MIMO diagonal complex recurrence.

    u (batch, L, H) real; Abar (N,) complex; Bbar (N, H) complex;
    C (H, N) complex; D (H,) real.

        h_t = Abar * h_{t-1} + Bbar u_t,  h_{-1} = 0
        y_t = Re(C h_t) + D * u_t          (Re, not 2 Re)

    Returns (batch, L, H) float64.
    """
    u = _f64(u)
    batch, L, H = u.shape
    Abar = np.asarray(Abar, dtype=np.complex128)
    Bbar = np.asarray(Bbar, dtype=np.complex128)
    C = np.asarray(C, dtype=np.complex128)
    h = np.zeros((batch, Abar.shape[0]), dtype=np.complex128)
    y = np.zeros((batch, L, H))
    for t in range(L):
        h = Abar[None, :] * h + u[:, t, :] @ Bbar.T
        y[:, t, :] = (h @ C.T).real
    if D is not None:
        y = y + _f64(D)[None, None, :] * u
    return y
