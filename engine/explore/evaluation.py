"""Measure one recipe on one model and data set, through the on-disk cache.

``Evaluator`` is what ``sweep``, ``layer_sensitivity``, ``search`` and the
JupyterLab explorer share: it fixes the model, the data and the measurement
``Settings``, fingerprints them once, and then answers ``cached(recipe)`` (no
work: a ``Point`` or None) and ``evaluate(recipe)`` (compress, measure, store).

The work itself is a plain function of plain data (``PointTask`` ->
``run_point``), so any ``concurrent.futures.Executor`` can run it: a process
pool, or Dask's ``Client.get_executor()``. Workers never touch the cache: the
caller stores each result as it arrives, so a cluster needs no shared disk
and an interrupted sweep keeps every finished point.

Every point but the baseline is timed in the same interleaved rounds as the
fp32 baseline (``speedup``, with its interval), and carries per-sample scores,
so its drop against the baseline comes with a paired interval (``paired``).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from squeezelab.engine.core.copying import copy_model
from squeezelab.engine.core.fingerprints import data_fingerprint, fingerprint, model_fingerprint, runtime_fingerprint
from squeezelab.engine.explore.cache import ResultCache
from squeezelab.engine.core.errors import CalibrationError, ConfigError
from squeezelab.engine.core.inputs import Inputs
from squeezelab.engine.measurement.point import Point, Settings
from squeezelab.engine.core.recipe import Recipe
from squeezelab.engine.core.runtimes import Int8Static, Runtime
from squeezelab.engine.runtime.weight_only import calibrates, check_weight_only_calibration
from squeezelab.engine.core.samples import Samples, read_inputs, read_samples
from squeezelab.engine.measurement.scoring import Metric, top1_accuracy
from squeezelab.engine.measurement.stats import paired_drop_interval, ratio_interval
from squeezelab.engine.measurement.timing import active_timer
from squeezelab.engine.core.labels import as_class_indices
from squeezelab.engine.core.outputs import select_output
from squeezelab.engine.core.pruners import ChannelPruning, LayerPruning, MagnitudePruning, NMPruning
from squeezelab.engine.measurement.latency import torch_threads
from squeezelab.engine.measurement.metrics import outputs_of, point_of, scores_of, settings_of, time_together
from squeezelab.engine.pipeline.compress import check_model, compress, compress_for_data
from squeezelab.engine.runtime.onnx_files import is_onnx_model, load_onnx_model

__all__ = ["Evaluator", "PointTask", "run_point", "check_calibration", "recipe_of", "paired_drop_bound", "asked_sparsity", "evaluator_settings"]

def evaluator_settings(settings: Settings | None, overrides: dict[str, Any]) -> Settings:
    """``settings`` (default ``Settings.for_sweeps()``) with keyword overrides (older names accepted)."""
    return settings_of(settings if settings is not None else Settings.for_sweeps(), overrides)


@dataclass(frozen=True)
class PointTask:
    """Everything one measurement needs, as picklable data."""

    model: nn.Module | bytes  # a PyTorch model, or the bytes of an ONNX model
    recipe: Recipe
    samples: Samples
    calibration: Inputs | None  # None: no calibration inputs (static int8 is then refused)
    settings: Settings
    reference: np.ndarray | None = None  # the baseline's outputs, for metrics that compare with them
    worker_threads: int | None = None  # PyTorch threads while measuring (1 in a pool of processes)


# One baseline per process and model: every point of a sweep is timed against it.
_BASELINES: dict[str, Any] = {}
_BASELINES_LOCK = threading.Lock()


def _baseline(task: PointTask, key: str) -> Any:
    with _BASELINES_LOCK:
        if key not in _BASELINES:
            _BASELINES.clear()  # one model at a time is plenty; a sweep never alternates
            _BASELINES[key] = compress(task.model, Recipe(), example_inputs=task.samples.inputs.slice(0, 1), output=task.settings.output)
        return _BASELINES[key]


def run_point(task: PointTask, baseline_key: str | None = None, progress: Any = None) -> Point:
    """Compress ``task.model`` with ``task.recipe`` and measure it: one ``Point``.

    ``baseline_key`` names the model for the per-process baseline (default: its fingerprint).
    ``progress(stage, fraction)`` is told how far the work is ("compressing", "evaluating",
    "timing"), in this process only (a display's hook; it never changes a figure).
    """

    key = baseline_key or (model_fingerprint(task.model) if isinstance(task.model, nn.Module) else fingerprint(task.model))
    with torch_threads(task.worker_threads):
        return _run_point(task, key, progress or (lambda stage, fraction: None))


def _run_point(task: PointTask, baseline_key: str, progress: Any) -> Point:
    started = time.perf_counter()
    settings, samples = task.settings, task.samples
    metric = settings.resolved_metric(has_targets=samples.targets is not None)
    progress("compressing", 0.0)
    c = compress_for_data(  # the data checked against the model, the fp32 export compared with PyTorch on it
        task.model, task.recipe, samples.inputs, "the evaluation data", example_inputs=samples.inputs.slice(0, 1),
        calibration_data=task.calibration, output=None if isinstance(task.model, bytes) else settings.output,
    )
    outputs = outputs_of(c, samples, settings.eval_batch_size, progress)
    value, scores = scores_of(metric, outputs, samples, outputs if task.reference is None else task.reference)
    latency, speed = None, None
    if settings.rounds:
        is_baseline = task.recipe == Recipe()
        targets = [c] if is_baseline else [_baseline(task, baseline_key), c]
        timed = time_together(targets, settings, samples, progress)
        latency = timed[-1]
        if not is_baseline:
            speed = ratio_interval(timed[0], timed[1], confidence=settings.confidence)
    point = point_of(c, metric=metric, value=value, scores=scores, n_samples=len(samples), latency=latency, settings=settings)
    return point.replace(speedup=speed, seconds=round(time.perf_counter() - started, 4))


class Evaluator:
    """Measures recipes of one model on one data set, reusing results from ``cache``.

    Args:
        model: the PyTorch model (never changed), or an ONNX file (ONNX Runtime recipes only).
        data: evaluation data, ``(inputs, targets)`` in any form ``engine.samples`` reads.
        settings: how to measure (``Settings``; sweeps default to 20 timing rounds); keyword
            overrides change single fields (``metric=``, ``rounds=``; the older
            ``latency_batch_size=`` / ``latency_repeats=`` names still work). ``rounds=0``
            skips timing (the metric and size only).
        calibration_data: inputs that calibrate ``Int8Static`` (``calibration_data=`` in any form
            ``compress`` takes), kept apart from ``data``. None: a static int8 recipe is refused
            (``check_calibration``): no entry point calibrates on the samples it then scores.
        cache: True (``~/.cache/squeezelab``), False, a folder, or a ``ResultCache``.
    """

    def __init__(self, model: Any, data: Any, settings: Settings | None = None, *, calibration_data: Any = None, cache: Any = True, **overrides: Any) -> None:
        self.settings = evaluator_settings(settings, overrides)
        self.cache = ResultCache.of(cache)
        self.cache.check_writable()  # an unwritable or full folder fails now, not after the first point
        if isinstance(model, nn.Module):
            check_model(model)
            # A private copy: results are cached under these weights, so they must not change later
            # (a notebook that trains the model further would otherwise poison the cache).
            self.model: nn.Module | bytes = copy_model(model).eval()
            self.model_key = model_fingerprint(self.model)
        elif is_onnx_model(model):
            self.model = load_onnx_model(model)[0]
            self.model_key = fingerprint("onnx", self.model)
        else:
            check_model(model)  # raises: names what was passed
        self.samples = read_samples(data)
        self.metric: Metric = self.settings.resolved_metric(has_targets=self.samples.targets is not None)
        if self.metric is top1_accuracy and isinstance(self.model, nn.Module):
            check_labels_early(self.model, self.samples, self.settings)
        self.calibration: Inputs | None = (
            None if calibration_data is None else read_inputs(calibration_data, self.samples.inputs.spec())
        )
        self.worker_threads: int | None = None
        self._reference: np.ndarray | None = None
        self._baseline_point: Point | None = None
        self._inputs_key = fingerprint(self.model_key, data_fingerprint(self.samples), runtime_fingerprint())
        # Only static int8 and GPTQ weight-only read the calibration data: other recipes share entries whatever it is.
        self._calibration_key = None if self.calibration is None else fingerprint([*self.calibration.arrays])
        self._context = fingerprint(self._inputs_key, self.settings.key_parts())

    @property
    def data(self) -> Samples:
        """The evaluation samples (read once)."""
        return self.samples

    def key(self, recipe: Recipe) -> str:
        """The cache key of ``recipe`` under this evaluator's model, data and settings."""
        reads = isinstance(recipe.runtime, Int8Static) or calibrates(recipe.runtime)
        calibration = self._calibration_key if reads else None
        timing = active_timer().key  # cost-model or scrambled times never share entries with real ones
        if timing is not None and self.settings.rounds:
            return fingerprint(self._context, recipe.to_dict(), calibration, list(timing))
        return fingerprint(self._context, recipe.to_dict(), calibration)

    def reference(self) -> np.ndarray | None:
        """The fp32 baseline's outputs, for metrics that compare with them (computed once)."""
        if self.metric.reference != "baseline":
            return None
        if self._reference is None:
            base = compress(self.model, Recipe(), example_inputs=self.samples.inputs.slice(0, 1), output=self._output())
            self._reference = outputs_of(base, self.samples, self.settings.eval_batch_size)
        return self._reference

    def _output(self) -> Any:
        return None if isinstance(self.model, bytes) else self.settings.output

    def check_calibration(self, what: Recipe | Runtime) -> None:
        """``check_calibration(what, calibration_data)`` with this evaluator's calibration inputs."""
        check_calibration(what, self.calibration)

    def task(self, recipe: Recipe) -> PointTask:
        self.check_calibration(recipe)
        return PointTask(
            model=self.model, recipe=recipe, samples=self.samples, calibration=self.calibration,
            settings=self.settings, reference=self.reference(), worker_threads=self.worker_threads,
        )

    def cached(self, recipe: Recipe) -> Point | None:
        """The stored point of ``recipe`` (``cached=True``, paired with the baseline when it is stored too), or None."""
        row = self.cache.get(self.key(recipe))
        if row is None:
            return None
        return self._paired(Point.from_row(row).replace(cached=True), recipe)

    def store(self, recipe: Recipe, point: Point) -> Point:
        self.cache.put(self.key(recipe), point.replace(cached=False, drop=None).to_row())
        if recipe == Recipe():
            self._baseline_point = point
        return self._paired(point.replace(cached=False), recipe)

    def evaluate(self, recipe: Recipe, progress: Any = None) -> Point:
        """The point of ``recipe``: from the cache, or measured now and stored; paired with the baseline.

        ``progress(stage, fraction)`` hears how far an uncached point is (see ``run_point``).
        """
        point = self.cached(recipe)
        if point is not None:
            return point
        return self.store(recipe, run_point(self.task(recipe), self.model_key, progress))

    def baseline(self) -> Point:
        """The fp32 baseline's point (evaluated once)."""
        if self._baseline_point is None:
            row = self.cache.get(self.key(Recipe()))
            self._baseline_point = Point.from_row(row) if row is not None else None
            if self._baseline_point is None:
                self._baseline_point = run_point(self.task(Recipe()), self.model_key)
                self.cache.put(self.key(Recipe()), self._baseline_point.to_row())
        return self._baseline_point

    def _paired(self, point: Point, recipe: Recipe) -> Point:
        """``point`` with its paired drop against the baseline (the baseline itself: none)."""
        if recipe == Recipe() or point.scores is None:
            return point
        base = self.baseline()
        if base.scores is None or len(base.scores) != len(point.scores):
            return point
        return point.replace(drop=paired_drop_interval(base.scores, point.scores, self.settings.confidence))

    def for_model(self, model: nn.Module) -> Evaluator:
        """An evaluator of another version of the model (fine-tuned, say) on the same samples and settings.

        Metrics that compare with the baseline's outputs keep comparing with *this* model's fp32
        outputs: the reference is the original model, not the new version.
        """
        other = Evaluator(model, self.samples, self.settings, calibration_data=self.calibration, cache=self.cache)
        other._reference = self.reference()
        if other._reference is not None:  # the reference is part of what the figures mean
            other._context = fingerprint(other._context, "reference", self._inputs_key)
        return other

    def with_settings(self, settings: Settings | None = None, **changes: Any) -> Evaluator:
        """A copy with other measurement settings (same model, data and cache), e.g. ``rounds=0``."""
        new = evaluator_settings(settings or self.settings, changes)
        if new.metric is not self.settings.metric or new.output is not self.settings.output:
            raise ConfigError("with_settings() changes how points are timed; a new metric or output needs a new Evaluator.")
        other = object.__new__(Evaluator)
        other.__dict__.update(self.__dict__)
        other.settings = new
        other._context = fingerprint(other._inputs_key, new.key_parts())  # equal settings, equal keys
        other._baseline_point = None if new.rounds != self.settings.rounds else self._baseline_point
        return other


def check_calibration(what: Recipe | Runtime | None, calibration_data: Any) -> None:
    """Raise ``CalibrationError`` if ``what`` (a recipe or runtime) is static int8 (or GPTQ weight-only) and
    ``calibration_data`` is None.

    The one rule of every entry point (``sweep``, ``search``, the Explorer, as ``compress`` and the
    command line): static int8 calibrates on inputs the caller keeps apart from the evaluation data;
    none is ever split off the data and then scored. Checked before any work.
    """
    runtime = what.runtime if isinstance(what, Recipe) else what
    if isinstance(runtime, Int8Static) and calibration_data is None:
        label = (what if isinstance(what, Recipe) else Recipe(runtime=runtime)).label
        raise CalibrationError(
            f"{label} calibrates activation ranges on real inputs, and calibration_data=None; pass "
            "calibration_data= (a few hundred inputs kept apart from the evaluation data, e.g. from the "
            "training split), or use Int8Dynamic() (runtime='int8-dynamic'), which needs none. Static int8 "
            "is never calibrated on the samples it is then judged on."
        )
    check_weight_only_calibration(runtime, calibration_data is not None)  # WeightOnly(method='gptq')


def check_labels_early(model: nn.Module, samples: Samples, settings: Settings) -> None:
    """Top-1 labels against the model's number of outputs, once, before any point is compressed.

    The same check runs wherever top-1 is computed; here it spares a sweep from failing once
    per point. A model that fails on the first sample is left to ``compress`` to explain.
    """

    labels = samples.targets
    if labels is None:
        return
    labels = labels[:, 0] if labels.ndim == 2 and labels.shape[1] == 1 else labels
    try:
        out = select_output(samples.inputs.slice(0, 1).call(model), settings.output)
    except Exception:  # noqa: BLE001 - compress() names what the model expected
        return
    if out.ndim == 2 and labels.ndim == 1:
        as_class_indices(labels, int(out.shape[1]), what="top-1 accuracy")


def asked_sparsity(recipe: Recipe) -> float:
    """The pruning amount a recipe asks for (fraction of weights, channels or blocks; N:M as 1 - n/m)."""

    p = recipe.pruning
    if isinstance(p, MagnitudePruning):
        return float(p.sparsity)
    if isinstance(p, ChannelPruning):
        return float(p.ratio)
    if isinstance(p, LayerPruning):  # keep= asks for a count of blocks, not a fraction
        return float(p.ratio) if p.ratio is not None else float("nan")
    if isinstance(p, NMPruning):
        return 1.0 - p.n / p.m
    return 0.0


def paired_drop_bound(baseline: Point, point: Point, confidence: float) -> float:
    """One-sided *upper* confidence bound of the drop of ``point`` vs ``baseline``, paired by sample.

    The true drop exceeds it with probability at most ``1 - confidence``
    (``stats.paired_drop_interval(..., sided="upper")``: exact on the discordant samples for
    0/1 scores). ``confidence=0`` (or a metric without per-sample scores) gives the plain drop.
    """
    drop = baseline.value - point.value
    a, b = baseline.scores, point.scores
    if confidence <= 0 or a is None or b is None or len(a) != len(b):
        return float(drop)
    return paired_drop_interval(a, b, confidence, sided="upper").high


def recipe_of(row: Any) -> Recipe:
    """The ``Recipe`` a point, row or table row was measured with."""
    recipe = row.recipe if isinstance(row, Point) else row["recipe"]
    return Recipe.from_dict(json.loads(recipe) if isinstance(recipe, str) else recipe)
