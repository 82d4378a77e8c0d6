# The compiled side of mlp.augment: random affine and elastic distortions of
# square float32 images, on pthreads without the GIL. The kernels themselves
# are C, in _augment.h, declared in _augment.pxd; this module builds their
# tables (DistortionPlan) and splits images between threads. Another
# compiled module (the training loop) can `from ._augment cimport
# DistortionPlan, mlp_aug_distort_image, ...` and distort rows as it
# gathers them, with one workspace (mlp_aug_work_floats) per thread.
#
# Contract with mlp/augment.py: arrays arrive C-contiguous with the dtype and
# shape stated, images (n, side*side) with values in [0, 1], parameters
# finite and in range. Nothing here checks that again.

from libc.stdint cimport uint64_t, int64_t

import numpy as np


cdef extern from "_parallel.h" nogil:
    ctypedef struct mlp_barrier:
        pass
    ctypedef void (*mlp_task)(void* ctx, int tid, int n_threads) noexcept nogil
    int mlp_parallel_run(mlp_task fn, void* ctx, int n_threads, mlp_barrier* barrier)


cdef class DistortionPlan:
    """What distort() draws for images of one side: an mlp_aug_plan and the
    arrays its pointers refer to (declared in _augment.pxd, so that other
    compiled modules can cimport it and call mlp_aug_distort_image).

    DistortionPlan(side, rotation, scale, shear, shift, alpha, sigma), with
    the units of mlp.augment.Affine and Elastic; alpha 0 means no elastic
    field, all four affine parameters 0 no affine map."""

    def __init__(self, int side, double rotation, double scale, double shear, double shift,
                 double alpha, double sigma):
        cdef float[::1] gauss = np.zeros(side * side, dtype=np.float32)
        cdef int[::1] band_lo = np.zeros(side, dtype=np.intc)
        cdef int[::1] band_hi = np.zeros(side, dtype=np.intc)
        cdef double[::1] weights = np.empty(mlp_aug_gauss_scratch(side, sigma), dtype=np.float64)
        self.gauss, self.band_lo, self.band_hi = gauss.base, band_lo.base, band_hi.base
        if alpha > 0:
            mlp_aug_gauss_matrix(side, sigma, &gauss[0], &band_lo[0], &band_hi[0], &weights[0])
        self.plan.side = side
        self.plan.stride = mlp_aug_stride(side)
        self.plan.rotation = rotation * np.pi / 180.0
        self.plan.scale = scale
        self.plan.shear = shear * np.pi / 180.0
        self.plan.shift = shift
        self.plan.affine = rotation > 0 or scale > 0 or shear > 0 or shift > 0
        self.plan.alpha = alpha
        self.plan.elastic = alpha > 0
        self.plan.gauss = &gauss[0]
        self.plan.band_lo = &band_lo[0]
        self.plan.band_hi = &band_hi[0]


cdef struct _Job:
    const mlp_aug_plan* plan
    const float* images
    float* out
    const int64_t* sample_ids
    uint64_t seed
    Py_ssize_t n
    float* work           # one workspace per thread, work_floats apart
    Py_ssize_t work_floats


cdef void _distort_rows(void* ctx, int tid, int n_threads) noexcept nogil:
    """Thread tid's share of the images: a contiguous block of rows."""
    cdef _Job* job = <_Job*>ctx
    cdef Py_ssize_t pixels = <Py_ssize_t>job.plan.side * job.plan.side
    cdef Py_ssize_t lo = job.n * tid // n_threads
    cdef Py_ssize_t hi = job.n * (tid + 1) // n_threads
    cdef float* work = job.work + tid * job.work_floats
    cdef Py_ssize_t r
    mlp_aug_work_init(job.plan.side, work)
    for r in range(lo, hi):
        mlp_aug_distort_image(job.plan, job.images + r * pixels, job.out + r * pixels,
                              job.seed, <uint64_t>job.sample_ids[r], work)


def distort(DistortionPlan plan, const float[:, ::1] images, float[:, ::1] out,
            const int64_t[::1] sample_ids, uint64_t seed, int n_threads):
    """Distort every row of images into out as the plan says; returns the threads used.

    images, out: (n, side*side) float32, side the plan's; sample_ids: (n,)
    int64, each the counter that keys its image's random draws with seed.
    The result depends on (plan, seed, sample id) only, not on n_threads."""
    cdef Py_ssize_t n = images.shape[0]
    cdef Py_ssize_t work_floats = mlp_aug_work_floats(plan.plan.side)
    cdef int threads = <int>max(1, min(n_threads, n))
    cdef float[::1] work = np.empty(threads * work_floats, dtype=np.float32)
    cdef _Job job
    cdef mlp_barrier barrier
    if n == 0:
        return 1
    job.plan = &plan.plan
    job.images = &images[0, 0]
    job.out = &out[0, 0]
    job.sample_ids = &sample_ids[0]
    job.seed = seed
    job.n = n
    job.work = &work[0]
    job.work_floats = work_floats
    with nogil:
        threads = mlp_parallel_run(_distort_rows, &job, threads, &barrier)
    return threads


# ---------------------------------------------------------------------------
# The stages on their own, for the tests: each is the code distort() runs.
# ---------------------------------------------------------------------------

def _allow_wide_vectors(bint allow):
    """Whether smoothing may use its AVX2 version; returns the previous setting.
    Not thread-safe: for tests of the 4-float version on CPUs with AVX2."""
    global mlp_aug_allow_v8
    previous = mlp_aug_allow_v8
    mlp_aug_allow_v8 = allow
    return bool(previous)


def _smooth(const float[:, :, ::1] fields, double sigma, double scale=1.0):
    """scale * Gaussian smoothing (scipy 'reflect', truncate 4) of each (side, side) field."""
    cdef int m = fields.shape[0], side = fields.shape[1]
    cdef DistortionPlan plan = DistortionPlan(side, 0.0, 0.0, 0.0, 0.0, 1.0, sigma)
    cdef int P = plan.plan.stride
    cdef float[:, :, ::1] out = np.empty((m, side, side), dtype=np.float32)
    # P x P: the transposes work on whole 4x4 blocks (mlp_aug_field_floats).
    cdef float[:, ::1] field = np.zeros((P, P), dtype=np.float32)
    cdef float[:, ::1] tmp = np.zeros((P, P), dtype=np.float32)
    cdef int f, i, j
    with nogil:
        for f in range(m):
            for i in range(side):
                for j in range(side):
                    field[i, j] = fields[f, i, j]
            mlp_aug_smooth(&plan.plan, &field[0, 0], &tmp[0, 0], <float>scale)
            for i in range(side):
                for j in range(side):
                    out[f, i, j] = field[i, j]
    return out.base


def _resample(const float[:, ::1] images, const float[:, :, ::1] rows,
              const float[:, :, ::1] columns):
    """Each image (side*side) sampled bilinearly at (rows, columns) (n, side, side)."""
    cdef int n = images.shape[0], side = rows.shape[1]
    cdef int P = mlp_aug_stride(side)
    cdef float[:, ::1] out = np.empty((n, side * side), dtype=np.float32)
    cdef float[:, ::1] sx = np.zeros((side, P), dtype=np.float32)
    cdef float[:, ::1] sy = np.zeros((side, P), dtype=np.float32)
    cdef float[::1] padded = np.zeros((side + 3) * (side + 3), dtype=np.float32)
    cdef int r, i, j
    with nogil:
        for r in range(n):
            for i in range(side):
                for j in range(side):
                    sx[i, j] = columns[r, i, j]
                    sy[i, j] = rows[r, i, j]
            mlp_aug_pad(side, &images[r, 0], &padded[0])
            mlp_aug_resample(side, P, &padded[0], &sx[0, 0], &sy[0, 0], &out[r, 0])
    return out.base


def _warp(const float[:, ::1] images, const float[:, :, ::1] matrices,
          const float[:, ::1] offsets, int side):
    """Each image resampled at A (p - c) + c + o, A = matrices[r] (2, 2) acting on
    (x, y) = (column, row), o = offsets[r] (x, y): an explicit inverse affine map."""
    cdef int n = images.shape[0]
    cdef int P = mlp_aug_stride(side)
    cdef float[:, ::1] out = np.empty((n, side * side), dtype=np.float32)
    cdef float[:, ::1] sx = np.zeros((side, P), dtype=np.float32)
    cdef float[:, ::1] sy = np.zeros((side, P), dtype=np.float32)
    cdef float[::1] padded = np.zeros((side + 3) * (side + 3), dtype=np.float32)
    cdef float a[4]
    cdef int r
    with nogil:
        for r in range(n):
            a[0] = matrices[r, 0, 0]
            a[1] = matrices[r, 0, 1]
            a[2] = matrices[r, 1, 0]
            a[3] = matrices[r, 1, 1]
            mlp_aug_coordinates(side, P, a, &offsets[r, 0], NULL, NULL, &sx[0, 0], &sy[0, 0])
            mlp_aug_pad(side, &images[r, 0], &padded[0])
            mlp_aug_resample(side, P, &padded[0], &sx[0, 0], &sy[0, 0], &out[r, 0])
    return out.base


def _affine_draws(const int64_t[::1] sample_ids, uint64_t seed, double rotation,
                  double scale, double shear, double shift):
    """The affine maps distort() draws: (params (n, 5), matrices (n, 2, 2), offsets (n, 2)).

    params: rotation (degrees), scale factor, shear (degrees), shift x, shift y;
    matrices and offsets: the inverse map _warp takes."""
    cdef DistortionPlan plan = DistortionPlan(1, rotation, scale, shear, shift, 0.0, 0.0)
    cdef Py_ssize_t n = sample_ids.shape[0], r
    cdef double[:, ::1] params = np.empty((n, 5), dtype=np.float64)
    cdef float[:, :, ::1] matrices = np.empty((n, 2, 2), dtype=np.float32)
    cdef float[:, ::1] offsets = np.empty((n, 2), dtype=np.float32)
    for r in range(n):
        mlp_aug_draw_affine(&plan.plan, mlp_aug_key(seed, <uint64_t>sample_ids[r]), &params[r, 0])
        mlp_aug_inverse_affine(&params[r, 0], &matrices[r, 0, 0], &offsets[r, 0])
    out = np.asarray(params).copy()
    out[:, 0] *= 180.0 / np.pi
    out[:, 2] *= 180.0 / np.pi
    return out, matrices.base, offsets.base


def _inverse_affine(const double[:, ::1] params):
    """(matrices (n, 2, 2), offsets (n, 2)) that _warp takes, for forward maps
    params (n, 5): rotation (degrees), scale factor, shear (degrees), shift x, y."""
    cdef Py_ssize_t n = params.shape[0], r
    cdef double[:, ::1] radians = np.array(params, dtype=np.float64)
    cdef float[:, :, ::1] matrices = np.empty((n, 2, 2), dtype=np.float32)
    cdef float[:, ::1] offsets = np.empty((n, 2), dtype=np.float32)
    for r in range(n):
        radians[r, 0] *= np.pi / 180.0
        radians[r, 2] *= np.pi / 180.0
        mlp_aug_inverse_affine(&radians[r, 0], &matrices[r, 0, 0], &offsets[r, 0])
    return matrices.base, offsets.base


def _source_points(DistortionPlan plan, const int64_t[::1] sample_ids, uint64_t seed):
    """(rows, columns), each (n, side, side): where distort() samples each output pixel."""
    cdef int side = plan.plan.side
    cdef Py_ssize_t n = sample_ids.shape[0], r
    cdef int i, j
    cdef float[::1] work = np.empty(mlp_aug_work_floats(side), dtype=np.float32)
    cdef float[:, :, ::1] rows = np.empty((n, side, side), dtype=np.float32)
    cdef float[:, :, ::1] columns = np.empty((n, side, side), dtype=np.float32)
    cdef const float* sx
    cdef const float* sy
    cdef int P = plan.plan.stride
    mlp_aug_work_init(side, &work[0])
    sx = mlp_aug_work_sx(side, &work[0])
    sy = mlp_aug_work_sy(side, &work[0])
    for r in range(n):
        mlp_aug_source_points(&plan.plan, seed, <uint64_t>sample_ids[r], &work[0])
        for i in range(side):
            for j in range(side):
                columns[r, i, j] = sx[i * P + j]
                rows[r, i, j] = sy[i * P + j]
    return rows.base, columns.base
