"""compile_ssm() (the public `ssmc.compile`): a declaration through the pass pipeline to a callable
on one backend.

    fn = ssmc.compile(ssmc.library.get("mamba1"), backend="triton")
    outs = fn(u=u, delta=delta, ...)          # {"out": ..., "last_state": ...}
    print(fn.source)                          # the generated kernel

NumPy arrays in give NumPy arrays out; torch tensors in give torch tensors out on their device.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from functools import lru_cache

from ssmc.backends import numpy_interp
from ssmc.backends import triton as tb
from ssmc.backends.triton import param_name
from ssmc.backends.triton.tune import autotune
from ssmc.ir import Graph
from ssmc.ir.bind import bind, role_sizes
from ssmc.ir.entries import get as library_entry
from ssmc.ir.indexmap import is_gather
from ssmc.ir.passes import run_pipeline
from ssmc.ir.passes.adjoint import adjoint
from ssmc.ir.passes.step import single_step, stateful
from ssmc.ir.passes.unfold import has_permuted_orders, unfold_orders
from ssmc.ir.spec import Spec
from ssmc.ir.stages import needs_stages, plan
from ssmc.ir.variants import Variant

from .arrays import (
    as_kernel_tensor,
    as_torch,
    check_permutation,
    check_state,
    complete_order,
    convert_back,
    device_of,
    fill_numpy,
    grid_index,
    is_torch,
    largest_tensor,
    needs_grad,
    to_numpy,
    torch_to_numpy,
    tracing,
    zeros_like_output,
)
from .registry import register
from .staged import Staged

BACKENDS = ("numpy", "triton", "auto")


def _to_graph(decl) -> Graph:
    if isinstance(decl, Graph):
        return decl
    if isinstance(decl, (Spec, Variant)):
        return decl.build()
    if isinstance(decl, str):
        return library_entry(decl).build()
    raise TypeError(f"compile() takes a Spec, a Graph or a library name, got {type(decl).__name__}")


@lru_cache(maxsize=256)
def optimize(graph: Graph) -> tuple:
    """(optimized graph, [(pass name, graph after it), ...]); graphs are hashable, so cached."""
    trace = []
    return run_pipeline(graph, trace), tuple(trace)


@dataclass
class Compiled:
    graph: Graph = field(repr=False)
    trace: tuple = field(repr=False)
    backend: str = "auto"
    schedule: object = None
    precision: str = "float64"  # NumPy backend arithmetic
    _kernels: dict = field(default_factory=dict, repr=False, compare=False)  # (sizes, device) -> Kernel
    _forms: dict = field(default_factory=dict, repr=False, compare=False)  # decode forms, compiled
    _bound: dict = field(default_factory=dict, repr=False, compare=False)  # input signature -> sizes

    def __post_init__(self):
        # the interface's names, found now: torch.compile cannot trace a graph's first look-up of them
        self.input_names = tuple(k for k, i in self.graph.inputs.items() if not self.graph[i].attr("derived"))
        self.output_names = tuple(self.graph.outputs)
        # inputs the runtime derives on each call: (name, source), the source a partial order's index name
        # (ssmc.ir.passes.partial) or a grid order (ssmc.ir.passes.unfold); a step of a plan may read a
        # partial order's mask without its index: its caller passes it
        sources = {k: self.graph[i].attr("derived") for k, i in self.graph.inputs.items()}
        self.derived = tuple((k, src) for k, src in sources.items()
                             if src is not None and (not isinstance(src, str) or src in self.graph.inputs))
        self.op_key = register(self)  # names it to the autograd custom op (ssmc.runtime.autograd)
        # several scans, or time operators: run as steps, each compiled on its own (refused now if it cannot be)
        self.staged = Staged(plan(self.graph), self._step) if needs_stages(self.graph) else None
        # a permute's or gather-order scan's index is a user's order, checked on every call: (input name,
        # its time axis); unchecked, a repeated index would leave a position unwritten
        names = {self.graph[self.graph[i].args[1]].attr("name") for i in self.graph.ids("permute")}
        names |= {self.graph[self.graph[i].args[-1]].attr("name") for i in self.graph.ids("scan")
                  if is_gather(self.graph[i].attr("order"))}
        names -= {name for name, src in self.derived if not isinstance(src, str)}  # (a grid order's: made right)
        self.orders = tuple((name, self._time_axis(name)) for name in sorted(names))

    def _time_axis(self, name: str) -> int:
        return [a.role for a in self.graph[self.graph.inputs[name]].attr("axes")].index("t")

    def _step(self, graph: Graph, backend: str | None = None) -> "Compiled":
        return compile_ssm(graph, backend or self.backend, self.schedule, self.precision)

    @property
    def source(self) -> str:
        """The generated Triton module source (what runs on the Triton backend); a multi-stage graph's
        steps' sources, in order."""
        return self.staged.source if self.staged is not None else self.kernel().source

    def kernel(self, sizes: dict | None = None, device_type: str = "cpu", acc: str = "float32"):
        """The Triton kernel: for the given schedule, else one chosen for these sizes and device;
        `acc` is its arithmetic dtype (float64 when float64 tensors come in)."""
        if self.staged is not None:
            raise NotImplementedError(f"{self.graph.name}: a multi-stage graph has one kernel per step; see .source")
        key = (tuple(sorted((sizes or {}).items())), device_type, acc)
        if key not in self._kernels:  # per-call work stays a dict lookup: decode steps are tiny
            self._kernels[key] = self._build_kernel(sizes or {}, device_type, acc)
        return self._kernels[key]

    def _build_kernel(self, sizes: dict, device_type: str, acc: str = "float32"):
        schedule = None if self.schedule == "autotune" else self.schedule  # autotune: see _run_triton
        if schedule is None and self.graph.ids("adjoint"):  # a backward graph: its own cost model
            schedule = tb.strategy.choose_backward_schedule(self.graph, role_sizes(self.graph, sizes), device_type, acc)
        if schedule is None:  # the cost model's choice (ssmc.backends.triton.strategy)
            schedule = tb.strategy.choose_schedule(self.graph, role_sizes(self.graph, sizes), device_type, acc)
        if sizes and largest_tensor(self.graph, sizes) >= 2 ** 31 and not schedule.wide:
            schedule = replace(schedule, wide=True)  # 32-bit element offsets would overflow
        return tb.build(self.graph, schedule, acc)  # cached by (graph, schedule, acc) across Compiled objects

    def __call__(self, **arrays):
        """Run on keyword arrays; an argument named like an output is a buffer to write it into."""
        arrays = {k: v for k, v in arrays.items() if v is not None}
        outs = {k: arrays.pop(k) for k in list(arrays) if k in self.output_names}
        if not outs and (needs_grad(arrays) or tracing(arrays)):  # one custom op: the derived backward as its
            from . import autograd  # autograd, traced whole (torch glue: torch tensors are in hand)
            return autograd.run_compiled(self, arrays)
        return self.run(arrays, outs)

    def _bind(self, inputs: dict) -> dict:
        """bind(), remembered per (name, shape, dtype) signature: decode steps repeat one signature,
        and binding again costs more than their kernel's launch."""
        key = tuple((k, tuple(v.shape), v.dtype) for k, v in inputs.items() if hasattr(v, "shape"))
        if len(key) != len(inputs):  # something shapeless: bind says what is wrong
            return bind(self.graph, inputs)
        sizes = self._bound.get(key)
        if sizes is None:
            sizes = bind(self.graph, inputs)
            if len(self._bound) > 64:
                self._bound.clear()
            self._bound[key] = sizes
        return dict(sizes)

    @property
    def backward_graph(self) -> Graph:
        """The backward graph (ssmc.ir.passes.adjoint): forward inputs and `grad_<output>` in,
        `grad_<input>` out."""
        if self.staged is not None:
            raise NotImplementedError(f"{self.graph.name}: a multi-stage graph's backward is its steps' backward "
                                      f"graphs, chained in reverse (Compiled.grad runs them)")
        return _backward(self.graph)

    def grad(self, inputs: dict, grads: dict, outs: dict | None = None) -> dict:
        """Gradients of every floating-point input, {`grad_<input>`: array}, given the cotangents
        of the outputs `grads` ({output name: array}; a missing or None one counts as zero).

        `outs` may hold preallocated `grad_<input>` buffers (torch backend), written in place.
        """
        inputs = {k: v for k, v in inputs.items() if v is not None}
        unknown = set(grads) - set(self.graph.outputs)
        if unknown:
            raise ValueError(f"grads: {sorted(unknown)} are not outputs of {self.graph.name}; "
                             f"outputs are {list(self.graph.outputs)}")
        sizes = bind(self.graph, inputs)
        inputs = self._derive_inputs(inputs, sizes)
        full = dict(inputs)
        for name, i in self.graph.outputs.items():
            node = self.graph[i]
            shape = tuple(sizes[a.symbol] for a in node.attr("axes"))
            ct = grads.get(name)
            if ct is None:
                ct = zeros_like_output(node, shape, inputs)
            elif tuple(ct.shape) != shape:
                raise ValueError(f"grads[{name!r}]: expected shape {shape}, got {tuple(ct.shape)}")
            full[f"grad_{name}"] = ct
        if self.staged is None and has_permuted_orders(self.graph):  # derived through the unfolded orders
            return self._unfolded().grad(inputs, grads, outs)
        if self.staged is not None:
            self._check_orders(inputs, sizes)
            floats = [self.graph[i].attr("name") for i in self.graph.ids("input")
                      if not self.graph[i].attr("integer") and not self.graph[i].attr("derived")]
            res = self.staged.grad(inputs, {k: full[f"grad_{k}"] for k in self.graph.outputs}, floats,
                                   role_sizes(self.graph, sizes))
            for k, buf in (outs or {}).items():
                buf[...] = res[k]
                res[k] = buf
            return res
        return self._backward_form().run(full, outs)

    def _unfolded(self) -> "Compiled":
        """This graph with its gather and grid orders unfolded into permutation steps (ssmc.ir.passes.unfold):
        a multi-stage graph whose gradient is derived step by step."""
        if "unfolded" not in self._forms:
            self._forms["unfolded"] = compile_ssm(unfold_orders(self.graph), self.backend, None, self.precision)
        return self._forms["unfolded"]

    def _backward_form(self) -> "Compiled":
        if "backward" not in self._forms:  # a Schedule or ChunkedSchedule carries over; "autotune" does not
            sched = None if isinstance(self.schedule, (str, dict)) else self.schedule
            self._forms["backward"] = Compiled(self.backward_graph, (), self.backend, sched, self.precision)
        return self._forms["backward"]

    def backward_kernel(self, sizes: dict | None = None, device_type: str = "cpu", acc: str = "float32"):
        """The generated Triton backward kernel (see `kernel`)."""
        return self._backward_form().kernel(sizes, device_type, acc)

    def step(self, state, **inputs):
        """Advance the recurrence in place and return the outputs of the tokens given.

        Inputs without the time axis are one token (a generated single-step kernel); with it,
        k tokens (the full kernel started from `state`).  `state` has the final-state layout
        and is overwritten with the state after the last token.
        """
        if self.staged is not None:
            raise NotImplementedError(f"{self.graph.name}: decode (step) of a multi-stage graph (several scans or a "
                                      f"lag) is not derived yet")
        form = self._decode_form(inputs)
        check_state(form.graph, state)
        res = form.run({**{k: v for k, v in inputs.items() if v is not None}, "state": state}, {"state": state})
        res.pop("state")
        return res

    def _decode_form(self, inputs) -> "Compiled":
        declared = self.trace[0][1]
        timed = {self.graph[i].attr("name"): any(a.role == "t" for a in self.graph[i].attr("axes"))
                 for i in self.graph.ids("input")}
        rank = {self.graph[i].attr("name"): len(self.graph[i].attr("axes")) for i in self.graph.ids("input")}
        probe = next((k for k, v in inputs.items() if v is not None and timed.get(k)), None)
        multi = probe is not None and len(getattr(inputs[probe], "shape", ())) == rank[probe]
        key = "tokens" if multi else "step"
        if key not in self._forms:
            graph = stateful(declared) if multi else single_step(declared)
            self._forms[key] = compile_ssm(graph, self.backend, self.schedule if multi else None, self.precision)
        return self._forms[key]

    def run(self, inputs: dict, outs: dict | None = None) -> dict:
        """Run on a dict of input arrays, writing into the buffers in `outs` where given."""
        outs = dict(outs or {})
        inputs = {k: v for k, v in inputs.items() if v is not None}
        sizes = self._bind(inputs)
        use_torch = any(is_torch(v) for v in inputs.values())
        for k, v in outs.items():  # written in place: it must be of the inputs' kind
            if is_torch(v) != use_torch:
                raise TypeError(f"{k}: expected a {'torch tensor' if use_torch else 'NumPy array'} like the other "
                                f"arguments, got {type(v).__module__}.{type(v).__name__}")
        inputs = self._derive_inputs(inputs, sizes)
        self._check_orders(inputs, sizes)
        backend = self.backend
        if backend == "auto":
            backend = "triton" if use_torch and device_of(inputs).type == "cuda" else "numpy"
        if backend == "numpy":
            arrays = {k: to_numpy(v) for k, v in inputs.items()}
            res = numpy_interp.run(self.graph, arrays, self.precision, sizes)
            if not use_torch:
                return fill_numpy(res, outs)
            return convert_back(res, inputs, self.graph, outs)
        if self.staged is not None:
            return self._run_staged(inputs, use_torch, outs, sizes)
        return self._run_triton(inputs, use_torch, outs, sizes)

    def _derive_inputs(self, inputs: dict, sizes: dict) -> dict:
        """The inputs with the derived ones added: a partial order's index completed and its visited mask
        (ssmc.ir.passes.partial), a grid order's permutations; as they are where a caller (a step of this
        graph's own plan) passes them already."""
        if all(name in inputs for name, _ in self.derived):
            return inputs
        inputs, L = dict(inputs), role_sizes(self.graph, sizes)["t"]
        wide = any(str(getattr(v, "dtype", "")) in ("float64", "torch.float64") for v in inputs.values())
        like = next((v for v in inputs.values() if is_torch(v)), None)
        for name, src in self.derived:
            if not isinstance(src, str):
                inputs[name] = grid_index(src, L, None if like is None else like.device)
                continue
            full, visited = complete_order(src, inputs[src], self._time_axis(src), L)
            inputs[src], inputs[name] = full, visited.float() if is_torch(visited) and not wide else visited
        return inputs

    def _check_orders(self, inputs: dict, sizes: dict) -> None:
        """Every order's index a permutation along time, before any step reads it."""
        for name, axis in self.orders:
            check_permutation(name, inputs[name], axis, role_sizes(self.graph, sizes)["t"])

    def _run_staged(self, inputs, use_torch, outs, sizes):
        import torch  # (the Triton backend runs on torch tensors)
        device = device_of(inputs) if use_torch else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if not use_torch:
            inputs = as_torch(inputs, device)
        env = self.staged.forward(inputs, role_sizes(self.graph, sizes))
        res = {k: env[k] for k in self.output_names}
        if not use_torch:
            return fill_numpy({k: torch_to_numpy(v) for k, v in res.items()}, outs)
        for k, buf in outs.items():
            buf.copy_(res[k])
            res[k] = buf
        return res

    def _run_triton(self, inputs, use_torch, outs, sizes):
        import torch  # (the Triton backend runs on torch tensors)
        if use_torch:
            device = device_of(inputs)
        else:  # NumPy arrays: run on the GPU when there is one, else under the interpreter
            device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        tb.ensure_runtime(device.type)
        # float64 torch tensors are computed in float64 (gradcheck); NumPy arrays in fp32, as before
        wide = (torch.float64, torch.complex128)
        acc = "float64" if use_torch and any(getattr(v, "dtype", None) in wide for v in inputs.values()) else "float32"
        tensors = {}
        for i in self.graph.ids("input"):
            n = self.graph[i]
            name = n.attr("name")
            tensors[name] = as_kernel_tensor(inputs[name], n, device, acc)
        if self.schedule == "autotune":  # times candidates on these tensors, once per sizes
            key = (tuple(sorted(sizes.items())), device.type, acc)
            if key not in self._kernels and largest_tensor(self.graph, sizes) < 2 ** 31:
                self._kernels[key] = autotune(self.graph, sizes, role_sizes(self.graph, sizes), device, acc, tensors)
        kernel = self.kernel(sizes, device.type, acc)
        if use_torch:
            buffers = {param_name(self.graph, self.graph[i]): outs[self.graph[i].attr("name")]
                       for i in self.graph.ids("output") if self.graph[i].attr("name") in outs}
            return kernel(**tensors, **buffers)
        res = kernel(**tensors)
        return fill_numpy({k: torch_to_numpy(v) for k, v in res.items()}, outs)


@lru_cache(maxsize=256)
def _backward(graph: Graph) -> Graph:
    return adjoint(graph)


def compile_ssm(decl, backend: str = "auto", schedule=None, precision: str = "float64") -> Compiled:
    """Run the passes on a Spec / Graph / library name and bind it to a backend (public as `ssmc.compile`)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if precision not in ("float64", "float32"):  # checked now, not at the first call
        raise ValueError(f"precision must be 'float64' or 'float32', got {precision!r}")
    graph, trace = optimize(_to_graph(decl))
    if isinstance(schedule, str) and schedule != "autotune":
        raise ValueError(f"schedule: expected a Schedule, a ChunkedSchedule, a dict or 'autotune', got {schedule!r}")
    if isinstance(schedule, dict):  # else a Schedule, a ChunkedSchedule or "autotune"
        known = [f.name for f in fields(tb.Schedule)]
        unknown = sorted(set(schedule) - set(known))
        if unknown:
            raise TypeError(f"schedule: unknown key(s) {unknown}; a Schedule's keys are {known}")
        schedule = tb.Schedule(**schedule)
    return Compiled(graph, trace, backend, schedule, precision)


@lru_cache(maxsize=512)
def cached_compile(decl, backend: str) -> Compiled:
    """One Compiled per (declaration, backend), shared: the drop-in ops pick a Spec per call from their
    arguments and compile it once."""
    return compile_ssm(decl, backend=backend)
