"""Autograd for any compiled declaration: `ssmc::compiled`, a torch custom op keyed by the Compiled object.

Compiled.__call__ routes torch tensors that require grad through it (keyed by Compiled.op_key):
forward = Compiled.run, fake = output shapes and dtypes from the graph, backward = `ssmc::compiled_bwd`
= Compiled.grad (the derived backward).  As custom ops, torch.compile(fullgraph=True) and torch.export
trace them whole.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ssmc.ir.bind import bind

from .arrays import torch_dtype
from .registry import lookup

EMPTY = (0,)  # the shape of an output that was not asked for, or of the gradient of an argument that was None


def _names(fn):
    return list(fn.input_names), list(fn.output_names)


def _is_float(x: Tensor) -> bool:
    return x.is_floating_point() or x.is_complex()


@torch.library.custom_op("ssmc::compiled", mutates_args=())
def compiled(key: str, inputs: list[Tensor]) -> list[Tensor]:
    fn = lookup(key)
    names, outs = _names(fn)
    res = fn.run(dict(zip(names, inputs)))
    return [res[o] for o in outs]


@compiled.register_fake
def _(key, inputs):
    fn = lookup(key)
    names, outs = _names(fn)
    args = dict(zip(names, inputs))
    sizes = bind(fn.graph, args)
    return [inputs[0].new_empty(tuple(sizes[a.symbol] for a in fn.graph[fn.graph.outputs[o]].attr("axes")),
                                dtype=torch_dtype(fn.graph, o, args)) for o in outs]


@torch.library.custom_op("ssmc::compiled_bwd", mutates_args=())
def compiled_bwd(key: str, inputs: list[Tensor], cotangents: list[Tensor]) -> list[Tensor]:
    """The gradient of every input (in its dtype); an empty tensor for integer inputs (seq_idx)."""
    fn = lookup(key)
    names, outs = _names(fn)
    grads = fn.grad(dict(zip(names, inputs)), dict(zip(outs, cotangents)))
    return [grads[f"grad_{n}"].to(x.dtype) if _is_float(x) else x.new_empty(EMPTY) for n, x in zip(names, inputs)]


@compiled_bwd.register_fake
def _(key, inputs, cotangents):
    return [torch.empty_like(x) if _is_float(x) else x.new_empty(EMPTY) for x in inputs]


def _compiled_setup_context(ctx, inputs, output):
    key, tensors = inputs
    ctx.key = key
    ctx.fn = lookup(key)  # alive until backward, though `ssmc.compile(...)(**x)` dropped its own reference
    ctx.save_for_backward(*tensors)


def _compiled_backward(ctx, cotangents):
    tensors = ctx.saved_tensors
    grads = torch.ops.ssmc.compiled_bwd(ctx.key, list(tensors), list(cotangents))
    return None, [g if _is_float(x) else None for g, x in zip(grads, tensors)]


compiled.register_autograd(_compiled_backward, setup_context=_compiled_setup_context)


def run_compiled(fn, arrays: dict) -> dict:
    """Compiled.__call__ for torch tensors that require grad: outputs with a grad_fn."""
    if not torch.compiler.is_compiling():  # (traced, the op's fake implementation binds the shapes)
        bind(fn.graph, arrays)  # clear errors naming the argument, before the op is entered
    names, outs = _names(fn)
    res = torch.ops.ssmc.compiled(fn.op_key, [arrays[n] for n in names])
    return dict(zip(outs, res))
