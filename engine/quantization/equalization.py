"""Cross-layer equalisation (Nagel et al., 2019, "Data-Free Quantization"): even out per-channel weight
ranges of consecutive layers, exactly in fp32.

Two layers joined by a ReLU (or nothing) compute ``W2 relu(W1 x + b1)``. ReLU commutes with a positive
per-channel scale, ``relu(z / s) = relu(z) / s``, so dividing output channel ``i`` of the first layer
(its weight row and bias) by ``s_i`` and multiplying input channel ``i`` of the second by ``s_i``
changes nothing in fp32. With ``r1_i`` the range of the first layer's output channel ``i`` and
``r2_i`` the range of the second layer's weights that read channel ``i``, AIMET's choice
``s_i = sqrt(r1_i * r2_i) / r2_i`` gives both the same range ``sqrt(r1_i * r2_i)``. Where one layer
belongs to two pairs (conv -> depthwise -> conv), the pairs are equalised in turn, a few rounds.

What a pair may be joined by (``layer_graph.Chain``): a BatchNorm folded into the first layer (all
BatchNorms that read a layer's output are folded first: ONNX Runtime quantizes the folded weights),
ReLU, identity (eval dropout), zero padding, pooling, a flatten before a Linear; each tensor on the
way read by nothing else (a residual connection's tensor is never rescaled). Grouped and depthwise
second layers are handled (input channel ``i`` lives in one group).

**ReLU6 is not positively homogeneous** (``s * relu6(z / s)`` clips at ``6 s``, not 6), so pairs
joined by ReLU6 are left alone and counted. Measured on EfficientNet-Lite0 (ImageNet weights) before
deciding: AIMET's remedy, replacing ReLU6 by ReLU, changes the fp32 model itself to logit cosine 0.65;
equalising only the channels whose calibrated pre-activations never reach 6 (before or after scaling)
kept the calibration outputs but not others (cosine 0.9997 on unseen images) and, with bias
correction, gained nothing in simulated int8 (0.9945 vs 0.9955). The step is exact where it acts.

Under ONNX Runtime's per-channel int8 weights a row's scale is its own, so equalisation changes little
there; it matters for per-tensor weights (``Int8Static(per_channel=False)``) and for the per-tensor
activations between the layers. ``equalize_`` checks its own work: the model's output on two
calibration samples must not change beyond float32 rounding, or the pairs that change it are put back.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from squeezelab.engine.core.errors import ModelError
from squeezelab.engine.core.inputs import Inputs
from squeezelab.engine.core.outputs import select_output
from squeezelab.engine.quantization.layer_graph import LayerGraph, bias_only_batchnorm, fold_batchnorm_, trace
from squeezelab.engine.quantization.smoothing import output_changed

__all__ = ["EqualizedPair", "EqualizationResult", "EqualizationError", "find_pairs", "pair_scales", "equalize_"]

_JOINS = {"batchnorm", "relu", "identity", "pad", "pool", "flatten"}
_ROUNDS = 8  # passes over the pairs: a layer in two pairs settles in a few


class EqualizationError(ModelError, ValueError):
    """Equalisation changed the model's float output and could not be undone pair by pair."""


@dataclass
class EqualizedPair:
    """Two layers joined by a per-channel positive-homogeneous path, and what equalising them did."""

    first: str
    second: str
    via: tuple[str, ...]  # the join's step kinds, e.g. ('batchnorm', 'relu')
    bias_modules: tuple[str, ...]  # where the first layer's bias lives (itself and/or its folded BatchNorm)
    channels: int
    spread_before: float = 0.0  # max/min over channels of the first layer's output-channel ranges
    spread_after: float = 0.0


@dataclass
class EqualizationResult:
    pairs: list[EqualizedPair]
    folded: list[tuple[str, str]]  # (layer, BatchNorm) folded
    skipped: dict[str, int]  # why a layer's output was not equalised -> how many layers
    rounds: int = 0


def _out_ranges(layer: nn.Module) -> torch.Tensor:
    w = layer.weight.detach()
    return w.abs().reshape(w.shape[0], -1).amax(1)  # (C_out,)


def _in_index(layer: nn.Module, channels: int) -> torch.Tensor:
    """For each weight entry (out, in_per_group) of ``layer``, the input channel of the pair it reads."""
    w = layer.weight
    if isinstance(layer, nn.Linear):  # after a flatten each channel is in_features / channels features
        per = w.shape[1] // channels
        return (torch.arange(w.shape[1]) // per).expand(w.shape[0], -1)
    out, per_group = w.shape[0], w.shape[1]
    group = torch.arange(out) // (out // layer.groups)  # (out,)
    return group[:, None] * per_group + torch.arange(per_group)[None, :]  # (out, in_per_group)


def _in_ranges(layer: nn.Module, channels: int) -> torch.Tensor:
    w = layer.weight.detach().abs()
    entries = w.reshape(w.shape[0], w.shape[1], -1).amax(2)  # (out, in_per_group)
    ranges = torch.zeros(channels, dtype=w.dtype)
    return ranges.scatter_reduce_(0, _in_index(layer, channels).reshape(-1), entries.reshape(-1), "amax")


def _reads_channels(layer: nn.Module, channels: int) -> bool:
    if isinstance(layer, nn.Linear):
        return layer.in_features % channels == 0
    return layer.weight.shape[1] * layer.groups == channels


def find_pairs(graph: LayerGraph, modules: dict[str, nn.Module]) -> tuple[list[EqualizedPair], dict[str, int]]:
    """The equalisable pairs of a traced (BatchNorm-folded) model, and why other layers are in none."""
    pairs, skipped = [], {}
    for name, layer in graph.layers.items():
        chain = graph.chain(name)
        kinds = tuple(step.kind for step in chain.steps)
        batchnorms = [s.module for s in chain.steps if s.kind == "batchnorm"]
        why = None
        if chain.next is None:
            why = chain.stop
        elif "relu6" in kinds:
            why = "joined by ReLU6 (not positively homogeneous)"
        elif not set(kinds) <= _JOINS:
            why = "joined by " + ", ".join(sorted(set(kinds) - _JOINS))
        elif kinds.count("batchnorm") > 1 or (batchnorms and kinds[0] != "batchnorm") or any(
                not bias_only_batchnorm(modules[b]) for b in batchnorms):
            why = "a BatchNorm that could not be folded into it"
        elif "flatten" in kinds and not isinstance(graph.layers[chain.next], nn.Linear):
            why = "a flatten before a convolution"
        elif not _reads_channels(graph.layers[chain.next], layer.weight.shape[0]):
            why = "channel counts that do not match"
        if why is not None:
            skipped[why] = skipped.get(why, 0) + 1
            continue
        owners = ((name,) if layer.bias is not None else ()) + tuple(batchnorms)
        pairs.append(EqualizedPair(name, chain.next, kinds, owners, layer.weight.shape[0]))
    return pairs, skipped


def pair_scales(first: nn.Module, second: nn.Module) -> torch.Tensor:
    """``s_i = sqrt(r1_i * r2_i) / r2_i`` per channel; 1 where either range is zero (a dead channel)."""
    r1 = _out_ranges(first).double()
    r2 = _in_ranges(second, first.weight.shape[0]).double()
    dead = (r1 <= 1e-12) | (r2 <= 1e-12)
    scale = torch.sqrt(r1 * r2) / r2.clamp(min=1e-30)
    return torch.where(dead, torch.ones_like(scale), scale)


def _apply(modules: dict[str, nn.Module], pair: EqualizedPair, scale: torch.Tensor) -> None:
    first, second = modules[pair.first], modules[pair.second]
    with torch.no_grad():
        shape = (-1,) + (1,) * (first.weight.dim() - 1)
        first.weight.copy_((first.weight.double() / scale.view(shape)).to(first.weight.dtype))
        for owner in pair.bias_modules:
            bias = modules[owner].bias
            bias.copy_((bias.double() / scale).to(bias.dtype))
        per_entry = scale[_in_index(second, pair.channels)]  # (out, in_per_group)
        per_entry = per_entry.view(*per_entry.shape, *(1,) * (second.weight.dim() - 2))
        second.weight.copy_((second.weight.double() * per_entry).to(second.weight.dtype))


def _spread(ranges: torch.Tensor) -> float:
    live = ranges[ranges > 1e-12]
    return float(live.max() / live.min()) if live.numel() else 1.0


def equalize_(
    model: nn.Module,
    calibration: Inputs,
    *,
    check_output: Callable[[nn.Module, Inputs], torch.Tensor] | None = None,
    rounds: int = _ROUNDS,
) -> EqualizationResult:
    """Fold BatchNorms and equalise every pair of ``model`` in place; what was done.

    Args:
        model: changed in place (``compress`` calls this on its own copy).
        calibration: inputs; the first sample traces the model, two check the float output.
        check_output: ``callable(model, inputs) -> tensor``, the output that must not change
            (default: the model's first output tensor).
        rounds: passes over the pairs (a layer in two pairs settles in a few).

    Raises:
        EqualizationError: the float output changed and putting pairs back one by one did not restore it.
    """
    run = check_output or (lambda m, x: select_output(x.call(m)))
    probe = calibration.slice(0, min(len(calibration), 2))
    with torch.no_grad():
        before = run(model, probe)
    graph = trace(model, calibration)
    folded = fold_batchnorm_(model, graph)
    modules = dict(model.named_modules())
    pairs, skipped = find_pairs(graph, modules)
    saved = {p.first: _snapshot(modules, p) for p in pairs}
    for pair in pairs:
        pair.spread_before = _spread(_out_ranges(modules[pair.first]))
    done = _equalize_rounds(modules, pairs, rounds)
    with torch.no_grad():
        changed = output_changed(before, run(model, probe))
    if changed is not None:  # put everything back, then keep only the pairs that leave the output alone
        pairs = _keep_exact_pairs(model, modules, pairs, saved, before, run, probe, skipped)
        done = _equalize_rounds(modules, pairs, rounds)
        with torch.no_grad():
            if (changed := output_changed(before, run(model, probe))) is not None:
                for pair in pairs:
                    _restore(saved[pair.first])
                names = ", ".join(f"{p.first}->{p.second}" for p in pairs[:4])
                raise EqualizationError(
                    f"cross-layer equalisation {changed} on the calibration samples (pairs: {names}). A layer "
                    "whose output is read in a way the trace did not see breaks the identity it relies on; "
                    "leave Equalization() out of the recipe for this model (transforms=(BiasCorrection(),) or ())."
                )
    for pair in pairs:
        pair.spread_after = _spread(_out_ranges(modules[pair.first]))
    return EqualizationResult(pairs=pairs, folded=folded, skipped=skipped, rounds=done)


def _equalize_rounds(modules: dict[str, nn.Module], pairs: list[EqualizedPair], rounds: int) -> int:
    for index in range(rounds):
        largest = 0.0
        for pair in pairs:
            scale = pair_scales(modules[pair.first], modules[pair.second])
            largest = max(largest, float((scale.log().abs()).max()) if scale.numel() else 0.0)
            _apply(modules, pair, scale)
        if largest < math.log(1.01):  # every scale within 1 % of 1: settled
            return index + 1
    return rounds


def _snapshot(modules: dict[str, nn.Module], pair: EqualizedPair) -> list[tuple[torch.Tensor, torch.Tensor]]:
    params = [modules[pair.first].weight, modules[pair.second].weight] + [modules[o].bias for o in pair.bias_modules]
    return [(p, p.detach().clone()) for p in params]


def _restore(snapshot: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    with torch.no_grad():
        for param, copy in snapshot:
            param.copy_(copy)


def _keep_exact_pairs(model, modules, pairs, saved, before, run, probe, skipped) -> list[EqualizedPair]:
    """Pairs that, equalised alone, leave the output unchanged; the others are counted as skipped."""
    for pair in reversed(pairs):
        _restore(saved[pair.first])
    kept = []
    for pair in pairs:
        _apply(modules, pair, pair_scales(modules[pair.first], modules[pair.second]))
        with torch.no_grad():
            exact = output_changed(before, run(model, probe)) is None
        _restore(saved[pair.first])
        if exact:
            kept.append(pair)
        else:
            skipped["changed the float output when equalised"] = skipped.get("changed the float output when equalised", 0) + 1
    return kept
