"""Shared test setup: Triton's CPU interpreter, a private kernel cache, the `gpu` marker, helpers.

Triton reads TRITON_INTERPRET when a kernel is defined, so it is set here, before any test
module imports a generated kernel.  Every test gets fresh random inputs (its seed is printed
on failure; SSMC_TEST_SEED=<int> replays one).
"""
from __future__ import annotations

import os

import numpy as np
import pytest


def _has_cuda() -> bool:
    import torch
    return torch.cuda.is_available()


HAS_CUDA = _has_cuda()
if not HAS_CUDA:
    os.environ["TRITON_INTERPRET"] = "1"

# Devices for torch tensors on the Triton backend: CPU tensors run under the interpreter, which
# is off where CUDA is (it would interpret every CUDA kernel too), so there only "cuda" runs.
# `pytest -m gpu` selects the CUDA half.
DEVICES = [
    pytest.param("cpu", marks=pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                                  reason="CPU tensors need Triton's interpreter (off with CUDA)")),
    pytest.param("cuda", marks=pytest.mark.gpu),
]


@pytest.fixture(scope="session", autouse=True)
def _kernel_cache(tmp_path_factory):
    """Generated kernels go to a fresh directory per session, never the user's cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SSMC_CACHE_DIR", str(tmp_path_factory.mktemp("ssmc_cache")))
        yield


def pytest_configure(config):
    # Triton 3.6's interpreter calls int() on 1-element arrays (a NumPy deprecation): not ours.
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:triton.runtime.interpreter")


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng(request):
    """A fresh numpy Generator per test; the seed is recorded so a failure can be replayed."""
    seed = int(os.environ.get("SSMC_TEST_SEED", np.random.SeedSequence().entropy % 2**63))
    request.node.user_properties.append(("seed", seed))
    print(f"seed={seed}")  # shown with the failure report
    return np.random.default_rng(seed)


def seed_of(rng: np.random.Generator) -> int:
    """A seed drawn from `rng`, for APIs that take one (ssmc.ir.inits.random_inputs)."""
    return int(rng.integers(2**63))


def _has_ptxas() -> bool:
    import triton
    return os.path.exists(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas"))


# compile-only GPU checks (test_*_sm90): Triton's real pipeline down to ptxas, no GPU needed
needs_ptxas = pytest.mark.skipif(not _has_ptxas(), reason="Triton's bundled ptxas is not installed")


def run_compiled_triton(script: str):
    """Run `script` in a fresh interpreter with TRITON_INTERPRET=0 (kernels take Triton's GPU compiler
    path; set either way, ssmc leaves it alone); the subprocess's CompletedProcess, with the output tails
    in the message of a failed assert."""
    import subprocess
    import sys
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    return res


def as_numpy(x) -> np.ndarray:
    """float64 / complex128 NumPy copy of an array or a (CPU or CUDA, any dtype) torch tensor."""
    if type(x).__module__.startswith("torch"):
        x = x.detach().cpu()
        x = x.to(__import__("torch").complex128 if x.is_complex() else __import__("torch").float64)
        return x.numpy()
    x = np.asarray(x)
    return x.astype(np.complex128 if np.iscomplexobj(x) else np.float64)


def rel_err(a, b) -> float:
    """‖a − b‖ / ‖b‖ with b the reference; a zero reference is refused (it proves nothing)."""
    a, b = as_numpy(a), as_numpy(b)
    assert a.shape == b.shape, f"shape {a.shape} != reference shape {b.shape}"
    nb = np.linalg.norm(b)
    assert nb > 0 and np.isfinite(nb), f"reference norm is {nb}: the comparison would prove nothing"
    return float(np.linalg.norm(a - b) / nb)


def assert_close(a, b, tol: float = 1e-5, what: str = "") -> None:
    err = rel_err(a, b)
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol:.0e}"  # NaN fails too
