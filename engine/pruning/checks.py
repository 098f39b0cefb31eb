"""squeezelab's own checks around a structurally pruned model (Torch-Pruning's result is not trusted blind).

Torch-Pruning has open coupling bugs (VainF/Torch-Pruning#481 concatenations, #513 residual +
depthwise, #519 Hugging Face causal LMs) that leave a model whose layers disagree on a channel
count, or one that runs in PyTorch but not as exported. So every pruned model is checked:

- it still runs on the example inputs, and every output keeps its shape (the model's interface);
- its weights really shrank when something was asked to be removed;
- its ONNX export computes what the pruned PyTorch model computes (``check_onnx_matches``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from squeezelab.engine.core.errors import ExportError, StructuredPruningError
from squeezelab.engine.core.inputs import Inputs
from squeezelab.engine.core.outputs import OutputSelector, SelectedOutput, select_output
from squeezelab.engine.runtime.export import export_onnx
from squeezelab.engine.runtime.export_check import first_difference

__all__ = ["output_shapes", "check_interface", "check_onnx_matches", "verify_export", "parameter_count"]


def output_shapes(out: Any) -> list[tuple[int, ...]]:
    """Shapes of every tensor in a model's output (a tensor, tuple, dict or ``ModelOutput``), in order."""
    if isinstance(out, torch.Tensor):
        return [tuple(out.shape)]
    if isinstance(out, Mapping):
        return [s for v in out.values() for s in output_shapes(v)]
    if isinstance(out, Sequence) and not isinstance(out, (str, bytes)):
        return [s for v in out for s in output_shapes(v)]
    return []


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def check_interface(before: list[tuple[int, ...]], model: nn.Module, example: Inputs, what: str) -> None:
    """Raise unless ``model`` runs on ``example`` and returns outputs of the shapes ``before``."""
    try:
        after = output_shapes(example.call(model))
    except Exception as exc:  # the model's own error names the mismatch
        raise StructuredPruningError(
            f"after {what} the model no longer runs on the example inputs ({type(exc).__name__}: {exc}). "
            "A layer's forward probably hard-codes a channel count (e.g. x.view(-1, 512)): use x.flatten(1), "
            "or exclude the layer with ignored=/filter_fn."
        ) from exc
    if after != before:
        raise StructuredPruningError(
            f"after {what} the model's outputs have shapes {after}, not {before}: the model's interface "
            "changed. Exclude the layers feeding the outputs with ignored=/filter_fn."
        )


def check_onnx_matches(onnx_bytes: bytes, model: nn.Module, example: Inputs, output: OutputSelector, what: str) -> None:
    """Raise unless ONNX Runtime running ``onnx_bytes`` gives what ``model`` gives on ``example``.

    The comparison (and its tolerance) is the export check's (``engine.runtime.export_check``);
    the explanation is pruning's: the model was traced right after a structural step.
    """
    found = first_difference(onnx_bytes, lambda x: select_output(x.call(model), output), [("the example inputs", example)])
    if found is not None:
        raise StructuredPruningError(
            f"after {what} the ONNX export of the pruned model differs from the pruned PyTorch model "
            f"({found.describe()}): a coupled dimension was cut inconsistently (cf. Torch-Pruning issues #481 "
            "concatenations, #513 residual + depthwise). Exclude the layers of the group involved with "
            "ignored=/filter_fn."
        )


def verify_export(model: nn.Module, example: Inputs, output: OutputSelector, what: str) -> None:
    """Export ``model`` (fp32, TorchScript exporter) and check the export against it."""
    wrapped = SelectedOutput(model, example.kind, example.names, output)
    try:
        onnx_bytes = export_onnx(wrapped, example)
    except ExportError as exc:
        raise StructuredPruningError(
            f"after {what} the pruned model cannot be exported to ONNX to be checked: {exc}"
        ) from exc
    check_onnx_matches(onnx_bytes, model, example, output, what)
