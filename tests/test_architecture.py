"""The layers, checked on the source: ir <- backends <- runtime <- ops <- library <- tools (cli, bench, export).

Every module of the package, the tests, examples and benchmarks is parsed (not imported); the test
fails on an import cycle among the package's modules, an import from a higher layer, an import of
another module's private name, or an import inside a function that is not a lazy import of a heavy
optional dependency (torch, triton, onnx, onnxruntime, matplotlib, ...).
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent

# package prefix -> source folder
PACKAGES = {"ssmc.ir": ROOT / "ir", "ssmc.backends": ROOT / "backends", "ssmc": ROOT / "ssmc"}
LAYERS = [  # (layer, module prefixes), bottom up: a module may import only from its own layer and below
    ("ir", ("ssmc.ir",)),
    ("backends", ("ssmc.backends",)),
    ("runtime", ("ssmc.runtime",)),
    ("ops", ("ssmc.ops",)),
    ("library", ("ssmc.library",)),
    ("tools", ("ssmc.cli", "ssmc.demo", "ssmc.bench", "ssmc.export", "ssmc.__main__", "ssmc")),
]
# Imported inside functions only, on purpose: heavy or optional, and not needed to import ssmc.
LAZY_OK = {"torch", "triton", "onnx", "onnxruntime", "matplotlib", "hypothesis", "transformers", "accelerated_scan",
           "mamba_ssm", "fla",
           # ssmc's own torch glue: importing it imports torch (and registers custom ops)
           "ssmc.ops.torch_ops", "ssmc.runtime.autograd", "ssmc.bench.report"}


def _package_modules() -> dict:
    """module name -> path of every module of the package."""
    out = {}
    for prefix, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([prefix, *parts])
            if prefix == "ssmc" and parts and parts[0] in ("ir", "backends"):
                continue
            out.setdefault(name, path)
    return out


MODULES = _package_modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if _is_package(module) else module.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, path: Path):
    """Yield (imported module, imported name or None, line, inside a function) for every import."""
    tree = ast.parse(path.read_text())
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    inner = {id(c) for f in functions for c in ast.walk(f) if c is not f}
    for node in ast.walk(tree):
        lazy = id(node) in inner
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, None, node.lineno, lazy
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            for a in node.names:
                sub = f"{target}.{a.name}"
                yield (sub, None, node.lineno, lazy) if sub in MODULES else (target, a.name, node.lineno, lazy)


def _owner(name: str) -> str | None:
    """The package module an imported name belongs to (the longest module prefix)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _layer(module: str) -> int:
    for k, (_, prefixes) in enumerate(LAYERS):
        # the bare package "ssmc" (its __init__, the public API) is a layer of its own name only
        if any(module == p or (p != "ssmc" and module.startswith(p + ".")) for p in prefixes):
            return k
    raise AssertionError(f"{module}: in no layer of test_architecture.LAYERS")


def _edges():
    for module, path in MODULES.items():
        for target, name, line, lazy in _imports(module, path):
            owner = _owner(target)
            if owner is not None and owner != module:
                yield module, owner, name, line, lazy


def test_every_module_has_a_layer():
    for module in MODULES:
        _layer(module)


def test_no_import_cycles():
    g = nx.DiGraph((a, b) for a, b, *_ in _edges())
    # a package's __init__ re-exporting its own modules is not a dependency of those modules on it
    g.remove_edges_from([(a, b) for a, b in g.edges if b.startswith(a + ".") and _is_package(a)])
    cycles = list(nx.simple_cycles(g))
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c + [c[0]]) for c in cycles[:10])


def test_imports_go_down_the_layers():
    bad = [f"{a}:{line} imports {b} ({LAYERS[_layer(b)][0]}, above {LAYERS[_layer(a)][0]})"
           for a, b, _, line, _ in _edges() if _layer(b) > _layer(a)]
    assert not bad, "\n".join(bad)


SCRIPTS = {path.stem: path for folder in ("tests", "examples", "benchmarks")
           for path in sorted((ROOT / folder).rglob("*.py"))}  # imported by their file name (conftest, ...)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_private_names_imported_across_modules():
    bad = []
    for module, path in [*MODULES.items(), *SCRIPTS.items()]:
        for target, name, line, _ in _imports(module, path):
            ours = _owner(target) is not None or target in SCRIPTS
            private = [p for p in target.split(".") if _private(p)] + ([name] if name and _private(name) else [])
            if ours and target != module and private:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target}{'.' + name if name else ''}")
    assert not bad, "\n".join(bad)


def _module_aliases(module: str, path: Path) -> dict:
    """local name -> package module, for every `import ssmc.x [as y]` and `from ssmc[.x] import module`."""
    aliases = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for a in node.names:
                if _owner(a.name) == a.name:
                    aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            for a in node.names:
                if f"{target}.{a.name}" in MODULES:
                    aliases[a.asname or a.name] = f"{target}.{a.name}"
    return aliases


def _dotted(node) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return ".".join([node.id, *reversed(parts)]) if isinstance(node, ast.Name) else None


def test_no_private_names_read_across_modules():
    """`ops._compiled(...)` reaches into another module as much as `from ssmc.ops import _compiled` does."""
    bad = []
    for module, path in [*MODULES.items(), *SCRIPTS.items()]:
        aliases = _module_aliases(module, path)
        for node in ast.walk(ast.parse(path.read_text())):
            name = _dotted(node) if isinstance(node, ast.Attribute) and _private(node.attr) else None
            head = name.split(".")[0] if name else None
            if head in aliases:
                owner = _owner(".".join([aliases[head], *name.split(".")[1:-1]]))
                if owner and owner != module:
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} reads {name}")
    assert not bad, "\n".join(bad)


def test_no_function_level_imports_but_heavy_dependencies():
    bad = []
    for module, path in MODULES.items():
        for target, name, line, lazy in _imports(module, path):
            if lazy and target.split(".")[0] not in LAZY_OK and _owner(target) not in LAZY_OK:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target} inside a function")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("limit", [520])
def test_modules_stay_small(limit):
    big = [f"{path.relative_to(ROOT)}: {n} lines" for path in MODULES.values()
           if (n := len(path.read_text().splitlines())) > limit]
    assert not big, "\n".join(big)


def test_lint():
    """ruff with the project's config (pyproject.toml: line length 120) finds nothing."""
    res = subprocess.run([sys.executable, "-m", "ruff", "check", str(ROOT)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_package_is_installed():
    """pyproject's package list names every package folder (an editable install would hide a missing one)."""
    import tomllib
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    assert {name for name in MODULES if _is_package(name)} == listed
