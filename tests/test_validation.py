"""mlp/_validation.py: the checks every public entry point runs, and the messages
they give."""
from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

import mlp
from mlp._validation import check_batch_size, check_labels, check_matrix, check_writable


# ---------------------------------------------------------------------------
# Integer images: a warning that suggests dividing by 255
# ---------------------------------------------------------------------------

def _pixels(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 6), dtype=np.uint8), rng.integers(0, 3, n)


@pytest.mark.parametrize("call", [
    lambda m, X, y: m.predict(X),
    lambda m, X, y: m.predict_proba(X),
    lambda m, X, y: m.forward(X),
    lambda m, X, y: mlp.evaluate(m, X, y),
    lambda m, X, y: mlp.train(m, X, y, epochs=1, progress=False),
], ids=["predict", "predict_proba", "forward", "evaluate", "train"])
def test_integer_pixels_warn_and_suggest_dividing_by_255(call):
    X, y = _pixels()
    model = mlp.Model([6, 4, 3], seed=0)
    with pytest.warns(UserWarning, match=r"X holds uint8 values up to 25\d.*X / 255") as record:
        call(model, X, y)
    # Attributed to this file, where the user's call is, not to mlp's internals.
    assert {os.path.basename(w.filename) for w in record} == {"test_validation.py"}


def test_scaled_or_binary_integer_inputs_do_not_warn():
    model = mlp.Model([6, 4, 3], seed=0)
    X, y = _pixels()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.predict(X / 255)
        model.predict((X > 127).astype(np.uint8))
        model.predict(X > 127)
        mlp.train(model, (X > 127).astype(np.int64), y, epochs=1, progress=False)


def test_targets_and_other_matrices_do_not_get_the_pixel_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_matrix(np.full((2, 3), 7), "Y", n_columns=3, dtype=np.float64, targets=True)
        check_matrix(np.full((2, 1), 3), "sample_weight", n_columns=1, dtype=np.float64,
                     network_input=False)


# ---------------------------------------------------------------------------
# Shapes: the hint fits the argument
# ---------------------------------------------------------------------------

def test_loss_with_integer_labels_suggests_one_hot_targets():
    model = mlp.Model([4, 3], seed=0)
    X, y = np.zeros((5, 4)), np.array([0, 1, 2, 1, 0])
    for method in (model.loss, model.gradients):
        with pytest.raises(ValueError, match=r"one_hot\(labels, 3\)") as info:
            method(X, y)
        assert "reshape" not in str(info.value)


def test_single_sample_still_gets_the_reshape_hint():
    with pytest.raises(ValueError, match=r"X.reshape\(1, -1\)"):
        mlp.Model([4, 3]).predict(np.zeros(4))


# ---------------------------------------------------------------------------
# Labels: the message shows the value the user passed
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("labels,shown", [
    (np.array([0.0, 1e20]), "1e+20"),
    (np.array([0, 2**63 + 5], dtype=np.uint64), str(2**63 + 5)),
    (np.array([-1e30, 1.0]), "-1e+30"),
    (np.array([0, 3]), "3"),
    (np.array([0.0, 7.0]), "7"),
    (np.array([-2, 1], dtype=np.int8), "-2"),
])
def test_label_errors_report_the_real_value(labels, shown):
    with pytest.raises(ValueError, match="must lie in \\[0, 3\\)") as info:
        check_labels(labels, "y", n_classes=3)
    assert shown in str(info.value)
    assert "-9223372036854775808" not in str(info.value)


def test_train_reports_the_real_label():
    X = np.zeros((2, 4))
    with pytest.raises(ValueError, match=r"1e\+20"):
        mlp.train(mlp.Model([4, 3]), X, np.array([0.0, 1e20]), epochs=1, progress=False)


# ---------------------------------------------------------------------------
# batch_size: never an allocation sized from an arbitrary number
# ---------------------------------------------------------------------------

def test_batch_size_is_reduced_to_the_number_of_samples():
    assert check_batch_size(30, 100) == 30
    assert check_batch_size(100, 100) == 100
    assert check_batch_size(2**40, 100) == 100
    assert check_batch_size(np.int64(7), 100) == 7
    with pytest.raises(ValueError, match="batch_size"):
        check_batch_size(0, 100)
    with pytest.raises(TypeError, match="batch_size"):
        check_batch_size(2.0, 100)


# ---------------------------------------------------------------------------
# check_writable: the CLI's --save and --checkpoint, before any work
# ---------------------------------------------------------------------------

def test_check_writable_accepts_new_and_existing_files(tmp_path):
    assert check_writable(tmp_path / "m.npz", "--save") == str(tmp_path / "m.npz")
    (tmp_path / "old.npz").write_bytes(b"keep")
    check_writable(tmp_path / "old.npz", "--save")
    assert (tmp_path / "old.npz").read_bytes() == b"keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.npz"]  # no probe left behind


def test_check_writable_refuses_directories_and_missing_directories(tmp_path):
    with pytest.raises(ValueError, match=r"--save .* is a directory; give a file name"):
        check_writable(tmp_path, "--save")
    with pytest.raises(ValueError, match="is a directory"):
        check_writable(str(tmp_path) + os.sep, "--save")
    with pytest.raises(ValueError, match=r"--checkpoint .*: the directory .*missing.* does not exist"):
        check_writable(tmp_path / "missing" / "m.npz", "--checkpoint")
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ValueError, match="does not exist"):
        check_writable(tmp_path / "file" / "m.npz", "--save")
    with pytest.raises(TypeError, match="--save"):
        check_writable(3, "--save")


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_check_writable_refuses_an_unwritable_directory(unwritable_file):
    directory = os.path.dirname(unwritable_file)
    with pytest.raises(ValueError, match=r"--save .* cannot be written: .*directory"):
        check_writable(os.path.join(directory, "m.npz"), "--save")


# check_real and check_seed: the one range check for real numbers and the one
# seed check (optimizers' hyperparameters, augment's 64-bit kernel seed use them)

@pytest.mark.parametrize("bounds, value, message", [
    (dict(low=0, low_open=True), 0.0, "x must be a finite number > 0, got 0.0"),
    (dict(low=0), -1, "x must be a finite number >= 0, got -1.0"),
    (dict(low=0, high=1, high_open=True), 1, "x must be a finite number in [0, 1), got 1.0"),
    (dict(high=2), 3, "x must be a finite number <= 2, got 3.0"),
    (dict(), float("nan"), "x must be a finite number, got nan"),
])
def test_check_real_says_the_range_it_wanted(bounds, value, message):
    from mlp._validation import check_real

    with pytest.raises(ValueError) as error:
        check_real(value, "x", **bounds)
    assert str(error.value) == message


def test_check_seed_refuses_a_seed_past_its_bound_and_names_the_power_of_two():
    from mlp._validation import check_seed

    assert check_seed(2**64 - 1, below=2**64) == 2**64 - 1
    with pytest.raises(ValueError, match=r"^seed must be < 2\*\*64, got 18446744073709551616$"):
        check_seed(2**64, below=2**64)
    with pytest.raises(TypeError, match="seed must be an integer"):
        check_seed(1.5)


def test_checks_name_an_argument_as_the_caller_names_it_within_argument_names():
    """The CLI passes its flags: the library's errors then name them, and
    outside the context they name the Python argument."""
    from mlp._validation import argument_names
    from mlp.hyperparams import TrainingOptions

    with argument_names({"batch_size": "--batch-size", "epochs": "--epochs",
                         "iterations": "--iterations"}):
        with pytest.raises(ValueError, match="^--batch-size must be >= 1, got 0$"):
            TrainingOptions(batch_size=0)
        with pytest.raises(ValueError, match="^give --epochs or --iterations, not both$"):
            TrainingOptions(epochs=1, iterations=2)
    with pytest.raises(ValueError, match="^batch_size must be >= 1, got 0$"):
        TrainingOptions(batch_size=0)
    with argument_names({"learning_rate": "--lr", "weight_decay": "--weight-decay"}):
        with pytest.raises(ValueError, match=r"^--lr \* --weight-decay must be below 1"):
            mlp.AdamW(learning_rate=1.0, weight_decay=2.0)


def test_misaligned_arrays_are_copied_to_aligned_memory():
    """An array at an odd address (np.frombuffer at an odd offset) reaches no
    kernel as it is: check_matrix returns an aligned copy, and a model gives
    the same outputs for it as for the aligned array."""
    X = np.random.default_rng(0).random((6, 5), dtype=np.float32)
    raw = np.zeros(X.nbytes + 1, dtype=np.uint8)
    raw[1:] = np.frombuffer(X.tobytes(), dtype=np.uint8)
    odd = np.frombuffer(raw.data, dtype=np.float32, offset=1).reshape(X.shape)
    assert not odd.flags.aligned
    checked = check_matrix(odd, "X", n_columns=5, dtype=np.float32)
    assert checked.flags.aligned and checked.flags.c_contiguous
    np.testing.assert_array_equal(checked, X)
    model = mlp.Model([5, 4, 3], seed=0)
    np.testing.assert_array_equal(model.forward(odd), model.forward(X))
