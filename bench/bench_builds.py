"""Training step time of two builds of mlp, interleaved in one run.

A refactoring must not cost speed. This times ``mlp.train`` (the public path, Python
overhead included) on MNIST for a few recipes, alternating between two source trees, each
built in place, in child processes: round r runs build A then build B (B then A on odd
rounds), so that drifts in the machine's speed fall on both alike. Prints, per recipe, each
build's median step time and the median of the per-round ratios B / A.

    PYTHONPATH=. python bench/bench_builds.py --builds OLD_TREE NEW_TREE [--repeats 7]

Each tree needs its compiled core built (``python setup.py build_ext --inplace``). The CPU
and the BLAS kernels are printed first: compare figures from one machine only.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

from _common import print_system_info, system_info

# name -> (batch size, train() keyword arguments as Python source)
RECIPES = {
    "sgd b64": (64, "learning_rate=0.1"),
    "nesterov b64": (64, "optimizer=mlp.SGD(0.1, momentum=0.9, nesterov=True)"),
    "adam b64": (64, "optimizer=mlp.Adam(1e-3)"),
    "dropout b64": (64, "learning_rate=0.1, dropout=0.2"),
    "sgd b256": (256, "learning_rate=0.1"),
    "adam b256": (256, "optimizer=mlp.Adam(1e-3)"),
    "sgd b16": (16, "learning_rate=0.1"),
}

CHILD = r"""
import json, sys, time
import numpy as np
import mlp
from mlp.datasets import load_mnist

(X, y), _, _ = load_mnist()
batch, steps, threads = {batch}, {steps}, {threads}
model = mlp.Model([784, 300, 100, 10], seed=0)
# One short run first: imports, the workspace and the first touch of the data.
mlp.train(model, X, y, iterations=20, batch_size=batch, {kwargs}, seed=0, progress=False,
          n_threads=threads)
model = mlp.Model([784, 300, 100, 10], seed=0)
started = time.perf_counter()
mlp.train(model, X, y, iterations=steps, batch_size=batch, {kwargs}, seed=0, progress=False,
          n_threads=threads)
print(json.dumps((time.perf_counter() - started) / steps))
"""


def step_time(tree, batch, kwargs, steps, threads):
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    code = CHILD.format(batch=batch, steps=steps, threads=threads, kwargs=kwargs)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         cwd=os.path.abspath(tree))
    if out.returncode:
        raise SystemExit(f"{tree}: {out.stderr.strip().splitlines()[-1]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--builds", nargs=2, required=True, metavar=("A", "B"))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--recipes", default=",".join(RECIPES))
    args = parser.parse_args()
    print_system_info(system_info())
    print(f"A = {args.builds[0]}\nB = {args.builds[1]}\n{args.steps} steps of 784-300-100-10 on MNIST, "
          f"{args.threads} threads, {args.repeats} interleaved rounds\n")
    print(f"{'recipe':<14} {'A ms/step':>10} {'B ms/step':>10} {'B/A (paired)':>13}  [min-max]")
    for name in args.recipes.split(","):
        batch, kwargs = RECIPES[name]
        # By position, so that a build can be timed against itself (the noise floor).
        times = ([], [])
        for round_ in range(args.repeats):
            for which in ((0, 1) if round_ % 2 == 0 else (1, 0)):
                times[which].append(step_time(args.builds[which], batch, kwargs, args.steps,
                                              args.threads))
        ratios = np.array(times[1]) / np.array(times[0])
        print(f"{name:<14} {1e3 * np.median(times[0]):>10.3f} {1e3 * np.median(times[1]):>10.3f} "
              f"{np.median(ratios):>12.3f}x  [{ratios.min():.3f}-{ratios.max():.3f}]",
              flush=True)


if __name__ == "__main__":
    main()
