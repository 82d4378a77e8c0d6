"""mlp.hyperparams: one definition behind train(), the presets and the CLI."""
import dataclasses
import inspect

import pytest

import mlp
from mlp.cli import build_parser
from mlp.hyperparams import ModelOptions, TrainingOptions
from mlp.presets import PRESETS


def test_train_takes_exactly_the_training_options_with_their_defaults():
    parameters = inspect.signature(mlp.train).parameters
    for spec in dataclasses.fields(TrainingOptions):
        assert parameters[spec.name].default == spec.default, spec.name
        assert parameters[spec.name].kind is inspect.Parameter.KEYWORD_ONLY
        assert spec.name in mlp.train.__doc__
    extra = set(parameters) - {f.name for f in dataclasses.fields(TrainingOptions)}
    assert extra == {"model", "X", "y", "validation", "sample_weight", "progress", "n_threads",
                     "callbacks", "checkpoint", "checkpoint_every", "resume"}


def test_unknown_train_arguments_are_refused_by_name():
    with pytest.raises(TypeError, match="learning_rat"):
        mlp.train(mlp.Model([2, 2]), [[0, 0]], [0], learning_rat=0.1)


def test_every_flagged_option_has_its_cli_flag():
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    flags = {flag for action in train._actions for flag in action.option_strings}
    for options_class in (ModelOptions, TrainingOptions):
        for spec in dataclasses.fields(options_class):
            if spec.metadata.get("flag"):
                assert spec.metadata["flag"] in flags
    for flag in ("--optimizer", "--momentum", "--nesterov", "--beta1", "--beta2", "--eps",
                 "--warmup", "--dropout", "--input-dropout", "--max-norm", "--patience",
                 "--lr", "--weight-decay"):
        assert flag in flags


def test_presets_hold_the_same_definitions():
    for preset in PRESETS.values():
        assert isinstance(preset.model, ModelOptions)
        assert isinstance(preset.training, TrainingOptions)


def test_cli_flags_land_in_the_training_options():
    from mlp.cli import _configure

    args = build_parser().parse_args(
        ["train", "--optimizer", "adamw", "--lr", "0.003", "--beta2", "0.99", "--dropout", "0.3",
         "--max-norm", "2", "--warmup", "0.1", "--epochs", "4", "--layers", "784,64,10"])
    preset = _configure(args)
    assert preset.training.optimizer == mlp.Adam(0.003, beta2=0.99, decoupled=True)
    assert (preset.training.dropout, preset.training.max_norm, preset.training.warmup) == (
        0.3, 2.0, 0.1)
    assert preset.training.epochs == 4 and preset.training.iterations is None
    assert preset.model.layers == (784, 64, 10)
    # The preset's optimizer keeps its other values when one flag changes.
    preset = _configure(build_parser().parse_args(["train", "--momentum", "0.5"]))
    assert preset.training.optimizer == mlp.SGD(0.1, momentum=0.5, nesterov=True,
                                                weight_decay=5e-4)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(epochs=0), ValueError, "epochs"),
    (dict(epochs=2, iterations=3), ValueError, "epochs or iterations"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(optimizer=mlp.SGD(), learning_rate=0.1), ValueError, "inside the optimizer"),
    (dict(sampling="random"), ValueError, "sampling"),
    (dict(dropout=1), ValueError, "dropout"),
    (dict(patience=0), ValueError, "patience"),
])
def test_training_options_are_validated_when_built(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        TrainingOptions(**kwargs)


def test_default_optimizer_and_schedule():
    options = TrainingOptions()
    assert options.resolved_optimizer() == mlp.SGD(0.1, momentum=0.9, nesterov=True)
    assert options.resolved_schedule().__name__ == "cosine"
    chosen = TrainingOptions(learning_rate=0.5)
    assert chosen.resolved_optimizer() == mlp.SGD(0.5)
    assert chosen.resolved_schedule().__name__ == "constant"
    assert TrainingOptions(optimizer=mlp.Adam()).resolved_schedule().__name__ == "constant"
