"""A seeded depthwise CNN whose channels span a wide range, for the equalisation and bias-correction tests.

stem (3x3) -> BN -> act -> [expand 1x1 -> BN -> act -> depthwise 3x3 -> BN -> act -> project 1x1 -> BN] + residual
-> head 1x1 -> BN -> act -> global pool -> flatten -> Linear. BatchNorm gains are drawn over ~150x, so
folded weights and activations differ widely from channel to channel, as in trained MobileNets.
"""

from __future__ import annotations

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, channels: int, hidden: int, act: type[nn.Module]) -> None:
        super().__init__()
        self.expand = nn.Conv2d(channels, hidden, 1, bias=False)
        self.bn0 = nn.BatchNorm2d(hidden)
        self.act0 = act()
        self.dw = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.act1 = act()
        self.project = nn.Conv2d(hidden, channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.bn1(self.dw(self.act0(self.bn0(self.expand(x))))))
        return x + self.bn2(self.project(y))  # the block input is read twice: never rescaled


class TinyCNN(nn.Module):
    def __init__(self, act: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.act = act()
        self.block = Block(8, 32, act)
        self.head = nn.Conv2d(8, 32, 1)
        self.bn_head = nn.BatchNorm2d(32)
        self.act_head = act()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(self.act(self.bn(self.stem(x))))
        y = self.act_head(self.bn_head(self.head(y)))
        return self.fc(torch.flatten(self.pool(y), 1))  # (B, 10)


def tiny_cnn(act: type[nn.Module] = nn.ReLU, seed: int = 0) -> TinyCNN:
    torch.manual_seed(seed)
    model = TinyCNN(act)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, nn.BatchNorm2d):
                c = bn.num_features
                bn.weight.copy_(torch.exp(torch.empty(c).uniform_(-2.5, 2.5, generator=g)))  # gains over ~150x
                bn.bias.copy_(torch.empty(c).uniform_(-0.5, 0.5, generator=g) * bn.weight)
                bn.running_mean.uniform_(-0.2, 0.2, generator=g)
                bn.running_var.uniform_(0.5, 2.0, generator=g)
    return model.eval()


def images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))  # (n, 3, 16, 16)


def plain_cnn() -> nn.Module:
    """A seeded conv -> depthwise conv -> Linear model with no BatchNorm, so the weights ONNX Runtime rounds (and the
    exported initializers, found by name) are these very weights; the stem's channel ranges span 1000x."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(),
                          nn.Flatten(), nn.Linear(8 * 8 * 8, 5))
    with torch.no_grad():
        model[0].weight.mul_(torch.logspace(-2, 1, 8).view(-1, 1, 1, 1))  # channel ranges over 1000x
    return model.eval()
