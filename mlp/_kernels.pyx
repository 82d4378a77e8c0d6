# The compiled core of mlp: forward pass, losses, backprop and parameter
# updates for a fully connected network, on whole batches, in nogil code,
# with every GEMM going through scipy's BLAS.
#
# Where things are:
#   _blas.pxi         BLAS wrappers and the three matrix products of a layer
#   _elementwise.pxi  activations, derivatives, output deltas, losses, dropout
#   _updates.pxi      the optimizers' update rules and max-norm
#   _worker.pxi       the training loop on several worker threads, as stages
#   this file         the activation/loss/optimizer codes, the workspace
#                     layout, the typed description of a run (Network,
#                     UpdateRule, TrainingData, Dropout, TrainingRun) and the
#                     entry points called from Python, which take it
#
# Contract with the Python side (mlp/_validation.py and its callers): every
# array arrives with the right dtype, C-contiguous, with shapes that agree
# with `sizes`, finite where it matters, and sample indices inside
# [0, n_samples). Nothing here checks that again; that is what lets the
# loops run without the GIL and without bounds checks.
#
# Parameter layout. All parameters of a network live in one flat array:
#     [W_0 (sizes[1], sizes[0]), b_0 (sizes[1],), W_1 (sizes[2], sizes[1]), b_1, ...]
# so that model.weights / model.biases are views into it and one pointer plus
# `sizes` describes the whole network. Gradients and optimizer state use the
# same layout.

from cython cimport floating
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t, uintptr_t
from libc.float cimport DBL_EPSILON, FLT_EPSILON
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from ._augment cimport (DistortionPlan, mlp_aug_plan, mlp_aug_distort_image,
                        mlp_aug_work_floats, mlp_aug_work_init)

import mmap

import numpy as np

# Activation, loss and update-rule codes. The dictionaries below are the
# only copy Python sees (mlp/activations.py and mlp/optimizers.py read them
# from here). An activation is a code here and its branches in
# _elementwise.pxi (_apply_activation, _times_derivative, and
# _keeps_preactivations when its derivative needs its input).
cdef enum:
    ACT_SIGMOID = 0
    ACT_TANH = 1
    ACT_RELU = 2
    ACT_SOFTMAX = 3
    ACT_IDENTITY = 4
    ACT_LEAKY_RELU = 5
    ACT_GELU = 6
    ACT_SILU = 7
    ACT_EXP = 8

cdef enum:
    LOSS_MSE = 0
    LOSS_CROSS_ENTROPY = 1
    LOSS_BINARY_CROSS_ENTROPY = 2
    LOSS_POISSON = 3

ACTIVATIONS = {"sigmoid": ACT_SIGMOID, "tanh": ACT_TANH, "relu": ACT_RELU,
               "softmax": ACT_SOFTMAX, "identity": ACT_IDENTITY, "leaky_relu": ACT_LEAKY_RELU,
               "gelu": ACT_GELU, "silu": ACT_SILU, "exp": ACT_EXP}
LOSSES = {"mse": LOSS_MSE, "cross_entropy": LOSS_CROSS_ENTROPY,
          "binary_cross_entropy": LOSS_BINARY_CROSS_ENTROPY, "poisson": LOSS_POISSON}

# The types the matrix products may compute in other than the parameters'
# own (Network's compute_dtype): the one table of them, which Model, the
# CLI and the estimators read.
COMPUTE_DTYPES = ("bfloat16",)

# Networks deeper than this are refused on the Python side; it lets the
# per-layer pointer tables live on the stack.
cdef enum:
    MAX_LAYERS = 64
MAX_WEIGHT_LAYERS = MAX_LAYERS

# Training batches up to this size run with activations stored
# feature-major, (units, batch), which makes the batch BLAS's m dimension:
# at batch 30 the whole step measured 1.13x faster that way (scipy's
# OpenBLAS, Haswell kernels), at batch 64 no faster and at 128 and up slower.
FEATURE_MAJOR_MAX_BATCH = 32

# The training data may be float32 under a float64 model (the rows are
# converted as they are gathered), so that a float64 run does not need a
# float64 copy of the whole data set.
ctypedef fused data_floating:
    float
    double

include "_blas.pxi"
include "_elementwise.pxi"
include "_updates.pxi"
include "_sparse.pxi"
include "_bf16.pxi"


def all_finite(const floating[::1] values):
    """True when no entry is NaN or infinite: one pass, no temporary array."""
    cdef bint ok
    with nogil:
        ok = _all_finite(&values[0], values.shape[0])
    return ok


# ---------------------------------------------------------------------------
# Workspace: one flat buffer, carved up the same way by every entry point
# ---------------------------------------------------------------------------

cdef struct _Carve:
    Py_ssize_t acts           # layers 1..L activations, m * width
    Py_ssize_t logits         # m * sizes[L]: the output layer before its activation
    Py_ssize_t targets        # m * sizes[L] (one-hot targets built by the gather)
    Py_ssize_t sample_weights # m
    Py_ssize_t inputs         # 2 * m * sizes[0]: rows gathered by index, two
                              # buffers so that workers may gather the next batch
                              # while others still read this one
    Py_ssize_t deltas         # m * max(width, 2 * widest): a delta per layer for
                              # the workers, or two that _gradients alternates
    Py_ssize_t deltas_2       # the second of those two
    Py_ssize_t bias_sums      # width: bias gradients, per layer, for the workers
    Py_ssize_t preactivations # m * (width - sizes[L]), with keep_preactivations
                              # only: hidden layers 1..L-1 before their activation,
                              # laid out like their acts (_keeps_preactivations)
    Py_ssize_t total
    # width = sum(sizes[1:]), widest = max(sizes[1:])


cdef _Carve _carve(const Py_ssize_t* sizes, int n_layers, Py_ssize_t m,
                   bint keep_preactivations) noexcept nogil:
    cdef _Carve c
    cdef Py_ssize_t width = 0, widest = 0
    cdef int l
    for l in range(1, n_layers + 1):
        width += sizes[l]
        if sizes[l] > widest:
            widest = sizes[l]
    c.acts = 0
    c.logits = c.acts + m * width
    c.targets = c.logits + m * sizes[n_layers]
    c.sample_weights = c.targets + m * sizes[n_layers]
    c.inputs = c.sample_weights + m
    c.deltas = c.inputs + 2 * m * sizes[0]
    c.deltas_2 = c.deltas + m * widest
    c.bias_sums = c.deltas + m * (width if width > 2 * widest else 2 * widest)
    c.preactivations = c.bias_sums + width
    c.total = c.preactivations + (m * (width - sizes[n_layers]) if keep_preactivations else 0)
    return c


def workspace_size(const Py_ssize_t[::1] sizes, Py_ssize_t batch_size, hidden_activation=None):
    """Number of elements the workspace needs for batches of up to batch_size rows.

    Training and gradients with a hidden_activation whose derivative needs
    its input (gelu, silu) need more: give it to count that in."""
    return _carve(&sizes[0], <int>sizes.shape[0] - 1, batch_size,
                  hidden_activation is not None
                  and _keeps_preactivations(<int>hidden_activation)).total


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
# Whole-network passes on one thread, row-major (inference, loss, gradients)
# ---------------------------------------------------------------------------

cdef inline Py_ssize_t _weights_offset(const Py_ssize_t* sizes,
                                       int layer) noexcept nogil:
    cdef Py_ssize_t off = 0
    cdef int l
    for l in range(layer):
        off += sizes[l + 1] * (sizes[l] + 1)
    return off

cdef void _forward(floating* params, const Py_ssize_t* sizes, int n_layers,
                   int hidden_act, int output_act, floating** acts,
                   floating* logits, Py_ssize_t n, bint feature_major,
                   floating** kept, bint bf16) noexcept nogil:
    """acts[0] holds the input (n, sizes[0]); fills acts[1..L], row-major,
    or (units, n) with feature_major. (Training runs its own split forward
    pass: _worker.pxi.)

    When logits is not NULL the output layer's pre-activation is kept there
    (the cross-entropy loss needs the logits); when kept is not NULL, each
    hidden layer l's in kept[l] (for _gradients' derivatives). bf16: the
    products' inputs rounded to bfloat16 (_gemm_as)."""
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
        _layer_gemm(feature_major, feature_major and l > 0, w, fin, fout, 0, fout, acts[l],
                    acts[l + 1], n, bf16)
        act = hidden_act if l < n_layers - 1 else output_act
        if l == n_layers - 1 and logits != NULL:
            _add_bias(acts[l + 1], b, n, fout, feature_major)
            memcpy(logits, acts[l + 1], n * fout * sizeof(floating))
            _apply_activation(acts[l + 1], n, fout, act, feature_major)
        else:
            _bias_activation(acts[l + 1], b, n, fout, act, feature_major,
                             kept[l + 1] if kept != NULL and l < n_layers - 1 else NULL)


cdef void _gradients(floating* params, floating* grads, const Py_ssize_t* sizes,
                     int n_layers, int hidden_act, int output_act, int loss,
                     floating** acts, floating** kept, const floating* y, floating* delta,
                     floating* delta_prev, Py_ssize_t n,
                     bint accumulate, const floating* weights,
                     const _CsrRows* csr, bint bf16) noexcept nogil:
    """Backpropagate one batch whose (row-major) forward pass is in acts
    (and kept, as _forward keeps it, or NULL): write dL/dW and dL/db, sums
    over the batch (each sample's times weights[i] unless weights is NULL),
    into grads, or add them to it with accumulate. With csr (not NULL) the
    inputs are its rows instead of acts[0], and the first layer's weight
    gradient is added to csr.gradient_panel, by input, rather than
    written into grads (the caller transposes it there once).
    (Training steps are _train_worker's.)"""
    cdef int l
    cdef Py_ssize_t fin, fout, off
    cdef floating* w
    cdef floating* tmp
    cdef Py_ssize_t k = sizes[n_layers]

    _output_delta(output_act, loss, acts[n_layers], y, delta, n, k, False, weights)
    for l in range(n_layers - 1, -1, -1):
        fin = sizes[l]
        fout = sizes[l + 1]
        off = _weights_offset(sizes, l)
        w = params + off
        if l > 0:
            _delta_gemm(False, w, fin, fout, 0, fin, delta, delta_prev, n, bf16)
            _times_derivative(delta_prev, acts[l], kept[l] if kept != NULL else NULL,
                              n * fin, hidden_act, 1)
        if l == 0 and csr != NULL:
            if bf16:
                # The bias gradient from the float32 deltas, then the deltas
                # rounded in place (this is their last use) for the weight
                # gradient's products, as _weight_gemm's would be.
                _unit_sums(delta, grads + off + fout * fin, n, fout, fout, accumulate, False)
                _round_to_bf16(delta, n * fout)
                _csr_weight_gradient(csr, delta, n, fout)
                break
            if csr.deltas != NULL:
                _keep_deltas(csr, delta, n, fout)
            else:
                _csr_weight_gradient(csr, delta, n, fout)
        else:
            _weight_gemm(False, False, acts[l], delta, fin, fout, 0, fout, n, 1,
                         1 if accumulate else 0, grads + off, bf16)
        _unit_sums(delta, grads + off + fout * fin, n, fout, fout, accumulate, False)
        tmp = delta
        delta = delta_prev
        delta_prev = tmp


cdef struct _CsrRows:
    # The rows of a CSR matrix a call works through, from `first` on, and
    # the first layer's weights and weight gradient by input, (inputs, ld).
    const int64_t* indptr
    const int32_t* indices
    const void* values
    Py_ssize_t first
    const void* panel
    void* gradient_panel
    Py_ssize_t ld
    # The first-layer weight gradient stays in gradient_panel (the caller's
    # FirstLayerPanels), not transposed into grads.
    bint gradient_by_input
    # With deltas (not NULL): each chunk's first-layer deltas are kept there,
    # (rows, ld), and the weight gradient is added up by column at the end,
    # from the CSC lists (column_starts, column_rows, column_values).
    void* deltas
    const int64_t* column_starts
    const int32_t* column_rows
    const void* column_values


cdef void _csr_first_layer(const _CsrRows* csr, Py_ssize_t rows, Py_ssize_t units,
                           floating* z) noexcept nogil:
    """z (rows, units) = the first layer's pre-activations (no bias) of the
    next `rows` rows, from their non-zero inputs (_sparse.h)."""
    cdef Py_ssize_t i, r, begin
    for i in range(rows):
        r = csr.first + i
        begin = csr.indptr[r]
        _sparse_row_ahead(csr.indices + begin, <const floating*>csr.values + begin,
                          csr.indptr[r + 1] - begin, <const floating*>csr.panel, csr.ld,
                          units, z + i * units)


cdef void _csr_weight_gradient(const _CsrRows* csr, const floating* delta, Py_ssize_t rows,
                               Py_ssize_t units) noexcept nogil:
    """gradient_panel[j, :units] += x[i, j] * delta[i, :] over the non-zero
    inputs j of the rows: the first layer's weight gradient, by input, each
    row's deltas held in registers for all its non-zero inputs."""
    cdef Py_ssize_t i, r, begin
    for i in range(rows):
        r = csr.first + i
        begin = csr.indptr[r]
        _sparse_scatter(csr.indices + begin, <const floating*>csr.values + begin,
                        csr.indptr[r + 1] - begin, delta + i * units, units,
                        <floating*>csr.gradient_panel, csr.ld)


cdef void _keep_deltas(const _CsrRows* csr, const floating* delta, Py_ssize_t rows,
                       Py_ssize_t units) noexcept nogil:
    """The next `rows` rows' first-layer deltas (rows, units) into csr.deltas."""
    cdef Py_ssize_t i
    cdef floating* kept = <floating*>csr.deltas + csr.first * csr.ld
    for i in range(rows):
        memcpy(kept + i * csr.ld, delta + i * units, units * sizeof(floating))


cdef void _csr_weight_gradient_by_column(const _CsrRows* csr, const floating* deltas,
                                         Py_ssize_t d, Py_ssize_t units) noexcept nogil:
    """gradient_panel[j, :units] = sum over the rows i in which input j is
    non-zero of x[i, j] * deltas[i, :]: from the CSC lists and the kept
    deltas, each row of the panel written once."""
    cdef Py_ssize_t j, begin
    for j in range(d):
        begin = csr.column_starts[j]
        _sparse_gather(csr.column_rows + begin, <const floating*>csr.column_values + begin,
                       csr.column_starts[j + 1] - begin, deltas, csr.ld, units, <floating*>csr.gradient_panel + j * csr.ld)


# ---------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------

cdef double _loss_and_gradients(floating* params, const Py_ssize_t* sizes, int L,
                                int hidden_act, int output_act, int loss,
                                const floating* x, _CsrRows* csr, Py_ssize_t n,
                                const floating* y, const floating* weights, floating* grads,
                                floating* work, Py_ssize_t chunk,
                                floating* outputs, bint bf16, bint want_loss) noexcept nogil:
    """The summed (weighted) loss of n rows, `chunk` rows at a time; their
    summed gradient into grads unless it is NULL; their outputs into
    outputs (n, sizes[L]) unless it is NULL. The rows are x's (n, sizes[0]),
    or with csr (x NULL) those of a CSR matrix, whose first layer reads
    csr's panel and whose first-layer weight gradient is written into grads
    from csr's gradient panel at the end. bf16: the products' inputs
    rounded to bfloat16 (the caller rounds csr's panel and values). Without
    want_loss the loss is not computed (0 is returned)."""
    cdef Py_ssize_t k = sizes[L], start, rows, d = sizes[0], units = sizes[1]
    cdef bint want_gradients = grads != NULL
    cdef bint keep = want_gradients and _keeps_preactivations(hidden_act)
    cdef _Carve c = _carve(sizes, L, chunk, keep)
    cdef floating* acts[MAX_LAYERS + 1]
    cdef floating* kept_buffers[MAX_LAYERS + 1]
    cdef floating** kept = kept_buffers if keep else NULL
    cdef double total = 0
    cdef const floating* w = NULL
    cdef Py_ssize_t first = csr.first if csr != NULL else 0
    start = 0
    while start < n:
        rows = chunk if n - start > chunk else n - start
        _point_acts(work, sizes, L, rows, x + start * d if x != NULL else NULL, acts)
        if keep:
            _point_acts(work + c.preactivations, sizes, L - 1, rows, NULL, kept)
        if csr == NULL:
            _forward(params, sizes, L, hidden_act, output_act, acts, work + c.logits, rows,
                     False, kept, bf16)
        else:
            csr.first = first + start
            _csr_first_layer(csr, rows, units, acts[1])
            if L == 1:
                _add_bias(acts[1], params + units * d, rows, units, False)
                memcpy(work + c.logits, acts[1], rows * units * sizeof(floating))
                _apply_activation(acts[1], rows, units, output_act, False)
            else:
                _bias_activation(acts[1], params + units * d, rows, units, hidden_act, False,
                                 kept[1] if keep else NULL)
                _forward(params + units * (d + 1), sizes + 1, L - 1, hidden_act, output_act,
                         acts + 1, work + c.logits, rows, False,
                         kept + 1 if keep else NULL, bf16)
        w = weights + start if weights != NULL else NULL
        if want_loss:
            total += _batch_loss(loss, acts[L], work + c.logits, y + start * k, rows, k, False,
                                 w)
        if outputs != NULL:
            memcpy(outputs + start * k, acts[L], rows * k * sizeof(floating))
        if want_gradients:
            _gradients(params, grads, sizes, L, hidden_act, output_act, loss, acts, kept,
                       y + start * k, work + c.deltas, work + c.deltas_2, rows, start > 0, w,
                       csr, bf16)
        start += rows
    if csr != NULL:
        csr.first = first
        if want_gradients and csr.deltas != NULL:
            _csr_weight_gradient_by_column(csr, <const floating*>csr.deltas, d, units)
        if want_gradients and not csr.gradient_by_input:
            _transposed_update(<const floating*>csr.gradient_panel, csr.ld, d, units, 1, 0,
                               grads)
    return total



include "_worker.pxi"


# ---------------------------------------------------------------------------
# The typed description of a run. Python builds these once (mlp/model.py,
# mlp/optimizers.py, mlp/training.py) and the entry points below take them:
# every part has named, typed fields, so that two arguments of one type
# cannot be swapped silently and a misspelt hyperparameter is an error.
# They check the shapes and dtypes that would otherwise crash the kernel;
# the values (labels in range, finite data) are checked by their callers.
# ---------------------------------------------------------------------------

def _contiguous(array, name, dtype, ndim):
    if not isinstance(array, np.ndarray) or array.dtype != dtype or array.ndim != ndim \
            or not array.flags.c_contiguous:
        raise TypeError(f"{name} must be a C-contiguous {ndim}-d {np.dtype(dtype).name} "
                        f"ndarray; got {type(array).__name__} "
                        f"{getattr(array, 'dtype', '')} {getattr(array, 'shape', '')}")
    return array


cdef class Network:
    """A fully connected network as the kernels see it.

    Parameters
    ----------
    params : ndarray of float32 or float64, shape (n_params,)
        Every weight and bias in one flat array, [W_0 (sizes[1], sizes[0]),
        b_0 (sizes[1],), W_1, b_1, ...]. Kept, not copied: the kernels
        update it in place.
    sizes : ndarray of intp, shape (n_layers + 1,)
        Layer widths, inputs first.
    hidden_activation, output_activation : int
        Codes from ACTIVATIONS.
    compute_dtype : {None, "bfloat16"}, optional
        None computes in the parameters' type. "bfloat16" (float32
        parameters only) rounds the inputs of every matrix product (weights
        and activations, and the first layer's weights and inputs on the
        sparse path) to bfloat16 and sums in float32: parameters, optimizer
        state, losses and elementwise maths stay float32 (COMPUTE_DTYPES).
    """
    cdef readonly object params
    cdef readonly object sizes
    cdef readonly int hidden_activation
    cdef readonly int output_activation
    cdef readonly bint is_double
    cdef readonly object compute_dtype
    cdef readonly bint bf16

    def __init__(self, params, sizes, int hidden_activation, int output_activation, *,
                 compute_dtype=None):
        self.sizes = _contiguous(sizes, "sizes", np.intp, 1)
        if not 2 <= len(sizes) <= MAX_LAYERS + 1 or np.any(sizes < 1):
            raise ValueError(f"sizes must hold 2 to {MAX_LAYERS + 1} positive widths; "
                             f"got {sizes.tolist()}")
        self.is_double = getattr(params, "dtype", None) == np.float64
        self.params = _contiguous(params, "params", np.float64 if self.is_double else np.float32, 1)
        expected = int(np.sum(sizes[1:] * (sizes[:-1] + 1)))
        if len(params) != expected:
            raise ValueError(f"params must hold {expected} values for sizes {sizes.tolist()}; "
                             f"got {len(params)}")
        self.hidden_activation = hidden_activation
        self.output_activation = output_activation
        if compute_dtype is not None and compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"compute_dtype must be None or one of {COMPUTE_DTYPES}; "
                             f"got {compute_dtype!r}")
        if compute_dtype is not None and self.is_double:
            raise ValueError("compute_dtype='bfloat16' needs float32 parameters; a float64 "
                             "model computes in float64 (use dtype=float32 for bfloat16)")
        self.compute_dtype = compute_dtype
        self.bf16 = compute_dtype == "bfloat16"

    @property
    def n_layers(self):
        return len(self.sizes) - 1


cdef class UpdateRule:
    """An optimizer's update as the kernel runs it (mlp/_updates.pxi).

    Built by the optimizers (mlp/optimizers.py, ``kernel_rule()``); every
    hyperparameter is a keyword, so none can be misspelt or swapped.

    Parameters
    ----------
    code : int
        From UPDATE_RULES.
    weight_decay : float
        On weights only, never on biases.
    momentum, nesterov : float, bool
        SGD with momentum.
    beta1, beta2, eps, decoupled, eps_hat : float, float, float, bool, bool
        Adam; decoupled is AdamW's weight decay, eps_hat adds eps before
        sqrt(v)'s bias correction. eps is RMSprop's and Adagrad's too.
    alpha, centered : float, bool
        RMSprop's smoothing constant, and whether it is centered (momentum
        is RMSprop's too).
    lr_decay : float
        Adagrad's.
    """
    cdef _Optimizer rule

    def __init__(self, int code, *, double weight_decay=0.0, double momentum=0.0,
                 bint nesterov=False, double beta1=0.0, double beta2=0.0, double eps=0.0,
                 bint decoupled=False, bint eps_hat=False, double alpha=0.0,
                 bint centered=False, double lr_decay=0.0):
        if code not in UPDATE_RULES.values():
            raise ValueError(f"code must be one of UPDATE_RULES' {sorted(UPDATE_RULES.values())}; "
                             f"got {code}")
        memset(&self.rule, 0, sizeof(self.rule))
        self.rule.code = code
        self.rule.weight_decay = weight_decay
        self.rule.momentum = momentum
        self.rule.nesterov = nesterov
        self.rule.beta1 = beta1
        self.rule.beta2 = beta2
        self.rule.eps = eps
        self.rule.decoupled = decoupled
        self.rule.eps_hat = eps_hat
        self.rule.alpha = alpha
        self.rule.centered = centered
        self.rule.lr_decay = lr_decay
        self.rule.n_state = _n_state_buffers(&self.rule)

    @property
    def code(self):
        return self.rule.code

    @property
    def n_state_buffers(self):
        """How many arrays laid out like the parameters the rule keeps."""
        return self.rule.n_state

    @property
    def needs_gradients(self):
        """Plain SGD folds the gradient into the weight GEMM; the others need it."""
        return self.rule.code != OPT_SGD

    def __repr__(self):
        r = self.rule
        return (f"UpdateRule({r.code}, weight_decay={r.weight_decay}, momentum={r.momentum}, "
                f"nesterov={bool(r.nesterov)}, beta1={r.beta1}, beta2={r.beta2}, eps={r.eps}, "
                f"decoupled={bool(r.decoupled)}, eps_hat={bool(r.eps_hat)}, alpha={r.alpha}, "
                f"centered={bool(r.centered)}, lr_decay={r.lr_decay})")


cdef class CsrMatrix:
    """Training inputs in compressed sparse row form, as TrainingData's x.

    Row r's non-zero inputs are indices[indptr[r]:indptr[r + 1]], in
    increasing order without repeats (the results then match those of the
    dense matrix bit for bit), and data at the same places.

    Parameters
    ----------
    data : ndarray of float32 or float64, shape (nnz,)
    indices : ndarray of int32, shape (nnz,)
        Column of each entry, in [0, n_columns).
    indptr : ndarray of int64, shape (n + 1,)
        Non-decreasing, from 0 to nnz.
    n_columns : int
    """
    cdef readonly object data, indices, indptr, shape
    cdef readonly object column_starts, column_rows, column_values

    def __init__(self, data, indices, indptr, Py_ssize_t n_columns):
        self.data = _contiguous(data, "data", data.dtype if getattr(data, "dtype", None)
                                in (np.float32, np.float64) else np.float32, 1)
        self.indices = _contiguous(indices, "indices", np.int32, 1)
        self.indptr = _contiguous(indptr, "indptr", np.int64, 1)
        nnz = len(self.data)
        # What would make the gather read or write out of bounds.
        if len(self.indptr) < 1 or self.indptr[0] != 0 or self.indptr[-1] != nnz \
                or len(self.indices) != nnz or np.any(np.diff(self.indptr) < 0):
            raise ValueError("indptr must rise from 0 to len(data) == len(indices)")
        if n_columns < 0 or nnz > 0 and (self.indices.min() < 0
                                         or self.indices.max() >= n_columns):
            raise ValueError(f"indices must lie in [0, n_columns = {n_columns})")
        self.shape = (len(self.indptr) - 1, n_columns)

    @property
    def dtype(self):
        return self.data.dtype

    def index_columns(self):
        """List the non-zeros by column too: column j's are column_rows[a:b]
        (their rows, increasing) and column_values[a:b], a, b =
        column_starts[j:j + 1]. The first layer's weight gradient by input
        reads them (rows_loss_and_gradients with FirstLayerPanels that hold
        deltas). Returns self."""
        n, d = self.shape
        starts = np.zeros(d + 1, np.int64)
        np.cumsum(np.bincount(self.indices, minlength=d), out=starts[1:])
        column_rows = np.empty(len(self.indices), np.int32)
        column_values = np.empty_like(self.data)
        if self.data.dtype == np.float64:
            _list_by_column[double](self.data, self.indices, self.indptr, starts, column_rows,
                                    column_values)
        else:
            _list_by_column[float](self.data, self.indices, self.indptr, starts, column_rows,
                                   column_values)
        self.column_rows, self.column_values, self.column_starts = (column_rows, column_values,
                                                                    starts)
        return self


cdef void _list_by_column(const floating[::1] data, const int32_t[::1] indices,
                          const int64_t[::1] indptr, const int64_t[::1] starts,
                          int32_t[::1] column_rows, floating[::1] column_values) noexcept:
    """A counting sort of the entries by column (starts: where each column's
    begin), rows in increasing order within each."""
    cdef Py_ssize_t r, e, at
    cdef int64_t[::1] next_at = np.array(starts[:len(starts) - 1], dtype=np.int64)
    with nogil:
        for r in range(indptr.shape[0] - 1):
            for e in range(indptr[r], indptr[r + 1]):
                at = next_at[indices[e]]
                next_at[indices[e]] = at + 1
                column_rows[at] = <int32_t>r
                column_values[at] = data[e]


cdef class FirstLayerPanels:
    """The first layer's weights and weight gradient kept by input, for
    rows_loss_and_gradients on CsrMatrix rows: several calls (a worker's
    block each) read one weights panel, which their caller fills once (L-BFGS,
    mlp/_lbfgs.py, from its own layout, without a transpose), and each call
    leaves its gradient in its own panel rather than in grads.

    Parameters
    ----------
    network : Network
        The panels' shape: (sizes[0], sizes[1] rounded up to a cache line)
        of the parameters' type.
    weights : ndarray, optional
        Another FirstLayerPanels' weights, to share; by default new zeros.
    rows : int, optional
        With rows > 0, room for the first layer's deltas of that many rows:
        calls on a CsrMatrix of at most that many rows whose columns are
        indexed (CsrMatrix.index_columns) then add up the weight gradient
        input by input, from the columns, once their deltas are all known
        (each gradient row written once), rather than row by row.

    Attributes
    ----------
    weights : ndarray, shape (n_inputs, ld)
        weights[j, u] is the weight from input j to unit u; the columns from
        sizes[1] on are zeros, and must stay so.
    gradient : ndarray, shape (n_inputs, ld)
        The first layer's weight gradient of the last call, by input.
    deltas : ndarray, shape (rows, ld), or None
    units : int
        sizes[1], the columns of the panels in use.
    """
    cdef readonly object weights, gradient, deltas
    cdef readonly Py_ssize_t units

    def __init__(self, Network network, weights=None, Py_ssize_t rows=0):
        dtype = np.float64 if network.is_double else np.float32
        line = 64 // np.dtype(dtype).itemsize
        shape = (max(int(network.sizes[0]), 1), -(-int(network.sizes[1]) // line) * line)
        if weights is None:
            weights = np.zeros(shape, dtype)
        elif not isinstance(weights, np.ndarray) or weights.shape != shape \
                or weights.dtype != dtype or not weights.flags.c_contiguous:
            raise ValueError(f"weights must be a C-contiguous {np.dtype(dtype).name} array of "
                             f"shape {shape} (FirstLayerPanels(network).weights)")
        self.weights = weights
        self.units = network.sizes[1]
        self.gradient = np.zeros(shape, dtype)
        # Zeros: the padding columns are read (whole vectors) and never written.
        self.deltas = np.zeros((rows, shape[1]), dtype) if rows > 0 else None


def first_layer_gradient(list panels, const double[::1] x, double alpha, double weight_sum,
                         double[::1] out):
    """The first layer's part of L-BFGS's gradient, in scikit-learn's layout.

    out[j * units + u] = (sum over panels of gradient[j, u] + alpha * w) /
    weight_sum, w = x[j * units + u] rounded to the panels' type, each
    operation rounded in float64 in that order (the panels added in list
    order); one pass over the panels, where numpy took seven.

    Parameters
    ----------
    panels : list of FirstLayerPanels
        Of one network, at least one.
    x : ndarray of float64, shape (n_inputs * units,)
        The first layer's coefs_, (n_inputs, units) row-major.
    alpha, weight_sum : float
    out : ndarray of float64, shape (n_inputs * units,)
        Written.

    Returns
    -------
    float
        The sum of the squares of the rounded weights.
    """
    if not panels or any(not isinstance(p, FirstLayerPanels) for p in panels):
        raise TypeError("panels must be a non-empty list of FirstLayerPanels")
    first = panels[0]
    shape = first.gradient.shape
    if any(p.gradient.shape != shape or p.gradient.dtype != first.gradient.dtype
           or p.units != first.units for p in panels):
        raise ValueError("panels must all be of one network")
    n = (shape[0] if first.units else 0) * first.units
    if x.shape[0] != n or out.shape[0] != n:
        raise ValueError(f"x and out must hold n_inputs * units = {n} values")
    if first.gradient.dtype == np.float64:
        return _first_layer_gradient[double](panels, first.gradient, x, alpha, weight_sum, out)
    return _first_layer_gradient[float](panels, first.gradient, x, alpha, weight_sum, out)


cdef double _first_layer_gradient(list panels, floating[:, ::1] like, const double[::1] x,
                                  double alpha, double weight_sum, double[::1] out) except? -1:
    cdef Py_ssize_t n_panels = len(panels), b, j, u, k
    cdef Py_ssize_t d = like.shape[0], ld = like.shape[1]
    cdef Py_ssize_t units = (<FirstLayerPanels>panels[0]).units
    cdef floating[:, ::1] view
    cdef double squares = 0, total, w
    cdef const floating** grads
    if x.shape[0] == 0:
        return 0.0
    grads = <const floating**>malloc(n_panels * sizeof(floating*))
    if grads == NULL:
        raise MemoryError()
    # The panels stay referenced by the list for the whole call.
    for b in range(n_panels):
        view = (<FirstLayerPanels>panels[b]).gradient
        grads[b] = &view[0, 0]
    with nogil:
        for j in range(d):
            for u in range(units):
                k = j * units + u
                total = grads[0][j * ld + u]
                for b in range(1, n_panels):
                    total = total + grads[b][j * ld + u]
                w = <floating>x[k]
                squares = squares + w * w
                out[k] = (total + alpha * w) / weight_sum
    free(grads)
    return squares


cdef class TrainingData:
    """What a training run reads, and how its batches are laid out.

    Parameters
    ----------
    x : ndarray of float32 or float64, shape (n, n_inputs); or CsrMatrix
        Converted to the model's type as rows are gathered. A CsrMatrix is
        never made dense as a whole: its rows are listed for the sparse
        first layer or, where that does not apply (feature_major, batches
        above SPARSE_INPUT_MAX_BATCH), made dense one batch at a time.
    labels : ndarray of int64, shape (n,), optional
        Class labels in [0, n_outputs), trained as one-hot targets; or
    targets : ndarray of the model's float type, shape (n * n_outputs,), optional
        Rows of float targets, flattened.
    sample_weights : ndarray of the model's float type, shape (n,), optional
        Scales each row's loss and gradient.
    batch_size : int
        Rows per step (the last batch of a call may be shorter).
    feature_major : bool
        Store each batch transposed, (features, batch): faster for small batches.
    sparse_input : bool, optional
        Compute the first layer from the non-zero inputs (True), with GEMMs
        (False), or as x's first rows suggest (None); see train_steps.
    """
    cdef readonly object x, labels, targets, sample_weights, sparse_input
    cdef readonly Py_ssize_t batch_size
    cdef readonly bint feature_major

    def __init__(self, x, labels=None, targets=None, sample_weights=None, *,
                 Py_ssize_t batch_size, bint feature_major, sparse_input=None):
        self.x = x if isinstance(x, CsrMatrix) else _contiguous(
            x, "x", x.dtype if getattr(x, "dtype", None) in (np.float32, np.float64)
            else np.float32, 2)
        if (labels is None) == (targets is None):
            raise TypeError("TrainingData needs labels or targets, not both")
        self.labels = (np.empty(0, np.int64) if labels is None
                       else _contiguous(labels, "labels", np.int64, 1))
        self.targets = None if targets is None else _contiguous(targets, "targets", targets.dtype, 1)
        self.sample_weights = (None if sample_weights is None
                               else _contiguous(sample_weights, "sample_weights",
                                                sample_weights.dtype, 1))
        n = self.x.shape[0]
        if labels is not None and len(labels) != n or \
                sample_weights is not None and len(sample_weights) != n:
            raise ValueError("labels and sample_weights must have a value for each row of x")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1; got {batch_size}")
        self.batch_size = batch_size
        self.feature_major = feature_major
        self.sparse_input = sparse_input


cdef class Dropout:
    """Inverted dropout during training: hidden units dropped with
    probability `hidden`, inputs with `inputs`, the masks keyed by `seed`,
    the step and the unit (never by the worker), so that they do not
    depend on the number of threads."""
    cdef readonly double hidden, inputs
    cdef readonly uint64_t seed

    def __init__(self, double hidden=0.0, double inputs=0.0, uint64_t seed=0):
        if not (0 <= hidden < 1 and 0 <= inputs < 1):
            raise ValueError(f"dropout probabilities must be in [0, 1); got {hidden}, {inputs}")
        self.hidden = hidden
        self.inputs = inputs
        self.seed = seed


cdef class TrainingRun:
    """Everything a run of train_steps needs but the steps themselves.

    Parameters
    ----------
    network : Network
        Updated in place.
    data : TrainingData
    loss : int
        From LOSSES.
    rule : UpdateRule
    state : tuple of ndarray, each like network.params
        The rule's state (rule.n_state_buffers arrays, in the order of the
        optimizer's state_buffers: velocity, Adam's first and second
        moments, ...), carried from call to call.
    dropout : Dropout, optional
    augment : DistortionPlan, optional
        Distort every gathered row (square images in [0, 1], float32 x);
        each distortion drawn from `augment_seed` and the row's draw count.
    augment_seed : int
        Keys the distortions (the dropout masks have their own key).
    max_norm : float
        > 0: cap each unit's incoming weight norm after every step.
    n_workers : int
        Threads sharing each step (BLAS must be single-threaded meanwhile);
        the result depends on it only through rounding.
    work : ndarray of the network's float type, optional
        Scratch of at least workspace_size(sizes, batch_size) values, for a
        caller that keeps one; allocated otherwise.
    """
    cdef readonly Network network
    cdef readonly TrainingData data
    cdef readonly int loss
    cdef readonly UpdateRule rule
    cdef readonly tuple state
    cdef readonly Dropout dropout
    cdef readonly DistortionPlan augment
    cdef readonly uint64_t augment_seed
    cdef readonly double max_norm
    cdef readonly int n_workers
    cdef object gradients, work

    def __init__(self, Network network, TrainingData data, *, int loss, UpdateRule rule,
                 tuple state=(), Dropout dropout=None, DistortionPlan augment=None,
                 uint64_t augment_seed=0, double max_norm=0.0, int n_workers=1, work=None):
        dtype = network.params.dtype
        if len(state) != rule.n_state_buffers:
            raise ValueError(f"the rule keeps {rule.n_state_buffers} state buffers; "
                             f"got {len(state)}")
        for i, buffer in enumerate(state):
            _contiguous(buffer, f"state[{i}]", dtype, 1)
            if len(buffer) != len(network.params) or not buffer.flags.writeable:
                raise ValueError(f"state[{i}] must be a writeable array laid out like params")
        for name in ("targets", "sample_weights"):
            array = getattr(data, name)
            if array is not None and array.dtype != dtype:
                raise TypeError(f"data.{name} must be {dtype.name}, the network's type")
        if data.targets is not None and len(data.targets) != data.x.shape[0] * network.sizes[-1]:
            raise ValueError("data.targets must hold n_outputs values for each row of x")
        if data.x.shape[1] != network.sizes[0]:
            raise ValueError(f"x must have {network.sizes[0]} columns; got {data.x.shape[1]}")
        if augment is not None and isinstance(data.x, CsrMatrix):
            raise ValueError("augment needs dense images; x is a CsrMatrix")
        if augment is not None and (data.x.dtype != np.float32
                                    or augment.plan.side ** 2 != network.sizes[0]):
            raise ValueError("augment needs float32 square images of the network's input size")
        self.network = network
        self.data = data
        self.loss = loss
        self.rule = rule
        self.state = state
        self.dropout = Dropout() if dropout is None else dropout
        self.augment = augment
        self.augment_seed = augment_seed
        self.max_norm = max_norm
        self.n_workers = max(1, min(n_workers, MAX_WORKERS))
        self.gradients = np.empty(len(network.params) if rule.needs_gradients else 0, dtype)
        size = _carve(<Py_ssize_t*><uintptr_t>network.sizes.ctypes.data, network.n_layers,
                      data.batch_size, _keeps_preactivations(network.hidden_activation)).total
        if work is None:
            work = np.empty(size, dtype)
        elif _contiguous(work, "work", dtype, 1).shape[0] < size:
            raise ValueError(f"work must hold workspace_size(sizes, batch_size) = {size} values")
        self.work = work




# Inference on blocks of up to this many rows stores the activations
# feature-major, (units, rows): BLAS then packs W untransposed, which for
# small blocks is most of a product's cost (OpenBLAS SkylakeX sgemm, one
# thread, 784x300 layer: 8 rows 76 us against 153 us row-major, 64 rows
# 307 against 403 us).
cdef enum:
    _FORWARD_FEATURE_MAJOR_MAX_ROWS = 128
FORWARD_FEATURE_MAJOR_MAX_ROWS = _FORWARD_FEATURE_MAJOR_MAX_ROWS
# Several workers split the rows when each gets at least this many, and
# the units of each layer of smaller blocks. (With the thread pool of
# _parallel.h, 2 workers on 1 row took 21 us a call, one worker 29 us.)
FORWARD_MIN_ROWS_PER_WORKER = 64


cdef struct _ForwardRun:
    bint is_double
    bint bf16                 # the products' inputs rounded to bfloat16 (Network.bf16)
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
    bint split_units          # the workers share each layer's units, not the rows
    Py_ssize_t fused_max_rows # float32 blocks of at most this many rows on _dense.h (infer), not BLAS
    bint claim_rows           # the workers claim blocks of `block` rows (infer), not a share each
    bint claim_units          # or blocks of `block` of the first layer's units (infer, a few rows)
    Py_ssize_t block
    Py_ssize_t next_row       # the first row (unit) no worker has claimed yet (mlp_claim)
    Py_ssize_t units_done     # the first layer's units computed so far (claim_units)
    mlp_barrier barrier       # between layers, when they share the units
    bint check_finite         # look for NaN/inf in x, each worker in the rows it reads
    char nonfinite[MAX_WORKERS]  # worker w found one
    # The sparse-input path (_forward_sparse_input), when sparse_input:
    bint sparse_input
    void* panels              # per worker: the first layer's weights by input, (inputs, panel_ld)
    Py_ssize_t panel_ld
    Py_ssize_t panel_size     # elements from one worker's panel to the next's
    void* first_layer         # per worker: a block's first-layer outputs, (block, sizes[1])
    int32_t* nonzero_index    # per worker: a block's non-zero inputs, row i's at
    void* nonzero_value       # i * inputs, and their values, (block * inputs,)
    void* upper_acts          # per worker: activations of layers 2..L for its rows
    Py_ssize_t upper_acts_per_worker
    # where those are in the workspace (_carve_sparse_input), in elements
    Py_ssize_t first_layer_at, nonzero_value_at, upper_acts_at, nonzero_index_at
    Py_ssize_t sparse_work_size


cdef extern from "_parallel.h" nogil:
    int mlp_parallel_run_optional(mlp_task fn, void* ctx, int n_threads)
    Py_ssize_t mlp_claim(Py_ssize_t* counter, Py_ssize_t count)
    void mlp_count_done(Py_ssize_t* counter, Py_ssize_t count)
    void mlp_wait_count(Py_ssize_t* counter, Py_ssize_t target)


cdef extern from "_dense.h" nogil:
    void mlp_dense_init()
    int mlp_dense_path()
    void mlp_dense_set_path(int path)
    int mlp_dense_path_supported(int path)
    int MLP_DENSE_BLAS, MLP_DENSE_PORTABLE, MLP_DENSE_AVX512F, MLP_DENSE_N_PATHS
    const char* mlp_dense_path_names[]
    void mlp_dense_layer(const float* x, Py_ssize_t ldx, Py_ssize_t rows, Py_ssize_t fin,
                         const float* w, const float* b, Py_ssize_t u0, Py_ssize_t u1, float* z,
                         Py_ssize_t ldz, int relu)

# Decide now (reading MLP_DENSE_PATH), not in the first worker thread.
mlp_dense_init()
_DENSE_PATH_NAMES = {p: mlp_dense_path_names[p].decode() for p in range(MLP_DENSE_N_PATHS)}
_DENSE_PATH_CODES = {name: p for p, name in _DENSE_PATH_NAMES.items()}
# infer() runs blocks of up to this many rows on _dense.h's AVX-512 loops,
# larger ones on sgemm, which is faster there: on 784-300-100-10, one
# thread, Zen 4, consecutive blocks of fresh rows (as a user's calls read
# them), the loops were 1.2-1.7x faster than sgemm at 6-12 rows, 0.9x at 4
# and 0.75-0.84x from 16 rows (bench/README.md). The portable path is slower than
# sgemm even at one row (0.6x): it runs only when MLP_DENSE_PATH or a test
# asks for it, and then on every block.
cdef Py_ssize_t _DENSE_AVX512_MAX_ROWS = 12
cdef Py_ssize_t _DENSE_PORTABLE_MAX_ROWS = 1 << 30


def inference_path():
    """The path infer() runs a float32 network's dense layers on: "avx512"
    or "portable" (_dense.h's own loops, bias and activation fused in), or
    "blas" (sgemm, as forward). "avx512" where the CPU has it, else "blas",
    unless the environment variable MLP_DENSE_PATH (read once, at import)
    names another one it runs."""
    return _DENSE_PATH_NAMES[mlp_dense_path()]


def inference_paths():
    """The names of the paths inference_path() may be on this CPU."""
    return tuple(name for p, name in _DENSE_PATH_NAMES.items() if mlp_dense_path_supported(p))


def _set_inference_path(path):
    """Test hook: run infer() on path (one of inference_paths()) from now
    on, in this process; returns the previous path's name. Not while
    another thread is inside infer()."""
    if path not in _DENSE_PATH_CODES or not mlp_dense_path_supported(_DENSE_PATH_CODES[path]):
        raise ValueError(f"path must be one of {inference_paths()}, got {path!r}")
    previous = inference_path()
    mlp_dense_set_path(_DENSE_PATH_CODES[path])
    return previous


cdef inline void _dense_part(const float* a, Py_ssize_t rows, Py_ssize_t fan_in,
                             Py_ssize_t fan_out, const float* w, Py_ssize_t u0, Py_ssize_t u1,
                             float* z, int act) noexcept nogil:
    """z[:, u0:u1] = act(a @ W[u0:u1].T + b[u0:u1]), a (rows, fan_in), z
    (rows, fan_out), both row-major; W then b as in the parameters. ReLU
    and identity are applied as the sums are stored; others afterwards, on
    z's columns u0:u1 (a softmax needs all of a row's units: u0 = 0 and
    u1 = fan_out)."""
    cdef Py_ssize_t i
    mlp_dense_layer(a, fan_in, rows, fan_in, w, w + fan_out * fan_in, u0, u1, z, fan_out,
                    act == ACT_RELU)
    if act == ACT_RELU or act == ACT_IDENTITY:
        return
    if u0 == 0 and u1 == fan_out:
        _apply_activation(z, rows, fan_out, act, False)
    else:
        for i in range(rows):
            _apply_activation(z + i * fan_out + u0, 1, u1 - u0, act, False)


cdef void _infer_layers(float* params, const Py_ssize_t* sizes, int n_layers, int hidden_act,
                        int output_act, float** acts, float* out,
                        Py_ssize_t rows) noexcept nogil:
    """_forward for inference on _dense.h's fused layers: acts[0] holds the
    input (rows, sizes[0]), acts[1..L-1] receive the hidden layers
    (row-major), out (rows, sizes[L]) the outputs."""
    cdef int l
    cdef Py_ssize_t off = 0
    for l in range(n_layers):
        _dense_part(acts[l], rows, sizes[l], sizes[l + 1], params + off, 0, sizes[l + 1],
                    out if l == n_layers - 1 else acts[l + 1],
                    hidden_act if l < n_layers - 1 else output_act)
        off += sizes[l + 1] * (sizes[l] + 1)


cdef void _infer_units_split(float* params, const float* x, float* out, _ForwardRun* run,
                             int tid, int n_workers) noexcept nogil:
    """_forward_units_split on _dense.h's fused layers, row-major: each
    worker computes its share of every hidden layer's units, worker 0 the
    output layer."""
    cdef int L = run.n_layers, l, sense = 0
    cdef Py_ssize_t n = run.n, fan_in, fan_out, u0, u1
    cdef float* acts[MAX_LAYERS + 1]
    if run.check_finite and tid == 0 and not _all_finite(x, n * run.sizes[0]):
        run.nonfinite[tid] = 1
    _point_acts(<float*>run.work, run.sizes, L, n, x, acts)
    for l in range(L):
        fan_in = run.sizes[l]
        fan_out = run.sizes[l + 1]
        if l < L - 1:
            _share(fan_out, tid, n_workers, 1, &u0, &u1)
            if u1 > u0:
                _dense_part(acts[l], n, fan_in, fan_out, params + _weights_offset(run.sizes, l),
                            u0, u1, acts[l + 1], run.hidden_act)
            mlp_barrier_wait(&run.barrier, &sense)
        elif tid == 0:
            _dense_part(acts[l], n, fan_in, fan_out, params + _weights_offset(run.sizes, l),
                        0, fan_out, out, run.output_act)


cdef void _forward_units_split(floating* params, const floating* x, floating* out,
                               _ForwardRun* run, int tid, int n_workers) noexcept nogil:
    """All rows at once (run.n <= the feature-major limit), each worker
    computing its share of every hidden layer's units, the output layer
    (whose softmax needs all of a sample's units) worker 0's alone. Each
    worker then packs only its rows of W, which is what a small block
    costs; the price is a barrier per layer."""
    cdef int L = run.n_layers, l, sense = 0
    cdef Py_ssize_t n = run.n, k = run.sizes[L], fan_in, fan_out, u0, u1, i, j
    cdef floating* acts[MAX_LAYERS + 1]
    cdef floating* w
    if run.check_finite and tid == 0 and not _all_finite(x, n * run.sizes[0]):
        run.nonfinite[tid] = 1
    _point_acts(<floating*>run.work, run.sizes, L, n, x, acts)
    for l in range(L):
        fan_in = run.sizes[l]
        fan_out = run.sizes[l + 1]
        w = params + _weights_offset(run.sizes, l)
        if l < L - 1:
            _share(fan_out, tid, n_workers, 1, &u0, &u1)
        else:
            u0 = 0
            u1 = fan_out if tid == 0 else 0
        if u1 > u0:
            _layer_gemm(True, l > 0, w, fan_in, fan_out, u0, u1, acts[l], acts[l + 1], n,
                        run.bf16)
            if l < L - 1:
                _bias_activation_part(acts[l + 1], w + fan_out * fan_in, n, fan_out, u0, u1,
                                      run.hidden_act, True, NULL)
            else:
                _bias_activation(acts[l + 1], w + fan_out * fan_in, n, fan_out,
                                 run.output_act, True, NULL)
        if l < L - 1:
            mlp_barrier_wait(&run.barrier, &sense)
    if tid == 0:
        for i in range(n):
            for j in range(k):
                out[i * k + j] = acts[L][j * n + i]


# Inference skips the zero inputs of the first layer (_sparse.h) when at
# least this share of the inputs is zero (in the first rows of the call) and
# the call has at least SPARSE_INPUT_MIN_ROWS rows: below that the transpose
# of the first layer's weights costs more than the zeros save. Both measured
# against the dense path, interleaved in one process (bench/README.md).
cdef double _SPARSE_INPUT_MIN_ZEROS = 0.75
SPARSE_INPUT_MIN_ZEROS = _SPARSE_INPUT_MIN_ZEROS
SPARSE_INPUT_MIN_ROWS = 24
# The first rows of a call that decide whether it takes the sparse path.
cdef enum:
    SPARSE_INPUT_SAMPLE_ROWS = 32


cdef void _carve_sparse_input(const Py_ssize_t* sizes, int n_layers, int n_workers,
                              bint is_float, _ForwardRun* run) noexcept nogil:
    """The sparse path's scratch, in elements of the model's dtype: a panel
    per worker (and a cache line to align them), then per worker a block's
    first-layer outputs, a block's non-zero values, a block's activations
    above the first layer and a block's non-zero indices (int32)."""
    cdef Py_ssize_t d = sizes[0], element = 4 if is_float else 8, upper_width = 0
    cdef Py_ssize_t line = 64 // element
    cdef int l
    for l in range(2, n_layers + 1):
        upper_width += sizes[l]
    # Rows of whole cache lines (so whole vectors too), the first panel on a
    # line boundary (_point_sparse_input), so every panel is on one.
    run.panel_ld = (sizes[1] + line - 1) // line * line
    run.panel_size = d * run.panel_ld
    run.upper_acts_per_worker = SPARSE_INPUT_BLOCK_ROWS * upper_width
    run.first_layer_at = line + n_workers * run.panel_size
    run.nonzero_value_at = run.first_layer_at + n_workers * SPARSE_INPUT_BLOCK_ROWS * sizes[1]
    run.upper_acts_at = run.nonzero_value_at + n_workers * SPARSE_INPUT_BLOCK_ROWS * d
    run.nonzero_index_at = run.upper_acts_at + n_workers * run.upper_acts_per_worker
    run.sparse_work_size = run.nonzero_index_at + (
        n_workers * SPARSE_INPUT_BLOCK_ROWS * d * 4 + element - 1) // element


cdef void _point_sparse_input(floating* work, _ForwardRun* run) noexcept nogil:
    run.panels = <floating*>((<uintptr_t>work + 63) // 64 * 64)
    run.first_layer = work + run.first_layer_at
    run.nonzero_value = work + run.nonzero_value_at
    run.upper_acts = work + run.upper_acts_at
    run.nonzero_index = <int32_t*>(work + run.nonzero_index_at)


def sparse_input_workspace_size(const Py_ssize_t[::1] sizes, int n_workers, bint is_float):
    """Elements of the model's dtype that forward's sparse-input path needs
    in its workspace for n_workers."""
    cdef _ForwardRun run
    _carve_sparse_input(&sizes[0], <int>sizes.shape[0] - 1, min(n_workers, MAX_WORKERS),
                        is_float, &run)
    return run.sparse_work_size


cdef void _forward_sparse_input(floating* params, const floating* x, floating* out,
                                _ForwardRun* run, int tid, int n_workers) noexcept nogil:
    """Inference on inputs that are mostly zeros, the first layer through
    _sparse.h. Each worker takes its share of the rows: it transposes the
    first layer's weights into its own panel, then, SPARSE_INPUT_BLOCK_ROWS
    rows at a time, lists each row's non-zero inputs, computes the first
    layer from them (_sparse_block) and the other layers as _forward_worker
    does.

    A panel each, rather than one shared panel of which each worker writes
    its share of the units: twice the transposing, but no barrier, and no
    worker reads the lines another core wrote. With the shared panel, 30
    rows on 2 workers took 120 us a call in some runs and 260 us in others
    (the host's placement of the two cores, presumably); with a panel each,
    116 us."""
    cdef int L = run.n_layers
    cdef Py_ssize_t d = run.sizes[0], hidden = run.sizes[1], k = run.sizes[L]
    cdef Py_ssize_t ld = run.panel_ld, start, stop, rows, i
    cdef Py_ssize_t counts[SPARSE_INPUT_BLOCK_ROWS]
    cdef Py_ssize_t cursor[SPARSE_INPUT_BLOCK_ROWS]
    cdef floating* panel = <floating*>run.panels + tid * run.panel_size
    cdef int32_t* nonzero_inputs = run.nonzero_index + tid * SPARSE_INPUT_BLOCK_ROWS * d
    cdef floating* nonzero_values = (<floating*>run.nonzero_value
                                     + tid * SPARSE_INPUT_BLOCK_ROWS * d)
    cdef floating* first = <floating*>run.first_layer + tid * SPARSE_INPUT_BLOCK_ROWS * hidden
    cdef floating* upper = <floating*>run.upper_acts + tid * run.upper_acts_per_worker
    cdef floating* acts[MAX_LAYERS + 1]
    cdef bint feature_major
    cdef int nonfinite = 0
    if run.claim_rows:
        stop = run.n
        start = mlp_claim(&run.next_row, SPARSE_INPUT_BLOCK_ROWS)
        if start >= stop:
            return
    else:
        _share(run.n, tid, n_workers, 1, &start, &stop)
        if start == stop:
            return
    _transpose_units(params, d, 0, hidden, panel, ld)
    if run.bf16:
        # The first layer's product in bfloat16, as _layer_gemm's would be:
        # its weights rounded once here, each row's inputs as they are listed.
        _round_to_bf16(panel, d * ld)
    while start < stop:
        rows = min(<Py_ssize_t>SPARSE_INPUT_BLOCK_ROWS, stop - start)
        for i in range(rows):
            counts[i] = _nonzeros(x + (start + i) * d, d, nonzero_inputs + i * d,
                                  nonzero_values + i * d, &nonfinite)
            if run.bf16:
                _round_to_bf16(nonzero_values + i * d, counts[i])
        _sparse_block(nonzero_inputs, nonzero_values, d, counts, rows, d, panel, ld, hidden,
                      first, hidden, cursor)
        _bias_activation(first, params + hidden * d, rows, hidden, run.hidden_act, False, NULL)
        _point_acts(upper, run.sizes + 1, L - 1, rows, first, acts)
        if floating is float and not run.bf16 and rows <= run.fused_max_rows:
            # (_infer_layers' own loops are float32; bfloat16 products go
            # through _forward's _gemm_as.)
            _infer_layers(params + hidden * (d + 1), run.sizes + 1, L - 1, run.hidden_act,
                          run.output_act, acts, out + start * k, rows)
        else:
            feature_major = rows <= _FORWARD_FEATURE_MAJOR_MAX_ROWS
            _forward(params + hidden * (d + 1), run.sizes + 1, L - 1, run.hidden_act,
                     run.output_act, acts, NULL, rows, feature_major, NULL, run.bf16)
            _copy_out(acts[L - 1], out + start * k, rows, k, feature_major)
        start = mlp_claim(&run.next_row, SPARSE_INPUT_BLOCK_ROWS) if run.claim_rows else start + rows
    run.nonfinite[tid] = nonfinite


cdef inline void _copy_out(const floating* last, floating* out, Py_ssize_t rows,
                           Py_ssize_t k, bint feature_major) noexcept nogil:
    """The output layer's activations of a block of rows into out (rows, k)."""
    cdef Py_ssize_t i, j
    if feature_major:
        for i in range(rows):
            for j in range(k):
                out[i * k + j] = last[j * rows + i]
    else:
        memcpy(out, last, rows * k * sizeof(floating))


def chooses_sparse_input(const floating[:, ::1] x, int n_layers, double min_zeros=-1):
    """Whether forward, left to choose, computes the first layer of a
    network of n_layers layers on x (n, inputs) from its non-zero inputs: for
    two layers or more, SPARSE_INPUT_MIN_ROWS rows or more, and at least
    min_zeros (if negative, SPARSE_INPUT_MIN_ZEROS) of the entries of x's
    first SPARSE_INPUT_SAMPLE_ROWS rows zero."""
    cdef Py_ssize_t rows = min(x.shape[0], <Py_ssize_t>SPARSE_INPUT_SAMPLE_ROWS)
    cdef Py_ssize_t count = rows * x.shape[1], i, zeros = 0
    if min_zeros < 0:
        min_zeros = _SPARSE_INPUT_MIN_ZEROS
    if n_layers < 2 or x.shape[0] < SPARSE_INPUT_MIN_ROWS or count == 0:
        return False
    cdef const floating* p = &x[0, 0]
    for i in range(count):
        zeros += p[i] == 0
    return zeros >= min_zeros * count


cdef void _forward_worker(floating* params, const floating* x, floating* out,
                          _ForwardRun* run, int tid, int n_workers) noexcept nogil:
    cdef int L = run.n_layers
    cdef Py_ssize_t d = run.sizes[0], k = run.sizes[L], start, stop, rows
    cdef floating* workspace = <floating*>run.work + tid * run.work_per_worker
    cdef floating* acts[MAX_LAYERS + 1]
    cdef bint feature_major
    if run.sparse_input:
        _forward_sparse_input(params, x, out, run, tid, n_workers)
        return
    if run.split_units:
        if floating is float and run.n <= run.fused_max_rows:
            _infer_units_split(params, x, out, run, tid, n_workers)
        else:
            _forward_units_split(params, x, out, run, tid, n_workers)
        return
    if floating is float and run.claim_units:
        _infer_claimed_units(params, x, out, run, tid)
        return
    if run.claim_rows:
        _infer_claimed_rows(params, x, out, run, tid)
        return
    _share(run.n, tid, n_workers, 1, &start, &stop)
    while start < stop:
        rows = run.chunk if stop - start > run.chunk else stop - start
        if run.check_finite and not _all_finite(x + start * d, rows * d):
            run.nonfinite[tid] = 1
        if floating is float and rows <= run.fused_max_rows:
            _point_acts(workspace, run.sizes, L, rows, x + start * d, acts)
            _infer_layers(params, run.sizes, L, run.hidden_act, run.output_act, acts,
                          out + start * k, rows)
            start += rows
            continue
        feature_major = rows <= _FORWARD_FEATURE_MAJOR_MAX_ROWS
        _point_acts(workspace, run.sizes, L, rows, x + start * d, acts)
        _forward(params, run.sizes, L, run.hidden_act, run.output_act, acts, NULL,
                 rows, feature_major, NULL, run.bf16)
        _copy_out(acts[L], out + start * k, rows, k, feature_major)
        start += rows


cdef void _infer_claimed_rows(floating* params, const floating* x, floating* out,
                              _ForwardRun* run, int tid) noexcept nogil:
    """_forward_worker's rows for infer: blocks of run.block rows, each
    claimed by whichever worker is free (so a worker that never got a core
    leaves its share to the others), on _dense.h's loops up to
    run.fused_max_rows rows, else as _forward."""
    cdef int L = run.n_layers
    cdef Py_ssize_t d = run.sizes[0], k = run.sizes[L], start, rows
    cdef floating* workspace = <floating*>run.work + tid * run.work_per_worker
    cdef floating* acts[MAX_LAYERS + 1]
    cdef bint feature_major
    while True:
        start = mlp_claim(&run.next_row, run.block)
        if start >= run.n:
            return
        rows = min(run.block, run.n - start)
        if run.check_finite and not _all_finite(x + start * d, rows * d):
            run.nonfinite[tid] = 1
        _point_acts(workspace, run.sizes, L, rows, x + start * d, acts)
        if floating is float and rows <= run.fused_max_rows:
            _infer_layers(params, run.sizes, L, run.hidden_act, run.output_act, acts,
                          out + start * k, rows)
        else:
            feature_major = rows <= _INFER_FEATURE_MAJOR_MAX_ROWS
            _forward(params, run.sizes, L, run.hidden_act, run.output_act, acts, NULL,
                     rows, feature_major, NULL, run.bf16)
            _copy_out(acts[L], out + start * k, rows, k, feature_major)


# infer()'s blocks on sgemm (at most _INFER_BLAS_BLOCK = 256 rows) keep
# their activations feature-major, as forward() does up to 128 rows:
# 784-300-100-10, dense rows, interleaved, 1.04x faster at 256 and 1024
# rows on 1 thread and 1.04-1.07x at 1024-4096 on 2 than row-major blocks
# of 256 (2-core Zen 4, bench/README.md).
cdef Py_ssize_t _INFER_FEATURE_MAJOR_MAX_ROWS = 256


def _set_infer_feature_major_max_rows(Py_ssize_t rows):
    """Benchmark hook: infer()'s blocks of up to rows rows on sgemm are
    feature-major from now on; returns the previous limit."""
    global _INFER_FEATURE_MAJOR_MAX_ROWS
    previous = _INFER_FEATURE_MAJOR_MAX_ROWS
    _INFER_FEATURE_MAJOR_MAX_ROWS = rows
    return previous


cdef void _infer_claimed_units(float* params, const float* x, float* out, _ForwardRun* run,
                               int tid) noexcept nogil:
    """infer on a few rows, on _dense.h's loops: the workers claim blocks
    of run.block of the first layer's units (most of the multiply-adds:
    each worker reads only its blocks' weights), then the caller, once
    every block is done, computes the other layers alone. No barrier: a
    worker that never got a core leaves its blocks to the caller."""
    cdef int L = run.n_layers
    cdef Py_ssize_t n = run.n, d = run.sizes[0], hidden = run.sizes[1], u0
    cdef float* acts[MAX_LAYERS + 1]
    _point_acts(<float*>run.work, run.sizes, L, n, x, acts)
    if tid == 0 and run.check_finite and not _all_finite(x, n * d):
        run.nonfinite[0] = 1
    while True:
        u0 = mlp_claim(&run.next_row, run.block)
        if u0 >= hidden:
            break
        _dense_part(acts[0], n, d, hidden, params, u0, min(u0 + run.block, hidden), acts[1],
                    run.hidden_act)
        mlp_count_done(&run.units_done, min(u0 + run.block, hidden) - u0)
    if tid != 0:
        return
    mlp_wait_count(&run.units_done, hidden)
    _infer_layers(params + hidden * (d + 1), run.sizes + 1, L - 1, run.hidden_act,
                  run.output_act, &acts[1], out, n)


cdef void _forward_task(void* ctx, int tid, int n_workers) noexcept nogil:
    cdef _ForwardRun* run = <_ForwardRun*>ctx
    if run.is_double:
        _forward_worker(<double*>run.params, <const double*>run.x, <double*>run.out,
                        run, tid, n_workers)
    else:
        _forward_worker(<float*>run.params, <const float*>run.x, <float*>run.out,
                        run, tid, n_workers)


def loss_and_gradients(Network network, int loss, x, y, grads, work, Py_ssize_t chunk,
                       weights=None):
    """Summed loss over the batch x (n, sizes[0]) with targets y (n, sizes[-1]);
    unless grads is None, its gradient into grads (laid out like the params).

    Rows are processed `chunk` at a time, the gradients summed across chunks,
    so memory does not grow with the batch; work must hold
    workspace_size(sizes, chunk) elements. weights (n,), or None for all 1:
    each sample's loss and gradient are multiplied by its weight before the
    sums. Every array is C-contiguous, of the network's float type. x may
    also be a CsrMatrix of that type (see rows_loss_and_gradients)."""
    return rows_loss_and_gradients(network, loss, Rows(x, y, weights), grads, work, chunk)


cdef class Rows:
    """A set of rows whose loss (and gradient) one call computes: inputs x,
    targets y, optional per-row weights, and optionally where to write the
    network's outputs for them.

    Parameters
    ----------
    x : ndarray, shape (n, n_inputs), C-contiguous; or CsrMatrix
        Of the network's float type. A CsrMatrix's first layer is computed
        from its non-zero inputs, and never made dense.
    y : ndarray, shape (n, n_outputs), C-contiguous
    weights : ndarray, shape (n,), or None
    outputs : ndarray, shape (n, n_outputs), C-contiguous, or None
    """
    cdef readonly object x, y, weights, outputs

    def __init__(self, x, y, weights=None, outputs=None):
        n = x.shape[0]
        if weights is not None and len(weights) != n:
            raise ValueError(f"weights must hold one value per row of x ({n}); "
                             f"got {len(weights)}")
        if len(y) != n or (outputs is not None and outputs.shape != y.shape):
            raise ValueError(f"y (and outputs) must have one row per row of x ({n})")
        self.x, self.y, self.weights, self.outputs = x, y, weights, outputs


def rows_loss_and_gradients(Network network, int loss, Rows rows, grads, work,
                            Py_ssize_t chunk, FirstLayerPanels panels=None, bint total=True):
    """Summed (weighted) loss over `rows`, `chunk` rows at a time; unless
    grads is None, its gradient into grads (laid out like the params);
    unless rows.outputs is None, the outputs into it. work must hold
    workspace_size(sizes, chunk) elements. A CsrMatrix's rows take in
    addition two arrays of (n_inputs, units of the first layer, rounded up
    to a cache line): the first layer's weights and its gradient by input,
    made for the call unless panels (FirstLayerPanels of this network) are
    given: then the first layer's weights are read from panels.weights (not
    from the parameters) and its weight gradient is left in
    panels.gradient (grads' place for it is not written). Not with
    compute_dtype="bfloat16". total=False skips the loss and returns 0.0,
    for a caller that computes its own from rows.outputs (L-BFGS's
    classifiers: clipped_log_loss), an exp and a log an output less."""
    if network.is_double:
        return _rows_loss_and_gradients[double](network.params, network, loss, rows,
                                                grads, work, chunk, panels, total)
    return _rows_loss_and_gradients[float](network.params, network, loss, rows, grads, work,
                                           chunk, panels, total)


cdef double _rows_loss_and_gradients(floating[::1] params, Network network, int loss,
                                     Rows rows, grads, work, Py_ssize_t chunk,
                                     FirstLayerPanels panels, bint want_loss) except? -1:
    cdef const Py_ssize_t[::1] sizes = network.sizes
    cdef int L = <int>sizes.shape[0] - 1
    cdef Py_ssize_t d = sizes[0], units = sizes[1], k = sizes[L]
    cdef Py_ssize_t line = 64 // sizeof(floating), n
    cdef const floating[:, ::1] xv
    cdef const floating[:, ::1] yv = rows.y
    cdef const floating[::1] wv
    cdef floating[::1] gv
    cdef floating[::1] workv = work
    cdef floating[:, ::1] ov
    cdef const floating[::1] data
    cdef const int32_t[::1] indices
    cdef const int64_t[::1] indptr
    cdef floating[:, ::1] panel
    cdef floating[:, ::1] gradient_panel
    cdef floating[:, ::1] deltas
    cdef const int64_t[::1] column_starts
    cdef const int32_t[::1] column_rows
    cdef const floating[::1] column_values
    cdef floating[::1] rounded_values
    cdef _CsrRows csr
    cdef _CsrRows* csr_pointer = NULL
    cdef const floating* x_pointer = NULL
    cdef const floating* w_pointer = NULL
    cdef floating* g_pointer = NULL
    cdef floating* o_pointer = NULL
    cdef bint keep = grads is not None and _keeps_preactivations(network.hidden_activation)
    cdef double total = 0
    if chunk < 1 or workv.shape[0] < _carve(&sizes[0], L, chunk, keep).total:
        raise ValueError("work must hold workspace_size(sizes, chunk) elements, chunk >= 1")
    if yv.shape[1] != k:
        raise ValueError(f"y must have {k} columns")
    if grads is not None:
        gv = grads
        if gv.shape[0] != params.shape[0]:
            raise ValueError("grads must be laid out like the parameters")
        g_pointer = &gv[0]
    if isinstance(rows.x, CsrMatrix):
        data = rows.x.data
        indices = rows.x.indices
        indptr = rows.x.indptr
        n = indptr.shape[0] - 1
        if rows.x.shape[1] != d:
            raise ValueError(f"x must have {d} columns")
        csr.ld = (units + line - 1) // line * line
        csr.gradient_by_input = panels is not None
        if panels is not None:
            if network.bf16:
                raise ValueError("panels are for networks that compute in their parameters' "
                                 "type, not compute_dtype='bfloat16'")
            if panels.weights.shape != (max(d, 1), csr.ld) or panels.weights.dtype != rows.x.dtype:
                raise ValueError("panels must be FirstLayerPanels(network) of this network")
            panel = panels.weights
        else:
            panel = np.empty((max(d, 1), csr.ld), dtype=rows.x.dtype)
            _transpose_units(&params[0], d, 0, units, &panel[0, 0], csr.ld)
        csr.indptr = &indptr[0]
        csr.indices = &indices[0] if indices.shape[0] else NULL
        csr.values = &data[0] if data.shape[0] else NULL
        if network.bf16:
            # The first layer's products from rounded weights and inputs, as
            # _layer_gemm's: the panel is a copy, the values are copied.
            _round_to_bf16(&panel[0, 0], panel.shape[0] * csr.ld)
            if data.shape[0]:
                rounded_values = np.array(data, copy=True)
                _round_to_bf16(&rounded_values[0], rounded_values.shape[0])
                csr.values = &rounded_values[0]
        csr.first = 0
        csr.panel = &panel[0, 0]
        csr.deltas = NULL
        if grads is not None:
            if panels is not None:
                gradient_panel = panels.gradient
                if panels.deltas is not None and rows.x.column_starts is not None \
                        and n > 0 and panels.deltas.shape[0] >= n \
                        and panels.deltas.dtype == rows.x.dtype:
                    # Every row of the panel is written at the end.
                    deltas = panels.deltas
                    column_starts = rows.x.column_starts
                    column_rows = rows.x.column_rows
                    column_values = rows.x.column_values
                    csr.deltas = &deltas[0, 0]
                    csr.column_starts = &column_starts[0]
                    csr.column_rows = &column_rows[0] if column_rows.shape[0] else NULL
                    csr.column_values = (&column_values[0] if column_values.shape[0]
                                         else NULL)
                else:
                    memset(&gradient_panel[0, 0], 0, gradient_panel.shape[0] * csr.ld
                           * sizeof(floating))
            else:
                gradient_panel = np.zeros((max(d, 1), csr.ld), dtype=rows.x.dtype)
            csr.gradient_panel = &gradient_panel[0, 0]
        csr_pointer = &csr
    else:
        xv = rows.x
        n = xv.shape[0]
        if xv.shape[1] != d:
            raise ValueError(f"x must have {d} columns")
        if n:
            x_pointer = &xv[0, 0]
    if n == 0:
        if grads is not None:
            gv[:] = 0
        return 0.0
    if rows.weights is not None:
        wv = rows.weights
        w_pointer = &wv[0]
    if rows.outputs is not None:
        ov = rows.outputs
        o_pointer = &ov[0, 0]
    with nogil:
        total = _loss_and_gradients(&params[0], &sizes[0], L, network.hidden_activation,
                                    network.output_activation, loss, x_pointer, csr_pointer, n,
                                    &yv[0, 0], w_pointer, g_pointer, &workv[0], chunk,
                                    o_pointer, network.bf16, want_loss)
    _raise_if_bf16_out_of_memory()
    return total


def clipped_log_loss(Rows rows, bint softmax, double[::1] per_row):
    """scikit-learn's log-loss of each of rows.outputs into per_row.

    The probabilities are clipped to [eps, 1 - eps] (eps of their dtype)
    and each row's terms summed in float64: -sum_j y log p for softmax
    outputs, else -sum_j y log p + (1 - y) log(1 - p) (logistic outputs), a
    term whose factor is 0 counting 0 (as scipy's xlogy). The rows' weights
    are not applied: the caller sums the rows as it needs to (L-BFGS's
    objective, mlp/_lbfgs.py, as scikit-learn adds them up, after
    rows_loss_and_gradients has written the outputs).

    Parameters
    ----------
    rows : Rows
        Its outputs (n, k) hold probabilities, its y (n, k) the targets, of
        one float type.
    softmax : bool
    per_row : ndarray of float64, shape (n,)
        Written.
    """
    if rows.outputs is None:
        raise ValueError("rows.outputs must hold the outputs (rows_loss_and_gradients "
                         "writes them); got None")
    if rows.outputs.dtype == np.float64:
        _clipped_log_loss[double](rows.outputs, rows.y, softmax, per_row)
    else:
        _clipped_log_loss[float](rows.outputs, rows.y, softmax, per_row)


cdef int _clipped_log_loss(const floating[:, ::1] p, const floating[:, ::1] y, bint softmax,
                           double[::1] per_row) except -1:
    cdef floating eps = FLT_EPSILON if floating is float else DBL_EPSILON
    cdef floating clipped
    cdef Py_ssize_t i, j, n = p.shape[0], k = p.shape[1]
    cdef double row, q, t
    if y.shape[0] != n or y.shape[1] != k or per_row.shape[0] != n:
        raise ValueError(f"rows.y must have the outputs' shape {(n, k)}, per_row {n} values")
    with nogil:
        for i in range(n):
            row = 0
            for j in range(k):
                clipped = p[i, j]
                clipped = eps if clipped < eps else (1 - eps if clipped > 1 - eps else clipped)
                q = clipped
                t = y[i, j]
                if t != 0:
                    row = row - t * log(q)
                if not softmax and t != 1:
                    row = row - (1 - t) * log(1 - q)
            per_row[i] = row
    return 0


def forward(Network network, x, out, work, Py_ssize_t chunk, int n_workers=1,
            sparse_input=None, bint check_finite=False):
    """Output activations of the network for x (n, sizes[0]) into out (n, sizes[-1]).

    x, out and work are C-contiguous arrays of the network's float type.
    Returns False when check_finite and x holds a NaN or an infinity (out
    is then meaningless), else True: each worker checks the rows it reads,
    while they are in cache, which costs less than a scan of x beforehand
    (0.8 ms for MNIST's 10,000 test images, against a 17 ms call).

    The rows are split between n_workers threads (BLAS must be
    single-threaded meanwhile), each processing its share `chunk` rows at a
    time; a block too small to give each worker FORWARD_MIN_ROWS_PER_WORKER
    rows has each layer's units split instead (one block of all rows, which
    needs chunk >= the number of rows). work must hold
    n_workers * workspace_size(sizes, chunk) elements.
    Each output row depends only on its input row; how the rows are split
    changes only rounding (BLAS treats the rows at the edge of a block
    differently).

    A network of two layers or more whose input is mostly zeros (see
    SPARSE_INPUT_MIN_ZEROS, SPARSE_INPUT_MIN_ROWS) computes its first layer
    from each row's non-zero inputs instead (_forward_sparse_input, on all
    n_workers); sparse_input=True or False forces the choice, for tests and
    benchmarks. That too changes only rounding."""
    if network.is_double:
        return _forward_rows[double](network.params, network, x, out, work, chunk, n_workers,
                                     sparse_input, check_finite, 0, False)
    finite = _forward_rows[float](network.params, network, x, out, work, chunk, n_workers,
                                  sparse_input, check_finite, 0, False)
    _raise_if_bf16_out_of_memory()
    return finite


cdef inline Py_ssize_t _fused_max_rows() noexcept nogil:
    """The largest block of rows infer() runs on _dense.h rather than sgemm."""
    cdef int path = mlp_dense_path()
    if path == MLP_DENSE_AVX512F:
        return _DENSE_AVX512_MAX_ROWS
    if path == MLP_DENSE_PORTABLE:
        return _DENSE_PORTABLE_MAX_ROWS
    return 0


# infer()'s blocks of rows (_infer_block_rows): the rows shared equally by
# the workers while each share is at most fused_max_rows (on _dense.h);
# bigger calls in blocks of _INFER_FUSED_BLOCK rows on _dense.h when that is
# positive, else of at most _INFER_BLAS_BLOCK rows on sgemm.
cdef Py_ssize_t _INFER_FUSED_BLOCK = 0
cdef Py_ssize_t _INFER_BLAS_BLOCK = 256
# Calls of at most this many rows on several workers share the first
# layer's units instead of the rows (_infer_claimed_units), in blocks of
# about a quarter of a worker's share (_infer_unit_block).
cdef Py_ssize_t _INFER_UNITS_MAX_ROWS = 7


cdef inline Py_ssize_t _infer_unit_block(Py_ssize_t units, int n_workers) noexcept nogil:
    """Units per block that _infer_claimed_units' workers claim: whole
    blocks of 8 (_dense.h's widest), about 4 blocks a worker."""
    cdef Py_ssize_t block = (units + 4 * n_workers - 1) // (4 * n_workers)
    return max(8, (block + 7) // 8 * 8)


cdef inline Py_ssize_t _infer_block_rows(Py_ssize_t n, int n_workers, Py_ssize_t fused_max_rows,
                                         Py_ssize_t chunk) noexcept nogil:
    """Rows per block that infer()'s workers claim, at most chunk."""
    cdef Py_ssize_t per = (n + n_workers - 1) // n_workers, block
    if fused_max_rows > 0 and per <= fused_max_rows:
        block = per
    elif fused_max_rows > 0 and _INFER_FUSED_BLOCK > 0:
        block = min(_INFER_FUSED_BLOCK, fused_max_rows)
    else:
        block = min(per, _INFER_BLAS_BLOCK)
    return max(1, min(block, chunk))


def infer_block_rows(Py_ssize_t n, int n_workers, Py_ssize_t chunk):
    """Rows per block that infer()'s n_workers workers claim from n rows
    of a float32 network on the current inference_path(), with work for
    blocks of chunk rows."""
    return _infer_block_rows(n, max(1, min(<Py_ssize_t>n_workers, n)), _fused_max_rows(), chunk)


def _set_infer_blocks(Py_ssize_t fused_block, Py_ssize_t blas_block, Py_ssize_t units_max_rows,
                      Py_ssize_t avx512_max_rows):
    """Benchmark hook: infer()'s block sizes (_infer_block_rows), the most
    rows that share units (_INFER_UNITS_MAX_ROWS) and the largest block on
    _dense.h's AVX-512 loops (_DENSE_AVX512_MAX_ROWS) from now on; returns
    the previous ones."""
    global _INFER_FUSED_BLOCK, _INFER_BLAS_BLOCK, _INFER_UNITS_MAX_ROWS, _DENSE_AVX512_MAX_ROWS
    previous = (_INFER_FUSED_BLOCK, _INFER_BLAS_BLOCK, _INFER_UNITS_MAX_ROWS,
                _DENSE_AVX512_MAX_ROWS)
    _INFER_FUSED_BLOCK = max(0, fused_block)
    _INFER_BLAS_BLOCK = max(1, blas_block)
    _INFER_UNITS_MAX_ROWS = max(0, units_max_rows)
    _DENSE_AVX512_MAX_ROWS = max(1, avx512_max_rows)
    return previous


def fused_max_rows():
    """The largest block of rows infer() runs on _dense.h, without BLAS, on
    this path (0 for "blas")."""
    return _fused_max_rows()


def infer(Network network, x, out, work, Py_ssize_t chunk, int n_workers=1,
          sparse_input=None, bint check_finite=False):
    """forward for inference: the same arguments and result, but a float32
    network's dense layers run on _dense.h's loops, bias and activation
    fused into them (inference_path()), instead of on BLAS, in the blocks
    of rows where that is faster (_fused_max_rows). Only rounding differs
    from forward. (forward stays as it is for training's own uses, whose
    results must not change.)"""
    if network.is_double:
        return _forward_rows[double](network.params, network, x, out, work, chunk, n_workers,
                                     sparse_input, check_finite, 0, True)
    # bfloat16 products go through forward's path (_gemm_as), not _dense.h's
    # float32 loops.
    finite = _forward_rows[float](network.params, network, x, out, work, chunk, n_workers,
                                  sparse_input, check_finite,
                                  0 if network.bf16 else _fused_max_rows(), True)
    _raise_if_bf16_out_of_memory()
    return finite


cdef bint _forward_rows(floating[::1] params, Network network, const floating[:, ::1] x,
                        floating[:, ::1] out, floating[::1] work, Py_ssize_t chunk,
                        int n_workers, sparse_input, bint check_finite,
                        Py_ssize_t fused_max_rows, bint claim_rows):
    cdef const Py_ssize_t[::1] sizes = network.sizes
    cdef int hidden_act = network.hidden_activation, output_act = network.output_activation
    cdef _ForwardRun run
    cdef int L = <int>sizes.shape[0] - 1
    run.is_double = floating is double
    run.bf16 = network.bf16
    run.params = &params[0]
    run.sizes = &sizes[0]
    run.n_layers = <int>sizes.shape[0] - 1
    run.hidden_act = hidden_act
    run.output_act = output_act
    run.x = &x[0, 0]
    run.out = &out[0, 0]
    run.n = x.shape[0]
    run.work = &work[0]
    run.work_per_worker = _carve(&sizes[0], run.n_layers, chunk, False).total
    run.chunk = chunk
    run.check_finite = check_finite
    run.fused_max_rows = fused_max_rows
    run.claim_rows = False
    run.claim_units = False
    run.next_row = 0
    memset(run.nonfinite, 0, sizeof(run.nonfinite))
    if n_workers > MAX_WORKERS:
        n_workers = MAX_WORKERS
    if sparse_input is None:
        # (The row count first: a Python-level call costs 0.4 us of a
        # one-row call's 18.)
        sparse_input = run.n >= SPARSE_INPUT_MIN_ROWS and chooses_sparse_input(x, L)
    run.sparse_input = L >= 2 and run.n > 0 and sparse_input
    if run.sparse_input:
        _carve_sparse_input(&sizes[0], L, n_workers, floating is float, &run)
        if work.shape[0] < run.sparse_work_size:
            work = np.empty(run.sparse_work_size,
                            dtype=np.float32 if floating is float else np.float64)
        _point_sparse_input(&work[0], &run)
        run.claim_rows = claim_rows
        with nogil:
            if claim_rows:
                mlp_parallel_run_optional(_forward_task, &run, n_workers)
            else:
                mlp_parallel_run(_forward_task, &run, n_workers, &run.barrier)
        return not (check_finite and _any_set(run.nonfinite, n_workers))
    if (claim_rows and n_workers > 1 and L >= 2 and run.n <= _INFER_UNITS_MAX_ROWS
            and run.n <= fused_max_rows):
        # infer on a few rows: the workers claim blocks of the first layer's
        # units (_infer_claimed_units), on one workspace.
        run.claim_units = True
        run.split_units = False
        run.units_done = 0
        run.block = _infer_unit_block(run.sizes[1], n_workers)
        with nogil:
            mlp_parallel_run_optional(_forward_task, &run, n_workers)
        return not (check_finite and run.nonfinite[0])
    if claim_rows and (n_workers == 1 or run.n > 1):
        # infer: blocks of rows that the workers claim (_infer_claimed_rows),
        # from 2 rows on; one row on several workers shares the units below.
        n_workers = <int>min(<Py_ssize_t>n_workers, max(run.n, 1))
        run.claim_rows = True
        run.split_units = False
        run.block = _infer_block_rows(run.n, n_workers, fused_max_rows, chunk)
        if work.shape[0] < n_workers * run.work_per_worker:
            raise ValueError(f"work must hold {n_workers * run.work_per_worker} values for "
                             f"{n_workers} workers on blocks of {chunk} rows")
        with nogil:
            mlp_parallel_run_optional(_forward_task, &run, n_workers)
        return not (check_finite and _any_set(run.nonfinite, n_workers))
    # Fewer than FORWARD_MIN_ROWS_PER_WORKER rows each: split the units of
    # one feature-major block instead of the rows.
    run.split_units = (n_workers > 1 and run.n <= chunk
                       and run.n < n_workers * FORWARD_MIN_ROWS_PER_WORKER
                       and run.n <= _FORWARD_FEATURE_MAJOR_MAX_ROWS)
    if run.n < n_workers * FORWARD_MIN_ROWS_PER_WORKER and not run.split_units:
        n_workers = max(1, <int>(run.n // FORWARD_MIN_ROWS_PER_WORKER))
    if n_workers > MAX_WORKERS:
        n_workers = MAX_WORKERS
    with nogil:
        mlp_parallel_run(_forward_task, &run, n_workers, &run.barrier)
    return not (check_finite and _any_set(run.nonfinite, n_workers))


cdef bint _any_set(const char* flags, int n) noexcept nogil:
    cdef int i
    for i in range(n):
        if flags[i]:
            return True
    return False




cdef _Optimizer _optimizer_from(UpdateRule rule, double max_norm, tuple state,
                                void* gradients):
    """rule's optimizer with its state arrays (each a C-contiguous array of
    the parameters' type, kept alive by the caller)."""
    cdef _Optimizer opt = rule.rule
    cdef int i
    opt.max_norm = max_norm
    for i in range(MAX_STATE_BUFFERS):
        opt.state[i] = (<void*><uintptr_t>state[i].ctypes.data
                        if i < opt.n_state and len(state[i]) > 0 else NULL)
    opt.gradients = gradients
    return opt


cdef _TrainRun _new_run(int dtype_pair, void* params, const Py_ssize_t[::1] sizes,
                        int hidden_act, int output_act, int loss, void* work,
                        bint feature_major) noexcept:
    """A run of the network described by the arguments, with plain SGD, no
    dropout and no data yet: callers fill in the rest."""
    cdef _TrainRun run
    memset(&run, 0, sizeof(run))
    run.dtype_pair = dtype_pair
    run.params = params
    run.sizes = &sizes[0]
    run.n_layers = <int>sizes.shape[0] - 1
    run.hidden_act = hidden_act
    run.output_act = output_act
    run.loss = loss
    run.work = work
    run.feature_major = feature_major
    run.opt.code = OPT_SGD
    return run


def train_steps(TrainingRun run, const int64_t[::1] order, const double[::1] learning_rates,
                int64_t steps_before, double[::1] batch_losses, double time_limit=0.0):
    """Train run.network on the samples listed in `order`, run.data.batch_size at a time.

    Step s trains on rows x[order[s*batch_size : (s+1)*batch_size]] of
    run.data.x (of either float type, converted to the model's); the last
    batch may be shorter. Its targets are one-hot from the data's labels or
    its rows of targets; its sample weights, if any, scale each row's loss
    and gradient. The rows are gathered into the workspace in C, so the
    whole call is one nogil call.

    Step s uses learning_rates[s] and is step steps_before + s + 1 of the
    run (Adam's t, and the dropout masks' counter). run.rule and run.state
    are the update and its state; run.max_norm > 0 caps each unit's
    incoming weight norm after every step; run.dropout drops hidden units
    and inputs, masks keyed by its seed.

    With run.augment, every gathered row is replaced by a random distortion
    of itself, drawn from run.augment_seed and the row's draw counter
    (step - 1) * batch_size + row, so that it does not depend on n_workers.

    batch_losses[s] receives step s's summed loss. The data's feature_major
    stores each batch transposed, (features, batch) (faster for small
    batches). run.n_workers threads share each step (BLAS must be
    single-threaded meanwhile); the result depends on n_workers only
    through rounding. With time_limit > 0 the call returns after the first
    step that ends past that many seconds.

    For row-major batches (not feature_major) of a network of two layers or
    more, the first layer's forward pass and weight gradient come from each
    row's non-zero inputs when x is mostly zeros (chooses_sparse_input on its
    first rows) or the data's sparse_input is True; sparse_input=False keeps
    them GEMMs. Either way the result differs only by rounding.

    Returns the number of steps done, or -1 - r when row r of x holds NaN
    or inf: the run stops before the step that would have used it."""
    if len(learning_rates) * run.data.batch_size < len(order) or \
            len(batch_losses) < len(learning_rates):
        raise ValueError("train_steps needs a learning rate and a batch loss for every step")
    # x's values as one flat array: a dense x's rows, or a CsrMatrix's data.
    values = run.data.x.data if isinstance(run.data.x, CsrMatrix) else run.data.x.reshape(-1)
    if run.network.is_double:
        if values.dtype == np.float64:
            return _train_steps[double, double](run.network.params, values, run, order,
                                                learning_rates, steps_before, batch_losses,
                                                time_limit)
        return _train_steps[double, float](run.network.params, values, run, order,
                                           learning_rates, steps_before, batch_losses, time_limit)
    if values.dtype == np.float64:
        return _train_steps[float, double](run.network.params, values, run, order,
                                           learning_rates, steps_before, batch_losses, time_limit)
    return _train_steps[float, float](run.network.params, values, run, order,
                                      learning_rates, steps_before, batch_losses, time_limit)


cdef inline void* _data_or_null(floating[::1] array) noexcept:
    return &array[0] if array is not None and array.shape[0] > 0 else NULL


cdef object _train_steps(floating[::1] params, const data_floating[::1] x, TrainingRun spec,
                         const int64_t[::1] order, const double[::1] learning_rates,
                         int64_t steps_before, double[::1] batch_losses, double time_limit):
    cdef Network network = spec.network
    cdef TrainingData data = spec.data
    cdef const Py_ssize_t[::1] sizes = network.sizes
    cdef const int64_t[::1] labels = data.labels
    cdef floating[::1] targets = data.targets
    cdef floating[::1] sample_weights = data.sample_weights
    cdef floating[::1] gradients = spec.gradients
    cdef floating[::1] work = spec.work
    cdef int n_workers = spec.n_workers
    cdef const int64_t[::1] indptr
    cdef const int32_t[::1] indices
    cdef _TrainRun run = _new_run(
        (DOUBLE_MODEL_FLOAT_DATA if floating is double else FLOAT_MODEL_FLOAT_DATA)
        + (1 if data_floating is double else 0),
        &params[0], sizes, network.hidden_activation, network.output_activation, spec.loss,
        &work[0], data.feature_major)
    run.bf16 = network.bf16
    run.x = &x[0] if x.shape[0] > 0 else NULL
    if isinstance(data.x, CsrMatrix):
        indptr = data.x.indptr
        indices = data.x.indices
        run.csr_indptr = &indptr[0]
        run.csr_indices = &indices[0] if indices.shape[0] > 0 else NULL
    run.labels = &labels[0] if labels.shape[0] > 0 else NULL
    run.targets = _data_or_null(targets)
    run.sample_weights = _data_or_null(sample_weights)
    run.order = &order[0] if order.shape[0] > 0 else NULL
    run.n_total = order.shape[0]
    run.batch_size = data.batch_size
    run.learning_rates = &learning_rates[0]
    run.steps_before = steps_before
    run.opt = _optimizer_from(spec.rule, spec.max_norm, spec.state, _data_or_null(gradients))
    run.dropout = spec.dropout.hidden
    run.input_dropout = spec.dropout.inputs
    run.dropout_seed = spec.dropout.seed
    run.time_limit = time_limit
    run.batch_losses = &batch_losses[0]
    cdef float[::1] augment_work
    if spec.augment is not None:
        # One workspace per worker, each on its own cache lines; a float64
        # model also needs a float32 row to distort into before widening it.
        run.augment_work_floats = (mlp_aug_work_floats(spec.augment.plan.side)
                                   + (sizes[0] if floating is double else 0) + 15) // 16 * 16
        augment_work = np.empty(n_workers * run.augment_work_floats, dtype=np.float32)
        run.augment = &spec.augment.plan
        run.augment_work = &augment_work[0]
        run.augment_seed = spec.augment_seed
    partial_gradients = _prepare_strategy(&run, n_workers, params.shape[0], network.params.dtype)
    sparse_buffers = _prepare_sparse_input(&run, data.x, n_workers, network.params.dtype,
                                           data.sparse_input)
    with nogil:
        _run_workers(&run, n_workers)
    _raise_if_bf16_out_of_memory()
    return -1 - run.bad_row if run.bad_row >= 0 else run.steps_done


# Each worker lists every row itself (lists_by_worker) on up to this many
# workers: n workers list each row n times, into n sets of lists (at 1023
# rows of 784 inputs, 13 MB a worker). Measured on 2, where it saves the
# time the listing spent waiting for the lines the other worker had read.
LISTS_BY_WORKER_MAX_WORKERS = 2

# Training's lists of non-zero inputs take room for every input of every
# row, twice (two steps) and again per worker (listed by input): at 4096
# rows of 784 float32 inputs and 2 workers, about 110 MB. Larger batches keep
# their GEMMs rather than take more.
SPARSE_INPUT_MAX_BATCH = 4096

# With bfloat16 products on a native path (compute_dtype="bfloat16", not
# bf16_path() "portable") and the samples split, the first layer's dense
# bfloat16 GEMMs outrun the sparse path, whose sums stay float32 as they
# are, unless the inputs are sparser than images: MNIST (81% zeros),
# 784-300-100-10, 2 workers, plain SGD, best of 7 interleaved: dense 1.2x
# the sparse path's samples/s at batch 1024, 1.05x at 4096 (bench/README.md,
# bench_bf16.py). At 64 and 256 rows (units split) the sparse path was as
# fast or faster, and stays. At 90% zeros the sparse path has half MNIST's
# products to make.
cdef double _SPARSE_INPUT_MIN_ZEROS_BF16_SPLIT = 0.9
SPARSE_INPUT_MIN_ZEROS_BF16_SPLIT = _SPARSE_INPUT_MIN_ZEROS_BF16_SPLIT


def trains_sparse_input(x, int n_layers, Py_ssize_t batch_size,
                        int n_workers, bint feature_major, sparse_input=None, bint bf16=False):
    """Whether train_steps computes the first layer from the non-zero
    inputs of x (a 2-D array or a CsrMatrix): only for row-major batches
    (not feature_major) of up to SPARSE_INPUT_MAX_BATCH rows of a network
    of two layers or more, and there when sparse_input is True, or None and
    x is a CsrMatrix or mostly zeros (chooses_sparse_input; with bf16 on a
    native bfloat16 path and the samples split, at least
    SPARSE_INPUT_MIN_ZEROS_BF16_SPLIT zeros)."""
    cdef double min_zeros = _SPARSE_INPUT_MIN_ZEROS
    if sparse_input is None:
        if (bf16 and mlp_bf16_path() != _BF16_PATH_CODES["portable"]
                and splits_samples(batch_size, n_workers, feature_major)):
            min_zeros = _SPARSE_INPUT_MIN_ZEROS_BF16_SPLIT
        sparse_input = isinstance(x, CsrMatrix) or chooses_sparse_input(x, n_layers, min_zeros)
    return bool(sparse_input and n_layers >= 2 and not feature_major
                and batch_size <= SPARSE_INPUT_MAX_BATCH)


def _empty_on_lines(Py_ssize_t count, dtype):
    """An uninitialised array of count items of dtype whose first item sits
    on a 64-byte boundary. numpy aligns large arrays to 16 bytes only; the
    sparse path's panels and lists, whose rows are whole cache lines, then
    straddle two lines with every row and one 64-byte vector load in two.
    Aligned, plain SGD's and momentum's steps took 0.90-0.99x the time at
    batch 64 (four interleaved runs; Adam's 0.90-1.06x; bench/README.md)."""
    itemsize = np.dtype(dtype).itemsize
    raw = np.empty(count * itemsize + 64, dtype=np.uint8)
    offset = (-raw.ctypes.data) % 64
    return raw[offset:offset + count * itemsize].view(dtype)


def empty_in_small_pages(Py_ssize_t count, dtype):
    """An uninitialised array of count items of dtype, page-aligned, in
    memory the kernel backs with 4 KB pages as they are first touched.
    For the per-row lists of non-zero inputs, which reserve d entries a row
    and fill a few dozen: numpy advises huge pages for large arrays, and
    each row's first touch then zeroed the whole 2 MB page around it, a
    tenth of a sparse fit's time (30,000 x 20,000 CSR, 60 non-zeros a row,
    perf: clear_page_erms from _train_worker). An anonymous mapping gets no
    such advice (and where huge pages are the system's default, is told
    not to take them), so only the touched 4 KB pages are zeroed. Also
    where every page is written at once but huge pages cost more than they
    save (mlp train's centred images, mlp.cli)."""
    itemsize = np.dtype(dtype).itemsize
    mapping = mmap.mmap(-1, max(1, count * itemsize))
    if hasattr(mmap, "MADV_NOHUGEPAGE"):
        try:
            mapping.madvise(mmap.MADV_NOHUGEPAGE)
        except OSError:  # advice only: a kernel without huge pages refuses it
            pass
    return np.frombuffer(mapping, dtype=np.uint8)[:count * itemsize].view(dtype)


cdef object _prepare_sparse_input(_TrainRun* run, x, int n_workers,
                                  dtype, sparse_input):
    """Whether the run computes its first layer from the non-zero inputs
    (see train_steps), and if so the buffers that takes, to be kept alive
    for the call: the lists of two batches' non-zero inputs (one set per
    worker with lists_by_worker, one shared otherwise), and per worker
    a panel of its units' weights, one of their gradient (or, with
    weights_by_input, a few of its rows), a copy of its units' deltas, the
    batch's non-zero inputs listed by input, and with weights_by_input the
    optimizer's state for its units, laid out like its panel."""
    cdef Py_ssize_t d = run.sizes[0], m = run.batch_size, width, line
    cdef Py_ssize_t itemsize = np.dtype(dtype).itemsize
    run.sparse_input = trains_sparse_input(x, run.n_layers, m, n_workers, run.feature_major,
                                           sparse_input, run.bf16)
    if not run.sparse_input:
        return None
    n_workers = max(1, min(n_workers, MAX_WORKERS))
    line = 64 // itemsize
    # The widest share of the first layer's units, or all of them when the
    # workers split the samples.
    width = run.sizes[1] if run.split_samples else (run.sizes[1] + n_workers - 1) // n_workers + 1
    run.panel_ld = (width + line - 1) // line * line
    run.panel_size = d * run.panel_ld
    # The units split on up to LISTS_BY_WORKER_MAX_WORKERS workers lists
    # every row in each worker (lists_by_worker), unless rows are distorted;
    # otherwise each worker lists the rows it gathered, into lists all of
    # them read.
    run.lists_by_worker = (not run.split_samples and run.augment == NULL
                           and n_workers <= LISTS_BY_WORKER_MAX_WORKERS)
    lists = n_workers if run.lists_by_worker else 1
    rows = None
    if run.lists_by_worker and run.dtype_pair in (FLOAT_MODEL_DOUBLE_DATA,
                                                  DOUBLE_MODEL_FLOAT_DATA):
        run.row_stride = (d + line - 1) // line * line
        rows = _empty_on_lines(n_workers * run.row_stride, dtype)
        run.row_buffers = <void*><uintptr_t>rows.ctypes.data
    index = empty_in_small_pages(lists * 2 * m * d, np.int32)
    value = empty_in_small_pages(lists * 2 * m * d, dtype)
    count = np.empty(lists * 2 * m, dtype=np.intp)
    panels = _empty_on_lines(n_workers * (2 * run.panel_size + m * run.panel_ld), dtype)
    starts = np.empty(n_workers * (d + 1), dtype=np.intp)
    samples = _empty_on_lines(n_workers * m * d, np.int32)
    values = _empty_on_lines(n_workers * m * d, dtype)
    run.nonzero_index = <int32_t*><uintptr_t>index.ctypes.data
    run.nonzero_value = <void*><uintptr_t>value.ctypes.data
    run.nonzero_count = <Py_ssize_t*><uintptr_t>count.ctypes.data
    run.panels = <void*><uintptr_t>panels.ctypes.data
    run.gradient_panels = <void*>(<char*>run.panels + n_workers * run.panel_size * itemsize)
    run.delta_panels = <void*>(<char*>run.gradient_panels + n_workers * run.panel_size * itemsize)
    run.input_starts = <Py_ssize_t*><uintptr_t>starts.ctypes.data
    run.input_samples = <int32_t*><uintptr_t>samples.ctypes.data
    run.input_values = <void*><uintptr_t>values.ctypes.data
    # The units split keeps each worker's first-layer units in its panel
    # for the whole call; the samples split transposes all of them every step.
    run.weights_by_input = not run.split_samples
    state = None
    if run.weights_by_input and run.opt.n_state > 0:
        state = _empty_on_lines(n_workers * run.opt.n_state * run.panel_size, dtype)
        run.state_panels = <void*><uintptr_t>state.ctypes.data
    rounded = None
    if run.weights_by_input and run.bf16:
        rounded = _empty_on_lines(n_workers * run.panel_size, dtype)
        run.bf16_panels = <void*><uintptr_t>rounded.ctypes.data
    return index, value, count, panels, starts, samples, values, state, rows, rounded


def dropout_mask(floating[:, ::1] values, double p, uint64_t seed, int64_t step, int layer,
                 tuple samples, tuple units, bint feature_major):
    """In place: samples (i0, i1), units (u0, u1) of values (n, width), or
    (width, n) with feature_major, times the dropout mask of (seed, step,
    layer) scaled by 1 / (1 - p), as training applies it."""
    cdef Py_ssize_t n = values.shape[1] if feature_major else values.shape[0]
    cdef Py_ssize_t width = values.shape[0] if feature_major else values.shape[1]
    cdef Py_ssize_t i0 = samples[0], i1 = samples[1], u0 = units[0], u1 = units[1]
    if not (0 <= i0 <= i1 <= n and 0 <= u0 <= u1 <= width):
        raise ValueError(f"samples {samples} and units {units} must lie within {n} samples "
                         f"and {width} units")
    with nogil:
        _dropout(&values[0, 0], i0, i1, u0, u1, _sample_stride(feature_major, n, width),
                 _unit_stride(feature_major, n, width), width,
                 mlp_mask_key_for(seed, step, layer), _drop_threshold(p),
                 <floating>(1 / (1 - p)))


def gemm_bound_steps(floating[::1] params, const Py_ssize_t[::1] sizes,
                     Py_ssize_t batch_size, floating[::1] work, Py_ssize_t n_steps,
                     bint feature_major, int n_workers=1):
    """Only the GEMMs of n_steps plain-SGD training steps, on preallocated arrays.

    This is the ceiling a training step can reach through this BLAS: the
    same calls with the same shapes, on the same workers, that train_steps
    makes (in the layout feature_major picks), and nothing else. The
    parameters are overwritten with meaningless values."""
    cdef _TrainRun run
    cdef int L = <int>sizes.shape[0] - 1
    cdef _Carve c = _carve(&sizes[0], L, batch_size, False)
    cdef floating* workspace = &work[0]
    cdef Py_ssize_t i
    # The weight updates are the real calls, alpha = -step and beta = 1
    # (alpha = 0 would let BLAS skip the product).
    cdef double[::1] rates = np.full(max(n_steps, 1), 1e-3 * batch_size)
    with nogil:
        # Whatever an uninitialised workspace holds (subnormals are slow in
        # GEMMs) must not set the bound: inputs, deltas and parameters get
        # plain values, which the small steps below barely move.
        for i in range(c.inputs, c.bias_sums):
            workspace[i] = <floating>0.001
        for i in range(params.shape[0]):
            params[i] = <floating>0.001
    run = _new_run(FLOAT_MODEL_FLOAT_DATA if floating is float else DOUBLE_MODEL_DOUBLE_DATA,
                   &params[0], sizes, ACT_IDENTITY, ACT_IDENTITY, LOSS_MSE, workspace,
                   feature_major)
    run.learning_rates = &rates[0]
    run.n_total = n_steps * batch_size
    run.batch_size = batch_size
    run.gemms_only = True
    partial_gradients = _prepare_strategy(&run, n_workers, params.shape[0], np.asarray(params).dtype)
    with nogil:
        _run_workers(&run, n_workers)
    return run.steps_done
# ---------------------------------------------------------------------------
# Single kernels, exposed so that the tests can hold each one against numpy
# ---------------------------------------------------------------------------

def bias_activation(floating[:, ::1] z, const floating[::1] b, int act):
    """In place: z <- act(z + b) for z (n, k), b (k,)."""
    with nogil:
        _bias_activation(&z[0, 0], &b[0], z.shape[0], z.shape[1], act, False, NULL)


def activation(floating[::1] z, int act):
    """In place, elementwise: z <- act(z) for a hidden activation (not softmax)."""
    with nogil:
        _apply_activation(&z[0], 1, z.shape[0], act, False)


def activation_derivative(const floating[:, ::1] a, floating[:, ::1] out, int act,
                          const floating[:, ::1] z=None):
    """out <- act'(z) given a = act(z), for a hidden activation, as
    backpropagation applies it; z itself is needed for gelu and silu."""
    cdef Py_ssize_t i, count = a.shape[0] * a.shape[1]
    cdef floating* po = &out[0, 0]
    cdef const floating* pa = &a[0, 0]
    cdef const floating* pz = NULL
    if z is not None:
        if z.shape[0] != a.shape[0] or z.shape[1] != a.shape[1]:
            raise ValueError("z must have a's shape")
        pz = &z[0, 0]
    elif _keeps_preactivations(act):
        raise ValueError(f"activation {act}'s derivative needs z")
    with nogil:
        for i in range(count):
            po[i] = 1
        _times_derivative(po, pa, pz, count, act, 1)


def output_delta(const floating[:, ::1] a, const floating[:, ::1] y,
                 floating[:, ::1] out, int output_act, int loss):
    """out <- dL/dz of the output layer, per sample, given a = act(z)."""
    with nogil:
        _output_delta(output_act, loss, &a[0, 0], &y[0, 0], &out[0, 0],
                      a.shape[0], a.shape[1], False, NULL)


def apply_rule(UpdateRule rule, params, grads, tuple state, double learning_rate, int64_t t):
    """In place: step t >= 1 of `rule` (not plain SGD, which has no stage of
    its own) on params, a flat array whose mean gradient is grads, with the
    rule's state buffers, as the update stage applies it to a unit's
    incoming weights (weight decay on every entry). All are C-contiguous
    arrays of one float type and length."""
    if not rule.needs_gradients or len(state) != rule.n_state_buffers:
        raise ValueError(f"apply_rule needs a rule with a stage of its own and its "
                         f"{rule.n_state_buffers} state buffers")
    if params.dtype == np.float64:
        _apply_rule_to[double](rule, params, grads, state, learning_rate, t)
    else:
        _apply_rule_to[float](rule, params, grads, state, learning_rate, t)


cdef void _apply_rule_to(UpdateRule rule, floating[::1] params, floating[::1] grads,
                         tuple state, double learning_rate, int64_t t):
    cdef floating* buffers[MAX_STATE_BUFFERS]
    cdef floating[::1] buffer
    cdef int i
    for i in range(MAX_STATE_BUFFERS):
        buffers[i] = NULL
        if i < len(state):
            buffer = state[i]
            buffers[i] = &buffer[0]
    cdef _StepRates rates = _step_rates(&rule.rule, learning_rate, t)
    with nogil:
        _rule_step(&rule.rule, &params[0], &grads[0], 1, buffers, params.shape[0], &rates,
                   rule.rule.weight_decay)


def batch_loss(const floating[:, ::1] a, const floating[:, ::1] z,
               const floating[:, ::1] y, int loss):
    """Summed loss over the batch from outputs a and logits z (n, k)."""
    cdef double total
    with nogil:
        total = _batch_loss(loss, &a[0, 0], &z[0, 0], &y[0, 0], a.shape[0],
                            a.shape[1], False, NULL)
    return total


