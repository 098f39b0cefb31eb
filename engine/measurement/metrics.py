"""``measure(model_or_compressed, data) -> Point``: the metric, size and latency, measured.

Baseline and candidate are measured the same way: a plain PyTorch model (or
an ONNX file) is measured as its fp32 ONNX model (``compress(model,
Recipe())``), so the baseline runs in the same runtime as the int8 candidates
it is compared with. The pieces here (outputs over data, scores, latency
feeds, interleaved timing, building a ``Point``) are what ``measure_pair``
and the sweep's evaluator use too.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from torch import nn

from squeezelab.engine.pipeline.compressed import Compressed
from squeezelab.engine.pipeline.input_checks import check_output_rows
from squeezelab.engine.core.errors import ConfigError, DataError, ExampleInputError
from squeezelab.engine.measurement.latency import interleaved_latency, torch_threads
from squeezelab.engine.measurement.point import Point, Settings
from squeezelab.engine.measurement.timing import active_timer
from squeezelab.engine.core.recipe import Recipe
from squeezelab.engine.core.samples import Samples, read_samples
from squeezelab.engine.measurement.scoring import Metric, top1_accuracy
from squeezelab.engine.pipeline.compress import compress, compress_for_data
from squeezelab.engine.runtime.onnx_files import is_onnx_model

__all__ = ["Metrics", "measure", "top1_accuracy", "as_compressed", "settings_of", "setting_keywords", "outputs_of", "scores_of", "time_together", "point_of"]

Metrics = Point  # the measured figures of one model: one type everywhere (see engine.point)

# The older keyword names of settings, still accepted wherever settings are.
_ALIASES = {"latency_batch_size": "batch_size", "latency_repeats": "rounds", "repeats": "rounds"}


def settings_of(settings: Settings | None, overrides: dict[str, Any]) -> Settings:
    """``settings`` (default ``Settings()``) with keyword overrides such as ``metric=`` or ``rounds=``."""
    if settings is not None and not isinstance(settings, Settings):
        raise ConfigError(f"settings={settings!r}; pass a squeezelab Settings(...) or keyword settings.")
    base = settings or Settings()
    overrides = {_ALIASES.get(k, k): v for k, v in overrides.items()}
    unknown = sorted(set(overrides) - set(Settings.__dataclass_fields__))
    if unknown:
        raise ConfigError(f"unknown setting(s) {unknown}; settings are {sorted(Settings.__dataclass_fields__)}.")
    return base.replace(**overrides) if overrides else base


def setting_keywords() -> frozenset[str]:
    """Every keyword ``settings_of`` reads: ``Settings``' fields and the older spellings it still takes."""
    return frozenset(Settings.__dataclass_fields__) | frozenset(_ALIASES)


def as_compressed(target: Any, samples: Samples | None, example_inputs: Any, output: Any = None) -> Compressed:
    """A ``Compressed`` result as is; a PyTorch model or an ONNX file as its fp32 ONNX model."""
    if isinstance(target, Compressed):
        return target
    if not isinstance(target, nn.Module) and not is_onnx_model(target):
        raise ConfigError(f"cannot measure a {type(target).__name__}; pass a PyTorch model, an ONNX file or a Compressed result.")
    if example_inputs is None and samples is not None:
        example_inputs = samples.inputs.slice(0, 1)
    if example_inputs is None and isinstance(target, nn.Module):
        raise ExampleInputError("measuring a PyTorch model needs example_inputs or data to export it with.")
    if samples is not None:  # the data is checked before any work, and the export compared with PyTorch on it
        return compress_for_data(target, Recipe(), samples.inputs, "the evaluation data", example_inputs=example_inputs, output=output)
    return compress(target, Recipe(), example_inputs=example_inputs, output=output)


Progress = Callable[[str, float], None]  # progress(stage, fraction done): for a display, never for results


def outputs_of(c: Compressed, samples: Samples, batch_size: int = 256, progress: Progress | None = None) -> np.ndarray:
    """The selected output of ``c`` over every sample, in order (one row per sample, or a ``ModelError``)."""
    if progress is None:
        outputs = c.predict(samples.inputs, batch_size=batch_size)
    else:
        parts = []
        for start in range(0, len(samples), batch_size):
            parts.append(c.predict(samples.inputs.slice(start, start + batch_size)))
            progress("evaluating", min(start + batch_size, len(samples)) / len(samples))
        outputs = np.concatenate(parts, axis=0)
    check_output_rows(outputs, samples.inputs, c.spec, c.recipe.label)  # never score output elements as samples
    return outputs


def scores_of(metric: Metric, outputs: np.ndarray, samples: Samples, reference: np.ndarray | None) -> tuple[float, np.ndarray | None]:
    """``(value, per-sample scores or None)`` of ``outputs`` against the targets or the baseline's outputs."""
    against = reference if metric.reference == "baseline" else samples.targets
    if against is None:
        what = "the baseline's outputs" if metric.reference == "baseline" else "targets"
        raise DataError(f"metric {metric.name!r} needs {what}, which are missing.")
    scores = metric.scores(outputs, against)
    if isinstance(scores, np.ndarray):
        return float(np.mean(scores)), scores
    return float(scores), None


def latency_feeds(c: Compressed, batch_size: int, samples: Samples | None) -> Any:
    """A prepared batch of ``batch_size``: real samples (cycled) when given, else the tiled example inputs."""
    source = samples.inputs if samples is not None else c.example
    return c.prepare(source.tile(c.spec.batch or batch_size))  # a graph with a fixed batch runs that batch


def time_together(
    targets: Sequence[Compressed], settings: Settings, samples: Samples | None, progress: Progress | None = None
) -> list[list[float]]:
    """Latency samples (ms) of each target, all timed in the same interleaved rounds."""
    runners = {}
    for i, c in enumerate(targets):
        run, x = c.runner(threads=settings.threads), latency_feeds(c, settings.batch_size, samples)
        runners[i] = lambda run=run, x=x: run(x)
    # ONNX Runtime sessions take their thread count from the session; PyTorch needs it set around the run.
    simulated = any(c.onnx_bytes is None for c in targets)
    with torch_threads(settings.threads if simulated else None):
        on_round = None if progress is None else (lambda done, total: progress("timing", done / total))
        timed = interleaved_latency(runners, rounds=settings.rounds, warmup=settings.warmup, on_round=on_round,
                                    subjects=dict(enumerate(targets)))
    return [timed[i] for i in range(len(targets))]


def point_of(
    c: Compressed,
    *,
    metric: Metric,
    value: float | None,
    scores: np.ndarray | None,
    n_samples: int,
    latency: list[float] | None,
    settings: Settings,
) -> Point:
    """The ``Point`` of a measured result (timed by a cost model or a scrambled clock: ``details["timing"]`` says so)."""
    details = {k: v for k, v in c.details.items() if k in ("reduce_range", "exporter", "source", "opset", "fixed_batch")}
    steps = c.details.get("transforms") or {}
    if steps.get("applied"):  # the fidelity steps compress applied (a recipe's transforms=None: its default), and why
        details["transforms"] = {"applied": [step["step"] for step in steps["applied"]], "why": steps.get("why", "")}
    if c.details.get("stages"):  # what compressing it cost, stage by stage (wall time, peak memory): the report shows it
        details.update({k: c.details[k] for k in ("stages", "peak_rss_bytes", "memory") if k in c.details})
    timing = active_timer().describe() if latency else None
    if timing is not None:
        details["timing"] = timing
    return Point(
        label=c.recipe.label,
        recipe=c.recipe.to_dict(),
        executable=c.executable,
        runtime=c.runtime_name,
        bits=c.bits,
        weight_sparsity=c.sparsity,
        quantized_weight_fraction=c.quantized_weight_fraction,
        metric=metric.name,
        metric_key=metric.key,
        percent=metric.percent,
        value=value,
        scores=scores,
        n_samples=n_samples,
        size_bytes=c.size_bytes,
        latency_ms=statistics.median(latency) if latency else None,
        latency_p25_ms=float(np.percentile(latency, 25)) if latency else None,
        latency_p75_ms=float(np.percentile(latency, 75)) if latency else None,
        latency_batch_size=c.spec.batch or settings.batch_size,
        latency_rounds=len(latency) if latency else 0,
        threads=settings.threads,
        details=details,
    )


def measure(
    target: nn.Module | Compressed | Any,
    data: Any = None,
    settings: Settings | None = None,
    *,
    example_inputs: Any = None,
    baseline: Any = None,
    **overrides: Any,
) -> Point:
    """Measure a model, an ONNX file or a ``Compressed`` result.

    Args:
        target: a ``Compressed`` result, or a PyTorch model / ONNX file (measured as its fp32 ONNX model).
        data: ``(inputs, targets)`` (see ``engine.samples``); ``None`` measures size and latency only.
        settings: how to measure (``Settings``); keyword overrides such as ``metric=``,
            ``output=``, ``rounds=``, ``batch_size=``, ``threads=`` change single fields.
        example_inputs: needed for a PyTorch model when ``data`` is None.
        baseline: the uncompressed model (or its result), for metrics that compare with its
            outputs (``cosine_to_baseline``, ...) when ``target`` is a ``Compressed`` result.

    Examples:
        >>> import squeezelab as sl
        >>> model, split = sl.models.default_model("mlp")
        >>> p = sl.measure(model, split.test, rounds=3)
        >>> p.metric, p.n_samples, p.executable
        ('top-1 accuracy', 450, True)
    """
    settings = settings_of(settings, overrides)
    samples = None if data is None else read_samples(data)
    metric = settings.resolved_metric(has_targets=samples is not None and samples.targets is not None)
    c = as_compressed(target, samples, example_inputs, settings.output)
    value = scores = None
    if samples is not None:
        outputs = outputs_of(c, samples, settings.eval_batch_size)
        reference = None
        if metric.reference == "baseline":
            reference = _baseline_outputs(target, baseline, c, outputs, samples, settings)
        value, scores = scores_of(metric, outputs, samples, reference)
    latency = time_together([c], settings, samples)[0] if settings.rounds else None
    return point_of(
        c, metric=metric, value=value, scores=scores, n_samples=0 if samples is None else len(samples),
        latency=latency, settings=settings,
    )


def _baseline_outputs(target: Any, baseline: Any, c: Compressed, outputs: np.ndarray, samples: Samples, settings: Settings) -> np.ndarray:
    if baseline is not None:
        return outputs_of(as_compressed(baseline, samples, None, settings.output), samples, settings.eval_batch_size)
    if not isinstance(target, Compressed):
        return outputs  # the model measured is itself the uncompressed model
    raise DataError(
        f"the metric compares with the uncompressed model's outputs; pass baseline= (the model {c.recipe.label} "
        "was made from), use measure_pair(baseline, candidate, ...), or give data with targets."
    )
