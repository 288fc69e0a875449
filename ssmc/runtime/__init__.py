"""The runtime: a declaration compiled to a callable (`ssmc.compile`), run on a backend chosen per call,
its arrays converted in and out, and its autograd (torch custom ops, loaded on first use).

    compiled.py   Compiled, compile_ssm (public as ssmc.compile), the decode forms and gradients
    arrays.py     NumPy/torch conversions, devices, dtypes
    autograd.py   the `ssmc::compiled` custom op (torch)
    check.py      the differential check of the NumPy reference against Triton
"""
from .compiled import BACKENDS, Compiled, cached_compile, compile_ssm, optimize

__all__ = ["BACKENDS", "Compiled", "cached_compile", "compile_ssm", "optimize"]
