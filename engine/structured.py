"""Structured pruning with physical removal of output channels and neurons.

The graph is traced with ``torch.fx``. For every ``Conv2d``/``Linear`` layer
(a *producer*) the tracer follows its output through channel-preserving ops
(activations, ``BatchNorm``, pooling, dropout, ``Flatten``) to the next
``Conv2d``/``Linear`` layer (the *consumer*). Removing output channels of the
producer then removes the matching entries of the BatchNorm between them and
the matching input channels of the consumer (``in_channels x H x W``
features when a ``Flatten`` sits in between). The result is a genuinely
smaller dense model.

Layers whose output reaches the model's output are kept whole (their channels
are the model's interface). A producer whose output feeds a residual addition,
a concatenation or any op the tracer does not know is refused with an
``StructuredPruningError`` naming it: exclude it with ``filter_fn``.

Examples:
    >>> import torch
    >>> from squeezelab.engine.default_models import DigitsCNN
    >>> from squeezelab.engine.recipe import ChannelPruning
    >>> small = prune_channels(DigitsCNN(), ChannelPruning(ratio=0.5), example_inputs=torch.randn(1, 1, 8, 8))
    >>> small.features[0].out_channels, small.features[2].out_channels, small.classifier[1].in_features
    (8, 16, 256)
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from squeezelab.engine._copy import copy_model, replace_module
from squeezelab.engine.errors import ConfigError, ModelError
from squeezelab.engine.quantize_model import FilterFn
from squeezelab.engine.recipe import ChannelPruning

__all__ = ["StructuredPruningError", "Importance", "l1_importance", "l2_importance", "taylor_importance", "prune_channels"]


class StructuredPruningError(ModelError, ValueError):
    """A layer cannot have channels removed (it is coupled, grouped, or would be left empty)."""


# importance(module, weight) -> one score per output channel; higher = more important.
Importance = Callable[[nn.Module], torch.Tensor]


def l1_importance(module: nn.Module) -> torch.Tensor:
    """Sum of |w| over each output channel (Li et al. 2017)."""
    return module.weight.detach().abs().reshape(module.weight.shape[0], -1).sum(1)


def l2_importance(module: nn.Module) -> torch.Tensor:
    """L2 norm of each output channel's weights."""
    return module.weight.detach().reshape(module.weight.shape[0], -1).norm(dim=1)


def taylor_importance(model: nn.Module, data: tuple[Any, Any], loss: Callable | None = None) -> Importance:
    """First-order Taylor importance |w * dL/dw| per output channel (Molchanov et al. 2019).

    Computes gradients once on ``data = (x, y)`` over a copy of ``model`` and
    returns an importance callable that looks the scores up by module.
    """
    from squeezelab.engine.pruning import bake_masks_

    loss = loss or nn.functional.cross_entropy
    work = copy_model(model)
    bake_masks_(work)  # plain weights, whose .grad exists
    x, y = (torch.as_tensor(np.asarray(d) if not isinstance(d, torch.Tensor) else d) for d in data)
    work.zero_grad()
    loss(work(x.float()), y.long()).backward()
    copied = dict(work.named_modules())
    scores = {}
    for name, original in model.named_modules():
        twin = copied.get(name)
        if isinstance(twin, (nn.Conv2d, nn.Linear)) and twin.weight.grad is not None:
            contribution = (twin.weight.detach() * twin.weight.grad).abs()
            scores[id(original)] = contribution.reshape(contribution.shape[0], -1).sum(1)

    def importance(module: nn.Module) -> torch.Tensor:
        return scores[id(module)]

    return importance


_IMPORTANCE = {"l1": l1_importance, "l2": l2_importance}

_PASS_THROUGH_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Dropout,
    nn.Dropout2d,
    nn.Identity,
)
_PASS_THROUGH_FUNCTIONS = {
    torch.relu,
    nn.functional.relu,
    nn.functional.gelu,
    nn.functional.silu,
    torch.sigmoid,
    torch.tanh,
    nn.functional.relu6,
    nn.functional.leaky_relu,
    nn.functional.hardswish,
    nn.functional.max_pool2d,
    nn.functional.avg_pool2d,
    nn.functional.adaptive_avg_pool2d,
    nn.functional.dropout,
}


@dataclass
class _Chain:
    """What removing channels of ``producer`` touches."""

    producer: str
    norms: list[str]
    consumer: str
    flatten_factor: int  # features per channel seen by the consumer (H*W after a Flatten, else 1)


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _follow(gm: fx.GraphModule, start: fx.Node) -> _Chain | None:
    """Walk from a producer to its single consumer; ``None`` if it reaches the output."""
    modules = dict(gm.named_modules())
    norms: list[str] = []
    factor = 1
    node = start
    while True:
        # x.size(0) / x.shape only read the shape (as in x.view(x.size(0), -1)): not a data path.
        users = [u for u in node.users if not _reads_shape_only(u)]
        if len(users) != 1:
            if not users:
                return None
            raise StructuredPruningError(
                f"layer {start.target!r}: its output is used by {len(users)} ops "
                f"({', '.join(str(u.target) for u in users)}), e.g. a residual branch; removing its "
                "channels would need the coupled layers pruned together. Exclude it with filter_fn."
            )
        user = users[0]
        if user.op == "output":
            return None
        if user.op == "call_module":
            mod = modules[user.target]
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                if isinstance(mod, nn.Conv2d) and mod.groups != 1:
                    raise StructuredPruningError(
                        f"layer {start.target!r} feeds grouped convolution {user.target!r} "
                        f"(groups={mod.groups}); exclude one of them with filter_fn."
                    )
                return _Chain(str(start.target), norms, str(user.target), factor)
            if isinstance(mod, nn.BatchNorm2d | nn.BatchNorm1d):
                norms.append(str(user.target))
            elif isinstance(mod, nn.Flatten):
                factor = _flatten_factor(node, start)
            elif not isinstance(mod, _PASS_THROUGH_MODULES):
                raise _unknown(start, user)
        elif user.op == "call_function" and user.target in _PASS_THROUGH_FUNCTIONS:
            pass
        elif user.op == "call_function" and user.target is torch.flatten:
            factor = _flatten_factor(node, start)
        elif user.op == "call_method" and user.target in ("relu", "sigmoid", "tanh"):
            pass
        elif user.op == "call_method" and user.target in ("flatten", "view", "reshape"):
            factor = _flatten_factor(node, start)
        else:
            raise _unknown(start, user)
        node = user


def _reads_shape_only(node: fx.Node) -> bool:
    if node.op == "call_method" and node.target in ("size", "dim"):
        return True
    return node.op == "call_function" and node.target is getattr and node.args[1:] == ("shape",)


def _flatten_factor(before: fx.Node, start: fx.Node) -> int:
    if start.meta.get("_producer_kind") != "conv":
        raise StructuredPruningError(
            f"layer {start.target!r}: a Linear output that is flattened (e.g. (B, T, F) -> (B, T*F)) "
            "mixes its features with another dimension; exclude it with filter_fn."
        )
    shape = _shape(before)
    if shape is None or len(shape) < 2:
        raise StructuredPruningError(f"layer {start.target!r}: cannot tell the shape flattened after it.")
    factor = 1
    for d in shape[2:]:
        factor *= d
    return factor


def _unknown(start: fx.Node, user: fx.Node) -> StructuredPruningError:
    what = {operator.add: "an addition (residual)", torch.cat: "a concatenation"}.get(user.target, repr(user.target))
    return StructuredPruningError(
        f"layer {start.target!r}: its output goes into {what}, which couples its channels to other "
        "layers; squeezelab does not prune coupled channels yet. Exclude it with filter_fn."
    )


def _slice_out(module: nn.Module, keep: torch.Tensor) -> nn.Module:
    """A copy of a Conv2d/Linear with only the ``keep`` output channels."""
    new = copy.deepcopy(module)
    new.weight = nn.Parameter(module.weight.detach()[keep].clone())
    if module.bias is not None:
        new.bias = nn.Parameter(module.bias.detach()[keep].clone())
    if isinstance(new, nn.Conv2d):
        new.out_channels = len(keep)
    else:
        new.out_features = len(keep)
    return new


def _slice_norm(norm: nn.Module, keep: torch.Tensor) -> nn.Module:
    new = copy.deepcopy(norm)
    for attr in ("weight", "bias"):
        if getattr(norm, attr) is not None:
            setattr(new, attr, nn.Parameter(getattr(norm, attr).detach()[keep].clone()))
    for attr in ("running_mean", "running_var"):
        if getattr(norm, attr) is not None:
            setattr(new, attr, getattr(norm, attr)[keep].clone())
    new.num_features = len(keep)
    return new


def _slice_in(module: nn.Module, keep: torch.Tensor, factor: int) -> nn.Module:
    """A copy of a Conv2d/Linear reading only the kept input channels (``factor`` features each)."""
    if factor > 1:
        keep = (keep[:, None] * factor + torch.arange(factor)).reshape(-1)
    new = copy.deepcopy(module)
    new.weight = nn.Parameter(module.weight.detach()[:, keep].clone())
    if isinstance(new, nn.Conv2d):
        new.in_channels = len(keep)
    else:
        new.in_features = len(keep)
    return new


def prune_channels(
    model: nn.Module,
    config: ChannelPruning,
    *,
    example_inputs: Any,
    filter_fn: FilterFn | None = None,
    importance: Importance | None = None,
    layer_ratios: dict[str, float] | None = None,
) -> nn.Module:
    """A copy of ``model`` with ``config.ratio`` of each prunable layer's output channels removed.

    Args:
        model: traced with ``torch.fx``; the caller's model is not changed.
        config: ``ChannelPruning(ratio=..., importance="l1" | "l2")``.
        example_inputs: one batch, for shapes (a ``Flatten`` after a convolution).
        filter_fn: ``filter_fn(module, fqn) -> bool``; layers it rejects keep all channels.
        importance: a callable scoring each output channel, overriding ``config.importance``
            (e.g. ``taylor_importance(model, (x, y))``).
        layer_ratios: named layers' own ratios, overriding ``config.ratio`` (0 keeps a layer whole).
    """
    if not isinstance(model, nn.Module):
        raise ModelError(f"expected a torch.nn.Module, got {type(model).__name__}.")
    if not isinstance(config, ChannelPruning):
        raise ConfigError(f"config={config!r}; use ChannelPruning(ratio=...).")
    score = importance or _IMPORTANCE[config.importance]
    from squeezelab.engine.compression import _run_example, example_batch

    example = example_batch(example_inputs)
    inputs, _ = example.torch()
    work = copy_model(model).eval()
    from squeezelab.engine.pruning import bake_masks_

    bake_masks_(work)  # masks (from prune) become plain weights before modules are sliced
    _run_example(work, example, None)  # ExampleInputError if they do not fit
    try:
        gm = fx.symbolic_trace(work)
        fx.passes.shape_prop.ShapeProp(gm).propagate(*inputs)
    except Exception as exc:  # fx raises many types on dynamic control flow
        raise StructuredPruningError(
            f"torch.fx cannot trace {type(model).__name__} ({type(exc).__name__}: {exc}); structured "
            "pruning needs a traceable forward (no data-dependent control flow)."
        ) from exc
    modules = dict(gm.named_modules())
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    chains = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], (nn.Conv2d, nn.Linear)):
            continue
        layer = work.get_submodule(node.target)
        if filter_fn is not None and not filter_fn(layer, node.target):
            continue
        node.meta["_producer_kind"] = "conv" if isinstance(layer, nn.Conv2d) else "linear"
        chain = _follow(gm, node)
        if chain is None:
            continue
        if isinstance(layer, nn.Conv2d) and layer.groups != 1:
            raise StructuredPruningError(
                f"layer {node.target!r} is a grouped convolution (groups={layer.groups}); removing its "
                "channels would unbalance the groups. Exclude it with filter_fn."
            )
        for name in (chain.producer, *chain.norms, chain.consumer):
            if calls.get(name, 0) > 1:
                raise StructuredPruningError(
                    f"layer {name!r} is called {calls[name]} times in forward (shared weights); its "
                    f"channels cannot follow one path. Exclude {chain.producer!r} with filter_fn."
                )
        chains.append(chain)
    if not chains:
        raise StructuredPruningError(
            "no layer can have channels removed: every Conv2d/Linear either feeds the output or is excluded."
        )
    layer_ratios = layer_ratios or {}
    unknown = sorted(set(layer_ratios) - {c.producer for c in chains})
    if unknown:
        raise ConfigError(
            f"per-layer ratios name layers whose channels cannot be removed here: {unknown}; "
            f"prunable layers: {[c.producer for c in chains]}."
        )
    for chain in chains:
        producer = work.get_submodule(chain.producer)
        channels = producer.weight.shape[0]
        n_keep = channels - round(layer_ratios.get(chain.producer, config.ratio) * channels)
        if n_keep < 1:
            raise StructuredPruningError(f"layer {chain.producer!r} would be left with zero channels.")
        scores = score(model.get_submodule(chain.producer))
        keep = torch.sort(torch.topk(scores, n_keep).indices).values  # keep the original order
        replace_module(work, chain.producer, _slice_out(producer, keep))
        for norm in chain.norms:
            replace_module(work, norm, _slice_norm(work.get_submodule(norm), keep))
        replace_module(work, chain.consumer, _slice_in(work.get_submodule(chain.consumer), keep, chain.flatten_factor))
    try:
        with torch.no_grad():
            work(*inputs)
    except Exception as exc:
        raise StructuredPruningError(
            f"the pruned {type(model).__name__} no longer runs ({exc}); its forward probably hard-codes "
            "a channel count (e.g. x.view(-1, 512)): use nn.Flatten or x.flatten(1)."
        ) from exc
    return work
