"""`ssmc bench`'s run: every suite, side by side with the anchors that import, then the report (and a
plot of time vs L).  Needs CUDA."""
from __future__ import annotations

import json
import time

import torch
import triton

from . import SUITES, core, orders, ssd


def run(args) -> dict:
    if not torch.cuda.is_available():
        raise RuntimeError("ssmc bench needs a CUDA GPU (the CPU interpreter's timings mean nothing)")
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
    import matplotlib  # (optional: only for --plot)
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
