"""The built-in default models: small networks for scikit-learn's digits, trained in seconds.

``default_model("cnn")`` returns a freshly trained ``DigitsCNN`` and the data
split it was trained on. Training is seeded inside ``torch.random.fork_rng``,
so it is repeatable and leaves the caller's global RNG state untouched; the
result is cached per process and every call returns its own copy.

``LeNet5`` is the classic Fashion-MNIST / MNIST shaped CNN used by the benchmarks.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from squeezelab.engine.core.copying import copy_model
from squeezelab.engine.core.data import Split, load_digits_split
from squeezelab.engine.measurement.latency import torch_threads
from squeezelab.engine.core.errors import ConfigError

__all__ = ["DigitsCNN", "DigitsMLP", "LeNet5", "train_classifier", "default_model"]


class DigitsCNN(nn.Module):
    """Two 3x3 convolutions and two linear layers for 8x8 digits. ~40k parameters."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),  # (B, 16, 8, 8)
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),  # (B, 32, 8, 8)
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, 32, 4, 4)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),  # (B, 512)
            nn.Linear(32 * 4 * 4, 64),
            nn.ReLU(),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class DigitsMLP(nn.Module):
    """64-128-64-10 perceptron for 8x8 digits (input (B, 1, 8, 8) or (B, 64))."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64, 128),
            nn.ReLU(),
            nn.Linear(128, 64),
            nn.ReLU(),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LeNet5(nn.Module):
    """LeNet-5 style CNN for 28x28 single-channel images (Fashion-MNIST)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2),  # (B, 6, 28, 28)
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, 6, 14, 14)
            nn.Conv2d(6, 16, 5),  # (B, 16, 10, 10)
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, 16, 5, 5)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def train_classifier(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
) -> nn.Module:
    """A trained copy of ``model`` (Adam, cross-entropy), repeatable for a given ``seed``.

    The global RNG state is forked and restored, so callers' randomness is unaffected.
    Training runs on one thread (restored afterwards): these models are too small to gain
    from more, and a second thread competing for a busy core slowed training 20x here.
    """
    model = copy_model(model)
    xt, yt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))
    with torch.random.fork_rng(devices=[]), torch_threads(1):
        torch.default_generator.manual_seed(seed)  # CPU only: leaves any CUDA RNG alone
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        loss_fn = nn.CrossEntropyLoss()
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(xt), generator=gen)
            for i in range(0, len(xt), batch_size):
                idx = order[i : i + batch_size]
                opt.zero_grad()
                loss_fn(model(xt[idx]), yt[idx]).backward()
                opt.step()
    return model.eval()


@functools.cache
def _trained(kind: str, seed: int) -> tuple[nn.Module, Split]:
    split = load_digits_split(seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # CPU only: leaves any CUDA RNG alone
        fresh = DigitsCNN() if kind == "cnn" else DigitsMLP()
    # 15 epochs reach 98% test accuracy for the CNN (97% for the MLP) in a few seconds.
    return train_classifier(fresh, split.x_train, split.y_train, epochs=15, seed=seed), split


def default_model(kind: str = "cnn", *, seed: int = 0) -> tuple[nn.Module, Split]:
    """The built-in default: a trained digits ``"cnn"`` or ``"mlp"`` and its train/test split.

    Examples:
        >>> model, split = default_model("mlp")
        >>> split.x_test.shape
        (450, 1, 8, 8)
    """
    if kind not in ("cnn", "mlp"):

        raise ConfigError(f"default_model: kind={kind!r}; use 'cnn' or 'mlp'.")
    model, split = _trained(kind, seed)
    return copy_model(model), split
