"""measure(): honest figures from the data given, the same way for baseline and candidate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import squeezelab as sl


def test_metrics_of_the_fp32_baseline(digits_cnn):
    model, split = digits_cnn
    m = sl.measure(model, split.test, repeats=5, batch_size=8)
    expected = float((model(torch.from_numpy(split.x_test)).argmax(1).numpy() == split.y_test).mean())
    assert m.accuracy == pytest.approx(expected, abs=1e-9)
    assert m.n_samples == len(split.y_test) and m.metric == "top-1 accuracy"
    assert m.executable and m.kind == "executable" and m.bits == 32 and m.label == "fp32"
    assert m.latency_ms > 0 and m.latency_batch_size == 8 and m.latency_repeats == 5 and m.threads == 1
    assert m.size_bytes == len(sl.compress(model, example_inputs=split.x_test[:1]).onnx_bytes) > 100_000
    assert m.sparsity == pytest.approx(float(sum((p == 0).sum() for n, p in model.named_parameters() if n.endswith("weight"))) / sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight")))


def test_all_data_forms_give_the_same_accuracy(digits_mlp):
    model, split = digits_mlp
    c = sl.compress(model, sl.Recipe(runtime=sl.Int8Dynamic()), example_inputs=split.x_test[:1])
    ds = TensorDataset(torch.from_numpy(split.x_test), torch.from_numpy(split.y_test))
    forms = [split.test, (torch.from_numpy(split.x_test), torch.from_numpy(split.y_test)), ds, DataLoader(ds, batch_size=33)]
    accs = {sl.measure(c, form, repeats=1).accuracy for form in forms}
    assert len(accs) == 1


def test_custom_metric_and_size_only(digits_mlp):
    model, split = digits_mlp
    c = sl.compress(model, sl.Recipe(quantization=sl.LinearQuantization(bits=3), runtime=sl.Simulated()), example_inputs=split.x_test[:1])

    def error_rate(pred, y):
        return float((pred.argmax(1) != y).mean())

    m = sl.measure(c, split.test, metric=error_rate, repeats=2)
    assert m.metric == "error_rate" and 0 < m.accuracy < 0.2
    assert not m.executable and m.kind == "simulated" and m.runtime == "pytorch (simulated)" and m.bits == 3
    only = sl.measure(c, None, repeats=2)
    assert only.accuracy is None and only.n_samples == 0 and only.size_bytes == c.size_bytes


def test_float64_data_is_accepted_on_every_runtime(digits_mlp):
    model, split = digits_mlp
    x64, y = split.x_test.astype(np.float64), split.y_test
    for recipe in (sl.Recipe(), sl.Recipe(quantization=sl.LinearQuantization(bits=8), runtime=sl.Simulated())):
        c = sl.compress(model, recipe, example_inputs=split.x_test[:1])
        m = sl.measure(c, (x64, y), repeats=2)
        assert m.accuracy > 0.9


def test_column_labels_work_and_bad_shapes_are_explained(digits_mlp):
    model, split = digits_mlp
    c = sl.compress(model, example_inputs=split.x_test[:1])
    flat = sl.measure(c, split.test, repeats=1).accuracy
    assert sl.measure(c, (split.x_test, split.y_test[:, None]), repeats=1).accuracy == flat
    with pytest.raises(sl.errors.DataError, match=r"\(N, classes\) outputs and \(N,\) class labels"):
        sl.measure(c, (split.x_test, np.zeros((len(split.y_test), 3))), repeats=1)


@pytest.mark.parametrize(
    "kwargs", [{"threads": 0}, {"rounds": -1}, {"repeats": -1}, {"batch_size": -1}, {"warmup": -1}, {"confidence": 1.5}]
)
def test_bad_measurement_settings_fail_before_export(kwargs, monkeypatch):
    import squeezelab.engine.pipeline.compress as compress_module

    monkeypatch.setattr(compress_module, "export_onnx", lambda *a, **k: pytest.fail("exported before the settings were checked"))
    with pytest.raises(sl.errors.ConfigError, match="must be a"):
        sl.measure(torch.nn.Linear(4, 2), example_inputs=torch.randn(1, 4), **kwargs)
    with pytest.raises(sl.errors.ConfigError, match="unknown setting.*'round'"):
        sl.measure(torch.nn.Linear(4, 2), example_inputs=torch.randn(1, 4), round=3)


def test_predict_on_nothing_is_explained(digits_mlp):
    model, split = digits_mlp
    c = sl.compress(model, example_inputs=split.x_test[:1])
    with pytest.raises(sl.errors.DataError, match="empty batch"):
        c.predict(split.x_test[:0])


def test_measure_torch_model_needs_inputs():
    with pytest.raises(sl.errors.ExampleInputError, match="example_inputs or data"):
        sl.measure(torch.nn.Linear(4, 2))


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ((np.zeros((3, 1, 8, 8), np.float32), np.zeros(2)), "the data has 3 input samples but 2 targets"),
        ((np.zeros((0, 1, 8, 8), np.float32), np.zeros(0)), "empty"),
        ([(np.zeros((1, 1, 8, 8), np.float32),) * 3], "each batch must be (inputs, targets)"),
        ((np.zeros((3, 1, 8, 8), np.float32),) * 3, "a tuple must be (inputs, targets)"),
        (42, "cannot read the evaluation data of the form int; pass (inputs, targets)"),
    ],
)
def test_bad_data_is_explained(digits_mlp, data, words):
    model, split = digits_mlp
    c = sl.compress(model, example_inputs=split.x_test[:1])
    with pytest.raises(sl.errors.DataError, match=words.replace("(", r"\(").replace(")", r"\)")):
        sl.measure(c, data, repeats=1)


def test_measure_leaves_torch_threads_as_they_were(digits_mlp):
    model, split = digits_mlp
    before = torch.get_num_threads()
    c = sl.compress(model, sl.Recipe(quantization=sl.Float16(), runtime=sl.Simulated()), example_inputs=split.x_test[:1])
    sl.measure(c, split.test, repeats=2, threads=1)
    assert torch.get_num_threads() == before
