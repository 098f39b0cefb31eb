"""Per-layer sensitivity: how much accuracy each layer loses alone, at each width and sparsity.

For every prunable/quantizable layer (``Linear``, ``Conv``) and every value,
one layer is changed while all others stay float32 and dense, and the model
is evaluated on ``data``. The result is a table — the data of the explorer's
heatmap and the map ``search`` plans its moves with.

Each probe is an ordinary ``Recipe`` (``LayerSetting`` keeps the other layers
float), cached under its key like any point: a second call costs file reads.
Without an executor, probes are measured in place (``layer_probes``: one
private copy, the model re-run only from the probed layer's stage onward,
``replay``), with the figures of the full evaluation; with one, each probe is a
full evaluation in a worker, as ``sweep`` runs points. ``method="estimate"``
(``sensitivity_estimated``) estimates every row and measures the top ones;
``method="auto"``, the default (``sensitivity_auto``), measures every probe when
that is little work and estimates otherwise, and the table says which it did
(``attrs["method"]``). ``runtime=Int8Dynamic()`` maps real int8 instead (``int8_sensitivity``).
Latency is not measured (one layer's width changes no kernel in a simulation).
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Sequence
from typing import Any

from torch import nn

from squeezelab.engine.core import choices
from squeezelab.engine.core.arguments import check_executor, grid_lists
from squeezelab.engine.core.errors import ConfigError
from squeezelab.engine.explore.evaluation import Evaluator, recipe_of
from squeezelab.engine.explore.grid import weight_quantizer
from squeezelab.engine.explore.int8_sensitivity import INT8_RUNTIMES, int8_sensitivity
from squeezelab.engine.explore.layer_probes import Planned, Probe, measure_probes, probe_table
from squeezelab.engine.explore.sensitivity_auto import choose_method, exact_work
from squeezelab.engine.explore.sensitivity_estimated import estimated_table
from squeezelab.engine.measurement.point import Point, Settings
from squeezelab.engine.core.layers import prunable_layers
from squeezelab.engine.core.pruners import MagnitudePruning
from squeezelab.engine.core.quantizers import QuantizationConfig
from squeezelab.engine.core.recipe import LayerSetting, Recipe
from squeezelab.engine.core.runtimes import Simulated
from squeezelab.engine.explore.sweep import sweep

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
    method: str = "auto",
    verify: int = 5,
    runtime: Any = None,
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
    axis is not probed), not both. ``executor`` is as for ``sweep``: each probe is then a full
    evaluation in a worker; without one, probes run here, re-running only what they change
    (``layer_probes``: the same figures, the model run from the changed layer's stage onward).

    ``method``: ``"exact"`` measures every probe; ``"estimate"`` estimates every row and measures the top
    ones (below); ``"auto"`` (the default) is ``"exact"`` when the probes not yet in the cache are little
    work (``sensitivity_auto``: at most 1e12 multiply-adds of re-run layers, about a minute on 2 cores;
    counted, not timed, so the choice is the same on every CPU) and ``"estimate"`` otherwise.
    ``table.attrs["method"]`` says which ran and ``attrs["method_note"]`` why. Callers that read every
    figure as measured (``search``'s size plan) pass ``method="exact"``.

    ``method="estimate"``: every row gets an *estimate* (``sensitivity_estimate``: the layer's output
    error carried to the model's output, in units of 1 - cosine to fp32, from a few backward passes on
    16 samples) in the ``estimate`` column, and only the ``verify`` rows of each axis the estimate ranks
    highest are measured by exact probes. ``estimated`` says which rows were not measured; their
    metric figure is NaN, and their ``drop`` holds the estimate when the metric is a cosine (else NaN).
    ``table.attrs["estimate"]`` says what the estimate is.

    ``runtime=Int8Dynamic()`` or ``Int8Static()`` (``calibration_data=`` for static): the int8 map
    instead (``int8_sensitivity``): one row per unit the int8 search keeps float, measured in ONNX
    Runtime's kernels with that unit alone kept float against the whole model in int8 (``axis="int8"``;
    ``bits``, ``sparsity`` and ``method`` do not apply).
    """
    rt = None if runtime is None else choices.resolve("runtime", runtime)
    if rt is not None and not isinstance(rt, (*INT8_RUNTIMES, Simulated)):
        raise ConfigError(f"runtime={runtime!r}: layer_sensitivity maps simulated widths (runtime=None) or real int8 "
                          "(Int8Dynamic(), Int8Static()); a weight-only map is not built yet.")
    if isinstance(rt, INT8_RUNTIMES):
        if not isinstance(model, nn.Module):
            raise ConfigError(f"the int8 map needs the PyTorch model (it keeps named layers float); got {type(model).__name__}.")
        ev = (evaluator or Evaluator(model, data, settings, cache=cache, **overrides)).with_settings(rounds=0)
        return int8_sensitivity(model, ev, rt, progress=progress, deadline=deadline)
    bits, sparsity = grid_lists(bits, sparsity, layout="separate")
    check_executor(executor)
    quantizer = weight_quantizer(quantization, width_based=True)
    if not isinstance(model, nn.Module):
        raise ConfigError("layer_sensitivity needs the PyTorch model (it quantizes and prunes single layers); got "
                          f"{type(model).__name__}.")
    layers = prunable_layers(model)
    if not layers:
        raise ConfigError("the model has no Linear/Conv layer to probe.")
    probes = _probes(layers, bits, sparsity, quantizer)
    if method not in ("auto", "exact", "estimate"):
        raise ConfigError(f"method={method!r}; pass 'auto' (exact when that is little work, else estimated), 'exact' "
                          "(every probe measured) or 'estimate' (estimated, the top rows measured).")
    ev = (evaluator or Evaluator(model, data, settings, cache=cache, **overrides)).with_settings(rounds=0)
    return _table(model, data, ev, [name for name, _ in layers], quantizer, probes, method=method, verify=verify,
                  executor=executor, progress=progress, deadline=deadline)


def _table(model: nn.Module, data: Any, ev: Evaluator, names: list[str], quantizer: QuantizationConfig,
           probes: list[Planned], *, method: str, verify: int, executor: cf.Executor | None, progress: bool,
           deadline: float | None) -> Any:
    """The table by ``method`` ("auto" decided here), labelled with the method that ran and why."""
    note = f"method={method!r}"
    if method == "auto":
        method, note = choose_method(*exact_work(model, ev, names, probes))
    if method == "estimate":
        table = estimated_table(ev, names, quantizer, probes, verify=verify, progress=progress, deadline=deadline)
    elif executor is not None:  # probes spread over processes, each a full evaluation
        table = probe_table(probes, *_through_sweep(model, data, ev, probes, executor, progress, deadline), quantizer)
    else:
        table = probe_table(probes, *measure_probes(ev, names, quantizer, probes, progress, deadline), quantizer)
    table.attrs.update({"method": method, "method_note": note})
    return table


def _probes(layers: list[tuple[str, int]], bits: list[int], sparsity: list[float], quantizer: QuantizationConfig) -> list[Planned]:
    names = [name for name, _ in layers]
    out: list[Planned] = []
    for name, count in layers:
        for b in bits:
            out.append((Probe(bits_probe(quantizer, name, b, names), name, "bits", b),
                        {"layer": name, "parameters": count, "axis": "bits", "value": b}))
        for s in sparsity:
            out.append((Probe(sparsity_probe(name, s), name, "sparsity", s),
                        {"layer": name, "parameters": count, "axis": "sparsity", "value": s}))
    return out


def _through_sweep(model: nn.Module, data: Any, ev: Evaluator, probes: list[Planned], executor: cf.Executor,
                   progress: bool, deadline: float | None) -> tuple[dict[Recipe, Point], Point]:
    """Every probe as a full evaluation (compress, run the whole model), through ``sweep``'s executor."""

    result = sweep(model, data, bits=(), sparsity=(), recipes=[p.recipe for p, _ in probes], evaluator=ev, executor=executor,
                   progress=progress, deadline=deadline)
    return {recipe_of(p): p for p in result.points}, ev.baseline()
