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


cdef inline bint _sample_finite(const floating* xb, Py_ssize_t i, Py_ssize_t n,
                                Py_ssize_t d, bint fm) noexcept nogil:
    """Whether sample i of a gathered batch (n, d), or (d, n) with fm, is finite."""
    cdef Py_ssize_t j
    if not fm:
        return _all_finite(xb + i * d, d)
    for j in range(d):
        # v - v is 0 for finite v and NaN for NaN or inf.
        if xb[j * n + i] - xb[j * n + i] != 0:
            return False
    return True


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
                     Py_ssize_t k, bint accumulate, bint fm) noexcept nogil:
    """out (k,) <- (or +=, with accumulate) the sums over the n samples of
    d, laid out as in _bias_activation: the bias gradient."""
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
                out[j] += d[i * k + j]


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


cdef void _layer_gemm(bint fm, floating* w, Py_ssize_t fin, Py_ssize_t fout,
                      const floating* a, floating* z, Py_ssize_t n) noexcept nogil:
    """z = a W^T for n samples: a (n, fin) and z (n, fout) row-major, or with
    fm stored (fin, n) and (fout, n)."""
    if n == 1:
        # One sample (both layouts are then the same vector): a matrix-vector
        # product. gemm would pack all of W first, which costs more than the
        # product.
        _gemv(c'T', <int>fin, <int>fout, 1, w, <int>fin, a, 0, z)
    elif fm:
        # Column-major z (n, fout) = a (n, fin) * W^T, W^T being W read as
        # column-major (fin, fout): the batch is BLAS's m.
        _gemm(c'N', c'N', <int>n, <int>fout, <int>fin, 1, a, <int>n, w, <int>fin,
              0, z, <int>n)
    else:
        _gemm(c'T', c'N', <int>fout, <int>n, <int>fin, 1, w, <int>fin, a, <int>fin,
              0, z, <int>fout)


cdef void _forward(floating* params, const Py_ssize_t* sizes, int n_layers,
                   int hidden_act, int output_act, floating** acts,
                   floating* z_out, Py_ssize_t n, bint fm) noexcept nogil:
    """acts[0] holds the input (n, sizes[0]), or (sizes[0], n) with fm;
    fills acts[1..L] in the same layout.

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
        _layer_gemm(fm, w, fin, fout, acts[l], acts[l + 1], n)
        act = hidden_act if l < n_layers - 1 else output_act
        if l == n_layers - 1 and z_out != NULL:
            _add_bias(acts[l + 1], b, n, fout, fm)
            memcpy(z_out, acts[l + 1], n * fout * sizeof(floating))
            _apply_activation(acts[l + 1], n, fout, act, fm)
        else:
            _bias_activation(acts[l + 1], b, n, fout, act, fm)


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


cdef inline void _delta_gemm(bint fm, floating* w, Py_ssize_t fin, Py_ssize_t fout,
                             const floating* delta, floating* delta_prev,
                             Py_ssize_t n) noexcept nogil:
    """delta_prev = delta W: (n, fout) -> (n, fin), or transposed with fm."""
    if fm:
        _gemm(c'N', c'T', <int>n, <int>fin, <int>fout, 1, delta, <int>n, w,
              <int>fin, 0, delta_prev, <int>n)
    else:
        _gemm(c'N', c'N', <int>fin, <int>n, <int>fout, 1, w, <int>fin, delta,
              <int>fout, 0, delta_prev, <int>fin)


cdef inline void _weight_gemm(bint fm, const floating* a, const floating* delta,
                              Py_ssize_t fin, Py_ssize_t fout, Py_ssize_t n,
                              floating alpha, floating beta,
                              floating* c) noexcept nogil:
    """c (fout, fin) <- alpha * delta^T a + beta * c: the weight gradient,
    or with alpha = -step, beta = keep, the SGD update of W in place."""
    if fm:
        _gemm(c'T', c'N', <int>fin, <int>fout, <int>n, alpha, a, <int>n, delta,
              <int>n, beta, c, <int>fin)
    else:
        _gemm(c'N', c'T', <int>fin, <int>fout, <int>n, alpha, a, <int>fin, delta,
              <int>fout, beta, c, <int>fin)


cdef void _backward(floating* params, floating* grads, const Py_ssize_t* sizes,
                    int n_layers, int hidden_act, int output_act, int loss,
                    floating** acts, const floating* y, floating* delta,
                    floating* delta_prev, floating* col, Py_ssize_t n,
                    floating step, floating keep, bint accumulate,
                    bint fm) noexcept nogil:
    """Backpropagate one batch whose forward pass is in acts.

    grads != NULL: write dL/dW and dL/db (sums over the batch) into grads,
    or add them to it with accumulate.
    grads == NULL: SGD in place, p -= step * dL/dp, with the weight update
    folded into the gradient GEMM (alpha = -step, beta = keep): keep < 1
    is L2 weight decay, W <- keep * W - step * dL/dW, at no extra pass.
    Biases are not decayed. A layer's weights are updated only after the
    delta below them has been computed from the old weights, so the step is
    the exact gradient step. fm: everything is stored feature-major, as in
    _forward."""
    cdef int l
    cdef Py_ssize_t fin, fout, j, off
    cdef floating* w
    cdef floating* b
    cdef floating* tmp
    cdef Py_ssize_t k = sizes[n_layers]

    _output_delta(output_act, loss, acts[n_layers], y, delta, n, k, fm)
    for l in range(n_layers - 1, -1, -1):
        fin = sizes[l]
        fout = sizes[l + 1]
        off = _weights_offset(sizes, l)
        w = params + off
        if l > 0:
            _delta_gemm(fm, w, fin, fout, delta, delta_prev, n)
            _times_derivative(delta_prev, acts[l], n * fin, hidden_act)
        if grads != NULL:
            _weight_gemm(fm, acts[l], delta, fin, fout, n, 1, 1 if accumulate else 0,
                         grads + off)
            _unit_sums(delta, grads + off + fout * fin, n, fout, accumulate, fm)
        else:
            _weight_gemm(fm, acts[l], delta, fin, fout, n, -step, keep, w)
            _unit_sums(delta, col, n, fout, False, fm)
            b = w + fout * fin
            for j in range(fout):
                b[j] = b[j] - step * col[j]
        tmp = delta
        delta = delta_prev
        delta_prev = tmp


# ---------------------------------------------------------------------------
# Workspace: one flat buffer, carved up the same way by every entry point
# ---------------------------------------------------------------------------

cdef struct _Carve:
    Py_ssize_t acts      # layers 1..L activations, m * sum(sizes[1:])
    Py_ssize_t z_out     # m * sizes[L]
    Py_ssize_t targets   # m * sizes[L] (one-hot targets built by the gather)
    Py_ssize_t inputs    # m * sizes[0] (rows gathered by index)
    Py_ssize_t deltas    # 2 * m * max(sizes[1:])
    Py_ssize_t col       # max(sizes[1:])
    Py_ssize_t total


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
    c.deltas = c.inputs + m * sizes[0]
    c.col = c.deltas + 2 * m * widest
    c.total = c.col + widest
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

def forward(floating[::1] params, const Py_ssize_t[::1] sizes, int hidden_act,
            int output_act, const floating[:, ::1] x, floating[:, ::1] out,
            floating[::1] work, Py_ssize_t chunk):
    """Output activations of the network for x (n, sizes[0]) into out (n, sizes[-1]).

    Rows are processed in chunks of `chunk`; work must hold
    workspace_size(sizes, chunk) elements."""
    cdef int L = <int>sizes.shape[0] - 1
    cdef Py_ssize_t n = x.shape[0], start, rows, k = sizes[L], d = sizes[0]
    cdef floating* acts[MAX_LAYERS + 1]
    cdef floating* pw = &work[0]
    with nogil:
        start = 0
        while start < n:
            rows = chunk if n - start > chunk else n - start
            _point_acts(pw, &sizes[0], L, rows, &x[start, 0], acts)
            _forward(&params[0], &sizes[0], L, hidden_act, output_act, acts,
                     NULL, rows, False)
            memcpy(&out[start, 0], acts[L], rows * k * sizeof(floating))
            start += rows


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
                     pw + c.z_out, rows, False)
            total += _batch_loss(loss, acts[L], pw + c.z_out, &y[start, 0], rows, k,
                                 False)
            if want_gradients:
                _backward(&params[0], &grads[0], &sizes[0], L, hidden_act,
                          output_act, loss, acts, &y[start, 0], pw + c.deltas,
                          pw + c.deltas + (c.col - c.deltas) // 2, pw + c.col,
                          rows, 0, 1, start > 0, False)
            start += rows
    return total


def sgd_step(floating[::1] params, const Py_ssize_t[::1] sizes, int hidden_act,
             int output_act, int loss, const floating[:, ::1] x,
             const floating[:, ::1] y, double learning_rate,
             double weight_decay, floating[::1] work, bint feature_major):
    """One in-place SGD step, p -= learning_rate / n * dL/dp; returns the batch loss.

    With weight_decay, weights also shrink by learning_rate * weight_decay * W.
    feature_major runs the step on transposed copies of x and y (see
    train_steps); the result is the same step."""
    cdef int L = <int>sizes.shape[0] - 1
    cdef Py_ssize_t n = x.shape[0], k = sizes[L], d = sizes[0], i, j
    cdef _Carve c = _carve(&sizes[0], L, n)
    cdef floating* acts[MAX_LAYERS + 1]
    cdef floating* pw = &work[0]
    cdef const floating* xin = &x[0, 0]
    cdef const floating* yin = &y[0, 0]
    cdef floating step = <floating>(learning_rate / n)
    cdef floating keep = <floating>(1 - learning_rate * weight_decay)
    cdef double total
    with nogil:
        if feature_major:
            for i in range(n):
                for j in range(d):
                    pw[c.inputs + j * n + i] = x[i, j]
                for j in range(k):
                    pw[c.targets + j * n + i] = y[i, j]
            xin = pw + c.inputs
            yin = pw + c.targets
        _point_acts(pw, &sizes[0], L, n, xin, acts)
        _forward(&params[0], &sizes[0], L, hidden_act, output_act, acts,
                 pw + c.z_out, n, feature_major)
        total = _batch_loss(loss, acts[L], pw + c.z_out, yin, n, k, feature_major)
        _backward(&params[0], NULL, &sizes[0], L, hidden_act, output_act,
                  loss, acts, yin, pw + c.deltas,
                  pw + c.deltas + (c.col - c.deltas) // 2, pw + c.col, n,
                  step, keep, False, feature_major)
    return total


# The training data may be float32 under a float64 model (the rows are
# converted as they are gathered), so that a float64 run does not need a
# float64 copy of the whole data set.
ctypedef fused data_floating:
    float
    double


def train_steps(floating[::1] params, const Py_ssize_t[::1] sizes,
                int hidden_act, int output_act, int loss,
                const data_floating[:, ::1] x, const int64_t[::1] labels,
                const int64_t[::1] order, Py_ssize_t batch_size,
                double learning_rate, double weight_decay, floating[::1] work,
                double[::1] batch_losses, bint feature_major):
    """Run SGD over the samples listed in `order`, batch_size at a time.

    Step s trains on rows x[order[s*batch_size : (s+1)*batch_size]] (of
    either float type, converted to the model's) with one-hot targets built
    from labels; the last batch may be shorter. The
    rows are gathered into the workspace in C, so the whole run is one
    nogil call. batch_losses[s] receives step s's summed loss.
    work must hold workspace_size(sizes, batch_size) elements.

    feature_major stores each batch transposed, (features, batch), so that
    the batch is BLAS's m dimension: for small batches the same GEMMs run
    faster that way (measured 1.1-1.3x at batch 30), for large ones slower.

    Returns the number of steps done, or -1 - r when row r of x holds NaN
    or inf: the run stops before the step that would have used it."""
    cdef int L = <int>sizes.shape[0] - 1
    cdef Py_ssize_t n_total = order.shape[0], d = sizes[0], k = sizes[L]
    cdef Py_ssize_t start, n, i, j, jb, je, s = 0
    cdef _Carve c = _carve(&sizes[0], L, batch_size)
    cdef floating* acts[MAX_LAYERS + 1]
    cdef floating* pw = &work[0]
    cdef floating* xb = pw + c.inputs
    cdef floating* yb = pw + c.targets
    cdef floating* dst
    cdef const data_floating* src
    cdef floating step
    cdef floating keep = <floating>(1 - learning_rate * weight_decay)
    cdef int64_t bad_row = -1
    with nogil:
        start = 0
        while start < n_total:
            n = batch_size if n_total - start > batch_size else n_total - start
            if feature_major:
                # Transpose while gathering, a cache line of features at a
                # time: reads stay sequential and writes touch 16 rows.
                for jb in range(0, d, 16):
                    je = jb + 16 if jb + 16 < d else d
                    for i in range(n):
                        src = &x[order[start + i], 0]
                        for j in range(jb, je):
                            xb[j * n + i] = <floating>src[j]
            else:
                for i in range(n):
                    src = &x[order[start + i], 0]
                    dst = xb + i * d
                    for j in range(d):
                        dst[j] = <floating>src[j]
            # The one input check made here rather than in Python: scanning
            # all of x up front costs more (14 ms for MNIST) than many steps,
            # while the gathered rows are in cache now. Stop before the step.
            if not _all_finite(xb, n * d):
                for i in range(n):
                    if not _sample_finite(xb, i, n, d, feature_major):
                        bad_row = order[start + i]
                        break
                break
            memset(yb, 0, n * k * sizeof(floating))
            for i in range(n):
                if feature_major:
                    yb[labels[order[start + i]] * n + i] = 1
                else:
                    yb[i * k + labels[order[start + i]]] = 1
            _point_acts(pw, &sizes[0], L, n, xb, acts)
            _forward(&params[0], &sizes[0], L, hidden_act, output_act, acts,
                     pw + c.z_out, n, feature_major)
            batch_losses[s] = _batch_loss(loss, acts[L], pw + c.z_out, yb, n, k,
                                          feature_major)
            step = <floating>(learning_rate / n)
            _backward(&params[0], NULL, &sizes[0], L, hidden_act, output_act,
                      loss, acts, yb, pw + c.deltas,
                      pw + c.deltas + (c.col - c.deltas) // 2, pw + c.col, n,
                      step, keep, False, feature_major)
            start += n
            s += 1
    return -1 - bad_row if bad_row >= 0 else s


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


def gemm_bound_steps(floating[::1] params, floating[::1] grads,
                     const Py_ssize_t[::1] sizes, const floating[:, ::1] x,
                     floating[::1] work, Py_ssize_t n_steps, bint feature_major):
    """Only the GEMMs of n_steps training steps, on preallocated arrays.

    This is the ceiling a training step can reach through this BLAS: the
    same calls with the same shapes that sgd_step makes (in the layout
    feature_major picks), and nothing else. The values computed are
    meaningless."""
    cdef int L = <int>sizes.shape[0] - 1
    cdef Py_ssize_t n = x.shape[0], fin, fout, off, s
    cdef int l
    cdef _Carve c = _carve(&sizes[0], L, n)
    cdef floating* acts[MAX_LAYERS + 1]
    cdef floating* pw = &work[0]
    cdef floating* delta = pw + c.deltas
    cdef floating* delta_prev = pw + c.deltas + (c.col - c.deltas) // 2
    with nogil:
        _point_acts(pw, &sizes[0], L, n, &x[0, 0], acts)
        # Whatever an uninitialised workspace holds (subnormals are slow in
        # GEMMs) must not set the bound: the deltas get plain values.
        for s in range(c.col - c.deltas):
            pw[c.deltas + s] = <floating>0.001
        for s in range(n_steps):
            off = 0
            for l in range(L):
                fin = sizes[l]
                fout = sizes[l + 1]
                _layer_gemm(feature_major, &params[off], fin, fout, acts[l], acts[l + 1], n)
                off += fout * (fin + 1)
            for l in range(L - 1, -1, -1):
                fin = sizes[l]
                fout = sizes[l + 1]
                off = _weights_offset(&sizes[0], l)
                if l > 0:
                    _delta_gemm(feature_major, &params[off], fin, fout, delta, delta_prev, n)
                _weight_gemm(feature_major, acts[l], delta, fin, fout, n, 1, 0, &grads[off])
