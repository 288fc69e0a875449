"""Arrays in and out of the backends: NumPy arrays and torch tensors, their devices and dtypes.

torch is imported only where a torch tensor is in hand (`is_torch` tells without importing it), so
`import ssmc` does not import torch.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from ssmc.ir import Graph


def is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def needs_grad(arrays: dict) -> bool:
    """Does a torch tensor among `arrays` require grad, with grad mode on?"""
    if not any(is_torch(v) and v.requires_grad for v in arrays.values()):
        return False
    import torch
    return torch.is_grad_enabled()


def tracing(arrays: dict) -> bool:
    """Is torch.compile tracing a call on torch tensors?"""
    if not any(is_torch(v) for v in arrays.values()):
        return False
    import torch
    return torch.compiler.is_compiling()


def device_of(inputs: dict):
    """The one torch device of the torch tensors among `inputs` (CPU when there are none)."""
    devices = {}
    for k, v in inputs.items():
        if is_torch(v):
            devices.setdefault(str(v.device), k)
    if len(devices) > 1:
        (d1, a1), (d2, a2) = list(devices.items())[:2]
        raise ValueError(f"{a2}: expected a tensor on {d1} (like {a1}), got one on {d2}")
    import torch
    return torch.device(next(iter(devices))) if devices else torch.device("cpu")


def to_numpy(x):
    """An input as a NumPy array: torch floating point as float64, complex and integer as they are."""
    if is_torch(x):
        import torch
        x = x.detach().cpu()
        x = x.to(x.dtype if x.is_complex() or not x.is_floating_point() else torch.float64)
        return x.numpy()
    return np.asarray(x)


def torch_to_numpy(x):
    """A kernel's output as a NumPy array (16-bit floats widened to fp32)."""
    import torch
    x = x.detach().cpu()
    if x.dtype.is_floating_point and x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    return x.numpy()


def as_kernel_tensor(x, node, device, acc="float32"):
    """A torch tensor the kernel can read: complex inputs complex64 (complex128 when computing
    in float64), real ones as given.

    fp64 stays fp64: the kernel converts on load (a copy to fp32 would cost more traffic), and
    the launcher then gives `out` u's dtype, as the NumPy backend does.
    """
    import torch
    if not is_torch(x):
        x = torch.from_numpy(np.ascontiguousarray(x))
    x = x.to(device)
    if node.attr("complex"):
        return x.to(torch.complex128 if acc == "float64" else torch.complex64)
    return x


def fill_numpy(res: dict, outs: dict) -> dict:
    """Preallocated NumPy outputs are written in place and returned, as torch ones are."""
    for name, buf in outs.items():
        np.copyto(buf, res[name], casting="same_kind")
        res[name] = buf
    return res


def torch_dtype(graph: Graph, name: str, inputs: dict):
    """The dtype the Triton launcher gives output `name`, so both backends agree: a final state
    is fp32 (complex64), fp64 (complex128) when a float64 tensor comes in; other outputs take the
    dtype of the real input with their layout."""
    import torch
    node = graph[graph.outputs[name]]
    wide = any(is_torch(x) and x.dtype in (torch.float64, torch.complex128) for x in inputs.values())
    if node.type.complex:
        return torch.complex128 if wide else torch.complex64
    if graph[node.args[0]].op != "last":
        for i in graph.ids("input"):
            x = inputs[graph[i].attr("name")]
            if graph[i].attr("axes") == node.attr("axes") and is_torch(x) and x.is_floating_point():
                return x.dtype
    return torch.float64 if wide else torch.float32


def convert_back(res: dict, inputs: dict, graph: Graph, outs: dict) -> dict:
    """NumPy results as torch tensors on the inputs' device, in the dtypes the Triton backend gives,
    written into the buffers `outs` where given."""
    import torch
    device = device_of(inputs)
    out = {}
    for name, arr in res.items():
        t = torch.from_numpy(np.ascontiguousarray(arr)).to(device=device, dtype=torch_dtype(graph, name, inputs))
        if name in outs:
            outs[name].copy_(t)
            t = outs[name]
        out[name] = t
    return out


def zeros_like_output(node, shape, inputs: dict):
    """A zero cotangent for an output (torch when the inputs are torch tensors)."""
    if any(is_torch(v) for v in inputs.values()):
        import torch
        dtype = torch.complex64 if node.type.complex else torch.float32
        return torch.zeros(shape, dtype=dtype, device=device_of(inputs))
    return np.zeros(shape, np.complex128 if node.type.complex else np.float64)


def check_state(graph: Graph, state) -> None:
    """The state is written in place: it must be a dense fp32/complex64 (or NumPy float) buffer."""
    node = graph[graph.inputs["state"]]
    want = "complex" if node.attr("complex") else "float"
    shape = "(" + ", ".join(a.symbol for a in node.attr("axes")) + ")"
    if not hasattr(state, "shape") or len(state.shape) != len(node.attr("axes")):
        raise ValueError(f"state: expected shape {shape}, got {tuple(getattr(state, 'shape', ()))}")
    if is_torch(state):
        import torch
        ok = torch.complex64 if want == "complex" else torch.float32
        if state.dtype != ok:
            raise TypeError(f"state: expected dtype {ok} (updated in place), got {state.dtype}")
        if not state.is_contiguous():
            raise ValueError(f"state: must be contiguous to be updated in place, got strides {state.stride()}")
    else:
        if not isinstance(state, np.ndarray) or state.dtype.kind != ("c" if want == "complex" else "f"):
            raise TypeError(f"state: expected a {want} NumPy array or torch tensor, got {type(state).__name__} "
                            f"of dtype {getattr(state, 'dtype', None)}")
        if not (state.flags.c_contiguous and state.flags.writeable):
            raise ValueError("state: must be a contiguous, writable array to be updated in place")


def largest_tensor(graph: Graph, sizes: dict) -> int:
    """Elements of the largest input or output (each counted per whole tensor, to be safe)."""
    return max(math.prod(sizes.get(a.symbol, 1) for a in graph[i].attr("axes"))
               for i in graph.ids("input") + graph.ids("output"))


def as_torch(arrays: dict, device="cpu") -> dict:
    """NumPy arrays as torch tensors on `device`: real as fp32, complex as complex64, integer as int64; a
    list (of orders, say) element by element; anything else (None, numbers, strings) as it is."""
    import torch

    def conv(v):
        if isinstance(v, list):
            return [conv(o) for o in v]
        if not isinstance(v, np.ndarray):
            return v
        dtype = torch.int64 if v.dtype.kind in "iu" else torch.complex64 if np.iscomplexobj(v) else torch.float32
        return torch.tensor(v, dtype=dtype, device=device)
    return {k: conv(v) for k, v in arrays.items()}


_REMEMBERED: dict = {}  # (what, id(tensor)) -> (tensor, its version, key, result)


def _per_version(what: str, tensor, key: tuple, make):
    """make() for an index tensor, remembered while the tensor lives unchanged (its version counter): the
    tensor is held, so its memory (and id) is not reused; repeated calls, decode loops and CUDA graph
    replays neither sync nor copy."""
    hit = _REMEMBERED.get((what, id(tensor)))
    if hit is not None and hit[0] is tensor and hit[1:3] == (tensor._version, key):
        return hit[3]
    result = make()
    if len(_REMEMBERED) > 256:
        _REMEMBERED.clear()
    _REMEMBERED[(what, id(tensor))] = (tensor, tensor._version, key, result)
    return result


def check_permutation(name: str, index, axis: int, L: int) -> None:
    """Every row of an order's index along `axis` must be a permutation of 0..L-1 (else values would be
    lost or read twice).  A torch index is read on the host once per version (_per_version)."""
    if is_torch(index):
        import torch

        def check():
            steps = torch.arange(L, device=index.device).reshape([L if d == axis else 1 for d in range(index.dim())])
            return bool((torch.sort(index, dim=axis).values == steps).all())
        ok = _per_version("permutation", index, (axis, L), check)
    else:
        index = np.asarray(index)
        ok = bool((np.sort(index, axis=axis) == np.arange(L).reshape([L if d == axis else 1
                                                                       for d in range(index.ndim)])).all())
    if not ok:
        raise ValueError(f"{name}: expected a permutation of 0..{L - 1} along L in every row, got repeated or "
                         f"out-of-range indices")


@lru_cache(maxsize=64)
def grid_index(order, L: int, device=None):
    """A grid order's permutations as an index input: (L,), or (groups, L) with one order per group; a
    torch tensor on `device` where one is given (a torch.device), else a NumPy array."""
    rows = order.permutations(L).astype(np.int64)
    rows = rows[0] if len(order.names) == 1 else rows
    if device is None:
        return rows
    import torch
    return torch.from_numpy(rows).to(device)


def complete_order(name: str, index, axis: int, L: int):
    """(index', visited) for a partial gather order (`ssmc.ir.passes.partial`): each row of `index` along
    `axis` lists distinct positions of 0..L-1, then -1 padding; index' visits the unlisted positions
    (ascending), then the listed ones in their order; visited is 1.0 at listed positions, 0.0 elsewhere.
    Computed on the host (an index is small); a torch index once per version (_per_version)."""
    if is_torch(index):
        import torch

        def complete():
            full, visited = complete_order(name, index.detach().cpu().numpy(), axis, L)
            return torch.from_numpy(full).to(index.device), torch.from_numpy(visited).to(index.device)
        return _per_version("completed", index, (axis, L), complete)
    rows = np.moveaxis(np.asarray(index), axis, -1)
    shape, rows = rows.shape, rows.reshape(-1, rows.shape[-1])
    listed = rows >= 0
    ok = rows.shape[1] == L and bool(((rows >= -1) & (rows < L)).all())
    ok = ok and bool((listed[:, :-1] >= listed[:, 1:]).all())  # -1 only after the listed positions
    if ok:
        marks = np.zeros((rows.shape[0], L + 1), np.int64)  # how often each position is listed (L: the padding)
        np.add.at(marks, (np.arange(rows.shape[0])[:, None], np.where(listed, rows, L)), 1)
        ok = bool((marks[:, :L] <= 1).all())
    if not ok:
        raise ValueError(f"{name}: expected in every row along L distinct positions of 0..{L - 1}, then -1 padding "
                         f"(a partial order), got repeated or out-of-range indices, or -1 before a position")
    key = np.broadcast_to(np.arange(L + 1), marks.shape).copy()  # unlisted: their position
    np.put_along_axis(key, np.where(listed, rows, L), L + 1 + np.arange(L)[None], axis=1)  # listed: after all
    full = np.argsort(key[:, :L], axis=1, kind="stable")
    visited = marks[:, :L].astype(np.float64)
    back = lambda v: np.moveaxis(v.reshape(shape), -1, axis)  # noqa: E731
    return back(full), back(visited)
