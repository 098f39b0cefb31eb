"""``compress(model, recipe)``: prune, quantize, export — on a copy, checked before the slow work.

The caller's model is deep-copied first and never changed (past 1 GiB of weights, when
nothing will change them, the copy's tensors are the caller's: ``export_memo.private_copy``). Everything that
can be checked cheaply (the model's weights, the example inputs and output,
calibration data, the recipe) is checked before any slow work starts, so a
mistake costs seconds, not a finished calibration.

``model`` may also be an ONNX file (a path, bytes or an ``onnx.ModelProto``):
a team that exports its own model gets the ONNX Runtime recipes (fp32,
float16, int8 dynamic and static) and everything measured on them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from squeezelab.engine.core.arguments import as_integer
from squeezelab.engine.pipeline.artifact import class_path, pack_encoded
from squeezelab.engine.pipeline.compressed import Compressed
from squeezelab.engine.pipeline.export_memo import export_once, private_copy
from squeezelab.engine.pipeline.coverage import check_int8_coverage, check_recipe_reaches_layers, encoded_weight_fraction
from squeezelab.engine.core.errors import (
    CalibrationError,
    ConfigError,
    DataError,
    ExampleInputError,
    ExportError,
    InvalidWeightsError,
    ModelError,
    SqueezeError,
)
from squeezelab.engine.runtime.export import DEFAULT_OPSET, export_onnx, tensor_bytes
from squeezelab.engine.runtime.external_data import is_file_model
from squeezelab.engine.runtime.stages import is_recording, recording, release_memory, stage
from squeezelab.engine.runtime.weight_only import calibrates, check_weight_only_calibration
from squeezelab.engine.runtime.export_check import check_export
from squeezelab.engine.core.examples import check_input_names, example_batch, probe_example
from squeezelab.engine.pipeline.input_checks import check_graph_inputs, check_graph_rows, zeros_like_spec
from squeezelab.engine.pipeline.prepare import check_no_transforms_for_file, prepare_, resolve_transforms, tidy_export
from squeezelab.engine.core.inputs import Inputs, InputSpec
from squeezelab.engine.runtime.onnx_files import is_onnx_model, load_onnx_model, spec_of_graph, select_graph_output
from squeezelab.engine.core.outputs import OutputSelector, SelectedOutput, check_selector, select_output
from squeezelab.engine.core.layers import FilterFn
from squeezelab.engine.quantization.simulated import encode_model, load_decoded_
from squeezelab.engine.pruning.prune import STRUCTURAL, PruneContext, apply_pruning_, bake_masks_
from squeezelab.engine.core.recipe import Recipe
from squeezelab.engine.core.runtimes import Int8Dynamic, Int8Static
from squeezelab.engine.core.samples import Samples, read_inputs, read_samples
from squeezelab.engine.runtime.ort_quantize import check_convertible, convert_onnx, graph_facts

__all__ = ["compress", "compress_for_data", "prepared_fp32", "check_model"]


def check_model(model: Any) -> None:
    """Raise unless ``model`` is an ``nn.Module`` whose float tensors are all finite."""
    if not isinstance(model, nn.Module):
        raise ModelError(f"expected a torch.nn.Module (or an ONNX file), got {type(model).__name__}.")
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).sum())
            raise InvalidWeightsError(
                f"tensor {name!r} holds {bad} NaN/Inf value(s); compressing it would hide the problem. "
                "Fix the training run or reload a finite checkpoint."
            )


def _importance_samples(data: Any, spec: InputSpec) -> Samples | None:
    """``calibration_data`` as the samples a structural step scores importance on (targets kept if given)."""
    if data is None:
        return None
    if isinstance(data, Inputs):
        return Samples(data, None)
    try:
        return read_samples(data, "calibration_data")
    except SqueezeError:  # bare inputs of a several-input model: read as calibration inputs
        return Samples(read_inputs(data, spec), None)


def _equal_batch_size(n: int, cap: int = 64) -> int:
    """Largest batch size <= cap that divides n.

    ONNX Runtime's histogram calibrators (entropy, percentile) stack the
    collected batches and fail on a ragged last batch, so every calibration
    batch has the same size and no sample is dropped.
    """
    return max(b for b in range(1, min(cap, n) + 1) if n % b == 0)


def _calibration_inputs(data: Any, spec: InputSpec, *, required: bool) -> Inputs | None:
    """``calibration_data`` read and checked against the model's inputs (shapes, token ids, lengths).

    Read even when the recipe does not calibrate: the export is checked on a sample of it.
    """
    empty = data is None or (isinstance(data, (list, tuple, np.ndarray, torch.Tensor)) and len(data) == 0)
    if empty:
        if not required:
            return None
        raise CalibrationError(
            "Int8Static needs calibration data and got none; pass calibration_data= (a few hundred "
            "representative inputs, e.g. a slice of the training set), or use runtime=Int8Dynamic()."
        )
    inputs = read_inputs(data, spec)
    try:
        return inputs.check(spec, "calibration inputs")
    except ExampleInputError as exc:
        raise CalibrationError(f"{exc} Pass calibration inputs shaped like the example inputs.") from None


def _calibration_feeds(inputs: Inputs, spec: InputSpec) -> list[dict[str, np.ndarray]]:
    """Equal batches of ONNX feeds; a graph with a fixed batch ``k`` gets batches of ``k``
    (the samples cycled to fill the last one, so no sample is left out)."""
    fixed = spec.batch
    if fixed:
        inputs = inputs.tile(-(-len(inputs) // fixed) * fixed)
    step = fixed or _equal_batch_size(len(inputs))
    return [inputs.slice(i, i + step).feeds(spec.names) for i in range(0, len(inputs), step)]


def _check_arguments(recipe: Any, filter_fn: Any, exporter: str, opset: Any, output: Any) -> Recipe:
    recipe = Recipe() if recipe is None else recipe
    if not isinstance(recipe, Recipe):
        raise ConfigError(f"recipe must be a squeezelab Recipe, got {type(recipe).__name__}.")
    if filter_fn is not None and recipe.runtime.onnx and recipe.pruning is None:
        raise ConfigError(
            "filter_fn chooses layers for pruning and simulated quantization; ONNX Runtime's int8 and "
            "float16 conversions apply to the whole graph. Use runtime=Simulated() with filter_fn."
        )
    if exporter not in ("torchscript", "dynamo"):
        raise ConfigError(f"exporter={exporter!r}; use 'torchscript' (default) or 'dynamo'.")
    if as_integer(opset) is None or not 13 <= as_integer(opset) <= 23:
        raise ConfigError(f"opset={opset!r}; use an ONNX opset from 13 to 23 (an integer; default {DEFAULT_OPSET}).")
    check_selector(output)
    return recipe


def compress(
    model: nn.Module | str | Path | bytes | Any,
    recipe: Recipe | None = None,
    *,
    example_inputs: Any = None,
    calibration_data: Any = None,
    output: OutputSelector = None,
    filter_fn: FilterFn | None = None,
    exporter: str = "torchscript",
    opset: int = DEFAULT_OPSET,
) -> Compressed:
    """Apply ``recipe`` to a copy of ``model``; ``model`` itself is never changed.

    Args:
        model: a PyTorch module, or an ONNX model (a path, bytes or ``onnx.ModelProto``) for the
            ONNX Runtime recipes.
        recipe: what to do; ``Recipe()`` (the default) is the fp32 ONNX baseline.
        example_inputs: one batch the model accepts: a tensor or array, a tuple of them
            (positional inputs) or a dict of them (keyword inputs, as Hugging Face models take).
            Integer inputs keep their dtype. Optional for an ONNX file.
        calibration_data: inputs (or ``(inputs, targets)`` data) for ``Int8Static`` calibration; a
            ``ChannelPruning`` or ``LayerPruning`` step scores channels and blocks on them too.
        output: which output is evaluated and exported: None (the first tensor), a key,
            an index, or a callable ``outputs -> tensor`` (see ``engine.outputs``).
        filter_fn: ``filter_fn(module, fqn) -> bool`` choosing layers, for pruning and for
            simulated quantization alike (a layer it rejects is neither pruned nor quantized).
        exporter: ``"torchscript"`` (default) or ``"dynamo"``.
        opset: ONNX opset of the export.

    Examples:
        >>> import torch
        >>> import squeezelab as sl
        >>> net = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
        >>> c = sl.compress(net, sl.Recipe(runtime=sl.Int8Dynamic()), example_inputs=torch.randn(2, 16))
        >>> c.executable, c.predict(torch.randn(3, 16).numpy()).shape
        (True, (3, 4))
    """
    return _compress(model, recipe, example_inputs, calibration_data, output, filter_fn, exporter, opset, None)


def compress_for_data(
    model: nn.Module | Any,
    recipe: Recipe,
    data: Inputs,
    what: str,
    *,
    example_inputs: Any = None,
    calibration_data: Any = None,
    output: OutputSelector = None,
) -> Compressed:
    """``compress`` when the data the result will be measured on is known (``measure``, ``compare``,
    the sweeps' and searches' evaluator).

    All of ``data`` is checked against the model before any work (input names, shapes, token ids
    against the vocabulary, sequence lengths against the positions; ``what`` names it in errors),
    and the fp32 export is compared with PyTorch on a sample of it (``engine.runtime.export_check``).
    """
    return _compress(model, recipe, example_inputs, calibration_data, output, None, "torchscript", DEFAULT_OPSET, (data, what))


def _data_checked(data: tuple[Inputs, str] | None, spec: InputSpec) -> Inputs | None:
    """The data to measure on, checked against ``spec`` (a ``DataError`` naming ``what``), or None."""
    if data is None:
        return None
    inputs, what = data
    try:
        return inputs.check(spec, what)
    except ExampleInputError as exc:  # the example came from this data: a mismatch is the data's
        raise DataError(str(exc)) from None


def prepared_fp32(model: nn.Module, recipe: Recipe, *, example_inputs: Any, calibration_data: Any,
                  output: OutputSelector = None) -> Compressed:
    """The fp32 model ``recipe``'s runtime would quantize: its fidelity steps applied (``Recipe.transforms``),
    exported and checked, not quantized. A search quantizes this one export many ways."""
    return _compress(model, recipe, example_inputs, calibration_data, output, None, "torchscript", DEFAULT_OPSET, None,
                     fp32_only=True)


def _compress(
    model: Any, recipe: Any, example_inputs: Any, calibration_data: Any, output: OutputSelector,
    filter_fn: FilterFn | None, exporter: str, opset: Any, data: tuple[Inputs, str] | None, fp32_only: bool = False,
) -> Compressed:
    """``_compress_model`` (or the ONNX file's way), each stage's wall time and peak memory recorded in the details."""
    recipe = _check_arguments(recipe, filter_fn, exporter, opset, output)
    opset = as_integer(opset)  # np.int64(17) exports as 17
    outermost = not is_recording()  # a search that records its own stages keeps them
    with recording() as stages:
        if is_onnx_model(model):
            result = _compress_onnx_file(model, recipe, example_inputs, calibration_data, output, data)
        else:
            result = _compress_model(model, recipe, example_inputs, calibration_data, output, filter_fn, exporter,
                                     opset, data, fp32_only)
    if outermost:
        result.details.update(stages.summary())
    return result


def _compress_model(
    model: Any, recipe: Recipe, example_inputs: Any, calibration_data: Any, output: OutputSelector,
    filter_fn: FilterFn | None, exporter: str, opset: int, data: tuple[Inputs, str] | None, fp32_only: bool,
) -> Compressed:
    with stage("check"):
        work, example, raw, spec, measured, calibration, feeds, steps, steps_why = _checked_copy(
            model, recipe, example_inputs, calibration_data, output, filter_fn, data, fp32_only
        )
    structural = isinstance(recipe.pruning, STRUCTURAL)
    if recipe.pruning is not None:  # one registry for every pruning config (engine.pruning)
        with stage("prune"):
            importance = _importance_samples(calibration_data, spec) if structural else None
            context = PruneContext(example, filter_fn, recipe.layer_sparsity(), None, importance, output)
            apply_pruning_(work, recipe.pruning, context)
            bake_masks_(work)  # plain weights: the export and the packed file see the zeros, not masks

    if not recipe.runtime.onnx:
        return _simulated_result(work, recipe, example, output, filter_fn, model_class=class_path(model), spec=spec)
    # A model taking positional tensors and returning one is exported as it is (its initializers keep
    # their names); anything else through the wrapper that feeds keywords and selects the output.
    plain = spec.kind != "dict" and output is None and isinstance(raw, torch.Tensor)
    exported = work if plain else SelectedOutput(work, spec.kind, spec.names, output)
    with stage("prepare"):
        transforms = prepare_(work, recipe, steps, steps_why, calibration, output)  # smoothing etc., exact in fp32
    notes: list[str] = []  # the tracer's warnings: cited if the export check fails
    with stage("export"):
        rank = select_output(raw, output).ndim if raw is not None else None  # saves the exporter a forward pass

        onnx_bytes = export_once(  # a large model nothing changed: the export of the last call on it, if any
            work, model, (example, opset, exporter, output, plain), notes,
            lambda seen: tidy_export(export_onnx(exported, example, opset=opset, exporter=exporter, notes=seen,
                                                 output_rank=rank), transforms),
        )
    with stage("check_export"):
        check_graph_inputs(onnx_bytes, spec)
        check_graph_rows(onnx_bytes, example, spec, None, None)  # one output row per sample, before comparing any
        # Before anything is quantized or measured: the fp32 export must compute what PyTorch does, on the
        # example and on real data (a traced `if` answers every other input with the example's branch).
        sample, label = (measured, data[1]) if measured is not None else (calibration, "calibration_data")
        pruned = (  # Torch-Pruning's result is checked too: the export must compute what the pruned model does
            f"{recipe.pruning.label} cut a coupled dimension inconsistently (Torch-Pruning issues #481, #513: exclude "
            "the group's layers with ignored=/filter_fn)" if structural else None
        )
        check_export(onnx_bytes, lambda x: _positional_call(exported, x), example, sample, label=label, notes=notes,
                     also=pruned)
    details = {"exporter": exporter, "model_class": class_path(model), "tracer_warnings": len(notes), "transforms": transforms}
    final = Recipe() if fp32_only else recipe  # prepared_fp32: the export the runtime would quantize, as it is
    return _onnx_result(work, final, example, output, None, onnx_bytes, feeds, details, spec=spec)


def _checked_copy(
    model: Any, recipe: Recipe, example_inputs: Any, calibration_data: Any, output: OutputSelector,
    filter_fn: FilterFn | None, data: tuple[Inputs, str] | None, fp32_only: bool,
) -> tuple:
    """Everything checked before slow work, on ``compress``'s own copy of the model."""
    check_model(model)
    check_convertible(tensor_bytes(model), recipe)  # a conversion that cannot take the model's size: before any work
    example = example_batch(example_inputs)
    work = private_copy(model, recipe, calibration_data)
    bake_masks_(work)  # a model pruned with masks is exported as the plain weights it computes with
    if data is not None:
        check_input_names(work, data[0], data[1])  # before the example (often the data's first row) is run
    # The one run on the example also learns the vocabulary and positions the embeddings hold.
    raw, spec = probe_example(work, example, output)  # (Inputs.call passes copies: a model may edit its input in place)
    check_recipe_reaches_layers(work, recipe, filter_fn)
    _check_layer_names(work, recipe)
    measured = _data_checked(data, spec)
    calibration = _calibration_inputs(calibration_data, spec, required=isinstance(recipe.runtime, Int8Static))
    check_weight_only_calibration(recipe.runtime, calibration is not None)  # GPTQ: refused without data, before export
    calibrates_runtime = isinstance(recipe.runtime, Int8Static) or calibrates(recipe.runtime)
    calibrated = calibration is not None and calibrates_runtime and not fp32_only  # prepared_fp32 quantizes nothing
    feeds = _calibration_feeds(calibration, spec) if calibrated else None
    steps, steps_why = resolve_transforms(work, recipe, calibration)  # refused now if they lack calibration data
    return work, example, raw, spec, measured, calibration, feeds, steps, steps_why


def _positional_call(module: nn.Module, inputs: Inputs) -> torch.Tensor:
    """``module`` (the exported one: positional inputs in the spec's order) on ``inputs``."""
    args, kwargs = inputs.torch()
    with torch.no_grad():
        return module(*args, *kwargs.values())


def _check_layer_names(model: nn.Module, recipe: Recipe) -> None:
    """Per-layer settings of an int8 runtime must name modules of the model (checked before exporting)."""
    if not isinstance(recipe.runtime, (Int8Dynamic, Int8Static)) or not recipe.layers:
        return
    known = {name for name, _ in model.named_modules() if name}
    unknown = [item.name for item in recipe.layers if item.name not in known]
    if unknown:
        examples = ", ".join(sorted(known)[:6])
        raise ConfigError(
            f"{recipe.label}: layers {unknown} are not modules of {type(model).__name__}; use names from "
            f"model.named_modules() (e.g. {examples})."
        )


def _simulated_result(
    work: nn.Module, recipe: Recipe, example: Inputs, output: OutputSelector, filter_fn: FilterFn | None, *, model_class: str,
    spec: InputSpec | None = None,
) -> Compressed:
    """Quantized weights packed into the artifact, and loaded back into ``work`` as the floats they decode to."""
    encoded = encode_model(
        work, recipe.quantization, filter_fn=filter_fn, coding=recipe.runtime.coding, layer_bits=recipe.layer_bits()
    )
    load_decoded_(work, encoded)
    artifact = pack_encoded(encoded, recipe=recipe.to_dict(), model_class=model_class)
    details = {"model_class": model_class, "quantized_weight_fraction": encoded_weight_fraction(encoded)}
    return Compressed(
        model=work, recipe=recipe, example=example, output=output, onnx_bytes=None, artifact_bytes=artifact,
        details=details, spec=spec,
    )


def _onnx_result(
    work: nn.Module | None,
    recipe: Recipe,
    example: Inputs,
    output: OutputSelector,
    output_name: str | None,
    onnx_bytes: bytes,
    feeds: list[dict[str, np.ndarray]] | None,
    details: dict[str, Any],
    spec: InputSpec | None = None,
) -> Compressed:
    """The fp32 graph converted by ONNX Runtime's tools as the recipe says, and checked to run."""

    spec = spec or example.spec()
    if isinstance(recipe.runtime, (Int8Dynamic, Int8Static)):
        check_int8_coverage(onnx_bytes, recipe)  # before quantizing: calibration is the slow part
    large = is_file_model(onnx_bytes)
    try:
        with stage("convert"):
            onnx_bytes, choices = convert_onnx(onnx_bytes, recipe, feeds)
    except SqueezeError:
        raise
    except Exception as exc:  # onnxruntime.quantization raises many types
        raise ExportError(f"ONNX Runtime could not make the {recipe.label} model: {exc}") from exc
    if large:  # the converters freed several model-sized copies the C heap keeps
        release_memory()
    with stage("verify"):
        return _checked_result(work, recipe, example, output, output_name, onnx_bytes, details, choices, spec)


def _checked_result(
    work: nn.Module | None, recipe: Recipe, example: Inputs, output: OutputSelector, output_name: str | None,
    onnx_bytes: bytes, details: dict[str, Any], choices: dict[str, Any], spec: InputSpec,
) -> Compressed:
    """The converted model as a ``Compressed``, refused unless it quantized something and runs on the CPU."""

    facts = graph_facts(onnx_bytes)
    if recipe.bits == 8 and facts["int8_weight_fraction"] == 0.0:  # ONNX Runtime declined every op
        raise ConfigError(
            f"{recipe.label} quantized nothing: the graph has no op ONNX Runtime quantizes with these "
            f"settings (ops present: {', '.join(sorted(facts['op_counts']))}). Choose other op_types, "
            "or Int8Static() without op_types."
        )
    result = Compressed(
        model=work,
        recipe=recipe,
        example=example,
        output=output,
        output_name=output_name,
        spec=spec,
        onnx_bytes=onnx_bytes,
        artifact_bytes=onnx_bytes,
        details={**details, **facts, **choices},
    )
    try:  # every produced model must load and run on the CPU provider
        result.predict(example)
    except Exception as exc:
        raise ExportError(f"the {recipe.label} ONNX model does not run in ONNX Runtime on the CPU: {exc}") from exc
    if is_file_model(onnx_bytes):  # its session holds all its weights: made again when the caller runs it
        result.close_sessions()
    return result


def _compress_onnx_file(
    source: Any, recipe: Recipe, example_inputs: Any, calibration_data: Any, output: OutputSelector,
    data: tuple[Inputs, str] | None = None,
) -> Compressed:
    """An ONNX model given as a file, bytes or proto: only what ONNX Runtime's tools do to a graph applies."""
    # Layers kept float under int8 (bits=32) are graph nodes excluded by name: that works on a file too.
    float_only = isinstance(recipe.runtime, (Int8Dynamic, Int8Static)) and all(
        item.bits == 32 and not item.sparsity for item in recipe.layers
    )
    if not recipe.runtime.onnx or recipe.pruning is not None or (recipe.layers and not float_only):
        raise ConfigError(
            f"{recipe.label} needs the PyTorch model (pruning and simulated quantization change its weights); "
            "an ONNX file takes the ONNX Runtime recipes: Recipe(), Recipe(quantization=Float16()), "
            "Recipe(runtime=Int8Dynamic()) or Recipe(runtime=Int8Static())."
        )
    check_no_transforms_for_file(recipe)
    with stage("load"):
        onnx_bytes, label = load_onnx_model(source)
    spec = spec_of_graph(onnx_bytes)  # with the fixed batch and the token-id inputs' vocabularies, if any
    output_name = select_graph_output(onnx_bytes, output)
    _data_checked(data, spec)  # names, shapes, token ids: before anything runs
    if example_inputs is not None:
        example = example_batch(example_inputs).check(spec, "example_inputs")
    else:
        example = zeros_like_spec(spec)
    static = isinstance(recipe.runtime, Int8Static)
    calibration = _calibration_inputs(calibration_data, spec, required=static)
    check_weight_only_calibration(recipe.runtime, calibration is not None)
    feeds = _calibration_feeds(calibration, spec) if calibration is not None and (static or calibrates(recipe.runtime)) else None
    details = {"source": label, "model_class": None}
    if spec.batch:  # evaluated and timed in batches of that size (predict pads the last one)
        details["fixed_batch"] = spec.batch
    check_graph_rows(onnx_bytes, example, spec, output_name, label)
    return _onnx_result(None, recipe, example, None, output_name, onnx_bytes, feeds, details, spec=spec)
