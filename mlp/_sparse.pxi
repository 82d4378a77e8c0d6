# The first layer from the non-zero inputs only (included by _kernels.pyx):
# the C loops are in _sparse.h, which says why and how fast. Inference uses
# them on mostly-zero rows (_forward_sparse_input in _kernels.pyx), and so
# does training (_worker.pxi: _list_row in the gather; in the units
# split, _sparse_first_layer in the forward pass and _panel_update_stage in
# the update, on weights kept by input for the whole call; in the samples
# split, _sparse_rows and _sparse_weight_gradient).
#
# Layouts. A row's non-zero inputs are an index (int32) and a value list.
# The weights of units u0..u1 of the first layer, W[u0:u1] (units, inputs)
# in the parameters, are read by input from a panel of (inputs, ld):
# panel[j, u - u0] = W[u, j], ld a multiple of the vector width whose extra
# columns are zeros.

from libc.stdint cimport int32_t

# Rows per block of the sparse paths: inference's blocks (a worker's
# first-layer outputs, then the dense layers above) and the rows that go
# through the first layer together (_sparse_block).
cdef enum:
    SPARSE_INPUT_BLOCK_ROWS = 128


cdef extern from "_sparse.h" nogil:
    void mlp_sparse_init()
    int mlp_sparse_set_wide(int wide)
    Py_ssize_t mlp_nonzeros_f(const float* x, Py_ssize_t d, int32_t* inputs, float* values,
                              int* nonfinite)
    Py_ssize_t mlp_nonzeros_scalar_f(const float* x, Py_ssize_t d, int32_t* inputs,
                                     float* values, int* nonfinite)
    Py_ssize_t mlp_nonzeros_d(const double* x, Py_ssize_t d, int32_t* inputs, double* values,
                              int* nonfinite)
    void mlp_sparse_row_f(const int32_t* inputs, const float* values, Py_ssize_t count,
                          const float* panel, Py_ssize_t ld, Py_ssize_t units, float* z,
                          int add)
    void mlp_sparse_row_d(const int32_t* inputs, const double* values, Py_ssize_t count,
                          const double* panel, Py_ssize_t ld, Py_ssize_t units, double* z,
                          int add)
    void mlp_sparse_scatter_f(const int32_t* inputs, const float* values, Py_ssize_t count,
                              const float* delta, Py_ssize_t units, float* panel, Py_ssize_t ld)
    void mlp_sparse_scatter_d(const int32_t* inputs, const double* values, Py_ssize_t count,
                              const double* delta, Py_ssize_t units, double* panel,
                              Py_ssize_t ld)
    void mlp_sparse_gather_f(const int32_t* inputs, const float* values, Py_ssize_t count,
                             const float* panel, Py_ssize_t ld, Py_ssize_t units, float* z)
    void mlp_sparse_gather_d(const int32_t* inputs, const double* values, Py_ssize_t count,
                             const double* panel, Py_ssize_t ld, Py_ssize_t units, double* z,
                             int add)
    void mlp_sparse_row_ahead_f(const int32_t* inputs, const float* values, Py_ssize_t count,
                                const float* panel, Py_ssize_t ld, Py_ssize_t units, float* z)
    void mlp_sparse_row_ahead_d(const int32_t* inputs, const double* values, Py_ssize_t count,
                                const double* panel, Py_ssize_t ld, Py_ssize_t units,
                                double* z, int add)
    void mlp_sparse_block_f(const int32_t* inputs, const float* values, Py_ssize_t stride,
                            const Py_ssize_t* count, Py_ssize_t rows, Py_ssize_t d,
                            const float* panel, Py_ssize_t ld, Py_ssize_t units, float* z,
                            Py_ssize_t zld, Py_ssize_t* cursor)
    void mlp_sparse_block_d(const int32_t* inputs, const double* values, Py_ssize_t stride,
                            const Py_ssize_t* count, Py_ssize_t rows, Py_ssize_t d,
                            const double* panel, Py_ssize_t ld, Py_ssize_t units, double* z,
                            Py_ssize_t zld, Py_ssize_t* cursor)
    void mlp_transpose_units_f(const float* w, Py_ssize_t d, Py_ssize_t u0, Py_ssize_t u1,
                               float* panel, Py_ssize_t ld, Py_ssize_t pad)
    void mlp_transpose_units_d(const double* w, Py_ssize_t d, Py_ssize_t u0, Py_ssize_t u1,
                               double* panel, Py_ssize_t ld, Py_ssize_t pad)
    void mlp_by_input_f(const int32_t* inputs, const float* values, const Py_ssize_t* count,
                        Py_ssize_t n, Py_ssize_t d, Py_ssize_t* start, int32_t* sample,
                        float* value)
    void mlp_by_input_d(const int32_t* inputs, const double* values, const Py_ssize_t* count,
                        Py_ssize_t n, Py_ssize_t d, Py_ssize_t* start, int32_t* sample,
                        double* value)
    void mlp_transposed_update_f(const float* panel, Py_ssize_t ld, Py_ssize_t d,
                                 Py_ssize_t units, float alpha, float beta, float* out)
    void mlp_transposed_update_d(const double* panel, Py_ssize_t ld, Py_ssize_t d,
                                 Py_ssize_t units, double alpha, double beta, double* out)


# The compression's lane table, and which loops this CPU runs.
mlp_sparse_init()


def sparse_wide_rows(bint wide):
    """Whether the float32 sparse sums use 16-float vectors (AVX-512) rather
    than 8-float ones: wide=True asks for them, granted where the CPU has
    AVX-512F (the default there); returns the setting now in force. The
    results are the same either way (each unit's sum is added up in the same
    order); for the tests and benchmarks, which compare the two."""
    return bool(mlp_sparse_set_wide(wide))


cdef inline Py_ssize_t _nonzeros(const floating* x, Py_ssize_t d, int32_t* inputs,
                                 floating* values, int* nonfinite) noexcept nogil:
    """x (d,) -> its non-zero entries' indices and values; returns their
    count, and sets nonfinite[0] to 1 if one is NaN or infinite."""
    if floating is float:
        return mlp_nonzeros_f(x, d, inputs, values, nonfinite)
    else:
        return mlp_nonzeros_d(x, d, inputs, values, nonfinite)


cdef inline void _sparse_row(const int32_t* inputs, const floating* values, Py_ssize_t count,
                             const floating* panel, Py_ssize_t ld, Py_ssize_t units,
                             floating* z) noexcept nogil:
    """z[:units] = the row's pre-activations, sum of values[e] * panel[inputs[e], :units]."""
    if floating is float:
        mlp_sparse_row_f(inputs, values, count, panel, ld, units, z, 0)
    else:
        mlp_sparse_row_d(inputs, values, count, panel, ld, units, z, 0)


cdef inline void _sparse_scatter(const int32_t* inputs, const floating* values,
                                 Py_ssize_t count, const floating* delta, Py_ssize_t units,
                                 floating* panel, Py_ssize_t ld) noexcept nogil:
    """panel[inputs[e], :units] += values[e] * delta[:units] for e < count;
    ld a whole number of cache lines (_sparse.h)."""
    if floating is float:
        mlp_sparse_scatter_f(inputs, values, count, delta, units, panel, ld)
    else:
        mlp_sparse_scatter_d(inputs, values, count, delta, units, panel, ld)


cdef inline void _sparse_gather(const int32_t* rows, const floating* values,
                                Py_ssize_t count, const floating* deltas, Py_ssize_t ld,
                                Py_ssize_t units, floating* out) noexcept nogil:
    """out[:units] = sum over e < count of values[e] * deltas[rows[e], :units],
    each product rounded before it is added (_sparse.h)."""
    if floating is float:
        mlp_sparse_gather_f(rows, values, count, deltas, ld, units, out)
    else:
        mlp_sparse_gather_d(rows, values, count, deltas, ld, units, out, 0)


cdef inline void _sparse_row_ahead(const int32_t* inputs, const floating* values,
                                   Py_ssize_t count, const floating* panel, Py_ssize_t ld,
                                   Py_ssize_t units, floating* z) noexcept nogil:
    """_sparse_row's sums, prefetching the panel's rows ahead (big panels)."""
    if floating is float:
        mlp_sparse_row_ahead_f(inputs, values, count, panel, ld, units, z)
    else:
        mlp_sparse_row_ahead_d(inputs, values, count, panel, ld, units, z, 0)


cdef inline void _sparse_block(const int32_t* inputs, const floating* values,
                               Py_ssize_t stride, const Py_ssize_t* count, Py_ssize_t rows,
                               Py_ssize_t d, const floating* panel, Py_ssize_t ld,
                               Py_ssize_t units, floating* z, Py_ssize_t zld,
                               Py_ssize_t* cursor) noexcept nogil:
    """z[r, :units] (row stride zld) = the pre-activations of a block of
    rows, row r's count[r] non-zero inputs at inputs + r * stride (_sparse.h)."""
    if floating is float:
        mlp_sparse_block_f(inputs, values, stride, count, rows, d, panel, ld, units, z, zld,
                           cursor)
    else:
        mlp_sparse_block_d(inputs, values, stride, count, rows, d, panel, ld, units, z, zld,
                           cursor)


def nonzeros(const floating[::1] x, bint portable=False):
    """x (d,) -> (inputs int32 (count,), values (count,) of x's dtype, finite):
    the entries whose bits are not all zero, as the sparse-input paths list
    them, and whether none is NaN or infinite; portable=True takes the loop
    for CPUs without AVX2 (for the tests)."""
    cdef Py_ssize_t d = x.shape[0], count
    cdef int nonfinite = 0
    inputs = np.empty(d, dtype=np.int32)
    values = np.empty(d, dtype=np.float32 if floating is float else np.float64)
    cdef int32_t[::1] inputs_view = inputs
    cdef floating[::1] values_view = values
    if d == 0:
        return inputs, values, True
    with nogil:
        if floating is float and portable:
            count = mlp_nonzeros_scalar_f(&x[0], d, &inputs_view[0], &values_view[0],
                                          &nonfinite)
        else:
            count = _nonzeros(&x[0], d, &inputs_view[0], &values_view[0], &nonfinite)
    return inputs[:count], values[:count], not nonfinite


cdef inline void _transpose_units(const floating* w, Py_ssize_t d, Py_ssize_t u0,
                                  Py_ssize_t u1, floating* panel,
                                  Py_ssize_t ld) noexcept nogil:
    """The panel of units u0..u1 of w (units, d), its padding zeroed."""
    if floating is float:
        mlp_transpose_units_f(w, d, u0, u1, panel, ld, ld - (u1 - u0))
    else:
        mlp_transpose_units_d(w, d, u0, u1, panel, ld, ld - (u1 - u0))


cdef inline void _transposed_update(const floating* panel, Py_ssize_t ld, Py_ssize_t d,
                                    Py_ssize_t units, floating alpha, floating beta,
                                    floating* out) noexcept nogil:
    """out (units, d) = beta * out + alpha * panel[:, :units].T; beta == 0
    does not read out."""
    if floating is float:
        mlp_transposed_update_f(panel, ld, d, units, alpha, beta, out)
    else:
        mlp_transposed_update_d(panel, ld, d, units, alpha, beta, out)


cdef inline void _by_input(const int32_t* inputs, const floating* values, const Py_ssize_t* count,
                           Py_ssize_t n, Py_ssize_t d, Py_ssize_t* start, int32_t* sample,
                           floating* value) noexcept nogil:
    """n rows' lists of non-zero inputs as one list per input (start, sample, value)."""
    if floating is float:
        mlp_by_input_f(inputs, values, count, n, d, start, sample, value)
    else:
        mlp_by_input_d(inputs, values, count, n, d, start, sample, value)
