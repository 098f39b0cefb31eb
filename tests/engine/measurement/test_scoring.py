"""Metrics as per-sample scores: the built-ins against hand computations, custom metrics, paired intervals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import squeezelab as sl
from squeezelab.engine.measurement.scoring import METRICS, Metric, as_metric
from squeezelab.engine.measurement.stats import paired_drop_interval


def test_built_ins_against_hand_computations():
    p = np.array([[1.0, 0.0], [0.2, 0.8], [3.0, 4.0]])
    t = np.array([[1.0, 0.0], [0.8, 0.2], [3.0, 4.0]])
    np.testing.assert_allclose(sl.metrics.top1_accuracy.scores(p, np.array([0, 1, 0])), [1, 1, 0])
    cos = [1.0, (0.16 + 0.16) / (0.68**0.5 * 0.68**0.5), 1.0]
    np.testing.assert_allclose(sl.metrics.cosine_similarity.scores(p, t), cos)
    np.testing.assert_allclose(sl.metrics.negative_mse.scores(p, t), [0.0, -0.36, 0.0])
    np.testing.assert_allclose(sl.metrics.top1_agreement.scores(p, t), [1, 0, 1])
    kl = torch.nn.functional.kl_div(torch.log_softmax(torch.tensor(p), 1), torch.log_softmax(torch.tensor(t), 1),
                                    reduction="none", log_target=True).sum(1).numpy()
    np.testing.assert_allclose(sl.metrics.kl_to_baseline.scores(p, t), -kl, rtol=1e-9, atol=1e-12)
    assert sl.metrics.kl_to_baseline.scores(t, t).max() == pytest.approx(0.0, abs=1e-12)


def test_shapes_and_names_decide_how_a_figure_is_shown():
    assert sl.metrics.top1_accuracy.format_value(0.9812) == "98.12 %" and sl.metrics.top1_accuracy.format_drop(0.0123) == "1.23 pp"
    assert sl.metrics.cosine_to_baseline.format_value(0.9912) == "0.9912" and sl.metrics.cosine_to_baseline.format_drop(0.0088) == "0.0088"
    assert (sl.metrics.cosine_to_baseline.reference, sl.metrics.cosine_similarity.reference) == ("baseline", "targets")
    assert set(METRICS) >= {"top1", "cosine", "agreement", "cosine_to_baseline", "kl_to_baseline", "neg_mse"}
    with pytest.raises(sl.errors.DataError, match="cosine similarity compares outputs .*same shape per sample"):
        sl.metrics.cosine_similarity.scores(np.zeros((3, 4)), np.zeros(3))


def test_defaults_follow_the_data_and_bad_metrics_are_refused():
    assert as_metric(None, has_targets=True) is sl.metrics.top1_accuracy
    assert as_metric(None, has_targets=False) is sl.metrics.cosine_to_baseline
    assert as_metric("cosine") is sl.metrics.cosine_similarity
    with pytest.raises(sl.errors.DataError, match="compares with targets, and the data has none.*cosine_to_baseline"):
        as_metric(sl.metrics.cosine_similarity, has_targets=False)
    with pytest.raises(sl.errors.ConfigError, match="metric='cosinus'"):
        as_metric("cosinus")
    with pytest.raises(sl.errors.ConfigError, match="reference='labels'"):
        Metric(lambda p, t: 0.0, reference="labels")
    nan = Metric(lambda p, t: np.full(len(p), np.nan), name="broken")
    with pytest.raises(sl.errors.DataError, match="metric 'broken' returned NaN"):
        nan.scores(np.zeros((2, 2)), np.zeros(2))
    wrong = Metric(lambda p, t: np.zeros(5), name="wrong")
    with pytest.raises(sl.errors.DataError, match=r"returned shape \(5,\) for 2 samples"):
        wrong.scores(np.zeros((2, 2)), np.zeros(2))


@pytest.mark.parametrize(
    ("returned", "shown"),
    [(np.array(["good", "bad"]), r"ndarray of dtype <U4 \(\['good', 'bad'\]"), ("fine", "str of dtype <U4 \\('fine'"),
     ([0.5, "x"], r"list of dtype <U32"), ({"acc": 1.0}, "dict of dtype object"), ([[1.0], [1.0, 2.0]], "list of dtype object")],
)
def test_a_metric_returning_something_else_than_numbers_is_named_with_what_it_returned(returned, shown):
    metric = Metric(lambda p, t: returned, name="labels as text")
    with pytest.raises(sl.errors.DataError, match=rf"metric 'labels as text' returned {shown}.*not numbers.*one float score per sample"):
        metric.scores(np.zeros((2, 2)), np.zeros(2))
    assert Metric(lambda p, t: [True, False], name="hits").scores(np.zeros((2, 2)), np.zeros(2)).tolist() == [1.0, 0.0]


def test_a_custom_per_sample_metric_gets_paired_statistics_and_a_scalar_one_does_not(digits_mlp):
    model, split = digits_mlp
    c = sl.compress(model, sl.Recipe(quantization=sl.LinearQuantization(bits=2), runtime=sl.Simulated()),
                    example_inputs=split.x_test[:1])

    def margin(outputs, labels):  # per sample: the logit of the true class minus the best other one
        true = outputs[np.arange(len(labels)), labels]
        others = np.where(np.eye(outputs.shape[1], dtype=bool)[labels], -np.inf, outputs).max(1)
        return true - others

    pair = sl.measure_pair(model, c, split.test, metric=margin, rounds=2)
    assert pair.candidate.metric == "margin" and pair.drop_interval is not None and pair.drop_interval.method == "t"
    expected = paired_drop_interval(pair.baseline.scores, pair.candidate.scores, 0.95)
    assert pair.drop_interval.low == pytest.approx(expected.low) and pair.drop_interval.high == pytest.approx(expected.high)
    assert pair.accuracy_drop == pytest.approx(pair.baseline.value - pair.candidate.value)
    scalar = sl.measure_pair(model, c, split.test, metric=lambda o, t: float((o.argmax(1) == t).mean()), rounds=2)
    assert scalar.drop_interval is None and scalar.candidate.scores is None and scalar.accuracy_drop is not None
