"""mlp.augment and its kernels (mlp/_augment.pyx, mlp/_augment.h).

The stages distort() runs are held one by one against an independent
reference: Gaussian smoothing against scipy.ndimage.gaussian_filter,
bilinear resampling against scipy.ndimage.map_coordinates, the inverse
affine map against the forward map written out in numpy. Then distort()
itself is held to those stages (the same source points resampled give the
same bits), and to the properties users rely on: zero strength is the
identity, whole-pixel shifts move pixels exactly, outputs stay in [0, 1],
and the seed and sample ids alone decide the result.

Tolerances: outputs are float32 values in [0, 1] (or fields in [-1, 1]);
the kernels round a few float32 operations per value (bilinear: 3 lerps;
smoothing: two sums of at most 2*4*sigma+1 products with weights summing to
1), so errors are a few eps32 (1.2e-7) of the magnitude: atol 1e-6.
"""
from __future__ import annotations

import dataclasses
import io
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from mlp import _augment as K
from mlp import augment as A
from mlp.augment import Affine, Compose, Elastic, distort
from conftest import KernelSpy, require, run_python

SIDES = st.integers(1, 40)
SEEDS = st.integers(0, 2**64 - 1)


def images(n, side, seed=0):
    """n random float32 images in [0, 1], (n, side*side)."""
    return np.random.default_rng(seed).uniform(0, 1, (n, side * side)).astype(np.float32)


def digit_like(n, side, seed=0):
    """Images with a background border of 0, like MNIST's."""
    x = np.zeros((n, side, side), np.float32)
    if side > 2:
        x[:, 1:-1, 1:-1] = np.random.default_rng(seed).uniform(0, 1, (n, side - 2, side - 2))
    return x.reshape(n, side * side)


def ids(n, start=0):
    return np.arange(start, start + n, dtype=np.int64)


def kernel_distort(x, seed, side, rotation=0.0, scale=0.0, shear=0.0, shift=0.0,
                   alpha=0.0, sigma=0.0, n_threads=1, sample_ids=None):
    out = np.empty_like(x)
    sample_ids = ids(len(x)) if sample_ids is None else sample_ids
    plan = K.DistortionPlan(side, rotation, scale, shear, shift, alpha, sigma)
    K.distort(plan, x, out, sample_ids, seed, n_threads)
    return out


# ---------------------------------------------------------------------------
# Configurations
# ---------------------------------------------------------------------------

class TestConfigurations:
    def test_defaults_are_simards_elastic_and_a_moderate_affine(self):
        assert Elastic() == Elastic(alpha=34.0, sigma=4.0)
        affine = Affine()
        assert 10 <= affine.rotation <= 15 and 0.1 <= affine.scale <= 0.15
        assert affine.shear == 10.0 and affine.shift == 2.0

    def test_frozen_and_hashable(self):
        affine = Affine()
        with pytest.raises(dataclasses.FrozenInstanceError):
            affine.rotation = 3.0
        assert hash(Affine()) == hash(affine) and Affine() == affine
        assert {Affine() + Elastic(): 1}[Compose(Affine(), Elastic())] == 1

    def test_parameters_are_stored_as_floats(self):
        affine = Affine(rotation=np.int64(10), scale=0, shear=np.float32(5.0), shift=1)
        assert all(type(getattr(affine, f.name)) is float for f in dataclasses.fields(affine))
        assert type(Elastic(alpha=30, sigma=5).sigma) is float

    def test_addition_composes_in_either_order(self):
        affine, elastic = Affine(rotation=5), Elastic(alpha=10)
        assert affine + elastic == elastic + affine == Compose(affine, elastic)
        with pytest.raises(TypeError):
            affine + affine
        with pytest.raises(TypeError):
            elastic + 1

    @pytest.mark.parametrize("make, field", [
        (lambda v: Elastic(sigma=v), "Elastic.sigma"),
        (lambda v: Elastic(alpha=v), "Elastic.alpha"),
        (lambda v: Affine(rotation=v), "Affine.rotation"),
        (lambda v: Affine(scale=v), "Affine.scale"),
        (lambda v: Affine(shear=v), "Affine.shear"),
        (lambda v: Affine(shift=v), "Affine.shift"),
    ])
    @pytest.mark.parametrize("value", [-1.0, -1e-300, math.nan, math.inf, -math.inf])
    def test_negative_or_non_finite_parameters_raise_naming_the_field(self, make, field, value):
        with pytest.raises(ValueError, match=field.replace(".", r"\.")):
            make(value)

    @pytest.mark.parametrize("make, message", [
        (lambda: Affine(rotation=180.5), r"Affine\.rotation must be <= 180"),
        (lambda: Affine(scale=1.0), r"Affine\.scale must be < 1"),
        (lambda: Affine(shear=90.0), r"Affine\.shear must be < 90"),
        (lambda: Elastic(sigma=1001.0), r"Elastic\.sigma must be <= 1000"),
    ])
    def test_parameters_beyond_their_range_raise(self, make, message):
        with pytest.raises(ValueError, match=message):
            make()

    @pytest.mark.parametrize("value", ["1", None, True, [1.0], 1j])
    def test_non_numbers_raise_type_error(self, value):
        with pytest.raises(TypeError, match=r"Elastic\.alpha"):
            Elastic(alpha=value)

    def test_compose_checks_its_parts(self):
        with pytest.raises(TypeError, match=r"Compose\.affine"):
            Compose(Elastic(), Elastic())
        with pytest.raises(TypeError, match=r"Compose\.elastic"):
            Compose(Affine(), Affine())

    def test_import_mlp_does_not_import_matplotlib(self, tmp_path):
        code = ("import sys, mlp, mlp.augment; "
                "assert 'matplotlib' not in sys.modules, 'matplotlib imported'")
        run_python(code, tmp_path)


# ---------------------------------------------------------------------------
# Gaussian smoothing against scipy
# ---------------------------------------------------------------------------

@pytest.fixture(params=[True, False], ids=["fastest", "4-float vectors"])
def vector_width(request):
    """Run a test with the smoothing version this CPU picks, then with the
    4-float one every CPU has (SSE2, NEON)."""
    previous = K._allow_wide_vectors(request.param)
    yield
    K._allow_wide_vectors(previous)


@pytest.mark.usefixtures("vector_width")
class TestSmoothing:
    @settings(max_examples=60, deadline=None)
    @given(side=SIDES, sigma=st.one_of(st.just(0.0), st.floats(0.05, 15.0)),
           seed=st.integers(0, 2**32 - 1))
    def test_matches_scipy_gaussian_filter_reflect(self, side, sigma, seed):
        fields = np.random.default_rng(seed).uniform(-1, 1, (2, side, side)).astype(np.float32)
        smoothed = K._smooth(fields, sigma)
        for field, result in zip(fields, smoothed):
            expected = ndimage.gaussian_filter(field.astype(np.float64), sigma, mode="reflect",
                                               truncate=4.0)
            np.testing.assert_allclose(result, expected, rtol=0, atol=1e-6)

    def test_scale_multiplies_the_result(self):
        field = np.random.default_rng(1).uniform(-1, 1, (1, 28, 28)).astype(np.float32)
        np.testing.assert_allclose(K._smooth(field, 4.0, 34.0), 34.0 * K._smooth(field, 4.0),
                                   rtol=1e-6, atol=1e-6)

    def test_kernel_wider_than_the_image_reflects_repeatedly(self):
        # radius 4 * 6 = 24 > side 5: scipy's 'reflect' folds the kernel many times.
        field = np.random.default_rng(2).uniform(-1, 1, (1, 5, 5)).astype(np.float32)
        expected = ndimage.gaussian_filter(field[0].astype(np.float64), 6.0, mode="reflect")
        np.testing.assert_allclose(K._smooth(field, 6.0)[0], expected, atol=1e-6)


# ---------------------------------------------------------------------------
# Bilinear resampling against scipy
# ---------------------------------------------------------------------------

class TestResampling:
    @settings(max_examples=60, deadline=None)
    @given(side=SIDES, seed=st.integers(0, 2**32 - 1), spread=st.floats(0.0, 5.0))
    def test_matches_map_coordinates_order_1_outside_is_zero(self, side, seed, spread):
        rng = np.random.default_rng(seed)
        x = images(3, side, seed)
        rows = rng.uniform(-1 - spread, side + spread, (3, side, side)).astype(np.float32)
        columns = rng.uniform(-1 - spread, side + spread, (3, side, side)).astype(np.float32)
        # Whole pixels, the edges and just beyond them, where off-by-one errors live.
        edges = np.array([-1.0, -0.5, 0.0, side - 1.0, side - 0.5, float(side)], np.float32)
        rows[0].flat[:6] = edges
        columns[0].flat[:6] = edges[::-1]
        result = K._resample(x, rows, columns)
        for r in range(3):
            expected = ndimage.map_coordinates(
                x[r].reshape(side, side).astype(np.float64), [rows[r], columns[r]], order=1,
                mode="grid-constant", cval=0.0)
            np.testing.assert_allclose(result[r].reshape(side, side), expected, atol=1e-6)

    @settings(max_examples=30, deadline=None)
    @given(side=st.integers(3, 40), seed=st.integers(0, 2**32 - 1))
    def test_matches_mode_constant_on_images_with_a_background_border(self, side, seed):
        # scipy's mode='constant' returns cval for any point outside [0, side-1]
        # instead of blending the edge pixels with the background; on images
        # whose border is background (digits) both modes agree.
        rng = np.random.default_rng(seed)
        x = digit_like(2, side, seed)
        rows = rng.uniform(-3, side + 2, (2, side, side)).astype(np.float32)
        columns = rng.uniform(-3, side + 2, (2, side, side)).astype(np.float32)
        result = K._resample(x, rows, columns)
        for r in range(2):
            expected = ndimage.map_coordinates(
                x[r].reshape(side, side).astype(np.float64), [rows[r], columns[r]], order=1,
                mode="constant", cval=0.0)
            np.testing.assert_allclose(result[r].reshape(side, side), expected, atol=1e-6)

    def test_non_finite_points_read_background(self):
        x = np.ones((1, 16), np.float32)
        rows = np.full((1, 4, 4), np.nan, np.float32)
        rows[0, 0, :] = [np.inf, -np.inf, 1e30, -1e30]
        columns = np.ones((1, 4, 4), np.float32)
        assert (K._resample(x, rows, columns) == 0).all()

    def test_output_is_clipped_to_unit_interval(self):
        # Interpolation of values in [0, 1] stays in [0, 1] up to rounding; the
        # kernel clips that rounding away.
        x = np.ones((1, 9), np.float32)
        grid = np.random.default_rng(0).uniform(0, 2, (1, 3, 3)).astype(np.float32)
        out = K._resample(x, grid, grid[:, ::-1].copy())
        assert out.max() <= 1.0 and out.min() >= 0.0


# ---------------------------------------------------------------------------
# The affine map
# ---------------------------------------------------------------------------

def forward_matrix(rotation, scale, shear):
    """The documented forward map on centred (x, y), y pointing down."""
    theta, phi = np.radians(rotation), np.radians(shear)
    turn = np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]])
    slant = np.array([[1.0, np.tan(phi)], [0.0, 1.0]])
    return scale * turn @ slant


class TestAffine:
    @settings(max_examples=50, deadline=None)
    @given(rotation=st.floats(-180, 180), scale=st.floats(0.1, 3.0), shear=st.floats(-80, 80),
           tx=st.floats(-30, 30), ty=st.floats(-30, 30))
    def test_inverse_undoes_the_documented_forward_map(self, rotation, scale, shear, tx, ty):
        matrices, offsets = K._inverse_affine(np.array([[rotation, scale, shear, tx, ty]]))
        forward = forward_matrix(rotation, scale, shear)
        size = max(1.0, np.abs(forward).max() * np.abs(matrices[0]).max())
        np.testing.assert_allclose(matrices[0] @ forward, np.eye(2), atol=1e-6 * size)
        np.testing.assert_allclose(offsets[0], -matrices[0].astype(np.float64) @ [tx, ty],
                                   rtol=1e-5, atol=1e-5)

    @pytest.mark.parametrize("side", [5, 28, 29])
    def test_a_quarter_turn_is_counter_clockwise_on_screen(self, side):
        x = images(2, side)
        matrices, offsets = K._inverse_affine(np.array([[90.0, 1.0, 0.0, 0.0, 0.0]] * 2))
        out = K._warp(x, matrices, offsets, side)
        # np.rot90 turns an array counter-clockwise as displayed (row 0 on top).
        expected = np.rot90(x.reshape(2, side, side), axes=(1, 2)).reshape(2, -1)
        np.testing.assert_allclose(out, expected, atol=1e-5)

    def test_positive_shear_moves_lower_rows_right(self):
        side = 21
        x = np.zeros((1, side, side), np.float32)
        x[0, 15, 10] = 1.0  # 5 rows below the centre (10, 10)
        matrices, offsets = K._inverse_affine(np.array([[0.0, 1.0, 45.0, 0.0, 0.0]]))
        out = K._warp(x.reshape(1, -1), matrices, offsets, side).reshape(side, side)
        assert np.unravel_index(out.argmax(), out.shape) == (15, 15)

    @settings(max_examples=60, deadline=None)
    @given(side=SIDES, tx=st.integers(-45, 45), ty=st.integers(-45, 45))
    def test_a_whole_pixel_shift_moves_pixels_exactly(self, side, tx, ty):
        x = images(2, side, seed=side).reshape(2, side, side)
        matrices, offsets = K._inverse_affine(np.array([[0.0, 1.0, 0.0, tx, ty]] * 2))
        out = K._warp(x.reshape(2, -1), matrices, offsets, side).reshape(2, side, side)
        # out[i, j] = x[i - ty, j - tx], background where that is outside.
        i, j = np.mgrid[0:side, 0:side]
        inside = (0 <= i - ty) & (i - ty < side) & (0 <= j - tx) & (j - tx < side)
        expected = np.where(inside, x[:, np.clip(i - ty, 0, side - 1), np.clip(j - tx, 0, side - 1)],
                            np.float32(0))
        np.testing.assert_array_equal(out, expected)

    @settings(max_examples=30, deadline=None)
    @given(seed=SEEDS, rotation=st.sampled_from([0.0, 1e-3, 15.0, 180.0]),
           scale=st.sampled_from([0.0, 1e-3, 0.12, 0.99]),
           shear=st.sampled_from([0.0, 1e-3, 10.0, 89.0]),
           shift=st.sampled_from([0.0, 1e-3, 2.0, 1e6]))
    def test_draws_are_uniform_in_their_ranges(self, seed, rotation, scale, shear, shift):
        params, _, _ = K._affine_draws(ids(2000), seed, rotation, scale, shear, shift)
        bounds = np.array([rotation, scale, shear, shift, shift])
        centre = np.array([0.0, 1.0, 0.0, 0.0, 0.0])
        deviation = np.abs(params - centre)
        assert (deviation <= bounds * (1 + 1e-6) + 1e-12).all()
        # Mean of 2000 uniforms on [-b, b]: standard error b / sqrt(3 * 2000) = b / 77.
        assert (np.abs((params - centre).mean(axis=0)) <= 5 * bounds / 77 + 1e-12).all()
        # and they fill the range: the largest of 2000 is within 1% of the bound.
        assert (deviation.max(axis=0) >= 0.99 * bounds).all()

    def test_the_five_draws_are_uncorrelated(self):
        params, _, _ = K._affine_draws(ids(5000), 3, 10.0, 0.1, 10.0, 2.0)
        correlation = np.corrcoef(params.T)
        assert np.abs(correlation - np.eye(5)).max() < 0.06  # 4 standard errors


# ---------------------------------------------------------------------------
# distort(): the stages put together
# ---------------------------------------------------------------------------

PARAMETER_ORDER = ("rotation", "scale", "shear", "shift", "alpha", "sigma")
PARAMS = st.fixed_dictionaries({
    "rotation": st.sampled_from([0.0, 12.0, 180.0]),
    "scale": st.sampled_from([0.0, 0.12, 0.9]),
    "shear": st.sampled_from([0.0, 10.0, 80.0]),
    "shift": st.sampled_from([0.0, 2.0, 100.0]),
    "alpha": st.sampled_from([0.0, 34.0, 1e4]),
    "sigma": st.sampled_from([0.0, 0.7, 4.0, 30.0]),
})


class TestDistortKernel:
    @settings(max_examples=40, deadline=None)
    @given(side=SIDES, seed=SEEDS, params=PARAMS)
    def test_is_the_source_points_resampled(self, side, seed, params):
        x = images(3, side, seed % 1000)
        sample_ids = ids(3, start=seed % 97)
        plan = K.DistortionPlan(side, *[params[name] for name in PARAMETER_ORDER])
        rows, columns = K._source_points(plan, sample_ids, seed)
        expected = K._resample(x, rows, columns)
        out = kernel_distort(x, seed, side, **params, sample_ids=sample_ids)
        np.testing.assert_array_equal(out, expected)

    @settings(max_examples=30, deadline=None)
    @given(side=SIDES, seed=SEEDS, rotation=st.floats(0, 180), scale=st.floats(0, 0.99),
           shear=st.floats(0, 89), shift=st.floats(0, 10))
    def test_affine_source_points_are_the_drawn_map(self, side, seed, rotation, scale, shear,
                                                    shift):
        sample_ids = ids(3)
        _, matrices, offsets = K._affine_draws(sample_ids, seed, rotation, scale, shear, shift)
        plan = K.DistortionPlan(side, rotation, scale, shear, shift, 0.0, 0.0)
        rows, columns = K._source_points(plan, sample_ids, seed)
        c = (side - 1) / 2
        y, x = np.mgrid[0:side, 0:side] - c
        for r in range(3):
            a, o = matrices[r].astype(np.float64), offsets[r].astype(np.float64)
            expected_x = a[0, 0] * x + a[0, 1] * y + c + o[0]
            expected_y = a[1, 0] * x + a[1, 1] * y + c + o[1]
            size = 1 + np.abs(a).sum() * side + np.abs(o).max()
            np.testing.assert_allclose(columns[r], expected_x, atol=1e-6 * size)
            np.testing.assert_allclose(rows[r], expected_y, atol=1e-6 * size)

    def test_elastic_fields_before_smoothing_are_uniform_noise(self):
        # sigma 0 skips the smoothing and alpha 1 the scaling: the raw fields.
        side, n = 28, 200
        rows, columns = K._source_points(K.DistortionPlan(side, 0, 0, 0, 0, 1.0, 0.0), ids(n), 5)
        y, x = np.mgrid[0:side, 0:side]
        dy, dx = (rows - y).ravel(), (columns - x).ravel()
        for d in (dx, dy):
            assert d.min() >= -1 and d.max() <= 1
            assert abs(d.mean()) < 5 * np.sqrt(1 / 3 / d.size)
            assert abs(d.var() - 1 / 3) < 0.01
            # uniform: a tenth of the values in each tenth of [-1, 1]
            counts = np.histogram(d, bins=10, range=(-1, 1))[0] / d.size
            assert np.abs(counts - 0.1).max() < 0.01
        assert abs(np.corrcoef(dx, dy)[0, 1]) < 0.02
        # neighbouring pixels and images are independent
        assert abs(np.corrcoef(dx[:-1], dx[1:])[0, 1]) < 0.02
        per_image = dx.reshape(n, -1)
        assert abs(np.corrcoef(per_image[:-1].ravel(), per_image[1:].ravel())[0, 1]) < 0.02

    def test_elastic_fields_are_the_smoothed_noise_times_alpha(self):
        side, n, alpha, sigma = 28, 3, 34.0, 4.0
        raw = K.DistortionPlan(side, 0, 0, 0, 0, 1.0, 0.0)
        raw_rows, raw_columns = K._source_points(raw, ids(n), 9)
        plan = K.DistortionPlan(side, 0, 0, 0, 0, alpha, sigma)
        rows, columns = K._source_points(plan, ids(n), 9)
        y, x = np.mgrid[0:side, 0:side]
        for raw, smooth, grid in ((raw_rows, rows, y), (raw_columns, columns, x)):
            expected = alpha * np.stack([
                ndimage.gaussian_filter((f - grid).astype(np.float64), sigma) for f in raw])
            np.testing.assert_allclose(smooth - grid, expected, atol=1e-4)

    def test_simards_setting_displaces_pixels_by_about_a_pixel(self):
        rows, columns = K._source_points(K.DistortionPlan(28, 0, 0, 0, 0, 34.0, 4.0), ids(100), 0)
        dx = columns - np.arange(28)[None, None, :]
        assert 0.8 < dx.std() < 2.5


class TestDeterminism:
    @settings(max_examples=20, deadline=None)
    @given(side=st.integers(1, 30), seed=SEEDS, n=st.integers(1, 40), params=PARAMS,
           threads=st.integers(2, 5))
    def test_same_seed_same_images_on_any_threads(self, side, seed, n, params, threads):
        x = images(n, side)
        one = kernel_distort(x, seed, side, **params, n_threads=1)
        many = kernel_distort(x, seed, side, **params, n_threads=threads)
        np.testing.assert_array_equal(one, many)

    @settings(max_examples=20, deadline=None)
    @given(seed=SEEDS, cut=st.integers(0, 30), params=PARAMS)
    def test_row_splits_do_not_matter(self, seed, cut, params):
        x = images(30, 12)
        whole = kernel_distort(x, seed, 12, **params, n_threads=2)
        first = kernel_distort(x[:cut], seed, 12, **params, sample_ids=ids(cut))
        second = kernel_distort(x[cut:], seed, 12, **params, sample_ids=ids(30 - cut, cut))
        np.testing.assert_array_equal(np.concatenate([first, second]), whole)

    def test_seed_and_sample_id_change_the_draws(self):
        x = np.repeat(digit_like(1, 28), 4, axis=0)
        base = distort(x, Affine() + Elastic(), seed=1)
        assert all(not np.array_equal(base[0], base[i]) for i in (1, 2, 3))
        other_seed = distort(x, Affine() + Elastic(), seed=2)
        assert not any(np.array_equal(base[i], other_seed[i]) for i in range(4))
        later = distort(x, Affine() + Elastic(), seed=1, sample_ids=[2, 3, 4, 5])
        np.testing.assert_array_equal(later[:2], base[2:])

    def test_affine_draws_do_not_depend_on_the_elastic_part(self):
        # The affine map uses draws 0-2 of each image and the fields the rest,
        # so adding an elastic field keeps each image's affine map.
        x = digit_like(5, 28)
        affine = Affine()
        with_field = kernel_distort(x, 4, 28, affine.rotation, affine.scale, affine.shear,
                                    affine.shift, alpha=1e-3, sigma=4.0)
        np.testing.assert_allclose(with_field, distort(x, affine, seed=4), atol=1e-3)


# ---------------------------------------------------------------------------
# Public properties
# ---------------------------------------------------------------------------

class TestDistort:
    @settings(max_examples=30, deadline=None)
    @given(side=SIDES, seed=SEEDS, sigma=st.floats(0, 20), three_d=st.booleans())
    def test_zero_strength_is_the_identity(self, side, seed, sigma, three_d):
        x = images(4, side, seed % 1000)
        if three_d:
            x = x.reshape(4, side, side)
        zero_affine = Affine(rotation=0, scale=0, shear=0, shift=0)
        zero_elastic = Elastic(alpha=0, sigma=sigma)
        for augment in (zero_affine, zero_elastic, zero_affine + zero_elastic):
            out = distort(x, augment, seed=seed, n_threads=2)
            assert out.shape == x.shape and out.dtype == np.float32
            np.testing.assert_array_equal(out, x)

    @settings(max_examples=40, deadline=None)
    @given(side=SIDES, seed=SEEDS, params=PARAMS)
    def test_output_stays_in_unit_interval_without_nan(self, side, seed, params):
        x = images(6, side, seed % 1000)
        x[0] = 1.0
        x[1] = 0.0
        augment = Affine(params["rotation"], params["scale"], params["shear"], params["shift"]) \
            + Elastic(params["alpha"], params["sigma"])
        out = distort(x, augment, seed=seed)
        assert not np.isnan(out).any()
        assert out.min() >= 0.0 and out.max() <= 1.0
        assert (out[1] == 0).all()

    def test_distortion_moves_ink_but_keeps_most_of_it(self):
        x = digit_like(50, 28, seed=3)
        for augment in (Affine(), Elastic(), Affine() + Elastic()):
            out = distort(x, augment, seed=0)
            assert np.abs(out - x).mean() > 0.05
            ratio = out.sum(axis=1) / x.sum(axis=1)
            assert 0.6 < np.median(ratio) < 1.4

    def test_input_is_not_modified_and_float64_is_accepted(self):
        x = images(3, 10).astype(np.float64)
        before = x.copy()
        out = distort(x, Elastic(), seed=0)
        np.testing.assert_array_equal(x, before)
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, distort(x.astype(np.float32), Elastic(), seed=0))

    def test_empty_batch(self):
        out = distort(np.zeros((0, 784), np.float32), Affine(), seed=0)
        assert out.shape == (0, 784) and out.dtype == np.float32

    def test_seed_may_be_a_generator_or_none(self):
        x = digit_like(2, 28)
        a = distort(x, Elastic(), seed=np.random.default_rng(5))
        b = distort(x, Elastic(), seed=np.random.default_rng(5))
        np.testing.assert_array_equal(a, b)
        assert distort(x, Elastic(), seed=None).shape == x.shape
        distort(x, Elastic(), seed=2**64 - 1)
        distort(x, Elastic(), seed=0, n_threads=None)

    @pytest.mark.parametrize("bad, error, message", [
        (np.zeros((3, 783), np.float32), ValueError, "must be square"),
        (np.zeros((3, 28, 27), np.float32), ValueError, "must be square"),
        (np.zeros((28, 28), np.float32), ValueError, r"images\[None\]"),
        (np.zeros(784, np.float32), ValueError, "2-D"),
        (np.zeros((1, 1, 28, 28), np.float32), ValueError, "2-D"),
        (np.zeros((2, 0), np.float32), ValueError, "at least one pixel"),
        (np.zeros((2, 784), np.uint8), TypeError, "255"),
        (np.full((2, 784), 2.0), ValueError, r"\[0, 1\]"),
        (np.full((2, 784), -0.5), ValueError, r"\[0, 1\]"),
        (np.full((2, 784), np.nan), ValueError, "NaN"),
        ([["a"]], TypeError, "floats"),
    ])
    def test_bad_images_raise(self, bad, error, message):
        with pytest.raises(error, match=message):
            distort(bad, Affine(), seed=0)

    @pytest.mark.parametrize("kwargs, error, message", [
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": 2**64}, ValueError, "seed"),
        ({"seed": 1.5}, TypeError, "seed"),
        ({"seed": 0, "sample_ids": [0, 1]}, ValueError, "sample_ids"),
        ({"seed": 0, "sample_ids": [0, 1, -2]}, ValueError, "sample_ids"),
        ({"seed": 0, "sample_ids": [0.0, 1.0, 2.0]}, TypeError, "sample_ids"),
        ({"seed": 0, "n_threads": 0}, ValueError, "n_threads"),
        ({"seed": 0, "n_threads": 1.0}, TypeError, "n_threads"),
    ])
    def test_bad_arguments_raise(self, kwargs, error, message):
        with pytest.raises(error, match=message):
            distort(digit_like(3, 28), Affine(), **kwargs)

    @pytest.mark.parametrize("augment", [None, "elastic", Elastic, (Affine(), Elastic())])
    def test_augment_must_be_a_configuration(self, augment):
        with pytest.raises(TypeError, match="Affine, Elastic or Compose"):
            distort(digit_like(1, 28), augment, seed=0)

    def test_seed_is_required(self):
        with pytest.raises(TypeError):
            distort(digit_like(1, 28), Affine())


# ---------------------------------------------------------------------------
# Preview
# ---------------------------------------------------------------------------

class TestPreviewGrid:
    def test_renders_a_non_blank_png(self):
        require("matplotlib")
        import matplotlib.image

        x = digit_like(10, 28)
        fig = A.preview_grid(x, Affine() + Elastic(), seed=0, n=5, copies=2)
        assert len(fig.axes) == 3 * 5
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=40)
        assert buffer.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
        buffer.seek(0)
        pixels = matplotlib.image.imread(buffer, format="png")[..., :3].mean(axis=-1)
        assert pixels.std() > 0.05 and pixels.min() < 0.2 and pixels.max() > 0.9

    def test_first_row_shows_the_originals_and_the_rest_distortions(self):
        require("matplotlib")
        x = digit_like(4, 12)
        fig = A.preview_grid(x, Elastic(), seed=3, n=4, copies=1)
        shown = [np.asarray(ax.images[0].get_array()) for ax in fig.axes]
        for i in range(4):
            np.testing.assert_array_equal(shown[i], x[i].reshape(12, 12))
        np.testing.assert_array_equal(np.stack(shown[4:]).reshape(4, -1),
                                      distort(x, Elastic(), seed=3))

    @pytest.mark.parametrize("kwargs, message", [
        ({"n": 11}, "n must be <="), ({"n": 0}, "n must be >="), ({"copies": 0}, "copies"),
    ])
    def test_bad_arguments_raise(self, kwargs, message):
        with pytest.raises(ValueError, match=message):
            A.preview_grid(digit_like(10, 28), Affine(), **kwargs)


# ---------------------------------------------------------------------------
# Training on distorted images: train(augment=...)
# ---------------------------------------------------------------------------

def labelled_digits(n=48, side=8, classes=3, seed=0):
    """n digit-like images (n, side*side) and labels in [0, classes)."""
    return digit_like(n, side, seed), np.random.default_rng(seed).integers(0, classes, n)


def trained(X, y, *, layers=(64, 24, 3), dtype=np.float32, n_threads=1, **options):
    """The parameters of a fresh model (seed 0) after mlp.train(..., **options)."""
    import mlp

    model = mlp.Model(list(layers), seed=0, dtype=dtype)
    options = {"epochs": 2, "batch_size": 8, "seed": 5, **options}
    mlp.train(model, X, y, progress=False, n_threads=n_threads, **options)
    return model


class TestTrainWithAugment:
    def test_every_drawn_row_is_a_fresh_distortion_keyed_by_the_draw_counter(self, monkeypatch):
        """The run equals plain SGD steps on distort(X[batch], seed=the run's
        key, sample_ids=draws before it): each draw of an image its own
        distortion, whatever epoch and position it is drawn in."""
        import mlp
        from mlp import training

        X, y = labelled_digits()
        augment = Affine(rotation=20, shift=1) + Elastic(alpha=20, sigma=3)
        spy = KernelSpy()
        monkeypatch.setattr(training, "_kernels", spy)
        model = trained(X, y, optimizer=mlp.SGD(0.1), augment=augment)
        monkeypatch.undo()
        order = np.concatenate(spy.orders)
        assert len(order) == 2 * len(X)

        expected = mlp.Model([64, 24, 3], seed=0)
        for step in range(len(order) // 8):
            rows = order[8 * step:8 * (step + 1)]
            images = distort(X[rows], augment, seed=model._dropout_seed,
                             sample_ids=8 * step + np.arange(8))
            mlp.training_step(expected, images, y[rows], optimizer=mlp.SGD(0.1))
        np.testing.assert_allclose(model._params, expected._params, rtol=1e-5, atol=1e-6)
        undistorted = trained(X, y, optimizer=mlp.SGD(0.1))
        assert np.abs(undistorted._params - model._params).max() > 1e-3

    def test_validation_images_are_not_distorted(self):
        import mlp

        X, y = labelled_digits()
        X_val, y_val = labelled_digits(40, seed=1)
        model = mlp.Model([64, 24, 3], seed=0)
        history = mlp.train(model, X, y, epochs=1, batch_size=8, seed=5, progress=False,
                            augment=Affine(rotation=45, shift=3), validation=(X_val, y_val))
        assert history.val_accuracy[-1] == mlp.evaluate(model, X_val, y_val).accuracy

    def test_deterministic_for_a_seed_and_on_one_or_two_threads(self):
        X, y = labelled_digits(96)
        augment = Affine() + Elastic()
        runs = {threads: trained(X, y, layers=(64, 96, 48, 3), n_threads=threads,
                                 augment=augment)._params for threads in (1, 2)}
        again = trained(X, y, layers=(64, 96, 48, 3), n_threads=2, augment=augment)._params
        np.testing.assert_array_equal(again, runs[2])
        np.testing.assert_allclose(runs[1], runs[2], rtol=1e-4, atol=1e-5)
        other_seed = trained(X, y, layers=(64, 96, 48, 3), n_threads=2, augment=augment,
                             seed=6)._params
        assert np.abs(other_seed - runs[2]).max() > 1e-3

    def test_a_run_split_over_two_calls_draws_what_one_call_draws(self):
        import mlp

        X, y = labelled_digits()
        options = dict(optimizer=mlp.SGD(0.1), augment=Affine() + Elastic())
        whole = trained(X, y, **options)
        split = trained(X, y, **{**options, "epochs": 1})
        mlp.train(split, X, y, epochs=1, batch_size=8, progress=False, n_threads=1, **options)
        np.testing.assert_array_equal(split._params, whole._params)

    def test_a_run_resumed_from_a_checkpoint_draws_what_one_run_draws(self, tmp_path,
                                                                        monkeypatch):
        import mlp
        from mlp import training

        class StopAfterThreeCalls(mlp.Callback):
            calls = 0

            def on_steps(self, run, steps, loss_sum, samples):
                self.calls += 1
                if self.calls == 3:
                    raise KeyboardInterrupt

        monkeypatch.setattr(training, "_FIRST_CALL_STEPS", 2)
        monkeypatch.setattr(training, "_SECONDS_PER_CALL", 1e-9)  # then 1 step per call
        X, y = labelled_digits()
        augment = Affine(rotation=20) + Elastic(alpha=20, sigma=3)
        whole = trained(X, y, augment=augment)
        path = tmp_path / "run.npz"
        with pytest.raises(KeyboardInterrupt):
            trained(X, y, augment=augment, checkpoint=path, checkpoint_every=0,
                    callbacks=[StopAfterThreeCalls()])
        model, options = training.options_from_checkpoint(path)
        assert options.augment == augment
        resumed = mlp.Model([64, 24, 3], seed=1)
        mlp.train(resumed, X, y, epochs=2, batch_size=8, augment=augment, progress=False,
                  n_threads=1, resume=path)
        np.testing.assert_array_equal(resumed._params, whole._params)
        with pytest.raises(ValueError, match="augment"):
            mlp.train(mlp.Model([64, 24, 3]), X, y, epochs=2, batch_size=8, progress=False,
                      augment=Elastic(), resume=path)

    @pytest.mark.parametrize("augment", [Affine(), Elastic(), Affine(0, 0, 0, 0) + Elastic()])
    def test_descriptions_round_trip(self, augment):
        import json

        description = json.loads(json.dumps(A.augment_to_dict(augment)))
        assert A.augment_from_dict(description) == augment

    @pytest.mark.parametrize("description", [
        None, {}, {"affine": None, "elastic": None}, {"affine": {"turn": 3}, "elastic": None},
        {"affine": {"rotation": -3}, "elastic": None}, {"affine": None},
    ])
    def test_bad_descriptions_raise_value_error(self, description):
        with pytest.raises(ValueError):
            A.augment_from_dict(description)

    @pytest.mark.parametrize("augment", [
        Affine(0, 0, 0, 0), Elastic(alpha=0.0), Compose(Affine(0, 0, 0, 0), Elastic(0.0, 4.0)),
    ])
    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    def test_zero_strength_trains_exactly_as_without_augment(self, augment, dtype):
        X, y = labelled_digits()
        plain = trained(X, y, layers=(64, 96, 48, 3), dtype=dtype, n_threads=2)
        zero = trained(X, y, layers=(64, 96, 48, 3), dtype=dtype, n_threads=2, augment=augment)
        np.testing.assert_array_equal(zero._params, plain._params)

    def test_a_float64_model_trains_on_float32_distortions_of_its_data(self):
        """The distortions are drawn in float32 and widened: float64 data is
        converted first, so it trains as its float32 copy does."""
        X, y = labelled_digits()
        augment = Affine() + Elastic()
        from64 = trained(X.astype(np.float64), y, dtype=np.float64, augment=augment)
        from32 = trained(X, y, dtype=np.float64, augment=augment)
        assert from64._params.dtype == np.float64
        np.testing.assert_array_equal(from64._params, from32._params)
        single = trained(X, y, dtype=np.float32, augment=augment)
        np.testing.assert_allclose(from32._params, single._params, rtol=1e-3, atol=1e-4)

    def test_inputs_that_are_not_square_images_raise_naming_augment(self):
        import mlp

        X = np.random.default_rng(0).uniform(0, 1, (10, 10))
        with pytest.raises(ValueError, match=r"augment distorts square images.*10 inputs"):
            mlp.train(mlp.Model([10, 3]), X, np.arange(10) % 3, augment=Affine(),
                      progress=False)

    @pytest.mark.parametrize("augment", ["elastic", Affine, 1.0, (Affine(), Elastic())])
    def test_wrong_types_raise_naming_augment(self, augment):
        import mlp

        X, y = labelled_digits(8)
        with pytest.raises(TypeError, match=r"augment must be an mlp\.augment\.Affine"):
            mlp.train(mlp.Model([64, 3]), X, y, augment=augment, progress=False)

    @pytest.mark.parametrize("bad, message", [
        (2.0, r"augment needs X in \[0, 1\].*up to 2|from 0 to 2"),
        (-0.5, r"augment needs X in \[0, 1\]"),
        (np.nan, "NaN or infinity"),
    ])
    def test_images_outside_0_1_raise(self, bad, message):
        import mlp

        X, y = labelled_digits(8)
        X[3, 10] = bad
        model = mlp.Model([64, 3], seed=0)
        before = model._params.copy()
        with pytest.raises(ValueError, match=message):
            mlp.train(model, X, y, augment=Elastic(), progress=False)
        np.testing.assert_array_equal(model._params, before)
