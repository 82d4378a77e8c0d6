"""
Augmentation
============

Random distortions of training digits (:mod:`mlp.augment`): each row of a preview shows
digits (top) and random distortions of each below. Training with ``augment=`` draws new
ones every time an image is used.
"""
import mlp
from mlp.augment import Affine, Elastic, distort, preview_grid
from mlp.datasets import load_mnist

train, validation, test = load_mnist()
images = train.images[:2000]

# %%
# Affine distortions: rotation, change of size, shear and shift.
affine = Affine(rotation=10, scale=0.1, shear=10, shift=2)
affine_figure = preview_grid(images, affine, seed=0)

# %%
# Elastic distortions (Simard et al., 2003): a smoothed random displacement of every pixel.
elastic = Elastic(alpha=34, sigma=4)
elastic_figure = preview_grid(images, elastic, seed=0)

# %%
# Both at once, in one resampling: the ``augmented`` preset's distortions.
both_figure = preview_grid(images, affine + elastic, seed=0)

# %%
# Training on them: on 2,000 digits, distortions keep the network from learning the
# training set by heart.
distorted = distort(images[:8], affine + elastic, seed=1)
print(distorted.shape, distorted.dtype)
for augment in (None, affine + elastic):
    model = mlp.Model([784, 128, 10], seed=0)
    mlp.train(model, images, train.labels[:2000], epochs=10, augment=augment, seed=0,
              progress=False)
    print(augment, mlp.evaluate(model, test.images, test.labels))
