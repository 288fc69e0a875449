"""The `ssd` suite of `ssmc bench` (ssmc/bench/ssd.py): python benchmarks/bench_ssd.py [--quick] [--json FILE]."""
import sys

from ssmc.bench.report import main

if __name__ == "__main__":
    sys.exit(main(["--suite", "ssd", *sys.argv[1:]]))
