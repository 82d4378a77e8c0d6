"""Inference: classify the 10,000 MNIST test images with mlp, numpy and PyTorch.

    PYTHONPATH=. python bench/bench_infer.py [--quick] [--json OUT]

A float32 784-300-100-10 sigmoid model is trained briefly with mlp.train,
then copied into a vectorised numpy forward pass and a PyTorch eager model
(run under torch.no_grad()). Measured, on 1 and 2 threads, interleaved
round-robin (median [min-max] over the repeats):

* latency at batch 1: per-call microseconds of predict() on single rows,
  over many consecutive test rows;
* throughput: images/s classifying all 10,000 in one call, and in 10 calls
  of 1,000.

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
METRICS = ("latency_b1", "batch_10000", "batch_1000")


def make_predictors(model, np_model, t_model, torch, X, T):
    """impl -> (single_row(i), whole(), batched_1000()) callables."""
    rows_np = [X[i:i + 1] for i in range(X.shape[0])]
    batches_np = [X[i:i + 1000] for i in range(0, X.shape[0], 1000)]
    out = {
        "mlp": (lambda i: model.predict(rows_np[i], n_threads=T),
                lambda: model.predict(X, n_threads=T),
                lambda: [model.predict(b, n_threads=T) for b in batches_np]),
        "numpy": (lambda i: np_model.predict(rows_np[i]),
                  lambda: np_model.predict(X),
                  lambda: [np_model.predict(b) for b in batches_np]),
    }
    if torch is not None:
        # torch.from_numpy is zero-copy; it is part of what a caller does.
        out["torch"] = (lambda i: t_model.predict(torch.from_numpy(rows_np[i])),
                        lambda: t_model.predict(torch.from_numpy(X)),
                        lambda: [t_model.predict(torch.from_numpy(b)) for b in batches_np])
    return out


def latency_case(single, n_rows, T, torch, target, settle):
    state = {"i": 0}

    def measure():
        C.settle(settle)
        C.set_torch_threads(torch, T)
        calls, dt = 0, 0.0
        with C.threads(T):
            while dt < target:
                i0 = state["i"]
                t0 = C.now()
                for k in range(100):
                    single((i0 + k) % n_rows)
                dt += C.now() - t0
                calls += 100
                state["i"] = (i0 + 100) % n_rows
        return {"calls": calls, "seconds": dt, "us_per_call": dt / calls * 1e6,
                "images_per_s": calls / dt, "loadavg_1m": os.getloadavg()[0]}
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
    preds = {"mlp": model.predict(X), "numpy": np_model.predict(X)}
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
        pred = make_predictors(model, np_model, t_model, torch, X, T)
        for name, (single, whole, batched) in pred.items():  # warm-up
            C.set_torch_threads(torch, T)
            with C.threads(T):
                single(0), whole(), batched()
        groups.append(((T, "latency_b1"), {n: latency_case(p[0], len(X), T, torch, target, settle)
                                           for n, p in pred.items()}))
        groups.append(((T, "batch_10000"), {n: batch_case(p[1], len(X), T, torch, target, settle)
                                            for n, p in pred.items()}))
        groups.append(((T, "batch_1000"), {n: batch_case(p[2], len(X), T, torch, target, settle)
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
                "us_per_call": C.stats([r["us_per_call"] for r in rs]) if metric == "latency_b1" else None,
            }
        results.append(entry)

    impls = list(preds)
    rows = []
    for e in results:
        res = e["results"]
        if e["metric"] == "latency_b1":
            label, key, scale, unit = "batch 1", "us_per_call", 1.0, "us/call"
        else:
            label = "all 10000 at once" if e["metric"] == "batch_10000" else "10 x 1000"
            key, scale, unit = "images_per_s", 1.0, "images/s"
        med = {n: res[n][key]["median"] for n in impls}
        # Ratios are speed-ups of mlp: for latency, other / mlp; for throughput, mlp / other.
        def speedup(other):
            if other not in med:
                return "-"
            return C.fmt_ratio(med[other], med["mlp"]) if key == "us_per_call" else C.fmt_ratio(med["mlp"], med[other])
        rows.append([f"T={e['threads']}", label, unit] + [C.fmt_range(res[n][key], scale) for n in impls]
                    + [speedup("numpy"), speedup("torch")])
    print(C.table(["threads", "workload", "unit"] + [f"{n} median [min-max]" for n in impls]
                  + ["mlp vs numpy", "mlp vs torch"], rows, "lll" + "r" * (len(impls) + 2)))
    print("(ratios: how many times faster mlp is; >1x means mlp wins)")
    loads = [r["loadavg_1m"] for e in results for v in e["results"].values() for r in v["raw"]]
    print(f"load average (1 min) during the measurements: {min(loads):.2f}-{max(loads):.2f} on {os.cpu_count()} CPUs")

    if args.json:
        C.write_json(args.json, {"benchmark": "bench_infer", "args": vars(args), "system": info,
                                 "repeats": repeats, "target_seconds": target, "agreement": agreement,
                                 "results": results})


if __name__ == "__main__":
    main()
