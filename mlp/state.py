"""Run state: what training leaves on a model, as plain data.

:class:`History` (what happened during ``mlp.train()``, one entry per epoch)
and :class:`OptimizerState` (what an optimizer has built up on one model)
are the state a run carries over to the next and that a model file or a
training checkpoint stores (mlp/serialization.py). They sit below training
and serialization and above the optimizers, and know nothing of either:
``OptimizerState.optimizer`` is any configuration with ``state_buffers``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from . import optimizers

__all__ = ["History", "OptimizerState"]


@dataclass
class History:
    """What happened during :func:`train`, one entry per epoch (or, when
    sampling with replacement by iterations, per epoch's worth of steps).

    Attributes
    ----------
    steps : list of int
        Steps done at the end of the epoch, counted over every run of the
        model's optimizer (a second ``train()`` call continues the count).
    loss : list of float
        Mean per-sample training loss over the epoch's batches (the data
        loss, without weight decay, with dropout as trained).
    val_accuracy : list of float
        Validation accuracy at the end of the epoch (when validation data was
        given). In ``model.history``, None for the epochs of runs without it.
    time : list of float
        Seconds from the start of the run to the end of the epoch (a resumed
        run counts its time before the checkpoint). ``model.history`` offsets
        each run's times by the previous runs' total: they add up the runs'
        durations, leaving out the time between runs.
    stopped_early : bool
    best_step : int or None
        With patience: the step whose parameters were kept.
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

    def extend(self, other):
        """Append another run's entries (its times offset by this one's total).
        Where only one of the runs was validated, the other's epochs get None."""
        offset = self.total_time
        if self.val_accuracy or other.val_accuracy:
            self.val_accuracy += [None] * (len(self.steps) - len(self.val_accuracy))
            self.val_accuracy += other.val_accuracy + [None] * (
                len(other.steps) - len(other.val_accuracy))
        self.steps += other.steps
        self.loss += other.loss
        self.time += [offset + t for t in other.time]
        self.stopped_early = other.stopped_early
        self.best_step = other.best_step if other.best_step is not None else self.best_step

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, data):
        """The inverse of to_dict; ValueError for anything to_dict does not
        write (a file's History is read through here)."""
        if not isinstance(data, dict) or not set(data) <= {f.name for f in fields(cls)}:
            raise ValueError(f"a History is a dict of {[f.name for f in fields(cls)]}")
        history = cls(**data)

        def finite(value):
            try:
                return math.isfinite(value)
            except OverflowError:  # an int past float's range
                return False

        def numbers(values, kinds, allow_none=False):
            return isinstance(values, list) and all(
                (v is None and allow_none) or (isinstance(v, kinds) and not isinstance(v, bool)
                                               and finite(v)) for v in values)

        if not (numbers(history.steps, int) and numbers(history.loss, (int, float))
                and numbers(history.time, (int, float))
                and numbers(history.val_accuracy, (int, float), allow_none=True)):
            raise ValueError("History entries must be lists of finite numbers")
        if not len(history.steps) == len(history.loss) == len(history.time) \
                or len(history.val_accuracy) > len(history.steps):
            raise ValueError("History's steps, loss and time must have one entry per epoch")
        if not isinstance(history.stopped_early, bool) or not (
                history.best_step is None or (isinstance(history.best_step, int)
                                              and not isinstance(history.best_step, bool))):
            raise ValueError("History's stopped_early must be a bool and best_step an int or None")
        return history


@dataclass
class OptimizerState:
    """What an optimizer has built up on one model.

    Attributes
    ----------
    optimizer : one of mlp.optimizers.OPTIMIZERS (SGD, Adam, RMSprop, Adagrad)
        The configuration the state belongs to.
    step : int
        Steps taken so far (Adam's t; schedules and History count from it).
    buffers : dict of str to ndarray
        Per-parameter state (``optimizer.state_buffers``), each laid out like
        the model's flat parameter array and of its dtype.
    """
    optimizer: object
    step: int = 0
    buffers: dict = field(default_factory=dict)

    @classmethod
    def fresh(cls, optimizer, n_params, dtype):
        return cls(optimizer, 0, optimizer.initial_state(n_params, dtype))

    def kernel_buffers(self):
        """The state buffers in the order the kernel's rule takes them
        (``_kernels.TrainingRun``'s state): the optimizer's state_buffers."""
        return tuple(self.buffers[name] for name in self.optimizer.state_buffers)

    def copy(self):
        return OptimizerState(self.optimizer, self.step,
                              {k: v.copy() for k, v in self.buffers.items()})


# mlp.optimizers.OptimizerState, where this class lived before: optimizers
# sits below this module and cannot import it, so the name is set from here
# (mlp/__init__.py imports this module, so it is there whenever mlp is).
optimizers.OptimizerState = OptimizerState
