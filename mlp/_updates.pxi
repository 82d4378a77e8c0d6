# Parameter update rules (included by _kernels.pyx): the one stage of a
# training step that differs between optimizers. mlp/optimizers.py holds the
# configurations; the rules here are torch.optim's, applied to the batch's
# mean gradient.
#
# Plain SGD never materialises the gradient: it is folded into the weight
# GEMM (_weight_gemm with alpha = -lr / n, beta = 1 - lr * weight_decay).
# The other rules need the gradient itself, so each worker writes the mean
# gradient of the units it owns into `gradients` (laid out like the
# parameters) and updates those same rows: no other worker reads them, so
# the update needs no barrier. The first layer on mostly-zero inputs is the
# exception to both (_panel_update_stage in _worker.pxi): its gradient is
# summed a few inputs at a time into a small buffer, and every rule, plain
# SGD too (_sgd_from_sums), runs on those rows where the weights are kept.
#
# A new rule: its code below (and in UPDATE_RULES), its hyperparameters in
# _Optimizer (and as keywords of _kernels.UpdateRule), its state count in
# _n_state_buffers, any per-step constant in _StepRates/_step_rates, and the
# rule itself, dispatched from _rule_step. Every path (dense, samples split,
# the first layer by input) reaches it through _rule_step with up to
# MAX_STATE_BUFFERS state arrays.

from libc.math cimport sqrt, pow


# Each rule's code (_Optimizer.code; UpdateRule's first argument).
cdef enum:
    OPT_SGD = 0               # plain SGD, fused into the weight GEMM
    OPT_SGD_MOMENTUM = 1
    OPT_ADAM = 2
    OPT_RMSPROP = 3
    OPT_ADAGRAD = 4

UPDATE_RULES = {"sgd": OPT_SGD, "sgd_momentum": OPT_SGD_MOMENTUM, "adam": OPT_ADAM,
                "rmsprop": OPT_RMSPROP, "adagrad": OPT_ADAGRAD}


cdef enum:
    MAX_STATE_BUFFERS = 3     # RMSprop centered with momentum keeps three


cdef struct _Optimizer:
    int code                  # OPT_*
    double weight_decay       # on weights only, never on biases
    double momentum           # SGD's; RMSprop's
    bint nesterov
    double beta1
    double beta2
    double eps                # Adam's, RMSprop's, Adagrad's
    bint decoupled            # Adam's weight decay as AdamW's
    bint eps_hat              # Adam's eps added before sqrt(v)'s bias correction
    double alpha              # RMSprop's smoothing constant
    bint centered             # RMSprop's: divide by the gradient's estimated variance
    double lr_decay           # Adagrad's
    double max_norm           # > 0: cap on each unit's incoming weight norm
    int n_state               # arrays in state (_n_state_buffers)
    void* state[MAX_STATE_BUFFERS]  # the rule's state, laid out like the parameters,
                              # in the order of the optimizer's state_buffers
    void* gradients           # scratch, laid out like the parameters


cdef inline int _n_state_buffers(const _Optimizer* opt) noexcept nogil:
    """How many arrays laid out like the parameters opt's rule keeps."""
    if opt.code == OPT_SGD_MOMENTUM or opt.code == OPT_ADAGRAD:
        return 1
    if opt.code == OPT_ADAM:
        return 2
    if opt.code == OPT_RMSPROP:
        # square_avg, then momentum_buffer with momentum, then grad_avg if centered
        return 1 + (1 if opt.momentum > 0 else 0) + (1 if opt.centered else 0)
    return 0


cdef struct _StepRates:
    # What a rule needs of the step, computed once a stage rather than once
    # a call of the rule (the first layer's pass calls it 49 times a step).
    double learning_rate
    double adam_step_size            # lr / (1 - beta1^t)
    double adam_inv_root_correction  # 1 / sqrt(1 - beta2^t)
    double adam_eps                  # eps, or eps / sqrt(1 - beta2^t) (opt.eps_hat)
    double adagrad_step_size         # lr / (1 + (t - 1) lr_decay)


cdef inline _StepRates _step_rates(const _Optimizer* opt, double learning_rate,
                                   int64_t t) noexcept nogil:
    """The step's rates for opt at step t >= 1 and this learning rate."""
    cdef _StepRates rates
    rates.learning_rate = learning_rate
    rates.adam_step_size = 0
    rates.adam_inv_root_correction = 0
    rates.adam_eps = 0
    rates.adagrad_step_size = 0
    if opt.code == OPT_ADAGRAD:
        rates.adagrad_step_size = learning_rate / (1 + (t - 1) * opt.lr_decay)
    if opt.code == OPT_ADAM:
        rates.adam_step_size = learning_rate / (1 - pow(opt.beta1, <double>t))
        rates.adam_inv_root_correction = 1 / sqrt(1 - pow(opt.beta2, <double>t))
        # The paper's epsilon-hat (scikit-learn's): eps added to sqrt(v)
        # before the correction is eps times the correction added after it.
        rates.adam_eps = (opt.eps * rates.adam_inv_root_correction if opt.eps_hat
                          else opt.eps)
    return rates


cdef extern from "_updates.h" nogil:
    void mlp_sgdf(float* params, const float* sums, Py_ssize_t count, float scale, float decay)
    void mlp_sgd(double* params, const double* sums, Py_ssize_t count, double scale,
                 double decay)
    void mlp_sgd_momentumf(float* params, const float* grads, float* velocity,
                           Py_ssize_t count, float grad_scale, float lr, float wd, float mu,
                           int nesterov)
    void mlp_sgd_momentum(double* params, const double* grads, double* velocity,
                          Py_ssize_t count, double grad_scale, double lr, double wd, double mu,
                          int nesterov)
    void mlp_adamf(float* params, const float* grads, float* m1, float* m2, Py_ssize_t count,
                   float grad_scale, float shrink, float coupled_decay, float b1,
                   float one_minus_b1, float b2, float one_minus_b2, float step_size,
                   float inv_root_correction, float eps)
    void mlp_adam(double* params, const double* grads, double* m1, double* m2,
                  Py_ssize_t count, double grad_scale, double shrink, double coupled_decay,
                  double b1, double one_minus_b1, double b2, double one_minus_b2,
                  double step_size, double inv_root_correction, double eps)
    void mlp_rmspropf(float* params, const float* grads, float* square_avg,
                      float* momentum_buffer, float* grad_avg, Py_ssize_t count,
                      float grad_scale, float lr, float wd, float alpha, float one_minus_alpha,
                      float eps, float mu)
    void mlp_rmsprop(double* params, const double* grads, double* square_avg,
                     double* momentum_buffer, double* grad_avg, Py_ssize_t count,
                     double grad_scale, double lr, double wd, double alpha,
                     double one_minus_alpha, double eps, double mu)
    void mlp_adagradf(float* params, const float* grads, float* sums, Py_ssize_t count,
                      float grad_scale, float clr, float wd, float eps)
    void mlp_adagrad(double* params, const double* grads, double* sums, Py_ssize_t count,
                     double grad_scale, double clr, double wd, double eps)


cdef void _sgd_from_sums(floating* params, const floating* sums, Py_ssize_t count,
                         floating scale, floating decay) noexcept nogil:
    """Plain SGD where the gradient is not a GEMM's: params = decay * params
    + scale * sums, scale = -lr / n and decay = 1 - lr wd for the batch's
    summed gradient (_updates.h)."""
    if floating is float:
        mlp_sgdf(params, sums, count, scale, decay)
    else:
        mlp_sgd(params, sums, count, scale, decay)


cdef void _sgd_momentum(floating* params, const floating* grads, floating* velocity,
                        Py_ssize_t count, floating grad_scale, double learning_rate,
                        double weight_decay, double momentum, bint nesterov) noexcept nogil:
    """torch.optim.SGD with momentum (dampening 0), grad = grads * grad_scale:
    g = grad + wd p;  v = mu v + g;  p -= lr (g + mu v if nesterov else v).
    v starts at 0, which makes the first step's v = g, as torch's does.
    (The loop is in _updates.h, compiled for AVX2 too.)"""
    if floating is float:
        mlp_sgd_momentumf(params, grads, velocity, count, grad_scale, <float>learning_rate,
                          <float>weight_decay, <float>momentum, nesterov)
    else:
        mlp_sgd_momentum(params, grads, velocity, count, grad_scale, learning_rate,
                         weight_decay, momentum, nesterov)


cdef void _adam(floating* params, const floating* grads, floating* first_moment,
                floating* second_moment, Py_ssize_t count, floating grad_scale,
                const _StepRates* rates, double weight_decay,
                const _Optimizer* opt) noexcept nogil:
    """torch.optim.Adam (and AdamW with opt.decoupled) at step t >= 1, grad =
    grads * grad_scale:
    AdamW first shrinks p by 1 - lr wd, Adam adds wd p to the gradient; then
    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
    p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps),
    the two corrections and eps (scaled where opt.eps_hat) from rates
    (_step_rates).
    (The loop is in _updates.h, compiled for AVX2 too.)"""
    cdef double step_size = rates.adam_step_size
    cdef double inv_root_correction = rates.adam_inv_root_correction
    cdef double coupled_decay = 0 if opt.decoupled else weight_decay
    cdef double shrink = 1 - rates.learning_rate * weight_decay if opt.decoupled else 1
    if floating is float:
        mlp_adamf(params, grads, first_moment, second_moment, count, grad_scale, <float>shrink,
                  <float>coupled_decay, <float>opt.beta1, <float>(1 - opt.beta1),
                  <float>opt.beta2, <float>(1 - opt.beta2), <float>step_size,
                  <float>inv_root_correction, <float>rates.adam_eps)
    else:
        mlp_adam(params, grads, first_moment, second_moment, count, grad_scale, shrink,
                 coupled_decay,
                 opt.beta1, 1 - opt.beta1, opt.beta2, 1 - opt.beta2, step_size,
                 inv_root_correction, rates.adam_eps)


cdef void _rmsprop(floating* params, const floating* grads, floating** state,
                   Py_ssize_t count, floating grad_scale, double learning_rate,
                   double weight_decay, const _Optimizer* opt) noexcept nogil:
    """torch.optim.RMSprop, grad = grads * grad_scale, state = (square_avg,
    then momentum_buffer with momentum, then grad_avg if centered):
    g = grad + wd p;  sq = alpha sq + (1 - alpha) g^2;
    avg = sqrt(sq - ga^2) + eps with ga = lerp(ga, g, 1 - alpha) if centered,
    sqrt(sq) + eps otherwise;  p -= lr buf with buf = mu buf + g / avg if
    momentum, p -= lr g / avg otherwise. (The loop is in _updates.h.)"""
    cdef floating* momentum_buffer = state[1] if opt.momentum > 0 else NULL
    cdef floating* grad_avg = (state[2] if opt.momentum > 0 else state[1]) if opt.centered \
        else NULL
    if floating is float:
        mlp_rmspropf(params, grads, state[0], momentum_buffer, grad_avg, count, grad_scale,
                     <float>learning_rate, <float>weight_decay, <float>opt.alpha,
                     <float>(1 - opt.alpha), <float>opt.eps, <float>opt.momentum)
    else:
        mlp_rmsprop(params, grads, state[0], momentum_buffer, grad_avg, count, grad_scale,
                    learning_rate, weight_decay, opt.alpha, 1 - opt.alpha, opt.eps,
                    opt.momentum)


cdef void _adagrad(floating* params, const floating* grads, floating* sums, Py_ssize_t count,
                   floating grad_scale, const _StepRates* rates, double weight_decay,
                   const _Optimizer* opt) noexcept nogil:
    """torch.optim.Adagrad at step t >= 1, grad = grads * grad_scale:
    g = grad + wd p;  sum += g^2;  p -= clr g / (sqrt(sum) + eps), with
    clr = lr / (1 + (t - 1) lr_decay) from rates (_step_rates); sum starts
    at initial_accumulator_value (Adagrad.initial_state). (The loop is in
    _updates.h.)"""
    if floating is float:
        mlp_adagradf(params, grads, sums, count, grad_scale, <float>rates.adagrad_step_size,
                     <float>weight_decay, <float>opt.eps)
    else:
        mlp_adagrad(params, grads, sums, count, grad_scale, rates.adagrad_step_size,
                    weight_decay, opt.eps)


cdef void _rule_step(const _Optimizer* opt, floating* params, const floating* grads,
                     floating grad_scale, floating** state, Py_ssize_t count,
                     const _StepRates* rates, double weight_decay) noexcept nogil:
    """The optimizer's rule (not plain SGD) on count parameters, given their
    mean gradient, grads * grad_scale, and their state (opt.n_state arrays,
    in the order of the optimizer's state_buffers: velocity; Adam's first
    and second moments; ...), laid out alike."""
    if opt.code == OPT_SGD_MOMENTUM:
        _sgd_momentum(params, grads, state[0], count, grad_scale, rates.learning_rate,
                      weight_decay, opt.momentum, opt.nesterov)
    elif opt.code == OPT_ADAM:
        _adam(params, grads, state[0], state[1], count, grad_scale, rates, weight_decay, opt)
    elif opt.code == OPT_RMSPROP:
        _rmsprop(params, grads, state, count, grad_scale, rates.learning_rate, weight_decay,
                 opt)
    elif opt.code == OPT_ADAGRAD:
        _adagrad(params, grads, state[0], count, grad_scale, rates, weight_decay, opt)


cdef void _apply_rule(const _Optimizer* opt, floating* params, Py_ssize_t first,
                      Py_ssize_t count, const _StepRates* rates,
                      double weight_decay) noexcept nogil:
    """The optimizer's rule on params[first:first+count], whose mean
    gradient is in opt.gradients at the same offsets."""
    cdef floating* state[MAX_STATE_BUFFERS]
    cdef int i
    for i in range(MAX_STATE_BUFFERS):
        state[i] = <floating*>opt.state[i] + first if i < opt.n_state else NULL
    _rule_step(opt, params + first, <const floating*>opt.gradients + first, 1, state,
               count, rates, weight_decay)


cdef void _cap_row_norms(floating* w, Py_ssize_t rows, Py_ssize_t fan_in,
                         double max_norm) noexcept nogil:
    """Max-norm: rescale each row of w (rows, fan_in), a unit's incoming
    weights, to a Euclidean norm of at most max_norm."""
    cdef Py_ssize_t r, j
    cdef double total
    cdef floating scale
    for r in range(rows):
        total = 0
        for j in range(fan_in):
            total += <double>w[r * fan_in + j] * <double>w[r * fan_in + j]
        if total > max_norm * max_norm:
            scale = <floating>(max_norm / sqrt(total))
            for j in range(fan_in):
                w[r * fan_in + j] *= scale


cdef void _cap_column_norms(floating* panel, Py_ssize_t fan_in, Py_ssize_t ld,
                            Py_ssize_t units, double max_norm) noexcept nogil:
    """_cap_row_norms for weights laid out by input, panel (fan_in, ld):
    column u is unit u's incoming weights. Each unit's squares are added in
    the same order (input 0 first), so the result is the same."""
    cdef double totals[256]
    cdef floating scales[256]
    cdef Py_ssize_t c0, c1, c, j
    cdef double weight
    for c0 in range(0, units, 256):
        c1 = units if units - c0 < 256 else c0 + 256
        for c in range(c1 - c0):
            totals[c] = 0
        for j in range(fan_in):
            for c in range(c0, c1):
                weight = <double>panel[j * ld + c]
                totals[c - c0] += weight * weight
        for c in range(c1 - c0):
            scales[c] = (<floating>(max_norm / sqrt(totals[c]))
                         if totals[c] > max_norm * max_norm else 1)
        for j in range(fan_in):
            for c in range(c0, c1):
                panel[j * ld + c] *= scales[c - c0]
