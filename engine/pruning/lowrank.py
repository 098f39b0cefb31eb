"""Low-rank factorisation: replace Linear and Conv2d layers by two thinner layers (truncated SVD).

A ``Linear(in, out)`` with weight ``W = U S V^T`` becomes
``Linear(in, r, bias=False) -> Linear(r, out)`` with weights ``sqrt(S_r) V_r^T``
and ``U_r sqrt(S_r)``. A ``Conv2d(in, out, k)`` becomes ``Conv2d(in, r, k)``
(same stride, padding, dilation) followed by a 1x1 ``Conv2d(r, out)``: the
SVD of the weight reshaped to ``(out, in * kh * kw)``. The result is a real,
smaller dense model; a layer is only replaced when the factorised pair has
fewer parameters than the original.

Examples:
    >>> import torch
    >>> layer = torch.nn.Sequential(torch.nn.Linear(64, 64))
    >>> small = factorize(layer, rank=8)
    >>> [tuple(m.weight.shape) for m in small[0]]
    [(8, 64), (64, 8)]
"""

from __future__ import annotations

import math

import torch
from torch import nn

from squeezelab.engine.core.copying import copy_model, replace_module
from squeezelab.engine.core.errors import ConfigError, ModelError
from squeezelab.engine.core.layers import FilterFn

__all__ = ["factorize", "choose_rank"]


def choose_rank(singular_values: torch.Tensor, *, rank: int | None, energy: float | None) -> int:
    """The given ``rank`` (capped at full rank), or the smallest rank keeping ``energy`` of sum(S^2)."""
    full = singular_values.numel()
    if rank is not None:
        return min(rank, full)
    squared = singular_values.double() ** 2
    kept = torch.cumsum(squared, 0) / squared.sum()
    return int(torch.searchsorted(kept, torch.tensor(energy, dtype=torch.float64) - 1e-12)) + 1


def _split(weight2d: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    u, s, vh = torch.linalg.svd(weight2d.double(), full_matrices=False)
    root = torch.sqrt(s[:r])
    return (root[:, None] * vh[:r]).float(), (u[:, :r] * root).float()  # (r, in), (out, r)


def _factorize_linear(layer: nn.Linear, r: int) -> nn.Sequential:
    first_w, second_w = _split(layer.weight.detach(), r)
    first = nn.Linear(layer.in_features, r, bias=False)
    second = nn.Linear(r, layer.out_features, bias=layer.bias is not None)
    with torch.no_grad():
        first.weight.copy_(first_w)
        second.weight.copy_(second_w)
        if layer.bias is not None:
            second.bias.copy_(layer.bias.detach())
    return nn.Sequential(first, second)


def _factorize_conv(layer: nn.Conv2d, r: int) -> nn.Sequential:
    out_c, in_c, kh, kw = layer.weight.shape
    first_w, second_w = _split(layer.weight.detach().reshape(out_c, -1), r)
    first = nn.Conv2d(in_c, r, (kh, kw), stride=layer.stride, padding=layer.padding,
                      dilation=layer.dilation, bias=False, padding_mode=layer.padding_mode)
    second = nn.Conv2d(r, out_c, 1, bias=layer.bias is not None)
    with torch.no_grad():
        first.weight.copy_(first_w.reshape(r, in_c, kh, kw))
        second.weight.copy_(second_w.reshape(out_c, r, 1, 1))
        if layer.bias is not None:
            second.bias.copy_(layer.bias.detach())
    return nn.Sequential(first, second)


def factorize(
    model: nn.Module,
    *,
    rank: int | None = None,
    energy: float | None = None,
    filter_fn: FilterFn | None = None,
) -> nn.Module:
    """A copy of ``model`` with its Linear/Conv2d layers replaced by truncated-SVD pairs.

    Args:
        rank: keep this many singular values per layer; or
        energy: keep the fewest singular values whose squares sum to this fraction (0, 1].
        filter_fn: ``filter_fn(module, fqn) -> bool`` choosing the layers (default: all).

    Layers whose pair would not be smaller, and grouped convolutions, are kept as they are.
    """
    if not isinstance(model, nn.Module):
        raise ModelError(f"expected a torch.nn.Module, got {type(model).__name__}.")
    if (rank is None) == (energy is None):
        raise ConfigError("pass exactly one of rank= (an integer >= 1) or energy= (a fraction in (0, 1]).")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise ConfigError(f"rank={rank!r} must be an integer >= 1.")
    if energy is not None and not (isinstance(energy, (int, float)) and 0.0 < energy <= 1.0 and math.isfinite(energy)):
        raise ConfigError(f"energy={energy!r} must be a fraction in (0, 1].")
    work = copy_model(model)
    targets = [
        (name, m)
        for name, m in work.named_modules()
        if isinstance(m, (nn.Linear, nn.Conv2d))
        and not (isinstance(m, nn.Conv2d) and m.groups != 1)
        and (filter_fn is None or filter_fn(m, name))
    ]
    for name, layer in targets:
        weight2d = layer.weight.detach().reshape(layer.weight.shape[0], -1)
        r = choose_rank(torch.linalg.svdvals(weight2d.double()), rank=rank, energy=energy)
        out_dim, in_dim = weight2d.shape
        if r * (in_dim + out_dim) >= out_dim * in_dim:
            continue  # the pair would not be smaller
        pair = _factorize_linear(layer, r) if isinstance(layer, nn.Linear) else _factorize_conv(layer, r)
        if not name:  # the model is itself one layer
            return pair
        replace_module(work, name, pair)
    return work
