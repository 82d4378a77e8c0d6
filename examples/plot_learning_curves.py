"""
Learning curves
===============

Train a small network on 5,000 MNIST digits and draw its training loss and validation
accuracy per epoch with :func:`mlp.plots.learning_curves`.
"""
import mlp
from mlp import plots
from mlp.datasets import load_mnist

train, validation, test = load_mnist()
X, y = train.images[:5000], train.labels[:5000]
X_val, y_val = validation.images[:2000], validation.labels[:2000]

model = mlp.Model([784, 128, 10], seed=0)
history = mlp.train(model, X, y, epochs=8, validation=(X_val, y_val), seed=0, progress=False)
print(mlp.evaluate(model, test.images, test.labels))

# %%
# The loss falls every epoch; the validation accuracy levels off as the small training set
# is learned by heart.
figure = plots.learning_curves(history)
