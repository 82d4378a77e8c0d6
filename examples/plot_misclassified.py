"""
Misclassified digits
====================

The first test digits a model gets wrong, each with its true and predicted label
(:func:`mlp.plots.misclassified`). Many are hard to read for a person too.
"""
import mlp
from mlp import plots
from mlp.datasets import load_mnist

train, validation, test = load_mnist()
model = mlp.Model([784, 128, 10], seed=0)
mlp.train(model, train.images[:5000], train.labels[:5000], epochs=5, seed=0, progress=False)
print(mlp.evaluate(model, test.images, test.labels))

figure = plots.misclassified(model, test.images, test.labels, n=36)
