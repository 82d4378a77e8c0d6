"""Inference with compute_dtype="bfloat16": mlp against PyTorch's bfloat16, both with defaults.

    PYTHONPATH=. python bench/bench_bf16_infer.py [--quick] [--json OUT]

A 784-300-100-10 model (relu, softmax: mlp.Model's defaults) is trained
briefly on MNIST with mlp.train and copied into PyTorch. Measured, rows/s of
the softmax outputs on consecutive blocks of `batch` rows (--batches,
default 1, 8, 64, 256, 1024, 4096 and 10000) of the 10,000 MNIST test
images and of dense N(0, 1) rows:

* ``mlp_bf16``: ``model.forward(X)`` with ``model.compute_dtype =
  "bfloat16"`` (the GEMMs' inputs rounded to bfloat16, float32 sums), on
  the threads mlp chooses by the size of the call;
* ``mlp_f32``: the same model in float32, for reference;
* ``torch_autocast``: ``torch.autocast("cpu", dtype=torch.bfloat16)``
  around the float32 module under ``torch.inference_mode()``, as PyTorch's
  documentation shows it (float32 in and out);
* ``torch_bf16``: the module converted with ``.to(torch.bfloat16)``, each
  block converted to bfloat16 on the way in and the output to float32 on
  the way out (everything in bfloat16, also the elementwise maths).

PyTorch runs with torch.set_num_threads(os.cpu_count()). The ratio is
mlp_bf16 over the faster of the two PyTorch rows. Cases are interleaved
round-robin; the table gives medians over the repeats.
"""
from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
from bench_onnx_infer import (SIZES, blocks_case, inference_arguments,  # noqa: E402
                              inference_settings, make_model)

from mlp import _kernels  # noqa: E402
from mlp.datasets import load_mnist  # noqa: E402

IMPLS = ("mlp_bf16", "mlp_f32", "torch_autocast", "torch_bf16")


def torch_module(torch, model):
    layers = []
    for l, (w, b) in enumerate(zip(model.weights, model.biases)):
        lin = torch.nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.array(w, dtype=np.float32)))
            lin.bias.copy_(torch.from_numpy(np.array(b, dtype=np.float32).reshape(-1)))
        layers.append(lin)
        if l < len(model.weights) - 1:
            layers.append(torch.nn.ReLU())
    layers.append(torch.nn.Softmax(dim=1))
    return torch.nn.Sequential(*layers).eval()


def main(argv=None):
    args = inference_arguments(__doc__, "few short repeats (about a minute)").parse_args(argv)
    repeats, target, iterations, batches, inputs = inference_settings(args)

    torch = C.import_torch()
    C.set_torch_threads(torch, os.cpu_count())
    C.refresh_controller()
    train, _val, test = load_mnist()
    data = {"mnist": np.ascontiguousarray(test.images, dtype=np.float32),
            "dense": np.random.default_rng(1).standard_normal((10000, SIZES[0]),
                                                              dtype=np.float32)}
    info = C.system_info(torch)
    info["bf16_path"] = _kernels.bf16_path()
    C.print_system_info(info)
    print(f"mlp's bfloat16 GEMM path: {info['bf16_path']} (of {', '.join(_kernels.bf16_paths())})")

    f32 = make_model(train, iterations)
    bf16 = f32.copy()
    bf16.compute_dtype = "bfloat16"
    module = torch_module(torch, f32)
    module_bf16 = torch_module(torch, f32).to(torch.bfloat16)

    def torch_autocast(X):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return module(torch.from_numpy(X)).float().numpy()

    def torch_bf16(X):
        with torch.inference_mode():
            return module_bf16(torch.from_numpy(X).to(torch.bfloat16)).float().numpy()

    impls = {"mlp_bf16": bf16.forward, "mlp_f32": f32.forward,
             "torch_autocast": torch_autocast, "torch_bf16": torch_bf16}
    X = data["mnist"]
    reference = f32.forward(X)
    print(f"model: {'-'.join(map(str, SIZES))} relu/softmax, {iterations} mlp.train iterations; "
          "MNIST test accuracy " + ", ".join(
              f"{name} {np.mean(np.argmax(fn(X), axis=1) == test.labels):.4f}"
              for name, fn in impls.items()))
    print("max |output - float32 output| on MNIST: " + ", ".join(
        f"{name} {np.max(np.abs(fn(X) - reference)):.2g}" for name, fn in impls.items()
        if name != "mlp_f32"))
    print()

    groups = []
    for key in inputs:
        for batch in batches:
            cases = {impl: blocks_case(fn, data[key], batch, target) for impl, fn in impls.items()}
            for measure in cases.values():  # warm-up
                measure()
            groups.append(((key, batch), cases))
    print(f"measuring ({repeats} repeats, {target:.2f} s per measurement)...", flush=True)
    raw = C.interleave(groups, repeats)

    rows, results = [], []
    for (key, batch), per_impl in raw.items():
        s = {impl: C.stats([r["rows_per_s"] for r in rs]) for impl, rs in per_impl.items()}
        best_torch = max(s["torch_autocast"]["median"], s["torch_bf16"]["median"])
        results.append({"input": key, "batch": batch, "rows_per_s": s, "raw": per_impl})
        rows.append([key, batch] + [C.fmt_num(s[impl]["median"]) for impl in IMPLS]
                    + [C.fmt_ratio(s["mlp_bf16"]["median"], best_torch),
                       C.fmt_ratio(s["mlp_bf16"]["median"], s["mlp_f32"]["median"])])
    print(C.table(["input", "rows"] + [f"{impl} rows/s" for impl in IMPLS]
                  + ["mlp_bf16 / best torch", "mlp_bf16 / mlp_f32"], rows, "lr" + "r" * 6))
    loads = [r["loadavg_1m"] for e in results for v in e["raw"].values() for r in v]
    print(f"load average (1 min) during the measurements: {min(loads):.2f}-{max(loads):.2f} "
          f"on {os.cpu_count()} CPUs")
    if args.json:
        C.write_json(args.json, {"benchmark": "bench_bf16_infer", "args": vars(args),
                                 "system": info, "repeats": repeats, "target_seconds": target,
                                 "results": results})


if __name__ == "__main__":
    main()
