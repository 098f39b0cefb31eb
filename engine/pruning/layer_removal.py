"""Whole-layer removal (``LayerPruning``): drop residual blocks or transformer layers, least important first.

Structural pruning in its original sense: a network with fewer blocks. A block can go when the
network still fits together without it, i.e. when its output has its input's shape. The
*removable blocks* are found on the example inputs:

- items of an ``nn.Sequential`` or ``nn.ModuleList`` whose class is not one of ``torch.nn``'s own
  (a ``BasicBlock``, an ``InvertedResidual``, a ``BertLayer``, not a bare ``Conv2d``),
- with at least two items of that class in the same container,
- called once, returning a tensor of the shape it was given (ResNet blocks without a projection,
  MobileNetV2's residual blocks, every layer of a Hugging Face encoder).

Importance ``"influence"`` is ShortGPT's block influence: 1 - cosine(block input, block output),
per token for (batch, sequence, hidden) activations, per sample otherwise, averaged over the
inputs given. A block that changes its input least is removed first. A removed item of a
``ModuleList`` is deleted (the list is renumbered, and a Hugging Face ``config.num_hidden_layers``
follows); one of an ``nn.Sequential`` becomes ``nn.Identity`` (the other names stay).

Examples:
    >>> import torch
    >>> import squeezelab as sl
    >>> from squeezelab.engine import zoo
    >>> bert = zoo.tiny_bert(num_hidden_layers=4)
    >>> short = sl.prune(bert, sl.LayerPruning(keep=2), example_inputs=zoo.tiny_bert_inputs(batch=2, seq=8))
    >>> len(short.encoder.layer), short.config.num_hidden_layers, bert.config.num_hidden_layers
    (2, 2, 4)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from squeezelab.engine.pruning.checks import check_interface, output_shapes
from squeezelab.engine.core.errors import ConfigError, StructuredPruningError
from squeezelab.engine.core.inputs import Inputs
from squeezelab.engine.core.layers import FilterFn
from squeezelab.engine.core.pruners import LayerPruning

__all__ = ["RemovableBlock", "BlockImportance", "removable_blocks", "remove_layers_"]

# importance(name, block, block_input, block_output) -> score; higher = kept.
BlockImportance = Callable[[str, nn.Module, torch.Tensor, torch.Tensor], float]


@dataclass(frozen=True)
class RemovableBlock:
    """A block ``LayerPruning`` may drop: ``name`` in ``named_modules()``, and its ``score`` (higher = kept)."""

    name: str
    container: str
    key: str
    score: float


def influence(name: str, block: nn.Module, block_input: torch.Tensor, block_output: torch.Tensor) -> float:
    """ShortGPT's block influence, 1 - mean cosine(input, output): how much the block changes its input."""
    a, b = block_input.float(), block_output.float()
    if a.ndim != 3:  # (N, C, H, W) or (N, F): one vector per sample
        a, b = a.flatten(1), b.flatten(1)
    return float(1.0 - nn.functional.cosine_similarity(a, b, dim=-1).mean())


def _candidates(model: nn.Module) -> dict[str, tuple[str, str, nn.Module]]:
    """``{name: (container, key, block)}``: repeated user-defined blocks of Sequentials and ModuleLists."""
    found: dict[str, tuple[str, str, nn.Module]] = {}
    for cname, container in model.named_modules():
        if not isinstance(container, (nn.Sequential, nn.ModuleList)):
            continue
        if any(cname.startswith(name + ".") or cname == name for name in found):
            continue  # inside a block already found: whole blocks only
        items = list(container.named_children())
        classes = Counter(type(m) for _, m in items)
        for key, block in items:
            if type(block).__module__.startswith("torch.nn") or classes[type(block)] < 2:
                continue
            found[f"{cname}.{key}" if cname else key] = (cname, key, block)
    return found


def _first_tensor(values: Any) -> torch.Tensor | None:
    for v in values:
        if isinstance(v, torch.Tensor):
            return v
        if isinstance(v, (tuple, list)) and v and isinstance(v[0], torch.Tensor):
            return v[0]
    return None


def removable_blocks(
    model: nn.Module, example: Inputs, *, importance: BlockImportance | None = None, filter_fn: FilterFn | None = None
) -> list[RemovableBlock]:
    """The blocks of ``model`` that can be dropped, scored on ``example`` (highest score first kept)."""
    candidates = _candidates(model)
    if filter_fn is not None:
        candidates = {n: c for n, c in candidates.items() if filter_fn(c[2], n)}
    seen: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {name: [] for name in candidates}

    def hook(name: str) -> Callable:
        def record(module: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
            x = _first_tensor([*args, *kwargs.values()])
            y = _first_tensor([out])
            if x is not None and y is not None:
                seen[name].append((x.detach(), y.detach()))

        return record

    handles = [block.register_forward_hook(hook(name), with_kwargs=True) for name, (_, _, block) in candidates.items()]
    try:
        example.call(model)
    finally:
        for handle in handles:
            handle.remove()
    score = importance or influence
    blocks = []
    for name, (container, key, block) in candidates.items():
        calls = seen[name]
        if len(calls) == 1 and calls[0][0].shape == calls[0][1].shape:  # called once, same shape out as in
            blocks.append(RemovableBlock(name, container, key, float(score(name, block, *calls[0]))))
    return blocks


def _chosen(blocks: list[RemovableBlock], config: LayerPruning, model: nn.Module) -> list[RemovableBlock]:
    n = len(blocks)
    if n == 0:
        raise StructuredPruningError(
            f"{type(model).__name__} has no removable block: LayerPruning drops repeated blocks (items of an "
            "nn.Sequential or nn.ModuleList, of a class of your own, at least two alike) whose output has their "
            "input's shape, such as residual blocks or transformer layers."
        )
    if config.keep is not None and config.keep >= n:
        raise ConfigError(
            f"{config.label}: {type(model).__name__} has {n} removable blocks ({', '.join(b.name for b in blocks)}); "
            f"keep={config.keep} removes none. Pass keep < {n}."
        )
    drop = n - config.keep if config.keep is not None else round(config.ratio * n)
    if drop >= n:  # a network without its blocks no longer fits together (and the export check would blame coupling)
        raise ConfigError(
            f"{config.label}: ratio={config.ratio:g} of {type(model).__name__}'s {n} removable blocks drops all "
            f"{n} (round({config.ratio:g} x {n}) = {drop}); at least one must stay. Pass a smaller ratio "
            f"(ratio={(n - 1) / n:.4g} drops {n - 1}) or keep=1."
        )
    order = sorted(range(n), key=lambda i: (blocks[i].score, i))  # least important first, ties by position
    return [blocks[i] for i in sorted(order[:drop])]


def _drop_(model: nn.Module, dropped: list[RemovableBlock]) -> None:
    by_container: dict[str, list[str]] = {}
    for block in dropped:
        by_container.setdefault(block.container, []).append(block.key)
    for cname, keys in by_container.items():
        container = model.get_submodule(cname)
        if isinstance(container, nn.Sequential):
            for key in keys:
                setattr(container, key, nn.Identity())
            continue
        kept = [m for k, m in container.named_children() if k not in keys]
        _renumber(kept)
        parent, _, child = cname.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, nn.ModuleList(kept))
        for name, module in model.named_modules():  # a Hugging Face config above the list counts its layers
            config = getattr(module, "config", None)
            above = not name or cname.startswith(name + ".")
            if above and getattr(config, "num_hidden_layers", None) == len(kept) + len(keys):
                config.num_hidden_layers = len(kept)


def _renumber(layers: list[nn.Module]) -> None:
    """Hugging Face layers carry their index (``layer_idx``, for caches): keep it their position."""
    for i, layer in enumerate(layers):
        for module in layer.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = i


def remove_layers_(
    model: nn.Module,
    config: LayerPruning,
    example: Inputs,
    *,
    importance: BlockImportance | None = None,
    filter_fn: FilterFn | None = None,
    data: Any = None,
) -> list[str]:
    """Drop blocks of ``model`` in place as ``config`` says; returns their names. ``data`` (``Samples``) scores them."""
    scored_on = data.inputs.slice(0, 64) if data is not None else example
    before = output_shapes(example.call(model))
    dropped = _chosen(removable_blocks(model, scored_on, importance=importance, filter_fn=filter_fn), config, model)
    _drop_(model, dropped)
    names = [b.name for b in dropped]
    check_interface(before, model, example, f"removing blocks {names}")
    return names
