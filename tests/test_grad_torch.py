"""torch autograd through the drop-in ops on the Triton backend: gradients against torch autograd of
independent float64 loops (tests/reference.py), gradcheck, torch.compile of forward+backward."""
from __future__ import annotations

import pytest
import torch

from ssmc import ops
from ssmc.ops import reference

from conftest import DEVICES, assert_close


def _gen(seed):
    g = torch.Generator().manual_seed(seed)
    return lambda *s, dtype=torch.float64: torch.randn(*s, generator=g, dtype=dtype)


def _scan_args(seed, b=2, d=5, L=11, N=3, bc=("bnl", "bnl"), G=1, cplx=False, D=True, z=True, bias=True):
    r = _gen(seed)
    shapes = {"dn": (d, N), "bnl": (b, N, L), "bgnl": (b, G, N, L)}
    A = torch.complex(-r(d, N).abs() - 0.1, r(d, N)) if cplx else -r(d, N).abs() - 0.1
    BC = [torch.complex(r(*shapes[k]), r(*shapes[k])) if cplx else r(*shapes[k]) for k in bc]
    return dict(u=r(b, d, L), delta=r(b, d, L) * 0.5, A=A, B=BC[0], C=BC[1], D=r(d) if D else None,
                z=r(b, d, L) if z else None, delta_bias=r(d) if bias else None)


SCAN_CASES = {
    "selective": dict(),
    "lti_BC": dict(bc=("dn", "dn")),
    "grouped": dict(d=6, G=3, bc=("bgnl", "bgnl")),
    "grouped_B_shared_C": dict(d=6, G=2, bc=("bgnl", "bnl")),
    "bare": dict(D=False, z=False, bias=False),
    "complex": dict(cplx=True, bc=("dn", "bnl")),
}


def _check_grads(leaves, ref_leaves, tol, what):
    for k, leaf in leaves.items():
        if leaf is None:
            continue
        assert leaf.grad is not None, f"{what}: no gradient for {k}"
        assert leaf.grad.dtype == leaf.dtype, (k, leaf.grad.dtype)
        assert_close(leaf.grad, ref_leaves[k].grad, tol, f"{what} grad {k}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", sorted(SCAN_CASES))
@pytest.mark.parametrize("last", [False, True], ids=["out", "out+last"])
def test_selective_scan_autograd_matches_reference(device, case, last):
    args = _scan_args(sum(map(ord, case)), **SCAN_CASES[case])
    leaves = {k: v.detach().clone().to(device).requires_grad_() if v is not None else None for k, v in args.items()}
    refs = {k: v.clone().requires_grad_() if v is not None else None for k, v in args.items()}
    res = ops.selective_scan(**leaves, delta_softplus=True, return_last_state=last, backend="triton")
    want = reference.selective_scan(**refs, delta_softplus=True)
    r = _gen(7)
    w_out = r(*want[0].shape)
    w_last = torch.complex(r(*want[1].shape), r(*want[1].shape)) if want[1].is_complex() else r(*want[1].shape)
    loss = lambda y, h: (y * w_out.to(y.device)).sum() + ((h * w_last.to(h.device).conj()).real.sum() if last else 0)
    got = res if last else (res, None)
    loss(*got).backward()
    loss(*want).backward()
    _check_grads(leaves, refs, 1e-10, case)


SSD_CASES = {
    "mamba2": dict(D="h", z=True, bias=True, h0=True),
    "dt_limit": dict(D="h", bias=True, limit=(0.3, 0.9)),
    "D_hp_seq_idx": dict(D="hp", z=False, bias=True, h0=True, seq=True),
    "bare": dict(),
}


def _ssd_args(seed, b=2, L=10, H=4, P=3, G=2, N=3, D=None, z=False, bias=False, h0=False, seq=False, limit=None):
    r = _gen(seed)
    return dict(x=r(b, L, H, P), dt=r(b, L, H) * 0.5, A=-r(H).abs() - 0.1, B=r(b, L, G, N), C=r(b, L, G, N),
                D={"h": r(H), "hp": r(H, P)}.get(D), z=r(b, L, H, P) if z else None, dt_bias=r(H) if bias else None,
                initial_states=r(b, H, P, N) if h0 else None,
                seq_idx=torch.tensor([[0, 0, 0, 1, 1, 1, 1, 2, 2, 2], [0] * 5 + [1] * 5]) if seq else None)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", sorted(SSD_CASES))
def test_ssd_autograd_matches_reference(device, case):
    limit = SSD_CASES[case].get("limit")
    args = _ssd_args(len(case), **SSD_CASES[case])
    seq = args.pop("seq_idx")
    leaves = {k: v.detach().clone().to(device).requires_grad_() if v is not None else None for k, v in args.items()}
    refs = {k: v.clone().requires_grad_() if v is not None else None for k, v in args.items()}
    y, final = ops.ssd(**leaves, chunk_size=4, seq_idx=None if seq is None else seq.to(device), dt_softplus=True,
                       dt_limit=limit or (0.0, float("inf")), return_final_states=True, backend="triton")
    yr, fr = reference.ssd(**refs, seq_idx=seq, dt_softplus=True, dt_limit=limit)
    r = _gen(3)
    w, wf = r(*yr.shape), r(*fr.shape)
    ((y * w.to(device)).sum() + (final * wf.to(device)).sum()).backward()
    ((yr * w).sum() + (fr * wf).sum()).backward()
    _check_grads(leaves, refs, 1e-10, case)


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck_selective_scan_and_ssd(device):
    """torch.autograd.gradcheck in float64 on the Triton backend (tiny shapes: the interpreter is slow)."""
    a = _scan_args(1, b=1, d=3, L=5, N=2, bc=("bnl", "bnl"))
    names = list(a)
    f = lambda *t: ops.selective_scan(*t, delta_softplus=True, return_last_state=True, backend="triton")
    inputs = tuple(a[k].to(device).requires_grad_() for k in names)
    assert torch.autograd.gradcheck(f, inputs, fast_mode=True)
    s = _ssd_args(2, b=1, L=5, H=2, P=2, G=1, N=2, D="h", z=True, bias=True, h0=True)
    s.pop("seq_idx")
    order = ["x", "dt", "A", "B", "C", "D", "z", "dt_bias", "initial_states"]
    g = lambda x, dt, A, B, C, D, z, bias, h0: ops.ssd(x, dt, A, B, C, 4, D, z, bias, h0, dt_softplus=True,
                                                       return_final_states=True, backend="triton")
    assert torch.autograd.gradcheck(g, tuple(s[k].to(device).requires_grad_() for k in order), fast_mode=True)


@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph_forward_and_backward(device):
    a = _scan_args(4, d=4, L=9)
    s = _ssd_args(5, D="h", z=True, bias=True, h0=True)
    s.pop("seq_idx")

    def f(u, delta, x, dt):
        y, last = ops.selective_scan(u, delta, a["A"].to(device), a["B"].to(device), a["C"].to(device),
                                     a["D"].to(device), a["z"].to(device), None, True, True, backend="triton")
        o, final = ops.ssd(x, dt, s["A"].to(device), s["B"].to(device), s["C"].to(device), 16, s["D"].to(device),
                           return_final_states=True, backend="triton")
        return (y.sin().sum() + last.square().sum() + o.cos().sum() + final.sum())

    leaves = [t.to(device).requires_grad_() for t in (a["u"], a["delta"], s["x"], s["dt"])]
    eager = [t.detach().clone().requires_grad_() for t in leaves]
    f(*eager).backward()
    torch._dynamo.reset()
    loss = torch.compile(f, fullgraph=True, backend="aot_eager")(*leaves)
    loss.backward()
    for got, want in zip(leaves, eager):
        assert_close(got.grad, want.grad, 1e-10, "compiled grad")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_low_precision_grads_have_input_dtypes(device, dtype):
    """fp32/bf16 tensors: state and sums in fp32, gradients returned in each argument's dtype."""
    args = _scan_args(9, d=6, G=2, bc=("bgnl", "bnl"))
    leaves = {k: v.detach().clone().to(device=device, dtype=dtype).requires_grad_() for k, v in args.items()}
    refs = {k: v.to(dtype).double().requires_grad_() for k, v in args.items()}
    y = ops.selective_scan(**leaves, delta_softplus=True, backend="triton")
    w = _gen(1)(*y.shape)
    (y.float() * w.to(device)).sum().backward()
    (reference.selective_scan(**refs, delta_softplus=True)[0] * w).sum().backward()
    tol = 2e-5 if dtype == torch.float32 else 2e-2
    _check_grads(leaves, refs, tol, str(dtype))


def test_backward_errors_name_the_argument():
    a = _scan_args(0)
    with pytest.raises(ValueError, match="dout"):
        ops.selective_scan_backward(torch.zeros(2, 2), None, **a, delta_softplus=True)
    s = _ssd_args(0)
    with pytest.raises(ValueError, match="dout"):
        ops.ssd_backward(None, None, **s)
    with pytest.raises(ValueError, match="B"):
        ops.selective_scan_backward(torch.zeros_like(a["u"]), None, **{**a, "B": torch.zeros(3)})


# --- any compiled spec: Compiled.__call__ on tensors that require grad --------------------------

LIBRARY = ["mamba1", "mamba2", "s4d_zoh", "s4d_bilinear", "s5", "lru"]


def _library_inputs(name, seed, **sizes):
    import numpy as np

    import ssmc
    from ssmc import library
    from ssmc.ir.inits import random_inputs
    g = ssmc.compile(name, backend="numpy").graph
    x = random_inputs(g, dict(library.DEFAULT_SIZES[name], **sizes), seed=seed)
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in x.items()}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", LIBRARY)
def test_compiled_spec_autograd(device, name):
    """Every library entry, compiled for Triton, is differentiable through torch autograd (ssmc::compiled),
    and agrees with the NumPy backward (itself checked against torch loops in test_grad.py)."""
    import ssmc
    x = _library_inputs(name, 11, L=9)
    leaves = {k: v.clone().to(device).requires_grad_() for k, v in x.items()}
    res = ssmc.compile(name, backend="triton")(**leaves)
    assert all(r.grad_fn is not None for r in res.values())
    r = _gen(2)
    cts = {k: (torch.complex(r(*v.shape), r(*v.shape)) if v.is_complex() else r(*v.shape)) for k, v in res.items()}
    sum((v * cts[k].to(device).conj()).real.sum() for k, v in res.items()).backward()
    want = ssmc.compile(name, backend="numpy").grad({k: v.numpy() for k, v in x.items()},
                                               {k: v.numpy() for k, v in cts.items()})
    for k, leaf in leaves.items():
        assert leaf.grad.dtype == leaf.dtype
        assert_close(leaf.grad, want[f"grad_{k}"], 1e-9, f"{name} grad {k}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["mamba2", "s4d_zoh", "lru"])
def test_gradcheck_compiled_specs(device, name):
    """gradcheck through ssmc::compiled, float64, Triton: initial/final states, complex inputs, MIMO."""
    import ssmc
    fn = ssmc.compile(name, backend="triton")
    x = _library_inputs(name, 5, batch=1, L=4, dim=2, H=2, P=2, G=1, N=2)
    names = list(x)
    f = lambda *a: tuple(fn(**dict(zip(names, a))).values())
    assert torch.autograd.gradcheck(f, tuple(x[k].to(device).requires_grad_() for k in names), fast_mode=True)


@pytest.mark.parametrize("backend", ["triton", "numpy"])
@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph_compiled_spec_backward(device, backend):
    """Traced before any eager call: the op's key exists from ssmc.compile on."""
    import ssmc
    fn = ssmc.compile("mamba1", backend=backend)
    x = {k: v.to(device) for k, v in _library_inputs("mamba1", 3, L=9).items()}

    def loss(**t):
        res = fn(**t)
        return res["out"].sin().sum() + res["last_state"].square().sum()

    torch._dynamo.reset()
    leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
    torch.compile(loss, fullgraph=True, backend="aot_eager")(**leaves).backward()
    eager = {k: v.clone().requires_grad_() for k, v in x.items()}
    loss(**eager).backward()
    for k in x:
        assert_close(leaves[k].grad, eager[k].grad, 1e-10, k)


def test_compiled_spec_autograd_errors_name_the_argument():
    import ssmc
    fn = ssmc.compile("mamba1", backend="triton")
    x = {k: v.requires_grad_() for k, v in _library_inputs("mamba1", 1, L=5).items()}
    with pytest.raises(ValueError, match="delta"):
        fn(**{**x, "delta": torch.zeros(2, 3, requires_grad=True)})
    with pytest.raises(TypeError, match="A_log"):
        fn(**{k: v for k, v in x.items() if k != "A_log"})
