# C-level interface of mlp._augment: the kernels of _augment.h and the plan
# object that owns their tables. See _augment.h for what each function does.

from libc.stdint cimport uint64_t


cdef extern from "_augment.h" nogil:
    ctypedef struct mlp_aug_plan:
        int side
        int stride
        double rotation
        double scale
        double shear
        double shift
        int affine
        float alpha
        int elastic
        const float* gauss
        const int* band_lo
        const int* band_hi

    void mlp_aug_gauss_matrix(int side, double sigma, float* gauss, int* band_lo,
                              int* band_hi, double* weights)
    long mlp_aug_gauss_scratch(int side, double sigma)
    int mlp_aug_stride(int side)
    long mlp_aug_work_floats(int side)
    void mlp_aug_work_init(int side, float* work)
    void mlp_aug_smooth(const mlp_aug_plan* plan, float* field, float* tmp, float scale)
    int mlp_aug_allow_v8
    void mlp_aug_coordinates(int S, int P, const float* a, const float* o,
                             const float* dx, const float* dy, float* sx, float* sy)
    void mlp_aug_pad(int S, const float* image, float* padded)
    void mlp_aug_resample(int S, int P, const float* padded, const float* sx,
                          const float* sy, float* out)
    uint64_t mlp_aug_key(uint64_t seed, uint64_t sample_id)
    void mlp_aug_draw_affine(const mlp_aug_plan* plan, uint64_t key, double* params)
    void mlp_aug_inverse_affine(const double* params, float* a, float* o)
    float* mlp_aug_work_sx(int side, float* work)
    float* mlp_aug_work_sy(int side, float* work)
    void mlp_aug_source_points(const mlp_aug_plan* plan, uint64_t seed, uint64_t sample_id,
                               float* work)
    void mlp_aug_distort_image(const mlp_aug_plan* plan, const float* image, float* out,
                               uint64_t seed, uint64_t sample_id, float* work)


cdef class DistortionPlan:
    cdef mlp_aug_plan plan
    cdef object gauss, band_lo, band_hi
