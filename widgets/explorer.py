"""``Explorer``: sliders that really re-compress the model, and the trade-off curves they move.

A plain class holding ipywidgets and one Plotly ``FigureWidget`` (composition,
not a widget subclass): display it as the last expression of a cell, or
``display(explorer)``.

It takes any model the engine takes (tensor, tuple or dict inputs; a tensor,
tuple, dict or ``ModelOutput`` out, ``output=`` choosing one) and data with
targets or without (then the metric is fidelity to the uncompressed model,
cosine by default). Every figure it shows is named after the metric.

What happens when a control changes:

1. the controls are turned into a ``Recipe`` by ``grid_recipe`` (the same
   function ``sweep`` uses, so swept points are cache hits here);
2. a cached point is drawn at once, in this thread (tens of milliseconds);
3. an uncached point is measured on a background thread: the kernel stays
   free, and the progress bar and status line follow the stages the engine
   reports (compressing, evaluating, timing) and how far each is. When several
   changes arrive while one is running, only the newest is measured next and
   only the newest result is drawn as the current point — a stale result is
   still cached and plotted as a point, never as the selection.

The fp32 baseline is measured the same way when the explorer opens (unless
cached), so even the first point shows its progress.

The figure is created once; every update rewrites its traces inside one
``batch_update``.
"""

from __future__ import annotations

import concurrent.futures as cf
import html
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from squeezelab.engine.core.errors import SqueezeError
from squeezelab.engine.core.choices import resolve as resolve_choice
from squeezelab.engine.explore.evaluation import Evaluator, asked_sparsity, check_calibration, evaluator_settings
from squeezelab.engine.explore.grid import Grid, not_applicable
from squeezelab.engine.explore.overrides import with_overrides
from squeezelab.engine.measurement.point import Point, Settings
from squeezelab.engine.core.recipe import Recipe
from squeezelab.engine.explore.sweep import Sweep
from squeezelab.widgets._explorer_choices import (
    BITS_RANGE,
    ONNX_RUNTIME_CHOICES,
    PRUNING_CHOICES,
    QUANTIZATION_CHOICES,
    RUNTIME_CHOICES,
    SPARSITY_RANGE,
    check_arguments,
    control_recipe,
    start_of,
)
from squeezelab.widgets._explorer_layers import ExplorerLink, LayerViews
from squeezelab.widgets._labels import MetricLabels
from squeezelab.widgets._panel import figures_panel
from squeezelab.widgets._progress import StageProgress

__all__ = ["Explorer"]

def onnx_default_runtime(model: Any, calibrated: bool) -> str:
    """The first of ONNX Runtime's choices that applies to the ONNX file ``model`` (``grid.not_applicable``)."""
    from squeezelab.engine.runtime.onnx_files import load_onnx_model

    onnx_bytes = load_onnx_model(model)[0]
    for name in ("int8-static", "int8-dynamic"):
        if not_applicable(onnx_bytes, resolve_choice("recipe", name), calibrated=calibrated) is None:
            return name
    return "float16"


def _recipe_key(point: Point) -> str:
    return json.dumps(point.recipe, sort_keys=True)


class Explorer:
    """Bit-width and sparsity sliders, method dropdowns, live trade-off curves and a figures panel.

    Args:
        model: the PyTorch model (never changed), or an ONNX file (ONNX Runtime choices only).
        data: held-out evaluation data, ``(inputs, targets)``: inputs a tensor, a tuple or a dict
            of tensors; targets any array, or ``None`` to measure fidelity to the uncompressed model.
        settings: how to measure (``squeezelab.Settings``; default ``Settings.for_sweeps()``).
        grid: where the controls start (``Grid`` with one value each: ``bits`` default 8, ``sparsity`` 0,
            ``quantization``, ``pruning``, ``runtime``); None: ``Grid()``. ``runtime`` left out is
            ``"simulated"``; for an ONNX file, which takes ONNX Runtime's choices only (its sliders and
            method dropdowns stay disabled), the first that applies of ``"int8-static"`` (with
            ``calibration_data``), ``"int8-dynamic"`` (not for a CNN) and ``"float16"``.
        calibration_data: inputs that calibrate static int8, kept apart from ``data``; without them the
            ``"int8-static"`` choice is refused (``CalibrationError``, shown in the widget when picked
            later), as ``compress`` refuses it: nothing is calibrated on the samples it then scores.
        cache: as for ``sweep`` (True: ``~/.cache/squeezelab``); slider positions already
            measured by a sweep or an earlier session are drawn without recomputation.
        progress: show a progress bar while a point is measured (the status line always says).
        title: the figure's and the report's title.
        **overrides: any ``Grid`` field (``bits=4``, ``runtime="int8-dynamic"``) on top of ``grid``, or any
            ``Settings`` field: ``metric=`` (a ``Metric``, a callable or a name such as ``"cosine_to_baseline"``;
            default top-1 accuracy with targets, cosine to the fp32 model without: every axis, hover text and
            panel is named after it), ``output=`` (which model output is evaluated: a key such as
            ``"pooler_output"``, an index or a callable), ``rounds=``, ``batch_size=``, ``threads=`` (the older
            ``latency_repeats=`` too). Timing takes 20 rounds per point by default; 0 skips it.

    Raises:
        ConfigError: a dropdown value that is not one of its choices, ``bits`` or ``sparsity``
            outside the sliders' ranges (2..8, 0..0.95), a ``Grid`` of several points or with ``recipes``,
            a keyword that is neither a ``Grid`` nor a ``Settings`` field, bad settings (an unknown metric
            name, a negative ``rounds``): before anything is measured.
        DataError: data the engine cannot read, or a metric that needs targets the data lacks.
        CalibrationError: ``runtime="int8-static"`` without ``calibration_data``.
    """

    def __init__(
        self,
        model: Any,
        data: Any,
        settings: Settings | None = None,
        *,
        grid: Grid | None = None,
        calibration_data: Any = None,
        cache: Any = True,
        progress: bool = True,
        title: str = "squeezelab explorer",
        **overrides: Any,
    ) -> None:
        from squeezelab.engine.runtime.onnx_files import is_onnx_model

        grid, measuring = with_overrides("Explorer", Grid, grid, overrides, keyword="grid",
                                           given_as_settings=settings)
        bits, sparsity, quantization, pruning, runtime = start_of(grid)
        self._onnx = is_onnx_model(model)
        if runtime is None:
            runtime = onnx_default_runtime(model, calibration_data is not None) if self._onnx else "simulated"
        bits, sparsity, quantization, pruning, runtime = check_arguments(bits, sparsity, quantization, pruning, runtime, measuring, self._onnx)
        check_calibration(resolve_choice("recipe" if self._onnx else "runtime", runtime), calibration_data)
        settings = evaluator_settings(settings, measuring)  # a bad setting fails here, before the cache is touched
        self.title = title
        self.evaluator = Evaluator(model, data, settings, calibration_data=calibration_data, cache=cache)
        self.labels = MetricLabels.of(self.evaluator.metric)
        self._stages = StageProgress(len(self.evaluator.samples), self.evaluator.settings.rounds, self.labels.name)
        self._lock = threading.RLock()
        self._pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="squeezelab-explorer")
        self._generation = 0
        self._waiting: int | None = None  # generation of the newest choice, while it is being measured
        self._closed = False
        self._ready = False  # the baseline is measured: points can be paired with it
        self._pending: cf.Future | None = None
        self._points: dict[str, Point] = {}  # recipe JSON -> measured point, in evaluation order
        self.baseline: Point | None = None
        self.current_point: Point | None = None
        self.error: str | None = None
        self.timings: list[float] = []  # seconds from a control change to the figure showing it (cached points)
        self._build_controls(bits, sparsity, quantization, pruning, runtime, progress)
        cached_baseline = self.evaluator.cached(Recipe())
        if cached_baseline is not None:
            self._start(cached_baseline)
        else:
            self._set_status("measuring the <b>fp32 baseline</b> …", busy=True, fraction=0.0)
            self._pending = self._pool.submit(self._measure_baseline)

    def _build_controls(self, bits: int, sparsity: float, quantization: str, pruning: str, runtime: str, progress: bool) -> None:
        import ipywidgets as w

        from squeezelab.widgets.tradeoff import tradeoff_figure

        style = {"description_width": "110px"}
        layout = w.Layout(width="420px")
        self.bits_slider = w.IntSlider(value=bits, min=BITS_RANGE[0], max=BITS_RANGE[1], step=1, description="bit width", style=style, layout=layout, continuous_update=False)
        self.sparsity_slider = w.FloatSlider(
            value=sparsity, min=SPARSITY_RANGE[0], max=SPARSITY_RANGE[1], step=0.05, description="sparsity", readout_format=".0%", style=style, layout=layout, continuous_update=False
        )
        self.quantization = w.Dropdown(options=QUANTIZATION_CHOICES, value=quantization, description="quantization", style=style, layout=layout)
        self.pruning = w.Dropdown(options=PRUNING_CHOICES, value=pruning, description="pruning", style=style, layout=layout)
        choices = ONNX_RUNTIME_CHOICES if self._onnx else RUNTIME_CHOICES
        self.runtime = w.Dropdown(options=choices, value=runtime, description="runtime", style=style, layout=layout)
        self.status = w.HTML(value="")
        self.progress = w.FloatProgress(value=0, min=0, max=1, description="", style=style, layout=w.Layout(width="420px", visibility="visible" if progress else "hidden"))
        self._show_progress = progress
        self.panel = w.HTML(value="")
        self.figure = tradeoff_figure(widget=True, title=self.title, metric=self.labels)
        self.layer_views = LayerViews(self._link())
        controls = w.VBox([self.bits_slider, self.sparsity_slider, self.quantization, self.pruning, self.runtime, self.progress, self.status])
        self.widget = w.VBox([w.HBox([controls, self.panel]), self.figure, self.layer_views.accordion])
        for control in (self.bits_slider, self.sparsity_slider, self.quantization, self.pruning, self.runtime):
            control.observe(self._on_change, names="value")

    def _link(self) -> ExplorerLink:
        """The callbacks the per-layer views use: they never touch this explorer's private state."""

        def submit(work: Callable[[], None]) -> None:
            self._pending = self._pool.submit(work)

        def draw(paint: Callable[[], None]) -> None:
            with self._lock:
                if not self._closed:
                    paint()

        return ExplorerLink(
            evaluator=self.evaluator, quantizer_choice=lambda: self.quantization.value, recipe=self.recipe,
            set_status=self._set_status, submit=submit, draw=draw, closed=lambda: self._closed,
        )

    # ------------------------------------------------------------------ the baseline, then the first point

    def _measure_baseline(self) -> None:
        try:
            base = self.evaluator.evaluate(Recipe(), progress=self._progress_hook(Recipe(), None))
        except Exception as exc:  # shown in the widget: nothing can be paired without a baseline
            with self._lock:
                self.error = f"the fp32 baseline could not be measured: {type(exc).__name__}: {exc}"
                self._set_status(f"<span style='color:#b00'>{html.escape(self.error)}</span>")
            return
        self._start(base)

    def _start(self, baseline: Point) -> None:
        with self._lock:
            if self._closed:
                return
            self.baseline = baseline
            self._points[_recipe_key(baseline)] = baseline
        self._load_cached_grid()
        self._ready = True
        self._on_change(None)  # the point the controls select now (moved meanwhile, perhaps)

    # ------------------------------------------------------------------ the point the controls select

    def recipe(self) -> Recipe:
        """The ``Recipe`` the controls select now (raises ``ConfigError`` for an impossible combination)."""
        return self._recipe_at(self.bits_slider.value, self.sparsity_slider.value, self.runtime.value)

    def _recipe_at(self, bits: int, sparsity: float, runtime: str) -> Recipe:
        return control_recipe(bits, sparsity, self.quantization.value, self.pruning.value, runtime)

    def _sync_controls(self) -> None:
        int8 = self.runtime.value.startswith("int8")
        self.bits_slider.disabled = self._onnx or int8 or self.quantization.value == "float16"
        self.quantization.disabled = self._onnx or int8
        self.sparsity_slider.disabled = self.pruning.disabled = self._onnx

    def _on_change(self, change: Any) -> None:
        started = time.perf_counter()
        self._sync_controls()
        with self._lock:
            self._generation += 1
            generation = self._generation
        if not self._ready:  # the baseline is still measured: the newest choice is drawn after it
            return
        if change is not None and change["owner"] in (self.quantization, self.pruning, self.runtime):
            self._load_cached_grid()
        try:
            recipe = self.recipe()
        except SqueezeError as exc:
            self._waiting = None
            self._set_status(f"<span style='color:#b00'>cannot build this point: {html.escape(str(exc))}</span>")
            self.error = str(exc)
            return
        self.error = None
        point = self.evaluator.cached(recipe)
        if point is not None:
            self._waiting = None
            self._show(point, generation)
            self.timings.append(time.perf_counter() - started)
            return
        self._waiting = generation
        self._set_status(f"measuring <b>{html.escape(recipe.label)}</b> …", busy=True, fraction=0.0)
        self._pending = self._pool.submit(self._measure, recipe, generation)

    def _progress_hook(self, recipe: Recipe, generation: int | None) -> Any:
        """``progress(stage, fraction)`` for ``Evaluator.evaluate``: runs on the worker thread."""

        def hook(stage: str, done: float) -> None:
            with self._lock:
                if self._closed:
                    return
                latest = generation is None or generation == self._generation
                if not latest and self._waiting is None:
                    return  # the newest choice was cached and is shown: leave its status alone
                earlier = "" if latest else " (an earlier choice; yours is next)"
                line = self._stages.text(stage, done, baseline=recipe == Recipe())
                text = f"measuring <b>{html.escape(recipe.label)}</b>{earlier}: {html.escape(line)}"
                self._set_status(text, busy=True, fraction=self._stages.fraction(stage, done), stage=stage)

        return hook

    def _measure(self, recipe: Recipe, generation: int) -> None:
        if generation != self._generation:
            return  # a newer choice arrived while this one waited: skip it
        try:
            point = self.evaluator.evaluate(recipe, progress=self._progress_hook(recipe, generation))
        except Exception as exc:  # shown in the widget: a kernel-side traceback helps no one here
            with self._lock:
                if generation == self._generation and not self._closed:
                    self._waiting = None
                    self.error = f"{type(exc).__name__}: {exc}"
                    self._set_status(f"<span style='color:#b00'>{html.escape(self.error)}</span>")
            return
        self._show(point, generation)

    def _show(self, point: Point, generation: int) -> None:
        with self._lock:
            if self._closed:
                return
            self._points[_recipe_key(point)] = point
            latest = generation == self._generation
            if latest:
                self._waiting = None
                self.current_point = point
            self._redraw()
            if latest:
                self.panel.value = figures_panel(point, self.baseline, self.labels)
                self._set_status(f"showing <b>{html.escape(point.label)}</b>" + (" (from cache)" if point.cached else ""))
        if latest:
            self.layer_views.update()  # the histogram's levels follow the selected quantizer and width

    def _redraw(self) -> None:
        from squeezelab.widgets.tradeoff import update_tradeoff

        update_tradeoff(self.figure, self.sweep().table, self._current_position())

    def _current_position(self) -> int | None:
        if self.current_point is None:
            return None
        keys = list(self._ordered())
        key = _recipe_key(self.current_point)
        return keys.index(key) if key in keys else None

    def _set_status(self, text: str, busy: bool = False, fraction: float | None = None, stage: str = "") -> None:
        self.status.value = text
        if self._show_progress:
            self.progress.bar_style = "info" if busy else "success"
            self.progress.value = (fraction or 0.0) if busy else 1.0
            self.progress.description = stage

    def _load_cached_grid(self) -> None:
        """Plot every point of the current methods' grid already in the cache (file reads only).

        For an ONNX file: every runtime choice, the only thing its controls can change.
        """
        if self._onnx:
            grid = [(8, 0.0, runtime) for _, runtime in ONNX_RUNTIME_CHOICES]
        else:
            grid = [(b, round(0.05 * i, 2), self.runtime.value) for b in range(2, 9) for i in range(20)]
        recipes: dict[Recipe, None] = {}  # int8 and float16 ignore the width: one lookup each
        for bits, sparsity, runtime in grid:
            try:
                recipes[self._recipe_at(bits, sparsity, runtime)] = None
            except SqueezeError:
                continue
        for recipe in recipes:
            point = self.evaluator.cached(recipe)
            if point is not None:
                with self._lock:  # the worker thread may be drawing from _points
                    self._points[_recipe_key(point)] = point

    # ------------------------------------------------------------------ results

    def _ordered(self) -> dict[str, Point]:
        """The points, baseline first, in the order they were measured or read."""
        with self._lock:
            if self.baseline is None:
                return {}
            first = _recipe_key(self.baseline)
            return {first: self.baseline, **{k: p for k, p in self._points.items() if k != first}}

    def sweep(self) -> Sweep:
        """Every point measured or drawn from the cache in this explorer, as a ``Sweep`` (baseline first)."""
        points = list(self._ordered().values())
        extra = [{"sparsity": asked_sparsity(Recipe.from_dict(p.recipe))} for p in points]
        return Sweep.from_points(points, extra)

    def wait(self, timeout: float | None = 120) -> None:
        """Block until the work in flight (the baseline, a point, per-layer views) is drawn."""
        while True:
            pending = self._pending
            if pending is None:
                return
            pending.result(timeout=timeout)
            if pending is self._pending:  # nothing new was queued meanwhile
                return

    def save_report(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write a self-contained HTML report of everything explored, the current point selected."""
        from squeezelab.widgets.html_report import report

        self.wait()
        sweep = self.sweep()
        current = self._current_position()
        recipe = sweep.recipe(current) if current is not None else None
        return report(sweep, path, title=self.title, recipe=recipe, current=current, sensitivity=self.layer_views.table(compute=False), overwrite=overwrite)

    # ------------------------------------------------------------------ display and lifetime

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def close(self) -> None:
        """Close every widget and stop the background worker (a point being measured is dropped)."""
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        items = [self.widget, self.figure, self.bits_slider, self.sparsity_slider, self.quantization, self.pruning, self.runtime]
        items += [self.panel, self.status, self.progress, *self.layer_views.widgets()]
        for item in items:
            item.close()

    def __enter__(self) -> Explorer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
