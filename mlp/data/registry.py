"""The data formats mlp trains from, in one table, and :func:`load`.

:data:`FORMATS` lists each format with what it is, how a path is recognised
as one, and its loader; the ``--data`` help of the command line and the
README's list are made from it. Every loader returns the same
``MNIST(train, validation, test)`` splits of ``Split(images, labels)`` as
:func:`mlp.datasets.load_mnist` (``images``: float32 rows, one sample each,
whether pixels or features) together with a :class:`DataInfo`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from .._validation import check_path
from . import decoded, folders, tables
from .info import DataInfo, make_splits
from .mnist import (
    MNIST,
    Split,
    _find_idx_files,
    _images_to_float,
    _read_idx_dir,
    _split_pixels,
    load_mnist,
)
from .sources import (
    IDX_TEST_IMAGES,
    IDX_TEST_LABELS,
    IDX_TRAIN_IMAGES,
    IDX_TRAIN_LABELS,
    PKL_NAME,
    _is_known_pickle,
    get_cache_dir,
)

__all__ = ["DataFormat", "FORMATS", "Dataset", "load", "format_of"]

# Defaults of the held-out splits, where the data has no split of its own.
VALIDATION_SIZE = 0.1
TEST_SIZE = 0.2


class Dataset(NamedTuple):
    """What :func:`load` returns: the three splits and their description.

    ``splits, info = load(path)``; ``splits`` unpacks as
    ``(train, validation, test)``, like :func:`mlp.datasets.load_mnist`'s.
    """

    splits: MNIST
    info: DataInfo


@dataclass(frozen=True)
class DataFormat:
    """One entry of :data:`FORMATS`.

    Attributes
    ----------
    name : str
        What ``format=`` and the model file call it.
    summary : str
        One line for the help: what the path holds.
    recognises : callable (Path) -> bool
        Whether a path holds this format (tried in the table's order).
    loader : callable
        ``loader(path, options) -> (MNIST, DataInfo)``.
    options : tuple of str
        The options of :func:`load` it uses, beside validation_size and seed.
    """

    name: str
    summary: str
    recognises: Callable
    loader: Callable
    options: tuple = ()


# --- MNIST's pickle and IDX directories -----------------------------------


_IDX_ROLES = {  # role: (what the name says, what else)
    IDX_TRAIN_IMAGES: ("train", "images-idx3"),
    IDX_TRAIN_LABELS: ("train", "labels-idx1"),
    IDX_TEST_IMAGES: ("test", "images-idx3"),
    IDX_TEST_LABELS: ("test", "labels-idx1"),
}


def _idx_files(directory: Path):
    """{official name: path} of the four IDX files in directory, by the
    official names or by names like EMNIST's (emnist-letters-train-images-
    idx3-ubyte.gz); None if there are not four; ValueError if ambiguous."""
    found = _find_idx_files(directory)
    if found is not None:
        return found
    names = [p for p in sorted(directory.iterdir()) if p.is_file() and "-idx" in p.name]
    found = {}
    for role, (split, kind) in _IDX_ROLES.items():
        matches = [p for p in names if kind in p.name and (
            "train" in p.name if split == "train" else ("t10k" in p.name or "test" in p.name))]
        if not matches:
            return None
        if len(matches) > 1:
            raise ValueError(f"{directory} holds several IDX {split} "
                             f"{kind.split('-')[0]} files ({', '.join(m.name for m in matches)}); "
                             f"keep one data set per directory")
        found[role] = matches[0]
    return found


def _recognises_pickle(path: Path) -> bool:
    return (path.is_dir() and (path / PKL_NAME).is_file()) or (
        path.is_file() and path.name.endswith((".pkl.gz", ".pkl")))


def _recognises_idx(path: Path) -> bool:
    return path.is_dir() and _idx_files(path) is not None


def _mnist_info(fmt, path, n_classes, digits, scale=1 / 256, shape=(28, 28)):
    return DataInfo(format=fmt, source=None if path is None else os.fsdecode(path.resolve()),
                    class_names=tuple(str(k) for k in range(n_classes)), input_kind="image",
                    image_shape=(shape[0], shape[1], 1), pixel_scale=scale, digits=digits)


def _load_pickle(path, options):
    _refuse_split_options(path, options, "mnist.pkl.gz has its own three splits")
    data = load_mnist(path, cache_dir=options["cache_dir"])
    raw = path / PKL_NAME if path.is_dir() else path
    try:
        known = raw.stat().st_size == 17_051_982 and _is_known_pickle(raw.read_bytes())
    except OSError:
        known = False
    return data, _mnist_info("mnist-pickle", path, 10, digits=known)


def _load_idx(path, options):
    files = _idx_files(path)
    train_px, train_y, test_px, test_y, official = _read_idx_dir(
        files, shape=None, n_classes=None, limit=None)
    shape = _idx_shape(files[IDX_TRAIN_IMAGES])
    test_shape = _idx_shape(files[IDX_TEST_IMAGES])
    if test_shape != shape:
        raise ValueError(f"{files[IDX_TEST_IMAGES]} holds {test_shape[0]}x{test_shape[1]} images "
                         f"but {files[IDX_TRAIN_IMAGES]} {shape[0]}x{shape[1]} ones")
    # IDX labels are class numbers: the classes are 0 .. the largest label.
    n_classes = int(max(train_y.max(initial=0), test_y.max(initial=0))) + 1
    if options["validation_size"] is None:
        (tr, va, te) = _split_pixels(train_px, train_y, test_px, test_y)
        splits = MNIST(*(Split(_images_to_float(px), np.ascontiguousarray(y, dtype=np.int64))
                         for px, y in (tr, va, te)))
    else:
        splits = make_splits(train_px, train_y, X_test=test_px, y_test=test_y,
                             validation_size=options["validation_size"], test_size=None,
                             seed=options["seed"])
        splits = MNIST(*(Split(_images_to_float(s.images), s.labels) for s in splits))
    return splits, _mnist_info("idx", path, n_classes, digits=official, shape=shape)


def _idx_shape(path: Path):
    """(rows, columns) of an IDX image file, from its (already checked) header."""
    import gzip

    with open(path, "rb") as f:
        head = f.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open
    with opener(path, "rb") as f:
        header = f.read(16)
    return tuple(np.frombuffer(header, dtype=">u4", count=2, offset=8).tolist())


# --- Image folders --------------------------------------------------------


def _recognises_folder(path: Path) -> bool:
    return path.is_dir() and any(p.is_dir() and not p.name.startswith(".")
                                 for p in path.iterdir())


def _load_folder(path, options):
    scan = folders.scan_image_folder(path, color=options["color"],
                                     image_size=options["image_size"])
    validation_size = _size(options, "validation_size", VALIDATION_SIZE)
    test_size = _size(options, "test_size", TEST_SIZE)
    # The splits as training takes them (float32, held-out parts drawn) are
    # an entry of their own, mapped from the file on the next load: making
    # them from the 8-bit entry fills 4 bytes of new memory a pixel, which
    # took 0.35 s of a new process's 0.6 s load for 60,000 28x28 images.
    ready_key = decoded.cache_key([scan.key], {
        "kind": "image-folder-splits", "seed": options["seed"],
        "validation_size": validation_size, "test_size": test_size})
    ready = decoded.read(options["cache_dir"], ready_key, mapped=True)
    if ready is not None and _ready_entry_is_whole(*ready, scan):
        arrays, meta = ready
        splits = MNIST(*(Split(arrays[f"{s}_X"], arrays[f"{s}_y"]) for s in MNIST._fields))
        class_names, size = scan.class_names, tuple(meta["image_size"])
    else:
        parts, class_names, size = folders.load_image_folder(
            path, cache_dir=options["cache_dir"], progress=options["progress"], scan=scan)
        flat = {split: (px.reshape(len(px), -1), y) for split, (px, y) in parts.items()}
        test = flat.get("test", (None, None))
        validation = flat.get("validation", (None, None))
        splits = make_splits(*flat["train"], X_test=test[0], y_test=test[1],
                             X_validation=validation[0], y_validation=validation[1],
                             validation_size=validation_size, test_size=test_size,
                             seed=options["seed"])
        # Pixels in [0, 1]: level / 255, so white is exactly 1.
        splits = MNIST(*(Split(np.multiply(s.images, np.float32(1 / 255), dtype=np.float32),
                               s.labels) for s in splits))
        arrays = {}
        for name, split in zip(MNIST._fields, splits):
            arrays[f"{name}_X"], arrays[f"{name}_y"] = split.images, split.labels
        decoded.write(options["cache_dir"], ready_key, arrays,
                      {"class_names": class_names, "image_size": list(size)})
    channels = 3 if options["color"] else 1
    return splits, DataInfo(format="image-folder", source=os.fsdecode(path.resolve()),
                            class_names=tuple(class_names), input_kind="image",
                            image_shape=(size[0], size[1], channels), pixel_scale=1 / 255)


def _ready_entry_is_whole(arrays, meta, scan):
    """Whether a cache entry of splits matches the folder and itself."""
    size = meta.get("image_size")
    if meta.get("class_names") != scan.class_names or not (
            isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)):
        return False
    width = size[0] * size[1] * (3 if scan.options["color"] else 1)
    n_samples = sum(len(files) for files in scan.files.values())
    total = 0
    for name in MNIST._fields:
        X, y = arrays.get(f"{name}_X"), arrays.get(f"{name}_y")
        if X is None or y is None or X.dtype != np.float32 or X.ndim != 2 \
                or X.shape[1] != width or y.dtype != np.int64 or y.shape != (len(X),) \
                or (len(y) and not 0 <= y.min() <= y.max() < len(scan.class_names)):
            return False
        total += len(X)
    return total == n_samples


# --- Tables ---------------------------------------------------------------


def _recognises_csv(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in (".csv", ".tsv", ".tab")


def _csv_entry_is_whole(arrays, meta):
    """Whether a cache entry holds a parsed table, consistent with itself."""
    features, labels = arrays.get("features"), arrays.get("labels")
    classes, names = meta.get("class_names"), meta.get("feature_names")
    return (features is not None and labels is not None and features.dtype == np.float32
            and features.ndim == 2 and labels.dtype == np.int64 and labels.shape == (len(features),)
            and isinstance(classes, list) and isinstance(names, list)
            and all(isinstance(n, str) for n in classes + names)
            and len(names) == features.shape[1] and len(labels) > 0
            and 0 <= labels.min() and labels.max() < len(classes))


def _load_csv(path, options):
    # Parsing runs at tens of MB/s: the parsed table is cached as image folders are.
    key = decoded.cache_key(decoded.file_stamps([os.fsdecode(path.resolve())], "/"),
                            {"kind": "csv", "target": options["target"]})
    cached = decoded.read(options["cache_dir"], key)
    if cached is not None and _csv_entry_is_whole(*cached):
        (arrays, meta) = cached
        features, y = arrays["features"], arrays["labels"]
        class_names, names = meta["class_names"], meta["feature_names"]
    else:
        features, labels, names = tables.read_csv(path, options["target"])
        y, class_names = tables.label_indices(labels, str(path))
        decoded.write(options["cache_dir"], key, {"features": features, "labels": y},
                      {"class_names": class_names, "feature_names": names})
    if len(class_names) < 2:
        raise ValueError(f"{path}: every row has the label {class_names[0]!r}; a classifier "
                         f"needs at least two classes")
    splits = make_splits(features, y, validation_size=_size(options, "validation_size",
                                                            VALIDATION_SIZE),
                         test_size=_size(options, "test_size", TEST_SIZE), seed=options["seed"])
    return splits, DataInfo(format="csv", source=os.fsdecode(path.resolve()),
                            class_names=tuple(class_names), input_kind="features",
                            feature_names=tuple(names))


def _recognises_npz(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".npz"


def _npz_inputs(X, path, name):
    """float32 rows of X and its image shape (or None for features)."""
    if X.dtype.kind not in "biuf":
        raise ValueError(f"{path}: {name} holds {X.dtype} values; inputs must be numbers")
    if X.ndim == 2:
        if X.dtype.kind == "f" and not np.isfinite(X).all():
            row, column = np.argwhere(~np.isfinite(X))[0]
            raise ValueError(f"{path}: {name}[{row}, {column}] is {X[row, column]}; inputs must "
                             f"be finite")
        return np.ascontiguousarray(X, dtype=np.float32), None
    if X.ndim not in (3, 4) or (X.ndim == 4 and X.shape[3] not in (1, 3)):
        raise ValueError(f"{path}: {name} has shape {X.shape}; expected (n, features), "
                         f"(n, height, width) or (n, height, width, 1 or 3) images")
    shape = X.shape[1:] + ((1,) if X.ndim == 3 else ())
    if X.dtype == np.uint8:
        pixels = np.multiply(X.reshape(len(X), -1), np.float32(1 / 255), dtype=np.float32)
    else:
        pixels = np.ascontiguousarray(X.reshape(len(X), -1), dtype=np.float32)
        if pixels.size and not (np.isfinite(pixels).all() and pixels.min() >= 0
                                and pixels.max() <= 1):
            raise ValueError(f"{path}: {name} images must be uint8 levels or floats in [0, 1]")
    return pixels, shape


def _load_npz(path, options):
    arrays = tables.read_npz(path)
    parts = {}
    for suffix in ("", "_test", "_validation"):
        X, y = arrays.get("X" + suffix), arrays.get("y" + suffix)
        if (X is None) != (y is None):
            given, lacking = ("X", "y") if y is None else ("y", "X")
            raise ValueError(f"{path} holds {given}{suffix} but no {lacking}{suffix}")
        if X is None:
            continue
        if y.ndim != 1 or len(y) != len(X):
            raise ValueError(f"{path}: y{suffix} has shape {y.shape}; expected one label per "
                             f"row of X{suffix}, shape ({len(X)},)")
        parts[suffix] = (X, y)
    X, labels = parts[""]
    if len(X) == 0:
        raise ValueError(f"{path}: X holds no samples")
    inputs, shape = _npz_inputs(X, path, "X")
    y, class_names = tables.label_indices(labels, f"{path}: y")
    if len(class_names) < 2:
        raise ValueError(f"{path}: every label in y is {class_names[0]!r}; a classifier needs "
                         f"at least two classes")
    extra = {}
    for suffix, what in (("_test", "test"), ("_validation", "validation")):
        if suffix in parts:
            X_part, y_part = parts[suffix]
            inputs_part, part_shape = _npz_inputs(X_part, path, "X" + suffix)
            if part_shape != shape or inputs_part.shape[1] != inputs.shape[1]:
                raise ValueError(f"{path}: X{suffix} has shape {X_part.shape}, X {X.shape}; "
                                 f"their samples must have one shape")
            extra[f"X_{what}"] = inputs_part
            extra[f"y_{what}"] = tables.map_labels(y_part, class_names, f"{path}: y{suffix}")
    splits = make_splits(inputs, y, **extra,
                         validation_size=_size(options, "validation_size", VALIDATION_SIZE),
                         test_size=_size(options, "test_size", TEST_SIZE), seed=options["seed"])
    source = os.fsdecode(path.resolve())
    if shape is None:
        info = DataInfo(format="npz", source=source, class_names=tuple(class_names),
                        input_kind="features",
                        feature_names=tuple(f"x{i}" for i in range(inputs.shape[1])))
    else:
        info = DataInfo(format="npz", source=source, class_names=tuple(class_names),
                        input_kind="image", image_shape=tuple(int(n) for n in shape),
                        pixel_scale=1 / 255)
    return splits, info


# --- The table ------------------------------------------------------------


FORMATS = {f.name: f for f in (
    DataFormat("mnist-pickle", "Nielsen's mnist.pkl.gz (or a directory holding it)",
               _recognises_pickle, _load_pickle),
    DataFormat("idx", "a directory of IDX files (train-images-idx3-ubyte[.gz] and the other "
                      "three): MNIST, Fashion-MNIST, KMNIST, EMNIST; any image size and class "
                      "count", _recognises_idx, _load_idx),
    DataFormat("image-folder", "a folder of images with one subfolder per class (PNG, JPEG, "
                               "...), optionally split into train/ and test/ folders",
               _recognises_folder, _load_folder, ("color", "image_size", "test_size")),
    DataFormat("csv", "a CSV or TSV file (.csv, .tsv) with a header row: numeric features "
                      "and a target column (the last, unless named)",
               _recognises_csv, _load_csv, ("target", "test_size")),
    DataFormat("npz", "an .npz file of arrays X and y (optionally X_test, y_test): features "
                      "(n, k) or images (n, h, w[, c])", _recognises_npz, _load_npz,
               ("test_size",)),
)}


def format_of(path: Path) -> DataFormat:
    """The entry of FORMATS that recognises path; ValueError if none does."""
    if not path.exists():
        raise FileNotFoundError(f"no data at {path}: it does not exist")
    for fmt in FORMATS.values():
        if fmt.recognises(path):
            return fmt
    raise ValueError(f"{path} is none of the data formats mlp reads: "
                     + "; ".join(f.summary for f in FORMATS.values()))


def _size(options, name, default):
    value = options[name]
    return default if value is None else value


def _refuse_split_options(path, options, why):
    for name in ("validation_size", "test_size"):
        if options[name] is not None:
            raise ValueError(f"{name} does not apply to {path}: {why}")


_OPTION_NAMES = ("target", "color", "image_size", "test_size")


def load(path=None, *, format=None, target=None, color=False, image_size=None,
         validation_size=None, test_size=None, seed=0, cache_dir=None, progress=True) -> Dataset:
    """Load a data set in any of the :data:`FORMATS` as three splits and a DataInfo.

    Parameters
    ----------
    path : str or os.PathLike, optional
        The data: see :data:`FORMATS` (``mlp train --help`` lists them).
        None: MNIST, from the cache or fetched (as :func:`load_mnist`).
    format : str, optional
        A name in :data:`FORMATS`; by default recognised from the path.
    target : str, optional
        CSV: the name of the label column (default: the last column).
    color : bool
        Image folders: keep RGB (3 channels) instead of grey.
    image_size : (height, width) or "HxW", optional
        Image folders: the size every image is resized to (default: the
        most common size among the training images; ties go to the larger).
    validation_size, test_size : float or int, optional
        Where the data has no such split of its own: the fraction (or count)
        of samples held out, from each class alike, drawn with `seed`.
        Defaults: 0.1 validation of what the test split leaves, 0.2 test.
        IDX directories keep MNIST's rule unless validation_size is given:
        the last sixth of the training images.
    seed : int
        Seed of the held-out splits.
    cache_dir : str or os.PathLike, optional
        Where decoded image folders are kept (default as for load_mnist).
    progress : bool
        A progress bar while images are decoded.

    Returns
    -------
    Dataset
        ``(splits, info)``. ``splits``: ``MNIST(train, validation, test)``
        of ``Split(images, labels)``; ``images`` float32 of shape
        (n, n_inputs), C-contiguous, pixels in [0, 1] row by row (channels
        of a pixel together) or raw feature values; ``labels`` int64 in
        ``0 .. len(info.class_names) - 1``. ``info``: a :class:`DataInfo`.

    Raises
    ------
    FileNotFoundError
        If `path` does not exist.
    ValueError
        For data no format recognises, and bad data, naming the file with
        the line and column, or the image.
    TypeError
        For options of the wrong type.
    """
    cache = get_cache_dir(cache_dir)
    if seed is None or isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) \
            or not 0 <= seed < 2**63:
        raise TypeError(f"seed must be an integer >= 0, got {seed!r}")
    options = dict(target=target, color=color, image_size=image_size,
                   validation_size=validation_size, test_size=test_size, seed=int(seed),
                   cache_dir=cache, progress=progress)
    if path is None:
        _refuse_split_options("MNIST", options, "it has its own three splits")
        return Dataset(load_mnist(cache_dir=cache), _mnist_info("mnist-pickle", None, 10, True))
    path = Path(os.fsdecode(check_path(path, "path"))).expanduser()
    if format is None:
        fmt = format_of(path)
    elif format in FORMATS:
        fmt = FORMATS[format]
        if not path.exists():
            raise FileNotFoundError(f"no data at {path}: it does not exist")
    else:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    for name in _OPTION_NAMES:
        default = False if name == "color" else None
        if options[name] is not default and name not in fmt.options:
            raise ValueError(f"{name} does not apply to {path}, {fmt.summary}")
    splits, info = fmt.loader(path, options)
    recorded = {name: options[name] for name in _OPTION_NAMES + ("validation_size",)
                if options[name] not in (None, False)}
    if recorded.get("image_size") is not None:
        recorded["image_size"] = list(folders._check_image_size(recorded["image_size"]))
    recorded["seed"] = options["seed"]
    return Dataset(splits, _with(info, load_options=recorded))


def _with(info, **changes):
    import dataclasses

    return dataclasses.replace(info, **changes)


def describe_formats() -> str:
    """The formats, one clause each, for help texts."""
    return "; ".join(f.summary for f in FORMATS.values())

