"""ssmc.ops: drop-in `selective_scan` and `ssd` with mamba_ssm's signatures.

    python examples/drop_in_ops.py

    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn      # before
    from ssmc.ops import selective_scan as selective_scan_fn                  # after

    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined   # before
    from ssmc.ops import ssd as mamba_chunk_scan_combined                     # after

Each call builds a Spec from the arguments given (which of B/C vary in time, D, z, bias, ...),
compiles it once (cached) and runs it: backend="auto" picks Triton for CUDA tensors and the
NumPy reference otherwise; here both are forced and compared.
"""
import os
import sys

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # Triton's CPU interpreter; set before any kernel exists

from ssmc.ops import selective_scan, ssd

TOL = 1e-5
device = "cuda" if torch.cuda.is_available() else "cpu"
g = torch.Generator().manual_seed(0)


def randn(*shape):
    return torch.randn(*shape, generator=g).to(device)


def rel(a, b):
    a, b = a.double().cpu(), b.double().cpu()
    return float((a - b).norm() / b.norm())


ok = True

# --- Mamba-1: selective_scan_fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
batch, dim, L, N = 2, 8, 24, 4
u, delta, z = randn(batch, dim, L), randn(batch, dim, L), randn(batch, dim, L)
A = -torch.rand(dim, N, generator=g).to(device) * 4 - 0.5
B, C = randn(batch, N, L), randn(batch, N, L)
D, delta_bias = randn(dim), 0.1 * randn(dim)
res = {be: selective_scan(u, delta, A, B, C, D, z=z, delta_bias=delta_bias, delta_softplus=True,
                          return_last_state=True, backend=be) for be in ("numpy", "triton")}
(out_np, last_np), (out_tr, last_tr) = res["numpy"], res["triton"]
print(f"selective_scan: out {tuple(out_tr.shape)} {out_tr.dtype}, last_state {tuple(last_tr.shape)}")
e = max(rel(out_tr, out_np), rel(last_tr, last_np))
ok &= e <= TOL
print(f"  NumPy vs Triton: {e:.1e}")

# Time-invariant B, C (dim, N) and fp16 inputs: the output has u's dtype, state math stays fp32.
B_lti, C_lti = randn(dim, N), randn(dim, N)
out16 = selective_scan(u.half(), delta.half(), A, B_lti, C_lti, D, delta_softplus=True, backend="triton")
ref16 = selective_scan(u.half().float(), delta.half().float(), A, B_lti, C_lti, D, delta_softplus=True,
                       backend="numpy")
e16 = rel(out16.float(), ref16)
ok &= e16 <= 2e-3  # the output is rounded to fp16 (eps 9.8e-4)
print(f"  fp16 inputs, time-invariant B/C: out {out16.dtype}, vs NumPy on the same values: {e16:.1e}")

# --- Mamba-2: mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, seq_idx, ...)
batch, L, H, P, G, N = 2, 24, 4, 3, 2, 8
x, z, dt = randn(batch, L, H, P), randn(batch, L, H, P), randn(batch, L, H)
A = -torch.rand(H, generator=g).to(device) - 0.5
B, C = randn(batch, L, G, N), randn(batch, L, G, N)
D, dt_bias, h0 = randn(H), 0.1 * randn(H), randn(batch, H, P, N)
seq_idx = torch.tensor([[0] * 10 + [1] * 14, [0] * 24], device=device, dtype=torch.int32)  # two packed sequences
res = {be: ssd(x, dt, A, B, C, chunk_size=16, D=D, z=z, dt_bias=dt_bias, initial_states=h0, seq_idx=seq_idx,
               dt_softplus=True, return_final_states=True, backend=be) for be in ("numpy", "triton")}
(y_np, hT_np), (y_tr, hT_tr) = res["numpy"], res["triton"]
print(f"ssd: out {tuple(y_tr.shape)} {y_tr.dtype}, final_states {tuple(hT_tr.shape)}")
e = max(rel(y_tr, y_np), rel(hT_tr, hT_np))
ok &= e <= TOL
print(f"  NumPy vs Triton: {e:.1e}")

print(f"\n{'agree' if ok else 'DISAGREE'}")
sys.exit(0 if ok else 1)
