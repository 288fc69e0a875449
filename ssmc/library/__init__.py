"""The library: ready declarations of the common SSM families and ready calls of the ops.

    ssmc.library.get("mamba2")                 a Spec (ENTRIES: Mamba-1, Mamba-2, S4D, LRU, S5)
    ssmc.library.family("vmamba_ss2d").run(…)  a scan-order family: Vim, VMamba, MSVMamba, Hydra, …
    ssmc.library.get("h3")                     a declared variant: one graph with several scans or lags

The Specs themselves are declared in `ssmc.ir.entries` (any layer may look one up by name); the
families are in `families.py`.
"""
from ssmc.ir.entries import DEFAULT_SIZES, ENTRIES, get
from ssmc.ir.symbolic import generalized_bilinear
from ssmc.ir.variants import VARIANTS, Variant

from .families import FAMILIES, OrderFamily, family

__all__ = ["DEFAULT_SIZES", "ENTRIES", "FAMILIES", "OrderFamily", "VARIANTS", "Variant", "family",
           "generalized_bilinear", "get"]
