"""Does mlp's BLAS get in the way of the user's numpy BLAS (and back)?

    PYTHONPATH=. python bench/bench_blas_mix.py [--quick] [--json OUT]

numpy and scipy each bundle their own OpenBLAS, each with its own thread
pool; mlp's kernels call scipy's. OpenBLAS workers busy-wait for a while
after a parallel call, so a loop that alternates numpy GEMMs with mlp calls
on a 2-core machine can have one pool's spinning workers steal the cores the
other pool needs (alternation was once measured ~50x slower than either
alone). This script times, per iteration, interleaved round-robin:

* numpy : ``A @ W.T`` with A (256, 784), W (300, 784) -- the user's own numpy work;
* mlp   : ``model.predict(Xb)`` on 256 rows, then ``mlp.training_step(model, Xb, yb, lr)``;
* mix   : both in the same iteration, alternating;

and prints mix / (numpy + mlp): about 1 when the pools do not interfere.

Thread settings are left as the libraries have them (on this machine both
pools default to the number of cores; the script prints them), since the
question is what a user gets by default. --numpy-threads and
--mlp-threads override.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402

import mlp  # noqa: E402
from mlp.datasets import load_mnist  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few short repeats")
    ap.add_argument("--json", metavar="OUT", help="write every raw repeat and the medians here")
    ap.add_argument("--repeats", type=int, help="repeats (default 7, quick 3)")
    ap.add_argument("--seconds", type=float, help="target seconds per measurement (default 1.0, quick 0.4)")
    ap.add_argument("--numpy-threads", type=int, help="limit every BLAS pool to this many threads "
                                                      "for the whole run (threadpoolctl); default: untouched")
    ap.add_argument("--mlp-threads", type=int, help="n_threads passed to model.predict (default None)")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--settle", type=float, default=0.12,
                    help="sleep before each measurement so the previous one's spinning workers go idle")
    args = ap.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 7)
    target = args.seconds or (0.4 if args.quick else 1.0)
    dtype = np.dtype(args.dtype)

    train, _val, _test = load_mnist()
    rng = np.random.default_rng(0)
    Xb = np.ascontiguousarray(train.images[:256], dtype=dtype)
    yb = train.labels[:256]
    A = rng.standard_normal((256, 784)).astype(dtype)
    W = rng.standard_normal((300, 784)).astype(dtype)
    model = mlp.Model([784, 300, 100, 10], activation="sigmoid", output="sigmoid", dtype=dtype, init="xavier", seed=0)
    T = args.mlp_threads

    def numpy_part():
        A @ W.T

    def mlp_part():
        model.predict(Xb, n_threads=T)
        mlp.training_step(model, Xb, yb, 0.1)

    parts = {"numpy": (numpy_part,), "mlp": (mlp_part,), "mix": (numpy_part, mlp_part)}

    def runner(fns):
        def run(k):
            t0 = C.now()
            for _ in range(k):
                for f in fns:
                    f()
            return C.now() - t0
        return run

    info = C.system_info()
    C.print_system_info(info)
    print()
    # Scenario "default": thread pools as the libraries set them (what a user
    # gets). Control "all 1 thread": every pool limited to 1 thread, where
    # there is nothing to spin; it also shows what 2 threads buy, if anything.
    scenarios = ([(f"all pools {args.numpy_threads} thread(s)", args.numpy_threads)] if args.numpy_threads
                 else [("default threads", None), ("all pools 1 thread", 1)])
    report = {}
    for label, limit in scenarios:
        with (C.threads(limit) if limit else _nullcontext()):
            pools = sorted({(d["internal_api"], d["num_threads"]) for d in C.blas_info()})
            cases, iters = {}, {}
            for name, fns in parts.items():
                C.settle(args.settle)
                k, _ = C.calibrate(runner(fns), target)
                iters[name] = k
                cases[name] = _case(runner(fns), k, args.settle)
            print(f"[{label}: pools {pools}; mlp n_threads={T}] iterations per measurement {iters}; "
                  f"measuring ({repeats} repeats)...", flush=True)
            raw = C.round_robin(cases, repeats)
        report[label] = _summarise(raw, iters)
    if args.json:
        C.write_json(args.json, {"benchmark": "bench_blas_mix", "args": vars(args), "system": info,
                                 "repeats": repeats, "scenarios": report})


def _summarise(raw, iters):
    per_iter = {n: C.stats([r["ms_per_iter"] for r in rs]) for n, rs in raw.items()}
    med = {n: s["median"] for n, s in per_iter.items()}
    ratio = med["mix"] / (med["numpy"] + med["mlp"])
    # Pair the repeats too: each repeat's mix against the same repeat's parts.
    paired = [m["ms_per_iter"] / (a["ms_per_iter"] + b["ms_per_iter"])
              for m, a, b in zip(raw["mix"], raw["numpy"], raw["mlp"])]
    rows = [[n, C.fmt_range(per_iter[n]), iters[n]] for n in ("numpy", "mlp", "mix")]
    rows.append(["numpy + mlp", C.fmt_num(med["numpy"] + med["mlp"]), ""])
    print(C.table(["loop body", "ms/iteration median [min-max]", "iterations"], rows))
    print(f"mix / (numpy alone + mlp alone) = {ratio:.2f}  "
          f"(per repeat: {', '.join(f'{p:.2f}' for p in paired)}); ~1 means the pools do not interfere")
    loads = [r["loadavg_1m"] for rs in raw.values() for r in rs]
    print(f"load average (1 min) during the measurements: {min(loads):.2f}-{max(loads):.2f} "
          f"on {os.cpu_count()} CPUs\n")
    return {"raw": raw, "iterations": iters, "ms_per_iter": per_iter, "ratio": ratio, "paired_ratios": paired}


def _case(run, k, settle):
    def measure():
        C.settle(settle)
        dt = run(k)
        return {"iterations": k, "seconds": dt, "ms_per_iter": dt / k * 1e3, "loadavg_1m": os.getloadavg()[0]}
    return measure


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    main()
