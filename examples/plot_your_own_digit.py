"""
Your own digit
==============

:func:`mlp.datasets.prepare_digit` turns a picture of one handwritten digit into an
MNIST-like input, the way MNIST's digits were made: grey, ink light on dark, cropped to the
ink, scaled into a 20x20 box, centred by its centre of mass in a 28x28 field. ``mlp predict``
does this for every file it reads.
"""
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

import mlp
from mlp.datasets import load_mnist, prepare_digit, read_image

try:
    here = Path(__file__).resolve().parent
except NameError:  # run from an interactive session
    here = Path.cwd()
digits = sorted((here.parent / "docs" / "digits").glob("*.*"))

train, validation, test = load_mnist()
model = mlp.Model([784, 128, 10], seed=0)
mlp.train(model, train.images[:10000], train.labels[:10000], epochs=5, seed=0, progress=False)

# %%
# Each picture as it is, as the model sees it, and the model's three most likely digits.
figure = Figure(figsize=(6, 2.2 * len(digits)))
for row, path in enumerate(digits):
    prepared = prepare_digit(path)                      # float32 (784,) in [0, 1]
    probabilities = model.predict_proba(prepared[None, :])[0]
    top3 = np.argsort(probabilities)[::-1][:3]
    original = figure.add_subplot(len(digits), 2, 2 * row + 1)
    original.imshow(np.asarray(read_image(path).convert("L")), cmap="gray")
    original.set_title(path.name)
    original.axis("off")
    seen = figure.add_subplot(len(digits), 2, 2 * row + 2)
    seen.imshow(prepared.reshape(28, 28), cmap="gray_r")
    seen.set_title(", ".join(f"{d} ({probabilities[d]:.0%})" for d in top3))
    seen.axis("off")
    print(path.name, "->", top3[0])
figure.tight_layout()
