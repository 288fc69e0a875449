#!/usr/bin/env bash
# One call on a lent GPU: install ssmc (and any carried anchor wheels), run the GPU test tier, then
# `ssmc bench` (and the backward benchmark when present).
# Usage (on the device machine, repo root): bash benchmarks/gpu_run.sh [ssmc bench options, e.g. --quick]
# All of it takes about 12 minutes on an H100 (tier ~4, bench ~5, backward ~3): where one command may run
# 10 minutes, split it with SKIP_TESTS=1 / SKIP_BENCH=1 / SKIP_BACKWARD=1 into two calls.  The tier is
# mostly Triton compiling kernels on the CPU: TEST_WORKERS=8 runs it on 8 pytest-xdist workers (none is
# timed).  PROFILE=1 adds Nsight Compute's summary of one launch of the Mamba-1 and the SSD forward kernels.
# Carried, never committed: .whl/*.whl (flash-linear-attention, fla-core, accelerated-scan) and
# .anchors/ (a folder holding mamba_ssm/ops/triton/*.py, put on PYTHONPATH).
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then python3 -m pip install -q --no-deps .whl/*.whl >"$OUT/install.log" 2>&1; fi
python3 -m pip install -q --no-deps --no-build-isolation -e . >>"$OUT/install.log" 2>&1 || { cat "$OUT/install.log"; exit 1; }
[ -d .anchors ] && export PYTHONPATH="$PWD/.anchors${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton, numpy; print('torch', torch.__version__, 'triton', triton.__version__, 'numpy', numpy.__version__)"
if [ "${SKIP_TESTS:-0}" != "1" ]; then
  python3 -m pytest -q -m gpu -p no:cacheprovider ${TEST_WORKERS:+-n "$TEST_WORKERS"} 2>&1 | tee "$OUT/gpu_tests.log" | tail -25
fi
if [ "${PROFILE:-0}" = "1" ]; then
  for script in profile_mamba1 profile_ssd; do
    ncu --clock-control none -k regex:"_fwd|_ssd" --section SpeedOfLight --section WarpStateStats --section Occupancy \
      --section LaunchStats --section SchedulerStats --section ComputeWorkloadAnalysis --print-details all \
      python3 "benchmarks/$script.py" 2>&1 | tee "$OUT/ncu_$script.txt" | \
      grep -E "Duration|Registers|Achieved Occupancy|Theoretical Occupancy|Stall|Eligible|Issued Warp|Waves|XU  " | head -40
  done
fi
if [ "${SKIP_BENCH:-0}" != "1" ]; then
  python3 -m ssmc bench "$@" --json "$OUT/bench.json" --plot "$OUT/ssd_time_vs_L.png" 2>&1 | tee "$OUT/bench.log"
fi
if [ -f benchmarks/bench_backward.py ] && [ "${SKIP_BACKWARD:-0}" != "1" ]; then
  python3 benchmarks/bench_backward.py 2>&1 | tee "$OUT/bench_backward.log"
fi
