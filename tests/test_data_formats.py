"""mlp.datasets.load: every format of the registry on small data made here,
and every kind of bad data refused with the file and the place named."""
from __future__ import annotations

import gzip
import os
import struct
import warnings

import numpy as np
import pytest

from mlp import datasets
from mlp.data import registry

PIL = pytest.importorskip("PIL.Image")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MLP_CACHE_DIR", str(tmp_path / "cache"))


def write_png_folder(root, classes=("cat", "dog", "eel"), n=20, size=(12, 10), seed=0,
                     color=False):
    """One subfolder per class of n PNGs; class k's images have mean level ~ 60 k + 40."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shape = size + ((3,) if color else ())
            pixels = np.clip(rng.normal(60 * k + 40, 10, shape), 0, 255).astype(np.uint8)
            PIL.fromarray(pixels).save(root / name / f"{i:03d}.png")
    return root


def write_csv(path, n=60, seed=0, header="width,height,species", sep=","):
    rng = np.random.default_rng(seed)
    lines = [header]
    for i in range(n):
        label = ("setosa", "versicolor", "virginica")[i % 3]
        lines.append(sep.join([f"{rng.normal(i % 3, 0.1):.4f}", f"{rng.normal(-(i % 3), 0.1):.4f}",
                               label]))
    path.write_text("\n".join(lines) + "\n")
    return path


def idx_images(pixels):
    n, rows, cols = pixels.shape
    return struct.pack(">IIII", 2051, n, rows, cols) + pixels.astype(np.uint8).tobytes()


def idx_labels(labels):
    return struct.pack(">II", 2049, len(labels)) + np.asarray(labels, np.uint8).tobytes()


def write_idx(directory, shape=(7, 5), n_train=60, n_test=12, n_classes=26, prefix="", gz=True):
    rng = np.random.default_rng(1)
    directory.mkdir(parents=True, exist_ok=True)
    blobs = {
        "train-images-idx3-ubyte": idx_images(rng.integers(0, 256, (n_train,) + shape)),
        "train-labels-idx1-ubyte": idx_labels(np.arange(n_train) % n_classes),
        "t10k-images-idx3-ubyte": idx_images(rng.integers(0, 256, (n_test,) + shape)),
        "t10k-labels-idx1-ubyte": idx_labels(np.arange(n_test) % n_classes),
    }
    for name, blob in blobs.items():
        name = prefix + name.replace("t10k", "test") if prefix else name
        (directory / (name + (".gz" if gz else ""))).write_bytes(gzip.compress(blob) if gz else blob)
    return directory


def check_splits(splits, info, n_inputs):
    for split in splits:
        assert split.images.dtype == np.float32 and split.images.flags.c_contiguous
        assert split.images.shape[1] == n_inputs == info.n_inputs
        assert split.labels.dtype == np.int64
        assert split.labels.min() >= 0 and split.labels.max() < len(info.class_names)


# --- The table ----------------------------------------------------------------


def test_every_format_is_in_the_table_and_the_help():
    from mlp.cli import build_parser

    assert set(registry.FORMATS) == {"mnist-pickle", "idx", "image-folder", "csv", "npz"}
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    data_help = next(a.help for a in train._actions if "--data" in a.option_strings)
    for fmt in registry.FORMATS.values():
        assert fmt.summary in data_help


# --- Image folders --------------------------------------------------------------


def test_image_folder_classes_split_and_pixels(tmp_path):
    root = write_png_folder(tmp_path / "pets")
    (train, validation, test), info = datasets.load(root, progress=False)
    check_splits((train, validation, test), info, 12 * 10)
    assert info.class_names == ("cat", "dog", "eel") and info.input_kind == "image"
    assert info.image_shape == (12, 10, 1) and info.format == "image-folder"
    assert len(train.labels) + len(validation.labels) + len(test.labels) == 60
    # 20% of each class held out for test, a tenth of the rest for validation.
    assert np.bincount(test.labels).tolist() == [4, 4, 4]
    assert np.bincount(validation.labels).tolist() == [2, 2, 2]
    # Pixels in [0, 1], level / 255, and the class's brightness shows through.
    assert 0 <= train.images.min() and train.images.max() <= 1
    means = [train.images[train.labels == k].mean() * 255 for k in range(3)]
    assert np.allclose(means, [40, 100, 160], atol=5)


def test_image_folder_split_is_seeded(tmp_path):
    root = write_png_folder(tmp_path / "pets")
    a = datasets.load(root, progress=False).splits
    b = datasets.load(root, progress=False).splits
    c = datasets.load(root, seed=5, progress=False).splits
    assert np.array_equal(a.test.images, b.test.images)
    assert not np.array_equal(a.test.images, c.test.images)


def test_image_folder_train_and_test_subfolders(tmp_path):
    write_png_folder(tmp_path / "d" / "train", n=10)
    write_png_folder(tmp_path / "d" / "test", classes=("cat", "eel"), n=3, seed=1)
    (train, validation, test), info = datasets.load(tmp_path / "d", progress=False)
    assert info.class_names == ("cat", "dog", "eel")
    assert len(test.labels) == 6 and sorted(set(test.labels.tolist())) == [0, 2]
    assert len(train.labels) + len(validation.labels) == 30


def test_image_folder_colour_and_resize(tmp_path):
    root = write_png_folder(tmp_path / "pets", color=True, n=6)
    # Another size, and a JPEG: resized to the most common size.
    PIL.fromarray(np.full((30, 30, 3), 200, np.uint8)).save(root / "dog" / "big.jpg")
    _, info = datasets.load(root, progress=False)
    assert info.image_shape == (12, 10, 1)
    (train, _, _), info = datasets.load(root, color=True, progress=False)
    assert info.image_shape == (12, 10, 3) and train.images.shape[1] == 360
    (train, _, _), info = datasets.load(root, image_size="8x6", color=True, progress=False)
    assert info.image_shape == (8, 6, 3) and train.images.shape[1] == 8 * 6 * 3
    (train, _, _), info = datasets.load(root, image_size=(5, 5), progress=False)
    assert info.image_shape == (5, 5, 1)


def test_image_folder_second_load_comes_from_the_cache(tmp_path, monkeypatch):
    root = write_png_folder(tmp_path / "pets")
    first = datasets.load(root, progress=False).splits
    from mlp.data import folders

    def no_decoding(*args):
        raise AssertionError("decoded again")

    monkeypatch.setattr(folders, "_decode", no_decoding)
    second = datasets.load(root, progress=False).splits
    assert np.array_equal(first.train.images, second.train.images)
    # A changed file is decoded again.
    PIL.fromarray(np.zeros((12, 10), np.uint8)).save(root / "cat" / "000.png")
    os.utime(root / "cat" / "000.png", ns=(1, 1))
    with pytest.raises(AssertionError, match="decoded again"):
        datasets.load(root, progress=False)


def test_image_folder_splits_are_mapped_from_the_cache(tmp_path, monkeypatch):
    """The second load maps the float32 splits from their own entry: no
    8-bit entry is read and nothing is decoded; the arrays may be written
    to without changing the cache; a new seed re-splits the 8-bit entry."""
    from mlp.data import folders

    root = write_png_folder(tmp_path / "pets")
    first = datasets.load(root, progress=False).splits

    def refuse(*args, **kwargs):
        raise AssertionError("read the 8-bit entry or decoded again")

    monkeypatch.setattr(folders, "load_image_folder", refuse)
    second = datasets.load(root, progress=False).splits
    for a, b in zip(first, second):
        assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
        assert b.images.dtype == np.float32 and b.images.flags.c_contiguous
        assert b.images.flags.writeable
    second.train.images[:] = -1  # copy-on-write: this process's copy only
    third = datasets.load(root, progress=False).splits
    assert np.array_equal(first.train.images, third.train.images)
    monkeypatch.undo()
    monkeypatch.setenv("MLP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(folders, "_decode", refuse)
    other = datasets.load(root, progress=False, seed=1).splits
    assert sorted(np.concatenate([s.labels for s in other])) == \
        sorted(np.concatenate([s.labels for s in first]))
    assert not np.array_equal(other.test.images, first.test.images)
    entries = list((tmp_path / "cache" / "decoded").glob("*.npz"))
    assert len(entries) == 3  # the 8-bit pixels, and the splits of seeds 0 and 1


@pytest.mark.parametrize("damage", ["truncated", "garbage", "wrong width"])
def test_damaged_split_entry_is_rebuilt(tmp_path, damage):
    root = write_png_folder(tmp_path / "pets")
    first = datasets.load(root, progress=False).splits
    entries = sorted((tmp_path / "cache" / "decoded").glob("*.npz"), key=lambda p: p.stat().st_size)
    split_entry = entries[-1]  # float32: the larger of the two
    if damage == "truncated":
        split_entry.write_bytes(split_entry.read_bytes()[:-100])
    elif damage == "garbage":
        split_entry.write_bytes(b"not a zip file at all" * 10)
    else:
        np.savez(split_entry, **{f"{s}_{a}": np.zeros((2, 3), np.float32) if a == "X"
                                 else np.zeros(2, np.int64)
                                 for s in ("train", "validation", "test") for a in "Xy"},
                 meta=np.frombuffer(b'{"class_names": ["cat", "dog", "eel"], '
                                    b'"image_size": [12, 10]}', np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the damaged entry is reported, then rebuilt
        again = datasets.load(root, progress=False).splits
    for a, b in zip(first, again):
        assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)


def test_image_folder_decodes_in_parallel_alike(tmp_path, monkeypatch):
    from mlp.data import folders

    root = write_png_folder(tmp_path / "pets", n=12)
    serial = datasets.load(root, progress=False, cache_dir=tmp_path / "c1").splits
    monkeypatch.setattr(folders, "_PARALLEL_FROM", 1)
    monkeypatch.setattr(folders, "_CHUNK", 5)
    parallel = datasets.load(root, progress=False, cache_dir=tmp_path / "c2").splits
    for a, b in zip(serial, parallel):
        assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)


@pytest.mark.parametrize("case, match", [
    ("one class", r"only the class 'cat'.*at least two classes"),
    ("empty class", r"dog.*holds no images"),
    ("not an image", r"notes\.txt is not an image"),
    ("unknown test class", r"test/fox.*no training images"),
])
def test_bad_image_folders(tmp_path, case, match, monkeypatch):
    from mlp.data import folders

    root = tmp_path / "d"
    if case == "one class":
        write_png_folder(root, classes=("cat",))
    elif case == "empty class":
        write_png_folder(root)
        (root / "dog").mkdir(exist_ok=True)
        for f in (root / "dog").iterdir():
            f.unlink()
    elif case == "not an image":
        write_png_folder(root, n=10)
        (root / "eel" / "notes.txt").write_text("hello")
        monkeypatch.setattr(folders, "_PARALLEL_FROM", 1)  # the error crosses processes
    else:
        write_png_folder(root / "train")
        write_png_folder(root / "test", classes=("cat", "fox"))
    with pytest.raises(ValueError, match=match):
        datasets.load(root, progress=False)


# --- CSV ----------------------------------------------------------------------


def test_csv_string_labels_and_target(tmp_path):
    path = write_csv(tmp_path / "iris.csv")
    (train, validation, test), info = datasets.load(path)
    check_splits((train, validation, test), info, 2)
    assert info.class_names == ("setosa", "versicolor", "virginica")
    assert info.feature_names == ("width", "height") and info.input_kind == "features"
    assert np.allclose(train.images[train.labels == 2, 0].mean(), 2, atol=0.1)
    # The target named: another column is the label, the rest are features.
    path = tmp_path / "t.tsv"
    path.write_text("label\tf1\tf2\n" + "".join(f"{i % 2}\t{i}\t{2 * i}\n" for i in range(30)))
    (train, _, _), info = datasets.load(path, target="label")
    assert info.feature_names == ("f1", "f2") and info.class_names == ("0", "1")
    assert np.array_equal(train.labels, train.images[:, 0].astype(int) % 2)


def test_csv_numeric_labels_sort_as_numbers(tmp_path):
    path = tmp_path / "n.csv"
    path.write_text("x,y\n" + "".join(f"{i},{(2, 10, 1)[i % 3]}\n" for i in range(30)))
    _, info = datasets.load(path)
    assert info.class_names == ("1", "2", "10")


@pytest.mark.parametrize("body, kwargs, match", [
    ("a,b,c\n1,2,x\n3,,y\n", {}, r"bad\.csv, line 3, column 'b': missing value"),
    ("a,b,c\n1,2,x\n3,NA,y\n", {}, r"line 3, column 'b': missing value"),
    ("a,b,c\n1,2,x\n3,4,y\n5,six,x\n", {}, r"line 4, column 'b': 'six' is not a number"),
    ("a,b,c\n1,2,x\n3,4\n", {}, r"line 3: 2 values, but the header names 3 columns"),
    ("a,b,c\n1,2,x\n3,4,y\n", {"target": "d"}, r"no column named 'd'; the columns are a, b, c"),
    ("a,b,c\n1,2,x\n3,4,\n", {}, r"line 3, column 'c': missing label"),
    ("a,b,c\n1,inf,x\n", {}, r"line 2, column 'b': 'inf' is not a finite number"),
    ("", {}, r"bad\.csv is empty"),
    ("a,b,c\n", {}, r"no rows of data"),
    ("a,b,c\n1,2,x\n3,4,x\n", {}, r"every row has the label 'x'"),
])
def test_bad_csv(tmp_path, body, kwargs, match):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(ValueError, match=match):
        datasets.load(path, **kwargs)


# --- npz ----------------------------------------------------------------------


def test_npz_features_with_own_test_split(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(50, 4)), np.array(["b", "a"] * 25)
    path = tmp_path / "d.npz"
    np.savez(path, X=X, y=y, X_test=X[:6], y_test=y[:6])
    (train, validation, test), info = datasets.load(path)
    check_splits((train, validation, test), info, 4)
    assert info.class_names == ("a", "b") and info.input_kind == "features"
    assert np.array_equal(test.images, X[:6].astype(np.float32))
    assert test.labels.tolist() == [1, 0] * 3
    assert len(train.labels) + len(validation.labels) == 50


def test_npz_images_compressed(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez_compressed(path, X=rng.integers(0, 256, (40, 6, 5, 3), dtype=np.uint8),
                        y=np.arange(40) % 4)
    (train, _, _), info = datasets.load(path)
    assert info.input_kind == "image" and info.image_shape == (6, 5, 3)
    assert train.images.shape[1] == 90 and train.images.max() <= 1


@pytest.mark.parametrize("arrays, match", [
    (dict(X=np.zeros((4, 2)), y=np.array([0, 1, 0, 1]), X_test=np.zeros((2, 2)),
          y_test=np.array([0, 5])),
     r"y_test\[1\]: label '5' never occurs in the training data \(1 such label"),
    (dict(X=np.zeros((4, 2)), y=np.array([0, 1, 0])), r"y has shape \(3,\)"),
    (dict(X=np.zeros((4, 2))), r"holds no array 'y'"),
    (dict(X=np.zeros((4, 2)), y=np.array([0, 1, 0, 1]), X_test=np.zeros((2, 2))),
     r"holds X_test but no y_test"),
    (dict(X=np.array([[0.0, np.nan]] * 4), y=np.array([0, 1, 0, 1])), r"X\[0, 1\] is nan"),
    (dict(X=np.zeros((4, 2)), y=np.array([0, 1, 0, 1]), Z=np.zeros(2)), r"unexpected array 'Z'"),
])
def test_bad_npz(tmp_path, arrays, match):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=match):
        datasets.load(path)


def test_npz_object_arrays_are_not_unpickled(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, X=np.zeros((4, 2)), y=np.array([0, "a", None, 1], dtype=object))
    with pytest.raises(ValueError, match="Python objects"):
        datasets.load(path)


def test_npz_member_claiming_more_than_it_holds_is_refused(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, X=np.zeros((4, 2)), y=np.array([0, 1, 0, 1]))
    import zipfile

    # A well-formed archive (right CRCs) whose X header claims 80 GB.
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members["X.npy"] = members["X.npy"].replace(b"'shape': (4, 2), }        ",
                                                b"'shape': (99999, 99999), }")
    with zipfile.ZipFile(path, "w") as archive:
        for name, blob in members.items():
            archive.writestr(name, blob)
    with pytest.raises(ValueError, match=r"declares shape \(99999, 99999\)"):
        datasets.load(path)


# --- IDX ----------------------------------------------------------------------


def test_idx_directory_of_any_size_and_class_count(tmp_path):
    directory = write_idx(tmp_path / "letters", shape=(7, 5), n_classes=26)
    (train, validation, test), info = datasets.load(directory)
    check_splits((train, validation, test), info, 35)
    assert info.image_shape == (7, 5, 1) and len(info.class_names) == 26
    # MNIST's rule: the last sixth of the training images validate.
    assert (len(train.labels), len(validation.labels), len(test.labels)) == (50, 10, 12)
    # EMNIST's names.
    directory = write_idx(tmp_path / "emnist", prefix="emnist-letters-", gz=False)
    (train, _, _), info = datasets.load(directory)
    assert info.image_shape == (7, 5, 1)


def test_idx_header_is_checked_against_the_file(tmp_path):
    directory = write_idx(tmp_path / "d", gz=False)
    path = directory / "train-images-idx3-ubyte"
    blob = path.read_bytes()
    path.write_bytes(struct.pack(">IIII", 2051, 60, 70000, 50000) + blob[16:])
    with pytest.raises(ValueError, match="truncated: header says 60 images"):
        datasets.load(directory)
    path.write_bytes(gzip.compress(struct.pack(">IIII", 2051, 2**32 - 1, 2**16, 2**16) + blob[16:]))
    path.rename(directory / "train-images-idx3-ubyte.gz")
    with pytest.raises(ValueError, match="more than a gzip file"):
        datasets.load(directory)


def test_idx_classes_are_numbered_up_to_the_largest_label(tmp_path):
    directory = write_idx(tmp_path / "d", n_classes=3, gz=False)
    (directory / "t10k-labels-idx1-ubyte").write_bytes(idx_labels([0, 1, 2, 7] * 3))
    _, info = datasets.load(directory)
    assert info.class_names == tuple(str(k) for k in range(8))


def test_mnist_directory_loads_as_load_mnist(tmp_path):
    directory = write_idx(tmp_path / "m", shape=(28, 28), n_classes=10)
    a = datasets.load_mnist(directory)
    (b, info) = datasets.load(directory)
    for x, z in zip(a, b):
        assert np.array_equal(x.images, z.images) and np.array_equal(x.labels, z.labels)
    assert info.pixel_scale == 1 / 256 and not info.digits  # not the official files


def test_options_that_do_not_apply_are_refused(tmp_path):
    path = write_csv(tmp_path / "iris.csv")
    with pytest.raises(ValueError, match="color does not apply"):
        datasets.load(path, color=True)
    root = write_png_folder(tmp_path / "pets", n=3)
    with pytest.raises(ValueError, match="target does not apply"):
        datasets.load(root, target="x")
    with pytest.raises(ValueError, match="HEIGHTxWIDTH"):
        datasets.load(root, image_size="big")
    with pytest.raises(FileNotFoundError):
        datasets.load(tmp_path / "nothing.csv")
    (tmp_path / "x.bin").write_bytes(b"1")
    with pytest.raises(ValueError, match="none of the data formats"):
        datasets.load(tmp_path / "x.bin")


# --- Fashion-MNIST as a folder of PNGs (slow) -----------------------------------

# Where Debian's dataset-fashion-mnist package puts the four IDX files
# (apt-get install dataset-fashion-mnist).
FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
FASHION_CLASSES = ("T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")


def write_fashion_png_folder(root):
    """Fashion-MNIST's IDX files as root/train/<class>/*.png and root/test/<class>/*.png."""
    from pathlib import Path

    from mlp.data.mnist import _find_idx_files, _read_idx_dir

    files = _find_idx_files(Path(FASHION_MNIST))
    if files is None:
        raise FileNotFoundError(f"Fashion-MNIST's IDX files are not in {FASHION_MNIST}")
    train_px, train_y, test_px, test_y, _ = _read_idx_dir(files)
    for split, pixels, labels in (("train", train_px, train_y), ("test", test_px, test_y)):
        for name in FASHION_CLASSES:
            (root / split / name).mkdir(parents=True)
        for i, (image, label) in enumerate(zip(pixels, labels)):
            PIL.fromarray(image.reshape(28, 28)).save(
                root / split / FASHION_CLASSES[label] / f"{i:05d}.png", compress_level=1)
    return root


@pytest.mark.slow
def test_fashion_mnist_as_a_png_folder_trains_from_the_command_line(tmp_path, capsys):
    from conftest import skip_without_data
    from mlp.cli import main

    try:
        root = write_fashion_png_folder(tmp_path / "fashion")
    except FileNotFoundError as error:
        skip_without_data(error, "Fashion-MNIST is not installed (Debian: apt-get install "
                                 "dataset-fashion-mnist)")
    model = tmp_path / "fashion.npz"
    assert main(["train", "--data", str(root), "--hidden", "256", "--epochs", "3",
                 "--no-progress", "--save", str(model)]) == 0
    out = capsys.readouterr().out
    assert "Model([784, 256, 10]" in out and "out of 10000 test examples" in out
    assert float(out.split("Test accuracy: ")[1].split("%")[0]) > 84
    (train, validation, test), info = datasets.load(root, progress=False)
    assert set(info.class_names) == set(FASHION_CLASSES) and len(test.labels) == 10_000
    assert main(["predict", str(model), str(root / "test" / "Trouser" / "00002.png")]) == 0
    assert capsys.readouterr().out.split()[1] == "Trouser"


def test_csv_second_load_comes_from_the_cache(tmp_path, monkeypatch):
    from mlp.data import tables

    path = write_csv(tmp_path / "iris.csv")
    first, info = datasets.load(path)

    def no_parsing(*args):
        raise AssertionError("parsed again")

    monkeypatch.setattr(tables, "read_csv", no_parsing)
    second, again = datasets.load(path)
    assert again == info
    for a, b in zip(first, second):
        assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    # Another target column, or a changed file, is parsed again.
    with pytest.raises(AssertionError, match="parsed again"):
        datasets.load(path, target="width")
    path.write_text(path.read_text() + "1.0,2.0,setosa\n")
    with pytest.raises(AssertionError, match="parsed again"):
        datasets.load(path)


def test_quoted_csv_is_read_by_the_csv_module(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text('"a","b","name"\n' + "".join(f'{i},"{2 * i}","kind, {i % 2}"\n'
                                                   for i in range(30)))
    (train, _, _), info = datasets.load(path)
    assert info.class_names == ("kind, 0", "kind, 1")
    assert np.array_equal(train.images[:, 1], 2 * train.images[:, 0])
