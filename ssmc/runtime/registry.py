"""Compiled objects by a string key: torch custom ops take strings, not Python objects.

Keys are handed out when a Compiled is made (never while torch.compile traces, where a new entry
would not exist yet for the fake implementation); entries die with their Compiled.
"""
from __future__ import annotations

import itertools
import weakref

_COMPILED = weakref.WeakValueDictionary()
_NUMBERS = itertools.count()


def register(fn) -> str:
    """A fresh key naming `fn` (a Compiled)."""
    key = f"{fn.graph.name}#{next(_NUMBERS)}"
    _COMPILED[key] = fn
    return key


def lookup(key: str):
    try:
        return _COMPILED[key]
    except KeyError:
        raise KeyError(f"no compiled declaration under the key {key!r}: it was garbage-collected "
                       "(keep the object returned by ssmc.compile alive while its outputs need gradients)") from None
