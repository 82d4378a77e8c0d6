"""What a data set is: :class:`DataInfo`, and the seeded held-out splits.

A :class:`DataInfo` travels with the data from :func:`mlp.datasets.load` into
the model file, so that ``mlp predict``, ``evaluate`` and ``report`` know the
class names, what an input is (an image of a given size, or named features)
and how raw inputs were prepared, and can prepare new ones alike.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from .mnist import MNIST, Split

__all__ = ["DataInfo", "held_out_split", "INPUT_KINDS"]

INPUT_KINDS = ("image", "features")
# What a DataInfo read from a file may hold at most: a model file's metadata
# is checked before anything is built from it.
_MAX_NAMES = 1_000_000
_MAX_NAME_LENGTH = 1000


@dataclass(frozen=True)
class DataInfo:
    """What a data set holds and how its inputs were prepared.

    Attributes
    ----------
    format : str
        The name of its format in :data:`mlp.datasets.FORMATS`.
    source : str or None
        The absolute path it was loaded from; None for MNIST from the cache.
    class_names : tuple of str
        ``class_names[k]`` names label k.
    input_kind : {"image", "features"}
    image_shape : tuple (height, width, channels) or None
        For images: rows are the pixels row by row, the channels of a pixel
        together (1 grey, 3 RGB).
    feature_names : tuple of str or None
        For features: the name of each input column.
    pixel_scale : float or None
        For images: a pixel's value is its 8-bit level times this
        (1/255, or Nielsen's 1/256 for MNIST).
    digits : bool
        MNIST's handwritten digits: ``mlp predict`` prepares a picture as
        MNIST's digits were made (crop, 20x20 box, centre of mass).
    standardization : tuple (mean, std) of tuples of float, or None
        One (mean, std) pair per input, by which the model's inputs are
        standardised: for features, the training split's mean and standard
        deviation of each feature; for images from a folder or an .npz,
        each pixel's mean over the training images, and 1.
    standardization_folded : bool
        Whether the standardisation is folded into the first layer's
        weights and biases, so that the model takes raw features; if not,
        inputs must be standardised before they reach the model.
    load_options : dict
        The options of :func:`mlp.datasets.load` that made the splits, so
        that the same data can be loaded again (``mlp evaluate``).
    """

    format: str
    source: str | None
    class_names: tuple
    input_kind: str
    image_shape: tuple | None = None
    feature_names: tuple | None = None
    pixel_scale: float | None = None
    digits: bool = False
    standardization: tuple | None = None
    standardization_folded: bool = False
    load_options: dict = field(default_factory=dict)

    @property
    def n_inputs(self) -> int:
        """The number of inputs of a sample."""
        if self.input_kind == "image":
            return math.prod(self.image_shape)
        return len(self.feature_names)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def preprocessing(self) -> str:
        """How raw inputs become the model's, in words."""
        if self.input_kind == "image":
            height, width, channels = self.image_shape
            colour = "grey" if channels == 1 else "RGB"
            text = (f"{colour} {height}x{width} images, each 8-bit level times "
                    f"1/{round(1 / self.pixel_scale)}")
            if self.digits:
                text += "; pictures of digits prepared as MNIST's (crop, 20x20 box, centre of mass)"
            if self.standardization is not None:
                where = ("folded into the first layer (the model takes the scaled pixels)"
                         if self.standardization_folded else "applied before the model")
                text += f"; centred by each pixel's mean over the training images, {where}"
            return text
        if self.standardization is None:
            return "raw features"
        where = ("folded into the first layer (the model takes raw features)"
                 if self.standardization_folded else "applied before the model")
        return f"features standardised with the training split's mean and std, {where}"

    def to_dict(self) -> dict:
        """A JSON-ready dict (the model file's ``data`` metadata)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, value) -> "DataInfo":
        """The DataInfo a model file describes; ValueError for anything else."""
        if not isinstance(value, dict):
            raise ValueError("the data description is not a dict")
        names = {f.name for f in dataclasses.fields(cls)}
        if set(value) - names or not {"format", "source", "class_names", "input_kind"} <= set(value):
            raise ValueError(f"the data description has keys {sorted(value)}")
        kwargs = dict(value)
        kwargs["class_names"] = _names(kwargs["class_names"], "class_names")
        kwargs["feature_names"] = (None if kwargs.get("feature_names") is None
                                   else _names(kwargs["feature_names"], "feature_names"))
        if kwargs["input_kind"] not in INPUT_KINDS:
            raise ValueError(f"input_kind {kwargs['input_kind']!r}")
        if not isinstance(kwargs["format"], str) or not (
                kwargs["source"] is None or isinstance(kwargs["source"], str)):
            raise ValueError("format or source is not a string")
        shape = kwargs.get("image_shape")
        if shape is not None:
            if not (isinstance(shape, list) and len(shape) == 3 and all(
                    isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 1 << 20
                    for n in shape) and shape[2] in (1, 3)):
                raise ValueError(f"image_shape {shape!r}")
            kwargs["image_shape"] = tuple(shape)
        scale = kwargs.get("pixel_scale")
        if scale is not None and not (isinstance(scale, float) and 0 < scale <= 1):
            raise ValueError(f"pixel_scale {scale!r}")
        if kwargs["input_kind"] == "image" and (shape is None or scale is None):
            raise ValueError("an image data set without image_shape or pixel_scale")
        if kwargs["input_kind"] == "features" and kwargs["feature_names"] is None:
            raise ValueError("a features data set without feature_names")
        for flag in ("digits", "standardization_folded"):
            if not isinstance(kwargs.get(flag, False), bool):
                raise ValueError(f"{flag} is not true or false")
        standardization = kwargs.get("standardization")
        if standardization is not None:
            n = (math.prod(shape) if kwargs["input_kind"] == "image" and shape is not None
                 else len(kwargs["feature_names"] or ()))
            if not (isinstance(standardization, list) and len(standardization) == 2 and all(
                    isinstance(part, list) and len(part) == n and all(
                        isinstance(v, (int, float)) and not isinstance(v, bool)
                        and math.isfinite(v) for v in part) for part in standardization)) \
                    or not all(v > 0 for v in standardization[1]):
                raise ValueError("standardization is not a (mean, std) pair of the inputs")
            kwargs["standardization"] = tuple(tuple(float(v) for v in part)
                                              for part in standardization)
        options = kwargs.get("load_options", {})
        if not isinstance(options, dict):
            raise ValueError("load_options is not a dict")
        return cls(**kwargs)


def _names(value, what):
    if not isinstance(value, list) or not 1 <= len(value) <= _MAX_NAMES or not all(
            isinstance(name, str) and len(name) <= _MAX_NAME_LENGTH for name in value):
        raise ValueError(f"{what} is not a list of names")
    return tuple(value)


def _fraction_or_count(value, n, what):
    """How many of n samples value (a fraction in [0, 1) or a count) asks for."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{what} must be a fraction below 1 or a count of samples, got {value!r}")
    if isinstance(value, (float, np.floating)):
        if not 0 <= value < 1:
            raise ValueError(f"{what} must be a fraction in [0, 1) or a count of samples, "
                             f"got {value!r}")
        return value
    if value < 0:
        raise ValueError(f"{what} must be a count of samples >= 0, got {value!r}")
    return int(value) / max(n, 1)


def held_out_split(labels, size, seed, what):
    """(kept, held out): sorted indices into labels, with about `size` (a
    fraction, or a count of samples) held out from each class alike, drawn
    with `seed`; every class keeps at least one sample."""
    labels = np.asarray(labels)
    fraction = _fraction_or_count(size, len(labels), what)
    rng = np.random.default_rng(seed)
    held = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = min(int(round(fraction * len(members))), len(members) - 1)
        if count > 0:
            held.append(rng.permutation(members)[:count])
    held = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.intp)
    kept = np.setdiff1d(np.arange(len(labels)), held)
    return kept, held


def make_splits(X, y, *, X_test=None, y_test=None, X_validation=None, y_validation=None,
                validation_size, test_size, seed) -> MNIST:
    """The three splits of (X, y) and whatever test and validation parts the
    data has of its own; what it lacks is held out from (X, y), test first."""
    if X_test is None:
        kept, held = held_out_split(y, test_size, seed, "test_size")
        X_test, y_test = X[held], y[held]
        X, y = X[kept], y[kept]
    if X_validation is None:
        kept, held = held_out_split(y, validation_size, seed + 1, "validation_size")
        X_validation, y_validation = X[held], y[held]
        X, y = X[kept], y[kept]
    return MNIST(*(Split(np.ascontiguousarray(a), np.ascontiguousarray(b, dtype=np.int64))
                   for a, b in ((X, y), (X_validation, y_validation), (X_test, y_test))))
