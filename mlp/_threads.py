"""BLAS thread control (placeholder, replaced below)."""
import contextlib

def blas_threads(n_threads):
    return contextlib.nullcontext()
