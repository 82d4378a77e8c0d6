"""How many threads an mlp call uses, and BLAS limits that hold only inside it.

Multi-threaded work (train(), and forward/predict/evaluate on calls big
enough to gain from it, see inference_threads) runs on mlp's own worker threads, each calling a single-threaded BLAS, so
every mlp call limits BLAS itself to one thread and no BLAS pool is woken.

numpy and scipy each bundle an OpenBLAS with its own thread pool. The kernels
call scipy's (through scipy.linalg.cython_blas); user code between mlp calls
usually calls numpy's. Limits set here apply for the duration of one mlp
call and are restored when it returns, so they never leak into the user's
own numpy code.

threadpoolctl finds the libraries once; each call then costs a couple of
direct get/set calls into the libraries (microseconds), not a scan of the
loaded libraries, so it is cheap enough for batch-1 inference.
"""
from __future__ import annotations

import functools
import os
import threading
import time
from contextlib import contextmanager

from ._validation import check_int

_lock = threading.Lock()
_controllers = None


class _Pool:
    """Get and set one BLAS library's thread count.

    For OpenBLAS this calls the library's own functions, found once. That is
    both cheaper (a ctypes call, not a symbol search per call) and right for
    mlp: threadpoolctl lets only the first Python thread that ever set an
    OpenBLAS limit change it again, silently ignoring the others, and mlp is
    called from any thread (it serialises its own changes, see below).
    """

    def __init__(self, controller):
        self._controller = controller
        self._get = self._set = None
        if controller.internal_api == "openblas" and getattr(controller, "threading_layer", "") != "openmp":
            for prefix in ("", "scipy_"):
                for suffix in ("", "64_", "_64"):
                    getter = getattr(controller.dynlib, f"{prefix}openblas_get_num_threads{suffix}", None)
                    setter = getattr(controller.dynlib, f"{prefix}openblas_set_num_threads{suffix}", None)
                    if getter is not None and setter is not None:
                        self._get, self._set = getter, setter
                        return

    def get(self):
        return self._get() if self._get is not None else self._controller.get_num_threads()

    def set(self, n_threads):
        if self._set is not None:
            self._set(n_threads)
        else:
            self._controller.set_num_threads(n_threads)


def _blas_controllers():
    global _controllers
    if _controllers is None:
        with _lock:
            if _controllers is None:
                # Importing the kernels loads scipy's BLAS, so it is visible below.
                from . import _kernels  # noqa: F401
                from threadpoolctl import ThreadpoolController

                ctl = ThreadpoolController()
                _controllers = [_Pool(lc) for lc in ctl.lib_controllers if lc.user_api == "blas"]
    return _controllers


def default_threads():
    """Threads a run uses when n_threads is None: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


# Calls that take milliseconds, the ones a user interleaves with numpy
# (forward, predict, loss, gradients, training_step), default to 1 BLAS
# thread. Measured (2-core machine, numpy's and scipy's OpenBLAS side by
# side; bench/bench_blas_handoff.py and bench/bench_blas_mix.py): OpenBLAS
# workers spin for ~0.1 s after a multi-threaded call, so a numpy matmul
# right after a 2-thread mlp call ran up to 12x slower, and an mlp call right
# after a numpy one 1.8x slower; with mlp on 1 thread neither slowed the
# other.
#
# Training runs on mlp's own workers instead (mlp/_parallel.h), with BLAS on
# one thread: each worker makes single-threaded BLAS calls on its share of
# every layer. They wait between calls in mlp's own pool, spinning for at
# most 0.1 ms before they sleep, so no BLAS pool is ever woken by training
# and nothing keeps a core busy after it. Below this many multiply-adds a
# step (a few microseconds of work) the barriers between layers cost more
# than a second core gains.
SMALL_STEP_MACS = 1 << 18
# But numpy's own pool may still be spinning (for ~0.1 s) from the user's
# last numpy call, and then two workers share the cores with it: a loop of
# numpy matmuls and 20-step train() calls on 2 workers ran 2x slower than
# its parts apart (5x before the workers' barrier yielded sooner). A run
# shorter than this many multiply-adds in all (about 0.4 s on one core)
# would spend much of its time in that window, so by default it runs on
# one worker; a longer one pays it at most once.
SHORT_RUN_MACS = 1 << 32


def check_threads(n_threads):
    """None (choose automatically) or a positive int."""
    return check_int(n_threads, "n_threads", minimum=1, allow_none=True)


def call_threads(n_threads):
    """Threads for a short call (loss, gradients, one step): n_threads, else 1."""
    n_threads = check_threads(n_threads)
    return 1 if n_threads is None else n_threads


# Inference (forward, predict, predict_proba, evaluate, the estimators'
# predict) runs on mlp's own workers too, each on a single-threaded BLAS, so
# it wakes no BLAS pool. The workers claim blocks of rows as they come
# (_kernels.infer): one hand-off per call, no barrier, and a worker that
# has not started by the time the caller has done every block is told not
# to (_parallel.h, mlp_parallel_run_optional), so on a host busier than
# its cores a call costs what it costs on one thread instead of waiting
# for a core. (Two workers sharing each layer's units, with a barrier per
# layer, were 3-7x slower than one on such a host: bench/README.md.)
# Up to 7 rows the workers claim blocks of the first layer's units instead
# (each then reads only its blocks' weights). Left to choose, a call of
# fewer multiply-adds than this (about 10 us on one core) runs on the
# calling thread alone, a bigger one on every core: from one row of
# 784-300-100-10 (266,200), which 2 workers took in 0.76x the time of one
# on a 2-core Zen 4 partly busy with other jobs, 1.0x when fully busy.
INFERENCE_MIN_MACS = 1 << 18


def inference_threads(n_threads, rows, layer_sizes):
    """Worker threads for inference on `rows` rows of a network of
    `layer_sizes`: n_threads if given (at most the kernels' MAX_WORKERS),
    else 1 for a call of fewer than INFERENCE_MIN_MACS multiply-adds and all
    available cores for a bigger one."""
    global _max_workers
    if n_threads is not None:
        return check_threads(n_threads)
    if rows * _macs_per_row(tuple(layer_sizes)) < INFERENCE_MIN_MACS:
        return 1
    if _max_workers is None:
        # Imported once: the import statement costs about a microsecond a
        # call, and a one-row call takes ten.
        from ._kernels import MAX_TRAIN_WORKERS

        _max_workers = MAX_TRAIN_WORKERS
    return min(_recent_default_threads(), _max_workers)


_max_workers = None
_cores_seen = (0.0, 1)  # (when, default_threads() then)


def _recent_default_threads():
    """default_threads(), asked again at most once a second: the system
    call takes about a microsecond, a tenth of a one-row forward."""
    global _cores_seen
    now = time.monotonic()
    if now - _cores_seen[0] > 1.0 or _cores_seen[0] == 0.0:
        _cores_seen = (now, default_threads())
    return _cores_seen[1]


@functools.lru_cache(maxsize=64)
def _macs_per_row(layer_sizes):
    """Multiply-adds of one row through a network of layer_sizes (a tuple);
    remembered, since inference asks on every call."""
    return sum(a * b for a, b in zip(layer_sizes[:-1], layer_sizes[1:]))


def train_workers(n_threads, rows, layer_sizes, steps=None):
    """Worker threads for a training run of `steps` steps (None: a long run)
    on batches of `rows`: n_threads if given (at most MAX_TRAIN_WORKERS),
    else all available cores unless a step, or the whole run, is too small
    to gain from them."""
    from ._kernels import MAX_TRAIN_WORKERS

    n_threads = check_threads(n_threads)
    if n_threads is not None:
        return min(n_threads, MAX_TRAIN_WORKERS)
    macs = rows * sum(a * b for a, b in zip(layer_sizes[:-1], layer_sizes[1:]))
    if macs < SMALL_STEP_MACS or (steps is not None and macs * steps < SHORT_RUN_MACS):
        return 1
    return min(default_threads(), MAX_TRAIN_WORKERS)


# BLAS thread counts are process-wide, and mlp calls may overlap (the
# kernels release the GIL). The first call in saves the user's settings and
# the last call out restores them, so overlapping calls can neither restore
# each other's limit nor leave one behind.
_state_lock = threading.Lock()
_active_calls = 0
_saved_settings = []


@contextmanager
def blas_threads(n_threads):
    """Run the body with every BLAS limited to n_threads threads (a positive
    int). The user's settings are restored when the
    last overlapping mlp call returns."""
    global _active_calls, _saved_settings
    controllers = _blas_controllers()
    with _state_lock:
        if _active_calls == 0:
            _saved_settings = [(pool, pool.get()) for pool in controllers]
        _active_calls += 1
        for pool in controllers:
            if pool.get() != n_threads:
                pool.set(n_threads)
    try:
        yield
    finally:
        with _state_lock:
            _active_calls -= 1
            if _active_calls == 0:
                for pool, before in _saved_settings:
                    if pool.get() != before:
                        pool.set(before)
                _saved_settings = []
