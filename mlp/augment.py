"""Random distortions of training images: affine maps and elastic deformations.

Training on distorted copies of the training images is how fully connected
networks pass 99% on MNIST (Simard et al. 2003; Ciresan et al. 2010). Three
small immutable configurations describe what to draw:

    >>> from mlp.augment import Affine, Elastic, distort
    >>> affine = Affine(rotation=12, scale=0.12, shear=10, shift=2)
    >>> elastic = Elastic(alpha=34, sigma=4)
    >>> both = affine + elastic                    # a Compose
    >>> X_distorted = distort(X, both, seed=0)     # X: (n, 784) float32 in [0, 1]

Every image gets its own random distortion, drawn from (seed, sample id)
alone: the same seed and sample ids give the same images whatever the
number of threads. Distortions are compiled (mlp/_augment.h) and cheap:
microseconds per 28x28 image (bench/bench_augment.py).

Geometry. An output pixel p (x the column, y the row, in pixels; c the
image centre) takes the value at the source point A (p - c) + c + o + d(p),
sampled bilinearly, with everything outside the image 0 (background):

* A, o invert the drawn affine map, which rotates the content by theta
  (positive: counter-clockwise on screen), scales it by s, shears it
  horizontally by phi and shifts it by (tx, ty), about the image centre;
* d is the elastic displacement field: per-pixel uniform noise in [-1, 1]
  for each of dx and dy, smoothed by a Gaussian of width sigma
  (scipy.ndimage.gaussian_filter's, mode 'reflect', truncated at 4 sigma),
  times alpha.

Composing both into one source point resamples once, so an affine map plus
an elastic field blurs the image no more than either alone. Outputs are
clipped to [0, 1].
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import _augment
from ._validation import check_int, check_positive_float, check_seed, spoken

__all__ = ["Affine", "Elastic", "Compose", "distort", "preview_grid"]

_UINT64_LIMIT = 1 << 64


def _check_bounded(owner, name, value, *, upper, strict, unit):
    """value as a float in [0, upper] (or [0, upper) when strict)."""
    label = spoken(f"{type(owner).__name__}.{name}")
    value = check_positive_float(value, label, allow_zero=True)
    if value > upper or (strict and value == upper):
        bound = f"< {upper:g}" if strict else f"<= {upper:g}"
        raise ValueError(f"{label} must be {bound}{unit}, got {value:g}")
    return value


@dataclass(frozen=True)
class Affine:
    """Random affine distortions: rotation, scale, shear and translation.

    Each image draws its own map, every parameter independently and
    uniformly from the range given, about the image centre. A parameter of
    0 leaves that part out; ``Affine(0, 0, 0, 0)`` is the identity.

    Parameters
    ----------
    rotation : float, default 12.0
        Largest rotation in degrees, in [0, 180]; the angle is uniform in
        [-rotation, rotation] (positive turns counter-clockwise on screen).
    scale : float, default 0.12
        Largest relative change of size, in [0, 1); the factor is uniform in
        [1 - scale, 1 + scale], the same along both axes.
    shear : float, default 10.0
        Largest horizontal shear angle in degrees, in [0, 90); uniform in
        [-shear, shear] (rows move sideways in proportion to their height).
    shift : float, default 2.0
        Largest translation in pixels, >= 0; x and y are drawn separately,
        each uniform in [-shift, shift].

    Raises
    ------
    ValueError
        A parameter that is negative, NaN, infinite or above its range.
    TypeError
        A parameter that is not a real number.

    Notes
    -----
    ``Affine(...) + Elastic(...)`` combines both distortions into a
    :class:`Compose`, applied in one resampling. The defaults suit 28x28
    digits (MNIST): within the range of Simard et al. 2003 and Ciresan et
    al. 2010.
    """

    rotation: float = field(default=12.0, metadata={"help": "largest rotation, degrees"})
    scale: float = field(default=0.12, metadata={
        "help": "largest relative change of size, in [0, 1)"})
    shear: float = field(default=10.0, metadata={"help": "largest horizontal shear, degrees"})
    shift: float = field(default=2.0, metadata={"help": "largest translation, pixels"})

    def __post_init__(self):
        for name, upper, strict, unit in (
            ("rotation", 180.0, False, " degrees"),
            ("scale", 1.0, True, ""),
            ("shear", 90.0, True, " degrees"),
            ("shift", math.inf, False, " pixels"),
        ):
            value = _check_bounded(self, name, getattr(self, name), upper=upper,
                                   strict=strict, unit=unit)
            object.__setattr__(self, name, value)

    def __add__(self, other):
        if isinstance(other, Elastic):
            return Compose(self, other)
        return NotImplemented

    __radd__ = __add__


@dataclass(frozen=True)
class Elastic:
    """Elastic distortions after Simard et al. 2003.

    Each image draws two fields of independent uniform noise in [-1, 1],
    one value per pixel (horizontal and vertical displacement), smooths
    them with a Gaussian of width ``sigma`` and scales them by ``alpha``;
    every pixel then takes its value from its own position plus that
    displacement.

    Parameters
    ----------
    alpha : float, default 34.0
        Strength: the smoothed fields are multiplied by alpha (pixels), >= 0.
        ``alpha=0`` is the identity.
    sigma : float, default 4.0
        Width of the Gaussian in pixels, in [0, 1000]. Small sigma gives
        rough, nearly random displacements; large sigma nearly a
        translation. Smoothing matches ``scipy.ndimage.gaussian_filter``
        (mode 'reflect', truncate 4.0).

    Raises
    ------
    ValueError
        A parameter that is negative, NaN, infinite or above its range.
    TypeError
        A parameter that is not a real number.

    Notes
    -----
    alpha=34, sigma=4 on 28x28 digits are Simard et al.'s values (a
    displacement of about 1.4 pixels standard deviation). The smoothed
    noise shrinks as sigma grows, so a larger sigma needs a larger alpha
    for the same strength.
    """

    alpha: float = field(default=34.0, metadata={
        "help": "elastic strength: the smoothed displacement fields times this, pixels"})
    sigma: float = field(default=4.0, metadata={
        "help": "elastic smoothness: width of the Gaussian, pixels"})

    def __post_init__(self):
        object.__setattr__(self, "alpha", _check_bounded(
            self, "alpha", self.alpha, upper=math.inf, strict=False, unit=" pixels"))
        # Beyond this the field is flat on any image that fits in memory, and
        # the kernel's table would only grow (8 sigma + 1 weights).
        object.__setattr__(self, "sigma", _check_bounded(
            self, "sigma", self.sigma, upper=1000.0, strict=False, unit=" pixels"))

    def __add__(self, other):
        if isinstance(other, Affine):
            return Compose(other, self)
        return NotImplemented

    __radd__ = __add__


@dataclass(frozen=True)
class Compose:
    """An affine distortion and an elastic one, applied together.

    Both are drawn for each image and composed into one map: the source
    point of a pixel is the affine map's plus the elastic displacement, and
    the image is resampled once. ``Affine(...) + Elastic(...)`` (in either
    order) builds the same object.

    Parameters
    ----------
    affine : Affine
    elastic : Elastic

    Raises
    ------
    TypeError
        affine is not an :class:`Affine` or elastic not an :class:`Elastic`.
    """

    affine: Affine
    elastic: Elastic

    def __post_init__(self):
        if not isinstance(self.affine, Affine):
            raise TypeError(f"Compose.affine must be an mlp.augment.Affine, got {self.affine!r}")
        if not isinstance(self.elastic, Elastic):
            raise TypeError(f"Compose.elastic must be an mlp.augment.Elastic, got {self.elastic!r}")


def _kernel_parameters(augment, name="augment"):
    """(rotation, scale, shear, shift, alpha, sigma) for the kernel; a zero
    part is left out. TypeError for anything but Affine, Elastic, Compose."""
    if isinstance(augment, Compose):
        affine, elastic = augment.affine, augment.elastic
    elif isinstance(augment, Affine):
        affine, elastic = augment, Elastic(alpha=0.0, sigma=0.0)
    elif isinstance(augment, Elastic):
        affine, elastic = Affine(0.0, 0.0, 0.0, 0.0), augment
    else:
        raise TypeError(
            f"{name} must be an mlp.augment.Affine, Elastic or Compose "
            f"(e.g. Affine() + Elastic()), got {augment!r}"
        )
    return (affine.rotation, affine.scale, affine.shear, affine.shift,
            elastic.alpha, elastic.sigma)


def _check_augment(augment, name="augment"):
    """augment itself if it is an Affine, Elastic or Compose, else TypeError."""
    _kernel_parameters(augment, name)
    return augment


def augment_to_dict(augment):
    """A JSON-ready description of augment: {"affine": {...} or None, "elastic": ...}."""
    parts = _kernel_parameters(augment)
    affine = None if isinstance(augment, Elastic) else dict(zip(
        ("rotation", "scale", "shear", "shift"), parts[:4]))
    elastic = None if isinstance(augment, Affine) else dict(zip(("alpha", "sigma"), parts[4:]))
    return {"affine": affine, "elastic": elastic}


def augment_from_dict(description):
    """The inverse of augment_to_dict; ValueError for anything else."""
    if not isinstance(description, dict) or set(description) != {"affine", "elastic"}:
        raise ValueError(f"not a description of distortions: {description!r}")
    try:
        parts = [cls(**description[key]) for key, cls in (("affine", Affine), ("elastic", Elastic))
                 if description[key] is not None]
    except TypeError as exc:
        raise ValueError(f"bad description of distortions {description!r}: {exc}") from None
    if not parts:
        raise ValueError(f"not a description of distortions: {description!r}")
    return parts[0] if len(parts) == 1 else Compose(*parts)


def _training_images_and_plan(augment, X, n_inputs):
    """What train() hands the kernel for augment: (X, plan).

    Without augment, X as it is and None. With it, X as float32 (the
    distortions are drawn in float32 and widened for a float64 model),
    checked to lie in [0, 1], and the DistortionPlan of the model's
    side x side input images."""
    if augment is None:
        return X, None
    _check_augment(augment)
    side = math.isqrt(n_inputs)
    if side * side != n_inputs:
        raise ValueError(
            f"augment distorts square images, but the model takes {n_inputs} inputs, which "
            f"is not side*side (784 = 28*28 for MNIST); train without augment, or on "
            f"images flattened from square ones"
        )
    X = np.ascontiguousarray(X, dtype=np.float32)
    if X.size:
        low, high = X.min(), X.max()
        if not (low >= 0.0 and high <= 1.0):
            if not (np.isfinite(low) and np.isfinite(high)):
                raise ValueError("X contains NaN or infinity")
            raise ValueError(
                f"augment needs X in [0, 1] (0 is the background that distortions bring "
                f"in), got values from {low:g} to {high:g}; rescale them, e.g. X / 255, or "
                f"train without augment"
            )
    return X, _distortion_plan(augment, side)


def _distortion_plan(augment, side, name="augment"):
    """The compiled plan (mlp._augment.DistortionPlan) of augment for side x side images."""
    return _augment.DistortionPlan(side, *_kernel_parameters(augment, name))


def _check_images(images, name="images"):
    """(float32 C-contiguous (n, side*side) array, side) for images given as
    (n, side*side) or (n, side, side) floats in [0, 1]."""
    try:
        arr = np.asarray(images)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be an array of floats: {exc}") from None
    if not np.issubdtype(arr.dtype, np.floating):
        hint = " (for 8-bit images use images / 255)" if np.issubdtype(arr.dtype, np.integer) else ""
        raise TypeError(f"{name} must hold floats in [0, 1], got dtype {arr.dtype}{hint}")
    if arr.ndim == 3:
        if arr.shape[1] != arr.shape[2]:
            raise ValueError(
                f"{name} given as (n, height, width) must be square, got shape {arr.shape}"
            )
        side = arr.shape[1]
    elif arr.ndim == 2:
        side = math.isqrt(arr.shape[1])
        if side * side != arr.shape[1]:
            raise ValueError(
                f"{name} must be square: each row of {arr.shape[1]} pixels must be a "
                f"side*side image (784 = 28*28), got shape {arr.shape}; pass a single "
                f"image as images[None]"
            )
    else:
        raise ValueError(
            f"{name} must be 2-D (n, side*side) or 3-D (n, side, side), got shape {arr.shape}"
        )
    if side == 0:
        raise ValueError(f"{name} must hold images of at least one pixel, got shape {arr.shape}")
    flat = np.ascontiguousarray(arr.reshape(arr.shape[0], side * side), dtype=np.float32)
    if flat.size:
        low, high = flat.min(), flat.max()
        if not (low >= 0.0 and high <= 1.0):
            if not np.isfinite(flat).all():
                raise ValueError(f"{name} contains NaN or infinity")
            raise ValueError(
                f"{name} must lie in [0, 1] (0 is the background), got values from "
                f"{low:g} to {high:g}; rescale them, e.g. images / 255"
            )
    return flat, side


def _check_sample_ids(sample_ids, n):
    if sample_ids is None:
        return np.arange(n, dtype=np.int64)
    arr = np.asarray(sample_ids)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"sample_ids must be integers, got dtype {arr.dtype}")
    if arr.shape != (n,):
        raise ValueError(f"sample_ids must have shape ({n},), one per image, got {arr.shape}")
    if n and (arr.min() < 0 or arr.max() > np.iinfo(np.int64).max):
        raise ValueError(
            f"sample_ids must lie in [0, 2**63), got values from {arr.min()} to {arr.max()}"
        )
    return np.ascontiguousarray(arr, dtype=np.int64)


def _kernel_seed(seed):
    """The kernel's 64-bit seed from None (fresh entropy), an int or a Generator."""
    seed = check_seed(seed, below=_UINT64_LIMIT)
    if seed is None:
        seed = np.random.default_rng()
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(0, _UINT64_LIMIT, dtype=np.uint64))
    return seed


def distort(images, augment, *, seed, sample_ids=None, n_threads=1):
    """Randomly distorted copies of images.

    Parameters
    ----------
    images : array-like of float, shape (n, side*side) or (n, side, side)
        Square images, row-major, values in [0, 1] with 0 the background
        (e.g. MNIST rows of 784 = 28x28 pixels). Any square side works;
        28x28 is the fastest per pixel.
    augment : Affine, Elastic or Compose
        What to draw for each image.
    seed : int, numpy.random.Generator or None
        Keys the random draws (an int in [0, 2**64)). None draws a fresh
        seed from the operating system; a Generator gives one integer.
    sample_ids : array-like of int, shape (n,), optional
        The draw counter of each image, in [0, 2**63): an image's distortion
        depends on (seed, its sample id, augment) and nothing else. Default
        ``arange(n)``. Give new ids (a running count) for fresh distortions
        of the same images, e.g. one per epoch.
    n_threads : int or None, default 1
        Threads to split the images between; None uses every core this
        process may run on. The result does not depend on it.

    Returns
    -------
    ndarray of float32, shape (n, side*side) or (n, side, side)
        The distorted images, the shape of ``images``, values in [0, 1].

    Raises
    ------
    TypeError
        images not floating point (8-bit images: divide by 255), augment not
        an Affine, Elastic or Compose, or a seed, sample_ids or n_threads of
        the wrong type.
    ValueError
        Images that are not square, are empty, hold NaN/inf or values
        outside [0, 1]; sample_ids of the wrong length or negative; seed or
        n_threads out of range.

    Examples
    --------
    Fresh distortions of the whole training set for every epoch:

    >>> X_train, y_train = mlp.datasets.load_mnist().train
    >>> n = len(X_train)
    >>> for epoch in range(10):
    ...     X_epoch = distort(X_train, Affine() + Elastic(), seed=0,
    ...                       sample_ids=epoch * n + np.arange(n), n_threads=None)
    """
    _kernel_parameters(augment)  # the type, before the images are scanned
    flat, side = _check_images(images)
    ids = _check_sample_ids(sample_ids, flat.shape[0])
    key = _kernel_seed(seed)
    n_threads = check_int(n_threads, "n_threads", minimum=1, allow_none=True)
    if n_threads is None:
        from ._threads import default_threads

        n_threads = default_threads()
    out = np.empty_like(flat)
    _augment.distort(_distortion_plan(augment, side), flat, out, ids, key, n_threads)
    return out.reshape(np.shape(images))


def preview_grid(images, augment, *, seed=0, n=8, copies=3):
    """A figure of images next to distorted copies of them.

    The first row shows ``images[:n]`` as they are, each following row one
    random distortion of each. Needs matplotlib (``pip install matplotlib``);
    the figure is not shown, save it with ``fig.savefig("grid.png")``.

    Parameters
    ----------
    images : array-like of float, shape (m, side*side) or (m, side, side)
        Square images in [0, 1], m >= n.
    augment : Affine, Elastic or Compose
        The distortions to draw.
    seed : int, default 0
        Seed of the draws (as in :func:`distort`).
    n : int, default 8
        Images to show (columns), >= 1.
    copies : int, default 3
        Distorted rows under the originals, >= 1.

    Returns
    -------
    matplotlib.figure.Figure
        (1 + copies) rows by n columns of grey-scale digits, dark on white.

    Raises
    ------
    ValueError, TypeError
        As :func:`distort`, or n > m, n < 1, copies < 1.
    ImportError
        matplotlib is not installed.
    """
    n = check_int(n, "n", minimum=1)
    copies = check_int(copies, "copies", minimum=1)
    _kernel_parameters(augment)
    flat, side = _check_images(images)
    if n > flat.shape[0]:
        raise ValueError(f"n must be <= the number of images ({flat.shape[0]}), got {n}")
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("preview_grid needs matplotlib: pip install matplotlib") from None
    originals = flat[:n]
    # Row r's copy of image i has sample id r * n + i: every tile its own draw.
    repeated = np.tile(originals, (copies, 1))
    distorted = distort(repeated, augment, seed=seed)
    rows = [originals] + [distorted[r * n:(r + 1) * n] for r in range(copies)]
    tile = 1.0
    fig = Figure(figsize=(tile * n, tile * (1 + copies) + 0.5), layout="constrained")
    axes = fig.subplots(1 + copies, n, squeeze=False)
    for r, row in enumerate(rows):
        for i in range(n):
            ax = axes[r][i]
            ax.imshow(row[i].reshape(side, side), cmap="gray_r", vmin=0.0, vmax=1.0,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel("original" if r == 0 else "distorted", fontsize=9)
    fig.suptitle(repr(augment), fontsize=8)
    return fig

