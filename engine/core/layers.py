"""Which layers a step reaches: the one layer chooser every path uses.

Quantization, pruning, weight sharing, coverage checks, sensitivity and sweeps all reach the same
layers: by default every ``Linear`` and ``Conv1d/2d/3d`` (biases, norms and embeddings are left
alone), or those a user's ``filter_fn(module, qualified_name) -> bool`` accepts among the modules that
hold a ``weight`` tensor.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["FilterFn", "default_filter", "chosen_layers", "chosen_weight_names", "prunable_layers"]

FilterFn = Callable[[nn.Module, str], bool]

_QUANTIZABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def default_filter(module: nn.Module, fqn: str) -> bool:
    """Linear and convolution layers."""
    return isinstance(module, _QUANTIZABLE)


def chosen_layers(model: nn.Module, filter_fn: FilterFn | None = None) -> list[tuple[str, nn.Module]]:
    """``(qualified name, module)`` of the layers ``filter_fn`` (default: Linear/Conv) chooses, in model order."""
    filter_fn = filter_fn or default_filter
    return [
        (fqn, m)
        for fqn, m in model.named_modules()
        if isinstance(getattr(m, "weight", None), torch.Tensor) and filter_fn(m, fqn)
    ]


def chosen_weight_names(model: nn.Module, filter_fn: FilterFn | None = None) -> set[str]:
    """The ``state_dict`` keys of the chosen layers' weights (``"weight"`` for a bare layer)."""
    return {f"{fqn}.weight" if fqn else "weight" for fqn, _ in chosen_layers(model, filter_fn)}


def prunable_layers(model: nn.Module) -> list[tuple[str, int]]:
    """``(name, weight count)`` of the Linear/Conv layers, in model order."""
    return [(name, int(m.weight.numel())) for name, m in chosen_layers(model)]
