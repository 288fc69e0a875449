"""Stages: a graph with several scans, or with time operators (`lag`, `pool`: ops that read other
steps of time), cut into steps that each lower on their own.

A kernel step is a graph with at most one scan (one fused kernel region: its pre-ops, the scan and
its readout); a time step applies one time operator to a materialized value.  Values that cross steps are
materialized in the canonical layout of their roles (`Plan.layouts`), named `ssmc_v<id>` (see value_prefix).

Each node is computed in the step of its *owner*: the latest scan it reads through a path that
crosses no other scan or time operator (a readout needs its scan's state, which is never materialized).  A
node that reads nothing of a scan is free: it is recomputed in every step that needs it (elementwise
pre-ops are cheaper to recompute than to store), and materialized by a scan-less kernel step where a
time operator or an output reads it.  A node that would need its own owner's step finished (it reads a lag of
its readout) is free too, so the steps never form a cycle.

Two kinds of node never run inside a time scan's kernel: a sum over channels (h or p) of a scan's
result, a dense layer's contraction, which a scan-less step of its own materializes with its product;
and a scan along the channels, whose step trades roles t and h (`_along_channels`), so that it lowers
as an ordinary time scan over the same arrays.

The NumPy interpreter runs the whole graph as it is (the reference); the Triton backend and every
backward run the steps in order (`ssmc.runtime.staged`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import networkx as nx

from .graph import Graph, Rebuilder, prune
from .opset import TIME, IRError, with_trait
from .structure import scans_read
from .types import ROLES, Axis

TIME_OPS = with_trait(TIME)
INTEGER_OPERAND = {"lag": 1, "permute": 1}  # a time operator's integer input (seq_idx, index), by position
SKIP_ATTRS = ("region", "io", "hoist", "lti")  # made by the passes; each step's pipeline makes its own


@dataclass(frozen=True)
class Step:
    """A kernel step (`graph`, a graph with at most one scan) or a time step (`op`: the time operator's
    node, reading the values named in `sources` and writing the one named `target`; `aux`: its integer
    input, a lag's seq_idx or a permute's index)."""

    graph: Graph | None = None
    op: object = None
    sources: tuple = ()
    target: str = ""
    aux: str = ""


@dataclass(frozen=True)
class Plan:
    steps: tuple
    layouts: dict  # materialized value name -> its axes (canonical order)
    consts: dict  # name -> value of the constants a time step reads (a 0-d array, given by the runtime)


def needs_stages(g: Graph) -> bool:
    """Several scans, a time operator, a scan along the channels, or a sum over the channels of a scan's
    result that a later op reads (one that only an output reads, a kernel's atomic adds sum; one before
    the scan, a MIMO kernel's program holds every channel for)."""
    users = g.users()
    return len(g.ids("scan")) > 1 or any(g.ids(op) for op in TIME_OPS) or \
        any(g[s].attr("along") == "h" for s in g.ids("scan")) or \
        any(_mixes_channels(n) and any(g[u].op != "output" for u in users[i]) and
            any(g[a].op == "scan" for a in g.ancestors(i)) for i, n in enumerate(g.nodes))


def value_prefix(g: Graph) -> str:
    """The prefix of the names of the values a plan of g materializes: `ssmc_v`, lengthened until no input
    or output of g starts with it (a step of another plan, whose inputs are that plan's values, is planned
    again when its gradient unfolds a gather order)."""
    prefix = "ssmc_v"
    while any(name.startswith(prefix) for name in (*g.inputs, *g.outputs)):
        prefix += "_"
    return prefix


def plan(g: Graph) -> Plan:
    """Cut a typed graph into steps (see the module docstring)."""
    owner = _owners(g)
    cut = Cutter(g, owner)
    units = nx.DiGraph()
    for s in g.ids("scan"):
        units.add_node(("k", s))
    times = sorted(i for op in TIME_OPS for i in g.ids(op))
    for i in times:
        units.add_node(("l", i))
    for i in g.ids("output"):
        a = g[i].args[0]
        if not isinstance(owner[a], int):
            units.add_node(("f", a))
    for i in times:  # a time operator's operands are materialized: by their owner's step, or a free step
        for a in float_operands(g, i):
            if g[a].op not in TIME_OPS and g[a].op != "const" and not isinstance(owner[a], int) \
                    and not cut.canonical_input(a):
                units.add_node(("f", a))
    todo = list(units)
    while todo:  # (a unit a need brings in has needs of its own)
        u = todo.pop()
        for need in cut.needs(u):
            if need not in units:
                todo.append(need)
            units.add_edge(need, u)
    if not nx.is_directed_acyclic_graph(units):  # not expected: free nodes break every cycle
        raise IRError(f"{g.name}: the scans and time operators depend on each other in a cycle")
    order = list(nx.lexicographical_topological_sort(units, key=lambda u: (u[1], u[0])))
    steps, pending = [], []
    for u in order + [None]:
        if u is not None and u[0] == "f" and not _mixes_channels(g[u[1]]):
            pending.append(u[1])
            continue
        if pending:
            steps.append(Step(graph=cut.kernel(None, pending)))
            pending = []
        if u is None:
            break
        if u[0] == "k":
            steps.append(Step(graph=cut.kernel(u[1], [])))
        elif u[0] == "f":  # a sum over channels: a step of its own, its value read by the later ones
            steps.append(Step(graph=cut.kernel(None, [u[1]])))
        else:
            steps.append(cut.time_step(u[1]))
    return Plan(tuple(steps), dict(cut.layouts), dict(cut.consts))


def _owners(g: Graph):
    """owner[i]: the scan whose step computes node i, None for free nodes and inputs, "time" for time
    operators.  (full[i]: every scan node i depends on; need[i]: the scans whose steps must finish first.)"""
    owner, need = {}, {}
    full = scans_read(g)
    users = g.users()
    for i, n in enumerate(g.nodes):
        if n.op in ("input", "const"):
            owner[i], need[i] = None, set()
            continue
        reads = set().union(*(_complete(g, a, owner, full, need) for a in n.args)) if n.args else set()
        if n.op in TIME_OPS:
            owner[i], need[i] = "time", full[i]
            continue
        if n.op == "scan":
            owner[i], need[i] = i, reads
            continue
        cands = [owner[a] for a in n.args if isinstance(owner[a], int)]
        s = max(cands) if cands else None
        if s is not None and any(s in _complete(g, a, owner, full, need) for a in n.args if owner[a] != s):
            s = None  # it reads a lag (or a later value) of its own owner's readout: computed after it
        if _mixes_channels(n) or (n.op == "mul" and users[i] and all(_mixes_channels(g[u]) for u in users[i])):
            s = None  # computed after its scan, in a step of its own (see _mixes_channels), with its product
        if s is not None and n.op != "scan" and "p" in n.type.dims and \
                not any("p" in g[a].type.dims for a in n.args if owner[a] == s):
            s = None  # it spreads its scan's value over the head dim (an outer product): recomputed where read,
            # which materializes the smaller operand (Mamba-3's v ⊗ k of a rotated k feeding the next scan)
        owner[i] = s
        need[i] = reads
    return owner


def _mixes_channels(n) -> bool:
    """A sum over channels (h, or a head's p): a dense layer's contraction, or a channel scan's steps added
    up.  It is never computed inside a scan's kernel, whose programs each hold a block of channels, nor
    recomputed in every step that reads it: a scan-less step materializes it."""
    return n.op == "sum" and bool({"h", "p"} & set(n.attr("axes")))


def _complete(g, a, owner, full, need) -> set:
    """The scans whose steps must be finished before a step can read node a."""
    if g[a].op in ("input", "const"):
        return set()
    if g[a].op in TIME_OPS or isinstance(owner[a], int):
        return full[a] | ({a} if g[a].op == "scan" else set()) | ({owner[a]} if isinstance(owner[a], int) else set())
    return need[a]


class Cutter:
    """Builds the steps' graphs: which values cross, and their layouts."""

    def __init__(self, g: Graph, owner: dict):
        self.g, self.owner = g, owner
        self.layouts: dict = {}
        self.consts: dict = {}
        self.symbol = g.role_symbols()
        self.prefix = value_prefix(g)

    def value_name(self, i: int) -> str:
        return f"{self.prefix}{i}"

    def canonical_input(self, i: int) -> bool:
        """A user input already laid out in canonical order over value roles (a time operator reads it as is)."""
        n = self.g[i]
        if n.op != "input" or n.attr("integer"):
            return False
        roles = [a.role for a in n.attr("axes")]
        return all(r in ROLES for r in roles) and roles == sorted(roles, key=ROLES.index)

    def layout(self, i: int) -> tuple:
        dims = self.g[i].type.ordered()
        missing = [r for r in dims if r not in self.symbol]
        if missing:
            raise IRError(f"{self.g.name}: node %{i} ({self.g[i].op}) crosses stages, but no input names an axis "
                          f"of role {missing[0]!r} to size it")
        axes = tuple(Axis(self.symbol[r], r) for r in dims)
        self.layouts[self.value_name(i)] = axes
        return axes

    def _boundary(self, a: int, home) -> bool:
        """Whether a step of owner `home` reads node a as a materialized value (not computing it)."""
        n = self.g[a]
        if n.op in ("input", "const"):
            return False
        if n.op in TIME_OPS or _mixes_channels(n):
            return True
        return self.owner[a] != home if isinstance(self.owner[a], int) else False

    def needs(self, unit) -> set:
        """The units that produce what `unit` reads."""
        kind, i = unit
        if kind == "l":
            srcs = [a for a in float_operands(self.g, i) if not self.canonical_input(a) and self.g[a].op != "const"]
        else:
            srcs = self.reads(i if kind == "k" else None, [] if kind == "k" else [i])
        out = set()
        for a in srcs:
            if self.g[a].op in TIME_OPS:
                out.add(("l", a))
            elif isinstance(self.owner[a], int):
                out.add(("k", self.owner[a]))
            elif kind == "l" or _mixes_channels(self.g[a]):  # a free value or a user input not in canonical
                out.add(("f", a))  # layout (a kernel step lays it out), or a sum over channels
        return out

    def _members(self, scan, targets) -> list:
        """Node ids a step computes: the scan's owned nodes (or the free targets) and the free nodes
        they read, recursively."""
        g = self.g
        if scan is not None:
            seeds = [i for i in range(len(g.nodes)) if self.owner.get(i) == scan and g[i].op != "output"]
        else:
            seeds = [t for t in targets if g[t].op not in ("input", "const") and g[t].op not in TIME_OPS]
        members, todo = set(), list(seeds)
        while todo:
            i = todo.pop()
            if i not in members:
                members.add(i)
                todo.extend(a for a in g[i].args if not self._boundary(a, scan) and g[a].op not in ("input", "const"))
        return sorted(members)

    def reads(self, scan, targets) -> set:
        """The values a step reads: user inputs and values other steps materialize."""
        members = self._members(scan, targets)
        ms = set(members)
        out = {a for i in members for a in self.g[i].args if a not in ms and self.g[a].op != "const"}
        return out | {t for t in targets if self.g[t].op == "input" or self.g[t].op in TIME_OPS}

    def kernel(self, scan, targets) -> Graph:
        """The graph of a kernel step: its members, the values it reads as inputs, and as outputs
        the user outputs it computes and the values later steps read."""
        g = self.g
        members = self._members(scan, targets)
        users = g.users()
        rb, new = Rebuilder(), {}
        for a in sorted(self.reads(scan, targets)):
            n = g[a]
            if n.op == "input":
                new[a] = rb.add(replace(n, attrs=tuple((k, v) for k, v in n.attrs if k not in SKIP_ATTRS)))
            else:
                new[a] = rb.emit("input", name=self.value_name(a), axes=self.layout(a), complex=n.type.complex)
        for i in members:
            n = g[i]
            for a in n.args:
                if a not in new and g[a].op == "const":
                    new[a] = rb.add(g[a])
            attrs = tuple((k, v) for k, v in n.attrs if k not in SKIP_ATTRS)
            new[i] = rb.add(replace(n, args=tuple(new[a] for a in n.args), attrs=attrs, type=None))
        for i in (members if scan is not None else targets):  # the user's outputs, and values others read
            if scan is not None and self.owner[i] != scan:
                continue  # a free value recomputed here: its outputs are another step's
            for u in users[i]:
                if g[u].op == "output":
                    attrs = tuple((k, v) for k, v in g[u].attrs if k not in SKIP_ATTRS)
                    rb.add(replace(g[u], args=(new[i],), attrs=attrs, type=None))
            if self._read_elsewhere(i, scan):
                rb.emit("output", [new[i]], name=self.value_name(i), axes=self.layout(i))
        self._carry_symbols(rb)
        step = _untyped(prune(rb.finish(f"{g.name}_stage")))
        return _along_channels(step, g, scan) if scan is not None and g[scan].attr("along") == "h" else step

    def _read_elsewhere(self, i, scan) -> bool:
        """Whether another step reads node i's value from this one."""
        if scan is None and _mixes_channels(self.g[i]):  # read by every step that needs it
            return any(self.g[u].op != "output" for u in self.g.users()[i])
        return any(self.g[u].op in TIME_OPS or (self.g[u].op != "output" and self.owner[u] != scan)
                   for u in self.g.users()[i]) if scan is not None else \
            any(self.g[u].op in TIME_OPS for u in self.g.users()[i])

    def _carry_symbols(self, rb: Rebuilder) -> None:
        """Every symbol an output names must be sized by an input, and a group (g) or shared-block (r) axis
        needs the heads' (h) symbol sized too: add a user input that carries it."""
        given = {a.symbol for n in rb.nodes if n.op == "input" for a in n.attr("axes")}
        wanted = {a.symbol for n in rb.nodes if n.op == "output" for a in n.attr("axes")}
        if any(a.role in ("g", "r") for n in rb.nodes if n.op in ("input", "output") for a in n.attr("axes")):
            wanted.add(self.symbol["h"])
        for sym in sorted(wanted - given):
            carrier = next(i for i in self.g.ids("input") if any(a.symbol == sym for a in self.g[i].attr("axes")))
            rb.add(self.g[carrier])
            given |= {a.symbol for a in self.g[carrier].attr("axes")}

    def time_step(self, i: int) -> Step:
        n = self.g[i]
        self.layout(i)
        sources = []
        for a in float_operands(self.g, i):
            if self.g[a].op == "const":  # a scalar the runtime gives
                sources.append(self.value_name(a))
                self.layouts[sources[-1]], self.consts[sources[-1]] = (), self.g[a].attr("value")
            elif self.canonical_input(a):  # read as the user gave it
                sources.append(self.g[a].attr("name"))
                self.layouts[sources[-1]] = self.g[a].attr("axes")
            else:  # materialized by the step that computes it (a kernel step lays out a user input)
                sources.append(self.value_name(a))
                self.layout(a)
        aux = ""
        k = INTEGER_OPERAND.get(n.op)
        if k is not None and k < len(n.args):  # a lag's seq_idx, a permute's index
            j = n.args[k]
            if self.g[j].op != "input" or not self.g[j].attr("integer"):
                raise IRError(f"{self.g.name}: node %{i} ({n.op}): operand {k} must be an integer input, "
                              f"got %{j} ({self.g[j].op})")
            aux = self.g[j].attr("name")
            self.layouts[aux] = self.g[j].attr("axes")
        return Step(op=n, sources=tuple(sources), target=self.value_name(i), aux=aux)


def _along_channels(step: Graph, g: Graph, scan: int) -> Graph:
    """A channel scan's step as a time scan: roles t and h trade places in every input and output (the
    arrays are the same, their axes read the other way), and the scan loses its `along`."""
    swap = {"t": "h", "h": "t"}
    nodes = []
    for n in step.nodes:
        if n.op in ("input", "output"):
            roles = {a.role for a in n.attr("axes")}
            if roles & {"g", "r", "p"}:
                raise IRError(f"{g.name}: node %{scan} (scan along channels): {n.op} {n.attr('name')!r} has an axis "
                              f"of role {sorted(roles & {'g', 'r', 'p'})[0]!r}; a channel scan's step reads and writes "
                              f"values over b, t, h and n only")
            n = n.with_attrs(axes=tuple(Axis(a.symbol, swap.get(a.role, a.role)) for a in n.attr("axes")))
        elif n.op == "scan":
            n = replace(n, attrs=tuple((k, v) for k, v in n.attrs if k != "along"))
        nodes.append(n)
    return Graph(step.name, tuple(nodes))


def float_operands(g: Graph, i: int) -> list:
    """A time operator's operands other than its integer input."""
    k = INTEGER_OPERAND.get(g[i].op)
    return [a for j, a in enumerate(g[i].args) if j != k]


def _untyped(g: Graph) -> Graph:
    return Graph(g.name, tuple(replace(n, type=None) for n in g.nodes))
