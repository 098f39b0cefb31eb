"""ResNet-18 and MobileNetV2 with torchvision's exact layouts and parameter names.

torchvision's wheels reachable here are CUDA builds that do not load with the CPU torch
(FIELD-NOTES, "Real models here"), so the two layouts live in the repository. Module and
parameter names follow torchvision (``conv1``, ``bn1``, ``layer1.0.conv1``, ``fc``;
``features.N.conv.M``, ``classifier.1``) so a torchvision state dict loads with
``model.load_state_dict(state_dict)``; initialisation follows torchvision too.

Two deliberate differences that change no weight and no output: activations are not in place
and the residual sum is ``out + identity`` (not ``+=``), because in-place ops get in the way of
tracing, parametrizations and fake quantization.

``small_input=True`` adapts the stem to 32x32 images (CIFAR-style) under the same names: a 3x3
stride-1 ``conv1`` and no max-pool for ResNet (``maxpool`` becomes ``nn.Identity``), a stride-1
first convolution for MobileNetV2.
"""

from __future__ import annotations

import torch
from torch import nn

from squeezelab.engine.core.errors import ConfigError

__all__ = ["ResNet", "BasicBlock", "resnet18", "MobileNetV2", "InvertedResidual", "mobilenet_v2"]


def _check_common(num_classes: int, in_channels: int) -> None:
    for name, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name}={value!r} is not allowed; pass a positive int, e.g. {name}=10.")


# ------------------------------------------------------------------------------------ ResNet


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (torchvision's ``BasicBlock``)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample  # None is not registered: no key, as in torchvision
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision's ``ResNet`` for ``BasicBlock`` stages (ResNet-18/34 layouts)."""

    def __init__(
        self,
        layers: tuple[int, int, int, int] = (2, 2, 2, 2),
        num_classes: int = 1000,
        in_channels: int = 3,
        small_input: bool = False,
    ) -> None:
        super().__init__()
        _check_common(num_classes, in_channels)
        self.inplanes = 64
        if small_input:  # 32x32 images: keep the resolution, as CIFAR ResNets do
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.Identity() if small_input else nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * BasicBlock.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H/4, W/4); H, W if small_input
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, 512, H/32, W/32)
        x = torch.flatten(self.avgpool(x), 1)  # (B, 512)
        return self.fc(x)


def resnet18(num_classes: int = 1000, in_channels: int = 3, small_input: bool = False) -> ResNet:
    """ResNet-18 with torchvision's layout: 11,689,512 parameters at ``num_classes=1000``.

    Args:
        num_classes: outputs of ``fc``.
        in_channels: input channels of ``conv1`` (1 for grayscale images).
        small_input: 3x3 stride-1 ``conv1`` and no max-pool, for 32x32 inputs.

    Example:
        >>> import torch
        >>> from squeezelab.engine.zoo import resnet18
        >>> resnet18(num_classes=10, small_input=True).eval()(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    return ResNet((2, 2, 2, 2), num_classes=num_classes, in_channels=in_channels, small_input=small_input)


# ------------------------------------------------------------------------------- MobileNetV2


def _make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's channel rounding: nearest multiple of ``divisor``, never more than 10% down."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _conv_bn_relu6(inp: int, oup: int, kernel_size: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """torchvision's ``Conv2dNormActivation``: keys ``0.weight`` (conv) and ``1.*`` (BatchNorm)."""
    return nn.Sequential(
        nn.Conv2d(inp, oup, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(oup),
        nn.ReLU6(),
    )


class InvertedResidual(nn.Module):
    """Expand (1x1), depthwise 3x3, project (1x1, linear); residual when shapes allow."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        self.stride = stride
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn_relu6(inp, hidden, kernel_size=1))
        layers += [
            _conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


# t (expansion), c (output channels), n (repeats), s (stride of the first repeat): torchvision's table.
_MOBILENET_V2_SETTING = [
    [1, 16, 1, 1],
    [6, 24, 2, 2],
    [6, 32, 3, 2],
    [6, 64, 4, 2],
    [6, 96, 3, 1],
    [6, 160, 3, 2],
    [6, 320, 1, 1],
]


class MobileNetV2(nn.Module):
    """torchvision's ``MobileNetV2``: ``features`` (19 stages) and ``classifier`` (dropout, linear)."""

    def __init__(
        self, num_classes: int = 1000, width_mult: float = 1.0, in_channels: int = 3, small_input: bool = False
    ) -> None:
        super().__init__()
        _check_common(num_classes, in_channels)
        if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or not width_mult > 0:
            raise ConfigError(f"width_mult={width_mult!r} is not allowed; pass a positive float, e.g. 1.0 or 0.5.")
        input_channel = _make_divisible(32 * width_mult)
        self.last_channel = _make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [_conv_bn_relu6(in_channels, input_channel, stride=1 if small_input else 2)]
        for t, c, n, s in _MOBILENET_V2_SETTING:
            output_channel = _make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(input_channel, output_channel, s if i == 0 else 1, t))
                input_channel = output_channel
        features.append(_conv_bn_relu6(input_channel, self.last_channel, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(self.last_channel, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, last_channel, H/32, W/32); H/16, W/16 if small_input
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, (1, 1)), 1)  # (B, last_channel)
        return self.classifier(x)


def mobilenet_v2(
    num_classes: int = 1000, width_mult: float = 1.0, in_channels: int = 3, small_input: bool = False
) -> MobileNetV2:
    """MobileNetV2 with torchvision's layout: 3,504,872 parameters at the defaults.

    Args:
        num_classes: outputs of ``classifier.1``.
        width_mult: channel multiplier (channels rounded to multiples of 8, as torchvision does).
        in_channels: input channels of the first convolution.
        small_input: stride-1 first convolution, for 32x32 inputs.

    Example:
        >>> import torch
        >>> from squeezelab.engine.zoo import mobilenet_v2
        >>> mobilenet_v2(num_classes=10, small_input=True).eval()(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    return MobileNetV2(num_classes=num_classes, width_mult=width_mult, in_channels=in_channels, small_input=small_input)
