"""solver="lbfgs": mlp.sklearn against sklearn.neural_network, fit time.

    PYTHONPATH=. python bench/bench_lbfgs.py [--samples N] [--features F]
        [--hidden H] [--iterations I] [--repeats R]

Both classifiers get the same synthetic data (10 classes; float32 and
float64 in turn, which each keeps), hidden_layer_sizes=(H,),
max_iter=I, tol=0 (so that every iteration runs) and the same random_state,
and fit in this process, interleaved (each repeat runs both, alternating
which goes first). Reported per dtype: the median fit time of each, the
ratio scikit-learn / mlp, the iterations each ran and their final losses
(equal to rounding in float64 until L-BFGS's path drifts apart). Target:
mlp at least 2x faster.
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from _common import print_system_info, system_info


def _data(n, f, dtype, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, f)).astype(dtype)
    y = (X[:, :10] @ rng.standard_normal((10, 10)) + rng.standard_normal((n, 10))).argmax(1)
    return X, y


def _fit(cls, X, y, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        est = cls(**params).fit(X, y)
        return time.perf_counter() - start, est


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--hidden", type=int, default=100)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    # Figures are comparable on one machine only: the CPU and BLAS kernels first.
    print_system_info(system_info())

    from sklearn.neural_network import MLPClassifier as SklearnMLP

    from mlp.sklearn import MLPClassifier

    params = dict(hidden_layer_sizes=(args.hidden,), solver="lbfgs", max_iter=args.iterations,
                  tol=0.0, random_state=0)
    for dtype in ("float32", "float64"):
        X, y = _data(args.samples, args.features, dtype)
        times = {"sklearn": [], "mlp": []}
        for repeat in range(args.repeats):
            runs = [("sklearn", SklearnMLP, {}), ("mlp", MLPClassifier, {"dtype": dtype})]
            for name, cls, extra in (runs if repeat % 2 == 0 else runs[::-1]):
                seconds, est = _fit(cls, X, y, **params, **extra)
                times[name].append(seconds)
                if name == "sklearn":
                    sk = est
                else:
                    ours = est
        sk_time, mlp_time = np.median(times["sklearn"]), np.median(times["mlp"])
        print(f"{dtype}: scikit-learn {sk_time:.3f} s ({sk.n_iter_} iterations, loss "
              f"{sk.loss_:.6g}), mlp {mlp_time:.3f} s ({ours.n_iter_} iterations, loss "
              f"{ours.loss_:.6g}): {sk_time / mlp_time:.2f}x")


if __name__ == "__main__":
    main()
