"""Training on a scipy.sparse CSR matrix: mlp.train against scikit-learn's MLPClassifier.

    PYTHONPATH=. python bench/bench_sparse.py [--rows N] [--columns D] [--per-row K]
                                              [--epochs E] [--threads T]

A random CSR matrix (default 30,000 x 20,000 float32, 60 non-zeros a row,
2.4 GB dense, 14 MB as CSR) and labels of 10 classes that a linear model
separates. Both fit it as it is, sparse, with one hidden layer of 100 relu
units, Adam (learning rate 0.001, batch 200) for --epochs epochs (scikit-learn:
max_iter, tol=0), in this one process, mlp first. Reported: each fit's time,
the ratio, each model's training accuracy, and the process's peak resident
memory after each fit (ru_maxrss: it only grows, so scikit-learn's figure
includes mlp's peak).
"""
from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np

import mlp
from _common import print_system_info, sparse_problem, system_info


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--columns", type=int, default=20_000)
    parser.add_argument("--per-row", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args(argv)
    # Figures are comparable on one machine only: the CPU and BLAS kernels first.
    print_system_info(system_info())

    from sklearn.neural_network import MLPClassifier

    X, y = sparse_problem(args.rows, args.columns, args.per_row, 10)
    print(f"X: {X.shape[0]} x {X.shape[1]} CSR, {X.nnz} non-zeros, "
          f"{(X.data.nbytes + X.indices.nbytes + X.indptr.nbytes) / 1e6:.0f} MB "
          f"({X.shape[0] * X.shape[1] * 4 / 1e9:.1f} GB dense); peak RSS {peak_mb():.0f} MB")

    model = mlp.Model([args.columns, 100, 10], seed=0)
    started = time.perf_counter()
    mlp.train(model, X, y, epochs=args.epochs, batch_size=200,
              optimizer=mlp.Adam(learning_rate=0.001), n_threads=args.threads, progress=False)
    ours = time.perf_counter() - started
    print(f"mlp.train:     {ours:7.2f} s, training accuracy {np.mean(model.predict(X) == y):.3f}, "
          f"peak RSS {peak_mb():.0f} MB")

    clf = MLPClassifier((100,), solver="adam", learning_rate_init=0.001, batch_size=200,
                        max_iter=args.epochs, tol=0.0, n_iter_no_change=10 ** 6, random_state=0)
    started = time.perf_counter()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X, y)
    theirs = time.perf_counter() - started
    print(f"scikit-learn:  {theirs:7.2f} s, training accuracy {clf.score(X, y):.3f}, "
          f"peak RSS {peak_mb():.0f} MB")
    print(f"scikit-learn / mlp fit time: {theirs / ours:.2f}x")


if __name__ == "__main__":
    main()
