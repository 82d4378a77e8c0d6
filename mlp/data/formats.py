"""Reading MNIST-style data files without trusting them.

Every size a file declares is checked before anything is allocated for it:
files are read only when regular and at most ``_MAX_DATA_BYTES``; gzip
streams are inflated in pieces up to a limit (an IDX file's up to the size
its header states), so a small file that inflates without end is refused.

Pickles can run code when loaded, so no pickle is ever loaded with a plain
unpickler: every pickle goes through ``_NumpyOnlyUnpickler``, which admits
only the few callables that rebuild numpy arrays, each array's size charged
to a budget the pickle's own length sets.
"""

from __future__ import annotations

import codecs
import contextvars
import gzip
import io
import math
import os
import pickle
import pickletools
import stat
import zlib
from pathlib import Path

import numpy as np

__all__ = ["UnsafePickleError", "N_PIXELS", "N_CLASSES"]

N_PIXELS = 28 * 28
N_CLASSES = 10
_IMAGE_MAGIC = 2051
_LABEL_MAGIC = 2049


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A pickle asked for something other than numpy arrays."""


# --- Reading and inflating ------------------------------------------------


# The largest data file read, and the most a gzipped pickle may inflate to:
# Nielsen's pickle is 220 MB inflated, one of float64 images 440 MB.
_MAX_DATA_BYTES = 512 * 2**20


# _read_bytes' default limit: _MAX_DATA_BYTES as it is when called.
DEFAULT_LIMIT = "default"


def _read_bytes(path: Path, limit: int | None | str = DEFAULT_LIMIT) -> bytes:
    """The bytes of the regular file at path; at most `limit` of them (None:
    any size, for files whose length is their content's, as raw IDX)."""
    if limit == DEFAULT_LIMIT:
        limit = _MAX_DATA_BYTES
    # Non-blocking, so that opening a FIFO returns at once (to be refused).
    with os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as f:
        info = os.fstat(f.fileno())
        # A FIFO would block and /dev/zero never end: regular files only.
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{path} is not a regular file; give the path of a data file")
        if limit is not None and info.st_size > limit:
            raise ValueError(f"{path} holds {info.st_size} bytes, more than an MNIST-style data "
                             f"file ({_MAX_DATA_BYTES // 2**20} MiB at most)")
        return f.read()


def _maybe_gunzip(data: bytes, path: Path) -> bytes:
    """data, inflated if it is gzip; at most _MAX_DATA_BYTES, so a small file
    that inflates without end is refused rather than filling the memory."""
    if data[:2] != b"\x1f\x8b":
        return data
    parts, size = [], 0
    try:
        # In pieces: read(n) would set aside n bytes at once.
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            while size <= _MAX_DATA_BYTES:
                parts.append(stream.read(min(2**24, _MAX_DATA_BYTES + 1 - size)))
                if not parts[-1]:
                    break
                size += len(parts[-1])
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{path}: corrupt gzip data ({e})") from e
    if size > _MAX_DATA_BYTES:
        raise ValueError(f"{path} inflates to more than {_MAX_DATA_BYTES // 2**20} MiB, more than "
                         f"an MNIST-style pickle holds; the file is corrupt or not MNIST")
    return b"".join(parts)


# Deflate expands its input at most about 1032-fold; a header that claims
# more than that from a gzip file's size is not telling the truth.
_DEFLATE_MAX_RATIO = 1032


def _gunzip_idx(data: bytes, path: Path, header_size: int, total_size) -> bytes:
    """Decompress a gzipped IDX file without ever producing more than its
    header claims. ``total_size(header)`` checks the first ``header_size``
    bytes and returns the file's whole size; decompression stops one byte
    past it (the parser then reports the trailing bytes), so a small file
    that inflates without end allocates no more than its header says, and
    a header claiming more than the gzip can hold is refused before any."""
    stream = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    pending = data
    parts = []
    size = 0

    def inflate(limit):
        """Decompress until `limit` bytes in all, or the input ends."""
        nonlocal stream, pending, size
        while size < limit:
            if stream.eof:
                # At a member's end the rest of the input is in unused_data
                # (and still in unconsumed_tail): another member follows, or
                # zeros that pad the file, as gzip allows.
                if not stream.unused_data.strip(b"\x00"):
                    return
                pending = stream.unused_data
                stream = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            elif not pending:
                return
            parts.append(stream.decompress(pending, limit - size))
            size += len(parts[-1])
            pending = stream.unconsumed_tail

    try:
        inflate(header_size)
        if size < header_size:
            if not stream.eof:
                raise ValueError(f"{path}: corrupt gzip data (truncated)")
            return b"".join(parts)  # the parser reports the truncated header
        total = total_size(b"".join(parts)[:header_size])
        if total > _DEFLATE_MAX_RATIO * len(data) + header_size:
            raise ValueError(
                f"{path}: the header says the file holds {total} bytes, more than a gzip file "
                f"of {len(data)} bytes can expand to; the file is corrupt or not an IDX file"
            )
        inflate(total + 1)
        if size <= total and not stream.eof:
            raise ValueError(f"{path}: corrupt gzip data (truncated)")
    except zlib.error as e:
        raise ValueError(f"{path}: corrupt gzip data ({e})") from e
    return b"".join(parts)


# --- IDX ------------------------------------------------------------------


def _idx_images_size(header: bytes, path: Path, shape=(28, 28)) -> int:
    """The whole size of an IDX image file whose first 16 bytes are header;
    its images must be `shape` (rows, columns), or any size for None."""
    magic, count, rows, cols = np.frombuffer(header, dtype=">u4", count=4).tolist()
    if magic != _IMAGE_MAGIC:
        raise ValueError(
            f"{path}: bad magic number {magic} (0x{magic:08x}); "
            f"an IDX image file starts with {_IMAGE_MAGIC} (0x{_IMAGE_MAGIC:08x})"
        )
    if shape is not None and (rows, cols) != tuple(shape):
        raise ValueError(f"{path}: images are {rows}x{cols}, expected {shape[0]}x{shape[1]}")
    if shape is None and (rows == 0 or cols == 0):
        raise ValueError(f"{path}: the header says the images are {rows}x{cols} pixels")
    return 16 + count * rows * cols


def _idx_labels_size(header: bytes, path: Path) -> int:
    """The whole size of an IDX label file whose first 8 bytes are header."""
    magic, count = np.frombuffer(header, dtype=">u4", count=2).tolist()
    if magic != _LABEL_MAGIC:
        raise ValueError(
            f"{path}: bad magic number {magic} (0x{magic:08x}); "
            f"an IDX label file starts with {_LABEL_MAGIC} (0x{_LABEL_MAGIC:08x})"
        )
    return 8 + count


def _parse_idx_images(data: bytes, path: Path, shape=(28, 28)) -> np.ndarray:
    """uint8 images of shape (n, rows * columns), a view of data; `shape` as
    for _idx_images_size."""
    if len(data) < 16:
        raise ValueError(f"{path}: truncated IDX image header: expected 16 bytes, got {len(data)}")
    expected = _idx_images_size(data[:16], path, shape)
    rows, cols = np.frombuffer(data, dtype=">u4", count=2, offset=8).tolist()
    count = (expected - 16) // (rows * cols)
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise ValueError(
            f"{path}: {what}: header says {count} images, so expected {expected} bytes, got {len(data)}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(count, rows * cols)


def _parse_idx_labels(data: bytes, path: Path, n_classes: int | None = N_CLASSES) -> np.ndarray:
    """int64 labels; each below n_classes (None: any byte)."""
    if len(data) < 8:
        raise ValueError(f"{path}: truncated IDX label header: expected 8 bytes, got {len(data)}")
    expected = _idx_labels_size(data[:8], path)
    count = expected - 8
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise ValueError(
            f"{path}: {what}: header says {count} labels, so expected {expected} bytes, got {len(data)}"
        )
    labels = np.frombuffer(data, dtype=np.uint8, offset=8)
    if n_classes is not None and count and labels.max() >= n_classes:
        bad = int(np.flatnonzero(labels >= n_classes)[0])
        raise ValueError(
            f"{path}: label {labels[bad]} at index {bad} is out of range; labels must be "
            f"0..{n_classes - 1}"
        )
    return labels.astype(np.int64)


# --- Pickle ---------------------------------------------------------------


# What an unpickled file may materialise through the admitted callables, as a
# multiple of its own length: each array's bytes appear once in the pickle and
# are copied at most twice (a latin-1 string to bytes, the bytes into the array).
_PICKLE_BUDGET_FACTOR = 2
_PICKLE_BUDGET = contextvars.ContextVar("mlp_pickle_budget")


def _charge(nbytes: int, what: str) -> None:
    """Spend nbytes of the running unpickler's budget, refusing once it is gone."""
    budget = _PICKLE_BUDGET.get(None)
    if budget is None:
        return
    budget[0] -= nbytes
    if budget[0] < 0:
        raise ValueError(f"the pickle builds {what} of {nbytes:,} bytes, more than its own "
                         "data can hold")


def _latin1_encode(obj, encoding="latin1", errors="strict"):
    # Python 3 protocol-2 pickles spell bytes as _codecs.encode(str, "latin1");
    # admit only that use, not arbitrary codecs.
    if encoding not in ("latin1", "latin-1") or not isinstance(obj, str):
        raise UnsafePickleError(f"pickle called _codecs.encode with encoding {encoding!r}")
    _charge(len(obj), "a string")
    return codecs.encode(obj, encoding, errors)


class _PickledArray(np.ndarray):
    """The arrays a pickle rebuilds. numpy's __setstate__ would allocate the
    shape the pickle states before comparing it with the data that follows;
    this one checks the size and charges it to the unpickler's budget first."""

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise ValueError("bad array state in pickle")
        shape, dtype = state[-4], state[-3]
        if not isinstance(dtype, np.dtype) or dtype.hasobject:
            raise UnsafePickleError(f"the pickle holds an array of dtype {dtype!r}; only "
                                    "numeric arrays are allowed")
        if not isinstance(shape, tuple) or not all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
            raise ValueError(f"bad array shape {shape!r} in pickle")
        _charge(math.prod(shape) * dtype.itemsize, f"an array of shape {shape} and dtype {dtype}")
        super().__setstate__(state)


# Stands for numpy.ndarray inside a pickle. Real pickles only pass it to
# _reconstruct; calling numpy.ndarray(shape) directly would allocate any shape.
_ARRAY_TYPE = object()
_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(0))[0]
_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]


def _reconstruct(subtype, shape, dtype):
    # ndarray.__reduce__ always asks for an empty array, filled by __setstate__.
    if subtype is not _ARRAY_TYPE:
        raise UnsafePickleError("the pickle asks _reconstruct for something other than an array")
    if not isinstance(shape, tuple) or shape != (0,):
        raise ValueError(f"the pickle asks _reconstruct for shape {shape!r}, not (0,)")
    return _RECONSTRUCT(_PickledArray, (0,), np.uint8)


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    # A view of the pickle's own buffer: nothing is allocated from the stated shape.
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy", "ndarray"): _ARRAY_TYPE,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and nothing else."""

    def __init__(self, file, source):
        super().__init__(file, encoding="latin1")
        self._source = source

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load {self._source}: the pickle asks for {module}.{name}, "
                "but only numpy arrays are allowed (this is not the known mnist.pkl.gz)"
            ) from None


_OPCODES = {op.code.encode("latin1"): op for op in pickletools.opcodes}
_LENGTH_PREFIX = {  # the width and signedness of each counted argument's length
    pickletools.TAKEN_FROM_ARGUMENT1: (1, False),
    pickletools.TAKEN_FROM_ARGUMENT4: (4, True),
    pickletools.TAKEN_FROM_ARGUMENT4U: (4, False),
    pickletools.TAKEN_FROM_ARGUMENT8U: (8, False),
}
_MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}


def _check_pickle_sizes(raw: bytes) -> None:
    """Walk a pickle's opcodes without running anything and refuse sizes the
    unpickler would allocate before reading: a length prefix longer than the
    data left (the C unpickler allocates it, then finds the data truncated) and
    a memo index beyond the entries stored so far (it grows the memo to it)."""
    pos, end, stored = 0, len(raw), 0
    while pos < end:
        op = _OPCODES.get(raw[pos:pos + 1])
        if op is None:
            raise ValueError(f"unknown opcode {raw[pos:pos + 1]!r} at byte {pos}")
        pos += 1
        if op.name == "STOP":
            return
        if op.name == "MEMOIZE":
            stored += 1
        arg = op.arg
        if arg is None:
            continue
        start = pos
        if arg.n >= 0:
            pos += arg.n
        elif arg.n == pickletools.UP_TO_NEWLINE:
            for _ in range(2 if arg.name == "stringnl_noescape_pair" else 1):
                newline = raw.find(b"\n", pos)
                if newline < 0:
                    raise ValueError(f"{op.name} at byte {start - 1} is not terminated")
                pos = newline + 1
        else:
            width, signed = _LENGTH_PREFIX[arg.n]
            length = int.from_bytes(raw[pos:pos + width], "little", signed=signed)
            pos += width + length
            if length < 0 or pos > end:
                raise ValueError(f"{op.name} at byte {start - 1} declares {length:,} bytes; "
                                 f"{max(end - start - width, 0):,} remain")
        if pos > end:
            raise ValueError(f"{op.name} at byte {start - 1} is truncated")
        if op.name in _MEMO_PUTS:
            text = raw[start:pos]
            index = int(text) if op.name == "PUT" else int.from_bytes(text, "little")
            # Picklers number entries from 0 (Python 2's cPickle from 1).
            if index > stored + 1:
                raise ValueError(f"{op.name} at byte {start - 1} stores memo entry {index:,} "
                                 f"after {stored:,} entries")
            stored += 1
    raise ValueError("truncated: no STOP opcode")


def _unpickle_numpy_only(raw: bytes, source) -> object:
    budget = _PICKLE_BUDGET.set([_PICKLE_BUDGET_FACTOR * len(raw)])
    try:
        _check_pickle_sizes(raw)
        return _NumpyOnlyUnpickler(io.BytesIO(raw), source).load()
    except (UnsafePickleError, MemoryError):
        raise
    except Exception as e:
        # Truncated or garbled pickles raise a zoo of exceptions; report one kind.
        raise ValueError(f"{source}: not a valid pickle ({type(e).__name__}: {e})") from None
    finally:
        _PICKLE_BUDGET.reset(budget)


