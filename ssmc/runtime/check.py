"""The differential check: a compiled declaration on the NumPy reference (float64) and on Triton, on the
same fresh random inputs, with Triton's outputs poisoned with NaN so that an element the kernel fails to
write shows.  `ssmc check` and `ssmc demo` print its rows.
"""
from __future__ import annotations

import time

import numpy as np

from ssmc.ir.inits import random_inputs

TOL = 1e-5  # relative error allowed between the fp32 Triton kernels and the float64 reference


def rel_error(a, b) -> float:
    """‖a − b‖ / ‖b‖ (‖a − b‖ where b is 0)."""
    a, b = np.asarray(a), np.asarray(b)
    den = np.linalg.norm(b)
    num = np.linalg.norm(a.astype(b.dtype) - b)
    return float(num / den) if den > 0 else float(num)


def differential(ref, tri, sizes: dict, seed, device, calls: int = 1):
    """Run compiled NumPy (float64) and Triton on the same random inputs, Triton's outputs NaN-poisoned.

    Returns ({output: (relative error, number of NaNs)}, {timing name: seconds}); with calls=2 the
    Triton timing of the second call is the run without code generation.
    """
    import torch  # (the Triton backend runs on torch tensors)

    x = random_inputs(ref.graph, sizes, seed)
    t0 = time.perf_counter()
    r = ref(**x)
    t_ref = time.perf_counter() - t0
    tensors = {}
    for k, v in x.items():
        t = torch.from_numpy(np.ascontiguousarray(v))
        if t.is_complex():
            t = t.to(torch.complex64)
        elif t.is_floating_point():
            t = t.to(torch.float32)
        tensors[k] = t.to(device)
    times = []
    for _ in range(calls):  # the first call generates and loads the kernel
        poisoned = {}
        for k, v in r.items():  # every element the kernel fails to write stays NaN
            cplx = np.iscomplexobj(v)
            poisoned[k] = torch.full(v.shape, complex("nan+nanj") if cplx else float("nan"),
                                     dtype=torch.complex64 if cplx else torch.float32, device=device)
        t0 = time.perf_counter()
        out = tri(**tensors, **poisoned)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    rows = {}
    for k, want in r.items():
        got = out[k].detach().cpu()
        got = got.to(torch.complex128 if got.is_complex() else torch.float64).numpy()
        nans = int(np.isnan(got).sum()) + int(np.isnan(want).sum())
        rows[k] = (float("nan") if nans else rel_error(got, want), nans)
    return rows, dict(numpy=t_ref, triton_first=times[0], triton=times[-1])


def agree(rows: dict) -> bool:
    """Do all rows of `differential` agree within TOL, with no NaN?"""
    return all(nans == 0 and err <= TOL for err, nans in rows.values())
