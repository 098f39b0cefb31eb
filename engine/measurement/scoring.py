"""Metrics as per-sample scores, higher is better.

A metric compares a model's outputs with a *reference* and returns one score
per sample; the figure shown is their mean, and the paired drop between a
baseline and a candidate, with its confidence interval, comes from the two
score vectors (``squeezelab.engine.measurement.stats``). Two kinds of reference:

- ``"targets"``: the data's targets — class labels (``top1_accuracy``),
  reference vectors (``cosine_similarity``), regression values (``negative_mse``);
- ``"baseline"``: the uncompressed model's own outputs on the same inputs —
  fidelity, the natural check when no labels are at hand (``top1_agreement``,
  ``cosine_to_baseline``, ``kl_to_baseline``).

Any callable ``metric(outputs, targets)`` is accepted too: returning an array
of one score per sample gives paired statistics; returning a scalar is still
accepted, without them. Wrap it in ``Metric(fn, name=..., reference="baseline")``
to compare with the baseline's outputs instead of targets.

Examples:
    >>> import numpy as np
    >>> top1_accuracy.scores(np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([1, 1])).tolist()
    [1.0, 0.0]
    >>> round(top1_accuracy(np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([1, 1])), 2)
    0.5
    >>> top1_accuracy.format_drop(0.0123), cosine_to_baseline.format_drop(0.0123)
    ('1.23 pp', '0.0123')
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from squeezelab.engine.core.errors import ConfigError, DataError
from squeezelab.engine.core.labels import as_class_indices

__all__ = [
    "Metric",
    "as_metric",
    "top1_accuracy",
    "cosine_similarity",
    "negative_mse",
    "top1_agreement",
    "cosine_to_baseline",
    "kl_to_baseline",
    "METRICS",
]

REFERENCES = ("targets", "baseline")


class Metric:
    """A per-sample score (higher is better) and how to show it.

    Args:
        fn: ``fn(outputs, reference) -> scores`` — one score per sample (shape ``(N,)``), or a
            scalar for a metric that has no per-sample form (no paired statistics then).
        name: the figure's name in tables, plots, reports and gate messages.
        key: the table column (default: ``name`` in snake case).
        reference: ``"targets"`` (the data's targets) or ``"baseline"`` (the uncompressed model's outputs).
        percent: show values in % and drops in percentage points (fractions such as accuracy).
    """

    def __init__(
        self,
        fn: Callable[[np.ndarray, np.ndarray], Any],
        *,
        name: str | None = None,
        key: str | None = None,
        reference: str = "targets",
        percent: bool = False,
    ) -> None:
        if not callable(fn):
            raise ConfigError(f"Metric needs a callable fn(outputs, reference); got {type(fn).__name__}.")
        if reference not in REFERENCES:
            raise ConfigError(f"Metric reference={reference!r}; use 'targets' or 'baseline'.")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        self.key = key or "_".join(self.name.lower().replace("-", " ").split())
        self.reference = reference
        self.percent = percent

    def scores(self, outputs: np.ndarray, reference: np.ndarray) -> np.ndarray | float:
        """Per-sample scores (float64, shape (N,)), or a float for a scalar-only metric."""
        values = self._numbers(self.fn(outputs, reference))
        if values.ndim == 0:
            if not np.isfinite(values):
                raise DataError(f"metric {self.name!r} returned {float(values)!r}; a metric must return finite numbers.")
            return float(values)
        if values.shape != (len(outputs),):
            raise DataError(
                f"metric {self.name!r} returned shape {values.shape} for {len(outputs)} samples; return one score "
                "per sample (shape (N,)) or a single number."
            )
        if not np.all(np.isfinite(values)):
            raise DataError(f"metric {self.name!r} returned NaN or Inf scores; a metric must return finite numbers.")
        return values

    def _numbers(self, raw: Any) -> np.ndarray:
        """``raw`` as float64, or a ``DataError`` naming what the metric returned instead of numbers."""
        dtype: Any = "object"
        try:
            array = np.asarray(raw)
            dtype = array.dtype
            if array.dtype.kind in "biufO":
                return array.astype(np.float64)
        except (TypeError, ValueError):  # ragged lists, objects that are not numbers
            pass
        first = (raw.tolist() if isinstance(raw, np.ndarray) else list(raw))[:3] if isinstance(raw, (list, tuple, np.ndarray)) else raw
        raise DataError(
            f"metric {self.name!r} returned {type(raw).__name__} of dtype {dtype} ({repr(first)[:80]}...), not numbers; "
            "a metric returns one float score per sample (shape (N,), higher is better) or a single float."
        )

    def __call__(self, outputs: np.ndarray, reference: np.ndarray) -> float:
        """The figure: the mean of the per-sample scores."""
        s = self.scores(outputs, reference)
        return float(np.mean(s)) if isinstance(s, np.ndarray) else s

    # -------------------------------------------------------------- showing

    def format_value(self, value: float | None) -> str:
        if value is None or value != value:
            return "n/a"
        return f"{100 * value:.2f} %" if self.percent else f"{value:.4f}"

    def format_drop(self, drop: float | None) -> str:
        if drop is None or drop != drop:
            return "n/a"
        return f"{100 * drop:.2f} pp" if self.percent else f"{drop:.4f}"

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "key": self.key, "reference": self.reference, "percent": self.percent}

    def __repr__(self) -> str:
        return f"Metric({self.name!r}, reference={self.reference!r})"


# ------------------------------------------------------------------ built-ins


def _flat(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).reshape(len(a), -1)


def _check_same_shape(outputs: np.ndarray, reference: np.ndarray, name: str) -> None:
    if _flat(outputs).shape != _flat(reference).shape:
        raise DataError(
            f"{name} compares outputs {tuple(np.shape(outputs))} with {tuple(np.shape(reference))}: they need the "
            "same shape per sample (did you pass class labels? use top1_accuracy)."
        )


def _top1_scores(outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    p = np.asarray(outputs)
    t = np.asarray(targets)
    if t.ndim == 2 and t.shape[1] == 1:
        t = t[:, 0]  # (N, 1) labels: a common shape for class indices
    if p.ndim != 2 or t.shape != (len(p),):
        raise DataError(
            f"top-1 accuracy needs (N, classes) outputs and (N,) class labels; got outputs {p.shape} and targets "
            f"{t.shape}. Pass metric= for other tasks (cosine_similarity, negative_mse, or without targets "
            "cosine_to_baseline)."
        )
    return (np.argmax(p, axis=1) == as_class_indices(t, p.shape[1], what="top-1 accuracy")).astype(np.float64)


def _cosine_scores(outputs: np.ndarray, reference: np.ndarray) -> np.ndarray:
    _check_same_shape(outputs, reference, "cosine similarity")
    a, b = _flat(outputs), _flat(reference)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.einsum("ij,ij->i", a, b)
    # Two zero vectors are identical (1.0); one zero vector is orthogonal to anything (0.0).
    both_zero = (np.linalg.norm(a, axis=1) == 0) & (np.linalg.norm(b, axis=1) == 0)
    return np.where(both_zero, 1.0, np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0))


def _neg_mse_scores(outputs: np.ndarray, reference: np.ndarray) -> np.ndarray:
    _check_same_shape(outputs, reference, "negative MSE")
    return -np.mean((_flat(outputs) - _flat(reference)) ** 2, axis=1)


def _agreement_scores(outputs: np.ndarray, reference: np.ndarray) -> np.ndarray:
    _check_same_shape(outputs, reference, "top-1 agreement")
    a, b = _flat(outputs), _flat(reference)
    return (np.argmax(a, axis=1) == np.argmax(b, axis=1)).astype(np.float64)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _neg_kl_scores(outputs: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``-KL(softmax(reference) || softmax(outputs))`` per sample: 0 for identical logits, lower is worse."""
    _check_same_shape(outputs, reference, "KL to the baseline")
    log_q, log_p = _log_softmax(_flat(outputs)), _log_softmax(_flat(reference))
    return -np.sum(np.exp(log_p) * (log_p - log_q), axis=1)


top1_accuracy = Metric(_top1_scores, name="top-1 accuracy", key="accuracy", percent=True)
cosine_similarity = Metric(_cosine_scores, name="cosine", key="cosine")
negative_mse = Metric(_neg_mse_scores, name="negative MSE", key="neg_mse")
top1_agreement = Metric(_agreement_scores, name="top-1 agreement", key="agreement", reference="baseline", percent=True)
cosine_to_baseline = Metric(_cosine_scores, name="cosine to fp32", key="cosine", reference="baseline")
kl_to_baseline = Metric(_neg_kl_scores, name="negative KL to fp32", key="neg_kl", reference="baseline")

# The string table for the edges (CLI, widgets); inside the engine metrics are objects.
METRICS: dict[str, Metric] = {
    "top1": top1_accuracy,
    "cosine": cosine_similarity,
    "neg_mse": negative_mse,
    "agreement": top1_agreement,
    "cosine_to_baseline": cosine_to_baseline,
    "kl_to_baseline": kl_to_baseline,
}


def as_metric(metric: Metric | Callable[..., Any] | None, *, has_targets: bool = True) -> Metric:
    """The ``Metric`` for a ``metric=`` argument; ``None`` picks the default for the data.

    With targets the default is ``top1_accuracy``; without targets it is
    ``cosine_to_baseline`` (fidelity to the uncompressed model works for any output).
    """
    if metric is None:
        chosen = top1_accuracy if has_targets else cosine_to_baseline
    elif isinstance(metric, Metric):
        chosen = metric
    elif isinstance(metric, str):  # the edge: one table turns a name into the metric object
        if metric not in METRICS:
            raise ConfigError(f"metric={metric!r}; use one of {', '.join(sorted(METRICS))}, a Metric or a callable.")
        chosen = METRICS[metric]
    elif callable(metric):
        chosen = Metric(metric)
    else:
        raise ConfigError(f"metric={metric!r}; pass a Metric or a callable metric(outputs, targets) -> scores.")
    if chosen.reference == "targets" and not has_targets:
        raise DataError(
            f"metric {chosen.name!r} compares with targets, and the data has none; pass (inputs, targets), or a "
            "fidelity metric that compares with the uncompressed model: top1_agreement, cosine_to_baseline, "
            "kl_to_baseline."
        )
    return chosen

