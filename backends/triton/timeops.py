"""Time operators on the Triton backend: run on the device between the kernels of a multi-stage
graph (`ssmc.ir.stages`), on canonical 5-axis torch tensors, with the NumPy interpreter's meaning."""
from __future__ import annotations


def lag(x, k: int, L: int, seq=None):
    """x_{t-k} along time (axis 1), 0 where t-k falls outside [0, L) or, given seq_idx `seq`, lies in
    another sequence (see `ssmc.backends.numpy_interp.lag`)."""
    import torch  # (the Triton backend runs on torch tensors)
    shape = list(torch.broadcast_shapes(x.shape, seq.shape if seq is not None else (1,) * 5))
    shape[1] = L
    x = x.expand(shape)
    out = x.new_zeros(shape)
    lo, hi = max(k, 0), min(L, L + k)  # the steps t whose t - k lies in [0, L)
    if lo < hi:
        out[:, lo:hi] = x[:, lo - k:hi - k]
        if seq is not None:
            seq = seq.expand((shape[0], L) + (1,) * 3)
            same = torch.zeros_like(seq, dtype=torch.bool)
            same[:, lo:hi] = seq[:, lo:hi] == seq[:, lo - k:hi - k]
            out = torch.where(same, out, out.new_zeros(()))
    return out


def pool(x, mean: bool, L: int):
    """The sum (or mean) over time (axis 1) of a canonical value."""
    out = x.sum(dim=1, keepdim=True)
    return out / L if mean else out


def permute(x, index, inverse: bool = False):
    """x along an order per (batch, channel) (see `ssmc.backends.numpy_interp.permute`)."""
    import torch  # (the Triton backend runs on torch tensors)
    shape = list(torch.broadcast_shapes(x.shape, index.shape[:1] + (1,) + index.shape[2:]))
    shape[1] = index.shape[1]
    x = x.expand(shape)
    idx = index.expand(shape[:3] + [1, 1]).expand(shape)
    if not inverse:
        return torch.gather(x, 1, idx)
    return x.new_zeros(shape).scatter(1, idx, x)


def causal_conv(x, w, L: int):
    """Σ_{k≤t} w_k x_{t-k} along time (axis 1), by FFT over 2L points (no wrap-around)."""
    import torch  # (the Triton backend runs on torch tensors)
    shape = list(torch.broadcast_shapes(x.shape, w.shape))
    shape[1] = L
    x, w = x.expand(shape), w.expand(shape)  # a time-invariant one: the same at every step
    n = 2 * L
    y = torch.fft.irfft(torch.fft.rfft(x, n=n, dim=1) * torch.fft.rfft(w, n=n, dim=1), n=n, dim=1)
    return y[:, :L]
