"""MNIST loading: the train/validation/test split used by the notebook.

Data: the MNIST database of handwritten digits by Yann LeCun, Corinna Cortes
and Christopher J.C. Burges, licensed under CC BY-SA 3.0
(https://creativecommons.org/licenses/by-sa/3.0/).  The split is Michael
Nielsen's ``mnist.pkl.gz``: train = first 50,000 images of the official
training set, validation = its last 10,000, test = the official 10,000.

``load_mnist()`` with no path looks in the cache directory (``cache_dir``,
else ``$MLP_CACHE_DIR``, else the platform user cache dir + ``mlp``) and
fetches only when nothing usable is there (:mod:`mlp.data.sources`).  After a
first load it keeps ``mnist-v1.npz`` there: an uncompressed, pickle-free
archive of uint8 pixels and int64 labels which loads in well under a second.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .._files import NpzReader, atomic_write
from .._validation import check_path
from .formats import (
    _IMAGE_MAGIC,
    _LABEL_MAGIC,
    DEFAULT_LIMIT,
    N_CLASSES,
    N_PIXELS,
    _gunzip_idx,
    _idx_images_size,
    _idx_labels_size,
    _maybe_gunzip,
    _parse_idx_images,
    _parse_idx_labels,
    _read_bytes,
    _unpickle_numpy_only,
)
from .sources import (
    IDX_NAMES,
    IDX_TEST_IMAGES,
    IDX_TEST_LABELS,
    IDX_TRAIN_IMAGES,
    IDX_TRAIN_LABELS,
    PKL_NAME,
    TEST_LABEL_COUNTS,
    TRAIN_LABEL_COUNTS,
    _fetch,
    _is_known_pickle,
    _is_official_idx,
    get_cache_dir,
)

__all__ = ["MNIST", "Split", "load_mnist", "one_hot"]

CACHE_NAME = "mnist-v1.npz"


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


# --- Pixels ---------------------------------------------------------------


def _images_to_float(pixels: np.ndarray) -> np.ndarray:
    # 1/256 is exact in float32, so this reproduces Nielsen's floats bit for bit.
    return np.multiply(pixels, np.float32(1 / 256), dtype=np.float32)


def _floats_to_pixels(images: np.ndarray) -> np.ndarray | None:
    """uint8 pixels if ``images`` are exactly k/256, else None."""
    k = np.rint(images * 256)
    if k.min() < 0 or k.max() > 255 or not np.array_equal(k / 256, images):
        return None
    return k.astype(np.uint8)


# --- IDX directories ------------------------------------------------------


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


def _read_idx_dir(files: dict[str, Path], shape=(28, 28), n_classes=N_CLASSES,
                  limit=DEFAULT_LIMIT):
    """Parse the four IDX files; return (train_px, train_y, test_px, test_y, official).
    Images must be `shape` and labels below `n_classes` (None: any); a raw
    file may hold at most `limit` bytes (None: any, its size is its content's)."""
    parsed = {}
    official = True
    for name, path in files.items():
        images = name in (IDX_TRAIN_IMAGES, IDX_TEST_IMAGES)
        data = _read_bytes(path, limit)
        if data[:2] == b"\x1f\x8b":
            data = _gunzip_idx(data, path, 16 if images else 8,
                               lambda header: _idx_images_size(header, path, shape) if images
                               else _idx_labels_size(header, path))
        # Unknown hashes are fine (e.g. Fashion-MNIST): IDX parsing cannot run code.
        official &= _is_official_idx(name, data)
        parsed[name] = (_parse_idx_images(data, path, shape) if images
                        else _parse_idx_labels(data, path, n_classes))
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


# --- Nielsen's pickle -----------------------------------------------------


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
    cache_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(cache_dir / CACHE_NAME, lambda f: np.savez(f, **arrays))


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
    if not _is_known_pickle(data):
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
    known = _is_known_pickle(data)
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
    return _load_path(Path(os.fsdecode(check_path(path, "path"))).expanduser(), cdir)


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
