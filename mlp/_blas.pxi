# BLAS wrappers and the three matrix products of a layer (included by _kernels.pyx).
#
# BLAS is column-major; a C-contiguous (r, c) array is the column-major (c, r)
# matrix, i.e. its transpose, so every row-major product below is written as
# the column-major call that computes it, and no operand is ever copied or
# transposed in memory. Above each call: what it computes, in numpy.
#
# Layouts. Activations and deltas of a batch of n samples are row-major
# (n, units), or feature-major (units, n): a row per unit, which makes the
# batch BLAS's m dimension (faster for small batches, see
# FEATURE_MAJOR_MAX_BATCH). The input batch is always row-major (n, inputs);
# `input_feature_major` says whether a layer's input follows the batch's
# layout (every layer but the first) or is that row-major input.

from scipy.linalg.cython_blas cimport sgemm, dgemm, sgemv, dgemv


cdef inline void _gemm(char transa, char transb, int m, int n, int k,
                       floating alpha, const floating* a, int lda,
                       const floating* b, int ldb, floating beta,
                       floating* c, int ldc) noexcept nogil:
    if floating is float:
        sgemm(&transa, &transb, &m, &n, &k, &alpha, <float*>a, &lda,
              <float*>b, &ldb, &beta, c, &ldc)
    else:
        dgemm(&transa, &transb, &m, &n, &k, &alpha, <double*>a, &lda,
              <double*>b, &ldb, &beta, c, &ldc)


# Set when a bfloat16 product found no memory for its rounded operands (it
# then ran in float32); the entry points raise MemoryError after the run.
cdef int _bf16_out_of_memory = 0


cdef inline void _gemm_as(bint bf16, char transa, char transb, int m, int n, int k,
                          floating alpha, const floating* a, int lda,
                          const floating* b, int ldb, floating beta,
                          floating* c, int ldc) noexcept nogil:
    """_gemm, or with bf16 (float32 only: Network refuses bfloat16 for
    float64) the same product on bfloat16-rounded A and B, float32 sums
    (mlp_sbgemm, _bf16.h). C is never rounded: it holds the float32 weights
    themselves in plain SGD's fused update (_weight_gemm)."""
    global _bf16_out_of_memory
    if floating is float:
        if bf16:
            if mlp_sbgemm(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) != 0:
                # No memory for the rounded copies: the float32 product
                # instead, and the entry point raises MemoryError after the run.
                _bf16_out_of_memory = 1
                _gemm(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
            return
    _gemm(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)


cdef inline void _gemv(char trans, int m, int n, floating alpha,
                       const floating* a, int lda, const floating* x,
                       floating beta, floating* y) noexcept nogil:
    cdef int inc = 1
    if floating is float:
        sgemv(&trans, &m, &n, &alpha, <float*>a, &lda, <float*>x, &inc,
              &beta, y, &inc)
    else:
        dgemv(&trans, &m, &n, &alpha, <double*>a, &lda, <double*>x, &inc,
              &beta, y, &inc)


cdef void _layer_gemm(bint feature_major, bint input_feature_major, const floating* w,
                      Py_ssize_t fan_in, Py_ssize_t fan_out, Py_ssize_t u0, Py_ssize_t u1,
                      const floating* a, floating* z, Py_ssize_t n, bint bf16) noexcept nogil:
    """The forward product of units u0..u1: z[:, u0:u1] = a @ W[u0:u1].T.

    W is (fan_out, fan_in); a is (n, fan_in), or (fan_in, n) with
    input_feature_major; z is (n, fan_out), or (fan_out, n) with feature_major.
    bf16: W and a rounded to bfloat16, float32 sums (_gemm_as)."""
    cdef int m = <int>(u1 - u0)
    if n == 1 and bf16:
        # z[u0:u1] = W[u0:u1] @ a as a product with one column (there is no
        # bfloat16 gemv).
        _gemm_as(bf16, c'T', c'N', m, 1, <int>fan_in, 1, w + u0 * fan_in, <int>fan_in, a,
                 <int>fan_in, 0, z + u0, m)
    elif n == 1:
        # z[u0:u1] = W[u0:u1] @ a for one sample (both layouts are then the
        # same vector): gemm would pack all of W first, which costs more
        # than the product.
        _gemv(c'T', <int>fan_in, m, 1, w + u0 * fan_in, <int>fan_in, a, 0, z + u0)
    elif feature_major:
        if input_feature_major:
            # z.T[:, u0:u1] = a.T @ W[u0:u1].T, the batch being BLAS's m
            _gemm_as(bf16, c'N', c'N', <int>n, m, <int>fan_in, 1, a, <int>n, w + u0 * fan_in,
                     <int>fan_in, 0, z + u0 * n, <int>n)
        else:
            _gemm_as(bf16, c'T', c'N', <int>n, m, <int>fan_in, 1, a, <int>fan_in, w + u0 * fan_in,
                     <int>fan_in, 0, z + u0 * n, <int>n)
    else:
        # z[:, u0:u1] = a @ W[u0:u1].T, as column-major z.T = W @ a.T
        _gemm_as(bf16, c'T', c'N', m, <int>n, <int>fan_in, 1, w + u0 * fan_in, <int>fan_in, a,
                 <int>fan_in, 0, z + u0, <int>fan_out)


cdef inline void _delta_gemm(bint feature_major, const floating* w, Py_ssize_t fan_in,
                             Py_ssize_t fan_out, Py_ssize_t f0, Py_ssize_t f1,
                             const floating* delta, floating* delta_prev,
                             Py_ssize_t n, bint bf16) noexcept nogil:
    """Backpropagate to inputs f0..f1: delta_prev[:, f0:f1] = delta @ W[:, f0:f1].

    delta is (n, fan_out) and delta_prev (n, fan_in), or both transposed
    with feature_major."""
    cdef int m = <int>(f1 - f0)
    if feature_major:
        # delta_prev.T[:, f0:f1] = delta.T @ W[:, f0:f1]
        _gemm_as(bf16, c'N', c'T', <int>n, m, <int>fan_out, 1, delta, <int>n, w + f0,
                 <int>fan_in, 0, delta_prev + f0 * n, <int>n)
    else:
        _gemm_as(bf16, c'N', c'N', m, <int>n, <int>fan_out, 1, w + f0, <int>fan_in, delta,
                 <int>fan_out, 0, delta_prev + f0, <int>fan_in)


cdef inline void _weight_gemm(bint feature_major, bint input_feature_major,
                              const floating* a, const floating* delta, Py_ssize_t fan_in,
                              Py_ssize_t fan_out, Py_ssize_t u0, Py_ssize_t u1, Py_ssize_t n,
                              floating alpha, floating beta, floating* c,
                              bint bf16) noexcept nogil:
    """The weight gradient of units u0..u1, scaled and accumulated:
    c[u0:u1] = alpha * delta[:, u0:u1].T @ a + beta * c[u0:u1].

    c is (fan_out, fan_in) like W. With alpha = -lr / n, beta = 1 - lr * wd
    and c = W this is the whole SGD update of those rows, in place. Layouts
    as in _layer_gemm, delta's being z's."""
    cdef int m = <int>(u1 - u0)
    if feature_major:
        if input_feature_major:
            _gemm_as(bf16, c'T', c'N', <int>fan_in, m, <int>n, alpha, a, <int>n, delta + u0 * n,
                     <int>n, beta, c + u0 * fan_in, <int>fan_in)
        else:
            _gemm_as(bf16, c'N', c'N', <int>fan_in, m, <int>n, alpha, a, <int>fan_in, delta + u0 * n,
                     <int>n, beta, c + u0 * fan_in, <int>fan_in)
    else:
        _gemm_as(bf16, c'N', c'T', <int>fan_in, m, <int>n, alpha, a, <int>fan_in, delta + u0,
                 <int>fan_out, beta, c + u0 * fan_in, <int>fan_in)
