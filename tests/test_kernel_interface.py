"""The kernels' typed interface: the descriptions Python builds once (Network,
UpdateRule, TrainingData, Dropout, TrainingRun) and the entry points that take
them. What a description refuses here would otherwise be a crash or a silent
wrong answer inside the nogil kernel."""
import inspect
import pickle

import numpy as np
import pytest

import mlp
from mlp import _augment, _kernels

from conftest import ACT, LOSS


def _entry_points():
    for module in (_kernels, _augment):
        for name, value in vars(module).items():
            if callable(value) and not isinstance(value, type) and not name.startswith("__"):
                yield f"{module.__name__}.{name}", value


def test_no_kernel_entry_point_takes_more_than_eight_parameters():
    counted = 0
    for name, function in _entry_points():
        parameters = inspect.signature(function).parameters
        assert len(parameters) <= 8, f"{name} takes {len(parameters)} parameters"
        counted += 1
    assert counted > 10  # the functions were found at all


def _network(dtype=np.float32, sizes=(6, 5, 3)):
    model = mlp.Model(list(sizes), seed=0, dtype=dtype)
    return model, model._network


def test_update_rule_takes_its_hyperparameters_by_name_only():
    code = _kernels.UPDATE_RULES["adam"]
    with pytest.raises(TypeError):
        _kernels.UpdateRule(code, 0.0, 0.9)  # positional: could be swapped
    with pytest.raises(TypeError):
        _kernels.UpdateRule(code, beta_1=0.9)  # misspelt: not silently 0
    with pytest.raises(ValueError, match="code"):
        _kernels.UpdateRule(99)
    rule = mlp.Adam(1e-3).kernel_rule()
    assert rule.code == code and rule.n_state_buffers == 2 and rule.needs_gradients
    assert mlp.SGD(0.1).kernel_rule().n_state_buffers == 0
    assert not mlp.SGD(0.1).kernel_rule().needs_gradients
    assert mlp.SGD(0.1, momentum=0.9).kernel_rule().n_state_buffers == 1


@pytest.mark.parametrize("optimizer, n_buffers", [
    (mlp.SGD(0.1), 0), (mlp.SGD(0.1, momentum=0.9), 1), (mlp.Adam(), 2), (mlp.AdamW(), 2),
    (mlp.RMSprop(), 1), (mlp.RMSprop(momentum=0.9), 2), (mlp.RMSprop(centered=True), 2),
    (mlp.RMSprop(momentum=0.9, centered=True), 3), (mlp.Adagrad(), 1)])
def test_every_optimizer_state_fits_its_rule(optimizer, n_buffers):
    """The rule's count of state buffers follows its configuration, and
    the optimizer's state has that many."""
    state = mlp.optimizers.OptimizerState.fresh(optimizer, 10, np.float32)
    assert len(state.kernel_buffers()) == optimizer.kernel_rule().n_state_buffers == n_buffers
    assert len(optimizer.state_buffers) == n_buffers


def test_network_refuses_parameters_that_do_not_fit():
    sizes = np.array([4, 3, 2], dtype=np.intp)
    n_params = 3 * 5 + 2 * 4
    _kernels.Network(np.zeros(n_params, np.float32), sizes, ACT["relu"], ACT["softmax"])
    with pytest.raises(ValueError, match="params must hold 23"):
        _kernels.Network(np.zeros(n_params - 1, np.float32), sizes, ACT["relu"], ACT["softmax"])
    with pytest.raises(TypeError, match="params"):
        _kernels.Network(np.zeros(n_params, np.int32), sizes, ACT["relu"], ACT["softmax"])
    with pytest.raises(TypeError, match="params"):
        _kernels.Network(np.zeros((n_params, 2), np.float32)[:, 0], sizes, ACT["relu"],
                         ACT["softmax"])
    with pytest.raises(TypeError, match="sizes"):
        _kernels.Network(np.zeros(n_params, np.float32), sizes.astype(np.int32), ACT["relu"],
                         ACT["softmax"])


def test_the_model_s_network_is_its_parameters_not_a_copy():
    model, network = _network()
    assert network.params is model._params
    clone = pickle.loads(pickle.dumps(model))
    assert clone._network.params is clone._params


def _run(model, X, y, **kwargs):
    data = _kernels.TrainingData(X, y, batch_size=kwargs.pop("batch_size", 4),
                                 feature_major=False)
    options = dict(loss=LOSS["cross_entropy"], rule=mlp.SGD(0.1).kernel_rule())
    options.update(kwargs)
    return _kernels.TrainingRun(model._network, data, **options)


def test_training_run_refuses_state_that_does_not_fit_its_rule():
    model, _ = _network()
    X, y = np.zeros((8, 6), np.float32), np.zeros(8, np.int64)
    adam = mlp.Adam().kernel_rule()
    with pytest.raises(ValueError, match="2 state buffers"):
        _run(model, X, y, rule=adam, state=(np.zeros(model.n_params, np.float32),))
    with pytest.raises(ValueError, match="laid out like params"):
        _run(model, X, y, rule=adam, state=(np.zeros(model.n_params, np.float32),
                                            np.zeros(3, np.float32)))
    with pytest.raises(TypeError, match="state"):
        _run(model, X, y, rule=adam, state=(np.zeros(model.n_params, np.float64),) * 2)
    # The kernel writes the state in place: a read-only array is refused.
    read_only = np.zeros(model.n_params, np.float32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match=r"state\[1\] must be a writeable array"):
        _run(model, X, y, rule=adam, state=(np.zeros(model.n_params, np.float32), read_only))
    centered = mlp.RMSprop(momentum=0.9, centered=True).kernel_rule()
    with pytest.raises(ValueError, match="3 state buffers"):
        _run(model, X, y, rule=centered, state=(np.zeros(model.n_params, np.float32),) * 2)
    with pytest.raises(TypeError):
        _kernels.TrainingRun(model._network, _kernels.TrainingData(X, y, batch_size=4,
                                                                   feature_major=False),
                             LOSS["mse"], adam)  # positional: refused


def test_training_data_and_run_refuse_what_would_read_out_of_bounds():
    model, _ = _network()
    X, y = np.zeros((8, 6), np.float32), np.zeros(8, np.int64)
    with pytest.raises(ValueError, match="columns"):
        _run(model, np.zeros((8, 5), np.float32), y)
    with pytest.raises(ValueError, match="each row"):
        _kernels.TrainingData(X, y[:7], batch_size=4, feature_major=False)
    with pytest.raises(TypeError, match="labels or targets"):
        _kernels.TrainingData(X, batch_size=4, feature_major=False)
    too_few_targets = _kernels.TrainingData(X, None, np.zeros(8 * 2, np.float32), batch_size=4,
                                            feature_major=False)
    with pytest.raises(ValueError, match="targets"):
        _kernels.TrainingRun(model._network, too_few_targets, loss=LOSS["mse"],
                             rule=mlp.SGD(0.1).kernel_rule())
    with pytest.raises(ValueError, match="work"):
        _run(model, X, y, work=np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="dropout"):
        _kernels.Dropout(1.0, 0.0, 0)
    run = _run(model, X, y)
    with pytest.raises(ValueError, match="learning rate"):
        _kernels.train_steps(run, np.arange(8, dtype=np.int64), np.full(1, 0.1), 0, np.zeros(2))


def test_train_steps_through_the_run_matches_train():
    """The interface train() uses, driven by hand: the same parameters."""
    rng = np.random.default_rng(0)
    X = rng.random((40, 6), dtype=np.float32)
    y = rng.integers(0, 3, 40).astype(np.int64)
    trained = mlp.Model([6, 5, 3], seed=1)
    mlp.train(trained, X, y, iterations=10, batch_size=4, optimizer=mlp.Adam(0.01),
              sampling="replacement", seed=2, progress=False, n_threads=1)
    by_hand = mlp.Model([6, 5, 3], seed=1)
    state = mlp.optimizers.OptimizerState.fresh(mlp.Adam(0.01), by_hand.n_params, np.float32)
    run = _run(by_hand, X, y, rule=mlp.Adam(0.01).kernel_rule(), state=state.kernel_buffers(),
               dropout=_kernels.Dropout(0.0, 0.0, 0))
    sampler = np.random.default_rng(2)
    sampler.integers(2 ** 63)  # train() draws the run's dropout key first
    order = sampler.integers(0, 40, size=40).astype(np.int64)
    assert _kernels.train_steps(run, order, np.full(10, 0.01), 0, np.zeros(10)) == 10
    np.testing.assert_array_equal(by_hand._params, trained._params)


def test_apply_rule_refuses_plain_sgd_and_missing_state():
    params = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="state buffers"):
        _kernels.apply_rule(mlp.SGD(0.1).kernel_rule(), params, params.copy(), (), 0.1, 1)
    with pytest.raises(ValueError, match="state buffers"):
        _kernels.apply_rule(mlp.Adam().kernel_rule(), params, params.copy(), (params.copy(),),
                            0.1, 1)


def test_dropout_mask_refuses_ranges_outside_the_array():
    values = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="within"):
        _kernels.dropout_mask(values, 0.5, 1, 1, 0, (0, 5), (0, 3), False)
