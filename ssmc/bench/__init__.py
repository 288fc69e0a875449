"""`ssmc bench`: ssmc's kernels and, when importable, the public anchors, side by side in one process.

    ssmc bench [--suite all|core|ssd] [--quick] [--json FILE] [--plot FILE.png] [--lengths 512,...]

Suites: `core` (Mamba-1 selective scan and its schedules across batch × channels, first-order scan, decode
step; anchors accelerated-scan, mamba_ssm's `selective_state_update` and CUDA `selective_scan_fn`), `ssd`
(Mamba-2 SSD forward; anchors mamba_ssm's `mamba_chunk_scan_combined` and flash-linear-attention's
`chunk_simple_gla`, plus time vs L) and `orders` (VMamba's SS2D as one multi-order kernel vs the unfused
pipeline).  Every contender is checked against ssmc's output or a PyTorch loop before it is timed; the report
prints ms, ratios, % of the copy-bandwidth floor and TFLOP/s.  Needs CUDA.
"""
from __future__ import annotations

import argparse
import json
import time

SUITES = ("core", "ssd", "orders")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ssmc bench", description=__doc__.split("\n")[0])
    add_options(p)
    return p


def add_options(p) -> None:
    p.add_argument("--suite", choices=("all",) + SUITES, default="all", help="which benchmarks (default all)")
    p.add_argument("--quick", action="store_true", help="fewer schedules in the sweeps")
    p.add_argument("--json", metavar="FILE", help="write the full report as JSON")
    p.add_argument("--plot", metavar="FILE", help="PNG of time vs L (needs matplotlib)")
    p.add_argument("--lengths", default="512,1024,2048,4096,8192,16384", help="L values for the time-vs-L sweep")


def run(args) -> dict:
    import torch
    import triton
    if not torch.cuda.is_available():
        raise RuntimeError("ssmc bench needs a CUDA GPU (the CPU interpreter's timings mean nothing)")
    from . import core, orders, ssd
    report = {"date": time.strftime("%Y-%m-%d"), "gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
              "triton": triton.__version__}
    print(f"# {report['date']} {report['gpu']}, torch {report['torch']}, triton {report['triton']}", flush=True)
    rate = core.copy_rate()
    report["copy_TBps"] = rate / 1e12
    print(f"copy rate: {rate / 1e12:.3f} TB/s (2 GiB fp32, read + write)", flush=True)
    suites = SUITES if args.suite == "all" else (args.suite,)
    if "core" in suites:
        report["core"] = core.run(args, rate)
    if "ssd" in suites:
        report["ssd"] = ssd.run(args, rate)
    if "orders" in suites:
        report["orders"] = orders.run(args, rate)
    if args.plot:
        plot(report, args.plot)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=str)
    return report


def plot(report: dict, path: str) -> None:
    """Time vs L (log-log) of every contender of each length sweep: slope 1 means no cliff."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = [(title, report[suite]["lengths"]) for suite, title in
              (("ssd", "Mamba-2 SSD fwd, B4 H64 P64 N128 bf16"), ("core", "recurrent lowerings, B4 D4096"))
              if suite in report and report[suite].get("lengths")]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (title, rows) in zip(axes[0], panels):
        for name in sorted({k for row in rows for k in row if k != "L"}):
            pts = [(row["L"], row[name]) for row in rows if name in row]
            ax.plot(*zip(*pts), marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("L")
        ax.set_ylabel("ms (CUDA graph)")
        ax.set_title(title, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{report['gpu']}, torch {report['torch']}, Triton {report['triton']}, {report['date']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main(argv=None) -> int:
    run(parser().parse_args(argv))
    return 0
