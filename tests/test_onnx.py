"""ONNX export: every library entry and both drop-in ops in onnxruntime (CPU) against the NumPy
interpreter (float64), streaming in pieces, single-step graphs, fp16, sizes and bad input.

The oracle is the NumPy interpreter, never `onnx.reference` (it mishandles Scan graphs).
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
import sympy as sp

import ssmc
from ssmc import library
from ssmc.backends import numpy_interp
from ssmc.export import OP_FORMS, export_onnx, onnx_inputs, stateful_graph
from ssmc.ir import IRError
from ssmc.ir.inits import random_inputs

from conftest import assert_close, seed_of

ort = pytest.importorskip("onnxruntime")

Q = 16  # SSD chunk length in these tests: L = Q-1, Q, Q+1 cross chunk edges
LENGTHS = (1, Q - 1, Q, Q + 1, 50, 1000)
OP_SIZES = {"selective_scan": dict(batch=2, dim=5, N=4), "ssd": dict(batch=2, H=4, P=3, G=2, N=5)}
NAMES = sorted(library.ENTRIES) + sorted(OP_FORMS)


def _sizes(name):
    return dict(OP_SIZES[name]) if name in OP_SIZES else dict(library.DEFAULT_SIZES[name])


def _decl(name):
    return OP_FORMS[name][0] if name in OP_FORMS else library.get(name)


def session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def from_onnx(model, results) -> dict:
    """Outputs by name, complex ones rebuilt from their (re, im) axis, as float64/complex128."""
    complex_ = next((p.value.split(",") for p in model.metadata_props if p.key == "ssmc.complex_outputs"), [])
    out = {}
    for v, r in zip(model.graph.output, results):
        r = np.asarray(r, np.float64)
        out[v.name] = r[..., 0] + 1j * r[..., 1] if v.name in complex_ else r
    return out


def run(model, arrays, fp16=False) -> dict:
    return from_onnx(model, session(model).run(None, onnx_inputs(model, arrays, fp16)))


def reference(decl, arrays) -> dict:
    graph, _ = stateful_graph(decl, step=False)
    return numpy_interp.run(graph, arrays)


def inputs(decl, sizes, rng):
    graph, _ = stateful_graph(decl, step=False)
    return random_inputs(graph, sizes, seed=seed_of(rng))


@pytest.mark.parametrize("poisoned", ["x", "B", "C", "dt"])
@pytest.mark.parametrize("name", ["ssd", "mamba2"])
def test_a_nan_never_flows_backwards_in_time(name, poisoned, rng):
    """One NaN at step 20 (inside a chunk of 16) makes the outputs of the steps the recurrence reaches
    non-finite and no others: the chunked form's masked products must not turn 0 * NaN into earlier
    steps' NaN."""
    decl = _decl(name)
    graph, _ = stateful_graph(decl, step=False)
    model = export_onnx(name, sizes=_sizes(name), chunk_size=Q)
    x = inputs(decl, {**_sizes(name), "L": 50}, rng)
    axes = {graph[i].attr("name"): graph[i].attr("axes") for i in graph.ids("input")}
    if poisoned not in x:
        pytest.skip(f"{name} has no input {poisoned}")
    where = tuple(20 if a.role == "t" else 0 for a in axes[poisoned])
    x[poisoned] = x[poisoned].copy()
    x[poisoned][where] = np.nan
    got, want = run(model, x), reference(decl, x)
    for k, ref in want.items():
        roles = [a.role for a in graph[graph.outputs[k]].attr("axes")]
        bad = (lambda v: ~np.isfinite(v)) if "t" not in roles else (  # noqa: E731
            lambda v: ~np.isfinite(np.moveaxis(v, roles.index("t"), 0)).reshape(50, -1).all(1))
        assert k != "out" or (bad(ref)[20] and not bad(ref)[:20].any()), "the reference is not causal"
        np.testing.assert_array_equal(bad(got[k]), bad(ref), err_msg=f"{name} {poisoned}[{where}] -> {k}")


@pytest.mark.parametrize("name", NAMES)
def test_matches_reference_at_every_length(name, rng):
    decl = _decl(name)
    model = export_onnx(name, sizes=_sizes(name), chunk_size=Q)  # checked with full_check on export
    sess = session(model)
    for L in LENGTHS:
        x = inputs(decl, {**_sizes(name), "L": L}, rng)
        got = from_onnx(model, sess.run(None, onnx_inputs(model, x)))
        for k, ref in reference(decl, x).items():
            assert_close(got[k], ref, _fp32_tol(L), f"{name} L={L} {k}")


def _fp32_tol(L: int) -> float:
    """fp32 ONNX against the float64 reference: 1e-4, or, for long sequences, 4·L·u (u = 2^-24) — a
    state that barely decays (S4D-bilinear's |Ā| ≈ 1 - Δ|Re A|, Δ down to 1e-3) sums about L rounded
    steps (its final state measured up to 8.3e-5 at L = 1000 over 6 seeds)."""
    return max(1e-4, 4 * L * 2.0 ** -24)


@pytest.mark.parametrize("name", NAMES)
def test_size_does_not_depend_on_L(name):
    model = export_onnx(name, sizes=_sizes(name))
    dims = {d.dim_param for v in model.graph.input for d in v.type.tensor_type.shape.dim if d.dim_param}
    assert dims <= {"batch", "L"} and "batch" in dims
    assert len(model.graph.node) < 400
    # the same model at two lengths (and batch sizes): nothing was frozen at export
    decl, rng = _decl(name), np.random.default_rng(0)
    for batch, L in ((1, 8), (3, 300)):
        x = inputs(decl, {**_sizes(name), "batch": batch, "L": L}, rng)
        assert run(model, x)["out"].shape[:1] == (batch,)


def _pieces(L):
    cuts, k, size = [], 0, 1
    while k < L:  # 1, 1, 2, 3, 5, ... tokens: single steps and pieces across chunk edges
        cuts.append(min(k + size, L))
        k, size = cuts[-1], max(1, int(size * 1.7))
    return cuts


def _state_names(decl):
    graph, _ = stateful_graph(decl, step=False)
    h0 = next(graph[i].attr("name") for i in graph.ids("input") if graph[i].attr("axes")
              and not any(a.role == "t" for a in graph[i].attr("axes"))
              and any(a.role == "b" for a in graph[i].attr("axes")))
    hT = next(name for name in graph.outputs if name != "out")
    return h0, hT


def _slice_time(graph, arrays, lo, hi):
    out = {}
    for i in graph.ids("input"):
        n = graph[i]
        x = arrays[n.attr("name")]
        t = [k for k, a in enumerate(n.attr("axes")) if a.role == "t"]
        out[n.attr("name")] = x[(slice(None),) * t[0] + (slice(lo, hi),)] if t else x
    return out


@pytest.mark.parametrize("name", NAMES)
def test_streaming_in_pieces_equals_one_run(name, rng):
    _check_streaming(_decl(name), _sizes(name), export_onnx(name, sizes=_sizes(name), chunk_size=Q), rng)


def _check_streaming(decl, sizes, model, rng):
    graph, _ = stateful_graph(decl, step=False)
    sess = session(model)
    L = 2 * Q + 7
    x = inputs(decl, {**sizes, "L": L}, rng)
    full = reference(decl, x)
    h0, hT = _state_names(decl)
    state, outs, lo = x[h0], [], 0
    for hi in _pieces(L):
        piece = {**_slice_time(graph, x, lo, hi), h0: state}
        got = from_onnx(model, sess.run(None, onnx_inputs(model, piece)))
        outs.append(got["out"])
        state, lo = got[hT], hi
    t_axis = [a.role for a in graph[graph.outputs["out"]].attr("axes")].index("t")
    assert_close(np.concatenate(outs, axis=t_axis), full["out"], 1e-4, f"{decl.name} streamed out")
    assert_close(state, full[hT], 1e-4, f"{decl.name} streamed final state")


@pytest.mark.parametrize("name", NAMES)
def test_single_step_graph_equals_the_scan(name, rng):
    decl = _decl(name)
    graph, _ = stateful_graph(decl, step=False)
    step = export_onnx(name, sizes=_sizes(name), step=True)
    assert not any(n.op_type == "Scan" for n in step.graph.node)
    sess = session(step)
    L = 9
    x = inputs(decl, {**_sizes(name), "L": L}, rng)
    full = reference(decl, x)
    h0, hT = _state_names(decl)
    state, outs = x[h0], []
    t_axis = [a.role for a in graph[graph.outputs["out"]].attr("axes")].index("t")
    for t in range(L):
        token = {k: (np.take(v, 0, axis=[a.role for a in graph[graph.inputs[k]].attr("axes")].index("t"))
                     if any(a.role == "t" for a in graph[graph.inputs[k]].attr("axes")) else v)
                 for k, v in _slice_time(graph, x, t, t + 1).items()}
        token[h0] = state
        got = from_onnx(step, sess.run(None, onnx_inputs(step, token)))
        outs.append(got["out"])
        state = got[hT]
    assert_close(np.stack(outs, axis=t_axis), full["out"], 1e-4, f"{name} stepped out")
    assert_close(state, full[hT], 1e-4, f"{name} stepped final state")


@pytest.mark.parametrize("name", ["mamba1", "mamba2", "ssd", "selective_scan"])
@pytest.mark.parametrize("delta", [0.1, 0.5, 2.0])
@pytest.mark.parametrize("fp16", [False, True])
def test_stress_delta_no_nan(name, delta, fp16, rng):
    """Large Δ drives Ā = e^{ΔA} and the chunk decays to 0: no NaN or Inf, fp16 within 1e-2."""
    decl = _decl(name)
    sizes = {**_sizes(name), "L": 3 * Q + 5}
    x = inputs(decl, sizes, rng)
    for k in ("delta", "dt"):
        if k in x:  # Δ = softplus(raw + bias) = delta exactly
            bias = x.get(f"{k}_bias", 0.0)
            bias = bias[..., None] if k == "delta" else bias
            x[k] = np.log(np.expm1(delta)) - bias + 0 * x[k]
    if fp16:  # the reference sees the same fp16-rounded inputs
        x = {k: v.astype(np.float16).astype(np.float64) if np.asarray(v).dtype.kind == "f" else v
             for k, v in x.items()}
    model = export_onnx(name, sizes=_sizes(name), fp16=fp16, chunk_size=Q)
    got = run(model, x, fp16)
    for k, ref in reference(decl, x).items():
        assert np.all(np.isfinite(got[k])), f"{name} Δ={delta}: non-finite {k}"
        assert_close(got[k], ref, 1e-2 if fp16 else 1e-4, f"{name} Δ={delta} fp16={fp16} {k}")


def test_fp16_graph_keeps_fp32_inside():
    model = export_onnx("mamba2", fp16=True)
    assert {v.type.tensor_type.elem_type for v in model.graph.input} == {onnx.TensorProto.FLOAT16}
    assert {v.type.tensor_type.elem_type for v in model.graph.output} == {onnx.TensorProto.FLOAT16}
    casts = [n for n in model.graph.node if n.op_type == "Cast"]
    to = {a.i for n in casts for a in n.attribute if a.name == "to"}
    assert to == {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16}


def test_lowering_choice_is_recorded():
    def lowering(model):
        return next(p.value for p in model.metadata_props if p.key == "ssmc.lowering")
    assert "chunked" in lowering(export_onnx("mamba2"))
    assert "scan (" in lowering(export_onnx("mamba1"))
    chunked = export_onnx("mamba2")
    # the SSD form takes log Ā from its expression (no Log of an Exp that could underflow to -inf)
    exps = {n.output[0] for n in chunked.graph.node if n.op_type == "Exp"}
    assert not any(n.op_type == "Log" and n.input[0] in exps for n in chunked.graph.node)
    # MatMuls, not multi-operand Einsum; the causal mask is a Where before an Exp
    ops = [n.op_type for n in chunked.graph.node]
    assert "MatMul" in ops and "Einsum" not in ops and "Where" in ops


DFT_SPECS = {
    "s4d_zoh": library.get("s4d_zoh"),
    "s4d_bilinear": library.get("s4d_bilinear"),  # Ā not an exponential: polar form via atan2
    "real_lti": library.get("mamba1").with_(name="real_lti", selective=(), dt="exp", gate=None),
}


@pytest.mark.parametrize("opset", [18, 20])
@pytest.mark.parametrize("name", sorted(DFT_SPECS))
def test_dft_convolution_option(name, opset, rng):
    spec = DFT_SPECS[name]
    sizes = dict(library.DEFAULT_SIZES["mamba1"])
    model = export_onnx(spec, sizes=sizes, lti="dft", opset=opset)
    lowering = next(p.value for p in model.metadata_props if p.key == "ssmc.lowering")
    assert ": dft (" in lowering
    assert "DFT" in {n.op_type for n in model.graph.node} and "Scan" not in {n.op_type for n in model.graph.node}
    sess = session(model)
    for L in LENGTHS:
        x = inputs(spec, {**sizes, "L": L}, rng)
        got = from_onnx(model, sess.run(None, onnx_inputs(model, x)))
        for k, ref in reference(spec, x).items():  # fp32 FFTs of length >= 2L: error grows with log L
            assert_close(got[k], ref, 3e-4, f"{name} dft L={L} {k}")
    _check_streaming(spec, sizes, model, rng)


def test_dft_elementwise_form_when_the_state_itself_is_read(rng):
    """A readout that is not a sum over the state (here the state itself is the output): the DFT
    form convolves every state element (the general, elementwise construction)."""
    m = ssmc.Builder("lti_state")
    u = m.input("u", ("batch", "dim", "L"))
    a = ssmc.ir.builder.exp(-ssmc.ir.builder.exp(m.input("a_log", ("dim",))))
    h = m.scan(a, m.input("b", ("dim",)) * u)
    m.output("h", h * m.input("c", ("dim",)), ("batch", "dim", "L"))
    g = m.build()
    sizes = dict(batch=2, dim=3, L=40)
    model = export_onnx(g, sizes=sizes, lti="dft")
    assert "DFT" in {n.op_type for n in model.graph.node} and "MatMul" not in {n.op_type for n in model.graph.node}
    graph, _ = stateful_graph(g, step=False)
    x = random_inputs(graph, sizes, seed=seed_of(rng))
    ref = numpy_interp.run(graph, x)
    got = run(model, x)
    assert_close(got["h"], ref["h"], 1e-4, "h")
    assert_close(got["state_out"], ref["state"], 1e-4, "state")


def test_dft_option_falls_back_with_a_reason():
    model = export_onnx("mamba1", lti="dft")
    lowering = next(p.value for p in model.metadata_props if p.key == "ssmc.lowering")
    assert "scan (one Scan step per token (no DFT form: Ā varies in time" in lowering


def test_reverse_scan_uses_scan_directions(rng):
    spec = library.get("mamba1").with_(name="mamba1_rev", direction="reverse")
    sizes = {**library.DEFAULT_SIZES["mamba1"], "L": 21}
    model = export_onnx(spec, sizes=sizes)
    scan = next(n for n in model.graph.node if n.op_type == "Scan")
    dirs = {a.name: list(a.ints) for a in scan.attribute}
    assert set(dirs["scan_input_directions"]) == {1} and set(dirs["scan_output_directions"]) == {1}
    x = inputs(spec, sizes, rng)
    for k, ref in reference(spec, x).items():
        assert_close(run(model, x)[k], ref, 1e-4, f"reverse {k}")


@pytest.mark.parametrize("force_scan", [False, True])
def test_seq_idx_resets(rng, force_scan):
    """Packed sequences: resets at chunk edges, twice in a chunk, back to an earlier id — in the
    chunked SSD form (segment masks before Exp) and in the Scan form."""
    spec = library.get("mamba2").with_(name="mamba2_packed", seq_idx=True)
    sizes = {**library.DEFAULT_SIZES["mamba2"], "L": 50}
    model = export_onnx(spec, sizes=sizes, chunk_size=Q, force_scan=force_scan)
    lowering = next(p.value for p in model.metadata_props if p.key == "ssmc.lowering")
    assert (": scan (" if force_scan else ": chunked (") in lowering
    x = inputs(spec, sizes, rng)
    seq = np.zeros((sizes["batch"], 50), np.int64)
    seq[0, 16:], seq[0, 20:23], seq[0, 23:] = 1, 2, 1
    seq[1, 1:], seq[1, 32:] = 5, 6
    x["seq_idx"] = seq
    for k, ref in reference(spec, x).items():
        assert_close(run(model, x)[k], ref, 1e-4, f"seq_idx {k}")


def test_user_rule_and_raw_graph(rng):
    """A user-declared rule on a Builder graph: state in/out added as `state` / `state_out`."""
    gbt = library.generalized_bilinear(sp.Rational(1, 3))
    m = ssmc.Builder("gbt_scan")
    u = m.input("u", ("batch", "dim", "L"))
    delta = ssmc.ir.builder.softplus(m.input("delta", ("batch", "dim", "L")))
    A_bar, B_scale = m.discretize(delta, -ssmc.ir.builder.exp(m.input("A_log", ("dim", "N"))), gbt)
    h = m.scan(A_bar, B_scale * m.input("B", ("batch", "N", "L")) * u)
    m.output("out", (m.input("C", ("batch", "N", "L")) * h).sum("n"), ("batch", "dim", "L"))
    g = m.build()
    sizes = dict(batch=2, dim=3, N=4, L=30)
    model = export_onnx(g, sizes=sizes)
    assert [v.name for v in model.graph.output] == ["out", "state_out"]
    graph, _ = stateful_graph(g, step=False)
    x = random_inputs(graph, sizes, seed=seed_of(rng))
    ref = numpy_interp.run(graph, x)
    got = run(model, x)
    assert_close(got["out"], ref["out"], 1e-4, "out")
    assert_close(got["state_out"], ref["state"], 1e-4, "state")


def test_unlowerable_expression_names_the_node():
    bad = ssmc.rule("tanh_rule", sp.tanh(ssmc.dt * ssmc.A), ssmc.dt)
    spec = library.get("mamba1").with_(name="tanh_variant", rule=bad)
    with pytest.raises(IRError, match=r"node %\d+ \(expr tanh\(A\*dt\)\): no ONNX lowering for sympy tanh"):
        export_onnx(spec, sizes=library.DEFAULT_SIZES["mamba1"])


@pytest.mark.parametrize("kwargs, match", [
    (dict(sizes={"dim": 4}), r"sizes: .*missing \['N'\]"),
    (dict(sizes={"dim": 4, "N": 2}, opset=12), r"opset: expected one of"),
    (dict(sizes={"dim": 4, "N": 2}, lti="fft"), r"lti: expected one of"),
    (dict(sizes={"dim": 4, "N": 2}, chunk_size=0), r"chunk_size: expected a positive int"),
])
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        export_onnx("selective_scan", **kwargs)


def test_bad_name():
    with pytest.raises(ValueError, match="no library entry 'mamba3'"):
        export_onnx("mamba3")
    with pytest.raises(TypeError, match="export_onnx\\(\\) takes"):
        export_onnx(3.0)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "ssmc", "onnx", *args], capture_output=True, text=True)


def test_cli_writes_every_name(tmp_path):
    for name in NAMES:
        extra = {"selective_scan": ["--dim", "8", "--d-state", "4"],
                 "ssd": ["--nheads", "4", "--headdim", "8", "--ngroups", "2", "--d-state", "4",
                         "--chunk-size", "32"]}.get(name, [])
        path = tmp_path / f"{name}.onnx"
        r = _cli(name, "-o", str(path), *extra)
        assert r.returncode == 0, r.stderr
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
        assert "nodes" in r.stdout and "lowering" in r.stdout
    r = _cli("ssd", "-o", str(tmp_path / "s.onnx"), "--nheads", "4", "--headdim", "8", "--ngroups", "2",
             "--d-state", "4")
    names = [v.name for v in onnx.load(str(tmp_path / "s.onnx")).graph.input]
    assert names == ["x", "dt", "A", "B", "C", "D", "z", "dt_bias", "initial_states"]
    r = _cli("selective_scan", "-o", str(tmp_path / "u.onnx"), "--dim", "8", "--d-state", "4")
    model = onnx.load(str(tmp_path / "u.onnx"))
    assert [v.name for v in model.graph.input] == ["u", "delta", "A", "B", "C", "D", "z", "delta_bias",
                                                   "initial_state"]
    assert [v.name for v in model.graph.output] == ["out", "last_state"]
    r = _cli("mamba2", "-o", str(tmp_path / "m.onnx"), "--step", "--fp16", "--opset", "21")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("args, match", [
    (["selective_scan", "-o", "x.onnx", "--dim", "8"], "missing \\['N'\\]"),
    (["mamba2", "-o", "x.onnx", "--opset", "9"], "opset"),
    (["mamba2", "-o", "x.onnx", "--chunk-size", "0"], "positive integer"),
    (["mamba2", "-o", "x.onnx", "--size", "H"], "SYMBOL=SIZE"),
    (["mamba2"], "required: -o"),
    (["nosuch", "-o", "x.onnx"], "invalid choice"),
])
def test_cli_usage_errors(args, match, tmp_path):
    r = subprocess.run([sys.executable, "-m", "ssmc", "onnx", *args], capture_output=True, text=True,
                       cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert __import__("re").search(match, r.stderr), r.stderr
