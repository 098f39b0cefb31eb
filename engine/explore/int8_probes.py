"""The pieces of accuracy-aware int8 search: what can stay float, where to probe, how to descend.

* ``candidate_groups``: the units the search keeps float. A Linear/Conv layer is one, unless
  transformer fusion merges it into a fused op with others (an attention's query, key and value
  become one ``Attention`` node): those can only stay float together, so they form one group. Under
  static int8 the layers of one block (``block_groups``) form one group: a block kept float runs on
  float activations inside, where one layer alone still sees quantized ones. The
  embedding tables form one group as well (dynamic int8 quantizes their Gathers; keeping them
  float costs file size, not speed).
* ``on_export``: the same evaluation over the fp32 ONNX export, exported once.
* ``subsample``: the same evaluation on the first ``n`` samples, for cheap sensitivity probes; the
  search verifies on the full data before it returns anything. ``probe_evaluator``: that subsample,
  scored by cosine to fp32 when the metric scores each sample 0 or 1 (accuracy, agreement).
* ``gain_order``: groups by gain per unit of cost (weights kept float; an embedding costs no speed).
* ``bisect_prefix``: the fewest groups, taken in that order, whose float copy meets the budget,
  found by bisection (log2 of the group count evaluations instead of one per group).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from torch import nn

from squeezelab.engine.core.layers import prunable_layers
from squeezelab.engine.core.recipe import LayerSetting, Recipe
from squeezelab.engine.explore.evaluation import Evaluator
from squeezelab.engine.core.runtimes import Int8Dynamic, Int8Static
from squeezelab.engine.pipeline.compress import compress, prepared_fp32
from squeezelab.engine.runtime.int8_graph import fused_graph, fused_holders, layers_in_graph, same_layer

__all__ = [
    "bisect_prefix", "block_groups", "candidate_groups", "float_layers_recipe", "fp32_export", "gain_order", "group_costs", "group_label", "on_export",
    "prefix_layers", "prepared_export", "probe_evaluator", "subsample",
]

# Metrics whose per-sample scores are 0 or 1: on a few samples they cannot rank layers (see probe_evaluator).
_DISCRETE_METRICS = frozenset({"accuracy", "agreement"})


def candidate_groups(model: nn.Module, onnx_bytes: bytes, runtime: Int8Dynamic | Int8Static) -> list[tuple[str, ...]]:
    """The groups of layer names the search may keep float, in model order (see the module docstring).

    ``onnx_bytes`` is the model's fp32 export (``fp32_export``).
    """

    embeddings = [name for name, m in model.named_modules() if isinstance(m, nn.Embedding)] if _quantizes_gather(runtime) else []
    wanted = {name for name, _ in prunable_layers(model)} | set(embeddings)
    names = [name for name, _ in model.named_modules() if name in wanted]  # model order: a BERT's embeddings first
    present = layers_in_graph(onnx_bytes, names)
    holders: dict[str, list[str]] = {}
    if isinstance(runtime, Int8Dynamic):
        fused, _ = fused_graph(onnx_bytes, runtime)
        holders = fused_holders(onnx_bytes, fused) if fused is not None else {}
    group_of: dict[str, tuple[str, ...]] = block_groups(model, present) if isinstance(runtime, Int8Static) else {}
    for scopes in holders.values():
        members = tuple(n for n in present if any(same_layer(n, s) for s in scopes))
        if len(members) == len(scopes):  # every layer the op holds is one the search may keep float
            group_of.update({n: members for n in members})
    tables = tuple(n for n in present if n in embeddings)
    groups: list[tuple[str, ...]] = []
    for name in present:
        group = tables if name in embeddings else group_of.get(name, (name,))
        if group not in groups:
            groups.append(group)
    return groups


def float_layers_recipe(runtime: Int8Dynamic | Int8Static | Recipe, layers: list[str] | tuple[str, ...]) -> Recipe:
    """``runtime`` (or an all-int8 recipe, with its fidelity steps) for the whole model except ``layers``, kept float32."""
    base = runtime if isinstance(runtime, Recipe) else Recipe(runtime=runtime)
    return replace(base, layers=tuple(LayerSetting(name=name, bits=32) for name in layers))


def block_groups(model: nn.Module, names: list[str], largest: int = 4) -> dict[str, tuple[str, ...]]:
    """Layer -> the layers of its block, for static int8: the smallest enclosing module, other than a plain
    ``nn.Sequential``, that holds 2 to ``largest`` of ``names`` (a ResNet ``layer1.0``, an EfficientNet
    ``_blocks.3``, a MobileNetV2 ``features.2``); a layer in no such module is a group of its own (a
    stem, a head, the layers of a plain sequential model).

    Static int8 quantizes the activations between layers, so one layer of a block kept float still sees
    and emits quantized tensors, and alone its gain is erratic (EfficientNet-Lite0: its first depthwise
    convolution alone float, cosine to fp32 0.962 -> 0.870; its whole first block float, 0.980).
    A whole block kept float runs on float activations inside.
    """
    modules = dict(model.named_modules())
    out: dict[str, tuple[str, ...]] = {}
    for name in names:
        parts = name.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            parent = ".".join(parts[:cut])
            members = tuple(n for n in names if n.startswith(parent + "."))
            if len(members) > largest:
                break
            if len(members) >= 2 and type(modules.get(parent)) is not nn.Sequential:
                out[name] = members
                break
    return out


def _quantizes_gather(runtime: Int8Dynamic | Int8Static) -> bool:
    if isinstance(runtime, Int8Dynamic):
        return "Gather" in runtime.quantized_op_types
    return runtime.op_types is None or "Gather" in runtime.op_types


def gain_order(gains: dict[tuple[str, ...], float], costs: dict[tuple[str, ...], float]) -> list[tuple[str, ...]]:
    """Groups by gain per unit of cost, highest first; groups that gained nothing come last, by gain.

    The cost of keeping a group float is its weight count: the bytes it adds to the file, and,
    for Linear layers, the share of multiply-adds that leave the int8 kernels. Under
    ``objective="latency"`` embedding tables cost nothing (a Gather computes nothing), so a gain
    there comes first.
    """
    helpful = [g for g in gains if gains[g] > 0]
    useless = [g for g in gains if gains[g] <= 0]
    helpful.sort(key=lambda g: -gains[g] / max(costs.get(g, 1.0), 1e-9))
    useless.sort(key=lambda g: -gains[g])
    return helpful + useless


def group_costs(model: nn.Module, groups: list[tuple[str, ...]], objective: str) -> dict[tuple[str, ...], float]:
    """The cost of keeping each group float (see ``gain_order``): its weight count; 0 for an embedding under latency."""
    modules = dict(model.named_modules())

    def cost(name: str) -> float:
        module = modules[name]
        if objective == "latency" and isinstance(module, nn.Embedding):
            return 0.0
        return float(module.weight.numel())

    return {group: sum(cost(name) for name in group) for group in groups}


def group_label(group: tuple[str, ...]) -> str:
    """``encoder.layer.0.attention.self.{query,key,value}`` for a group, the name for one layer."""
    if len(group) == 1:
        return group[0]
    parents = {name.rpartition(".")[0] for name in group}
    if len(parents) == 1:
        return f"{parents.pop()}.{{{','.join(name.rpartition('.')[2] for name in group)}}}"
    return "{" + ", ".join(group) + "}"


def fp32_export(ev: Evaluator) -> bytes:
    """The fp32 ONNX export of ``ev``'s model with its selected output (what every int8 recipe quantizes)."""

    if isinstance(ev.model, bytes):
        return ev.model
    return compress(ev.model, Recipe(), example_inputs=ev.samples.inputs.slice(0, 1), output=ev.settings.output).onnx_bytes


def prepared_export(ev: Evaluator, recipe: Recipe) -> bytes:
    """The fp32 export of ``ev``'s model with ``recipe``'s fidelity steps applied (smoothing, equalisation),
    calibrated on ``ev``'s calibration data: what ``recipe``'s runtime quantizes."""

    return prepared_fp32(ev.model, recipe, example_inputs=ev.samples.inputs.slice(0, 1), calibration_data=ev.calibration,
                         output=ev.settings.output).onnx_bytes


def on_export(ev: Evaluator, onnx_bytes: bytes) -> Evaluator:
    """``ev`` over the fp32 export instead of the torch model: the same figures, without exporting per candidate.

    A search quantizes one export dozens of times; exporting MiniLM again for each takes seconds.
    The export already selects the output, so the ONNX evaluator reads its one output.
    """
    return Evaluator(onnx_bytes, ev.samples, ev.settings, calibration_data=ev.calibration, cache=ev.cache)


def subsample(ev: Evaluator, n: int) -> Evaluator:
    """``ev`` on its first ``n`` samples (same model, settings, calibration data and cache); ``ev`` itself if it has no more."""
    if n <= 0 or len(ev.samples) <= n:
        return ev
    return Evaluator(ev.model, ev.samples.slice(0, n), ev.settings, calibration_data=ev.calibration, cache=ev.cache)


def bisect_prefix(ok: Callable[[int], bool | None], count: int, first: int | None = None) -> tuple[int | None, bool]:
    """The smallest ``k`` in ``1..count`` with ``ok(k)``, by bisection, assuming more float never hurts.

    ``k = count + 1`` (everything float) is taken to hold without being asked. ``first`` is the
    first ``k`` tried (a guess from the subsample). ``ok`` returns None when time ran out.
    Returns ``(k or None when no k in range held, whether time ran out)``.
    """
    lo, hi = 0, count + 1  # ok(lo) is known to fail (all int8), ok(hi) assumed
    while hi - lo > 1:
        mid = first if first is not None and lo < first < hi else (lo + hi) // 2
        first = None
        verdict = ok(mid)
        if verdict is None:
            return (hi if hi <= count else None), True
        lo, hi = (lo, mid) if verdict else (mid, hi)
    return (hi if hi <= count else None), False


def prefix_layers(order: list[tuple[str, ...]], k: int) -> tuple[str, ...]:
    """The layers of the first ``k`` groups of ``order``."""
    return tuple(name for group in order[:k] for name in group)



def probe_evaluator(ev: Evaluator, n: int) -> tuple[Evaluator, bool]:
    """What the sensitivity probes measure: ``ev`` on its first ``n`` samples, and whether that is ``ev``'s own metric.

    When ``ev``'s metric scores each sample 0 or 1 (top-1 accuracy or agreement), the probes
    measure the mean cosine of the outputs to fp32 instead: on 32 images one flipped top-1 is 3 pp,
    which buries a single layer's gain in noise, while the cosine moves with every layer's error.
    The probes only rank the groups; every verdict on the budget is taken in ``ev``'s metric.
    """
    sub = subsample(ev, n)
    if ev.metric.key not in _DISCRETE_METRICS:
        return sub, True
    settings = sub.settings.replace(metric="cosine_to_baseline")
    return Evaluator(sub.model, sub.samples, settings, calibration_data=sub.calibration, cache=sub.cache), False
