"""mlp: multilayer perceptrons for MNIST-style classification with a Cython/BLAS core.

    >>> import mlp
    >>> model = mlp.Model([784, 300, 100, 10], seed=0)   # ReLU, softmax, He init
    >>> history = mlp.train(model, X, y, epochs=5, optimizer=mlp.Adam(), seed=0)
    >>> mlp.evaluate(model, X_test, y_test).accuracy
"""
from .model import Model
from .optimizers import SGD, Adam, AdamW
from .training import Callback, Evaluation, History, evaluate, train, training_step

__version__ = "0.2.0"
__all__ = ["Model", "train", "training_step", "evaluate", "History", "Evaluation", "Callback",
           "SGD", "Adam", "AdamW", "datasets", "schedules"]


def __getattr__(name):
    # These pull in file and network code or optional packages (matplotlib,
    # Pillow); load them on first use.
    if name in ("datasets", "compat", "metrics", "plots", "report", "schedules", "augment", "sklearn", "onnx"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
