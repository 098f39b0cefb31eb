"""``compress(model, recipe)`` and its result, ``Compressed``.

The caller's model is deep-copied first and never changed. Everything that
can be checked cheaply (the model's weights, the example inputs, calibration
data, the recipe) is checked before any slow work starts, so a mistake costs
seconds, not a finished calibration.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from squeezelab.engine._copy import copy_model
from squeezelab._version import __version__
from squeezelab.engine.artifact import class_path, pack_encoded
from squeezelab.engine.coverage import check_int8_coverage, check_recipe_reaches_layers, encoded_weight_fraction
from squeezelab.engine.data import as_numpy, check_input_shapes, expected_shape, iter_inputs
from squeezelab.engine.errors import (
    ArtifactError,
    CalibrationError,
    ConfigError,
    DataError,
    ExampleInputError,
    ExportError,
    InvalidWeightsError,
    ModelError,
    ProviderFallbackError,
    SqueezeError,
)
from squeezelab.engine.export import DEFAULT_OPSET, export_onnx, input_names_for
from squeezelab.engine.providers import CPU, Placement, check_placement, make_session, node_placement
from squeezelab.engine.pruning import weight_sparsity
from squeezelab.engine.quantize_model import FilterFn, _load_decoded_, encode_model
from squeezelab.engine.recipe import ChannelPruning, Int8Dynamic, Int8Static, Recipe

__all__ = ["Compressed", "compress", "as_example_inputs", "check_model"]


def check_model(model: Any) -> None:
    """Raise unless ``model`` is an ``nn.Module`` whose float tensors are all finite."""
    if not isinstance(model, nn.Module):
        raise ModelError(f"expected a torch.nn.Module, got {type(model).__name__}.")
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).sum())
            raise InvalidWeightsError(
                f"tensor {name!r} holds {bad} NaN/Inf value(s); compressing it would hide the problem. "
                "Fix the training run or reload a finite checkpoint."
            )


def as_example_inputs(example_inputs: Any) -> tuple[torch.Tensor, ...]:
    """Normalise a tensor, array or sequence of them into a tuple of tensors."""
    if example_inputs is None:
        raise ExampleInputError(
            "example_inputs is required to export the model; pass one batch the model accepts, "
            "e.g. example_inputs=torch.randn(1, 1, 8, 8)."
        )
    items = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    out = []
    for item in items:
        if isinstance(item, np.ndarray):
            item = torch.from_numpy(np.array(item, copy=True))
        if not isinstance(item, torch.Tensor):
            raise ExampleInputError(
                f"example_inputs must be tensors or numpy arrays, got {type(item).__name__}."
            )
        if item.ndim == 0 or item.shape[0] < 1:
            raise ExampleInputError(
                f"example input of shape {tuple(item.shape)} has no batch dimension; "
                "add one, e.g. x.unsqueeze(0)."
            )
        # A copy: a model that changes its input in place must not change the caller's tensor.
        out.append(item.detach().float().clone() if item.is_floating_point() else item.detach().clone())
    return tuple(out)


def _run_example(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    try:
        with torch.no_grad():
            out = model(*inputs)
    except Exception as exc:  # the model's own error says what it expected
        shapes = ", ".join(str(tuple(i.shape)) for i in inputs)
        raise ExampleInputError(
            f"the model fails on example_inputs of shape {shapes}: {exc}. Pass inputs shaped as the "
            "model expects, with the batch dimension first."
        ) from exc
    if not isinstance(out, torch.Tensor):
        raise ModelError(
            f"the model returns {type(out).__name__}; squeezelab handles models with one tensor "
            "output. Wrap it in a module that returns the tensor to evaluate."
        )
    return out


def _equal_batch_size(n: int, cap: int = 64) -> int:
    """Largest batch size <= cap that divides n.

    ONNX Runtime's histogram calibrators (entropy, percentile) stack the
    collected batches and fail on a ragged last batch, so every calibration
    batch has the same size and no sample is dropped.
    """
    return max(b for b in range(1, min(cap, n) + 1) if n % b == 0)


def _calibration_feeds(data: Any, example: tuple[torch.Tensor, ...]) -> list[dict[str, np.ndarray]]:
    if len(example) != 1:
        raise CalibrationError("calibration for models with several inputs is not supported yet.")
    expected = tuple(example[0].shape[1:])
    empty = data is None or (isinstance(data, (list, tuple, np.ndarray, torch.Tensor)) and len(data) == 0)
    batches = []
    if not empty:
        try:
            batches = [np.asarray(b, dtype=np.float32) for b in iter_inputs(data)]
        except Exception as exc:
            raise CalibrationError(f"cannot read calibration_data ({type(data).__name__}): {exc}") from exc
    if not batches or sum(len(b) for b in batches) == 0:
        raise CalibrationError(
            "Int8Static needs calibration data and got none; pass calibration_data= (a few hundred "
            "representative inputs, e.g. a slice of the training set), or use runtime=Int8Dynamic()."
        )
    for batch in batches:
        if tuple(batch.shape[1:]) != expected:
            raise CalibrationError(
                f"calibration batch of shape {batch.shape} does not match the example input "
                f"(batch, {', '.join(map(str, expected))}); pass inputs shaped like the model's."
            )
    x = np.concatenate(batches)
    step = _equal_batch_size(len(x))
    return [{"input": np.ascontiguousarray(x[i : i + step])} for i in range(0, len(x), step)]


def _provider_name(provider: str | tuple[str, dict]) -> str:
    return provider[0] if isinstance(provider, tuple) else provider


def _freeze_providers(providers: Any) -> tuple | None:
    """A hashable cache key for ``providers``, option dicts included."""
    if not providers:
        return None
    if isinstance(providers, str):
        return (providers,)
    return tuple(
        (p[0], json.dumps(p[1], sort_keys=True, default=str)) if isinstance(p, tuple) else p for p in providers
    )


class Compressed:
    """The result of ``compress``: a model, its shippable artifact, and ways to run it.

    Attributes:
        model: the PyTorch model the result was made from (quantized weights for
            simulated recipes; for ONNX runtimes the float model that was exported).
        recipe: the recipe applied.
        onnx_bytes: the ONNX model (``None`` for simulated recipes).
        artifact_bytes: exactly what ``save`` writes and ``size_bytes`` counts:
            the ONNX model, or the packed file for simulated recipes.
        executable: True when the result runs as real low-precision kernels.
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        recipe: Recipe,
        example_inputs: tuple[torch.Tensor, ...],
        onnx_bytes: bytes | None,
        artifact_bytes: bytes,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.recipe = recipe
        self.example_inputs = example_inputs
        self.onnx_bytes = onnx_bytes
        self.artifact_bytes = artifact_bytes
        self.details = dict(details or {})  # choices resolved at compress time, e.g. reduce_range
        self._sessions: dict[tuple, Any] = {}

    # ----------------------------------------------------------------- facts

    @property
    def executable(self) -> bool:
        return self.recipe.executable

    @property
    def size_bytes(self) -> int:
        return len(self.artifact_bytes)

    @property
    def bits(self) -> int:
        return self.recipe.bits

    @property
    def sparsity(self) -> float:
        return weight_sparsity(self.model)

    @property
    def quantized_weight_fraction(self) -> float:
        """Fraction of weight elements (tensors of rank >= 2) stored below 32 bits in the artifact.

        int8 initializers of an int8 ONNX model, float16 ones of a float16 model, sub-32-bit
        codes of a packed file; 0.0 for the fp32 baseline.
        """
        if "quantized_weight_fraction" not in self.details:  # made elsewhere than compress()
            if self.onnx_bytes is not None:
                from squeezelab.engine.ort_quant import graph_facts

                fraction = graph_facts(self.onnx_bytes)["quantized_weight_fraction"]
            else:
                from squeezelab.engine.artifact import unpack_encoded

                fraction = encoded_weight_fraction(unpack_encoded(self.artifact_bytes)[0])
            self.details["quantized_weight_fraction"] = fraction
        return float(self.details["quantized_weight_fraction"])

    @property
    def runtime_name(self) -> str:
        return "onnxruntime" if self.onnx_bytes is not None else "pytorch (simulated)"

    def __repr__(self) -> str:
        kind = "executable" if self.executable else "SIMULATED"
        return f"Compressed({self.recipe.label!r}, {self.size_bytes:,} bytes, {kind})"

    # ----------------------------------------------------------------- running

    def session(
        self,
        providers: Sequence[str | tuple[str, dict]] | None = None,
        *,
        threads: int | None = None,
        allow_fallback: bool = False,
    ) -> Any:
        """An ONNX Runtime session (CPU by default), cached per arguments.

        When a provider other than the CPU is asked for, the session must
        really use it (ONNX Runtime otherwise retries TensorRT -> CUDA -> CPU on
        its own), and one profiled run checks where the quantized nodes
        execute: a fallback raises ``ProviderFallbackError`` unless
        ``allow_fallback``.
        """
        if self.onnx_bytes is None:
            raise ConfigError(
                f"{self.recipe.label} is simulated and has no ONNX model; use .predict(), or compress "
                "with runtime=Int8Static()/Int8Dynamic()/Onnx() for an ONNX Runtime session."
            )
        key = (_freeze_providers(providers), threads, allow_fallback)
        if key not in self._sessions:
            session = make_session(self.onnx_bytes, providers=providers, threads=threads)
            asked = _provider_name(providers[0] if providers else CPU) if not isinstance(providers, str) else providers
            if asked != CPU and not allow_fallback:
                got = session.get_providers()[0]
                if got != asked:
                    raise ProviderFallbackError(
                        f"asked for {asked} but ONNX Runtime started the session on {got} (the provider "
                        "failed to initialise); check its installation, or pass allow_fallback=True."
                    )
                check_placement(self.placement(providers), asked)
            self._sessions[key] = session
        return self._sessions[key]

    def placement(self, providers: Sequence[str | tuple[str, dict]] | None = None) -> Placement:
        """Which provider runs each node, read from a profiled run on the example inputs."""
        if self.onnx_bytes is None:
            raise ConfigError(f"{self.recipe.label} is simulated and has no ONNX graph to place.")
        return node_placement(self.onnx_bytes, self.prepare(self.example_inputs), providers=providers)

    def prepare(self, x: Any) -> Any:
        """Inputs in the form the runner takes: ONNX feeds, or PyTorch tensors (copies, never views).

        Done once outside any timed region, so latency measures the model, not Python glue.
        """
        items = self._checked_inputs(x)
        # Same dtype as the example inputs: float64 data (scikit-learn's default) becomes float32.
        arrays = [
            np.array(v, dtype=as_numpy(e).dtype, copy=True, order="C") for v, e in zip(items, self.example_inputs)
        ]
        if self.onnx_bytes is not None:
            return dict(zip(input_names_for(len(arrays)), arrays))
        return tuple(torch.from_numpy(a) for a in arrays)

    def _checked_inputs(self, x: Any) -> list[np.ndarray]:
        """``x`` as one numpy view per model input, after checking their number and shapes."""
        items = x if isinstance(x, (tuple, list)) else (x,)
        if len(items) != len(self.example_inputs):
            expected = ", ".join(expected_shape(e) for e in self.example_inputs)
            raise DataError(
                f"the model takes {len(self.example_inputs)} input(s) shaped {expected}, got {len(items)}; "
                "pass one array per input (a tuple of arrays for several)."
            )
        arrays = [as_numpy(v) for v in items]
        check_input_shapes(arrays, self.example_inputs)
        return arrays

    def runner(self, threads: int | None = 1) -> Callable[[Any], Any]:
        """A function running one prepared batch (see ``prepare``) with the least overhead, for timing."""
        if self.onnx_bytes is not None:
            session = self.session(threads=threads)
            return lambda feeds: session.run(None, feeds)
        model = self.model

        def run_torch(tensors: tuple[torch.Tensor, ...]) -> torch.Tensor:
            with torch.no_grad():
                return model(*tensors)

        return run_torch

    def predict(self, x: Any, *, batch_size: int | None = None) -> np.ndarray:
        """Model output for ``x`` (an array, or a tuple of arrays for several inputs) as numpy.

        Raises:
            DataError: ``x`` has another number of inputs, rank or non-batch size than the
                example inputs the result was made with (the message names the expected shape).
        """
        items = self._checked_inputs(x)
        n = len(items[0])
        if n == 0:
            raise DataError("predict got an empty batch; pass at least one sample.")
        step = batch_size or n
        run = self.runner(threads=None)
        outs = []
        for i in range(0, n, step):
            chunk = tuple(it[i : i + step] for it in items)
            out = run(self.prepare(chunk if len(chunk) > 1 else chunk[0]))
            outs.append(out[0] if isinstance(out, list) else out.numpy())
        return np.concatenate(outs, axis=0)

    # ----------------------------------------------------------------- saving

    def metadata(self) -> dict[str, Any]:
        """What is saved beside the artifact: recipe, version, format, size, checksum."""
        return {
            "squeezelab": __version__,
            "recipe": self.recipe.to_dict(),
            "label": self.recipe.label,
            "executable": self.executable,
            "format": "onnx" if self.onnx_bytes is not None else "squeezelab.packed (safetensors)",
            "size_bytes": self.size_bytes,
            "sha256": hashlib.sha256(self.artifact_bytes).hexdigest(),
            "inputs": [list(t.shape) for t in self.example_inputs],
            **self.details,
        }

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the artifact to ``path`` and its metadata to ``path + '.json'``.

        Refuses to replace existing files unless ``overwrite=True``.
        """
        path = Path(path)
        meta_path = path.with_name(path.name + ".json")
        if not overwrite:
            for p in (path, meta_path):
                if p.exists():
                    raise ArtifactError(f"{str(p)!r} exists; pass overwrite=True to replace it.")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.artifact_bytes)
        meta_path.write_text(json.dumps(self.metadata(), indent=2) + "\n")
        return path


def compress(
    model: nn.Module,
    recipe: Recipe | None = None,
    *,
    example_inputs: Any,
    calibration_data: Any = None,
    filter_fn: FilterFn | None = None,
    exporter: str = "torchscript",
    opset: int = DEFAULT_OPSET,
) -> Compressed:
    """Apply ``recipe`` to a copy of ``model``; ``model`` itself is never changed.

    Args:
        model: a PyTorch module with one tensor output.
        recipe: what to do; ``Recipe()`` (the default) is the fp32 ONNX baseline.
        example_inputs: one batch the model accepts (tensor, array, or a tuple of them).
        calibration_data: inputs (or ``(x, y)`` data) for ``Int8Static`` calibration.
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
    check_model(model)
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
    if isinstance(opset, bool) or not isinstance(opset, int) or not 13 <= opset <= 23:
        raise ConfigError(f"opset={opset!r}; use an ONNX opset from 13 to 23 (default {DEFAULT_OPSET}).")
    inputs = as_example_inputs(example_inputs)
    work = copy_model(model).eval()
    from squeezelab.engine.pruning import bake_masks_

    bake_masks_(work)  # a model pruned with masks is exported as the plain weights it computes with
    _run_example(work, tuple(i.clone() for i in inputs))  # a model may change its input in place
    check_recipe_reaches_layers(work, recipe, filter_fn)
    feeds = None
    if isinstance(recipe.runtime, Int8Static):
        feeds = _calibration_feeds(calibration_data, inputs)

    if isinstance(recipe.pruning, ChannelPruning):
        from squeezelab.engine.structured import prune_channels

        work = prune_channels(
            work, recipe.pruning, example_inputs=inputs, filter_fn=filter_fn, layer_ratios=recipe.layer_sparsity()
        )
    elif recipe.pruning is not None:
        from squeezelab.engine.pruning import bake_masks_, prune_

        prune_(work, recipe.pruning, filter_fn=filter_fn, layer_sparsity=recipe.layer_sparsity())
        bake_masks_(work)  # plain weights: the export and the packed file see the zeros, not masks

    if not recipe.runtime.onnx:
        return _simulated_result(work, recipe, inputs, filter_fn, model_class=class_path(model))
    return _onnx_result(work, recipe, inputs, feeds, exporter=exporter, opset=opset, model_class=class_path(model))


def _simulated_result(
    work: nn.Module, recipe: Recipe, inputs: tuple[torch.Tensor, ...], filter_fn: FilterFn | None, *, model_class: str
) -> Compressed:
    """Quantized weights packed into the artifact, and loaded back into ``work`` as the floats they decode to."""
    encoded = encode_model(
        work, recipe.quantization, filter_fn=filter_fn, coding=recipe.runtime.coding, layer_bits=recipe.layer_bits()
    )
    _load_decoded_(work, encoded)
    artifact = pack_encoded(encoded, recipe=recipe.to_dict(), model_class=model_class)
    details = {"model_class": model_class, "quantized_weight_fraction": encoded_weight_fraction(encoded)}
    return Compressed(
        model=work, recipe=recipe, example_inputs=inputs, onnx_bytes=None, artifact_bytes=artifact, details=details
    )


def _onnx_result(
    work: nn.Module,
    recipe: Recipe,
    inputs: tuple[torch.Tensor, ...],
    feeds: list[dict[str, np.ndarray]] | None,
    *,
    exporter: str,
    opset: int,
    model_class: str,
) -> Compressed:
    """``work`` exported, converted by ONNX Runtime's tools as the recipe says, and checked to run."""
    onnx_bytes = export_onnx(work, inputs, opset=opset, exporter=exporter)
    from squeezelab.engine.ort_quant import convert_onnx, graph_facts

    if isinstance(recipe.runtime, (Int8Dynamic, Int8Static)):
        check_int8_coverage(onnx_bytes, recipe)  # before quantizing: calibration is the slow part
    try:
        onnx_bytes, details = convert_onnx(onnx_bytes, recipe, feeds)
    except SqueezeError:
        raise
    except Exception as exc:  # onnxruntime.quantization raises many types
        raise ExportError(f"ONNX Runtime could not make the {recipe.label} model: {exc}") from exc
    facts = graph_facts(onnx_bytes)
    if recipe.bits == 8 and facts["int8_weight_fraction"] == 0.0:  # ONNX Runtime declined every op
        raise ConfigError(
            f"{recipe.label} quantized nothing: the graph has no op ONNX Runtime quantizes with these "
            f"settings (ops present: {', '.join(sorted(facts['op_counts']))}). Choose other op_types, "
            "or Int8Static() without op_types."
        )
    details = {"exporter": exporter, "model_class": model_class, **facts, **details}
    result = Compressed(
        model=work, recipe=recipe, example_inputs=inputs, onnx_bytes=onnx_bytes, artifact_bytes=onnx_bytes, details=details
    )
    try:  # every produced model must load and run on the CPU provider
        result.predict(inputs)
    except Exception as exc:
        raise ExportError(f"the {recipe.label} ONNX model does not run in ONNX Runtime on the CPU: {exc}") from exc
    return result
