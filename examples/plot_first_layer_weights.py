"""
First-layer weights
===================

Each unit of the first hidden layer has one weight per pixel; drawn as a 28x28 image, the
weights show the strokes the unit responds to (:func:`mlp.plots.first_layer_weights`).
"""
import mlp
from mlp import plots
from mlp.datasets import load_mnist

train, validation, test = load_mnist()
model = mlp.Model([784, 64, 10], seed=0)
mlp.train(model, train.images[:5000], train.labels[:5000], epochs=5, seed=0, progress=False)

figure = plots.first_layer_weights(model, n=64)

# %%
# Weight decay smooths them: the same network trained with ``weight_decay=1e-3``.
smooth = mlp.Model([784, 64, 10], seed=0)
mlp.train(smooth, train.images[:5000], train.labels[:5000], epochs=5, seed=0, progress=False,
          optimizer=mlp.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
          lr_schedule="cosine")
smooth_figure = plots.first_layer_weights(smooth, n=64)
