"""Measure one recipe on one model and data set, through the on-disk cache.

``Evaluator`` is what ``sweep``, ``layer_sensitivity``, ``search`` and the
JupyterLab explorer share: it fixes the model, the data and the measurement
settings, fingerprints them once, and then answers ``cached(recipe)`` (no
work: a dict or None) and ``evaluate(recipe)`` (compress, measure, store).

The work itself is a plain function of plain data (``PointTask`` ->
``run_point``), so any ``concurrent.futures.Executor`` can run it: a process
pool, or Dask's ``Client.get_executor()``. Workers never touch the cache: the
caller stores each result as it arrives, so a cluster needs no shared disk
and an interrupted sweep keeps every finished point.

A row holds the recipe, the measured ``Metrics`` and, for every recipe but
the baseline, ``speedup``: the median of per-round latency ratios baseline /
candidate, both timed in the same interleaved rounds in the same process,
with ``speedup_low`` / ``speedup_high``, the 95% interval of that median
(``stats.ratio_interval``).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from squeezelab.engine._copy import copy_model
from squeezelab.engine.cache import (
    ResultCache,
    callable_fingerprint,
    data_fingerprint,
    fingerprint,
    model_fingerprint,
    runtime_fingerprint,
)
from squeezelab.engine.compressed import check_model
from squeezelab.engine.data import iter_batches
from squeezelab.engine.errors import DataError
from squeezelab.engine.metrics import Metric, check_settings, top1_accuracy
from squeezelab.engine.recipe import Int8Static, Recipe
from squeezelab.engine.stats import paired_drop_interval, ratio_interval

__all__ = ["Evaluator", "PointTask", "run_point", "materialize", "recipe_of", "correct_of", "paired_drop_bound"]


def materialize(data: Any, what: str = "data") -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` numpy arrays from arrays, a Dataset or a DataLoader (so work can be pickled and hashed)."""
    xs, ys = [], []
    for x, y in iter_batches(data, 4096):
        xs.append(np.asarray(x))
        ys.append(np.asarray(y))
    if not xs or sum(len(x) for x in xs) == 0:
        raise DataError(f"{what} is empty; pass (x, y) arrays with at least one sample.")
    return np.concatenate(xs), np.concatenate(ys)


@dataclass(frozen=True)
class PointTask:
    """Everything one measurement needs, as picklable data."""

    model: nn.Module
    recipe: Recipe
    data: tuple[np.ndarray, np.ndarray]
    calibration: np.ndarray | None
    metric: Metric
    latency_batch_size: int
    latency_repeats: int
    threads: int | None
    worker_threads: int | None = None  # PyTorch threads while measuring (1 in a pool of processes)


# One baseline export per process and model: every point of a sweep is timed against it.
_BASELINES: dict[str, Any] = {}
_BASELINES_LOCK = threading.Lock()


def _baseline(task: PointTask, key: str) -> Any:
    from squeezelab.engine.compressed import compress

    with _BASELINES_LOCK:
        if key not in _BASELINES:
            _BASELINES.clear()  # one model at a time is plenty; a sweep never alternates
            _BASELINES[key] = compress(task.model, Recipe(), example_inputs=task.data[0][:1])
        return _BASELINES[key]


def run_point(task: PointTask, baseline_key: str | None = None) -> dict[str, Any]:
    """Compress ``task.model`` with ``task.recipe`` and measure it: one row of plain data.

    ``baseline_key`` names the model for the per-process baseline export (default: its fingerprint).
    """
    from squeezelab.engine.latency import torch_threads

    with torch_threads(task.worker_threads):
        return _run_point(task, baseline_key or model_fingerprint(task.model))


def _run_point(task: PointTask, baseline_key: str) -> dict[str, Any]:
    from squeezelab.engine.compressed import compress
    from squeezelab.engine.metrics import evaluate, metrics_of, predictions, time_together, top1_correct

    started = time.perf_counter()
    c = compress(task.model, task.recipe, example_inputs=task.data[0][:1], calibration_data=task.calibration)
    correct = None
    if task.metric is top1_accuracy:  # keep per-sample outcomes: paired statistics need them
        p, t = predictions(c, task.data)
        hits = top1_correct(p, t)
        accuracy, n, correct = float(np.mean(hits)), len(t), np.packbits(hits).tobytes().hex()
    else:
        accuracy, n = evaluate(c, task.data, task.metric)
    samples: list[float] = [float("nan")]
    speed = None
    if task.latency_repeats:
        is_baseline = task.recipe == Recipe()
        targets = [c] if is_baseline else [_baseline(task, baseline_key), c]
        timed = time_together(
            targets,
            batch_size=task.latency_batch_size,
            data=task.data,
            repeats=task.latency_repeats,
            warmup=3,
            threads=task.threads,
        )
        samples = timed[-1]
        if not is_baseline:
            speed = ratio_interval(timed[0], timed[1])
    m = metrics_of(
        c,
        accuracy=accuracy,
        metric=task.metric,
        n_samples=n,
        samples=samples,
        batch_size=task.latency_batch_size,
        threads=task.threads,
    )
    row = m.to_dict()
    row["weight_sparsity"] = row.pop("sparsity")
    row.update(
        recipe=json.dumps(task.recipe.to_dict(), sort_keys=True),
        speedup=None if speed is None else speed.median,
        speedup_low=None if speed is None else speed.low,
        speedup_high=None if speed is None else speed.high,
        correct=correct,
        seconds=round(time.perf_counter() - started, 4),
    )
    if not task.latency_repeats:
        row["latency_ms"] = None
    return row


class Evaluator:
    """Measures recipes of one model on one data set, reusing results from ``cache``.

    Args:
        model: the PyTorch model (never changed).
        data: ``(x, y)`` evaluation data (arrays, a Dataset or a DataLoader).
        calibration_data: inputs for ``Int8Static`` calibration (default: the first 256 of ``data``).
        metric: ``metric(predictions, targets) -> float``, higher is better.
        latency_batch_size, latency_repeats, threads: latency settings;
            ``latency_repeats=0`` skips timing (accuracy and size only).
        cache: True (``~/.cache/squeezelab``), False, a folder, or a ``ResultCache``.
    """

    def __init__(
        self,
        model: nn.Module,
        data: Any,
        *,
        calibration_data: Any = None,
        metric: Metric = top1_accuracy,
        latency_batch_size: int = 1,
        latency_repeats: int = 20,
        threads: int | None = 1,
        cache: Any = True,
    ) -> None:
        check_model(model)
        if isinstance(latency_repeats, bool) or not isinstance(latency_repeats, int) or latency_repeats < 0:
            raise DataError(f"latency_repeats={latency_repeats!r} must be a non-negative integer (0 skips timing).")
        check_settings(batch_size=latency_batch_size, repeats=max(latency_repeats, 1), warmup=0, threads=threads)
        self.cache = ResultCache.of(cache)
        self.cache.check_writable()  # an unwritable or full folder fails now, not after the first point
        # A private copy: results are cached under these weights, so they must not change later
        # (a notebook that trains the model further would otherwise poison the cache).
        self.model = copy_model(model).eval()
        self.data = materialize(data)
        if metric is top1_accuracy:
            check_labels_early(self.model, self.data)
        if calibration_data is None:
            self.calibration = self.data[0][:256]
        else:
            from squeezelab.engine.data import iter_inputs

            self.calibration = np.concatenate([np.asarray(b) for b in iter_inputs(calibration_data)])
        self.metric = metric
        self.latency_batch_size = latency_batch_size
        self.latency_repeats = latency_repeats
        self.threads = threads
        self.worker_threads: int | None = None
        self.model_key = model_fingerprint(self.model)
        self._inputs_key = fingerprint(
            self.model_key, data_fingerprint(self.data), callable_fingerprint(metric), runtime_fingerprint()
        )
        # Only static int8 reads the calibration data: other recipes share entries whatever it is.
        self._calibration_key = fingerprint(self.calibration)
        self._context = self._make_context()

    def _make_context(self) -> str:
        return fingerprint(self._inputs_key, self.latency_batch_size, self.latency_repeats, self.threads)

    def key(self, recipe: Recipe) -> str:
        """The cache key of ``recipe`` under this evaluator's model, data and settings."""
        calibration = self._calibration_key if isinstance(recipe.runtime, Int8Static) else None
        return fingerprint(self._context, recipe.to_dict(), calibration)

    def task(self, recipe: Recipe) -> PointTask:
        return PointTask(
            model=self.model,
            recipe=recipe,
            data=self.data,
            calibration=self.calibration,
            metric=self.metric,
            latency_batch_size=self.latency_batch_size,
            latency_repeats=self.latency_repeats,
            threads=self.threads,
            worker_threads=self.worker_threads,
        )

    def cached(self, recipe: Recipe) -> dict[str, Any] | None:
        """The stored row of ``recipe`` (marked ``cached=True``), or None; never computes."""
        row = self.cache.get(self.key(recipe))
        return None if row is None else {"sparsity": asked_sparsity(recipe), **row, "cached": True}

    def store(self, recipe: Recipe, row: dict[str, Any]) -> dict[str, Any]:
        row = {k: v for k, v in row.items() if k != "cached"}
        self.cache.put(self.key(recipe), row)
        return {"sparsity": asked_sparsity(recipe), **row, "cached": False}

    def evaluate(self, recipe: Recipe) -> dict[str, Any]:
        """The row of ``recipe``: from the cache, or measured now and stored."""
        row = self.cached(recipe)
        if row is not None:
            return row
        return self.store(recipe, run_point(self.task(recipe), self.model_key))

    def with_settings(self, **changes: Any) -> Evaluator:
        """A copy with other measurement settings (same model, data and cache), e.g. ``latency_repeats=0``."""
        other = object.__new__(Evaluator)
        other.__dict__.update(self.__dict__)
        for name, value in changes.items():
            if name not in ("latency_batch_size", "latency_repeats", "threads"):
                raise TypeError(f"with_settings() got an unexpected setting {name!r}")
            setattr(other, name, value)
        other._context = other._make_context()  # equal settings, equal keys, however they were reached
        return other


def check_labels_early(model: nn.Module, data: tuple[np.ndarray, np.ndarray]) -> None:
    """Top-1 labels against the model's number of outputs, once, before any point is compressed.

    The same check runs wherever top-1 is computed (``top1_correct``); here it spares a sweep
    from failing once per point. A model that fails on the first sample is left to ``compress``
    to explain.
    """
    import torch

    from squeezelab.engine.labels import as_class_indices

    x, y = data
    labels = y[:, 0] if y.ndim == 2 and y.shape[1] == 1 else y
    first = np.ascontiguousarray(x[:1], dtype=np.float32 if np.issubdtype(x.dtype, np.floating) else x.dtype)
    try:
        with torch.no_grad():
            out = model(torch.from_numpy(first))
    except Exception:  # noqa: BLE001 - compress() names what the model expected
        return
    if isinstance(out, torch.Tensor) and out.ndim == 2 and labels.ndim == 1:
        as_class_indices(labels, int(out.shape[1]), what="top-1 accuracy")


def asked_sparsity(recipe: Recipe) -> float:
    """The pruning amount a recipe asks for (fraction of weights or channels; N:M as 1 - n/m)."""
    from squeezelab.engine.recipe import ChannelPruning, MagnitudePruning, NMPruning

    p = recipe.pruning
    if isinstance(p, MagnitudePruning):
        return float(p.sparsity)
    if isinstance(p, ChannelPruning):
        return float(p.ratio)
    if isinstance(p, NMPruning):
        return 1.0 - p.n / p.m
    return 0.0


def correct_of(row: dict[str, Any]) -> np.ndarray | None:
    """Per-sample top-1 outcomes (bool array) stored in a row, or None for other metrics."""
    if not row.get("correct"):
        return None
    bits = np.unpackbits(np.frombuffer(bytes.fromhex(row["correct"]), dtype=np.uint8))
    return bits[: row["n_samples"]].astype(bool)


def paired_drop_bound(baseline: dict[str, Any], row: dict[str, Any], confidence: float) -> float:
    """One-sided *upper* confidence bound of the accuracy drop of ``row`` vs ``baseline``, paired by sample.

    The true drop exceeds it with probability at most ``1 - confidence``
    (``stats.paired_drop_interval(..., sided="upper")``: exact on the discordant samples).
    ``confidence=0`` (or a metric without per-sample outcomes) gives the plain drop.
    """
    drop = baseline["accuracy"] - row["accuracy"]
    a, b = correct_of(baseline), correct_of(row)
    if confidence <= 0 or a is None or b is None or len(a) != len(b):
        return float(drop)
    return paired_drop_interval(a, b, confidence, sided="upper").high


def recipe_of(row: dict[str, Any]) -> Recipe:
    """The ``Recipe`` a row was measured with."""
    return Recipe.from_dict(json.loads(row["recipe"]))
