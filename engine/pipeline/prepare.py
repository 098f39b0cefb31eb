"""The fidelity steps of a recipe, in ``compress``: resolved, checked before work, applied to the copy, recorded.

``resolve_transforms`` turns ``Recipe.transforms`` into the steps to run (``None``: the defaults
``engine.quantization.transforms.default_transforms`` chooses for the model and runtime) and refuses
what cannot run before any slow work: a step that needs calibration data without it, any step on an
ONNX file (they rewrite the PyTorch model). ``prepare_`` applies them to ``compress``'s own copy;
``tidy_export`` merges the scales smoothing leaves in the exported graph.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from squeezelab.engine.core.errors import CalibrationError, ConfigError
from squeezelab.engine.core.inputs import Inputs
from squeezelab.engine.core.outputs import OutputSelector
from squeezelab.engine.core.recipe import Recipe
from squeezelab.engine.core.runtimes import Int8Dynamic, Int8Static
from squeezelab.engine.core.transforms import Transform
from squeezelab.engine.quantization.transforms import TransformContext, apply_transforms_, default_transforms
from squeezelab.engine.runtime.ort_tools import resolve_reduce_range
from squeezelab.engine.runtime.scale_folding import tidy_scales

__all__ = ["resolve_transforms", "check_no_transforms_for_file", "prepare_", "tidy_export"]


def resolve_transforms(model: nn.Module, recipe: Recipe, calibration: Inputs | None) -> tuple[tuple[Transform, ...], str]:
    """The steps ``compress`` applies, and why; refused now if they need calibration data and have none."""
    if recipe.transforms is None:
        return default_transforms(model, recipe.runtime, calibration is not None)
    if recipe.transforms and calibration is None:
        raise CalibrationError(
            f"{recipe.label}: {', '.join(step.label for step in recipe.transforms)} measure activations, so they "
            "need calibration data; pass calibration_data= (a few hundred representative inputs, apart from the "
            "data you evaluate on), or transforms=() to leave them out."
        )
    return recipe.transforms, "set in the recipe"


def check_no_transforms_for_file(recipe: Recipe) -> None:
    """An ONNX file has no PyTorch model to rewrite: explicit steps are refused (None means none)."""
    if recipe.transforms:
        raise ConfigError(
            f"{recipe.label}: {', '.join(step.label for step in recipe.transforms)} rewrite the PyTorch model "
            "before export, and an ONNX file has none; pass the PyTorch model, or transforms=() for the file."
        )


def prepare_(
    work: nn.Module, recipe: Recipe, steps: tuple[Transform, ...], why: str, calibration: Inputs | None,
    output: OutputSelector,
) -> dict[str, Any]:
    """Apply ``steps`` to ``work`` in place; the record for ``Compressed.details["transforms"]``."""
    if not steps:
        return {"applied": [], "why": why}
    runtime = recipe.runtime
    reduce_range = resolve_reduce_range(runtime) if isinstance(runtime, (Int8Dynamic, Int8Static)) else False
    keep_float = tuple(item.name for item in recipe.layers if item.bits == 32)
    context = TransformContext(calibration=calibration, runtime=runtime, output=output, reduce_range=reduce_range,
                               keep_float=keep_float)
    return {"applied": apply_transforms_(work, steps, context), "why": why}


def tidy_export(onnx_bytes: bytes, record: dict[str, Any]) -> bytes:
    """The export with smoothing's scales merged and folded (``engine.runtime.scale_folding``), counts recorded."""
    if not any(step.get("smoothed") for step in record.get("applied", ())):
        return onnx_bytes
    tidied, counts = tidy_scales(onnx_bytes)
    record.update(counts)
    return tidied
