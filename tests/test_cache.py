"""The on-disk cache heals and falls back instead of failing: damaged entries are rebuilt, an unwritable
cache directory gives one warning naming SSMC_CACHE_DIR and a temporary directory, any Spec name works."""
from __future__ import annotations

import pytest

import ssmc
from ssmc import library
from ssmc.backends.triton import cache

from conftest import rel_err


def _mamba1_inputs(rng, batch=1, dim=3, L=5, N=2):
    return dict(u=rng.standard_normal((batch, dim, L)), delta=rng.uniform(0.1, 0.5, (batch, dim, L)),
                A_log=rng.standard_normal((dim, N)), B=rng.standard_normal((batch, N, L)),
                C=rng.standard_normal((batch, N, L)), D=rng.standard_normal(dim),
                z=rng.standard_normal((batch, dim, L)), delta_bias=rng.standard_normal(dim))


def _agrees(spec, rng):
    import torch
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    x = {k: v for k, v in _mamba1_inputs(rng).items() if k in spec.build().inputs}
    want = ssmc.compile(spec, backend="numpy")(**x)
    got = ssmc.compile(spec, backend="triton")(**{k: torch.from_numpy(v).to(dev) for k, v in x.items()})
    for k in want:
        assert rel_err(got[k], want[k]) < 1e-5, k


def test_unwritable_cache_falls_back_with_one_warning(tmp_path, monkeypatch, rng):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("SSMC_CACHE_DIR", str(blocker / "cache"))
    with pytest.warns(RuntimeWarning, match="SSMC_CACHE_DIR") as caught:
        _agrees(library.get("mamba1").with_(name="fallback_probe"), rng)
        cache.root()
    assert len([w for w in caught if "SSMC_CACHE_DIR" in str(w.message)]) == 1
    assert cache.root() != blocker / "cache" and cache.kernels().is_dir()


def test_damaged_kernel_file_is_rewritten(tmp_path, monkeypatch):
    monkeypatch.setenv("SSMC_CACHE_DIR", str(tmp_path))
    path = cache.kernels() / "ssmc_probe.py"
    path.write_bytes(b"\xff\xfe\x00 not utf-8")
    assert cache.write("ssmc_probe.py", "x = 1\n", "kernels") == path
    assert path.read_text() == "x = 1\n"


@pytest.mark.parametrize("text", ['{"k": {"schedule": ', "\xff", "[1, 2]", ""])
def test_damaged_tuning_table_reads_as_empty(tmp_path, monkeypatch, text):
    monkeypatch.setenv("SSMC_CACHE_DIR", str(tmp_path))
    (cache.root() / "tuning.json").write_bytes(text.encode("latin-1"))
    assert cache.read_json("tuning.json") == {}


@pytest.mark.parametrize("name", ["my/model v2", "a b", "ünïcode", "x" * 300])
def test_any_spec_name_builds(name, rng):
    _agrees(library.get("mamba1").with_(name=name), rng)
