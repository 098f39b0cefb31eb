"""Apply a recipe's fidelity steps (``engine.core.transforms``) to the float model, and choose the defaults.

One private registry keyed by step type, as ``prune`` dispatches pruning configs. Each applier
changes the model in place (``compress`` passes its own copy) and returns what it did, as plain
data for ``Compressed.details["transforms"]`` and the report.

``default_transforms`` decides what ``Recipe(transforms=None)`` means for a model and runtime, and
says why: smoothing for a transformer quantized with static int8 (its calibration data is there
anyway) or with dynamic int8 when calibration data is given; bias correction for a CNN under static
int8 (``_cnn_defaults`` gives the measured reason, and why equalisation is not a default); nothing
otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from squeezelab.engine.core.errors import CalibrationError, ConfigError
from squeezelab.engine.core.inputs import Inputs
from squeezelab.engine.core.outputs import OutputSelector, select_output
from squeezelab.engine.core.runtimes import Int8Dynamic, Int8Static, Runtime
from squeezelab.engine.core.transforms import AdaRound, BiasCorrection, Equalization, Smoothing, Transform
from squeezelab.engine.quantization.adaround import adaround_
from squeezelab.engine.quantization.bias_correction import correct_bias_
from squeezelab.engine.quantization.equalization import equalize_
from squeezelab.engine.quantization.smoothing import Int8Arithmetic, smooth_

__all__ = ["TransformContext", "apply_transforms_", "default_transforms", "register_transform", "has_applier", "transformer_like"]


@dataclass(frozen=True)
class TransformContext:
    """What a step may use: calibration inputs, the runtime it prepares for, and the output that must not change."""

    calibration: Inputs | None
    runtime: Runtime
    output: OutputSelector = None
    reduce_range: bool = False  # the runtime's resolved choice: 7-bit weights (int8 codes up to 64, ONNX Runtime's [-64, 64])
    keep_float: tuple[str, ...] = ()  # modules the runtime keeps float (LayerSetting(bits=32)), children included

    def output_of(self, model: nn.Module, inputs: Inputs) -> torch.Tensor:
        return select_output(inputs.call(model), self.output)

    def require_calibration(self, step: Transform) -> Inputs:
        if self.calibration is None or len(self.calibration) == 0:
            raise CalibrationError(
                f"{step.label} measures activations, so it needs calibration data; pass calibration_data= (a "
                "few hundred representative inputs, apart from the data you evaluate on), or transforms=()."
            )
        return self.calibration


_Applier = Callable[[nn.Module, Any, TransformContext], dict[str, Any]]
_APPLIERS: dict[type, _Applier] = {}


def register_transform(kind: type) -> Callable[[_Applier], _Applier]:
    """Register the function that applies steps of type ``kind``."""

    def decorate(fn: _Applier) -> _Applier:
        _APPLIERS[kind] = fn
        return fn

    return decorate


def has_applier(kind: type) -> bool:
    """Whether steps of type ``kind`` can be applied (an applier is registered)."""
    return kind in _APPLIERS


def apply_transforms_(model: nn.Module, steps: tuple[Transform, ...], context: TransformContext) -> list[dict[str, Any]]:
    """Apply ``steps`` (already in their canonical order) to ``model`` in place; what each did, in order."""
    done = []
    for step in steps:
        applier = _APPLIERS.get(type(step))
        if applier is None:
            raise ConfigError(f"{step.label}: no applier is registered for {type(step).__name__}.")
        done.append({"step": step.label, **applier(model, step, context)})
    return done


def transformer_like(model: nn.Module) -> bool:
    """A LayerNorm and at least two Linear layers: the shape of a transformer block."""
    kinds = [type(m) for m in model.modules()]
    return any(issubclass(k, nn.LayerNorm) for k in kinds) and sum(issubclass(k, nn.Linear) for k in kinds) >= 2


def default_transforms(model: nn.Module, runtime: Runtime, has_calibration: bool) -> tuple[tuple[Transform, ...], str]:
    """What ``transforms=None`` applies to ``model`` under ``runtime``, and why."""
    if not isinstance(runtime, (Int8Dynamic, Int8Static)):
        return (), "no int8 runtime: nothing to prepare for"
    if not transformer_like(model):
        return _cnn_defaults(model, runtime)
    if isinstance(runtime, Int8Dynamic) and not has_calibration:
        return (), "dynamic int8 without calibration data: smoothing needs activation statistics (pass calibration_data=)"
    return (Smoothing(),), (
        "a transformer: SmoothQuant moves its activation outliers into the weights (alpha chosen per layer group "
        "on the calibration data); on all-MiniLM-L6-v2 static int8 cosine 0.989 -> 0.998"
    )


def _cnn_defaults(model: nn.Module, runtime: Runtime) -> tuple[tuple[Transform, ...], str]:
    """Bias correction for a CNN under static int8, nothing otherwise; with the measured reason."""
    if not any(isinstance(m, (nn.Conv1d, nn.Conv2d)) for m in model.modules()):
        return (), "not a transformer (no LayerNorm with Linear layers) and no convolutions: no smoothing"
    if not isinstance(runtime, Int8Static):
        return (), "a CNN under dynamic int8: its convolutions stay float, nothing to correct"
    return (BiasCorrection(),), (
        "a CNN under static int8: bias correction takes each layer's mean output shift off its bias (int8 weights "
        "and activations simulated as ONNX Runtime quantizes them, on the calibration data); EfficientNet-Lite0 "
        "cosine 0.975 -> 0.995 at the same speed. Not equalisation: exact only through ReLU or nothing, it pairs 2 "
        "layers of EfficientNet-Lite0 (ReLU6 everywhere) and lowered its cosine (0.975 -> 0.972)"
    )


@register_transform(Smoothing)
def _smooth(model: nn.Module, step: Smoothing, context: TransformContext) -> dict[str, Any]:
    groups = smooth_(
        model,
        context.require_calibration(step),
        alpha=step.alpha,
        arithmetic=Int8Arithmetic(
            weight_max=64 if context.reduce_range else 127,
            per_channel=getattr(context.runtime, "per_channel", True),
            signed_activations=getattr(context.runtime, "activations", "uint8") == "int8",
        ),
        check_output=context.output_of,
    )
    smoothed = [g for g in groups if g.alpha]
    return {
        "groups": len(groups),
        "smoothed": len(smoothed),
        "folded_into_value": sum(g.fold_into is not None for g in smoothed),
        "alphas": {"+".join(g.layers): g.alpha for g in groups},
    }


@register_transform(Equalization)
def _equalize(model: nn.Module, step: Equalization, context: TransformContext) -> dict[str, Any]:
    result = equalize_(model, context.require_calibration(step), check_output=context.output_of)
    return {
        "pairs": [f"{p.first}->{p.second}" for p in result.pairs],
        "channels": sum(p.channels for p in result.pairs),
        "batchnorms_folded": len(result.folded),
        "rounds": result.rounds,
        "range_spread": [round(max((p.spread_before for p in result.pairs), default=1.0), 2),
                         round(max((p.spread_after for p in result.pairs), default=1.0), 2)],
        "left_alone": result.skipped,
    }


def _quantized_kinds(model: nn.Module, runtime: Runtime) -> tuple[type, ...]:
    """The layer types ``runtime`` quantizes: its op types, or every Conv and Linear (a transformer's Linear only)."""
    op_types = runtime.quantized_op_types if isinstance(runtime, Int8Dynamic) else runtime.op_types
    if op_types is None:
        return (nn.Linear,) if transformer_like(model) else (nn.Conv1d, nn.Conv2d, nn.Linear)
    convs = (nn.Conv1d, nn.Conv2d) if "Conv" in op_types else ()
    return convs + ((nn.Linear,) if {"MatMul", "Gemm"} & set(op_types) else ())


@register_transform(BiasCorrection)
def _correct_bias(model: nn.Module, step: BiasCorrection, context: TransformContext) -> dict[str, Any]:
    runtime = context.runtime
    result = correct_bias_(
        model, context.require_calibration(step), qmax=64 if context.reduce_range else 127,
        per_channel=getattr(runtime, "per_channel", True), dynamic=isinstance(runtime, Int8Dynamic),
        keep_float=context.keep_float, kinds=_quantized_kinds(model, runtime),
    )
    largest = max(result.shifts.items(), key=lambda item: float(item[1].abs().max()), default=None)
    return {
        "layers": len(result.corrected),
        "samples": result.samples,
        "batchnorms_folded": len(result.folded),
        "largest_shift": [largest[0], round(float(largest[1].abs().max()), 4)] if largest else None,
        "left_alone": {why: len(names) for why, names in result.skipped.items()},
    }


@register_transform(AdaRound)
def _adaround(model: nn.Module, step: AdaRound, context: TransformContext) -> dict[str, Any]:
    runtime = context.runtime
    if isinstance(runtime, Int8Dynamic):
        raise ConfigError(
            f"{step.label} is a step for static int8 (a CNN's convolutions; Int8Dynamic() keeps them float and was "
            "not measured with it). Use runtime=Int8Static(), or leave AdaRound() out."
        )
    result = adaround_(
        model, context.require_calibration(step), qmax=64 if context.reduce_range else 127,
        per_channel=getattr(runtime, "per_channel", True), keep_float=context.keep_float,
        kinds=_quantized_kinds(model, runtime), iterations=step.relaxation,
    )
    ratios = sorted(result.error.values())
    return {
        "layers": len(result.rounded),
        "samples": result.samples,
        "batchnorms_folded": len(result.folded),
        "flipped": round(sum(result.flipped.values()) / max(len(result.flipped), 1), 4),
        "error_vs_nearest": round(ratios[len(ratios) // 2], 3) if ratios else None,  # median over layers
        "seconds": round(result.seconds, 1),
        "left_alone": {why: len(names) for why, names in result.skipped.items()},
    }
