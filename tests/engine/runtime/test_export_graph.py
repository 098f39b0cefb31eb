"""The exported graph as ONNX Runtime's optimizer needs it: zero padding (EfficientNet-Lite's "same"
padding, ``F.pad``) folds into the convolution that follows, in fp32 and under static int8.

Oracles: the PyTorch model's outputs (explicit tolerance), and the graph ONNX Runtime itself writes
after its basic optimizations (``optimized_model_filepath``).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn
from torch.nn import functional as F

import squeezelab as sl
from squeezelab.engine.core.inputs import Inputs
from squeezelab.engine.runtime.export import export_onnx


class _SamePad(nn.Module):
    """``F.pad`` with fixed pads, as EfficientNet-Lite's "same" padding (``nn.ZeroPad2d`` exports differently)."""

    def __init__(self, pads: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.pads = pads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, self.pads)


def _padded_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        _SamePad((0, 1, 0, 1)), nn.Conv2d(3, 8, 3, stride=2), nn.ReLU6(),          # TF "same", stride 2: asymmetric
        _SamePad((1, 1, 1, 1)), nn.Conv2d(8, 8, 3, groups=8), nn.ReLU6(),          # depthwise
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    ).eval()


def _optimized_ops(onnx_bytes: bytes, tmp_path) -> Counter:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)


def test_zero_padding_exports_without_empty_inputs_and_folds_into_the_convolution(tmp_path):
    model, x = _padded_cnn(), torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    exported = export_onnx(model, Inputs.of(x[:1], "x"))
    graph = onnx.load_from_string(exported).graph
    pads = [n for n in graph.node if n.op_type == "Pad"]
    assert len(pads) == 2 and all("" not in n.input for n in graph.node)  # the exporter's empty constant_value is gone
    assert "Pad" not in _optimized_ops(exported, tmp_path)  # ONNX Runtime's PadFusion folded both
    session = ort.InferenceSession(exported, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-5, atol=1e-5)


def test_static_int8_quantizes_padded_convolutions_without_a_float_pad(tmp_path):
    model = _padded_cnn()
    x = torch.randn(32, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    c = sl.compress(model, sl.Recipe(runtime=sl.Int8Static()), example_inputs=x[:1], calibration_data=x)
    ops = Counter(n.op_type for n in onnx.load_from_string(c.onnx_bytes).graph.node)
    assert "Pad" not in ops and ops["Conv"] == 2  # both convolutions quantized, padding inside them
    assert ops["DequantizeLinear"] >= 2 and ops["QuantizeLinear"] >= 1
    with torch.no_grad():
        expected = model(x).numpy()
    got = c.predict(x.numpy())
    cosine = (got * expected).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))
    assert cosine.mean() > 0.99, cosine.mean()


def test_only_trailing_empty_inputs_are_dropped_and_a_clean_graph_is_returned_untouched():
    from onnx import TensorProto, helper

    from squeezelab.engine.runtime.export import _without_empty_trailing_inputs

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    nodes = [
        helper.make_node("Clip", ["x", "", "hi"], ["c"]),           # an empty input in the middle means "no min"
        helper.make_node("Pad", ["c", "pads", ""], ["p"]),          # a trailing one means nothing at all
        helper.make_node("Slice", ["p", "starts", "ends"], ["y"]),
    ]
    inits = [helper.make_tensor("hi", TensorProto.FLOAT, [], [0.5]), helper.make_tensor("pads", TensorProto.INT64, [4], [0] * 4),
             helper.make_tensor("starts", TensorProto.INT64, [1], [0]), helper.make_tensor("ends", TensorProto.INT64, [1], [3])]
    graph = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", 17)])
    original = graph.SerializeToString()
    tidy = onnx.load_from_string(_without_empty_trailing_inputs(original))
    assert [list(n.input) for n in tidy.graph.node] == [["x", "", "hi"], ["c", "pads"], ["p", "starts", "ends"]]
    feed = {"x": np.array([[-1.0, 0.25, 2.0]], np.float32)}
    run = lambda b: ort.InferenceSession(b, providers=["CPUExecutionProvider"]).run(None, feed)[0]
    np.testing.assert_array_equal(run(tidy.SerializeToString()), run(original))
    clean = tidy.SerializeToString()
    assert _without_empty_trailing_inputs(clean) is clean  # nothing to drop: the very bytes, not a re-serialisation
