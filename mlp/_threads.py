"""How many threads BLAS may use inside an mlp call, and nowhere else.

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

import os
import threading
from contextlib import contextmanager

from ._validation import check_int

_lock = threading.Lock()
_controllers = None


def _blas_controllers():
    global _controllers
    if _controllers is None:
        with _lock:
            if _controllers is None:
                # Importing the kernels loads scipy's BLAS, so it is visible below.
                from . import _kernels  # noqa: F401
                from threadpoolctl import ThreadpoolController

                ctl = ThreadpoolController()
                _controllers = [lc for lc in ctl.lib_controllers if lc.user_api == "blas"]
    return _controllers


def default_threads():
    """Threads a run uses when n_threads is None: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


# Below this many multiply-adds in the largest GEMM of a kernel call, one
# thread is used when the caller does not say: OpenBLAS threads hand off
# through spin-waits, and on a small GEMM (a batch of 30 through a 784x300
# layer is 7M) the hand-offs cost about what the second core gains, and far
# more as soon as another process wants the core (measured: 25 steps/s on 2
# threads against 400 on 1 with the machine loaded).
SMALL_GEMM_MACS = 1 << 24


def check_threads(n_threads):
    """None (choose automatically) or a positive int."""
    return check_int(n_threads, "n_threads", minimum=1, allow_none=True)


def resolve_threads(n_threads, rows, layer_sizes):
    """The thread count for a kernel call on `rows` rows: n_threads if given,
    else 1 for small GEMMs and all available cores for large ones."""
    n_threads = check_threads(n_threads)
    if n_threads is not None:
        return n_threads
    largest = max(a * b for a, b in zip(layer_sizes[:-1], layer_sizes[1:])) * rows
    return 1 if largest < SMALL_GEMM_MACS else default_threads()


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
    int; see resolve_threads). The user's settings are restored when the
    last overlapping mlp call returns."""
    global _active_calls, _saved_settings
    controllers = _blas_controllers()
    with _state_lock:
        if _active_calls == 0:
            _saved_settings = [(lc, lc.get_num_threads()) for lc in controllers]
        _active_calls += 1
        for lc in controllers:
            if lc.get_num_threads() != n_threads:
                lc.set_num_threads(n_threads)
    try:
        yield
    finally:
        with _state_lock:
            _active_calls -= 1
            if _active_calls == 0:
                for lc, before in _saved_settings:
                    if lc.get_num_threads() != before:
                        lc.set_num_threads(before)
                _saved_settings = []
