# bfloat16 matrix products (included by _kernels.pyx); the C side is _bf16.h.

from scipy.linalg.cython_blas cimport sgemm as _scipy_sgemm

cdef extern from "_bf16.h" nogil:
    ctypedef void (*mlp_sgemm_fn)(char*, char*, int*, int*, int*, float*, float*, int*,
                                  float*, int*, float*, float*, int*)
    void mlp_bf16_set_sgemm(mlp_sgemm_fn fn)
    float mlp_round_bf16(float x)
    int mlp_bf16_path()
    int mlp_sbgemm(char transa, char transb, int m, int n, int k, float alpha,
                   const float* a, int lda, const float* b, int ldb, float beta,
                   float* c, int ldc)

# The portable path calls the same sgemm as the float32 kernels.
mlp_bf16_set_sgemm(<mlp_sgemm_fn>_scipy_sgemm)

_BF16_PATH_NAMES = {0: "portable"}


cdef inline void _round_to_bf16(floating* values, Py_ssize_t count) noexcept nogil:
    """In place: each of values[:count] rounded to the nearest bfloat16
    (float32 only; compute_dtype='bfloat16' needs float32 parameters)."""
    cdef Py_ssize_t i
    if floating is float:
        for i in range(count):
            values[i] = mlp_round_bf16(values[i])


cdef object _raise_if_bf16_out_of_memory():
    """MemoryError if a bfloat16 product of the call just made found no
    memory for its rounded operands (_gemm_as), resetting the flag."""
    global _bf16_out_of_memory
    if _bf16_out_of_memory:
        _bf16_out_of_memory = 0
        raise MemoryError("no memory for the bfloat16 copies of a matrix product's operands "
                          "(compute_dtype='bfloat16')")


def bf16_path():
    """The bfloat16 GEMM path this CPU runs: a name from ``_BF16_PATH_NAMES``."""
    return _BF16_PATH_NAMES[mlp_bf16_path()]


def bf16_matmul(const float[:, ::1] a, const float[:, ::1] b, float[:, ::1] out):
    """out = a @ b with a and b rounded to bfloat16 and float32 sums (for tests).

    a is (m, k), b is (k, n), out is (m, n), all C-contiguous float32; the
    caller checks the shapes.
    """
    cdef int m = <int>a.shape[0], k = <int>a.shape[1], n = <int>b.shape[1]
    cdef int status
    if m == 0 or n == 0:
        return
    with nogil:
        # Row-major out = a @ b is column-major out.T = b.T @ a.T.
        status = mlp_sbgemm(c'N', c'N', n, m, k, 1.0, &b[0, 0] if k else NULL, n,
                            &a[0, 0] if k else NULL, k if k else 1, 0.0, &out[0, 0], n)
    if status != 0:
        raise MemoryError("bf16_matmul: no memory for the bfloat16 copies of its operands")
