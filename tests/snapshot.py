"""Snapshot of everything ssmc generates, to prove a refactor changes none of it.

    python tests/snapshot.py write DIR     # every generated source, listing and model, one file each
    python tests/snapshot.py check DIR     # the same again, compared byte for byte with DIR

Covers: the optimized and backward IR listings of every library entry, drop-in op form, multi-order and
tied-bidirectional graph and decode form; the generated Triton source of each, forward and backward, for
every schedule the cost model or the autotuner can pick at small and large sizes on CUDA and CPU, in
fp32 and fp64 arithmetic; and every ONNX model `export_onnx` writes (plain, decode step, DFT, fp16,
forced Scan).  Code generation only: nothing is compiled or run, so it needs no GPU.
"""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import replace
from pathlib import Path

import ssmc
from ssmc.backends.triton import ChunkedSchedule, Schedule, generate, lowered_schedule
from ssmc.backends.triton.strategy import choose_backward_schedule, choose_schedule
from ssmc.backends.triton.tune import candidates
from ssmc.export import export_onnx
from ssmc.ir.passes.adjoint import adjoint
from ssmc.ir.passes.step import single_step, stateful
from ssmc.ir.spec import Spec
from ssmc.library import ENTRIES
from ssmc.ops import tied_bidirectional_graph
from ssmc.ops.decode import state_update
from ssmc.ops.multi_order import multi_order_compiled

ROLE_SETS = {  # role sizes the schedules are chosen for: the test sizes and the benchmark shapes
    "small": {"b": 2, "t": 33, "h": 4, "p": 3, "n": 4, "g": 2, "r": 1},
    "mamba1": {"b": 4, "t": 2048, "h": 4096, "p": 1, "n": 16, "g": 1, "r": 1},
    "mamba2": {"b": 4, "t": 2048, "h": 64, "p": 64, "n": 128, "g": 1, "r": 1},
    "vmamba": {"b": 8, "t": 3136, "h": 1536, "p": 1, "n": 16, "g": 4, "r": 384},
    "first_order": {"b": 4, "t": 4096, "h": 4096, "p": 1, "n": 1, "g": 1, "r": 1},
}


def source(graph, schedule, acc):
    """The generated module of a graph for a schedule, as the Triton backend's build() makes it."""
    return generate(graph, lowered_schedule(graph, schedule), acc)


def forward_graphs() -> dict:
    """name -> optimized forward graph."""
    specs = dict(ENTRIES)
    specs["sel_full"] = Spec("selective_scan", A="direct", dt_bias=True, skip="h", gate="silu", final_state=True)
    specs["sel_complex"] = Spec("selective_scan", state="diag_complex", A="direct", dt="raw", skip="h",
                                complex_BC=frozenset({"B"}))
    specs["sel_grouped_lti_C"] = Spec("selective_scan", A="direct", selective=frozenset({"dt", "B"}), groups=True,
                                      gate="silu")
    specs["ssd_full"] = Spec("ssd", state="scalar_head", A="direct", dt_bias=True, groups=True, skip="h",
                             gate="silu", h0=True, seq_idx=True, final_state=True)
    specs["ssd_hp_limit"] = Spec("ssd", state="scalar_head", A="direct", dt="raw", dt_limit=(0.0, 6.0), groups=True,
                                 skip="hp", final_state=True)
    specs["ssd_reverse"] = Spec("ssd_reverse", state="scalar_head", A="direct", dt_bias=True, groups=True,
                                direction="reverse")
    specs["s5_resets"] = ENTRIES["s5"].with_(name="s5_episodes", seq_idx=True)
    specs["mamba1_clip"] = ENTRIES["mamba1"].with_(name="m1clip", dt_limit=(0.001, 0.1), h0=True)
    specs["gbt_reverse"] = Spec("gbt_reverse", rule=ssmc.library.generalized_bilinear("2/3"), dt_bias=True,
                                direction="reverse", skip="h", gate="silu", final_state=True)
    graphs = {name: ssmc.compile(s, "numpy").graph for name, s in specs.items()}
    for name in ("mamba1", "mamba2", "s4d_zoh", "lru"):  # decode forms
        declared = ENTRIES[name].build()
        graphs[f"{name}_stateful"] = ssmc.compile(stateful(declared), "numpy").graph
        graphs[f"{name}_step"] = ssmc.compile(single_step(declared), "numpy").graph
    for heads in (False, True):
        graphs[f"state_update_{heads}"] = state_update(heads, True, True, True, True, None, frozenset(), "numpy").graph
    grids = ["", "5x7:row,col,row_rev,col_rev", "56x56:row,col,row_rev,col_rev", "5x7:row,snake_row",
             "5x7:row,col,row_rev,col_rev,snake_row,snake_col", "56x56:row,col,row_rev,col_rev:1,2,2,2",
             "5x7:row,col:1,2"]
    for k, grid in enumerate(grids):
        graphs[f"orders_grid{k}"] = multi_order_compiled(True, True, True, True, "numpy", "sum", 1, frozenset(),
                                                         grid).graph
    for merge in ("mean", "concat", "gated"):
        graphs[f"orders_{merge}"] = multi_order_compiled(True, True, True, True, "numpy", merge,
                                                         4 if merge == "mean" else 1).graph
    graphs["orders_bare"] = multi_order_compiled(False, False, False, False, "numpy").graph
    graphs["orders_tied_bc_grid"] = multi_order_compiled(True, True, True, True, "numpy", "sum", 1,
                                                         frozenset({"C"}), "5x7:row,col").graph
    graphs["orders_tied_adb"] = multi_order_compiled(True, True, True, True, "numpy", "gated", 1,
                                                     frozenset({"A", "D", "delta_bias"})).graph
    graphs["tied_s4d"] = tied_bidirectional_graph("s4d_zoh")
    return graphs


def schedules(graph, backward: bool) -> list:
    """Every schedule the cost model or the autotuner can pick for this graph at the role sets."""
    out = []
    for roles in ROLE_SETS.values():
        for device in ("cuda", "cpu"):
            if backward:
                s = choose_backward_schedule(graph, roles, device)
                out += [s, replace(s, partials=True)] if isinstance(s, Schedule) else [s]
            else:
                out += candidates(graph, roles, device) if device == "cuda" else [choose_schedule(graph, roles, device)]
    unique = []
    for s in out:
        if s not in unique:
            unique.append(s)
    return unique + [replace(unique[0], wide=True)]


def cases():
    """Yield (case name, text) for everything the snapshot covers."""
    for name, g in forward_graphs().items():
        yield f"ir/{name}.txt", g.text()
        graphs = [("fwd", g)]
        try:
            bwd = adjoint(g)
        except (NotImplementedError, ValueError) as e:
            yield f"ir/{name}_bwd.txt", f"refused: {type(e).__name__}: {e}\n"
        else:
            yield f"ir/{name}_bwd.txt", bwd.text()
            graphs.append(("bwd", bwd))
        for kind, graph in graphs:
            for k, sched in enumerate(schedules(graph, kind == "bwd")):
                for acc in ("float32", "float64"):
                    if acc == "float64" and (k or isinstance(sched, ChunkedSchedule)):
                        continue
                    try:
                        text = source(graph, sched, acc)
                    except (ValueError, NotImplementedError) as e:
                        text = f"refused: {type(e).__name__}: {e}\n"
                    yield f"triton/{name}_{kind}_{k}_{acc}.py", f"# {sched!r}\n" + text
    exports = [(n, {}) for n in sorted(ENTRIES)]
    exports += [("selective_scan", dict(dim=5, N=4)), ("ssd", dict(H=4, P=3, G=2, N=4))]
    for name, sizes in exports:
        for opts in (dict(), dict(step=True), dict(lti="dft"), dict(fp16=True), dict(force_scan=True),
                     dict(opset=18, chunk_size=16)):
            key = "_".join(f"{k}{v}" for k, v in opts.items()) or "plain"
            try:
                model = export_onnx(name, sizes=sizes, check=False, **opts)
            except (ValueError, NotImplementedError, ssmc.IRError) as e:
                yield f"onnx/{name}_{key}.txt", f"refused: {type(e).__name__}: {e}\n"
                continue
            yield f"onnx/{name}_{key}.onnx", model.SerializeToString()
    for merge in ("sum", "mean", "concat", "gated"):
        model = export_onnx("multi_order_scan", sizes=dict(K=2, dim=3, N=4), merge=merge, check=False)
        yield f"onnx/multi_order_{merge}.onnx", model.SerializeToString()
    model = export_onnx(tied_bidirectional_graph("s4d_zoh"), sizes=dict(dim=3, Kdim=6, K=2, N=4), check=False)
    yield "onnx/tied_s4d.onnx", model.SerializeToString()


def main(argv) -> int:
    if len(argv) != 3 or argv[1] not in ("write", "check"):
        print(__doc__)
        return 2
    root = Path(argv[2])
    index = {}
    bad = []
    for name, data in cases():
        raw = data.encode() if isinstance(data, str) else data
        index[name] = hashlib.sha256(raw).hexdigest()
        path = root / name
        if argv[1] == "write":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(raw)
        elif not path.exists() or path.read_bytes() != raw:
            bad.append(name)
            print(f"DIFFERS: {name}", flush=True)
            if not path.exists():
                continue
            out = root.parent / (root.name + "_new") / name
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(raw)
    if argv[1] == "write":
        (root / "index.json").write_text(json.dumps(index, indent=0, sort_keys=True))
        print(f"wrote {len(index)} cases to {root}")
        return 0
    want = json.loads((root / "index.json").read_text())
    missing = sorted(set(want) - set(index))
    extra = sorted(set(index) - set(want))
    for name in missing:
        print(f"MISSING: {name}")
    for name in extra:
        print(f"NEW: {name}")
    print(f"{len(index)} cases, {len(bad)} differ, {len(missing)} missing, {len(extra)} new")
    return 1 if bad or missing or extra else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
