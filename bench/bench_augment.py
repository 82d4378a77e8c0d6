"""Augmentation speed: 28x28 MNIST digits distorted per second per core.

    PYTHONPATH=. python bench/bench_augment.py [--quick] [--json OUT]

Measured, interleaved round-robin (median [min-max] over the repeats):

* mlp.augment.distort on MNIST training images with the default
  Affine(), Elastic() and Affine() + Elastic(), on 1 thread and on all
  threads (--threads): images/s, images/s per core and microseconds per
  image per core;
* for scale, the textbook numpy/scipy implementation of the same
  distortion (gaussian_filter on each uniform field, the composed source
  points resampled once by map_coordinates(order=1)), on 100 images;
* a float32 training step of a 784-800-800-10 network (mlp.train, batches
  of --batch-size, on all threads), per sample.

The last table is the target: the share of a training step that
distorting every sample would add, with both on the same cores
(microseconds per image on all threads / microseconds per trained sample).
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402

import mlp  # noqa: E402
from mlp.augment import Affine, Elastic, distort  # noqa: E402
from mlp.datasets import load_mnist  # noqa: E402

TRAIN_SIZES = [784, 800, 800, 10]


def distort_case(X, augment, n_threads, target):
    state = {"id": 0}

    def measure():
        images, dt = 0, 0.0
        while dt < target or images < 2 * len(X):
            ids = np.arange(state["id"], state["id"] + len(X), dtype=np.int64)
            t0 = C.now()
            distort(X, augment, seed=0, sample_ids=ids, n_threads=n_threads)
            dt += C.now() - t0
            images += len(X)
            state["id"] += len(X)
        return {"images": images, "seconds": dt, "images_per_s": images / dt,
                "images_per_s_per_core": images / dt / n_threads,
                "us_per_image_per_core": dt / images * 1e6 * n_threads,
                "loadavg_1m": os.getloadavg()[0]}
    return measure


def scipy_distort(X, affine, elastic, rng):
    """The usual numpy/scipy implementation of affine + elastic in one resampling."""
    from scipy import ndimage

    side = 28
    c = (side - 1) / 2
    y, x = np.mgrid[0:side, 0:side].astype(np.float64) - c
    out = np.empty_like(X)
    for r, image in enumerate(X.reshape(-1, side, side)):
        theta, phi = np.radians(rng.uniform(-1, 1, 2) * [affine.rotation, affine.shear])
        s = 1 + affine.scale * rng.uniform(-1, 1)
        tx, ty = affine.shift * rng.uniform(-1, 1, 2)
        turn = np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]])
        inverse = np.linalg.inv(s * turn @ np.array([[1.0, np.tan(phi)], [0.0, 1.0]]))
        dx = ndimage.gaussian_filter(rng.uniform(-1, 1, (side, side)), elastic.sigma) * elastic.alpha
        dy = ndimage.gaussian_filter(rng.uniform(-1, 1, (side, side)), elastic.sigma) * elastic.alpha
        px, py = x - tx, y - ty
        sx = inverse[0, 0] * px + inverse[0, 1] * py + c + dx
        sy = inverse[1, 0] * px + inverse[1, 1] * py + c + dy
        out[r] = ndimage.map_coordinates(image, [sy, sx], order=1, mode="grid-constant").ravel()
    return np.clip(out, 0, 1)


def scipy_case(X, target):
    rng = np.random.default_rng(0)
    affine, elastic = Affine(), Elastic()

    def measure():
        images, dt = 0, 0.0
        while dt < target or images < len(X):
            t0 = C.now()
            scipy_distort(X, affine, elastic, rng)
            dt += C.now() - t0
            images += len(X)
        return {"images": images, "seconds": dt, "images_per_s": images / dt,
                "images_per_s_per_core": images / dt,
                "us_per_image_per_core": dt / images * 1e6, "loadavg_1m": os.getloadavg()[0]}
    return measure


def train_case(X, y, batch_size, n_threads, iterations):
    model = mlp.Model(TRAIN_SIZES, output="softmax", seed=0)

    def measure():
        t0 = C.now()
        mlp.train(model, X, y, iterations=iterations, batch_size=batch_size, learning_rate=0.01,
                  loss="cross_entropy", seed=0, progress=False, n_threads=n_threads)
        dt = C.now() - t0
        samples = iterations * batch_size
        return {"samples": samples, "seconds": dt, "us_per_sample": dt / samples * 1e6,
                "loadavg_1m": os.getloadavg()[0]}
    return measure


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few short repeats (seconds)")
    ap.add_argument("--json", metavar="OUT", help="write every raw repeat and the medians here")
    ap.add_argument("--repeats", type=int, help="repeats (default 5, quick 3)")
    ap.add_argument("--seconds", type=float,
                    help="target seconds per measurement (default 0.4, quick 0.15)")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for the multi-threaded rows (default: all usable cores)")
    ap.add_argument("--images", type=int, default=2000, help="images per distort() call")
    ap.add_argument("--batch-size", type=int, default=100, help="training batch size")
    ap.add_argument("--no-train", action="store_true", help="skip the training-step ratio")
    ap.add_argument("--no-scipy", action="store_true", help="skip the scipy reference")
    args = ap.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 5)
    target = args.seconds or (0.15 if args.quick else 0.4)
    from mlp._threads import default_threads

    threads = args.threads or default_threads()

    info = C.system_info()
    C.print_system_info(info)
    train, _validation, _test = load_mnist()
    X = np.ascontiguousarray(train.images[:args.images], dtype=np.float32)

    augments = {"affine": Affine(), "elastic": Elastic(), "both": Affine() + Elastic()}
    print("\n" + "\n".join(f"{name}: {augment!r}" for name, augment in augments.items()))
    cases = {}
    for name, augment in augments.items():
        cases[f"{name}, 1 thread"] = distort_case(X, augment, 1, target)
        if threads > 1:
            cases[f"{name}, {threads} threads"] = distort_case(X, augment, threads, target)
    if not args.no_scipy:
        cases["both, scipy (1 thread)"] = scipy_case(X[:100], target)
    if not args.no_train:
        # Iterations for ~target seconds, calibrated once (the calibration is the warm-up).
        iterations, _ = C.calibrate(
            lambda units: train_case(train.images, train.labels, args.batch_size, threads,
                                     units)()["seconds"], target, start=4)
        cases[f"train step, {threads} threads"] = train_case(
            train.images, train.labels, args.batch_size, threads, iterations)
    results = C.round_robin(cases, repeats)

    rows = []
    medians = {}
    for name, runs in results.items():
        if name.startswith("train"):
            continue
        rate = C.stats([r["images_per_s"] for r in runs])
        per_core = C.stats([r["images_per_s_per_core"] for r in runs])
        us = C.stats([r["us_per_image_per_core"] for r in runs])
        medians[name] = {"images_per_s": rate["median"], "images_per_s_per_core": per_core["median"],
                         "us_per_image_per_core": us["median"]}
        rows.append([name, C.fmt_range(rate), C.fmt_range(per_core), C.fmt_range(us)])
    print(f"\n28x28 images, {len(X)} per call; median [min-max] of {repeats} repeats")
    print(C.table(["distortion", "images/s", "images/s per core", "us/image per core"], rows))
    if "both, scipy (1 thread)" in medians:
        print(f"\nmlp / scipy, affine + elastic on 1 thread: "
              f"{C.fmt_ratio(medians['both, 1 thread']['images_per_s'], medians['both, scipy (1 thread)']['images_per_s'])}")

    train_name = f"train step, {threads} threads"
    if train_name in results:
        step = C.stats([r["us_per_sample"] for r in results[train_name]])
        medians[train_name] = {"us_per_sample": step["median"]}
        print(f"\n{'-'.join(map(str, TRAIN_SIZES))} float32 training, batch {args.batch_size}, "
              f"{threads} threads: {C.fmt_range(step)} us per sample")
        rows = []
        for name in augments:
            key = f"{name}, {threads} threads" if threads > 1 else f"{name}, 1 thread"
            # Distorting on the same cores, one image per trained sample.
            us_wall = medians[key]["us_per_image_per_core"] / threads
            rows.append([name, f"{us_wall:.2f}", f"{100 * us_wall / step['median']:.1f}%"])
        print(C.table(["distortion", f"us/image on {threads} threads", "added to a step"], rows))
    print(f"\nload average (1 min) at the end: {os.getloadavg()[0]:.2f}")
    if args.json:
        C.write_json(args.json, {"info": info, "args": vars(args), "results": results,
                                 "medians": medians})


if __name__ == "__main__":
    main()
