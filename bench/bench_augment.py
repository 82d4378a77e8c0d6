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
* training steps of the `augmented` preset's network with its recipe
  (784-800-800-10, batches of 128, its optimizer, dropout; mlp.train on all
  threads) with and without its distortions, per step and per sample.

The target: augmentation adds at most 15% to the preset's training step.
The last lines give it as measured (median of the per-repeat ratios, the two
runs adjacent in every repeat), and as predicted from the distortion speed
alone (microseconds per image on all threads / microseconds per trained
sample without augmentation).
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
from mlp.presets import PRESETS  # noqa: E402

PRESET = PRESETS["augmented"]


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


def train_case(X, y, batch_size, n_threads, iterations, augment):
    """mlp.train with the preset's network and recipe, augment given or None.

    Times the steps alone (History.time: from the first step to the last),
    so that train()'s one-off checks of X (with augment, a scan of its
    range) do not count as step time."""
    model = PRESET.model.build(seed=0)
    options = PRESET.training.replace(iterations=iterations, batch_size=batch_size,
                                      augment=augment)
    kwargs = {f: getattr(options, f) for f in options.__dataclass_fields__}

    def measure():
        history = mlp.train(model, X, y, **{**kwargs, "seed": 0}, progress=False,
                            n_threads=n_threads)
        dt = history.time[-1]
        samples = iterations * batch_size
        return {"steps": iterations, "samples": samples, "seconds": dt,
                "ms_per_step": dt / iterations * 1e3, "us_per_sample": dt / samples * 1e6,
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
    ap.add_argument("--batch-size", type=int, default=PRESET.training.batch_size,
                    help="training batch size (default: the augmented preset's, %(default)s)")
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
    train_names = {"plain": f"train step, {threads} threads",
                   "augmented": f"train step with augment, {threads} threads"}
    if not args.no_train:
        # Iterations for ~target seconds with augment (the longer of the two),
        # calibrated once; the calibration is the warm-up.
        iterations, _ = C.calibrate(
            lambda units: train_case(train.images, train.labels, args.batch_size, threads,
                                     units, PRESET.training.augment)()["seconds"],
            target, start=4)
        cases[train_names["plain"]] = train_case(train.images, train.labels, args.batch_size,
                                                 threads, iterations, None)
        cases[train_names["augmented"]] = train_case(
            train.images, train.labels, args.batch_size, threads, iterations,
            PRESET.training.augment)
    results = C.round_robin(cases, repeats)

    rows = []
    medians = {}
    for name, runs in results.items():
        if name in train_names.values():
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

    if train_names["plain"] in results:
        network = "-".join(map(str, PRESET.model.layers))
        print(f"\nThe augmented preset's training ({network}, float32, batch "
              f"{args.batch_size}, {threads} threads), {iterations} steps per repeat; "
              f"augment = {PRESET.training.augment!r}")
        rows = []
        for label, name in train_names.items():
            step = C.stats([r["ms_per_step"] for r in results[name]])
            sample = C.stats([r["us_per_sample"] for r in results[name]])
            medians[name] = {"ms_per_step": step["median"], "us_per_sample": sample["median"]}
            rows.append([label, C.fmt_range(step), C.fmt_range(sample)])
        print(C.table(["training", "ms/step", "us/sample"], rows))
        # Paired: the two cases run next to each other in every repeat.
        ratios = C.stats([a["seconds"] / p["seconds"] for a, p in
                          zip(results[train_names["augmented"]], results[train_names["plain"]])])
        medians["augmented / plain step"] = ratios["median"]
        print(f"\nstep time with augment / without (target <= 1.15): "
              f"{C.fmt_range(ratios)}")
        plain_us = medians[train_names["plain"]]["us_per_sample"]
        rows = []
        for name in augments:
            key = f"{name}, {threads} threads" if threads > 1 else f"{name}, 1 thread"
            # Distorting on the same cores, one image per trained sample.
            us_wall = medians[key]["us_per_image_per_core"] / threads
            rows.append([name, f"{us_wall:.2f}", f"{100 * us_wall / plain_us:.1f}%"])
        print("predicted from the distortion speed alone:")
        print(C.table(["distortion", f"us/image on {threads} threads", "added to a step"], rows))
    print(f"\nload average (1 min) at the end: {os.getloadavg()[0]:.2f}")
    if args.json:
        C.write_json(args.json, {"info": info, "args": vars(args), "results": results,
                                 "medians": medians})


if __name__ == "__main__":
    main()
