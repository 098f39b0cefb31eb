"""``measure(model_or_compressed, data) -> Metrics``: accuracy, size and latency, measured.

Baseline and candidate are measured the same way: a plain PyTorch model is
measured as its fp32 ONNX export (``compress(model, Recipe())``), so the
baseline runs in the same runtime as the int8 candidates it is compared with.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from squeezelab.engine.compressed import Compressed, compress
from squeezelab.engine.data import as_numpy, iter_batches
from squeezelab.engine.errors import DataError, ExampleInputError
from squeezelab.engine.labels import as_class_indices
from squeezelab.engine.latency import interleaved_latency, torch_threads
from squeezelab.engine.recipe import Recipe

__all__ = ["Metrics", "measure", "top1_accuracy", "latency_input"]

Metric = Callable[[np.ndarray, np.ndarray], float]


def top1_accuracy(predictions: np.ndarray, targets: np.ndarray) -> float:
    """Fraction of rows whose arg-max equals the target class."""
    return float(np.mean(top1_correct(predictions, targets)))


@dataclass(frozen=True, kw_only=True)
class Metrics:
    """Measured figures of one model. ``executable=False`` marks a simulation.

    ``quantized_weight_fraction``: the share of weight elements stored below 32 bits
    (``Compressed.quantized_weight_fraction``); ``None`` when not known (hand-made figures).
    """

    label: str
    accuracy: float | None
    metric: str
    n_samples: int
    size_bytes: int
    latency_ms: float
    latency_batch_size: int
    latency_repeats: int
    threads: int | None
    runtime: str
    sparsity: float
    bits: int
    executable: bool
    quantized_weight_fraction: float | None = None

    @property
    def kind(self) -> str:
        return "executable" if self.executable else "simulated"

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "kind": self.kind}


def latency_input(compressed: Compressed, batch_size: int, data: Any = None) -> Any:
    """A prepared batch of ``batch_size``: real samples from ``data`` when given, else tiled example inputs."""
    if data is not None:
        xs = []
        have = 0
        for x, _ in iter_batches(data, batch_size):
            xs.append(x)
            have += len(x)
            if have >= batch_size:
                break
        x = np.concatenate(xs)
        reps = -(-batch_size // len(x))  # ceil: cycle a small data set
        return compressed.prepare(np.concatenate([x] * reps)[:batch_size])
    tiled = [np.repeat(as_numpy(e)[:1], batch_size, axis=0) for e in compressed.example_inputs]
    return compressed.prepare(tiled[0] if len(tiled) == 1 else tuple(tiled))


def predictions(compressed: Compressed, data: Any, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Outputs over all of ``data`` and the targets, in order."""
    preds, targets = [], []
    for x, y in iter_batches(data, batch_size):
        preds.append(compressed.predict(x))
        targets.append(y)
    return np.concatenate(preds), np.concatenate(targets)


def top1_correct(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per-sample top-1 correctness (bool, shape (N,)), after checking the shapes."""
    if t.ndim == 2 and t.shape[1] == 1:
        t = t[:, 0]  # (N, 1) labels: a common shape for class indices
    if p.ndim != 2 or t.shape != (len(p),):
        raise DataError(
            f"top-1 accuracy needs (N, classes) outputs and (N,) class labels; got outputs "
            f"{p.shape} and labels {t.shape}. Pass metric= for other tasks."
        )
    # Labels that can never equal an arg-max would read as accuracy 0.0 on both sides of a comparison.
    return np.argmax(p, axis=1) == as_class_indices(t, p.shape[1], what="top-1 accuracy")


def evaluate(compressed: Compressed, data: Any, metric: Metric, batch_size: int = 256) -> tuple[float, int]:
    """The metric over all of ``data``, and the number of samples it covered."""
    p, t = predictions(compressed, data, batch_size)
    if metric is top1_accuracy:
        return float(np.mean(top1_correct(p, t))), len(t)
    return float(metric(p, t)), len(t)


def check_settings(*, batch_size: int, repeats: int, warmup: int, threads: int | None) -> None:
    """Raise ``DataError`` for measurement settings that cannot work."""
    settings = [("batch_size", batch_size), ("repeats", repeats)]
    if threads is not None:
        settings.append(("threads", threads))
    for name, value in settings:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DataError(f"{name}={value!r} must be a positive integer.")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise DataError(f"warmup={warmup!r} must be a non-negative integer.")


def as_compressed(target: nn.Module | Compressed, data: Any, example_inputs: Any) -> Compressed:
    """A ``Compressed`` result as is; a PyTorch model as its fp32 ONNX export."""
    if isinstance(target, Compressed):
        return target
    if example_inputs is None:
        if data is None:
            raise ExampleInputError("measuring a PyTorch model needs example_inputs or data to export it with.")
        example_inputs = next(iter_batches(data, 1))[0]
    return compress(target, Recipe(), example_inputs=example_inputs)


def time_together(
    targets: list[Compressed], *, batch_size: int, data: Any, repeats: int, warmup: int, threads: int | None
) -> list[list[float]]:
    """Latency samples (ms) of each target, all timed in the same interleaved rounds."""
    runners = {}
    for i, c in enumerate(targets):
        run, x = c.runner(threads=threads), latency_input(c, batch_size, data)
        runners[i] = lambda run=run, x=x: run(x)
    # ONNX Runtime sessions take their thread count from the session; PyTorch needs it set around the run.
    simulated = any(c.onnx_bytes is None for c in targets)
    with torch_threads(threads if simulated else None):
        samples = interleaved_latency(runners, rounds=repeats, warmup=warmup)
    return [samples[i] for i in range(len(targets))]


def metrics_of(
    c: Compressed,
    *,
    accuracy: float | None,
    metric: Metric,
    n_samples: int,
    samples: list[float],
    batch_size: int,
    threads: int | None,
) -> Metrics:
    return Metrics(
        label=c.recipe.label,
        accuracy=accuracy,
        metric=getattr(metric, "__name__", type(metric).__name__),
        n_samples=n_samples,
        size_bytes=c.size_bytes,
        latency_ms=statistics.median(samples),
        latency_batch_size=batch_size,
        latency_repeats=len(samples),
        threads=threads,
        runtime=c.runtime_name,
        sparsity=c.sparsity,
        bits=c.bits,
        executable=c.executable,
        quantized_weight_fraction=c.quantized_weight_fraction,
    )


def measure(
    target: nn.Module | Compressed,
    data: Any = None,
    *,
    metric: Metric = top1_accuracy,
    example_inputs: Any = None,
    batch_size: int = 1,
    repeats: int = 30,
    warmup: int = 5,
    threads: int | None = 1,
) -> Metrics:
    """Measure a model or a ``Compressed`` result.

    Args:
        target: a ``Compressed`` result, or a PyTorch model (measured as its fp32 ONNX export).
        data: ``(x, y)`` arrays, a Dataset or a DataLoader; ``None`` measures size and latency only.
        metric: ``metric(predictions, targets) -> float``; default top-1 accuracy.
        example_inputs: needed for a PyTorch model when ``data`` is None.
        batch_size: batch size of the latency measurement.
        repeats: timed runs; ``latency_ms`` is their median, after ``warmup`` untimed runs.
        threads: intra-op threads for timing (recorded in the result); None = the runtime's default.
    """
    check_settings(batch_size=batch_size, repeats=repeats, warmup=warmup, threads=threads)
    target = as_compressed(target, data, example_inputs)
    accuracy, n = (None, 0) if data is None else evaluate(target, data, metric)
    (samples,) = time_together(
        [target], batch_size=batch_size, data=data, repeats=repeats, warmup=warmup, threads=threads
    )
    return metrics_of(
        target, accuracy=accuracy, metric=metric, n_samples=n, samples=samples, batch_size=batch_size, threads=threads
    )
