"""Training throughput with compute_dtype="bfloat16": mlp against its own float32 and PyTorch.

    PYTHONPATH=. python bench/bench_bf16.py [--quick] [--batches 64,256,1024,4096] [--json OUT]

A 784-300-100-10 ReLU network, softmax cross-entropy, plain SGD (constant
rate), 2 threads, batches drawn with replacement, on MNIST's training rows
(mostly zero pixels: mlp computes the first layer from the non-zeros) and on
dense random inputs of the same shape. Rows:

* mlp_f32:    mlp.train, compute_dtype=None;
* mlp_bf16:   mlp.train, compute_dtype="bfloat16";
* torch_f32:  PyTorch eager, nn.Linear/nn.ReLU, F.cross_entropy, torch.optim.SGD;
* torch_bf16: the same loop with the forward pass and the loss under
              torch.autocast("cpu", dtype=torch.bfloat16), as PyTorch's
              documentation shows it.

All run in this one process, interleaved (bench/_common.interleave); the
ratios are of medians from the same run. See bench/README.md.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402

import mlp  # noqa: E402
from mlp import _kernels  # noqa: E402
from mlp.datasets import load_mnist  # noqa: E402

SIZES = [784, 300, 100, 10]
LR = 0.05
IMPLS = ("mlp_f32", "mlp_bf16", "torch_f32", "torch_bf16")
BATCHES = (64, 256, 1024, 4096)
DATASETS = ("mnist", "dense")


class TorchNet:
    """The eager PyTorch loop a user would write, optionally under CPU autocast."""

    def __init__(self, torch, init, X, labels, autocast):
        self.torch = torch
        layers = []
        for l, (w, b) in enumerate(zip(init.weights, init.biases)):
            lin = torch.nn.Linear(w.shape[1], w.shape[0])
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(np.array(w, dtype=np.float32)))
                lin.bias.copy_(torch.from_numpy(np.array(b, dtype=np.float32)))
            layers.append(lin)
            if l < len(init.weights) - 1:
                layers.append(torch.nn.ReLU())
        self.net = torch.nn.Sequential(*layers)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=LR)
        self.autocast = autocast
        self.Xt = torch.from_numpy(X)
        self.yt = torch.from_numpy(labels)

    def train_steps(self, index_batches):
        t, F = self.torch, self.torch.nn.functional
        for idx in index_batches:
            if self.autocast:
                with t.autocast("cpu", dtype=t.bfloat16):
                    loss = F.cross_entropy(self.net(self.Xt[idx]), self.yt[idx])
            else:
                loss = F.cross_entropy(self.net(self.Xt[idx]), self.yt[idx])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()


def make_runners(batch, threads, X, labels, init, torch, impls, seed):
    """dict impl -> run(n_steps) -> seconds, fresh models from the same start."""
    runners = {}
    n = X.shape[0]
    rng = np.random.default_rng(seed)
    for name, compute_dtype in (("mlp_f32", None), ("mlp_bf16", "bfloat16")):
        if name not in impls:
            continue
        model = init.copy()
        model.compute_dtype = compute_dtype
        seeds = iter(range(seed * 1000003, seed * 1000003 + 10**6))

        def run_mlp(steps, model=model, seeds=seeds):
            with C.threads(threads):
                t0 = C.now()
                mlp.train(model, X, labels, iterations=steps, batch_size=batch,
                          optimizer=mlp.SGD(LR), lr_schedule="constant",
                          sampling="replacement", progress=False, n_threads=threads,
                          seed=next(seeds))
                return C.now() - t0

        runners[name] = run_mlp
    if torch is not None:
        for name, autocast in (("torch_f32", False), ("torch_bf16", True)):
            if name not in impls:
                continue
            net = TorchNet(torch, init, X, labels, autocast)

            def run_torch(steps, net=net):
                C.set_torch_threads(torch, threads)
                with C.threads(threads):
                    t0 = C.now()
                    net.train_steps(torch.from_numpy(rng.integers(0, n, (steps, batch))))
                    return C.now() - t0

            runners[name] = run_torch
    return runners


def _measure(run, chunk, batch, settle, target):
    """One measurement: calls of `chunk` steps until `target` seconds have passed."""
    def measure():
        C.settle(settle)
        run(max(1, chunk // 8))  # untimed: wakes this implementation's threads
        steps, dt = 0, 0.0
        while dt < target:
            dt += run(chunk)
            steps += chunk
        return {"steps": steps, "seconds": dt, "steps_per_s": steps / dt,
                "samples_per_s": steps * batch / dt, "loadavg_1m": os.getloadavg()[0]}
    return measure


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few short repeats")
    ap.add_argument("--json", metavar="OUT", help="write every raw repeat and the medians here")
    ap.add_argument("--repeats", type=int, help="repeats (default 5, quick 2)")
    ap.add_argument("--seconds", type=float,
                    help="target seconds per measurement (default 0.5, quick 0.15)")
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)),
                    help="comma-separated batch sizes (default 64,256,1024,4096)")
    ap.add_argument("--data", default=",".join(DATASETS), help="mnist, dense or both")
    ap.add_argument("--threads", type=int, default=2, help="threads for every row (default 2)")
    ap.add_argument("--impls", default=",".join(IMPLS), help=f"subset of {','.join(IMPLS)}")
    ap.add_argument("--settle", type=float, default=0.12,
                    help="seconds to sleep before each measurement so the previous pool's "
                         "spinning workers go idle (default 0.12)")
    args = ap.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 5)
    target = args.seconds or (0.15 if args.quick else 0.5)
    batches = [int(b) for b in args.batches.split(",")]
    datasets = [d for d in args.data.split(",") if d]
    impls = [i for i in args.impls.split(",") if i]
    if set(impls) - set(IMPLS) or set(datasets) - set(DATASETS):
        ap.error(f"--impls takes {IMPLS}, --data {DATASETS}")
    torch = C.import_torch() if any(i.startswith("torch") for i in impls) else None
    if torch is None:
        impls = [i for i in impls if not i.startswith("torch")]
    C.refresh_controller()

    train, _val, _test = load_mnist()
    labels = np.ascontiguousarray(train.labels, dtype=np.int64)
    inputs = {}
    if "mnist" in datasets:
        inputs["mnist"] = np.ascontiguousarray(train.images, dtype=np.float32)
    if "dense" in datasets:
        inputs["dense"] = np.random.default_rng(0).random((len(labels), SIZES[0]),
                                                          dtype=np.float32)

    info = C.system_info(torch)
    info["bf16_path"] = _kernels.bf16_path()
    C.print_system_info(info)
    print(f"mlp's bfloat16 GEMM path: {info['bf16_path']} (of {', '.join(_kernels.bf16_paths())})")
    print()

    init = mlp.Model(SIZES, seed=0)
    configs, groups = [], []
    print(f"calibrating {len(datasets) * len(batches)} configurations x {len(impls)} rows "
          f"(target {target:.2f} s per measurement, {repeats} repeats)...", flush=True)
    settle = args.settle if args.threads > 1 else 0.0
    for data_name in datasets:
        for batch in batches:
            cfg = {"data": data_name, "batch": batch, "threads": args.threads,
                   "steps_per_measurement": {}}
            runners = make_runners(batch, args.threads, inputs[data_name], labels, init, torch,
                                   impls, seed=len(configs) + 1)
            cases = {}
            for name in impls:
                C.settle(settle)
                steps, overhead = C.calibrate(runners[name], target)
                chunk = C.steps_per_measurement(steps, overhead, target)
                cfg["steps_per_measurement"][name] = chunk
                cases[name] = _measure(runners[name], chunk, batch, settle, target)
            groups.append((len(configs), cases))
            configs.append(cfg)

    print("measuring...", flush=True)
    raw = C.interleave(groups, repeats)
    for i, cfg in enumerate(configs):
        cfg["results"] = {name: {"raw": res,
                                 "samples_per_s": C.stats([r["samples_per_s"] for r in res])}
                          for name, res in raw[i].items()}

    print()
    print(f"Training samples/s, median [min-max] over {repeats} repeats, {SIZES} ReLU, "
          f"cross-entropy, plain SGD, {args.threads} threads:")
    rows = []
    for cfg in configs:
        res = cfg["results"]
        med = {k: v["samples_per_s"]["median"] for k, v in res.items()}
        rows.append([cfg["data"], cfg["batch"]]
                    + [C.fmt_range(res[i]["samples_per_s"]) if i in res else "-" for i in IMPLS]
                    + [C.fmt_ratio(med.get("mlp_bf16"), med.get("torch_bf16")),
                       C.fmt_ratio(med.get("mlp_bf16"), med.get("mlp_f32")),
                       C.fmt_ratio(med.get("mlp_f32"), med.get("torch_f32")),
                       C.fmt_ratio(med.get("torch_bf16"), med.get("torch_f32"))])
    print(C.table(["data", "batch", *IMPLS, "mlp bf16/torch bf16", "mlp bf16/mlp f32",
                   "mlp f32/torch f32", "torch bf16/f32"], rows, "lr" + "r" * (len(IMPLS) + 4)))
    loads = [r["loadavg_1m"] for c in configs for v in c["results"].values() for r in v["raw"]]
    print(f"load average (1 min) during the measurements: {min(loads):.2f}-{max(loads):.2f} "
          f"on {os.cpu_count()} CPUs")
    if args.json:
        C.write_json(args.json, {"benchmark": "bench_bf16", "args": vars(args),
                                 "repeats": repeats, "target_seconds": target,
                                 "layer_sizes": SIZES, "learning_rate": LR, "system": info,
                                 "configs": configs})


if __name__ == "__main__":
    main()
