"""Quantize the weights of a PyTorch model (simulation on the PyTorch side).

``quantize(model, config)`` returns a new model whose chosen weights are
replaced by their decoded quantized values; ``quantize_`` does the same in
place. ``encode_model`` returns what a packed artifact stores for every
tensor, so the artifact's size is the size of real packed codes.

Which weights: by default those of ``Linear`` and ``Conv1d/2d/3d`` layers.
Biases, normalisation parameters and buffers stay float32 (as in every
int8 runtime); with ``Float16()`` every float tensor is stored as float16.
Pass ``filter_fn(module, fqn) -> bool`` to choose layers yourself.
"""

from __future__ import annotations


import torch
from torch import nn

from squeezelab.engine.core.copying import copy_model
from squeezelab.engine.core.layers import FilterFn, chosen_weight_names
from squeezelab.engine.quantization.encoding import Encoded, encode_float, encode_huffman, encode_tensor
from squeezelab.engine.core.errors import ConfigError, ModelError
from squeezelab.engine.core.quantizers import Float16, QuantizationConfig

__all__ = ["encode_model", "load_decoded_", "quantize", "quantize_"]


def encode_model(
    model: nn.Module,
    config: QuantizationConfig | None,
    *,
    filter_fn: FilterFn | None = None,
    coding: str = "packed",
    layer_bits: dict[str, int] | None = None,
) -> dict[str, Encoded]:
    """Encode every entry of ``model.state_dict()``: chosen weights under ``config``, the rest as floats.

    ``layer_bits`` maps layer names to their own width (32 keeps that layer
    float32): mixed precision. Integer buffers (e.g. BatchNorm's
    ``num_batches_tracked``) are kept as they are.
    """
    chosen = chosen_weight_names(model, filter_fn) if config is not None else set()
    per_weight = _per_weight_configs(model, config, chosen, layer_bits or {})
    half = isinstance(config, Float16)
    out: dict[str, Encoded] = {}
    for name, tensor in model.state_dict().items():
        cfg = per_weight.get(name)
        if cfg is not None:
            out[name] = encode_huffman(tensor, cfg) if coding == "huffman" else encode_tensor(tensor, cfg)
        elif tensor.is_floating_point():
            out[name] = encode_float(tensor, half=half)
        else:
            values = tensor.detach().cpu().numpy()
            out[name] = Encoded("raw", tuple(tensor.shape), {"values": values}, {"dtype": str(values.dtype)})
    return out


def _per_weight_configs(
    model: nn.Module, config: QuantizationConfig | None, chosen: set[str], layer_bits: dict[str, int]
) -> dict[str, QuantizationConfig]:
    """The config of each chosen weight: ``config``, or a copy at the layer's own width."""
    quantized = {name.rsplit(".", 1)[0] if "." in name else "" for name in chosen}
    unknown = sorted(set(layer_bits) - quantized)
    if unknown:
        raise ConfigError(
            f"per-layer bits name layers that are not quantized here: {unknown}; known layers with weights: "
            f"{sorted(quantized)}."
        )
    out = {}
    for name in chosen:
        layer = name.rsplit(".", 1)[0] if "." in name else ""
        bits = layer_bits.get(layer)
        if bits == 32:
            continue  # kept float32: stored like any unquantized tensor
        if bits is None:
            out[name] = config
        else:
            out[name] = config.with_bits(bits)
    return out


def load_decoded_(model: nn.Module, encoded: dict[str, Encoded]) -> None:
    state = model.state_dict()
    with torch.no_grad():
        for name, enc in encoded.items():
            if enc.kind == "raw":
                continue
            state[name].copy_(enc.decode().to(state[name].dtype))


def _check_args(model: object, config: object) -> None:
    if not isinstance(model, nn.Module):
        raise ModelError(f"expected a torch.nn.Module, got {type(model).__name__}.")
    if not isinstance(config, QuantizationConfig):
        raise ConfigError(
            f"config={config!r} is not a quantization config; use e.g. LinearQuantization(bits=4), "
            "KMeansQuantization(bits=4), FixedPoint(), Float16()."
        )


def quantize_(
    model: nn.Module, config: QuantizationConfig, *, filter_fn: FilterFn | None = None
) -> None:
    """Replace the chosen weights of ``model`` by their quantized values, in place."""
    _check_args(model, config)
    load_decoded_(model, encode_model(model, config, filter_fn=filter_fn))


def quantize(
    model: nn.Module, config: QuantizationConfig, *, filter_fn: FilterFn | None = None
) -> nn.Module:
    """A quantized copy of ``model``; ``model`` itself is left unchanged.

    Examples:
        >>> import torch
        >>> from squeezelab.engine.core.quantizers import LinearQuantization
        >>> m = torch.nn.Linear(4, 2)
        >>> q = quantize(m, LinearQuantization(bits=2))
        >>> all(len(set(row.abs().tolist())) <= 2 for row in q.weight)  # 2 bits: {-s, 0, +s}
        True
    """
    _check_args(model, config)
    out = copy_model(model)
    quantize_(out, config, filter_fn=filter_fn)
    return out
