"""mlp: multilayer perceptrons for MNIST-style classification with a Cython/BLAS core.

    >>> import mlp
    >>> model = mlp.Model([784, 300, 100, 10], output="softmax", init="xavier", seed=0)
    >>> history = mlp.train(model, X, y, epochs=5, loss="cross_entropy", sampling="shuffle")
    >>> mlp.evaluate(model, X_test, y_test).accuracy
"""
from .model import Model
from .training import Evaluation, History, evaluate, train, training_step

__version__ = "0.1.0"
__all__ = ["Model", "train", "training_step", "evaluate", "History", "Evaluation", "datasets"]


def __getattr__(name):
    # datasets and compat pull in file and network code; load them, and
    # augment, on first use.
    if name in ("datasets", "compat", "augment"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
