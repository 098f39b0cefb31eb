"""The export check: the fp32 ONNX model is compared with PyTorch on the example and on real data before
anything is quantized or measured; a traced `if` on tensor values is a clear error, not a silent wrong answer.

Oracles: the PyTorch model itself (the branch it really takes on each input), and the exporter's own
TracerWarning for that `if`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import squeezelab as sl
from squeezelab.engine.core.inputs import Inputs
from squeezelab.engine.runtime.export import export_onnx
from squeezelab.engine.runtime.export_check import ATOL, RTOL, check_batches, check_export


class Branchy(nn.Module):
    """A data-dependent branch: the trace freezes whichever branch the example took."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.fc(x)
        return self.fc(-x) * 2


def _positive(n: int) -> np.ndarray:
    return np.abs(np.random.default_rng(0).normal(size=(n, 8))).astype(np.float32) + 0.1


def test_the_traced_branch_alone_is_not_an_error_without_other_data():
    c = sl.compress(Branchy(), example_inputs=_positive(1))
    np.testing.assert_allclose(c.predict(_positive(5)), Branchy()(torch.from_numpy(_positive(5))).detach().numpy(), atol=1e-5)


def test_calibration_data_that_takes_the_other_branch_fails_before_quantizing(monkeypatch):
    import squeezelab.engine.pipeline.compress as compress_module

    monkeypatch.setattr(compress_module, "_onnx_result", lambda *a, **k: pytest.fail("converted before the export check"))
    with pytest.raises(sl.errors.ExportMismatchError) as info:
        sl.compress(Branchy(), sl.Recipe(runtime=sl.Int8Static()), example_inputs=_positive(1), calibration_data=-_positive(20))
    message = str(info.value)
    assert "calibration_data samples 0-3 (one batch)" in message and info.value.where.startswith("calibration_data")
    assert "data-dependent control flow" in message and "an `if` on tensor values" in message
    assert "Python boolean" in message  # the exporter's TracerWarning, cited as evidence
    assert "torch.where" in message and "exporter='dynamo'" in message and "torch.cond" in message
    assert info.value.difference > 0.1 and isinstance(info.value, sl.errors.ExportError)


def test_measure_compares_the_export_with_pytorch_on_the_evaluation_data():
    x = np.concatenate([_positive(1), -_positive(30)])  # the first sample (the example) is positive
    with pytest.raises(sl.errors.ExportMismatchError, match=r"the evaluation data samples 0-3 .*data-dependent control flow"):
        sl.measure(Branchy(), (x, None), rounds=0)


def test_a_branch_per_sample_shows_on_a_sample_alone():
    class RowBranch(Branchy):
        def forward(self, x):
            if x[0, 0] > 0:  # decided by the batch's first row only
                return self.fc(x)
            return self.fc(x) + 1.0

    x = _positive(8)
    x[1, 0] = -1.0  # sample 1 takes the other branch when it runs alone
    with pytest.raises(sl.errors.ExportMismatchError, match="calibration_data sample 1 \\(alone\\)"):
        sl.compress(RowBranch(), example_inputs=x[:1], calibration_data=x)


def test_no_false_alarm_on_models_without_branches(digits_cnn):
    model, split = digits_cnn
    c = sl.compress(model, sl.Recipe(runtime=sl.Int8Static()), example_inputs=split.x_test[:1], calibration_data=split.x_train[:64])
    assert c.details["tracer_warnings"] == 0
    m = sl.measure(model, split.test, rounds=0)
    assert m.n_samples == len(split.y_test)


def test_the_tolerance_allows_float_noise_and_refuses_real_differences():
    torch.manual_seed(0)
    net = nn.Linear(8, 4)
    x = Inputs.of(torch.randn(4, 8))
    onnx_bytes = export_onnx(net, x)
    with torch.no_grad():
        out = net(torch.from_numpy(x.arrays[0]))
    scale = max(1.0, float(out.abs().max()))
    within = ATOL * scale * 0.5
    check_export(onnx_bytes, lambda inputs: net(torch.from_numpy(inputs.arrays[0])) + within, x)  # fp32 noise: fine
    beyond = ATOL * scale + RTOL * float(out.abs().max()) + 1e-3
    with pytest.raises(sl.errors.ExportMismatchError, match="on the very inputs it was traced with"):
        check_export(onnx_bytes, lambda inputs: net(torch.from_numpy(inputs.arrays[0])) + beyond, x)


def test_check_batches_skip_a_sample_equal_to_the_example():
    x = Inputs.of(np.arange(40, dtype=np.float32).reshape(20, 2))
    labels = [where for where, _ in check_batches(x.slice(0, 1), x, "the data")]
    assert labels == ["the example inputs (the batch traced)", "the data samples 0-3 (one batch)", "the data sample 1 (alone)"]
    other = [where for where, _ in check_batches(x.slice(5, 6), x, "the data")]
    assert other[-1] == "the data sample 0 (alone)" and len(other) == 3


def test_the_exporter_notes_its_tracer_warnings():
    notes: list[str] = []
    export_onnx(Branchy(), Inputs.of(_positive(1)), notes=notes)
    assert len(notes) == 1 and "Python boolean" in notes[0] and "test_export_check.py" in notes[0]


def test_compare_checks_the_data_with_the_baseline_before_any_other_recipe(monkeypatch):
    from squeezelab.engine.measurement.compare import compare
    import squeezelab.engine.pipeline.compress as compress_module

    made = []
    original = compress_module.compress
    monkeypatch.setattr(compress_module, "compress", lambda *a, **k: made.append(a[1]) or original(*a, **k))
    x = np.concatenate([_positive(1), -_positive(20)])
    with pytest.raises(sl.errors.ExportMismatchError, match="the evaluation data samples 0-3"):
        compare(Branchy(), [sl.Recipe(runtime=sl.Int8Dynamic())], (x, None), example_inputs=x[:1], rounds=2)
    assert made == []  # no recipe was compressed before the check failed


def test_sweeps_and_searches_compare_the_export_on_their_evaluation_data():
    from squeezelab.engine.explore.evaluation import Evaluator

    x = np.concatenate([_positive(1), -_positive(20)])
    evaluator = Evaluator(Branchy(), (x, None), cache=False, rounds=0)
    with pytest.raises(sl.errors.ExportMismatchError, match="the evaluation data samples 0-3"):
        evaluator.evaluate(sl.Recipe())


class _BatchFixedByTheTrace(nn.Module):
    """Flattens the whole batch into one row: the trace fixes the example's batch of 1 into the graph."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.reshape(1, -1))


def test_an_export_that_cannot_take_another_batch_is_a_clear_error_not_onnx_runtimes(capfd):
    x = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    with pytest.raises(sl.errors.ExportError, match="does not run in ONNX Runtime"):
        sl.compress(_BatchFixedByTheTrace(), sl.Recipe(runtime=sl.Int8Dynamic()), example_inputs=x[:1], calibration_data=x)
    assert "onnxruntime" not in capfd.readouterr().err  # no raw C++ log line beside the error
