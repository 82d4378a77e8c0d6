"""Inference: classify the 10,000 MNIST test images with mlp, numpy and PyTorch.

    PYTHONPATH=. python bench/bench_infer.py [--quick] [--json OUT]

A float32 784-300-100-10 sigmoid model is trained briefly with mlp.train,
then copied into a vectorised numpy forward pass and a PyTorch eager model
(run under torch.no_grad()). Measured, on 1 and 2 threads, interleaved
round-robin (median [min-max] over the repeats):

* per batch size (--batches, default 1, 8, 30, 64, 128, 256, 512, 1024
  and 4096 rows per call): images/s of predict() on consecutive blocks of
  that many test rows, and mlp's microseconds per call;
* images/s classifying all 10,000 in one call.

Finally the three implementations' predictions on the test set are compared.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
from _impls import NumpyMLP, TorchMLP  # noqa: E402

import mlp  # noqa: E402
from mlp.datasets import load_mnist  # noqa: E402

SIZES = [784, 300, 100, 10]


BATCHES = (1, 8, 30, 64, 128, 256, 512, 1024, 4096)


def make_predictors(model, np_model, t_model, torch, X, T, batch):
    """impl -> predict(i): classify the i-th block of `batch` consecutive test
    rows (the blocks cycle through the test set), and impl -> whole()."""
    blocks = [X[i:i + batch] for i in range(0, X.shape[0] - batch + 1, batch)]
    out = {
        "mlp": (lambda i: model.predict(blocks[i % len(blocks)], n_threads=T),
                lambda: model.predict(X, n_threads=T)),
        # mlp with every layer dense: what the first layer's skipping of zero
        # inputs gains (model.predict chooses it on MNIST's digits).
        "mlp_dense": (lambda i: dense_predict(model, blocks[i % len(blocks)], T),
                      lambda: dense_predict(model, X, T)),
        "numpy": (lambda i: np_model.predict(blocks[i % len(blocks)]),
                  lambda: np_model.predict(X)),
    }
    if torch is not None:
        # torch.from_numpy is zero-copy; it is part of what a caller does.
        out["torch"] = (lambda i: t_model.predict(torch.from_numpy(blocks[i % len(blocks)])),
                        lambda: t_model.predict(torch.from_numpy(X)))
    return out


def dense_predict(model, X, T):
    """model.predict(X, n_threads=T) with the sparse-input path off."""
    X = model._check_x(X)
    with model.locked():
        return np.argmax(model.forward_unchecked(X, T, sparse_input=False), axis=1)


def blocks_case(predict, batch, T, torch, target, settle):
    state = {"i": 0}
    per_round = max(1, 4096 // batch)

    def measure():
        C.settle(settle)
        C.set_torch_threads(torch, T)
        calls, dt = 0, 0.0
        with C.threads(T):
            while dt < target:
                i0 = state["i"]
                t0 = C.now()
                for k in range(per_round):
                    predict(i0 + k)
                dt += C.now() - t0
                calls += per_round
                state["i"] = i0 + per_round
        return {"calls": calls, "seconds": dt, "us_per_call": dt / calls * 1e6,
                "images_per_s": calls * batch / dt, "loadavg_1m": os.getloadavg()[0]}
    return measure


def batch_case(fn, n_images, T, torch, target, settle):
    def measure():
        C.settle(settle)
        C.set_torch_threads(torch, T)
        calls, dt = 0, 0.0
        with C.threads(T):
            while dt < target or calls < 2:
                t0 = C.now()
                fn()
                dt += C.now() - t0
                calls += 1
        return {"calls": calls, "seconds": dt, "ms_per_10000": dt / calls * 1e3,
                "images_per_s": calls * n_images / dt, "loadavg_1m": os.getloadavg()[0]}
    return measure


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few short repeats (well under a minute)")
    ap.add_argument("--json", metavar="OUT", help="write every raw repeat and the medians here")
    ap.add_argument("--repeats", type=int, help="repeats (default 7, quick 3)")
    ap.add_argument("--seconds", type=float, help="target seconds per measurement (default 0.5, quick 0.1)")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)),
                    help="comma-separated batch sizes (rows per predict call; default %(default)s)")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--train-iterations", type=int, help="mlp.train iterations for the model (default 5000, quick 2000)")
    ap.add_argument("--settle", type=float, default=0.12,
                    help="seconds to sleep before each multi-threaded measurement (see bench_train)")
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    args = ap.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 7)
    target = args.seconds or (0.1 if args.quick else 0.5)
    iterations = args.train_iterations or (2000 if args.quick else 5000)
    thread_counts = [int(t) for t in args.threads.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    dtype = np.dtype(args.dtype)

    torch = None if args.no_torch else C.import_torch()
    C.refresh_controller()
    train, _val, test = load_mnist()
    X = np.ascontiguousarray(test.images, dtype=dtype)
    y = test.labels

    info = C.system_info(torch)
    C.print_system_info(info)
    print()

    # Xavier init: same architecture and maths, but it trains in a few thousand
    # steps, so the prediction comparison is on a sensible model.
    model = mlp.Model(SIZES, activation="sigmoid", output="sigmoid", dtype=dtype, init="xavier",
                      seed=0)
    mlp.train(model, train.images, train.labels, iterations=iterations, batch_size=30,
              learning_rate=2.0, progress=False, seed=0, n_threads=1)
    np_model = NumpyMLP(model.weights, model.biases, dtype)
    t_model = TorchMLP(torch, model.weights, model.biases, dtype) if torch is not None else None
    t_model and t_model.net.eval()

    # Agreement on the whole test set.
    preds = {"mlp": model.predict(X), "mlp_dense": dense_predict(model, X, 1),
             "numpy": np_model.predict(X)}
    if torch is not None:
        preds["torch"] = t_model.predict(torch.from_numpy(X)).numpy()
    agreement = {"accuracy": {k: float(np.mean(p == y)) for k, p in preds.items()}, "disagreements": {}}
    names = list(preds)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            agreement["disagreements"][f"{a}-{b}"] = int(np.count_nonzero(preds[a] != preds[b]))
    # Near-ties may flip under different summation orders; count how close those were.
    out = model.forward(X)
    top2 = np.sort(out, axis=1)[:, -2:]
    agreement["near_ties_1e-5"] = int(np.count_nonzero(top2[:, 1] - top2[:, 0] < 1e-5))
    print(f"model: xavier init, {iterations} mlp.train iterations (batch 30, lr 2.0, {dtype.name}); test accuracy "
          + ", ".join(f"{k} {v:.4f}" for k, v in agreement["accuracy"].items()))
    print("predictions that differ: " + ", ".join(f"{k} {v}" for k, v in agreement["disagreements"].items())
          + f" of {len(y)} (rows whose top two outputs are within 1e-5: {agreement['near_ties_1e-5']})")
    if any(agreement["disagreements"].values()):
        print("NOTE: implementations disagree on some predictions (float rounding on near-ties if few)")
    print()

    groups = []
    for T in thread_counts:
        settle = args.settle if T > 1 else 0.0
        for batch in batches:
            pred = make_predictors(model, np_model, t_model, torch, X, T, batch)
            for name, (blocks, _whole) in pred.items():  # warm-up
                C.set_torch_threads(torch, T)
                with C.threads(T):
                    blocks(0)
            groups.append(((T, f"batch_{batch}"),
                           {n: blocks_case(p[0], batch, T, torch, target, settle)
                            for n, p in pred.items()}))
        groups.append(((T, "all_10000"), {n: batch_case(p[1], len(X), T, torch, target, settle)
                                          for n, p in pred.items()}))
    print(f"measuring ({repeats} repeats, {target:.2f} s per measurement)...", flush=True)
    raw = C.interleave(groups, repeats)

    results = []
    for (T, metric), per_impl in raw.items():
        entry = {"threads": T, "metric": metric, "results": {}}
        for name, rs in per_impl.items():
            entry["results"][name] = {
                "raw": rs,
                "images_per_s": C.stats([r["images_per_s"] for r in rs]),
                "us_per_call": C.stats([r["us_per_call"] for r in rs]) if "us_per_call" in rs[0] else None,
            }
        results.append(entry)

    impls = list(preds)
    rows = []
    for e in results:
        res = e["results"]
        label = "all 10000 at once" if e["metric"] == "all_10000" else e["metric"].replace("_", " ")
        med = {n: res[n]["images_per_s"]["median"] for n in impls}

        def speedup(other):
            return C.fmt_ratio(med["mlp"], med[other]) if other in med else "-"
        latency = (f"{res['mlp']['us_per_call']['median']:.1f}" if res["mlp"]["us_per_call"] else "-")
        rows.append([f"T={e['threads']}", label, latency]
                    + [C.fmt_range(res[n]["images_per_s"]) for n in impls]
                    + [speedup("mlp_dense"), speedup("numpy"), speedup("torch")])
    print(C.table(["threads", "rows per call", "mlp us/call"]
                  + [f"{n} images/s median [min-max]" for n in impls]
                  + ["mlp vs mlp_dense", "mlp vs numpy", "mlp vs torch"], rows,
                  "lll" + "r" * (len(impls) + 3)))
    print("(ratios: how many times faster mlp is; >1x means mlp wins)")
    loads = [r["loadavg_1m"] for e in results for v in e["results"].values() for r in v["raw"]]
    print(f"load average (1 min) during the measurements: {min(loads):.2f}-{max(loads):.2f} on {os.cpu_count()} CPUs")

    if args.json:
        C.write_json(args.json, {"benchmark": "bench_infer", "args": vars(args), "system": info,
                                 "repeats": repeats, "target_seconds": target, "agreement": agreement,
                                 "results": results})


if __name__ == "__main__":
    main()
