"""Named configurations: a network and its training, for MNIST.

A preset is a :class:`~mlp.hyperparams.ModelOptions` and a
:class:`~mlp.hyperparams.TrainingOptions` (the same definitions ``mlp.train``
and the CLI use) plus a seed. ``mlp train --preset NAME`` starts from one and
its flags override fields. How each recipe was chosen is in the README.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .augment import Affine, Elastic
from .hyperparams import ModelOptions, TrainingOptions
from .optimizers import SGD, Adam


@dataclass(frozen=True)
class Preset:
    """Everything needed to build a model and train it.

    notebook_seeding: the seed seeds numpy's legacy generator, as the
    notebook's ``np.random.seed(S)`` does, and both the initial weights and
    the batches are drawn from it in the notebook's order.
    """
    name: str
    description: str
    model: ModelOptions
    training: TrainingOptions
    seed: int | None = 0
    notebook_seeding: bool = False

    def with_overrides(self, model=None, training=None, seed=None):
        """A copy with the given ModelOptions / TrainingOptions fields replaced
        (None values are ignored) and, if given, a new seed."""
        model = {k: v for k, v in (model or {}).items() if v is not None}
        training = {k: v for k, v in (training or {}).items() if v is not None}
        return replace(self, model=replace(self.model, **model),
                       training=self.training.replace(**training),
                       seed=self.seed if seed is None else seed)

    def seeds(self):
        """(model seed, training seed): one seed for the whole run."""
        if self.notebook_seeding:
            legacy = np.random.RandomState(self.seed)
            return legacy, legacy
        return self.seed, self.seed

    def build_model(self, seed):
        return self.model.build(seed=seed)


_MNIST = (784, 300, 100, 10)

PRESETS = {
    "notebook": Preset(
        name="notebook",
        description="the notebook exactly: N(0,1) init, sigmoid everywhere, MSE, batches of 30 "
                    "drawn with replacement, lr 2.0, 20,000 steps, float64; --seed S draws as "
                    "the notebook does after np.random.seed(S)",
        model=ModelOptions(layers=_MNIST, activation="sigmoid", output="sigmoid", init="normal",
                           dtype="float64"),
        training=TrainingOptions(iterations=20_000, batch_size=30, learning_rate=2.0,
                                 lr_schedule="constant", loss="mse", sampling="replacement"),
        # With N(0,1) weights the output sigmoids can saturate for good, so a
        # run either reaches the notebook's ~94.4% or loses whole classes; the
        # README gives the outcome for seeds 0 to 7. This seed reaches it.
        seed=1,
        notebook_seeding=True,
    ),
    # mlp.train's default recipe (hyperparams.DEFAULT_OPTIMIZER, cosine) plus
    # weight decay 5e-4, tuned for this network over 10 epochs of MNIST; the
    # library's default has no decay, as it must suit any network (README,
    # "Choosing the defaults").
    "default": Preset(
        name="default",
        description="ReLU, softmax + cross-entropy, He init, shuffled batches of 64, SGD with "
                    "Nesterov momentum 0.9, lr 0.1 with cosine decay, weight decay 5e-4, "
                    "10 epochs, float32",
        model=ModelOptions(layers=_MNIST),
        training=TrainingOptions(epochs=10, batch_size=64,
                                 optimizer=SGD(0.1, momentum=0.9, nesterov=True,
                                               weight_decay=5e-4),
                                 lr_schedule="cosine"),
    ),
    "accurate": Preset(
        name="accurate",
        description="784-800-800-10 ReLU with dropout 0.3 (inputs 0.1), SGD with Nesterov "
                    "momentum 0.9, lr 0.05 with cosine decay, weight decay 1e-4, 50 epochs of "
                    "batches of 128, float32",
        model=ModelOptions(layers=(784, 800, 800, 10)),
        training=TrainingOptions(epochs=50, batch_size=128,
                                 optimizer=SGD(0.05, momentum=0.9, nesterov=True,
                                               weight_decay=1e-4),
                                 lr_schedule="cosine", dropout=0.3, input_dropout=0.1),
    ),
    "augmented": Preset(
        name="augmented",
        description="784-800-800-10 ReLU trained on distorted digits (affine: rotation 10, "
                    "scale 0.1, shear 10, shift 2; elastic: alpha 34, sigma 4), Adam lr 1e-3 "
                    "with cosine decay, 60 epochs of batches of 128, float32",
        model=ModelOptions(layers=(784, 800, 800, 10)),
        # Chosen by measurement (README, "Training on distorted digits"): with
        # the distortions, dropout did not help and Adam beat Nesterov SGD.
        training=TrainingOptions(epochs=60, batch_size=128, optimizer=Adam(1e-3),
                                 lr_schedule="cosine",
                                 augment=Affine(rotation=10, scale=0.1, shear=10, shift=2)
                                 + Elastic(alpha=34, sigma=4)),
    ),
}
