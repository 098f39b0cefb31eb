"""Pruning at initialisation: SNIP, and the random and magnitude baselines it is compared with.

SNIP (Lee et al. 2019) scores every connection of an untrained network by its
connection sensitivity ``|dL/dw * w|`` on one batch of data and keeps the
highest-scoring ones across all layers; training then starts from the sparse
network. The baselines keep random connections (per layer, at the same
sparsity) or the largest initial weights (global).

Masks are ``WeightMask`` parametrizations, as ``prune`` makes, so training
with ``finetune`` keeps pruned connections at zero.

Examples:
    >>> import torch
    >>> from squeezelab.engine.zoo.digits import DigitsMLP
    >>> from squeezelab.engine.pruning.masks import weight_sparsity
    >>> net = prune_at_init(DigitsMLP(), "random", sparsity=0.9, seed=0)
    >>> round(weight_sparsity(net), 3)
    0.9
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from squeezelab.engine.core.copying import copy_model
from squeezelab.engine.core.errors import ConfigError, DataError
from squeezelab.engine.pruning.masks import WeightMask, _keep_mask, magnitude_masks
from squeezelab.engine.core.layers import FilterFn, chosen_layers
from squeezelab.engine.core.pruners import MagnitudePruning

__all__ = ["prune_at_init", "snip_scores", "METHODS"]

METHODS = ("snip", "random", "magnitude")


def snip_scores(model: nn.Module, data: tuple[Any, Any], layers: list[nn.Module], loss: Any = None) -> list[torch.Tensor]:
    """Connection sensitivity ``|g * w|`` of each chosen layer's weight on one batch."""
    loss = loss or nn.functional.cross_entropy
    x, y = (torch.as_tensor(np.asarray(d) if not isinstance(d, torch.Tensor) else d) for d in data)
    if len(x) == 0 or len(x) != len(y):
        raise DataError(f"SNIP needs one labelled batch (x, y) of equal, non-zero length; got {len(x)} and {len(y)}.")
    model.zero_grad()
    loss(model(x.float()), y.long()).backward()
    return [(m.weight.grad * m.weight).detach().abs() for m in layers]


def prune_at_init(
    model: nn.Module,
    method: str,
    *,
    sparsity: float,
    data: tuple[Any, Any] | None = None,
    seed: int = 0,
    filter_fn: FilterFn | None = None,
) -> nn.Module:
    """A copy of an untrained ``model`` with ``sparsity`` of its connections masked.

    Args:
        method: ``"snip"`` (needs ``data``: one labelled batch), ``"random"`` (per layer,
            seeded) or ``"magnitude"`` (largest initial weights, global).
        sparsity: fraction of weights removed, in [0, 1); exact, as in ``prune``.
    """
    MagnitudePruning(sparsity=sparsity)  # validates the value
    if method not in METHODS:
        raise ConfigError(f"method={method!r}; use one of {', '.join(map(repr, METHODS))}.")
    work = copy_model(model)
    layers = [m for _, m in chosen_layers(work, filter_fn)]
    if not layers:
        raise ConfigError("no layer to prune: the model has no Linear/Conv layer the filter accepts.")
    if any(parametrize.is_parametrized(m, "weight") for m in layers):
        raise ConfigError("the model is already pruned (it carries masks); prune at initialisation starts dense.")
    if method == "snip":
        if data is None:
            raise DataError("SNIP scores connections on data: pass data=(x, y), one labelled batch.")
        scores = snip_scores(work, data, layers)
        masks = magnitude_masks(scores, sparsity, "global")
    elif method == "random":
        gen = torch.Generator().manual_seed(seed)
        masks = [_keep_mask(torch.rand(m.weight.shape, generator=gen), round(sparsity * m.weight.numel())) for m in layers]
    else:
        masks = magnitude_masks([m.weight for m in layers], sparsity, "global")
    work.zero_grad(set_to_none=True)
    for module, mask in zip(layers, masks):
        parametrize.register_parametrization(module, "weight", WeightMask(mask.to(module.weight.dtype)))
    return work
