"""``Explorer``: sliders that really re-compress the model, and the trade-off curves they move.

A plain class holding ipywidgets and one Plotly ``FigureWidget`` (composition,
not a widget subclass): display it as the last expression of a cell, or
``display(explorer)``.

What happens when a control changes:

1. the controls are turned into a ``Recipe`` by ``grid_recipe`` (the same
   function ``sweep`` uses, so swept points are cache hits here);
2. a cached point is drawn at once, in this thread (tens of milliseconds);
3. an uncached point is measured on a background thread: the kernel stays
   free, the status line says what is being measured, and when several
   changes arrive while one is running, only the newest is measured next and
   only the newest result is drawn as the current point — a stale result is
   still cached and plotted as a point, never as the selection.

The figure is created once; every update rewrites its traces inside one
``batch_update``.
"""

from __future__ import annotations

import concurrent.futures as cf
import html
import threading
import time
from pathlib import Path
from typing import Any

from squeezelab.engine._arguments import count, fraction, scalar, width
from squeezelab.engine.errors import ConfigError, SqueezeError
from squeezelab.engine.evaluation import Evaluator
from squeezelab.engine.stats import speedup_text
from squeezelab.engine.sweeping import QUANTIZATION_METHODS, Sweep, grid_recipe

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
_RUNTIME_CHOICES = [("simulated (packed file)", "simulated"), ("simulated, Deep-Compression coded", "simulated-huffman"), ("int8 dynamic (ONNX Runtime)", "int8-dynamic"), ("int8 static (ONNX Runtime)", "int8-static")]
_BITS_RANGE = (2, 8)  # the bit-width slider
_SPARSITY_RANGE = (0.0, 0.95)  # the sparsity slider


def _choice(name: str, value: Any, choices: list[tuple[str, str]]) -> str:
    allowed = [v for _, v in choices]
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(f"{name}={value!r} is not one of the explorer's {name} choices: {', '.join(map(repr, allowed))}.")
    return value


def _check_arguments(bits: Any, sparsity: Any, quantization: Any, pruning: Any, runtime: Any, latency_repeats: Any) -> tuple[int, float]:
    """Refuse what the controls cannot show, before anything is measured (a slider would clamp it silently)."""
    _choice("quantization", quantization, _QUANTIZATION_CHOICES)
    _choice("pruning", pruning, _PRUNING_CHOICES)
    _choice("runtime", runtime, _RUNTIME_CHOICES)
    low, high = _BITS_RANGE
    bits = width(scalar(bits))
    if not low <= bits <= high:
        raise ConfigError(f"bits={bits} is outside the bit-width slider's range {low}..{high}; pass one of {list(range(low, high + 1))}.")
    sparsity = fraction(scalar(sparsity))
    if not _SPARSITY_RANGE[0] <= sparsity <= _SPARSITY_RANGE[1]:
        raise ConfigError(f"sparsity={sparsity} is outside the sparsity slider's range 0..{_SPARSITY_RANGE[1]}; pass a number in [0, 0.95].")
    count("latency_repeats", latency_repeats, low=0, hint=" (timed rounds per point; 0 skips latency)")
    return bits, sparsity


class Explorer:
    """Bit-width and sparsity sliders, method dropdowns, live trade-off curves and a figures panel.

    Args:
        model: the PyTorch model (never changed).
        data: ``(x, y)`` held-out evaluation data.
        calibration_data: inputs for int8 static calibration (default: the first 256 of ``data``).
        bits, sparsity, quantization, pruning, runtime: the starting point.
        cache: as for ``sweep`` (True: ``~/.cache/squeezelab``); slider positions already
            measured by a sweep or an earlier session are drawn without recomputation.
        latency_repeats: timed rounds per point (0 skips latency).
        progress: show a progress bar while a point is measured.

    Raises:
        ConfigError: a dropdown value that is not one of its choices, ``bits`` or ``sparsity``
            outside the sliders' ranges (2..8, 0..0.95), a bad ``latency_repeats``: before anything
            is measured.
    """

    def __init__(
        self,
        model: Any,
        data: Any,
        calibration_data: Any = None,
        *,
        bits: int = 8,
        sparsity: float = 0.0,
        quantization: str = "linear-symmetric",
        pruning: str = "magnitude",
        runtime: str = "simulated",
        cache: Any = True,
        latency_repeats: int = 20,
        progress: bool = True,
        title: str = "squeezelab explorer",
    ) -> None:
        import ipywidgets as w

        from squeezelab.widgets.tradeoff import tradeoff_figure

        bits, sparsity = _check_arguments(bits, sparsity, quantization, pruning, runtime, latency_repeats)
        self.title = title
        self.evaluator = Evaluator(
            model, data, calibration_data=calibration_data, cache=cache, latency_repeats=latency_repeats
        )
        self._lock = threading.RLock()
        self._pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="squeezelab-explorer")
        self._generation = 0
        self._closed = False
        self._sensitivity: dict[str, Any] = {}  # quantizer name -> layer sensitivity table
        self._pending: cf.Future | None = None
        self._rows: dict[str, dict[str, Any]] = {}  # recipe JSON -> measured row, in evaluation order
        self.current_row: dict[str, Any] | None = None
        self.error: str | None = None
        self.timings: list[float] = []  # seconds from a control change to the figure showing it (cached points)

        self.baseline = self.evaluator.evaluate(grid_recipe(32, 0.0))
        self._rows[self.baseline["recipe"]] = self.baseline

        style = {"description_width": "110px"}
        layout = w.Layout(width="420px")
        self.bits_slider = w.IntSlider(value=bits, min=_BITS_RANGE[0], max=_BITS_RANGE[1], step=1, description="bit width", style=style, layout=layout, continuous_update=False)
        self.sparsity_slider = w.FloatSlider(
            value=sparsity, min=_SPARSITY_RANGE[0], max=_SPARSITY_RANGE[1], step=0.05, description="sparsity", readout_format=".0%", style=style, layout=layout, continuous_update=False
        )
        self.quantization = w.Dropdown(options=_QUANTIZATION_CHOICES, value=quantization, description="quantization", style=style, layout=layout)
        self.pruning = w.Dropdown(options=_PRUNING_CHOICES, value=pruning, description="pruning", style=style, layout=layout)
        self.runtime = w.Dropdown(options=_RUNTIME_CHOICES, value=runtime, description="runtime", style=style, layout=layout)
        self.status = w.HTML(value="")
        self.progress = w.FloatProgress(value=0, min=0, max=1, description="", layout=w.Layout(width="420px", visibility="hidden" if not progress else "visible"))
        self._show_progress = progress
        self.panel = w.HTML(value="")
        self.figure = tradeoff_figure(widget=True, title=title)
        self._layer_box = w.VBox([])
        self._layer_views: Any = None
        self.layers = w.Accordion(children=[self._layer_box], titles=("per-layer views: sensitivity and weight histograms",), selected_index=None)
        self.layers.observe(self._on_layers_open, names="selected_index")

        controls = w.VBox([self.bits_slider, self.sparsity_slider, self.quantization, self.pruning, self.runtime, self.progress, self.status])
        self.widget = w.VBox([w.HBox([controls, self.panel]), self.figure, self.layers])
        for control in (self.bits_slider, self.sparsity_slider, self.quantization, self.pruning, self.runtime):
            control.observe(self._on_change, names="value")
        self._load_cached_grid()
        self._on_change(None)

    # ------------------------------------------------------------------ the point the controls select

    def recipe(self) -> Any:
        """The ``Recipe`` the controls select now (raises ``ConfigError`` for an impossible combination)."""
        runtime = self.runtime.value
        bits = self.bits_slider.value
        if runtime.startswith("int8"):
            bits = 8  # ONNX Runtime's int8 path chooses its own 8-bit weights
        elif self.quantization.value == "float16":
            bits = 16
        sparsity = round(self.sparsity_slider.value, 4)
        if self.pruning.value == "n:m":
            sparsity = min((0.0, 0.25, 0.5, 0.75), key=lambda s: abs(s - sparsity))
        return grid_recipe(bits, sparsity, quantization=self.quantization.value, pruning=self.pruning.value, runtime=runtime)

    def _sync_controls(self) -> None:
        int8 = self.runtime.value.startswith("int8")
        self.bits_slider.disabled = int8 or self.quantization.value == "float16"
        self.quantization.disabled = int8

    def _on_change(self, change: Any) -> None:
        started = time.perf_counter()
        self._sync_controls()
        if change is not None and change["owner"] in (self.quantization, self.pruning, self.runtime):
            self._load_cached_grid()
        with self._lock:
            self._generation += 1
            generation = self._generation
        try:
            recipe = self.recipe()
        except SqueezeError as exc:
            self._set_status(f"<span style='color:#b00'>cannot build this point: {html.escape(str(exc))}</span>")
            self.error = str(exc)
            return
        self.error = None
        row = self.evaluator.cached(recipe)
        if row is not None:
            self._show(row, generation)
            self.timings.append(time.perf_counter() - started)
            return
        self._set_status(f"measuring <b>{html.escape(recipe.label)}</b> …", busy=True)
        self._pending = self._pool.submit(self._measure, recipe, generation)

    def _measure(self, recipe: Any, generation: int) -> None:
        if generation != self._generation:
            return  # a newer choice arrived while this one waited: skip it
        try:
            row = self.evaluator.evaluate(recipe)
        except Exception as exc:  # shown in the widget: a kernel-side traceback helps no one here
            with self._lock:
                if generation == self._generation and not self._closed:
                    self.error = f"{type(exc).__name__}: {exc}"
                    self._set_status(f"<span style='color:#b00'>{html.escape(self.error)}</span>")
            return
        self._show(row, generation)

    def _show(self, row: dict[str, Any], generation: int) -> None:
        with self._lock:
            if self._closed:
                return
            self._rows[row["recipe"]] = row
            latest = generation == self._generation
            if latest:
                self.current_row = row
            self._redraw()
            if latest:
                self.panel.value = self._panel_html(row)
                self._set_status(f"showing <b>{html.escape(row['label'])}</b>" + (" (from cache)" if row.get("cached") else ""))
        if latest:
            self._update_layer_views()  # the histogram's levels follow the selected quantizer and width

    def _redraw(self) -> None:
        from squeezelab.widgets.tradeoff import update_tradeoff

        table = self.sweep().table
        current = None
        if self.current_row is not None:
            matches = table.index[table["recipe"] == self.current_row["recipe"]]
            current = int(matches[0]) if len(matches) else None
        update_tradeoff(self.figure, table, current)

    def _set_status(self, text: str, busy: bool = False) -> None:
        self.status.value = text
        if self._show_progress:
            self.progress.bar_style = "info" if busy else "success"
            self.progress.value = 0.5 if busy else 1.0

    def _load_cached_grid(self) -> None:
        """Plot every point of the current methods' grid already in the cache (file reads only)."""
        for b in range(2, 9):
            for s in [round(0.05 * i, 2) for i in range(20)]:
                try:
                    recipe = grid_recipe(b, s, quantization=self.quantization.value, pruning=self.pruning.value, runtime=self.runtime.value)
                except SqueezeError:
                    continue
                row = self.evaluator.cached(recipe)
                if row is not None:
                    with self._lock:  # the worker thread may be drawing from _rows
                        self._rows[row["recipe"]] = row

    def _panel_html(self, row: dict[str, Any]) -> str:
        base = self.baseline
        drop = base["accuracy"] - row["accuracy"]
        speedup = row.get("speedup")
        kind = "executable (ONNX Runtime)" if row["executable"] else "SIMULATED (PyTorch with decoded weights)"
        latency = "not measured" if row.get("latency_ms") is None else f"{row['latency_ms']:.3f} ms"
        cells = [
            ("recipe", html.escape(row["label"])),
            ("accuracy", f"{row['accuracy']:.2%}"),
            ("drop", f"{drop * 100:+.2f} pp"),
            ("size", f"{row['size_bytes']:,} B"),
            ("compression", f"{base['size_bytes'] / row['size_bytes']:.2f}×"),
            ("latency", latency),
            ("speedup", speedup_text(speedup, row.get("speedup_low"), row.get("speedup_high"), "×")),
            ("kind", kind),
        ]
        body = "".join(f"<tr><th style='text-align:left;padding-right:12px'>{k}</th><td>{v}</td></tr>" for k, v in cells)
        return f"<table class='squeezelab-figures'>{body}</table>"

    # ------------------------------------------------------------------ results

    def sweep(self) -> Sweep:
        """Every point measured or drawn from the cache in this explorer, as a ``Sweep`` (baseline first)."""
        rows = [self.baseline] + [r for key, r in self._rows.items() if key != self.baseline["recipe"]]
        return Sweep.from_rows(rows)

    def wait(self, timeout: float | None = 120) -> None:
        """Block until the point being measured (if any) is drawn."""
        pending = self._pending
        if pending is not None:
            pending.result(timeout=timeout)

    def save_report(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write a self-contained HTML report of everything explored, the current point selected."""
        from squeezelab.widgets.html_report import report

        self.wait()
        sweep = self.sweep()
        current = None
        recipe = None
        if self.current_row is not None:
            matches = sweep.table.index[sweep.table["recipe"] == self.current_row["recipe"]]
            current = int(matches[0]) if len(matches) else None
            recipe = sweep.recipe(current) if current is not None else None
        return report(sweep, path, title=self.title, recipe=recipe, current=current, sensitivity=self._sensitivity_table(False), overwrite=overwrite)

    # ------------------------------------------------------------------ per-layer views

    def _sensitivity_quantizer(self) -> str:
        q = self.quantization.value
        return q if q in QUANTIZATION_METHODS and q != "float16" else "linear-symmetric"

    def _sensitivity_table(self, compute: bool) -> Any:
        """The layer sensitivity under the selected quantizer (computed once per quantizer, cached on disk)."""
        q = self._sensitivity_quantizer()
        if q not in self._sensitivity and compute:
            from squeezelab.engine.sensitivity import layer_sensitivity

            self._set_status(f"measuring layer sensitivity ({html.escape(q)}) …", busy=True)
            self._sensitivity[q] = layer_sensitivity(
                self.evaluator.model, self.evaluator.data, quantization=q, evaluator=self.evaluator, progress=False
            )
            self._set_status(f"layer sensitivity ({html.escape(q)}) ready")
        return self._sensitivity.get(q)

    def _on_layers_open(self, change: Any) -> None:
        if change["new"] is None or self._layer_views is not None:
            return
        self._build_layer_views()

    def _build_layer_views(self) -> None:
        import ipywidgets as w

        from squeezelab.engine.sensitivity import prunable_layers
        from squeezelab.widgets.layer_views import layer_figure

        names = [name for name, _ in prunable_layers(self.evaluator.model)]
        self.layer_choice = w.Dropdown(options=names, value=names[0], description="layer")
        self.axis_choice = w.ToggleButtons(options=[("bit width", "bits"), ("sparsity", "sparsity")], value="bits")
        self.layer_figure = layer_figure(widget=True)
        self._layer_views = w.VBox([w.HBox([self.layer_choice, self.axis_choice]), self.layer_figure])
        self._layer_box.children = [self._layer_views]
        self.layer_choice.observe(lambda _: self._update_layer_views(), names="value")
        self.axis_choice.observe(lambda _: self._update_layer_views(), names="value")
        self._update_layer_views()

    def _update_layer_views(self) -> None:
        """Redraw the per-layer views; a sensitivity table not yet measured is computed on the worker."""
        if self._layer_views is None or self._closed:
            return
        if self._sensitivity_quantizer() in self._sensitivity:
            self._draw_layer_views()
        else:
            self._pending = self._pool.submit(self._draw_layer_views)

    def _draw_layer_views(self) -> None:
        from squeezelab.engine.recipe import Float16, LinearQuantization
        from squeezelab.widgets.layer_views import quantization_levels, update_layer_views

        try:
            table = self._sensitivity_table(True)
            config = self.recipe().quantization
        except Exception as exc:  # shown, not raised: this may run on the worker thread
            self._set_status(f"<span style='color:#b00'>per-layer views: {html.escape(f'{type(exc).__name__}: {exc}')}</span>")
            return
        layer = self.layer_choice.value
        weight = self.evaluator.model.get_submodule(layer).weight.detach().cpu().numpy()
        if config is None or isinstance(config, Float16):  # int8 runtimes and float16: show the 8-bit linear grid
            config = LinearQuantization(bits=8)
        levels = quantization_levels(weight, config)
        with self._lock:
            if not self._closed:
                update_layer_views(self.layer_figure, table, self.axis_choice.value, weight, levels, layer, config.label)

    # ------------------------------------------------------------------ display and lifetime

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def close(self) -> None:
        """Close every widget and stop the background worker (a point being measured is dropped)."""
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        items = [self.widget, self.figure, self.bits_slider, self.sparsity_slider, self.quantization, self.pruning, self.runtime]
        items += [self.panel, self.status, self.progress, self.layers, self._layer_box]
        if self._layer_views is not None:
            items += [self._layer_views, self.layer_figure, self.layer_choice, self.axis_choice, *self._layer_views.children]
        for item in items:
            item.close()

    def __enter__(self) -> Explorer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
