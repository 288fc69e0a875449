"""ssmc: declare a state space model once; get a NumPy reference, fused Triton kernels, ONNX models and
drop-in ops.

    ssmc.Spec / ssmc.Builder     declare (ssmc.ir)
    ssmc.compile(decl)           optimize and bind to a backend (ssmc.runtime)
    ssmc.ops                     drop-in ops with mamba_ssm's signatures
    ssmc.library                 the common families, ready
    ssmc.export_onnx(decl)       an ONNX model

The layers, bottom up: ir <- backends <- runtime <- ops <- library <- tools (cli, bench, export);
docs/architecture.md draws them.
"""
from ssmc.ir import Builder, Graph, IRError, Rule, Spec, rule
from ssmc.ir.inits import random_inputs
from ssmc.ir.symbolic import A, dt
from ssmc.runtime import compile_ssm as compile  # noqa: A001 (ssmc.compile, as torch.compile: namespaced)
from ssmc.runtime.arrays import as_torch

from .export import export_onnx

__all__ = ["Graph", "IRError", "Rule", "rule", "A", "dt", "Builder", "Spec", "as_torch", "compile", "export_onnx",
           "random_inputs"]
