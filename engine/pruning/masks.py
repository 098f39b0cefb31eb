"""Pruning by masks: which weights become zero (magnitude, N:M), and the masks that keep them zero.

A mask is a ``torch.nn.utils.parametrize`` parametrization (``weight -> weight * mask``), so it survives
fine-tuning, saving and copying; ``bake_masks_`` turns masked weights back into plain ones, zeros kept.
``prune`` (``pruning/prune.py``) applies these for ``MagnitudePruning`` and ``NMPruning``; structured
pruning bakes them before it removes channels.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from squeezelab.engine.core.copying import own_class
from squeezelab.engine.core.errors import ConfigError
from squeezelab.engine.core.layers import FilterFn, chosen_layers
from squeezelab.engine.core.pruners import MagnitudePruning, NMPruning, PruningConfig

__all__ = ["WeightMask", "magnitude_masks", "nm_mask", "masks_", "weight_mask", "bake_masks_", "weight_sparsity"]


class WeightMask(nn.Module):
    """Parametrization ``weight -> weight * mask`` (the mask is a buffer, saved with the model)."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


def _keep_mask(scores: torch.Tensor, n_zero: int) -> torch.Tensor:
    """1 everywhere except the ``n_zero`` lowest scores (ties broken by position: stable sort)."""
    flat = scores.reshape(-1)
    mask = torch.ones_like(flat)
    if n_zero > 0:
        order = torch.sort(flat, stable=True).indices
        mask[order[:n_zero]] = 0.0
    return mask.reshape(scores.shape)


def magnitude_masks(weights: list[torch.Tensor], sparsity: float, scope: str) -> list[torch.Tensor]:
    """0/1 masks zeroing the smallest |w|: ``round(sparsity * n)`` per tensor, or over all together."""
    if scope == "layer":
        return [_keep_mask(w.detach().abs(), round(sparsity * w.numel())) for w in weights]
    flat = torch.cat([w.detach().abs().reshape(-1) for w in weights])
    mask = _keep_mask(flat, round(sparsity * flat.numel()))
    parts = torch.split(mask, [w.numel() for w in weights])
    return [part.reshape(w.shape) for part, w in zip(parts, weights)]


def nm_mask(weight: torch.Tensor, n: int, m: int) -> torch.Tensor | None:
    """Keep the ``n`` largest |w| of every ``m`` consecutive input channels.

    Groups run along the input dimension at each output row and kernel position
    (``(out, kh, kw, in)`` order for a convolution), the layout sparse tensor
    cores expect for 2:4. ``None`` when the input count is not a multiple of ``m``
    (the layer stays dense).
    """
    w = weight.detach()
    if w.ndim > 2:
        w = w.movedim(1, -1)  # (out, in, kh, kw) -> (out, kh, kw, in)
    if w.shape[-1] % m:
        return None
    groups = w.abs().reshape(*w.shape[:-1], w.shape[-1] // m, m)
    keep = torch.topk(groups, n, dim=-1).indices
    mask = torch.zeros_like(groups).scatter_(-1, keep, 1.0).reshape(w.shape)
    return mask.movedim(-1, 1) if weight.ndim > 2 else mask


def _magnitude_masks_mixed(
    layers: list[tuple[str, nn.Module]], config: MagnitudePruning, layer_sparsity: dict[str, float]
) -> list[torch.Tensor]:
    """Layers named in ``layer_sparsity`` at their own amount; the others under ``config`` together."""
    unknown = sorted(set(layer_sparsity) - {name for name, _ in layers})
    if unknown:
        raise ConfigError(
            f"per-layer sparsity names layers that are not pruned here: {unknown}; prunable layers: "
            f"{[name for name, _ in layers]}."
        )
    rest = [i for i, (name, _) in enumerate(layers) if name not in layer_sparsity]
    masks: list[torch.Tensor | None] = [None] * len(layers)
    if rest:  # every layer may have its own amount
        for i, mask in zip(rest, magnitude_masks([layers[i][1].weight for i in rest], config.sparsity, config.scope)):
            masks[i] = mask
    for i, (name, module) in enumerate(layers):
        if name in layer_sparsity:
            (masks[i],) = magnitude_masks([module.weight], layer_sparsity[name], "layer")
    return masks  # type: ignore[return-value]


def masks_(model: nn.Module, config: PruningConfig, filter_fn: FilterFn | None, layer_sparsity: dict[str, float] | None) -> None:
    """Register a mask parametrization on each chosen weight (magnitude and N:M pruning)."""
    layers = chosen_layers(model, filter_fn)
    if not layers:
        raise ConfigError("no layer to prune: the model has no Linear/Conv layer the filter accepts.")
    if layer_sparsity and not isinstance(config, MagnitudePruning):
        raise ConfigError(f"per-layer sparsity applies to MagnitudePruning, not {config.label}.")
    if isinstance(config, MagnitudePruning) and layer_sparsity:
        masks = _magnitude_masks_mixed(layers, config, layer_sparsity)
    elif isinstance(config, MagnitudePruning):
        masks = magnitude_masks([m.weight for _, m in layers], config.sparsity, config.scope)
    elif isinstance(config, NMPruning):
        masks = [nm_mask(m.weight, config.n, config.m) for _, m in layers]
        if all(mask is None for mask in masks):
            raise ConfigError(
                f"{config.label}: no layer has an input count that is a multiple of m={config.m}; "
                f"input counts: {sorted({m.weight.shape[1] for _, m in layers})}."
            )
    else:
        raise ConfigError(f"config={config!r} is not a mask pruning config; use MagnitudePruning(...) or NMPruning(...).")
    for (_, module), mask in zip(layers, masks):
        if mask is None:
            continue
        existing = weight_mask(module)
        if existing is not None:
            # Pruning again keeps the zeros already there (a lower target cannot un-prune):
            # the new mask was computed on the masked weight, and is folded into the old one in
            # place, so optimizer state and other parametrizations stay as they are.
            existing.mask.mul_(mask.to(existing.mask.dtype))
        else:
            parametrize.register_parametrization(module, "weight", WeightMask(mask.to(module.weight.dtype)))


def weight_mask(module: nn.Module) -> WeightMask | None:
    if not parametrize.is_parametrized(module, "weight"):
        return None
    return next((p for p in module.parametrizations.weight if isinstance(p, WeightMask)), None)


def bake_masks_(model: nn.Module) -> None:
    """Replace the parametrizations of masked weights by plain weights holding the values they compute.

    Only weights carrying a ``WeightMask`` are baked (with any other parametrization
    stacked on the same weight, since PyTorch removes them together).
    """
    for module in list(model.modules()):
        if weight_mask(module) is not None:
            own_class(module)  # the module may share its class with a deepcopy of it
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)


def weight_sparsity(model: nn.Module, *, filter_fn: FilterFn | None = None) -> float:
    """Fraction of exact zeros over the chosen layers' weights (masks applied)."""
    zeros = total = 0
    for _, module in chosen_layers(model, filter_fn):
        zeros += int((module.weight == 0).sum())
        total += module.weight.numel()
    return zeros / total if total else 0.0
