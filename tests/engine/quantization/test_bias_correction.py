"""Bias correction: ONNX Runtime's int8 weights simulated exactly, the mean shift removed, less int8 error."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

import squeezelab as sl
from squeezelab.engine.core.inputs import Inputs
from squeezelab.engine.quantization.bias_correction import _fake_activation, correct_bias_, int8_weight
from squeezelab.engine.quantization.transforms import default_transforms
from squeezelab.engine.runtime.providers import make_session
from tests.conftest import state_hash
from tests.engine.quantization.tiny_cnn import images, plain_cnn, tiny_cnn


@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("reduce_range", [False, True])
def test_int8_weight_is_what_onnx_runtime_writes(per_channel, reduce_range):
    model = plain_cnn()
    x = np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32)
    runtime = sl.Int8Static(per_channel=per_channel, reduce_range=reduce_range)
    c = sl.compress(model, sl.Recipe(runtime=runtime, transforms=()), example_inputs=x[:1], calibration_data=x)
    graph = onnx.load_from_string(c.onnx_bytes).graph
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    weights = dict(model.named_parameters())
    checked = 0
    for node in graph.node:
        codes = values.get(node.input[0])
        if node.op_type != "DequantizeLinear" or codes is None or codes.dtype != np.int8:
            continue
        scale = values[node.input[1]].astype(np.float32)
        ort = codes.astype(np.float32) * (scale.reshape((-1,) + (1,) * (codes.ndim - 1)) if scale.ndim else scale)
        ours = int8_weight(weights[node.input[0].removesuffix("_quantized")], qmax=64 if reduce_range else 127,
                           per_channel=per_channel)
        np.testing.assert_array_equal(ours.numpy(), ort)  # bit for bit
        assert np.abs(codes).max() == (64 if reduce_range else 127)  # ONNX Runtime's reduced range is [-64, 64]
        checked += 1
    assert checked == 3


def _int8_mean_shift(layer: nn.Conv2d, original: nn.Conv2d, x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Per channel: mean of (layer with int8 weights and inputs) minus (the original float layer), over x."""
    with torch.no_grad():
        quantized = nn.functional.conv2d(_fake_activation(x, low, high), int8_weight(layer.weight, qmax=64), layer.bias,
                                         padding=1, groups=layer.groups)
        return (quantized - original(x)).mean((0, 2, 3))


def test_bias_correction_removes_the_mean_shift_of_an_int8_depthwise_layer_on_new_data():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16)).eval()  # 9 weights a channel
    original = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16)).eval()
    original.load_state_dict(model.state_dict())
    g = torch.Generator().manual_seed(1)
    calibration = torch.randn(64, 16, 12, 12, generator=g).abs() + 0.5  # after a ReLU: not centred
    fresh = torch.randn(64, 16, 12, 12, generator=g).abs() + 0.5
    low, high = float(calibration.min()), float(calibration.max())
    before = _int8_mean_shift(model[0], original[0], fresh, low, high).abs().mean()
    result = correct_bias_(model, Inputs.of(calibration.numpy()), qmax=64)
    after = _int8_mean_shift(model[0], original[0], fresh, low, high).abs().mean()
    assert result.corrected == {"0": "0"} and result.samples == 32
    assert after < 0.25 * before, (float(after), float(before))


def _relative_error(onnx_bytes: bytes, x: np.ndarray, reference: np.ndarray) -> float:
    session = make_session(onnx_bytes)
    out = session.run(None, {session.get_inputs()[0].name: x})[0]
    return float(((out - reference) ** 2).mean() / (reference**2).mean())


def test_bias_correction_lowers_static_int8_error_in_onnx_runtime_and_leaves_the_callers_model():
    model = tiny_cnn(seed=0)
    before = state_hash(model)
    calibration, x = images(64, seed=1).numpy(), images(128, seed=2).numpy()
    with torch.no_grad():
        reference = model(torch.from_numpy(x)).numpy()
    runtime = sl.Int8Static(reduce_range=True)  # what an AVX2-only CPU runs; the same choice on a VNNI CPU
    errors, records = {}, {}
    for name, steps in (("plain", ()), ("bc", (sl.BiasCorrection(),)), ("both", (sl.Equalization(), sl.BiasCorrection()))):
        c = sl.compress(model, sl.Recipe(runtime=runtime, transforms=steps), example_inputs=x[:1], calibration_data=calibration)
        errors[name], records[name] = _relative_error(c.onnx_bytes, x, reference), c.details["transforms"]
    assert errors["bc"] < 0.5 * errors["plain"], errors  # measured 0.29x
    assert errors["both"] < 0.5 * errors["plain"], errors
    step = records["bc"]["applied"][0]
    assert step["step"] == "biascorr" and step["layers"] == 6 and step["batchnorms_folded"] == 5
    assert step["largest_shift"][1] > 0 and step["samples"] == 32
    assert state_hash(model) == before


def test_layers_kept_float_are_neither_rounded_nor_corrected():
    model = tiny_cnn(seed=0)
    result = correct_bias_(model, Inputs.of(images(16, seed=1).numpy()), keep_float=("block",))
    assert set(result.corrected) == {"stem", "head", "fc"}
    assert result.skipped["kept float"] == ["block.expand", "block.dw", "block.project"]
    recipe = sl.Recipe(runtime=sl.Int8Static(), layers=(sl.LayerSetting(name="block.dw", bits=32),),
                       transforms=(sl.BiasCorrection(),))
    x = images(16, seed=1).numpy()
    c = sl.compress(tiny_cnn(seed=0), recipe, example_inputs=x[:1], calibration_data=x)
    assert c.details["transforms"]["applied"][0]["left_alone"] == {"kept float": 1}


class _IgnoresBias(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(x, self.weight, None, self.stride, self.padding)


def test_a_plain_layer_gets_a_bias_and_one_that_adds_none_is_left_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.ReLU(), _IgnoresBias(4, 4, 1), nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()
    result = correct_bias_(model, Inputs.of(torch.randn(8, 3, 6, 6).numpy()))
    assert result.corrected == {"0": "0", "4": "4"}
    assert result.skipped == {"no bias the layer adds (a custom forward)": ["2"]}
    assert isinstance(model[0].bias, nn.Parameter) and model[0].bias.abs().sum() > 0


def test_a_cnn_under_static_int8_gets_bias_correction_by_default_and_says_why():
    cnn = tiny_cnn()
    steps, why = default_transforms(cnn, sl.Int8Static(), has_calibration=True)
    assert steps == (sl.BiasCorrection(),) and "EfficientNet-Lite0" in why and "equalisation" in why
    assert default_transforms(cnn, sl.Int8Dynamic(), has_calibration=True)[0] == ()  # dynamic int8 leaves convolutions float
    x = images(8, seed=1).numpy()
    c = sl.compress(cnn, sl.Recipe(runtime=sl.Int8Static()), example_inputs=x[:1], calibration_data=x)
    assert [step["step"] for step in c.details["transforms"]["applied"]] == ["biascorr"]
