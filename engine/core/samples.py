"""Read the data forms users have — recognised by structure, never by guessing from ranks.

**Evaluation data** is ``(inputs, targets)``:

- a ``tuple`` ``(inputs, targets)``: inputs in any form ``Inputs.of`` reads (a tensor or
  array, a tuple of them, a dict of them), targets any array (class labels, regression
  values, reference embeddings) or ``None`` (no targets: metrics then compare with the
  uncompressed model's own outputs);
- a mapping of inputs, optionally with a ``"labels"`` key (a Hugging Face batch);
- a bare array or tensor: inputs without targets;
- an iterable of batches (a ``DataLoader``, a list of batches), each batch one of the
  forms above (a ``DataLoader`` over a ``TensorDataset`` yields ``[x, y]`` lists: pairs);
- a sized ``torch.utils.data.Dataset``, read through an unshuffled ``DataLoader``.

At the top level a ``tuple`` of two is one ``(inputs, targets)`` pair and a ``list`` is a
list of batches: ``(x, y)`` and ``[batch_1, batch_2]`` never mean the same thing.

**Calibration data** is inputs only, in the same forms; a pair's targets are ignored.
Where the model takes two positional inputs, ``(a, b)`` are those inputs (the model's
input spec decides, not the arrays' ranks).

Everything is read once into ``Samples``: all inputs as one ``Inputs`` batch and the
targets as one array (or ``None``), so a sweep can hash, pickle and slice it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from squeezelab.engine.core.errors import CalibrationError, DataError
from squeezelab.engine.core.inputs import Inputs, InputSpec, describe_form, is_array

__all__ = ["Samples", "read_samples", "read_inputs", "is_pair", "one_batch", "LABEL_KEYS"]

LABEL_KEYS = ("labels", "label")


@dataclass(frozen=True, eq=False)
class Samples:
    """Evaluation samples: every input as one batch, and the targets (``None``: compare with the baseline)."""

    inputs: Inputs
    targets: np.ndarray | None

    def __post_init__(self) -> None:
        if len(self.inputs) == 0:
            raise DataError("the evaluation data is empty; pass at least one sample.")
        if self.targets is not None and len(self.targets) != len(self.inputs):
            raise DataError(
                f"the data has {len(self.inputs)} input samples but {len(self.targets)} targets; pass "
                "(inputs, targets) of equal length, or targets=None to compare with the uncompressed model."
            )

    def __len__(self) -> int:
        return len(self.inputs)

    def slice(self, start: int, stop: int) -> Samples:
        return Samples(self.inputs.slice(start, stop), None if self.targets is None else self.targets[start:stop])

    def batches(self, batch_size: int) -> Iterator[Samples]:
        for i in range(0, len(self), batch_size):
            yield self.slice(i, i + batch_size)

    def form(self) -> str:
        targets = "no targets" if self.targets is None else f"targets {self.targets.shape} {self.targets.dtype}"
        return f"{len(self)} samples: {self.inputs.form()}; {targets}"


def _checked(inputs: Inputs, targets: np.ndarray | None, what: str) -> Samples:
    """``Samples`` whose float inputs and targets are finite (NaN/Inf: a ``DataError`` counting them)."""
    inputs.check_finite(what)
    if targets is not None and targets.dtype.kind == "f" and not np.isfinite(targets).all():
        bad = ~np.isfinite(targets.reshape(len(targets), -1)).all(axis=1)
        raise DataError(
            f"the targets of {what} hold NaN or Inf values in {int(bad.sum())} of {len(targets)} samples (the first: "
            f"sample {int(np.flatnonzero(bad)[0])}); scores against them mean nothing. Fix or drop those samples."
        )
    return Samples(inputs, targets)


def _targets(value: Any) -> np.ndarray | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        value = (value.float() if value.dtype in (torch.bfloat16, torch.float16) else value).numpy()
    array = np.asarray(value)
    if array.ndim == 0:
        raise DataError(f"targets must have one entry per sample; got a scalar {value!r}.")
    return array


def _is_input_form(x: Any) -> bool:
    return isinstance(x, Inputs) or is_array(x) or isinstance(x, Mapping) or (isinstance(x, (tuple, list)) and bool(x) and all(is_array(v) for v in x))


def is_pair(item: Any) -> bool:
    """``(inputs, targets)``: two items, an input form first, an array (or None) second."""
    return (
        isinstance(item, (tuple, list))
        and len(item) == 2
        and _is_input_form(item[0])
        and (item[1] is None or is_array(item[1]))
    )


def one_batch(item: Any, what: str) -> tuple[Inputs, np.ndarray | None]:
    if isinstance(item, Samples):
        return item.inputs, item.targets
    if isinstance(item, Mapping):
        labels = next((k for k in LABEL_KEYS if k in item), None)
        inputs = {k: v for k, v in item.items() if k != labels}
        return Inputs.of(inputs, what), _targets(item[labels]) if labels else None
    if is_pair(item):
        return Inputs.of(item[0], what), _targets(item[1])
    if is_array(item) or (isinstance(item, (tuple, list)) and len(item) == 1 and is_array(item[0])):
        return Inputs.of(item, what), None  # inputs without targets ((x,) from a DataLoader of one tensor)
    raise DataError(
        f"cannot read a batch of {what} of the form {describe_form(item)}; each batch must be (inputs, targets), "
        "a dict of inputs (optionally with 'labels'), or an input array."
    )


def _batches(data: Any, what: str) -> Iterable[Any]:
    if isinstance(data, torch.utils.data.Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
        return torch.utils.data.DataLoader(data, batch_size=256, shuffle=False)  # map-style: read in order
    if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise DataError(
            f"cannot read {what} of the form {describe_form(data)}; pass (inputs, targets), a dict of inputs, "
            "an input array, a Dataset or a DataLoader."
        )
    return data


def read_samples(data: Any, what: str = "the evaluation data") -> Samples:
    """All of ``data`` (any evaluation form, see the module docstring) as one ``Samples``."""
    if isinstance(data, Samples):
        return data
    if data is None:
        raise DataError(f"{what} is None; pass (inputs, targets), or (inputs, None) to compare with the uncompressed model.")
    if isinstance(data, tuple) and len(data) == 2 and is_pair(data) or isinstance(data, Mapping) or is_array(data):
        inputs, targets = one_batch(data, what)
        return _checked(inputs, targets, what)
    if isinstance(data, tuple):
        raise DataError(
            f"cannot read {what} of the form {describe_form(data)}: a tuple must be (inputs, targets). Several "
            "positional inputs go inside it: ((input_0, input_1), targets), or ((...), None) without targets."
        )
    parts, targets, has_targets = [], [], set()
    for item in _batches(data, what):
        inputs, t = one_batch(item, what)
        parts.append(inputs)
        has_targets.add(t is not None)
        targets.append(t)
    if not parts:
        raise DataError(f"{what} is empty; pass at least one sample.")
    if len(has_targets) > 1:
        raise DataError(f"some batches of {what} have targets and some do not; give every batch targets, or none.")
    joined = np.concatenate(targets) if True in has_targets else None
    return _checked(Inputs.concat(parts), joined, what)


def read_inputs(data: Any, spec: InputSpec | None = None, what: str = "calibration_data") -> Inputs:
    """Inputs only (calibration): any evaluation form, or bare inputs in the form ``spec`` describes."""
    if isinstance(data, Inputs):
        return data
    try:
        return _read_inputs(data, spec, what).check_finite(what)
    except DataError as exc:
        raise CalibrationError(str(exc)) from exc


def _read_inputs(data: Any, spec: InputSpec | None, what: str) -> Inputs:
    if spec is not None and spec.kind != "tensor" and isinstance(data, (tuple, list)) and len(data) == len(spec.names) and all(is_array(v) for v in data):
        return Inputs.of(tuple(data), what)  # the model's own positional inputs
    if isinstance(data, list) and data and all(is_array(v) for v in data) and (spec is None or spec.kind == "tensor"):
        return Inputs.concat([Inputs.of(v, what) for v in data])  # a list of input batches
    if isinstance(data, (tuple, list)) and data and not is_pair(data) and all(is_array(v) for v in data):
        return Inputs.of(tuple(data), what)
    return read_samples(data, what).inputs
