"""The command line, end to end on a tiny IDX data set written by the test."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import require, write_idx

import mlp
from mlp import Model
from mlp.activations import ACTIVATIONS, HIDDEN_ACTIVATIONS
from mlp.cli import main
from mlp.presets import PRESETS

SENTENCE = re.compile(r"The model classified correctly (\d+) out of (\d+) test examples")


def test_train_save_evaluate(tiny_mnist, tmp_path, capsys):
    saved = tmp_path / "model.npz"
    assert main(["train", "--data", str(tiny_mnist), "--iterations", "7", "--batch-size", "8",
                 "--no-progress", "--seed", "3", "--save", str(saved)]) == 0
    out = capsys.readouterr().out
    match = SENTENCE.search(out)
    assert match and match.group(2) == "30"
    assert "Test accuracy:" in out and "Training time:" in out and "for 7 steps" in out
    model = Model.load(saved)
    assert model.layer_sizes == PRESETS["default"].model.layers
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
    assert "sgd lr 2 (constant), loss mse, sampling replacement" in capsys.readouterr().out


@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
def test_every_hidden_activation_trains_saves_and_evaluates(tiny_mnist, tmp_path, capsys,
                                                            activation):
    saved = tmp_path / "m.npz"
    assert main(["train", "--data", str(tiny_mnist), "--iterations", "3", "--layers",
                 "784,16,10", "--activation", activation, "--no-progress", "--seed", "1",
                 "--save", str(saved)]) == 0
    trained = SENTENCE.search(capsys.readouterr().out)
    model = Model.load(saved)
    assert model.activation == activation
    assert model.init == ACTIVATIONS[activation].init
    assert main(["evaluate", str(saved), "--data", str(tiny_mnist)]) == 0
    assert SENTENCE.search(capsys.readouterr().out).group(1) == trained.group(1)


@pytest.mark.parametrize("flags, summary", [
    (["--lr", "3"], "sgd lr 3 (constant)"),
    (["--momentum", "0.5"], "sgd lr 2, momentum 0.5 (constant)"),
    (["--optimizer", "adam"], "adam lr 0.001, betas"),
    (["--optimizer", "rmsprop", "--alpha", "0.9", "--momentum", "0.5", "--centered",
      "--eps", "1e-6"], "rmsprop lr 0.01, alpha 0.9, eps 1e-06, momentum 0.5 (centered) ("),
    (["--optimizer", "adagrad", "--lr-decay", "0.1", "--initial-accumulator-value", "0.2"],
     "adagrad lr 0.01, eps 1e-10, lr decay 0.1 ("),
])
def test_optimizer_flags_apply_to_the_notebook_preset(tiny_mnist, capsys, flags, summary):
    assert main(["train", "--preset", "notebook", "--data", str(tiny_mnist), "--iterations", "1",
                 "--layers", "784,16,10", "--no-progress", *flags]) == 0
    assert summary in capsys.readouterr().out


def test_progress_bar_is_shown(tiny_mnist, capsys):
    assert main(["train", "--data", str(tiny_mnist), "--iterations", "4"]) == 0
    err = capsys.readouterr().err
    assert "4/4" in err and "loss=" in err


@pytest.mark.parametrize("argv, message", [
    (["--layers", "784,16,3"], "must end with 10 outputs"),
    (["--layers", "100,16,10"], "must start with 784 inputs"),
    (["--preset", "notebook", "--loss", "cross_entropy"], "needs a model with output='softmax'"),
    (["--lr", "-1"], "--lr must be a finite number > 0"),
    (["--momentum", "1.5"], "--momentum must be"),
    (["--optimizer", "adam", "--momentum", "0.9"], "--momentum does not apply to --optimizer adam"),
    (["--dropout", "1"], "--dropout is the probability"),
    (["--optimizer", "sgd", "--momentum", "0", "--nesterov"], "--nesterov needs --momentum > 0"),
    (["--momentum", "0"], "--nesterov needs --momentum > 0 (Nesterov momentum with no momentum "
                          "is plain SGD); add --no-nesterov"),
    (["--optimizer", "adamw", "--weight-decay", "2000"], "--lr * --weight-decay must be below 1"),
    (["--optimizer", "rmsprop", "--alpha", "1"], "--alpha must be a finite number in [0, 1)"),
    (["--optimizer", "adagrad", "--alpha", "0.9"], "--alpha does not apply to --optimizer adagrad"),
    (["--optimizer", "adagrad", "--centered"], "--centered does not apply to --optimizer adagrad"),
    (["--optimizer", "rmsprop", "--lr-decay", "0.1"],
     "--lr-decay does not apply to --optimizer rmsprop"),
    (["--optimizer", "adagrad", "--initial-accumulator-value", "-1"],
     "--initial-accumulator-value must be a finite number >= 0"),
    (["--warmup=-1"], "--warmup must be >= 0, got -1.0"),
    (["--layers", "784,10", "--dropout", "0.5"],
     "--dropout drops hidden units, and Model([784, 10], activation='relu', output='softmax', "
     "init='he', dtype=float32) has none; use --input-dropout, or add a hidden layer"),
])
def test_bad_configurations_exit_2_with_a_message(tiny_mnist, capsys, argv, message):
    assert main(["train", "--data", str(tiny_mnist), "--iterations", "2", "--no-progress"]
                + argv) == 2
    assert message in capsys.readouterr().err


def test_divergence_is_one_line_naming_the_learning_rate(tiny_mnist, capsys):
    assert main(["train", "--data", str(tiny_mnist), "--layers", "784,16,10", "--epochs", "1",
                 "--lr", "1e30", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlp: error: training diverged") and err.count("\n") == 1, err
    assert "Lower the learning rate" in err


@pytest.mark.parametrize("argv", [
    ["train", "--layers", "78x"],
    ["train", "--lr", "x"],
    ["train", "--epochs", "2", "--iterations", "3"],
    ["train", "--preset", "nope"],
    ["evaluate"],
])
def test_bad_flags_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "error" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["train", "--threads", "0"], "--threads must be between 1 and 1024, got 0"),
    (["train", "--threads", "99999999999999"], "--threads must be between 1 and 1024"),
    (["evaluate", "m.npz", "--threads", "99999999999999"], "--threads must be between 1 and"),
    (["train", "--seed", "-1"], "--seed must be between 0 and 4294967295, got -1"),
    (["train", "--preset", "notebook", "--seed", "4294967296"], "--seed must be between 0 and"),
    (["augment-preview", "--seed", "-1"], "--seed must be between 0 and 4294967295"),
])
def test_out_of_range_threads_and_seeds_are_refused_when_parsed(argv, message, tiny_mnist,
                                                               capsys):
    with pytest.raises(SystemExit) as info:
        main([*argv, "--data", str(tiny_mnist)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mlp: error: {message}") and err.count("\n") == 1, err


@pytest.mark.parametrize("argv, flag", [
    (["train", "--save", ""], "--save"),
    (["train", "--checkpoint", ""], "--checkpoint"),
    (["train", "--resume", ""], "--resume"),
    (["train", "--data", ""], "--data"),
    (["evaluate", ""], "MODEL.npz"),
    (["report", "m.npz", "--out", ""], "--out"),
    (["predict", "m.npz", ""], "INPUT"),
    (["augment-preview", "--out", ""], "--out"),
])
def test_empty_paths_are_refused_before_any_work(argv, flag, tiny_mnist, tmp_path, capsys,
                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = [] if "--data" in argv else ["--data", str(tiny_mnist)]
    with pytest.raises(SystemExit) as info:
        main([*argv, *data, *(["--iterations", "1", "--no-progress"] if argv[0] == "train"
                              else [])])
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith(f"mlp: error: {flag} takes a path, got an empty string")
    assert set(os.listdir(tmp_path)) <= {"idx", "cache"}  # no ./.png, no model


@pytest.mark.parametrize("command, n_train, n_test, message", [
    ("train", 0, 30, "holds 0 training images and no validation images; mlp train needs some "
                     "to validate on (from IDX files it keeps one training image in six for "
                     "that, so it needs at least 6)"),
    ("train", 5, 30, "holds 5 training images and no validation images; mlp train needs some "
                     "to validate on (from IDX files it keeps one training image in six for "
                     "that, so it needs at least 6)"),
    ("train", 120, 0, "holds no test images; mlp train needs at least one, to measure accuracy "
                      "on"),
    ("evaluate", 120, 0, "holds no test images; mlp evaluate needs at least one, to measure "
                         "accuracy on"),
])
def test_data_too_small_is_one_line_naming_data(command, n_train, n_test, message,
                                                random_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLP_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "small"
    write_idx(data, n_train=n_train, n_test=n_test)
    argv = {"train": ["train", "--iterations", "1", "--no-progress"],
            "evaluate": ["evaluate", str(random_model)]}[command]
    assert main([*argv, "--data", str(data)]) == 2
    assert capsys.readouterr().err == f"mlp: error: --data {data} {message}\n"


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
    assert "is not a model saved by mlp.Model.save" in err and "allow_pickle" not in err
    assert err.count("\n") == 1 and str(bad) in err


def _configured(*argv):
    from mlp.cli import _configure, build_parser

    return _configure(build_parser().parse_args(["train", *argv]))


@pytest.mark.parametrize("argv, expected", [
    (["--optimizer", "rmsprop", "--lr", "0.003", "--alpha", "0.9", "--eps", "1e-6",
      "--weight-decay", "0.01", "--momentum", "0.5", "--centered"],
     mlp.RMSprop(0.003, alpha=0.9, eps=1e-6, weight_decay=0.01, momentum=0.5, centered=True)),
    (["--optimizer", "rmsprop"], mlp.RMSprop()),
    (["--optimizer", "adagrad", "--lr", "0.1", "--lr-decay", "0.01", "--weight-decay", "0.001",
      "--initial-accumulator-value", "0.1", "--eps", "1e-8"],
     mlp.Adagrad(0.1, lr_decay=0.01, weight_decay=0.001, initial_accumulator_value=0.1,
                 eps=1e-8)),
    (["--optimizer", "adamw", "--eps", "1e-6"], mlp.Adam(eps=1e-6, decoupled=True)),
])
def test_optimizer_flags_build_each_registered_optimizer(argv, expected):
    assert _configured(*argv).training.optimizer == expected


def test_a_registered_optimizer_gets_its_choice_and_flags(monkeypatch):
    """The CLI's --optimizer choices and flags come from the registry: a new
    optimizer's fields get flags, shared with the optimizers that have a
    field of that name."""
    import dataclasses

    from mlp import optimizers

    @dataclasses.dataclass(frozen=True)
    class Toy(optimizers._Optimizer):
        learning_rate: float = dataclasses.field(default=0.5, metadata={"help": "rate",
                                                                          "flag": "--lr"})
        momentum: float = dataclasses.field(default=0.0, metadata={"help": "momentum"})
        toy_factor: float = dataclasses.field(default=2.0, metadata={"help": "the toy's factor"})
        name = "toy"

    monkeypatch.setitem(optimizers.OPTIMIZERS, "toy", Toy)
    assert _configured("--optimizer", "toy", "--toy-factor", "3", "--momentum", "0.2",
                       "--lr", "0.1").training.optimizer == Toy(0.1, 0.2, 3.0)
    with pytest.raises(ValueError, match="--toy-factor does not apply to --optimizer sgd"):
        _configured("--optimizer", "sgd", "--toy-factor", "3")
    assert Toy().summary() == "toy lr 0.5"


def test_augment_flags_parse_into_the_preset():
    from dataclasses import replace

    from mlp.augment import Affine, Compose, Elastic

    preset = PRESETS["augmented"].training.augment
    assert isinstance(preset, Compose)
    assert _configured("--preset", "augmented").training.augment == preset
    assert _configured("--preset", "augmented", "--rotation", "5", "--elastic-sigma", "6") \
        .training.augment == Compose(replace(preset.affine, rotation=5.0),
                                     replace(preset.elastic, sigma=6.0))
    assert _configured("--preset", "augmented", "--augment", "elastic").training.augment \
        == preset.elastic
    assert _configured("--preset", "augmented", "--augment", "none").training.augment is None
    assert _configured("--augment", "affine", "--shift", "1").training.augment \
        == Affine(shift=1.0)
    assert _configured("--augment", "both").training.augment == Affine() + Elastic()
    assert PRESETS["default"].training.augment is None


@pytest.mark.parametrize("argv, message", [
    (["train", "--rotation", "3"], "--rotation does not apply to --augment none; choose"),
    (["train", "--augment", "affine", "--elastic-alpha", "3"],
     "--elastic-alpha does not apply to --augment affine"),
    (["train", "--preset", "augmented", "--scale", "1.5"], "--scale must be < 1, got 1.5"),
    (["train", "--augment", "elastic", "--elastic-sigma", "-1"], "--elastic-sigma must be"),
    (["augment-preview", "--augment", "none"], "--augment none leaves nothing to preview"),
    (["augment-preview", "--columns", "0"], "--columns must be between 1 and 32, got 0"),
    (["augment-preview", "--columns", "1000000"], "--columns must be between 1 and 32"),
    (["augment-preview", "--rows", "100000"], "--rows must be between 1 and 10, got 100000"),
])
def test_bad_augment_flags_exit_2_with_one_line(argv, message, tiny_mnist, capsys):
    assert main([*argv, "--data", str(tiny_mnist)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlp: error: " + message) and err.count("\n") == 1, err


def test_augment_preview_columns_are_at_most_the_training_images(tmp_path, monkeypatch,
                                                                  capsys):
    monkeypatch.setenv("MLP_CACHE_DIR", str(tmp_path / "cache"))
    write_idx(tmp_path / "idx", n_train=12, n_test=5)  # 10 training, 2 validation images
    assert main(["augment-preview", "--data", str(tmp_path / "idx"), "--columns", "20"]) == 2
    assert capsys.readouterr().err == ("mlp: error: --columns must be at most the 10 training "
                                       "images of --data, got 20\n")


def test_train_with_augment(tiny_mnist, capsys):
    assert main(["train", "--data", str(tiny_mnist), "--iterations", "3", "--batch-size", "8",
                 "--layers", "784,16,10", "--augment", "both", "--rotation", "7",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "augment affine (rotation 7, scale 0.12, shear 10, shift 2) + elastic (alpha 34, " \
           "sigma 4)" in out
    assert "for 3 steps" in out


def test_augment_preview_writes_a_non_blank_png(tiny_mnist, tmp_path, capsys):
    matplotlib_image = require("matplotlib.image")
    out = tmp_path / "grid.png"
    assert main(["augment-preview", "--data", str(tiny_mnist), "--out", str(out),
                 "--columns", "4", "--rows", "2", "--augment", "elastic"]) == 0
    assert str(out) in capsys.readouterr().out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib_image.imread(out)[..., :3].mean(axis=-1)
    assert pixels.std() > 0.05 and pixels.min() < 0.2 and pixels.max() > 0.9


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


# -- mlp evaluate: classes never predicted --------------------------------------

def test_evaluate_warns_about_classes_never_predicted(tiny_mnist, tmp_path, capsys):
    saved = tmp_path / "constant.npz"
    model = Model([784, 10], output="softmax", init="xavier")
    model.weights[0][...] = 0
    model.biases[0][...] = 0
    model.biases[0][[3, 8]] = [2.0, 2.0 - 1e-3]  # only 3 ever wins
    model.save(saved)
    assert main(["evaluate", str(saved), "--data", str(tiny_mnist)]) == 0
    err = capsys.readouterr().err
    assert "mlp: warning: classes 0, 1, 2, 4, 5, 6, 7, 8 and 9 are never predicted" in err


# -- mlp predict ------------------------------------------------------------------

def _draw_test_digit(pixels, path, scale, canvas, offset, colour=False):
    """A test digit as a large dark-on-white picture: upscaled, inverted, pasted."""
    from PIL import Image

    digit = Image.fromarray(255 - pixels.reshape(28, 28)).resize(
        (28 * scale, 28 * scale), Image.Resampling.BICUBIC)
    picture = Image.new("L", canvas, 255)
    picture.paste(digit, offset)
    (picture.convert("RGB") if colour else picture).save(path)


@pytest.fixture
def random_model(tmp_path):
    path = tmp_path / "random.npz"
    Model([784, 16, 10], activation="relu", output="softmax", init="he", seed=0).save(path)
    return path


@pytest.fixture
def digit_file(tmp_path):
    require("PIL")
    path = tmp_path / "digit.png"
    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[6:22, 12:16] = 255
    _draw_test_digit(pixels.ravel(), path, 5, (200, 180), (30, 20))
    return path


def test_predict_prints_each_file_and_its_top_three(random_model, digit_file, capsys):
    assert main(["predict", str(random_model), str(digit_file), str(digit_file)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    share = r"([<>]?\d+\.\d)%"
    match = re.fullmatch(rf"(\S+)\s+(\d)   top 3: (\d) \({share}\), (\d) \({share}\), "
                         rf"(\d) \({share}\)", lines[0])
    assert match and match.group(1) == str(digit_file)
    assert match.group(2) == match.group(3)
    shares = [float(match.group(g).strip("<>")) for g in (4, 6, 8)]
    assert shares == sorted(shares, reverse=True)


def test_predict_never_prints_a_certain_100_or_0_percent():
    from mlp.cli import _share

    assert [_share(p) for p in (1.0, 0.99996, 0.5, 0.00004, 0.0)] == [
        "100.0%", ">99.9%", "50.0%", "<0.1%", "0.0%"]


def test_predict_json(random_model, digit_file, capsys):
    import json

    from mlp.datasets import prepare_digit

    assert main(["predict", str(random_model), str(digit_file), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    probabilities = Model.load(random_model).predict_proba(prepare_digit(digit_file)[None])[0]
    order = np.argsort(-probabilities)
    assert results == [{"file": str(digit_file), "prediction": int(order[0]),
                        "top3": [[int(c), pytest.approx(float(probabilities[c]), abs=1e-6)]
                                 for c in order[:3]]}]


@pytest.mark.parametrize("case, words", [
    ("text file", "is not an image mlp can read"),
    ("empty file", "is not an image mlp can read"),
    ("all white", "no ink found"),
    ("missing image", "no image file"),
    ("model is not a model", "not a model saved by mlp"),
    ("model is an image", "not a model saved by mlp"),
    ("model takes other inputs", "takes 100 inputs"),
    ("model is a regressor", "has 'identity' output, a regression model; mlp predict needs a "
                             "classifier, a model with softmax or sigmoid output (in Python, "
                             "mlp.evaluate reports"),
    # Finite weights whose outputs overflow to NaN: once ranked as class 0 (nan%).
    ("model overflows", "outputs are NaN"),
])
def test_predict_bad_input_is_one_line_exit_2(case, words, random_model, digit_file, tmp_path,
                                              capsys):
    from PIL import Image

    model, image = random_model, tmp_path / "input.png"
    if case == "text file":
        image.write_text("7\n")
    elif case == "empty file":
        image.write_bytes(b"")
    elif case == "all white":
        Image.new("RGB", (120, 90), (255, 255, 255)).save(image)
    elif case == "missing image":
        image = tmp_path / "nowhere.png"
    elif case == "model is not a model":
        model = tmp_path / "model.npz"
        model.write_text("weights: lots\n")
    elif case == "model is an image":
        model = digit_file
    elif case == "model takes other inputs":
        model = tmp_path / "small.npz"
        Model([100, 10]).save(model)
    elif case == "model is a regressor":
        model = tmp_path / "regressor.npz"
        Model([784, 10], output="identity").save(model)
    elif case == "model overflows":
        model = tmp_path / "huge.npz"
        huge = Model([784, 16, 10], seed=0)
        huge.weights[0][...] = 3e38
        huge.weights[1][...] = 3e38
        huge.save(model)
    if case.startswith("model"):
        image = digit_file
    assert main(["predict", str(model), str(digit_file), str(image)]) == 2
    captured = capsys.readouterr()
    if case.startswith("model"):
        assert captured.out == ""  # no model, no predictions
    else:  # the good file is still classified
        assert captured.out.startswith(f"{digit_file}  ") and captured.out.count("\n") == 1
        assert captured.err.startswith(f"mlp: error: {image}")
    assert captured.err.startswith("mlp: error: ") and words in captured.err
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err


@pytest.mark.parametrize("as_json", [False, True])
def test_predict_classifies_every_file_it_can_and_names_each_it_cannot(
        as_json, random_model, digit_file, tmp_path, capsys):
    import json

    note, missing = tmp_path / "note.txt", tmp_path / "nowhere.png"
    note.write_text("seven\n")
    files = [str(note), str(digit_file), str(missing), str(digit_file)]
    assert main(["predict", str(random_model), *files, *(["--json"] if as_json else [])]) == 2
    out, err = capsys.readouterr()
    if as_json:
        assert [result["file"] for result in json.loads(out)] == [str(digit_file)] * 2
    else:
        assert [line.split()[0] for line in out.splitlines()] == [str(digit_file)] * 2
    assert err.splitlines() == [
        f"mlp: error: {note} is not an image mlp can read (use PNG, JPEG, GIF, BMP, TIFF or "
        f"WebP)",
        f"mlp: error: {missing}: no image file"]


def test_predict_with_no_readable_file_prints_no_predictions(random_model, tmp_path, capsys):
    import json

    note = tmp_path / "note.txt"
    note.write_text("seven\n")
    assert main(["predict", str(random_model), str(note)]) == 2
    assert capsys.readouterr().out == ""
    assert main(["predict", str(random_model), str(note), "--json"]) == 2
    assert json.loads(capsys.readouterr().out) == []


def test_report_refuses_to_write_over_its_model(random_model, tiny_mnist, tmp_path, capsys):
    before = random_model.read_bytes()
    link = tmp_path / "link.npz"
    link.symlink_to(random_model)
    for out in (str(random_model), os.path.join(str(tmp_path), ".", "random.npz"), str(link)):
        assert main(["report", str(random_model), "--data", str(tiny_mnist), "--out", out]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"mlp: error: --out {out!r} is the model file") and \
            err.count("\n") == 1, err
    assert random_model.read_bytes() == before


@pytest.mark.parametrize("command, name", [("report", "r.html"), ("augment-preview", "g.png")])
def test_a_failed_write_leaves_the_old_output_intact(command, name, random_model, tiny_mnist,
                                                    tmp_path, capsys):
    """As under `ulimit -f`: the write fails part way; the old file must survive."""
    resource = pytest.importorskip("resource")
    require("matplotlib.figure")
    out = tmp_path / name
    out.write_text("old")
    argv = {"report": ["report", str(random_model)],
            "augment-preview": ["augment-preview", "--columns", "2", "--rows", "1"]}[command]
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2000, hard))  # Python ignores SIGXFSZ
    try:
        code = main([*argv, "--data", str(tiny_mnist), "--out", str(out)])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("mlp: error: cannot write") and err.count("\n") == 1
    assert str(out) in err and "File too large" in err
    assert out.read_text() == "old"
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


@pytest.mark.slow
def test_predict_classifies_drawn_test_digits(tmp_path, capsys):
    """A model trained here for two epochs reads 20 real test digits drawn as
    large dark-on-white pictures of different sizes and offsets."""
    import json

    require("PIL")
    from mlp import train
    from mlp.datasets import DatasetUnavailableError, load_mnist

    try:
        data = load_mnist()
    except DatasetUnavailableError:
        if os.environ.get("MLP_REQUIRE_DATA") == "1":
            raise
        pytest.skip("MNIST is not available offline")
    model = Model([784, 100, 10], activation="relu", output="softmax", init="he", seed=0)
    train(model, data.train.images, data.train.labels, epochs=2, batch_size=64,
          learning_rate=0.3, loss="cross_entropy", sampling="shuffle", seed=0, progress=False)
    saved = tmp_path / "model.npz"
    model.save(saved)

    rng = np.random.default_rng(0)
    files, labels = [], data.test.labels[:20]
    for i, image in enumerate(data.test.images[:20]):
        pixels = np.rint(image * 256).clip(0, 255).astype(np.uint8)
        scale = int(rng.integers(3, 13))
        canvas = (28 * scale + int(rng.integers(10, 400)), 28 * scale + int(rng.integers(10, 400)))
        offset = (int(rng.integers(0, canvas[0] - 28 * scale)),
                  int(rng.integers(0, canvas[1] - 28 * scale)))
        path = tmp_path / f"digit-{i}.png"
        _draw_test_digit(pixels, path, scale, canvas, offset, colour=i % 3 == 0)
        files.append(str(path))
    assert main(["predict", str(saved), *files, "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["file"] for r in results] == files
    predicted = np.array([r["prediction"] for r in results])
    correct = int(np.sum(predicted == labels))
    print(f"{correct} of 20 drawn test digits correct")
    assert correct >= 18


def test_ctrl_c_stops_training_a_wide_network_between_compiled_calls(tiny_mnist, tmp_path):
    """SIGINT reaches Python between compiled calls of about 0.2 s, whatever
    the network's size; the CLI exits with status 130, its last line saying so.
    Warnings may come before it (a loss far worse than guessing), each an mlp line."""
    import os
    import signal
    import time

    import mlp

    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(mlp.__file__)))
    process = subprocess.Popen(
        [sys.executable, "-m", "mlp", "train", "--data", str(tiny_mnist), "--layers",
         "784,2048,2048,10", "--batch-size", "256", "--iterations", "100000", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
    try:
        assert process.stdout.readline().startswith("Training")
        time.sleep(1.5)  # well inside train()
        sent = time.monotonic()
        process.send_signal(signal.SIGINT)
        status = process.wait(timeout=30)
        elapsed = time.monotonic() - sent
    finally:
        process.kill()
    lines = process.stderr.read().splitlines()
    assert status == 130, lines
    # About 0.2 s on an idle machine, 1.4 s seen on a loaded one. The run
    # itself would take hours, and one call of the thousands of steps a call
    # may hold about a minute: a bound of 10 s tells them apart on any machine.
    assert elapsed < 10.0
    assert lines and lines[-1] == "mlp: interrupted", lines
    assert all(line.startswith("mlp: ") for line in lines), lines


def _press_ctrl_c_after_the_first_epoch(monkeypatch):
    """SIGINT, as Ctrl-C sends it, when training's first epoch ends."""
    import signal

    import mlp.training

    on_epoch_end = mlp.training._DivergenceCheck.on_epoch_end

    def then_interrupt(self, run, history):
        signal.raise_signal(signal.SIGINT)
        return on_epoch_end(self, run, history)

    monkeypatch.setattr(mlp.training._DivergenceCheck, "on_epoch_end", then_interrupt)


def test_ctrl_c_names_the_checkpoint_and_the_command_that_resumes_it(tiny_mnist, tmp_path,
                                                                     capsys, monkeypatch):
    import shlex

    from mlp.training import options_from_checkpoint

    checkpoint, saved = tmp_path / "run 1.npz", tmp_path / "m.npz"
    _press_ctrl_c_after_the_first_epoch(monkeypatch)
    assert main(["train", "--data", str(tiny_mnist), "--layers", "784,16,10", "--batch-size",
                 "8", "--epochs", "3", "--no-progress", "--checkpoint", str(checkpoint),
                 "--save", str(saved)]) == 130
    lines = capsys.readouterr().err.splitlines()
    match = re.fullmatch(r"mlp: interrupted; the checkpoint (.+) holds the run after step "
                         r"(\d+) of (\d+): resume with: (.+)", lines[-1])
    assert match, lines
    assert match.group(1) == str(checkpoint) and 0 < int(match.group(2)) < int(match.group(3))
    assert options_from_checkpoint(checkpoint)[1].epochs == 3
    command = shlex.split(match.group(4))
    assert command[:2] == ["mlp", "train"]
    monkeypatch.undo()
    assert main(command[1:]) == 0  # resumes, with the data, the --save and no progress bar
    out, err = capsys.readouterr()
    assert "resumed from" in out and f"Saved the model to {saved}" in out
    assert "it/s" not in err and "step/s" not in err


def test_ctrl_c_claims_no_checkpoint_the_run_did_not_write(tiny_mnist, tmp_path, capsys,
                                                           monkeypatch):
    import mlp.cli

    checkpoint = tmp_path / "ck.npz"
    checkpoint.write_bytes(b"an earlier run's file")

    def interrupted_while_loading(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mlp.cli, "_load_data", interrupted_while_loading)
    assert main(["train", "--data", str(tiny_mnist), "--no-progress", "--checkpoint",
                 str(checkpoint)]) == 130
    assert capsys.readouterr().err == "mlp: interrupted\n"


def test_checkpoint_and_resume_from_the_command_line(tiny_mnist, tmp_path, capsys):
    whole, part = tmp_path / "whole.npz", tmp_path / "part.npz"
    common = ["train", "--data", str(tiny_mnist), "--layers", "784,16,10", "--batch-size", "8",
              "--no-progress", "--seed", "2"]
    assert main(common + ["--epochs", "3", "--save", str(whole)]) == 0
    # A checkpoint after 2 of 3 epochs, as an interrupted run leaves (its
    # place in the run says 2 of 3 epochs: write it with the full length).
    import mlp
    from mlp.training import options_from_checkpoint

    assert main(common + ["--epochs", "3", "--checkpoint", str(part)]) == 0
    model, options = options_from_checkpoint(part)
    assert options.epochs == 3 and options.optimizer is not None
    capsys.readouterr()
    assert main(["train", "--data", str(tiny_mnist), "--resume", str(part), "--no-progress",
                 "--save", str(tmp_path / "again.npz")]) == 0
    out = capsys.readouterr().out
    assert "resumed from" in out
    # The checkpoint was of a finished run: resuming it trains no further.
    np.testing.assert_array_equal(mlp.Model.load(tmp_path / "again.npz")._params,
                                  mlp.Model.load(whole)._params)
    assert main(["train", "--data", str(tiny_mnist), "--resume", str(part), "--lr", "0.1",
                 "--no-progress"]) == 2
    assert "leave out" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# Polish: --version, wording, usage, help
# ---------------------------------------------------------------------------

def test_version(capsys):
    import mlp

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"mlp {mlp.__version__}"


def test_installed_version_is_the_packages():
    """pip's metadata of the distribution, fastmlp, and mlp.__version__ say the
    same version (pyproject.toml reads it from mlp/_version.py), and that
    distribution is the one that provides the mlp being tested."""
    from importlib import metadata

    import mlp

    try:
        distribution = metadata.distribution("fastmlp")
    except metadata.PackageNotFoundError:
        if os.environ.get("MLP_REQUIRE_EXTRAS") == "1":
            raise  # CI tests the installed wheel
        pytest.skip("mlp runs from a checkout that was never installed")
    assert distribution.version == mlp.__version__
    assert "mlp" in (distribution.read_text("top_level.txt") or "mlp").split()
    assert any(entry.name == "mlp" and entry.group == "console_scripts"
               for entry in distribution.entry_points)


@pytest.mark.parametrize("flags, wording", [
    (["--epochs", "1"], "preset default: 1 epoch,"),
    (["--epochs", "2"], "preset default: 2 epochs,"),
    (["--iterations", "1"], "preset default: 1 iteration,"),
])
def test_run_length_is_singular_or_plural(tiny_mnist, capsys, flags, wording):
    assert main(["train", "--data", str(tiny_mnist), "--no-progress", *flags]) == 0
    assert wording in capsys.readouterr().out


@pytest.mark.parametrize("argv, prog", [
    (["train", "--bad-flag"], "mlp train"),
    (["train", "--epochs", "2", "extra"], "mlp train"),
    (["evaluate", "m.npz", "--bad-flag"], "mlp evaluate"),
])
def test_unknown_flags_name_the_subcommand(argv, prog, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert capsys.readouterr().err == (f"mlp: error: unrecognized arguments: {argv[-1]} "
                                       f"(see {prog} --help)\n")


@pytest.mark.parametrize("argv, message", [
    (["train", "--epochs", "1.5"], "--epochs takes an integer, got '1.5'"),
    (["train", "--lr", "abc"], "--lr takes a number, got 'abc'"),
    (["train", "--layers", "784,0,10"], "--layers takes two or more comma-separated sizes >= 1"),
    (["train", "--epochs", "2", "--iterations", "3"],
     "argument --iterations: not allowed with argument --epochs"),
    (["evaluate"], "the following arguments are required: MODEL.npz"),
    (["report", "m.npz", "--out"], "argument --out: expected one argument"),
    (["predict", "m.npz"], "the following arguments are required: INPUT"),
    (["augment-preview", "--rows", "x"], "--rows takes an integer, got 'x'"),
    ([], "the following arguments are required: command"),
])
def test_argparse_errors_are_one_line_without_usage(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    prog = " ".join(["mlp", *argv[:1]])
    assert err.startswith(f"mlp: error: {message}") and err.count("\n") == 1, err
    assert err.endswith(f" (see {prog} --help)\n") and "usage:" not in err


def test_evaluate_threads_help_describes_inference_workers(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--threads THREADS worker threads sharing the test images" in out
    assert "BLAS" not in out


# ---------------------------------------------------------------------------
# Files: one line naming the user's path, exit 2; --save checked before any work
# ---------------------------------------------------------------------------

def test_evaluate_with_a_model_of_the_wrong_shape_speaks_of_inputs(tiny_mnist, tmp_path, capsys):
    path = tmp_path / "small.npz"
    Model([100, 10], seed=0).save(path)
    assert main(["evaluate", str(path), "--data", str(tiny_mnist)]) == 2
    err = capsys.readouterr().err
    assert err == (f"mlp: error: the model in {path} takes 100 inputs but the test images have "
                   "784 pixels\n")
    Model([784, 4], seed=0).save(path)
    assert main(["evaluate", str(path), "--data", str(tiny_mnist)]) == 2
    err = capsys.readouterr().err
    assert "has 4 outputs but the test labels go up to 9" in err
    assert re.search(r"\b[Xy]\b", err) is None


@pytest.mark.parametrize("command", ["evaluate", "report"])
def test_evaluate_and_report_refuse_a_regression_model_in_one_line(command, tiny_mnist, tmp_path,
                                                                   capsys):
    path = tmp_path / "regressor.npz"
    Model([784, 10], output="identity", seed=0).save(path)
    argv = [command, str(path), "--data", str(tiny_mnist)]
    if command == "report":
        argv += ["--out", str(tmp_path / "report.html")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == (f"mlp: error: the model in {path} has 'identity' output, a regression model; "
                   f"mlp {command} needs a classifier, a model with softmax or sigmoid output "
                   f"(in Python, mlp.evaluate reports a regression model's mean squared error "
                   f"and R²)\n")
    assert not (tmp_path / "report.html").exists()


def _unwritable_directory(tmp_path):
    import os

    if os.geteuid() == 0:  # root ignores permission bits; /proc refuses new files
        return "/proc"
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    return str(locked)


@pytest.mark.parametrize("flag", ["--save", "--checkpoint"])
@pytest.mark.parametrize("where, message", [
    ("missing", "does not exist"),
    ("directory", "is a directory"),
    ("unwritable", "cannot be written"),
])
def test_output_paths_are_checked_before_loading_data_or_training(tmp_path, capsys, flag, where,
                                                                  message):
    import os

    target = {"missing": str(tmp_path / "no" / "m.npz"), "directory": str(tmp_path),
              "unwritable": os.path.join(_unwritable_directory(tmp_path), "m.npz")}[where]
    # --data names nothing: had it been read first, the error would be about it.
    code = main(["train", "--data", str(tmp_path / "no-data"), "--iterations", "1",
                 "--no-progress", flag, target])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith(f"mlp: error: {flag} {target!r}") and message in err
    assert err.count("\n") == 1


def test_a_failing_save_after_training_is_one_line(tiny_mnist, tmp_path, capsys, monkeypatch):
    import errno

    path = str(tmp_path / "m.npz")

    def full_disk(self, target):
        raise OSError(errno.ENOSPC, "No space left on device", target)

    monkeypatch.setattr(Model, "save", full_disk)
    assert main(["train", "--data", str(tiny_mnist), "--iterations", "1", "--no-progress",
                 "--save", path]) == 2
    assert capsys.readouterr().err.endswith(f"mlp: error: {path}: No space left on device\n")


def test_a_save_directory_removed_during_training_is_named(tiny_mnist, tmp_path, capsys,
                                                          monkeypatch):
    import mlp.training

    directory = tmp_path / "out"
    directory.mkdir()
    train = mlp.training.train

    def train_then_remove_the_directory(*args, **kwargs):
        history = train(*args, **kwargs)
        directory.rmdir()
        return history

    monkeypatch.setattr(mlp.training, "train", train_then_remove_the_directory)
    path = directory / "m.npz"
    assert main(["train", "--data", str(tiny_mnist), "--layers", "784,16,10", "--iterations",
                 "1", "--no-progress", "--save", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"mlp: error: --save {str(path)!r}: the directory {str(directory)!r} does not exist\n")


def test_the_model_is_saved_before_the_test_evaluation(tiny_mnist, tmp_path, capsys,
                                                       monkeypatch):
    import mlp.training

    def failing_evaluate(*args, **kwargs):
        raise ValueError("the evaluation failed")

    monkeypatch.setattr(mlp.training, "evaluate", failing_evaluate)
    saved = tmp_path / "m.npz"
    assert main(["train", "--data", str(tiny_mnist), "--layers", "784,16,10", "--iterations",
                 "2", "--no-progress", "--save", str(saved)]) == 2
    assert capsys.readouterr().err == "mlp: error: the evaluation failed\n"
    assert Model.load(saved).layer_sizes == (784, 16, 10)


@pytest.mark.parametrize("make, message", [
    (lambda p: p.mkdir(), "is a directory, not a model file"),
    (lambda p: p.write_bytes(b"PK\x05\x06" + bytes(18)), "is not a model saved by mlp.Model.save"),
])
def test_model_file_errors_are_one_line_naming_the_path(tiny_mnist, tmp_path, capsys, make,
                                                        message):
    path = tmp_path / "model.npz"
    make(path)
    assert main(["evaluate", str(path), "--data", str(tiny_mnist)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlp: error: ") and str(path) in err and message in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("flags, words", [
    (["--layers", "784,10", "--dropout", "0.5"], "--dropout drops hidden units"),
    (["--optimizer", "adam", "--eps", "1e-50"], "--eps 1e-50 is 0 in float32"),
])
def test_options_that_do_not_fit_the_network_are_named_by_their_flags(tiny_mnist, capsys, flags,
                                                                       words):
    assert main(["train", "--data", str(tiny_mnist), "--iterations", "1", "--no-progress",
                 *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mlp: error: {words}") and err.count("\n") == 1
    assert "input_dropout" not in err and "Adam's eps" not in err


# ---------------------------------------------------------------------------
# One voice: every warning and every error one line, `mlp: warning:` / `mlp: error:`
# ---------------------------------------------------------------------------

def test_library_warnings_are_one_line_each_and_only_while_the_command_runs(tiny_mnist, capsys,
                                                                            monkeypatch):
    import warnings

    import mlp.training

    train = mlp.training.train

    def train_and_warn(*args, **kwargs):
        warnings.warn("the training loss is 58.3, far worse than guessing (2.3):\n"
                      "    the learning rate (0.1) is probably too high", RuntimeWarning)
        return train(*args, **kwargs)

    monkeypatch.setattr(mlp.training, "train", train_and_warn)
    shown_before = warnings.showwarning
    assert main(["train", "--data", str(tiny_mnist), "--layers", "784,16,10", "--iterations",
                 "1", "--no-progress"]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert "mlp: warning: the training loss is 58.3, far worse than guessing (2.3): the " \
           "learning rate (0.1) is probably too high" in lines
    assert all(line.startswith("mlp: warning: ") for line in lines), lines
    # Scoped to main(): the library's own warnings look as Python shows them.
    assert warnings.showwarning is shown_before


def test_multi_line_errors_are_folded_to_one_line(tiny_mnist, capsys, monkeypatch):
    import mlp.training

    def failing_train(*args, **kwargs):
        raise ValueError("the first line\n  and the second")

    monkeypatch.setattr(mlp.training, "train", failing_train)
    assert main(["train", "--data", str(tiny_mnist), "--iterations", "1", "--no-progress"]) == 2
    assert capsys.readouterr().err == "mlp: error: the first line and the second\n"


# ---------------------------------------------------------------------------
# --help: what a command line can pass, each default once
# ---------------------------------------------------------------------------

def _help_texts():
    """(command, flag, help as --help prints it) for every option of every subcommand."""
    import argparse

    from mlp.cli import build_parser

    parser = build_parser()
    subcommands = next(action for action in parser._actions
                       if isinstance(action, argparse._SubParsersAction))
    for command, subparser in subcommands.choices.items():
        formatter = subparser._get_formatter()
        for action in subparser._actions:
            if action.help and action.option_strings:
                yield command, action.option_strings[0], formatter._expand_help(action)


def test_help_offers_only_what_a_command_line_can_pass_and_each_default_once():
    texts = list(_help_texts())
    assert {command for command, _, _ in texts} == {"train", "evaluate", "report", "predict",
                                                    "augment-preview"}
    for command, flag, text in texts:
        where = f"mlp {command} {flag}: {text}"
        # Python's values and objects: no flag takes them.
        assert not re.search(r"\b(None|True|False|callable|mlp\.\w+)\b", text), where
        # "(default: ...)", "(default preset: ...)", "(augmented preset: ...)"
        assert len(re.findall(r"\((?:default\b|[\w-]+ preset:)", text)) <= 1, where
    shown = {(command, flag): text for command, flag, text in texts}
    assert shown[("train", "--init")].endswith(
        "(default preset: he for relu, leaky_relu, gelu and silu, xavier otherwise)")
    assert shown[("train", "--epochs")] == "passes over the training data (default preset: 10)"
    assert shown[("train", "--beta1")].endswith("(default: 0.9)")


@pytest.mark.parametrize("spelling", ["none", "None", "NONE"])
def test_seed_none_draws_fresh_entropy(spelling, tiny_mnist, tmp_path, capsys):
    assert _configured("--seed", spelling).seed is None
    assert _configured("--preset", "notebook", "--seed", spelling).seed is None
    assert _configured("--seed", "7").seed == 7
    assert main(["train", "--data", str(tiny_mnist), "--layers", "784,16,10", "--iterations",
                 "1", "--no-progress", "--seed", spelling]) == 0
    require("matplotlib.figure")
    assert main(["augment-preview", "--data", str(tiny_mnist), "--columns", "1", "--rows", "1",
                 "--out", str(tmp_path / "g.png"), "--seed", spelling]) == 0


@pytest.mark.parametrize("command", ["train", "augment-preview"])
def test_a_seed_that_is_no_integer_nor_none_is_refused_saying_both(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--seed", "nine"])
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith(
        "mlp: error: --seed takes an integer or none, got 'nine'")


def test_ctrl_c_before_a_resumed_run_writes_names_the_checkpoint_it_resumed(
        tiny_mnist, tmp_path, capsys, monkeypatch):
    import mlp.cli

    first, second = tmp_path / "first.npz", tmp_path / "second.npz"
    common = ["train", "--data", str(tiny_mnist), "--no-progress"]
    assert main([*common, "--layers", "784,16,10", "--iterations", "3", "--checkpoint",
                 str(first)]) == 0
    capsys.readouterr()

    def interrupted_while_loading(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mlp.cli, "_load_data", interrupted_while_loading)
    assert main([*common, "--resume", str(first), "--checkpoint", str(second)]) == 130
    assert capsys.readouterr().err == (
        f"mlp: interrupted; the checkpoint {first} holds the run after step 3 of 3: resume "
        f"with: mlp train --resume {first} --data {tiny_mnist} --no-progress\n")
