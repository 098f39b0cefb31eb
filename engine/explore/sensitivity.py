"""Per-layer sensitivity: how much accuracy each layer loses alone, at each width and sparsity.

For every prunable/quantizable layer (``Linear``, ``Conv``) and every value,
one layer is changed while all others stay float32 and dense, and the model
is evaluated on ``data``. The result is a table — the data of the explorer's
heatmap and the map ``search`` plans its moves with.

Each probe is an ordinary ``Recipe`` (``LayerSetting`` keeps the other layers
float), so probes go through the same cache and executor as ``sweep``: a
second call costs file reads. Latency is not measured (one layer's width
changes no kernel in a simulation).
"""

from __future__ import annotations

import concurrent.futures as cf
import json
from collections.abc import Sequence
from typing import Any

from torch import nn

from squeezelab.engine.core.arguments import check_executor, grid_lists
from squeezelab.engine.core.errors import ConfigError
from squeezelab.engine.explore.evaluation import Evaluator
from squeezelab.engine.measurement.point import Settings
from squeezelab.engine.core.layers import prunable_layers
from squeezelab.engine.core.pruners import MagnitudePruning
from squeezelab.engine.core.quantizers import QuantizationConfig
from squeezelab.engine.core.recipe import LayerSetting, Recipe
from squeezelab.engine.core.runtimes import Simulated

__all__ = ["layer_sensitivity", "bits_probe", "sparsity_probe"]


def bits_probe(quantizer: QuantizationConfig, layer: str, bits: int, others: Sequence[str]) -> Recipe:
    """Quantize ``layer`` to ``bits``; every layer in ``others`` stays float32."""
    base = quantizer.with_bits(bits)
    keep = tuple(LayerSetting(name=o, bits=32) for o in others if o != layer)
    return Recipe(quantization=base, runtime=Simulated(), layers=keep)


def sparsity_probe(layer: str, sparsity: float) -> Recipe:
    """Prune ``layer`` alone to ``sparsity`` (magnitude); the others stay dense."""
    return Recipe(
        pruning=MagnitudePruning(sparsity=0.0),
        runtime=Simulated(),
        layers=(LayerSetting(name=layer, sparsity=sparsity),),
    )


def layer_sensitivity(
    model: nn.Module,
    data: Any,
    settings: Settings | None = None,
    *,
    bits: int | Sequence[int] = (2, 3, 4, 6, 8),
    sparsity: float | Sequence[float] = (0.5, 0.75, 0.9),
    quantization: str | QuantizationConfig = "linear-symmetric",
    executor: cf.Executor | None = None,
    cache: Any = True,
    progress: bool = True,
    evaluator: Evaluator | None = None,
    deadline: float | None = None,
    **overrides: Any,
) -> Any:
    """A pandas DataFrame: one row per (layer, axis, value).

    Columns: ``layer``, ``parameters`` (weights in the layer), ``axis`` (``"bits"`` or
    ``"sparsity"``), ``value`` (the width or sparsity probed), the metric's figure and its
    ``drop`` (baseline minus this; also under the metric's own name, e.g. ``accuracy`` and
    ``accuracy_drop`` for top-1, ``cosine`` and ``cosine_drop``), ``size_bytes`` (of the whole
    simulated model). Higher drop = more sensitive; ``table.pivot(index="layer",
    columns="value", values="drop")`` on one axis is the heatmap. ``table.attrs`` names the
    metric (``metric``, ``metric_key``, ``percent``). ``settings`` / keyword overrides as for ``sweep``
    (timing is skipped: one layer's width changes no kernel in a simulation). ``deadline``
    (a ``time.monotonic()`` value) stops probing; probes not measured by then have no figures (NaN).

    ``bits`` and ``sparsity`` take one value or a list each; one of them may be empty (that
    axis is not probed), not both. ``executor`` is as for ``sweep``.
    """
    import pandas as pd

    from squeezelab.engine.explore.sweep import sweep, weight_quantizer

    bits, sparsity = grid_lists(bits, sparsity, layout="separate")
    check_executor(executor)
    quantizer = weight_quantizer(quantization, width_based=True)
    if not isinstance(model, nn.Module):
        raise ConfigError("layer_sensitivity needs the PyTorch model (it quantizes and prunes single layers); got "
                          f"{type(model).__name__}.")
    layers = prunable_layers(model)
    if not layers:
        raise ConfigError("the model has no Linear/Conv layer to probe.")
    names = [name for name, _ in layers]
    probes: list[tuple[Recipe, dict[str, Any]]] = []
    for name, count in layers:
        for b in bits:
            probes.append((bits_probe(quantizer, name, b, names), {"layer": name, "parameters": count, "axis": "bits", "value": b}))
        for s in sparsity:
            probes.append((sparsity_probe(name, s), {"layer": name, "parameters": count, "axis": "sparsity", "value": s}))
    ev = (evaluator or Evaluator(model, data, settings, cache=cache, **overrides)).with_settings(rounds=0)
    result = sweep(model, data, bits=(), sparsity=(), recipes=[r for r, _ in probes], evaluator=ev, executor=executor,
                   progress=progress, deadline=deadline)
    by_recipe = {row["recipe"]: row for _, row in result.table.iterrows()}
    key = result.metric_key
    base = result.baseline["value"]
    rows = []
    for recipe, info in probes:
        row = by_recipe.get(json.dumps(recipe.to_dict(), sort_keys=True))
        figure = float("nan") if row is None else row["value"]  # not probed before the deadline
        drop = base - figure
        size = None if row is None else row["size_bytes"]
        rows.append({**info, key: figure, "drop": drop, f"{key}_drop": drop, "size_bytes": size})
    table = pd.DataFrame(rows)
    table.attrs.update(result.table.attrs)
    table.attrs["baseline_value"] = float(base)
    table.attrs["quantization"] = quantizer.label
    return table
