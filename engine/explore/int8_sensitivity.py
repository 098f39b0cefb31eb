"""The int8 sensitivity map: which layers make real int8 lose accuracy, in ONNX Runtime's own kernels.

``layer_sensitivity(model, data, runtime=Int8Dynamic() | Int8Static())`` lands here. The units are the
int8 search's (``int8_probes.candidate_groups``: one Linear/Conv layer, the layers one fused op holds,
a block under static int8, the embedding tables), and so are the recipes: the whole model in int8
(``Recipe(runtime=...)``, no fidelity steps) and, per group, the same with that group kept float
(``int8_probes.float_layers_recipe``). A finished map is also stored whole under the PyTorch model's
key, so a second call reads one file. Every one quantizes the one fp32 export (``on_export``: exported
once, not per probe), with the quantizer's pre-processing, calibration and fusion remembered across
probes (``remembered_quantization``, ``remembered_fusion``); each is measured on all the data in
ONNX Runtime and cached under its recipe like any point.

Each row: ``gain`` = the group kept float minus all int8 (how much of int8's loss it accounts for),
and ``drop`` = that same gain, so the heatmap's colour (``axis="int8"``) reads "more drop, more
sensitive" as on the other axes; the group's own figure (the metric's column) and ``drop_float``
(the drop left with it float) are beside it. ``table.attrs["all_int8"]`` holds the all-int8 figure.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from torch import nn

from squeezelab.engine.core.errors import ConfigError
from squeezelab.engine.core.fingerprints import fingerprint
from squeezelab.engine.core.recipe import Recipe
from squeezelab.engine.core.runtimes import Int8Dynamic, Int8Static
from squeezelab.engine.explore.evaluation import Evaluator
from squeezelab.engine.explore.int8_probes import candidate_groups, float_layers_recipe, fp32_export, group_label, on_export
from squeezelab.engine.measurement.point import Point
from squeezelab.engine.runtime.int8_graph import remembered_fusion
from squeezelab.engine.runtime.quantize_memo import remembered_quantization

__all__ = ["int8_sensitivity", "INT8_RUNTIMES"]

INT8_RUNTIMES = (Int8Dynamic, Int8Static)
_VERSION = "int8-map/1"  # part of the stored map's key: a change to what a row holds must change it


def int8_sensitivity(model: nn.Module, ev: Evaluator, runtime: Int8Dynamic | Int8Static, *, progress: bool,
                     deadline: float | None) -> Any:
    """The int8 map of ``model`` on ``ev``'s data (see the module docstring); a pandas DataFrame."""
    if not isinstance(runtime, INT8_RUNTIMES):
        raise ConfigError(f"runtime={runtime!r}: the int8 map takes Int8Dynamic() or Int8Static().")
    ev.check_calibration(Recipe(runtime=runtime))  # static int8 without calibration data: refused before any work
    # A finished map is stored whole, under the torch model's key: a second call needs no export to find it.
    key = fingerprint(_VERSION, ev.key(Recipe(runtime=runtime, transforms=())))
    stored = ev.cache.get(key)
    if stored is not None:
        return _from_stored(stored)
    table = _measured(model, ev, runtime, progress, deadline)
    if table[table.attrs["metric_key"]].notna().all():  # complete (no deadline cut it short)
        ev.cache.put(key, {"rows": table.to_dict(orient="records"), "columns": list(table.columns), "attrs": dict(table.attrs)})
    return table


def _from_stored(stored: dict[str, Any]) -> Any:
    import pandas as pd  # lazily: heavy, and import squeezelab stays lean

    table = pd.DataFrame(stored["rows"], columns=stored["columns"])  # the cache sorts keys: the columns' order kept
    table.attrs.update(stored["attrs"])
    return table


def _measured(model: nn.Module, ev: Evaluator, runtime: Int8Dynamic | Int8Static, progress: bool,
              deadline: float | None) -> Any:
    with remembered_fusion(), remembered_quantization():
        export = fp32_export(ev)
        work = on_export(ev, export)
        groups = candidate_groups(model, export, runtime)
        base = work.baseline()
        all_int8 = Recipe(runtime=runtime, transforms=())
        whole = work.evaluate(all_int8)
        points = _probe(work, groups, all_int8, progress, deadline)
    return _table(model, groups, points, base, whole, runtime)


def _probe(work: Evaluator, groups: list[tuple[str, ...]], all_int8: Recipe, progress: bool,
           deadline: float | None) -> dict[tuple[str, ...], Point]:
    from tqdm.auto import tqdm  # lazily, as sweep does: import squeezelab stays lean

    points: dict[tuple[str, ...], Point] = {}
    for group in tqdm(groups, desc="int8 sensitivity", disable=not progress, unit="group"):
        recipe = replace(float_layers_recipe(all_int8, group), transforms=())
        point = work.cached(recipe)
        if point is None and (deadline is None or time.monotonic() <= deadline):
            point = work.evaluate(recipe)
        if point is not None:
            points[group] = point
    return points


def _table(model: nn.Module, groups: list[tuple[str, ...]], points: dict[tuple[str, ...], Point], base: Point,
           whole: Point, runtime: Any) -> Any:
    import pandas as pd  # lazily: heavy, and import squeezelab stays lean

    modules = dict(model.named_modules())
    key = base.metric_key
    rows = []
    for group in groups:
        point = points.get(group)
        figure = float("nan") if point is None else point.value  # not probed before the deadline
        gain = figure - whole.value
        rows.append({
            "layer": group_label(group), "layers": list(group),
            "parameters": sum(int(modules[name].weight.numel()) for name in group),
            "axis": "int8", "value": 8, key: figure, "gain": gain, "drop": gain, f"{key}_drop": gain,
            "drop_float": base.value - figure, "size_bytes": None if point is None else point.size_bytes,
        })
    table = pd.DataFrame(rows)
    table.attrs.update({"metric": base.metric, "metric_key": key, "percent": bool(base.percent)})
    table.attrs.update({"baseline_value": float(base.value), "all_int8": float(whole.value), "runtime": Recipe(runtime=runtime).label,
                        "int8": "drop = gain: the figure with this group kept float minus all int8, in real ONNX Runtime kernels"})
    return table
