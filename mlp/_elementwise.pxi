# Elementwise maths over a batch (included by _kernels.pyx): activations and
# their derivatives, output deltas and losses, bias sums, dropout.
#
# A batch of n samples of k units is row-major (n, k), or with
# feature_major (k, n); see _blas.pxi. Element (sample i, unit j) is at
# i * sample_stride + j * unit_stride.

from libc.math cimport erf, erff, exp, expm1, expm1f, log, log1p, fabs, fabsf
from libc.stdint cimport uint32_t, uint64_t

cdef extern from "_fastexp.h" nogil:
    float mlp_expf(float x)
    double mlp_exp(double x)
    float mlp_sigmoidf(float x)
    double mlp_sigmoid(double x)
    void mlp_bias_sigmoidf(float* z, const float* b, Py_ssize_t n, Py_ssize_t k)
    void mlp_bias_sigmoid(double* z, const double* b, Py_ssize_t n, Py_ssize_t k)
    void mlp_row_bias_sigmoidf(float* z, const float* b, Py_ssize_t rows, Py_ssize_t cols)
    void mlp_row_bias_sigmoid(double* z, const double* b, Py_ssize_t rows, Py_ssize_t cols)
    void mlp_sigmoid_inplacef(float* z, Py_ssize_t count)
    void mlp_sigmoid_inplace(double* z, Py_ssize_t count)
    int mlp_all_finitef(const float* x, Py_ssize_t n)
    int mlp_all_finite(const double* x, Py_ssize_t n)

cdef extern from "_dropout.h" nogil:
    ctypedef struct mlp_mask_key:
        uint32_t first
        uint32_t second
    mlp_mask_key mlp_mask_key_for(uint64_t seed, uint64_t step, uint32_t layer)
    void mlp_dropoutf(float* values, Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t u0, Py_ssize_t u1,
                      Py_ssize_t sample_stride, Py_ssize_t unit_stride, Py_ssize_t width,
                      mlp_mask_key key, uint32_t drop_threshold, float scale)
    void mlp_dropout(double* values, Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t u0, Py_ssize_t u1,
                     Py_ssize_t sample_stride, Py_ssize_t unit_stride, Py_ssize_t width,
                     mlp_mask_key key, uint32_t drop_threshold, double scale)
    Py_ssize_t mlp_drop_listedf(int32_t* inputs, float* values, Py_ssize_t count, uint32_t base,
                                mlp_mask_key key, uint32_t drop_threshold, float scale)
    Py_ssize_t mlp_drop_listed(int32_t* inputs, double* values, Py_ssize_t count, uint32_t base,
                               mlp_mask_key key, uint32_t drop_threshold, double scale)


cdef inline Py_ssize_t _sample_stride(bint feature_major, Py_ssize_t n,
                                      Py_ssize_t k) noexcept nogil:
    return 1 if feature_major else k


cdef inline Py_ssize_t _unit_stride(bint feature_major, Py_ssize_t n,
                                    Py_ssize_t k) noexcept nogil:
    return n if feature_major else 1


cdef inline bint _all_finite(const floating* values, Py_ssize_t n) noexcept nogil:
    if floating is float:
        return mlp_all_finitef(values, n)
    else:
        return mlp_all_finite(values, n)


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


# leaky_relu's slope below zero: torch.nn.LeakyReLU's default.
cdef double LEAKY_RELU_SLOPE = 0.01
# 1 / sqrt(2) and 1 / sqrt(2 pi), for gelu.
cdef double _SQRT1_2 = 0.70710678118654752440
cdef double _INV_SQRT_2PI = 0.39894228040143267794


cdef inline floating _sigmoid(floating z) noexcept nogil:
    if floating is float:
        return mlp_sigmoidf(z)
    else:
        return mlp_sigmoid(z)


cdef inline floating _erf(floating z) noexcept nogil:
    if floating is float:
        return erff(z)
    else:
        return erf(z)


cdef inline floating _gelu(floating z) noexcept nogil:
    # The exact form, z Phi(z), written as torch writes it.
    return z * <floating>0.5 * (1 + _erf(z * <floating>_SQRT1_2))


cdef inline floating _gelu_derivative(floating z) noexcept nogil:
    # Phi(z) + z phi(z).
    return (<floating>0.5 * (1 + _erf(z * <floating>_SQRT1_2))
            + z * (_exp(<floating>-0.5 * z * z) * <floating>_INV_SQRT_2PI))


cdef inline floating _silu_derivative(floating z) noexcept nogil:
    cdef floating s = _sigmoid(z)
    return s * (1 + z * (1 - s))


cdef inline bint _keeps_preactivations(int act) noexcept nogil:
    """Whether a hidden activation's derivative needs its input z: gelu
    and silu are not invertible, so training keeps the hidden layers' z
    (the workspace's preactivations) for them. Every other derivative is a
    function of the activation's output."""
    return act == ACT_GELU or act == ACT_SILU


cdef inline floating _act_derivative(int act, floating a) noexcept nogil:
    # For the output activations, whose derivatives are functions of their
    # output (hidden layers go through _times_derivative).
    if act == ACT_SIGMOID:
        return a * (1 - a)
    elif act == ACT_TANH:
        return 1 - a * a
    elif act == ACT_RELU:
        return 1 if a > 0 else 0
    elif act == ACT_EXP:
        return a
    return 1


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


cdef void _add_bias(floating* z, const floating* b, Py_ssize_t n,
                    Py_ssize_t k, bint feature_major) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef floating bj
    if feature_major:
        for j in range(k):
            bj = b[j]
            for i in range(n):
                z[j * n + i] += bj
    else:
        for i in range(n):
            for j in range(k):
                z[i * k + j] += b[j]


cdef void _apply_activation(floating* z, Py_ssize_t n, Py_ssize_t k,
                            int act, bint feature_major) noexcept nogil:
    """act(z) in place for n samples of k units."""
    cdef Py_ssize_t i
    if act == ACT_SOFTMAX:
        for i in range(n):
            if feature_major:
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
            # NaN stays NaN, so a diverged run shows in the loss. A select,
            # not a branch: the sign of z is a coin toss the branch predictor
            # lost (6% of an Adam step at batch 64), and a select vectorises.
            z[i] = 0 if z[i] < 0 else z[i]
    elif act == ACT_LEAKY_RELU:
        for i in range(n * k):
            z[i] = z[i] if z[i] > 0 else z[i] * <floating>LEAKY_RELU_SLOPE
    elif act == ACT_GELU:
        for i in range(n * k):
            z[i] = _gelu(z[i])
    elif act == ACT_SILU:
        for i in range(n * k):
            z[i] = z[i] * _sigmoid(z[i])
    elif act == ACT_EXP:
        for i in range(n * k):
            z[i] = _exp(z[i])


cdef inline floating* _at(floating* p, Py_ssize_t offset) noexcept nogil:
    """p + offset, or NULL for a NULL p (an optional buffer)."""
    return p + offset if p != NULL else NULL


cdef void _bias_activation(floating* z, const floating* b, Py_ssize_t n,
                           Py_ssize_t k, int act, bint feature_major,
                           floating* kept) noexcept nogil:
    """act(z + b) in place for n samples of k units, b (k,); z + b also
    into kept (laid out like z) unless kept is NULL, for an activation
    whose derivative needs it (_keeps_preactivations). The sigmoid, the
    notebook's activation, is one fused pass."""
    if act == ACT_SIGMOID:
        if floating is float:
            if feature_major:
                mlp_row_bias_sigmoidf(z, b, k, n)
            else:
                mlp_bias_sigmoidf(z, b, n, k)
        else:
            if feature_major:
                mlp_row_bias_sigmoid(z, b, k, n)
            else:
                mlp_bias_sigmoid(z, b, n, k)
        return
    _add_bias(z, b, n, k, feature_major)
    if kept != NULL:
        memcpy(kept, z, n * k * sizeof(floating))
    _apply_activation(z, n, k, act, feature_major)


cdef void _times_derivative(floating* d, const floating* a, const floating* z,
                            Py_ssize_t count, int act, floating output_scale) noexcept nogil:
    """d <- d * act'(z) where output_scale * a = act(z), in one pass.

    output_scale is 1, or under dropout 1 - p: the stored outputs of kept
    units were scaled by 1 / (1 - p), and the derivative needs the unscaled
    ones (the mask itself is applied by the caller). z, the inputs kept by
    the forward pass, is read only by activations that need it
    (_keeps_preactivations); it may be NULL for the others."""
    # One loop per activation rather than _act_derivative per element, so
    # that each loop is branch-free and vectorises.
    cdef Py_ssize_t i
    cdef floating x
    if act == ACT_SIGMOID:
        for i in range(count):
            x = a[i] * output_scale
            d[i] = d[i] * (x * (1 - x))
    elif act == ACT_TANH:
        for i in range(count):
            x = a[i] * output_scale
            d[i] = d[i] * (1 - x * x)
    elif act == ACT_RELU:
        for i in range(count):
            d[i] = 0 if a[i] <= 0 else d[i]
    elif act == ACT_LEAKY_RELU:
        # The sign of the output is the sign of z, scaled or not.
        for i in range(count):
            d[i] = d[i] if a[i] > 0 else d[i] * <floating>LEAKY_RELU_SLOPE
    elif act == ACT_GELU:
        for i in range(count):
            d[i] = d[i] * _gelu_derivative(z[i])
    elif act == ACT_SILU:
        for i in range(count):
            d[i] = d[i] * _silu_derivative(z[i])


cdef void _output_delta(int output_act, int loss, const floating* a,
                        const floating* y, floating* d, Py_ssize_t n,
                        Py_ssize_t k, bint feature_major,
                        const floating* weights) noexcept nogil:
    """d = dL/dz for the output layer, per sample (not divided by n).

    With weights (n,) (NULL for none), sample i's delta is scaled by weights[i]."""
    cdef Py_ssize_t i, j, p
    cdef Py_ssize_t sample_stride = _sample_stride(feature_major, n, k)
    cdef Py_ssize_t unit_stride = _unit_stride(feature_major, n, k)
    cdef floating s, ys
    if output_act != ACT_SOFTMAX:
        # Elementwise: MSE through the activation's derivative, or binary
        # cross-entropy through the sigmoid and the Poisson deviance through
        # the exponential, whose derivatives cancel to a - y.
        if loss == LOSS_BINARY_CROSS_ENTROPY or loss == LOSS_POISSON:
            for p in range(n * k):
                d[p] = a[p] - y[p]
        else:
            for p in range(n * k):
                d[p] = (a[p] - y[p]) * _act_derivative(output_act, a[p])
    else:
        for i in range(n):
            if loss == LOSS_CROSS_ENTROPY:
                # d/dz (-sum y log softmax z) = a * sum(y) - y, which is the
                # familiar a - y for one-hot targets.
                ys = 0
                for j in range(k):
                    ys = ys + y[i * sample_stride + j * unit_stride]
                for j in range(k):
                    p = i * sample_stride + j * unit_stride
                    d[p] = a[p] * ys - y[p]
            else:
                # MSE through the softmax Jacobian: a * (g - <a, g>), g = a - y.
                s = 0
                for j in range(k):
                    p = i * sample_stride + j * unit_stride
                    s = s + a[p] * (a[p] - y[p])
                for j in range(k):
                    p = i * sample_stride + j * unit_stride
                    d[p] = a[p] * ((a[p] - y[p]) - s)
    if weights != NULL:
        for i in range(n):
            for j in range(k):
                d[i * sample_stride + j * unit_stride] *= weights[i]


cdef double _sample_loss(int loss, const floating* a, const floating* z,
                         const floating* y, Py_ssize_t k,
                         Py_ssize_t unit_stride) noexcept nogil:
    """One sample's loss from its outputs a and logits z, in double.

    The cross-entropies are computed from the logits (log-sum-exp and
    softplus), so they stay finite when a probability underflows to zero."""
    cdef Py_ssize_t j, p
    cdef double total = 0, m, s, diff, zj, yj
    if loss == LOSS_MSE:
        for j in range(k):
            diff = <double>a[j * unit_stride] - <double>y[j * unit_stride]
            total += 0.5 * diff * diff
    elif loss == LOSS_BINARY_CROSS_ENTROPY:
        # -y log sigmoid(z) - (1 - y) log(1 - sigmoid(z)) = softplus(z) - y z
        for j in range(k):
            zj = z[j * unit_stride]
            total += (zj if zj > 0 else 0) + log1p(exp(-fabs(zj))) - <double>y[j * unit_stride] * zj
    elif loss == LOSS_POISSON:
        # Half the Poisson deviance, y log(y / mu) - y + mu with mu = exp(z),
        # as scikit-learn's MLPRegressor reports it: exp(z) - y z + y log y - y
        # (y log y = 0 at y = 0), which is 0 where the prediction is exact.
        for j in range(k):
            zj = z[j * unit_stride]
            yj = y[j * unit_stride]
            total += exp(zj) - yj * zj - yj
            if yj > 0:
                total += yj * log(yj)
    else:
        m = z[0]
        for j in range(k):
            if z[j * unit_stride] > m:
                m = z[j * unit_stride]
        s = 0
        for j in range(k):
            s += exp(<double>z[j * unit_stride] - m)
        s = log(s) + m
        for j in range(k):
            p = j * unit_stride
            if y[p] != 0:
                total -= <double>y[p] * (<double>z[p] - s)
    return total


cdef double _batch_loss(int loss, const floating* a, const floating* z,
                        const floating* y, Py_ssize_t n, Py_ssize_t k,
                        bint feature_major, const floating* weights) noexcept nogil:
    """Sum over the batch of the per-sample loss (each times weights[i]
    unless weights is NULL), accumulated in double."""
    cdef Py_ssize_t i, offset
    cdef Py_ssize_t sample_stride = _sample_stride(feature_major, n, k)
    cdef Py_ssize_t unit_stride = _unit_stride(feature_major, n, k)
    cdef double total = 0, one
    for i in range(n):
        offset = i * sample_stride
        one = _sample_loss(loss, a + offset, z + offset, y + offset, k, unit_stride)
        total += one if weights == NULL else one * weights[i]
    return total


cdef void _unit_sums(const floating* d, floating* out, Py_ssize_t n,
                     Py_ssize_t k, Py_ssize_t row_stride, bint accumulate,
                     bint feature_major) noexcept nogil:
    """out (k,) <- (or +=, with accumulate) the sums over the n samples of
    d: the bias gradient. Row-major d may be k columns of a wider matrix,
    rows row_stride apart (row_stride = k for all of it)."""
    cdef Py_ssize_t i, j
    cdef floating acc
    if not accumulate:
        memset(out, 0, k * sizeof(floating))
    if feature_major:
        for j in range(k):
            acc = 0
            for i in range(n):
                acc = acc + d[j * n + i]
            out[j] += acc
    else:
        for i in range(n):
            for j in range(k):
                out[j] += d[i * row_stride + j]


cdef inline void _dropout(floating* values, Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t u0,
                          Py_ssize_t u1, Py_ssize_t sample_stride, Py_ssize_t unit_stride,
                          Py_ssize_t width, mlp_mask_key key, uint32_t drop_threshold,
                          floating scale) noexcept nogil:
    """Units u0..u1 of samples i0..i1 of a layer `width` wide (values at
    sample 0, unit 0): kept ones times scale, dropped ones 0 (_dropout.h)."""
    if floating is float:
        mlp_dropoutf(values, i0, i1, u0, u1, sample_stride, unit_stride, width, key,
                     drop_threshold, scale)
    else:
        mlp_dropout(values, i0, i1, u0, u1, sample_stride, unit_stride, width, key,
                    drop_threshold, scale)


cdef inline Py_ssize_t _drop_listed(int32_t* inputs, floating* values, Py_ssize_t count,
                                    uint32_t base, mlp_mask_key key, uint32_t drop_threshold,
                                    floating scale) noexcept nogil:
    """Input dropout on a sample's list of non-zero inputs, in place, its
    counters from base (sample * inputs); returns the kept count (_dropout.h)."""
    if floating is float:
        return mlp_drop_listedf(inputs, values, count, base, key, drop_threshold, scale)
    else:
        return mlp_drop_listed(inputs, values, count, base, key, drop_threshold, scale)
