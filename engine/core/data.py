"""Turn the data forms users have into numpy batches, and load the bundled data sets.

Accepted evaluation data: ``(x, y)`` arrays or tensors, a ``torch`` Dataset
yielding ``(x, y)`` pairs, or any iterable of ``(x, y)`` batches (a
``DataLoader``). Calibration data: the same, or bare inputs ``x``.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from squeezelab.engine.core.errors import DataError

__all__ = [
    "Split",
    "as_numpy",
    "check_input_shapes",
    "expected_shape",
    "iter_batches",
    "iter_inputs",
    "load_digits_split",
    "load_fashion_mnist",
    "FASHION_MNIST_DIR",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def as_numpy(x: Any) -> np.ndarray:
    """A numpy view of a tensor or array (float tensors as float32)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.float() if x.is_floating_point() else x).numpy()
    return np.asarray(x)


def expected_shape(example: torch.Tensor) -> str:
    """The shape a model input must have, batch axis named: ``"(batch, 1, 8, 8)"``."""
    return "(" + ", ".join(["batch", *map(str, example.shape[1:])]) + ")"


def check_input_shapes(arrays: Sequence[np.ndarray], examples: Sequence[torch.Tensor]) -> None:
    """Raise ``DataError`` unless each array has its example input's rank and non-batch sizes.

    Only the batch axis (0) may differ: the ONNX export fixes every other axis, and the simulated
    model is held to the same contract so both kinds of result accept the same inputs. The one
    place that decides which axes are free (issue #11 will free sequence axes).
    """
    for i, (array, example) in enumerate(zip(arrays, examples)):
        if array.ndim == example.ndim and tuple(array.shape[1:]) == tuple(example.shape[1:]):
            continue
        which = f"input {i} " if len(examples) > 1 else "input "
        raise DataError(
            f"{which}of shape {tuple(array.shape)} does not fit the model, which takes {expected_shape(example)} "
            f"(the shape of example_inputs, any batch size); reshape the data to {expected_shape(example)}."
        )


def _is_pair_of_arrays(data: Any) -> bool:
    """``(x, y)``: two arrays of equal length, the labels of lower rank than the inputs.

    (Two input batches have the same rank, so they are not mistaken for a pair.)
    """
    return (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and all(isinstance(d, (np.ndarray, torch.Tensor)) for d in data)
        and data[1].ndim < data[0].ndim
    )


def _batches_of(data: Any, batch_size: int, accepted: str) -> Iterable[Any]:
    """An iterable of batches: a sized Dataset is wrapped in an unshuffled DataLoader."""
    if isinstance(data, torch.utils.data.Dataset) and hasattr(data, "__len__"):
        return torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False)
    if not isinstance(data, Iterable):
        raise DataError(f"cannot read data of type {type(data).__name__}; pass {accepted}.")
    return data


def iter_batches(data: Any, batch_size: int = 256) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(x, y)`` numpy batches from any accepted evaluation-data form."""
    if _is_pair_of_arrays(data):
        x, y = as_numpy(data[0]), as_numpy(data[1])
        if len(x) != len(y):
            raise DataError(f"x has {len(x)} samples but y has {len(y)}; pass (x, y) of equal length.")
        if len(x) == 0:
            raise DataError("the evaluation data is empty; pass at least one (x, y) sample.")
        for i in range(0, len(x), batch_size):
            yield x[i : i + batch_size], y[i : i + batch_size]
        return
    seen = 0
    for item in _batches_of(data, batch_size, "(x, y) arrays, a torch Dataset of (x, y) pairs or a DataLoader"):
        if not (isinstance(item, (tuple, list)) and len(item) >= 2):
            raise DataError(
                f"each batch must be an (x, y) pair, got {type(item).__name__}; "
                "for unlabelled data use data=None (size and latency only)."
            )
        x, y = as_numpy(item[0]), as_numpy(item[1])
        seen += len(x)
        yield x, y
    if seen == 0:
        raise DataError("the evaluation data is empty; pass at least one (x, y) sample.")


def iter_inputs(data: Any, batch_size: int = 64) -> Iterator[np.ndarray]:
    """Yield input batches (``x`` only).

    Accepts an array or tensor of inputs, ``(x, y)`` arrays, a list of input
    batches, a Dataset, or a DataLoader whose items are ``x``, ``(x,)`` or ``(x, y, ...)``.
    """
    if data is None:
        return
    if isinstance(data, (np.ndarray, torch.Tensor)):
        x = as_numpy(data)
        for i in range(0, len(x), batch_size):
            yield x[i : i + batch_size]
        return
    if _is_pair_of_arrays(data):
        yield from iter_inputs(data[0], batch_size)
        return
    for item in _batches_of(data, batch_size, "an array of inputs, (x, y) arrays, a list of batches, a Dataset or a DataLoader"):
        if isinstance(item, (tuple, list)) and item and isinstance(item[0], (np.ndarray, torch.Tensor)):
            item = item[0]  # (x,) or (x, y, ...): the inputs come first
        if not isinstance(item, (np.ndarray, torch.Tensor)):
            raise DataError(f"an input batch must be an array or tensor, got {type(item).__name__}.")
        yield as_numpy(item)


@dataclass(frozen=True)
class Split:
    """A train/test split of a labelled data set (float32 inputs, int64 labels)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def test(self) -> tuple[np.ndarray, np.ndarray]:
        return self.x_test, self.y_test

    @property
    def train(self) -> tuple[np.ndarray, np.ndarray]:
        return self.x_train, self.y_train


def load_digits_split(*, seed: int = 0, test_fraction: float = 0.25) -> Split:
    """scikit-learn's 8x8 digits (ships in the wheel), as (N, 1, 8, 8) floats in [0, 1].

    The split is stratified and deterministic for a given ``seed``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]  # (N, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    return Split(x_tr, y_tr, x_te, y_te)


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion_mnist(directory: str | Path = FASHION_MNIST_DIR) -> Split:
    """Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` as (N, 1, 28, 28) floats in [0, 1].

    Raises:
        DataError: the files are not there (install with ``apt-get install dataset-fashion-mnist``).
    """
    directory = Path(directory)
    names = {
        "x_train": "train-images-idx3-ubyte.gz",
        "y_train": "train-labels-idx1-ubyte.gz",
        "x_test": "t10k-images-idx3-ubyte.gz",
        "y_test": "t10k-labels-idx1-ubyte.gz",
    }
    missing = [n for n in names.values() if not (directory / n).is_file()]
    if missing:
        raise DataError(
            f"Fashion-MNIST files {missing} not found in {str(directory)!r}; install them with "
            "`apt-get install dataset-fashion-mnist` or pass the directory that holds them."
        )
    arrays = {k: _read_idx(directory / n) for k, n in names.items()}
    to_x = lambda a: (a.astype(np.float32) / 255.0)[:, None, :, :]  # noqa: E731
    return Split(
        to_x(arrays["x_train"]),
        arrays["y_train"].astype(np.int64),
        to_x(arrays["x_test"]),
        arrays["y_test"].astype(np.int64),
    )
