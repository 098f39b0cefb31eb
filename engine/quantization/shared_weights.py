"""Trained k-means weight sharing (Deep Compression, Han et al. 2016, section 3.3).

Each chosen layer's weight becomes ``codebook[codes]``: ``codes`` is a fixed
buffer (the cluster of every weight, from ``kmeans_quantize``) and the
``codebook`` is a trainable parameter. Through the indexing, autograd gives
each centroid the sum of the gradients of the weights in its cluster, which is
exactly the centroid update of the paper. ``finetune`` then trains the
centroids (and biases); ``bake_shared_weights_`` writes plain weights that hold
at most ``2^bits`` distinct values per layer, which the packed k-means format
stores exactly.

Examples:
    >>> import torch
    >>> from squeezelab.engine.core.quantizers import KMeansQuantization
    >>> layer = share_weights(torch.nn.Linear(16, 8), KMeansQuantization(bits=2))
    >>> len(torch.unique(layer.weight))
    4
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from squeezelab.engine.core.copying import copy_model, own_class
from squeezelab.engine.core.errors import ConfigError, ModelError
from squeezelab.engine.quantization import kmeans_quantize
from squeezelab.engine.core.layers import chosen_layers
from squeezelab.engine.core.layers import FilterFn
from squeezelab.engine.core.quantizers import KMeansQuantization

__all__ = ["SharedWeights", "share_weights", "bake_shared_weights_"]


class SharedWeights(nn.Module):
    """Parametrization ``weight -> codebook[codes]`` (the stored weight itself is ignored)."""

    def __init__(self, codebook: np.ndarray, codes: np.ndarray, keep: torch.Tensor | None = None) -> None:
        super().__init__()
        self.codebook = nn.Parameter(torch.from_numpy(np.asarray(codebook, dtype=np.float32)).clone())
        self.register_buffer("codes", torch.from_numpy(np.asarray(codes, dtype=np.int64)).clone())
        # Pruned (zero) weights stay zero: they belong to no cluster.
        self.register_buffer("keep", keep.float().clone() if keep is not None else None)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        shared = self.codebook[self.codes]  # gradient per centroid: the sum over its cluster
        return shared * self.keep if self.keep is not None else shared


def share_weights(
    model: nn.Module, config: KMeansQuantization, *, filter_fn: FilterFn | None = None
) -> nn.Module:
    """A copy of ``model`` whose chosen weights are shared through trainable k-means codebooks."""
    if not isinstance(model, nn.Module):
        raise ModelError(f"expected a torch.nn.Module, got {type(model).__name__}.")
    if not isinstance(config, KMeansQuantization):
        raise ConfigError(f"config={config!r}; use KMeansQuantization(bits=...).")
    work = copy_model(model)
    chosen = [m for _, m in chosen_layers(work, filter_fn)]
    if not chosen:
        raise ConfigError("no layer to share weights in: the model has no Linear/Conv layer the filter accepts.")
    for module in chosen:
        if parametrize.is_parametrized(module, "weight"):
            raise ConfigError(
                f"{type(module).__name__} already has a weight parametrization (a pruning mask?); "
                "bake it first with bake_masks_."
            )
        weight = module.weight.detach()
        keep = weight != 0
        if bool(keep.all()):
            codebook, codes = kmeans_quantize(weight, bits=config.bits, seed=config.seed)
            shared = SharedWeights(codebook, codes)
        else:  # a pruned layer: cluster the surviving weights only, as Deep Compression does
            codebook, nz_codes = kmeans_quantize(weight[keep], bits=config.bits, seed=config.seed)
            codes = np.zeros(weight.shape, dtype=np.int64)
            codes[keep.numpy()] = nz_codes
            shared = SharedWeights(codebook, codes, keep)
        parametrize.register_parametrization(module, "weight", shared, unsafe=True)
    return work


def bake_shared_weights_(model: nn.Module) -> None:
    """Replace every ``SharedWeights`` parametrization by the plain weight it computes."""
    for module in list(model.modules()):
        if parametrize.is_parametrized(module, "weight") and any(
            isinstance(p, SharedWeights) for p in module.parametrizations.weight
        ):
            own_class(module)
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
