"""Static int8 with layers kept float: the activations between float layers stay float too (no
Quantize/Dequantize pair between two float layers), while an int8 layer keeps its activation folded into
its quantized output. Oracle: the nodes of the quantized ONNX graph."""

from __future__ import annotations

import onnx
import pytest
import squeezelab as sl
import torch
from squeezelab.engine.explore.int8_probes import block_groups
from squeezelab.engine.runtime.int8_graph import float_neighbours, layer_nodes
from torch import nn


class _Chain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2, self.conv3 = nn.Conv2d(1, 8, 3), nn.Conv2d(8, 8, 3), nn.Conv2d(8, 8, 3)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = torch.relu(self.conv3(x))
        return self.fc(x.mean((2, 3)))


@pytest.fixture(scope="module")
def chain():
    torch.manual_seed(0)
    model = _Chain().eval()
    x = torch.randn(32, 1, 12, 12).numpy()
    return model, x, sl.compress(model, sl.Recipe(), example_inputs=x[:1]).onnx_bytes


def _quantized_tensors(onnx_bytes: bytes) -> set[str]:
    return {n.input[0] for n in onnx.load_from_string(onnx_bytes).graph.node if n.op_type == "QuantizeLinear"}


def _outputs(onnx_bytes: bytes, node_names: list[str]) -> set[str]:
    return {o for n in onnx.load_from_string(onnx_bytes).graph.node if n.name in node_names for o in n.output}


def test_activations_between_float_layers_stay_float(chain):
    model, x, export = chain
    float_layers = ["conv2", "conv3", "fc"]
    excluded = [n for nodes in layer_nodes(export, float_layers).values() for n in nodes]
    between = float_neighbours(export, excluded)
    assert between  # the ReLUs after conv2 and conv3, the mean: fed by float layers only
    recipe = sl.Recipe(runtime=sl.Int8Static(), layers=tuple(sl.LayerSetting(name=n, bits=32) for n in float_layers))
    c = sl.compress(export, recipe, example_inputs=x[:1], calibration_data=x)
    assert c.details["choices"]["nodes_float_between"] == len(between)
    quantized = _quantized_tensors(c.onnx_bytes)
    assert not quantized & _outputs(export, excluded + between)  # nothing after a float layer is quantized
    assert quantized  # conv1 is still int8: its input and output are quantized


def test_an_int8_layers_activation_stays_quantized_before_a_float_layer(chain):
    _, _, export = chain
    excluded = [n for nodes in layer_nodes(export, ["conv2"]).values() for n in nodes]
    between = float_neighbours(export, excluded)
    relus = [n.name for n in onnx.load_from_string(export).graph.node if n.op_type == "Relu"]
    assert relus[0] not in between  # conv1's ReLU is folded into conv1's quantized output
    assert relus[1] in between  # conv2's ReLU runs on conv2's float output


def test_nothing_is_added_when_no_layer_is_float(chain):
    assert float_neighbours(chain[2], []) == []


def test_static_int8_groups_layers_by_block(chain):
    from squeezelab.engine.zoo import mobilenet_v2, resnet18

    resnet = resnet18(10, small_input=True)
    names = [n for n, m in resnet.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    groups = block_groups(resnet, names)
    assert groups["layer2.0.downsample.0"] == ("layer2.0.conv1", "layer2.0.conv2", "layer2.0.downsample.0")
    assert groups["layer1.0.conv2"] == ("layer1.0.conv1", "layer1.0.conv2")
    assert "conv1" not in groups and "fc" not in groups  # a stem and a head are groups of their own
    mobile = mobilenet_v2(10)
    names = [n for n, m in mobile.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    # The block is the InvertedResidual, not the plain Sequential of its convolutions (which holds the same three).
    assert block_groups(mobile, names)["features.2.conv.1.0"] == ("features.2.conv.0.0", "features.2.conv.1.0", "features.2.conv.2")
    model = _Chain()
    assert block_groups(model, ["conv1", "conv2", "conv3", "fc"]) == {}  # top-level layers: no block
    plain = nn.Sequential(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3)), nn.Flatten(), nn.Linear(8, 2))
    assert block_groups(plain, ["0.0", "0.2", "2"]) == {}  # a plain Sequential is no block
