"""Source of the `launch` function of a generated module: shapes, outputs, grid, kernel call.

The launcher trusts its caller: `ssmc.bind` has checked every shape before a kernel is built.
"""
from __future__ import annotations


def _sizes(inputs) -> tuple:
    """Lines binding every symbol and role size from the first input axis that names it."""
    lines, seen, role_sym = [], set(), {}
    for n in inputs:
        for k, ax in enumerate(n.attr("axes")):
            role_sym.setdefault(ax.role, ax.symbol)
            if ax.symbol not in seen:
                seen.add(ax.symbol)
                lines.append(f"n_{ax.symbol} = {n.attr('name')}.shape[{k}]")
    r = lambda role, default: f"n_{role_sym[role]}" if role in role_sym else default
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
        return [f"    {p} = torch.zeros(({shape},), device=device, dtype={dtype}) if {p} is None else {p}.zero_()"]
    return [f"    if {p} is None:", f"        {p} = torch.empty(({shape},), device=device, dtype={dtype})"]


def launch_header(graph, inputs, outputs, doc: str) -> list:
    """The first lines of a `launch` function: keyword signature, docstring, schedule, sizes, device."""
    from .codegen import param_name
    names = [n.attr("name") for n in inputs]
    sig = ", ".join(names + [f"{param_name(graph, n)}=None" for n in outputs] + ["schedule=None"])
    return [f"def launch(*, {sig}):", f'    """{doc}"""', "    sched = dict(SCHEDULE, **(schedule or {}))",
            *["    " + s for s in _sizes(inputs)], f"    device = {names[0]}.device"]


def _out_dtype(graph, out, inputs, acc="float32") -> str:
    wide = acc == "float64"  # float64 tensors in: states and complex outputs in double precision too
    if out.type.complex:  # never a real input's dtype: the kernel writes through view_as_real
        return "torch.complex128" if wide else "torch.complex64"
    if graph[out.args[0]].op == "last":
        return f"torch.{acc}"
    for n in inputs:  # the dtype of the input with the same layout (mamba_ssm: out has u's dtype)
        if n.attr("axes") == out.attr("axes") and not n.attr("complex"):
            return f"{n.attr('name')}.dtype"
    return f"torch.{acc}"


def launcher_source(graph, kname, inputs, outputs, acc="float32") -> str:
    from .codegen import has_repeat_axis, param_name, per_group_order
    outs = [param_name(graph, n) for n in outputs]
    lines = launch_header(graph, inputs, outputs, "Run the fused kernel on torch tensors of one device; "
                                                  "returns {output name: tensor}.")
    args = []
    merged = []  # outputs summed over blocks of channels: zeros in the arithmetic dtype, atomic adds, then theirs
    for n in inputs + outputs:
        p, cplx = param_name(graph, n), n.attr("complex") or (n.op == "output" and n.type.complex)
        if n.op == "output":
            shape = ", ".join(f"n_{a.symbol}" for a in n.attr("axes"))
            dtype = _out_dtype(graph, n, inputs, acc)
            if any(a.role == "r" for a in n.attr("axes")):
                merged.append((p, dtype))
                lines.append(f"    {p}_given = {p}")
                lines.append(f"    {p} = torch.zeros(({shape},), device=device, dtype=torch.{acc})")
            else:
                lines += output_buffer(p, shape, dtype)
        line, arg = kernel_arg(p, len(n.attr("axes")), cplx)
        lines.append(line)
        args.append(arg)
    lines += _grid_check(graph)
    lines += [
        "    BLOCK_N = triton.next_power_of_2(N)",
        "    BLOCK_D = triton.next_power_of_2(NCH) if MIMO else min(sched['block_d'], triton.next_power_of_2(NCH))",
        # MIMO regions scan step by step: on an H100 (Triton 3.6) tl.associative_scan over the
        # channel-reduced MIMO state gave wrong results that the CPU interpreter does not show.
        "    CHUNK = 1 if MIMO else min(sched['chunk'], triton.next_power_of_2(L))",
        *(["    while (HG * P) % BLOCK_D:  # an order per group: keep each block of channels in one group",
           "        BLOCK_D //= 2"] if per_group_order(graph) else []),
        "    grid = (batch, triton.cdiv(NCH, BLOCK_D))",
        "    global LAST_COMPILED  # the compiled kernel of the last launch (registers, spills) for tuning",
        f"    LAST_COMPILED = {kname}[grid](",
        *[f"        {a}," for a in args],
        "        L, NCH, P, N, HG," + (" R," if has_repeat_axis(graph) else ""),  # as the kernel's symbols
        "        BLOCK_D=BLOCK_D, BLOCK_N=BLOCK_N, CHUNK=CHUNK, EVEN_D=NCH % BLOCK_D == 0, EVEN_N=N == BLOCK_N,",
        "        EVEN_L=L % CHUNK == 0, num_warps=sched['num_warps'],",
        "    )",
        *[f"    {p} = {p}.to({dtype}) if {p}_given is None else {p}_given.copy_({p})" for p, dtype in merged],
        "    return {" + ", ".join(f"{n.attr('name')!r}: {o}" for n, o in zip(outputs, outs)) + "}",
    ]
    return "\n".join(lines)


def _grid_check(graph) -> list:
    """Lines refusing inputs of a grid-order scan whose length is not H·W, or whose B/C groups are not one
    per named order."""
    from .grid import grid_map
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


def backward_launcher_source(graph, kname, inputs, outputs, atomic, parts, acc, blocks=frozenset()) -> str:
    """`launch` of a backward kernel: gradients in the arithmetic dtype (fp32, or fp64 for float64
    inputs); those finished by atomic adds start from zeros; those in `blocks` are written per
    block of channels into a (blocks, ...) buffer and summed here; a checkpoint buffer of one state
    per chunk (batch, chunks, channels, N, parts)."""
    from .codegen import param_name
    outs = [param_name(graph, n) for n in outputs]
    real = f"torch.{acc}"
    cplx = "torch.complex128" if acc == "float64" else "torch.complex64"
    lines = launch_header(graph, inputs, outputs, "Run the backward kernel on torch tensors of one device; "
                                                  "returns {gradient name: tensor}.")
    grouped = any(a.role == "g" for n in outputs if n.attr("name") in blocks for a in n.attr("axes"))
    lines += [
        "    BLOCK_N = triton.next_power_of_2(N)",
        "    BLOCK_D = triton.next_power_of_2(NCH) if MIMO else min(sched['block_d'], triton.next_power_of_2(NCH))",
        *(["    while (HG * P) % BLOCK_D:  # per-block gradients of a B/C group: keep each block in one group",
           "        BLOCK_D //= 2"] if grouped else []),
        # blocks writing one slice of a per-block buffer: all of them, or those of one group
        f"    NBLK = {'(HG * P) // BLOCK_D' if grouped else 'triton.cdiv(NCH, BLOCK_D)'}",
    ]
    args = []
    for n in inputs + outputs:
        p = param_name(graph, n)
        cx = n.attr("complex") or (n.op == "output" and n.type.complex)
        if n.op == "output":
            shape = ", ".join(f"n_{a.symbol}" for a in n.attr("axes"))
            dtype = cplx if cx else real
            if n.attr("name") in blocks:  # per block of channels: a (blocks, ...) buffer, summed below
                lines.append(f"    {p}_given = {p}")
                lines.append(f"    {p}_blocks = torch.empty((NBLK, {shape},), device=device, dtype={dtype})")
                lines.append(f"    {p} = {p}_blocks[0]")
            else:
                lines += output_buffer(p, shape, dtype, zeroed=n.attr("name") in atomic)
        line, arg = kernel_arg(p, len(n.attr("axes")), cx)
        lines.append(line)
        args.append(arg)
    lines += [
        "    CHUNK = 1 if MIMO else min(sched['chunk'], triton.next_power_of_2(L))  # MIMO: see the forward's launcher",
        "    NCK = triton.cdiv(L, CHUNK)",
        "    # a checkpoint every M chunks; chunk start states of one segment at a time in `scratch`",
        "    T = sched.get('checkpoint') or triton.next_power_of_2(int((L * CHUNK) ** 0.5))",
        "    M = max(1, min(T // CHUNK, NCK))",
        "    NSEG = triton.cdiv(NCK, M)",
        f"    ckpt = torch.empty((batch, NSEG, NCH, N, {parts}), device=device, dtype={real})",
        f"    scratch = torch.empty((batch, M, NCH, N, {parts}), device=device, dtype={real})",
        "    grid = (batch, triton.cdiv(NCH, BLOCK_D))",
        "    global LAST_COMPILED, LAST_WORKSPACE",
        "    LAST_WORKSPACE = dict(checkpoints=NSEG, chunk_states=M, bytes=ckpt.nbytes + scratch.nbytes)",
        f"    LAST_COMPILED = {kname}[grid](",
        *[f"        {a}," for a in args],
        "        ckpt, scratch, L, NCH, P, N, HG, NCK, M, NSEG,",
        *[f"        {param_name(graph, n)}_blocks.stride(0)," for n in outputs if n.attr("name") in blocks],
        "        BLOCK_D=BLOCK_D, BLOCK_N=BLOCK_N, CHUNK=CHUNK, EVEN_D=NCH % BLOCK_D == 0, EVEN_N=N == BLOCK_N,",
        "        num_warps=sched['num_warps'],",
        "    )",
        *[f"    {p} = {p}_blocks.sum(0) if {p}_given is None else torch.sum({p}_blocks, 0, out={p}_given)"
          for p in (param_name(graph, n) for n in outputs if n.attr("name") in blocks)],
        "    return {" + ", ".join(f"{n.attr('name')!r}: {o}" for n, o in zip(outputs, outs)) + "}",
    ]
    return "\n".join(lines)
