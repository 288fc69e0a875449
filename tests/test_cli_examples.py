"""The command line and the examples, as a user runs them: each in its own interpreter.

Every command starts a fresh Python (torch + triton imports dominate), so they all start at once
on a small thread pool the first time a test asks for one, and each test waits for its own.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ["mamba1", "mamba2", "s4d", "lru", "s5", "custom_rule", "drop_in_ops", "onnx_export", "scan_orders",
            "library_orders", "multi_stage", "token_pruning", "variants"]
TIMEOUT = 300


def _ssmc(*args):
    return (sys.executable, "-m", "ssmc", *args)


class Runs:
    """Commands run concurrently in subprocesses; `get(key)` waits for one's CompletedProcess."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.pool = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2))
        self.futures = {}
        self.lock = threading.Lock()
        env = dict(os.environ)
        env.pop("PYTHONSAFEPATH", None)
        self.env = env
        commands = {f"example:{name}": (sys.executable, str(ROOT / "examples" / f"{name}.py")) for name in EXAMPLES}
        commands.update({
            "demo": _ssmc("demo"),
            "check": _ssmc("check", "mamba1"),
            "compile": _ssmc("compile", "mamba1", "-o", str(tmp / "out")),
            "list": _ssmc("list"),
            "show": _ssmc("show", "mamba1"),
            "show-passes": _ssmc("show", "s5", "--passes", "--dot", str(tmp / "s5.dot")),
        })
        # the slowest first, so the pool finishes early
        for key in ["demo"] + [k for k in commands if k != "demo"]:
            self.submit(key, commands[key])

    def submit(self, key, cmd):
        with self.lock:
            if key not in self.futures:
                self.futures[key] = self.pool.submit(
                    subprocess.run, list(cmd), capture_output=True, text=True, timeout=TIMEOUT, cwd=self.tmp,
                    env=self.env)
            return self.futures[key]

    def get(self, key, cmd=None) -> subprocess.CompletedProcess:
        fut = self.futures.get(key) if cmd is None else self.submit(key, cmd)
        return fut.result()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    r = Runs(tmp_path_factory.mktemp("cli"))
    yield r
    r.pool.shutdown(wait=True, cancel_futures=True)


def _ok(res: subprocess.CompletedProcess):
    assert res.returncode == 0, f"exit {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    assert "Traceback" not in res.stderr, res.stderr


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs_and_backends_agree(runs, name):
    res = runs.get(f"example:{name}")
    _ok(res)
    assert ("NumPy vs ONNX" if name == "onnx_export" else "NumPy vs Triton") in res.stdout
    assert "DISAGREE" not in res.stdout


def test_list(runs):
    res = runs.get("list")
    _ok(res)
    header = res.stdout.splitlines()[0].split()
    assert header == ["name", "state", "io", "rule", "selective", "description"]
    for name in ("mamba1", "mamba2", "s4d_zoh", "s4d_bilinear", "lru", "s5", "selective_scan", "ssd"):
        assert name in res.stdout


def test_show_prints_optimized_ir(runs):
    res = runs.get("show")
    _ok(res)
    assert res.stdout.startswith("ssm mamba1")
    assert "scan" in res.stdout and "region=0" in res.stdout


def test_show_passes_and_dot(runs):
    res = runs.get("show-passes")
    _ok(res)
    from ssmc.ir.passes import PIPELINE
    for name, _ in PIPELINE:
        assert f": {name} (" in res.stdout
    assert (runs.tmp / "s5.dot").read_text().startswith('digraph "s5"')
    assert "=== backward lowering (Triton cost model) ===" in res.stdout  # S5's MIMO state: stepwise
    assert "stepwise — not chunked" in res.stdout.split("=== backward lowering")[1]


def test_check_mamba1(runs):
    res = runs.get("check")
    _ok(res)
    assert "last_state" in res.stdout and "FAIL" not in res.stdout
    assert res.stdout.rstrip().endswith("agree")


def test_demo(runs):
    res = runs.get("demo")
    _ok(res)
    out = res.stdout
    assert "gbt_2/3" in out and "fuse_regions" in out
    for name in ("gbt_reverse", "mamba1", "mamba2", "s4d_zoh", "s4d_bilinear", "lru", "s5"):
        assert f"   {name} " in out
    assert "FAIL" not in out and "All backends agree" in out


_RUN_STANDALONE = r'''
import importlib.abc, importlib.util, sys
import numpy as np, torch
class NoSsmc(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "ssmc" or name.startswith("ssmc."):
            raise ImportError("blocked")
sys.meta_path.insert(0, NoSsmc())
spec = importlib.util.spec_from_file_location("kernel", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
device = "cuda" if torch.cuda.is_available() else "cpu"
x = {k: torch.from_numpy(v).float().to(device) for k, v in np.load(sys.argv[2]).items()}
out = mod.launch(**x)
np.savez(sys.argv[3], **{k: v.double().cpu().numpy() for k, v in out.items()})
'''


def test_compile_writes_a_standalone_module_that_runs(runs):
    res = runs.get("compile")
    _ok(res)
    path = Path(res.stdout.strip().splitlines()[-1])
    if not path.is_absolute():
        path = runs.tmp / path
    assert path.name == "mamba1_kernel.py" and path.exists()
    assert "def launch(" in path.read_text()
    assert "verified" in res.stderr

    # Run the written module with ssmc unimportable, on inputs from ssmc's initializers.
    import ssmc
    from ssmc import library
    from ssmc.ir.inits import random_inputs
    ref = ssmc.compile(library.get("mamba1"), backend="numpy")
    x = random_inputs(ref.graph, library.DEFAULT_SIZES["mamba1"], seed=0)
    np.savez(runs.tmp / "in.npz", **x)
    env = dict(runs.env)
    if "TRITON_INTERPRET" not in env:
        import torch
        if not torch.cuda.is_available():
            env["TRITON_INTERPRET"] = "1"
    run = subprocess.run([sys.executable, "-I", "-c", _RUN_STANDALONE, str(path), str(runs.tmp / "in.npz"),
                          str(runs.tmp / "out.npz")], capture_output=True, text=True, timeout=TIMEOUT, env=env,
                         cwd=runs.tmp)
    assert run.returncode == 0, run.stderr
    got, want = np.load(runs.tmp / "out.npz"), ref(**x)
    for k in want:
        assert np.linalg.norm(got[k] - want[k]) / np.linalg.norm(want[k]) < 1e-5, k


@pytest.mark.parametrize("args", [
    ("show", "no_such_model"),
    ("check", "mamba1", "--L", "0"),
    ("check", "mamba1", "--L", "x,y"),
    ("compile", "mamba1", "-o", "out", "--chunk", "3"),
    ("compile", "mamba1"),
    ("frobnicate",),
    (),
])
def test_usage_errors_exit_2_without_traceback(runs, args):
    res = runs.get("err:" + " ".join(args), _ssmc(*args))
    assert res.returncode == 2, res.stdout + res.stderr
    assert "usage:" in res.stderr and "Traceback" not in res.stderr


def test_png_without_a_renderer_is_a_clear_error(runs, tmp_path):
    """No `dot` on PATH and matplotlib blocked: exit 2 naming what to install."""
    block = tmp_path / "sitecustomize.py"
    block.write_text("import sys\nsys.modules['matplotlib'] = None\n")
    env = dict(runs.env, PATH=str(Path(sys.executable).parent), PYTHONPATH=str(tmp_path))
    res = subprocess.run(list(_ssmc("show", "mamba1", "--png", str(tmp_path / "g.png"))), capture_output=True,
                         text=True, timeout=TIMEOUT, env=env, cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "graphviz" in res.stderr.lower() and "matplotlib" in res.stderr and "Traceback" not in res.stderr
    assert res.stdout == ""


def test_console_script_when_installed():
    exe = Path(sys.executable).parent / "ssmc"
    if not exe.exists():
        pytest.skip("the `ssmc` console script is not installed next to this interpreter")
    res = subprocess.run([str(exe), "list"], capture_output=True, text=True, timeout=TIMEOUT)
    _ok(res)
    assert "mamba2" in res.stdout
