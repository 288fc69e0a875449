"""Packed variable-length batches (`cu_seqlens`, as mamba_ssm and flash-linear-attention take them):
sequence s is positions cu_seqlens[s] … cu_seqlens[s+1]-1 of a batch of one.

The states at the sequences' ends (`return_varlen_states`) come from one run over the sequences as a
batch, each left-padded to the longest: a padded step has input 0 and a finite Δ, so the state, which
starts at 0, stays exactly 0 until the sequence begins, whatever the decay; the final states of that
batch are the sequences' own.  The outputs come back to the packed positions by one gather.  (A batch
with one very long and many short sequences pads a lot: the price of reusing the fused kernels.)
"""
from __future__ import annotations

import numpy as np

from ssmc.runtime.arrays import is_torch

from .arguments import shape


def check_cu_seqlens(cu_seqlens, total: int, batch: int) -> np.ndarray:
    """cu_seqlens as a host int64 array: 1-D, integer, 0 first, non-decreasing, `total` last, with a
    batch of one (one packed row)."""
    if is_torch(cu_seqlens):
        if cu_seqlens.is_floating_point() or cu_seqlens.is_complex():
            raise TypeError(f"cu_seqlens: expected an integer tensor, got {cu_seqlens.dtype}")
        host = cu_seqlens.detach().cpu().numpy()  # (a sync: the padding's shape depends on it)
    else:
        host = np.asarray(cu_seqlens)
        if host.dtype.kind not in "iu":
            raise TypeError(f"cu_seqlens: expected an integer array, got {host.dtype}")
    if host.ndim != 1 or host.size < 2:
        raise ValueError(f"cu_seqlens: expected shape (num_seqs + 1,) with num_seqs >= 1, got {host.shape}")
    if host[0] != 0 or host[-1] != total or (np.diff(host) < 0).any():
        raise ValueError(f"cu_seqlens: expected offsets from 0 to the packed length {total}, non-decreasing, "
                         f"got {host.tolist()[:16]}")
    if batch != 1:
        raise ValueError(f"cu_seqlens: the sequences are packed in a batch of one, got batch {batch}")
    return host.astype(np.int64)


def seq_idx_of(cu: np.ndarray, like):
    """The (1, L) int32 sequence index of each position (ssd's seq_idx), on `like`'s device."""
    idx = np.repeat(np.arange(cu.size - 1, dtype=np.int32), np.diff(cu))[None]
    if is_torch(like):
        import torch  # (torch tensors are in hand)
        return torch.as_tensor(idx, device=like.device)
    return idx


class Padding:
    """The gather from packed positions (axis `time` of a batch of one) to a left-padded (num_seqs, max_len)
    batch, and back."""

    def __init__(self, cu: np.ndarray):
        lengths = np.diff(cu)
        self.seqs, self.width = lengths.size, int(max(lengths.max(), 1))
        k = np.arange(self.width)
        offset = k[None, :] - (self.width - lengths)[:, None]  # position inside the sequence; < 0: padding
        self.valid = offset >= 0  # (seqs, width)
        self.source = np.where(self.valid, cu[:-1, None] + offset, 0).reshape(-1)  # packed position read
        # where each packed position lands in the flattened padded batch
        seq = np.repeat(np.arange(self.seqs), lengths)
        self.target = seq * self.width + (self.width - lengths[seq]) + (np.arange(cu[-1]) - cu[:-1][seq])

    def pad(self, x, time: int):
        """x (1, …) with time at axis `time` (counted without the batch axis) -> (seqs, …, width, …) with
        the time axis width long, padded positions 0."""
        if x is None:
            return None
        x0 = x[0]
        valid = self.valid.reshape(-1)
        if is_torch(x):
            import torch  # (torch tensors are in hand)
            src = torch.as_tensor(self.source, device=x.device)
            g = x0.index_select(time, src)
            mask = torch.as_tensor(valid, device=x.device).reshape([-1 if a == time else 1 for a in range(x0.dim())])
            g = torch.where(mask, g, torch.zeros((), dtype=g.dtype, device=g.device))
        else:
            g = np.take(x0, self.source, axis=time)
            g = np.where(valid.reshape([-1 if a == time else 1 for a in range(x0.ndim)]), g, 0).astype(x0.dtype)
        g = g.reshape(shape(g)[:time] + (self.seqs, self.width) + shape(g)[time + 1:])
        return g.movedim(time, 0) if is_torch(g) else np.moveaxis(g, time, 0)

    def unpad(self, y, time: int):
        """The inverse for an output: (seqs, …, width, …) -> (1, …) at the packed positions."""
        y = y.movedim(0, time) if is_torch(y) else np.moveaxis(y, 0, time)
        flat = y.reshape(shape(y)[:time] + (self.seqs * self.width,) + shape(y)[time + 2:])
        if is_torch(flat):
            import torch  # (torch tensors are in hand)
            return flat.index_select(time, torch.as_tensor(self.target, device=flat.device))[None]
        return np.take(flat, self.target, axis=time)[None]
