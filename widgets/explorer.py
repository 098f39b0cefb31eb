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
from pathlib import Path
from typing import Any

from squeezelab.engine._arguments import count, fraction, scalar, width
from squeezelab.engine.errors import ConfigError, SqueezeError
from squeezelab.engine.evaluation import Evaluator, asked_sparsity, evaluator_settings
from squeezelab.engine.point import Point, Settings
from squeezelab.engine.recipe import Int8Dynamic, Recipe
from squeezelab.engine.stats import speedup_text
from squeezelab.engine.sweeping import Sweep, grid_recipe
from squeezelab.widgets._explorer_layers import LayerViews
from squeezelab.widgets._labels import MetricLabels
from squeezelab.widgets._progress import StageProgress

__all__ = ["Explorer"]

_QUANTIZATION_CHOICES = [
    ("linear, symmetric", "linear-symmetric"),
    ("linear, affine", "linear-affine"),
    ("linear, per-tensor", "linear-pertensor"),
    ("k-means (weight sharing)", "kmeans"),
    ("fixed point", "fixed-point"),
    ("float16", "float16"),
]
_PRUNING_CHOICES = [("magnitude (unstructured)", "magnitude"), ("structured (channels removed)", "structured"), ("N:M (of 4)", "n:m")]
_RUNTIME_CHOICES = [
    ("simulated (packed file)", "simulated"),
    ("simulated, Deep-Compression coded", "simulated-huffman"),
    ("int8 dynamic (ONNX Runtime)", "int8-dynamic"),
    ("int8 static (ONNX Runtime)", "int8-static"),
    ("int8 dynamic + embeddings (ONNX Runtime)", "int8-dynamic-embeddings"),
]
# Choices that are not one of grid_recipe's runtime names. A transformer's word embeddings can hold
# most of its weights; plain int8-dynamic refuses to leave them float32 silently, this choice
# quantizes them too (the recipe a sweep with the same runtime config measures: a cache hit).
_RUNTIME_CONFIGS = {"int8-dynamic-embeddings": Int8Dynamic(op_types=("MatMul", "Gemm", "Gather"))}
# An ONNX file has no PyTorch layers to prune or to quantize in simulation: ONNX Runtime's choices
# only, float16 among them (for a PyTorch model it is a quantization choice).
_ONNX_RUNTIME_CHOICES = [
    ("int8 dynamic (ONNX Runtime)", "int8-dynamic"),
    ("int8 dynamic + embeddings (ONNX Runtime)", "int8-dynamic-embeddings"),
    ("int8 static (ONNX Runtime)", "int8-static"),
    ("float16 (ONNX Runtime)", "float16"),
]
_BITS_RANGE = (2, 8)  # the bit-width slider
_SPARSITY_RANGE = (0.0, 0.95)  # the sparsity slider


def _choice(name: str, value: Any, choices: list[tuple[str, str]]) -> str:
    allowed = [v for _, v in choices]
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(f"{name}={value!r} is not one of the explorer's {name} choices: {', '.join(map(repr, allowed))}.")
    return value


def _check_arguments(
    bits: Any, sparsity: Any, quantization: Any, pruning: Any, runtime: Any, overrides: dict[str, Any], onnx: bool
) -> tuple[int, float]:
    """Refuse what the controls cannot show, before anything is measured (a slider would clamp it silently)."""
    _choice("quantization", quantization, _QUANTIZATION_CHOICES)
    _choice("pruning", pruning, _PRUNING_CHOICES)
    if onnx:
        _check_onnx_arguments(sparsity, quantization, pruning, runtime)
    else:
        _choice("runtime", runtime, _RUNTIME_CHOICES)
    low, high = _BITS_RANGE
    bits = width(scalar(bits))
    if not low <= bits <= high:
        raise ConfigError(f"bits={bits} is outside the bit-width slider's range {low}..{high}; pass one of {list(range(low, high + 1))}.")
    sparsity = fraction(scalar(sparsity))
    if not _SPARSITY_RANGE[0] <= sparsity <= _SPARSITY_RANGE[1]:
        raise ConfigError(f"sparsity={sparsity} is outside the sparsity slider's range 0..{_SPARSITY_RANGE[1]}; pass a number in [0, 0.95].")
    for name in ("latency_repeats", "rounds"):
        if name in overrides:
            count(name, overrides[name], low=0, hint=" (timed rounds per point; 0 skips latency)")
    return bits, sparsity


def _check_onnx_arguments(sparsity: Any, quantization: str, pruning: str, runtime: Any) -> None:
    """An ONNX file takes ONNX Runtime's choices; pruning and simulated widths need the PyTorch model."""
    allowed = [v for _, v in _ONNX_RUNTIME_CHOICES]
    if not isinstance(runtime, str) or runtime not in allowed:
        raise ConfigError(
            f"runtime={runtime!r} is not one of the explorer's runtime choices for an ONNX file: "
            f"{', '.join(map(repr, allowed))}. The simulated runtimes need the PyTorch model: pass the nn.Module."
        )
    asked = {"sparsity": scalar(sparsity) != 0, "quantization": quantization != "linear-symmetric", "pruning": pruning != "magnitude"}
    for name, changed in asked.items():
        if changed:
            value = {"sparsity": sparsity, "quantization": quantization, "pruning": pruning}[name]
            raise ConfigError(
                f"{name}={value!r} needs the PyTorch model: an ONNX file cannot be pruned or quantized to other "
                "widths here. Pass the nn.Module, or leave the argument out and choose an ONNX Runtime runtime."
            )


def _recipe_key(point: Point) -> str:
    return json.dumps(point.recipe, sort_keys=True)


class Explorer:
    """Bit-width and sparsity sliders, method dropdowns, live trade-off curves and a figures panel.

    Args:
        model: the PyTorch model (never changed), or an ONNX file (ONNX Runtime choices only).
        data: held-out evaluation data, ``(inputs, targets)``: inputs a tensor, a tuple or a dict
            of tensors; targets any array, or ``None`` to measure fidelity to the uncompressed model.
        settings: how to measure (``squeezelab.Settings``); keyword overrides change single fields.
        metric: the metric (a ``Metric``, a callable or a name such as ``"cosine_to_baseline"``);
            default top-1 accuracy with targets, cosine to the fp32 model without. Every axis,
            hover text and panel of the explorer is named after it.
        output: which model output is evaluated (a key such as ``"pooler_output"``, an index or a callable).
        calibration_data: inputs for int8 static calibration (default: the first 256 of ``data``).
        bits, sparsity, quantization, pruning, runtime: the starting point (``runtime`` default:
            ``"simulated"``, or ``"int8-static"`` for an ONNX file, which takes ONNX Runtime's
            choices only: its sliders and method dropdowns stay disabled).
        cache: as for ``sweep`` (True: ``~/.cache/squeezelab``); slider positions already
            measured by a sweep or an earlier session are drawn without recomputation.
        progress: show a progress bar while a point is measured (the status line always says).
        title: the figure's and the report's title.
        **overrides: other ``Settings`` fields (``rounds=``, ``batch_size=``, ``threads=``; the older
            ``latency_repeats=`` too). Timing takes 20 rounds per point by default; 0 skips it.

    Raises:
        ConfigError: a dropdown value that is not one of its choices, ``bits`` or ``sparsity``
            outside the sliders' ranges (2..8, 0..0.95), bad settings (an unknown metric name, a
            negative ``rounds``): before anything is measured.
        DataError: data the engine cannot read, or a metric that needs targets the data lacks.
    """

    def __init__(
        self,
        model: Any,
        data: Any,
        settings: Settings | None = None,
        *,
        metric: Any = None,
        output: Any = None,
        calibration_data: Any = None,
        bits: int = 8,
        sparsity: float = 0.0,
        quantization: str = "linear-symmetric",
        pruning: str = "magnitude",
        runtime: str | None = None,
        cache: Any = True,
        progress: bool = True,
        title: str = "squeezelab explorer",
        **overrides: Any,
    ) -> None:
        from squeezelab.engine.onnx_input import is_onnx_model

        self._onnx = is_onnx_model(model)
        runtime = runtime if runtime is not None else ("int8-static" if self._onnx else "simulated")
        bits, sparsity = _check_arguments(bits, sparsity, quantization, pruning, runtime, overrides, self._onnx)
        overrides.update({k: v for k, v in (("metric", metric), ("output", output)) if v is not None})
        settings = evaluator_settings(settings, overrides)  # a bad setting fails here, before the cache is touched
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
        self.bits_slider = w.IntSlider(value=bits, min=_BITS_RANGE[0], max=_BITS_RANGE[1], step=1, description="bit width", style=style, layout=layout, continuous_update=False)
        self.sparsity_slider = w.FloatSlider(
            value=sparsity, min=_SPARSITY_RANGE[0], max=_SPARSITY_RANGE[1], step=0.05, description="sparsity", readout_format=".0%", style=style, layout=layout, continuous_update=False
        )
        self.quantization = w.Dropdown(options=_QUANTIZATION_CHOICES, value=quantization, description="quantization", style=style, layout=layout)
        self.pruning = w.Dropdown(options=_PRUNING_CHOICES, value=pruning, description="pruning", style=style, layout=layout)
        choices = _ONNX_RUNTIME_CHOICES if self._onnx else _RUNTIME_CHOICES
        self.runtime = w.Dropdown(options=choices, value=runtime, description="runtime", style=style, layout=layout)
        self.status = w.HTML(value="")
        self.progress = w.FloatProgress(value=0, min=0, max=1, description="", style=style, layout=w.Layout(width="420px", visibility="visible" if progress else "hidden"))
        self._show_progress = progress
        self.panel = w.HTML(value="")
        self.figure = tradeoff_figure(widget=True, title=self.title, metric=self.labels)
        self.layer_views = LayerViews(self)
        controls = w.VBox([self.bits_slider, self.sparsity_slider, self.quantization, self.pruning, self.runtime, self.progress, self.status])
        self.widget = w.VBox([w.HBox([controls, self.panel]), self.figure, self.layer_views.accordion])
        for control in (self.bits_slider, self.sparsity_slider, self.quantization, self.pruning, self.runtime):
            control.observe(self._on_change, names="value")

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
        quantization, pruning = self.quantization.value, self.pruning.value
        if runtime == "float16":  # an ONNX file's float16 choice: float16 weights, run by ONNX Runtime
            bits, quantization, runtime = 16, "float16", "simulated"
        elif runtime.startswith("int8"):
            bits = 8  # ONNX Runtime's int8 path chooses its own 8-bit weights
        elif quantization == "float16":
            bits = 16
        sparsity = round(sparsity, 4)
        if pruning == "n:m":
            sparsity = min((0.0, 0.25, 0.5, 0.75), key=lambda s: abs(s - sparsity))
        return grid_recipe(bits, sparsity, quantization=quantization, pruning=pruning, runtime=_RUNTIME_CONFIGS.get(runtime, runtime))

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
                who = html.escape(recipe.label or "fp32")
                if not latest:
                    who += "</b> (an earlier choice; yours is next)<b>"
                line = self._stages.text(stage, done, baseline=recipe == Recipe())
                text = f"measuring <b>{who}</b>: {html.escape(line)}"
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
                self.panel.value = self._panel_html(point)
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
            grid = [(8, 0.0, runtime) for _, runtime in _ONNX_RUNTIME_CHOICES]
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

    def _panel_html(self, point: Point) -> str:
        base = self.baseline
        kind = "executable (ONNX Runtime)" if point.executable else "SIMULATED (PyTorch with decoded weights)"
        latency = "not measured" if point.latency_ms is None else f"{point.latency_ms:.3f} ms"
        speed = point.speedup
        cells = [
            ("recipe", html.escape(point.label)),
            (html.escape(self.labels.name), html.escape(self.labels.value(point.value))),
            ("drop", html.escape(self._drop_text(point))),
            ("size", f"{point.size_bytes:,} B"),
            ("compression", f"{base.size_bytes / point.size_bytes:.2f}×" if base is not None else "n/a"),
            ("latency", latency),
            ("speedup", "1.00× (the baseline)" if self._is_baseline(point) else speedup_text(
                speed.median if speed else None, speed.low if speed else None, speed.high if speed else None, "×")),
            ("kind", kind),
        ]
        body = "".join(f"<tr><th style='text-align:left;padding-right:12px'>{k}</th><td>{v}</td></tr>" for k, v in cells)
        return f"<table class='squeezelab-figures'>{body}</table>"

    def _is_baseline(self, point: Point) -> bool:
        return self.baseline is not None and _recipe_key(point) == _recipe_key(self.baseline)

    def _drop_text(self, point: Point) -> str:
        """The paired drop against the baseline with its interval, in the metric's units."""
        if self._is_baseline(point):
            return f"{self.labels.drop(0.0)} (the baseline)"
        d = point.drop
        if d is None:
            base = self.baseline.value if self.baseline is not None else None
            plain = None if base is None or point.value is None else base - point.value
            return self.labels.drop(plain)
        return f"{self.labels.drop(d.drop)} ({d.confidence:.0%} interval {self.labels.drop(d.low)} to {self.labels.drop(d.high)})"

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
