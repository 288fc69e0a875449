"""Register tiles of the recurrent kernels: where each kernel axis sits in a tile, and how inputs
are loaded into tiles and results taken out of them.

Every value of a recurrent kernel is a register tile over the kernel axes channels (d), state (n)
and time chunk (t), in the order the schedule's layout gives ("dnt": `[BLOCK_D, BLOCK_N, CHUNK]`),
with size-1 axes where the value does not vary.
"""
from __future__ import annotations

from .emitter import as_tile, widened


class TileAxes:
    """Where each kernel axis (d: channels, n: state, t: time) sits in a 3-D register tile."""

    def __init__(self, layout: str):
        self.layout = layout

    def ax(self, letter: str) -> int:
        return self.layout.index(letter)

    def bc(self, letter: str) -> str:
        """Broadcast suffix putting a 1-D vector on axis `letter`, e.g. '[:, None, None]'."""
        return "[" + ", ".join(":" if c == letter else "None" for c in self.layout) + "]"

    def shape(self, d: str, n: str, t: str) -> str:
        return "[" + ", ".join({"d": d, "n": n, "t": t}[c] for c in self.layout) + "]"


def pointers(ta: TileAxes, p: str, axes, tp="tp", one_group=False, valid="valid"):
    """(pointer expression, mask terms) for tensor `p` laid out along `axes` (strides p_s0, p_s1, ...).

    The batch offset is added to the base pointer as an int64 scalar, so the per-element
    offsets stay 32-bit (cheaper index arithmetic) unless the schedule is `wide`.  With
    `one_group` every channel of the program is in group g_blk: a grouped input (B, C per order)
    is then one tile shared by the channels, not a per-channel gather.
    """
    d, n, t = ta.bc("d"), ta.bc("n"), ta.bc("t")
    idx = {"t": f"{tp}{t}", "h": f"idx_h{d}", "p": f"idx_p{d}", "g": "g_blk" if one_group else f"idx_g{d}",
           "r": f"idx_r{d}", "n": f"offs_n{n}"}
    mask = {"t": f"{valid}{t}", "h": f"mask_d{d}", "p": f"mask_d{d}", "r": f"mask_d{d}", "n": f"mask_n{n}",
            **({} if one_group else {"g": f"mask_d{d}"})}
    base = f"{p}_ptr" + "".join(f" + pid_b * {p}_s{k}" for k, a in enumerate(axes) if a.role == "b")
    offs = [f"{idx[a.role]} * {p}_s{k}" for k, a in enumerate(axes) if a.role != "b"]
    masks = sorted({mask[a.role] for a in axes if a.role in mask})
    return (f"({base}) + " + " + ".join(offs) if offs else base), masks


def store_pointers(ta: TileAxes, p: str, axes, tp="tp", valid="valid"):
    """pointers() of an output: a pointer tile even where the output has no axis but batch (a scalar per
    sequence, e.g. the gradient of a scalar parameter), so that a value tile broadcasts to it."""
    ptrs, masks = pointers(ta, p, axes, tp=tp, valid=valid)
    if all(a.role == "b" for a in axes):
        ptrs += f" + tl.zeros({ta.shape('1', '1', '1')}, tl.int32)"
    return ptrs, masks


def load_lines(em, n, name: tuple, tp=None, valid=None, when: str = "") -> list:
    """The loads of input node n into variables `name` (one, or re and im), at time indices `tp`
    where `valid` (and the scalar condition `when`) holds; by default the emitter's em.tp, em.valid."""
    integer, p = n.attr("integer"), n.attr("name")
    lines = [f"{v} = {widened(load, integer, em.acc)}" for v, load in raw_loads(em, n, name, tp, valid, when)]
    return [lines[0] + f"  # {p}", *lines[1:]]


def raw_loads(em, n, name: tuple, tp=None, valid=None, when: str = "") -> list:
    """[(variable, load expression)] of input node n as stored, before any widening (see load_lines)."""
    p = n.attr("name")
    tp, valid = tp or em.tp, valid or em.valid
    ptr, masks = pointers(em.ax, p, n.attr("axes"), tp=tp, one_group=em.one_group, valid=valid)
    if em.full_tiles and channel_shared(n, em.one_group):
        ptr += f" + offs_d{em.ax.bc('d')} * 0"  # a full tile: its layout becomes the chunk's
    masks = ([when] if when else []) + masks
    m = f", mask={' & '.join(masks)}, other=0" if masks else ""
    loads = [(name[0], f"tl.load({ptr}{m})")]
    if len(name) == 2:
        loads.append((name[1], f"tl.load({ptr} + {p}_si{m})"))
    return loads


def channel_shared(n, one_group: bool) -> bool:
    """Does input n vary over time and state but not over the program's channels (B and C)?"""
    roles = {a.role for a in n.attr("axes")}
    per_channel = roles & {"h", "p", "r"} or ("g" in roles and not one_group)
    return {"t", "n"} <= roles and not per_channel


def at_step(ta: TileAxes, tile: str, step: str) -> str:
    """The slice of a chunk tile at one step (keeping the time axis, of size 1)."""
    return (f"tl.sum(tl.where((tl.arange(0, CHUNK) == {step}){ta.bc('t')}, {tile}, 0.0), "
            f"axis={ta.ax('t')}, keep_dims=True)")


def broadcast_tile(em, v, k, shape):
    """Part k of a value as a full tile; a real value's imaginary part is a zero tile.
    (tl.broadcast_to rejects a bare float literal, so the zero is a tile of its own.)"""
    return as_tile(v[k], shape) if k < len(v) else f"tl.zeros({shape}, {em.acc})"


def tile_shape(ta: TileAxes, t, time: str) -> str:
    """Tile shape of a value of type t (the state of a MIMO scan has no channel axis)."""
    return ta.shape("BLOCK_D" if t.dims & {"h", "p"} else "1", "BLOCK_N" if "n" in t.dims else "1", time)
