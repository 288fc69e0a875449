"""The `core` suite of `ssmc bench` (ssmc/bench/core.py): python benchmarks/bench_core.py [--quick] [--json FILE]."""
import sys

from ssmc.bench.report import main

if __name__ == "__main__":
    sys.exit(main(["--suite", "core", *sys.argv[1:]]))
