"""The pruning verb: ``prune(model, config)`` for every pruning config, and masks for the unstructured ones.

``prune(model, config, ...)`` returns a pruned copy; ``prune_(model, config, ...)`` prunes in
place. Both dispatch on the config's type through a small private registry (``_PRUNERS``):

- ``MagnitudePruning`` and ``NMPruning`` (here): the weights stay dense tensors; a mask
  parametrization multiplies each chosen weight by a 0/1 mask, so fine-tuning keeps pruned
  weights at zero. ``bake_masks_(model)`` writes the masked values into plain weights and
  removes the parametrizations (for export, or saving). The sparsity is exact: magnitude
  pruning zeros ``round(sparsity * n)`` weights of each layer (layer scope) or of all chosen
  layers together (global scope), ties broken by position, so the count never depends on ties.
- ``ChannelPruning`` (``engine.structured``: channels, neurons, attention heads removed) and
  ``LayerPruning`` (``engine.layer_removal``: whole blocks removed) change shapes: they need
  ``example_inputs``, and ``prune`` checks that the result's ONNX export computes what it computes.

Examples:
    >>> import torch
    >>> from squeezelab.engine.core.pruners import MagnitudePruning
    >>> layer = torch.nn.Linear(10, 10)
    >>> pruned = prune(layer, MagnitudePruning(sparsity=0.3))
    >>> int((pruned.weight == 0).sum())
    30
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from squeezelab.engine.core.copying import copy_model, own_class
from squeezelab.engine.core.errors import ConfigError, ExampleInputError, ModelError
from squeezelab.engine.core.inputs import Inputs
from squeezelab.engine.core.outputs import OutputSelector
from squeezelab.engine.core.layers import FilterFn, chosen_layers
from squeezelab.engine.core.pruners import ChannelPruning, LayerPruning, MagnitudePruning, NMPruning, PruningConfig

if TYPE_CHECKING:
    from squeezelab.engine.core.samples import Samples

__all__ = ["WeightMask", "prune", "prune_", "bake_masks_", "weight_sparsity", "magnitude_masks", "nm_mask", "weight_mask", "PruneContext"]


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


def _masks_(model: nn.Module, config: PruningConfig, filter_fn: FilterFn | None, layer_sparsity: dict[str, float] | None) -> None:
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


@dataclass(frozen=True)
class PruneContext:
    """What a pruning step may use besides the model and its config."""

    example: Inputs | None = None
    filter_fn: FilterFn | None = None
    layer_sparsity: dict[str, float] | None = None
    importance: Callable | None = None
    data: Samples | None = None
    output: OutputSelector = None


def _channels_(model: nn.Module, config: ChannelPruning, ctx: PruneContext) -> None:
    from squeezelab.engine.pruning.structured import prune_channels_

    prune_channels_(
        model, config, ctx.example, filter_fn=ctx.filter_fn, importance=ctx.importance,
        layer_sparsity=ctx.layer_sparsity, data=ctx.data, output=ctx.output,
    )


def _layers_(model: nn.Module, config: LayerPruning, ctx: PruneContext) -> None:
    from squeezelab.engine.pruning.layer_removal import remove_layers_

    remove_layers_(model, config, ctx.example, importance=ctx.importance, filter_fn=ctx.filter_fn, data=ctx.data)


# Private registry: pruning config type -> the step that applies it in place (as ort_quant's _CONVERSIONS).
_PRUNERS: dict[type, Callable[[nn.Module, Any, PruneContext], None]] = {
    MagnitudePruning: lambda m, c, ctx: _masks_(m, c, ctx.filter_fn, ctx.layer_sparsity),
    NMPruning: lambda m, c, ctx: _masks_(m, c, ctx.filter_fn, ctx.layer_sparsity),
    ChannelPruning: _channels_,
    LayerPruning: _layers_,
}
# The steps that change shapes: they need example inputs, and their result is checked in ONNX.
STRUCTURAL: tuple[type, ...] = (ChannelPruning, LayerPruning)


def _context(
    model: Any, config: Any, example_inputs: Any, filter_fn: Any, layer_sparsity: Any, importance: Any, data: Any, output: Any
) -> PruneContext:
    """The arguments checked against the config, before any work."""
    from squeezelab.engine.core.examples import example_batch
    from squeezelab.engine.core.outputs import check_selector
    from squeezelab.engine.core.samples import read_samples

    if not isinstance(model, nn.Module):
        raise ModelError(f"expected a torch.nn.Module, got {type(model).__name__}.")
    if type(config) not in _PRUNERS:
        allowed = ", ".join(f"{t.__name__}(...)" for t in _PRUNERS)
        raise ConfigError(f"config={config!r} is not a pruning config; use one of {allowed}.")
    structural = isinstance(config, STRUCTURAL)
    if layer_sparsity and not isinstance(config, (MagnitudePruning, ChannelPruning)):
        raise ConfigError(f"per-layer sparsity applies to MagnitudePruning and ChannelPruning, not {config.label}.")
    if importance is not None and not (structural and callable(importance)):
        raise ConfigError(
            f"importance={importance!r}: a callable importance applies to ChannelPruning (importance(group) -> "
            "scores) and LayerPruning (importance(name, block, input, output) -> score)."
        )
    if structural and example_inputs is None:
        raise ExampleInputError(
            f"{config.label} traces the model to find which layers are coupled: pass example_inputs= (one batch "
            "the model accepts: a tensor, a tuple of them, or a dict of keyword inputs)."
        )
    check_selector(output)
    example = example_batch(example_inputs) if structural else None
    samples = read_samples(data, "data") if data is not None and structural else None
    return PruneContext(example, filter_fn, layer_sparsity, importance, samples, output)


def _prepared_copy(model: nn.Module, ctx: PruneContext) -> nn.Module:
    """A copy for a structural step: masks baked into plain weights, eval mode, checked to run on the example."""
    from squeezelab.engine.core.examples import run_example

    work = copy_model(model).eval()
    bake_masks_(work)
    run_example(work, ctx.example, ctx.output)  # ExampleInputError before any slow work
    return work


def apply_pruning_(model: nn.Module, config: PruningConfig, ctx: PruneContext) -> None:
    """Apply ``config`` to ``model`` in place through the registry (``compress`` calls it on its copy)."""
    _PRUNERS[type(config)](model, config, ctx)


def prune(
    model: nn.Module,
    config: PruningConfig,
    *,
    example_inputs: Any = None,
    filter_fn: FilterFn | None = None,
    layer_sparsity: dict[str, float] | None = None,
    importance: Callable | None = None,
    data: Any = None,
    output: OutputSelector = None,
) -> nn.Module:
    """A pruned copy of ``model``, for every pruning config; ``model`` is unchanged.

    Args:
        model: the PyTorch model.
        config: ``MagnitudePruning`` / ``NMPruning`` (masks as parametrizations, shapes kept),
            ``ChannelPruning`` (channels, neurons and heads removed) or ``LayerPruning`` (blocks removed).
        example_inputs: one batch the model accepts; needed by the structural configs, which trace it.
        filter_fn: ``filter_fn(module, fqn) -> bool`` choosing layers (for ``ChannelPruning``: a Conv/Linear
            layer it refuses keeps its output channels, with its group; for ``LayerPruning``: blocks it
            refuses stay).
        layer_sparsity: named layers' own amounts (``MagnitudePruning``, ``ChannelPruning``).
        importance: a callable replacing the config's importance (structural configs).
        data: data for the importance (Taylor gradients, block influence), in any evaluation form;
            default: the example inputs.
        output: the output checked and used by the importance (see ``compress``).

    Raises:
        StructuredPruningError: a group or block that cannot be removed, named; or a pruned model whose
            ONNX export differs from it.
    """
    ctx = _context(model, config, example_inputs, filter_fn, layer_sparsity, importance, data, output)
    if not isinstance(config, STRUCTURAL):
        out = copy_model(model)
        apply_pruning_(out, config, ctx)
        return out
    from squeezelab.engine.pruning.checks import verify_export

    out = _prepared_copy(model, ctx)
    apply_pruning_(out, config, ctx)
    verify_export(out, ctx.example, ctx.output, config.label)
    return out.train(model.training)


def prune_(
    model: nn.Module,
    config: PruningConfig,
    *,
    example_inputs: Any = None,
    filter_fn: FilterFn | None = None,
    layer_sparsity: dict[str, float] | None = None,
    importance: Callable | None = None,
    data: Any = None,
    output: OutputSelector = None,
) -> None:
    """Prune ``model`` in place (arguments as ``prune``).

    Masks are registered on the model's own weights. A structural config is applied to a copy
    and checked first; only then does the model take the copy's smaller layers (its parameters
    are new tensors: make optimizers after pruning).
    """
    if isinstance(config, STRUCTURAL):
        pruned = prune(
            model, config, example_inputs=example_inputs, filter_fn=filter_fn, layer_sparsity=layer_sparsity,
            importance=importance, data=data, output=output,
        )
        model.__dict__.clear()  # the same object, now holding the checked copy's layers and settings
        model.__dict__.update(pruned.__dict__)
        model.__class__ = pruned.__class__
        return
    ctx = _context(model, config, example_inputs, filter_fn, layer_sparsity, importance, data, output)
    apply_pruning_(model, config, ctx)


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
