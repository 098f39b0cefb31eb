"""Sensitivity probes measured in place: one private copy of the model, one layer changed at a time.

``sensitivity.bits_probe`` / ``sparsity_probe`` recipes mean "this layer alone quantized (or pruned),
everything else float32 and dense". Compressing each one copies the whole model, packs the whole
file and runs the whole model on all the data. ``LayerProbes`` computes the same point with less:

* the probed layer's weight is the one ``compress`` would give it (``encode_tensor`` then decode, as
  ``load_decoded_`` does; or the layer-scope magnitude mask, baked), written into one private copy
  of the model and put back afterwards;
* the outputs come from ``replay.ActivationReplay``: the model runs from the changed layer's stage
  onward, the stages before it replayed from the fp32 run;
* the file's size is the packed file's (``packed_size.SizeOracle``), without writing it;
* the point is scored like ``evaluation.run_point``'s (same metric, same reference outputs).

Every point is stored in the evaluator's cache under the recipe's own key, so the full evaluation
and this one share entries.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from squeezelab.engine.core.copying import copy_model
from squeezelab.engine.core.examples import probe_example
from squeezelab.engine.core.layers import chosen_layers
from squeezelab.engine.core.outputs import SelectedOutput
from squeezelab.engine.core.quantizers import QuantizationConfig
from squeezelab.engine.core.recipe import Recipe
from squeezelab.engine.explore.evaluation import Evaluator
from squeezelab.engine.explore.packed_size import SizeOracle
from squeezelab.engine.explore.replay import ActivationReplay
from squeezelab.engine.measurement.metrics import point_of, scores_of
from squeezelab.engine.measurement.point import Point
from squeezelab.engine.pipeline.artifact import class_path
from squeezelab.engine.pipeline.compressed import Compressed
from squeezelab.engine.pipeline.coverage import encoded_weight_fraction
from squeezelab.engine.pipeline.input_checks import check_output_rows
from squeezelab.engine.pruning.prune import bake_masks_, magnitude_masks
from squeezelab.engine.quantization.encoding import encode_float, encode_tensor
from squeezelab.engine.quantization.simulated import encode_model

__all__ = ["LayerProbes", "Probe", "Planned", "layer_work", "measure_probes", "probe_table"]


@dataclass(frozen=True)
class Probe:
    """One probe: ``layer`` alone at ``value`` on ``axis`` ("bits" or "sparsity"), as the ``recipe`` says."""

    recipe: Recipe
    layer: str
    axis: str
    value: float


# One probe and the row it fills: (Probe, {"layer", "parameters", "axis", "value"}).
Planned = tuple[Probe, dict[str, Any]]


class LayerProbes:
    """Measures single-layer probes of ``ev``'s PyTorch model on ``ev``'s data (see the module docstring)."""

    def __init__(self, ev: Evaluator, layers: Sequence[str], quantizer: QuantizationConfig) -> None:
        assert isinstance(ev.model, nn.Module)
        self.ev, self.quantizer = ev, quantizer
        self.model = copy_model(ev.model).eval()
        bake_masks_(self.model)  # as compress does: plain weights
        samples = ev.samples
        example = samples.inputs.slice(0, 1)
        _, self.spec = probe_example(self.model, example, ev.settings.output)
        self.example = example
        runner = SelectedOutput(self.model, self.spec.kind, self.spec.names, ev.settings.output).eval()
        self.replay = ActivationReplay(self.model, runner, self._prepare, samples.inputs, list(layers),
                                       ev.settings.eval_batch_size)
        self.floats = encode_model(self.model, None)  # every tensor as the float file stores it
        # weight_sparsity's count over every layer, kept so that a probe recounts its own layer only
        self.zeros = {name: int((m.weight == 0).sum()) for name, m in chosen_layers(self.model)}
        self.weights = sum(m.weight.numel() for _, m in chosen_layers(self.model))
        self.model_class = class_path(ev.model)
        self.sizes = SizeOracle()
        self.metric = ev.settings.resolved_metric(has_targets=samples.targets is not None)
        self.reference = ev.reference()

    def _prepare(self, inputs: Any) -> tuple[torch.Tensor, ...]:
        """Positional tensors in the spec's order (``Compressed.prepare``'s form for a PyTorch model)."""
        args, kwargs = inputs.check(self.spec).torch()
        return (*args, *kwargs.values())

    def _changed_weight(self, probe: Probe, weight: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """The weight ``compress`` gives the layer under ``probe``, and its encoding in the file."""
        if probe.axis == "bits":
            enc = encode_tensor(weight, self.quantizer.with_bits(int(probe.value)))
            return enc.decode().to(weight.dtype), enc
        (mask,) = magnitude_masks([weight], float(probe.value), "layer")
        pruned = weight * mask.to(weight.dtype)
        return pruned, None

    def measure(self, probe: Probe) -> Point:
        """The point of ``probe.recipe`` (not cached here: ``evaluate`` stores it)."""
        started = time.perf_counter()
        module = self.model.get_submodule(probe.layer)
        original = module.weight.detach().clone()
        changed, encoding = self._changed_weight(probe, original)
        encoded = {**self.floats, f"{probe.layer}.weight": encoding if encoding is not None else encode_float(changed)}
        with torch.no_grad():
            module.weight.copy_(changed)
        try:
            outputs = self.replay.outputs(probe.layer)
        finally:
            with torch.no_grad():
                module.weight.copy_(original)
            self.replay.refresh()  # the model is fp32 again: a cache a caller edited in place is refilled now
        zeros = sum(self.zeros.values()) - self.zeros[probe.layer] + int((changed == 0).sum())
        point = self._point(probe, outputs, encoded).replace(weight_sparsity=zeros / self.weights if self.weights else 0.0)
        return point.replace(seconds=round(time.perf_counter() - started, 4))

    def _point(self, probe: Probe, outputs: np.ndarray, encoded: dict[str, Any]) -> Point:
        """``outputs`` scored as ``run_point`` scores them, with the probe's file size."""
        samples = self.ev.samples
        check_output_rows(outputs, samples.inputs, self.spec, probe.recipe.label)
        value, scores = scores_of(self.metric, outputs, samples, self.reference)
        # model=None: Compressed would count every layer's zeros; measure() counts the probed layer's only
        c = Compressed(model=None, recipe=probe.recipe, example=self.example, onnx_bytes=None, artifact_bytes=b"",
                       output=self.ev.settings.output, details={"quantized_weight_fraction": encoded_weight_fraction(encoded)},
                       spec=self.spec)
        point = point_of(c, metric=self.metric, value=value, scores=scores, n_samples=len(samples), latency=None,
                         settings=self.ev.settings)
        return point.replace(size_bytes=self.sizes.size(encoded, probe.recipe.to_dict(), self.model_class))


def layer_work(model: nn.Module, ev: Evaluator, names: list[str]) -> dict[str, float]:
    """Per sample, the multiply-adds a probe of each layer re-runs: its own and those of every layer called after it.

    One forward pass on the first sample (a batch of one), in eval mode (restored after), hooks removed: the caller's model is
    left as it was. A layer called more than once counts each call, from its first one.
    """
    wanted = set(names)
    order: list[str] = []
    macs: dict[str, float] = {}

    def hook(name: str) -> Any:
        def count(module: nn.Module, _args: Any, out: Any) -> None:
            if isinstance(out, torch.Tensor) and getattr(module, "weight", None) is not None:
                # out elements x weights per output channel: Linear (out, in), Conv (out, in / groups, k...)
                macs[name] = macs.get(name, 0.0) + out.numel() * module.weight[0].numel()
                if name not in order:
                    order.append(name)
        return count

    training = [m for m in model.modules() if m.training]
    hooks = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n in wanted]
    try:
        model.eval()
        args, kwargs = ev.samples.inputs.slice(0, 1).torch()
        with torch.no_grad():
            model(*args, **kwargs)
    finally:
        for h in hooks:
            h.remove()
        for m in training:
            m.train(True)
    suffix, after = {}, 0.0
    for name in reversed(order):
        after += macs[name]
        suffix[name] = after
    return {name: suffix.get(name, 0.0) for name in names}


def measure_probes(ev: Evaluator, names: list[str], quantizer: QuantizationConfig, probes: list[Planned], progress: bool,
                   deadline: float | None) -> tuple[dict[Recipe, Point], Point]:
    """Every probe from the cache, or measured by ``LayerProbes`` (built only when one is missing: a second call
    reads files only). ``deadline``: probes not measured by then are left out."""
    from tqdm.auto import tqdm  # lazily, as sweep does: import squeezelab stays lean

    base = ev.baseline()  # measured whatever the deadline: every drop needs it
    points: dict[Recipe, Point] = {}
    bench: LayerProbes | None = None
    # The bar counts the multiply-adds each probe re-runs (an early layer's probe runs most of the model, the
    # last one's almost nothing), so the time left it shows follows the work left, not the probes left.
    work = layer_work(ev.model, ev, names) if progress and isinstance(ev.model, nn.Module) else {}
    total = sum(work.get(p.layer, 0.0) * len(ev.samples) for p, _ in probes)
    with tqdm(total=total or len(probes), desc="layer sensitivity", disable=not progress, unit="MAC" if total else "probe",
              unit_scale=bool(total)) as bar:
        for probe, _ in probes:
            point = ev.cached(probe.recipe)
            if point is None and (deadline is None or time.monotonic() <= deadline):  # else not probed: no figures
                bench = bench or LayerProbes(ev, names, quantizer)
                point = ev.store(probe.recipe, bench.measure(probe))
            if point is not None:
                points[probe.recipe] = point
            bar.update(work.get(probe.layer, 0.0) * len(ev.samples) if total else 1)
    return points, base


def probe_table(probes: list[Planned], points: dict[Recipe, Point], base: Point, quantizer: QuantizationConfig) -> Any:
    """The sensitivity table (``layer_sensitivity``'s columns) of the measured ``points``; NaN where none."""
    import pandas as pd  # lazily: heavy, and import squeezelab stays lean

    key = base.metric_key
    rows = []
    for probe, info in probes:
        point = points.get(probe.recipe)
        figure = float("nan") if point is None else point.value  # not probed before the deadline
        drop = base.value - figure
        size = None if point is None else point.size_bytes
        rows.append({**info, key: figure, "drop": drop, f"{key}_drop": drop, "size_bytes": size})
    table = pd.DataFrame(rows)
    table.attrs.update({"metric": base.metric, "metric_key": key, "percent": bool(base.percent)})
    table.attrs["baseline_value"] = float(base.value)
    table.attrs["quantization"] = quantizer.label
    return table
