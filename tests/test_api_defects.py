"""Defects users met through the Python API: misspelt keywords, float images
in 0..255, and the repr of AdamW."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import mlp
from mlp import Adam, AdamW, SGD  # noqa: F401  (names the reprs evaluate in)
from mlp._validation import FLOAT_INPUT_WARNING_BOUND


def _data(n=64, n_features=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, n_features)).astype(np.float32), rng.integers(0, 3, n)


# -- unknown keywords -----------------------------------------------------------

@pytest.mark.parametrize("given, suggested", [("epoch", "epochs"), ("learningrate", "learning_rate"),
                                              ("validaton", "validation"),
                                              ("batchsize", "batch_size")])
def test_train_names_itself_and_the_closest_keyword(given, suggested):
    X, y = _data()
    model = mlp.Model([6, 3], seed=0)
    before = model._params.copy()
    with pytest.raises(TypeError) as raised:
        mlp.train(model, X, y, progress=False, **{given: 1})
    assert str(raised.value) == (f"train() got an unexpected keyword argument {given!r}; "
                                 f"did you mean {suggested!r}?")
    np.testing.assert_array_equal(model._params, before)


def test_train_lists_its_keywords_when_none_is_close():
    X, y = _data()
    with pytest.raises(TypeError, match="train\\(\\) got an unexpected keyword argument 'zzz'; "
                                        "it takes .*epochs.*learning_rate") as raised:
        mlp.train(mlp.Model([6, 3], seed=0), X, y, zzz=1)
    assert "TrainingOptions" not in str(raised.value)


def test_training_step_names_itself_and_the_closest_keyword():
    X, y = _data()
    with pytest.raises(TypeError, match="^training_step\\(\\) got an unexpected keyword argument "
                                        "'lerning_rate'; did you mean 'learning_rate'\\?$"):
        mlp.training_step(mlp.Model([6, 3], seed=0), X, y, lerning_rate=0.1)
    # Its signature and its arguments are unchanged.
    assert "learning_rate" in str(__import__("inspect").signature(mlp.training_step))
    assert mlp.training_step(mlp.Model([6, 3], seed=0), X, y, 0.1) > 0


# -- float input far outside [0, 1] -----------------------------------------------

def _training_warnings(model, X, y, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mlp.train(model, X, y, epochs=1, progress=False, seed=0, **kwargs)
    return [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_images_in_0_to_255_warn_as_uint8_images_do(dtype):
    X, y = _data(seed=1)
    pixels = np.round(X * 255)
    float_messages = _training_warnings(mlp.Model([6, 3], seed=0), pixels.astype(dtype), y)
    uint8_messages = _training_warnings(mlp.Model([6, 3], seed=0), pixels.astype(np.uint8), y)
    assert len(float_messages) == 1 and len(uint8_messages) == 1
    expected_tail = ("the network expects features scaled to about [0, 1], and trains poorly "
                     "on raw pixel values. For 8-bit images pass X / 255.")
    assert float_messages[0].endswith(expected_tail) and uint8_messages[0].endswith(expected_tail)
    assert f"X holds {np.dtype(dtype).name} values up to 25" in float_messages[0]


def test_training_step_warns_about_float_images_in_0_to_255():
    X, y = _data()
    with pytest.warns(UserWarning, match="pass X / 255"):
        mlp.training_step(mlp.Model([6, 3], seed=0), X * 255, y, learning_rate=0.01)


def test_the_float_warning_takes_values_beyond_the_documented_bound_either_side():
    X, y = _data()
    bound = FLOAT_INPUT_WARNING_BOUND
    assert bound == 10
    for scale in (bound, -bound):
        inside = X.copy()
        inside[0, 0] = scale
        assert _training_warnings(mlp.Model([6, 3], seed=0), inside, y) == []
    low = X.copy()
    low[0, 0] = -3 * bound
    messages = _training_warnings(mlp.Model([6, 3], seed=0), low, y)
    assert len(messages) == 1 and "values down to -30" in messages[0]


def test_standardised_features_and_regression_inputs_do_not_warn():
    rng = np.random.default_rng(0)
    standardised = rng.standard_normal((500, 6)).astype(np.float32)
    y = rng.integers(0, 3, 500)
    assert _training_warnings(mlp.Model([6, 3], seed=0), standardised, y) == []
    # The rule is for classifiers; a regression's inputs are left to it.
    regression = mlp.Model([6, 4, 1], output="identity", seed=0)
    assert _training_warnings(regression, standardised * 100, standardised[:, 0]) == []


# -- AdamW ------------------------------------------------------------------------

def test_adamw_repr_reads_adamw_and_evaluates_back_to_an_equal_optimizer():
    for optimizer in (AdamW(), AdamW(learning_rate=0.01, weight_decay=0.0, eps_hat=True),
                      Adam(weight_decay=0.1, decoupled=True)):
        text = repr(optimizer)
        assert text.startswith("AdamW(") and "decoupled" not in text
        assert eval(text) == optimizer
    assert repr(AdamW()) == ("AdamW(learning_rate=0.001, beta1=0.9, beta2=0.999, eps=1e-08, "
                             "weight_decay=0.01, eps_hat=False)")
    assert repr(Adam()).startswith("Adam(") and eval(repr(Adam())) == Adam()
    assert AdamW() == Adam(weight_decay=0.01, decoupled=True)


def test_adamw_state_saves_loads_and_continues(tmp_path):
    X, y = _data()
    model = mlp.Model([6, 4, 3], seed=0)
    mlp.train(model, X, y, epochs=1, optimizer=AdamW(), progress=False, seed=0)
    model.save(tmp_path / "model.npz")
    loaded = mlp.Model.load(tmp_path / "model.npz")
    assert loaded.optimizer_state.optimizer == AdamW()
    assert repr(loaded.optimizer_state.optimizer).startswith("AdamW(")
    steps = loaded.optimizer_state.step
    mlp.train(loaded, X, y, epochs=1, optimizer=AdamW(), progress=False)
    assert loaded.optimizer_state.step == 2 * steps  # continued, not restarted
