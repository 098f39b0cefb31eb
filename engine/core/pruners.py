"""Pruning steps: ``MagnitudePruning`` (unstructured), ``ChannelPruning`` (structured), ``LayerPruning``
(whole blocks) and ``NMPruning`` (semi-structured N:M).

Examples:
    >>> from squeezelab.engine.core.pruners import MagnitudePruning
    >>> MagnitudePruning(sparsity=0.5).label
    'magnitude50%-layer'
    >>> MagnitudePruning(sparsity=0.5, scope="global").with_amount(0.9).label
    'magnitude90%-global'
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from squeezelab.engine.core.configs import _check_bool, _Config, _fraction_field, _int_field, _register
from squeezelab.engine.core.errors import ConfigError

__all__ = ["PruningConfig", "MagnitudePruning", "ChannelPruning", "LayerPruning", "NMPruning"]


class PruningConfig(_Config):
    """Base of the pruning steps."""

    @property
    def label(self) -> str:  # pragma: no cover
        raise NotImplementedError

    def with_amount(self, amount: float) -> PruningConfig:  # pragma: no cover - every subclass overrides
        """The same pruning step at another amount (validated like a new config), as ``with_bits`` is for
        quantizers: the field that says how much is pruned changes, every other field is kept."""
        raise NotImplementedError


_SCOPES = ("layer", "global")


@_register
@dataclass(frozen=True, kw_only=True)
class MagnitudePruning(PruningConfig):
    """Unstructured pruning: zero the smallest-magnitude weights.

    Args:
        sparsity: fraction of weights set to zero, in [0, 1).
        scope: ``"layer"`` (each layer to ``sparsity``) or ``"global"``
            (one threshold over all chosen layers; layers end up uneven).
    """

    sparsity: float
    scope: str = "layer"

    def __post_init__(self) -> None:
        _fraction_field(self, "sparsity", "0.9 = 90% of weights zero")
        if self.scope not in _SCOPES:
            raise ConfigError(f"MagnitudePruning: scope={self.scope!r}; use 'layer' or 'global'.")

    @property
    def label(self) -> str:
        return f"magnitude{self.sparsity:.0%}-{self.scope}"

    def with_amount(self, amount: float) -> MagnitudePruning:
        """The same pruning at ``sparsity=amount``, in [0, 1)."""
        return dataclasses.replace(self, sparsity=amount)


_IMPORTANCES = ("l1", "l2", "taylor")


def _names(owner: str, value: Any) -> tuple[str, ...]:
    """A tuple of layer names or patterns (TOML and JSON give lists; the config must stay hashable)."""
    if isinstance(value, str):
        value = (value,)
    if isinstance(value, list):
        value = tuple(value)
    if not isinstance(value, tuple) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(
            f"{owner}: ignored={value!r} must be a tuple of layer names or regular expressions matched against "
            "model.named_modules(), e.g. ignored=('fc', 'layer4\\..*')."
        )
    return value


@_register
@dataclass(frozen=True, kw_only=True)
class ChannelPruning(PruningConfig):
    """Structured pruning: physically remove channels (Conv2d), neurons (Linear) and attention heads.

    Layers coupled by residual additions, concatenations, depthwise or grouped convolutions and
    norms are pruned together as one group (Torch-Pruning's dependency graph); groups whose
    channels are the model's outputs keep them. See ``squeezelab.engine.pruning.structured``.

    Args:
        ratio: fraction of each group's channels removed, in [0, 1). In a transformer this prunes
            the feed-forward neurons; the hidden width (the model's output) is kept.
        importance: how channels are ranked: ``"l1"`` or ``"l2"`` norm of the group's weights,
            or ``"taylor"`` (|weight x gradient|, gradients of a cross-entropy on the data given).
            Pass a callable ``importance(group) -> scores`` to ``prune`` for others.
        scope: ``"layer"`` (every group loses ``ratio`` of its channels) or ``"global"`` (one
            threshold over all groups' normalised scores; groups end up uneven).
        round_to: keep channel counts a multiple of this (8 or 16 suit fast kernels); ``None`` keeps
            exact counts.
        heads: also remove ``ratio`` of the attention heads (whole heads) of every Hugging Face
            self-attention layer; without it attention keeps every head.
        ignored: layer names or regular expressions (full match on ``named_modules()`` names) whose
            output channels are kept, with the group they belong to.
    """

    ratio: float
    importance: str = "l1"
    scope: str = "layer"
    round_to: int | None = None
    heads: bool = False
    ignored: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _fraction_field(self, "ratio", "0.5 = half the channels")
        if self.importance not in _IMPORTANCES:
            raise ConfigError(
                f"ChannelPruning: importance={self.importance!r}; use 'l1', 'l2' or 'taylor', or pass a callable "
                "importance(group) -> scores to squeezelab.prune(..., importance=...)."
            )
        if self.scope not in _SCOPES:
            raise ConfigError(f"ChannelPruning: scope={self.scope!r}; use 'layer' (uniform ratio) or 'global'.")
        if self.round_to is not None:
            _int_field(self, "round_to", 1, 1024)
        _check_bool("ChannelPruning", "heads", self.heads)
        object.__setattr__(self, "ignored", _names("ChannelPruning", self.ignored))

    @property
    def label(self) -> str:
        parts = [f"channels{self.ratio:.0%}-{self.importance}"]
        if self.heads:
            parts.append("heads")
        if self.scope == "global":
            parts.append("global")
        if self.round_to is not None:
            parts.append(f"round{self.round_to}")
        if self.ignored:
            parts.append(f"{len(self.ignored)}ignored")
        return "-".join(parts)

    def with_amount(self, amount: float) -> ChannelPruning:
        """The same pruning at ``ratio=amount`` (the fraction of each group's channels removed), in [0, 1)."""
        return dataclasses.replace(self, ratio=amount)


@_register
@dataclass(frozen=True, kw_only=True)
class LayerPruning(PruningConfig):
    """Whole-layer removal: drop residual blocks or transformer layers, the least important first.

    The removable blocks are the repeated blocks whose output has their input's shape (ResNet
    blocks without a projection, MobileNetV2's residual blocks, the layers of a Hugging Face
    encoder); see ``squeezelab.engine.pruning.layer_removal``.

    Args:
        keep: how many removable blocks stay (e.g. 3 of MiniLM's 6 layers); or
        ratio: the fraction of removable blocks dropped, in [0, 1). Give exactly one.
        importance: ``"influence"``: 1 - cosine between a block's input and output on the example
            inputs (ShortGPT's block influence); blocks that change their input least go first.
    """

    keep: int | None = None
    ratio: float | None = None
    importance: str = "influence"

    def __post_init__(self) -> None:
        if (self.keep is None) == (self.ratio is None):
            raise ConfigError(
                f"LayerPruning: give keep= (blocks kept, e.g. keep=3) or ratio= (fraction dropped), not "
                f"{'both' if self.keep is not None else 'neither'}."
            )
        if self.keep is not None:  # keep=0 would remove every block: the network no longer fits together
            _int_field(
                self, "keep", 1, 10_000,
                hint=" (blocks kept: keep=0 would remove every block; keep at least 1, or pass ratio= for the "
                "fraction of blocks dropped)",
            )
        if self.ratio is not None:
            _fraction_field(self, "ratio", "0.5 = half the removable blocks")
        if self.importance != "influence":
            raise ConfigError(
                f"LayerPruning: importance={self.importance!r}; use 'influence', or pass a callable "
                "importance(name, block, block_input, block_output) -> score to squeezelab.prune(..., importance=...)."
            )

    @property
    def label(self) -> str:
        return f"layers-keep{self.keep}" if self.keep is not None else f"layers{self.ratio:.0%}"

    def with_amount(self, amount: float) -> LayerPruning:
        """The same pruning at another amount, in the field this config was given: ``keep=amount`` (an
        integer count of blocks kept) or ``ratio=amount`` (the fraction of blocks dropped, in [0, 1))."""
        if self.keep is not None:
            return dataclasses.replace(self, keep=amount)
        return dataclasses.replace(self, ratio=amount)


@_register
@dataclass(frozen=True, kw_only=True)
class NMPruning(PruningConfig):
    """Semi-structured N:M sparsity: keep the ``n`` largest of every ``m`` consecutive weights.

    Groups run along the input channels, at each output row and kernel position,
    as sparse tensor cores expect for 2:4. Layers whose input count is not a
    multiple of ``m`` are left dense.
    """

    n: int = 2
    m: int = 4

    def __post_init__(self) -> None:
        _int_field(self, "m", 1, 1024)
        _int_field(self, "n", 1, 1024)
        if self.n > self.m:
            raise ConfigError(f"NMPruning: n={self.n} > m={self.m}; keep n of every m weights, n <= m.")

    @property
    def label(self) -> str:
        return f"{self.n}:{self.m}-sparse"

    def with_amount(self, amount: float) -> NMPruning:
        """Refused: an N:M pattern has no continuous amount (its sparsity is 1 - n/m)."""
        raise ConfigError(
            f"NMPruning: with_amount({amount!r}) does not apply; N:M sparsity has no continuous amount, only "
            f"1 - n/m ({self.n}:{self.m} = {1 - self.n / self.m:g}). Build NMPruning(n=..., m=...) for another "
            "pattern, or use MagnitudePruning(sparsity=...) or ChannelPruning(ratio=...) for a continuous amount."
        )

