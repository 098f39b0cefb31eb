"""``Compressed``: the result of ``compress`` — a shippable artifact and the ways to run it.

A result runs in ONNX Runtime (the fp32 baseline, float16 and int8 models) or,
for simulated recipes, in PyTorch with the decoded weights. Either way it takes
inputs in the form the model takes (one tensor, a tuple, a dict; see
``engine.inputs``), checks them against the example inputs it was made with,
and returns the one output that ``output=`` selected, as numpy.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from squeezelab._version import __version__
from squeezelab.engine.core.errors import ConfigError, DataError, ExampleInputError, ProviderFallbackError
from squeezelab.engine.core.inputs import Inputs, InputSpec
from squeezelab.engine.core.paths import file_to_write, write_failed
from squeezelab.engine.core.outputs import OutputSelector, SelectedOutput, selector_name
from squeezelab.engine.runtime.external_data import DATA_SUFFIX, is_file_model, model_sha256, model_size, write_model
from squeezelab.engine.runtime.providers import CPU, Placement, check_placement, make_session, node_placement
from squeezelab.engine.core.recipe import Recipe
from squeezelab.engine.pipeline.artifact import unpack_encoded
from squeezelab.engine.pipeline.coverage import encoded_weight_fraction
from squeezelab.engine.pruning.prune import weight_sparsity
from squeezelab.engine.runtime.ort_quantize import graph_facts

__all__ = ["Compressed"]


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
            simulated recipes; for ONNX runtimes the float model that was exported;
            ``None`` when the input was an ONNX file).
        spec: the inputs the model takes (names, dtypes, shapes with their dynamic axes).
        output: the ``output=`` selector the result evaluates.
        recipe: the recipe applied.
        onnx_bytes: the ONNX model (``None`` for simulated recipes); past ONNX's 2 GB limit an ``OnnxFile``
            (``engine.runtime.external_data``): the bytes of its ``.onnx`` file, its weights in a data file
            beside it, which ``session``, ``save`` and ``size_bytes`` use.
        artifact_bytes: exactly what ``save`` writes and ``size_bytes`` counts:
            the ONNX model, or the packed file for simulated recipes.
        executable: True when the result runs as real low-precision kernels.
    """

    def __init__(
        self,
        *,
        model: nn.Module | None,
        recipe: Recipe,
        example: Inputs,
        onnx_bytes: bytes | None,
        artifact_bytes: bytes,
        output: OutputSelector = None,
        output_name: str | None = None,
        spec: InputSpec | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.recipe = recipe
        self.example = example  # one batch the model takes (the example inputs, as given)
        self.spec: InputSpec = spec or example.spec()
        self.output = output
        self.output_name = output_name  # the graph output evaluated (None: the first)
        self.onnx_bytes = onnx_bytes
        self.artifact_bytes = artifact_bytes
        self.details = dict(details or {})  # choices resolved at compress time, e.g. reduce_range
        self._sessions: dict[tuple, Any] = {}
        self._data_name = "model.onnx" + DATA_SUFFIX  # what metadata() names as the data file before a save
        self._torch: nn.Module | None = None

    # ----------------------------------------------------------------- facts

    @property
    def executable(self) -> bool:
        return self.recipe.executable

    @property
    def kind(self) -> str:
        """``"executable"`` (real low-precision kernels) or ``"simulated"``."""
        return "executable" if self.executable else "simulated"

    @property
    def size_bytes(self) -> int:
        """Bytes of the artifact ``save`` writes (for a model past 2 GB, its ``.onnx`` file and data file)."""
        return model_size(self.artifact_bytes)

    @property
    def bits(self) -> int:
        return self.recipe.bits

    @property
    def sparsity(self) -> float:
        """Fraction of exact zeros in the Linear/Conv weights (0.0 when the input was an ONNX file)."""
        if self.model is None:
            return 0.0

        return weight_sparsity(self.model)

    @property
    def example_inputs(self) -> Inputs:
        """The example inputs the result was made with (an ``Inputs`` batch)."""
        return self.example

    @property
    def quantized_weight_fraction(self) -> float:
        """Fraction of weight elements (tensors of rank >= 2) stored below 32 bits in the artifact.

        int8 initializers of an int8 ONNX model, float16 ones of a float16 model, sub-32-bit
        codes of a packed file; 0.0 for the fp32 baseline.
        """
        if "quantized_weight_fraction" not in self.details:  # made elsewhere than compress()
            if self.onnx_bytes is not None:
                fraction = graph_facts(self.onnx_bytes)["quantized_weight_fraction"]
            else:
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

    def close_sessions(self) -> None:
        """Forget the cached ONNX Runtime sessions (each holds the model's weights); ``session`` makes them again."""
        self._sessions.clear()

    def placement(self, providers: Sequence[str | tuple[str, dict]] | None = None) -> Placement:
        """Which provider runs each node, read from a profiled run on the example inputs."""
        if self.onnx_bytes is None:
            raise ConfigError(f"{self.recipe.label} is simulated and has no ONNX graph to place.")
        return node_placement(self.onnx_bytes, self.prepare(self.example), providers=providers)

    def check(self, x: Any) -> Inputs:
        """``x`` as ``Inputs`` cast to the model's dtypes, or a ``DataError`` naming the expected form."""

        try:
            return Inputs.of(x).check(self.spec)
        except ExampleInputError as exc:  # wrong data at prediction time is a data problem
            raise DataError(str(exc)) from None

    def prepare(self, x: Any) -> Any:
        """Inputs in the form the runner takes: ONNX feeds, or PyTorch tensors (copies, never views).

        Done once outside any timed region, so latency measures the model, not Python glue.
        """
        inputs = self.check(x)
        if self.onnx_bytes is not None:
            return inputs.feeds(self.spec.names)
        args, kwargs = inputs.torch()
        return (*args, *kwargs.values())  # positional, in the spec's order (SelectedOutput's form)

    def _torch_module(self) -> nn.Module:
        if self._torch is None:
            self._torch = SelectedOutput(self.model, self.spec.kind, self.spec.names, self.output).eval()
        return self._torch

    def runner(self, threads: int | None = 1) -> Callable[[Any], Any]:
        """A function running one prepared batch (see ``prepare``) with the least overhead, for timing."""
        if self.onnx_bytes is not None:
            session = self.session(threads=threads)
            wanted = [self.output_name] if self.output_name else None
            return lambda feeds: session.run(wanted, feeds)
        module = self._torch_module()

        def run_torch(tensors: tuple[torch.Tensor, ...]) -> torch.Tensor:
            with torch.no_grad():
                return module(*tensors)

        return run_torch

    def predict(self, x: Any, *, batch_size: int | None = None) -> np.ndarray:
        """The selected output for ``x`` (a tensor or array, a tuple, or a dict of them) as numpy.

        Raises:
            DataError: ``x`` does not fit the inputs the result was made with (the message
                names the expected form and shapes), or holds no sample.
        """
        inputs = self.check(x)
        n = len(inputs)
        if n == 0:
            raise DataError("predict got an empty batch; pass at least one sample.")
        fixed = self.spec.batch  # an ONNX graph with a fixed batch: batches of that size, the last one padded
        step = fixed or batch_size or n
        run = self.runner(threads=None)
        outs = []
        for i in range(0, n, step):
            part = inputs.slice(i, i + step)
            out = run(self.prepare(part.tile(fixed) if fixed else part))
            outs.append((out[0] if isinstance(out, list) else out.detach().float().numpy())[: len(part)])
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
            "sha256": model_sha256(self.artifact_bytes),  # a model past 2 GB: its file, then its data
            **({"external_data": self._data_name} if is_file_model(self.artifact_bytes) else {}),
            "inputs": self.spec.to_dict(),
            "output": selector_name(self.output),
            **self.details,
        }

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the artifact to ``path`` and its metadata to ``path + '.json'``; missing folders are created.

        A model past ONNX's 2 GB limit is written as ``path`` and its weights as ``path + '.data'`` beside it
        (ONNX external data: ``compress(path, ...)``, ``measure`` and ONNX Runtime read both).

        Raises:
            ArtifactPathError: ``path`` (or its ``.json``) exists and ``overwrite`` is False, is a
                folder, lies under a file, or its folder cannot be written; checked before writing.
        """
        example = "model.onnx" if self.onnx_bytes is not None else "model.safetensors"
        beside = (".json", DATA_SUFFIX) if is_file_model(self.artifact_bytes) else (".json",)
        path = file_to_write(path, overwrite=overwrite, create_folders=True, beside=beside, example=example)
        meta_path = path.with_name(path.name + ".json")
        self._data_name = path.name + DATA_SUFFIX
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_model(self.artifact_bytes, path)  # a model past 2 GB: its weights copied to ``path.name + '.data'``
            meta_path.write_text(json.dumps(self.metadata(), indent=2) + "\n")
        except OSError as exc:  # a full disk, or the folder changed since the check
            raise write_failed(path, exc) from exc
        return path
