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


def check_threads(n_threads):
    """None (leave BLAS as configured) or a positive int."""
    return check_int(n_threads, "n_threads", minimum=1, allow_none=True)


@contextmanager
def blas_threads(n_threads):
    """Run the body with every BLAS limited to n_threads threads.

    n_threads=None leaves BLAS as the user configured it (threadpoolctl,
    OPENBLAS_NUM_THREADS, ...). The previous settings are restored on exit.
    """
    n_threads = check_threads(n_threads)
    if n_threads is None:
        yield
        return
    saved = []
    for lc in _blas_controllers():
        before = lc.get_num_threads()
        if before != n_threads:
            lc.set_num_threads(n_threads)
            saved.append((lc, before))
    try:
        yield
    finally:
        for lc, before in saved:
            lc.set_num_threads(before)
