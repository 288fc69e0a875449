"""Bad input fails early and clearly: ValueError / TypeError naming the argument and the expected
symbolic shape, raised while binding, before any kernel is generated."""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
import torch

import ssmc
from ssmc import Builder, Spec, library, ops
from ssmc.backends import triton as tb
from ssmc.ir import IRError
from ssmc.ir import builder as d


@pytest.fixture
def no_kernels(monkeypatch):
    """Any attempt to build a kernel fails the test: errors must come first."""
    def build(*a, **k):
        raise AssertionError("a kernel was built before the input was checked")
    monkeypatch.setattr(tb, "build", build)


def _mamba1_args(rng, batch=2, dim=4, L=7, N=3):
    return dict(u=rng.standard_normal((batch, dim, L)), delta=rng.uniform(0.1, 0.5, (batch, dim, L)),
                A=-rng.uniform(0.5, 1.0, (dim, N)), B=rng.standard_normal((batch, N, L)),
                C=rng.standard_normal((batch, N, L)))


def _ssd_args(rng, batch=2, L=7, H=4, P=3, G=2, N=5):
    return dict(x=rng.standard_normal((batch, L, H, P)), dt=rng.uniform(0.1, 0.5, (batch, L, H)),
                A=-rng.uniform(0.5, 1.0, H), B=rng.standard_normal((batch, L, G, N)),
                C=rng.standard_normal((batch, L, G, N)))


# --- shapes and dtypes, through the drop-in ops ------------------------------------------------

SELECTIVE_BAD = {
    "wrong rank": (lambda a: dict(a, u=a["u"][0]), ValueError,
                   r"u: expected shape \(batch, dim, L\) \(rank 3\), got \(4, 7\)"),
    "delta L differs": (lambda a: dict(a, delta=a["delta"][..., :5]), ValueError,
                        r"delta: expected shape \(batch, dim, L\) with L=7 \(set by u\), got \(2, 4, 5\)"),
    "A N differs from B": (lambda a: dict(a, A=a["A"][:, :2]), ValueError,
                           r"B: expected shape \(batch, N, L\) with N=2"),
    "D size": (lambda a: dict(a, D=np.ones(5)), ValueError, r"D: expected shape \(dim\) with dim=4"),
    "complex u": (lambda a: dict(a, u=a["u"] + 1j), TypeError, r"u: expected a real array, got complex"),
    "complex B with a real A": (lambda a: dict(a, B=a["B"] + 1j), TypeError, r"B: expected a real array"),
    "integer u": (lambda a: dict(a, u=a["u"].astype(np.int64)), TypeError,
                  r"u: expected a floating-point array, got dtype int64"),
    "B rank": (lambda a: dict(a, B=a["B"][0, 0]), ValueError,
               r"B: expected shape \(dim, N\) or \(batch, N, L\) or \(batch, G, N, L\)"),
    "groups do not divide dim": (lambda a: dict(a, B=np.ones((2, 3, 3, 7)), C=np.ones((2, 3, 3, 7))), ValueError,
                                 r"B: G=3 groups must divide dim=4"),
    "empty L": (lambda a: {k: v[..., :0] if v.ndim == 3 else v for k, v in a.items()}, ValueError, r"dimension L is 0"),
}


@pytest.mark.parametrize("backend", ["numpy", "triton"])
@pytest.mark.parametrize("case", sorted(SELECTIVE_BAD))
def test_selective_scan_bad_input(case, backend, rng, no_kernels):
    change, exc, msg = SELECTIVE_BAD[case]
    with pytest.raises(exc, match=msg):
        ops.selective_scan(**change(_mamba1_args(rng)), backend=backend)


def test_bad_torch_input_names_the_argument(rng, no_kernels):
    a = {k: torch.from_numpy(v) for k, v in _mamba1_args(rng).items()}
    with pytest.raises(ValueError, match=r"C: expected shape \(batch, N, L\) with L=7 \(set by u\)"):
        ops.selective_scan(**dict(a, C=a["C"][..., :6]), backend="triton")
    with pytest.raises(TypeError, match=r"u: expected a floating-point array, got dtype torch.int32"):
        ops.selective_scan(**dict(a, u=a["u"].to(torch.int32)), backend="triton")


SSD_BAD = {
    "float seq_idx": (dict(seq_idx=np.zeros((2, 7))), TypeError,
                      r"seq_idx: expected an integer array, got dtype float64"),
    "seq_idx length": (dict(seq_idx=np.zeros((2, 6), np.int64)), ValueError,
                       r"seq_idx: expected shape \(batch, L\) with L=7 \(set by x\)"),
    "groups do not divide heads": (dict(B=np.ones((2, 7, 3, 5)), C=np.ones((2, 7, 3, 5))), ValueError,
                                   r"B: G=3 groups must divide H=4"),
    "D rank": (dict(D=np.ones((4, 3, 1))), ValueError, r"D: expected shape \(H,\) or \(H, P\), got \(4, 3, 1\)"),
    "D per position": (dict(D=np.ones((4, 2))), ValueError, r"D: expected shape \(H, P\) with P=3"),
    "initial_states": (dict(initial_states=np.ones((2, 4, 3, 4))), ValueError,
                       r"initial_states: expected shape \(batch, H, P, N\) with N=5"),
    "dt heads": (dict(dt=np.ones((2, 7, 3))), ValueError, r"dt: expected shape \(batch, L, H\) with H=4 \(set by x\)"),
    "complex x": (dict(x=np.ones((2, 7, 4, 3), complex)), TypeError, r"x: expected a real array"),
}


@pytest.mark.parametrize("case", sorted(SSD_BAD))
def test_ssd_bad_input(case, rng, no_kernels):
    change, exc, msg = SSD_BAD[case]
    with pytest.raises(exc, match=msg):
        ops.ssd(**dict(_ssd_args(rng), **change), chunk_size=4, backend="triton")


@pytest.mark.parametrize("chunk", [0, -4, 2.5, True, None])
def test_ssd_chunk_size(chunk, rng):
    with pytest.raises(ValueError, match=r"chunk_size: expected a positive integer"):
        ops.ssd(**_ssd_args(rng), chunk_size=chunk, backend="numpy")


# --- ssmc.compile() arguments -----------------------------------------------------------------------

def test_missing_and_unexpected_arguments(rng, no_kernels):
    fn = ssmc.compile("mamba1", backend="triton")
    x = {k: v for k, v in _mamba1_args(rng).items() if k != "A"}
    with pytest.raises(TypeError, match=r"mamba1: missing argument 'delta' of shape \(batch, dim, L\)"):
        fn(u=x["u"])
    with pytest.raises(TypeError, match=r"unexpected argument\(s\) \['foo'\]"):
        fn(**x, foo=np.ones(3))


@pytest.mark.parametrize("backend", ["cuda", "jax", "", None])
def test_bad_backend(backend, rng):
    with pytest.raises(ValueError, match=r"backend must be one of \('numpy', 'triton', 'auto'\)"):
        ssmc.compile("mamba1", backend=backend)
    with pytest.raises(ValueError, match=r"backend must be one of"):
        ops.selective_scan(**_mamba1_args(rng), backend=backend)


def test_bad_precision():
    with pytest.raises(ValueError, match=r"precision must be 'float64' or 'float32', got 'fp8'"):
        ssmc.compile("mamba1", backend="numpy", precision="fp8")


def test_unknown_library_name():
    with pytest.raises(ValueError, match=r"no library entry 'mamba3'; entries are \['lru', 'mamba1'"):
        ssmc.compile("mamba3")
    with pytest.raises(ValueError, match=r"no library entry"):
        library.get("S4D")


def test_compile_takes_a_declaration():
    with pytest.raises(TypeError, match=r"compile\(\) takes a Spec, a Graph or a library name, got int"):
        ssmc.compile(42)


@pytest.mark.parametrize("schedule,msg", [
    (dict(block_d=3), r"Schedule.block_d must be a power of two, got 3"),
    (dict(block_d=0), r"Schedule.block_d must be a power of two, got 0"),
    (dict(chunk=6), r"Schedule.chunk must be a power of two, got 6"),
    (dict(chunk=-8), r"Schedule.chunk must be a power of two, got -8"),
    (dict(layout="dtt"), r"Schedule.layout must order the letters d, n, t, got 'dtt'"),
])
def test_bad_schedule(schedule, msg):
    with pytest.raises(ValueError, match=msg):
        ssmc.compile("mamba1", backend="triton", schedule=schedule)


def test_unknown_schedule_key():
    with pytest.raises(TypeError, match=r"blockd"):
        ssmc.compile("mamba1", backend="triton", schedule=dict(blockd=4))


# --- declarations ------------------------------------------------------------------------------

@pytest.mark.parametrize("kw,msg", [
    (dict(state="dense"), r"Spec.state must be one of \('diag_real', 'diag_complex', 'scalar_head'\), got 'dense'"),
    (dict(A="hippo"), r"Spec.A must be one of"),
    (dict(dt="relu"), r"Spec.dt must be one of"),
    (dict(direction="both"), r"Spec.direction must be one of"),
    (dict(gate="gelu"), r"Spec.gate must be one of"),
    (dict(skip="p"), r"Spec.skip must be one of"),
    (dict(io="miso"), r"Spec.io must be one of"),
    (dict(rule="rk4"), r"unknown discretization rule 'rk4'"),
    (dict(selective={"A"}), r"selective must be a subset"),
    (dict(A="s4d"), r"A='s4d' gives a complex A; use state='diag_complex'"),
    (dict(state="scalar_head", A="s4d"), r"gives a complex A|scalar_head states are SISO with a real A"),
    (dict(io="mimo"), r"MIMO specs are time-invariant"),
    (dict(io="mimo", selective=(), skip="hp"), r"MIMO specs|skip='hp'"),
    (dict(groups=True, selective={"dt"}), r"groups=True needs a time-varying B or C"),
    (dict(skip="hp"), r"skip='hp' \(D per head × P\) is for scalar_head states"),
    (dict(state="diag_complex", complex_BC=()),
     r"state='diag_complex' with a real A \(A='neg_exp'\) needs a complex B"),
])
def test_bad_spec(kw, msg):
    with pytest.raises(ValueError, match=msg):
        Spec("bad", **kw)


def test_bad_rule():
    with pytest.raises(ValueError, match=r"rule 'bad': A_bar may use only ssmc.dt and ssmc.A, found \['q'\]"):
        ssmc.rule("bad", sp.Symbol("q") * ssmc.dt, 1)


def test_bad_builder_use():
    m = Builder("b")
    with pytest.raises(ValueError, match=r"axis 'foo' has no default role; write it as 'foo:<role>'"):
        m.input("x", ("foo",))
    with pytest.raises(ValueError, match=r"axis 'foo': role must be one of"):
        m.input("x", ("foo:q",))
    u = m.input("u", ("batch", "dim", "L"))
    with pytest.raises(ValueError, match=r"input 'u' declared twice"):
        m.input("u", ("batch", "dim", "L"))
    with pytest.raises(ValueError,
                       match=r"scan order must be 'forward', 'reverse', 'gather' or a grid_order, got 'sideways'"):
        m.scan(u, u, order="sideways")
    with pytest.raises(TypeError, match=r"cannot use str in an SSM declaration"):
        u + "1"
    other = Builder("c").input("v", ("L",))
    with pytest.raises(ValueError, match=r"two different builders"):
        u * other


# --- IR that cannot be typed or lowered: the error names the node ------------------------------

def test_time_varying_use_of_a_final_state_names_the_node():
    m = Builder("late")
    u = m.input("u", ("batch", "dim", "L"))
    h = m.scan(m.input("a", ("dim",)), u)
    m.output("y", u * m.last(h), ("batch", "dim", "L"))
    fn = ssmc.compile(m.build(), backend="triton")
    with pytest.raises(IRError, match=r"node %\d+ \(mul\): time-varying use of a final state cannot be lowered"):
        fn.source


@pytest.mark.parametrize("make,msg", [
    (lambda m, u, a: m.scan(a, a), r"node %\d+ \(scan\): scan: neither Ā nor the input varies over time"),
    (lambda m, u, a: (u * a).sum("t"), r"node %\d+ \(sum\): sum over \['t'\]|sum may reduce only over h, p, n"),
    (lambda m, u, a: d.sqrt(d.complex_(u, u)), r"node %\d+ \(sqrt\): sqrt takes a real operand"),
    (lambda m, u, a: m.scan(a, u, h0=u), r"node %\d+ \(scan\): scan: initial state"),
])
def test_ill_typed_graph_names_the_node(make, msg):
    m = Builder("bad")
    u = m.input("u", ("batch", "dim", "L"))
    a = m.input("a", ("dim",))
    m.output("y", make(m, u, a), ("batch", "dim", "L"))
    with pytest.raises(IRError, match=msg):
        ssmc.compile(m.build(), backend="numpy")


def test_output_layout_must_cover_its_value():
    m = Builder("narrow")
    u = m.input("u", ("batch", "dim", "L"))
    m.output("y", u * m.input("w", ("dim", "N")), ("batch", "dim", "L"))
    with pytest.raises(IRError, match=r"node %\d+ \(output y\): output 'y': value r\[b,t,h,n\] varies over axes"):
        ssmc.compile(m.build(), backend="numpy")


def test_symbol_used_with_two_roles():
    m = Builder("roles")
    u = m.input("u", ("batch", "dim", "L"))
    m.output("y", u + m.input("v", ("batch", "dim:n", "L")), ("batch", "dim", "L"))
    with pytest.raises(IRError, match=r"input v\): symbol 'dim' used as role 'n' here and 'h' elsewhere"):
        ssmc.compile(m.build(), backend="numpy")


def test_ir_errors_are_value_errors():
    assert issubclass(IRError, ValueError)


def test_the_no_kernels_guard_bites(rng, no_kernels):
    """The guard above is real: a valid Triton call does reach the kernel builder."""
    with pytest.raises(AssertionError, match="a kernel was built"):
        ops.selective_scan(**_mamba1_args(rng), backend="triton")


# --- arguments that were silently ignored or gave obscure errors (issue 25) ----------------------

@pytest.mark.parametrize("sizes, exc, msg", [
    ({"heads": 8}, ValueError, r"sizes: mamba2 has no symbol 'heads'; its symbols are \['G', 'H'"),
    ({"H": -1}, ValueError, r"sizes\['H'\]: expected a positive int, got -1"),
    ({"H": 0}, ValueError, r"sizes\['H'\]: expected a positive int, got 0"),
    ({"H": 2.5}, TypeError, r"sizes\['H'\]: expected a positive int, got float 2.5"),
    ({"H": True}, TypeError, r"sizes\['H'\]: expected a positive int, got bool"),
    ([("H", 4)], TypeError, r"sizes: expected a dict"),
])
def test_export_sizes_are_checked(sizes, exc, msg):
    with pytest.raises(exc, match=msg):
        ssmc.export_onnx("mamba2", sizes=sizes)


def test_export_of_a_graph_needs_every_size():
    with pytest.raises(ValueError, match=r"sizes: ssd needs a size for \['G', 'N', 'P'\], got \['H'\]"):
        ssmc.export_onnx(library.get("mamba2").with_(name="ssd"), sizes={"H": 4})


@pytest.mark.parametrize("option", ["fp16", "step", "force_scan", "check"])
def test_export_flags_take_bools(option):
    with pytest.raises(TypeError, match=rf"{option}: expected a bool, got str 'no'"):
        ssmc.export_onnx("mamba1", **{option: "no"})


def test_cli_rejects_an_unknown_size(tmp_path):
    from ssmc.cli import main
    assert main(["onnx", "mamba2", "--size", "heads=8", "-o", str(tmp_path / "m.onnx")]) == 2
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("flag_name", ["delta_softplus", "return_last_state"])
@pytest.mark.parametrize("value", ["no", 1, None])
def test_selective_scan_flags_take_bools(flag_name, value, rng, no_kernels):
    with pytest.raises(TypeError, match=rf"{flag_name}: expected a bool, got"):
        ops.selective_scan(**_mamba1_args(rng), **{flag_name: value}, backend="numpy")


@pytest.mark.parametrize("limit, exc, msg", [
    ((1.0, 0.1), ValueError, r"dt_limit: expected 0 <= low <= high, got \(1.0, 0.1\)"),
    ((-0.1, 1.0), ValueError, r"dt_limit: expected 0 <= low <= high"),
    ((float("nan"), 1.0), ValueError, r"dt_limit: expected 0 <= low <= high"),
    ((0.1,), TypeError, r"dt_limit: expected a pair \(low, high\) of real numbers"),
    ("ab", TypeError, r"dt_limit: expected a pair"),
    (0.5, TypeError, r"dt_limit: expected a pair"),
])
def test_ssd_dt_limit_is_checked(limit, exc, msg, rng, no_kernels):
    with pytest.raises(exc, match=msg):
        ops.ssd(**_ssd_args(rng), chunk_size=16, dt_limit=limit, backend="numpy")
    with pytest.raises(TypeError, match=r"dt_softplus: expected a bool, got str 'no'"):
        ops.ssd(**_ssd_args(rng), chunk_size=16, dt_softplus="no", backend="numpy")


def test_decode_state_of_another_kind_than_the_inputs(rng):
    x = {k: torch.from_numpy(v) for k, v in _ssd_args(rng).items()}
    state = np.zeros((2, 4, 3, 5))
    A = x["A"][:, None, None].expand(4, 3, 5)
    dt = x["dt"][:, 0, :, None].expand(-1, -1, 3)
    with pytest.raises(TypeError, match=r"state: expected a torch tensor like the other arguments, got numpy"):
        ops.selective_state_update(state, x["x"][:, 0], dt, A, x["B"][:, 0], x["C"][:, 0], backend="numpy")


@pytest.mark.parametrize("expr", ["__import__('os').getcwd()", "exp(dt*A", "exp(dt * A)"])
def test_rules_take_sympy_expressions_not_strings(expr):
    """sympify would evaluate a string as Python (and its dt is not ssmc.dt): strings are refused."""
    with pytest.raises(TypeError, match=r"rule 'r': A_bar: expected a sympy expression in ssmc.dt and ssmc.A"):
        ssmc.rule("r", expr, ssmc.dt)
    with pytest.raises(TypeError, match=r"alpha: expected a real number or a fraction"):
        library.generalized_bilinear("__import__('os').getcwd()")
    assert library.generalized_bilinear("1/2").A_bar == library.generalized_bilinear(0.5).A_bar
