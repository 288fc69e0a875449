"""The scan-order families of `ssmc.library` (Vim, VMamba SS2D, MSVMamba, Hydra, bidirectional S4D
and S5, Point Cloud Mamba, RSMamba, S5 with episode resets, packed variable-length Mamba-2): every
entry's `run` on the NumPy reference and on Triton (CPU interpreter; CUDA under -m gpu), each against
a plain float64 loop written here from the papers' definitions (permute, scan, unpermute; the
complex recurrence run forwards and on the reversed sequence; one loop per packed segment), not
from the IR.  Outputs are NaN-poisoned where `run` takes an output buffer.
"""
from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest
import torch

import ssmc
from ssmc import cli, library
from ssmc.ir.inits import random_inputs
from ssmc.library import FAMILIES, OrderFamily, family
from ssmc.ops.tied_bidirectional import tied_compiled
from ssmc.runtime.arrays import as_torch

from conftest import DEVICES, assert_close, seed_of
from reference_forms import selective_scan_loop, silu, ssd_loop

GRIDS = [(5, 7), (1, 6), (4, 4)]
LENGTHS = [1, 7, 13]
BATCH, DIM, N = 2, 3, 3


# --- plain references -------------------------------------------------------------------------

def _order_loop(x, orders, merge="sum", gate=None):
    """Each order on its own: permute the sequence, Mamba-1's loop, unpermute; then merge and gate by
    silu(z).  A parameter without its order axis is shared by every order."""
    K = len(orders)

    def pick(name, k, rank):  # order k's copy of a parameter, or the shared one
        v = x.get(name)
        return v if v is None or v.ndim == rank else v[:, k] if name in ("delta", "B", "C") else v[k]

    ys = []
    for k, o in enumerate(orders):
        y = selective_scan_loop(x["u"][..., o], pick("delta", k, 3)[..., o], pick("A", k, 2),
                                pick("B", k, 3)[..., o], pick("C", k, 3)[..., o], D=pick("D", k, 1),
                                delta_bias=pick("delta_bias", k, 1), delta_softplus=True)
        ys.append(y[..., np.argsort(o)])
    total = sum(ys) / K if merge == "mean" else sum(gate[:, k] * y for k, y in enumerate(ys)) if gate is not None \
        else sum(ys)
    return total * silu(x["z"]) if x.get("z") is not None else total


def _grid_orders(H, W):
    """row, col, row_rev, col_rev of an H×W grid, from its coordinates."""
    row = [i * W + j for i in range(H) for j in range(W)]
    col = [i * W + j for j in range(W) for i in range(H)]
    return [np.array(o) for o in (row, col, row[::-1], col[::-1])]


def _multiscale_loop(x, H, W):
    """Branch 0 scans the full grid by rows; branches 1-3 scan the cells (2a, 2b) in the col, row_rev,
    col_rev orders of the coarse grid; full-grid cell (i, j) adds coarse cell (i // 2, j // 2)."""
    Hc, Wc = (H + 1) // 2, (W + 1) // 2
    z = x.pop("z")
    full = _order_loop({k: v[:1] if k in ("A", "D", "delta_bias") else v[:, :1] if k in ("delta", "B", "C") else v
                        for k, v in x.items()}, _grid_orders(H, W)[:1])
    cells = np.array([2 * a * W + 2 * b for a in range(Hc) for b in range(Wc)])  # coarse cell -> full position
    coarse = {k: v[1:] if k in ("A", "D", "delta_bias") else v[:, 1:][..., cells] if k in ("delta", "B", "C")
              else v[..., cells] for k, v in x.items()}
    yc = _order_loop(coarse, _grid_orders(Hc, Wc)[1:])
    up = np.array([(i // 2) * Wc + j // 2 for i in range(H) for j in range(W)])
    x["z"] = z
    return (full + yc[..., up]) * silu(z)


def _hydra_loop(x):
    """Forward SSD loop, and the SSD loop of the flipped sequence flipped back; each shifted one step
    along its direction; plus (D + diag) x."""
    fwd = ssd_loop(x["x"], x["dt"][:, :, 0], x["A"], x["B"][:, :, 0], x["C"][:, :, 0], dt_bias=x["dt_bias"],
                   dt_softplus=True)
    flip = lambda v: v[:, ::-1]  # noqa: E731
    bwd = flip(ssd_loop(flip(x["x"]), flip(x["dt"][:, :, 1]), x["A"], flip(x["B"][:, :, 1]), flip(x["C"][:, :, 1]),
                        dt_bias=x["dt_bias"], dt_softplus=True))
    y = np.zeros_like(fwd)
    y[:, 1:] += fwd[:, :-1]
    y[:, :-1] += bwd[:, 1:]
    return y + (x["D"][None, None, :, None] + x["diag"][..., None]) * x["x"]


def _s4d_discrete(x):
    A = -np.exp(x["A_log_re"]) + 1j * x["A_im"]
    A_bar = np.exp(np.exp(x["log_dt"])[..., None] * A if A.ndim == 2 else np.exp(x["log_dt"]) * A)
    return A_bar, (A_bar - 1) / A


def _s4d_bidirectional_loop(x):
    """h_t = Ā h_{t-1} + B̄ u_t per channel, y = 2 Re(C h): forwards with C[0], on the reversed sequence
    with C[1] (reversed back), plus D u."""
    A_bar, scale = _s4d_discrete(x)
    B_bar = scale * x["B"]

    def run(u, C):
        h, y = np.zeros(u.shape[:2] + (C.shape[-1],), complex), np.zeros(u.shape)
        for t in range(u.shape[-1]):
            h = A_bar * h + B_bar * u[..., t, None]
            y[..., t] = 2 * (C * h).sum(-1).real
        return y
    u = x["u"]
    return run(u, x["C"][0]) + run(u[..., ::-1], x["C"][1])[..., ::-1] + x["D"][:, None] * u


def _s5_loop(u, x, C, resets=()):
    """S5's MIMO recurrence h_t = Λ̄ h_{t-1} + B̄ u_t (h zeroed at the steps in `resets`), y = Re(C h)."""
    A_bar, scale = _s4d_discrete(x)
    B_bar = scale[:, None] * x["B"]
    h, y = np.zeros((u.shape[0], A_bar.shape[0]), complex), np.zeros(u.shape)
    for t in range(u.shape[1]):
        h = (0 if t in resets else A_bar) * h + u[:, t] @ B_bar.T
        y[:, t] = (h @ C.T).real
    return y


def _s5_bidirectional_loop(x):
    u = x["u"]
    return _s5_loop(u, x, x["C"][0]) + _s5_loop(u[:, ::-1], x, x["C"][1])[:, ::-1] + x["D"] * u


# --- inputs and cases -------------------------------------------------------------------------

def _scan_inputs(rng, L, K, tied=()):
    """Inputs of a K-order selective scan; a tied parameter has no K axis."""
    k = lambda name: () if name in tied else (K,)  # noqa: E731
    return dict(u=rng.standard_normal((BATCH, DIM, L)), delta=rng.uniform(-3, 0.5, (BATCH,) + k("delta") + (DIM, L)),
                A=-rng.uniform(0.5, 3, k("A") + (DIM, N)), B=rng.standard_normal((BATCH,) + k("B") + (N, L)),
                C=rng.standard_normal((BATCH,) + k("C") + (N, L)), D=rng.standard_normal(k("D") + (DIM,)),
                z=rng.standard_normal((BATCH, DIM, L)), delta_bias=0.1 * rng.standard_normal(k("delta_bias") + (DIM,)))


def _lti_inputs(rng, name, sizes):
    """A library Spec's inputs (ssmc's initializers), C drawn again for the backward direction."""
    x = random_inputs(ssmc.compile(library.get(name), backend="numpy").graph, sizes, seed=seed_of(rng))
    C2 = (rng.standard_normal(x["C"].shape) + 1j * rng.standard_normal(x["C"].shape)) / np.sqrt(2)
    x["C"] = np.stack([x["C"], C2])
    return x


def _segments(rng, L):
    """(batch, L) seq_idx: each row cut at its own random places (sequence k has index k)."""
    rows = []
    for _ in range(BATCH):
        cuts = np.sort(rng.choice(np.arange(1, L), size=min(2, L - 1), replace=False)) if L > 1 else []
        rows.append(np.searchsorted(cuts, np.arange(L), side="right"))
    return np.stack(rows).astype(np.int64)


def _case_vim(rng, L):
    x = _scan_inputs(rng, L, 2)
    return x, _order_loop(x, [np.arange(L), np.arange(L)[::-1]], merge="mean")


def _case_vmamba(rng, grid):
    x = _scan_inputs(rng, grid[0] * grid[1], 4)
    return dict(x, grid=grid), _order_loop(x, _grid_orders(*grid))


def _case_msvmamba(rng, grid):
    x = _scan_inputs(rng, grid[0] * grid[1], 4)
    return dict(x, grid=grid), _multiscale_loop(dict(x), *grid)


def _case_hydra(rng, L):
    H, P, G = 2, 2, 1
    x = dict(x=rng.standard_normal((BATCH, L, H, P)), dt=rng.uniform(-3, 0.5, (BATCH, L, 2, H)),
             A=-rng.uniform(0.5, 2, H), B=rng.standard_normal((BATCH, L, 2, G, N)),
             C=rng.standard_normal((BATCH, L, 2, G, N)),
             D=rng.standard_normal(H), diag=rng.standard_normal((BATCH, L, H)), dt_bias=0.1 * rng.standard_normal(H))
    return x, _hydra_loop(x)


def _case_s4d(rng, L):
    x = _lti_inputs(rng, "s4d_zoh", dict(batch=BATCH, dim=DIM, N=N, L=L))
    return x, _s4d_bidirectional_loop(x)


def _case_s5(rng, L):
    x = _lti_inputs(rng, "s5", dict(batch=BATCH, H=DIM, N=N, L=L))
    return x, _s5_bidirectional_loop(x)


def _case_pointcloud(rng, L):
    orders = [rng.permutation(L) for _ in range(3)]  # serializations, as the caller's index inputs
    x = _scan_inputs(rng, L, 3)
    return dict(x, orders=orders), _order_loop(x, orders)


def _case_rsmamba(rng, L):
    seed = int(rng.integers(1000))
    x = _scan_inputs(rng, L, 3, tied=("A", "D", "delta_bias"))
    weights = rng.dirichlet(np.ones(3), size=BATCH)  # RSMamba's softmax path weights, per (batch, path)
    gate = np.broadcast_to(weights[:, :, None, None], (BATCH, 3, DIM, L)).copy()
    orders = [np.arange(L), np.arange(L)[::-1], np.random.default_rng(seed).permutation(L)]
    return dict(x, gate=gate, seed=seed), _order_loop(x, orders, gate=gate)


def _case_s5_episodes(rng, L):
    x = random_inputs(ssmc.compile(library.get("s5"), backend="numpy").graph, dict(batch=BATCH, H=DIM, N=N, L=L),
                      seed=seed_of(rng))
    seq_idx = _segments(rng, L)
    want = np.stack([_s5_loop(x["u"][b:b + 1], x, x["C"], resets=set(np.flatnonzero(np.diff(seq_idx[b])) + 1))[0]
                     for b in range(BATCH)]) + x["D"] * x["u"]
    return dict(x, seq_idx=seq_idx), want


def _case_mamba2_varlen(rng, L):
    H, P, G = 2, 2, 1
    x = dict(x=rng.standard_normal((BATCH, L, H, P)), dt=rng.uniform(-3, 0.5, (BATCH, L, H)), A=-rng.uniform(0.5, 2, H),
             B=rng.standard_normal((BATCH, L, G, N)), C=rng.standard_normal((BATCH, L, G, N)), D=rng.standard_normal(H),
             z=rng.standard_normal((BATCH, L, H, P)), dt_bias=0.1 * rng.standard_normal(H))
    seq_idx = _segments(rng, L)
    rows = []
    for b in range(BATCH):  # every packed sequence on its own, from a zero state
        pieces = []
        for s in np.unique(seq_idx[b]):
            at = seq_idx[b] == s
            piece = {k: v[b:b + 1, at] if v.ndim > 1 else v for k, v in x.items()}
            pieces.append(ssd_loop(**piece, dt_softplus=True)[0])
        rows.append(np.concatenate(pieces))
    return dict(x, seq_idx=seq_idx), np.stack(rows)


CASES = {"vim": (_case_vim, LENGTHS), "vmamba_ss2d": (_case_vmamba, GRIDS), "msvmamba": (_case_msvmamba, GRIDS),
         "hydra": (_case_hydra, LENGTHS), "s4d_bidirectional": (_case_s4d, LENGTHS),
         "s5_bidirectional": (_case_s5, LENGTHS), "pointcloud_mamba": (_case_pointcloud, LENGTHS),
         "rsmamba": (_case_rsmamba, LENGTHS), "s5_episodes": (_case_s5_episodes, [7, 13]),
         "mamba2_varlen": (_case_mamba2_varlen, [7, 13])}
PARAMS = [pytest.param(name, size, id=f"{name}-{size}") for name, (_, sizes) in CASES.items() for size in sizes]


def _takes_out(f: OrderFamily) -> bool:
    return "out" in inspect.signature(f.run).parameters


# --- tests ------------------------------------------------------------------------------------

def test_catalogue_lists_every_family_as_a_frozen_entry():
    assert list(FAMILIES) == ["vim", "vmamba_ss2d", "msvmamba", "hydra", "s4d_bidirectional", "s5_bidirectional",
                              "pointcloud_mamba", "rsmamba", "s5_episodes", "mamba2_varlen"]
    assert set(CASES) == set(FAMILIES)
    for name, f in FAMILIES.items():
        assert isinstance(f, OrderFamily) and f.name == name and family(name) is f
        assert all(getattr(f, k) for k in ("description", "orders", "merge", "tying", "op")) and callable(f.run)
        with pytest.raises(dataclasses.FrozenInstanceError):
            f.merge = "max"
    with pytest.raises(ValueError, match="no scan-order family 'ss2d'; families are"):
        family("ss2d")
    assert isinstance(library.get("s5"), ssmc.Spec)  # the Spec entries keep their accessor
    with pytest.raises(ValueError, match="no library entry 'vim'"):
        library.get("vim")


@pytest.mark.parametrize("name, size", PARAMS)
def test_numpy_matches_loop(name, size, rng):
    make, _ = CASES[name]
    x, want = make(rng, size)
    f = family(name)
    out = np.full(want.shape, np.nan) if _takes_out(f) else None
    got = f.run(**x, **({"out": out} if out is not None else {}), backend="numpy")
    assert out is None or got is out
    assert got.shape == want.shape
    assert_close(got, want, 1e-10, f"{name} {size} numpy")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name, size", PARAMS)
def test_triton_matches_loop(name, size, device, rng):
    make, _ = CASES[name]
    x, want = make(rng, size)
    f = family(name)
    out = torch.full(want.shape, float("nan"), device=device) if _takes_out(f) else None
    got = f.run(**as_torch(x, device), **({"out": out} if out is not None else {}), backend="triton")
    assert out is None or got is out
    assert isinstance(got, torch.Tensor) and got.device.type == device and got.dtype == torch.float32
    assert_close(got, want, 1e-5, f"{name} {size} on {device} vs loop")
    assert_close(got, f.run(**x, backend="numpy"), 1e-5, f"{name} {size} on {device} vs NumPy")


def test_s4d_bidirectional_is_one_kernel():
    """Both directions of bidirectional S4D are one scan of one generated kernel, launched once."""
    fn = tied_compiled(library.get("s4d_zoh"), "triton")
    assert len(fn.graph.ids("scan")) == 1 and "order=index[t]" in fn.graph.text()
    assert fn.source.split("def launch")[1].count("[grid](") == 1


@pytest.mark.parametrize("name", ["s4d_bidirectional", "s5_bidirectional"])
def test_shared_C_is_C_given_twice(name, rng):
    x, _ = CASES[name][0](rng, 7)
    f = family(name)
    shared = f.run(**dict(x, C=x["C"][0]), backend="numpy")
    assert_close(shared, f.run(**dict(x, C=np.stack([x["C"][0]] * 2)), backend="numpy"), 1e-12, name)


def _bad(rng, name):
    x, _ = CASES[name][0](rng, 12 if name not in ("vmamba_ss2d", "msvmamba") else (3, 4))
    return x


@pytest.mark.parametrize("name, change, match", [
    ("vim", dict(delta=np.zeros((2, 3, 12))), r"delta: expected shape \(batch, K, dim, L\)"),
    ("vmamba_ss2d", dict(grid=(3, 5)), r"grid: expected \(H, W\), positive integers with H×W = L = 12, got \(3, 5\)"),
    ("msvmamba", dict(grid=12), r"grid: expected \(H, W\)"),
    ("hydra", dict(dt=np.zeros((2, 12, 2))), r"dt: expected shape \(batch, L, 2, H\)"),
    ("s4d_bidirectional", dict(C=np.zeros((3, 3, 3), complex)), r"C: expected shape \(2, dim, N\)"),
    ("s5_bidirectional", dict(C=np.zeros((2, 4, 3), complex)), r"C: expected shape \(2, H, N\) .* with H=3"),
    ("pointcloud_mamba", dict(orders=[np.arange(12), np.zeros(12, np.int64), np.arange(12)]),
     r"orders\[1\]: not a permutation of range\(L=12\)"),
    ("rsmamba", dict(seed=-1), r"seed: expected a non-negative integer"),
    ("rsmamba", dict(gate=np.zeros((2, 3, 12))), r"gate: expected shape \(batch, K, dim, L\)"),
    ("s5_episodes", dict(seq_idx=None), r"seq_idx: required"),
    ("s5_episodes", dict(seq_idx=np.zeros((2, 11), np.int64)), r"seq_idx: expected shape \(batch, L\)"),
    ("mamba2_varlen", dict(seq_idx=np.zeros((2, 12, 1), np.int64)), r"seq_idx: expected shape \(batch, L\)"),
])
def test_bad_input_names_the_argument(name, change, match, rng):
    with pytest.raises(ValueError, match=match):
        family(name).run(**dict(_bad(rng, name), **change), backend="numpy")


@pytest.mark.parametrize("spec, match", [
    ("mamba1", r"spec: 'mamba1' cannot be made tied-bidirectional: it is selective"),
    ("mamba2", r"spec: 'mamba2' .*selective"),
    ("s4d", r"spec: no library entry 's4d'"),
    (library.get("s5").with_(seq_idx=True), r"spec: 's5' .*seq_idx"),
    (library.get("s4d_zoh").with_(direction="reverse"), r"spec: 's4d_zoh' .*direction must be 'forward'"),
])
def test_tied_bidirectional_refuses_specs_it_cannot_run(spec, match):
    with pytest.raises(ValueError, match=match):
        ssmc.ops.tied_bidirectional(spec, u=np.zeros((1, 3, 4)), C=np.zeros((3, 2), complex), backend="numpy")


def test_cli_list_shows_the_families(capsys):
    assert cli.main(["list"]) == 0
    text = capsys.readouterr().out
    section = text.split("Scan-order families")[1]
    for name, f in FAMILIES.items():
        assert f"  {name} " in section and f.op in section


@pytest.mark.parametrize("device", DEVICES)
def test_tied_bidirectional_gradients(device, rng):
    """With inputs that require grad, tied S4D (and S5) run as their Spec forwards plus reversed, which
    autograd differentiates: gradcheck in float64 on the Triton backend, and the value agrees with the
    one-kernel forward."""
    for name in ("s4d_zoh", "s5"):
        sizes = dict(batch=1, dim=2, H=2, N=2, L=5)
        x = {k: torch.tensor(v, device=device).to(torch.complex128 if np.iscomplexobj(v) else torch.float64)
             for k, v in _lti_inputs(rng, name, sizes).items()}
        names = sorted(x)
        f = lambda *a: ssmc.ops.tied_bidirectional(name, backend="triton", **dict(zip(names, a)))  # noqa: E731
        leaves = tuple(x[k].requires_grad_() for k in names)
        assert torch.autograd.gradcheck(f, leaves, fast_mode=True), name
        two_runs = f(*leaves)
        with torch.no_grad():  # S4D: the one-kernel path; S5: the same two runs
            assert_close(two_runs.detach(), f(*leaves), 1e-10, name)
