#!/usr/bin/env bash
# One call on a lent GPU: install ssmc, run the GPU test tier, then the benchmark.
# Usage (on the device machine, repo root): bash benchmarks/gpu_run.sh [--quick]
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 || { cat "$OUT/install.log"; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton, numpy; print('torch', torch.__version__, 'triton', triton.__version__, 'numpy', numpy.__version__)"
if [ "${SKIP_TESTS:-0}" != "1" ]; then
  python3 -m pytest -q -m gpu -p no:cacheprovider 2>&1 | tee "$OUT/gpu_tests.log" | tail -25
fi
python3 benchmarks/bench_core.py "$@" --json "$OUT/bench_core.json" 2>&1 | tee "$OUT/bench_core.log"
