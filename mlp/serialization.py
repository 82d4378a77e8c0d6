"""The model file: one writer and one reader of mlp's .npz + JSON format.

A model file is an .npz archive (written without pickle, read without
unpickling anything) holding the parameters as ``W<l>`` and ``b<l>``, a
``meta`` array of UTF-8 JSON (configuration, optimizer description and step,
History, batch sampler), the optimizer's buffers as ``optimizer.<name>`` and,
for a training checkpoint, the run's place as ``meta["checkpoint"]`` with its
arrays as ``checkpoint.<name>``. :meth:`Model.save` and :meth:`Model.load`
(attached to :class:`mlp.Model` here) and training's checkpoints
(mlp/training.py) all go through :func:`write_model_file` and
:func:`read_model_file`.

Layer (c), with mlp/state.py: above the model and the optimizers, below
training (see tests/test_architecture.py).
"""
from __future__ import annotations

import json
import os

import numpy as np

from . import _kernels
from ._files import NpzReader, atomic_write
from ._validation import check_choice, check_layer_sizes, check_path, check_writable
from .data.info import DataInfo
from .model import (COMPUTE_DTYPES, HIDDEN_ACTIVATIONS, INITIALISERS, OUTPUT_ACTIVATIONS,
                    Model)
from .optimizers import optimizer_from_dict, optimizer_to_dict
from .state import History, OptimizerState

FORMAT_NAME = "mlp.Model"
FORMAT_VERSION = 3
# Version 1 files (parameters only) and 2 (no description of the data) still
# load; a version 3 file may hold meta["data"], the model's DataInfo.
READABLE_VERSIONS = (1, 2, 3)


def save(model, path):
    """Write the model to `path` as an .npz archive with JSON metadata.

    Besides the parameters, the file holds the optimizer state, the
    training History and the batch sampler, so that training can go on
    from it. No pickle is involved. The file is written to a temporary
    name and renamed into place, so a failure never leaves a
    half-written model where a good one stood; it gets the permissions
    the umask gives a new file.

    Parameters
    ----------
    path : str or os.PathLike
        Used exactly as given (no ``.npz`` is appended). Its directory
        must exist.

    Raises
    ------
    TypeError
        If path is not a str or os.PathLike.
    ValueError
        If a parameter is NaN or infinite (:meth:`load` would refuse
        such a file), or `path` is empty, a directory, or in a directory
        that is missing or cannot be written.
    OSError
        If the write fails all the same (e.g. a full disk); whatever
        stood at `path` is left as it was.
    """
    write_model_file(model, check_writable(path))


def load(path):
    """Read a model written by :meth:`save` (or a training checkpoint).
    Never unpickles anything.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    Model
        With the saved parameters, dtype, compute_dtype (None for files
        that do not say), optimizer state, History and batch sampler, so
        that :func:`mlp.train` can go on from them.

    Raises
    ------
    TypeError
        If path is not a str or os.PathLike.
    FileNotFoundError
        If there is no file at `path`, or `path` is a directory.
    ValueError
        For any file that is not a complete, intact model file (not a
        zip archive, unknown format version, damaged or missing arrays,
        NaN or infinite parameters): every size the file declares is
        checked against its real length before anything is allocated.
    OSError
        If the file exists but cannot be read.
    """
    return read_model_file(path)[0]


def write_model_file(model, path, checkpoint=None):
    """Write model to path (checked); for a training checkpoint,
    checkpoint = (JSON-ready dict, {name: array}) is stored under
    "checkpoint" and "checkpoint.<name>"."""
    if not _kernels.all_finite(model.parameters):
        raise ValueError(
            f"cannot save a model whose parameters hold NaN or infinity "
            f"({_non_finite_summary(model)}); Model.load would refuse the file. This is "
            f"what a diverged training run leaves: train again with a lower learning_rate.")
    meta = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "layer_sizes": list(model.layer_sizes),
        "activation": model.activation,
        "output": model.output,
        "init": model.init,
        "dtype": model.dtype.name,
    }
    if model.compute_dtype is not None:
        # Absent means None: the files of models computing in their dtype,
        # and those written before compute_dtype existed, are alike.
        meta["compute_dtype"] = model.compute_dtype
    arrays = {}
    state = model.optimizer_state
    if state is not None:
        meta["optimizer"] = {"config": optimizer_to_dict(state.optimizer), "step": state.step,
                             "buffers": sorted(state.buffers)}
        for name, buffer in state.buffers.items():
            arrays[f"optimizer.{name}"] = buffer
    if model.history is not None:
        meta["history"] = model.history.to_dict()
    if model.data_info is not None:
        meta["data"] = model.data_info.to_dict()
    generator, dropout_seed = model.sampling_state
    if generator is not None:
        meta["sampling_rng"] = generator.bit_generator.state
        meta["dropout_seed"] = dropout_seed
    if checkpoint is not None:
        meta["checkpoint"] = checkpoint[0]
        arrays.update({f"checkpoint.{name}": value for name, value in checkpoint[1].items()})
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    for l, (w, b) in enumerate(zip(model.weights, model.biases)):
        arrays[f"W{l}"] = w
        arrays[f"b{l}"] = b
    atomic_write(path, lambda fh: np.savez(fh, **arrays))


def read_model_file(path):
    """(model, checkpoint): checkpoint is None, or (dict, {name: array}) as
    write_model_file stored it."""
    path = check_path(path)
    if os.path.isdir(path):
        raise FileNotFoundError(f"{path!r} is a directory, not a model file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no model file at {path!r}")
    try:
        with NpzReader(path) as archive:
            return _from_archive(archive)
    except ValueError as exc:
        raise ValueError(f"{path!r} is not a model saved by mlp.Model.save: {exc}") from None


def _from_archive(archive):
    names = archive.names
    if "meta" not in names or archive.header("meta")[1] != np.uint8 \
            or len(archive.header("meta")[0]) != 1:
        raise ValueError("missing metadata")
    meta = _parse_meta(archive.read("meta").tobytes())
    if meta.get("format") != FORMAT_NAME:
        raise ValueError("metadata does not describe an mlp.Model")
    if meta.get("version") not in READABLE_VERSIONS:
        raise ValueError(f"format version {meta.get('version')!r}, this mlp reads "
                         f"{', '.join(map(str, READABLE_VERSIONS))}")
    try:
        sizes = check_layer_sizes(meta["layer_sizes"])
        activation = check_choice(meta["activation"], HIDDEN_ACTIVATIONS, "activation")
        output = check_choice(meta["output"], OUTPUT_ACTIVATIONS, "output")
        # Only the two names save() writes: np.dtype() would parse anything.
        dtype = np.dtype(check_choice(meta["dtype"], ("float32", "float64"), "dtype"))
        init = meta.get("init", "normal")
        compute_dtype = meta.get("compute_dtype")
        if compute_dtype is not None:
            check_choice(compute_dtype, COMPUTE_DTYPES, "compute_dtype")
            if dtype != np.float32:
                raise ValueError(f"compute_dtype {compute_dtype!r} with dtype {dtype.name}")
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"bad metadata ({exc})") from None
    expected = {}
    for l, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        expected[f"W{l}"] = (fan_out, fan_in)
        expected[f"b{l}"] = (fan_out,)
    training = [name for name in names if name.startswith(("optimizer.", "checkpoint."))]
    extra = set(names) - {"meta"} - set(expected) - set(training)
    if extra:
        raise ValueError(f"unexpected arrays {sorted(extra)}")
    # Every array's size is checked against the file before the model,
    # sized from the metadata, is allocated.
    for name, shape in expected.items():
        got_shape, got_dtype = archive.header(name)
        if got_shape != shape or got_dtype != dtype:
            raise ValueError(f"array {name} has shape {got_shape} and dtype {got_dtype}, "
                             f"expected {shape} and {dtype}")
    model = Model.allocate(sizes, activation=activation, output=output,
                           init=init if init in INITIALISERS else "normal", dtype=dtype,
                           compute_dtype=compute_dtype)
    for l, (w, b) in enumerate(zip(model.weights, model.biases)):
        archive.read(f"W{l}", out=w)
        archive.read(f"b{l}", out=b)
    if not _kernels.all_finite(model.parameters):
        raise ValueError(f"parameters hold NaN or infinity ({_non_finite_summary(model)})")
    if "data" in meta:
        model.data_info = _data_info(meta["data"], sizes)
    # The training state's arrays: each read is the size of its member,
    # whose size was checked against the file.
    arrays = {name: archive.read(name) for name in training}
    known = {"meta"} | set(expected)
    known |= _restore_training_state(model, meta, arrays, ValueError)
    checkpoint = None
    if "checkpoint" in meta:
        prefix = "checkpoint."
        checkpoint = (meta["checkpoint"], {name[len(prefix):]: value for name, value
                                           in arrays.items() if name.startswith(prefix)})
        known |= {prefix + name for name in checkpoint[1]}
    extra = set(names) - known
    if extra:
        raise ValueError(f"unexpected arrays {sorted(extra)}")
    return model, checkpoint


def _restore_training_state(model, meta, arrays, bad):
    """Optimizer state, History and sampling generator from a file's
    metadata and arrays onto model; returns the array names it used."""
    used = set()
    if "optimizer" in meta:
        description = meta["optimizer"]
        try:
            optimizer = optimizer_from_dict(description["config"])
            step = description["step"]
            names = description["buffers"]
        except (KeyError, TypeError, ValueError) as exc:
            raise bad(f"bad optimizer state ({exc})") from None
        # The kernel counts steps in int64.
        if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step < 2 ** 62 \
                or not isinstance(names, list) or not all(isinstance(n, str) for n in names) \
                or sorted(names) != sorted(optimizer.state_buffers):
            raise bad("bad optimizer state (step or buffer names)")
        state = OptimizerState(optimizer, step, {})
        for name in names:
            key = f"optimizer.{name}"
            buffer = arrays.get(key)
            if buffer is None or buffer.shape != (model.n_params,) or buffer.dtype != model.dtype:
                raise bad(f"array {key} is missing or not ({model.n_params},) {model.dtype}")
            if not np.isfinite(buffer).all():
                raise bad(f"array {key} holds NaN or infinity")
            state.buffers[name] = np.array(buffer)
            used.add(key)
        model.optimizer_state = state
    if "history" in meta:
        try:
            history = History.from_dict(meta["history"])
        except (TypeError, ValueError) as exc:
            raise bad(f"bad training history ({exc})") from None
        model.history = history
    if "sampling_rng" in meta:
        try:
            generator = np.random.PCG64()
            generator.state = meta["sampling_rng"]
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            # OverflowError: a negative or too large integer for its uint64.
            raise bad(f"bad sampling generator state ({exc})") from None
        dropout_seed = meta.get("dropout_seed", 0)
        if not isinstance(dropout_seed, int) or not 0 <= dropout_seed < 2 ** 64:
            raise bad("bad dropout seed")
        model.sampling_state = (np.random.Generator(generator), dropout_seed)
    return used


def _data_info(value, sizes):
    """The DataInfo of meta["data"], checked against the layer sizes."""
    try:
        info = DataInfo.from_dict(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad description of the data ({exc})") from None
    if info.n_inputs != sizes[0] or info.n_classes > sizes[-1]:
        raise ValueError(f"the data description ({info.n_inputs} inputs, {info.n_classes} "
                         f"classes) does not fit layer sizes {list(sizes)}")
    return info


def _parse_meta(raw):
    """The metadata dict from its JSON bytes; ValueError for anything else."""
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        # ValueError covers malformed JSON and integers too long to convert;
        # RecursionError, JSON nested deeper than Python's recursion limit.
        raise ValueError("metadata is not JSON") from None
    if not isinstance(meta, dict):
        raise ValueError("metadata does not describe an mlp.Model")
    return meta


def _non_finite_summary(model):
    """Which arrays hold NaN or infinity, e.g. "W0, b1: 12 of 2,410 parameters"."""
    names = [f"{p}{l}" for l, (w, b) in enumerate(zip(model.weights, model.biases))
             for p, a in (("W", w), ("b", b)) if not np.isfinite(a).all()]
    count = int(np.count_nonzero(~np.isfinite(model.parameters)))
    return f"{', '.join(names)}: {count:,} of {model.n_params:,} parameters"


# Model.save and Model.load, for users: defined here, beside the format, and
# attached to the class that sits below this module (mlp/__init__.py imports
# this module, so they are there whenever mlp.Model is).
def _save_method(self, path):
    save(self, path)


def _load_method(cls, path):
    return load(path)


_save_method.__doc__ = save.__doc__
_load_method.__doc__ = load.__doc__
_save_method.__name__ = _save_method.__qualname__ = "save"
_load_method.__name__ = "load"
_load_method.__qualname__ = "Model.load"
_save_method.__qualname__ = "Model.save"
Model.save = _save_method
Model.load = classmethod(_load_method)
