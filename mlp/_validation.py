"""Input checks at the boundary of the package.

Everything public funnels its arguments through these helpers before any
kernel runs: the Cython core trusts dtype, shape, contiguity and index
ranges, so a value that gets past here must be safe to hand to it.
"""
from __future__ import annotations

import contextvars
import difflib
import math
import numbers
import os
import secrets
import sys
import warnings
from contextlib import contextmanager

import numpy as np
import scipy.sparse

from ._kernels import MAX_WEIGHT_LAYERS, all_finite
from .activations import LOSSES

SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_dtype(dtype, name="dtype"):
    """Return np.float32 or np.float64 as a np.dtype; anything else is a TypeError."""
    if dtype is None:
        raise TypeError(f"{name} must be float32 or float64, got None")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{name} must be float32 or float64, got {dtype!r}") from None
    if dt not in SUPPORTED_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {dt}")
    return dt


# What the caller calls each argument, when it is not its Python name: the
# CLI sets {"learning_rate": "--lr", "Affine.scale": "--scale", ...} while it
# builds the library's options, so that their checks name its flags.
_ARGUMENT_NAMES = contextvars.ContextVar("mlp_argument_names", default={})


@contextmanager
def argument_names(names):
    """Within this context, a check of the argument called `name` in the
    library names it ``names[name]`` in its error (its flag, for the CLI)."""
    token = _ARGUMENT_NAMES.set({**_ARGUMENT_NAMES.get(), **names})
    try:
        yield
    finally:
        _ARGUMENT_NAMES.reset(token)


def spoken(name):
    """name as the caller calls it: see argument_names."""
    return _ARGUMENT_NAMES.get().get(name, name)


def check_choice(value, choices, name):
    """Return value if it is one of choices (strings), else raise ValueError/TypeError."""
    name = spoken(name)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {sorted(choices)}; got {value!r}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}; got {value!r}")
    return value


def check_int(value, name, *, minimum=None, allow_none=False):
    """Return value as a Python int, checking its type and lower bound."""
    if value is None and allow_none:
        return None
    if type(value) is int and (minimum is None or value >= minimum):
        return value  # the usual case, without the abc checks below (1 us)
    name = spoken(name)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_real(value, name, *, low=None, high=None, low_open=False, high_open=False):
    """Return value as a finite Python float within the bounds given: at
    least `low` (above it with low_open), at most `high` (below it with
    high_open); a bound of None is no bound."""
    name = spoken(name)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if not math.isfinite(value) or below or above:
        lo = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
        hi = "" if high is None else f"{high:g}" + (")" if high_open else "]")
        span = f"in {lo}, {hi}" if low is not None and high is not None else (
            f"{'>' if low_open else '>='} {low:g}" if low is not None else
            f"{'<' if high_open else '<='} {high:g}" if high is not None else "")
        raise ValueError(f"{name} must be a finite number {span}".rstrip()
                         + f", got {value!r}")
    return value


def check_positive_float(value, name, *, allow_zero=False):
    """Return value as a finite Python float > 0 (or >= 0 with allow_zero)."""
    return check_real(value, name, low=0, low_open=not allow_zero)


def check_seed(seed, name="seed", *, below=None):
    """Seeds are None, a non-negative int (below `below`, if given), or a
    np.random.Generator."""
    if seed is None or isinstance(seed, np.random.Generator):
        return seed
    seed = check_int(seed, name, minimum=0)
    name = spoken(name)
    if below is not None and seed >= below:
        # Bounds are powers of two (the kernels' integer widths): said as such.
        bound = f"2**{below.bit_length() - 1}" if below & (below - 1) == 0 else str(below)
        raise ValueError(f"{name} must be < {bound}, got {seed}")
    return seed


def check_layer_sizes(layer_sizes):
    """layer_sizes as a list of ints: at least two, each >= 1, within what the kernels take."""
    if isinstance(layer_sizes, (str, bytes)) or not hasattr(layer_sizes, "__len__"):
        raise TypeError(f"layer_sizes must be a sequence of ints, got {layer_sizes!r}")
    sizes = [check_int(s, "layer_sizes[%d]" % i, minimum=1) for i, s in enumerate(layer_sizes)]
    if len(sizes) < 2:
        raise ValueError(f"layer_sizes needs at least an input and an output size, got {sizes}")
    if len(sizes) - 1 > MAX_WEIGHT_LAYERS:
        raise ValueError(f"layer_sizes allows at most {MAX_WEIGHT_LAYERS} weight layers")
    # BLAS takes 32-bit dimensions.
    if max(sizes) >= 2**31:
        raise ValueError("layer_sizes entries must be below 2**31")
    return sizes


def check_keywords(function_name, keywords, valid):
    """Raise TypeError for the first of `keywords` not in `valid`, naming
    `function_name` (the public function the caller called, not the class
    that takes its options) and the closest valid name, if any is close."""
    for keyword in keywords:
        if keyword not in valid:
            close = difflib.get_close_matches(keyword, list(valid), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else \
                f"; it takes {', '.join(sorted(valid))}"
            raise TypeError(f"{function_name}() got an unexpected keyword argument "
                            f"{keyword!r}{hint}")


def check_path(path, name="path"):
    """Return path as a str; it must be str or os.PathLike."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or os.PathLike, got {type(path).__name__}")
    return os.fspath(path)


def check_layer_arrays(values, targets, name, *, other_shapes=None, finite=True):
    """values, one array per layer for `targets` (the model's arrays), each
    converted to its target's dtype and shape. Every one is checked (its
    shape, or one of other_shapes(target), and if `finite` its values) before
    the caller copies any in, so that a bad one leaves the model as it was."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name} must be a list of arrays, one per layer ({len(targets)}), "
                        f"got {type(values).__name__}")
    values = list(values)
    if len(values) != len(targets):
        raise ValueError(f"{name} takes one array per layer, {len(targets)}; got {len(values)}")
    checked = []
    for index, (value, target) in enumerate(zip(values, targets)):
        where = f"{name}[{index}]"
        try:
            array = np.asarray(value, dtype=target.dtype)
        except (TypeError, ValueError):
            raise TypeError(f"{where} must be an array of numbers of shape {target.shape}, got "
                            f"{type(value).__name__}") from None
        shapes = [target.shape, *(other_shapes(target) if other_shapes else ())]
        if array.shape not in shapes:
            raise ValueError(f"{where} must have shape {' or '.join(map(str, shapes))}, got "
                             f"{array.shape}")
        if finite and not np.isfinite(array).all():
            raise ValueError(f"{where} must be finite; it has NaN or infinity")
        checked.append(array.reshape(target.shape))
    return checked


def warn(message, category=UserWarning):
    """``warnings.warn`` attributed to the user's line: the first caller outside mlp."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 2
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == package:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


def _number(value):
    """A numpy scalar as the user would write it: 3, 2.5, 1e+20."""
    value = value.item()
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def check_writable(path, name="path", example="model.npz"):
    """Check that a file can be written at `path` before any work is done.

    Model.save, to_onnx, train(checkpoint=) and the CLI's --save and
    --checkpoint call this before they compute anything, so that a typo does
    not cost a whole run. The check creates and removes a temporary file
    next to `path`, which is what the atomic save will do; it never touches
    `path` itself.

    Returns path as a str. Raises TypeError for a path that is not str or
    os.PathLike, and ValueError (one line naming `name` and the path) when
    `path` is empty or a directory, or its directory is missing or cannot be
    written.
    """
    path = check_path(path, name)
    if not path:
        raise ValueError(f"{name} is empty; give a file name, such as {example!r}")
    if os.path.isdir(path) or not os.path.basename(path):
        raise ValueError(f"{name} {path!r} is a directory; give a file name, such as "
                         f"{os.path.join(path, example)!r}")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"{name} {path!r}: the directory {directory!r} does not exist")
    probe = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(4)}.probe")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as exc:
        raise ValueError(f"{name} {path!r} cannot be written: {exc.strerror} "
                         f"(directory {directory!r})") from None
    os.unlink(probe)
    return path


def check_batch_size(batch_size, n_samples):
    """Return batch_size as an int, reduced to n_samples when it is larger.

    A batch never holds more samples than the data set (scikit-learn's MLP
    clips batch_size the same way). With shuffled epochs that changes
    nothing: an epoch is then one batch of every sample either way. It also
    means no buffer is ever sized from an arbitrary batch_size, so
    ``batch_size=2**40`` trains like ``batch_size=n_samples`` instead of
    raising MemoryError.
    """
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    return min(batch_size, n_samples)


def _as_numeric_array(value, name):
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be an array of numbers: {exc}") from None
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.floating)
        or np.issubdtype(arr.dtype, np.integer)
        or arr.dtype == np.bool_
    ):
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr


# Float features beyond this (in absolute value) get check_matrix's warning
# when a classifier trains on them: standardised features rarely pass 5 and
# images scaled to [0, 1] never pass 1, while raw 0..255 pixels, the usual
# cause, reach 255.
FLOAT_INPUT_WARNING_BOUND = 10.0


def warn_if_unscaled(arr, name, *, floats=False):
    """Warn when arr, a network input, is clearly not scaled to order 1: an
    integer array with values above 1 (8-bit images in 0..255, say), or,
    with `floats`, a float array with a value beyond +-FLOAT_INPUT_WARNING_BOUND.
    The network trains to chance on such input (10% on raw MNIST pixels)."""
    if np.issubdtype(arr.dtype, np.integer):
        extreme = f"up to {_number(arr.max())}"
        unscaled = arr.max() > 1
    elif floats and np.issubdtype(arr.dtype, np.floating):
        high, low = arr.max(), arr.min()
        # NaN and infinity are errors, reported where they are found.
        unscaled = np.isfinite(high) and np.isfinite(low) and (
            high > FLOAT_INPUT_WARNING_BOUND or low < -FLOAT_INPUT_WARNING_BOUND)
        extreme = f"up to {high:.4g}" if high >= -low else f"down to {low:.4g}"
    else:
        return
    if unscaled:
        warn(f"{name} holds {arr.dtype} values {extreme}; the network "
             f"expects features scaled to about [0, 1], and trains poorly on raw pixel "
             f"values. For 8-bit images pass {name} / 255.")


def check_matrix(value, name, *, n_columns, dtype, n_rows=None, finite=True, targets=False,
                 network_input=None, warn_float_scale=False, sparse=False):
    """Return value as a C-contiguous (n, n_columns) array of dtype.

    With sparse=True a scipy.sparse matrix or array is returned as a
    scipy.sparse.csr_matrix instead (see check_sparse_matrix), never made
    dense; without it, one is refused with a TypeError that says so.

    dtype=None keeps float32 and float64 input as it is and converts
    anything else to float64. finite=False skips the scan for NaN and inf,
    for a caller whose kernel checks the rows it reads (train()).

    network_input (default: not targets) says the matrix feeds the network:
    then integer values above 1 (8-bit images in 0..255, say) get a warning,
    since the network expects features of order 1 and trains to chance on
    raw pixels; with warn_float_scale (a classifier's training data), so do
    float values beyond +-FLOAT_INPUT_WARNING_BOUND (see warn_if_unscaled).
    Pass network_input=False for other matrices (sample weights).
    For targets=True, 1-D input gets a hint about one-hot encoding labels.

    Raises TypeError for non-numeric input and ValueError for a wrong shape,
    an empty batch, or a non-finite entry. Copies only when the dtype or the
    memory layout has to change."""
    # What inference gets call after call, a C-contiguous 2-D array of the
    # dtype, passes without the general path below, whose 3 us are a fifth
    # of a one-row forward pass. (np.dtype(x) == None holds for float64.)
    if (type(value) is np.ndarray and dtype is not None and value.dtype == dtype
            and value.ndim == 2 and value.flags.c_contiguous and value.flags.aligned
            and not warn_float_scale
            and value.shape[1] == n_columns and value.shape[0] > 0
            and (n_rows is None or value.shape[0] == n_rows)
            and (not finite or all_finite(value.reshape(-1)))):
        return value
    if scipy.sparse.issparse(value):
        if not sparse:
            raise TypeError(f"{name} is a scipy.sparse matrix, which this function does not "
                            f"take; pass a dense array ({name}.toarray())")
        return check_sparse_matrix(value, name, n_columns=n_columns, dtype=dtype,
                                   n_rows=n_rows, network_input=network_input,
                                   warn_float_scale=warn_float_scale)
    arr = _as_numeric_array(value, name)
    if arr.ndim != 2:
        hint = ""
        if arr.ndim == 1 and targets:
            hint = (f"; for class labels, one-hot encode them: "
                    f"mlp.datasets.one_hot(labels, {n_columns})")
        elif arr.ndim == 1:
            hint = f" (use {name}.reshape(1, -1) for a single sample)"
        raise ValueError(
            f"{name} must be 2-D with shape (n_samples, {n_columns}), got shape {arr.shape}{hint}"
        )
    _check_rows_and_columns(arr.shape, name, n_columns, n_rows)
    if network_input is None:
        network_input = not targets
    if network_input:
        warn_if_unscaled(arr, name, floats=warn_float_scale)
    if dtype is None:
        dtype = arr.dtype if arr.dtype in SUPPORTED_DTYPES else np.float64
    with np.errstate(over="ignore"):
        converted = np.ascontiguousarray(arr, dtype=dtype)
    if not converted.flags.aligned:
        # The kernels read whole floats: an array at an odd address (a buffer
        # read from a file, say) is copied, and a copy is aligned.
        converted = converted.copy()
    if finite and not all_finite(converted.reshape(-1)):
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            raise ValueError(f"{name} contains NaN or infinity")
        raise ValueError(f"{name} holds values too large for {np.dtype(dtype).name}")
    return converted


def _check_rows_and_columns(shape, name, n_columns, n_rows):
    """A 2-D matrix's shape: n_columns columns, at least one row, n_rows if given."""
    if shape[1] != n_columns:
        raise ValueError(
            f"{name} must have {n_columns} columns to match the model, got shape {shape}"
        )
    if shape[0] == 0:
        raise ValueError(f"{name} must hold at least one sample, got shape {shape}")
    if n_rows is not None and shape[0] != n_rows:
        raise ValueError(f"{name} must have {n_rows} rows, got shape {shape}")


def check_sparse_matrix(value, name, *, n_columns, dtype, n_rows=None, network_input=True,
                        warn_float_scale=False):
    """Return the scipy.sparse matrix or array value as a
    scipy.sparse.csr_matrix (n, n_columns) whose data is of dtype (None:
    float32 and float64 kept, anything else float64), with sorted indices
    and no repeated entries (CSC and COO are converted; repeats summed, as
    toarray() sums them), so that the kernels list each row's non-zero
    inputs in the order they list a dense row's.

    The values are always checked for NaN and infinity: there are only the
    stored ones to scan. Copies only what has to change (for CSR input in
    canonical form and of dtype, nothing). Raises as check_matrix does."""
    if value.ndim != 2:
        raise ValueError(f"{name} must be 2-D with shape (n_samples, {n_columns}), "
                         f"got shape {value.shape}")
    if not (np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)
            or value.dtype == np.bool_):
        raise TypeError(f"{name} must hold real numbers, got dtype {value.dtype}")
    _check_rows_and_columns(value.shape, name, n_columns, n_rows)
    csr = scipy.sparse.csr_matrix(value.tocsr())
    if not csr.has_canonical_format:
        csr = csr.copy()
        csr.sum_duplicates()
    if network_input is None or network_input:
        if csr.nnz:
            warn_if_unscaled(csr.data, name, floats=warn_float_scale)
    if dtype is None:
        dtype = csr.dtype if csr.dtype in SUPPORTED_DTYPES else np.float64
    given = csr.data
    if csr.dtype != dtype:
        with np.errstate(over="ignore"):
            data = given.astype(dtype)
        csr = scipy.sparse.csr_matrix((data, csr.indices, csr.indptr), shape=csr.shape)
    if csr.nnz and not all_finite(np.ascontiguousarray(csr.data)):
        if np.issubdtype(given.dtype, np.floating) and not np.isfinite(given).all():
            raise ValueError(f"{name} contains NaN or infinity")
        raise ValueError(f"{name} holds values too large for {np.dtype(dtype).name}")
    return csr


def check_labels(value, name, *, n_classes, n_rows=None):
    """Return integer class labels as a C-contiguous int64 (n,) array.

    Float arrays are accepted when every value is a whole number. Every
    label must lie in [0, n_classes): the kernels index with them."""
    arr = _as_numeric_array(value, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (n_samples,) integer labels, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one label")
    if n_rows is not None and arr.shape[0] != n_rows:
        raise ValueError(f"{name} must have {n_rows} labels to match X, got {arr.shape[0]}")
    if not np.issubdtype(arr.dtype, np.integer):
        if arr.dtype == np.bool_ or not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise TypeError(f"{name} must hold integer class labels, got dtype {arr.dtype}")
    # Compared before the cast: int64 would wrap 1e20 or 2**63 to nonsense.
    low, high = arr.min(), arr.max()
    if low < 0 or high >= n_classes:
        raise ValueError(
            f"{name} must lie in [0, {n_classes}) for a model with {n_classes} outputs; "
            f"got values from {_number(low)} to {_number(high)}"
        )
    return np.ascontiguousarray(arr, dtype=np.int64)


def check_targets_or_labels(value, name, *, n_outputs, n_rows, dtype, loss):
    """Integer class labels (n,) as int64, or targets (n, n_outputs) as dtype.

    A model with one output takes 1-D input as its targets, never as labels
    (which could only all be 0): see check_targets. For the cross-entropy
    losses, targets must lie in [0, 1]."""
    if np.ndim(value) == 1 and n_outputs > 1:
        return check_labels(value, name, n_classes=n_outputs, n_rows=n_rows)
    return check_target_range(check_targets(value, name, n_outputs=n_outputs, n_rows=n_rows,
                                            dtype=dtype), name, loss)


def check_targets(value, name, *, n_outputs, n_rows, dtype):
    """Return targets as a C-contiguous (n, n_outputs) array of dtype.

    For a model with one output, 1-D input of shape (n,) is its targets,
    returned as (n, 1): a regression's y as scikit-learn takes it. Raises
    as check_matrix."""
    if n_outputs == 1 and np.ndim(value) == 1:
        value = _as_numeric_array(value, name)
        if n_rows is not None and value.shape[0] != n_rows:
            raise ValueError(f"{name} must have {n_rows} values to match X, got {value.shape[0]}")
        value = value.reshape(-1, 1)
    return check_matrix(value, name, n_columns=n_outputs, dtype=dtype, n_rows=n_rows,
                        targets=True)


def check_target_range(targets, name, loss):
    """targets, checked to lie in the loss's target range (activations.LOSSES):
    [0, 1] for the cross-entropies, outside which they are no loss (a
    negative one-hot row gives a negative one), [0, inf) for the Poisson
    deviance, whose log y has no value below 0."""
    target_range = LOSSES[loss].target_range if loss in LOSSES else None
    if target_range is None or not targets.size:
        return targets
    low, high = target_range
    if targets.min() < low or targets.max() > high:
        expected = f">= {low:g}" if high == math.inf else f"in [{low:g}, {high:g}]"
        raise ValueError(f"{name} must hold targets {expected} for loss={loss!r} "
                         f"({LOSSES[loss].target_help}), got values from {targets.min()} "
                         f"to {targets.max()}")
    return targets
