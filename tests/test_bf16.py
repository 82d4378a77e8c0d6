"""The bfloat16 GEMM (mlp_sbgemm, through _kernels.bf16_gemm) on every path
this CPU runs, against a numpy reference of the same arithmetic.

The arithmetic: A's and B's elements rounded to bfloat16 (nearest even, NaN
stays NaN, float32 denormals become zeros), their products (exact in
float32) summed in float32 in an order each path chooses. So no test here
depends on that order: a result must lie within the bound of a float32 sum
of k terms in any order, plus the roundings of alpha * sum + beta * c:

    |computed - exact| <= (k + 3) * 2**-24 * (|alpha| * |A_r| @ |B_r| + |beta| * |c|)

where A_r, B_r are the rounded inputs and `exact` is computed in float64.
Each of these tests also checks that the bound is tight enough to catch a
path that forgot to round its inputs.
"""
import os

import numpy as np
import pytest

from conftest import run_python
from mlp import _kernels

PATHS = ["portable", "avx512bf16", "amx", "amx_emulated"]
WHY_NOT = {
    "avx512bf16": "this CPU has no AVX512_BF16",
    "amx": "this CPU (or its OS) has no AMX-BF16 tiles",
    "amx_emulated": "the AMX path's emulation packs with AVX512_BF16, which this CPU lacks",
}
U = 2.0 ** -24


def needs(path):
    if path not in _kernels.bf16_paths():
        pytest.skip(WHY_NOT[path])


def round_bf16(x):
    """x rounded to bfloat16 as float32: plain numpy on the bits."""
    x = np.asarray(x, dtype=np.float32)
    bits = x.view(np.uint32).astype(np.uint64)
    rounded = (((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16).astype(np.uint32)
    out = rounded.view(np.float32).copy()
    denormal = (bits & 0x7F800000) == 0
    out[denormal] = np.copysign(np.float32(0), x[denormal])
    out[np.isnan(x)] = np.nan
    return out


def reference(a, b, c, alpha, beta):
    """(exact result in float64, the error bound) for c = alpha a_r @ b_r + beta c."""
    ar, br = round_bf16(a).astype(np.float64), round_bf16(b).astype(np.float64)
    c64 = c.astype(np.float64)
    exact = alpha * (ar @ br) + (beta * c64 if beta != 0 else 0.0)
    scale = abs(alpha) * (np.abs(ar) @ np.abs(br)) + abs(beta) * np.abs(c64)
    return exact, (a.shape[1] + 3) * U * scale * 1.0001 + 1e-37


def layout(x, order, pad, rng):
    """x as an array of the given order ('C' or 'F'), inside a larger one
    when pad (so its leading dimension exceeds its length), filled around
    with NaN that no path may read."""
    if not pad:
        return np.array(x, order=order)
    big = np.full((x.shape[0] + 3, x.shape[1] + 5), np.nan, dtype=np.float32, order=order)
    view = big[1:1 + x.shape[0], 2:2 + x.shape[1]]
    view[...] = x
    return view


def check(path, m, n, k, a_order, b_order, c_order, alpha, beta, pad, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    c0 = rng.standard_normal((m, n)).astype(np.float32)
    exact, bound = reference(a, b, c0, alpha, beta)
    av, bv = layout(a, a_order, pad, rng), layout(b, b_order, pad, rng)
    cv = layout(c0, c_order, pad, rng)
    if beta == 0:
        cv[...] = np.nan  # beta == 0 must not read c
    _kernels.bf16_gemm(av, bv, cv, alpha, beta, path)
    err = np.abs(cv.astype(np.float64) - exact)
    assert np.all(err <= bound), (
        f"{path} m={m} n={n} k={k}: worst error {np.max(err / bound):.3g} x the bound")
    return a, b, c0, np.array(cv)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("a_order, b_order", [("C", "C"), ("C", "F"), ("F", "C"), ("F", "F")])
@pytest.mark.parametrize("c_order", ["F", "C"])
@pytest.mark.parametrize("m, n, k", [(1, 1, 1), (7, 17, 33), (17, 7, 1), (33, 1, 300),
                                      (10, 256, 100), (300, 64, 784), (100, 33, 17)])
def test_every_layout_and_odd_shape_within_the_bound(path, a_order, b_order, c_order, m, n, k):
    needs(path)
    check(path, m, n, k, a_order, b_order, c_order, 1.0, 0.0, pad=False)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("alpha, beta", [(0.5, 2.0), (-1.0, 1.0), (1e-3, 0.0), (2.0, -0.5)])
@pytest.mark.parametrize("orders", ["CCC", "FCF", "CFC", "FFF"])
def test_alpha_beta_and_leading_dimensions_larger_than_the_rows(path, alpha, beta, orders):
    needs(path)
    check(path, 45, 29, 71, *orders, alpha, beta, pad=True)


@pytest.mark.parametrize("path", ["portable", "avx512bf16", "amx"])
@pytest.mark.parametrize("m, n, k", [(800, 40, 1100), (33, 3100, 40), (784, 300, 256)])
def test_shapes_across_the_cache_blocks(path, m, n, k):
    """k past one KC block (later blocks add to C), m past MC, n past NC."""
    needs(path)
    for orders in ("FCF", "CFC"):
        check(path, m, n, k, *orders, 0.75, 0.5, pad=False)


@pytest.mark.parametrize("path", PATHS)
def test_the_bound_catches_unrounded_inputs(path):
    """The float32 product of the unrounded inputs lies outside the bound:
    a path that skipped the rounding would fail the tests above."""
    needs(path)
    a, b, c0, got = check(path, 64, 48, 256, "C", "F", "F", 1.0, 0.0, pad=False)
    exact, bound = reference(a, b, c0, 1.0, 0.0)
    unrounded = a.astype(np.float64) @ b.astype(np.float64)
    assert np.mean(np.abs(unrounded - exact) > bound) > 0.5
    assert np.all(np.abs(got - exact) <= bound)


@pytest.mark.parametrize("path", [p for p in PATHS if p != "portable"])
def test_native_paths_agree_with_the_portable_path(path):
    """Both within the bound of the exact result, so within twice it of each other."""
    needs(path)
    rng = np.random.default_rng(3)
    a = rng.standard_normal((130, 301)).astype(np.float32)
    b = np.asfortranarray(rng.standard_normal((301, 37)).astype(np.float32))
    mine, portable = np.zeros((130, 37), np.float32), np.zeros((130, 37), np.float32)
    _kernels.bf16_gemm(a, b, mine, 1.0, 0.0, path)
    _kernels.bf16_gemm(a, b, portable, 1.0, 0.0, "portable")
    _, bound = reference(a, b, mine, 1.0, 0.0)
    assert np.all(np.abs(mine.astype(np.float64) - portable) <= 2 * bound)
    assert not np.array_equal(mine, np.zeros_like(mine))


@pytest.mark.parametrize("path", PATHS)
def test_rounding_is_nearest_even_with_nan_inf_and_denormals(path):
    """The path's own conversion rounds every kind of float32 as the reference."""
    needs(path)
    rng = np.random.default_rng(1)
    special = np.array([0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, -np.nan,
                        np.finfo(np.float32).max, -np.finfo(np.float32).max,
                        np.finfo(np.float32).tiny, 1e-39, -1e-39, 1e-45, 3e38], np.float32)
    # exact ties (low 16 bits 0x8000) with even and odd kept bits, and their neighbours
    ties = np.array([0x3F808000, 0x3F818000, 0x3F807FFF, 0x3F808001, 0xBF818000,
                     0x7F7F8000, 0x00808000], np.uint32).view(np.float32)
    bits = rng.integers(0, 2**32, 5000, dtype=np.uint64).astype(np.uint32)
    x = np.concatenate([special, ties, bits.view(np.float32),
                        rng.standard_normal(333).astype(np.float32)])
    out = np.empty_like(x)
    _kernels.bf16_round(x, out, path)
    want = round_bf16(x)
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(out), nan)
    assert np.array_equal(out[~nan].view(np.uint32), want[~nan].view(np.uint32))
    assert out[special.size + 0] == np.float32(1.0) and out[special.size + 1] > 1.0078125


@pytest.mark.parametrize("path", PATHS)
def test_nan_and_inf_propagate_and_denormals_count_as_zero(path):
    needs(path)
    a = np.ones((20, 40), np.float32)
    b = np.ones((40, 18), np.float32)
    a[3, 5] = np.nan
    a[7, 0] = np.inf
    a[11, :] = 1e-39          # float32 denormals: zero once rounded
    b[:, 4] = 1e30
    c = np.zeros((20, 18), np.float32)
    _kernels.bf16_gemm(a, b, c, 1.0, 0.0, path)
    assert np.all(np.isnan(c[3]))
    assert np.all(np.isinf(c[7]))
    assert np.all(c[11] == 0)
    assert c[0, 0] == 40 and np.isfinite(c[0, 4]) and c[0, 4] > 1e31


@pytest.mark.parametrize("path", PATHS)
def test_k_zero_and_alpha_zero_scale_c_by_beta(path):
    needs(path)
    c = np.full((5, 6), 3.0, np.float32)
    _kernels.bf16_gemm(np.ones((5, 0), np.float32), np.ones((0, 6), np.float32), c, 1.0, 0.5,
                       path)
    assert np.all(c == 1.5)
    a = np.full((5, 4), np.nan, np.float32)  # alpha == 0: a and b are not read
    _kernels.bf16_gemm(a, np.ones((4, 6), np.float32), c, 0.0, 2.0, path)
    assert np.all(c == 3.0)
    c[...] = np.nan
    _kernels.bf16_gemm(np.ones((5, 4), np.float32), np.ones((4, 6), np.float32), c, 0.0, 0.0,
                       path)
    assert np.all(c == 0)


def test_bf16_matmul_is_the_default_path():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((9, 70)).astype(np.float32)
    b = rng.standard_normal((70, 13)).astype(np.float32)
    out, want = np.empty((9, 13), np.float32), np.empty((9, 13), np.float32)
    _kernels.bf16_matmul(a, b, out)
    _kernels.bf16_gemm(a, b, want, 1.0, 0.0, None)
    assert np.array_equal(out, want)


def test_path_choice_and_refusals():
    paths = _kernels.bf16_paths()
    assert paths[0] == "portable"
    assert _kernels.bf16_path() in paths and _kernels.bf16_path() != "amx_emulated"
    # the fastest native path this CPU runs is the one taken by default
    if not os.environ.get("MLP_BF16_PATH"):
        best = "amx" if "amx" in paths else "avx512bf16" if "avx512bf16" in paths else "portable"
        assert _kernels.bf16_path() == best
    c = np.zeros((2, 2), np.float32)
    with pytest.raises(ValueError, match="path must be one of"):
        _kernels.bf16_gemm(np.ones((2, 2), np.float32), np.ones((2, 2), np.float32), c, 1.0,
                           0.0, "avx1024")
    with pytest.raises(ValueError, match="do not fit"):
        _kernels.bf16_gemm(np.ones((2, 3), np.float32), np.ones((2, 2), np.float32), c)
    with pytest.raises(ValueError, match="unit stride"):
        _kernels.bf16_gemm(np.ones((4, 4), np.float32)[::2, ::2], np.ones((2, 2), np.float32),
                           c)
    for path in set(PATHS) - set(paths):
        with pytest.raises(ValueError, match="does not run on this CPU"):
            _kernels.bf16_gemm(np.ones((2, 2), np.float32), np.ones((2, 2), np.float32), c,
                               1.0, 0.0, path)


@pytest.mark.parametrize("wanted", ["portable", "avx512bf16", "amx", "nonsense"])
def test_environment_chooses_the_path_when_the_cpu_runs_it(wanted, tmp_path):
    paths = _kernels.bf16_paths()
    got = run_python("from mlp import _kernels; print(_kernels.bf16_path())", tmp_path,
                     env={"MLP_BF16_PATH": wanted}, capture_output=True,
                     text=True).stdout.strip()
    if wanted in paths:
        assert got == wanted
    else:  # not run here (or no such path): the default choice
        best = "amx" if "amx" in paths else "avx512bf16" if "avx512bf16" in paths else "portable"
        assert got == best
