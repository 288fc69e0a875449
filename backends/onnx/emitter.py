"""A small builder for ONNX graphs: fresh names, one-line node emission, cached constants.

Nodes go into the innermost open graph, so a Scan body is emitted with the same calls as the
main graph (`with em.body() as nodes:`).  Constants are initializers of the main graph, which
ONNX lets every subgraph read.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
from onnx import TensorProto, helper, numpy_helper

FLOAT = TensorProto.FLOAT
END = 2 ** 62  # a Slice bound past any length: "to the end" (or, negated with step -1, "to the start")


class Emitter:
    def __init__(self):
        self._stack = [[]]  # node lists: the main graph, then open subgraphs
        self.initializers = []
        self._consts = {}
        self._count = 0

    @property
    def nodes(self) -> list:
        return self._stack[0]

    def fresh(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def op(self, op_type: str, inputs, outputs: int | list = 1, hint: str | None = None, **attrs):
        """Emit one node; returns its output name (or a list of names when several)."""
        if isinstance(outputs, int):
            outputs = [self.fresh(hint or op_type.lower()) for _ in range(outputs)]
        self._stack[-1].append(helper.make_node(op_type, list(inputs), outputs,
                                                name=self.fresh("n_" + op_type), **attrs))
        return outputs[0] if len(outputs) == 1 else outputs

    def const(self, value, dtype=np.float32) -> str:
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            name = self.fresh("c")
            self.initializers.append(numpy_helper.from_array(arr, name))
            self._consts[key] = name
        return self._consts[key]

    def ints(self, values) -> str:
        return self.const(list(values), np.int64)

    def scalar(self, value: float) -> str:
        """A float32 constant of rank 0: broadcasts against a value of any rank."""
        return self.const(value)

    @contextmanager
    def body(self):
        """Emit into a fresh node list (a subgraph body) until the block ends."""
        self._stack.append([])
        try:
            yield self._stack[-1]
        finally:
            self._stack.pop()


def float_info(name: str, rank: int | None = None, dtype=FLOAT):
    """A value_info for a float tensor of the given rank (dims unnamed) or unknown shape."""
    shape = None if rank is None else [None] * rank
    return helper.make_tensor_value_info(name, dtype, shape)
