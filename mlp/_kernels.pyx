# The compiled core of mlp: forward pass, losses, backprop and SGD for a fully
# connected network, on whole batches, in nogil code, with every GEMM going
# through scipy's BLAS.
#
# Contract with the Python side (mlp/_validation.py, mlp/model.py): every array
# arrives with the right dtype, C-contiguous, with shapes that agree with
# `sizes`, finite where it matters, and sample indices inside [0, n_samples).
# Nothing here checks that again; that is what lets the loops run without the
# GIL and without bounds checks.
#
# Parameter layout. All parameters of a network live in one flat array:
#     [W_0 (sizes[1], sizes[0]), b_0 (sizes[1],), W_1 (sizes[2], sizes[1]), b_1, ...]
# so that model.weights / model.biases are views into it and one pointer plus
# `sizes` describes the whole network. Gradients use the same layout.
#
# Row-major / column-major. BLAS is column-major; a C-contiguous (r, c) array
# is the column-major (c, r) matrix, i.e. its transpose. So the row-major
# products below become:
#     Z (n,out) = A (n,in) W^T       ->  gemm('T','N', out, n, in,  W, A -> Z)
#     D_prev (n,in) = D (n,out) W    ->  gemm('N','N', in,  n, out, W, D -> D_prev)
#     dW (out,in) = D^T A            ->  gemm('N','T', in, out, n,  A, D -> dW)
# and no operand is ever copied or transposed in memory.

from cython cimport floating
from libc.math cimport exp, expm1, expm1f, log, fabs, fabsf
from libc.stdint cimport int64_t
from libc.string cimport memcpy, memset
from scipy.linalg.cython_blas cimport sgemm, dgemm, sgemv, dgemv

import numpy as np

cdef extern from "_fastexp.h" nogil:
    float mlp_expf(float x)
    double mlp_exp(double x)
    void mlp_bias_sigmoidf(float* z, const float* b, Py_ssize_t n, Py_ssize_t k)
    void mlp_bias_sigmoid(double* z, const double* b, Py_ssize_t n, Py_ssize_t k)
    void mlp_row_bias_sigmoidf(float* z, const float* b, Py_ssize_t rows, Py_ssize_t cols)
    void mlp_row_bias_sigmoid(double* z, const double* b, Py_ssize_t rows, Py_ssize_t cols)
    void mlp_sigmoid_inplacef(float* z, Py_ssize_t count)
    void mlp_sigmoid_inplace(double* z, Py_ssize_t count)
    int mlp_all_finitef(const float* x, Py_ssize_t n)
    int mlp_all_finite(const double* x, Py_ssize_t n)

# Activation and loss codes; mirrored in mlp/_codes.py.
cdef enum:
    ACT_SIGMOID = 0
    ACT_TANH = 1
    ACT_RELU = 2
    ACT_SOFTMAX = 3
    ACT_IDENTITY = 4

cdef enum:
    LOSS_MSE = 0
    LOSS_CROSS_ENTROPY = 1

# Networks deeper than this are refused on the Python side; it lets the
# per-layer pointer tables live on the stack.
DEF MAX_LAYERS = 64
MAX_WEIGHT_LAYERS = MAX_LAYERS

# Training batches up to this size run with activations stored
# feature-major, (units, batch), which makes the batch BLAS's m dimension:
# at batch 30 the whole step measured 1.13x faster that way (scipy's
# OpenBLAS, Haswell kernels), at batch 64 no faster and at 128 and up slower.
FEATURE_MAJOR_MAX_BATCH = 32


# ---------------------------------------------------------------------------
# BLAS and scalar helpers
# ---------------------------------------------------------------------------

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


cdef inline bint _all_finite(const floating* values, Py_ssize_t n) noexcept nogil:
    if floating is float:
        return mlp_all_finitef(values, n)
    else:
        return mlp_all_finite(values, n)


def all_finite(const floating[::1] values):
    """True when no entry is NaN or infinite: one pass, no temporary array."""
    cdef bint ok
    with nogil:
        ok = _all_finite(&values[0], values.shape[0])
    return ok


cdef inline floating _exp(floating x) noexcept nogil:
    # Branch-free, so that loops over a batch vectorise (see _fastexp.h).
    if floating is float:
        return mlp_expf(x)
    else:
        return mlp_exp(x)


cdef inline floating _tanh(floating z) noexcept nogil:
    # tanh|z| = (1 - e) / (1 + e) with e = exp(-2|z|), which never overflows;
    # written with m = e - 1 from expm1 so that small |z| keeps full relative
    # precision instead of cancelling in 1 - e.
    cdef floating m
    if floating is float:
        m = expm1f(-2 * fabsf(z))
    else:
        m = expm1(-2 * fabs(z))
    cdef floating t = -m / (2 + m)
    return t if z >= 0 else -t


cdef inline floating _act_derivative(int act, floating a) noexcept nogil:
    # Every hidden activation we offer has a derivative that is a function of
    # its output, so the forward pass never has to keep z around.
    if act == ACT_SIGMOID:
        return a * (1 - a)
    elif act == ACT_TANH:
        return 1 - a * a
    elif act == ACT_RELU:
        return 1 if a > 0 else 0
    return 1


# ---------------------------------------------------------------------------
# Elementwise passes over a batch (n rows of width k, row-major)
# ---------------------------------------------------------------------------

cdef inline void _softmax(floating* p, Py_ssize_t k, Py_ssize_t stride) noexcept nogil:
    # One sample's k outputs, `stride` apart. Shifted by their maximum, so
    # exp never overflows.
    cdef Py_ssize_t j
    cdef floating m = p[0], s = 0
    for j in range(k):
        if p[j * stride] > m:
            m = p[j * stride]
    for j in range(k):
        p[j * stride] = _exp(p[j * stride] - m)
        s = s + p[j * stride]
    s = 1 / s
    for j in range(k):
        p[j * stride] = p[j * stride] * s


cdef void _bias_activation(floating* z, const floating* b, Py_ssize_t n,
                           Py_ssize_t k, int act, bint fm) noexcept nogil:
    """act(z + b) in place for n samples of k units, b (k,).

    z is (n, k) row-major, or with fm ("feature-major") (k, n): a row per
    unit. The sigmoid, the notebook's activation, is one fused pass."""
    if act == ACT_SIGMOID:
        if floating is float:
            if fm:
                mlp_row_bias_sigmoidf(z, b, k, n)
            else:
                mlp_bias_sigmoidf(z, b, n, k)
        else:
            if fm:
                mlp_row_bias_sigmoid(z, b, k, n)
            else:
                mlp_bias_sigmoid(z, b, n, k)
        return
    _add_bias(z, b, n, k, fm)
    _apply_activation(z, n, k, act, fm)


cdef void _add_bias(floating* z, const floating* b, Py_ssize_t n,
                    Py_ssize_t k, bint fm) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef floating bj
    if fm:
        for j in range(k):
            bj = b[j]
            for i in range(n):
                z[j * n + i] += bj
    else:
        for i in range(n):
            for j in range(k):
                z[i * k + j] += b[j]


cdef void _times_derivative(floating* d, const floating* a, Py_ssize_t count,
                            int act) noexcept nogil:
    """d <- d * act'(.) where a = act(.), in one pass."""
    # One loop per activation rather than _act_derivative per element, so
    # that each loop is branch-free and vectorises.
    cdef Py_ssize_t i
    if act == ACT_SIGMOID:
        for i in range(count):
            d[i] = d[i] * (a[i] * (1 - a[i]))
    elif act == ACT_TANH:
        for i in range(count):
            d[i] = d[i] * (1 - a[i] * a[i])
    elif act == ACT_RELU:
        for i in range(count):
            if a[i] <= 0:
                d[i] = 0


cdef void _output_delta(int out_act, int loss, const floating* a,
                        const floating* y, floating* d, Py_ssize_t n,
                        Py_ssize_t k, bint fm) noexcept nogil:
    """d = dL/dz for the output layer, per sample (not divided by n).

    a, y and d are laid out as in _bias_activation."""
    cdef Py_ssize_t i, j, p
    cdef Py_ssize_t ss = 1 if fm else k   # from one sample to the next
    cdef Py_ssize_t fs = n if fm else 1   # from one unit to the next
    cdef floating g, s, ys
    if loss != LOSS_CROSS_ENTROPY and out_act != ACT_SOFTMAX:
        # Elementwise, so the layout does not matter.
        for p in range(n * k):
            d[p] = (a[p] - y[p]) * _act_derivative(out_act, a[p])
        return
    for i in range(n):
        if loss == LOSS_CROSS_ENTROPY:
            # softmax output: d/dz (-sum y log softmax z) = a * sum(y) - y,
            # which is the familiar a - y for one-hot targets.
            ys = 0
            for j in range(k):
                ys = ys + y[i * ss + j * fs]
            for j in range(k):
                p = i * ss + j * fs
                d[p] = a[p] * ys - y[p]
        else:
            # MSE through the softmax Jacobian: a * (g - <a, g>), g = a - y.
            s = 0
            for j in range(k):
                p = i * ss + j * fs
                s = s + a[p] * (a[p] - y[p])
            for j in range(k):
                p = i * ss + j * fs
                d[p] = a[p] * ((a[p] - y[p]) - s)


cdef double _batch_loss(int loss, const floating* a, const floating* z,
                        const floating* y, Py_ssize_t n,
                        Py_ssize_t k, bint fm) noexcept nogil:
    """Sum over the batch of the per-sample loss, accumulated in double.

    Cross-entropy is computed from the logits z with log-sum-exp, so it stays
    finite when a softmax probability underflows to zero."""
    cdef Py_ssize_t i, j, p
    cdef Py_ssize_t ss = 1 if fm else k
    cdef Py_ssize_t fs = n if fm else 1
    cdef double total = 0, m, s, diff
    if loss != LOSS_CROSS_ENTROPY:
        for p in range(n * k):
            diff = <double>a[p] - <double>y[p]
            total += 0.5 * diff * diff
        return total
    for i in range(n):
        m = z[i * ss]
        for j in range(k):
            if z[i * ss + j * fs] > m:
                m = z[i * ss + j * fs]
        s = 0
        for j in range(k):
            s += exp(<double>z[i * ss + j * fs] - m)
        s = log(s) + m
        for j in range(k):
            p = i * ss + j * fs
            if y[p] != 0:
                total -= <double>y[p] * (<double>z[p] - s)
    return total


cdef void _unit_sums(const floating* d, floating* out, Py_ssize_t n,
                     Py_ssize_t k, Py_ssize_t ld, bint accumulate,
                     bint fm) noexcept nogil:
    """out (k,) <- (or +=, with accumulate) the sums over the n samples of
    d, laid out as in _bias_activation: the bias gradient. Row-major d may
    be k columns of a wider matrix, rows ld apart (ld = k for all of it)."""
    cdef Py_ssize_t i, j
    cdef floating acc
    if not accumulate:
        memset(out, 0, k * sizeof(floating))
    if fm:
        for j in range(k):
            acc = 0
            for i in range(n):
                acc = acc + d[j * n + i]
            out[j] += acc
    else:
        for i in range(n):
            for j in range(k):
                out[j] += d[i * ld + j]


# ---------------------------------------------------------------------------
# Whole-network passes
# ---------------------------------------------------------------------------

cdef inline Py_ssize_t _weights_offset(const Py_ssize_t* sizes,
                                       int layer) noexcept nogil:
    cdef Py_ssize_t off = 0
    cdef int l
    for l in range(layer):
        off += sizes[l + 1] * (sizes[l] + 1)
    return off


cdef void _layer_gemm(bint fm, bint a_fm, const floating* w, Py_ssize_t fin,
                      Py_ssize_t fout, Py_ssize_t u0, Py_ssize_t u1,
                      const floating* a, floating* z, Py_ssize_t n) noexcept nogil:
    """z[:, u0:u1] = a W[u0:u1]^T for n samples: units u0..u1 of the layer.
    z is (n, fout) row-major, or with fm stored (fout, n); a is (n, fin), or
    with a_fm (fin, n) (a_fm only with fm)."""
    cdef int m = <int>(u1 - u0)
    if n == 1:
        # One sample (both layouts are then the same vector): a matrix-vector
        # product. gemm would pack all of W first, which costs more than the
        # product.
        _gemv(c'T', <int>fin, m, 1, w + u0 * fin, <int>fin, a, 0, z + u0)
    elif fm:
        # Column-major z (n, fout) = a (n, fin) * W^T, W^T being W read as
        # column-major (fin, fout): the batch is BLAS's m.
        if a_fm:
            _gemm(c'N', c'N', <int>n, m, <int>fin, 1, a, <int>n, w + u0 * fin,
                  <int>fin, 0, z + u0 * n, <int>n)
        else:
            _gemm(c'T', c'N', <int>n, m, <int>fin, 1, a, <int>fin, w + u0 * fin,
                  <int>fin, 0, z + u0 * n, <int>n)
    else:
        _gemm(c'T', c'N', m, <int>n, <int>fin, 1, w + u0 * fin, <int>fin, a, <int>fin,
              0, z + u0, <int>fout)


cdef void _forward(floating* params, const Py_ssize_t* sizes, int n_layers,
                   int hidden_act, int output_act, floating** acts,
                   floating* z_out, Py_ssize_t n) noexcept nogil:
    """acts[0] holds the input (n, sizes[0]); fills acts[1..L], row-major.
    (Training runs its own split, layout-aware forward pass: _train_worker.)

    When z_out is not NULL the output layer's pre-activation is kept there
    (the cross-entropy loss needs the logits)."""
    cdef int l
    cdef Py_ssize_t fin, fout, off = 0
    cdef floating* w
    cdef floating* b
    cdef int act
    for l in range(n_layers):
        fin = sizes[l]
        fout = sizes[l + 1]
        w = params + off
        b = w + fout * fin
        off += fout * (fin + 1)
        _layer_gemm(False, False, w, fin, fout, 0, fout, acts[l], acts[l + 1], n)
        act = hidden_act if l < n_layers - 1 else output_act
        if l == n_layers - 1 and z_out != NULL:
            _add_bias(acts[l + 1], b, n, fout, False)
            memcpy(z_out, acts[l + 1], n * fout * sizeof(floating))
            _apply_activation(acts[l + 1], n, fout, act, False)
        else:
            _bias_activation(acts[l + 1], b, n, fout, act, False)


cdef void _apply_activation(floating* z, Py_ssize_t n, Py_ssize_t k,
                            int act, bint fm) noexcept nogil:
    """act(z) in place, z laid out as in _bias_activation."""
    cdef Py_ssize_t i
    if act == ACT_SOFTMAX:
        for i in range(n):
            if fm:
                _softmax(z + i, k, n)
            else:
                _softmax(z + i * k, k, 1)
    elif act == ACT_SIGMOID:
        if floating is float:
            mlp_sigmoid_inplacef(z, n * k)
        else:
            mlp_sigmoid_inplace(z, n * k)
    elif act == ACT_TANH:
        for i in range(n * k):
            z[i] = _tanh(z[i])
    elif act == ACT_RELU:
        for i in range(n * k):
            # NaN stays NaN, so a diverged run shows in the loss.
            if z[i] < 0:
                z[i] = 0


cdef inline void _delta_gemm(bint fm, const floating* w, Py_ssize_t fin,
                             Py_ssize_t fout, Py_ssize_t f0, Py_ssize_t f1,
                             const floating* delta, floating* delta_prev,
                             Py_ssize_t n) noexcept nogil:
    """delta_prev[:, f0:f1] = delta W[:, f0:f1]: (n, fout) -> inputs f0..f1
    of (n, fin), or transposed with fm."""
    cdef int m = <int>(f1 - f0)
    if fm:
        _gemm(c'N', c'T', <int>n, m, <int>fout, 1, delta, <int>n, w + f0,
              <int>fin, 0, delta_prev + f0 * n, <int>n)
    else:
        _gemm(c'N', c'N', m, <int>n, <int>fout, 1, w + f0, <int>fin, delta,
              <int>fout, 0, delta_prev + f0, <int>fin)


cdef inline void _weight_gemm(bint fm, bint a_fm, const floating* a,
                              const floating* delta, Py_ssize_t fin, Py_ssize_t fout,
                              Py_ssize_t u0, Py_ssize_t u1, Py_ssize_t n,
                              floating alpha, floating beta,
                              floating* c) noexcept nogil:
    """c[u0:u1] (rows of (fout, fin)) <- alpha * delta[:, u0:u1]^T a + beta *
    c[u0:u1]: the weight gradient of units u0..u1, or with alpha = -step,
    beta = keep, the SGD update of their weights in place. Layouts as in
    _layer_gemm, delta's being z's."""
    cdef int m = <int>(u1 - u0)
    if fm:
        if a_fm:
            _gemm(c'T', c'N', <int>fin, m, <int>n, alpha, a, <int>n, delta + u0 * n,
                  <int>n, beta, c + u0 * fin, <int>fin)
        else:
            _gemm(c'N', c'N', <int>fin, m, <int>n, alpha, a, <int>fin, delta + u0 * n,
                  <int>n, beta, c + u0 * fin, <int>fin)
    else:
        _gemm(c'N', c'T', <int>fin, m, <int>n, alpha, a, <int>fin, delta + u0,
              <int>fout, beta, c + u0 * fin, <int>fin)


cdef void _gradients(floating* params, floating* grads, const Py_ssize_t* sizes,
                     int n_layers, int hidden_act, int output_act, int loss,
                     floating** acts, const floating* y, floating* delta,
                     floating* delta_prev, Py_ssize_t n,
                     bint accumulate) noexcept nogil:
    """Backpropagate one batch whose (row-major) forward pass is in acts:
    write dL/dW and dL/db, sums over the batch, into grads, or add them to
    it with accumulate. (The SGD step is _train_worker's.)"""
    cdef int l
    cdef Py_ssize_t fin, fout, off
    cdef floating* w
    cdef floating* tmp
    cdef Py_ssize_t k = sizes[n_layers]

    _output_delta(output_act, loss, acts[n_layers], y, delta, n, k, False)
    for l in range(n_layers - 1, -1, -1):
        fin = sizes[l]
        fout = sizes[l + 1]
        off = _weights_offset(sizes, l)
        w = params + off
        if l > 0:
            _delta_gemm(False, w, fin, fout, 0, fin, delta, delta_prev, n)
            _times_derivative(delta_prev, acts[l], n * fin, hidden_act)
        _weight_gemm(False, False, acts[l], delta, fin, fout, 0, fout, n, 1,
                     1 if accumulate else 0, grads + off)
        _unit_sums(delta, grads + off + fout * fin, n, fout, fout, accumulate, False)
        tmp = delta
        delta = delta_prev
        delta_prev = tmp


# ---------------------------------------------------------------------------
# Workspace: one flat buffer, carved up the same way by every entry point
# ---------------------------------------------------------------------------

cdef struct _Carve:
    Py_ssize_t acts      # layers 1..L activations, m * width
    Py_ssize_t z_out     # m * sizes[L]
    Py_ssize_t targets   # m * sizes[L] (one-hot targets built by the gather)
    Py_ssize_t inputs    # 2 * m * sizes[0]: rows gathered by index, two
                         # buffers so that workers may gather the next batch
                         # while others still read this one
    Py_ssize_t deltas    # m * max(width, 2 * widest): a delta per layer for
                         # the workers, or two that _gradients alternates
    Py_ssize_t deltas_2  # the second of those two
    Py_ssize_t col       # width: bias gradients, per layer, for the workers
    Py_ssize_t total
    # width = sum(sizes[1:]), widest = max(sizes[1:])


cdef _Carve _carve(const Py_ssize_t* sizes, int n_layers, Py_ssize_t m) noexcept nogil:
    cdef _Carve c
    cdef Py_ssize_t width = 0, widest = 0
    cdef int l
    for l in range(1, n_layers + 1):
        width += sizes[l]
        if sizes[l] > widest:
            widest = sizes[l]
    c.acts = 0
    c.z_out = c.acts + m * width
    c.targets = c.z_out + m * sizes[n_layers]
    c.inputs = c.targets + m * sizes[n_layers]
    c.deltas = c.inputs + 2 * m * sizes[0]
    c.deltas_2 = c.deltas + m * widest
    c.col = c.deltas + m * (width if width > 2 * widest else 2 * widest)
    c.total = c.col + width
    return c


def workspace_size(const Py_ssize_t[::1] sizes, Py_ssize_t batch_size):
    """Number of elements the workspace needs for batches of up to batch_size rows."""
    return _carve(&sizes[0], <int>sizes.shape[0] - 1, batch_size).total


cdef inline void _point_acts(floating* work, const Py_ssize_t* sizes,
                             int n_layers, Py_ssize_t m, const floating* x,
                             floating** acts) noexcept nogil:
    cdef int l
    cdef floating* p = work
    acts[0] = <floating*>x
    for l in range(1, n_layers + 1):
        acts[l] = p
        p += m * sizes[l]


# ---------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------

def loss_and_gradients(floating[::1] params, const Py_ssize_t[::1] sizes,
                       int hidden_act, int output_act, int loss,
                       const floating[:, ::1] x, const floating[:, ::1] y,
                       floating[::1] grads, floating[::1] work,
                       bint want_gradients, Py_ssize_t chunk):
    """Summed loss over the batch; with want_gradients, its gradient into grads.

    Rows are processed `chunk` at a time, the gradients summed across chunks,
    so memory does not grow with the batch; work must hold
    workspace_size(sizes, chunk) elements."""
    cdef int L = <int>sizes.shape[0] - 1
    cdef Py_ssize_t n = x.shape[0], k = sizes[L], start, rows
    cdef _Carve c = _carve(&sizes[0], L, chunk)
    cdef floating* acts[MAX_LAYERS + 1]
    cdef floating* pw = &work[0]
    cdef double total = 0
    with nogil:
        start = 0
        while start < n:
            rows = chunk if n - start > chunk else n - start
            _point_acts(pw, &sizes[0], L, rows, &x[start, 0], acts)
            _forward(&params[0], &sizes[0], L, hidden_act, output_act, acts,
                     pw + c.z_out, rows)
            total += _batch_loss(loss, acts[L], pw + c.z_out, &y[start, 0], rows, k,
                                 False)
            if want_gradients:
                _gradients(&params[0], &grads[0], &sizes[0], L, hidden_act,
                           output_act, loss, acts, &y[start, 0], pw + c.deltas,
                           pw + c.deltas_2, rows, start > 0)
            start += rows
    return total


# The training data may be float32 under a float64 model (the rows are
# converted as they are gathered), so that a float64 run does not need a
# float64 copy of the whole data set.
ctypedef fused data_floating:
    float
    double


# ---------------------------------------------------------------------------
# Training on several workers
#
# Each hidden layer's units are split between the workers; a worker owns its
# units' rows of W and b, computes their activations in the forward pass,
# and their deltas and weight update in the backward pass, each GEMM being a
# single-threaded BLAS call on its share. The output layer's forward pass
# (a few units whose softmax and loss need all of them) is split by samples
# instead, or is worker 0's for small feature-major batches. Workers meet at
# a barrier wherever the next stage reads what others wrote:
#   gather (each a range of rows) | each hidden layer | output layer |
#   each delta GEMM (it reads all rows of W_l, so W_l's update waits for it)
# The next batch is gathered into the other input buffer, so the last
# weight update of one step and the gather of the next need no barrier.
# With one worker this is the plain sequential step, the barriers no-ops.
# ---------------------------------------------------------------------------

DEF MAX_WORKERS = 64
MAX_TRAIN_WORKERS = MAX_WORKERS

cdef extern from "_parallel.h" nogil:
    ctypedef struct mlp_barrier:
        pass
    ctypedef void (*mlp_task)(void* ctx, int tid, int n_threads) noexcept nogil
    void mlp_prefetch(const void* p)
    void mlp_barrier_wait(mlp_barrier* b, int* sense)
    int mlp_parallel_run(mlp_task fn, void* ctx, int n_threads, mlp_barrier* barrier)


cdef struct _TrainRun:
    int kind                   # 0 float model and data, 1 float/double,
                               # 2 double/float, 3 double/double
    void* params
    const Py_ssize_t* sizes
    int n_layers
    int hidden_act
    int output_act
    int loss
    const void* x
    const int64_t* labels
    const void* targets        # or, instead of labels, targets (n_total, k)
                               # of the model's type, row r for x's row r
    const int64_t* order
    Py_ssize_t n_total
    Py_ssize_t batch_size
    double learning_rate
    double weight_decay
    void* work
    double* batch_losses
    bint fm
    bint gemms_only            # the GEMM bound: the same calls, nothing else
    mlp_barrier barrier
    char bad[MAX_WORKERS]      # worker w found NaN/inf in its part of a batch
    double part_loss[MAX_WORKERS]  # worker w's share of the batch loss
    Py_ssize_t steps_done
    int64_t bad_row


cdef inline void _share(Py_ssize_t total, int tid, int n_workers, Py_ssize_t align,
                        Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """Worker tid's range [lo, hi) of `total` items, bounds multiples of align."""
    lo[0] = (total * tid // n_workers) // align * align
    hi[0] = total if tid == n_workers - 1 else (total * (tid + 1) // n_workers) // align * align


cdef void _bias_activation_part(floating* z, const floating* b, Py_ssize_t n,
                                Py_ssize_t k, Py_ssize_t u0, Py_ssize_t u1,
                                int act, bint fm) noexcept nogil:
    """_bias_activation for units u0..u1 of a layer of k units."""
    cdef Py_ssize_t i
    if fm:
        _bias_activation(z + u0 * n, b + u0, n, u1 - u0, act, True)
    elif u0 == 0 and u1 == k:
        _bias_activation(z, b, n, k, act, False)
    else:
        for i in range(n):
            _bias_activation(z + i * k + u0, b + u0, 1, u1 - u0, act, False)


cdef void _times_derivative_part(floating* d, const floating* a, Py_ssize_t n,
                                 Py_ssize_t k, Py_ssize_t u0, Py_ssize_t u1,
                                 int act, bint fm) noexcept nogil:
    """_times_derivative for units u0..u1 of a layer of k units."""
    cdef Py_ssize_t i
    if fm:
        _times_derivative(d + u0 * n, a + u0 * n, (u1 - u0) * n, act)
    elif u0 == 0 and u1 == k:
        _times_derivative(d, a, n * k, act)
    else:
        for i in range(n):
            _times_derivative(d + i * k + u0, a + i * k + u0, u1 - u0, act)


cdef void _bias_step_part(const floating* d, floating* col, floating* b,
                          Py_ssize_t n, Py_ssize_t k, Py_ssize_t u0, Py_ssize_t u1,
                          floating step, bint fm) noexcept nogil:
    """b[u0:u1] -= step * (sums over the batch of d for units u0..u1);
    col (k,) is scratch."""
    cdef Py_ssize_t j
    if fm:
        _unit_sums(d + u0 * n, col + u0, n, u1 - u0, n, False, True)
    else:
        _unit_sums(d + u0, col + u0, n, u1 - u0, k, False, False)
    for j in range(u0, u1):
        b[j] = b[j] - step * col[j]


cdef void _gather_rows(const data_floating* x, const int64_t* order,
                       floating* xb, Py_ssize_t n, Py_ssize_t d) noexcept nogil:
    """Rows x[order[0..n]] into xb (n, d), converted to the model's type.

    Row-major even when the step runs feature-major: the first layer's
    GEMMs read it transposed, which costs BLAS's packing nothing, while
    transposing here cost more than the sigmoids of the whole step."""
    cdef Py_ssize_t i, j
    cdef const data_floating* src
    cdef floating* dst
    for i in range(n):
        src = x + order[i] * d
        dst = xb + i * d
        if floating is data_floating:
            memcpy(dst, src, d * sizeof(floating))
        else:
            for j in range(d):
                dst[j] = <floating>src[j]


cdef void _prefetch_rows(const data_floating* x, const int64_t* order,
                         Py_ssize_t n, Py_ssize_t d) noexcept nogil:
    """Start loading rows x[order[0..n]] into cache.

    Batch rows are scattered over the data set, so gathering them waits on
    memory; fetched one step ahead, they arrive while the step's GEMMs run."""
    cdef Py_ssize_t i, j
    cdef Py_ssize_t per_line = 64 // sizeof(data_floating)
    cdef const data_floating* src
    for i in range(n):
        src = x + order[i] * d
        j = 0
        while j < d:
            mlp_prefetch(src + j)
            j += per_line
        mlp_prefetch(src + d - 1)


cdef void _batch_targets(_TrainRun* run, const floating* targets, floating* yb,
                         Py_ssize_t start, Py_ssize_t n, Py_ssize_t k,
                         bint fm) noexcept nogil:
    """The targets of batch rows order[start..start+n] into yb, (n, k) or
    (k, n) with fm: one-hot from the labels, or copied from the targets."""
    cdef Py_ssize_t i, j, r
    if targets == NULL:
        memset(yb, 0, n * k * sizeof(floating))
        for i in range(n):
            if fm:
                yb[run.labels[run.order[start + i]] * n + i] = 1
            else:
                yb[i * k + run.labels[run.order[start + i]]] = 1
        return
    for i in range(n):
        r = run.order[start + i]
        for j in range(k):
            if fm:
                yb[j * n + i] = targets[r * k + j]
            else:
                yb[i * k + j] = targets[r * k + j]


cdef void _train_worker(floating* params, const data_floating* x, _TrainRun* run,
                        int tid, int n_workers) noexcept nogil:
    cdef int L = run.n_layers, l, sense = 0, w_id
    cdef const Py_ssize_t* sizes = run.sizes
    cdef Py_ssize_t d = sizes[0], k = sizes[L], m = run.batch_size
    cdef Py_ssize_t start = 0, n, s = 0, i, fin, fout, off, u0, u1, f0, f1, r0, r1, i0, i1
    cdef double total
    cdef bint fm = run.fm, gemms_only = run.gemms_only, any_bad
    cdef _Carve c = _carve(sizes, L, m)
    cdef floating* pw = <floating*>run.work
    cdef floating* xb
    cdef floating* yb = pw + c.targets
    cdef floating* w
    cdef floating* acts[MAX_LAYERS + 1]
    cdef floating* deltas[MAX_LAYERS + 1]   # deltas[l]: dL/dz of layer l's outputs
    cdef floating* cols[MAX_LAYERS + 1]
    cdef Py_ssize_t offsets[MAX_LAYERS + 1]
    cdef floating step
    cdef floating keep = <floating>(1 - run.learning_rate * run.weight_decay)

    offsets[0] = 0
    for l in range(L):
        offsets[l + 1] = offsets[l] + sizes[l + 1] * (sizes[l] + 1)

    while start < run.n_total:
        n = m if run.n_total - start > m else run.n_total - start
        # Step s reads input buffer s % 2 (see the comment above).
        xb = pw + c.inputs + (s & 1) * m * d
        _point_acts(pw, sizes, L, n, xb, acts)
        deltas[L] = pw + c.deltas
        cols[L] = pw + c.col
        for l in range(L - 1, 0, -1):
            deltas[l] = deltas[l + 1] + n * sizes[l + 1]
            cols[l] = cols[l + 1] + sizes[l + 1]
        step = <floating>(run.learning_rate / n)

        if not gemms_only:
            # Each worker gathers whole rows: a row is 3 KB of contiguous
            # memory, which the hardware prefetcher streams.
            _share(n, tid, n_workers, 1, &r0, &r1)
            _gather_rows(x, run.order + start + r0, xb + r0 * d, r1 - r0, d)
            # The one input check made here rather than in Python: scanning
            # all of x up front costs more (14 ms for MNIST) than many
            # steps, while the gathered rows are in cache now.
            if not _all_finite(xb + r0 * d, (r1 - r0) * d):
                run.bad[tid] = 1
            if tid == 0:
                _batch_targets(run, <const floating*>run.targets, yb, start, n, k, fm)
            mlp_barrier_wait(&run.barrier, &sense)
            any_bad = False
            for w_id in range(n_workers):
                if run.bad[w_id]:
                    any_bad = True
            if any_bad:
                # Stop before the step that would use the row.
                if tid == 0:
                    for i in range(n):
                        if not _all_finite(xb + i * d, d):
                            run.bad_row = run.order[start + i]
                            break
                break

            # The next batch's rows, while they fit in cache with room to
            # spare: at batch 256 (800 KB) the GEMMs evicted them again, and
            # the gather measured slower with the prefetch (400 us) than
            # without (290 us).
            if start + n < run.n_total:
                i = n if run.n_total - start - n > n else run.n_total - start - n
                _share(i, tid, n_workers, 1, &r0, &r1)
                if (r1 - r0) * d * sizeof(data_floating) <= 65536:
                    _prefetch_rows(x, run.order + start + n + r0, r1 - r0, d)

        # Forward: hidden layers split by units.
        for l in range(L - 1):
            fin = sizes[l]
            fout = sizes[l + 1]
            w = params + offsets[l]
            _share(fout, tid, n_workers, 1, &u0, &u1)
            if u1 > u0:
                _layer_gemm(fm, fm and l > 0, w, fin, fout, u0, u1, acts[l], acts[l + 1], n)
                if not gemms_only:
                    _bias_activation_part(acts[l + 1], w + fout * fin, n, fout, u0, u1,
                                          run.hidden_act, fm)
            mlp_barrier_wait(&run.barrier, &sense)
        # The output layer: its softmax and loss need all of a sample's
        # units, so it is split by samples instead, when they are rows
        # (feature-major batches are small; worker 0 takes those whole).
        fin = sizes[L - 1]
        w = params + offsets[L - 1]
        if fm:
            i0 = 0
            i1 = n if tid == 0 else 0
        else:
            _share(n, tid, n_workers, 1, &i0, &i1)
        if i1 > i0:
            _layer_gemm(fm, fm and L > 1, w, fin, k, 0, k, acts[L - 1] + i0 * fin,
                        acts[L] + i0 * k, i1 - i0)
            if not gemms_only:
                _add_bias(acts[L] + i0 * k, w + k * fin, i1 - i0, k, fm)
                memcpy(pw + c.z_out + i0 * k, acts[L] + i0 * k,
                       (i1 - i0) * k * sizeof(floating))
                _apply_activation(acts[L] + i0 * k, i1 - i0, k, run.output_act, fm)
                run.part_loss[tid] = _batch_loss(run.loss, acts[L] + i0 * k,
                                                 pw + c.z_out + i0 * k, yb + i0 * k,
                                                 i1 - i0, k, fm)
                _output_delta(run.output_act, run.loss, acts[L] + i0 * k, yb + i0 * k,
                              deltas[L] + i0 * k, i1 - i0, k, fm)
        else:
            run.part_loss[tid] = 0
        mlp_barrier_wait(&run.barrier, &sense)
        if tid == 0 and not gemms_only:
            total = 0
            for w_id in range(n_workers):
                total += run.part_loss[w_id]
            run.batch_losses[s] = total

        # Backward. Layer l's weights change only after every worker has
        # computed its part of the delta below from the old ones.
        for l in range(L - 1, -1, -1):
            fin = sizes[l]
            fout = sizes[l + 1]
            w = params + offsets[l]
            if l > 0:
                _share(fin, tid, n_workers, 1, &f0, &f1)
                if f1 > f0:
                    _delta_gemm(fm, w, fin, fout, f0, f1, deltas[l + 1], deltas[l], n)
                    if not gemms_only:
                        _times_derivative_part(deltas[l], acts[l], n, fin, f0, f1,
                                               run.hidden_act, fm)
                mlp_barrier_wait(&run.barrier, &sense)
            _share(fout, tid, n_workers, 1, &u0, &u1)
            if u1 > u0:
                _weight_gemm(fm, fm and l > 0, acts[l], deltas[l + 1], fin, fout, u0, u1, n,
                             -step, keep, w)
                if not gemms_only:
                    _bias_step_part(deltas[l + 1], cols[l + 1], w + fout * fin, n,
                                    fout, u0, u1, step, fm)
        start += n
        s += 1
    if tid == 0:
        run.steps_done = s


cdef void _train_task(void* ctx, int tid, int n_workers) noexcept nogil:
    cdef _TrainRun* run = <_TrainRun*>ctx
    if run.kind == 0:
        _train_worker(<float*>run.params, <const float*>run.x, run, tid, n_workers)
    elif run.kind == 1:
        _train_worker(<float*>run.params, <const double*>run.x, run, tid, n_workers)
    elif run.kind == 2:
        _train_worker(<double*>run.params, <const float*>run.x, run, tid, n_workers)
    else:
        _train_worker(<double*>run.params, <const double*>run.x, run, tid, n_workers)


cdef _TrainRun _new_run(int kind, void* params, const Py_ssize_t[::1] sizes,
                        int hidden_act, int output_act, int loss, void* work,
                        double learning_rate, double weight_decay,
                        bint fm) noexcept:
    """A run of the network described by the arguments, with no data yet:
    callers set x, labels or targets, order, n_total, batch_size and
    batch_losses (gemms_only is off)."""
    cdef _TrainRun run
    run.kind = kind
    run.params = params
    run.sizes = &sizes[0]
    run.n_layers = <int>sizes.shape[0] - 1
    run.hidden_act = hidden_act
    run.output_act = output_act
    run.loss = loss
    run.work = work
    run.learning_rate = learning_rate
    run.weight_decay = weight_decay
    run.fm = fm
    run.gemms_only = False
    run.x = NULL
    run.labels = NULL
    run.targets = NULL
    run.order = NULL
    run.batch_losses = NULL
    return run


cdef int _run_workers(_TrainRun* run, int n_workers) noexcept nogil:
    memset(run.bad, 0, sizeof(run.bad))
    run.steps_done = 0
    run.bad_row = -1
    if n_workers > MAX_WORKERS:
        n_workers = MAX_WORKERS
    return mlp_parallel_run(_train_task, run, n_workers, &run.barrier)


cdef struct _ForwardRun:
    bint is_double
    void* params
    const Py_ssize_t* sizes
    int n_layers
    int hidden_act
    int output_act
    const void* x
    void* out
    Py_ssize_t n
    void* work
    Py_ssize_t work_per_worker
    Py_ssize_t chunk
    mlp_barrier barrier       # unused: workers own disjoint rows


cdef void _forward_worker(floating* params, const floating* x, floating* out,
                          _ForwardRun* run, int tid, int n_workers) noexcept nogil:
    cdef int L = run.n_layers
    cdef Py_ssize_t d = run.sizes[0], k = run.sizes[L], start, stop, rows
    cdef floating* pw = <floating*>run.work + tid * run.work_per_worker
    cdef floating* acts[MAX_LAYERS + 1]
    _share(run.n, tid, n_workers, 1, &start, &stop)
    while start < stop:
        rows = run.chunk if stop - start > run.chunk else stop - start
        _point_acts(pw, run.sizes, L, rows, x + start * d, acts)
        _forward(params, run.sizes, L, run.hidden_act, run.output_act, acts, NULL,
                 rows)
        memcpy(out + start * k, acts[L], rows * k * sizeof(floating))
        start += rows


cdef void _forward_task(void* ctx, int tid, int n_workers) noexcept nogil:
    cdef _ForwardRun* run = <_ForwardRun*>ctx
    if run.is_double:
        _forward_worker(<double*>run.params, <const double*>run.x, <double*>run.out,
                        run, tid, n_workers)
    else:
        _forward_worker(<float*>run.params, <const float*>run.x, <float*>run.out,
                        run, tid, n_workers)


def forward(floating[::1] params, const Py_ssize_t[::1] sizes, int hidden_act,
            int output_act, const floating[:, ::1] x, floating[:, ::1] out,
            floating[::1] work, Py_ssize_t chunk, int n_workers=1):
    """Output activations of the network for x (n, sizes[0]) into out (n, sizes[-1]).

    The rows are split between n_workers threads (BLAS must be
    single-threaded meanwhile), each processing its share `chunk` rows at a
    time; work must hold n_workers * workspace_size(sizes, chunk) elements.
    Each output row depends only on its input row; how the rows are split
    changes only rounding (BLAS treats the rows at the edge of a block
    differently)."""
    cdef _ForwardRun run
    run.is_double = floating is double
    run.params = &params[0]
    run.sizes = &sizes[0]
    run.n_layers = <int>sizes.shape[0] - 1
    run.hidden_act = hidden_act
    run.output_act = output_act
    run.x = &x[0, 0]
    run.out = &out[0, 0]
    run.n = x.shape[0]
    run.work = &work[0]
    run.work_per_worker = _carve(&sizes[0], run.n_layers, chunk).total
    run.chunk = chunk
    if n_workers > MAX_WORKERS:
        n_workers = MAX_WORKERS
    with nogil:
        mlp_parallel_run(_forward_task, &run, n_workers, &run.barrier)


def sgd_step(floating[::1] params, const Py_ssize_t[::1] sizes, int hidden_act,
             int output_act, int loss, const floating[:, ::1] x,
             const floating[:, ::1] y, double learning_rate,
             double weight_decay, floating[::1] work, bint feature_major):
    """One in-place SGD step, p -= learning_rate / n * dL/dp; returns the batch loss.

    With weight_decay, weights also shrink by learning_rate * weight_decay * W.
    The step train_steps runs (one worker, x's rows in order, targets y
    instead of labels), in the layout feature_major picks; work must hold
    workspace_size(sizes, n) elements."""
    cdef double total = 0
    order = np.arange(x.shape[0], dtype=np.int64)
    cdef const int64_t[::1] rows = order
    cdef _TrainRun run = _new_run(0 if floating is float else 3, &params[0], sizes,
                                  hidden_act, output_act, loss, &work[0],
                                  learning_rate, weight_decay, feature_major)
    run.x = &x[0, 0]
    run.targets = &y[0, 0]
    run.order = &rows[0]
    run.n_total = x.shape[0]
    run.batch_size = x.shape[0]
    run.batch_losses = &total
    with nogil:
        _run_workers(&run, 1)
    return total


def train_steps(floating[::1] params, const Py_ssize_t[::1] sizes,
                int hidden_act, int output_act, int loss,
                const data_floating[:, ::1] x, const int64_t[::1] labels,
                const int64_t[::1] order, Py_ssize_t batch_size,
                double learning_rate, double weight_decay, floating[::1] work,
                double[::1] batch_losses, bint feature_major, int n_workers=1):
    """Run SGD over the samples listed in `order`, batch_size at a time.

    Step s trains on rows x[order[s*batch_size : (s+1)*batch_size]] (of
    either float type, converted to the model's) with one-hot targets built
    from labels; the last batch may be shorter. The rows are gathered into
    the workspace in C, so the whole run is one nogil call.
    batch_losses[s] receives step s's summed loss. work must hold
    workspace_size(sizes, batch_size) elements.

    feature_major stores each batch transposed, (features, batch), so that
    the batch is BLAS's m dimension: for small batches the same GEMMs run
    faster that way (measured 1.1-1.3x at batch 30), for large ones slower.

    n_workers threads share each step, each layer's units split between
    them (see above); BLAS must be single-threaded meanwhile. The result
    depends on n_workers only through rounding.

    Returns the number of steps done, or -1 - r when row r of x holds NaN
    or inf: the run stops before the step that would have used it."""
    cdef _TrainRun run = _new_run(
        (2 if floating is double else 0) + (1 if data_floating is double else 0),
        &params[0], sizes, hidden_act, output_act, loss, &work[0], learning_rate,
        weight_decay, feature_major)
    run.x = &x[0, 0]
    run.labels = &labels[0]
    run.order = &order[0] if order.shape[0] > 0 else NULL
    run.n_total = order.shape[0]
    run.batch_size = batch_size
    run.batch_losses = &batch_losses[0]
    with nogil:
        _run_workers(&run, n_workers)
    return -1 - run.bad_row if run.bad_row >= 0 else run.steps_done


# ---------------------------------------------------------------------------
# Single kernels, exposed so that the tests can hold each one against numpy
# ---------------------------------------------------------------------------

def bias_activation(floating[:, ::1] z, const floating[::1] b, int act):
    """In place: z <- act(z + b) for z (n, k), b (k,)."""
    with nogil:
        _bias_activation(&z[0, 0], &b[0], z.shape[0], z.shape[1], act, False)


def activation(floating[::1] z, int act):
    """In place, elementwise: z <- act(z) for a hidden activation (not softmax)."""
    with nogil:
        _apply_activation(&z[0], 1, z.shape[0], act, False)


def activation_derivative(const floating[:, ::1] a, floating[:, ::1] out, int act):
    """out <- act'(z) given a = act(z), for a hidden activation."""
    cdef Py_ssize_t i, count = a.shape[0] * a.shape[1]
    cdef floating* po = &out[0, 0]
    cdef const floating* pa = &a[0, 0]
    with nogil:
        for i in range(count):
            po[i] = _act_derivative(act, pa[i])


def output_delta(const floating[:, ::1] a, const floating[:, ::1] y,
                 floating[:, ::1] out, int output_act, int loss):
    """out <- dL/dz of the output layer, per sample, given a = act(z)."""
    with nogil:
        _output_delta(output_act, loss, &a[0, 0], &y[0, 0], &out[0, 0],
                      a.shape[0], a.shape[1], False)


def batch_loss(const floating[:, ::1] a, const floating[:, ::1] z,
               const floating[:, ::1] y, int loss):
    """Summed loss over the batch from outputs a and logits z (n, k)."""
    cdef double total
    with nogil:
        total = _batch_loss(loss, &a[0, 0], &z[0, 0], &y[0, 0], a.shape[0],
                            a.shape[1], False)
    return total


def gemm_bound_steps(floating[::1] params, const Py_ssize_t[::1] sizes,
                     Py_ssize_t batch_size, floating[::1] work, Py_ssize_t n_steps,
                     bint feature_major, int n_workers=1):
    """Only the GEMMs of n_steps training steps, on preallocated arrays.

    This is the ceiling a training step can reach through this BLAS: the
    same calls with the same shapes, on the same workers, that train_steps
    makes (in the layout feature_major picks), and nothing else. The
    parameters are overwritten with meaningless values."""
    cdef _TrainRun run
    cdef int L = <int>sizes.shape[0] - 1
    cdef _Carve c = _carve(&sizes[0], L, batch_size)
    cdef floating* pw = &work[0]
    cdef Py_ssize_t i
    with nogil:
        # Whatever an uninitialised workspace holds (subnormals are slow in
        # GEMMs) must not set the bound: inputs, deltas and parameters get
        # plain values, which the small steps below barely move.
        for i in range(c.inputs, c.col):
            pw[i] = <floating>0.001
        for i in range(params.shape[0]):
            params[i] = <floating>0.001
    # The weight updates are the real calls, alpha = -step and beta = 1
    # (alpha = 0 would let BLAS skip the product).
    run = _new_run(0 if floating is float else 3, &params[0], sizes, ACT_IDENTITY,
                   ACT_IDENTITY, LOSS_MSE, pw, 1e-3 * batch_size, 0, feature_major)
    run.n_total = n_steps * batch_size
    run.batch_size = batch_size
    run.gemms_only = True
    with nogil:
        _run_workers(&run, n_workers)
    return run.steps_done
