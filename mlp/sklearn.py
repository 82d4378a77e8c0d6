"""scikit-learn estimators backed by mlp: :class:`MLPClassifier` and :class:`MLPRegressor`.

They take scikit-learn's ``sklearn.neural_network`` parameters with the same
names and meanings, so that changing the import is enough::

    from mlp.sklearn import MLPClassifier     # was: from sklearn.neural_network import ...

    clf = MLPClassifier(hidden_layer_sizes=(300, 100), solver="sgd", momentum=0.9,
                        learning_rate_init=0.1, batch_size=200, max_iter=10)
    clf.fit(X_train, y_train).score(X_test, y_test)

and they work wherever scikit-learn estimators do: pipelines, ``GridSearchCV``,
``cross_val_score``, joblib and Dask. Each epoch runs through :func:`mlp.train`
with :class:`mlp.SGD` or :class:`mlp.Adam` (or another of mlp's optimizers, named
by ``solver``), or ``solver="lbfgs"``: scipy's L-BFGS-B on scikit-learn's
full-batch objective, which mlp's kernels compute; what scikit-learn decides between
epochs (stopping on ``tol``/``n_iter_no_change``, the ``"adaptive"`` and
``"invscaling"`` learning rates, early stopping on a validation split) is done
here, the same way.

Where mlp differs from scikit-learn, on purpose:

* ``solver`` also takes the names of mlp's other optimizers: "rmsprop"
  (:class:`mlp.RMSprop`) and "adagrad" (:class:`mlp.Adagrad`). They take
  the estimator's parameters that have a counterpart: ``learning_rate_init``,
  ``epsilon`` and ``alpha`` as the weight decay. ``alpha`` stays scikit-learn's
  L2 penalty: RMSprop's smoothing constant (also called alpha) keeps its
  default, 0.99. ``momentum`` is SGD's only, as in scikit-learn, so
  ``solver="rmsprop"`` is plain RMSprop (for RMSprop with momentum, train an
  :class:`mlp.Model` with ``mlp.RMSprop(momentum=...)``). Like Adam they keep
  a constant rate (``learning_rate`` is SGD's).
* Sparse X (any scipy.sparse matrix or array) trains from its non-zeros
  without being made dense, with every solver (L-BFGS's full-batch
  objective too).
* The parameters and the arithmetic are float32 by default (``dtype``), which
  is what makes mlp fast; ``dtype="float64"`` computes in double precision.
* ``sample_weight``: every batch is divided by the mean weight of the whole
  training set times its size, where scikit-learn divides it by its own sum
  of weights (the same on average; identical for full batches).
* Momentum is PyTorch's (a velocity in gradient units). It is the same
  update as scikit-learn's while the learning rate is constant; when
  ``"adaptive"`` or ``"invscaling"`` changes the rate, the velocity already
  accumulated is scaled by the new rate rather than the old one.

scikit-learn is imported by this module only; ``import mlp`` does not need it.
"""
from __future__ import annotations

import dataclasses
import numbers
import warnings

import numpy as np
import scipy.optimize
import scipy.sparse
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state, column_or_1d
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.fixes import _get_additional_lbfgs_options_dict
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import type_of_target, unique_labels
from sklearn.utils.optimize import _check_optimize_result
from sklearn.utils.validation import (_check_sample_weight, _check_y, check_consistent_length,
                                      check_is_fitted, validate_data)

from . import _lbfgs
from . import optimizers as _optimizers
from . import training as _training
from ._threads import inference_threads, train_workers
from ._validation import check_dtype, check_layer_arrays
from .activations import ACTIVATIONS
from .model import COMPUTE_DTYPES, Model, loss_code

__all__ = ["MLPClassifier", "MLPRegressor"]

# scikit-learn's activation names ("logistic" for the sigmoid; beyond its
# four, mlp's own names) -> mlp's.
_HIDDEN = {a.sklearn_name: a.name for a in ACTIVATIONS.values() if a.hidden}
# out_activation_ (scikit-learn's name) -> (mlp output, mlp loss).
_OUTPUT = {"softmax": ("softmax", "cross_entropy"),
           "logistic": ("sigmoid", "binary_cross_entropy"),
           "identity": ("identity", "mse"),
           "exp": ("exp", "poisson")}
# MLPRegressor's loss -> its out_activation_ (scikit-learn's pairs).
_REGRESSION_LOSSES = {"squared_error": "identity", "poisson": "exp"}
# scikit-learn's words when the parameters stop being finite.
# fit and predict take any scipy.sparse matrix or array; validate_data
# converts it to CSR, the rows mlp.train and Model.forward read.
_SPARSE_FORMATS = "csr"
_NON_FINITE_WEIGHTS = ("Solver produced non-finite parameter weights. The input data may contain "
                       "large values and need to be preprocessed.")
# scikit-learn's 'adaptive' rate stops dividing itself below this.
_SMALLEST_ADAPTIVE_RATE = 1e-6
# The estimator's parameter for each optimizer field that has one, for
# whichever optimizer solver names. Not alpha: scikit-learn's alpha is an L2
# penalty (the optimizers' weight_decay, scaled by the batch), not RMSprop's
# smoothing constant, which keeps its default. Not momentum, but for "sgd":
# scikit-learn documents it as SGD's alone, and its default, 0.9, would turn
# RMSprop into RMSprop with momentum.
_SOLVER_PARAMETERS = {"learning_rate": "learning_rate_init", "beta1": "beta_1",
                      "beta2": "beta_2", "eps": "epsilon"}


# mlp.train's warning of unscaled inputs (_validation.warn_if_unscaled).
_UNSCALED_X = r"X holds \S+ values (up|down) to "
# mlp.train's warnings of a training loss that grew or stalled over its epochs
# (training._DivergenceCheck): scikit-learn reports neither.
_LOSS_WARNING = r"the training loss (grew|is|has stopped)"


class _EpochRate:
    """An ``lr_schedule`` for one :func:`mlp.train` call: the optimizer's rate
    times ``factor`` for the whole epoch, as scikit-learn changes its rate only
    between epochs. A class rather than a lambda so that it pickles."""

    __slots__ = ("factor",)

    def __init__(self, factor):
        self.factor = factor

    def __call__(self, step, total_steps):
        return self.factor


class _EpochEnd(_training.Callback):
    """scikit-learn's bookkeeping between the epochs of a stochastic fit, as
    a Callback of the fit's one :func:`mlp.train` call: at each epoch's start
    the L2 term of the weights it starts from; at its end ``n_iter_``,
    ``t_``, ``loss_`` and ``loss_curve_``, the verbose lines, the
    no-improvement count (and validation score), the adaptive and
    inverse-scaling rates (through ``rate``, the run's ``lr_schedule``), and
    the stop."""

    def __init__(self, estimator, validation, n_samples, batch_size, weight_mean, loss_scale,
                 incremental):
        self.estimator, self.validation = estimator, validation
        self.n_samples, self.weight_mean, self.loss_scale = n_samples, weight_mean, loss_scale
        self.batches = -(-n_samples // batch_size)
        self.incremental = incremental
        self.rate = _EpochRate(self._factor())
        self.squares = 0.0
        self.stopped = False

    def _factor(self):
        estimator = self.estimator
        return estimator._rate / float(estimator.learning_rate_init)

    def on_epoch_start(self, run):
        # scikit-learn's L2 term uses the weights each batch starts from;
        # those the epoch starts from stand in for them.
        self.squares = sum(float(np.dot(w.ravel(), w.ravel()))
                           for w in self.estimator.model_.weights)

    def on_epoch_end(self, run, history):
        estimator = self.estimator
        estimator.n_iter_ += 1
        # The L2 term as scikit-learn reports it: 0.5 * alpha * ||W||^2 per
        # batch over the batch's weight, averaged over the samples.
        penalty = (0.5 * float(estimator.alpha) * self.squares * self.batches
                   / (self.n_samples * self.weight_mean))
        estimator.loss_ = float(history.loss[-1]) * self.loss_scale + penalty
        estimator.t_ += self.n_samples
        estimator.loss_curve_.append(estimator.loss_)
        if estimator.verbose:
            print("Iteration %d, loss = %.8f" % (estimator.n_iter_, estimator.loss_))
        estimator._update_no_improvement_count(self.validation)
        if estimator.solver == "sgd" and estimator.learning_rate == "invscaling":
            estimator._rate = (float(estimator.learning_rate_init)
                               / (estimator.t_ + 1) ** estimator.power_t)
        if estimator._no_improvement_count > estimator.n_iter_no_change:
            if estimator._stop_or_slow_down(self.validation is not None):
                self.stopped = True
                return True
            estimator._no_improvement_count = 0
        self.rate.factor = self._factor()
        return False


class _LayerList(list):
    """``coefs_`` or ``intercepts_``: one live view of the model's arrays per
    layer. scikit-learn's lists hold the network itself, so that
    ``clf.coefs_[0] = W`` changes it; here assigning an item (or a slice, or
    the whole list) copies the new values into the model once every one is
    checked (shape, finite), rather than replacing a view in a list that
    nothing else holds."""

    def __init__(self, views, name):
        super().__init__(views)
        self._name = name

    def __setitem__(self, index, values):
        layers = list(self)
        layers[index] = values
        self.assign_all(layers)

    def assign_all(self, values):
        views = list(self)
        for view, array in zip(views, check_layer_arrays(values, views, self._name)):
            view[...] = array


class _BaseMLP(BaseEstimator):
    """The training loop and everything shared by the classifier and the regressor."""

    # -- hyper-parameters -----------------------------------------------------

    def _check_hyperparameters(self):
        """Validate every constructor argument (at fit time, as scikit-learn
        does) and return the hidden layer sizes as a list of ints."""
        name = type(self).__name__

        def fail(param, expected, exc=ValueError):
            value = getattr(self, param)
            return exc(f"The {param!r} parameter of {name} must be {expected}. "
                       f"Got {value!r} instead.")

        def real(param, low, high=None, low_open=False, high_open=False):
            value = getattr(self, param)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
                raise fail(param, "a real number", TypeError)
            left = "(" if low_open else "["
            right = ")" if high_open else "]"
            expected = f"a float in the range {left}{low}, {'inf' if high is None else high}{right}"
            if (np.isnan(value) or value < low or (low_open and value == low)
                    or (high is not None and (value > high or (high_open and value == high)))):
                raise fail(param, expected)

        def integer(param, low):
            value = getattr(self, param)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
                raise fail(param, f"an int in the range [{low}, inf)", TypeError)
            if value < low:
                raise fail(param, f"an int in the range [{low}, inf)")

        def boolean(param):
            if not isinstance(getattr(self, param), (bool, np.bool_)):
                raise fail(param, "a bool", TypeError)

        def choice(param, options):
            if getattr(self, param) not in options:
                raise fail(param, "one of " + ", ".join(repr(o) for o in options))

        sizes = self.hidden_layer_sizes
        if isinstance(sizes, numbers.Integral) and not isinstance(sizes, (bool, np.bool_)):
            sizes = [sizes]
        if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
            raise fail("hidden_layer_sizes", "an int or a sequence of ints", TypeError)
        sizes = list(sizes)
        if any(isinstance(s, (bool, np.bool_)) or not isinstance(s, numbers.Integral)
               for s in sizes):
            raise fail("hidden_layer_sizes", "an int or a sequence of ints", TypeError)
        if any(s <= 0 for s in sizes):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {sizes}.")

        choice("activation", list(_HIDDEN))
        choice("solver", ["lbfgs", *_optimizers.OPTIMIZERS])
        integer("max_fun", 1)
        real("alpha", 0)
        if self.batch_size != "auto":
            if not isinstance(self.batch_size, numbers.Integral) or isinstance(
                    self.batch_size, (bool, np.bool_)):
                raise fail("batch_size", "'auto' or an int in the range [1, inf)", TypeError)
            integer("batch_size", 1)
        choice("learning_rate", ["constant", "invscaling", "adaptive"])
        real("learning_rate_init", 0, low_open=True)
        real("power_t", 0)
        integer("max_iter", 1)
        boolean("shuffle")
        real("tol", 0)
        boolean("warm_start")
        real("momentum", 0, 1)
        boolean("nesterovs_momentum")
        boolean("early_stopping")
        real("validation_fraction", 0, 1, high_open=True)
        real("beta_1", 0, 1, high_open=True)
        real("beta_2", 0, 1, high_open=True)
        real("epsilon", 0, low_open=True)
        if self.n_iter_no_change != np.inf:
            integer("n_iter_no_change", 1)
        dtype = check_dtype(self.dtype, "dtype")
        if self.solver not in ("sgd", "lbfgs") and dtype.type(self.epsilon) == 0:
            raise fail("epsilon", f"a float that is not 0 in {dtype.name} (at least "
                                  f"{np.finfo(dtype).tiny:.3g}), or {self.solver} divides "
                                  f"by zero")
        if self.compute_dtype is not None:
            choice("compute_dtype", [None, *COMPUTE_DTYPES])
            if dtype != np.float32:
                raise fail("compute_dtype", f"None with dtype={self.dtype!r}: bfloat16 "
                                            f"products need float32 parameters (dtype='float32')")
        if self.n_threads is not None:
            integer("n_threads", 1)
        real("dropout", 0, 1, high_open=True)
        if self.solver == "lbfgs" and self.dropout:
            raise fail("dropout", "0 with solver='lbfgs' (its full-batch objective has no "
                                  "dropout); use solver='adam' or 'sgd' for dropout")
        if self.dropout and not sizes:
            raise fail("dropout", "0 with hidden_layer_sizes=(): it drops hidden units, and "
                                  "there are none")
        if self.random_state is not None and not isinstance(
                self.random_state, (numbers.Integral, np.random.RandomState)):
            raise fail("random_state", "None, an int or a numpy.random.RandomState", TypeError)
        return [int(s) for s in sizes]

    # -- fitting --------------------------------------------------------------

    def fit(self, X, y, sample_weight=None, *, X_val=None, y_val=None, sample_weight_val=None):
        """Fit the model to data matrix X and target(s) y.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The input data, converted to ``dtype``.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Class labels (any hashable values, or a multilabel indicator
            matrix) for the classifier, real targets for the regressor.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weight of each sample's loss.
        X_val : array-like of shape (n_val, n_features), default=None
            Validation data for early stopping, used instead of holding out
            ``validation_fraction`` of X (which then trains on all of X).
            Requires ``early_stopping=True``, as in scikit-learn's
            HistGradientBoosting estimators.
        y_val : array-like of shape (n_val,) or (n_val, n_outputs), default=None
            Its labels or targets; given with X_val.
        sample_weight_val : array-like of shape (n_val,), default=None
            Weights of the validation samples in the validation score.

        Returns
        -------
        self : the fitted estimator.
        """
        validation = None
        if X_val is not None or y_val is not None:
            if y_val is None:
                raise ValueError("X_val is provided, but y_val was not provided.")
            if X_val is None:
                raise ValueError("y_val is provided, but X_val was not provided.")
            if not self.early_stopping:
                raise ValueError(
                    "X_val and y_val are passed to fit while at the same time early_stopping "
                    "is False. When passing X_val and y_val to fit, early_stopping should be "
                    "set to True.")
            validation = (X_val, y_val, sample_weight_val)
        elif sample_weight_val is not None:
            raise ValueError("sample_weight_val is provided, but X_val and y_val were not.")
        return self._fit(X, y, sample_weight, incremental=False, validation=validation)

    def _accepted_sparse(self):
        # The stochastic solvers feed the first layer from the non-zeros of
        # sparse rows (mlp.train), and so does L-BFGS's full-batch objective
        # (mlp._lbfgs).
        return _SPARSE_FORMATS

    def _check_validation(self, X_val, y_val, sample_weight_val):
        """fit's X_val, y_val and sample_weight_val, checked as X, y and sample_weight."""
        X_val = validate_data(self, X_val, reset=False, dtype=self.model_.dtype, order="C",
                              accept_sparse=_SPARSE_FORMATS)
        y_val = _check_y(y_val, multi_output=True, y_numeric=not is_classifier(self),
                         estimator=self)
        if y_val.ndim == 2 and y_val.shape[1] == 1:
            y_val = column_or_1d(y_val, warn=True)
        check_consistent_length(X_val, y_val)
        if is_classifier(self) and type_of_target(y_val) in ("binary", "multiclass"):
            unknown = np.setdiff1d(unique_labels(y_val), self.classes_)
            if len(unknown):
                raise ValueError(f"y_val has classes not in `self.classes_`. `self.classes_` "
                                 f"has {self.classes_}. 'y_val' has {unknown}.")
        if sample_weight_val is not None:
            sample_weight_val = _check_sample_weight(sample_weight_val, X_val, dtype=np.float64,
                                                     ensure_non_negative=True)
        return X_val, y_val, sample_weight_val

    def _fit(self, X, y, sample_weight, incremental, validation=None):
        hidden_sizes = self._check_hyperparameters()
        first_pass = not hasattr(self, "model_") or (not self.warm_start and not incremental)
        X, y = self._validate_input(X, y, incremental, reset=first_pass)
        targets = self._encode_targets(y)
        n_samples, n_features = X.shape
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64,
                                                 ensure_non_negative=True)
        sample_weight = self._weigh_classes(y, sample_weight)
        layer_sizes = [n_features, *hidden_sizes, self._n_output_units(targets)]
        self._random_state = check_random_state(self.random_state)
        if first_pass:
            self._initialize(layer_sizes)
        elif list(self.model_.layer_sizes) != layer_sizes:
            raise ValueError(
                f"the fitted network has layer sizes {list(self.model_.layer_sizes)} but "
                f"hidden_layer_sizes and the data now ask for {layer_sizes}; warm_start and "
                f"partial_fit continue training the same network. Set warm_start=False (or "
                f"call fit) to start again.")
        # A warm start or partial_fit computes as compute_dtype says now.
        self.model_.compute_dtype = self.compute_dtype
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        if not incremental or not hasattr(self, "_rate"):
            # A new optimizer: fresh momentum/Adam moments, the initial rate.
            self.model_.optimizer_state = None
            self._rate = float(self.learning_rate_init)
        if validation is not None:
            validation = self._check_validation(*validation)
        self._diverged = False
        if self.solver == "lbfgs":
            self._fit_lbfgs(X, targets, sample_weight)
        else:
            self._fit_stochastic(X, y, targets, sample_weight, incremental, validation)
        # After the solver, on the weights fit leaves, as scikit-learn checks.
        if self._diverged or not np.isfinite(self.model_.parameters).all():
            raise ValueError(_NON_FINITE_WEIGHTS)
        return self

    @staticmethod
    def _weigh_classes(y, sample_weight):
        """sample_weight times each sample's class weight (the classifier's)."""
        return sample_weight

    def _fit_lbfgs(self, X, targets, sample_weight):
        """scikit-learn's L-BFGS: scipy's L-BFGS-B over every parameter, with
        scikit-learn's options, on its full-batch objective (the weighted mean
        loss plus the L2 term over the summed weights), which mlp's kernels
        compute on n_threads workers (mlp._lbfgs)."""
        model = self.model_
        output, loss = _OUTPUT[self.out_activation_]
        if targets.ndim == 1:
            # Class indices: the kernel's full-batch loss takes one-hot rows.
            Y = np.zeros((len(targets), self.n_outputs_), dtype=model.dtype)
            Y[np.arange(len(targets)), targets] = 1
        else:
            Y = targets
        # scikit-learn's squared error is a mean over the outputs too (in the
        # value; its gradient is that of the sum).
        loss_scale = 1.0 / self.n_outputs_ if loss == "mse" else 1.0
        threads = train_workers(self.n_threads, X.shape[0], model.layer_sizes)
        objective = _lbfgs.FullBatchObjective(model, X, Y, loss_code(loss, output), sample_weight,
                                              self.alpha, loss_scale, threads)
        iprint = 1 if self.verbose is True or self.verbose >= 1 else -1
        with objective.running():
            result = scipy.optimize.minimize(
                objective, objective.initial_point(), method="L-BFGS-B", jac=True,
                options={"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol,
                         **_get_additional_lbfgs_options_dict("iprint", iprint)})
        self.n_iter_ = _check_optimize_result("lbfgs", result, self.max_iter)
        self.loss_ = float(result.fun)
        objective.set_parameters(result.x)

    def _check_solver(self):
        """True for the solvers that train by epochs (partial_fit's condition)."""
        if self.solver == "lbfgs":
            raise AttributeError(f"partial_fit is only available for stochastic optimizers. "
                                 f"{self.solver} is not stochastic.")
        return True

    def _initialize(self, layer_sizes):
        """Create the network and reset every fitted attribute (first fit)."""
        out_activation = self._out_activation()
        output = _OUTPUT[out_activation][0]
        dtype = check_dtype(self.dtype, "dtype")
        model = Model(layer_sizes, activation=_HIDDEN[self.activation], output=output,
                      init="xavier", dtype=dtype, compute_dtype=self.compute_dtype)
        # scikit-learn's initialisation, drawn from the same generator in the
        # same order, so that a given random_state starts both from the same
        # coefs_ and intercepts_: Glorot uniform weights *and* biases, with
        # bound sqrt(2 / (fan_in + fan_out)) for logistic units.
        factor = 2.0 if self.activation == "logistic" else 6.0
        for weights, biases in zip(model.weights, model.biases):
            fan_out, fan_in = weights.shape
            bound = np.sqrt(factor / (fan_in + fan_out))
            weights[...] = self._random_state.uniform(-bound, bound, (fan_in, fan_out)).T
            biases[...] = self._random_state.uniform(-bound, bound, fan_out)
        self.model_ = model
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = layer_sizes[-1]
        self.n_layers_ = len(layer_sizes)
        self.out_activation_ = out_activation
        self.loss_curve_ = []
        self._no_improvement_count = 0
        self._best_params = model.parameters.copy()
        if self.early_stopping:
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
        else:
            self.best_loss_ = np.inf
            self.validation_scores_ = None
            self.best_validation_score_ = None

    def _optimizer(self, batch_weight):
        # scikit-learn adds alpha * W / (the batch's summed sample weight) to
        # the batch's mean gradient (its L2 term is 0.5 * alpha * ||W||^2 over
        # the same sum): PyTorch-style weight decay on the weights alone.
        optimizer = _optimizers.OPTIMIZERS[self.solver]
        fields = {spec.name for spec in dataclasses.fields(optimizer)}
        values = {name: float(getattr(self, param)) for name, param in _SOLVER_PARAMETERS.items()
                  if name in fields}
        values["weight_decay"] = float(self.alpha) / batch_weight
        if self.solver == "sgd":
            values["momentum"] = float(self.momentum)
            values["nesterov"] = bool(self.nesterovs_momentum) and self.momentum > 0
        if self.solver == "adam":
            values["eps_hat"] = True  # scikit-learn's placement of epsilon
        return optimizer(**values)

    def _carry_state_to(self, optimizer):
        """Let the momentum or Adam state built so far continue under
        `optimizer` when only its weight decay differs. The decay is alpha over
        the batch's weight, which changes with the size of each partial_fit
        chunk (and with sample weights); scikit-learn keeps its velocities and
        moments through that, where mlp.train would start a fresh state for an
        optimizer that is not equal."""
        state = self.model_.optimizer_state
        if state is not None and type(state.optimizer) is type(optimizer) and (
                dataclasses.replace(state.optimizer, weight_decay=optimizer.weight_decay)
                == optimizer):
            state.optimizer = optimizer

    def _split_validation(self, X, y, targets, sample_weight, validation):
        """scikit-learn's early-stopping split: (train part, validation part);
        all of X and fit's validation data when it was given."""
        if not self.early_stopping or validation is not None:
            return (X, targets, sample_weight), validation
        # scikit-learn stratifies only single-output (binary) classification.
        stratify = targets if is_classifier(self) and self.n_outputs_ == 1 else None
        if stratify is not None and stratify.ndim == 2:
            # A binary classifier's one 0/1 column, as the (n, 1) booleans
            # scikit-learn stratifies on: the same split, and the same error
            # (rows of a 2-D y are classed by their text: 'True').
            stratify = stratify.astype(bool)
        train_idx, val_idx = train_test_split(
            np.arange(X.shape[0]), random_state=self._random_state,
            test_size=self.validation_fraction, stratify=stratify)
        if len(val_idx) < 2:
            raise ValueError("The validation set is too small. Increase 'validation_fraction' "
                             "or the size of your dataset.")
        weight = None if sample_weight is None else sample_weight[train_idx]
        val_weight = None if sample_weight is None else sample_weight[val_idx]
        return ((X[train_idx], targets[train_idx], weight),
                (X[val_idx], y[val_idx], val_weight))

    def _fit_stochastic(self, X, y, targets, sample_weight, incremental, validation=None):
        (X_train, t_train, w_train), validation = self._split_validation(
            X, y, targets, sample_weight, validation)
        n_samples = X_train.shape[0]
        if self.batch_size == "auto":
            batch_size = min(200, n_samples)
        else:
            if self.batch_size > n_samples:
                warnings.warn("Got `batch_size` less than 1 or larger than sample size. "
                              "It is going to be clipped", stacklevel=4)
            batch_size = int(np.clip(self.batch_size, 1, n_samples))
        weight_mean = 1.0
        if w_train is not None:
            weight_mean = float(w_train.mean())
            if weight_mean <= 0:
                raise ValueError("sample_weight must not be all zero: no sample would count")
            # mlp averages a batch's weighted losses over its size, scikit-learn
            # over its sum of weights: weights of mean 1 make the two agree.
            w_train = w_train / weight_mean
        optimizer = self._optimizer(batch_size * weight_mean)
        self._carry_state_to(optimizer)
        _, loss = _OUTPUT[self.out_activation_]
        # scikit-learn's squared error is a mean over the outputs too.
        loss_scale = 1.0 / self.n_outputs_ if loss == "mse" else 1.0
        self.n_iter_ = 0
        self._diverged = False
        # One train() call for every epoch: scikit-learn's decisions between
        # epochs (the loss it reports, early stopping, the adaptive and
        # inverse-scaling rates) are _EpochEnd's, a Callback, so that X is
        # checked and the run set up once per fit rather than once an epoch
        # (0.2-0.7 ms of Python an epoch, more than a whole epoch of 100 rows).
        epoch_end = _EpochEnd(self, validation, n_samples, batch_size, weight_mean, loss_scale,
                              incremental)
        try:
            with warnings.catch_warnings():
                # mlp.train warns of X far beyond order 1, and of a loss that
                # grows or stalls over epochs; scikit-learn's estimators do not.
                warnings.filterwarnings("ignore", message=_UNSCALED_X, category=UserWarning)
                warnings.filterwarnings("ignore", message=_LOSS_WARNING, category=RuntimeWarning)
                _training.train(
                    self.model_, X_train, t_train, epochs=1 if incremental else self.max_iter,
                    batch_size=batch_size, optimizer=optimizer, lr_schedule=epoch_end.rate,
                    loss=loss, sampling="shuffle" if self.shuffle else "sequential",
                    seed=int(self._random_state.randint(np.iinfo(np.int32).max)),
                    sample_weight=w_train, dropout=float(self.dropout), progress=False,
                    n_threads=self.n_threads, callbacks=[epoch_end])
            if not incremental and not epoch_end.stopped and self.n_iter_ == self.max_iter:
                warnings.warn(
                    f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached "
                    f"and the optimization hasn't converged yet.", ConvergenceWarning,
                    stacklevel=4)
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.", stacklevel=4)
        except FloatingPointError:
            # mlp.train kept the last finite parameters. scikit-learn would
            # train on with non-finite ones and raise at the end of fit, unless
            # early stopping brings back its best (finite) parameters.
            self._diverged = validation is None or not np.isfinite(
                self.best_validation_score_)
        if validation is not None:
            self.model_.parameters[...] = self._best_params

    def _update_no_improvement_count(self, validation):
        if validation is not None:
            X_val, y_val, w_val = validation
            score = self._score_validated(X_val, y_val, w_val)
            self.validation_scores_.append(score)
            if self.verbose:
                print("Validation score: %f" % score)
            if score < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                self._best_params = self.model_.parameters.copy()
        else:
            if self.loss_curve_[-1] > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if self.loss_curve_[-1] < self.best_loss_:
                self.best_loss_ = self.loss_curve_[-1]

    def _stop_or_slow_down(self, early_stopping):
        """scikit-learn's response to n_iter_no_change stale epochs: stop, or
        for the 'adaptive' rate divide the rate by 5 until it is tiny."""
        what = "Validation score" if early_stopping else "Training loss"
        message = (f"{what} did not improve more than tol={self.tol:f} for "
                   f"{self.n_iter_no_change} consecutive epochs.")
        adaptive = self.solver == "sgd" and self.learning_rate == "adaptive"
        if adaptive and self._rate > _SMALLEST_ADAPTIVE_RATE:
            self._rate /= 5.0
            if self.verbose:
                print(f"{message} Setting learning rate to {self._rate:f}")
            return False
        suffix = " Learning rate too small. Stopping." if adaptive else " Stopping."
        if self.verbose:
            print(message + suffix)
        return True

    # -- prediction -----------------------------------------------------------

    def _forward(self, X, fused=True):
        """Validated X -> the network's outputs (n, n_outputs_), model dtype.
        fused=False: as training computes them (Model.forward_unchecked)."""
        # n_threads=None: chosen by the size of the call, as Model.forward
        # chooses (mlp._threads.inference_threads).
        threads = inference_threads(self.n_threads, X.shape[0], self.model_.layer_sizes)
        with self.model_.locked():
            outputs = self.model_.forward_unchecked(X, threads, check_finite=True, fused=fused)
        if outputs is None:
            values = X.data if scipy.sparse.issparse(X) else X
            raise ValueError("Input X contains NaN." if np.isnan(values).any() else
                             f"Input X contains infinity or a value too large for "
                             f"{X.dtype!r}.")
        return outputs

    def _check_X(self, X):
        # Checked for NaN and inf by the kernel (_forward), as it reads the
        # rows: scikit-learn's scan of MNIST's test set took 1.5 ms of a
        # 20 ms predict.
        check_is_fitted(self)
        return validate_data(self, X, reset=False, dtype=self.model_.dtype, order="C",
                             ensure_all_finite=False, accept_sparse=_SPARSE_FORMATS)

    def _score_validated(self, X, y, sample_weight):
        # The validation score steers training (early stopping): computed
        # as training computes, so that its results stay as they were.
        predicted = self._predict_validated(X, fused=False)
        if np.issubdtype(predicted.dtype, np.floating) and not np.isfinite(predicted).all():
            return np.nan
        score = float(self._score_function(y, predicted, sample_weight=sample_weight))
        # A diverged regressor's finite but huge float32 outputs overflow R² to
        # -inf; scikit-learn's float64 outputs are inf there and score NaN.
        return score if np.isfinite(score) else np.nan

    # -- fitted parameters in scikit-learn's layout ---------------------------

    @property
    def coefs_(self):
        """List of (n_in, n_out) weight matrices, one per layer: transposed
        live views of ``model_.weights``. Writing into them, assigning an item
        (``clf.coefs_[0] = W``) or the whole list changes the model, as it
        changes scikit-learn's network."""
        check_is_fitted(self)
        return _LayerList([w.T for w in self.model_.weights], "coefs_")

    @coefs_.setter
    def coefs_(self, matrices):
        check_is_fitted(self)
        _LayerList([w.T for w in self.model_.weights], "coefs_").assign_all(matrices)

    @property
    def intercepts_(self):
        """List of (n_out,) bias vectors, one per layer: live views of
        ``model_.biases``, which take assignments as ``coefs_`` does."""
        check_is_fitted(self)
        return _LayerList(list(self.model_.biases), "intercepts_")

    @intercepts_.setter
    def intercepts_(self, vectors):
        check_is_fitted(self)
        _LayerList(list(self.model_.biases), "intercepts_").assign_all(vectors)

    def __sklearn_is_fitted__(self):
        return hasattr(self, "model_")

    def to_onnx(self, path, *, dtype=None):
        """Write the fitted network to `path` as an ONNX graph (see :func:`mlp.onnx.to_onnx`).

        The graph's output is the network's output layer: class probabilities
        in ``classes_`` order (multiclass), the probability of ``classes_[1]``
        (binary), per-label probabilities (multilabel) or the predictions
        (regression).
        """
        check_is_fitted(self)
        return self.model_.to_onnx(path, dtype=dtype)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # mlp trains on sparse rows without densifying them, with every solver.
        tags.input_tags.sparse = True
        return tags


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier trained by mlp's compiled core.

    A drop-in replacement for ``sklearn.neural_network.MLPClassifier`` with
    solver "sgd", "adam" or "lbfgs": same parameters, same fitted attributes, same
    training logic between epochs, several times faster. It minimises the
    log-loss: softmax outputs for more than two classes, one logistic output
    for two classes, one logistic output per label for a multilabel indicator
    ``y``.

    Parameters
    ----------
    hidden_layer_sizes : array-like of shape (n_layers - 2,), default=(100,)
        Units in each hidden layer.
    activation : {"logistic", "tanh", "relu", "identity", "leaky_relu", "gelu", "silu"}, \
            default="relu"
        Activation of the hidden layers: scikit-learn's four, and mlp's
        leaky_relu (slope 0.01), gelu (exact) and silu.
    solver : {"adam", "sgd", "lbfgs", "rmsprop", "adagrad"}, default="adam"
        ``"lbfgs"`` is scikit-learn's: scipy's L-BFGS-B over the whole
        training set (no batches, no dropout, no partial_fit), with
        scikit-learn's objective computed by mlp's kernels; ``max_iter``
        bounds its iterations, ``max_fun`` its loss evaluations, ``tol`` is
        its gradient tolerance (``gtol``). "rmsprop" and
        "adagrad" are mlp's additions (see the module's notes): they take
        learning_rate_init, epsilon and alpha (as weight decay; RMSprop's own
        alpha, its smoothing constant, stays 0.99); momentum is SGD's only.
    alpha : float, default=1e-4
        Strength of the L2 penalty on the weights, scaled as scikit-learn
        scales it: each batch's mean gradient gains ``alpha * W / batch_size``.
    batch_size : int or "auto", default="auto"
        Minibatch size; "auto" is min(200, n_samples).
    learning_rate : {"constant", "invscaling", "adaptive"}, default="constant"
        Schedule of the SGD rate (ignored by Adam). "invscaling" sets it to
        ``learning_rate_init / (t + 1) ** power_t`` after each epoch, t being
        the samples seen; "adaptive" divides it by 5 whenever
        ``n_iter_no_change`` epochs fail to improve by ``tol``.
    learning_rate_init : float, default=0.001
    power_t : float, default=0.5
    max_iter : int, default=200
        Maximum number of epochs (partial_fit runs one).
    shuffle : bool, default=True
        Shuffle the samples every epoch; False visits them in X's order.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation (the same draws as scikit-learn's), the
        shuffling and the early-stopping split.
    tol : float, default=1e-4
    verbose : bool, default=False
        Print scikit-learn's lines: each epoch's loss (and validation score),
        and why training stops.
    warm_start : bool, default=False
        Continue from the previous fit's parameters.
    momentum : float, default=0.9
    nesterovs_momentum : bool, default=True
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the data, stop when its accuracy
        stops improving and keep the best parameters.
    validation_fraction : float, default=0.1
    beta_1, beta_2, epsilon : float, default=0.9, 0.999, 1e-8
        Adam's parameters.
    n_iter_no_change : int, default=10
    max_fun : int, default=15000
        solver="lbfgs" only: the most loss evaluations (each with its
        gradient) L-BFGS-B may make; it may overshoot by a line search.
    dtype : {"float32", "float64"}, default="float32"
        Precision of the parameters and of the arithmetic (mlp's addition).
    compute_dtype : {None, "bfloat16"}, default=None
        "bfloat16" rounds the inputs of every matrix product (weights and
        activations) to bfloat16 and sums in float32, in training and
        prediction; parameters and optimizer state stay float32 (see
        :class:`mlp.Model`). dtype="float32" only. mlp's addition.
    n_threads : int or None, default=None
        Worker threads for training and prediction; None lets mlp choose.
        Use 1 when a joblib or Dask search already runs one fit per core.
    dropout : float in [0, 1), default=0.0
        Dropout rate of the hidden units during training.
    class_weight : dict {class label: weight}, "balanced" or None, default=None
        Weight of each class's samples, multiplying ``sample_weight`` (a
        class missing from the dict weighs 1). "balanced" weighs each class
        by ``n_samples / (n_classes * its count in y)``; partial_fit refuses
        it, as scikit-learn's SGDClassifier does. mlp's addition.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    model_ : mlp.Model
        The underlying network.
    coefs_ : list of ndarray of shape (n_in, n_out)
    intercepts_ : list of ndarray of shape (n_out,)
    loss_, best_loss_ : float
        The last and the best epoch's mean training loss (with the L2 term);
        ``best_loss_`` is None with early_stopping. With solver="lbfgs", ``loss_`` is
        the objective at the solution; ``best_loss_`` and ``loss_curve_`` keep the
        values of the first fit's start (inf, []), and ``t_`` does not count.
    loss_curve_ : list of float
    validation_scores_ : list of float or None
        Accuracy on the held-out split after each epoch (early_stopping only).
    best_validation_score_ : float or None
    n_iter_ : int
        Epochs (L-BFGS iterations for solver="lbfgs") run by the last fit.
    t_ : int
        Training samples seen over every fit.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when X had string column names.
    n_layers_, n_outputs_ : int
    out_activation_ : str
        "softmax", or "logistic" for binary and multilabel problems.
    """

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10,
                 max_fun=15000, dtype="float32", n_threads=None, dropout=0.0, class_weight=None,
                 compute_dtype=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.dtype = dtype
        self.n_threads = n_threads
        self.dropout = dropout
        self.class_weight = class_weight
        self.compute_dtype = compute_dtype

    _score_function = staticmethod(accuracy_score)

    def _check_hyperparameters(self):
        if not (self.class_weight is None or isinstance(self.class_weight, dict)
                or (isinstance(self.class_weight, str) and self.class_weight == "balanced")):
            raise ValueError(f"The 'class_weight' parameter of MLPClassifier must be None, "
                             f"'balanced' or a dict {{class label: weight}}. Got "
                             f"{self.class_weight!r} instead.")
        return super()._check_hyperparameters()

    def _weigh_classes(self, y, sample_weight):
        # As scikit-learn's other classifiers: class weights multiply the
        # sample weights. "balanced" weighs by the classes' counts in this y.
        if self.class_weight is None:
            return sample_weight
        class_weights = compute_sample_weight(self.class_weight, y)
        return class_weights if sample_weight is None else sample_weight * class_weights


    @available_if(lambda estimator: estimator._check_solver())
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over (X, y), continuing from the current parameters.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_labels)
        sample_weight : array-like of shape (n_samples,), default=None
        classes : array-like of shape (n_classes,), default=None
            Every class that any call will see; required on the first call,
            optional (but must not change) afterwards. Not needed for a
            multilabel indicator y.

        Returns
        -------
        self
        """
        first_call = not hasattr(self, "classes_")
        if isinstance(self.class_weight, str) and self.class_weight == "balanced":
            # scikit-learn's SGDClassifier's refusal: one chunk's counts would
            # weigh the classes differently on every call.
            raise ValueError(
                "class_weight 'balanced' is not supported for partial_fit. In order to use "
                "'balanced' weights, use compute_class_weight('balanced', classes=classes, "
                "y=y). In place of y you can use a large enough sample of the full training "
                "set target to properly estimate the class frequency distributions. Pass the "
                "resulting weights as the class_weight parameter.")
        if first_call:
            if classes is None and not type_of_target(y).startswith("multilabel"):
                raise ValueError("classes must be passed on the first call to partial_fit.")
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
            self.classes_ = self._label_binarizer.classes_
        elif classes is not None and not np.array_equal(unique_labels(classes), self.classes_):
            raise ValueError(f"`classes={classes!r}` is not the same as on last call to "
                             f"partial_fit, was: {self.classes_!r}")
        return self._fit(X, y, sample_weight, incremental=True)

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, multi_output=True, dtype=check_dtype(self.dtype),
                             order="C", reset=reset, accept_sparse=self._accepted_sparse())
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start and not incremental:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        f"warm_start can only be used where `y` has the same classes as in "
                        f"the previous call to fit. Previously got {self.classes_}, `y` has "
                        f"{classes}")
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has "
                                 f"{self.classes_}. 'y' has {classes}.")
        return X, y

    def _out_activation(self):
        return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"

    def _encode_targets(self, y):
        if self._label_binarizer.y_type_ == "multiclass" and y.ndim == 1:
            # Each label's place in the sorted classes_, which is where the
            # binarizer's one-hot row has its 1, without the binarizer's
            # second check of y (most of a small data set's set-up).
            indices = np.searchsorted(self.classes_, y)
            if np.all(indices < len(self.classes_)) and np.all(self.classes_[indices] == y):
                return indices.astype(np.int64)
        indicator = self._label_binarizer.transform(y)
        if self._label_binarizer.y_type_ == "multiclass":
            # Class indices: the kernel one-hot encodes them as it gathers a batch.
            return np.ascontiguousarray(indicator.argmax(axis=1), dtype=np.int64)
        return np.ascontiguousarray(indicator, dtype=check_dtype(self.dtype))

    def _n_output_units(self, targets):
        # Class indices: one softmax unit per class in classes_, which a
        # partial_fit batch need not all contain.
        return len(self.classes_) if targets.ndim == 1 else targets.shape[1]

    def predict(self, X):
        """Predicted class of each sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y : ndarray of shape (n_samples,), or (n_samples, n_labels) for multilabel
        """
        return self._predict_validated(self._check_X(X))

    def _predict_validated(self, X, fused=True):
        outputs = self._forward(X, fused)
        if self.n_outputs_ == 1:
            outputs = outputs.ravel()
        return self._label_binarizer.inverse_transform(outputs)

    def predict_proba(self, X):
        """Probability of each class.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes), of the model's dtype
            Columns in ``classes_`` order. For multilabel y, each label's
            probability.
        """
        outputs = self._forward(self._check_X(X))
        if self.n_outputs_ == 1:
            p = outputs[:, 0]
            return np.column_stack([1 - p, p])
        return outputs

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`, shape (n_samples, n_classes)."""
        proba = self.predict_proba(X)
        with np.errstate(divide="ignore"):
            return np.log(proba, out=proba)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor trained by mlp's compiled core.

    A drop-in replacement for ``sklearn.neural_network.MLPRegressor`` with
    solver "sgd", "adam" or "lbfgs": identity output units and the squared error,
    or exponential output units and the Poisson deviance, one output per
    column of ``y``.

    Parameters
    ----------
    loss : {"squared_error", "poisson"}, default="squared_error"
        "squared_error": identity outputs, half the squared error.
        "poisson": exponential outputs (predictions > 0), half the Poisson
        deviance ``y log(y / prediction) - y + prediction``; y must be >= 0
        (counts, rates), as scikit-learn requires.
    hidden_layer_sizes, activation, solver, alpha, batch_size, learning_rate,
    learning_rate_init, power_t, max_iter, shuffle, random_state, tol, verbose,
    warm_start, momentum, nesterovs_momentum, early_stopping,
    validation_fraction, beta_1, beta_2, epsilon, n_iter_no_change, max_fun, dtype,
    n_threads, dropout, compute_dtype
        As for :class:`MLPClassifier`; early stopping watches the R^2 score.

    Attributes
    ----------
    model_ : mlp.Model
    coefs_, intercepts_, loss_, best_loss_, loss_curve_, validation_scores_,
    best_validation_score_, n_iter_, t_, n_features_in_, feature_names_in_,
    n_layers_, n_outputs_
        As for :class:`MLPClassifier`. ``loss_`` is scikit-learn's
        ``0.5 * mean((y - prediction) ** 2)`` over samples and outputs (for
        "poisson": the mean over samples of the deviance summed over
        outputs), plus the L2 term.
    out_activation_ : "identity", or "exp" for loss="poisson"
    """

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10,
                 max_fun=15000, dtype="float32", n_threads=None, dropout=0.0,
                 compute_dtype=None):
        self.loss = loss
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.dtype = dtype
        self.n_threads = n_threads
        self.dropout = dropout
        self.compute_dtype = compute_dtype

    _score_function = staticmethod(r2_score)

    def _check_hyperparameters(self):
        if not isinstance(self.loss, str) or self.loss not in _REGRESSION_LOSSES:
            raise ValueError(f"The 'loss' parameter of MLPRegressor must be a str among "
                             f"{set(_REGRESSION_LOSSES)}. Got {self.loss!r} instead.")
        return super()._check_hyperparameters()

    @available_if(lambda estimator: estimator._check_solver())
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y), continuing from the current parameters.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight, incremental=True)

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True,
                             dtype=check_dtype(self.dtype), order="C", reset=reset,
                             accept_sparse=self._accepted_sparse())
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if self.loss == "poisson" and y.size and y.min() < 0:
            raise ValueError(f"Some value(s) of y are out of the valid range of the loss "
                             f"'poisson': y must be >= 0 (counts or rates), and its smallest "
                             f"value is {y.min()}. Use loss='squared_error' for targets of "
                             f"any sign.")
        return X, y

    def _out_activation(self):
        return _REGRESSION_LOSSES[self.loss]

    def _encode_targets(self, y):
        targets = y.reshape(len(y), -1) if y.ndim == 1 else y
        return np.ascontiguousarray(targets, dtype=check_dtype(self.dtype))

    @staticmethod
    def _n_output_units(targets):
        return targets.shape[1]

    def predict(self, X):
        """Predicted targets.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_outputs), of the model's dtype
        """
        return self._predict_validated(self._check_X(X))

    def _predict_validated(self, X, fused=True):
        outputs = self._forward(X, fused)
        return outputs.ravel() if outputs.shape[1] == 1 else outputs

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

