"""The cache of decoded data sets: image folders and CSV files, decoded once.

Decoding 60,000 PNGs takes seconds; reading their pixels back from one
uncompressed ``.npz`` takes a fraction of one. Each entry sits in the cache
directory (:func:`mlp.data.sources.get_cache_dir`) under ``decoded/``, named
by a hash of what it was decoded from: every file's path, size and
modification time, and the options that change the result (colour, image
size, target column). A changed, added or removed file gives another name,
so an entry is never stale; it is read back through
:class:`mlp._files.NpzReader`, which checks every size before allocating.
An image folder has a second entry, named from the first's and the options
of the held-out splits: its float32 splits as training takes them, mapped
from the file (``read(..., mapped=True)``) so that a new process has them
without filling new memory.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np

from .._files import NpzReader, atomic_write, write_npz_aligned

# Part of every key: a new layout of the entries gives new names.
_LAYOUT = "mlp-decoded-v1"
_DIRECTORY = "decoded"
_META = "meta"


def file_stamps(paths, root) -> list:
    """[(path relative to root, size, modification time in ns)] of files
    under root, given as strings that start with root."""
    start = len(os.fsdecode(root).rstrip(os.sep)) + 1
    stamps = []
    for path in paths:
        # A plain cut: os.path.relpath normalises both paths, the most of
        # the time for 60,000 files.
        status = os.stat(path)
        stamps.append((path[start:], status.st_size, status.st_mtime_ns))
    return stamps


def cache_key(stamps, options: dict) -> str:
    """The entry's name for files with these stamps, decoded with options."""
    digest = hashlib.sha256()
    digest.update(json.dumps([_LAYOUT, sorted(options.items())], default=str).encode())
    # One JSON list: unambiguous however the names are spelt.
    digest.update(json.dumps(list(stamps)).encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:32]


def _entry(cache_dir: Path, key: str) -> Path:
    return cache_dir / _DIRECTORY / f"{key}.npz"


def read(cache_dir: Path, key: str, *, mapped: bool = False):
    """(arrays, meta) of the entry, or None if there is none or it is damaged.

    mapped: the arrays are mapped from the file, copy-on-write
    (:meth:`mlp._files.NpzReader.read_mapped`), rather than read into new
    memory: for entries as large as the data a run trains on, which a new
    process then has without filling a byte of memory."""
    path = _entry(cache_dir, key)
    if not path.is_file():
        return None
    try:
        with NpzReader(path) as archive:
            shape, dtype = archive.header(_META)
            if dtype != np.uint8 or len(shape) != 1:
                raise ValueError("bad metadata")
            meta = json.loads(archive.read(_META).tobytes().decode("utf-8"))
            take = archive.read_mapped if mapped else archive.read
            arrays = {name: take(name) for name in archive.names if name != _META}
    except Exception as exc:  # any damage means: decode again
        warnings.warn(f"ignoring damaged cache entry {path} ({exc}); decoding again",
                      stacklevel=3)
        return None
    if not isinstance(meta, dict):
        return None
    return arrays, meta


def write(cache_dir: Path, key: str, arrays: dict, meta: dict) -> None:
    """Store an entry; a failure (read-only directory, full disk) only warns."""
    path = _entry(cache_dir, key)
    stored = {name: np.ascontiguousarray(value) for name, value in arrays.items()}
    stored[_META] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda fh: write_npz_aligned(fh, stored))
    except OSError as exc:
        warnings.warn(f"could not write the cache entry {path}: {exc}", stacklevel=3)
