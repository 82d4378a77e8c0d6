"""Inference: mlp against onnxruntime running mlp's own ONNX export, both with defaults.

    PYTHONPATH=. python bench/bench_onnx_infer.py [--quick] [--json OUT]

A float32 784-300-100-10 model (relu, softmax: mlp.Model's defaults) is
trained briefly on MNIST with mlp.train and exported with Model.to_onnx;
onnxruntime runs that file in an InferenceSession with the CPU provider
and default SessionOptions, and mlp runs with its defaults (no n_threads).
What a user gets from each, without tuning either.

For each input and batch (--batches, default 1, 8, 64, 256, 1024, 4096 and
10000 rows per call) it measures rows/s of

* ``forward``: ``model.forward(X)`` (what predict_proba returns for a
  softmax model) against ``session.run(None, {"input": X})[0]``;
* ``predict``: ``model.predict(X)`` against the session's output's argmax,

on consecutive blocks of that many rows of two inputs: the 10,000 MNIST
test images (mostly zeros, which mlp's first layer skips) and dense
N(0, 1) rows. Cases are interleaved round-robin; the table gives the median
over the repeats and the ratio mlp / onnxruntime (>1x: mlp is faster).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402

import mlp  # noqa: E402
from mlp.datasets import load_mnist  # noqa: E402

SIZES = [784, 300, 100, 10]
BATCHES = (1, 8, 64, 256, 1024, 4096, 10000)


def make_model(train, iterations):
    model = mlp.Model(SIZES, seed=0)
    if iterations:
        mlp.train(model, train.images, train.labels, iterations=iterations, batch_size=64,
                  learning_rate=0.1, progress=False, seed=0)
    return model


def make_session(ort, model, directory):
    path = os.path.join(directory, "model.onnx")
    model.to_onnx(path)
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def blocks_case(call, X, batch, target):
    """A measurement of call(block) over consecutive blocks of `batch` rows of X."""
    blocks = [X[i:i + batch] for i in range(0, X.shape[0] - batch + 1, batch)]
    state = {"i": 0}
    per_round = max(1, 2048 // batch)

    def measure():
        calls, dt = 0, 0.0
        while dt < target or calls < 2:
            i0 = state["i"]
            t0 = C.now()
            for k in range(per_round):
                call(blocks[(i0 + k) % len(blocks)])
            dt += C.now() - t0
            calls += per_round
            state["i"] = i0 + per_round
        return {"calls": calls, "seconds": dt, "us_per_call": dt / calls * 1e6,
                "rows_per_s": calls * batch / dt, "loadavg_1m": os.getloadavg()[0]}
    return measure


def inference_arguments(description, quick_help):
    """The parser of the options every inference benchmark takes (this one's
    and bench_bf16_infer.py's): --quick, --json, --repeats, --seconds,
    --batches, --inputs, --train-iterations."""
    ap = argparse.ArgumentParser(description=description,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument("--json", metavar="OUT", help="write every raw repeat and the medians here")
    ap.add_argument("--repeats", type=int, help="repeats (default 5, quick 3)")
    ap.add_argument("--seconds", type=float,
                    help="target seconds per measurement (default 0.3, quick 0.05)")
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)),
                    help="comma-separated rows per call (default %(default)s)")
    ap.add_argument("--inputs", default="mnist,dense",
                    help="comma-separated inputs: mnist (test images), dense (N(0,1) rows)")
    ap.add_argument("--train-iterations", type=int,
                    help="mlp.train iterations for the model (default 1000, quick 200; 0: untrained)")
    return ap


def inference_settings(args):
    """(repeats, seconds per measurement, training iterations, batches, inputs) from args."""
    repeats = args.repeats or (3 if args.quick else 5)
    target = args.seconds or (0.05 if args.quick else 0.3)
    iterations = (args.train_iterations if args.train_iterations is not None
                  else (200 if args.quick else 1000))
    return (repeats, target, iterations, [int(b) for b in args.batches.split(",")],
            args.inputs.split(","))


def main(argv=None):
    ap = inference_arguments(__doc__, "few short repeats (well under a minute)")
    ap.add_argument("--calls", default="forward,predict",
                    help="comma-separated calls to measure: forward, predict")
    args = ap.parse_args(argv)
    repeats, target, iterations, batches, inputs = inference_settings(args)
    calls = args.calls.split(",")

    import onnxruntime as ort

    C.refresh_controller()
    train, _val, test = load_mnist()
    data = {"mnist": np.ascontiguousarray(test.images, dtype=np.float32),
            "dense": np.random.default_rng(1).standard_normal((10000, SIZES[0]), dtype=np.float32)}

    info = C.system_info()
    info["onnxruntime"] = ort.__version__
    C.print_system_info(info)
    print(f"onnxruntime {ort.__version__} (CPUExecutionProvider, default SessionOptions)")
    print()

    model = make_model(train, iterations)
    with tempfile.TemporaryDirectory() as tmp:
        session = make_session(ort, model, tmp)
    name = session.get_inputs()[0].name

    def ort_forward(X):
        return session.run(None, {name: X})[0]

    impls = {
        "forward": {"mlp": model.forward, "onnxruntime": ort_forward},
        "predict": {"mlp": model.predict,
                    "onnxruntime": lambda X: np.argmax(ort_forward(X), axis=1)},
    }
    agreement = {}
    for key in inputs:
        X = data[key]
        a, b = model.forward(X), ort_forward(X)
        agreement[key] = {"max_abs_difference": float(np.max(np.abs(a - b))),
                          "predictions_differ": int(np.count_nonzero(
                              np.argmax(a, axis=1) != np.argmax(b, axis=1)))}
    acc = float(np.mean(model.predict(data["mnist"]) == test.labels))
    print(f"model: {'-'.join(map(str, SIZES))} relu/softmax float32, {iterations} mlp.train "
          f"iterations (batch 64); MNIST test accuracy {acc:.4f}")
    print("mlp against onnxruntime outputs: " + "; ".join(
        f"{k}: max |difference| {v['max_abs_difference']:.2g}, {v['predictions_differ']} "
        f"predictions differ" for k, v in agreement.items()))
    print()

    groups = []
    for key in inputs:
        for call in calls:
            for batch in batches:
                cases = {impl: blocks_case(fn, data[key], batch, target)
                         for impl, fn in impls[call].items()}
                for measure in cases.values():  # warm-up
                    measure()
                groups.append(((key, call, batch), cases))
    print(f"measuring ({repeats} repeats, {target:.2f} s per measurement)...", flush=True)
    raw = C.interleave(groups, repeats)

    rows, results = [], []
    for (key, call, batch), per_impl in raw.items():
        s = {impl: C.stats([r["rows_per_s"] for r in rs]) for impl, rs in per_impl.items()}
        us = C.stats([r["us_per_call"] for r in per_impl["mlp"]])["median"]
        results.append({"input": key, "call": call, "batch": batch, "rows_per_s": s,
                        "raw": per_impl})
        rows.append([key, call, batch, f"{us:.1f}", C.fmt_range(s["mlp"]),
                     C.fmt_range(s["onnxruntime"]),
                     C.fmt_ratio(s["mlp"]["median"], s["onnxruntime"]["median"])])
    print(C.table(["input", "call", "rows", "mlp us/call", "mlp rows/s median [min-max]",
                   "onnxruntime rows/s", "mlp/ort"], rows, "llrrrrr"))
    print("(mlp/ort: how many times faster mlp is; >1x means mlp wins)")
    loads = [r["loadavg_1m"] for e in results for v in e["raw"].values() for r in v]
    print(f"load average (1 min) during the measurements: {min(loads):.2f}-{max(loads):.2f} "
          f"on {os.cpu_count()} CPUs")
    if args.json:
        C.write_json(args.json, {"benchmark": "bench_onnx_infer", "args": vars(args),
                                 "system": info, "repeats": repeats, "target_seconds": target,
                                 "agreement": agreement, "results": results})


if __name__ == "__main__":
    main()
