"""torch integration: the drop-in ops are torch custom ops that torch.compile and torch.export trace."""
from __future__ import annotations

import pytest
import torch

from ssmc import ops

from conftest import DEVICES, assert_close


def _scan_args(device, b=2, d=5, L=9, N=4):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g).to(device)
    return (r(b, d, L), r(b, d, L).abs() * 0.3, -r(d, N).abs(), r(b, N, L), r(b, N, L), r(d), r(b, d, L))


def _ssd_args(device, b=2, L=9, H=4, P=3, G=2, N=4):
    g = torch.Generator().manual_seed(1)
    r = lambda *s: torch.randn(*s, generator=g).to(device)
    return (r(b, L, H, P), r(b, L, H).abs() * 0.3, -r(H).abs(), r(b, L, G, N), r(b, L, G, N))


@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph_traces_every_op(device):
    u, delta, A, B, C, D, z = _scan_args(device)
    x, dt, Ah, Bs, Cs = _ssd_args(device)
    state = torch.randn(2, 4, 3, 4, device=device)

    def f(u, delta, x, dt, state):
        y, last = ops.selective_scan(u, delta, A, B, C, D, z, None, True, True, backend="triton")
        o, final = ops.ssd(x, dt, Ah, Bs, Cs, 16, return_final_states=True, backend="triton")
        s = ops.selective_state_update(state, x[:, 0], dt[:, 0, :, None].expand(-1, -1, 3),
                                       Ah[:, None, None].expand(4, 3, 4), Bs[:, 0], Cs[:, 0], dt_softplus=True,
                                       backend="triton")
        return y * 2, last.sum(), o, final, s

    want = f(u, delta, x, dt, state.clone())
    got = torch.compile(f, fullgraph=True, backend="aot_eager")(u, delta, x, dt, state.clone())
    for a, b in zip(got, want):
        assert_close(a.cpu(), b.cpu(), 1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_export_keeps_ops_whole(device):
    u, delta, A, B, C, D, z = _scan_args(device)

    class Layer(torch.nn.Module):
        def forward(self, u, delta):
            return ops.selective_scan(u, delta, A, B, C, D, z, delta_softplus=True, backend="triton")

    ep = torch.export.export(Layer(), (u, delta))
    targets = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert any("ssmc.selective_scan" in t for t in targets), targets
    assert_close(ep.module()(u, delta).cpu(), Layer()(u, delta).cpu(), 1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_fake_implementations_match(device):
    from ssmc.ops import torch_ops  # noqa: F401
    u, delta, A, B, C, D, z = _scan_args(device)
    torch.library.opcheck(torch.ops.ssmc.selective_scan, (u, delta, A, B, C, D, z, None, True, True, "triton"),
                          test_utils=("test_schema", "test_faketensor"))
    x, dt, Ah, Bs, Cs = _ssd_args(device)
    torch.library.opcheck(torch.ops.ssmc.ssd, (x, dt, Ah, Bs, Cs, 16, None, None, None, None, None, False, 0.0,
                                               float("inf"), True, "triton"),
                          test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("device", DEVICES)
def test_decode_step_backward_is_refused_not_wrong(device):
    """selective_scan and ssd have autograd (tests/test_grad_torch.py); the in-place decode step has none."""
    x, dt, Ah, Bs, Cs = _ssd_args(device)
    x.requires_grad_(True)
    state = torch.randn(2, 4, 3, 4, device=device)
    out = ops.selective_state_update(state, x[:, 0], dt[:, 0, :, None].expand(-1, -1, 3),
                                     Ah[:, None, None].expand(4, 3, 4), Bs[:, 0], Cs[:, 0], backend="triton")
    with pytest.raises(RuntimeError, match="autograd"):
        out.sum().backward()


def test_compile_default_backend_on_cpu():
    """torch.compile(fullgraph=True) with its default backend (Inductor) on CPU tensors: the CPU path is a
    custom op too, so Dynamo never traces into ssmc."""
    if torch.cuda.is_available():
        pytest.skip("CPU tensors on the Triton backend need the interpreter, off where CUDA is")
    u, delta, A, B, C, D, z = _scan_args("cpu")
    f = lambda u, delta: ops.selective_scan(u, delta, A, B, C, D, z, delta_softplus=True).square().sum()  # noqa: E731
    leaves = [t.clone().requires_grad_() for t in (u, delta)]
    eager = [t.clone().requires_grad_() for t in (u, delta)]
    torch._dynamo.reset()
    got = torch.compile(f, fullgraph=True)(*leaves)
    want = f(*eager)
    got.backward()
    want.backward()
    assert_close(got.detach(), want.detach(), 1e-6)
    for a, b in zip(leaves, eager):
        assert_close(a.grad, b.grad, 1e-6)
