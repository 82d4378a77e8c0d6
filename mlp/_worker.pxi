# The training loop on several workers (included by _kernels.pyx).
#
# Each hidden layer's units are split between the workers; a worker owns its
# units' rows of W and b, computes their activations in the forward pass,
# and their deltas and parameter update in the backward pass, each GEMM being
# a single-threaded BLAS call on its share. The output layer's forward pass
# (a few units whose softmax and loss need all of them) is split by samples
# instead, or is worker 0's for small feature-major batches. Workers meet at
# a barrier wherever the next stage reads what others wrote:
#   gather (each a range of rows) | each hidden layer | output layer |
#   each delta GEMM (it reads all rows of W_l, so W_l's update waits for it)
# The next batch is gathered into the other input buffer, so the last
# update of one step and the gather of the next need no barrier. With one
# worker this is the plain sequential step, the barriers no-ops.
#
# With augmentation, each worker distorts the rows it gathered before the
# barrier that ends the gather (_distort_rows), so the distortions are
# shared between the workers like the gather itself.
#
# One step reads as its stages: _gather_stage, _hidden_forward_stage,
# _output_stage, then per layer _delta_stage and _update_stage.

from libc.math cimport signbit
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

cdef enum:
    MAX_WORKERS = 64
MAX_TRAIN_WORKERS = MAX_WORKERS

# When the workers split each batch's samples rather than the units
# (_prepare_strategy): at 512 rows per worker and up on several workers,
# and at 2048 rows on one. Measured on 784-300-100-10, float32, 2 cores:
# 2 workers, batch 640 the same either way, 768 1.03x, 1024 1.04x, 4096
# 1.15x faster split; one worker 0.98x at 1024, 1.00x at 2048, 1.05x at 4096.
SPLIT_SAMPLES_MIN_ROWS = 512
SPLIT_SAMPLES_MIN_ROWS_ONE_WORKER = 2048
# Rows per panel of the split-samples pass: a panel's inputs (800 KB for
# MNIST) stay in L2 between its forward product and its weight gradient.
# 128 to 512 measured alike.
PANEL_ROWS = 256
# With bfloat16 products, each panel's forward products pack (and round)
# the weights again: larger panels pack them less often. 784-300-100-10,
# 2 workers, dense inputs, best of 7 interleaved: 1024 rows 1.02-1.05x the
# samples/s of 256 at batches 1024 and 4096; 512 and 2048 in between.
PANEL_ROWS_BF16 = 1024

cdef extern from "_parallel.h" nogil:
    ctypedef struct mlp_barrier:
        pass
    ctypedef void (*mlp_task)(void* ctx, int tid, int n_threads) noexcept nogil
    void mlp_prefetch(const void* p)
    void mlp_barrier_wait(mlp_barrier* b, int* sense)
    int mlp_parallel_run(mlp_task fn, void* ctx, int n_threads, mlp_barrier* barrier)


# The model's and the data's float types, as one code for the dispatch below.
cdef enum:
    FLOAT_MODEL_FLOAT_DATA = 0
    FLOAT_MODEL_DOUBLE_DATA = 1
    DOUBLE_MODEL_FLOAT_DATA = 2
    DOUBLE_MODEL_DOUBLE_DATA = 3


cdef struct _TrainRun:
    int dtype_pair             # FLOAT_MODEL_FLOAT_DATA, ...
    void* params
    const Py_ssize_t* sizes
    int n_layers
    int hidden_act
    int output_act
    int loss
    const void* x              # dense: rows (n, inputs); CSR: the non-zero values
    # CSR input (csr_indptr not NULL): row r's non-zero inputs are
    # csr_indices[csr_indptr[r]:csr_indptr[r + 1]], sorted, their values x at
    # the same places. The gather scatters a row into the batch buffer, or,
    # with lists_by_worker, copies its entries into the lists directly.
    const int64_t* csr_indptr
    const int32_t* csr_indices
    const int64_t* labels
    const void* targets        # or, instead of labels, targets (rows of x, k)
                               # of the model's type, row r for x's row r
    const void* sample_weights # NULL, or one weight per row of x (model's type)
    const int64_t* order
    Py_ssize_t n_total
    Py_ssize_t batch_size
    const double* learning_rates   # one per step of the call
    int64_t steps_before       # steps trained before this call: step s of the
                               # call is step steps_before + s + 1 of the run
    _Optimizer opt
    double dropout             # on hidden units
    double input_dropout
    uint64_t dropout_seed
    const mlp_aug_plan* augment    # NULL, or distort every gathered row (float32 data)
    uint64_t augment_seed
    float* augment_work        # one workspace per worker, augment_work_floats apart
    Py_ssize_t augment_work_floats
    double time_limit          # seconds; > 0: stop after the step that passes it
    double started             # monotonic clock at the start
    void* work
    double* batch_losses
    bint feature_major
    bint split_samples         # the strategy: see _choose_strategy
    Py_ssize_t panel_rows      # with split_samples: rows per forward/backward panel
    void* partial_gradients    # with split_samples: per worker, the gradient of its
    Py_ssize_t partial_stride  # samples, laid out like params; workers this many apart
    char has_rows[MAX_WORKERS] # worker w had samples this step (its partial is valid)
    bint gemms_only            # the GEMM bound: the same calls, nothing else
    bint bf16                  # every product's inputs rounded to bfloat16, float32
                               # sums (Network.bf16): GEMMs through _gemm_as; the
                               # sparse first layer's listed inputs, deltas and
                               # weights rounded as they are copied
    void* bf16_panels          # with bf16 and weights_by_input: per worker, its panel
                               # rounded to bfloat16 (the panel itself holds the
                               # float32 weights the optimizer updates), refreshed
                               # as the update stage writes the panel's rows
    # sparse_input: the first layer from each sample's non-zero inputs
    # (_sparse.pxi), forward and weight gradient; row-major batches only.
    bint sparse_input
    int32_t* nonzero_index     # two steps' worth (the next batch is gathered while
    void* nonzero_value        # the last update of this one runs): step s's rows at
    Py_ssize_t* nonzero_count  # (s % 2) * batch_size, row i's entries at i * inputs
    # lists_by_worker (the units split on few workers, rows not distorted:
    # _prepare_sparse_input in _kernels.pyx): each worker
    # lists every row of the batch itself, into lists of its own,
    # 2 * batch_size rows apart (see _gather_stage), through its row buffer
    # (row_stride apart) when rows are converted to the model's type.
    bint lists_by_worker
    void* row_buffers
    Py_ssize_t row_stride
    void* panels               # per worker: its first-layer units' weights by input
    void* gradient_panels      # per worker: their gradient, laid out alike (with
                               # weights_by_input, only its first rows: the sums
                               # of GRADIENT_CHUNK_INPUTS inputs at a time)
    # weights_by_input (the units split on sparse inputs): each worker's
    # panel holds its first-layer units' weights for the whole call, and the
    # optimizer's state for them sits in state_panels (per worker: the rule's
    # opt.n_state arrays in their order), laid out alike; _load_panels and _store_panels
    # move them in and out of params and the optimizer's arrays.
    bint weights_by_input
    void* state_panels
    Py_ssize_t panel_ld, panel_size
    void* delta_panels         # per worker: its units' deltas, (batch, panel_ld)
    Py_ssize_t* input_starts   # per worker: the batch's non-zero inputs listed by
    int32_t* input_samples     # input (_by_input): (inputs + 1,) starts, and
    void* input_values         # (batch * inputs,) rows and values
    mlp_barrier barrier
    char bad[MAX_WORKERS]      # worker w found NaN/inf in its part of a batch
    double part_loss[MAX_WORKERS]  # worker w's share of the batch loss
    bint out_of_time           # worker 0's verdict, read by all after a barrier
    Py_ssize_t steps_done
    int64_t bad_row


cdef inline double _now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + 1e-9 * ts.tv_nsec


cdef inline uint32_t _drop_threshold(double p) noexcept nogil:
    return <uint32_t>(p * 16777216.0 + 0.5)


cdef inline void _share(Py_ssize_t total, int tid, int n_workers, Py_ssize_t align,
                        Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """Worker tid's range [lo, hi) of `total` items, bounds multiples of align."""
    lo[0] = (total * tid // n_workers) // align * align
    hi[0] = total if tid == n_workers - 1 else (total * (tid + 1) // n_workers) // align * align


cdef void _bias_activation_part(floating* z, const floating* b, Py_ssize_t n,
                                Py_ssize_t k, Py_ssize_t u0, Py_ssize_t u1,
                                int act, bint feature_major, floating* kept) noexcept nogil:
    """_bias_activation for units u0..u1 of a layer of k units (kept, if
    not NULL, laid out like z)."""
    cdef Py_ssize_t i
    if feature_major:
        _bias_activation(z + u0 * n, b + u0, n, u1 - u0, act, True, _at(kept, u0 * n))
    elif u0 == 0 and u1 == k:
        _bias_activation(z, b, n, k, act, False, kept)
    else:
        for i in range(n):
            _bias_activation(z + i * k + u0, b + u0, 1, u1 - u0, act, False,
                             _at(kept, i * k + u0))


cdef void _times_derivative_part(floating* d, const floating* a, const floating* z,
                                 Py_ssize_t n, Py_ssize_t k, Py_ssize_t u0, Py_ssize_t u1,
                                 int act, floating output_scale,
                                 bint feature_major) noexcept nogil:
    """_times_derivative for units u0..u1 of a layer of k units (z, if
    not NULL, laid out like a)."""
    cdef Py_ssize_t i
    if feature_major:
        _times_derivative(d + u0 * n, a + u0 * n, _at(<floating*>z, u0 * n), (u1 - u0) * n, act,
                          output_scale)
    elif u0 == 0 and u1 == k:
        _times_derivative(d, a, z, n * k, act, output_scale)
    else:
        for i in range(n):
            _times_derivative(d + i * k + u0, a + i * k + u0, _at(<floating*>z, i * k + u0),
                              u1 - u0, act, output_scale)


cdef void _bias_gradient_part(const floating* d, floating* out, Py_ssize_t n,
                              Py_ssize_t k, Py_ssize_t u0, Py_ssize_t u1,
                              bint feature_major) noexcept nogil:
    """out[u0:u1] = sums over the batch of d for units u0..u1."""
    if feature_major:
        _unit_sums(d + u0 * n, out + u0, n, u1 - u0, n, False, True)
    else:
        _unit_sums(d + u0, out + u0, n, u1 - u0, k, False, False)


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


cdef void _scatter_csr_rows(_TrainRun* run, const data_floating* x, const int64_t* order,
                            floating* xb, Py_ssize_t n, Py_ssize_t d) noexcept nogil:
    """CSR rows order[0..n] of x into xb (n, d), dense, converted to the
    model's type: what _gather_rows does for dense x."""
    cdef Py_ssize_t i, e
    cdef floating* dst
    memset(xb, 0, n * d * sizeof(floating))
    for i in range(n):
        dst = xb + i * d
        for e in range(run.csr_indptr[order[i]], run.csr_indptr[order[i] + 1]):
            dst[run.csr_indices[e]] = <floating>x[e]


cdef bint _row_finite(_TrainRun* run, const data_floating* x, int64_t r,
                      Py_ssize_t d) noexcept nogil:
    """Whether row r of x, dense or CSR, holds no NaN or infinity."""
    if run.csr_indptr != NULL:
        return _all_finite(x + run.csr_indptr[r], run.csr_indptr[r + 1] - run.csr_indptr[r])
    return _all_finite(x + r * d, d)


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


cdef void _batch_targets(_TrainRun* run, floating* yb, floating* wb,
                         Py_ssize_t start, Py_ssize_t n, Py_ssize_t k,
                         bint feature_major) noexcept nogil:
    """The targets of batch rows order[start..start+n] into yb, (n, k) or
    (k, n) feature-major: one-hot from the labels, or copied from the
    targets; and their sample weights into wb (n,) when there are any."""
    cdef Py_ssize_t i, j, r
    cdef const floating* targets = <const floating*>run.targets
    cdef Py_ssize_t sample_stride = _sample_stride(feature_major, n, k)
    cdef Py_ssize_t unit_stride = _unit_stride(feature_major, n, k)
    if run.sample_weights != NULL:
        for i in range(n):
            wb[i] = (<const floating*>run.sample_weights)[run.order[start + i]]
    if targets == NULL:
        memset(yb, 0, n * k * sizeof(floating))
        for i in range(n):
            yb[i * sample_stride + run.labels[run.order[start + i]] * unit_stride] = 1
        return
    for i in range(n):
        r = run.order[start + i]
        for j in range(k):
            yb[i * sample_stride + j * unit_stride] = targets[r * k + j]


cdef void _distort_rows(_TrainRun* run, const data_floating* x, floating* xb,
                        Py_ssize_t start, Py_ssize_t r0, Py_ssize_t r1, int64_t step,
                        int tid) noexcept nogil:
    """Batch rows r0..r1 of xb replaced by random distortions of themselves.

    Row i of step `step` is draw (step - 1) * batch_size + i of the run: its
    distortion depends on the seed and that counter alone, not on which
    worker gathers it. A float32 model's rows are distorted in place; a
    float64 model's come from x (float32, by the Python side's contract)
    through a float32 row in the worker's workspace."""
    cdef Py_ssize_t d = run.sizes[0], i, j
    cdef float* work = run.augment_work + tid * run.augment_work_floats
    cdef float* image = work + mlp_aug_work_floats(run.augment.side)
    cdef uint64_t first_draw = <uint64_t>(step - 1) * <uint64_t>run.batch_size
    if data_floating is float:
        for i in range(r0, r1):
            if floating is float:
                mlp_aug_distort_image(run.augment, xb + i * d, xb + i * d, run.augment_seed,
                                      first_draw + <uint64_t>i, work)
            else:
                mlp_aug_distort_image(run.augment, x + run.order[start + i] * d, image,
                                      run.augment_seed, first_draw + <uint64_t>i, work)
                for j in range(d):
                    xb[i * d + j] = image[j]


# With lists_by_worker, rows listed ahead of the one being listed when its
# loads are issued: batch rows are scattered over the data set, and each
# row's first lines wait on memory. Interleaved against no prefetch: 0.97-0.98x
# the step's time at batch 64 and 200 (plain SGD, momentum, Adam); 4 rows
# ahead measured the same as 2.
cdef enum:
    LIST_PREFETCH_ROWS = 2


cdef bint _gather_stage(_TrainRun* run, const data_floating* x, floating* xb, floating* yb,
                        floating* wb, Py_ssize_t start, Py_ssize_t n, int64_t step,
                        int parity, int tid, int n_workers, int* sense) noexcept nogil:
    """Gather the batch (each worker a range of whole rows), drop inputs,
    list each row's non-zero inputs (sparse_input), build the targets; False
    when the batch holds a NaN/inf row (run.bad_row says which) or the time
    is up, and the run must stop before this step.

    With lists_by_worker nothing is gathered: each worker lists every row
    itself, into its own lists (_list_batch). In the units split both
    workers read every row's list; lists shared between them made each
    step's listing wait for the lines the other worker had read, which cost
    more than listing every row twice."""
    cdef Py_ssize_t d = run.sizes[0], r0, r1, i
    cdef int w_id, nonfinite = 0
    cdef bint stop = False
    _share(n, tid, n_workers, 1, &r0, &r1)
    if run.lists_by_worker:
        _list_batch(run, x, <floating*>run.row_buffers + tid * run.row_stride
                    if run.row_buffers != NULL else NULL, start, n, step, parity, tid)
    else:
        # A row is 3 KB of contiguous memory, which the hardware prefetcher streams.
        if run.csr_indptr != NULL:
            _scatter_csr_rows(run, x, run.order + start + r0, xb + r0 * d, r1 - r0, d)
        else:
            _gather_rows(x, run.order + start + r0, xb + r0 * d, r1 - r0, d)
        # The one input check made here rather than in Python: scanning all
        # of x up front costs more (14 ms for MNIST) than many steps, while
        # the gathered rows are in cache now.
        if not _all_finite(xb + r0 * d, (r1 - r0) * d):
            run.bad[tid] = 1
        elif run.augment != NULL:
            _distort_rows(run, x, xb, start, r0, r1, step, tid)
        if run.input_dropout > 0:
            _dropout(xb, r0, r1, 0, d, d, 1, d, mlp_mask_key_for(run.dropout_seed, step, 0),
                     _drop_threshold(run.input_dropout), <floating>(1 / (1 - run.input_dropout)))
        if run.sparse_input:
            for i in range(r0, r1):
                # The gather has checked the rows already.
                _list_row(run, xb + i * d, parity, i, tid, &nonfinite)
                _round_listed(run, <floating*>NULL, _step_rows(run, parity, tid) + i)
    if tid == 0:
        _batch_targets(run, yb, wb, start, n, run.sizes[run.n_layers], run.feature_major)
        run.out_of_time = (run.time_limit > 0 and start > 0
                           and _now() - run.started >= run.time_limit)
    mlp_barrier_wait(&run.barrier, sense)
    for w_id in range(n_workers):
        if run.bad[w_id]:
            stop = True
    if stop and tid == 0:
        for i in range(n):
            if not _row_finite(run, x, run.order[start + i], d):
                run.bad_row = run.order[start + i]
                break
    return not (stop or run.out_of_time)


cdef inline Py_ssize_t _step_rows(_TrainRun* run, int parity, int tid) noexcept nogil:
    """Where worker tid reads step parity's rows in the lists of non-zero
    inputs: its own lists with lists_by_worker, else the shared ones."""
    return (2 * tid * run.batch_size if run.lists_by_worker else 0) + parity * run.batch_size


cdef inline void _list_row(_TrainRun* run, const floating* x, int parity, Py_ssize_t i,
                           int tid, int* nonfinite) noexcept nogil:
    """x (inputs,) as batch row i's list of non-zero inputs (for worker tid)."""
    cdef Py_ssize_t d = run.sizes[0], row = _step_rows(run, parity, tid) + i
    run.nonzero_count[row] = _nonzeros(x, d, run.nonzero_index + row * d,
                                       <floating*>run.nonzero_value + row * d, nonfinite)


cdef inline void _round_listed(_TrainRun* run, floating* model_type,
                               Py_ssize_t row) noexcept nogil:
    """With bf16, list `row`'s values rounded to bfloat16: the sparse first
    layer's inputs, as _layer_gemm would round them (after the input
    dropout, as the GEMM sees the dropped rows). model_type only picks
    the specialisation."""
    if run.bf16:
        _round_to_bf16(<floating*>run.nonzero_value + row * run.sizes[0],
                       run.nonzero_count[row])


cdef inline Py_ssize_t _csr_nonzeros(_TrainRun* run, const data_floating* x, int64_t r,
                                     int32_t* index, floating* value,
                                     int* nonfinite) noexcept nogil:
    """CSR row r of x as a list of non-zero inputs (index, value; returns
    their count), converted to the model's type: the list _nonzeros makes
    of the dense row, without reading its zeros. An entry whose bits are all
    zero after the conversion (an explicit zero) is left out, as _nonzeros
    leaves it out; NaN and infinities set nonfinite[0]."""
    cdef Py_ssize_t e, count = 0
    cdef floating v
    for e in range(run.csr_indptr[r], run.csr_indptr[r + 1]):
        v = <floating>x[e]
        if not (v - v == 0):
            nonfinite[0] = 1
        if v != 0 or signbit(v):
            index[count] = run.csr_indices[e]
            value[count] = v
            count += 1
    return count


cdef void _list_batch(_TrainRun* run, const data_floating* x, floating* row, Py_ssize_t start,
                      Py_ssize_t n, int64_t step, int parity, int tid) noexcept nogil:
    """Every row of the batch into worker tid's own lists (lists_by_worker),
    read where it is in x, or when x holds another type than the model's
    through row, the worker's (inputs,) buffer, converted; then its inputs
    dropped out, on the list. The lists' own check finds NaN and
    infinities (before the dropout, which could hide them); run.bad[tid]
    says so."""
    cdef Py_ssize_t d = run.sizes[0], i, at
    cdef int nonfinite = 0
    cdef const floating* source
    cdef mlp_mask_key input_mask = mlp_mask_key_for(run.dropout_seed, step, 0)
    cdef uint32_t threshold = _drop_threshold(run.input_dropout)
    cdef floating scale = <floating>(1 / (1 - run.input_dropout))
    for i in range(n):
        if run.csr_indptr != NULL:
            at = _step_rows(run, parity, tid) + i
            run.nonzero_count[at] = _csr_nonzeros(
                run, x, run.order[start + i], run.nonzero_index + at * d,
                <floating*>run.nonzero_value + at * d, &nonfinite)
        else:
            if i + LIST_PREFETCH_ROWS < n:
                _prefetch_rows(x, run.order + start + i + LIST_PREFETCH_ROWS, 1, d)
            if floating is data_floating:
                source = x + run.order[start + i] * d
            else:
                _gather_rows(x, run.order + start + i, row, 1, d)
                source = row
            _list_row(run, source, parity, i, tid, &nonfinite)
        at = _step_rows(run, parity, tid) + i
        if run.input_dropout > 0:
            run.nonzero_count[at] = _drop_listed(
                run.nonzero_index + at * d, <floating*>run.nonzero_value + at * d,
                run.nonzero_count[at], <uint32_t>(i * d), input_mask, threshold, scale)
        _round_listed(run, row, at)
    if nonfinite:
        run.bad[tid] = 1


cdef void _prefetch_next_batch(_TrainRun* run, const data_floating* x, Py_ssize_t start,
                               Py_ssize_t n, int tid, int n_workers) noexcept nogil:
    # Only while the next batch's share fits in cache with room to spare: at
    # batch 256 (800 KB) the GEMMs evicted it again, and the gather measured
    # slower with the prefetch (400 us) than without (290 us).
    cdef Py_ssize_t d = run.sizes[0], rows, r0, r1
    if start + n >= run.n_total or run.csr_indptr != NULL:
        return
    rows = n if run.n_total - start - n > n else run.n_total - start - n
    _share(rows, tid, n_workers, 1, &r0, &r1)
    if (r1 - r0) * d * sizeof(data_floating) <= 65536:
        _prefetch_rows(x, run.order + start + n + r0, r1 - r0, d)


cdef void _hidden_forward_stage(_TrainRun* run, floating* params, const Py_ssize_t* offsets,
                                floating** acts, floating** kept, Py_ssize_t n, int64_t step,
                                int parity, int tid, int n_workers, int* sense) noexcept nogil:
    """Hidden layers, each split by units: z = a W^T + b (into kept[l] too,
    unless kept is NULL), activation, dropout."""
    cdef Py_ssize_t fan_in, fan_out, u0, u1
    cdef bint feature_major = run.feature_major
    cdef floating* w
    cdef int l
    for l in range(run.n_layers - 1):
        fan_in = run.sizes[l]
        fan_out = run.sizes[l + 1]
        w = params + offsets[l]
        _share(fan_out, tid, n_workers, 1, &u0, &u1)
        if u1 > u0:
            if l == 0 and run.sparse_input:
                _sparse_first_layer(run, acts[1], n, parity, u0, u1, tid)
            else:
                _layer_gemm(feature_major, feature_major and l > 0, w, fan_in, fan_out, u0,
                            u1, acts[l], acts[l + 1], n, run.bf16)
            if not run.gemms_only:
                _bias_activation_part(acts[l + 1], w + fan_out * fan_in, n, fan_out, u0, u1,
                                      run.hidden_act, feature_major,
                                      kept[l + 1] if kept != NULL else NULL)
                if run.dropout > 0:
                    _dropout(acts[l + 1], 0, n, u0, u1,
                             _sample_stride(feature_major, n, fan_out),
                             _unit_stride(feature_major, n, fan_out), fan_out,
                             mlp_mask_key_for(run.dropout_seed, step, l + 1),
                             _drop_threshold(run.dropout), <floating>(1 / (1 - run.dropout)))
        mlp_barrier_wait(&run.barrier, sense)


cdef void _sparse_first_layer(_TrainRun* run, floating* z, Py_ssize_t n, int parity,
                              Py_ssize_t u0, Py_ssize_t u1, int tid) noexcept nogil:
    """z[:, u0:u1] = xb W[u0:u1].T for the batch (n, inputs) of step
    parity, row-major z (n, units), from each row's non-zero inputs and the
    worker's panel, which holds those units' weights by input for the whole
    call (weights_by_input)."""
    _sparse_rows(run, z, 0, n, parity, u0, u1, tid)


cdef void _sparse_rows(_TrainRun* run, floating* z, Py_ssize_t i0, Py_ssize_t i1, int parity,
                       Py_ssize_t u0, Py_ssize_t u1, int tid) noexcept nogil:
    """z[i0:i1, u0:u1] from batch rows i0..i1's non-zero inputs and the
    worker's panel (units u0..u1, transposed)."""
    cdef Py_ssize_t d = run.sizes[0], fan_out = run.sizes[1], i, row
    cdef floating* panel = <floating*>(run.bf16_panels if run.bf16_panels != NULL
                                       else run.panels) + tid * run.panel_size
    for i in range(i0, i1):
        row = _step_rows(run, parity, tid) + i
        _sparse_row(run.nonzero_index + row * d, <const floating*>run.nonzero_value + row * d,
                    run.nonzero_count[row], panel, run.panel_ld, u1 - u0, z + i * fan_out + u0)


cdef void _sparse_weight_gradient(_TrainRun* run, const floating* delta, Py_ssize_t i0,
                                  Py_ssize_t i1, int parity, Py_ssize_t u0, Py_ssize_t u1,
                                  floating alpha, floating beta, floating* out,
                                  int tid) noexcept nogil:
    """out (u1 - u0, inputs) = beta * out + alpha * delta[i0:i1, u0:u1].T xb[i0:i1],
    the first layer's weight gradient of units u0..u1 over batch rows
    i0..i1, from their non-zero inputs (delta row-major (n, units)). The
    rows' lists are turned into one list per input, then each input's
    gradient row, the sum over the rows in which it is non-zero of value
    times the row's deltas, is added up in registers (_sparse_row on the
    worker's copy of those deltas, padded like a panel) into the gradient
    panel, and transposed into out. (Adding each non-zero input's product
    into the panel instead, a read and a write of the panel's row each,
    took twice as long.)"""
    cdef Py_ssize_t d = run.sizes[0], fan_out = run.sizes[1], ld = run.panel_ld
    cdef Py_ssize_t units = u1 - u0, row0 = _step_rows(run, parity, tid) + i0, i, j
    cdef floating* panel = <floating*>run.gradient_panels + tid * run.panel_size
    cdef floating* deltas = <floating*>run.delta_panels + tid * run.batch_size * ld
    cdef Py_ssize_t* start = run.input_starts + tid * (d + 1)
    cdef int32_t* sample = run.input_samples + tid * run.batch_size * d
    cdef floating* value = <floating*>run.input_values + tid * run.batch_size * d
    _by_input(run.nonzero_index + row0 * d, <const floating*>run.nonzero_value + row0 * d,
              run.nonzero_count + row0, i1 - i0, d, start, sample, value)
    for i in range(i1 - i0):
        memcpy(deltas + i * ld, delta + (i0 + i) * fan_out + u0, units * sizeof(floating))
        memset(deltas + i * ld + units, 0, (ld - units) * sizeof(floating))
        if run.bf16:
            _round_to_bf16(deltas + i * ld, units)
    for j in range(d):
        _sparse_row(sample + start[j], value + start[j], start[j + 1] - start[j], deltas, ld,
                    units, panel + j * ld)
    _transposed_update(panel, ld, d, units, alpha, beta, out)


# Inputs whose gradient rows _panel_update_stage sums before applying the
# rule to them: 16 rows of 160 floats (10 KB) stay in L1.
cdef enum:
    GRADIENT_CHUNK_INPUTS = 16


cdef void _panel_update_stage(_TrainRun* run, const floating* delta, Py_ssize_t n,
                              int parity, Py_ssize_t u0, Py_ssize_t u1,
                              const _StepRates* rates, int64_t step, int tid) noexcept nogil:
    """The optimizer's update of the first-layer weights this worker owns,
    where they live during the call (weights_by_input): its panel, (inputs,
    panel_ld). Each input's gradient row is summed as in
    _sparse_weight_gradient, GRADIENT_CHUNK_INPUTS inputs at a time into a
    buffer that stays in L1, and the rule goes over those rows of the panel
    and of its state at once: no gradient panel written out and read back,
    and no transposes. The same arithmetic as the rule on the parameters'
    layout, element by element; the panels' pad columns stay zero. rates:
    the stage's (_update_stage), for optimizer step `step`."""
    cdef Py_ssize_t d = run.sizes[0], fan_out = run.sizes[1], ld = run.panel_ld
    cdef Py_ssize_t units = u1 - u0, row0 = _step_rows(run, parity, tid), i, j, j0, j1, count
    cdef Py_ssize_t chunks = (d + GRADIENT_CHUNK_INPUTS - 1) // GRADIENT_CHUNK_INPUTS, c
    cdef const _Optimizer* opt = &run.opt
    cdef floating* panel = <floating*>run.panels + tid * run.panel_size
    cdef floating* state[MAX_STATE_BUFFERS]
    cdef floating* rows_state[MAX_STATE_BUFFERS]
    cdef int k
    cdef floating* sums = <floating*>run.gradient_panels + tid * run.panel_size
    cdef floating* deltas = <floating*>run.delta_panels + tid * run.batch_size * ld
    cdef Py_ssize_t* start = run.input_starts + tid * (d + 1)
    cdef int32_t* sample = run.input_samples + tid * run.batch_size * d
    cdef floating* value = <floating*>run.input_values + tid * run.batch_size * d
    cdef floating scale = <floating>(-rates.learning_rate / n)
    cdef floating decay = <floating>(1 - rates.learning_rate * opt.weight_decay)
    cdef floating inverse_n = <floating>(1.0 / n)
    for k in range(MAX_STATE_BUFFERS):
        state[k] = _state_panel(run, <floating*>run.state_panels, tid, k)
    _by_input(run.nonzero_index + row0 * d, <const floating*>run.nonzero_value + row0 * d,
              run.nonzero_count + row0, n, d, start, sample, value)
    for i in range(n):
        memcpy(deltas + i * ld, delta + i * fan_out + u0, units * sizeof(floating))
        memset(deltas + i * ld + units, 0, (ld - units) * sizeof(floating))
        if run.bf16:
            _round_to_bf16(deltas + i * ld, units)
    # Every other step goes over the inputs backwards. The weights and the
    # state of momentum or Adam (1 to 1.5 MB a worker at 300 units) outgrow
    # a core's L2; gone over in the same order every step, each row has left
    # the cache by the time it comes round again, while the reverse order
    # starts on the rows the last step touched last. Each row's update is
    # its own, so the order changes no result.
    for c in range(chunks):
        j0 = (c if step % 2 == 0 else chunks - 1 - c) * GRADIENT_CHUNK_INPUTS
        j1 = d if d - j0 < GRADIENT_CHUNK_INPUTS else j0 + GRADIENT_CHUNK_INPUTS
        for j in range(j0, j1):
            _sparse_row(sample + start[j], value + start[j], start[j + 1] - start[j], deltas,
                        ld, units, sums + (j - j0) * ld)
        # Whole rows, pad columns included: their sums, weights and state
        # are zeros, which every rule keeps at zero.
        count = (j1 - j0) * ld
        if opt.code == OPT_SGD:
            _sgd_from_sums(panel + j0 * ld, sums, count, scale, decay)
        else:
            for k in range(MAX_STATE_BUFFERS):
                rows_state[k] = state[k] + j0 * ld if state[k] != NULL else NULL
            _rule_step(opt, panel + j0 * ld, sums, inverse_n, rows_state, count, rates,
                       opt.weight_decay)
        if run.bf16_panels != NULL and opt.max_norm == 0:
            _round_panel_rows(run, panel, j0, j1, tid)
    if opt.max_norm > 0:
        _cap_column_norms(panel, d, ld, units, opt.max_norm)
        if run.bf16_panels != NULL:
            _round_panel_rows(run, panel, 0, d, tid)


cdef inline void _round_panel_rows(_TrainRun* run, const floating* panel, Py_ssize_t j0,
                                   Py_ssize_t j1, int tid) noexcept nogil:
    """Rows j0..j1 of worker tid's panel into its bfloat16 panel, rounded:
    what the sparse first layer reads with bf16 (_sparse_rows)."""
    cdef floating* rounded = <floating*>run.bf16_panels + tid * run.panel_size
    _round_copy_to_bf16(panel + j0 * run.panel_ld, rounded + j0 * run.panel_ld,
                        (j1 - j0) * run.panel_ld)


cdef inline floating* _state_panel(_TrainRun* run, floating* panels, int tid,
                                   int which) noexcept nogil:
    """Worker tid's panel of the optimizer's state array `which` (in the
    order of opt.state) among the state panels (run.state_panels as the
    model's type), or NULL when the optimizer keeps no such state."""
    if which >= run.opt.n_state or not run.weights_by_input:
        return NULL
    return panels + (run.opt.n_state * tid + which) * run.panel_size


cdef void _load_panels(_TrainRun* run, floating* params, int tid, int n_workers) noexcept nogil:
    """At the start of a call (weights_by_input): this worker's first-layer
    units into its panel, their optimizer state into its state panels, and
    the gradient rows' pad columns zeroed."""
    cdef Py_ssize_t d = run.sizes[0], ld = run.panel_ld, u0, u1
    cdef int k
    _share(run.sizes[1], tid, n_workers, 1, &u0, &u1)
    if u1 <= u0:
        return
    _transpose_units(params, d, u0, u1, <floating*>run.panels + tid * run.panel_size, ld)
    if run.bf16_panels != NULL:
        _round_panel_rows(run, <floating*>run.panels + tid * run.panel_size, 0, d, tid)
    for k in range(run.opt.n_state):
        _transpose_units(<const floating*>run.opt.state[k], d, u0, u1,
                         _state_panel(run, <floating*>run.state_panels, tid, k), ld)
    memset(<floating*>run.gradient_panels + tid * run.panel_size, 0,
           (d if d < GRADIENT_CHUNK_INPUTS else GRADIENT_CHUNK_INPUTS) * ld * sizeof(floating))


cdef void _store_panels(_TrainRun* run, floating* params, int tid, int n_workers) noexcept nogil:
    """At the end of a call: _load_panels undone, the panels copied back
    into params and the optimizer's arrays."""
    cdef Py_ssize_t d = run.sizes[0], ld = run.panel_ld, u0, u1
    cdef int k
    _share(run.sizes[1], tid, n_workers, 1, &u0, &u1)
    if u1 <= u0:
        return
    _transposed_update(<floating*>run.panels + tid * run.panel_size, ld, d, u1 - u0, 1, 0,
                       params + u0 * d)
    for k in range(run.opt.n_state):
        _transposed_update(_state_panel(run, <floating*>run.state_panels, tid, k), ld, d,
                           u1 - u0, 1, 0, <floating*>run.opt.state[k] + u0 * d)


cdef void _output_stage(_TrainRun* run, floating* params, const Py_ssize_t* offsets,
                        floating** acts, floating** deltas, floating* logits,
                        const floating* yb, const floating* wb, Py_ssize_t n, Py_ssize_t s,
                        int tid, int n_workers, int* sense) noexcept nogil:
    """The output layer, its loss and its delta, split by samples when they
    are rows (feature-major batches are small; worker 0 takes those whole),
    since a softmax and a loss need all of a sample's units."""
    cdef int L = run.n_layers
    cdef Py_ssize_t k = run.sizes[L], fan_in = run.sizes[L - 1], i0, i1
    cdef bint feature_major = run.feature_major
    cdef floating* w = params + offsets[L - 1]
    if feature_major:
        i0 = 0
        i1 = n if tid == 0 else 0
    else:
        _share(n, tid, n_workers, 1, &i0, &i1)
    run.part_loss[tid] = 0
    if i1 > i0:
        _layer_gemm(feature_major, feature_major and L > 1, w, fan_in, k, 0, k,
                    acts[L - 1] + i0 * fan_in, acts[L] + i0 * k, i1 - i0, run.bf16)
        if not run.gemms_only:
            _add_bias(acts[L] + i0 * k, w + k * fan_in, i1 - i0, k, feature_major)
            memcpy(logits + i0 * k, acts[L] + i0 * k, (i1 - i0) * k * sizeof(floating))
            _apply_activation(acts[L] + i0 * k, i1 - i0, k, run.output_act, feature_major)
            run.part_loss[tid] = _batch_loss(run.loss, acts[L] + i0 * k, logits + i0 * k,
                                             yb + i0 * k, i1 - i0, k, feature_major,
                                             wb + i0 if wb != NULL else NULL)
            _output_delta(run.output_act, run.loss, acts[L] + i0 * k, yb + i0 * k,
                          deltas[L] + i0 * k, i1 - i0, k, feature_major,
                          wb + i0 if wb != NULL else NULL)
    mlp_barrier_wait(&run.barrier, sense)
    _sum_batch_loss(run, s, tid, n_workers)


cdef inline void _sum_batch_loss(_TrainRun* run, Py_ssize_t s, int tid,
                                 int n_workers) noexcept nogil:
    """Step s's loss: the workers' shares, added by worker 0 after a barrier."""
    cdef double total = 0
    cdef int w_id
    if tid == 0 and not run.gemms_only:
        for w_id in range(n_workers):
            total += run.part_loss[w_id]
        run.batch_losses[s] = total


cdef void _delta_stage(_TrainRun* run, floating* params, const Py_ssize_t* offsets,
                       floating** acts, floating** kept, floating** deltas, int l, Py_ssize_t n,
                       int64_t step, int tid, int n_workers, int* sense) noexcept nogil:
    """Layer l's input deltas (l > 0), split by inputs: dL/dz_{l-1} =
    (delta_l W_l) * act'(.), and the forward pass's dropout mask again."""
    cdef Py_ssize_t fan_in = run.sizes[l], fan_out = run.sizes[l + 1], f0, f1
    cdef bint feature_major = run.feature_major
    cdef floating keep_probability = <floating>(1 - run.dropout)
    _share(fan_in, tid, n_workers, 1, &f0, &f1)
    if f1 > f0:
        _delta_gemm(feature_major, params + offsets[l], fan_in, fan_out, f0, f1,
                    deltas[l + 1], deltas[l], n, run.bf16)
        if not run.gemms_only:
            _times_derivative_part(deltas[l], acts[l], kept[l] if kept != NULL else NULL, n,
                                   fan_in, f0, f1, run.hidden_act, keep_probability,
                                   feature_major)
            if run.dropout > 0:
                _dropout(deltas[l], 0, n, f0, f1, _sample_stride(feature_major, n, fan_in),
                         _unit_stride(feature_major, n, fan_in), fan_in,
                         mlp_mask_key_for(run.dropout_seed, step, l),
                         _drop_threshold(run.dropout), 1 / keep_probability)
    # Layer l's weights change only after every worker has read them here.
    mlp_barrier_wait(&run.barrier, sense)


cdef void _update_stage(_TrainRun* run, floating* params, const Py_ssize_t* offsets,
                        floating** acts, floating** deltas, floating* bias_sums, int l,
                        Py_ssize_t n, double learning_rate, int64_t step, int parity, int tid,
                        int n_workers) noexcept nogil:
    """The optimizer's update of the units of layer l this worker owns."""
    cdef Py_ssize_t fan_in = run.sizes[l], fan_out = run.sizes[l + 1], u0, u1, j
    cdef bint feature_major = run.feature_major
    cdef bint in_panel = l == 0 and run.weights_by_input
    cdef floating* w = params + offsets[l]
    cdef floating* b = w + fan_out * fan_in
    cdef floating* grads
    cdef const _Optimizer* opt = &run.opt
    cdef floating step_size = <floating>(learning_rate / n)
    cdef floating inverse_n = <floating>(1.0 / n)
    cdef _StepRates rates = _step_rates(opt, learning_rate, step)
    _share(fan_out, tid, n_workers, 1, &u0, &u1)
    if u1 <= u0:
        return
    if in_panel:
        # The weights (and their max-norm) in the worker's panel; the biases below.
        _panel_update_stage(run, deltas[1], n, parity, u0, u1, &rates, step, tid)
    if opt.code == OPT_SGD:
        # W = (1 - lr wd) W - lr / n * delta^T a, in the GEMM itself.
        if not in_panel:
            _weight_gemm(feature_major, feature_major and l > 0, acts[l], deltas[l + 1],
                         fan_in, fan_out, u0, u1, n, -step_size,
                         <floating>(1 - learning_rate * opt.weight_decay), w, run.bf16)
        if run.gemms_only:
            return
        _bias_gradient_part(deltas[l + 1], bias_sums, n, fan_out, u0, u1, feature_major)
        for j in range(u0, u1):
            b[j] = b[j] - step_size * bias_sums[j]
    else:
        grads = <floating*>opt.gradients + offsets[l]
        if not in_panel:
            _weight_gemm(feature_major, feature_major and l > 0, acts[l], deltas[l + 1],
                         fan_in, fan_out, u0, u1, n, inverse_n, 0, grads, run.bf16)
        if run.gemms_only:
            return
        _bias_gradient_part(deltas[l + 1], grads + fan_out * fan_in, n, fan_out, u0, u1,
                            feature_major)
        for j in range(u0, u1):
            grads[fan_out * fan_in + j] *= inverse_n
        if not in_panel:
            _apply_rule(opt, params, offsets[l] + u0 * fan_in, (u1 - u0) * fan_in, &rates,
                        opt.weight_decay)
        _apply_rule(opt, params, offsets[l] + fan_out * fan_in + u0, u1 - u0, &rates, 0)
    if opt.max_norm > 0 and not in_panel:
        _cap_row_norms(w + u0 * fan_in, u1 - u0, fan_in, opt.max_norm)


cdef void _sample_split_stage(_TrainRun* run, floating* params, const Py_ssize_t* offsets,
                              floating** acts, floating** kept, floating** deltas,
                              floating* logits,
                              const floating* yb, const floating* wb, Py_ssize_t n,
                              int64_t step, int parity, int tid, int n_workers) noexcept nogil:
    """The forward pass, the loss and every layer's delta for this worker's
    samples (the rows it gathered), all units at once, panel_rows rows at a
    time so that what one product writes is still in cache when the next
    stage reads it. Needs no barrier: a worker reads only its own rows and
    the weights, which change only after the barrier that ends this stage."""
    cdef int L = run.n_layers, l
    cdef const Py_ssize_t* sizes = run.sizes
    cdef Py_ssize_t k = sizes[L], r0, r1, i0, i1, rows, fan_in, fan_out
    cdef floating* w
    cdef floating keep_probability = <floating>(1 - run.dropout)
    cdef uint32_t drop_threshold = _drop_threshold(run.dropout)
    cdef double loss = 0
    cdef floating* partial = <floating*>run.partial_gradients + tid * run.partial_stride
    _share(n, tid, n_workers, 1, &r0, &r1)
    run.has_rows[tid] = r1 > r0
    if run.sparse_input and r1 > r0:
        # Every unit of the first layer, for this worker's rows.
        _transpose_units(params, sizes[0], 0, sizes[1],
                         <floating*>run.panels + tid * run.panel_size, run.panel_ld)
        if run.bf16:
            # A copy for this step only: rounded in place.
            _round_to_bf16(<floating*>run.panels + tid * run.panel_size, run.panel_size)
    i0 = r0
    while i0 < r1:
        i1 = i0 + run.panel_rows if r1 - i0 > run.panel_rows else r1
        rows = i1 - i0
        for l in range(L - 1):
            fan_in = sizes[l]
            fan_out = sizes[l + 1]
            w = params + offsets[l]
            if l == 0 and run.sparse_input:
                _sparse_rows(run, acts[1], i0, i1, parity, 0, fan_out, tid)
            else:
                _layer_gemm(False, False, w, fan_in, fan_out, 0, fan_out,
                            acts[l] + i0 * fan_in, acts[l + 1] + i0 * fan_out, rows, run.bf16)
            if not run.gemms_only:
                _bias_activation(acts[l + 1] + i0 * fan_out, w + fan_out * fan_in, rows,
                                 fan_out, run.hidden_act, False,
                                 kept[l + 1] + i0 * fan_out if kept != NULL else NULL)
                if run.dropout > 0:
                    _dropout(acts[l + 1], i0, i1, 0, fan_out, fan_out, 1, fan_out,
                             mlp_mask_key_for(run.dropout_seed, step, l + 1), drop_threshold,
                             <floating>(1 / (1 - run.dropout)))
        fan_in = sizes[L - 1]
        w = params + offsets[L - 1]
        _layer_gemm(False, False, w, fan_in, k, 0, k, acts[L - 1] + i0 * fan_in,
                    acts[L] + i0 * k, rows, run.bf16)
        if not run.gemms_only:
            _add_bias(acts[L] + i0 * k, w + k * fan_in, rows, k, False)
            memcpy(logits + i0 * k, acts[L] + i0 * k, rows * k * sizeof(floating))
            _apply_activation(acts[L] + i0 * k, rows, k, run.output_act, False)
            loss += _batch_loss(run.loss, acts[L] + i0 * k, logits + i0 * k, yb + i0 * k,
                                rows, k, False, wb + i0 if wb != NULL else NULL)
            _output_delta(run.output_act, run.loss, acts[L] + i0 * k, yb + i0 * k,
                          deltas[L] + i0 * k, rows, k, False, wb + i0 if wb != NULL else NULL)
        for l in range(L - 1, -1, -1):
            fan_in = sizes[l]
            fan_out = sizes[l + 1]
            # This panel's share of layer l's gradient, added to the worker's own.
            if l == 0 and run.sparse_input:
                _sparse_weight_gradient(run, deltas[1], i0, i1, parity, 0, fan_out, 1,
                                        0 if i0 == r0 else 1, partial, tid)
            else:
                _weight_gemm(False, False, acts[l] + i0 * fan_in, deltas[l + 1] + i0 * fan_out,
                             fan_in, fan_out, 0, fan_out, rows, 1, 0 if i0 == r0 else 1,
                             partial + offsets[l], run.bf16)
            if not run.gemms_only:
                _unit_sums(deltas[l + 1] + i0 * fan_out, partial + offsets[l] + fan_out * fan_in,
                           rows, fan_out, fan_out, i0 != r0, False)
            if l == 0:
                break
            _delta_gemm(False, params + offsets[l], fan_in, fan_out, 0, fan_in,
                        deltas[l + 1] + i0 * fan_out, deltas[l] + i0 * fan_in, rows, run.bf16)
            if not run.gemms_only:
                _times_derivative(deltas[l] + i0 * fan_in, acts[l] + i0 * fan_in,
                                  kept[l] + i0 * fan_in if kept != NULL else NULL,
                                  rows * fan_in, run.hidden_act, keep_probability)
                if run.dropout > 0:
                    _dropout(deltas[l], i0, i1, 0, fan_in, fan_in, 1, fan_in,
                             mlp_mask_key_for(run.dropout_seed, step, l), drop_threshold,
                             1 / keep_probability)
        i0 = i1
    run.part_loss[tid] = loss


cdef void _summed_update_stage(_TrainRun* run, floating* params, const Py_ssize_t* offsets,
                               int l, Py_ssize_t n, double learning_rate, int64_t step,
                               int tid, int n_workers) noexcept nogil:
    """The optimizer's update of the units of layer l this worker owns, from
    the sum of every worker's partial gradient (_sample_split_stage)."""
    cdef Py_ssize_t fan_in = run.sizes[l], fan_out = run.sizes[l + 1], u0, u1, first
    cdef Py_ssize_t count
    cdef floating* w = params + offsets[l]
    cdef const floating* partials = <const floating*>run.partial_gradients
    cdef floating* grads
    cdef const _Optimizer* opt = &run.opt
    cdef floating step_size = <floating>(learning_rate / n)
    cdef floating decay = <floating>(1 - learning_rate * opt.weight_decay)
    cdef _StepRates rates = _step_rates(opt, learning_rate, step)
    cdef int part
    _share(fan_out, tid, n_workers, 1, &u0, &u1)
    if u1 <= u0:
        return
    # Two ranges: the units' weight rows, then their biases.
    for part in range(2):
        if part == 0:
            first = offsets[l] + u0 * fan_in
            count = (u1 - u0) * fan_in
        else:
            first = offsets[l] + fan_out * fan_in + u0
            count = u1 - u0
        if opt.code == OPT_SGD:
            _sgd_from_partials(params + first, partials + first, run.partial_stride,
                               run.has_rows, n_workers, count, step_size,
                               decay if part == 0 else 1)
        else:
            grads = <floating*>opt.gradients + first
            _sum_partials(grads, partials + first, run.partial_stride, run.has_rows,
                          n_workers, count, <floating>(1.0 / n))
            _apply_rule(opt, params, first, count, &rates,
                        opt.weight_decay if part == 0 else 0)
    if opt.max_norm > 0:
        _cap_row_norms(w + u0 * fan_in, u1 - u0, fan_in, opt.max_norm)


cdef void _sum_partials(floating* out, const floating* partials, Py_ssize_t stride,
                        const char* has_rows, int n_workers, Py_ssize_t count,
                        floating scale) noexcept nogil:
    """out = scale * (sum of the workers' partials), those with rows only."""
    cdef Py_ssize_t i
    cdef int w_id
    cdef bint first = True
    for w_id in range(n_workers):
        if not has_rows[w_id]:
            continue
        if first:
            for i in range(count):
                out[i] = partials[w_id * stride + i]
            first = False
        else:
            for i in range(count):
                out[i] += partials[w_id * stride + i]
    for i in range(count):
        out[i] *= scale


cdef void _sgd_from_partials(floating* params, const floating* partials, Py_ssize_t stride,
                             const char* has_rows, int n_workers, Py_ssize_t count,
                             floating step_size, floating decay) noexcept nogil:
    """params = decay * params - step_size * (sum of the workers' partials)."""
    cdef Py_ssize_t i
    cdef int w_id
    cdef floating total
    for i in range(count):
        total = 0
        for w_id in range(n_workers):
            if has_rows[w_id]:
                total = total + partials[w_id * stride + i]
        params[i] = decay * params[i] - step_size * total


cdef void _train_worker(floating* params, const data_floating* x, _TrainRun* run,
                        int tid, int n_workers) noexcept nogil:
    cdef int L = run.n_layers, l, sense = 0
    cdef const Py_ssize_t* sizes = run.sizes
    cdef Py_ssize_t d = sizes[0], m = run.batch_size, start = 0, n, s = 0
    cdef int64_t step
    cdef bint keep = _keeps_preactivations(run.hidden_act) and not run.gemms_only
    cdef _Carve c = _carve(sizes, L, m, keep)
    cdef floating* workspace = <floating*>run.work
    cdef floating* xb
    cdef floating* yb = workspace + c.targets
    cdef floating* wb = workspace + c.sample_weights if run.sample_weights != NULL else NULL
    cdef floating* acts[MAX_LAYERS + 1]
    cdef floating* kept_buffers[MAX_LAYERS + 1]  # hidden layers' z, when keep
    cdef floating** kept = kept_buffers if keep else NULL
    cdef floating* deltas[MAX_LAYERS + 1]   # deltas[l]: dL/dz of layer l's outputs
    cdef floating* bias_sums[MAX_LAYERS + 1]
    cdef Py_ssize_t offsets[MAX_LAYERS + 1]

    if run.augment != NULL:
        mlp_aug_work_init(run.augment.side, run.augment_work + tid * run.augment_work_floats)
    offsets[0] = 0
    for l in range(L):
        offsets[l + 1] = offsets[l] + sizes[l + 1] * (sizes[l] + 1)

    if run.weights_by_input:
        _load_panels(run, params, tid, n_workers)
    while start < run.n_total:
        n = m if run.n_total - start > m else run.n_total - start
        step = run.steps_before + s + 1
        # Step s reads input buffer s % 2 (see the comment at the top).
        xb = workspace + c.inputs + (s & 1) * m * d
        _point_acts(workspace, sizes, L, n, xb, acts)
        if keep:
            _point_acts(workspace + c.preactivations, sizes, L - 1, n, NULL, kept)
        deltas[L] = workspace + c.deltas
        bias_sums[L] = workspace + c.bias_sums
        for l in range(L - 1, 0, -1):
            deltas[l] = deltas[l + 1] + n * sizes[l + 1]
            bias_sums[l] = bias_sums[l + 1] + sizes[l + 1]

        if not run.gemms_only:
            if not _gather_stage(run, x, xb, yb, wb, start, n, step, s & 1, tid, n_workers,
                                 &sense):
                break
            _prefetch_next_batch(run, x, start, n, tid, n_workers)
        if run.split_samples:
            _sample_split_stage(run, params, offsets, acts, kept, deltas, workspace + c.logits,
                                yb, wb, n, step, s & 1, tid, n_workers)
            # Every delta is done and no weight has changed yet.
            mlp_barrier_wait(&run.barrier, &sense)
            _sum_batch_loss(run, s, tid, n_workers)
            for l in range(L - 1, -1, -1):
                _summed_update_stage(run, params, offsets, l, n, run.learning_rates[s], step,
                                     tid, n_workers)
        else:
            _hidden_forward_stage(run, params, offsets, acts, kept, n, step, s & 1, tid,
                                  n_workers, &sense)
            _output_stage(run, params, offsets, acts, deltas, workspace + c.logits, yb, wb, n,
                          s, tid, n_workers, &sense)
            for l in range(L - 1, -1, -1):
                if l > 0:
                    _delta_stage(run, params, offsets, acts, kept, deltas, l, n, step, tid,
                                 n_workers, &sense)
                _update_stage(run, params, offsets, acts, deltas, bias_sums[l + 1], l, n,
                              run.learning_rates[s], step, s & 1, tid, n_workers)
        start += n
        s += 1
    if run.weights_by_input:
        _store_panels(run, params, tid, n_workers)
    if tid == 0:
        run.steps_done = s


cdef void _train_task(void* ctx, int tid, int n_workers) noexcept nogil:
    cdef _TrainRun* run = <_TrainRun*>ctx
    if run.dtype_pair == FLOAT_MODEL_FLOAT_DATA:
        _train_worker(<float*>run.params, <const float*>run.x, run, tid, n_workers)
    elif run.dtype_pair == FLOAT_MODEL_DOUBLE_DATA:
        _train_worker(<float*>run.params, <const double*>run.x, run, tid, n_workers)
    elif run.dtype_pair == DOUBLE_MODEL_FLOAT_DATA:
        _train_worker(<double*>run.params, <const float*>run.x, run, tid, n_workers)
    else:
        _train_worker(<double*>run.params, <const double*>run.x, run, tid, n_workers)


def splits_samples(Py_ssize_t batch_size, int n_workers, bint feature_major):
    """Whether train_steps splits each batch's samples between the workers
    (rather than every layer's units) for these shapes."""
    n_workers = max(1, min(n_workers, MAX_WORKERS))
    if feature_major:
        return False
    if n_workers == 1:
        return batch_size >= SPLIT_SAMPLES_MIN_ROWS_ONE_WORKER
    return batch_size // n_workers >= SPLIT_SAMPLES_MIN_ROWS


cdef object _prepare_strategy(_TrainRun* run, int n_workers, Py_ssize_t n_params, dtype):
    """Pick how the workers share a step, from the shapes; returns the buffer
    the strategy needs (to be kept alive for the call), or None.

    Units split (the default): every stage is split by units, so each
    worker's GEMMs are its rows of W over the whole batch, and its part of
    the weight gradient is the update itself: nothing to add up, but a
    barrier after every layer. Samples split (large batches,
    split_samples): each worker takes its rows of the batch through the
    forward pass and every delta, in panels of rows, and adds up its own
    gradient of every parameter while the panel is in cache; after one
    barrier each worker updates its units from the sum of all the workers'
    gradients. That extra pass over the parameters (one per worker) pays
    for itself only on large batches (bench/README.md)."""
    run.split_samples = splits_samples(run.batch_size, n_workers, run.feature_major)
    run.panel_rows = PANEL_ROWS_BF16 if run.bf16 else PANEL_ROWS
    if not run.split_samples:
        return None
    # Each worker's partial gradient on its own cache lines.
    run.partial_stride = (n_params + 15) // 16 * 16
    buffer = np.empty(max(1, min(n_workers, MAX_WORKERS)) * run.partial_stride, dtype=dtype)
    run.partial_gradients = <void*><uintptr_t>buffer.ctypes.data
    return buffer


cdef int _run_workers(_TrainRun* run, int n_workers) noexcept nogil:
    memset(run.bad, 0, sizeof(run.bad))
    run.steps_done = 0
    run.bad_row = -1
    run.out_of_time = False
    run.started = _now()
    if n_workers > MAX_WORKERS:
        n_workers = MAX_WORKERS
    return mlp_parallel_run(_train_task, run, n_workers, &run.barrier)
