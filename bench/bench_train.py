"""Training throughput of mlp against the notebook, numpy, PyTorch and the GEMM bound.

    PYTHONPATH=. python bench/bench_train.py [--quick] [--json OUT]

Every implementation trains the same 784-300-100-10 sigmoid/MSE network with
SGD at learning rate 2.0 on real MNIST, batches drawn with replacement. All
of them run in this one process, interleaved: each repeat visits every
configuration and, inside it, every implementation once (rotating the
order), so load from other processes hits all of them alike. Figures are
medians with [min-max] over the repeats. See bench/README.md.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
import notebook_numpy as nb  # noqa: E402
from _impls import NumpyMLP, TorchClassifier, TorchMLP  # noqa: E402

import mlp  # noqa: E402
from mlp import _kernels  # noqa: E402
from mlp._kernels import FEATURE_MAJOR_MAX_BATCH  # noqa: E402
from mlp.datasets import load_mnist  # noqa: E402

SIZES = [784, 300, 100, 10]
LR = 2.0
IMPLS = ("notebook", "numpy", "mlp", "mlp_kernel", "mlp_dense", "torch", "gemm_bound", "gemm_split")
CONFIGS = [(np.float64, 30), (np.float32, 30), (np.float32, 128), (np.float32, 256)]


def step_flops(sizes, batch):
    """FLOPs of the 8 GEMMs of one training step (2*m*n*k each).

    Per layer l (fan_in -> fan_out): forward Z = A W^T and weight gradient
    dW = D^T A; for l > 0 also the input gradient D_prev = D W (the first
    layer's input gradient is never needed)."""
    total = 0
    for l, (fin, fout) in enumerate(zip(sizes[:-1], sizes[1:])):
        gemms = 3 if l > 0 else 2
        total += gemms * 2 * batch * fin * fout
    return total


def _notebook_model(dtype, seed=None):
    return mlp.Model(SIZES, activation="sigmoid", output="sigmoid", init="normal", dtype=dtype,
                     seed=seed)


def _plain_sgd_steps(model, X, labels, order, batch, work, losses, n_threads, sparse_input=None):
    """The compiled loop mlp.train runs for plain SGD at a constant rate, called
    directly; sparse_input=False keeps the first layer's products dense."""
    steps = -(-len(order) // batch)
    data = _kernels.TrainingData(X, labels, batch_size=batch,
                                 feature_major=batch <= FEATURE_MAJOR_MAX_BATCH,
                                 sparse_input=sparse_input)
    run = _kernels.TrainingRun(model._network, data, loss=_kernels.LOSSES["mse"],
                               rule=mlp.SGD(LR).kernel_rule(), n_workers=n_threads, work=work)
    return _kernels.train_steps(run, order, np.full(steps, LR), 0, losses)


# ---------------------------------------------------------------------------
# Runners: run(n_steps) -> elapsed seconds, with the thread count applied
# ---------------------------------------------------------------------------

def make_runners(dtype, batch, n_threads, X, labels, init_model, torch, seed):
    """dict impl -> run(n_steps) for one configuration; fresh models each."""
    runners = {}
    n = X.shape[0]
    rng = np.random.default_rng(seed)
    weights = [np.array(w, dtype=np.float64) for w in init_model.weights]
    biases = [np.array(b, dtype=np.float64) for b in init_model.biases]

    # notebook: its own Model class, seeded RandomState for get_batch.
    nb_model = nb.Model(SIZES, dtype=dtype, rs=np.random.RandomState(seed))
    nb_model.weights = [w.astype(dtype) for w in weights]
    nb_model.biases = [b.reshape(1, -1).astype(dtype) for b in biases]
    nb_rs = np.random.RandomState(seed)

    def run_notebook(steps):
        with C.threads(n_threads), np.errstate(over="ignore"):
            t0 = C.now()
            nb.train(nb_model, X, labels, steps, batch, LR, nb_rs)
            return C.now() - t0

    runners["notebook"] = run_notebook

    np_model = NumpyMLP(weights, biases, dtype)

    def run_numpy(steps):
        with C.threads(n_threads):
            t0 = C.now()
            idx = rng.integers(0, n, size=(steps, batch))
            np_model.train_steps(X, labels, idx, LR)
            return C.now() - t0

    runners["numpy"] = run_numpy

    m = _notebook_model(dtype)
    m._params[...] = init_model._params
    seeds = iter(range(seed * 1000003, seed * 1000003 + 10**6))

    def run_mlp(steps):
        with C.threads(n_threads):
            t0 = C.now()
            mlp.train(m, X, labels, iterations=steps, batch_size=batch, learning_rate=LR,
                      sampling="replacement", progress=False, n_threads=n_threads,
                      seed=next(seeds))
            return C.now() - t0

    runners["mlp"] = run_mlp

    # mlp_kernel: the same compiled loop mlp.train runs, called directly (no
    # input validation, no per-interval bookkeeping): shows mlp.train's overhead.
    mk = _notebook_model(dtype)
    mk._params[...] = init_model._params
    work = np.empty(_kernels.workspace_size(mk._sizes, batch), dtype=dtype)

    def run_mlp_kernel(steps):
        # As mlp.train runs it: n_threads workers, each on a 1-thread BLAS.
        with C.threads(1):
            t0 = C.now()
            order = rng.integers(0, n, size=steps * batch, dtype=np.int64)
            losses = np.empty(steps)
            _plain_sgd_steps(mk, X, labels, order, batch, work, losses, n_threads)
            return C.now() - t0

    runners["mlp_kernel"] = run_mlp_kernel

    # mlp_dense: that loop with every layer's products as GEMMs, also where
    # mlp.train computes MNIST's first layer from the non-zero pixels; its
    # share of the sgemm peak is the GEMM efficiency of the dense step.
    md = _notebook_model(dtype)
    md._params[...] = init_model._params

    def run_mlp_dense(steps):
        with C.threads(1):
            t0 = C.now()
            order = rng.integers(0, n, size=steps * batch, dtype=np.int64)
            losses = np.empty(steps)
            _plain_sgd_steps(md, X, labels, order, batch, work, losses, n_threads,
                             sparse_input=False)
            return C.now() - t0

    runners["mlp_dense"] = run_mlp_dense

    if torch is not None:
        tm = TorchMLP(torch, weights, biases, dtype)
        tm.set_data(X, labels, LR)
        gen = torch.Generator().manual_seed(seed)

        def run_torch(steps):
            C.set_torch_threads(torch, n_threads)
            with C.threads(n_threads):
                t0 = C.now()
                idx = torch.randint(0, n, (steps, batch), generator=gen)
                tm.train_steps(idx)
                return C.now() - t0

        runners["torch"] = run_torch

    gb_params = init_model._params.astype(dtype)
    gb_work = np.empty(_kernels.workspace_size(init_model._sizes, batch), dtype=dtype)
    gb_sizes = init_model._sizes
    fm = batch <= FEATURE_MAJOR_MAX_BATCH

    # gemm_bound: the step's GEMMs back to back through the BLAS, which
    # spreads each over n_threads threads itself (the GEMM bound).
    def run_gemm_bound(steps):
        with C.threads(n_threads):
            t0 = C.now()
            _kernels.gemm_bound_steps(gb_params, gb_sizes, batch, gb_work, steps, fm, 1)
            return C.now() - t0

    runners["gemm_bound"] = run_gemm_bound

    # gemm_split: the same GEMMs the way mlp runs them, each layer's units
    # split over n_threads workers that call a 1-thread BLAS: mlp's own ceiling.
    def run_gemm_split(steps):
        with C.threads(1):
            t0 = C.now()
            _kernels.gemm_bound_steps(gb_params, gb_sizes, batch, gb_work, steps, fm, n_threads)
            return C.now() - t0

    runners["gemm_split"] = run_gemm_split
    return runners


# ---------------------------------------------------------------------------
# Same-step check: every implementation computes the same SGD step
# ---------------------------------------------------------------------------

def check_same_step(X, labels, init_model, torch):
    """One float64 step at batch 30 from the same parameters and batch in every
    implementation; the max abs difference of the resulting parameters from
    mlp.training_step's. Guards against benchmarking different maths."""
    idx = np.random.default_rng(1).integers(0, X.shape[0], size=30)
    X64 = X[idx].astype(np.float64)
    Y = np.zeros((30, 10))
    Y[np.arange(30), labels[idx]] = 1
    ref = _notebook_model(np.float64)
    ref._params[...] = init_model._params
    mlp.training_step(ref, X64, Y, LR, "mse")
    weights = [np.array(w, dtype=np.float64) for w in init_model.weights]
    biases = [np.array(b, dtype=np.float64) for b in init_model.biases]

    def diff(ws, bs):
        return max(max(float(np.max(np.abs(np.asarray(a).reshape(r.shape) - r))) for a, r in zip(ws, ref.weights)),
                   max(float(np.max(np.abs(np.asarray(a).reshape(r.shape) - r))) for a, r in zip(bs, ref.biases)))

    out = {}
    m = nb.Model(SIZES)
    m.weights = [w.copy() for w in weights]
    m.biases = [b.reshape(1, -1).copy() for b in biases]
    with np.errstate(over="ignore"):
        nb.training_step(m, X64, Y, LR)
    out["notebook"] = diff(m.weights, m.biases)
    npm = NumpyMLP(weights, biases, np.float64)
    npm.train_steps(X64, labels[idx], np.arange(30)[None, :], LR)
    out["numpy"] = diff(npm.W, npm.b)
    if torch is not None:
        tm = TorchMLP(torch, weights, biases, np.float64)
        tm.set_data(X64, labels[idx], LR)
        tm.train_steps(torch.arange(30)[None, :])
        lin = [l for l in tm.net if isinstance(l, torch.nn.Linear)]
        out["torch"] = diff([l.weight.detach().numpy() for l in lin], [l.bias.detach().numpy() for l in lin])
    return out


# ---------------------------------------------------------------------------
# Optimizers: the default preset's ReLU/softmax network, float32, per optimizer
# ---------------------------------------------------------------------------

OPT_BATCHES = (64, 256)
OPT_THREADS = 2
# name -> (mlp.train keyword arguments, torch.optim factory or None)
OPT_CASES = {
    "sgd": (dict(optimizer=mlp.SGD(0.05)), lambda t: lambda g: t.optim.SGD(g, lr=0.05)),
    "momentum": (dict(optimizer=mlp.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)),
                 lambda t: lambda g: t.optim.SGD(g, lr=0.05, momentum=0.9, nesterov=True,
                                                 weight_decay=5e-4)),
    "adam": (dict(optimizer=mlp.Adam(1e-3)), lambda t: lambda g: t.optim.Adam(g, lr=1e-3)),
    "dropout": (dict(optimizer=mlp.SGD(0.05), dropout=0.5, input_dropout=0.2), None),
}


def optimizer_runners(batch, X, labels, torch, seed):
    """dict "mlp_<case>" / "torch_<case>" -> run(n_steps) on 2 threads."""
    init = mlp.Model(SIZES, seed=0)
    weights = [np.array(w) for w in init.weights]
    biases = [np.array(b) for b in init.biases]
    rng = np.random.default_rng(seed)
    runners = {}
    for case, (kwargs, torch_factory) in OPT_CASES.items():
        model = init.copy()
        seeds = iter(range(seed * 1000003, seed * 1000003 + 10**6))

        def run_mlp(steps, model=model, kwargs=kwargs, seeds=seeds):
            with C.threads(OPT_THREADS):
                t0 = C.now()
                mlp.train(model, X, labels, iterations=steps, batch_size=batch,
                          lr_schedule="constant", sampling="replacement", progress=False,
                          n_threads=OPT_THREADS, seed=next(seeds), **kwargs)
                return C.now() - t0

        runners[f"mlp_{case}"] = run_mlp
        if torch is not None and torch_factory is not None:
            net = TorchClassifier(torch, weights, biases, torch_factory(torch))
            net.set_data(X, labels)

            def run_torch(steps, net=net):
                C.set_torch_threads(torch, OPT_THREADS)
                with C.threads(OPT_THREADS):
                    t0 = C.now()
                    net.train_steps(torch.from_numpy(rng.integers(0, len(X), (steps, batch))))
                    return C.now() - t0

            runners[f"torch_{case}"] = run_torch
    return runners


def _paired_time_ratio(results, case):
    """Median over the repeats of case's step time over plain SGD's in the
    same repeat (interleave runs both within seconds of each other), or None."""
    ours, plain = results.get(f"mlp_{case}"), results.get("mlp_sgd")
    if ours is None or plain is None:
        return None
    return float(np.median([p["steps_per_s"] / o["steps_per_s"]
                            for o, p in zip(ours["raw"], plain["raw"])]))


def _optimizer_table(opt_configs):
    rows = []
    for cfg in opt_configs:
        med = {k: v["steps_per_s"]["median"] for k, v in cfg["results"].items()}
        plain = med.get("mlp_sgd")
        rows.append([f"float32 B={cfg['batch']} T={OPT_THREADS}"]
                    + [C.fmt_num(med.get(f"mlp_{c}")) for c in OPT_CASES]
                    + [C.fmt_num(med.get(f"torch_{c}")) for c in ("sgd", "momentum", "adam")]
                    + [f"{C.fmt_ratio(plain, med.get(f'mlp_{c}'))} "
                       f"({C.fmt_ratio(_paired_time_ratio(cfg['results'], c), 1.0)})"
                       for c in ("momentum", "adam", "dropout")]
                    + [C.fmt_ratio(med.get(f"mlp_{c}"), med.get(f"torch_{c}"))
                       for c in ("sgd", "momentum", "adam")])
    return ("Optimizers (784-300-100-10 ReLU/softmax/cross-entropy): steps/s (medians); step "
            "time against plain SGD, as the ratio of the medians and (in brackets) the median "
            "of each repeat's own ratio, the two runs seconds apart; mlp against PyTorch with "
            "the same optimizer\n"
            + C.table(["config"] + [f"mlp {c}" for c in OPT_CASES]
                      + [f"torch {c}" for c in ("sgd", "momentum", "adam")]
                      + ["momentum/sgd time", "adam/sgd time", "dropout/sgd time",
                         "mlp/torch sgd", "mlp/torch momentum", "mlp/torch adam"], rows))


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few short repeats (about a minute)")
    ap.add_argument("--json", metavar="OUT", help="write every raw repeat and the medians here")
    ap.add_argument("--repeats", type=int, help="repeats per implementation (default 7, quick 3)")
    ap.add_argument("--seconds", type=float,
                    help="target seconds per measurement (default 0.5, quick 0.1)")
    ap.add_argument("--batches", metavar="B1,B2,...",
                    help="float32 batch sizes to measure instead of the default configurations "
                         "(float64 and float32 at batch 30, float32 at 128 and 256), e.g. "
                         "1,8,30,64,128,256,512,1024,4096")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--impls", default=",".join(IMPLS), help=f"subset of {','.join(IMPLS)}")
    ap.add_argument("--peak-n", type=int, help="matrix size of the GEMM peak (default 2048, quick 1024)")
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    ap.add_argument("--no-optimizers", action="store_true",
                    help="skip the optimizer table (momentum, Adam, dropout against plain SGD "
                         "and PyTorch)")
    ap.add_argument("--only-optimizers", action="store_true",
                    help="only the optimizer table")
    ap.add_argument("--settle", type=float, default=0.12,
                    help="seconds to sleep before each multi-threaded measurement so the previous "
                         "BLAS pool's spinning workers go idle (default 0.12; 0 to see the cost of "
                         "switching pools)")
    args = ap.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 7)
    target = args.seconds or (0.1 if args.quick else 0.5)
    peak_n = args.peak_n or (1024 if args.quick else 2048)
    thread_counts = [int(t) for t in args.threads.split(",")]
    config_list = ([(np.float32, int(b)) for b in args.batches.split(",")] if args.batches
                   else CONFIGS)
    impls = [i for i in args.impls.split(",") if i]
    unknown = set(impls) - set(IMPLS)
    if unknown:
        ap.error(f"unknown implementations {sorted(unknown)}")

    torch = None if args.no_torch or "torch" not in impls else C.import_torch()
    if torch is None:
        impls = [i for i in impls if i != "torch"]
    C.refresh_controller()

    train, _val, _test = load_mnist()
    X32 = np.ascontiguousarray(train.images, dtype=np.float32)
    labels = np.ascontiguousarray(train.labels, dtype=np.int64)
    data = {np.dtype(np.float32): X32}
    if any(np.dtype(d) == np.float64 for d, _ in config_list):
        data[np.dtype(np.float64)] = X32.astype(np.float64)

    info = C.system_info(torch)
    C.print_system_info(info)
    print()

    init = _notebook_model(np.float64, seed=0)
    check = check_same_step(X32, labels, init, torch)
    print("same-step check (max |param - mlp.training_step param| after one float64 step, batch 30): "
          + ", ".join(f"{k} {v:.1e}" for k, v in check.items()))
    bad = {k: v for k, v in check.items() if not v < 1e-8}
    if bad:
        print(f"WARNING: implementations disagree with mlp on one SGD step: {bad}")
    print()

    # Build configurations and calibrate steps per measurement (also warms up).
    configs = []
    for dtype, batch in ([] if args.only_optimizers else config_list):
        for T in thread_counts:
            configs.append({"dtype": np.dtype(dtype).name, "batch": batch, "threads": T,
                            "flops_per_step": step_flops(SIZES, batch)})
    groups = []
    print(f"calibrating {len(configs)} configurations x {len(impls)} implementations "
          f"(target {target:.2f} s per measurement, {repeats} repeats)...", flush=True)
    for i, cfg in enumerate(configs):
        dt = np.dtype(cfg["dtype"])
        runners = make_runners(dt, cfg["batch"], cfg["threads"], data[dt], labels, init, torch, seed=i + 1)
        cfg["steps_per_measurement"], cfg["call_overhead_s"] = {}, {}
        settle = args.settle if cfg["threads"] > 1 else 0.0
        cases = {}
        for name in impls:
            C.settle(settle)
            steps, overhead = C.calibrate(runners[name], target)
            chunk = C.steps_per_measurement(steps, overhead, target)
            cfg["steps_per_measurement"][name] = chunk
            cfg["call_overhead_s"][name] = overhead
            cases[name] = _measure(runners[name], chunk, cfg["batch"], settle, target)
        groups.append((i, cases))

    opt_configs = []
    if not args.no_optimizers:
        for batch in OPT_BATCHES:
            runners = optimizer_runners(batch, X32, labels, torch, seed=100 + batch)
            cfg = {"batch": batch, "threads": OPT_THREADS, "steps_per_measurement": {}}
            cases = {}
            for name, run in runners.items():
                C.settle(args.settle)
                steps, _ = C.calibrate(run, target)
                cfg["steps_per_measurement"][name] = max(1, steps)
                cases[name] = _measure(run, max(1, steps), batch, args.settle, target)
            opt_configs.append(cfg)
            groups.append((f"opt{batch}", cases))

    # GEMM peak per thread count, through scipy's BLAS (mlp's) and numpy's.
    peak_cases = {}
    for T in thread_counts:
        for label, dtype, via in (("sgemm_scipy", np.float32, "scipy"), ("dgemm_scipy", np.float64, "scipy"),
                                  ("sgemm_numpy", np.float32, "numpy")):
            peak_cases[f"{label}/{T}"] = _with_threads(C.gemm_peak_runner(dtype, peak_n, via), T,
                                                       target, args.settle if T > 1 else 0.0)
    groups.append(("peak", peak_cases))

    print("measuring...", flush=True)
    raw = C.interleave(groups, repeats)
    for cfg in opt_configs:
        cfg["results"] = {name: {"raw": results,
                                 "steps_per_s": C.stats([r["steps_per_s"] for r in results])}
                          for name, results in raw[f"opt{cfg['batch']}"].items()}

    # Summaries
    peaks = {}
    for key, results in raw["peak"].items():
        label, T = key.split("/")
        gf = C.stats([r["gflops"] for r in results])
        # The reference is the best repeat: other load only ever lowers a GEMM's rate.
        peaks.setdefault(int(T), {})[label] = {"raw": results, "gflops": gf, "peak_gflops": gf["max"]}
    for T, p in peaks.items():
        # Both sgemms are OpenBLAS 0.3.x Haswell kernels, so the machine's float32
        # peak is the best of them; '% peak' divides by this (dgemm's for float64).
        p["float32_peak_gflops"] = max(p["sgemm_scipy"]["peak_gflops"], p["sgemm_numpy"]["peak_gflops"])
        p["float64_peak_gflops"] = p["dgemm_scipy"]["peak_gflops"]
    for i, cfg in enumerate(configs):
        cfg["results"] = {}
        for name, results in raw[i].items():
            cfg["results"][name] = {
                "raw": results,
                "steps_per_s": C.stats([r["steps_per_s"] for r in results]),
                "samples_per_s": C.stats([r["samples_per_s"] for r in results]),
                "gflops": C.stats([r["steps_per_s"] * cfg["flops_per_step"] / 1e9 for r in results]),
            }

    print()
    print(f"GEMM peak, {peak_n}x{peak_n}x{peak_n}, GFLOP/s median [min-max] over {repeats} repeats "
          "(best call of each);\n'% peak' below divides by the max over both sgemms (float32) or by dgemm's max (float64):")
    rows = []
    for T in thread_counts:
        p = peaks[T]
        rows.append([f"{T} thread{'s' if T > 1 else ''}", C.fmt_range(p["sgemm_scipy"]["gflops"]),
                     C.fmt_range(p["dgemm_scipy"]["gflops"]), C.fmt_range(p["sgemm_numpy"]["gflops"])])
    print(C.table(["", "sgemm (scipy BLAS: mlp)", "dgemm (scipy BLAS)", "sgemm (numpy BLAS)"], rows))

    for cfg in configs:
        print()
        print(_config_table(cfg, peaks[cfg["threads"]]))
    print()
    if configs:
        print(_summary_table(configs, impls, peaks))
        scaling = _scaling_table(configs)
        if scaling:
            print()
            print(scaling)
    if opt_configs:
        print()
        print(_optimizer_table(opt_configs))
    overhead = train_call_overhead(data, labels, init) if "mlp" in impls else {}
    for dt, o in overhead.items():
        print(f"mlp.train fixed cost per call ({dt}, X {data[np.dtype(dt)].shape}): "
              f"{o['overhead_s'] * 1e3:.1f} ms (iterations=1 call {o['train_1_step_s']['median'] * 1e3:.1f} ms "
              f"vs one bare kernel step {o['kernel_1_step_s']['median'] * 1e3:.2f} ms)")
    loads = [r["loadavg_1m"] for c in configs + opt_configs for v in c["results"].values()
             for r in v["raw"]] or [os.getloadavg()[0]]
    print(f"load average (1 min) during the measurements: {min(loads):.2f}-{max(loads):.2f} "
          f"on {os.cpu_count()} CPUs (above ~0.5 other processes were competing; the 2-thread rows suffer most)")

    if args.json:
        C.write_json(args.json, {
            "benchmark": "bench_train", "args": vars(args), "repeats": repeats,
            "target_seconds": target, "layer_sizes": SIZES, "learning_rate": LR,
            "system": info, "same_step_check": check, "peak_n": peak_n,
            "gemm_peak": {str(T): v for T, v in peaks.items()}, "configs": configs,
            "mlp_train_call_overhead": overhead, "optimizer_configs": opt_configs,
        })


def _measure(run, chunk, batch, settle, target):
    """One measurement: calls of `chunk` steps until `target` seconds have passed."""
    def measure():
        C.settle(settle)
        # Untimed: wakes this implementation's threads (and, on a VM, the
        # vCPU they run on, which takes milliseconds after the settle's sleep)
        # so that the timed calls see the steady state training runs in.
        run(max(1, chunk // 8))
        steps, dt, calls = 0, 0.0, 0
        while dt < target:
            dt += run(chunk)
            steps += chunk
            calls += 1
        return {"steps": steps, "calls": calls, "seconds": dt, "steps_per_s": steps / dt,
                "samples_per_s": steps * batch / dt, "loadavg_1m": os.getloadavg()[0]}
    return measure


def _with_threads(run, T, min_seconds, settle):
    def measure():
        C.settle(settle)
        with C.threads(T):
            res = run(min_seconds)
        res["loadavg_1m"] = os.getloadavg()[0]
        return res
    return measure


def train_call_overhead(data, labels, init, repeats=5):
    """Fixed cost of one mlp.train call (validation, setup), 1 thread: the
    median time of mlp.train(iterations=1) minus one step of the bare kernel."""
    out = {}
    for dt, X in data.items():
        m = _notebook_model(dt)
        m._params[...] = init._params
        work = np.empty(_kernels.workspace_size(m._sizes, 30), dtype=dt)
        t_train, t_kernel = [], []
        with C.threads(1):
            for r in range(repeats + 1):
                t0 = C.now()
                mlp.train(m, X, labels, iterations=1, batch_size=30, learning_rate=LR,
                          sampling="replacement", progress=False, n_threads=1, seed=r)
                t1 = C.now()
                _plain_sgd_steps(m, X, labels, np.arange(30, dtype=np.int64), 30, work,
                                 np.empty(1), 1)
                t2 = C.now()
                if r:  # first round is warm-up
                    t_train.append(t1 - t0)
                    t_kernel.append(t2 - t1)
        out[dt.name] = {"train_1_step_s": C.stats(t_train), "kernel_1_step_s": C.stats(t_kernel),
                        "overhead_s": C.stats(t_train)["median"] - C.stats(t_kernel)["median"]}
    return out


def _config_table(cfg, peak):
    res = cfg["results"]
    med = {k: v["steps_per_s"]["median"] for k, v in res.items()}
    peak_gf = peak[f"{cfg['dtype']}_peak_gflops"]
    title = (f"== {cfg['dtype']}, batch {cfg['batch']}, {cfg['threads']} thread{'s' if cfg['threads'] > 1 else ''}: "
             f"{cfg['flops_per_step'] / 1e6:.1f} MFLOP/step, {'sgemm' if cfg['dtype'] == 'float32' else 'dgemm'} peak "
             f"{peak_gf:.1f} GFLOP/s ==")
    rows = []
    for name, r in res.items():
        gf = r["gflops"]["median"]
        rows.append([name, C.fmt_range(r["steps_per_s"]), C.fmt_num(r["samples_per_s"]["median"]),
                     C.fmt_ratio(med[name], med.get("notebook")), C.fmt_ratio(med[name], med.get("torch")),
                     C.fmt_ratio(med[name], med.get("gemm_bound")), C.fmt_ratio(med[name], med.get("gemm_split")),
                     f"{gf:.1f}", f"{100 * gf / peak_gf:.0f}%"])
    return title + "\n" + C.table(
        ["impl", "steps/s median [min-max]", "samples/s", "vs notebook", "vs torch", "vs gemm_bound",
         "vs gemm_split", "GFLOP/s", "% peak"], rows)


def _summary_table(configs, impls, peaks):
    rows = []
    for cfg in configs:
        med = {k: v["steps_per_s"]["median"] for k, v in cfg["results"].items()}
        peak = peaks[cfg["threads"]][f"{cfg['dtype']}_peak_gflops"]
        share = {name: (f"{med[name] * cfg['flops_per_step'] / 1e9 / peak:.2f}" if name in med else "-")
                 for name in ("mlp", "mlp_dense")}
        rows.append([f"{cfg['dtype']} B={cfg['batch']} T={cfg['threads']}"]
                    + [C.fmt_num(med.get(i)) for i in impls]
                    + [C.fmt_ratio(med.get("mlp"), med.get("notebook")), C.fmt_ratio(med.get("mlp"), med.get("torch")),
                       C.fmt_ratio(med.get("mlp"), med.get("gemm_bound")),
                       C.fmt_ratio(med.get("mlp"), med.get("gemm_split")), share["mlp"],
                       share["mlp_dense"]])
    return ("Summary: steps/s (medians), mlp's ratios and its share of the sgemm peak (the dense\n"
            "step's arithmetic over the time; mlp_dense's is the GEMM efficiency, mlp's exceeds it\n"
            "where the first layer skips zero pixels)\n"
            + C.table(["config"] + list(impls) + ["mlp/notebook", "mlp/torch", "mlp/gemm_bound",
                                                 "mlp/gemm_split", "mlp/peak", "mlp_dense/peak"],
                      rows))


def _scaling_table(configs):
    """mlp's steps/s on its largest thread count over one thread, per batch."""
    by_key = {(c["dtype"], c["batch"], c["threads"]): c["results"]["mlp"]["steps_per_s"]["median"]
              for c in configs if "mlp" in c["results"]}
    thread_counts = sorted({c["threads"] for c in configs})
    if len(thread_counts) < 2 or 1 not in thread_counts:
        return ""
    most = thread_counts[-1]
    rows = [[f"{dt} B={b}", C.fmt_ratio(by_key[(dt, b, most)], by_key[(dt, b, 1)])]
            for (dt, b, T) in by_key if T == 1 and (dt, b, most) in by_key]
    return (f"Scaling: mlp steps/s on {most} threads over 1 thread\n"
            + C.table(["config", f"T={most} / T=1"], rows)) if rows else ""


if __name__ == "__main__":
    main()
