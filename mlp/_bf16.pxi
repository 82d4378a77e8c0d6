# bfloat16 matrix products (included by _kernels.pyx); the C side is _bf16.h
# (the path choice and the portable path), _bf16_avx512.h and _bf16_amx.h.

from scipy.linalg.cython_blas cimport sgemm as _scipy_sgemm

cdef extern from "_bf16.h" nogil:
    ctypedef void (*mlp_sgemm_fn)(char*, char*, int*, int*, int*, float*, float*, int*,
                                  float*, int*, float*, float*, int*)
    void mlp_bf16_set_sgemm(mlp_sgemm_fn fn)
    float mlp_round_bf16(float x)
    int mlp_bf16_path()
    int mlp_bf16_path_supported(int path)
    int MLP_BF16_N_PATHS
    const char* mlp_bf16_path_names[]
    int mlp_sbgemm(char transa, char transb, int m, int n, int k, float alpha,
                   const float* a, int lda, const float* b, int ldb, float beta,
                   float* c, int ldc)
    int mlp_sbgemm_on(int path, char transa, char transb, int m, int n, int k, float alpha,
                      const float* a, int lda, const float* b, int ldb, float beta,
                      float* c, int ldc)
    void mlp_bf16_round_on(int path, const float* x, float* out, size_t n)

# The portable path calls the same sgemm as the float32 kernels.
mlp_bf16_set_sgemm(<mlp_sgemm_fn>_scipy_sgemm)

# Code -> name of every path, the emulation of the AMX path included.
_BF16_PATH_NAMES = {p: mlp_bf16_path_names[p].decode() for p in range(MLP_BF16_N_PATHS)}
_BF16_PATH_CODES = {name: p for p, name in _BF16_PATH_NAMES.items()}
# Decide now (reading MLP_BF16_PATH), not in the first worker thread.
mlp_bf16_path()


cdef inline void _round_to_bf16(floating* values, Py_ssize_t count) noexcept nogil:
    """In place: each of values[:count] rounded to the nearest bfloat16
    (float32 only; compute_dtype='bfloat16' needs float32 parameters)."""
    _round_copy_to_bf16(values, values, count)


cdef inline void _round_copy_to_bf16(const floating* values, floating* rounded,
                                     Py_ssize_t count) noexcept nogil:
    """rounded[:count] = values[:count] rounded to the nearest bfloat16, in
    one pass, by the conversion of the process's GEMM path (16 at a time on
    the native ones; every path rounds alike, tests/test_bf16.py)."""
    if floating is float:
        if count > 0:
            mlp_bf16_round_on(mlp_bf16_path(), values, rounded, <size_t>count)


cdef object _raise_if_bf16_out_of_memory():
    """MemoryError if a bfloat16 product of the call just made found no
    memory for its rounded operands (_gemm_as), resetting the flag."""
    global _bf16_out_of_memory
    if _bf16_out_of_memory:
        _bf16_out_of_memory = 0
        raise MemoryError("no memory for the bfloat16 copies of a matrix product's operands "
                          "(compute_dtype='bfloat16')")


def bf16_path():
    """The bfloat16 GEMM path this process uses: "portable", "avx512bf16" or "amx".

    The fastest path this CPU runs, unless the environment variable
    ``MLP_BF16_PATH`` (read once, when mlp is imported) names another one it
    runs; see :func:`bf16_paths`.
    """
    return _BF16_PATH_NAMES[mlp_bf16_path()]


def bf16_paths():
    """The names of the bfloat16 GEMM paths this CPU runs, "portable" first.

    "amx_emulated" is the AMX path's code on a C emulation of the tile
    instructions (for tests; slow); it needs AVX512_BF16.
    """
    return tuple(name for p, name in _BF16_PATH_NAMES.items() if mlp_bf16_path_supported(p))


cdef int _bf16_path_code(path) except -1:
    if path is None:
        return mlp_bf16_path()
    if path not in _BF16_PATH_CODES:
        raise ValueError(f"path must be one of {sorted(_BF16_PATH_CODES)} or None, got {path!r}")
    if not mlp_bf16_path_supported(_BF16_PATH_CODES[path]):
        raise ValueError(f"path {path!r} does not run on this CPU; bf16_paths() lists those "
                         "that do")
    return _BF16_PATH_CODES[path]


cdef int _unit_stride_axis(const float[:, :] x, str name) except -2:
    """0 or 1: an axis of x with unit stride (the other one's stride being a
    leading dimension), -1 when x has no elements to read."""
    if x.shape[0] == 0 or x.shape[1] == 0:
        return -1
    if x.strides[0] == sizeof(float) or x.shape[0] == 1:
        if x.strides[1] >= x.shape[0] * <Py_ssize_t>sizeof(float) or x.shape[1] == 1:
            return 0
    if x.strides[1] == sizeof(float) or x.shape[1] == 1:
        if x.strides[0] >= x.shape[1] * <Py_ssize_t>sizeof(float) or x.shape[0] == 1:
            return 1
    raise ValueError(f"{name} must have a unit stride along one axis and a positive "
                     "stride along the other (a C- or Fortran-ordered array, or a slice of one)")


cdef int _leading(const float[:, :] x, int unit_axis):
    cdef Py_ssize_t ld = x.strides[1 - unit_axis] // <Py_ssize_t>sizeof(float)
    cdef Py_ssize_t minimum = x.shape[unit_axis]
    return <int>(ld if ld >= minimum and ld >= 1 else (minimum if minimum >= 1 else 1))


def bf16_gemm(const float[:, :] a, const float[:, :] b, float[:, :] c, float alpha=1.0,
              float beta=0.0, path=None):
    """c = alpha * a @ b + beta * c with a and b rounded to bfloat16 and float32 sums.

    Parameters
    ----------
    a : ndarray of float32, shape (m, k)
    b : ndarray of float32, shape (k, n)
    c : ndarray of float32, shape (m, n), written in place
        Each may be C- or Fortran-ordered, or a slice of one whose rows (or
        columns) are further apart than their length: every layout mlp's
        kernels hand to ``mlp_sbgemm``, transposed or not.
    alpha, beta : float
        beta == 0 does not read c (NaN in c is overwritten), as in BLAS.
    path : str or None
        A name from :func:`bf16_paths`, or None for :func:`bf16_path`.
    """
    cdef int code = _bf16_path_code(path)
    if a.shape[1] != b.shape[0] or c.shape[0] != a.shape[0] or c.shape[1] != b.shape[1]:
        raise ValueError(f"shapes a ({a.shape[0]}, {a.shape[1]}), b ({b.shape[0]}, "
                         f"{b.shape[1]}) and c ({c.shape[0]}, {c.shape[1]}) do not fit "
                         "c = a @ b")
    cdef int m = <int>c.shape[0], n = <int>c.shape[1], k = <int>a.shape[1]
    cdef int a_axis = _unit_stride_axis(a, "a"), b_axis = _unit_stride_axis(b, "b")
    cdef int c_axis = _unit_stride_axis(c, "c")
    if c_axis == -1:
        return
    if a_axis == -1:  # k == 0: a and b are not read
        a_axis = b_axis = 0
    cdef const float* pa = &a[0, 0] if k else NULL
    cdef const float* pb = &b[0, 0] if k else NULL
    cdef int lda = _leading(a, a_axis) if k else 1, ldb = _leading(b, b_axis) if k else 1
    cdef int ldc = _leading(c, c_axis), status
    # Column-major (unit stride along axis 0) is sgemm's 'N'; a row-major
    # operand is its transpose's 'T'. A row-major c is computed as c.T = b.T @ a.T.
    cdef char ta = c'N' if a_axis == 0 else c'T', tb = c'N' if b_axis == 0 else c'T'
    with nogil:
        if c_axis == 0:
            status = mlp_sbgemm_on(code, ta, tb, m, n, k, alpha, pa, lda, pb, ldb, beta,
                                   &c[0, 0], ldc)
        else:
            status = mlp_sbgemm_on(code, c'T' if tb == c'N' else c'N',
                                   c'T' if ta == c'N' else c'N', n, m, k, alpha, pb, ldb,
                                   pa, lda, beta, &c[0, 0], ldc)
    if status != 0:
        raise MemoryError("bf16_gemm: no memory for the bfloat16 copies of its operands")


def bf16_round(const float[::1] x, float[::1] out, path=None):
    """out = x rounded to bfloat16 (nearest even; NaN stays NaN, denormals
    become zeros), as float32, by the conversion that ``path`` uses.

    x and out are float32 arrays of one length.
    """
    cdef int code = _bf16_path_code(path)
    if x.shape[0] != out.shape[0]:
        raise ValueError(f"out must have x's length {x.shape[0]}, got {out.shape[0]}")
    if x.shape[0]:
        with nogil:
            mlp_bf16_round_on(code, &x[0], &out[0], <size_t>x.shape[0])


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
