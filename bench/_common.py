"""Shared helpers for the benchmark scripts: timing, interleaving, tables, system info.

Nothing here changes the environment (no OPENBLAS_* variables are set or
unset); thread counts are set per call with threadpoolctl.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

# ---------------------------------------------------------------------------
# Threads
# ---------------------------------------------------------------------------

_CONTROLLER = None


def _controller():
    # Building a ThreadpoolController scans the loaded libraries; do it once
    # (after the imports the benchmarks need), then limit through it.
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER


def refresh_controller():
    """Forget the cached controller (call after importing a library with its own pool)."""
    global _CONTROLLER
    _CONTROLLER = None


@contextlib.contextmanager
def threads(n):
    """Limit every BLAS/OpenMP pool that threadpoolctl sees to n threads."""
    if n is None:
        yield
        return
    with _controller().limit(limits=int(n)):
        yield


def set_torch_threads(torch, n):
    if torch is not None and n is not None and torch.get_num_threads() != n:
        torch.set_num_threads(int(n))


def import_torch():
    """torch, or None when it is not importable (the torch rows are then skipped)."""
    try:
        import torch
    except Exception as exc:  # ImportError, or a broken install
        print(f"[torch unavailable: {type(exc).__name__}: {exc}] -- torch rows skipped", file=sys.stderr)
        return None
    refresh_controller()
    return torch


# ---------------------------------------------------------------------------
# Timing and statistics
# ---------------------------------------------------------------------------

now = time.perf_counter


def stats(values):
    """median, min, max of a non-empty sequence (floats)."""
    values = [float(v) for v in values]
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def calibrate(run, target_s, start=1, max_units=10**7):
    """How many units `run(units)` needs so the work itself takes ~target_s.

    run(units) must return the elapsed seconds. Units grow until one call
    takes at least target_s / 4; the rate is that call's units per second,
    fixed per-call costs included, so a noisy small call can only make the
    answer larger, never shrink the work to a few units (where per-call
    costs would dominate the measurement). Returns (units, overhead_s):
    overhead_s estimates the fixed cost per call from the last two calls.
    The calibration runs double as warm-up."""
    units, hist = start, []
    while True:
        hist.append((units, run(units)))
        if hist[-1][1] >= target_s / 4 or units >= max_units:
            break
        units *= 4 if hist[-1][1] < target_s / 40 else 2
    # Once more at the same size: the first calls after an idle spell run
    # slow while the host wakes this VM's other vCPU, and the faster of two
    # is the closer to the rate a measurement will see.
    hist.append((units, run(units)))
    u1, t1 = min(hist[-2:], key=lambda h: h[1])
    rate = u1 / max(t1, 1e-9)
    hist = hist[:-2] + [(u1, t1)]
    overhead = 0.0
    if len(hist) >= 2:
        u0, t0 = hist[-2]
        marginal = (u1 - u0) / max(t1 - t0, 1e-9)
        overhead = min(t1, max(0.0, t1 - u1 / marginal)) if marginal > 0 else 0.0
    return int(min(max_units, max(1, round(rate * target_s)))), overhead


def settle(seconds):
    """Sleep, so the spinning worker threads of whatever BLAS/OpenMP pool ran
    last go idle before the next measurement (OpenBLAS workers busy-wait for
    ~0.1 s after a parallel call; on 2 cores they steal the next pool's CPU)."""
    if seconds:
        time.sleep(seconds)


def round_robin(cases, repeats, on_result=None):
    """Run every case once per repeat, rotating the order each repeat.

    cases : dict name -> zero-argument callable returning a dict of results.
    Returns dict name -> list of result dicts (one per repeat).
    """
    out = interleave([(None, cases)], repeats, on_result)
    return out[None]


def interleave(groups, repeats, on_result=None):
    """Repeat-outermost round-robin over groups of cases.

    groups : list of (key, dict name -> zero-argument callable returning a dict).
    Each repeat runs every group in turn and, inside a group, every case once,
    starting one case later than the previous repeat. So all cases see the
    same drift (other jobs on the machine, thermal state), and no case always
    runs right after the same neighbour (e.g. a thread-count change).
    Returns dict key -> dict name -> list of result dicts.
    """
    out = {key: {name: [] for name in cases} for key, cases in groups}
    for r in range(repeats):
        for key, cases in groups:
            names = list(cases)
            k = r % len(names)
            for name in names[k:] + names[:k]:
                res = cases[name]()
                out[key][name].append(res)
                if on_result is not None:
                    on_result(r, key, name, res)
    return out


# ---------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------

def fmt_num(x, digits=3):
    """Compact number: 3 significant digits, k/M suffixes for big values."""
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    ax = abs(x)
    if ax >= 1e6:
        return f"{x / 1e6:.{digits - 1}f}M" if ax < 1e7 else f"{x / 1e6:.0f}M"
    if ax >= 1e4:
        return f"{x / 1e3:.0f}k"
    if ax >= 100:
        return f"{x:.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    if ax >= 1:
        return f"{x:.2f}"
    return f"{x:.{digits}f}" if ax >= 0.01 else f"{x:.2g}"


def fmt_range(s, scale=1.0):
    """'median [min-max]' for a stats() dict."""
    return f"{fmt_num(s['median'] * scale)} [{fmt_num(s['min'] * scale)}-{fmt_num(s['max'] * scale)}]"


def fmt_ratio(a, b):
    if a is None or b is None or not b:
        return "-"
    r = a / b
    if r >= 100:
        return f"{r:.0f}x"
    if r >= 10:
        return f"{r:.1f}x"
    return f"{r:.2f}x"


def table(headers, rows, align=None):
    """A plain-text table; align is a string of 'l'/'r' per column (default: first l, rest r)."""
    rows = [[str(c) for c in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]
    align = align or ("l" + "r" * (len(headers) - 1))

    def line(cells):
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w)
                         for c, w, a in zip(cells, widths, align)).rstrip()

    out = [line([str(h) for h in headers]), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    return "\n".join(out)


# ---------------------------------------------------------------------------
# System information
# ---------------------------------------------------------------------------

def cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            info = fh.read()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((l.split(":", 1)[1].strip() for l in info.splitlines()
                  if l.startswith("model name")), platform.machine())
    flags = next((l.split(":", 1)[1].split() for l in info.splitlines()
                  if l.startswith("flags")), [])
    simd = [f for f in ("avx512f", "avx2", "fma", "avx") if f in flags]
    return f"{model} ({', '.join(simd) or 'no AVX'})"


def blas_info():
    """threadpoolctl's view of the loaded BLAS/OpenMP libraries (fresh, not cached)."""
    from threadpoolctl import threadpool_info

    keep = ("user_api", "internal_api", "filepath", "version", "architecture",
            "threading_layer", "num_threads")
    return [{k: d.get(k) for k in keep} for d in threadpool_info()]


def system_info(torch=None):
    import scipy

    info = {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "loadavg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "torch": getattr(torch, "__version__", None),
        "env": {k: v for k, v in os.environ.items()
                if k.startswith(("OPENBLAS", "OMP_", "MKL_", "MLP_"))},
        "blas": blas_info(),
    }
    try:
        import mlp

        info["mlp"] = getattr(mlp, "__version__", None)
    except Exception:
        pass
    if torch is not None:
        try:
            info["torch_blas"] = ("mkl" if torch.backends.mkl.is_available() else "?") + (
                "+mkldnn" if torch.backends.mkldnn.is_available() else "")
            info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        except Exception:
            pass
    return info


def print_system_info(info):
    print(f"CPU: {info['cpu']}; {info['logical_cpus']} logical CPUs "
          f"({info['affinity']} usable); load average (1 min) {info['loadavg_1m']:.2f}")
    print(f"python {info['python']}, numpy {info['numpy']}, scipy {info['scipy']}, "
          f"torch {info['torch'] or '(not loaded)'}, mlp {info.get('mlp')}")
    if info.get("torch_blas"):
        print(f"torch BLAS: {info['torch_blas']} (statically linked, invisible to threadpoolctl), "
              f"cpu capability {info.get('torch_cpu_capability')}")
    if info["env"]:
        print("environment:", " ".join(f"{k}={v}" for k, v in sorted(info["env"].items())))
    print("loaded thread pools (threadpoolctl):")
    rows = [[d["internal_api"], d["version"] or "-", d["architecture"] or "-",
             d["num_threads"], d["filepath"]] for d in info["blas"]]
    print(table(["library", "version", "arch", "threads", "filepath"], rows, "lllrl"))


def write_json(path, payload):
    with open(path, "w") as fh:
        json.dump(payload, fh, indent=1, default=_json_default)
    print(f"wrote {path}")


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.dtype):
        return o.name
    return str(o)


# ---------------------------------------------------------------------------
# GEMM peak
# ---------------------------------------------------------------------------

def gemm_peak_runner(dtype=np.float32, n=2048, via="scipy"):
    """A callable measuring one n x n x n GEMM; returns {'seconds', 'gflops'}.

    via="scipy" goes through scipy.linalg.blas (the BLAS mlp's kernels call),
    on Fortran-ordered operands so nothing is copied; via="numpy" is
    ``np.matmul(a, b, out=c)`` through numpy's own bundled BLAS."""
    rng = np.random.default_rng(0)
    a = np.asfortranarray(rng.standard_normal((n, n)).astype(dtype))
    b = np.asfortranarray(rng.standard_normal((n, n)).astype(dtype))
    c = np.zeros((n, n), dtype=dtype, order="F")
    flops = 2.0 * n ** 3
    if via == "scipy":
        from scipy.linalg import blas

        gemm = blas.sgemm if np.dtype(dtype) == np.float32 else blas.dgemm

        def call():
            gemm(1.0, a, b, beta=0.0, c=c, overwrite_c=1)
    else:
        ca, cb, cc = (np.ascontiguousarray(m) for m in (a, b, c))

        def call():
            np.matmul(ca, cb, out=cc)

    def run(min_seconds=0.0):
        """Calls until min_seconds have passed (at least twice); the best call."""
        times, total = [], 0.0
        while len(times) < 2 or total < min_seconds:
            t0 = now()
            call()
            times.append(now() - t0)
            total += times[-1]
        dt = min(times)
        return {"seconds": dt, "calls": len(times), "gflops": flops / dt / 1e9}

    return run


def sparse_problem(rows, columns, per_row, classes, seed=0):
    """CSR float32 (rows, columns), per_row non-zeros a row (repeats within a
    row, rare, summed), and labels that a linear model of it separates: the
    sparse problem of bench_sparse.py and bench_sklearn.py --datasets."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    indices = np.sort(rng.choice(columns, size=(rows, per_row)), axis=1)
    X = sp.csr_matrix((rng.uniform(0.1, 1.0, rows * per_row).astype(np.float32),
                       indices.reshape(-1).astype(np.int32),
                       np.arange(0, rows * per_row + 1, per_row)), shape=(rows, columns))
    X.sum_duplicates()
    y = np.argmax(X @ rng.normal(size=(columns, classes)).astype(np.float32), axis=1)
    return X, y


def steps_per_measurement(steps, overhead, target_s):
    """Steps per measured call, from calibrate()'s (steps, overhead_s): a third
    of the target, or, when the call has a fixed cost (mlp.train validates X on
    each call), enough that the fixed cost is at most ~10% of the call, within
    4x the target."""
    work = max(target_s / 3, min(9 * overhead, 4 * target_s))
    return max(1, round(steps * work / target_s))
