"""mlp: multilayer perceptrons for MNIST-style classification with a Cython/BLAS core.

    >>> import mlp
    >>> model = mlp.Model([784, 300, 100, 10], seed=0)   # ReLU, softmax, He init
    >>> history = mlp.train(model, X, y, epochs=5, optimizer=mlp.Adam(), seed=0)
    >>> mlp.evaluate(model, X_test, y_test).accuracy
"""
import importlib as _importlib
import os as _os


def _not_built_message():
    package = _os.path.dirname(_os.path.abspath(__file__))
    root = _os.path.dirname(package)
    if _os.path.isfile(_os.path.join(root, "setup.py")):
        return (
            f"mlp's compiled core, mlp._kernels, is not built in the source checkout at {root}, "
            f"which is where Python found mlp (`python -m` and `python -c` put the current "
            f"directory first on sys.path). "
            f"Build it in place there with `python setup.py build_ext --inplace` "
            f"(or install the checkout with `pip install -e .`), "
            f"or run from another directory to use an installed mlp.")
    return (f"mlp's compiled core, mlp._kernels, is missing from {package}; "
            f"reinstall mlp (`pip install --force-reinstall --no-deps mlp`, or `pip install .` "
            f"from a source checkout).")


# Without the compiled core, the first module that needs it would fail with
# "cannot import name '_kernels' from partially initialized module 'mlp' (most
# likely due to a circular import)", which says nothing about the fix.
try:
    _importlib.import_module(f"{__name__}._kernels")
except ModuleNotFoundError as _exc:
    if _exc.name != f"{__name__}._kernels":
        raise
    raise ImportError(_not_built_message(), name=f"{__name__}._kernels") from None

del _importlib, _os, _not_built_message

from ._version import __version__  # noqa: E402
from .model import Model  # noqa: E402
# Every registered optimizer (mlp.SGD, mlp.Adam, mlp.RMSprop, ...) and mlp.AdamW.
from .optimizers import *  # noqa: E402,F401,F403
from .optimizers import __all__ as _optimizer_names  # noqa: E402
from .metrics import RegressionEvaluation  # noqa: E402
from .state import History  # noqa: E402
from .training import Callback, Evaluation, evaluate, train, training_step  # noqa: E402
# These attach Model.save and Model.load, and Model.to_onnx (which imports
# the onnx package only when called), to the class that sits below them.
from . import serialization as _serialization  # noqa: E402, F401
from . import onnx as _onnx  # noqa: E402, F401
__all__ = ["Model", "train", "training_step", "evaluate", "History", "Evaluation",
           "RegressionEvaluation", "Callback", *_optimizer_names, "datasets", "schedules"]
del _optimizer_names


def __getattr__(name):
    # These pull in file and network code or optional packages (matplotlib,
    # Pillow); load them on first use.
    if name in ("datasets", "compat", "metrics", "plots", "report", "schedules", "augment", "sklearn", "onnx"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
