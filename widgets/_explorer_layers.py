"""The explorer's per-layer views: a sensitivity heatmap and the chosen layer's weights with their levels.

Built the first time their accordion is opened (one more ``FigureWidget`` costs
a few seconds and a 5 MB bundle: not worth it for someone who never looks).
The sensitivity table is measured once per quantizer on the explorer's worker
thread, through the explorer's ``Evaluator`` (so it is cached on disk with the
points), and drawn in the explorer's metric: a cosine's drops, not pp.

Layers are the model's ``Linear`` and ``Conv`` layers by their module names
(``features.0``, or ``encoder.layer.0.attention.self.query`` in a BERT).
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from squeezelab.engine.core import choices

__all__ = ["ExplorerLink", "LayerViews"]

_TITLE = "per-layer views: sensitivity and weight histograms"


@dataclass(frozen=True)
class ExplorerLink:
    """What the per-layer views may use of the explorer that shows them, and nothing else.

    The explorer owns its worker thread, its lock and its status line; the views reach them only through
    these callbacks (so a change inside the explorer cannot silently break them, and the views can be
    driven by a stand-in in a test).
    """

    evaluator: Any  # the explorer's Evaluator: its model, samples and on-disk cache
    quantizer_choice: Callable[[], str]  # the quantization dropdown's value
    recipe: Callable[[], Any]  # the recipe the controls show now
    set_status: Callable[..., None]  # (html, busy=False) -> None: the explorer's status line
    submit: Callable[[Callable[[], None]], None]  # run on the explorer's worker thread (``wait()`` waits for it)
    draw: Callable[[Callable[[], None]], None]  # run under the explorer's drawing lock, unless it is closed
    closed: Callable[[], bool]


class LayerViews:
    """The accordion (``.accordion``) that holds the per-layer views of one explorer."""

    def __init__(self, link: ExplorerLink) -> None:
        import ipywidgets as w

        self._ex = link
        self._tables: dict[str, Any] = {}  # quantizer name -> layer sensitivity table
        self._box = w.VBox([])
        self.built = False
        self.figure: Any = None
        self.layer_choice: Any = None
        self.axis_choice: Any = None
        self._row: Any = None
        self.accordion = w.Accordion(children=[self._box], titles=(_TITLE,), selected_index=None)
        self.accordion.observe(self._on_open, names="selected_index")

    def quantizer(self) -> str:
        """The width-based quantizer the sensitivity is measured with (the explorer's, else linear)."""
        q = self._ex.quantizer_choice()
        return q if q in choices.names("quantization") and q != "float16" else "linear-symmetric"

    def table(self, compute: bool) -> Any:
        """The layer sensitivity under the selected quantizer (measured once per quantizer, cached on disk)."""
        q = self.quantizer()
        if q not in self._tables and compute:
            from squeezelab.engine.explore.sensitivity import layer_sensitivity

            ex = self._ex
            ex.set_status(f"measuring layer sensitivity ({html.escape(q)}) …", busy=True)
            self._tables[q] = layer_sensitivity(ex.evaluator.model, ex.evaluator.samples, quantization=q, evaluator=ex.evaluator, progress=False)
            ex.set_status(f"layer sensitivity ({html.escape(q)}) ready")
        return self._tables.get(q)

    def _on_open(self, change: Any) -> None:
        if change["new"] is None or self.built:
            return
        self.build()

    def build(self) -> None:
        """Create the layer dropdown, the axis toggle and the two-panel figure, and draw them."""
        import ipywidgets as w
        from torch import nn

        from squeezelab.engine.core.layers import prunable_layers
        from squeezelab.widgets.layer_views import layer_figure

        self.built = True
        model = self._ex.evaluator.model
        names = [name for name, _ in prunable_layers(model)] if isinstance(model, nn.Module) else []
        if not names:
            what = "an ONNX file has no PyTorch layers to probe" if not isinstance(model, nn.Module) else "the model has no Linear or Conv layer"
            self._box.children = [w.HTML(value=f"<i>No per-layer views: {what}.</i>")]
            return
        self.layer_choice = w.Dropdown(options=names, value=names[0], description="layer", layout=w.Layout(width="460px"))
        self.axis_choice = w.ToggleButtons(options=[("bit width", "bits"), ("sparsity", "sparsity")], value="bits")
        self.figure = layer_figure(widget=True)
        self._row = w.HBox([self.layer_choice, self.axis_choice])
        self._box.children = [w.VBox([self._row, self.figure])]
        self.layer_choice.observe(lambda _: self.update(), names="value")
        self.axis_choice.observe(lambda _: self.update(), names="value")
        self.update()

    def update(self) -> None:
        """Redraw the views; a sensitivity table not yet measured is computed on the explorer's worker."""
        ex = self._ex
        if self.figure is None or ex.closed():
            return
        if self.quantizer() in self._tables:
            self._draw()
        else:
            ex.submit(self._draw)

    def _draw(self) -> None:
        from squeezelab.engine.core.quantizers import Float16, LinearQuantization
        from squeezelab.widgets.layer_views import update_layer_views
        from squeezelab.widgets.levels import quantization_levels

        ex = self._ex
        try:
            table = self.table(True)
            config = ex.recipe().quantization
        except Exception as exc:  # shown, not raised: this may run on the worker thread
            ex.set_status(f"<span style='color:#b00'>per-layer views: {html.escape(f'{type(exc).__name__}: {exc}')}</span>")
            return
        layer = self.layer_choice.value
        weight = ex.evaluator.model.get_submodule(layer).weight.detach().cpu().numpy()
        if config is None or isinstance(config, Float16):  # int8 runtimes and float16: show the 8-bit linear grid
            config = LinearQuantization(bits=8)
        levels = quantization_levels(weight, config)
        ex.draw(lambda: update_layer_views(self.figure, table, self.axis_choice.value, weight, levels, layer, config.label))

    def widgets(self) -> list[Any]:
        """Every widget these views created (for ``Explorer.close``)."""
        items = [self.accordion, self._box, *self._box.children]
        if self.figure is not None:
            items += [self.figure, self.layer_choice, self.axis_choice, self._row]
        return items
