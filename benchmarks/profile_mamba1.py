"""One launch of the generated Mamba-1 selective scan, for `ncu` (see BENCHMARKS.md).

    ncu --clock-control none --section SpeedOfLight --section WarpStateStats \
        python3 benchmarks/profile_mamba1.py [layout block_d chunk num_warps full_tiles]

The default is the cost model's schedule at this shape on CUDA: tdn 8/8/1 with full tiles.
"""
import sys

import torch

import ssmc
from ssmc.bench.core import mamba1_inputs, mamba1_spec

lay, bd, ch, w, ft = (sys.argv[1:] + ["tdn", "8", "8", "1", "1"][len(sys.argv) - 1:])[:5]
f = ssmc.compile(mamba1_spec(), backend="triton",
                 schedule=dict(layout=lay, block_d=int(bd), chunk=int(ch), num_warps=int(w), full_tiles=ft == "1"))
x = mamba1_inputs()
f(**x)
torch.cuda.synchronize()
