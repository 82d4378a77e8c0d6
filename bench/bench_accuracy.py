"""Time to accuracy on real MNIST: the CLI's presets, end to end, as a user runs them.

    PYTHONPATH=. python bench/bench_accuracy.py [--quick] [--json OUT]

For each preset (--presets; default: notebook, default, previous-default, accurate) this runs

    python -m mlp train --preset NAME --no-progress [extra args]

as a child process (with --quick: shortened, see QUICK_OVERRIDES) and reports its wall time (interpreter start, imports
and data loading included), the test accuracy parsed from the line

    The model classified correctly N out of 10000 test examples

the training time the CLI prints, and the child's peak RSS (ru_maxrss from
os.wait4 on that child alone). --quick runs each preset once; the default is
3 runs per preset, interleaved. --command replaces the CLI with any command
(e.g. a fake one to test the parsing).
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402

ACCURACY_RE = re.compile(r"classified correctly\s+(\d+)\s+out of\s+(\d+)")
TRAIN_TIME_RE = re.compile(r"Training time:\s*([0-9.]+)\s*s", re.IGNORECASE)

# --quick shortens the presets (a tenth of their steps) so the smoke run stays
# short; the accuracies are then not the presets' real ones.
QUICK_OVERRIDES = {"notebook": ["--iterations", "2000"], "default": ["--epochs", "1"],
                   "previous-default": ["--epochs", "1"], "accurate": ["--epochs", "2"],
                   "augmented": ["--epochs", "1"], "default-bf16": ["--epochs", "1"],
                   "accurate-bf16": ["--epochs", "2"]}

# Recipes that are not presets, as flags on top of one: the `default` preset
# as it was before optimizers came in (plain SGD at lr 0.5 with cosine decay,
# Xavier init), so that the current default's time is compared in the same run.
RECIPES = {"previous-default": ["--preset", "default", "--optimizer", "sgd", "--lr", "0.5",
                                "--momentum", "0", "--no-nesterov", "--weight-decay", "0",
                                "--init", "xavier"],
           # The presets with bfloat16 matrix products (compute_dtype="bfloat16"),
           # to compare with their float32 runs in the same run.
           "default-bf16": ["--preset", "default", "--compute-dtype", "bfloat16"],
           "accurate-bf16": ["--preset", "accurate", "--compute-dtype", "bfloat16"]}

FAKE_CHILD = r"""
import sys, time
import numpy as np
a = np.ones((4_000_000,))  # ~32 MB, so the RSS figure has something to show
time.sleep(0.2)
print("Training Model([784, 300, 100, 10]) (fake)")
print("The model classified correctly 9441 out of 10000 test examples")
print("Test accuracy: 94.41%  (validation 94.80%)")
print("Training time: 0.2 s for 20000 steps (100000 steps/s)")
"""


def run_child(cmd, env=None, timeout=None):
    """Run cmd; return (returncode, output, wall seconds, peak RSS in MiB of that child)."""
    with tempfile.TemporaryFile(mode="w+") as out:
        t0 = C.now()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            # wait4 reaps this child only and gives its own rusage (RUSAGE_CHILDREN
            # would be a max over every child this process ever had).
            _pid, status, usage = _wait4(proc.pid, timeout)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        wall = C.now() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    maxrss_kib = usage.ru_maxrss  # KiB on Linux
    if sys.platform == "darwin":
        maxrss_kib /= 1024  # bytes there
    return proc.returncode, text, wall, maxrss_kib / 1024


def _wait4(pid, timeout):
    if timeout is None:
        return os.wait4(pid, 0)
    import time

    deadline = time.monotonic() + timeout
    while True:
        res = os.wait4(pid, os.WNOHANG)
        if res[0] == pid:
            return res
        if time.monotonic() > deadline:
            raise TimeoutError(f"child {pid} ran longer than {timeout} s")
        time.sleep(0.05)


def parse_output(text):
    """(correct, total, accuracy, training_seconds) from the CLI's output; None where absent."""
    m = ACCURACY_RE.search(text)
    correct = total = acc = None
    if m:
        correct, total = int(m.group(1)), int(m.group(2))
        acc = correct / total if total else None
    t = TRAIN_TIME_RE.search(text)
    return correct, total, acc, float(t.group(1)) if t else None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="one run per preset, shortened (notebook --iterations 2000, default --epochs 1)")
    ap.add_argument("--json", metavar="OUT", help="write every run and the medians here")
    ap.add_argument("--presets", default="notebook,default,previous-default,accurate",
                    help="comma-separated preset names (or previous-default, see RECIPES)")
    ap.add_argument("--repeats", type=int, help="runs per preset (default 3, quick 1)")
    ap.add_argument("--seeds", default="0,1,2",
                    help="run r of a preset passes --seed seeds[r %% len(seeds)] (default 0,1,2; "
                         "'' keeps the preset's own seed)")
    ap.add_argument("--extra", default="", help="extra CLI arguments, e.g. '--threads 1'")
    ap.add_argument("--command", help="run this command instead of the CLI (parsed with shlex; "
                                      "'{preset}' is replaced by the preset name)")
    ap.add_argument("--fake", action="store_true", help="run a fake child that prints the CLI's lines "
                                                         "(tests the parsing and RSS plumbing)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per run before giving up")
    args = ap.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    presets = [p for p in args.presets.split(",") if p]

    info = C.system_info()
    C.print_system_info(info)
    print()

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = here + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    runs_started = {}

    def command(preset, seed=None):
        if args.fake:
            return [sys.executable, "-c", FAKE_CHILD]
        if args.command:
            return [part.replace("{preset}", preset) for part in shlex.split(args.command)]
        quick = QUICK_OVERRIDES.get(preset, []) if args.quick else []
        recipe = RECIPES.get(preset, ["--preset", preset])
        seeded = [] if seed is None else ["--seed", str(seed)]
        return ([sys.executable, "-m", "mlp", "train", "--no-progress"] + recipe + quick + seeded
                + shlex.split(args.extra))

    def case(preset):
        def run():
            index = runs_started.get(preset, 0)
            runs_started[preset] = index + 1
            cmd = command(preset, seeds[index % len(seeds)] if seeds else None)
            code, text, wall, rss = run_child(cmd, env=env, timeout=args.timeout)
            correct, total, acc, train_s = parse_output(text)
            res = {"command": cmd, "returncode": code, "wall_s": wall, "max_rss_mib": rss,
                   "correct": correct, "total": total, "accuracy": acc, "train_s": train_s,
                   "output_tail": text[-2000:], "loadavg_1m": os.getloadavg()[0]}
            status = "ok" if code == 0 and acc is not None else f"FAILED (exit {code})"
            print(f"  {preset}: {status}, wall {wall:.1f} s, "
                  f"accuracy {'-' if acc is None else f'{acc:.4f}'}, peak RSS {rss:.0f} MiB", flush=True)
            if code != 0 or acc is None:
                print("    " + "\n    ".join(text.strip().splitlines()[-15:]))
            return res
        return run

    print(f"running {len(presets)} preset(s) x {repeats}: {shlex.join(command(presets[0]))} ...", flush=True)
    raw = C.round_robin({p: case(p) for p in presets}, repeats)

    rows, summary = [], {}
    for preset, runs in raw.items():
        ok = [r for r in runs if r["returncode"] == 0 and r["accuracy"] is not None]
        s = {"runs": runs, "ok": len(ok)}
        if ok:
            s["wall_s"] = C.stats([r["wall_s"] for r in ok])
            s["accuracy"] = C.stats([r["accuracy"] for r in ok])
            s["max_rss_mib"] = C.stats([r["max_rss_mib"] for r in ok])
            if all(r["train_s"] is not None for r in ok):
                s["train_s"] = C.stats([r["train_s"] for r in ok])
        summary[preset] = s
        if not ok:
            rows.append([preset, f"0/{len(runs)}", "-", "-", "-", "-", "-"])
            continue
        rows.append([
            preset, f"{len(ok)}/{len(runs)}", C.fmt_range(s["wall_s"]),
            C.fmt_range(s["train_s"]) if "train_s" in s else "-",
            f"{s['accuracy']['median']:.4f} [{s['accuracy']['min']:.4f}-{s['accuracy']['max']:.4f}]",
            f"{ok[0]['correct']}/{ok[0]['total']}", C.fmt_range(s["max_rss_mib"]),
        ])
    print()
    print(C.table(["preset", "ok", "wall s (incl. load)", "training s (CLI)", "test accuracy",
                   "correct (1st run)", "peak RSS MiB"], rows))
    print("(wall = child process start to exit: interpreter, imports, data load, training, test)")
    if args.json:
        C.write_json(args.json, {"benchmark": "bench_accuracy", "args": vars(args), "system": info,
                                 "repeats": repeats, "presets": summary})
    return 0 if all(s["ok"] == len(s["runs"]) for s in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
