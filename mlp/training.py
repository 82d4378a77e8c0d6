"""Training: one SGD step, a full training run, and evaluation."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from . import _kernels
from ._threads import blas_threads, call_threads, check_threads, train_workers
from ._validation import (
    check_choice,
    check_int,
    check_labels,
    check_matrix,
    check_positive_float,
    check_seed,
)
from .model import Model, loss_code

SAMPLING = ("replacement", "shuffle")
LR_SCHEDULES = ("constant", "linear", "cosine")

# Steps per kernel call in train(): each call is one nogil run of this many
# steps, so Python (the progress bar, Ctrl-C) gets control a few times a
# second while costing well under 1% of the run.
_STEPS_PER_CALL = 200


def _check_model(model, name="model"):
    if not isinstance(model, Model):
        raise TypeError(f"{name} must be an mlp.Model, got {type(model).__name__}")
    return model


def _check_inputs_and_labels(model, X, y, X_name="X", y_name="y", for_training=False):
    # for_training: the training kernel widens float32 rows to a float64
    # model as it gathers them (so the data set is not copied), and checks
    # the rows it gathers for NaN and inf (so the data set is not scanned).
    widen = for_training and model.dtype == np.float64
    X = check_matrix(X, X_name, n_columns=model.n_inputs, dtype=None if widen else model.dtype,
                     finite=not for_training)
    y = check_labels(y, y_name, n_classes=model.n_outputs, n_rows=X.shape[0])
    return X, y


def training_step(model, X, Y, learning_rate, loss="mse", *, weight_decay=0.0):
    """One in-place SGD step on one batch through the fused kernel.

    Exactly ``p -= learning_rate / len(X) * grad_p`` for every parameter p,
    where grad_p is the gradient of ``model.loss(X, Y, loss)``. With
    weight_decay, weights (not biases) also lose ``learning_rate *
    weight_decay * W``, as PyTorch's SGD weight_decay does.

    X : (n, n_inputs); Y : (n, n_outputs) targets, or (n,) integer labels
    which are one-hot encoded. Returns the batch's summed loss before the step.
    """
    _check_model(model)
    code = loss_code(loss, model.output)
    learning_rate = check_positive_float(learning_rate, "learning_rate")
    weight_decay = _check_weight_decay(weight_decay, learning_rate)
    X = check_matrix(X, "X", n_columns=model.n_inputs, dtype=model.dtype)
    if np.ndim(Y) == 1:
        labels = check_labels(Y, "Y", n_classes=model.n_outputs, n_rows=X.shape[0])
        Y = np.zeros((X.shape[0], model.n_outputs), dtype=model.dtype)
        Y[np.arange(X.shape[0]), labels] = 1
    else:
        Y = check_matrix(Y, "Y", n_columns=model.n_outputs, dtype=model.dtype, n_rows=X.shape[0])
    with model._lock, blas_threads(1):
        total = _kernels.sgd_step(model._params, model._sizes, model._hidden_code,
                                  model._output_code, code, X, Y, learning_rate,
                                  weight_decay, model._workspace(X.shape[0]),
                                  X.shape[0] <= _kernels.FEATURE_MAJOR_MAX_BATCH)
    return float(total)


def _check_weight_decay(weight_decay, learning_rate):
    weight_decay = check_positive_float(weight_decay, "weight_decay", allow_zero=True)
    if learning_rate * weight_decay >= 1:
        raise ValueError(f"learning_rate * weight_decay must be below 1 (it scales the weights "
                         f"by 1 - their product each step); got {learning_rate * weight_decay}")
    return weight_decay


class Evaluation(NamedTuple):
    """Result of :func:`evaluate`."""
    accuracy: float
    correct: int


def evaluate(model, X, y, *, n_threads=None):
    """Classification accuracy of model on (X, y).

    X : (n, n_inputs); y : (n,) integer labels.
    Returns Evaluation(accuracy, correct): a float in [0, 1] and an int.
    """
    _check_model(model)
    threads = call_threads(n_threads)
    X, y = _check_inputs_and_labels(model, X, y)
    # X is checked once above; model.predict would check it again.
    with model._lock, blas_threads(1):
        predicted = model._forward_locked(X, threads).argmax(axis=1)
    correct = int(np.count_nonzero(predicted == y))
    return Evaluation(correct / len(y), correct)


@dataclass
class History:
    """What happened during :func:`train`.

    One entry per logging interval (an epoch, or an epoch's worth of steps
    when sampling with replacement):

    steps : total SGD steps done at the end of the interval.
    loss : mean per-sample training loss over the interval's batches.
    val_accuracy : validation accuracy at the end of the interval (when
        validation data was given).
    time : seconds since training started.
    """
    steps: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)
    time: list = field(default_factory=list)
    stopped_early: bool = False
    best_step: int | None = None

    @property
    def loss_curve_(self):
        return list(self.loss)

    @property
    def total_time(self):
        return self.time[-1] if self.time else 0.0


def train(model, X, y, *, iterations=None, epochs=None, batch_size=30, learning_rate=2.0,
          loss="mse", sampling="replacement", seed=None, validation=None, progress=True,
          lr_schedule="constant", weight_decay=0.0, patience=None, n_threads=None):
    """Train model in place with minibatch SGD.

    X : (n, n_inputs) array-like, converted once to the model's dtype, except
        float32 data for a float64 model: its rows are widened as batches are
        gathered, so the data set is not copied.
    y : (n,) integer labels in [0, n_outputs); one-hot encoded in the kernel.
    iterations / epochs : give exactly one. An epoch is ceil(n / batch_size) steps.
    sampling : "replacement" draws every batch uniformly with replacement (the
        notebook's get_batch); "shuffle" walks a fresh permutation each epoch.
    lr_schedule : "constant", or "linear" / "cosine" decay from learning_rate
        to 0 over the run, updated every few hundred steps.
    weight_decay : L2 penalty on the weights (not the biases): every step
        also subtracts learning_rate * weight_decay * W, as in PyTorch's SGD.
        The losses in the History are the data loss alone.
    validation : optional (X_val, y_val), scored at the end of every interval.
    patience : with validation, stop after this many intervals without a new
        best validation accuracy and restore the best parameters.
    n_threads : worker threads for the run, each taking a share of every
        layer's units (at most 64); None uses all cores unless a step, or
        the whole run, is too small to gain from them (mlp/_threads.py). BLAS runs single-threaded
        inside each worker, so the run wakes no BLAS thread pool.
    Returns a History.
    """
    _check_model(model)
    code = loss_code(loss, model.output)
    X, y = _check_inputs_and_labels(model, X, y, for_training=True)
    n = X.shape[0]
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    learning_rate = check_positive_float(learning_rate, "learning_rate")
    weight_decay = _check_weight_decay(weight_decay, learning_rate)
    check_choice(sampling, SAMPLING, "sampling")
    check_choice(lr_schedule, LR_SCHEDULES, "lr_schedule")
    rng = np.random.default_rng(check_seed(seed))
    iterations = check_int(iterations, "iterations", minimum=1, allow_none=True)
    epochs = check_int(epochs, "epochs", minimum=1, allow_none=True)
    if (iterations is None) == (epochs is None):
        raise ValueError("give exactly one of iterations or epochs")
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = iterations if iterations is not None else epochs * steps_per_epoch
    if validation is not None:
        if not isinstance(validation, (tuple, list)) or len(validation) != 2:
            raise TypeError("validation must be a pair (X_val, y_val)")
        X_val, y_val = _check_inputs_and_labels(model, *validation, "validation[0]", "validation[1]")
    patience = check_int(patience, "patience", minimum=1, allow_none=True)
    n_threads = check_threads(n_threads)
    if patience is not None and validation is None:
        raise ValueError("patience needs validation data to watch")

    history = History()
    work = np.empty(_kernels.workspace_size(model._sizes, batch_size), dtype=model.dtype)
    batch_losses = np.empty(_STEPS_PER_CALL)
    initial = model._params.copy()
    last_good = initial.copy()
    best = (-1.0, None)
    stale = 0
    workers = train_workers(n_threads, batch_size, model.layer_sizes, total_steps)
    bar = _progress_bar(total_steps, progress)
    start = time.perf_counter()
    done = 0
    try:
        with model._lock, blas_threads(1):
            while done < total_steps:
                # One logging interval: an epoch (or an epoch's worth of steps).
                interval = min(steps_per_epoch, total_steps - done)
                if sampling == "shuffle":
                    order = rng.permutation(n)[: min(n, interval * batch_size)]
                else:
                    order = rng.integers(0, n, size=interval * batch_size, dtype=np.int64)
                loss_sum = 0.0
                for first in range(0, interval, _STEPS_PER_CALL):
                    steps = min(_STEPS_PER_CALL, interval - first)
                    chunk = order[first * batch_size:(first + steps) * batch_size]
                    lr = _scheduled(learning_rate, lr_schedule, done + steps / 2, total_steps)
                    status = _kernels.train_steps(
                        model._params, model._sizes, model._hidden_code, model._output_code,
                        code, X, y, chunk, batch_size, lr, weight_decay, work, batch_losses,
                        batch_size <= _kernels.FEATURE_MAJOR_MAX_BATCH, workers)
                    if status < 0:
                        model._params[...] = initial
                        raise ValueError(
                            f"X[{-1 - status}] holds NaN, infinity or a value too large for "
                            f"{model.dtype.name}; the model is left as it was before train()")
                    chunk_loss = float(batch_losses[:steps].sum())
                    loss_sum += chunk_loss
                    done += steps
                    if bar is not None:
                        bar.update(steps)
                        bar.set_postfix(loss=f"{chunk_loss / len(chunk):.4f}", refresh=False)
                mean_loss = loss_sum / len(order)
                if not (np.isfinite(mean_loss) and _kernels.all_finite(model._params)):
                    model._params[...] = last_good
                    raise FloatingPointError(
                        f"training diverged between steps {done - interval} and {done} "
                        f"(loss {mean_loss}); the model keeps its parameters from step "
                        f"{done - interval}. Lower learning_rate.")
                last_good[...] = model._params
                history.steps.append(done)
                history.loss.append(mean_loss)
                if validation is not None:
                    predicted = model._forward_locked(X_val, workers).argmax(axis=1)
                    acc = float(np.count_nonzero(predicted == y_val)) / len(y_val)
                    history.val_accuracy.append(acc)
                    if bar is not None:
                        bar.set_postfix(loss=f"{mean_loss:.4f}", val_acc=f"{acc:.4f}")
                    if acc > best[0]:
                        best, stale = (acc, model._params.copy()), 0
                        history.best_step = done
                    else:
                        stale += 1
                history.time.append(time.perf_counter() - start)
                if patience is not None and stale >= patience:
                    history.stopped_early = True
                    break
    finally:
        if bar is not None:
            bar.close()
    if patience is not None and best[1] is not None:
        model._params[...] = best[1]
    return history


def _scheduled(learning_rate, schedule, step, total_steps):
    """The learning rate at `step` (the middle of a kernel call) of total_steps."""
    progress = step / total_steps
    if schedule == "linear":
        return learning_rate * (1 - progress)
    if schedule == "cosine":
        return learning_rate * 0.5 * (1 + math.cos(math.pi * progress))
    return learning_rate


def _progress_bar(total, progress):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="step", dynamic_ncols=True, mininterval=0.2)
