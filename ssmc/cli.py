"""The `ssmc` command line: list, show, check, compile, onnx, bench and demo.

    ssmc list                              the library table
    ssmc show mamba2 --passes              the IR after every pass
    ssmc check s5 --L 1,7,33               NumPy (float64) vs Triton on random inputs
    ssmc compile mamba1 -o out/            a standalone Triton module (torch + triton only)
    ssmc demo                              declare a new variant and check it, with the library
    ssmc onnx mamba2 -o m2.onnx            an ONNX graph (state in/out; --step: one decode step)
    ssmc bench --plot t.png                GPU: ssmc vs the public kernels, side by side

NAME is a library entry (`ssmc list`) or `selective_scan` / `ssd`: the full-feature specs of the
drop-in ops (every optional argument given).  Without CUDA the Triton kernels run under Triton's
CPU interpreter (TRITON_INTERPRET=1, set here before any kernel is defined).
"""
from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

TOL = 1e-5  # relative error allowed between the fp32 Triton kernels and the float64 reference


# --- names -----------------------------------------------------------------------

def _op_specs() -> dict:
    """The drop-in ops' specs with every optional argument given, and sizes to check them at."""
    from ssmc.library import DEFAULT_SIZES
    from ssmc.ir.spec import Spec
    sel = Spec("selective_scan", state="diag_real", A="direct", rule="zoh_euler", dt="softplus", dt_bias=True,
               skip="h", gate="silu", final_state=True,
               description="ssmc.ops.selective_scan with D, z, delta_bias, delta_softplus and return_last_state")
    ssd = Spec("ssd", state="scalar_head", A="direct", rule="zoh_euler", dt="softplus", dt_bias=True,
               groups=True, skip="h", gate="silu", h0=True, seq_idx=True, final_state=True,
               description="ssmc.ops.ssd with D, z, dt_bias, dt_softplus, initial_states, seq_idx "
                           "and return_final_states")
    return {"selective_scan": (sel, DEFAULT_SIZES["mamba1"]), "ssd": (ssd, DEFAULT_SIZES["mamba2"])}


def _library_names() -> list:
    from ssmc.library import ENTRIES
    return list(ENTRIES)


def _all_names() -> list:
    return _library_names() + ["selective_scan", "ssd"]


def resolve(name: str):
    """(Spec, default sizes) of a library entry or a drop-in op name."""
    from ssmc.library import DEFAULT_SIZES, ENTRIES
    if name in ENTRIES:
        return ENTRIES[name], dict(DEFAULT_SIZES[name])
    spec, sizes = _op_specs()[name]
    return spec, dict(sizes)


# --- argument types ----------------------------------------------------------------

def _lengths(text: str) -> list:
    try:
        out = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None
    if not out or any(v < 1 for v in out):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return out


def _pow2(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1 or v & (v - 1):
        raise argparse.ArgumentTypeError(f"expected a power of two (1, 2, 4, ...), got {text!r}")
    return v


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


class CLIError(Exception):
    """A user-facing error: printed as `ssmc: error: ...`, exit code 2, no traceback."""


# --- runtime ---------------------------------------------------------------------

def _device():
    """The torch device the Triton kernels run on; sets up the CPU interpreter when there is no GPU."""
    import torch
    if torch.cuda.is_available():
        return torch.device("cuda")
    os.environ["TRITON_INTERPRET"] = "1"  # before any kernel is defined
    return torch.device("cpu")


def _device_label(device) -> str:
    if device.type == "cuda":
        import torch
        return f"GPU ({torch.cuda.get_device_name()})"
    return "CPU, Triton interpreter"


def _schedule(args):
    vals = {k: getattr(args, k, None) for k in ("block_d", "chunk", "num_warps")}
    vals = {k: v for k, v in vals.items() if v is not None}
    if not vals:
        return None
    from ssmc.backends.triton import Schedule
    return Schedule(**vals)


def _rel(a, b) -> float:
    import numpy as np
    a, b = np.asarray(a), np.asarray(b)
    den = np.linalg.norm(b)
    num = np.linalg.norm(a.astype(b.dtype) - b)
    return float(num / den) if den > 0 else float(num)


def differential(ref, tri, sizes: dict, seed, device, calls: int = 1):
    """Run compiled NumPy (float64) and Triton on the same random inputs, Triton's outputs NaN-poisoned.

    Returns ({output: (relative error, number of NaNs)}, {timing name: seconds}); with calls=2 the
    Triton timing of the second call is the run without code generation.
    """
    import numpy as np
    import torch
    from ssmc.ir.inits import random_inputs

    x = random_inputs(ref.graph, sizes, seed)
    t0 = time.perf_counter()
    r = ref(**x)
    t_ref = time.perf_counter() - t0
    tensors = {}
    for k, v in x.items():
        t = torch.from_numpy(np.ascontiguousarray(v))
        if t.is_complex():
            t = t.to(torch.complex64)
        elif t.is_floating_point():
            t = t.to(torch.float32)
        tensors[k] = t.to(device)
    times = []
    for _ in range(calls):  # the first call generates and loads the kernel
        poisoned = {}
        for k, v in r.items():  # every element the kernel fails to write stays NaN
            cplx = np.iscomplexobj(v)
            poisoned[k] = torch.full(v.shape, complex("nan+nanj") if cplx else float("nan"),
                                     dtype=torch.complex64 if cplx else torch.float32, device=device)
        t0 = time.perf_counter()
        out = tri(**tensors, **poisoned)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    rows = {}
    for k, want in r.items():
        got = out[k].detach().cpu()
        got = got.to(torch.complex128 if got.is_complex() else torch.float64).numpy()
        nans = int(np.isnan(got).sum()) + int(np.isnan(want).sum())
        rows[k] = (float("nan") if nans else _rel(got, want), nans)
    return rows, dict(numpy=t_ref, triton_first=times[0], triton=times[-1])


def _ok(rows) -> bool:
    return all(nans == 0 and err <= TOL for err, nans in rows.values())


# --- subcommands -------------------------------------------------------------------

def cmd_list(args) -> int:
    from ssmc.library import ENTRIES
    header = ("name", "state", "io", "rule", "selective", "description")
    rows = []
    for name, s in ENTRIES.items():
        sel = ",".join(k for k in ("dt", "B", "C") if k in s.selective) or "LTI"
        rows.append((name, s.state, s.io, str(s.rule), sel, s.description))
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(5)]
    fmt = lambda r: "  ".join(v.ljust(w) for v, w in zip(r[:5], widths)) + "  " + r[5]
    print(fmt(header))
    print(fmt(tuple("-" * w for w in widths) + ("-" * 11,)))
    for r in rows:
        print(fmt(r))
    print()
    print("Drop-in ops (ssmc.ops), also accepted as NAME by show/check/compile:")
    for name, (s, _) in _op_specs().items():
        print(f"  {name:<15} {s.description}")
    from ssmc.library import FAMILIES
    print()
    print("Scan-order families (ssmc.library.family(NAME).run(...): ready calls of the ops, not Specs):")
    width = max(map(len, FAMILIES))
    for name, f in FAMILIES.items():
        print(f"  {name:<{width}}  {f.description}")
        print(f"  {'':<{width}}  orders: {f.orders} | merge: {f.merge} | tying: {f.tying} | op: {f.op}")
    return 0


def cmd_show(args) -> int:
    from ssmc.compiler import compile
    spec, _ = resolve(args.name)
    renderer = png_renderer() if args.png else None  # fail before printing anything
    c = compile(spec, "numpy")
    if args.passes:
        for k, (pass_name, g) in enumerate(c.trace):
            print(f"=== {k}: {pass_name} ({len(g.nodes)} nodes) ===")
            print(g.text())
        print(_lowering_choices(c.graph, c))
    else:
        print(c.graph.text(), end="")
    if args.dot:
        _write(args.dot, c.graph.to_dot())
        print(f"wrote {args.dot}")
    if args.png:
        how = render_png(c.graph, args.png, renderer)
        print(f"wrote {args.png} (rendered with {how})")
    return 0


SHOW_SIZES = {"b": 4, "t": 2048, "h": 64, "p": 64, "n": 128, "g": 1}  # Mamba-2's benchmark shape


def _lowering_choices(graph, compiled=None) -> str:
    """The Triton cost model's choices (ssmc.backends.triton.strategy) at a large and a small shape,
    for the forward graph and, when it has one, its backward graph."""
    from ssmc.backends.triton.strategy import choose, choose_backward
    small = {"b": 2, "t": 33, "h": 4, "p": 3, "n": 4, "g": 2}
    cases = (("CUDA, batch 4, L 2048, 64 channels/heads, P 64, N 128", SHOW_SIZES, "cuda"),
             ("CUDA, the test sizes (L 33, P 3, N 4)", small, "cuda"),
             ("CPU (interpreter)", SHOW_SIZES, "cpu"))
    rows = ["=== lowering (Triton cost model) ==="]
    rows += [f"{label}: {' — '.join(choose(graph, roles, device))}" for label, roles, device in cases]
    try:
        backward = compiled.backward_graph if compiled is not None else None
    except (NotImplementedError, ValueError) as e:  # no backward derived for this graph: say why
        rows.append(f"=== backward: none ({e}) ===")
        return "\n".join(rows)
    if backward is not None:
        rows.append("=== backward lowering (Triton cost model) ===")
        rows += [f"{label}: {' — '.join(choose_backward(backward, roles, device))}" for label, roles, device in cases]
    return "\n".join(rows)


def _write(path, text):
    path = Path(path)
    try:
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True)
        path.write_text(text)
    except OSError as e:
        raise CLIError(f"cannot write {path}: {e.strerror or e}") from None


def png_renderer() -> str:
    """'dot' when Graphviz is installed, else 'matplotlib' when importable; else a CLIError saying what to install."""
    if shutil.which("dot"):
        return "dot"
    try:
        import matplotlib  # noqa: F401
        import networkx  # noqa: F401
    except ImportError:
        raise CLIError("--png needs Graphviz's `dot` program (e.g. `apt-get install graphviz`) or matplotlib "
                       "(`pip install matplotlib`); neither was found.  `--dot FILE` writes the DOT source "
                       "without either.") from None
    return "matplotlib"


def render_png(graph, path, renderer: str | None = None) -> str:
    """PNG of the IR: Graphviz's `dot` if present, else networkx + matplotlib."""
    path = Path(path)
    renderer = renderer or png_renderer()
    if renderer == "dot":
        _write(path, "")  # creates the folder, checks it is writable
        res = subprocess.run([shutil.which("dot"), "-Tpng", "-o", str(path)], input=graph.to_dot(), text=True,
                             capture_output=True)
        if res.returncode:
            raise CLIError(f"dot failed: {res.stderr.strip()}")
        return "Graphviz dot"
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import networkx as nx
    g = graph.to_networkx()
    for i in g.nodes:  # layers by depth: the longest path from an input
        preds = list(g.predecessors(i))
        g.nodes[i]["layer"] = 1 + max((g.nodes[p]["layer"] for p in preds), default=-1)
    pos = {}
    for layer, ids in sorted(_by_layer(g).items()):  # order each layer by its operands' mean x
        if layer:
            ids.sort(key=lambda i: sum(pos[p][0] for p in g.predecessors(i)) / max(1, g.in_degree(i)))
        for k, i in enumerate(ids):
            pos[i] = (k - (len(ids) - 1) / 2, -layer)
    depth = 1 + max(nx.get_node_attributes(g, "layer").values())
    width = max(len(ids) for ids in _by_layer(g).values())
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * width), max(4, 0.9 * depth)))
    fill = {"input": "#cde", "output": "#cde", "scan": "#fdb"}
    nx.draw_networkx_edges(g, pos, ax=ax, arrows=True, arrowsize=8, edge_color="#888")
    texts = nx.draw_networkx_labels(g, pos, labels=nx.get_node_attributes(g, "label"), ax=ax, font_size=7,
                                    font_family="monospace")
    for i, text in texts.items():
        text.set_bbox(dict(boxstyle="round,pad=0.2", fc=fill.get(g.nodes[i]["op"], "#eee"), ec="#666"))
    ax.set_title(f"ssm {graph.name}")
    ax.axis("off")
    _write(path, "")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "networkx + matplotlib"


def _by_layer(g) -> dict:
    out = {}
    for i in g.nodes:
        out.setdefault(g.nodes[i]["layer"], []).append(i)
    return out


def cmd_check(args) -> int:
    from ssmc.compiler import compile
    spec, sizes = resolve(args.name)
    seed = args.seed if args.seed is not None else secrets.randbelow(2 ** 31)
    device = _device()
    ref, tri = compile(spec, "numpy"), compile(spec, "triton", schedule=_schedule(args))
    print(f"check {args.name}: NumPy (float64) vs Triton (fp32, {_device_label(device)}), seed {seed}, "
          f"outputs NaN-poisoned, tolerance {TOL:g}")
    print("sizes: " + ", ".join(f"{k}={v}" for k, v in sizes.items() if k != "L"))
    print(f"{'L':>6}  {'output':<14}  {'rel. error':>10}  {'NaNs':>5}  result")
    ok = True
    for L in args.L:
        rows, _ = differential(ref, tri, dict(sizes, L=L), seed, device)
        for out, (err, nans) in rows.items():
            good = nans == 0 and err <= TOL
            ok &= good
            print(f"{L:>6}  {out:<14}  {err:>10.2e}  {nans:>5}  {'ok' if good else 'FAIL'}")
    print("agree" if ok else f"DISAGREE: an error above {TOL:g}, or NaNs (outputs left unwritten or invalid)")
    return 0 if ok else 1


_VERIFY = r'''
import importlib.abc, importlib.util, sys
class _NoSsmc(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "ssmc" or name.startswith("ssmc."):
            raise ImportError("the generated module must not import ssmc")
sys.meta_path.insert(0, _NoSsmc())
spec = importlib.util.spec_from_file_location("ssmc_generated_module", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
assert callable(mod.launch), "no launch() function"
import torch, triton
print(f"torch {torch.__version__}, triton {triton.__version__}")
'''


def verify_standalone(path: Path) -> str:
    """Import a generated module in a fresh interpreter where `ssmc` cannot be imported."""
    res = subprocess.run([sys.executable, "-I", "-c", _VERIFY, str(path.resolve())], capture_output=True,
                         text=True, cwd=path.resolve().parent)
    if res.returncode:
        raise CLIError(f"{path} does not import with only torch and triton:\n{res.stderr.strip()}")
    return res.stdout.strip()


def cmd_compile(args) -> int:
    from ssmc.backends.triton import Schedule
    from ssmc.compiler import compile
    spec, _ = resolve(args.name)
    _device()
    schedule = _schedule(args) or Schedule()
    source = compile(spec, "triton", schedule=schedule).source
    path = Path(args.output) / f"{args.name}_kernel.py"
    _write(path, source)
    print(path)
    if not args.no_verify:
        versions = verify_standalone(path)
        print(f"verified: {path.name} imports in a fresh interpreter without ssmc ({versions})", file=sys.stderr)
    usage = source.split('"""')[1].split("\nIR:")[0].strip()
    print(textwrap.indent(usage, "  "), file=sys.stderr)
    print(f"  schedule: block_d={schedule.block_d}, chunk={schedule.chunk}, num_warps={schedule.num_warps} "
          f"(override per call: launch(..., schedule={{'chunk': 32}}))", file=sys.stderr)
    return 0


# --- demo ---------------------------------------------------------------------------

def declare_variant():
    import ssmc
    from ssmc.library import generalized_bilinear
    return ssmc.Spec(
        "gbt_reverse",                          # a new variant, in a few lines:
        state="diag_real", A="neg_exp",         # real diagonal state, A = -exp(A_log)
        rule=generalized_bilinear("2/3"),       # generalized bilinear transform, α = 2/3
        selective=("dt", "B", "C"),             # Δ, B, C vary in time (selective, Mamba-style)
        dt="softplus", dt_bias=True,            # Δ = softplus(delta + delta_bias)
        direction="reverse",                    # scan from the last step to the first
        skip="h", gate="silu", final_state=True,
        description="selective real diagonal SSM, GBT α=2/3 rule, reverse scan")


def variant_loop(x: dict, alpha: float) -> dict:
    """The variant written out by hand in NumPy: an independent check of what the compiler built."""
    import numpy as np
    sp_ = lambda v: np.logaddexp(0.0, v)
    dt = sp_(x["delta"] + x["delta_bias"][:, None])[..., None]          # (b, d, L, 1)
    A = -np.exp(x["A_log"])[None, :, None, :]                           # (1, d, 1, N)
    A_bar = (1 + (1 - alpha) * dt * A) / (1 - alpha * dt * A)           # (b, d, L, N)
    B_bar = dt / (1 - alpha * dt * A) * x["B"].transpose(0, 2, 1)[:, None]
    h = np.zeros(A_bar.shape[:2] + A_bar.shape[3:])
    y = np.zeros(x["u"].shape)
    for t in reversed(range(x["u"].shape[-1])):
        h = A_bar[:, :, t] * h + B_bar[:, :, t] * x["u"][:, :, t, None]
        y[:, :, t] = (h * x["C"][:, None, :, t]).sum(-1)
    y = (y + x["D"][:, None] * x["u"]) * x["z"] / (1 + np.exp(-x["z"]))
    return {"out": y, "last_state": h}


def cmd_demo(args) -> int:
    import inspect

    import sympy as sp

    from ssmc import library
    from ssmc.compiler import compile
    from ssmc.ir.inits import random_inputs
    from ssmc.ir.symbolic import RULES, expand

    t_start = time.perf_counter()
    seed = args.seed if args.seed is not None else secrets.randbelow(2 ** 31)
    device = _device()
    print(f"ssmc demo (Triton on {_device_label(device)}; seed {seed})\n")

    print("1. Declare a new variant: no library entry has this rule or a reverse scan.\n")
    src = inspect.getsource(declare_variant).split("\n", 3)[3]  # the body after the imports
    src = textwrap.dedent(src).rstrip().replace("return ssmc.Spec(", "spec = ssmc.Spec(", 1)
    print(textwrap.indent(src, "    "), "\n")
    spec = declare_variant()

    rule = spec.rule
    print(f"2. Its discretization rule `{rule.name}`, simplified by sympy (Δ = dt):")
    print(f"     A_bar   = {expand(rule, 'A')}")
    print(f"     B_scale = {expand(rule, 'B')}      (B_bar = B_scale · B)")
    gbt = library.generalized_bilinear
    same = all(sp.simplify(gbt(a).part(p) - RULES[name].part(p)) == 0
               for a, name in (("1/2", "bilinear"), (0, "euler")) for p in ("A", "B"))
    print(f"   sympy check: α = 1/2 is the built-in bilinear rule and α = 0 Euler: {'yes' if same else 'NO'}\n")

    ref = compile(spec, "numpy")
    print("3. Passes: nodes after each pass, and how many node lines it changed:")
    prev = set()
    for k, (name, g) in enumerate(ref.trace):
        lines = g.text().splitlines()[1:]
        changed = "" if k == 0 else f", {len([ln for ln in lines if ln not in prev])} changed"
        print(f"     {name:<22} {len(g.nodes):>3} nodes{changed}")
        prev = set(lines)
    print("   Optimized IR (one fused kernel region; `hoisted` nodes are computed once, before the time loop):")
    print(textwrap.indent(ref.graph.text().rstrip(), "    "), "\n")

    print(f"4. NumPy (float64) vs Triton (fp32), random inputs, Triton outputs NaN-poisoned, tolerance {TOL:g}:")
    head = (f"   {'model':<14} {'L':>3}  {'max rel. error':>14}  {'numpy ms':>9}  {'triton 1st call ms':>18}  "
            f"{'triton ms':>9}  result")
    print(head)
    models = [(spec, dict(library.DEFAULT_SIZES["mamba1"]))] + [
        (s, dict(library.DEFAULT_SIZES[n])) for n, s in library.ENTRIES.items()]
    ok = True
    for s, sizes in models:
        r, t = compile(s, "numpy"), compile(s, "triton")
        rows, times = differential(r, t, sizes, seed, device, calls=2)
        err = max(e for e, _ in rows.values())
        good = _ok(rows)
        ok &= good
        print(f"   {s.name:<14} {sizes['L']:>3}  {err:>14.2e}  {1e3 * times['numpy']:>9.1f}  "
              f"{1e3 * times['triton_first']:>18.1f}  {1e3 * times['triton']:>9.1f}  {'ok' if good else 'FAIL'}")
    print("   (1st call: code generation, module load and run; under the CPU interpreter timings are not kernel "
          "speed)\n" if device.type == "cpu" else "   (1st call: code generation, JIT compile and run)\n")

    x = random_inputs(ref.graph, library.DEFAULT_SIZES["mamba1"], seed)
    got, want = ref(**x), variant_loop(x, 2 / 3)
    err = max(_rel(got[k], want[k]) for k in want)
    ok &= err <= 1e-12
    print(f"5. The variant against a hand-written NumPy loop of the same equations: max rel. error {err:.1e} "
          f"({'ok' if err <= 1e-12 else 'FAIL'})\n")

    print(f"{'All backends agree' if ok else 'DISAGREEMENT (see FAIL above)'}; "
          f"{time.perf_counter() - t_start:.1f} s in all.")
    return 0 if ok else 1


def _size(text: str) -> tuple:
    sym, _, value = text.partition("=")
    try:
        v = int(value)
    except ValueError:
        v = 0
    if not sym or v < 1:
        raise argparse.ArgumentTypeError(f"expected SYMBOL=SIZE with a positive size, got {text!r}")
    return sym, v


def cmd_bench(args) -> int:
    from ssmc.bench import run
    try:
        run(args)
    except RuntimeError as e:
        if "needs a CUDA GPU" in str(e):
            raise CLIError(str(e)) from None
        raise
    return 0


def cmd_onnx(args) -> int:
    import onnx

    from ssmc.export import export_onnx
    from ssmc.ir import IRError
    sizes = dict(args.size or [])
    flags = {"dim": args.dim, "N": args.d_state, "H": args.nheads, "P": args.headdim, "G": args.ngroups,
             "K": args.K}
    sizes.update({k: v for k, v in flags.items() if v is not None})
    if args.name != "multi_order_scan" and (args.K is not None or args.merge is not None):
        raise CLIError(f"--K and --merge are options of multi_order_scan, not {args.name}")
    try:
        model = export_onnx(args.name, args.output, sizes=sizes, opset=args.opset, fp16=args.fp16,
                            step=args.step, lti=args.lti, chunk_size=args.chunk_size, merge=args.merge)
    except (ValueError, TypeError, IRError, onnx.checker.ValidationError) as e:
        raise CLIError(str(e)) from None

    def shape(v):
        return "(" + ", ".join(d.dim_param or str(d.dim_value) for d in v.type.tensor_type.shape.dim) + ")"

    size = Path(args.output).stat().st_size
    print(f"wrote {args.output}: {len(model.graph.node)} nodes (main graph), {size / 1024:.1f} KiB, "
          f"opset {args.opset}{', fp16' if args.fp16 else ''}{', single step' if args.step else ''}")
    print("inputs:  " + ", ".join(f"{v.name} {shape(v)}" for v in model.graph.input))
    print("outputs: " + ", ".join(f"{v.name} {shape(v)}" for v in model.graph.output))
    for key in ("ssmc.lowering",):
        for p in model.metadata_props:
            if p.key == key:
                print(f"lowering: {p.value}")
    return 0


# --- entry point ------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    names = _all_names()
    p = argparse.ArgumentParser(
        prog="ssmc", description="ssmc: a compiler for state space models (declare -> IR -> NumPy / Triton).",
        epilog="NAME: " + ", ".join(names) + ".  Without CUDA, Triton runs under its CPU interpreter.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def named(parser):
        parser.add_argument("name", metavar="NAME", choices=names,
                            help="a library entry (see `ssmc list`) or selective_scan / ssd")

    def schedule_opts(parser):
        parser.add_argument("--block-d", type=_pow2, help="channels per program (power of two)")
        parser.add_argument("--chunk", type=_pow2, help="time steps per associative scan (power of two)")
        parser.add_argument("--num-warps", type=_positive, help="warps per program")

    s = sub.add_parser("list", help="the library of SSM families")
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("show", help="print the optimized IR (or every pass), write DOT or PNG")
    named(s)
    s.add_argument("--passes", action="store_true", help="print the graph after each pass")
    s.add_argument("--dot", metavar="FILE", help="write the optimized IR as Graphviz DOT")
    s.add_argument("--png", metavar="FILE", help="render the optimized IR to PNG (Graphviz dot, else matplotlib)")
    s.set_defaults(func=cmd_show)

    s = sub.add_parser("check", help="differential run: NumPy (float64) vs Triton (fp32) on random inputs")
    named(s)
    s.add_argument("--L", type=_lengths, default=[1, 7, 33], metavar="L1,L2,...",
                   help="sequence lengths (default 1,7,33)")
    s.add_argument("--seed", type=int, help="random seed (default: a fresh one, printed)")
    schedule_opts(s)
    s.set_defaults(func=cmd_check)

    s = sub.add_parser("compile", help="write the generated standalone Triton module DIR/<NAME>_kernel.py")
    named(s)
    s.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder (created if missing)")
    schedule_opts(s)
    s.add_argument("--no-verify", action="store_true",
                   help="skip importing the module in a fresh interpreter without ssmc")
    s.set_defaults(func=cmd_compile)

    s = sub.add_parser("onnx", help="export an ONNX graph (batch and L symbolic; state in and out)")
    s.add_argument("name", metavar="NAME", choices=names + ["multi_order_scan"],
                   help="a library entry (see `ssmc list`), selective_scan / ssd, or multi_order_scan")
    s.add_argument("-o", "--output", required=True, metavar="FILE", help="the .onnx file to write")
    s.add_argument("--opset", type=int, default=20, help="ONNX opset, 18-23 (default 20)")
    s.add_argument("--fp16", action="store_true", help="fp16 inputs and outputs; fp32 arithmetic inside")
    s.add_argument("--step", action="store_true", help="the single-token decode graph instead")
    s.add_argument("--lti", choices=("scan", "dft"), default="scan",
                   help="time-invariant diagonal scans as a Scan (default) or a DFT convolution")
    s.add_argument("--chunk-size", type=_positive, default=64, help="SSD chunk length (Mamba-2; default 64)")
    s.add_argument("--size", type=_size, action="append", metavar="SYM=SIZE",
                   help="fix a size (e.g. --size dim=768); library entries default to small test sizes")
    s.add_argument("--dim", type=_positive, help="selective_scan, multi_order_scan: channels")
    s.add_argument("--d-state", type=_positive, help="selective_scan, ssd, multi_order_scan: state size N")
    s.add_argument("--nheads", type=_positive, help="ssd: heads H")
    s.add_argument("--headdim", type=_positive, help="ssd: head dimension P")
    s.add_argument("--ngroups", type=_positive, help="ssd: B/C groups G")
    s.add_argument("--K", type=_positive, help="multi_order_scan: scan orders K (an input orders (K, L))")
    s.add_argument("--merge", choices=("sum", "mean", "concat", "gated"),
                   help="multi_order_scan: how the K results are merged (default sum)")
    s.set_defaults(func=cmd_onnx)

    s = sub.add_parser("bench", help="GPU benchmark: ssmc's kernels and the public anchors side by side")
    from ssmc.bench import add_options
    add_options(s)
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("demo", help="declare a new variant, show its passes, check it and the library on both "
                                    "backends")
    s.add_argument("--seed", type=int, help="random seed (default: a fresh one, printed)")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CLIError as e:
        print(f"ssmc: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `ssmc show ... | head`
        sys.stdout = open(os.devnull, "w")
        return 0


if __name__ == "__main__":
    sys.exit(main())
