"""measure_pair(): paired accuracy statistics and interleaved latency of two models."""

from __future__ import annotations

import pytest
import torch

import squeezelab as sl
from squeezelab.engine.measurement.paired import measure_pair
from squeezelab.engine.measurement.stats import paired_drop_interval


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


def test_drop_interval_is_the_paired_interval_of_the_per_sample_outcomes(pair):
    model, split, two_bit, p = pair
    base = model(torch.from_numpy(split.x_test)).argmax(1).numpy() == split.y_test
    cand = two_bit.predict(split.x_test).argmax(1) == split.y_test
    assert p.drop_interval == paired_drop_interval(base, cand, 0.95)  # the same object, not recomputed
    assert p.drop_interval.discordant == p.discordant and p.drop_interval.method == "exact-binomial"
    assert p.drop_interval.low < p.accuracy_drop < p.drop_interval.high


def test_speedup_carries_its_interval(pair):
    *_, p = pair
    speed = p.speedup_interval
    assert speed.median == p.speedup and speed.rounds == 3
    assert speed.reading == "too few rounds (3) for a verdict: use rounds>=6"  # no 95% interval: no claim either way


def test_confidence_is_checked_before_measuring(digits_mlp):
    model, split = digits_mlp
    with pytest.raises(sl.errors.ConfigError, match=r"confidence=1\.5 must be a number in \(0, 1\)"):
        measure_pair(model, model, split.test, confidence=1.5)


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
    assert p.accuracy_drop == 0.0 and p.drop_interval is None and p.discordant is None
