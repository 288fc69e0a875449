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
CPU interpreter (TRITON_INTERPRET=1, switched on as ssmc loads).
"""
from __future__ import annotations

import argparse
import os
import secrets
import sys
import textwrap
from pathlib import Path

import onnx

from ssmc import library
from ssmc.backends.triton import Schedule, strategy
from ssmc.backends.triton.standalone import verify_standalone
from ssmc.bench import add_options as bench_options
from ssmc.demo import run_demo
from ssmc.export import export_onnx
from ssmc.ir import IRError
from ssmc.ir.render import RenderError, png_renderer, render_png
from ssmc.ir.spec import Spec
from ssmc.runtime import compile_ssm
from ssmc.runtime.check import TOL, differential

# --- names -----------------------------------------------------------------------

def _op_specs() -> dict:
    """The drop-in ops' specs with every optional argument given, and sizes to check them at."""
    sel = Spec("selective_scan", state="diag_real", A="direct", rule="zoh_euler", dt="softplus", dt_bias=True,
               skip="h", gate="silu", final_state=True,
               description="ssmc.ops.selective_scan with D, z, delta_bias, delta_softplus and return_last_state")
    ssd = Spec("ssd", state="scalar_head", A="direct", rule="zoh_euler", dt="softplus", dt_bias=True,
               groups=True, skip="h", gate="silu", h0=True, seq_idx=True, final_state=True,
               description="ssmc.ops.ssd with D, z, dt_bias, dt_softplus, initial_states, seq_idx "
                           "and return_final_states")
    return {"selective_scan": (sel, library.DEFAULT_SIZES["mamba1"]), "ssd": (ssd, library.DEFAULT_SIZES["mamba2"])}


def _all_names() -> list:
    return list(library.ENTRIES) + list(library.VARIANTS) + ["selective_scan", "ssd"]


def resolve(name: str):
    """(Spec, default sizes) of a library entry or a drop-in op name."""
    if name in library.ENTRIES:
        return library.ENTRIES[name], dict(library.DEFAULT_SIZES[name])
    if name in library.VARIANTS:
        return library.VARIANTS[name], dict(library.VARIANTS[name].sizes)
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
    """The torch device the Triton kernels run on (without a GPU, the CPU under Triton's interpreter)."""
    import torch  # (heavy: only the commands that run kernels need it)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _device_label(device) -> str:
    if device.type == "cuda":
        import torch  # (heavy, see _device)
        return f"GPU ({torch.cuda.get_device_name()})"
    return "CPU, Triton interpreter"


def _schedule(args):
    vals = {k: getattr(args, k, None) for k in ("block_d", "chunk", "num_warps")}
    vals = {k: v for k, v in vals.items() if v is not None}
    if not vals:
        return None
    return Schedule(**vals)


# --- subcommands -------------------------------------------------------------------

def cmd_list(args) -> int:
    header = ("name", "state", "io", "rule", "selective", "description")
    rows = []
    for name, s in library.ENTRIES.items():
        sel = ",".join(k for k in ("dt", "B", "C") if k in s.selective) or "LTI"
        rows.append((name, s.state, s.io, str(s.rule), sel, s.description))
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(5)]
    fmt = lambda r: "  ".join(v.ljust(w) for v, w in zip(r[:5], widths)) + "  " + r[5]
    print(fmt(header))
    print(fmt(tuple("-" * w for w in widths) + ("-" * 11,)))
    for r in rows:
        print(fmt(r))
    print()
    print("Declared variants (one graph each, with several scans or lags, run as stages), also NAMEs:")
    for name, v in library.VARIANTS.items():
        print(f"  {name:<15} {v.description}")
    print()
    print("Drop-in ops (ssmc.ops), also accepted as NAME by show/check/compile:")
    for name, (s, _) in _op_specs().items():
        print(f"  {name:<15} {s.description}")
    print()
    print("Scan-order families (ssmc.library.family(NAME).run(...): ready calls of the ops, not Specs):")
    width = max(map(len, library.FAMILIES))
    for name, f in library.FAMILIES.items():
        print(f"  {name:<{width}}  {f.description}")
        print(f"  {'':<{width}}  orders: {f.orders} | merge: {f.merge} | tying: {f.tying} | op: {f.op}")
    return 0


def cmd_show(args) -> int:
    spec, _ = resolve(args.name)
    try:
        renderer = png_renderer() if args.png else None  # fail before printing anything
    except RenderError as e:
        raise CLIError(f"--png: {e}.  `--dot FILE` writes the DOT source without either.") from None
    c = compile_ssm(spec, "numpy")
    if args.passes:
        for k, (pass_name, g) in enumerate(c.trace):
            print(f"=== {k}: {pass_name} ({len(g.nodes)} nodes) ===")
            print(g.text())
        try:
            backward, no_backward = c.backward_graph, None
        except (NotImplementedError, ValueError) as e:  # no backward derived for this graph: say why
            backward, no_backward = None, str(e)
        if c.staged is not None:  # several scans or time operators: the steps, each its own lowering
            for k, st in enumerate(c.staged.plan.steps):
                what = (f"kernel with {len(st.graph.ids('scan'))} scan(s): {st.graph.name}" if st.graph is not None
                        else f"{st.target} = {st.op.op}({', '.join(st.sources)}) between kernels")
                print(f"=== step {k}: {what}")
            print(f"=== backward: {no_backward}")
        else:
            print(strategy.explain(c.graph, backward, no_backward))
    else:
        print(c.graph.text(), end="")
    if args.dot:
        _write(args.dot, c.graph.to_dot())
        print(f"wrote {args.dot}")
    if args.png:
        try:
            how = render_png(c.graph, args.png, renderer)
        except RenderError as e:
            raise CLIError(str(e)) from None
        print(f"wrote {args.png} (rendered with {how})")
    return 0


def _write(path, text):
    path = Path(path)
    try:
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True)
        path.write_text(text)
    except OSError as e:
        raise CLIError(f"cannot write {path}: {e.strerror or e}") from None


def cmd_check(args) -> int:
    spec, sizes = resolve(args.name)
    seed = args.seed if args.seed is not None else secrets.randbelow(2 ** 31)
    device = _device()
    ref, tri = compile_ssm(spec, "numpy"), compile_ssm(spec, "triton", schedule=_schedule(args))
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


def cmd_compile(args) -> int:
    spec, _ = resolve(args.name)
    _device()
    schedule = _schedule(args) or Schedule()
    compiled = compile_ssm(spec, "triton", schedule=schedule)
    if compiled.staged is not None:
        raise CLIError(f"{args.name} runs as {len(compiled.staged.plan.steps)} steps (several scans or lags), and "
                       f"`ssmc compile` writes one kernel module; ssmc.compile({args.name!r}).source shows them all")
    source = compiled.source
    path = Path(args.output) / f"{args.name}_kernel.py"
    _write(path, source)
    print(path)
    if not args.no_verify:
        try:
            versions = verify_standalone(path)
        except RuntimeError as e:
            raise CLIError(str(e)) from None
        print(f"verified: {path.name} imports in a fresh interpreter without ssmc ({versions})", file=sys.stderr)
    usage = source.split('"""')[1].split("\nIR:")[0].strip()
    print(textwrap.indent(usage, "  "), file=sys.stderr)
    print(f"  schedule: block_d={schedule.block_d}, chunk={schedule.chunk}, num_warps={schedule.num_warps} "
          f"(override per call: launch(..., schedule={{'chunk': 32}}))", file=sys.stderr)
    return 0


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
    from ssmc.bench.report import run  # (torch and triton's benchmarking: needed only here)
    try:
        run(args)
    except RuntimeError as e:
        if "needs a CUDA GPU" in str(e):
            raise CLIError(str(e)) from None
        raise
    return 0


def cmd_demo(args) -> int:
    seed = args.seed if args.seed is not None else secrets.randbelow(2 ** 31)
    device = _device()
    return run_demo(seed, device, _device_label(device))


def cmd_onnx(args) -> int:
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
    bench_options(s)
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
