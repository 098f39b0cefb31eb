"""AdaRound: weights on ONNX Runtime's own grid (its codes are AdaRound's), less layer-output error than
round-to-nearest on the calibration data, the caller's model untouched, bad input refused."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

import squeezelab as sl
from squeezelab.quantization import AdaRound
from squeezelab.engine.core.errors import CalibrationError, ConfigError, SqueezeError
from squeezelab.engine.core.inputs import Inputs
from squeezelab.engine.explore.algorithm_stage import transform_options
from squeezelab.engine.quantization.adaround import adaround_, grid_scale
from squeezelab.engine.quantization.bias_correction import int8_weight
from squeezelab.engine.quantization.layer_graph import fold_batchnorm_, trace
from tests.conftest import state_hash
from tests.engine.quantization.tiny_cnn import images, plain_cnn, tiny_cnn


def _onnx_weights(onnx_bytes: bytes) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each int8 weight ONNX Runtime wrote: parameter name -> (codes, scale)."""
    graph = onnx.load_from_string(onnx_bytes).graph
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    found = {}
    for node in graph.node:
        codes = values.get(node.input[0])
        if node.op_type == "DequantizeLinear" and codes is not None and codes.dtype == np.int8:
            found[node.input[0].removesuffix("_quantized")] = (codes, values[node.input[1]].astype(np.float32))
    return found


@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("reduce_range", [False, True])
def test_onnx_runtime_rounds_to_exactly_the_codes_adaround_chose(per_channel, reduce_range):
    model = plain_cnn()
    x = np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32)
    qmax = 64 if reduce_range else 127
    rounded = copy.deepcopy(model)
    relaxation = 0 if per_channel else 50  # the paper's relaxation before the descent: the same grid
    result = adaround_(rounded, Inputs.of(x), qmax=qmax, per_channel=per_channel, iterations=relaxation)
    assert result.rounded == ["0", "2"]
    assert list(result.skipped.values()) == [["5"]]  # 16 samples for 512 inputs: it would fit them, not the data
    assert any(f > 0 for f in result.flipped.values())  # it did choose differently from round-to-nearest somewhere
    runtime = sl.Int8Static(per_channel=per_channel, reduce_range=reduce_range)
    c = sl.compress(rounded, sl.Recipe(runtime=runtime, transforms=()), example_inputs=x[:1], calibration_data=x)
    written = _onnx_weights(c.onnx_bytes)
    assert sorted(written) == ["0.weight", "2.weight", "5.weight"]  # 5 stays round-to-nearest, on the same grid
    for name in result.rounded:
        codes, scale = written[f"{name}.weight"]
        weight = dict(rounded.named_modules())[name].weight.detach()
        np.testing.assert_array_equal(codes, result.codes[name].numpy())  # every choice reproduced
        np.testing.assert_array_equal(scale.reshape(-1), grid_scale(weight, qmax, per_channel).reshape(-1).numpy()
                                      if per_channel else grid_scale(weight, qmax, False).reshape(-1).numpy())
        ort = codes.astype(np.float32) * (scale.reshape((-1,) + (1,) * (codes.ndim - 1)) if scale.ndim else scale)
        np.testing.assert_array_equal(int8_weight(weight, qmax=qmax, per_channel=per_channel).numpy(), ort)
        # AdaRound's weights are ONNX Runtime's dequantized ones (a largest |w| may keep its own value to hold the scale)
        assert np.mean(weight.numpy() == ort) > 0.95
        np.testing.assert_allclose(weight.numpy(), ort, rtol=1e-6, atol=0)


@pytest.mark.parametrize("reduce_range", [False, True])
def test_compress_with_adaround_writes_its_weights_on_the_grid_and_composes_with_bias_correction(reduce_range):
    model = tiny_cnn()
    before = state_hash(model)
    x = images(32, seed=1).numpy()
    steps = (sl.BiasCorrection(), AdaRound())  # any order: AdaRound runs first
    recipe = sl.Recipe(runtime=sl.Int8Static(reduce_range=reduce_range), transforms=steps)
    assert sl.Recipe.from_dict(recipe.to_dict()) == recipe  # the step round-trips as plain data
    c = sl.compress(model, recipe, example_inputs=x[:1], calibration_data=x)
    assert state_hash(model) == before  # the caller's model is untouched
    applied = c.details["transforms"]["applied"]
    assert [step["step"] for step in applied] == ["adaround", "biascorr"]
    assert applied[0]["layers"] == 5 and applied[0]["error_vs_nearest"] < 1.0  # fc: too few samples
    qmax = 64 if reduce_range else 127
    for name, module in c.model.named_modules():
        if isinstance(module, nn.Conv2d):  # on the grid: ONNX Runtime's rounding changes nothing (fc: left alone)
            w = module.weight.detach()
            np.testing.assert_allclose(int8_weight(w, qmax=qmax).numpy(), w.numpy(), rtol=1e-6, atol=0, err_msg=name)
    out, reference = c.predict(x), model(torch.from_numpy(x)).detach().numpy()
    assert np.abs(out - reference).mean() < 0.1 * np.abs(reference).mean()  # still the model


def _folded(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """A copy with its BatchNorms folded: the float weights AdaRound (and ONNX Runtime) round."""
    work = copy.deepcopy(model)
    fold_batchnorm_(work, trace(work, Inputs.of(x.numpy())))
    return work


def test_layer_output_error_is_smaller_than_round_to_nearest_on_the_calibration_data():
    model = tiny_cnn()
    x = images(32, seed=2)
    rounded = copy.deepcopy(model)
    result = adaround_(rounded, Inputs.of(x.numpy()), quantized_inputs=False)
    reference = _folded(model, x)
    inputs = {}  # each layer's float input: AdaRound is judged layer by layer, as it optimises
    layers = {n: m for n, m in reference.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    hooks = [m.register_forward_pre_hook(lambda m, a, n=n: inputs.__setitem__(n, a[0])) for n, m in layers.items()]
    with torch.no_grad():
        reference(x)
    for hook in hooks:
        hook.remove()
    ours = nearest = 0.0
    for name in result.rounded:
        layer, w = layers[name], layers[name].weight.detach()
        ada = dict(rounded.named_modules())[name].weight.detach()
        run = (lambda weight, data: nn.functional.linear(data, weight)) if isinstance(layer, nn.Linear) else (
            lambda weight, data, layer=layer: nn.functional.conv2d(data, weight, None, layer.stride, layer.padding,
                                                                   layer.dilation, layer.groups))
        with torch.no_grad():
            exact = run(w, inputs[name])
            ours += float(((run(ada, inputs[name]) - exact) ** 2).sum())
            nearest += float(((run(int8_weight(w), inputs[name]) - exact) ** 2).sum())
    assert len(result.rounded) == 5
    assert ours < 0.7 * nearest, (ours, nearest)


def test_bad_input_is_refused_with_a_squeeze_error():
    with pytest.raises(ConfigError, match="relaxation"):
        AdaRound(relaxation=-1)
    with pytest.raises(ConfigError, match="qmax"):
        adaround_(plain_cnn(), Inputs.of(np.zeros((2, 3, 8, 8), np.float32)), qmax=200)
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    with pytest.raises(CalibrationError, match="calibration"):
        sl.compress(plain_cnn(), sl.Recipe(runtime=sl.Int8Static(), transforms=(AdaRound(),)), example_inputs=x[:1])
    with pytest.raises(SqueezeError, match="Int8Static"):
        sl.compress(plain_cnn(), sl.Recipe(runtime=sl.Int8Dynamic(), transforms=(AdaRound(),)),
                    example_inputs=x[:1], calibration_data=x)


def test_the_int8_search_tries_adaround_with_bias_correction_on_a_cnn_under_static_int8():
    options = transform_options(tiny_cnn(), sl.Int8Static(), has_calibration=True)
    assert (AdaRound(), sl.BiasCorrection()) in options and options[0] == (sl.BiasCorrection(),)  # default first
    assert (AdaRound(), sl.BiasCorrection()) not in transform_options(tiny_cnn(), sl.Int8Dynamic(), True)
