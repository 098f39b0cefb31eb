"""Class labels checked against a model's outputs, before they can give a silently wrong figure.

Top-1 accuracy compares the arg-max of ``(N, classes)`` outputs with class
indices. Labels outside ``[0, classes)`` or with a fractional part can never
match, so a wrong kind of target (regression values, one-based classes,
probabilities) would read as accuracy 0.0 for baseline and candidate alike,
and an accuracy-drop gate would pass ``0 - 0``. Cross-entropy training has the
same contract (``-100`` is even silently ignored by PyTorch). These checks are
one pass of min/max over the labels: cheap next to any model run.

Examples:
    >>> import numpy as np
    >>> as_class_indices(np.array([0.0, 2.0]), 3, what="top-1 accuracy")
    array([0, 2])
    >>> as_class_indices(np.array([0, 3]), 3, what="top-1 accuracy")
    Traceback (most recent call last):
    ...
    squeezelab.engine.core.errors.DataError: top-1 accuracy needs integer class indices in [0, 3) (the model has 3 outputs); the labels range from 0 to 3 (1 of 2 outside). Pass ...
"""

from __future__ import annotations

import numpy as np

from squeezelab.engine.core.errors import DataError

__all__ = ["as_class_indices"]


def _fix(what: str) -> str:
    if what.startswith("top-1"):
        return "Pass integer class indices in [0, classes), or pass metric= for regression or other targets."
    return "Pass integer class indices in [0, classes), or pass loss= for regression or other targets."


def as_class_indices(labels: np.ndarray, classes: int, *, what: str) -> np.ndarray:
    """``labels`` as integer class indices, after checking they are whole numbers in ``[0, classes)``.

    Integer-valued floats (``1.0``) are accepted as indices; booleans as 0/1.

    Args:
        labels: one label per sample, shape ``(N,)``.
        classes: the number of model outputs per sample.
        what: what needs the labels, for the message (``"top-1 accuracy"``, ``"cross-entropy"``).

    Raises:
        DataError: naming the labels found, the number of outputs and the fix.
    """
    labels = np.asarray(labels)
    if labels.size == 0:
        return labels.astype(np.int64)
    if labels.dtype == bool:
        labels = labels.astype(np.int64)
    if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)):
        raise DataError(
            f"{what} needs integer class indices in [0, {classes}) (the model has {classes} outputs); "
            f"the labels have dtype {labels.dtype}. {_fix(what)}"
        )
    if np.issubdtype(labels.dtype, np.floating):
        whole = np.isfinite(labels) & (labels == np.round(labels))
        if not whole.all():
            bad = labels[~whole]
            raise DataError(
                f"{what} needs integer class indices in [0, {classes}) (the model has {classes} outputs); "
                f"{bad.size} label(s) are not whole numbers (e.g. {bad[0].item()!r}). {_fix(what)}"
            )
    low, high = labels.min(), labels.max()
    if low < 0 or high >= classes:
        outside = int(((labels < 0) | (labels >= classes)).sum())
        raise DataError(
            f"{what} needs integer class indices in [0, {classes}) (the model has {classes} outputs); "
            f"the labels range from {_num(low)} to {_num(high)}"
            + (f" ({outside} of {labels.size} outside)" if outside < labels.size else "")
            + f". {_fix(what)}"
        )
    return labels.astype(np.int64, copy=False)


def _num(value: np.generic) -> str:
    """A label for messages: ``3``, not ``3.0`` or ``np.int64(3)``."""
    number = value.item()
    return str(int(number)) if float(number).is_integer() else repr(number)
