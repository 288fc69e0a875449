"""Running a multi-stage graph (`ssmc.ir.stages`): its steps in order, and its gradient by the chain
rule through them in reverse.

Each kernel step is a Compiled of its own (its kernel, its derived backward); a time step (a lag, a
pool over time) runs on the arrays' device, its gradient written out here.  A step without a scan
(the elementwise combination after the scans) has no recurrent backward kernel: its gradient is the
elementwise graph of
`adjoint(..., defer_reduce=True)`, run as a forward kernel, then summed over the broadcast axes here.
Materialized values are kept in fp32 (fp64 when fp64 tensors come in) whatever the inputs' dtype, as
a fused kernel keeps its registers.
"""
from __future__ import annotations

import numpy as np

from ssmc.backends import numpy_interp
from ssmc.backends.triton import timeops
from ssmc.ir import ROLES
from ssmc.ir.passes.adjoint import DeferredSumsDisagree, adjoint
from ssmc.ir.stages import Plan
from ssmc.ir.types import value_role

from .arrays import is_torch


class Staged:
    def __init__(self, plan: Plan, make):
        """`make(graph, backend=None)`: the Compiled of a kernel step's graph (on the given backend)."""
        self.plan = plan
        self.fns = [make(st.graph) if st.graph is not None else None for st in plan.steps]
        self.flat_grads = [_flat_form(fn, make) if fn is not None and not fn.graph.ids("scan") else None
                           for fn in self.fns]

    @property
    def source(self) -> str:
        return "\n\n".join(f"# --- step {k}: kernel of {fn.graph.name}\n{fn.source}"
                           if fn is not None else f"# --- step {k}: {st.target} = {st.op.op}({', '.join(st.sources)}, "
                           f"{dict(st.op.attrs)}) (between kernels)"
                           for k, (st, fn) in enumerate(zip(self.plan.steps, self.fns)))

    def _buffers(self, fn, env, roles) -> dict:
        """fp32 (fp64) buffers for the values a step materializes: torch only (NumPy runs in float64)."""
        sample = next((v for v in env.values() if is_torch(v) and v.is_floating_point()), None)
        if sample is None:
            return {}
        import torch  # (a torch tensor is in hand)
        wide = any(is_torch(v) and v.dtype in (torch.float64, torch.complex128) for v in env.values())
        out = {}
        for name in fn.output_names:
            if name in self.plan.layouts:
                node = fn.graph[fn.graph.outputs[name]]
                dtype = ((torch.complex128 if wide else torch.complex64) if node.type.complex
                         else torch.float64 if wide else torch.float32)
                shape = tuple(roles[a.role] for a in self.plan.layouts[name])
                out[name] = torch.empty(shape, dtype=dtype, device=sample.device)
        return out

    def forward(self, inputs: dict, roles: dict) -> dict:
        """Every value: the inputs, the materialized values and the outputs."""
        env = dict(inputs)
        floats = [v for v in inputs.values() if is_torch(v) and v.is_floating_point()]
        for name, value in self.plan.consts.items():  # scalars a time step reads, in the inputs' kind
            env[name] = floats[0].new_tensor(value) if floats else np.array(value, np.float64)
        for st, fn in zip(self.plan.steps, self.fns):
            if fn is not None:
                env.update(fn.run({n: env[n] for n in fn.graph.inputs if n in env}, self._buffers(fn, env, roles)))
            else:
                env[st.target] = self._time_forward(env, st, roles)
        return env

    def grad(self, inputs: dict, cotangents: dict, float_inputs: list, roles: dict) -> dict:
        """{`grad_<input>`} of the float inputs, given the outputs' cotangents."""
        env = self.forward(inputs, roles)
        ct = {k: v for k, v in cotangents.items() if v is not None}

        def add(name, v):
            ct[name] = v if name not in ct else ct[name] + v
        for st, fn, flat in reversed(list(zip(self.plan.steps, self.fns, self.flat_grads))):
            if fn is not None:
                given = {o: ct[o] for o in fn.output_names if o in ct}
                if not given:
                    continue
                args = {n: env[n] for n in fn.graph.inputs if n in env}
                if flat is None or fn.backend == "numpy":  # (the interpreter sums over any axis itself)
                    res = fn.grad(args, given)
                elif flat[0] == "host":
                    res = _on_host(flat[1], args, given)
                else:
                    res = _flat_grad(fn, flat[1], args, given, roles)
                for n in fn.graph.inputs:
                    if f"grad_{n}" in res and n in env:
                        add(n, res[f"grad_{n}"])
            elif st.target in ct:
                for name, g in self._time_backward(env, ct[st.target], st, roles).items():
                    add(name, g)
        out = {}
        for name in float_inputs:
            x = inputs[name]
            g = ct.get(name)
            if g is None:
                g = _zeros_like(x)
            out[f"grad_{name}"] = g
        return out

    def _time_forward(self, env, st, roles: dict):
        """A time step: its operator on its sources (canonical), laid out like its target."""
        node, L = st.op, roles["t"]
        xs = [_canonical(env[name], self.plan.layouts[name], roles) for name in st.sources]
        ops = timeops if is_torch(xs[0]) else numpy_interp
        aux = _canonical(env[st.aux], self.plan.layouts[st.aux], roles) if st.aux else None
        if node.op == "lag":
            y = ops.lag(xs[0], node.attr("k"), L, aux)
        elif node.op == "permute":
            y = ops.permute(xs[0], aux, node.attr("inverse"))
        elif node.op == "pool":
            y = ops.pool(xs[0], node.attr("mean"), L)
        else:
            y = ops.causal_conv(xs[0], xs[1], L)
        return self._laid_out(y, st.target, roles)

    def _time_backward(self, env, c, st, roles: dict) -> dict:
        """The cotangents of a time step's sources, given its target's `c`: each laid out like its source
        and summed over the axes the source lacks."""
        node, L = st.op, roles["t"]
        c = _canonical(c, self.plan.layouts[st.target], roles)
        torch_ = is_torch(c)
        ops = timeops if torch_ else numpy_interp
        aux = _canonical(env[st.aux], self.plan.layouts[st.aux], roles) if st.aux else None
        if node.op == "lag":  # x_{t-k} is read at t: x_s's cotangent is the lag by -k of the cotangent
            grads = [ops.lag(c, -node.attr("k"), L, aux)]
        elif node.op == "permute":  # a permutation's transpose is its inverse
            grads = [ops.permute(c, aux, not node.attr("inverse"))]
        elif node.op == "pool":  # every step's x_t took part, with weight 1 (1 / L for a mean)
            full = (c.shape[0], L) + tuple(c.shape[2:])
            grads = [c.expand(full) if torch_ else np.broadcast_to(c, full)]
            grads[0] = grads[0] / L if node.attr("mean") else grads[0]
        else:  # y_t = Σ_k w_k x_{t-k}: dx_s = Σ_t c_t w_{t-s}, dw_k = Σ_t c_t x_{t-k} (time-reversed convolutions)
            x, w = (_canonical(env[name], self.plan.layouts[name], roles) for name in st.sources)
            flip = (lambda v: v.flip(1)) if torch_ else (lambda v: v[:, ::-1])
            grads = [flip(ops.causal_conv(flip(c), w, L)), flip(ops.causal_conv(flip(c), x, L))]
        return {name: self._laid_out(g, name, roles) for name, g in zip(st.sources, grads)}

    def _laid_out(self, y, name: str, roles: dict):
        """A canonical value in the layout of the value `name`, summed over the axes that layout lacks."""
        torch_ = is_torch(y)
        dst = self.plan.layouts[name]
        kept = {a.role for a in dst}
        drop = tuple(d for d, r in enumerate(ROLES) if r not in kept and y.shape[d] > 1)
        if drop:
            y = y.sum(dim=drop, keepdim=True) if torch_ else y.sum(axis=drop, keepdims=True)
        have_roles = [r for r in ROLES if r in kept]
        y = y.reshape([roles[r] for r in have_roles])  # canonical order, the size-1 axes dropped
        perm = [have_roles.index(a.role) for a in dst]
        y = y.permute(perm) if torch_ else np.transpose(y, perm)
        return y.contiguous() if torch_ else np.ascontiguousarray(y)


def _flat_form(fn, make) -> tuple:
    """How a scan-less step's gradient is taken on the Triton backend: ("flat", its deferred-reduction
    backward); where that cannot hold (DeferredSumsDisagree), ("host", the step on the NumPy interpreter),
    a round trip through host memory."""
    try:
        return "flat", make(adjoint(fn.graph, defer_reduce=True))
    except DeferredSumsDisagree:
        return "host", make(fn.graph, "numpy")


def _on_host(fn, args: dict, given: dict) -> dict:
    """fn.grad on the NumPy interpreter for torch tensors: the gradients back on their device and dtype."""
    if not any(is_torch(v) for v in args.values()):
        return fn.grad(args, given)
    import torch  # (a torch tensor is in hand)
    host = {k: v.detach().cpu().numpy() if is_torch(v) else v for k, v in {**args, **given}.items()}
    res = fn.grad({k: host[k] for k in args}, {k: host[k] for k in given})
    return {name: torch.from_numpy(np.ascontiguousarray(g)).to(device=args[name[5:]].device,
                                                                dtype=args[name[5:]].dtype)
            for name, g in res.items()}


def _flat_grad(fn, flat, args: dict, given: dict, roles: dict) -> dict:
    """The gradients of a scan-less step from its deferred-reduction backward `flat`: each grad_<input>
    comes with the axes its input broadcasts over after its own, summed here."""
    feed = dict(args)
    for name in fn.output_names:
        ct = given.get(name)
        if ct is None:  # no cotangent: zeros of the output's shape
            axes = fn.graph[fn.graph.outputs[name]].attr("axes")
            sample = next(iter(given.values()))
            shape = tuple(roles[a.role] if a.role in roles else sample.shape[0] for a in axes)
            ct = sample.new_zeros(shape) if is_torch(sample) else np.zeros(shape)
        feed[f"grad_{name}"] = ct
    res = flat.run(feed)
    out = {}
    for name, x in args.items():
        g = res.get(f"grad_{name}")
        if g is None:
            continue
        extra = tuple(range(len(x.shape), len(g.shape)))
        if extra:
            g = g.sum(dim=extra) if is_torch(g) else g.sum(axis=extra)
        out[f"grad_{name}"] = g
    return out


def _canonical(x, axes, roles):
    """An array laid out along `axes` (value roles, any order; a group axis repeated out to the heads)
    as a canonical 5-axis array."""
    for k, a in enumerate(axes):
        if a.role == "g":  # channel h reads group h // (H / G)
            rep = roles["h"] // roles["g"]
            x = x.repeat_interleave(rep, dim=k) if is_torch(x) else np.repeat(x, rep, axis=k)
    have = [value_role(a.role) for a in axes]
    perm = [have.index(r) for r in ROLES if r in have]
    x = x.permute(perm) if is_torch(x) else np.transpose(x, perm)
    return x.reshape([roles[r] if r in have else 1 for r in ROLES])


def _zeros_like(x):
    if is_torch(x):
        import torch  # (a torch tensor is in hand)
        return torch.zeros_like(x, dtype=x.dtype if x.is_floating_point() or x.is_complex() else torch.float32)
    x = np.asarray(x)
    return np.zeros(x.shape, np.complex128 if np.iscomplexobj(x) else np.float64)


__all__ = ["Staged"]
