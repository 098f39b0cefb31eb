"""Real images for the zoo's vision models: Fashion-MNIST resized, channel-replicated and normalised.

Built on ``squeezelab.engine.core.data.load_fashion_mnist`` (the Debian package
``dataset-fashion-mnist``); nothing is downloaded. Resizing is bilinear
``torch.nn.functional.interpolate``; the first ``n`` images of the split are taken, so the
result is the same on every call and every machine.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from squeezelab.engine.core.data import Split, load_fashion_mnist
from squeezelab.engine.core.errors import ConfigError, DataError

__all__ = ["fashion_mnist_images", "IMAGENET_MEAN", "IMAGENET_STD", "NORMALIZATIONS"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# name -> (mean, std) applied to pixels in [0, 1]; None leaves them in [0, 1].
NORMALIZATIONS: dict[str | None, tuple[tuple[float, ...], tuple[float, ...]] | None] = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),  # torchvision's ImageNet models
    "efficientnet-lite": ((127 / 255,) * 3, (128 / 255,) * 3),  # TF EfficientNet-Lite: (pixel - 127) / 128
    None: None,
}
_CHUNK = 256  # images resized at once: bounds the temporary tensors to ~150 MB at 224 px
_SPLIT_SIZES = {"test": 10_000, "train": 60_000}  # checked before the slow load


@functools.lru_cache(maxsize=1)
def _fashion_mnist_uint8() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Both splits as read-only uint8 pixels (55 MB rather than 220 MB of float32), read once.

    Decompressing 70,000 images takes seconds. The pixels are exactly k / 255, so converting back
    below gives the very floats ``load_fashion_mnist`` returns. Never handed out: callers get copies.
    """
    split: Split = load_fashion_mnist()
    out = {}
    for name, x, y in (("train", split.x_train, split.y_train), ("test", split.x_test, split.y_test)):
        pixels = np.rint(x * 255.0).astype(np.uint8)
        pixels.setflags(write=False)
        y.setflags(write=False)
        out[name] = (pixels, y)
    return out


def _check(split: str, n: int, size: int, channels: int, normalize: str | None) -> None:
    if split not in _SPLIT_SIZES:
        raise ConfigError(f"split={split!r} is not allowed; pass 'train' or 'test'.")
    for name, value in (("n", n), ("size", size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name}={value!r} is not allowed; pass a positive int (e.g. n=256, size=224).")
    if n > _SPLIT_SIZES[split]:
        size_of = _SPLIT_SIZES[split]
        raise DataError(f"n={n} exceeds the {size_of:,} Fashion-MNIST {split} images; pass n <= {size_of}.")
    if channels not in (1, 3) or isinstance(channels, bool):
        raise ConfigError(f"channels={channels!r} is not allowed; pass 1 (grayscale) or 3 (replicated to RGB).")
    if normalize not in NORMALIZATIONS:
        allowed = ", ".join(repr(k) for k in NORMALIZATIONS)
        raise ConfigError(f"normalize={normalize!r} is not allowed; pass one of {allowed}.")
    if normalize is not None and channels != 3:
        raise ConfigError(f"normalize={normalize!r} uses per-RGB-channel statistics; pass channels=3 or normalize=None.")


def fashion_mnist_images(
    split: str = "test",
    n: int = 256,
    size: int = 224,
    channels: int = 3,
    normalize: str | None = "imagenet",
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` Fashion-MNIST images of ``split`` as a model-ready ``(x, y)`` pair.

    Args:
        split: ``"test"`` (10,000 images) or ``"train"`` (60,000).
        n: how many images, from the start of the split.
        size: output height and width (224 for ImageNet models, 32 for ``small_input`` layouts).
        channels: 3 replicates the gray channel to RGB; 1 keeps it.
        normalize: ``"imagenet"`` (torchvision mean/std), ``"efficientnet-lite"``
            (``(pixel - 127) / 128``, what the TF EfficientNet-Lite weights were trained on) or
            ``None`` (pixels in [0, 1]).

    Returns:
        ``x`` float32 (n, channels, size, size) and ``y`` int64 (n,) labels 0-9 (T-shirt/top,
        Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot).

    Raises:
        ConfigError: an argument outside what is allowed.
        DataError: ``n`` exceeds the split, or the Debian package is not installed.

    Example:
        >>> from squeezelab.engine.zoo import fashion_mnist_images
        >>> x, y = fashion_mnist_images(n=4, size=32)
        >>> x.shape, x.dtype, y.tolist()
        ((4, 3, 32, 32), dtype('float32'), [9, 2, 1, 1])
    """
    _check(split, n, size, channels, normalize)
    images, labels = _fashion_mnist_uint8()[split]
    stats = NORMALIZATIONS[normalize]
    out = np.empty((n, channels, size, size), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, n, _CHUNK):
            pixels = images[start : min(start + _CHUNK, n)]
            chunk = torch.from_numpy(pixels.astype(np.float32) / 255.0)  # (b, 1, 28, 28) in [0, 1], a copy
            if size != chunk.shape[-1]:
                chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", align_corners=False)
            chunk = chunk.expand(-1, channels, -1, -1)  # (b, channels, size, size)
            if stats is not None:
                mean = torch.tensor(stats[0]).view(1, 3, 1, 1)
                std = torch.tensor(stats[1]).view(1, 3, 1, 1)
                chunk = (chunk - mean) / std
            out[start : start + len(chunk)] = chunk.numpy()
    return out, np.array(labels[:n], dtype=np.int64)
