"""Fingerprints of the parameters that short training runs end with, to show that a
refactoring changed no result.

Runs every preset for a few hundred steps on the first 3,000 MNIST training images, the
notebook's recipe through ``mlp.compat``, and each optimizer with and without dropout,
max-norm, augmentation, float64 and the sparse first layer, on 1 and 2 threads; prints one
sha256 of the final parameters per run. Run it on two builds on the same machine and compare:

    PYTHONPATH=. python bench/param_fingerprint.py --out before.json
    ... change, rebuild ...
    PYTHONPATH=. python bench/param_fingerprint.py --compare before.json

Equal hashes mean bit-identical parameters. They are only comparable on one machine: the
BLAS kernel and the vector width change the rounding.
"""
import argparse
import hashlib
import json
import sys

import numpy as np

import mlp
from mlp import compat
from mlp.augment import Affine, Elastic
from mlp.datasets import load_mnist
from mlp.presets import PRESETS

from _common import print_system_info, system_info


def digest(model):
    sha = hashlib.sha256()
    for array in (*model.weights, *model.biases):
        sha.update(np.ascontiguousarray(array).tobytes())
    return sha.hexdigest()[:16]


def preset_runs(X, y, threads):
    for name, preset in PRESETS.items():
        if preset.notebook_seeding:
            continue  # the notebook's recipe is checked through mlp.compat below
        options = preset.training.replace(epochs=None, iterations=150)
        model_seed, training_seed = preset.seeds()
        model = preset.build_model(model_seed)
        kwargs = {f: getattr(options, f) for f in options.__dataclass_fields__}
        kwargs.update(seed=training_seed, progress=False, n_threads=threads)
        mlp.train(model, X, y, **kwargs)
        yield f"preset {name}, {threads} threads", digest(model)


def optimizer_runs(X, y, threads):
    optimizers = {
        "sgd": mlp.SGD(0.1),
        "momentum": mlp.SGD(0.05, momentum=0.9, weight_decay=1e-4),
        "nesterov": mlp.SGD(0.05, momentum=0.9, nesterov=True),
        "adam": mlp.Adam(1e-3, weight_decay=1e-4),
        "adamw": mlp.AdamW(1e-3),
        "adam eps_hat": mlp.Adam(1e-3, eps_hat=True),
    }
    extras = {"": {}, " dropout": {"dropout": 0.2, "input_dropout": 0.1},
              " max_norm": {"max_norm": 0.3}}
    for name, optimizer in optimizers.items():
        for extra_name, extra in extras.items():
            for dtype in ("float32", "float64"):
                model = mlp.Model([784, 64, 32, 10], seed=1, dtype=dtype)
                mlp.train(model, X, y, iterations=60, batch_size=50, optimizer=optimizer,
                          seed=2, progress=False, n_threads=threads, **extra)
                yield f"{name}{extra_name} {dtype}, {threads} threads", digest(model)
    model = mlp.Model([784, 64, 10], seed=3)
    mlp.train(model, X, y, iterations=40, batch_size=64, optimizer=mlp.Adam(1e-3), seed=4,
              augment=Affine(rotation=10, shift=2) + Elastic(alpha=30, sigma=4),
              progress=False, n_threads=threads)
    yield f"augmented adam, {threads} threads", digest(model)
    model = mlp.Model([784, 64, 10], seed=5, activation="sigmoid", output="sigmoid")
    mlp.train(model, X, y, iterations=40, batch_size=16, learning_rate=0.5, loss="mse",
              sampling="replacement", seed=6, progress=False, n_threads=threads)
    yield f"sigmoid mse, feature-major batches, {threads} threads", digest(model)


def compat_run(X, y):
    rng_state = np.random.get_state()
    np.random.seed(7)
    try:
        net = compat.Model([784, 30, 10])
        for _ in range(50):
            xb, yb = compat.get_batch(X, y, 30)
            compat.training_step(net, xb, yb, 2.0)
        sha = hashlib.sha256()
        for array in (*net.weights, *net.biases):
            sha.update(np.ascontiguousarray(array).tobytes())
        return "compat notebook", sha.hexdigest()[:16]
    finally:
        np.random.set_state(rng_state)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the fingerprints to this JSON file")
    parser.add_argument("--compare", help="compare with a JSON file an earlier run wrote")
    args = parser.parse_args()
    print_system_info(system_info())
    (X, y), _, _ = load_mnist()
    X, y = X[:3000], y[:3000]
    results = {}
    for threads in (1, 2):
        for key, value in (*preset_runs(X, y, threads), *optimizer_runs(X, y, threads)):
            results[key] = value
    key, value = compat_run(X, y)
    results[key] = value
    for key, value in results.items():
        print(f"{value}  {key}")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=1)
    if args.compare:
        with open(args.compare) as fh:
            before = json.load(fh)
        changed = [k for k in before if results.get(k) != before[k]]
        missing = [k for k in before if k not in results]
        print(f"{len(before) - len(changed)} of {len(before)} runs bit-identical"
              + (f"; differ: {', '.join(changed)}" if changed else "")
              + (f"; missing: {', '.join(missing)}" if missing else ""))
        return 1 if changed else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
