"""ssmc: declare a state space model once; get a NumPy reference, fused Triton kernels and drop-in ops."""
from ssmc.ir import Graph, IRError, Rule, rule
from ssmc.ir.symbolic import A, dt

from .compiler import compile
from ssmc.ir.builder import Builder
from .export import export_onnx
from ssmc.ir.spec import Spec

__all__ = ["Graph", "IRError", "Rule", "rule", "A", "dt", "Builder", "Spec", "compile", "export_onnx"]
