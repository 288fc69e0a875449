"""One launch of the generated Mamba-2 SSD forward (chunked lowering), for `ncu` (see BENCHMARKS.md).

    ncu --clock-control none --section SpeedOfLight --section WarpStateStats \
        python3 benchmarks/profile_ssd.py [chunk block_p num_warps num_stages]
"""
import sys

import torch

from ssmc.backends.triton import ChunkedSchedule
from ssmc.bench.ssd import inputs, ssmc_call

q, bp, w, st = map(int, (sys.argv[1:] + ["32", "64", "4", "2"][len(sys.argv) - 1:])[:4])
f = ssmc_call(inputs(), ChunkedSchedule(chunk=q, block_p=bp, num_warps=w, num_stages=st))
f()
torch.cuda.synchronize()
