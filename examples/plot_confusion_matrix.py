"""
The confusion matrix
====================

Which digits does a model confuse with which? :func:`mlp.plots.confusion_matrix` counts,
for every true digit (rows), how often each digit was predicted (columns).
"""
import mlp
from mlp import metrics, plots
from mlp.datasets import load_mnist

train, validation, test = load_mnist()
model = mlp.Model([784, 128, 10], seed=0)
mlp.train(model, train.images[:5000], train.labels[:5000], epochs=5, seed=0, progress=False)

figure = plots.confusion_matrix(model, test.images, test.labels)

# %%
# The numbers behind the figure: :func:`mlp.metrics.confusion_matrix` and the precision and
# recall of each digit from :func:`mlp.metrics.class_scores`.
counts = metrics.confusion_matrix(test.labels, model.predict(test.images), 10)
print(counts)
