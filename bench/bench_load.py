"""How long mlp.datasets.load takes on your own data: a folder of 60,000 small
PNGs (MNIST's training images written out, one subfolder per digit), decoded
on all cores the first time and read from the cache the second; and a CSV
file of about 100 MB, parsed the first time and read from the cache the second.

    flock -x /work/wt/cpu.lock python bench/bench_load.py

Writes its data into a temporary directory (or --dir), with a cache
directory of its own, so that the first load really decodes.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def write_png_folder(root, images, labels):
    from PIL import Image

    for k in range(10):
        (root / str(k)).mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(images, labels)):
        Image.fromarray(image.reshape(28, 28)).save(root / str(label) / f"{i:05d}.png")


def write_csv(path, megabytes, seed=0):
    """About `megabytes` MB of CSV: 32 float features and a class name per row."""
    import numpy as np

    rng = np.random.default_rng(seed)
    names = np.array(["alpha", "beta", "gamma", "delta", "epsilon"])
    header = ",".join([f"f{i}" for i in range(32)] + ["label"]) + "\n"
    rows = 0
    with open(path, "w") as f:
        f.write(header)
        while f.tell() < megabytes * 10**6:
            block = rng.normal(size=(10_000, 32))
            labels = names[rng.integers(0, 5, 10_000)]
            lines = [",".join(f"{v:.5f}" for v in row) + "," + label
                     for row, label in zip(block.tolist(), labels.tolist())]
            f.write("\n".join(lines) + "\n")
            rows += len(lines)
    return rows


def _tree_env():
    """The environment with this source tree first on the path, as for this process."""
    tree = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [tree] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=60_000,
                        help="PNG files to write and load (default: %(default)s)")
    parser.add_argument("--csv-mb", type=float, default=100,
                        help="size of the CSV file in MB (default: %(default)s)")
    parser.add_argument("--dir", help="where to write the data (default: a temporary directory)")
    args = parser.parse_args()

    from _common import print_system_info, system_info

    print_system_info(system_info())
    import numpy as np

    from mlp.datasets import load, load_mnist

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        tmp = Path(tmp)
        cache = tmp / "cache"
        train, validation, _ = load_mnist()
        pixels = np.rint(np.concatenate([train.images, validation.images])[:args.images] * 256)
        pixels = np.clip(pixels, 0, 255).astype(np.uint8)
        labels = np.concatenate([train.labels, validation.labels])[:args.images]
        _, write_time = timed(lambda: write_png_folder(tmp / "digits", pixels, labels))
        size = sum(f.stat().st_size for f in (tmp / "digits").rglob("*.png"))
        print(f"wrote {len(pixels):,} PNGs of 28x28 ({size / 1e6:.1f} MB) in {write_time:.1f} s")
        (first, info), first_time = timed(lambda: load(tmp / "digits", cache_dir=cache,
                                                       progress=False))
        (second, _), second_time = timed(lambda: load(tmp / "digits", cache_dir=cache,
                                                      progress=False))
        assert all(np.array_equal(a.images, b.images) for a, b in zip(first, second))
        n = sum(len(s.labels) for s in first)
        # What a second `mlp train --data` sees: a new process that imports mlp,
        # lists and stamps the files, and reads the cache.
        _, process_time = timed(lambda: subprocess.run(
            [sys.executable, "-c", "import sys; from mlp.datasets import load; "
             "load(sys.argv[1], cache_dir=sys.argv[2], progress=False)",
             str(tmp / "digits"), str(cache)], check=True, env=_tree_env()))
        _, import_time = timed(lambda: subprocess.run(
            [sys.executable, "-c", "from mlp.datasets import load"], check=True,
            env=_tree_env()))

        rows, csv_write = timed(lambda: write_csv(tmp / "table.csv", args.csv_mb))
        csv_bytes = (tmp / "table.csv").stat().st_size
        (table, _), csv_time = timed(lambda: load(tmp / "table.csv", cache_dir=cache))
        (table2, _), csv_cached = timed(lambda: load(tmp / "table.csv", cache_dir=cache))
        assert sum(len(s.labels) for s in table) == rows
        assert all(np.array_equal(a.images, b.images) for a, b in zip(table, table2))

    print(f"\n{os.cpu_count()} cores")
    print("| data | load | time | rate |")
    print("| --- | --- | ---: | ---: |")
    print(f"| {n:,} PNGs, 28x28 grey | first (decoded on {os.cpu_count()} processes) | "
          f"{first_time:.2f} s | {n / first_time:,.0f} images/s |")
    print(f"| {n:,} PNGs, 28x28 grey | second (cache) | {second_time:.2f} s | "
          f"{n / second_time:,.0f} images/s |")
    print(f"| {n:,} PNGs, 28x28 grey | second, in a new process (Python, import mlp, "
          f"cache) | {process_time:.2f} s | |")
    print(f"| (none) | a new process that only imports mlp | {import_time:.2f} s | |")
    print(f"| CSV, {csv_bytes / 1e6:.0f} MB, {rows:,} rows x 33 columns | first (parsed) | "
          f"{csv_time:.2f} s | {csv_bytes / 1e6 / csv_time:.1f} MB/s |")
    print(f"| CSV, {csv_bytes / 1e6:.0f} MB, {rows:,} rows x 33 columns | second (cache) | "
          f"{csv_cached:.2f} s | {csv_bytes / 1e6 / csv_cached:.1f} MB/s |")
    print(f"\nfirst / second load of the PNG folder: {first_time / second_time:.0f}x")


if __name__ == "__main__":
    main()
