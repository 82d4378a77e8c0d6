"""mlp.schedules: named schedules, warm-up, callables, and bad factors."""
import math

import numpy as np
import pytest

import mlp
from mlp.schedules import SCHEDULES, learning_rates


def test_named_schedules_start_at_one():
    for name, schedule in SCHEDULES.items():
        assert schedule(0, 100) == 1.0, name


def test_warmup_ramps_linearly_then_runs_the_schedule_over_the_rest():
    rates = learning_rates(1.0, SCHEDULES["cosine"], 0, 20, 20, warmup=4)
    np.testing.assert_allclose(rates[:4], [0.25, 0.5, 0.75, 1.0])
    # Cosine over the 16 steps after the warm-up.
    assert rates[4] == pytest.approx(1.0)
    assert rates[12] == pytest.approx(0.5 * (1 + math.cos(math.pi * 8 / 16)))
    fraction = learning_rates(1.0, SCHEDULES["constant"], 0, 10, 100, warmup=0.05)
    np.testing.assert_allclose(fraction[:6], [0.2, 0.4, 0.6, 0.8, 1.0, 1.0])


def test_a_callable_schedule_is_evaluated_every_step():
    calls = []

    def halve_every_ten(step, total):
        calls.append((step, total))
        return 0.5 ** (step // 10)

    rates = learning_rates(0.8, halve_every_ten, 5, 10, 40)
    assert calls == [(s, 40) for s in range(5, 15)]
    np.testing.assert_allclose(rates, [0.8] * 5 + [0.4] * 5)


def test_train_evaluates_the_schedule_per_step_over_the_whole_run():
    rng = np.random.default_rng(0)
    X, y = rng.random((40, 3)), rng.integers(0, 2, 40)
    seen = []

    def schedule(step, total):
        seen.append((step, total))
        return 1.0

    mlp.train(mlp.Model([3, 2]), X, y, epochs=3, batch_size=8, optimizer=mlp.SGD(0.1),
              lr_schedule=schedule, progress=False)
    assert seen == [(s, 15) for s in range(15)]


@pytest.mark.parametrize("factor", [float("nan"), float("inf"), -0.5, "1", None])
def test_a_schedule_returning_a_bad_factor_is_an_error_naming_the_step(factor):
    with pytest.raises(ValueError, match="lr_schedule returned .* at step 3"):
        learning_rates(0.1, lambda step, total: factor if step == 3 else 1.0, 0, 5, 5)
