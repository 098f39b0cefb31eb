"""The pruning verb: ``prune(model, config)`` for every pruning config, and masks for the unstructured ones.

``prune(model, config, ...)`` returns a pruned copy; ``prune_(model, config, ...)`` prunes in
place. Both dispatch on the config's type through a small private registry (``_PRUNERS``):

- ``MagnitudePruning`` and ``NMPruning`` (``pruning/masks.py``): the weights stay dense tensors; a mask
  parametrization multiplies each chosen weight by a 0/1 mask, so fine-tuning keeps pruned
  weights at zero. ``bake_masks_(model)`` writes the masked values into plain weights and
  removes the parametrizations (for export, or saving). The sparsity is exact: magnitude
  pruning zeros ``round(sparsity * n)`` weights of each layer (layer scope) or of all chosen
  layers together (global scope), ties broken by position, so the count never depends on ties.
- ``ChannelPruning`` (``pruning/structured.py``: channels, neurons, attention heads removed) and
  ``LayerPruning`` (``pruning/layer_removal.py``: whole blocks removed) change shapes: they need
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
from typing import Any

from torch import nn

from squeezelab.engine.core.copying import copy_model
from squeezelab.engine.core.errors import ConfigError, ExampleInputError, ModelError
from squeezelab.engine.core.examples import example_batch, run_example
from squeezelab.engine.core.inputs import Inputs
from squeezelab.engine.core.outputs import OutputSelector, check_selector
from squeezelab.engine.core.layers import FilterFn
from squeezelab.engine.core.pruners import ChannelPruning, LayerPruning, MagnitudePruning, NMPruning, PruningConfig
from squeezelab.engine.core.samples import Samples, read_samples
from squeezelab.engine.pruning.checks import verify_export
from squeezelab.engine.pruning.layer_removal import remove_layers_
# The mask functions live in masks.py; their names stay importable from here, where they were before.
from squeezelab.engine.pruning.masks import (  # noqa: F401
    WeightMask, bake_masks_, magnitude_masks, masks_, nm_mask, weight_mask, weight_sparsity,
)
from squeezelab.engine.pruning.structured import Importance, prune_channels_

__all__ = [
    "prune", "prune_", "apply_pruning_", "PruneContext", "STRUCTURAL", "prune_channels",
    "WeightMask", "bake_masks_", "weight_sparsity", "magnitude_masks", "nm_mask", "weight_mask",
]


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
    prune_channels_(
        model, config, ctx.example, filter_fn=ctx.filter_fn, importance=ctx.importance,
        layer_sparsity=ctx.layer_sparsity, data=ctx.data, output=ctx.output,
    )


def _layers_(model: nn.Module, config: LayerPruning, ctx: PruneContext) -> None:
    remove_layers_(model, config, ctx.example, importance=ctx.importance, filter_fn=ctx.filter_fn, data=ctx.data)


# Private registry: pruning config type -> the step that applies it in place (as ort_quant's _CONVERSIONS).
_PRUNERS: dict[type, Callable[[nn.Module, Any, PruneContext], None]] = {
    MagnitudePruning: lambda m, c, ctx: masks_(m, c, ctx.filter_fn, ctx.layer_sparsity),
    NMPruning: lambda m, c, ctx: masks_(m, c, ctx.filter_fn, ctx.layer_sparsity),
    ChannelPruning: _channels_,
    LayerPruning: _layers_,
}
# The steps that change shapes: they need example inputs, and their result is checked in ONNX.
STRUCTURAL: tuple[type, ...] = (ChannelPruning, LayerPruning)


def _context(
    model: Any, config: Any, example_inputs: Any, filter_fn: Any, layer_sparsity: Any, importance: Any, data: Any, output: Any
) -> PruneContext:
    """The arguments checked against the config, before any work."""
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


def prune_channels(
    model: nn.Module,
    config: ChannelPruning,
    *,
    example_inputs: Any,
    filter_fn: FilterFn | None = None,
    importance: Importance | None = None,
    layer_ratios: dict[str, float] | None = None,
) -> nn.Module:
    """Deprecated: ``prune(model, config, ...)`` with a ``ChannelPruning`` config (``squeezelab.prune_channels``
    warns, naming it; the name goes in the next release)."""
    return prune(model, config, example_inputs=example_inputs, filter_fn=filter_fn, importance=importance, layer_sparsity=layer_ratios)
