"""The full-batch objective that the estimators' ``solver="lbfgs"`` minimises.

scikit-learn's MLP objective, computed by mlp's kernels: the (weighted) mean
loss over the samples plus ``0.5 * alpha * ||W||^2`` over the weights alone,
both divided by the sum of the sample weights, and its gradient. For a
classifier, the value is scikit-learn's log-loss of the output
probabilities clipped to [eps, 1 - eps] (eps of the model's dtype), as
scikit-learn computes it (``_kernels.clipped_log_loss``), from the
outputs of the forward pass: the kernel's loss,
exact from the logits, differs from it wherever a probability is that
extreme, which L-BFGS's line search meets when it tries a long step (and
which float32 meets often: -log(eps) is only 15.9 there); the kernel writes
the outputs as it computes the gradient. The gradient is
the kernel's either way, scikit-learn's too: that of the unclipped loss. The rows are
split into one block per worker thread; each block goes through
``_kernels.rows_loss_and_gradients`` (which releases the GIL) and the blocks' sums
are added.

Sparse X (a scipy.sparse CSR matrix) is never made dense: each block is a
``_kernels.CsrMatrix`` whose first layer the kernel computes from its
non-zeros, and whose first-layer gradient it adds up by input, so that
memory is the matrix (and its blocks' copy) plus a chunk's activations and
two (inputs, units) arrays a worker.

The vector that the optimiser sees is laid out as scikit-learn packs its
parameters (every ``coefs_[l]``, shape (n_in, n_out), row-major, then every
``intercepts_[l]``), not as the model keeps them ([W_0 (n_out, n_in), b_0,
W_1, ...]): L-BFGS-B's result does not depend on the order of the variables
in exact arithmetic, but its sums do in float arithmetic, and the same order
keeps the path as close to scikit-learn's as the rounding of the loss and
gradient allows.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import scipy.sparse

from . import _kernels

# Rows per kernel call within a block: as Model.loss does it, big enough for
# the GEMMs to run near peak, small enough for the activations to stay in cache.
_CHUNK = 1024
# Sparse X: the workspace keeps room for two chunks of dense rows (the gather's
# buffers, unused here), so the chunk shrinks with the number of inputs to
# keep that room near this many elements.
_SPARSE_CHUNK_ELEMENTS = 2 ** 21
# Sparse X: a block's first-layer deltas are kept (for its gradient by
# column) when they take at most twice its non-zeros' column listing, or
# this many bytes.
_DELTAS_BYTES = 64 * 2 ** 20
# From this many parameters on, the vector is permuted layer by layer (see
# FullBatchObjective.__init__); below it, one gather is quicker in Python.
_BY_LAYER_PARAMS = 50_000


def _csr_block(X):
    """A scipy.sparse CSR block of rows as the kernel's CsrMatrix (its own
    canonical copy: sorted indices, no duplicates)."""
    X = scipy.sparse.csr_matrix(X, copy=True)
    X.sum_duplicates()
    return _kernels.CsrMatrix(X.data, X.indices.astype(np.int32, copy=False),
                              X.indptr.astype(np.int64, copy=False), X.shape[1])


def _keeps_deltas(x, units):
    """Whether a block of sparse rows x (CsrMatrix) keeps its first-layer
    deltas, (rows, units rounded up to a cache line), for its gradient by
    column: where they take at most twice the column listing of its
    non-zeros, or _DELTAS_BYTES."""
    itemsize = x.dtype.itemsize
    line = 64 // itemsize
    deltas = x.shape[0] * -(-units // line) * line * itemsize
    return deltas <= max(2 * len(x.data) * (4 + itemsize), _DELTAS_BYTES)


def sklearn_order(layer_sizes):
    """Indices `to_model` such that ``x[to_model]`` is the model's flat
    parameter array for x in scikit-learn's packed order (coefs_ then
    intercepts_).

    Parameters
    ----------
    layer_sizes : sequence of int
        Units per layer, inputs first.

    Returns
    -------
    ndarray of intp, shape (n_params,)
    """
    pairs = list(zip(layer_sizes[:-1], layer_sizes[1:]))
    n_weights = sum(n_in * n_out for n_in, n_out in pairs)
    to_model = []
    weight_start, bias_start = 0, n_weights
    for n_in, n_out in pairs:
        # The model's W (n_out, n_in) is coefs_ (n_in, n_out) transposed.
        coef = weight_start + np.arange(n_in * n_out).reshape(n_in, n_out)
        to_model += [coef.T.ravel(), bias_start + np.arange(n_out)]
        weight_start += n_in * n_out
        bias_start += n_out
    return np.concatenate(to_model).astype(np.intp)


class FullBatchObjective:
    """scikit-learn's MLP loss and its gradient over a whole data set, as a
    function of the parameters in scikit-learn's packed order.

    Parameters
    ----------
    model : mlp.Model
        The network; its parameters are overwritten by each evaluation (with
        sparse X and a big network, all but the first layer's weights, which
        go to a panel: :meth:`set_parameters` writes them all).
    X : ndarray or scipy.sparse CSR matrix of the model's dtype, shape (n_samples, n_inputs)
        C-contiguous (dense) and checked (finite).
    Y : ndarray of the model's dtype, shape (n_samples, n_outputs)
        Targets: one-hot rows (softmax), 0/1 indicators (sigmoid) or values.
    loss_code : int
        The kernel's code of the loss (``mlp.model.loss_code``).
    sample_weight : ndarray of float64, shape (n_samples,), or None
        Non-negative, not all zero.
    alpha : float
        Strength of the L2 penalty on the weights (not the biases).
    loss_scale : float
        Factor on the mean loss in the value, not in the gradient: 1 /
        n_outputs for scikit-learn's squared error, a mean over the outputs
        whose gradient scikit-learn takes as if it were their sum.
    n_threads : int
        Worker threads sharing the rows.
    """

    def __init__(self, model, X, Y, loss_code, sample_weight, alpha, loss_scale, n_threads):
        self.model = model
        self.loss_code = loss_code
        self.alpha = float(alpha)
        self.loss_scale = float(loss_scale)
        n_samples = X.shape[0]
        self.weight_sum = float(n_samples if sample_weight is None else sample_weight.sum())
        weights = (None if sample_weight is None
                   else np.ascontiguousarray(sample_weight, dtype=model.dtype))
        n_blocks = max(1, min(int(n_threads), n_samples))
        edges = np.linspace(0, n_samples, n_blocks + 1).astype(int)
        sparse = scipy.sparse.issparse(X)
        outputs = not model.is_regressor
        self._blocks = [_kernels.Rows(_csr_block(X[a:b]) if sparse else X[a:b], Y[a:b],
                                      None if weights is None else weights[a:b],
                                      np.empty_like(Y[a:b]) if outputs else None)
                        for a, b in zip(edges[:-1], edges[1:])]
        chunk = _CHUNK
        if sparse:
            chunk = max(32, min(_CHUNK, _SPARSE_CHUNK_ELEMENTS // max(1, X.shape[1])))
        self.chunk = min(chunk, max(b - a for a, b in zip(edges[:-1], edges[1:])))
        # Each layer's place in both layouts: (n_in, n_out, start of its W in
        # the model's array, of its coefs_ and of its intercepts_ in
        # scikit-learn's). Big networks are permuted layer by layer through
        # transposed views, rather than gathered through the index arrays
        # (which read 8 bytes of index for every parameter).
        self._layers = []
        model_start, coef_start = 0, 0
        self._n_coefs = sum(a * b for a, b in zip(model.layer_sizes[:-1], model.layer_sizes[1:]))
        intercept_start = self._n_coefs
        for n_in, n_out in zip(model.layer_sizes[:-1], model.layer_sizes[1:]):
            self._layers.append((n_in, n_out, model_start, coef_start, intercept_start))
            model_start += (n_in + 1) * n_out
            coef_start += n_in * n_out
            intercept_start += n_out
        self._by_layer = model.n_params >= _BY_LAYER_PARAMS
        if not self._by_layer:
            self._to_model = sklearn_order(model.layer_sizes)
            self._to_sklearn = np.argsort(self._to_model).astype(np.intp)
        self._grads = np.empty((n_blocks, model.n_params), dtype=model.dtype)
        # Sparse X and a big network: the blocks read the first layer's
        # weights from one panel by input, which each evaluation fills from
        # x's coefs_[0] (the same layout: no transpose), and leave their
        # first-layer gradients in panels of that layout, which are added
        # straight into scikit-learn's order. Otherwise each block would
        # transpose the weights into a panel of its own, and its gradient
        # back, and this class would transpose both again.
        self._panels = None
        # Each block's first-layer gradient is then added up input by input
        # from its columns (index_columns: built once here), once the
        # deltas of all its rows are known: a gradient row is written once,
        # where adding each row's deltas into the rows of its non-zero
        # inputs reads and writes one for every non-zero.
        # The deltas take (rows, units) of the block: where that would be
        # far more than the matrix itself (many units, few non-zeros a row),
        # the gradient is added up row by row instead.
        if sparse and self._by_layer and model.compute_dtype is None:
            network = model.kernel_network
            shared = None
            self._panels = []
            for rows in self._blocks:
                by_column = _keeps_deltas(rows.x, model.layer_sizes[1])
                if by_column:
                    rows.x.index_columns()
                self._panels.append(_kernels.FirstLayerPanels(
                    network, shared, len(rows.y) if by_column else 0))
                shared = self._panels[0].weights
        self._softmax = model.output == "softmax"
        self._per_row = [np.empty(len(rows.y)) for rows in self._blocks]
        self._penalty = self._rounded = self._weights = None
        self.n_evaluations = 0

    def initial_point(self):
        """The model's parameters in scikit-learn's packed order, float64."""
        params = self.model.parameters
        if not self._by_layer:
            return params.astype(np.float64)[self._to_sklearn]
        x = np.empty(self.model.n_params, dtype=np.float64)
        for n_in, n_out, start, coef, intercept in self._layers:
            weights = start + n_in * n_out
            x[coef:coef + n_in * n_out].reshape(n_in, n_out)[...] = \
                params[start:weights].reshape(n_out, n_in).T
            x[intercept:intercept + n_out] = params[weights:weights + n_out]
        return x

    def set_parameters(self, x):
        """Write x (scikit-learn's packed order) into the model."""
        self._set_parameters(x, False)

    def _set_parameters(self, x, first_into_panel):
        """x into the model; with first_into_panel, the first layer's weights
        into the shared panel instead (where the blocks read them)."""
        params = self.model.parameters
        if not self._by_layer:
            params[...] = x[self._to_model]
            return
        for layer, (n_in, n_out, start, coef, intercept) in enumerate(self._layers):
            weights = start + n_in * n_out
            coefs = x[coef:coef + n_in * n_out].reshape(n_in, n_out)
            if layer == 0 and first_into_panel:
                np.copyto(self._panels[0].weights[:, :n_out], coefs, casting="same_kind")
            else:
                params[start:weights].reshape(n_out, n_in)[...] = coefs.T
            params[weights:weights + n_out] = x[intercept:intercept + n_out]

    def _summed_gradient(self):
        """The blocks' gradients added up in float64, in scikit-learn's order."""
        if not self._by_layer:
            if len(self._grads) == 1:
                return self._grads[0][self._to_sklearn].astype(np.float64, copy=False)
            return self._grads.sum(axis=0, dtype=np.float64)[self._to_sklearn]
        out = np.empty(self.model.n_params, dtype=np.float64)
        for layer, (n_in, n_out, start, coef, intercept) in enumerate(self._layers):
            weights = start + n_in * n_out
            coefs = out[coef:coef + n_in * n_out].reshape(n_in, n_out)
            intercepts = out[intercept:intercept + n_out]
            if layer == 0 and self._panels is not None:
                pass  # __call__'s, with the penalty (_kernels.first_layer_gradient)
            else:
                coefs[...] = self._grads[0, start:weights].reshape(n_out, n_in).T
                for grads in self._grads[1:]:
                    coefs += grads[start:weights].reshape(n_out, n_in).T
            intercepts[...] = self._grads[0, weights:weights + n_out]
            for grads in self._grads[1:]:
                intercepts += grads[weights:weights + n_out]
        return out

    @contextmanager
    def running(self):
        """Context for evaluations: holds the model's lock, with BLAS on one
        thread (the workers are the parallelism), and the worker threads."""
        network = self.model.kernel_network
        per_block = _kernels.workspace_size(network.sizes, self.chunk,
                                            network.hidden_activation)
        with self.model.locked():
            work = self.model.workspace(self.chunk, copies=len(self._blocks))
            self._works = [work[i * per_block:(i + 1) * per_block]
                           for i in range(len(self._blocks))]
            if len(self._blocks) == 1:
                self._pool = None
                yield self
                return
            with ThreadPoolExecutor(len(self._blocks)) as pool:
                self._pool = pool
                try:
                    yield self
                finally:
                    self._pool = None

    def _block(self, i):
        """Block i's weighted loss sum; its gradient into self._grads[i]."""
        rows = self._blocks[i]
        # A classifier's value is clipped_log_loss's, from the outputs.
        total = _kernels.rows_loss_and_gradients(self.model.kernel_network, self.loss_code,
                                                 rows, self._grads[i], self._works[i],
                                                 self.chunk,
                                                 None if self._panels is None
                                                 else self._panels[i],
                                                 rows.outputs is None)
        if rows.outputs is None:
            return total
        per_row = self._per_row[i]
        _kernels.clipped_log_loss(rows, self._softmax, per_row)
        if rows.weights is None:
            return float(per_row.sum())
        # As scikit-learn's np.average: the rounded products, then their sum.
        return float(np.multiply(per_row, rows.weights, out=per_row).sum())

    def __call__(self, x):
        """(value, gradient) at x, scikit-learn's packed order; inside :meth:`running`.

        Parameters
        ----------
        x : ndarray of float64, shape (n_params,)

        Returns
        -------
        value : float
        gradient : ndarray of float64, shape (n_params,)
        """
        self.n_evaluations += 1
        self._set_parameters(x, self._panels is not None)
        if self._pool is None:
            total = self._block(0)
        else:
            total = sum(self._pool.map(self._block, range(len(self._blocks))))
        grads = self._summed_gradient()
        first = 0
        squares = 0.0
        if self._panels is not None:
            # The first layer's weights in one compiled pass (two million
            # of them in the benchmark: numpy's seven passes took 6-10 ms).
            first = self._layers[0][0] * self._layers[0][1]
            squares = _kernels.first_layer_gradient(self._panels, x[:first], self.alpha,
                                                    self.weight_sum, grads[:first])
        # The weights as the model holds them (rounded to its dtype), in
        # float64: scikit-learn's order puts every coefs_ first. Into
        # buffers kept from call to call (a small network's evaluation is
        # tens of microseconds, of which allocations were a good part).
        weights = x[first:self._n_coefs]
        if self._penalty is None or len(self._penalty) != len(weights):
            self._penalty = np.empty(len(weights))
            if self.model.dtype != np.float64:
                self._rounded = np.empty(len(weights), dtype=self.model.dtype)
                self._weights = np.empty(len(weights))
        if self._rounded is not None:
            np.copyto(self._rounded, weights, casting="same_kind")
            np.copyto(self._weights, self._rounded)
            weights = self._weights
        squares += float(np.dot(weights, weights))
        value = (total * self.loss_scale + 0.5 * self.alpha * squares) / self.weight_sum
        penalty = np.multiply(weights, self.alpha, out=self._penalty)
        coefs = grads[first:self._n_coefs]
        coefs += penalty
        rest = grads[first:]
        rest /= self.weight_sum
        return value, grads

