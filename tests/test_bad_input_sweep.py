"""Every argument of every public op, each given a set of wrong values: each call must fail with a
ValueError or TypeError whose message names the argument (or, for a size two arguments disagree on, the
argument that disagrees with the first), before any kernel is built — never succeed, never raise from
inside a kernel, sympy or onnx.

`python tests/test_bad_input_sweep.py` prints the count of each outcome (the issue's report).
"""
from __future__ import annotations

import collections
import re

import pytest
import torch

import ssmc
from ssmc import ops
from ssmc.backends import triton as tb


def _t(*shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed + len(shape))
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


def _base():
    """op name -> (function, valid keyword arguments, [names of its tensor arguments])."""
    b, dim, N, L, H, P, G = 2, 4, 3, 7, 4, 2, 2
    scan = dict(u=_t(b, dim, L), delta=_t(b, dim, L).abs(), A=-_t(dim, N).abs(), B=_t(b, N, L), C=_t(b, N, L),
                D=_t(dim), z=_t(b, dim, L), delta_bias=_t(dim))
    ssd = dict(x=_t(b, L, H, P), dt=_t(b, L, H).abs(), A=-_t(H).abs(), B=_t(b, L, G, N), C=_t(b, L, G, N),
               chunk_size=16, D=_t(H), z=_t(b, L, H, P), dt_bias=_t(H), initial_states=_t(b, H, P, N),
               seq_idx=torch.zeros(b, L, dtype=torch.int32))
    step = dict(state=torch.zeros(b, dim, N), x=_t(b, dim), dt=_t(b, dim).abs(), A=-_t(dim, N).abs(), B=_t(b, N),
                C=_t(b, N), D=_t(dim), z=_t(b, dim), dt_bias=_t(dim))
    K = 2
    orders = torch.stack([torch.arange(L), torch.arange(L).flip(0)])
    multi = dict(u=_t(b, dim, L), delta=_t(b, K, dim, L).abs(), A=-_t(K, dim, N).abs(), B=_t(b, K, N, L),
                 C=_t(b, K, N, L), orders=orders, D=_t(K, dim), z=_t(b, dim, L), delta_bias=_t(K, dim))
    hydra = dict(x=_t(b, L, H, P), dt=_t(b, L, 2, H).abs(), A=-_t(H).abs(), B=_t(b, L, 2, G, N),
                 C=_t(b, L, 2, G, N), D=_t(H), dt_bias=_t(H))
    return {
        "selective_scan": (ops.selective_scan, scan),
        "ssd": (ops.ssd, ssd),
        "selective_state_update": (ops.selective_state_update, step),
        "multi_order_scan": (ops.multi_order_scan, multi),
        "hydra": (ops.hydra, hydra),
    }


FLAGS = {"selective_scan": ["delta_softplus", "return_last_state", "return_varlen_states"],
         "ssd": ["dt_softplus", "return_final_states", "return_varlen_states"],
         "selective_state_update": ["dt_softplus"], "multi_order_scan": ["delta_softplus"], "hydra": ["dt_softplus"]}


def _tensor_variants(x):
    """Wrong values for a tensor argument: another rank, another size, a non-tensor, complex, integer
    (for floats), float (for integer inputs)."""
    out = {"rank-1": x[0] if x.dim() > 1 else x[None, None],
           "size+1": torch.cat([x, x.narrow(-1, 0, 1)], -1) if x.dim() else x[None],
           "string": "tensor", "list": x.tolist()}
    if x.is_floating_point():
        out["integer"] = x.to(torch.int64)
        out["nan-free complex"] = torch.complex(x, x)
    else:
        out["float"] = x.float()
    return out


def _cases():
    cases = []
    for op, (fn, args) in _base().items():
        for name, value in args.items():
            if torch.is_tensor(value):
                for kind, bad in _tensor_variants(value).items():
                    cases.append((op, name, kind, bad))
        for name in FLAGS[op]:
            for kind, bad in {"str": "no", "int": 1, "None": None}.items():
                cases.append((op, name, f"flag {kind}", bad))
        cases.append((op, "backend", "unknown", "cuda"))
    cases += [("ssd", "chunk_size", kind, bad) for kind, bad in {"zero": 0, "negative": -16, "float": 2.5,
                                                                   "str": "64"}.items()]
    cases += [("ssd", "dt_limit", kind, bad) for kind, bad in {"reversed": (1.0, 0.1), "negative": (-1.0, 1.0),
                                                                 "scalar": 0.5, "triple": (0, 1, 2)}.items()]
    cases += [("selective_state_update", "state_batch_indices", kind, bad) for kind, bad in {
        "out of range": torch.tensor([0, 9]), "duplicate": torch.tensor([1, 1]), "float": torch.tensor([0.0, 1.0]),
        "wrong length": torch.tensor([0])}.items()]
    cases += [("multi_order_scan", "merge", "unknown", "max"), ("multi_order_scan", "tie", "unknown", ("E",)),
              ("multi_order_scan", "orders", "not a permutation", torch.zeros(2, 7, dtype=torch.int64))]
    cases += [("export_onnx", "sizes", kind, bad) for kind, bad in {
        "unknown key": {"heads": 8}, "negative": {"H": -2}, "float": {"H": 2.5}, "not a dict": [("H", 2)]}.items()]
    cases += [("export_onnx", k, "str", "no") for k in ("fp16", "step", "force_scan", "check")]
    cases += [("export_onnx", "opset", "too old", 11), ("export_onnx", "lti", "unknown", "fft"),
              ("export_onnx", "chunk_size", "zero", 0)]
    cases += [("compile", "backend", "unknown", "jax"), ("compile", "precision", "unknown", "fp8"),
              ("compile", "schedule", "unknown key", {"blok_d": 4}), ("compile", "decl", "number", 3)]
    return cases


# a size two arguments disagree on is reported on the argument that differs from the first to set it
ALSO_NAMED = {("selective_scan", "A", "size+1"): "B", ("ssd", "B", "size+1"): "C",
              ("multi_order_scan", "u", "size+1"): "delta", ("multi_order_scan", "A", "size+1"): "B",
              ("hydra", "B", "size+1"): "C"}
# values the sweep draws that are valid: a complex A (a complex state), orders as nested lists, a longer
# head dimension P (only x has it)
VALID = {("selective_scan", "A", "nan-free complex"), ("multi_order_scan", "orders", "list"),
         ("hydra", "x", "size+1")}
CASES = [c for c in _cases() if c[:3] not in VALID]
def _call(op, name, bad):
    if op == "export_onnx":
        kw = {"sizes": {"H": 4, "P": 2, "G": 2, "N": 3}} if name != "sizes" else {}
        return ssmc.export_onnx("mamba2", **kw, **{name: bad})
    if op == "compile":
        if name == "decl":
            return ssmc.compile(bad)
        return ssmc.compile("mamba1", **{name: bad})
    fn, args = _base()[op]
    return fn(**{**args, name: bad, **({} if name == "backend" else {"backend": "triton"})})


@pytest.fixture
def no_kernels(monkeypatch):
    def build(*a, **k):
        raise AssertionError("a kernel was built before the input was checked")
    monkeypatch.setattr(tb, "build", build)


def outcome(op, name, kind, bad) -> str:
    """'named' (the expected clear error), or what went wrong instead."""
    try:
        _call(op, name, bad)
    except (ValueError, TypeError) as e:
        names = {name, ALSO_NAMED.get((op, name, kind), name)}
        if op == "compile" and name == "decl":
            names.add("compile")
        return "named" if any(re.search(rf"\b{re.escape(n)}\b", str(e)) for n in names) else f"unnamed: {e}"
    except AssertionError as e:
        return f"kernel built first: {e}"
    except Exception as e:  # noqa: BLE001 - the outcome being classified
        return f"raw {type(e).__name__}: {e}"
    return "accepted"


@pytest.mark.parametrize("op, name, kind, bad", CASES, ids=[f"{o}-{n}-{k}" for o, n, k, _ in CASES])
def test_bad_input_is_refused_naming_the_argument(op, name, kind, bad, no_kernels):
    assert outcome(op, name, kind, bad) == "named"


if __name__ == "__main__":
    tally, bad_ones = collections.Counter(), []
    for case in CASES:
        res = outcome(*case)
        tally[res.split(":")[0]] += 1
        if res != "named":
            bad_ones.append((case[:3], res))
    print(f"{len(CASES)} bad inputs over {len({(o, n) for o, n, _, _ in CASES})} arguments of "
          f"{len({o for o, *_ in CASES})} entry points")
    for k, v in tally.most_common():
        print(f"  {v:4d}  {k}")
    for c, r in bad_ones:
        print(" ", c, r[:200])
