"""What one BLAS pool's spinning workers cost the other, call by call.

    PYTHONPATH=. python bench/bench_blas_handoff.py [--repeats N]

numpy and scipy each bundle an OpenBLAS; mlp's kernels use scipy's. After a
multi-threaded call, OpenBLAS workers busy-wait for ~0.1 s. This times a
numpy matmul right after an mlp call, and an mlp call right after a numpy
matmul, against the same call after a pause long enough for the workers to
sleep, with mlp on 1 and on 2 threads. The medians behind the defaults in
mlp/_threads.py come from this script.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import mlp


def _ms(fn):
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--pause", type=float, default=0.2, help="seconds for the workers to go idle")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(0)
    A = rng.random((256, 784), dtype=np.float32)
    W = rng.random((300, 784), dtype=np.float32)
    X = rng.random((256, 784), dtype=np.float32)
    model = mlp.Model([784, 300, 100, 10], activation="sigmoid", output="sigmoid", seed=0)

    def numpy_call():
        return A @ W.T

    print("ms per call, median of", args.repeats)
    print(f"{'mlp threads':>11}  {'mlp rested':>10}  {'mlp after numpy':>15}  "
          f"{'numpy rested':>12}  {'numpy after mlp':>15}")
    for threads in (1, 2):
        def mlp_call(threads=threads):
            return model.forward(X, n_threads=threads)

        rows = {"mlp rested": [], "mlp after numpy": [], "numpy rested": [], "numpy after mlp": []}
        for _ in range(args.repeats):
            time.sleep(args.pause)
            rows["mlp rested"].append(_ms(mlp_call))
            time.sleep(args.pause)
            numpy_call()
            rows["mlp after numpy"].append(_ms(mlp_call))
            time.sleep(args.pause)
            rows["numpy rested"].append(_ms(numpy_call))
            time.sleep(args.pause)
            mlp_call()
            rows["numpy after mlp"].append(_ms(numpy_call))
        med = {k: statistics.median(v) for k, v in rows.items()}
        print(f"{threads:>11}  {med['mlp rested']:>10.2f}  {med['mlp after numpy']:>15.2f}  "
              f"{med['numpy rested']:>12.2f}  {med['numpy after mlp']:>15.2f}")


if __name__ == "__main__":
    main()
