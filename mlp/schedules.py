"""Learning-rate schedules: the factor the optimizer's learning rate is
multiplied by at each step.

A schedule is any callable ``schedule(step, total_steps) -> factor``, where
step counts from 0 and total_steps is the length of the run. ``train()``
evaluates it at every step and hands the kernel the per-step rates. The
named ones:

- ``"constant"``: 1.
- ``"linear"``: from 1 down to 0 at the end of the run.
- ``"cosine"``: half a cosine from 1 down to 0.
- ``"step"``: 1, then 0.1 after half the run and 0.01 after three quarters.

``warmup`` prepends a linear ramp from 0 (exclusive) to the schedule's
start: ``warmup`` steps, or a fraction of the run when it is below 1. The
decay then runs over the steps after the warm-up.

To add a schedule: a function here and an entry in SCHEDULES.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from ._validation import spoken


def constant(step, total_steps):
    """1 at every step."""
    return 1.0


def linear(step, total_steps):
    """From 1 down to 0 at the end of the run: ``max(0, 1 - step / total_steps)``."""
    return max(0.0, 1.0 - step / total_steps)


def cosine(step, total_steps):
    """Half a cosine from 1 down to 0 at the end of the run:
    ``0.5 * (1 + cos(pi * min(step / total_steps, 1)))``."""
    return 0.5 * (1.0 + math.cos(math.pi * min(step / total_steps, 1.0)))


def step(step, total_steps):
    """1, then 0.1 from half the run and 0.01 from three quarters of it."""
    progress = step / total_steps
    return 1.0 if progress < 0.5 else (0.1 if progress < 0.75 else 0.01)


SCHEDULES = {"constant": constant, "linear": linear, "cosine": cosine, "step": step}

# Every schedule, a callable given too, takes and returns the same: said once.
for _schedule in SCHEDULES.values():
    _schedule.__doc__ = (_schedule.__doc__ or "") + """

    Parameters
    ----------
    step : int
        The step, counted from 0 after any warm-up; a train() call that
        continues the model's optimizer counts on from its earlier calls.
    total_steps : int
        The step count at the end of this call, from the same origin, >= 1.

    Returns
    -------
    float
        The factor the learning rate is multiplied by at `step`.
    """
del _schedule


def check_schedule(schedule, name="lr_schedule"):
    """A schedule name or a callable; returns the callable."""
    if callable(schedule):
        return schedule
    if isinstance(schedule, str) and schedule in SCHEDULES:
        return SCHEDULES[schedule]
    if not isinstance(schedule, str):
        raise TypeError(f"{name} must be one of {sorted(SCHEDULES)} or a callable "
                        f"schedule(step, total_steps) -> factor; got {schedule!r}")
    raise ValueError(f"{name} must be one of {sorted(SCHEDULES)} or a callable "
                     f"schedule(step, total_steps) -> factor; got {schedule!r}")


def check_warmup(warmup, name="warmup"):
    """warmup is a number of steps (an int >= 0) or a fraction of the run in [0, 1)."""
    name = spoken(name)
    if isinstance(warmup, (bool, np.bool_)) or not isinstance(warmup, numbers.Real):
        raise TypeError(f"{name} must be a number of steps or a fraction of the run, got {warmup!r}")
    if not math.isfinite(warmup) or warmup < 0:
        raise ValueError(f"{name} must be >= 0, got {warmup!r}")
    if isinstance(warmup, numbers.Integral) or warmup >= 1:
        if warmup != int(warmup):
            raise ValueError(f"{name} >= 1 counts steps and must be a whole number, got {warmup!r}")
        return int(warmup)
    return float(warmup)


def warmup_steps(warmup, total_steps):
    """Steps of warm-up in a run of total_steps."""
    steps = warmup if isinstance(warmup, int) else round(warmup * total_steps)
    return min(steps, total_steps)


def learning_rates(base_rate, schedule, first_step, n_steps, total_steps, warmup=0):
    """The rates of steps first_step .. first_step + n_steps - 1 of a run of total_steps.

    Returns a float64 ndarray (n_steps,). Raises ValueError naming the step
    when the schedule returns anything but a finite number >= 0."""
    ramp = warmup_steps(warmup, total_steps)
    rates = np.empty(n_steps)
    for i in range(n_steps):
        step = first_step + i
        if step < ramp:
            factor = (step + 1) / ramp
        else:
            factor = schedule(step - ramp, max(total_steps - ramp, 1))
            if isinstance(factor, (bool, np.bool_)) or not isinstance(factor, numbers.Real) \
                    or not math.isfinite(factor) or factor < 0:
                raise ValueError(
                    f"lr_schedule returned {factor!r} at step {step} of {total_steps}; a schedule "
                    f"must return a finite factor >= 0")
        rates[i] = base_rate * factor
    return rates
