"""The on-disk cache: generated kernel modules and the autotuner's table.

Where: $SSMC_CACHE_DIR, else $XDG_CACHE_HOME/ssmc (~/.cache/ssmc).  A cache that cannot be written (a
read-only or missing-permission directory, a path through a file) falls back, once per process and
with one warning naming SSMC_CACHE_DIR, to a fresh temporary directory; a damaged entry (not UTF-8,
truncated JSON) is treated as absent and written again.  The cache only saves work: nothing read from
it is trusted beyond what a rebuild would give.
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

_FALLBACK: dict = {}  # configured root that failed -> the temporary root used instead


def _configured() -> Path:
    return Path(os.environ.get("SSMC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "ssmc"))


def root() -> Path:
    """The cache's root directory (created), or the fallback where it cannot be written."""
    path = _configured()
    if path in _FALLBACK:
        return _FALLBACK[path]
    try:
        (path / "kernels").mkdir(parents=True, exist_ok=True)
        if not os.access(path / "kernels", os.W_OK):
            raise PermissionError(f"{path / 'kernels'} is not writable")
        return path
    except OSError as e:
        return _fall_back(path, e)


def _fall_back(path: Path, error: OSError) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix="ssmc-cache-"))
    (tmp / "kernels").mkdir()
    warnings.warn(f"ssmc: cannot write the cache at {path} ({error}); using {tmp} for this process. "
                  "Set SSMC_CACHE_DIR to a writable directory to keep kernels between runs.", RuntimeWarning,
                  stacklevel=3)
    _FALLBACK[path] = tmp
    return tmp


def write(name: str, text: str, sub: str = "") -> Path:
    """Write `text` to the cache file `sub/name` atomically (concurrent writers never see half a file),
    unless it already holds exactly that; its path.  A failed write falls back to the temporary root."""
    path = root() / sub / name
    try:
        if path.exists() and path.read_bytes() == text.encode():
            return path
    except OSError:
        pass
    try:
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        return path
    except OSError as e:
        if root() in _FALLBACK.values():  # the temporary directory failed too: nothing left to try
            raise
        _fall_back(_configured(), e)
        return write(name, text, sub)


def kernels() -> Path:
    """The directory of generated kernel modules."""
    return root() / "kernels"


def read_json(name: str) -> dict:
    """The cache's JSON table `name`, or {} where it is missing or damaged."""
    path = root() / name
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, unreadable, not UTF-8 or truncated: rebuilt when next written
        return {}
    return table if isinstance(table, dict) else {}
