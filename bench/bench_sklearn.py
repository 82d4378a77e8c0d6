"""mlp.sklearn's estimators against sklearn.neural_network's: MNIST, or a table over data sets.

    PYTHONPATH=. python bench/bench_sklearn.py [--quick] [--repeats N] [--json OUT]
    PYTHONPATH=. python bench/bench_sklearn.py --datasets [--quick] [--only GROUPS] [--json OUT]

--datasets: one table of fit-time ratios (scikit-learn / mlp) and test
scores over scikit-learn's bundled data sets, generated tabular data of
100 to 100,000 rows, a sparse matrix (30,000 x 20,000, 60 non-zeros a row)
and L-BFGS; see bench/_sklearn_table.py. Without it, MNIST:

Both estimators get identical hyper-parameters and the same random_state,
fit the 50,000 training images and predict the 10,000 test images, in this
one process, interleaved (each repeat runs every configuration and, inside
it, both estimators, alternating which goes first). Reported per
configuration: test accuracy, fit time, predict time (the median of
--predict-repeats calls), and the ratios scikit-learn / mlp; for fit also
the median [min-max] of each repeat's ratio ("paired": the two fits back to
back), which the host speeding up or slowing down between repeats moves
less. The fit target counts as met only when both ratios meet it.

Configurations (10 epochs each: max_iter=10, and tol=0 with n_iter_no_change
above max_iter, so every epoch runs):

* sgd:  hidden_layer_sizes=(300, 100), solver="sgd", Nesterov momentum 0.9,
        learning_rate_init=0.1, batch_size=200
* adam: hidden_layer_sizes=(300, 100), solver="adam" with scikit-learn's
        defaults (learning_rate_init=0.001, batch_size="auto" = 200)

Targets: test accuracy within 0.3 points of scikit-learn's, fit at least 3x
faster, predict at least 2x faster. Both run with every core (scikit-learn
through numpy's BLAS, mlp through its own worker threads); --threads N
limits both. The data are float32, which both keep (scikit-learn's MLP
computes in the dtype of X). --quick fits 10,000 images for 2 epochs.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402

import mlp  # noqa: E402
from mlp.datasets import load_mnist  # noqa: E402

COMMON = dict(hidden_layer_sizes=(300, 100), max_iter=10, tol=0.0, n_iter_no_change=1000,
              random_state=0)
CONFIGS = {
    "sgd": dict(solver="sgd", momentum=0.9, nesterovs_momentum=True, learning_rate_init=0.1,
                batch_size=200),
    "adam": dict(solver="adam"),
}
TARGETS = {"accuracy_points": 0.3, "fit_speedup": 3.0, "predict_speedup": 2.0}


def make_estimator(impl, config, epochs, n_threads, seed=0):
    params = {**COMMON, **CONFIGS[config], "max_iter": epochs, "random_state": seed}
    if impl == "sklearn":
        from sklearn.neural_network import MLPClassifier

        return MLPClassifier(**params)
    from mlp.sklearn import MLPClassifier

    return MLPClassifier(**params, n_threads=n_threads)


def run_once(impl, config, data, epochs, n_threads, predict_repeats, seed=0):
    """Fit, then time predict; returns a dict of measurements."""
    (X, y), (X_test, y_test) = data
    estimator = make_estimator(impl, config, epochs, n_threads, seed)
    with C.threads(n_threads), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: max_iter is the point
        start = C.now()
        estimator.fit(X, y)
        fit_s = C.now() - start
        estimator.predict(X_test[:100])  # wake the thread pools once, untimed
        predict_times = []
        for _ in range(predict_repeats):
            start = C.now()
            predicted = estimator.predict(X_test)
            predict_times.append(C.now() - start)
    return {"impl": impl, "config": config, "seed": seed, "fit_s": fit_s,
            "predict": C.stats(predict_times),
            "accuracy": float(np.mean(predicted == y_test)),
            "epochs_run": int(estimator.n_iter_), "final_loss": float(estimator.loss_),
            "loadavg_1m": os.getloadavg()[0]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10,000 images, 2 epochs")
    ap.add_argument("--configs", default="sgd,adam", help="comma-separated, from: sgd, adam")
    ap.add_argument("--repeats", type=int, default=1, help="fits per estimator and configuration")
    ap.add_argument("--seeds", default="0",
                    help="comma-separated random_state values; repeat r uses seeds[r %% len(seeds)] "
                         "for both estimators (default 0). Accuracy is compared by its median")
    ap.add_argument("--predict-repeats", type=int, default=5, help="timed predict calls per fit")
    ap.add_argument("--threads", type=int, help="limit both to this many threads")
    ap.add_argument("--json", metavar="OUT", help="write every run and the system information")
    ap.add_argument("--datasets", action="store_true",
                    help="the table over bundled, generated, sparse data and L-BFGS instead "
                         "of MNIST (--quick: smaller data)")
    ap.add_argument("--only", metavar="GROUPS",
                    help="with --datasets: only the rows of these groups, comma-separated "
                         "(bundled, generated, sparse, lbfgs)")
    args = ap.parse_args(argv)
    if args.datasets:
        import _sklearn_table

        groups = [g for g in args.only.split(",") if g] if args.only else None
        return _sklearn_table.main(quick=args.quick, threads=args.threads,
                                   json_out=args.json, groups=groups)
    seeds = [int(s) for s in args.seeds.split(",") if s] or [0]
    configs = [c for c in args.configs.split(",") if c]
    for c in configs:
        if c not in CONFIGS:
            ap.error(f"unknown configuration {c!r}; choose from {sorted(CONFIGS)}")

    import sklearn

    train, _, test = load_mnist()
    n_train, epochs = (10_000, 2) if args.quick else (len(train.images), COMMON["max_iter"])
    data = ((train.images[:n_train], train.labels[:n_train]), (test.images, test.labels))
    info = C.system_info()
    info["mlp"] = mlp.__version__
    info["sklearn"] = sklearn.__version__
    C.print_system_info(info)
    print(f"scikit-learn {sklearn.__version__}; {n_train} training images, {epochs} epochs, "
          f"threads: {args.threads or 'all'}\n")

    runs = []
    for repeat in range(args.repeats):
        for i, config in enumerate(configs):
            order = ("sklearn", "mlp") if (repeat + i) % 2 == 0 else ("mlp", "sklearn")
            for impl in order:
                result = run_once(impl, config, data, epochs, args.threads, args.predict_repeats,
                                  seeds[repeat % len(seeds)])
                result["repeat"] = repeat
                runs.append(result)
                print(f"  {config:5s} {impl:8s} seed {result['seed']}  fit {result['fit_s']:7.2f} s  "
                      f"predict {result['predict']['median'] * 1000:7.1f} ms  "
                      f"accuracy {result['accuracy']:.4f}  "
                      f"(load {result['loadavg_1m']:.2f})", flush=True)

    rows, summary = [], {}
    for config in configs:
        mine = [r for r in runs if r["config"] == config and r["impl"] == "mlp"]
        theirs = [r for r in runs if r["config"] == config and r["impl"] == "sklearn"]
        fit = {k: C.stats([r["fit_s"] for r in v]) for k, v in (("mlp", mine), ("sklearn", theirs))}
        pred = {k: C.stats([r["predict"]["median"] for r in v])
                for k, v in (("mlp", mine), ("sklearn", theirs))}
        acc = {k: float(np.median([r["accuracy"] for r in v]))
               for k, v in (("mlp", mine), ("sklearn", theirs))}
        fit_ratio = fit["sklearn"]["median"] / fit["mlp"]["median"]
        predict_ratio = pred["sklearn"]["median"] / pred["mlp"]["median"]
        # Each repeat fits the two back to back: their ratio there is less
        # exposed to the host getting faster or slower between repeats.
        paired = C.stats([t["fit_s"] / m["fit_s"] for t, m in zip(
            sorted(theirs, key=lambda r: r["repeat"]), sorted(mine, key=lambda r: r["repeat"]))])
        points = 100 * (acc["mlp"] - acc["sklearn"])
        summary[config] = {"fit_s": fit, "predict_s": pred, "accuracy": acc,
                           "fit_speedup": fit_ratio, "fit_speedup_paired": paired,
                           "predict_speedup": predict_ratio, "accuracy_points": points}
        rows.append([config,
                     f"{100 * acc['sklearn']:.2f}%", f"{100 * acc['mlp']:.2f}%", f"{points:+.2f}",
                     f"{fit['sklearn']['median']:.2f} s", f"{fit['mlp']['median']:.2f} s",
                     f"{fit_ratio:.2f}x",
                     f"{paired['median']:.2f}x [{paired['min']:.2f}-{paired['max']:.2f}]",
                     f"{1000 * pred['sklearn']['median']:.1f} ms",
                     f"{1000 * pred['mlp']['median']:.1f} ms", f"{predict_ratio:.2f}x"])
    print()
    print(C.table(["config", "acc sklearn", "acc mlp", "points", "fit sklearn", "fit mlp",
                   "fit speedup", "paired", "predict sklearn", "predict mlp",
                   "predict speedup"], rows))
    print("(fit speedup: the ratio of the median fit times; paired: the median [min-max] of "
          "each repeat's ratio, the two fits back to back)")
    print(f"\ntargets: accuracy within {TARGETS['accuracy_points']} points, fit >= "
          f"{TARGETS['fit_speedup']}x, predict >= {TARGETS['predict_speedup']}x faster")
    for config, s in summary.items():
        verdicts = [
            ("accuracy", abs(s["accuracy_points"]) <= TARGETS["accuracy_points"]
             or s["accuracy_points"] > 0),
            ("fit", min(s["fit_speedup"], s["fit_speedup_paired"]["median"])
             >= TARGETS["fit_speedup"]),
            ("predict", s["predict_speedup"] >= TARGETS["predict_speedup"]),
        ]
        print(f"  {config}: " + ", ".join(f"{name} {'met' if ok else 'MISSED'}"
                                          for name, ok in verdicts))
    if args.json:
        C.write_json(args.json, {"args": vars(args), "system": info, "runs": runs,
                                 "summary": summary, "targets": TARGETS})
    return 0


if __name__ == "__main__":
    sys.exit(main())
