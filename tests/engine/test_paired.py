"""measure_pair(): paired accuracy statistics and interleaved latency of two models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import squeezelab as sl
from squeezelab.engine.paired import measure_pair


@pytest.fixture(scope="module")
def pair(digits_mlp):
    model, split = digits_mlp
    two_bit = sl.compress(model, sl.Recipe(quantization=sl.LinearQuantization(bits=2), runtime=sl.Simulated()), example_inputs=split.x_test[:1])
    return model, split, two_bit, measure_pair(model, two_bit, split.test, repeats=3)


def test_paired_drop_is_the_difference_of_accuracies(pair):
    model, split, two_bit, p = pair
    base = float((model(torch.from_numpy(split.x_test)).argmax(1).numpy() == split.y_test).mean())
    cand = float((two_bit.predict(split.x_test).argmax(1) == split.y_test).mean())
    assert p.baseline.accuracy == pytest.approx(base) and p.candidate.accuracy == pytest.approx(cand)
    assert p.accuracy_drop == pytest.approx(base - cand) and p.accuracy_drop > 0.02
    b, c = p.discordant
    assert (b - c) / p.n_samples == pytest.approx(p.accuracy_drop)
    assert p.relative_accuracy_drop == pytest.approx(p.accuracy_drop / base)


def test_lower_bound_from_the_paired_standard_error(pair):
    *_, p = pair
    n, (b, c) = p.n_samples, p.discordant
    d = np.array([1.0] * b + [-1.0] * c + [0.0] * (n - b - c))
    assert p.drop_std_error == pytest.approx(d.std(ddof=1) / math.sqrt(n))
    assert p.drop_lower_bound(0.95) == pytest.approx(p.accuracy_drop - 1.6448536 * p.drop_std_error, abs=1e-6)
    assert p.drop_lower_bound(0.99) < p.drop_lower_bound(0.95) < p.accuracy_drop
    assert p.drop_lower_bound(0.0) == p.accuracy_drop


def test_same_samples_same_rounds(pair):
    *_, p = pair
    assert p.baseline.n_samples == p.candidate.n_samples == p.n_samples == 450
    assert p.latency_rounds == p.baseline.latency_repeats == p.candidate.latency_repeats == 3
    assert p.speedup > 0 and p.candidate.executable is False and p.baseline.executable is True


def test_custom_metric_gives_point_difference_only(digits_mlp):
    model, split = digits_mlp

    def error_rate(pred, y):
        return float((pred.argmax(1) != y).mean())

    p = measure_pair(model, model, split.test, metric=error_rate, repeats=2)
    assert p.accuracy_drop == 0.0 and p.drop_std_error is None and p.discordant is None
    assert p.drop_lower_bound(0.95) == 0.0
