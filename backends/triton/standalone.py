"""Does a generated module stand alone?  It is imported in a fresh interpreter where `ssmc` cannot be
imported, and must define `launch`: what `ssmc compile` promises (a module that needs only torch and
triton)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_VERIFY = r'''
import importlib.abc, importlib.util, sys
class _NoSsmc(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "ssmc" or name.startswith("ssmc."):
            raise ImportError("the generated module must not import ssmc")
sys.meta_path.insert(0, _NoSsmc())
spec = importlib.util.spec_from_file_location("ssmc_generated_module", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
assert callable(mod.launch), "no launch() function"
import torch, triton
print(f"torch {torch.__version__}, triton {triton.__version__}")
'''


def verify_standalone(path: Path) -> str:
    """Import the module at `path` in a fresh interpreter without ssmc; returns the torch and triton
    versions it ran with, or raises RuntimeError with the interpreter's error."""
    res = subprocess.run([sys.executable, "-I", "-c", _VERIFY, str(path.resolve())], capture_output=True,
                         text=True, cwd=path.resolve().parent)
    if res.returncode:
        raise RuntimeError(f"{path} does not import with only torch and triton:\n{res.stderr.strip()}")
    return res.stdout.strip()
