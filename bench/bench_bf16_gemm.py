"""GFLOP/s of mlp's bfloat16 GEMM paths against float32 sgemm and PyTorch.

    PYTHONPATH=. python bench/bench_bf16_gemm.py [--quick] [--batches 256,4096]
                                                 [--seconds S] [--repeats R] [--json OUT]

The shapes are the products mlp's kernels make for a 784-300-100-10 network
on a batch of B samples, written as their column-major BLAS calls
(transa transb m n k; mlp/_blas.pxi), in the sample-major layout and the
feature-major one, plus a 2048^3 square. Implementations:

* mlp bf16 <path>: ``_kernels.bf16_gemm`` on each path this CPU runs
  (float32 in and out, the rounding to bfloat16 inside, as mlp_sbgemm);
* scipy sgemm: the float32 sgemm mlp's float32 kernels call (scipy's
  OpenBLAS), on Fortran-ordered operands so nothing is copied;
* torch bf16 / torch f32: ``torch.matmul(a, b, out=c)`` on tensors already
  in that dtype (for bfloat16 that leaves out the conversions mlp's path
  includes; on AVX512_BF16 CPUs torch runs it through oneDNN).

Threads: "1" is one call on one thread. "2" is two independent calls at
once on two Python threads for mlp (its GEMM releases the GIL; mlp runs its
GEMMs single-threaded inside its own two workers, so this is the case that
matters), one call on two BLAS threads for scipy (f2py holds the GIL), and
torch.set_num_threads(2) for torch. Each figure is the median over the
repeats (interleaved, _common.interleave) of the best rate within a timed
window.
"""
from __future__ import annotations

import argparse
import threading

import numpy as np

import _common as C
from mlp import _kernels


def mlp_shapes(batch):
    """(name, transa, transb, m, n, k): mlp's GEMM calls for 784-300-100-10."""
    B = batch
    return [
        (f"fwd L1       B={B}", "T", "N", 300, B, 784),
        (f"fwd L2       B={B}", "T", "N", 100, B, 300),
        (f"fwd out      B={B}", "T", "N", 10, B, 100),
        (f"delta L1     B={B}", "N", "N", 300, B, 100),
        (f"weight L1    B={B}", "N", "T", 784, 300, B),
        (f"weight L2    B={B}", "N", "T", 300, 100, B),
        (f"fm fwd L1    B={B}", "T", "N", B, 300, 784),
        (f"fm fwd L2    B={B}", "N", "N", B, 100, 300),
        (f"fm delta L1  B={B}", "N", "T", B, 300, 100),
        (f"fm weight L1 B={B}", "T", "N", 784, 300, B),
    ]


def operands(ta, tb, m, n, k, rng):
    """Fortran-ordered storage of A, B, C for the column-major call, and
    op(A), op(B) as numpy views (what bf16_gemm and torch take)."""
    a = np.asfortranarray(rng.standard_normal((m, k) if ta == "N" else (k, m)), np.float32)
    b = np.asfortranarray(rng.standard_normal((k, n) if tb == "N" else (n, k)), np.float32)
    c = np.zeros((m, n), np.float32, order="F")
    return a, b, c, (a if ta == "N" else a.T), (b if tb == "N" else b.T)


def rate(call, flops, seconds, calls_per_round=1):
    """Best GFLOP/s of call() over rounds lasting `seconds` in all."""
    best, total = 0.0, 0.0
    while total < seconds or best == 0.0:
        t0 = C.now()
        call()
        dt = C.now() - t0
        total += dt
        best = max(best, calls_per_round * flops / dt / 1e9)
    return best


def in_two_threads(calls, n_calls):
    """A callable running calls[i]() n_calls times on thread i, two at once."""
    def run():
        workers = [threading.Thread(target=lambda call=call: [call() for _ in range(n_calls)])
                   for call in calls]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    return run


def implementations(shape, torch, rng, seconds):
    name, ta, tb, m, n, k = shape
    a, b, c, opa, opb = operands(ta, tb, m, n, k, rng)
    flops = 2.0 * m * n * k
    # enough calls per timed round that the thread start-up does not count
    per_round = max(1, int(2e8 / flops))
    impls = {}
    for path in _kernels.bf16_paths():
        if path == "amx_emulated":
            continue
        ones = [(lambda p=path, cc=np.zeros_like(c): _kernels.bf16_gemm(opa, opb, cc, 1.0, 0.0, p))
                for _ in range(2)]
        impls[f"mlp bf16 {path}"] = {
            1: ones[0],
            2: (in_two_threads(ones, per_round), 2 * per_round),
        }
    from scipy.linalg import blas

    def sgemm():
        blas.sgemm(1.0, a, b, 0.0, c, trans_a=ta == "T", trans_b=tb == "T", overwrite_c=1)
    impls["scipy sgemm f32"] = {1: sgemm, 2: sgemm}
    if torch is not None:
        for label, dtype in (("torch bf16", torch.bfloat16), ("torch f32", torch.float32)):
            ta_, tb_ = torch.from_numpy(opa).to(dtype), torch.from_numpy(opb).to(dtype)
            out = torch.empty((m, n), dtype=dtype)

            def tmm(ta_=ta_, tb_=tb_, out=out):
                torch.matmul(ta_, tb_, out=out)
            impls[label] = {1: tmm, 2: tmm}

    def measure(impl, threads):
        entry = impls[impl][threads]
        call, calls = entry if isinstance(entry, tuple) else (entry, 1)
        blas_threads = threads if impl.startswith("scipy") else 1
        with C.threads(blas_threads):
            if torch is not None:
                C.set_torch_threads(torch, threads if impl.startswith("torch") else 1)
            return {"gflops": rate(call, flops, seconds, calls)}
    return impls, measure


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="B=256 only, short windows")
    ap.add_argument("--batches", default="256,4096")
    ap.add_argument("--seconds", type=float, default=0.15, help="timed window per figure")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if args.quick:
        args.batches, args.seconds, args.repeats = "256", 0.05, 1

    torch = None if args.no_torch else C.import_torch()
    info = C.system_info(torch)
    C.print_system_info(info)
    print(f"mlp bf16 paths on this CPU: {', '.join(_kernels.bf16_paths())}; "
          f"default {_kernels.bf16_path()}")

    rng = np.random.default_rng(0)
    shapes = [s for b in args.batches.split(",") for s in mlp_shapes(int(b))]
    shapes.append(("square 2048", "N", "N", 2048, 2048, 2048))
    results = {}
    for shape in shapes:
        impls, measure = implementations(shape, torch, rng, args.seconds)
        groups = [((shape[0], t), {name: (lambda name=name, t=t: measure(name, t))
                                   for name in impls}) for t in (1, 2)]
        out = C.interleave(groups, args.repeats)
        for (label, t), by_impl in out.items():
            results[(label, t)] = {name: C.stats([r["gflops"] for r in rs])["median"]
                                   for name, rs in by_impl.items()}
        C.settle(0.2)

    names = list(next(iter(results.values())))
    for t in (1, 2):
        print(f"\nGFLOP/s, {t} thread{'s' if t > 1 else ''} (median of {args.repeats}); "
              "last column: the default mlp path over scipy sgemm")
        default = f"mlp bf16 {_kernels.bf16_path()}"
        rows = []
        for shape in shapes:
            r = results[(shape[0], t)]
            rows.append([shape[0], f"{shape[1]}{shape[2]} {shape[3]}x{shape[4]}x{shape[5]}"]
                        + [C.fmt_num(r[nm]) for nm in names]
                        + [C.fmt_ratio(r[default], r["scipy sgemm f32"])])
        print(C.table(["shape", "call (ta tb m x n x k)", *names, "ratio"], rows))
    if args.json:
        C.write_json(args.json, {"system": info, "args": vars(args),
                                 "results": [{"shape": s, "threads": t, "gflops": r}
                                             for (s, t), r in results.items()]})


if __name__ == "__main__":
    main()
