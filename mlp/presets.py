"""Named training configurations for the 784-300-100-10 network on MNIST."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class Preset:
    """Everything needed to build a model and train it; the CLI's flags override fields."""
    name: str
    description: str
    layers: tuple = (784, 300, 100, 10)
    activation: str = "sigmoid"
    output: str = "sigmoid"
    init: str = "normal"
    loss: str = "mse"
    sampling: str = "replacement"
    batch_size: int = 30
    learning_rate: float = 2.0
    lr_schedule: str = "constant"
    weight_decay: float = 0.0
    iterations: int | None = None
    epochs: int | None = None
    dtype: str = "float32"
    seed: int | None = 0

    def with_overrides(self, **changes):
        """A copy with the given non-None fields replaced; iterations and
        epochs replace each other."""
        changes = {k: v for k, v in changes.items() if v is not None}
        if "iterations" in changes:
            changes.setdefault("epochs", None)
        if "epochs" in changes and changes["epochs"] is not None:
            changes["iterations"] = None
        return replace(self, **changes)

    def build_model(self):
        from .model import Model

        return Model(self.layers, activation=self.activation, output=self.output,
                     init=self.init, dtype=np.dtype(self.dtype), seed=self.seed)

    def train_kwargs(self):
        return dict(iterations=self.iterations, epochs=self.epochs, batch_size=self.batch_size,
                    learning_rate=self.learning_rate, lr_schedule=self.lr_schedule,
                    weight_decay=self.weight_decay,
                    loss=self.loss, sampling=self.sampling,
                    seed=self.seed)


PRESETS = {
    "notebook": Preset(
        name="notebook",
        description="the notebook exactly: N(0,1) init, sigmoid everywhere, MSE, batches of 30 "
                    "drawn with replacement, lr 2.0, 20,000 steps, float64",
        iterations=20_000,
        dtype="float64",
        # With N(0,1) weights the output sigmoids can saturate for good, so a run
        # either reaches the notebook's ~94.4% or loses whole classes; the
        # README gives the spread over seeds. This seed is one that reaches it.
        seed=2,
    ),
    "default": Preset(
        name="default",
        description="ReLU hidden layers, softmax output, cross-entropy, Xavier init, shuffled "
                    "epochs of batches of 64, lr 0.5 with cosine decay, 10 epochs, float32",
        activation="relu",
        output="softmax",
        init="xavier",
        loss="cross_entropy",
        sampling="shuffle",
        batch_size=64,
        learning_rate=0.5,
        lr_schedule="cosine",
        epochs=10,
    ),
}
