"""Which weights a recipe reaches, checked before the slow work, and how many it did reach.

A recipe whose steps reach no layer (a model of Embeddings and norms, a
``filter_fn`` or per-layer settings that exclude everything) would hand back
the model it was given, labelled as compressed. Dynamic int8 with its default
``MatMul``/``Gemm`` op types on a CNN would quantize only the last Linear and
ship a mostly-float model. Both are refused here with what would work; what a
result really quantized is recorded as ``quantized_weight_fraction``: the
fraction of weight elements (tensors of rank >= 2, as ONNX initializers or
``state_dict`` entries) stored below 32 bits.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from torch import nn

from squeezelab.engine.core.errors import ConfigError
from squeezelab.engine.core.pruners import ChannelPruning, LayerPruning
from squeezelab.engine.core.quantizers import Float16
from squeezelab.engine.core.recipe import Recipe
from squeezelab.engine.core.runtimes import DYNAMIC_OP_TYPES, Int8Dynamic, Int8Static
from squeezelab.engine.core.layers import chosen_layers

__all__ = ["check_recipe_reaches_layers", "check_int8_coverage", "onnx_weight_elements", "encoded_weight_fraction"]

_QUANTIZED_KINDS = ("linear", "kmeans", "huffman", "float16")


def _layer_types(model: nn.Module) -> str:
    """The classes of the layers that hold parameters, for messages: ``"Embedding, LayerNorm"``."""
    kinds = sorted({type(m).__name__ for m in model.modules() if any(True for _ in m.parameters(recurse=False))})
    return ", ".join(kinds) or "no layer with parameters"


def _reached(model: nn.Module, recipe: Recipe, filter_fn: Any, step: str) -> tuple[list[str], str]:
    """The layers ``step`` ("quantization" or "pruning") may change, and which kinds are eligible."""

    if step == "pruning" and isinstance(recipe.pruning, ChannelPruning):
        kinds = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
        names = [n for n, m in model.named_modules() if isinstance(m, kinds)]
        names = [n for n in names if filter_fn is None or filter_fn(model.get_submodule(n), n)]
        return names, "channel pruning removes output channels of Conv and Linear layers"
    if step == "pruning" and isinstance(recipe.pruning, LayerPruning):
        # Which blocks can go is found on the example inputs (engine.layer_removal names the problem).
        return [n for n, _ in model.named_children()], "layer removal drops whole blocks"
    names = [name for name, _ in chosen_layers(model, filter_fn)]
    verb = "quantized" if step == "quantization" else "pruned"
    return names, f"the layers {verb} by default are Linear and Conv1d/2d/3d (filter_fn may accept any layer with a weight)"


def check_recipe_reaches_layers(model: nn.Module, recipe: Recipe, filter_fn: Any = None) -> None:
    """Raise ``ConfigError`` if the recipe's pruning or simulated quantization would change no layer.

    A model with no layer the step can reach is refused whatever the amount. Where layers are
    reachable, a pruning amount of 0 (recipe-wide and per layer) asks for no change and is
    allowed: searches start from it.
    """
    steps = []
    if recipe.pruning is not None:
        steps.append("pruning")
    if not recipe.runtime.onnx and recipe.quantization is not None and not isinstance(recipe.quantization, Float16):
        steps.append("quantization")  # simulated: ONNX runtimes are checked on the exported graph
    for step in steps:
        names, eligible = _reached(model, recipe, filter_fn, step)
        config = recipe.pruning if step == "pruning" else recipe.quantization
        if not names:
            model_name = type(model).__name__
            found = (
                f"filter_fn accepts none of {model_name}'s layers ({_layer_types(model)})"
                if filter_fn is not None
                else f"{model_name} has none (its layers with parameters: {_layer_types(model)})"
            )
            raise ConfigError(
                f"{recipe.label}: the {step} step {config.label} would change nothing: {eligible}, and {found}. "
                f"Pass filter_fn=lambda module, name: ... accepting the layers to "
                f"{'prune' if step == 'pruning' else 'quantize'}"
                + (" (or use quantization=Float16() for every float tensor)" if step == "quantization" else "")
                + f", or drop the {step} step."
            )
        _check_overrides(recipe, step, names)


def _check_overrides(recipe: Recipe, step: str, names: list[str]) -> None:
    """Per-layer settings that keep every reachable layer unchanged while the recipe asks for a change."""
    if step == "quantization":
        kept = {s.name for s in recipe.layers if s.bits == 32}
        if set(names) <= kept:
            raise ConfigError(
                f"{recipe.label}: layers= keeps every quantizable layer ({', '.join(names)}) float32 with bits=32, "
                "so the quantization step would change nothing; give at least one layer fewer bits, or use "
                "Recipe() for the fp32 model."
            )
        return
    amount = recipe.pruning.ratio if isinstance(recipe.pruning, ChannelPruning) else getattr(recipe.pruning, "sparsity", None)
    zeroed = {s.name for s in recipe.layers if s.sparsity == 0.0}
    if amount and set(names) <= zeroed:
        raise ConfigError(
            f"{recipe.label}: layers= sets sparsity 0 on every prunable layer ({', '.join(names)}), so the pruning "
            "step would change nothing; drop sparsity=0 from the layers to prune, or drop the pruning step."
        )


def onnx_weight_elements(onnx_bytes: bytes) -> tuple[Counter, int]:
    """Weight elements (initializers of rank >= 2) by the op type that reads them, and their total.

    An initializer read by several nodes counts once, under the first reader's op type.
    """
    import onnx

    graph = onnx.load_from_string(onnx_bytes).graph
    sizes = {}
    for init in graph.initializer:
        if len(init.dims) >= 2:
            n = 1
            for d in init.dims:
                n *= d
            sizes[init.name] = n
    by_op: Counter = Counter()
    for node in graph.node:
        for name in node.input:
            if name in sizes:
                by_op[node.op_type] += sizes.pop(name)
    by_op["(unused)"] += sum(sizes.values())
    return +by_op, sum(by_op.values())


def _target_op_types(runtime: Int8Dynamic | Int8Static) -> set[str]:
    """The op types ONNX Runtime will quantize under ``runtime``."""
    if runtime.op_types is not None:
        return set(runtime.op_types)
    if isinstance(runtime, Int8Dynamic):
        return set(DYNAMIC_OP_TYPES)
    from onnxruntime.quantization.registry import QDQRegistry

    return set(QDQRegistry)


def check_int8_coverage(onnx_bytes: bytes, recipe: Recipe) -> float:
    """The fraction of weight elements an int8 runtime will quantize, read from the fp32 graph.

    Raises ``ConfigError`` when it is 0, or below one half for ``Int8Dynamic`` left at its
    default op types (a CNN: only the last Linear would be int8).
    """
    runtime = recipe.runtime
    by_op, total = onnx_weight_elements(onnx_bytes)
    targets = _target_op_types(runtime)
    covered = sum(n for op, n in by_op.items() if op in targets)
    fraction = covered / total if total else 0.0
    shares = ", ".join(f"{op} {n / total:.0%}" for op, n in by_op.most_common()) if total else "none"
    if covered == 0:
        raise ConfigError(
            f"{recipe.label} would quantize nothing: no weight is read by the op types it quantizes "
            f"({', '.join(sorted(targets))}); weight elements by op: {shares}. {_int8_advice(runtime, by_op)}"
        )
    if isinstance(runtime, Int8Dynamic) and runtime.op_types is None and fraction < 0.5:
        raise ConfigError(
            f"{recipe.label} would quantize only {fraction:.0%} of the weight elements: its default op_types "
            f"{DYNAMIC_OP_TYPES} leave the rest float32 (weight elements by op: {shares}). "
            f"{_int8_advice(runtime, by_op)} To quantize only the {', '.join(DYNAMIC_OP_TYPES)} layers, "
            f"pass op_types={DYNAMIC_OP_TYPES} explicitly."
        )
    return fraction


def _int8_advice(runtime: Int8Dynamic | Int8Static, by_op: Counter) -> str:
    """What would quantize the weights ``runtime`` leaves out."""
    if isinstance(runtime, Int8Static):
        if runtime.op_types is not None:
            return "Use Int8Static() without op_types (every op ONNX Runtime can quantize)."
        return "Use runtime=Simulated() with a quantizer (filter_fn chooses the layers), or Recipe() for fp32."
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    quantizable = (set(IntegerOpsRegistry) - {"Transpose"}) | set(DYNAMIC_OP_TYPES)
    missing = [op for op in by_op if op in quantizable and op not in _target_op_types(runtime)]
    advice = []
    if "Conv" in missing:
        advice.append("runtime=Int8Static() (static QDQ int8 quantizes convolutions too; pass calibration_data=)")
    if missing:
        ops = tuple(dict.fromkeys([*(runtime.op_types or DYNAMIC_OP_TYPES), *missing]))
        caveat = " (dynamic ConvInteger is often slower than fp32 on x86 and fails to load in some builds)"
        advice.append(f"Int8Dynamic(op_types={ops})" + (caveat if "Conv" in missing else ""))
    if not advice:
        return "Use runtime=Simulated() with a quantizer (filter_fn chooses the layers), or Recipe() for fp32."
    return "Use " + ", or ".join(advice) + "."


def encoded_weight_fraction(encoded: dict[str, Any]) -> float:
    """Fraction of weight elements (tensors of rank >= 2) a packed artifact stores below 32 bits."""
    total = low = 0
    for enc in encoded.values():
        if len(enc.shape) >= 2 and enc.kind != "raw":
            n = 1
            for d in enc.shape:
                n *= d
            total += n
            low += n if enc.kind in _QUANTIZED_KINDS else 0
    return low / total if total else 0.0
