"""`ssmc bench`: ssmc's kernels and, when importable, the public anchors, side by side in one process.

    ssmc bench [--suite all|core|ssd|orders] [--quick] [--json FILE] [--plot FILE.png] [--lengths 512,...]

Suites: `core` (Mamba-1 selective scan and its schedules across batch × channels, first-order scan, decode
step; anchors accelerated-scan, mamba_ssm's `selective_state_update` and CUDA `selective_scan_fn`), `ssd`
(Mamba-2 SSD forward; anchors mamba_ssm's `mamba_chunk_scan_combined` and flash-linear-attention's
`chunk_simple_gla`, plus time vs L) and `orders` (VMamba's SS2D as one multi-order kernel vs the unfused
pipeline).  Every contender is checked against ssmc's output or a PyTorch loop before it is timed; the report
prints ms, ratios, % of the copy-bandwidth floor and TFLOP/s.  Needs CUDA.

This module holds the options (no torch); `report.py` runs the suites.
"""
from __future__ import annotations

SUITES = ("core", "ssd", "orders")


def add_options(p) -> None:
    p.add_argument("--suite", choices=("all",) + SUITES, default="all", help="which benchmarks (default all)")
    p.add_argument("--quick", action="store_true", help="fewer schedules in the sweeps")
    p.add_argument("--json", metavar="FILE", help="write the full report as JSON")
    p.add_argument("--plot", metavar="FILE", help="PNG of time vs L (needs matplotlib)")
    p.add_argument("--lengths", default="512,1024,2048,4096,8192,16384", help="L values for the time-vs-L sweep")
