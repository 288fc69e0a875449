"""Drop-in ops with mamba_ssm's signatures, and the multi-order, Hydra and tied bidirectional layers,
all built from declarations (no hand-written kernels).

    selective_scan, selective_state_update    mamba_ssm's selective_scan_fn and decode step (Mamba-1)
    ssd                                       mamba_ssm's mamba_chunk_scan_combined (Mamba-2)
    multi_order_scan, scan_orders_2d          K scans along K orders (Vim, VMamba's SS2D, RSMamba, …)
    multiscale_scan_2d                        MSVMamba's full- and half-resolution scans
    hydra                                     Hydra's bidirectional quasiseparable mixer
    mamba3_siso                               mamba_ssm's mamba3_siso_combined (Mamba-3 SISO)
    tied_bidirectional                        bidirectional S4D / S5 / LRU with shared parameters

Modules: `dispatch.py` (the entry points: argument checks, then a torch custom op or a direct run),
`selective_scan.py`, `ssd.py`, `multi_order.py` (what they run), `torch_ops.py` (the custom ops and
their autograd), `multi_order_backward.py`, `multiscale.py`, `hydra.py`, `mamba3.py`,
`tied_bidirectional.py`; `reference.py` holds the plain PyTorch loops of selective_scan and ssd that
tests and benchmarks hold the kernels to.
"""
from .dispatch import multi_order_scan, selective_scan, selective_state_update, ssd
from .hydra import hydra
from .mamba3 import mamba3_siso
from .multi_order import multi_order_graph, scan_orders_2d
from .multiscale import multiscale_scan_2d
from .selective_scan import selective_scan_backward
from .ssd import ssd_backward
from .tied_bidirectional import tied_bidirectional, tied_bidirectional_graph

__all__ = ["hydra", "mamba3_siso", "multi_order_graph", "multi_order_scan", "multiscale_scan_2d", "scan_orders_2d",
           "selective_scan", "selective_scan_backward", "selective_state_update", "ssd", "ssd_backward",
           "tied_bidirectional", "tied_bidirectional_graph"]
