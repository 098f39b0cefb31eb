"""Quantization-aware training, and export of the trained model as a real int8 QDQ ONNX model.

``prepare_qat(model, bits)`` returns a copy in which every Linear/Conv2d
quantizes its weights (symmetric, per output channel) and its input
activations (affine, per tensor, range from a moving-average observer) with
PyTorch's ``fake_quantize`` ops, whose straight-through gradient lets
``finetune`` train through the rounding. ``calibrate_`` sets the activation
ranges from data without training: that is post-training quantization with
the very same quantizers, so PTQ and QAT are compared like for like.

``export_qat(model, example_inputs)`` (8 bits) writes the activations as ONNX
``QuantizeLinear``/``DequantizeLinear`` pairs and every weight as an int8
initializer with its per-channel scale behind a ``DequantizeLinear``: a real
int8 QDQ model that ONNX Runtime fuses into int8 kernels. On x86 CPUs
without VNNI, weights use 7 bits (``reduce_range``) so the fused kernels cannot
saturate (see ``squeezelab.engine.core.cpu``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from squeezelab.engine.core.copying import copy_model, own_class, replace_module
from squeezelab.engine.core.cpu import default_reduce_range
from squeezelab.engine.core.samples import read_inputs
from squeezelab.engine.core.errors import ConfigError, ModelError
from squeezelab.engine.core.examples import example_batch
from squeezelab.engine.runtime.export import export_onnx

__all__ = ["prepare_qat", "calibrate_", "export_qat", "QATLayer", "WeightFakeQuant"]


def _weight_qmax(bits: int, reduce_range: bool) -> int:
    return (1 << (bits - 2)) - 1 if reduce_range else (1 << (bits - 1)) - 1


class WeightFakeQuant(nn.Module):
    """Parametrization: symmetric per-output-channel fake quantization of a weight."""

    def __init__(self, bits: int, qmax: int) -> None:
        super().__init__()
        self.bits, self.qmax = bits, qmax

    def scale(self, weight: torch.Tensor) -> torch.Tensor:
        absmax = weight.detach().reshape(weight.shape[0], -1).abs().amax(1)
        return torch.where(absmax > 0, absmax / self.qmax, torch.ones_like(absmax)).float()

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        scale = self.scale(weight)
        zero = torch.zeros_like(scale, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, -self.qmax, self.qmax)


class QATLayer(nn.Module):
    """A Linear/Conv2d whose input is fake-quantized (affine, ``bits``) with an EMA min/max observer."""

    def __init__(self, layer: nn.Module, bits: int, momentum: float = 0.1) -> None:
        super().__init__()
        self.layer = layer
        self.qmax_act = (1 << bits) - 1
        self.momentum = momentum
        self.register_buffer("low", torch.tensor(0.0))
        self.register_buffer("high", torch.tensor(0.0))
        self.register_buffer("seen", torch.tensor(False))
        self.frozen: tuple[torch.Tensor, torch.Tensor] | None = None  # constant qparams for export

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        low, high = torch.clamp(self.low, max=0.0), torch.clamp(self.high, min=0.0)  # 0 exactly representable
        scale = torch.clamp((high - low) / self.qmax_act, min=1e-8)
        zero_point = torch.clamp(torch.round(-low / scale), 0, self.qmax_act).to(torch.int32)
        return scale.float(), zero_point

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frozen is not None:
            return self.layer(torch.fake_quantize_per_tensor_affine(x, *self.frozen, 0, self.qmax_act))
        if self.training:
            with torch.no_grad():
                low, high = x.detach().min(), x.detach().max()
                if not bool(self.seen):
                    self.low.copy_(low), self.high.copy_(high), self.seen.fill_(True)
                else:
                    self.low.lerp_(low, self.momentum), self.high.lerp_(high, self.momentum)
        if bool(self.seen):
            scale, zero_point = self.qparams()
            x = torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, self.qmax_act)
        return self.layer(x)


def prepare_qat(model: nn.Module, *, bits: int = 8, reduce_range: bool | None = None) -> nn.Module:
    """A copy of ``model`` with fake-quantized weights and layer inputs at ``bits`` (2..8)."""
    if not isinstance(model, nn.Module):
        raise ModelError(f"expected a torch.nn.Module, got {type(model).__name__}.")
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ConfigError(f"bits={bits!r} must be an integer in 2..8 for quantization-aware training.")
    reduce_range = default_reduce_range() if reduce_range is None else reduce_range
    qmax = _weight_qmax(bits, reduce_range and bits == 8)
    work = copy_model(model)
    targets = [(n, m) for n, m in work.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not targets:
        raise ConfigError("no Linear/Conv2d layer to quantize.")
    for name, layer in targets:
        if parametrize.is_parametrized(layer, "weight"):
            raise ConfigError(f"layer {name!r} already has a weight parametrization; bake it first (bake_masks_).")
        parametrize.register_parametrization(layer, "weight", WeightFakeQuant(bits, qmax))
        wrapped = QATLayer(layer, bits)
        if not name:
            return wrapped
        replace_module(work, name, wrapped)
    return work


def calibrate_(model: nn.Module, data: Any, *, batches: int = 8) -> None:
    """Set the activation ranges of a ``prepare_qat`` model from ``data`` (no weight update)."""
    was_training = model.training
    model.train()
    with torch.no_grad():
        inputs = read_inputs(data)
        step = 64
        for i, start in enumerate(range(0, len(inputs), step)):
            if i >= batches:
                break
            inputs.slice(start, start + step).call(model)
    model.train(was_training)


def export_qat(model: nn.Module, example_inputs: Any) -> bytes:
    """A real int8 QDQ ONNX model from an 8-bit ``prepare_qat`` model (weights stored as int8)."""
    import onnx
    from onnx import helper, numpy_helper


    layers = [m for m in model.modules() if isinstance(m, QATLayer)]
    if not layers or any(m.qmax_act != 255 for m in layers):
        raise ConfigError("export_qat needs an 8-bit prepare_qat model (ONNX int8 kernels are 8-bit).")
    work = copy_model(model).eval()
    scales: dict[str, tuple[np.ndarray, int]] = {}
    for name, module in work.named_modules():
        if isinstance(module, QATLayer):
            if not bool(module.seen):
                raise ConfigError(f"layer {name!r} has no activation range yet; run calibrate_ or finetune first.")
            module.frozen = tuple(t.detach().clone() for t in module.qparams())
            layer = module.layer
            fq = layer.parametrizations.weight[0]
            scale = fq.scale(layer.parametrizations.weight.original).numpy()
            own_class(layer)
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)  # exact multiples of scale
            scales[f"{name}.layer.weight" if name else "layer.weight"] = (scale, fq.qmax)
    proto = onnx.load_from_string(export_onnx(work, example_batch(example_inputs)))
    graph = proto.graph
    initializers = {init.name: init for init in graph.initializer}
    for weight_name, (scale, qmax) in scales.items():
        init = initializers.get(weight_name)
        if init is None:
            raise ConfigError(f"weight {weight_name!r} was not found in the exported graph.")
        values = numpy_helper.to_array(init)
        axis = 0
        codes = np.clip(np.round(values / scale.reshape(-1, *[1] * (values.ndim - 1))), -qmax, qmax).astype(np.int8)
        graph.initializer.remove(init)
        graph.initializer.extend(
            [
                numpy_helper.from_array(codes, f"{weight_name}_int8"),
                numpy_helper.from_array(scale.astype(np.float32), f"{weight_name}_scale"),
                numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{weight_name}_zero_point"),
            ]
        )
        graph.node.insert(
            0,
            helper.make_node(
                "DequantizeLinear",
                [f"{weight_name}_int8", f"{weight_name}_scale", f"{weight_name}_zero_point"],
                [weight_name],
                axis=axis,
                name=f"{weight_name}_DequantizeLinear",
            ),
        )
    onnx.checker.check_model(proto)
    return proto.SerializeToString()
