"""mlp train, predict, evaluate and report on your own data: image folders,
CSV and npz made here, through the command line and back."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from mlp import Model
from mlp.cli import main
from test_data_formats import write_csv, write_png_folder

PIL = pytest.importorskip("PIL.Image")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MLP_CACHE_DIR", str(tmp_path / "cache"))


def train(capsys, data, model, *flags):
    status = main(["train", "--data", str(data), "--save", str(model), "--no-progress",
                   "--epochs", "30", "--batch-size", "16", *flags])
    out = capsys.readouterr()
    assert status == 0, out.err
    return out.out


def accuracy(text):
    return float(text.split("Test accuracy: ")[1].split("%")[0])


def test_image_folder_train_predict_evaluate_report(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    root = write_png_folder(tmp_path / "pets", n=20)
    model_path = tmp_path / "pets.npz"
    out = train(capsys, root, model_path, "--hidden", "16")
    assert "Model([120, 16, 3]" in out and accuracy(out) == 100.0
    model = Model.load(model_path)
    info = model.data_info
    assert info.class_names == ("cat", "dog", "eel") and info.image_shape == (12, 10, 1)
    assert info.source == str(root.resolve())

    assert main(["predict", str(model_path), str(root / "eel" / "003.png"),
                 str(root / "cat" / "001.png")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[1] == "eel" and lines[1].split()[1] == "cat"
    assert main(["predict", "--json", str(model_path), str(root / "dog" / "002.png")]) == 0
    result = json.loads(capsys.readouterr().out)[0]
    assert result["prediction"] == "dog" and result["top3"][0][0] == "dog"

    # evaluate without --data: the folder the model file names.
    assert main(["evaluate", str(model_path)]) == 0
    assert "Test accuracy: 100.00%" in capsys.readouterr().out
    report = tmp_path / "r.html"
    assert main(["report", str(model_path), "--out", str(report)]) == 0
    page = report.read_text()
    assert "<td class=\"text\">eel</td>" in page and "Misclassified test samples" in page
    assert "grey images, 12x10" in page and "data:image/png" in page

    # The data gone: evaluate refuses, it never scores on MNIST instead.
    shutil.rmtree(root)
    assert main(["evaluate", str(model_path)]) == 2
    err = capsys.readouterr().err
    assert "was trained on" in err and "give the data with --data" in err


def test_colour_and_image_size_flags(tmp_path, capsys):
    root = write_png_folder(tmp_path / "pets", n=10, color=True)
    model_path = tmp_path / "m.npz"
    out = train(capsys, root, model_path, "--color", "--image-size", "6x5", "--hidden", "8",
                "--epochs", "2")
    assert "Model([90, 8, 3]" in out
    assert Model.load(model_path).data_info.image_shape == (6, 5, 3)
    # predict resizes a picture of another size as the training images were.
    PIL.fromarray(np.full((40, 30, 3), 90, np.uint8)).save(tmp_path / "big.jpg")
    assert main(["predict", str(model_path), str(tmp_path / "big.jpg")]) == 0
    assert capsys.readouterr().out.split()[1] in ("cat", "dog", "eel")


def test_csv_train_folds_standardisation_and_predicts_rows(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(0)
    path = tmp_path / "table.csv"
    # Features on very different scales: standardisation makes them trainable.
    lines = ["size,weight,kind"]
    for i in range(150):
        k = i % 3
        lines.append(f"{1000 + 30 * k + rng.normal(0, 5):.3f},{0.01 * k + rng.normal(0, 0.002):.5f},"
                     f"{('ash', 'elm', 'oak')[k]}")
    path.write_text("\n".join(lines) + "\n")
    model_path = tmp_path / "t.npz"
    out = train(capsys, path, model_path, "--hidden", "16")
    assert "Model([2, 16, 3]" in out and accuracy(out) > 90
    model = Model.load(model_path)
    info = model.data_info
    assert info.feature_names == ("size", "weight") and info.standardization_folded
    mean, std = info.standardization
    assert mean[0] == pytest.approx(1030, abs=3) and std[1] == pytest.approx(0.0082, rel=0.2)
    # The folded model takes raw features.
    raw = np.array([[1000.0, 0.0], [1060.0, 0.02]], dtype=np.float32)
    assert model.predict(raw).tolist() == [0, 2]

    rows = tmp_path / "new.tsv"
    rows.write_text("weight\tsize\tnote\n0.0\t1000\ta\n0.02\t1060\tb\n")
    assert main(["predict", str(model_path), str(rows)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == [f"{rows}:2", "ash"] and out[1].split()[:2] == [f"{rows}:3", "oak"]
    assert main(["predict", "--json", str(model_path), str(rows)]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [(r["row"], r["prediction"]) for r in results] == [(2, "ash"), (3, "oak")]

    assert main(["evaluate", str(model_path), "--data", str(path)]) == 0
    assert accuracy(capsys.readouterr().out) > 90
    report = tmp_path / "r.html"
    assert main(["report", str(model_path), "--out", str(report)]) == 0
    page = report.read_text()
    assert "<th>size</th>" in page or "Misclassified test samples (none)" in page
    assert "2 features: size, weight" in page
    assert "First-layer weights" in page and "data:image/png;base64" in page


def test_csv_target_flag_and_bad_rows(tmp_path, capsys):
    path = write_csv(tmp_path / "iris.csv", header="species,width,height")
    # The labels are in the last column unless named: here the first is.
    text = path.read_text().splitlines()
    path.write_text("\n".join([text[0]] + [",".join([r.split(",")[2]] + r.split(",")[:2])
                                           for r in text[1:]]) + "\n")
    model_path = tmp_path / "m.npz"
    out = train(capsys, path, model_path, "--target", "species", "--epochs", "2")
    assert "Model([2, 300, 100, 3]" in out
    bad = tmp_path / "bad.csv"
    bad.write_text("width,height\n1.0,x\n")
    assert main(["predict", str(model_path), str(bad)]) == 2
    assert "bad.csv, line 2, column 'height': 'x' is not a number" in capsys.readouterr().err


def test_npz_train_and_evaluate(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 5)) + np.repeat(np.eye(5)[:2] * 4, 60, axis=0)
    y = np.repeat(["no", "yes"], 60)
    path = tmp_path / "d.npz"
    np.savez(path, X=X, y=y, X_test=X[::10], y_test=y[::10])
    model_path = tmp_path / "m.npz"
    out = train(capsys, path, model_path, "--hidden", "8")
    assert "Model([5, 8, 2]" in out and accuracy(out) > 90
    assert Model.load(model_path).data_info.class_names == ("no", "yes")
    assert main(["evaluate", str(model_path)]) == 0


@pytest.mark.parametrize("flags, message", [
    (["--layers", "3,10,3"], "--layers must start with 2 inputs for this data, got 3"),
    (["--layers", "2,10,4"], "--layers must end with 3 outputs, one per class, got 4"),
    (["--hidden", "10", "--layers", "2,10,3"], "--hidden does not go with --layers"),
    (["--augment", "affine"], "--augment distorts grey square images, and this data holds "
                              "features"),
    (["--color"], "color does not apply"),
    (["--target", "nope"], "no column named 'nope'"),
])
def test_train_flags_checked_against_the_data(tmp_path, capsys, flags, message):
    path = write_csv(tmp_path / "iris.csv")
    assert main(["train", "--data", str(path), "--no-progress", "--epochs", "1", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlp: error: ") and message in err and err.count("\n") == 1


@pytest.mark.parametrize("argv, message", [
    (["train", "--hidden", "10,x"], "--hidden takes comma-separated layer sizes"),
    (["train", "--image-size", "big"], "--image-size takes HEIGHTxWIDTH"),
])
def test_data_flags_are_checked(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_models_of_other_data_are_refused_clearly(tmp_path, capsys):
    csv_path = write_csv(tmp_path / "iris.csv")
    root = write_png_folder(tmp_path / "pets", n=10)
    tabular, images = tmp_path / "t.npz", tmp_path / "i.npz"
    train(capsys, csv_path, tabular, "--epochs", "1", "--hidden", "4")
    train(capsys, root, images, "--epochs", "1", "--hidden", "4")
    assert main(["evaluate", str(tabular), "--data", str(root)]) == 2
    assert "was trained on features, but --data" in capsys.readouterr().err
    assert main(["predict", str(tabular), str(root / "cat" / "001.png")]) == 2
    assert "is not a CSV file" in capsys.readouterr().err
    assert main(["predict", str(images), str(csv_path)]) == 2
    assert "iris.csv is not an image" in capsys.readouterr().err


def test_checkpoint_of_tabular_data_is_standardised_before_the_model(tmp_path, capsys):
    path = write_csv(tmp_path / "iris.csv")
    checkpoint = tmp_path / "ck.npz"
    assert main(["train", "--data", str(path), "--no-progress", "--epochs", "5",
                 "--checkpoint", str(checkpoint), "--hidden", "8"]) == 0
    trained = accuracy(capsys.readouterr().out)
    model = Model.load(checkpoint)
    assert model.data_info.standardization is not None
    assert not model.data_info.standardization_folded
    # The checkpoint holds the last step's parameters, unfolded: scored on
    # standardised features, it scores as the folded model did on raw ones.
    assert main(["evaluate", str(checkpoint)]) == 0
    assert accuracy(capsys.readouterr().out) == trained > 50


def test_old_model_files_load_without_data_info(tmp_path):
    from mlp import serialization

    model = Model([4, 3, 2], seed=0)
    path = tmp_path / "old.npz"
    version = serialization.FORMAT_VERSION
    try:
        serialization.FORMAT_VERSION = 2
        model.save(path)
    finally:
        serialization.FORMAT_VERSION = version
    loaded = Model.load(path)
    assert loaded.data_info is None
    assert np.array_equal(loaded.parameters, model.parameters)


def test_model_file_data_info_is_checked(tmp_path):
    from mlp.data.info import DataInfo

    model = Model([4, 3, 2], seed=0)
    model.data_info = DataInfo(format="csv", source=None, class_names=("a", "b"),
                               input_kind="features", feature_names=("p", "q", "r", "s"))
    path = tmp_path / "m.npz"
    model.save(path)
    assert Model.load(path).data_info == model.data_info
    model.data_info = DataInfo(format="csv", source=None, class_names=("a", "b"),
                               input_kind="features", feature_names=("p", "q"))
    model.save(path)
    with pytest.raises(ValueError, match="does not fit layer sizes"):
        Model.load(path)


@pytest.mark.parametrize("command", ["evaluate", "report"])
def test_a_model_that_does_not_record_its_data_is_not_scored_on_mnist(tmp_path, capsys,
                                                                      command):
    from mlp.data.info import DataInfo

    # Saved from Python: no description of the data, or one without a path.
    bare, described = tmp_path / "bare.npz", tmp_path / "described.npz"
    Model([784, 8, 10], seed=0).save(bare)
    model = Model([784, 8, 10], seed=0)
    model.data_info = DataInfo(format="npz", source=None, class_names=tuple("abcdefghij"),
                               input_kind="image", image_shape=(28, 28, 1), pixel_scale=1 / 255)
    model.save(described)
    for path in (bare, described):
        assert main([command, str(path), *(["--out", str(tmp_path / "r.html")]
                                           if command == "report" else [])]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"mlp: error: the model in {path} does not record the data it "
                              f"was trained on") and "give the data with --data PATH" in err
        assert err.count("\n") == 1
    assert not (tmp_path / "r.html").exists()


def test_report_of_a_table_lists_misclassified_rows_with_class_names(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(1)
    path = tmp_path / "noise.csv"
    # Labels unrelated to the features: many test rows are misclassified.
    lines = ["alpha,beta,fruit"] + [f"{rng.normal():.4f},{rng.normal():.4f},"
                                     f"{('apple', 'pear')[rng.integers(2)]}" for _ in range(100)]
    path.write_text("\n".join(lines) + "\n")
    model_path = tmp_path / "m.npz"
    train(capsys, path, model_path, "--hidden", "4", "--epochs", "1")
    report = tmp_path / "r.html"
    assert main(["report", str(model_path), "--out", str(report)]) == 0
    page = report.read_text()
    table = page.split("Misclassified test samples (the first ")[1].split("</table>")[0]
    cells = [re.findall(r"<t[hd][^>]*>([^<]*)</t[hd]>", row) for row in table.split("<tr>")[1:]]
    assert cells[0] == ["sample", "true", "predicted", "alpha", "beta"]
    assert len(cells) > 1 and all(len(row) == 5 for row in cells)
    # Each row: true and predicted names that differ, and the raw features of the data.
    for sample, true, predicted, alpha, beta in cells[1:]:
        assert {true, predicted} == {"apple", "pear"}
        assert f"{float(alpha):.4f},{float(beta):.4f},{true}" in lines


def test_image_folder_pixels_are_centred_and_the_centring_folded(tmp_path, capsys):
    from mlp.datasets import load

    # Light backgrounds: pixels near 1, as in most pictures (unlike MNIST's).
    root = write_png_folder(tmp_path / "pets", n=20)
    for png in root.rglob("*.png"):
        PIL.fromarray(255 - np.asarray(PIL.open(png))).save(png)
    model_path, checkpoint = tmp_path / "m.npz", tmp_path / "ck.npz"
    out = train(capsys, root, model_path, "--hidden", "8", "--epochs", "3",
                "--checkpoint", str(checkpoint))
    info = Model.load(model_path).data_info
    (train_split, _, _), _ = load(root, progress=False)
    mean, std = (np.array(v) for v in info.standardization)
    assert np.allclose(mean, train_split.images.mean(axis=0), atol=1e-6) and (std == 1).all()
    assert mean.min() > 0.5 and info.standardization_folded
    assert "centred by each pixel's mean over the training images, folded" in info.preprocessing
    # The saved model takes the pixels as they are; the checkpoint (unfolded)
    # is given them centred; both score as training reported.
    for path in (model_path, checkpoint):
        assert main(["evaluate", str(path)]) == 0
        assert accuracy(capsys.readouterr().out) == accuracy(out)
    assert not Model.load(checkpoint).data_info.standardization_folded


def test_idx_images_are_not_centred(tmp_path, capsys):
    from test_data_formats import write_idx

    data = write_idx(tmp_path / "idx", n_classes=3)
    model_path = tmp_path / "m.npz"
    train(capsys, data, model_path, "--hidden", "4", "--epochs", "1")
    assert Model.load(model_path).data_info.standardization is None


def test_misclassified_images_of_named_classes_are_drawn_as_they_are():
    pytest.importorskip("matplotlib")
    from mlp import plots

    images = np.array([[1.0] * 12 + [0.0] * 4])  # 4x4: three white rows, one black
    named = plots._misclassified_figure(images, [0], [1], (4, 4, 1), names=["cat", "dog"])
    digits = plots._misclassified_figure(images, [0], [1], 4)
    (image,) = named.axes[0].images
    # 1 is white for a photo-like image; for digits, 1 is ink, drawn dark.
    assert image.to_rgba(np.array([[1.0, 0.0]]))[0, :, :3].tolist() == [[1, 1, 1], [0, 0, 0]]
    assert digits.axes[0].images[0].to_rgba(np.array([[1.0]]))[0, 0, :3].tolist() == [0, 0, 0]
    assert [t.get_text() for t in named.axes[0].texts] == ["true cat\npred dog"]


@pytest.mark.parametrize("rows", [0, 1, 7, 1001])
def test_centring_rows_equals_numpy(rows):
    from mlp import cli

    X = np.random.default_rng(rows).random((rows, 13), dtype=np.float32)
    row = np.linspace(-1, 1, 13, dtype=np.float32)
    out = cli._rows_less(X, row)
    assert out.shape == X.shape and out.dtype == np.float32 and out.flags.writeable
    np.testing.assert_array_equal(out, X - row)
