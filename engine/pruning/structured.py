"""Structured pruning: channels, neurons and attention heads physically removed, on a dependency graph.

Torch-Pruning (PyPI ``torch-pruning``) traces the model once and groups the layers whose channels
are coupled: a residual addition ties every block of a ResNet stage together, a depthwise
convolution ties its input to its output, a BatchNorm or LayerNorm follows the layer before it,
a concatenation splits its channels between its inputs. Removing channel ``c`` of a group removes
it from every layer of the group, so the result is a genuinely smaller dense model. squeezelab
chooses Torch-Pruning's arguments and checks what it returns:

- groups whose channels are the model's outputs (a classifier's classes, a transformer's hidden
  width) keep them: the pruned model has the interface of the original;
- attention heads of Hugging Face self-attention modules go whole (``ChannelPruning(heads=True)``);
  ``torch.nn.MultiheadAttention`` cannot lose whole heads (its width is tied to its head count):
  heads asked of one are refused, naming it, unless ``ignored=`` keeps it whole;
- after every group the model must still run with outputs of the same shapes, and a group whose
  removal fails or breaks the model is named in a ``StructuredPruningError``;
- ``prune`` then checks that the ONNX export equals the pruned PyTorch model
  (``engine._pruned_checks``): Torch-Pruning has open coupling bugs (#481, #513, #519).

Layered as Torch-Pruning is: ``prunable_groups(model, example_inputs)`` lists the groups and why
some are kept; ``squeezelab.prune(model, ChannelPruning(...), example_inputs=...)`` removes channels.

Examples:
    >>> import torch
    >>> import squeezelab as sl
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    >>> small = sl.prune(net, sl.ChannelPruning(ratio=0.5), example_inputs=torch.randn(1, 8))
    >>> small[0].out_features, small[2].in_features, small[2].out_features
    (8, 8, 3)
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from squeezelab.engine.core.copying import copy_model
from squeezelab.engine.core.examples import example_batch
from squeezelab.engine.core.outputs import select_output
from squeezelab.engine.pruning.attention import attention_modules, head_counts, refuse_torch_head_pruning, sync_head_counts_
from squeezelab.engine.pruning.checks import check_interface, output_shapes, parameter_count
from squeezelab.engine.core.errors import ConfigError, StructuredPruningError
from squeezelab.engine.core.inputs import Inputs
from squeezelab.engine.core.layers import FilterFn
from squeezelab.engine.core.pruners import ChannelPruning
from squeezelab.engine.core.samples import Samples
from squeezelab.engine.pruning.masks import bake_masks_

__all__ = ["StructuredPruningError", "PrunableGroup", "Importance", "prunable_groups", "importance_criterion", "prune_channels_"]

# Torch-Pruning's strategy type: importance(group) -> one score per channel of the group (higher = kept).
Importance = Callable[[Any], torch.Tensor]
PROJECTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)  # the layers filter_fn chooses among


def _torch_pruning() -> Any:
    import torch_pruning  # a core dependency; imported on first use (it imports no CUDA)

    return torch_pruning


def importance_criterion(importance: str | Importance) -> Importance:
    """Torch-Pruning's importance for a name (``"l1"``, ``"l2"``, ``"taylor"``), or the callable itself."""
    if callable(importance):
        return importance
    tp = _torch_pruning()
    if importance in ("l1", "l2"):
        return tp.importance.MagnitudeImportance(p=1 if importance == "l1" else 2)
    if importance == "taylor":
        return tp.importance.TaylorImportance()
    raise ConfigError(f"importance={importance!r}; use 'l1', 'l2', 'taylor' or a callable importance(group) -> scores.")


@dataclass(frozen=True)
class PrunableGroup:
    """Layers whose output channels (or attention heads) are removed together.

    Attributes:
        name: the layer naming the group (for heads, the self-attention module), as
            ``LayerSetting(name=...)`` takes it.
        layers: every layer whose output channels shrink with the group.
        kind: ``"channels"`` or ``"heads"``.
        size: channels (or heads) now.
        status: ``"prunable"``, ``"model output"`` (its channels are an output: kept) or ``"ignored"``.
        parameters: parameters of the group's layers.
    """

    name: str
    layers: tuple[str, ...]
    kind: str
    size: int
    status: str
    parameters: int


@dataclass
class _Plan:
    pruner: Any
    groups: list[PrunableGroup]
    by_module: dict[nn.Module, PrunableGroup] = field(default_factory=dict)  # out-pruned layer -> its group
    attention: dict[str, nn.Module] = field(default_factory=dict)


def _ignored_modules(model: nn.Module, config: ChannelPruning, filter_fn: FilterFn | None) -> list[nn.Module]:
    """Layers whose output channels stay: named by ``config.ignored`` (with their submodules) or refused by ``filter_fn``."""
    named = dict(model.named_modules())
    out: list[nn.Module] = []
    for pattern in config.ignored:
        hits = [m for n, m in named.items() if n and (n == pattern or re.fullmatch(pattern, n))]
        if not hits:
            shown = [n for n in named if n][:12]
            raise ConfigError(f"ChannelPruning: ignored names {pattern!r}, which matches no layer; layers: {shown} ...")
        for module in hits:
            out.extend(module.modules())
    if filter_fn is not None:
        out.extend(m for n, m in named.items() if isinstance(m, PROJECTIONS) and not filter_fn(m, n))
    return out


def _flat(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    values = out.values() if isinstance(out, dict) else out if isinstance(out, (list, tuple)) else []
    return [t for v in values for t in _flat(v)]


def _describe_groups(pruner: Any, model: nn.Module, outputs: Any, ignored: list[nn.Module], attention: dict) -> _Plan:
    """Every group of the dependency graph, with its status; model-output groups are added to the ignored."""
    tp, dg = _torch_pruning(), pruner.DG
    names = {m: n for n, m in model.named_modules()}
    attention_of = {getattr(m, p): n for n, m in attention.items() for p in ("query", "key", "value")}
    roots = {t.grad_fn for t in _flat(outputs) if t.grad_fn is not None}
    output_nodes = {node for node in dg.module2node.values() if node.grad_fn in roots}
    ignored_set = set(ignored)
    plan = _Plan(pruner, [], attention=attention)
    for group in dg.get_all_groups(ignored_layers=[], root_module_types=pruner.root_module_types):
        outs = [d.target.module for d, _ in group if dg.is_out_channel_pruning_fn(d.handler) and d.target.module in names]
        interface = any(
            d.target in output_nodes and (d.target.type == tp.ops.OPTYPE.OUTPUT or dg.is_out_channel_pruning_fn(d.handler))
            for d, _ in group
        )
        heads = next((attention_of[m] for m in outs if m in attention_of), None)
        status = "model output" if interface else "ignored" if ignored_set.intersection(outs) else "prunable"
        root = group[0].dep.target.module
        if heads is not None:
            kind, name, size = "heads", heads, attention[heads].num_attention_heads
        else:
            kind, name, size = "channels", names.get(root, names[outs[0]]), int(dg.get_out_channels(root))
        params = sum(p.numel() for m in outs for p in m.parameters(recurse=False))
        described = PrunableGroup(name, tuple(names[m] for m in outs), kind, size, status, params)
        plan.groups.append(described)
        plan.by_module.update({m: described for m in outs})
        if interface:
            pruner.ignored_layers.append(root)  # Torch-Pruning would prune a classifier's classes
    return plan


def _build(
    model: nn.Module,
    example: Inputs,
    config: ChannelPruning,
    filter_fn: FilterFn | None,
    importance: Importance | None,
    layer_sparsity: dict[str, float],
) -> _Plan:
    """Torch-Pruning's pruner over ``model`` (traced on ``example``), and the groups it sees."""
    tp = _torch_pruning()
    attention = attention_modules(model)
    ignored = _ignored_modules(model, config, filter_fn)
    named = dict(model.named_modules())
    ratios, head_ratios = {}, {}
    for name, ratio in layer_sparsity.items():
        if name in attention:
            head_ratios[attention[name]] = ratio
        if name in named:  # an attention module's own ratio lets its group through (its dims stay whole)
            ratios[named[name]] = ratio
    head_ratio = config.ratio if config.heads else 0.0
    captured: list[Any] = []

    def forward(module: nn.Module, _: Any) -> Any:
        args, kwargs = example.torch()
        captured.append(module(*args, **kwargs))
        return captured[-1]

    try:
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="torch_pruning")  # its notes on ops it treats as element-wise
            pruner = tp.pruner.MetaPruner(
                model, example, importance=importance or importance_criterion(config.importance),
                global_pruning=config.scope == "global", pruning_ratio=config.ratio, pruning_ratio_dict=ratios or None,
                ignored_layers=ignored, round_to=config.round_to, num_heads=head_counts(attention),
                prune_num_heads=bool(head_ratio or head_ratios), prune_head_dims=False, head_pruning_ratio=head_ratio,
                head_pruning_ratio_dict=head_ratios or None, forward_fn=forward,
            )
    except Exception as exc:  # Torch-Pruning traces through autograd: many failure types
        raise StructuredPruningError(
            f"Torch-Pruning cannot build the dependency graph of {type(model).__name__} "
            f"({type(exc).__name__}: {exc}); structured pruning needs a forward that autograd can trace."
        ) from exc
    return _describe_groups(pruner, model, captured[0], ignored, attention)


def _check_layer_settings(plan: _Plan, model: nn.Module, layer_sparsity: dict[str, float]) -> None:
    """Per-layer ratios must name a layer of a prunable group (one ratio per group), or an attention module."""
    named = dict(model.named_modules())
    seen: dict[str, tuple[str, float]] = {}
    for name, ratio in layer_sparsity.items():
        group = next((g for g in plan.groups if g.kind == "heads" and g.name == name), None)
        if group is None and name in named:
            group = plan.by_module.get(named[name])
        if group is None:
            prunable = [g.name for g in plan.groups if g.status == "prunable"]
            raise ConfigError(f"per-layer ratios name {name!r}, which belongs to no prunable group; groups: {prunable}.")
        if group.status != "prunable":
            why = "its channels are the model's output" if group.status == "model output" else "it is ignored"
            raise StructuredPruningError(
                f"layer {name!r} cannot lose channels: its group {group.name!r} (layers {list(group.layers)}) is kept "
                f"because {why}. Drop its LayerSetting."
            )
        other = seen.get(group.name)
        if other is not None and other[1] != ratio:
            raise ConfigError(
                f"per-layer ratios {other[1]} for {other[0]!r} and {ratio} for {name!r} disagree: both layers belong "
                f"to group {group.name!r} (layers {list(group.layers)}), whose channels go together. Give one ratio."
            )
        seen[group.name] = (name, ratio)


def _group_ratio(group: PrunableGroup, plan: _Plan, model: nn.Module, config: ChannelPruning, layer_sparsity: dict) -> float:
    for name, ratio in layer_sparsity.items():
        if name == group.name or name in group.layers:
            return ratio
    if group.kind == "heads":
        return config.ratio if config.heads else 0.0
    return config.ratio


def _check_counts(plan: _Plan, model: nn.Module, config: ChannelPruning, layer_sparsity: dict[str, float]) -> None:
    """Refuse, before anything is cut, a group that the ratio (and ``round_to``) would empty, or nothing to cut."""
    asked = False
    for group in (g for g in plan.groups if g.status == "prunable"):
        ratio = _group_ratio(group, plan, model, config, layer_sparsity)
        asked = asked or ratio > 0
        if ratio == 0 or config.scope == "global":
            continue
        if group.kind == "heads":
            if math.ceil(ratio * group.size) >= group.size:
                raise StructuredPruningError(
                    f"attention {group.name!r} has {group.size} heads: ratio {ratio} would remove them all; lower the ratio."
                )
            continue
        left = int(group.size * (1 - ratio))
        if config.round_to:
            left -= left % config.round_to
        if left < 1:
            rounding = f" with round_to={config.round_to}" if config.round_to else ""
            raise StructuredPruningError(
                f"group {group.name!r} (layers {list(group.layers)}) has {group.size} channels: ratio {ratio}{rounding} "
                f"would leave none. Lower the ratio{' or round_to' if rounding else ''}, or add {group.name!r} to ignored=."
            )
    if not asked and (config.ratio > 0 or any(layer_sparsity.values())):
        kept = "; ".join(f"{g.name!r} ({g.status})" for g in plan.groups) or "no Conv/Linear layer was traced"
        raise StructuredPruningError(
            f"{config.label}: no group of layers can lose channels: {kept}. Groups feeding the model's outputs keep "
            "their channels; remove names from ignored= or filter_fn to let others go."
        )


def _check_all_pruned(plan: _Plan, model: nn.Module, config: ChannelPruning, layer_sparsity: dict, pruned: list) -> None:
    """With a per-group ratio every prunable group asked to shrink must have shrunk: Torch-Pruning skips,
    without a word, a group whose channel indices it cannot map onto all its layers."""
    if config.scope == "global":  # a global threshold may legitimately spare a group
        return
    done = {g.name for g in pruned}
    for group in plan.groups:
        if group.status == "prunable" and group.name not in done and _group_ratio(group, plan, model, config, layer_sparsity) > 0:
            raise StructuredPruningError(
                f"Torch-Pruning declined to prune group {group.name!r} (layers {list(group.layers)}): its channel "
                "indices do not map onto all of its layers (a known limitation, e.g. a grouped convolution "
                f"followed by a Flatten). Add {group.name!r} to ignored= to prune the other groups."
            )


def _taylor_gradients_(model: nn.Module, data: Any, output: Any) -> None:
    """Gradients of a cross-entropy for ``TaylorImportance``: to the data's targets, else to the model's own top-1."""

    model.zero_grad()
    with torch.enable_grad():
        for batch in data.batches(64):
            args, kwargs = batch.inputs.torch()
            out = select_output(model(*args, **kwargs), output)
            if out.ndim < 2:
                raise ConfigError(f"importance='taylor' needs class scores (N, classes); the output has shape {tuple(out.shape)}.")
            logits = out.reshape(-1, out.shape[-1])
            targets = torch.as_tensor(batch.targets) if batch.targets is not None else logits.argmax(-1).detach()
            if targets.is_floating_point() and targets.shape == out.shape:
                loss = nn.functional.mse_loss(out, targets)
            else:
                loss = nn.functional.cross_entropy(logits, targets.reshape(-1).long())
            loss.backward()


def _step(plan: _Plan, model: nn.Module, example: Inputs, before: list, *, check_each: bool) -> list[PrunableGroup]:
    """Let Torch-Pruning remove its groups; the model is checked after each (``check_each``) or after all."""
    pruned: list[PrunableGroup] = []
    what = "pruning"
    with torch.enable_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="torch_pruning")
        for group in plan.pruner.step(interactive=True):
            described = _group_of(plan, group)
            what = f"pruning group {described.name!r} (layers {list(described.layers)})" if described else "pruning a group"
            try:
                group.prune()
            except Exception as exc:
                raise StructuredPruningError(
                    f"Torch-Pruning failed {what} ({type(exc).__name__}: {exc}); add it to ignored= to keep it whole."
                ) from exc
            sync_head_counts_(plan.attention, plan.pruner.num_heads)
            pruned += [described] if described else []
            if check_each:
                check_interface(before, model, example, what)
    check_interface(before, model, example, what if check_each else f"pruning groups {[g.name for g in pruned]}")
    return pruned


def _group_of(plan: _Plan, group: Any) -> PrunableGroup | None:
    dg = plan.pruner.DG
    for dep, _ in group:
        if dg.is_out_channel_pruning_fn(dep.handler) and dep.target.module in plan.by_module:
            return plan.by_module[dep.target.module]
    return None


def prune_channels_(
    model: nn.Module,
    config: ChannelPruning,
    example: Inputs,
    *,
    filter_fn: FilterFn | None = None,
    importance: Importance | None = None,
    layer_sparsity: dict[str, float] | None = None,
    data: Any = None,
    output: Any = None,
) -> list[PrunableGroup]:
    """Remove channels and heads of ``model`` in place (no ONNX check: ``prune`` and ``compress`` add it).

    Returns the groups that lost channels. ``data`` (a ``Samples``) feeds Taylor's gradients.
    """
    layer_sparsity = layer_sparsity or {}
    if config.heads:  # before any work: Torch-Pruning would narrow a torch MultiheadAttention's heads, not remove them
        refuse_torch_head_pruning(model, _ignored_modules(model, config, filter_fn))
    before = output_shapes(example.call(model))
    plan = _build(model, example, config, filter_fn, importance, layer_sparsity)
    _check_layer_settings(plan, model, layer_sparsity)
    _check_counts(plan, model, config, layer_sparsity)
    if config.importance == "taylor" and importance is None:
        _taylor_gradients_(model, data if data is not None else Samples(example, None), output)
    size = parameter_count(model)
    # The model is checked once at the end; if it broke, a copy taken now is pruned again group by group,
    # checked after each, to name the group that broke it (a forward per group costs too much every time).
    backup = copy_model(model)
    try:
        pruned = _step(plan, model, example, before, check_each=False)
    except StructuredPruningError:
        replay = _build(backup, example, config, filter_fn, importance, layer_sparsity)
        if config.importance == "taylor" and importance is None:
            _taylor_gradients_(backup, data if data is not None else Samples(example, None), output)
        _step(replay, backup, example, before, check_each=True)
        raise
    model.zero_grad(set_to_none=True)
    _check_all_pruned(plan, model, config, layer_sparsity, pruned)
    if parameter_count(model) >= size and (config.ratio > 0 or any(layer_sparsity.values())):
        raise StructuredPruningError(
            f"{config.label} removed nothing from {type(model).__name__}: Torch-Pruning pruned no group "
            f"(groups: {[(g.name, g.status) for g in plan.groups]})."
        )
    return pruned


def prunable_groups(
    model: nn.Module, example_inputs: Any, config: ChannelPruning | None = None, *, filter_fn: FilterFn | None = None
) -> list[PrunableGroup]:
    """The groups of coupled layers of ``model`` (traced on ``example_inputs``) and which of them may lose channels.

    ``model`` is not changed (a copy is traced). ``config`` supplies ``ignored=`` names.
    """
    work = copy_model(model).eval()
    bake_masks_(work)
    plan = _build(work, example_batch(example_inputs), config or ChannelPruning(ratio=0.0), filter_fn, None, {})
    return plan.groups
