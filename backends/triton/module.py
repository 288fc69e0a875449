"""The generated module around a kernel: one header (docstring, imports, schedule, helpers) and one
`launch` generator, fed by a small description of the kernel's launch.

A generated module needs only torch and triton.  Its `launch(**tensors)` trusts its caller:
`ssmc.ir.bind` has checked every shape before a kernel is built.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .emitter import param_name
from .time_loop import grid_map

CODEGEN_VERSION = "5"
SSD_VERSION = "1"  # the chunked kernels' own version, appended to CODEGEN_VERSION

# The generated modules' fp32 log2: on the GPU the special-function unit's (MUFU.LG2, absolute error
# ~2^-22), where tl.log2 is libdevice's much longer polynomial, and softplus takes one per channel and
# step.  The CPU interpreter has no libdevice; there it is tl.log2.
# And loads widened from bf16 to fp32 by their bits (exact: a bf16 is the top half of an fp32).  Two
# bf16 share a 32-bit register; written as a shift, LLVM widens the low one with a shift and the high
# one with a mask, where Triton's conversion moves each high half down (PRMT) and back up: fewer
# instructions per element (BENCHMARKS.md, "Mamba-1 schedules" and "Tried and rejected").
FAST_MATH = '''
if os.environ.get("TRITON_INTERPRET", "0") == "1":
    @triton.jit
    def _log2_approx(x):
        return tl.log2(x)

    @triton.jit
    def _dense(x):  # the interpreter's atomic_add reads a broadcast (stride-0) tile as if it were dense
        return x + tl.zeros(x.shape, x.dtype)
else:
    from triton.language.extra import libdevice

    @triton.jit
    def _log2_approx(x):
        return libdevice.fast_log2f(x)

    @triton.jit
    def _dense(x):
        return x


@triton.jit
def _widen(x):
    if x.dtype == tl.bfloat16:
        return (x.to(tl.uint16, bitcast=True).to(tl.uint32) << 16).to(tl.float32, bitcast=True)
    else:
        return x.to(tl.float32)
'''

COMBINE = '''@triton.jit
def _combine_real(a1, x1, a2, x2):
    # (Ā1, x1) then (Ā2, x2): h -> Ā2 (Ā1 h + x1) + x2
    return a1 * a2, x1 * a2 + x2


@triton.jit
def _combine_complex(a1r, a1i, x1r, x1i, a2r, a2i, x2r, x2i):
    return (a1r * a2r - a1i * a2i, a1r * a2i + a1i * a2r,
            x1r * a2r - x1i * a2i + x2r, x1r * a2i + x1i * a2r + x2i)
'''
"""The associative scan's combine functions (recurrent kernels)."""

DOT = '''@triton.jit
def _dot(a, b, DOT: tl.constexpr):
    # bf16/fp16 inputs: tensor cores on that type, fp32 accumulation; fp32 inputs: 3xTF32 (≈ fp32)
    if DOT == 1:
        return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16))
    elif DOT == 2:
        return tl.dot(a.to(tl.float16), b.to(tl.float16))
    else:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="tf32x3")
'''
"""The tensor-core product in the inputs' 16-bit type or 3xTF32 (chunked kernels)."""

RECURRENT_HELPERS = "\n\n" + COMBINE + "\n" + FAST_MATH + "\n"
CHUNKED_HELPERS = FAST_MATH + "\n\n" + DOT + "\n\n"


def recurrent_globals(sched, mimo: bool) -> list:
    """The module globals of a recurrent kernel (forward or backward)."""
    schedule = dict(block_d=sched.block_d, chunk=sched.chunk, num_warps=sched.num_warps, checkpoint=sched.checkpoint)
    return [f"SCHEDULE = {schedule!r}  # layout {sched.layout}, wide={sched.wide}, full_tiles={sched.full_tiles}, "
            f"prefetch={sched.prefetch}",
            f"MIMO = {mimo!r}  # all channels in one program: the state is shared across channels",
            "LAST_COMPILED = None"]


def chunked_globals(sched, extra=()) -> list:
    """The module globals of a chunked kernel (forward or backward), `extra` set to None."""
    schedule = dict(chunk=sched.chunk, block_p=sched.block_p, num_warps=sched.num_warps, num_stages=sched.num_stages)
    return [f"SCHEDULE = {schedule!r}", "LAST_COMPILED = None", *(f"{name} = None" for name in extra)]


def usage(inputs, outputs) -> str:
    def fmt(n):
        kind = "complex" if n.attr("complex") or (n.op == "output" and n.type.complex) else (
            "int" if n.attr("integer") else "float")
        return f"  {n.attr('name')}: {kind} ({', '.join(a.symbol for a in n.attr('axes'))})"
    return ("\nInputs:\n" + "\n".join(fmt(n) for n in inputs)
            + "\nOutputs:\n" + "\n".join(fmt(n) for n in outputs) + "\n")


def module_source(graph, title: str, returns: str, inputs, outputs, globals_: list, helpers: str, kernel: str,
                  launch: str) -> str:
    """A generated module: its docstring (title, usage, IR), imports, module globals (one line each),
    the helper kernels, the kernel and its `launch`."""
    return (f'"""{title}\n\nNeeds only torch and triton.  Call `launch(**tensors)`; it returns a dict of {returns}.\n'
            f"{usage(inputs, outputs)}\nIR:\n{graph.text()}\"\"\"\n"
            "import os\n\nimport torch\nimport triton\nimport triton.language as tl\n\n"
            + "".join(line + "\n" for line in globals_) + helpers + kernel + "\n\n\n" + launch + "\n")


def recurrent_module(graph, inputs, outputs, schedule, mimo: bool, kernel: str, launch: str) -> str:
    """The module of a recurrent kernel (forward or backward)."""
    return module_source(graph, f"Fused Triton kernel generated by ssmc {CODEGEN_VERSION} for the SSM `{graph.name}`.",
                         "outputs", inputs, outputs, recurrent_globals(schedule, mimo), RECURRENT_HELPERS, kernel,
                         launch)


def chunked_module(graph, title: str, returns: str, inputs, outputs, schedule, kernel: str, launch: str,
                   extra_globals=()) -> str:
    """The module of a chunked (tensor-core) kernel (forward or backward)."""
    return module_source(graph, f"{title} generated by ssmc {CODEGEN_VERSION}.{SSD_VERSION} for `{graph.name}`.",
                         returns, inputs, outputs, chunked_globals(schedule, extra_globals), CHUNKED_HELPERS, kernel,
                         launch)


# --- launch() ---------------------------------------------------------------------------------------------

@dataclass
class Launch:
    """What a kernel's `launch` does, as lines of its body (each indented by four spaces already).

    It binds the sizes, runs `before`, gives every output a buffer (`buffers`: param name -> lines) and
    every tensor its kernel arguments (through a real view when `views`), runs `after` (block sizes, the
    grid `grid` names), launches `kernel` with the tensors' arguments then `call_args`, runs `finish`
    and returns the outputs."""

    doc: str
    kernel: str
    grid: str = "grid"
    before: list = field(default_factory=list)
    buffers: dict = field(default_factory=dict)
    views: bool = True
    after: list = field(default_factory=list)
    globals_: tuple = ()  # module globals set besides LAST_COMPILED
    global_note: str = ""  # a comment on the `global` line
    workspace: list = field(default_factory=list)
    call_args: list = field(default_factory=list)
    finish: list = field(default_factory=list)


def launch_source(graph, inputs, outputs, launch: Launch) -> str:
    """The `launch` function of a generated module."""
    lines = launch_header(graph, inputs, outputs, launch.doc) + launch.before
    args = []
    for n in inputs + outputs:
        p, cplx = param_name(graph, n), n.attr("complex") or (n.op == "output" and n.type.complex)
        lines += launch.buffers.get(p, [])
        rank = len(n.attr("axes"))
        if launch.views:
            line, arg = kernel_arg(p, rank, cplx)
            lines.append(line)
            args.append(arg)
        else:
            args.append(f"{p}, *{p}.stride()[:{rank}]")
    lines += launch.after
    lines.append("    global " + ", ".join(("LAST_COMPILED",) + launch.globals_) + launch.global_note)
    lines += launch.workspace
    lines += [f"    LAST_COMPILED = {launch.kernel}[{launch.grid}](", *[f"        {a}," for a in args],
              *launch.call_args, "    )", *launch.finish]
    outs = [param_name(graph, n) for n in outputs]
    lines.append("    return {" + ", ".join(f"{n.attr('name')!r}: {o}" for n, o in zip(outputs, outs)) + "}")
    return "\n".join(lines)


def launch_header(graph, inputs, outputs, doc: str) -> list:
    """The first lines of a `launch` function: keyword signature, docstring, schedule, sizes, device."""
    names = [n.attr("name") for n in inputs]
    sig = ", ".join(names + [f"{param_name(graph, n)}=None" for n in outputs] + ["schedule=None"])
    return [f"def launch(*, {sig}):", f'    """{doc}"""', "    sched = dict(SCHEDULE, **(schedule or {}))",
            *["    " + s for s in _sizes(inputs)], f"    device = {names[0]}.device"]


def _sizes(inputs) -> list:
    """Lines binding every symbol and role size from the first input axis that names it."""
    lines, seen, role_sym = [], set(), {}
    for n in inputs:
        for k, ax in enumerate(n.attr("axes")):
            role_sym.setdefault(ax.role, ax.symbol)
            if ax.symbol not in seen:
                seen.add(ax.symbol)
                lines.append(f"n_{ax.symbol} = {n.attr('name')}.shape[{k}]")
    r = lambda role, default: f"n_{role_sym[role]}" if role in role_sym else default  # noqa: E731
    lines.append(f"L, NCH, P, N = {r('t', 1)}, {r('h', 1)} * {r('p', 1)}, {r('p', 1)}, {r('n', 1)}")
    lines.append(f"HG = {r('h', 1)} // {r('g', r('h', 1))}  # heads per B/C group")
    if "r" in role_sym:
        lines.append(f"R = {r('r', 1)}  # channels of the inputs shared by every block of channels")
    lines.append(f"batch = {r('b', 1)}")
    return lines


def kernel_arg(p: str, rank: int, cplx: bool) -> tuple:
    """(line binding `<p>_v`, the kernel arguments): pointer and strides, and for a complex tensor its
    real view and the stride to the imaginary part."""
    view = f"torch.view_as_real({p})" if cplx else p
    return f"    {p}_v = {view}", f"{p}_v, *{p}_v.stride()[:{rank}]" + (f", {p}_v.stride({rank})" if cplx else "")


def output_buffer(p: str, shape: str, dtype: str, zeroed: bool = False) -> list:
    """Lines giving output `p` a buffer when the caller passed none; a buffer finished by atomic adds
    (`zeroed`) starts from zero, the caller's too."""
    if zeroed:
        return [f"    {p} = torch.zeros({shape}, device=device, dtype={dtype}) if {p} is None else {p}.zero_()"]
    return [f"    if {p} is None:", f"        {p} = torch.empty({shape}, device=device, dtype={dtype})"]


def output_shape(n, lead: str = "") -> str:
    """The launcher's tuple expression of output n's shape (after the leading sizes `lead`, e.g. "NBLK")."""
    sizes = ([lead] if lead else []) + [f"n_{a.symbol}" for a in n.attr("axes")]
    return "(" + "".join(f"{s}, " for s in sizes).rstrip(" ") + ")"


def out_dtype(graph, out, inputs, acc="float32") -> str:
    """The dtype of a forward kernel's output: complex outputs and final states in the arithmetic
    precision, other outputs that of the input with the same layout (mamba_ssm: out has u's dtype)."""
    wide = acc == "float64"  # float64 tensors in: states and complex outputs in double precision too
    if out.type.complex:  # never a real input's dtype: the kernel writes through view_as_real
        return "torch.complex128" if wide else "torch.complex64"
    if graph[out.args[0]].op == "last":
        return f"torch.{acc}"
    for n in inputs:
        if n.attr("axes") == out.attr("axes") and not n.attr("complex") and not n.attr("integer"):
            return f"{n.attr('name')}.dtype"
    return f"torch.{acc}"


def grid_check(graph) -> list:
    """Lines refusing inputs of a grid-order scan whose length is not H·W, or whose B/C groups are not one
    per named order."""
    order = grid_map(graph)
    if order is None:
        return []
    H, W = order.grid
    lines = [f"    if L != {H * W}:",
             f"        raise ValueError(f'scan order {order}: the sequence length L={{L}} is not H×W = {H * W}')"]
    if len(order.names) == 1:
        return lines
    k = len(order.names)
    return lines + [f"    if (NCH // P) // HG != {k}:",
                    f"        raise ValueError(f'scan order {order}: {k} orders, one per group, but the inputs "
                    "have {(NCH // P) // HG} groups')"]


def dot_type_line(inputs) -> str:
    """The launcher line picking the tensor cores' operand type from the first floating-point input."""
    first_float = next(n.attr("name") for n in inputs if not n.attr("integer"))
    return f"    DOT = {{torch.bfloat16: 1, torch.float16: 2}}.get({first_float}.dtype, 0)  # tensor-core operand type"
