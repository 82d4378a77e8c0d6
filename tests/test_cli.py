"""The command line, end to end on a tiny IDX data set written by the test."""
import re
import subprocess
import sys

import numpy as np
import pytest

from mlp import Model
from mlp.cli import main
from mlp.presets import PRESETS
from test_datasets import write_idx

SENTENCE = re.compile(r"The model classified correctly (\d+) out of (\d+) test examples")


@pytest.fixture
def tiny_mnist(tmp_path, monkeypatch):
    monkeypatch.setenv("MLP_CACHE_DIR", str(tmp_path / "cache"))
    directory = tmp_path / "idx"
    write_idx(directory, n_train=120, n_test=30)
    return directory


def test_train_save_evaluate(tiny_mnist, tmp_path, capsys):
    saved = tmp_path / "model.npz"
    assert main(["train", "--data", str(tiny_mnist), "--iterations", "7", "--batch-size", "8",
                 "--no-progress", "--seed", "3", "--save", str(saved)]) == 0
    out = capsys.readouterr().out
    match = SENTENCE.search(out)
    assert match and match.group(2) == "30"
    assert "Test accuracy:" in out and "Training time:" in out and "for 7 steps" in out
    model = Model.load(saved)
    assert model.layer_sizes == PRESETS["default"].layers
    assert main(["evaluate", str(saved), "--data", str(tiny_mnist)]) == 0
    again = SENTENCE.search(capsys.readouterr().out)
    assert again.group(1) == match.group(1)


def test_flags_override_the_preset(tiny_mnist, tmp_path, capsys):
    saved = tmp_path / "m.npz"
    assert main(["train", "--preset", "notebook", "--data", str(tiny_mnist), "--iterations", "3",
                 "--layers", "784,16,10", "--dtype", "float32", "--no-progress",
                 "--save", str(saved)]) == 0
    model = Model.load(saved)
    assert model.layer_sizes == (784, 16, 10)
    assert model.dtype == np.float32
    assert (model.activation, model.output) == ("sigmoid", "sigmoid")
    assert "lr 2.0 (constant), loss mse, sampling replacement" in capsys.readouterr().out


def test_progress_bar_is_shown(tiny_mnist, capsys):
    assert main(["train", "--data", str(tiny_mnist), "--iterations", "4"]) == 0
    err = capsys.readouterr().err
    assert "4/4" in err and "loss=" in err


@pytest.mark.parametrize("argv, message", [
    (["--layers", "784,16,3"], "must end with 10 outputs"),
    (["--layers", "100,16,10"], "must start with 784 inputs"),
    (["--preset", "notebook", "--loss", "cross_entropy"], "needs a model with output='softmax'"),
])
def test_bad_configurations_exit_2_with_a_message(tiny_mnist, capsys, argv, message):
    assert main(["train", "--data", str(tiny_mnist), "--iterations", "2", "--no-progress"]
                + argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["train", "--layers", "78x"],
    ["train", "--lr", "-1"],
    ["train", "--epochs", "2", "--iterations", "3"],
    ["train", "--preset", "nope"],
    ["evaluate"],
])
def test_bad_flags_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_missing_files(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "none.npz"), "--data", str(tmp_path)]) == 2
    assert "no model file" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "nothing-here"), "--no-progress"]) == 2
    assert "error" in capsys.readouterr().err


def test_corrupt_model_file(tmp_path, tiny_mnist, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    assert main(["evaluate", str(bad), "--data", str(tiny_mnist)]) == 2
    err = capsys.readouterr().err
    assert "is not a valid mlp model file" in err and "allow_pickle" not in err
    assert err.count("\n") == 1 and str(bad) in err


def test_python_dash_m_runs_the_same_program(tmp_path):
    # Run outside the source tree: `-m` puts the working directory first on
    # sys.path, and the checkout's mlp/ has no compiled extension.
    import os

    import mlp

    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(mlp.__file__)))
    result = subprocess.run([sys.executable, "-m", "mlp", "train", "--help"],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    assert result.returncode == 0
    assert "--preset" in result.stdout and "notebook" in result.stdout


# ---------------------------------------------------------------------------
# Polish: --version, wording, usage, help
# ---------------------------------------------------------------------------

def test_version(capsys):
    import mlp

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"mlp {mlp.__version__}"


@pytest.mark.parametrize("flags, wording", [
    (["--epochs", "1"], "preset default: 1 epoch,"),
    (["--epochs", "2"], "preset default: 2 epochs,"),
    (["--iterations", "1"], "preset default: 1 iteration,"),
])
def test_run_length_is_singular_or_plural(tiny_mnist, capsys, flags, wording):
    assert main(["train", "--data", str(tiny_mnist), "--no-progress", *flags]) == 0
    assert wording in capsys.readouterr().out


@pytest.mark.parametrize("argv, usage", [
    (["train", "--bad-flag"], "usage: mlp train"),
    (["train", "--epochs", "2", "extra"], "usage: mlp train"),
    (["evaluate", "m.npz", "--bad-flag"], "usage: mlp evaluate"),
])
def test_unknown_flags_show_the_subcommands_usage(argv, usage, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(usage)
    assert f"{usage.split()[-1]}: error: unrecognized arguments: {argv[-1]}" in err


def test_evaluate_threads_help_describes_inference_workers(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--threads THREADS worker threads sharing the test images during inference" in out
    assert "BLAS" not in out


# ---------------------------------------------------------------------------
# Files: one line naming the user's path, exit 2; --save checked before any work
# ---------------------------------------------------------------------------

def test_evaluate_with_a_model_of_the_wrong_shape_speaks_of_inputs(tiny_mnist, tmp_path, capsys):
    path = tmp_path / "small.npz"
    Model([100, 10], seed=0).save(path)
    assert main(["evaluate", str(path), "--data", str(tiny_mnist)]) == 2
    err = capsys.readouterr().err
    assert err == (f"mlp: error: the model {str(path)!r} expects 100 inputs and 10 outputs, "
                   "but the data has 784 inputs (pixels per image) and 10 classes\n")
    Model([784, 4], seed=0).save(path)
    assert main(["evaluate", str(path), "--data", str(tiny_mnist)]) == 2
    assert "expects 784 inputs and 4 outputs" in capsys.readouterr().err


def _unwritable_directory(tmp_path):
    import os

    if os.geteuid() == 0:  # root ignores permission bits; /proc refuses new files
        return "/proc"
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    return str(locked)


@pytest.mark.parametrize("where, message", [
    ("missing", "does not exist"),
    ("directory", "is a directory"),
    ("unwritable", "cannot be written"),
])
def test_save_path_is_checked_before_loading_data_or_training(tmp_path, capsys, where, message):
    import os

    target = {"missing": str(tmp_path / "no" / "m.npz"), "directory": str(tmp_path),
              "unwritable": os.path.join(_unwritable_directory(tmp_path), "m.npz")}[where]
    # --data names nothing: had it been read first, the error would be about it.
    code = main(["train", "--data", str(tmp_path / "no-data"), "--iterations", "1",
                 "--no-progress", "--save", target])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith(f"mlp: error: --save {target!r}") and message in err
    assert err.count("\n") == 1


def test_a_failing_save_after_training_is_one_line(tiny_mnist, tmp_path, capsys, monkeypatch):
    import errno

    path = str(tmp_path / "m.npz")

    def full_disk(self, target):
        raise OSError(errno.ENOSPC, "No space left on device", target)

    monkeypatch.setattr(Model, "save", full_disk)
    assert main(["train", "--data", str(tiny_mnist), "--iterations", "1", "--no-progress",
                 "--save", path]) == 2
    assert capsys.readouterr().err == f"mlp: error: {path}: No space left on device\n"


@pytest.mark.parametrize("make, message", [
    (lambda p: p.mkdir(), "is a directory, not a model file"),
    (lambda p: p.write_bytes(b"PK\x05\x06" + bytes(18)), "is not a valid mlp model file"),
])
def test_model_file_errors_are_one_line_naming_the_path(tiny_mnist, tmp_path, capsys, make,
                                                        message):
    path = tmp_path / "model.npz"
    make(path)
    assert main(["evaluate", str(path), "--data", str(tiny_mnist)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlp: error: ") and str(path) in err and message in err
    assert err.count("\n") == 1
